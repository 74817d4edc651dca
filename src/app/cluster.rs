//! Start-up in a cluster (`CLICKHOUSE_CLUSTER`): check that the hosts in `CLICKHOUSE_HOSTS`
//! are the shards the servers say they are, and create the events table's tables on every
//! host that answers. Each table's lanes, one per shard, are built with every other lane
//! (`tables.rs`).

use std::sync::Arc;

use super::StartupError;
use super::tables::TableToStart;
use crate::config::{Config, HostPort};
use crate::lane::ingest::ServerCheck;
use crate::sink::{ClusterCheck, HostState, TableSink};

/// Checks the cluster and creates the events table's tables where it can; returns the
/// health check over every host. A host down at start-up is logged, not fatal (its lane's
/// other replicas, or its buffer and spool, take its rows until it answers); a host that
/// answers and disagrees with `CLICKHOUSE_HOSTS` stops start-up, naming it.
pub(super) async fn check(
    config: &Config,
    events: &mut TableToStart,
) -> Result<Arc<dyn ServerCheck>, StartupError> {
    // Validated when the configuration was read.
    let shards = config.clickhouse_shards().unwrap_or_default();
    // Each host's state, shared by the health check and the events table's lanes.
    events.hosts = shard_hosts(&shards);
    // The handlers' sinks: probes, the status page, and the start-up checks.
    let handler_sinks: Vec<(Arc<TableSink>, Arc<HostState>)> = shards
        .iter()
        .flatten()
        .zip(events.hosts.iter().flatten())
        .map(|(h, state)| {
            let at = super::sink_settings_at(config, h);
            (
                Arc::new(TableSink::for_replica(&at, &events.sink)),
                state.clone(),
            )
        })
        .collect();
    let events = &events.sink;
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
        events.state().sharding_expression().unwrap_or_default(),
        shards.len()
    );
    Ok(Arc::new(ClusterCheck::new(handler_sinks)))
}

/// A state for each host of `shards`, by shard.
pub(super) fn shard_hosts(shards: &[Vec<HostPort>]) -> Vec<Vec<Arc<HostState>>> {
    (shards.iter().enumerate())
        .map(|(i, replicas)| {
            (replicas.iter())
                .map(|h| Arc::new(HostState::new(h.to_string(), i + 1)))
                .collect()
        })
        .collect()
}

/// Asks every host how it sees the cluster, and creates the tables on those that answer.
/// Hosts that disagree with `CLICKHOUSE_HOSTS` (another shard count, another shard, a
/// weight other than 1, no such cluster) stop start-up, each named.
async fn check_topology(
    config: &Config,
    shards: &[Vec<HostPort>],
    sinks: &[(Arc<TableSink>, Arc<HostState>)],
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
            Err(e) if crate::sink::is_certificate_error(&e.to_string()) => {
                return Err(StartupError::Certificate {
                    url: state.host.clone(),
                    reason: super::certificate_reason(&e.to_string()),
                });
            }
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
            Ok((text, _)) => {
                state.answered();
                log::info!(
                    "ClickHouse {text} at {} (shard {}), writing to {}",
                    state.host,
                    state.shard,
                    sink.target()
                );
            }
            Err(e) => {
                state.failed(&crate::sink::SinkError::Retryable(e.clone()));
                log::warn!("{} not ready ({e}); will retry", state.host);
            }
        }
    }
    Ok(())
}
