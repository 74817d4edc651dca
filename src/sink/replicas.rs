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

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;

use super::{InsertId, Sink, SinkError, TableSink};
use crate::format::RowsRef;

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

/// One replica as the set uses it: a sink that can also be pinged.
pub trait Replica: Sink {
    /// Whether the server answers a query now (bounded in time).
    fn ping(&self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl Replica for TableSink {
    async fn ping(&self) -> Result<(), SinkError> {
        self.server_version().await.map(|_| ())
    }
}

/// The replicas of one shard, written as one [`Sink`].
pub struct ReplicaSet<R = TableSink> {
    replicas: Vec<(R, Arc<HostState>)>,
    /// The replica tried first: the last one that succeeded.
    preferred: AtomicUsize,
    /// An insert (its token) that a replica answered `UNKNOWN_STATUS_OF_INSERT` for, and
    /// that replica: the insert goes there again, and nowhere else, until it is stored
    /// (see [`UNKNOWN_STATUS`]).
    pinned: parking_lot::Mutex<Option<(String, usize)>>,
}

/// `UNKNOWN_STATUS_OF_INSERT`: the replica lost ZooKeeper while committing, and its part
/// may yet be committed. Retried on the same replica, the insert is found (query log) or
/// deduplicated there; sent to another replica, it could be stored beside the part that
/// later commits.
const UNKNOWN_STATUS: u32 = 319;

impl<R: Replica> ReplicaSet<R> {
    /// A set over `replicas` (at least one), starting at `seed % replicas`.
    pub fn new(replicas: Vec<(R, Arc<HostState>)>, seed: u64) -> Self {
        let start = (seed % replicas.len().max(1) as u64) as usize;
        Self {
            replicas,
            preferred: AtomicUsize::new(start),
            pinned: parking_lot::Mutex::new(None),
        }
    }

    /// The hosts' shared states, for health and metrics.
    pub fn hosts(&self) -> Vec<Arc<HostState>> {
        self.replicas.iter().map(|(_, h)| h.clone()).collect()
    }

    /// Replica indexes in the order this attempt tries them: the preferred one first; for
    /// an insert a replica left in an unknown state, that replica alone.
    fn order_for(&self, id: Option<InsertId<'_>>) -> Vec<usize> {
        let pinned = self.pinned.lock().clone();
        if let (Some((token, i)), Some(id)) = (pinned, id)
            && token == id.token
        {
            return vec![i];
        }
        self.order().collect()
    }

    /// Replica indexes in the order this attempt tries them: the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + use<R> {
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
        match sink.ping().await {
            Ok(()) => Ok(()),
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

impl<R: Replica> Sink for ReplicaSet<R> {
    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        let mut id = id;
        let mut last = None;
        for i in self.order_for(id) {
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
                    let mut pinned = self.pinned.lock();
                    if pinned.as_ref().is_some_and(|(_, p)| *p == i) {
                        *pinned = None;
                    }
                    return Ok(());
                }
                Err(e) if !e.is_retryable() => {
                    host.answered();
                    return Err(e);
                }
                Err(e) if e.code() == Some(UNKNOWN_STATUS) => {
                    // It answers, and its part may yet be committed: the insert waits for
                    // this replica rather than going to another now.
                    host.answered();
                    if let Some(id) = id {
                        *self.pinned.lock() = Some((id.token.to_string(), i));
                    }
                    log::debug!(
                        "insert into {} has an unknown status; retried there: {e}",
                        host.host
                    );
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

    async fn answers_queries(&self) -> Result<(), SinkError> {
        let mut last = None;
        for i in self.order() {
            match self.replicas[i].0.ping().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(no_replica))
    }

    async fn end_probe(&self) -> Result<(), SinkError> {
        let mut result = Ok(());
        for (replica, _) in &self.replicas {
            if let Err(e) = replica.end_probe().await {
                result = Err(e);
            }
        }
        result
    }

    fn list_tag_len(&self) -> usize {
        self.replicas.first().map_or(0, |(r, _)| r.list_tag_len())
    }
}

/// The health check's view of the cluster: every host, pinged together.
pub struct ClusterCheck {
    hosts: Vec<(Arc<TableSink>, Arc<HostState>)>,
}

impl ClusterCheck {
    /// Checks `hosts` (the handlers' own sinks, with the lanes' shared states).
    pub fn new(hosts: Vec<(Arc<TableSink>, Arc<HostState>)>) -> Self {
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
        self.hosts
            .iter()
            .find_map(|(sink, _)| sink.state().version_text())
    }

    /// The insert format the flushers decided (they share the first host's view).
    pub fn insert_format(&self) -> Option<super::FormatInfo> {
        self.hosts
            .first()
            .and_then(|(sink, _)| sink.state().format_info())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::event::testing::rows;

    /// A replica that answers from a script (`Ok`, or an error per attempt; `Ok` once the
    /// script is used up) and records what it was sent.
    #[derive(Default)]
    struct Scripted {
        answers: Mutex<Vec<Result<(), SinkError>>>,
        ping_ok: bool,
        writes: Mutex<Vec<(String, bool)>>,
        pings: AtomicUsize,
    }

    impl Scripted {
        fn new(answers: Vec<Result<(), SinkError>>, ping_ok: bool) -> Self {
            Self {
                answers: Mutex::new(answers),
                ping_ok,
                ..Self::default()
            }
        }
    }

    impl Sink for Scripted {
        async fn write(&self, _: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
            let id = id.expect("an identity");
            self.writes
                .lock()
                .push((id.token.to_string(), id.maybe_sent));
            let mut answers = self.answers.lock();
            if answers.is_empty() {
                Ok(())
            } else {
                answers.remove(0)
            }
        }
    }

    impl Replica for Scripted {
        async fn ping(&self) -> Result<(), SinkError> {
            self.pings.fetch_add(1, Ordering::Relaxed);
            match self.ping_ok {
                true => Ok(()),
                false => Err(down()),
            }
        }
    }

    fn down() -> SinkError {
        SinkError::Retryable("connection refused".into())
    }

    fn set(replicas: Vec<Scripted>, seed: u64) -> ReplicaSet<Scripted> {
        let replicas = replicas
            .into_iter()
            .enumerate()
            .map(|(i, r)| (r, Arc::new(HostState::new(format!("h{i}:1"), 1))))
            .collect();
        ReplicaSet::new(replicas, seed)
    }

    fn write(set: &ReplicaSet<Scripted>, token: &str) -> Result<(), SinkError> {
        let rows = rows(0..3);
        let id = InsertId {
            token,
            maybe_sent: false,
        };
        futures_util::FutureExt::now_or_never(set.write(rows.view(), Some(id))).expect("ready")
    }

    fn writes(set: &ReplicaSet<Scripted>, i: usize) -> Vec<(String, bool)> {
        set.replicas[i].0.writes.lock().clone()
    }

    #[test]
    fn the_seed_picks_the_first_replica_and_success_keeps_it() {
        let s = set(vec![Scripted::default(), Scripted::default()], 3);
        write(&s, "t1").unwrap();
        write(&s, "t2").unwrap();
        assert!(writes(&s, 0).is_empty());
        assert_eq!(writes(&s, 1).len(), 2);
        let status = s.hosts()[1].status();
        assert_eq!((status.up, status.inserts, status.rows), (Some(true), 2, 6));
    }

    #[test]
    fn a_retryable_failure_goes_to_the_next_replica_with_the_same_identity() {
        let s = set(
            vec![Scripted::new(vec![Err(down())], true), Scripted::default()],
            0,
        );
        write(&s, "batch:0-3:abc").unwrap();
        assert_eq!(writes(&s, 0), [("batch:0-3:abc".to_string(), false)]);
        // The first replica may have committed: the next attempt says so.
        assert_eq!(writes(&s, 1), [("batch:0-3:abc".to_string(), true)]);
        assert_eq!(s.hosts()[0].status().up, Some(false));
        assert!(s.hosts()[0].status().last_error.is_some());
        // The one that succeeded is preferred from now on.
        write(&s, "next").unwrap();
        assert_eq!(writes(&s, 0).len(), 1);
        assert_eq!(writes(&s, 1).len(), 2);
    }

    #[test]
    fn an_insert_of_unknown_status_is_retried_on_its_replica_only() {
        let unknown = || {
            SinkError::Retryable(
                "Code: 319, e.displayText() = DB::Exception: Unknown status, client must retry"
                    .into(),
            )
        };
        let s = set(
            vec![
                Scripted::new(vec![Err(unknown()), Err(down())], true),
                Scripted::default(),
            ],
            0,
        );
        assert!(
            write(&s, "b:0-3:x").is_err(),
            "not sent to the other replica"
        );
        assert!(writes(&s, 1).is_empty());
        // Still there, even when it does not answer, until it stores the insert.
        assert!(write(&s, "b:0-3:x").is_err());
        assert!(writes(&s, 1).is_empty());
        write(&s, "b:0-3:x").unwrap();
        assert_eq!(writes(&s, 0).len(), 3);
        assert!(writes(&s, 1).is_empty());
        // Other inserts fail over as ever.
        s.replicas[0].0.answers.lock().push(Err(down()));
        write(&s, "next").unwrap();
        assert_eq!(writes(&s, 1).len(), 1);
    }

    #[test]
    fn a_data_error_is_the_rows_fault_and_not_tried_elsewhere() {
        let s = set(
            vec![
                Scripted::new(vec![Err(SinkError::Data("bad row".into()))], true),
                Scripted::default(),
            ],
            0,
        );
        assert!(matches!(write(&s, "t"), Err(SinkError::Data(_))));
        assert!(writes(&s, 1).is_empty());
        assert_eq!(s.hosts()[0].status().up, Some(true));
    }

    #[test]
    fn a_down_replica_is_pinged_before_it_gets_inserts_again() {
        let s = set(
            vec![Scripted::new(vec![Err(down())], false), Scripted::default()],
            0,
        );
        write(&s, "t1").unwrap();
        assert_eq!(s.replicas[0].0.pings.load(Ordering::Relaxed), 0);
        // Preferred is now the second; make it fail so the first is tried again.
        s.replicas[1].0.answers.lock().push(Err(down()));
        let answer = write(&s, "t2");
        assert!(answer.is_err(), "both failed: the flusher backs off");
        assert_eq!(s.replicas[0].0.pings.load(Ordering::Relaxed), 1);
        assert_eq!(
            writes(&s, 0).len(),
            1,
            "not sent to a replica that did not answer"
        );
    }
}
