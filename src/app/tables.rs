//! Start-up of every table's lanes, the events table's and each of `INGEST_TABLES`, built
//! the same way: one lane per table (in a cluster, one per table and shard) with its own
//! buffer, flusher and (`disk` mode) spool, a sink sharing the table's columns with the
//! handlers, and the thread that reads the tables again so schema changes are picked up
//! without a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::{StartupError, Storage, lane};
use crate::config::file::FileSettings;
use crate::config::{BufferMode, Config};
use crate::http::events::{TableLane, Tables};
use crate::lane::flusher;
use crate::lane::ingest::{Buffered, Direct, Discard, Lane, Sharded};
use crate::lane::quarantine::Quarantine;
use crate::lane::shard::{RowKeys, Sharder};
use crate::sink::TAG_BYTES;
use crate::sink::{HostState, ReplicaSet, TableSink, TableState};
use crate::stats::{LaneStats, Stats, TableStats};
use crate::table::{ColumnList, Columns, NewColumn, NotAdded, TableSettings};
use futures_util::future::BoxFuture;

/// One table as start-up builds its lanes.
pub(super) struct TableToStart {
    /// The name clients use (`CLICKHOUSE_TABLE`, or as written in `INGEST_TABLES`).
    pub name: String,
    /// The sink whose state the handlers, the lanes' sinks and the refresher share.
    pub sink: TableSink,
    /// Where its spool lives (`SPOOL_DIR` for the events table, `SPOOL_DIR/table-<name>`
    /// for the others); in a cluster, one `shard-<n>` folder per shard under it.
    pub spool_dir: PathBuf,
    /// Its figures, labelled with its name.
    pub stats: Arc<TableStats>,
    /// What its lanes record: the events table's also under the earlier, unlabelled names.
    pub lane_stats: LaneStats,
    /// In a cluster, each host's state by shard when the health check shares them (the
    /// events table's); empty: the lanes make their own.
    pub hosts: Vec<Vec<Arc<HostState>>>,
}

/// The events table (`CLICKHOUSE_TABLE`): its spool is `SPOOL_DIR` itself, and its figures
/// are also kept under the earlier, unlabelled names.
pub(super) fn events_table(
    config: &Config,
    stats: &Arc<Stats>,
    settings: &HashMap<String, TableSettings>,
) -> Result<TableToStart, StartupError> {
    let name = config.clickhouse_table.clone();
    let table_stats = Arc::new(TableStats::new(stats, &name));
    let sink = TableSink::events(&super::sink_settings(config))
        .with_settings(settings.get(&name).cloned().unwrap_or_default())
        .map_err(|e| StartupError::TableSettings(e.to_string()))?;
    Ok(TableToStart {
        sink: table_sink(config, sink),
        spool_dir: PathBuf::from(&config.spool_dir),
        lane_stats: LaneStats::for_events_table(stats.clone(), table_stats.clone()),
        stats: table_stats,
        hosts: Vec::new(),
        name,
    })
}

/// With a `CONFIG_FILE`: reads its `[[tables]]` again when it changes (or on `SIGHUP`) and
/// gives each table of `INGEST_TABLES` (`states`) its new settings, used from the table's
/// next reading. A file or a setting that does not fit is said in the log and the settings
/// in use stay; the events table's settings apply at the next start.
pub(super) fn watch_table_settings(
    config: &Config,
    initial: HashMap<String, TableSettings>,
    states: Vec<Arc<TableState>>,
) {
    if config.config_file.is_empty() {
        return;
    }
    let config = config.clone();
    let events = initial.get(&config.clickhouse_table).cloned();
    let path = PathBuf::from(&config.config_file);
    super::watch_files(vec![path], move || {
        let settings = match table_settings(&config) {
            Ok(settings) => settings,
            Err(why) => {
                log::warn!("CONFIG_FILE [[tables]] not applied, the settings in use stay: {why}");
                return true;
            }
        };
        if settings.get(&config.clickhouse_table) != events.as_ref() {
            log::warn!(
                "CONFIG_FILE [[tables]] {}: the events table's settings apply at the next start",
                config.clickhouse_table
            );
        }
        let target = |name: &str| match name.contains('.') {
            true => name.to_string(),
            false => format!("{}.{name}", config.clickhouse_name),
        };
        for state in &states {
            let new = (settings.iter())
                .find(|(name, _)| target(name) == state.target)
                .map(|(_, s)| s.clone())
                .unwrap_or_default();
            match state.replace_settings(new) {
                Ok(true) => log::info!(
                    "CONFIG_FILE [[tables]] {}: new settings, used from its next reading",
                    state.target
                ),
                Ok(false) => {}
                Err(why) => log::warn!("CONFIG_FILE [[tables]] not applied: {why}"),
            }
        }
        true
    });
}

