//! Start-up of the other tables of `INGEST_TABLES`: one lane per table (in a
//! cluster, one per table and shard), and the thread that reads their columns again so
//! schema changes are picked up without a restart.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::{StartupError, Storage, cluster, lane};
use crate::config::{BufferMode, Config};
use crate::http::events::{TableLane, Tables};
use crate::lane::flusher;
use crate::lane::ingest::{Buffered, Direct, Discard, Lane, Sharded};
use crate::lane::quarantine::Quarantine;
use crate::lane::shard::{RowKeys, Sharder};
use crate::sink::TAG_BYTES;
use crate::sink::{HostState, ReplicaSet, TableSink};
use crate::stats::{LaneStats, Stats, TableStats};

/// One lane per table of `INGEST_TABLES` other than the events table (arch.md): its own
/// buffer and flusher, in `disk` mode its own spool (`SPOOL_DIR/table-<name>`), and a sink
/// sharing the table's columns with the handlers. Each table's columns are read once here;
/// a missing table is a warning, and its requests get `503` until the refresher finds it.
pub(super) async fn start_tables(
    config: &Config,
    stats: &Arc<Stats>,
) -> Result<(Tables, Vec<Storage>, Vec<TableSink>), StartupError> {
    let mut tables = Tables {
        lanes: Default::default(),
        events: vec![
            config.clickhouse_table.clone(),
            format!("{}.{}", config.clickhouse_name, config.clickhouse_table),
        ],
        database: config.clickhouse_name.clone(),
        events_stats: Arc::new(TableStats::new(stats, &config.clickhouse_table)),
    };
    for name in config.events_namesakes() {
        log::warn!(
            "INGEST_TABLES: {name} is a table of its own (written at /v1/tables/{name}), not \
             the events table {}.{} (written at /v1/events)",
            config.clickhouse_name,
            config.clickhouse_table
        );
    }
    let mut storages = Vec::new();
    let mut sinks = Vec::new();
    for name in config.extra_tables() {
        let sink = TableSink::new(&super::sink_settings(config), &name);
        let table_stats = Arc::new(TableStats::new(stats, &name));
        // `disk` mode: the lists earlier runs' spooled rows were encoded under.
        sink.restore();
        if let Err(problem) = sink.refresh().await {
            log::warn!("INGEST_TABLES: {problem}");
        }
        if let Some(why) = sink.state().unevaluable_sharding() {
            return Err(StartupError::TableSharding(why));
        }
        let quarantine = || {
            Arc::new(Quarantine::for_table(config.quarantine_dir(), &name, {
                let state = sink.state();
                Arc::new(move |row: &[u8]| state.decode_row(row))
            }))
        };
        let storage = match config.buffer_mode {
            BufferMode::Double if config.is_cluster() => {
                start_shards(config, stats, &name, &sink, quarantine(), &table_stats)?
            }
            BufferMode::Double => {
                let lane = lane::open(
                    config,
                    lane::limits(config),
                    &Path::new(&config.spool_dir).join(format!("table-{name}")),
                    config.spool_max_bytes,
                )?;
                prune_columns(&sink, &[&lane]);
                let (buffer, spool_writer) = (lane.buffer, lane.writer);
                let flusher = flusher::spawn(
                    buffer.clone(),
                    TableSink::sharing(&super::sink_settings(config), &sink),
                    quarantine(),
                    LaneStats::for_table(stats.clone(), table_stats.clone()),
                    config.shutdown_timeout(),
                )?;
                Storage {
                    ingest: Arc::new(Buffered(buffer)),
                    flushers: vec![flusher],
                    spool_writers: spool_writer.into_iter().collect(),
                }
            }
            BufferMode::Direct => Storage {
                ingest: Arc::new(Direct(Arc::new(TableSink::sharing(
                    &super::sink_settings(config),
                    &sink,
                )))),
                flushers: Vec::new(),
                spool_writers: Vec::new(),
            },
            BufferMode::Discard => Storage {
                ingest: Arc::new(Discard),
                flushers: Vec::new(),
                spool_writers: Vec::new(),
            },
        };
        tables.lanes.insert(
            name,
            TableLane {
                columns: sink.state(),
                ingest: storage.ingest.clone(),
                stats: table_stats,
            },
        );
        storages.push(storage);
        // The refresher runs on its own thread and runtime.
        sinks.push(TableSink::sharing(&super::sink_settings(config), &sink));
    }
    Ok((tables, storages, sinks))
}

