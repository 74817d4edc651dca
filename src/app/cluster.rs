//! Start-up in a cluster (`CLICKHOUSE_CLUSTER`): check that the hosts in `CLICKHOUSE_HOSTS`
//! are the shards the servers say they are, create the tables on every host that answers,
//! and build one lane per shard: its own buffer (its share of `BUFFER_MAX_BYTES`), flusher,
//! spool (`SPOOL_DIR/shard-<n>`, its share of `SPOOL_MAX_BYTES`) and replica set.

use std::path::Path;
use std::sync::Arc;

use super::{StartupError, Storage, lane};
use crate::config::{BufferMode, Config, HostPort};
use crate::lane::flusher;
use crate::lane::ingest::{Buffered, Discard, Lane, ServerCheck, Sharded};
use crate::lane::quarantine::Quarantine;
use crate::lane::shard::Sharder;
use crate::sink::{ClickHouseSink, ClusterCheck, HostState, ReplicaSet};
use crate::stats::Stats;

/// Checks the cluster, creates its tables where it can, and starts the lanes. A host down
/// at start-up is logged, not fatal (its lane's other replicas, or its buffer and spool,
/// take its rows until it answers); a host that answers and disagrees with
/// `CLICKHOUSE_HOSTS` stops start-up, naming it.
pub(super) async fn start(
    config: &Config,
    stats: &Arc<Stats>,
) -> Result<(Storage, Arc<dyn ServerCheck>), StartupError> {
    // Validated when the configuration was read.
    let shards = config.clickhouse_shards().unwrap_or_default();
    let sharder = Sharder::new(&config.clickhouse_sharding_key, shards.len());
    let hosts: Vec<Vec<Arc<HostState>>> = shards
        .iter()
        .enumerate()
        .map(|(i, replicas)| {
            replicas
                .iter()
                .map(|h| Arc::new(HostState::new(h.to_string(), i + 1)))
                .collect()
        })
        .collect();
    let sink_for = |host: &HostPort| {
        ClickHouseSink::cluster_replica(
            &super::sink_settings_at(config, host),
            sharder.expression(),
        )
    };
    // The handlers' sinks: probes, the status page, and the start-up checks.
    let handler_sinks: Vec<(Arc<ClickHouseSink>, Arc<HostState>)> = shards
        .iter()
        .flatten()
        .zip(hosts.iter().flatten())
        .map(|(h, state)| (Arc::new(sink_for(h)), state.clone()))
        .collect();
    check_topology(config, &shards, &handler_sinks).await?;
    log::info!(
        "cluster {}: {} shards ({}), rows sharded by {} % {}",
        config.clickhouse_cluster,
        shards.len(),
        shards
            .iter()
            .map(|r| r
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","))
            .collect::<Vec<_>>()
            .join("; "),
        sharder.expression(),
        shards.len()
    );
    let format_owner = handler_sinks[0].0.clone();
    let check: Arc<dyn ServerCheck> = Arc::new(ClusterCheck::new(handler_sinks));
    if config.buffer_mode == BufferMode::Discard {
        log::warn!("BUFFER_MODE=discard: events are validated and thrown away");
        let storage = Storage {
            ingest: Arc::new(Discard),
            flushers: Vec::new(),
            spool_writers: Vec::new(),
        };
        return Ok((storage, check));
    }
    let n = shards.len();
    let limits = lane::limits(config);
    let quarantine = Arc::new(Quarantine::new(config.quarantine_dir()));
    let mut lanes = Vec::new();
    let mut flushers = Vec::new();
    let mut spool_writers = Vec::new();
    for (i, replicas) in shards.iter().enumerate() {
        let dir = Path::new(&config.spool_dir).join(format!("shard-{}", i + 1));
        let lane = lane::open(config, limits, &dir, config.spool_max_bytes / n as u64)?;
        let seed = replica_seed(&lane);
        spool_writers.extend(lane.writer);
        let buffer = lane.buffer;
        let set = ReplicaSet::new(
            replicas
                .iter()
                .zip(&hosts[i])
                .map(|(h, state)| {
                    (
                        sink_for(h).sharing_format_info(&format_owner),
                        state.clone(),
                    )
                })
                .collect(),
            seed,
        );
        flushers.push(flusher::spawn(
            buffer.clone(),
            set,
            quarantine.clone(),
            super::events_lane_stats(config, stats),
            config.shutdown_timeout(),
        )?);
        lanes.push(Lane {
            buffer: Buffered(buffer),
            hosts: hosts[i].clone(),
        });
    }
    let storage = Storage {
        ingest: Arc::new(Sharded {
            sharder,
            lanes,
            route: Default::default(),
        }),
        flushers,
        spool_writers,
    };
    Ok((storage, check))
}

/// Where a lane's replica set starts: gateways spread over replicas by their spools' ids,
/// stable across restarts (a random one per process in memory mode).
pub(super) fn replica_seed(lane: &lane::LaneBuffer) -> u64 {
    match &lane.spool {
        Some(spool) => twox_hash::XxHash3_64::oneshot(spool.id().as_bytes()),
        None => rand::random::<u64>(),
    }
}

/// Asks every host how it sees the cluster, and creates the tables on those that answer.
/// Hosts that disagree with `CLICKHOUSE_HOSTS` (another shard count, another shard, a
/// weight other than 1, no such cluster) stop start-up, each named.
async fn check_topology(
    config: &Config,
    shards: &[Vec<HostPort>],
    sinks: &[(Arc<ClickHouseSink>, Arc<HostState>)],
) -> Result<(), StartupError> {
    let cluster = &config.clickhouse_cluster;
    let asks = sinks.iter().map(|(sink, state)| async move {
        let answer = sink.membership(cluster).await;
        (state, answer)
    });
    let mut problems = Vec::new();
    let mut reachable = Vec::new();
    for (state, answer) in futures_util::future::join_all(asks).await {
        match answer {
            Ok(m) => match m.disagreement(cluster, state.shard - 1, shards.len()) {
                Some(why) => problems.push(format!("{} {why}", state.host)),
                None => {
                    if m.shard.is_none() {
                        log::warn!(
                            "{} does not say which shard of {cluster} it is (no is_local \
                             entry); trusting CLICKHOUSE_HOSTS (shard {})",
                            state.host,
                            state.shard
                        );
                    }
                    reachable.push(state.host.clone());
                }
            },
            Err(e) => {
                state.failed(&e);
                log::warn!(
                    "{} (shard {}) not reachable at start-up ({e}); its shard's rows wait \
                     for a replica",
                    state.host,
                    state.shard
                );
            }
        }
    }
    if !problems.is_empty() {
        return Err(StartupError::Cluster {
            cluster: cluster.clone(),
            problems: problems.join("; "),
        });
    }
    for (sink, state) in sinks {
        if !reachable.contains(&state.host) {
            continue;
        }
        match sink.prepare().await {
            Ok(p) => {
                state.answered();
                log::info!(
                    "ClickHouse {} at {} (shard {}), writing to {}",
                    p.version_text,
                    state.host,
                    state.shard,
                    sink.target()
                );
            }
            Err(e) => {
                state.failed(&e);
                log::warn!("{} not ready ({e}); will retry", state.host);
            }
        }
    }
    Ok(())
}
