//! A shard's replicas as one sink: each insert goes to one healthy replica, and on a
//! retryable failure the same rows with the same identity go to the next one at once.
//!
//! - **Sticky preference.** The set starts at the replica a seed picks (the spool's id, or
//!   a random one per process), so gateways spread over replicas, and keeps the replica
//!   that last succeeded: one replica's inserts form parts in order, and merges are not
//!   doubled by two replicas receiving small parts at once.
//! - **Failover with the same bytes.** A retryable failure (unreachable, timeout, a 5xx
//!   such as 242 read-only while ZooKeeper is away) marks the replica down and the same
//!   rows go to the next replica under the same identity: the same
//!   `insert_deduplication_token` on 22.2+, and on older servers the same block (same
//!   chunking, same sort: the builder is deterministic), which `ReplicatedMergeTree`
//!   deduplicates by checksum across replicas. So an insert whose answer was lost and
//!   that was then retried on another replica is stored once.
//! - **Back-off only when all failed.** The set returns an error only after every replica
//!   failed this attempt; the flusher then backs off as with one server.
//! - **Re-probe.** A replica marked down is pinged before it gets an insert again (and the
//!   health check's pings mark it up or down too).
//! - Data errors are the rows' fault, the same on every replica: returned at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::{ClickHouseSink, InsertId, Sink, SinkError};
use crate::block::RowsRef;

/// One host's state, shared by its lane's sink (which updates it) and the probes, metrics
/// and status page (which read it). Locked only to update or copy a few fields.
#[derive(Debug)]
pub struct HostState {
    /// `host:port` as `CLICKHOUSE_HOSTS` names it.
    pub host: String,
    /// Its shard, from 1.
    pub shard: usize,
    status: Mutex<HostStatus>,
}

/// A host as `/v1/health`, `/metrics` and the status page show it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostStatus {
    /// `host:port`.
    pub host: String,
    /// Its shard, from 1.
    pub shard: usize,
    /// Whether its last insert or ping succeeded (`null`: not reached yet).
    pub up: Option<bool>,
    /// The last error it answered (kept after it recovers, with `up` saying it did).
    pub last_error: Option<String>,
    /// Successful inserts into it.
    pub inserts: u64,
    /// Rows those inserts carried.
    pub rows: u64,
    /// Seconds the last successful insert took.
    pub last_insert_seconds: Option<f64>,
    /// Seconds all successful inserts took together (for an average in `/metrics`).
    pub insert_seconds_total: f64,
}

impl HostState {
    /// A host not reached yet.
    pub fn new(host: String, shard: usize) -> Self {
        let status = HostStatus {
            host: host.clone(),
            shard,
            ..HostStatus::default()
        };
        Self {
            host,
            shard,
            status: Mutex::new(status),
        }
    }

    /// A copy of its state.
    pub fn status(&self) -> HostStatus {
        self.status.lock().clone()
    }

    /// Whether it must be probed before it gets an insert.
    fn is_down(&self) -> bool {
        self.status.lock().up == Some(false)
    }

    fn inserted(&self, rows: usize, took: Duration) {
        let mut st = self.status.lock();
        st.up = Some(true);
        st.inserts += 1;
        st.rows += rows as u64;
        st.last_insert_seconds = Some(took.as_secs_f64());
        st.insert_seconds_total += took.as_secs_f64();
    }

    /// It answered (an insert refused as data, a ping).
    pub fn answered(&self) {
        self.status.lock().up = Some(true);
    }

    /// It failed in a way another replica may not: down until it answers again.
    pub fn failed(&self, error: &SinkError) {
        let mut st = self.status.lock();
        st.up = Some(false);
        st.last_error = Some(error.to_string());
    }
}

/// The replicas of one shard, written as one [`Sink`].
pub struct ReplicaSet {
    replicas: Vec<(ClickHouseSink, Arc<HostState>)>,
    /// The replica tried first: the last one that succeeded.
    preferred: AtomicUsize,
}