/// `CONFIG_FILE`'s `[[tables]]`, by table name; a name that is not a table the service
/// writes stops start-up.
pub(super) fn table_settings(
    config: &Config,
) -> Result<HashMap<String, TableSettings>, StartupError> {
    if config.config_file.is_empty() {
        return Ok(HashMap::new());
    }
    let file =
        FileSettings::read(Path::new(&config.config_file)).map_err(StartupError::ConfigFile)?;
    let written: Vec<String> = std::iter::once(config.clickhouse_table.clone())
        .chain(config.extra_tables())
        .collect();
    let mut out = HashMap::new();
    for entry in file.tables {
        if entry.name == config.clickhouse_table && entry.add_columns.is_some() {
            return Err(StartupError::TableSettings(format!(
                "{}: add_columns applies to the tables of INGEST_TABLES (the events table's \
                 columns are fixed)",
                entry.name
            )));
        }
        if !written.contains(&entry.name) {
            return Err(StartupError::TableSettings(format!(
                "{} is not a table this service writes (CLICKHOUSE_TABLE, INGEST_TABLES: {})",
                entry.name,
                written.join(", ")
            )));
        }
        let settings = TableSettings {
            server_time_column: entry.server_time_column,
            client_ip_column: entry.client_ip_column,
            paths: entry.paths.into_iter().collect(),
            rest: entry.rest,
            user_agent: entry.user_agent,
            browser: entry.browser,
            os: entry.os,
            device: entry.device,
            add_columns: entry.add_columns.map(|a| crate::table::AddColumns {
                max: a.max,
                pattern: a.pattern,
            }),
        };
        out.insert(entry.name, settings);
    }
    Ok(out)
}

/// The tables of `INGEST_TABLES` besides the events table: each one's sink, read once here
/// (a missing table is a warning, and its requests get `503` until the refresher finds it).
pub(super) async fn read_tables(
    config: &Config,
    stats: &Arc<Stats>,
    settings: &HashMap<String, TableSettings>,
) -> Result<Vec<TableToStart>, StartupError> {
    for name in config.events_namesakes() {
        log::warn!(
            "INGEST_TABLES: {name} is a table of its own (written at /v1/tables/{name}), not \
             the events table {}.{} (written at /v1/events)",
            config.clickhouse_name,
            config.clickhouse_table
        );
    }
    let mut tables = Vec::new();
    for name in config.extra_tables() {
        let sink = TableSink::new(&super::sink_settings(config), &name)
            .with_settings(settings.get(&name).cloned().unwrap_or_default())
            .map_err(|e| StartupError::TableSettings(e.to_string()))?;
        let sink = table_sink(config, sink);
        // `disk` mode: the lists earlier runs' spooled rows were encoded under.
        sink.restore();
        if let Err(problem) = sink.refresh().await {
            log::warn!("INGEST_TABLES: {problem}");
        }
        if let Some(problem) = sink.state().setting_problem() {
            return Err(StartupError::TableSettings(problem));
        }
        if let Some(why) = sink.state().unevaluable_sharding() {
            return Err(StartupError::TableSharding(why));
        }
        let table_stats = Arc::new(TableStats::new(stats, &name));
        tables.push(TableToStart {
            spool_dir: Path::new(&config.spool_dir).join(format!("table-{name}")),
            lane_stats: LaneStats::for_table(stats.clone(), table_stats.clone()),
            stats: table_stats,
            hosts: Vec::new(),
            sink,
            name,
        });
    }
    Ok(tables)
}

/// `sink` as the `BUFFER_MODE` writes: `direct` mode's inserts run on the HTTP workers and
/// send rows as encoded.
pub(super) fn table_sink(config: &Config, sink: TableSink) -> TableSink {
    match config.buffer_mode {
        BufferMode::Direct => sink.row_binary_only(),
        _ => sink,
    }
}