/// In a cluster: one lane per shard for table `name` (its share of `BUFFER_MAX_BYTES` and
/// `SPOOL_MAX_BYTES`, its spool in `SPOOL_DIR/table-<name>/shard-<n>`), each writing
/// `<table>_local` on one replica of its shard through a [`ReplicaSet`], exactly as the
/// events table's shards do; rows are split by the table's own `Distributed` sharding
/// expression, read with its columns.
fn start_shards(
    config: &Config,
    stats: &Arc<Stats>,
    name: &str,
    sink: &TableSink,
    quarantine: Arc<Quarantine>,
    table_stats: &Arc<TableStats>,
) -> Result<Storage, StartupError> {
    let shards = config.clickhouse_shards().unwrap_or_default();
    let n = shards.len().max(1);
    let table_dir = Path::new(&config.spool_dir).join(format!("table-{name}"));
    let limits = lane::limits(config);
    let opened = (0..shards.len())
        .map(|i| {
            let dir = table_dir.join(format!("shard-{}", i + 1));
            lane::open(config, limits, &dir, config.spool_max_bytes / n as u64)
        })
        .collect::<Result<Vec<_>, _>>()?;
    prune_columns(sink, &opened.iter().collect::<Vec<_>>());
    let (mut lanes, mut flushers, mut spool_writers) = (Vec::new(), Vec::new(), Vec::new());
    for ((i, replicas), lane) in shards.iter().enumerate().zip(opened) {
        let seed = cluster::replica_seed(&lane);
        spool_writers.extend(lane.writer);
        let hosts: Vec<Arc<HostState>> = replicas
            .iter()
            .map(|h| Arc::new(HostState::new(h.to_string(), i + 1)))
            .collect();
        let set = ReplicaSet::new(
            replicas
                .iter()
                .zip(&hosts)
                .map(|(h, state)| {
                    let at = super::sink_settings_at(config, h);
                    (
                        TableSink::for_replica(&at, sink, &at.connection),
                        state.clone(),
                    )
                })
                .collect(),
            seed,
        );
        flushers.push(flusher::spawn(
            lane.buffer.clone(),
            set,
            quarantine.clone(),
            LaneStats::for_table(stats.clone(), table_stats.clone()),
            config.shutdown_timeout(),
        )?);
        lanes.push(Lane {
            buffer: Buffered(lane.buffer),
            hosts,
        });
    }
    let state = sink.state();
    let expression = state
        .sharding_expression()
        .unwrap_or_else(|| "its Distributed table's sharding expression".into());
    let keys: Arc<dyn RowKeys> = state;
    Ok(Storage {
        ingest: Arc::new(Sharded {
            sharder: Sharder::with_keys(keys, &expression, n),
            lanes,
            route: Default::default(),
        }),
        flushers,
        spool_writers,
    })
}

/// `disk` mode: the table's saved column lists pruned to those its lanes' spooled rows and
/// its current list need, before any flusher or request can use a list.
fn prune_columns(sink: &TableSink, lanes: &[&lane::LaneBuffer]) {
    let mut spooled = std::collections::HashSet::new();
    for lane in lanes {
        let (Some(spool), Some(from)) = (lane.spool.as_deref(), lane.backlog_from) else {
            continue;
        };
        match spool.row_prefixes::<TAG_BYTES>(from) {
            Ok(tags) => spooled.extend(tags),
            Err(e) => {
                log::warn!(
                    "{}: spool not readable ({e}); saved column lists all kept",
                    spool.dir().display()
                );
                return sink.prune_columns(None);
            }
        }
    }
    sink.prune_columns(Some(spooled));
}

/// The thread that reads other tables' columns again every `SCHEMA_REFRESH_SECS` (every
/// 2 s while one is missing or unreadable), so an added column or a created table is
/// picked up without a restart.
pub(super) struct Refresher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Refresher {
    pub(super) fn spawn(sinks: Vec<TableSink>, every_secs: u64) -> std::io::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("schema-refresh".into())
            .spawn(move || {
                let every = std::time::Duration::from_secs(every_secs.max(1));
                let missing_wait = every.min(std::time::Duration::from_secs(2));
                let wait = |sinks: &[TableSink]| match sinks
                    .iter()
                    .any(|s| s.state().current().is_err())
                {
                    true => missing_wait,
                    false => every,
                };
                let mut next = Instant::now() + wait(&sinks);
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    if Instant::now() < next {
                        continue;
                    }
                    for sink in &sinks {
                        let _ = runtime.block_on(sink.refresh());
                    }
                    next = Instant::now() + wait(&sinks);
                }
            })?;
        Ok(Self { stop, thread })
    }

    pub(super) fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