impl ReplicaSet {
    /// A set over `replicas` (at least one), starting at `seed % replicas`.
    pub fn new(replicas: Vec<(ClickHouseSink, Arc<HostState>)>, seed: u64) -> Self {
        let start = (seed % replicas.len().max(1) as u64) as usize;
        Self {
            replicas,
            preferred: AtomicUsize::new(start),
        }
    }

    /// The hosts' shared states, for health and metrics.
    pub fn hosts(&self) -> Vec<Arc<HostState>> {
        self.replicas.iter().map(|(_, h)| h.clone()).collect()
    }

    /// Replica indexes in the order this attempt tries them: the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.replicas.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |k| (start + k) % n)
    }

    /// Pings a replica marked down; `Err` if it still does not answer.
    async fn probe_if_down(&self, i: usize) -> Result<(), SinkError> {
        let (sink, host) = &self.replicas[i];
        if !host.is_down() {
            return Ok(());
        }
        match sink.server_version().await {
            Ok(_) => Ok(()),
            Err(e) => {
                host.failed(&e);
                Err(e)
            }
        }
    }
}

/// What a set returns when it has no replica to try (never: the configuration names one
/// at least).
fn no_replica() -> SinkError {
    SinkError::Retryable("no replica configured for this shard".into())
}

impl Sink for ReplicaSet {
    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        let mut id = id;
        let mut last = None;
        for i in self.order() {
            if let Err(e) = self.probe_if_down(i).await {
                last = Some(e);
                continue;
            }
            let (sink, host) = &self.replicas[i];
            let started = Instant::now();
            match sink.write(rows, id).await {
                Ok(()) => {
                    host.inserted(rows.count, started.elapsed());
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) if !e.is_retryable() => {
                    host.answered();
                    return Err(e);
                }
                Err(e) => {
                    host.failed(&e);
                    if let Some(next) = &mut id {
                        // The replica may have committed before failing to answer.
                        next.maybe_sent = true;
                    }
                    log::debug!(
                        "insert into {} failed, trying the next replica: {e}",
                        host.host
                    );
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(no_replica))
    }

    async fn probe(&self, rows: RowsRef<'_>, fresh: bool) -> Result<(), SinkError> {
        let mut last = None;
        for i in self.order() {
            if let Err(e) = self.probe_if_down(i).await {
                last = Some(e);
                continue;
            }
            match self.replicas[i].0.probe(rows, fresh).await {
                Err(e) if e.is_retryable() => last = Some(e),
                answer => return answer,
            }
        }
        Err(last.unwrap_or_else(no_replica))
    }
}

/// The health check's view of the cluster: every host, pinged together.
pub struct ClusterCheck {
    hosts: Vec<(Arc<ClickHouseSink>, Arc<HostState>)>,
}

impl ClusterCheck {
    /// Checks `hosts` (the handlers' own sinks, with the lanes' shared states).
    pub fn new(hosts: Vec<(Arc<ClickHouseSink>, Arc<HostState>)>) -> Self {
        Self { hosts }
    }

    /// Pings every host at once and records who answered; the first version that came
    /// back, or every host's error when none answered.
    pub async fn ping(&self) -> Result<String, String> {
        let pings = self.hosts.iter().map(|(sink, host)| async move {
            let answer = sink.server_version().await;
            match &answer {
                Ok(_) => host.answered(),
                Err(e) => host.failed(e),
            }
            (host.host.clone(), answer)
        });
        let answers = futures_util::future::join_all(pings).await;
        let mut errors = Vec::new();
        for (host, answer) in answers {
            match answer {
                Ok(version) => return Ok(version),
                Err(e) => errors.push(format!("{host}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// The version a host reported when last reached.
    pub fn version_text(&self) -> Option<String> {
        self.hosts.iter().find_map(|(sink, _)| sink.version_text())
    }

    /// The insert format the flushers decided (they share the first host's view).
    pub fn insert_format(&self) -> Option<super::FormatInfo> {
        self.hosts.first().and_then(|(sink, _)| sink.format_info())
    }
}