/// Starts every table's lanes; the first table is the events table. Returns what the
/// handlers see, each table's storage, and the sinks the refresher reads the tables with.
pub(super) fn start_tables(
    config: &Config,
    tables: Vec<TableToStart>,
    desk: &AddDesk,
) -> Result<(Tables, Vec<Storage>, Vec<TableSink>), StartupError> {
    let mut lanes = Tables {
        lanes: Default::default(),
        events: None,
        database: config.clickhouse_name.clone(),
    };
    let mut storages = Vec::new();
    let mut sinks = Vec::new();
    for (i, table) in tables.into_iter().enumerate() {
        let storage = start_table(config, &table)?;
        let lane = Arc::new(TableLane {
            name: table.name.clone(),
            columns: Arc::new(TableColumns {
                state: table.sink.state(),
                desk: desk.clone(),
            }),
            ingest: storage.ingest.clone(),
            stats: table.stats.clone(),
            events: i == 0,
        });
        let names = match i {
            // The events table answers to its name with and without the database.
            0 => vec![
                table.name.clone(),
                format!("{}.{}", config.clickhouse_name, table.name),
            ],
            _ => vec![table.name.clone()],
        };
        for name in names {
            lanes.lanes.insert(name, lane.clone());
        }
        if i == 0 {
            lanes.events = Some(lane);
        }
        storages.push(storage);
        // The refresher runs on its own thread and runtime. A fixed list is read where
        // it is written, when it is written.
        if table.sink.state().tag_len() > 0 {
            sinks.push(TableSink::sharing(
                &super::sink_settings(config),
                &table.sink,
            ));
        }
    }
    Ok((lanes, storages, sinks))
}

/// The `BUFFER_MODE`'s storage for one table: its lanes (one, or one per shard) each with
/// a double buffer, a flusher and in `disk` mode a spool; one insert per request; or
/// nothing.
fn start_table(config: &Config, table: &TableToStart) -> Result<Storage, StartupError> {
    let quarantine = || {
        let state = table.sink.state();
        Arc::new(Quarantine::for_table(
            config.quarantine_dir(),
            &table.name,
            Arc::new(move |row: &[u8]| state.decode_row(row)),
        ))
    };
    match config.buffer_mode {
        BufferMode::Double if config.is_cluster() => start_shards(config, table, quarantine()),
        BufferMode::Double => {
            let lane = lane::open(
                config,
                lane::limits(config),
                &table.spool_dir,
                config.spool_max_bytes,
            )?;
            prune_columns(&table.sink, &[&lane]);
            let (buffer, spool_writer) = (lane.buffer, lane.writer);
            let flusher = flusher::spawn(
                buffer.clone(),
                TableSink::sharing(&super::sink_settings(config), &table.sink),
                quarantine(),
                table.lane_stats.clone(),
                config.shutdown_timeout(),
            )?;
            Ok(Storage {
                ingest: Arc::new(Buffered(buffer)),
                flushers: vec![flusher],
                spool_writers: spool_writer.into_iter().collect(),
            })
        }
        BufferMode::Direct => Ok(Storage {
            ingest: Arc::new(Direct(Arc::new(TableSink::sharing(
                &super::sink_settings(config),
                &table.sink,
            )))),
            flushers: Vec::new(),
            spool_writers: Vec::new(),
        }),
        BufferMode::Discard => Ok(Storage {
            ingest: Arc::new(Discard),
            flushers: Vec::new(),
            spool_writers: Vec::new(),
        }),
    }
}

/// In a cluster: one lane per shard (its share of `BUFFER_MAX_BYTES` and
/// `SPOOL_MAX_BYTES`, its spool in `<spool_dir>/shard-<n>`), each writing `<table>_local` on
/// one replica of its shard through a [`ReplicaSet`]; rows are split by the table's
/// sharding expression.
fn start_shards(
    config: &Config,
    table: &TableToStart,
    quarantine: Arc<Quarantine>,
) -> Result<Storage, StartupError> {
    let shards = config.clickhouse_shards().unwrap_or_default();
    let n = shards.len().max(1);
    let limits = lane::limits(config);
    let opened = (0..shards.len())
        .map(|i| {
            let dir = table.spool_dir.join(format!("shard-{}", i + 1));
            lane::open(config, limits, &dir, config.spool_max_bytes / n as u64)
        })
        .collect::<Result<Vec<_>, _>>()?;
    prune_columns(&table.sink, &opened.iter().collect::<Vec<_>>());
    let (mut lanes, mut flushers, mut spool_writers) = (Vec::new(), Vec::new(), Vec::new());
    let all_hosts = match table.hosts.is_empty() {
        true => super::cluster::shard_hosts(&shards),
        false => table.hosts.clone(),
    };
    for ((replicas, hosts), lane) in shards.iter().zip(all_hosts).zip(opened) {
        let seed = replica_seed(&lane);
        spool_writers.extend(lane.writer);
        let set = ReplicaSet::new(
            replicas
                .iter()
                .zip(&hosts)
                .map(|(h, state)| {
                    let at = super::sink_settings_at(config, h);
                    (TableSink::for_replica(&at, &table.sink), state.clone())
                })
                .collect(),
            seed,
        );
        flushers.push(flusher::spawn(
            lane.buffer.clone(),
            set,
            quarantine.clone(),
            table.lane_stats.clone(),
            config.shutdown_timeout(),
        )?);
        lanes.push(Lane {
            buffer: Buffered(lane.buffer),
            hosts,
        });
    }
    let state = table.sink.state();
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

/// Where a lane's replica set starts: gateways spread over replicas by their spools' ids,
/// stable across restarts (a random one per process in memory mode).
fn replica_seed(lane: &lane::LaneBuffer) -> u64 {
    match &lane.spool {
        Some(spool) => twox_hash::XxHash3_64::oneshot(spool.id().as_bytes()),
        None => rand::random::<u64>(),
    }
}

/// `disk` mode: a read table's saved column lists pruned to those its lanes' spooled rows
/// and its current list need, before any flusher or request can use a list. (A fixed
/// list's rows carry no tag, and nothing is saved for it.)
fn prune_columns(sink: &TableSink, lanes: &[&lane::LaneBuffer]) {
    if sink.state().tag_len() == 0 {
        return;
    }
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

/// Requests' columns to add that may wait for the schema-refresh thread at once: a request
/// past them is answered `503` with `Retry-After: 1`.
const ADD_JOBS: usize = 64;

/// How long a request waits for its columns to be added.
const ADD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// One request's columns to add (`add_columns`), for the schema-refresh thread, and where
/// its answer goes.
pub(super) struct AddJob {
    target: String,
    wanted: Vec<NewColumn>,
    answer: tokio::sync::oneshot::Sender<Result<(), NotAdded>>,
}

/// Where requests leave their columns to add: the schema-refresh thread takes them.
pub(super) type AddDesk = std::sync::mpsc::SyncSender<AddJob>;

/// A table's columns as its handlers see them: the list its sink keeps, and columns added
/// through the schema-refresh thread (which has a runtime and the table's sink).
struct TableColumns {
    state: Arc<TableState>,
    desk: AddDesk,
}

impl Columns for TableColumns {
    fn current(&self) -> Result<Arc<dyn ColumnList>, String> {
        Columns::current(&*self.state)
    }

    fn add_columns(&self, wanted: Vec<NewColumn>) -> BoxFuture<'static, Result<(), NotAdded>> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job = AddJob {
            target: self.state.target.clone(),
            wanted,
            answer,
        };
        let refused = match self.desk.try_send(job) {
            Ok(()) => None,
            Err(std::sync::mpsc::TrySendError::Full(job)) => Some(NotAdded::Later {
                fields: (job.wanted.iter())
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                secs: 1,
            }),
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => {
                Some(NotAdded::Failed("the service is stopping".into()))
            }
        };
        if let Some(refused) = refused {
            return Box::pin(std::future::ready(Err(refused)));
        }
        Box::pin(async move {
            match tokio::time::timeout(ADD_WAIT, answered).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(NotAdded::Failed("the service is stopping".into())),
                Err(_) => Err(NotAdded::Failed(format!(
                    "not done within {} s",
                    ADD_WAIT.as_secs()
                ))),
            }
        })
    }
}

/// The thread that reads the tables of `INGEST_TABLES` again every `SCHEMA_REFRESH_SECS`
/// (every 2 s while one is missing or unreadable), so an added column or a created table is
/// picked up without a restart; it also adds the columns requests ask for (`add_columns`),
/// one job at a time.
pub(super) struct Refresher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Refresher {
    /// The desk requests leave columns to add at, and where the thread takes them.
    pub(super) fn desk() -> (AddDesk, std::sync::mpsc::Receiver<AddJob>) {
        std::sync::mpsc::sync_channel(ADD_JOBS)
    }

    pub(super) fn spawn(
        sinks: Vec<TableSink>,
        every_secs: u64,
        jobs: std::sync::mpsc::Receiver<AddJob>,
    ) -> std::io::Result<Self> {
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
                    if let Ok(job) = jobs.recv_timeout(std::time::Duration::from_millis(200)) {
                        let result = match sinks.iter().find(|s| s.target() == job.target) {
                            Some(sink) => runtime.block_on(sink.add_columns(&job.wanted, every)),
                            None => Err(NotAdded::Failed(
                                "this table's columns are not added on demand".into(),
                            )),
                        };
                        let _ = job.answer.send(result);
                    }
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
