//! The seam between request handlers and storage: where accepted rows go.
//!
//! Handlers only see [`Ingest`] (where rows go) and [`ServerCheck`] (what the probes ask of
//! the storage behind it), never the sink's own types. Today there are two implementations
//! of `Ingest`, the double buffer ([`Buffered`]) and a synchronous insert per request
//! ([`Direct`]); a Kafka or SQS producer would be a third, without touching the HTTP layer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, Either, Ready, ready};

use crate::format::Rows;
use crate::lane::buffer::{AppendError, DoubleBuffer};
use crate::lane::room::{Attempt, take_or_wait};
use crate::lane::shard::Sharder;
use crate::lane::spool::{self, SpoolRefusal};
pub use crate::sink::HostStatus;
use crate::sink::{ClusterCheck, HostState, Sink, SinkError, TableSink};

/// What [`Ingest::room_before_decoding`] gives: an answer at once (every request while
/// there is room: no allocation), or a wait for room.
pub type RoomCheck<'a> =
    Either<Ready<Result<(), SubmitError>>, BoxFuture<'a, Result<(), SubmitError>>>;

/// Why accepted rows could not be taken. Nothing was stored, except possibly after a
/// direct-mode insert that timed out after ClickHouse committed, so a resend is
/// at-least-once.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// One request holds more than the buffer may ever hold; resending cannot help.
    #[error("{0}")]
    TooLarge(String),
    /// Too much is buffered, or (direct mode) the storage is unreachable; the client should
    /// retry after the given time.
    #[error("{reason}")]
    Unavailable {
        /// What is full.
        reason: String,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The storage refused the rows as data (direct mode): resending them cannot help.
    #[error("{0}")]
    Rejected(String),
}

impl From<SinkError> for SubmitError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Retryable(_) => SubmitError::Unavailable {
                retry_after: e.retry_after(),
                reason: e.to_string(),
            },
            SinkError::Data(reason) => SubmitError::Rejected(reason),
        }
    }
}

/// What the probes and the status page ask of the storage behind the seam.
pub trait ServerCheck: Send + Sync + 'static {
    /// The server's version, asked now (bounded in time), or why it did not answer. Owned
    /// and `'static`, so one answer can be shared by every probe waiting for it.
    fn ping(self: Arc<Self>) -> BoxFuture<'static, Result<String, String>>;

    /// The version the server reported when it was last reached, if ever.
    fn version_text(&self) -> Option<String>;

    /// How inserts are encoded and sorted, as `/v1/health` shows it (`null` before the
    /// server was reached).
    fn insert_format(&self) -> serde_json::Value;
}

impl ServerCheck for TableSink {
    fn ping(self: Arc<Self>) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async move { self.server_version().await.map_err(|e| e.to_string()) })
    }

    fn version_text(&self) -> Option<String> {
        self.state().version_text()
    }

    fn insert_format(&self) -> serde_json::Value {
        serde_json::to_value(self.state().format_info()).unwrap_or_default()
    }
}

impl ServerCheck for ClusterCheck {
    fn ping(self: Arc<Self>) -> BoxFuture<'static, Result<String, String>> {
        Box::pin(async move { ClusterCheck::ping(&self).await })
    }

    fn version_text(&self) -> Option<String> {
        ClusterCheck::version_text(self)
    }

    fn insert_format(&self) -> serde_json::Value {
        serde_json::to_value(ClusterCheck::insert_format(self)).unwrap_or_default()
    }
}

/// Takes a request's validated rows. `Ok` means the rows are as safe as this
/// implementation promises: buffered in memory, or committed.
pub trait Ingest: Send + Sync + 'static {
    /// Hands over `rows`. Boxed so handlers can hold any implementation as a trait object;
    /// one small allocation per request.
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>>;

    /// Events accepted but not yet confirmed by storage.
    fn pending_events(&self) -> usize;

    /// Before a body of `body_bytes` is decoded: `Err` when it would (all but) certainly be
    /// refused at the append too, after waiting up to `BUFFER_FULL_WAIT_MS` for room (a cheap
    /// `503` instead of decoding, validating and encoding events only to refuse them).
    /// `Ok`: decode and submit.
    fn room_before_decoding(&self, _body_bytes: usize) -> RoomCheck<'_> {
        Either::Left(ready(Ok(())))
    }

    /// Whether shutdown has begun (nothing new is taken).
    fn is_closed(&self) -> bool {
        false
    }

    /// What waits to reach ClickHouse, for health, readiness, metrics and the status page.
    fn pending(&self) -> Pending {
        Pending::default()
    }

    /// In a cluster, each shard's hosts and what its lane holds (empty otherwise).
    fn shards(&self) -> Vec<ShardStatus> {
        Vec::new()
    }
}

/// One shard of a cluster, as health, readiness, metrics and the status page show it.
#[derive(Debug, Clone)]
pub struct ShardStatus {
    /// From 1, in `CLICKHOUSE_HOSTS` order.
    pub shard: usize,
    /// Its replicas.
    pub hosts: Vec<HostStatus>,
    /// What its lane holds.
    pub pending: Pending,
}

impl ShardStatus {
    /// Whether one of its replicas took its last insert or ping.
    pub fn has_healthy_replica(&self) -> bool {
        self.hosts.iter().any(|h| h.up != Some(false))
    }
}

/// What waits to reach ClickHouse.
#[derive(Debug, Default, Clone)]
pub struct Pending {
    /// Bytes buffered in memory (both halves, and a half being written).
    pub buffer_bytes: usize,
    /// `BUFFER_MAX_BYTES` (0: no buffer).
    pub buffer_max_bytes: usize,
    /// Bytes held by requests waiting for room (`BUFFER_FULL_WAIT_MS`, see [`crate::lane::room`]).
    pub waiting_bytes: usize,
    /// Age of the oldest accepted event not yet confirmed.
    pub oldest: Option<Duration>,
    /// `disk` mode's spool.
    pub spool: Option<SpoolFill>,
}

impl Pending {
    /// Whether rows wait to reach ClickHouse: in memory (a half, or a batch being written or
    /// read back from the spool), or unconfirmed in the spool.
    pub fn holds_rows(&self) -> bool {
        self.buffer_bytes > 0
            || self.oldest.is_some()
            || self.spool.as_ref().is_some_and(|s| s.bytes > 0)
    }
}

/// The spool's state, as the health and status endpoints show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpoolFill {
    /// Unconfirmed bytes on disk.
    pub bytes: u64,
    /// `SPOOL_MAX_BYTES`.
    pub max_bytes: u64,
    /// Why it refuses records, if it does.
    pub failed: Option<String>,
}

/// Appends to the double buffer; the flusher thread writes it out. In `disk` mode the rows
/// are also written to the spool, and `Ok` waits until they are synced there.
pub struct Buffered(pub Arc<DoubleBuffer>);

impl Ingest for Buffered {
    /// Appends at once when there is room; when the buffer (`disk`: the spool) is full,
    /// waits for room up to `BUFFER_FULL_WAIT_MS` (see [`crate::lane::room`]).
    fn submit(&self, mut rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        let buffer = &*self.0;
        let Some(spool) = buffer.spool() else {
            match buffer.append(&mut rows) {
                Err(e) if is_full(&e) => {}
                result => return Box::pin(std::future::ready(result.map_err(refused))),
            }
            return Box::pin(async move {
                take_or_wait(rows.mem_size(), || match buffer.append(&mut rows) {
                    Err(e) if is_full(&e) => Attempt::Full(refused(e), buffer.room()),
                    result => Attempt::Done(result.map_err(refused)),
                })
                .await
            });
        };
        // Framed and checksummed here, outside the buffer's lock.
        let framed = spool::frame(&rows);
        Box::pin(async move {
            let end = take_or_wait(rows.mem_size(), || {
                match buffer.append_spooled(&mut rows, &framed) {
                    Err(e) if is_full(&e) => Attempt::Full(refused(e), buffer.room()),
                    result => Attempt::Done(result.map_err(refused)),
                }
            })
            .await?;
            spool
                .wait_durable(end)
                .await
                .map_err(|e| refused(AppendError::Spool(e)))
        })
    }

    fn pending_events(&self) -> usize {
        self.0.pending_events()
    }

    /// When the buffer already holds something and has less room left than the body's size
    /// (`disk` mode: the spool, since a full memory buffer spills there): an event encodes
    /// to about half its JSON, so such a body would (all but) certainly be refused at the
    /// append too. It waits for room like the append would. An empty buffer always decodes
    /// (a request alone gets `413` or fits).
    fn room_before_decoding(&self, body_bytes: usize) -> RoomCheck<'_> {
        let buffer = &*self.0;
        let attempt = move || match early_refusal(buffer, body_bytes) {
            None => Attempt::Done(Ok(())),
            Some(e) if is_full(&e) => Attempt::Full(refused(e), buffer.room()),
            Some(e) => Attempt::Done(Err(refused(e))),
        };
        match attempt() {
            Attempt::Done(result) => Either::Left(ready(result)),
            Attempt::Full(..) => Either::Right(Box::pin(take_or_wait(body_bytes, attempt))),
        }
    }

    fn is_closed(&self) -> bool {
        self.0.deadline().is_some()
    }

    fn pending(&self) -> Pending {
        Pending {
            buffer_bytes: self.0.pending_bytes(),
            buffer_max_bytes: self.0.limits().max_bytes,
            waiting_bytes: self.0.room().waiting_bytes(),
            oldest: self.0.oldest_pending().map(|t| t.elapsed()),
            spool: self.0.spool().map(|spool| {
                let (bytes, max_bytes) = spool.fill();
                SpoolFill {
                    bytes,
                    max_bytes,
                    failed: spool.failure(),
                }
            }),
        }
    }
}

/// One lane per shard of a cluster: a request's rows are split by shard
/// ([`Sharder`]) and each part appended to its shard's lane (its own buffer, flusher,
/// spool and replica set), so a shard whose replicas are down holds its own rows while the
/// others flow.
///
/// A request is taken whole or refused whole: every lane its rows go to is checked for room
/// and appended to under one lock, so two requests racing for a lane's last room cannot
/// leave one partly taken (a `503` for the rest would make the client's resend store the
/// taken part twice). The lock covers only the checks and the memcpys; spool syncs are
/// awaited after it.
pub struct Sharded {
    /// Splits rows by shard.
    pub sharder: Sharder,
    /// One per shard, in shard order.
    pub lanes: Vec<Lane>,
    /// Held to check every lane's room and append, never across a wait.
    pub route: parking_lot::Mutex<()>,
}

/// One shard's lane.
pub struct Lane {
    /// Its buffer (and spool), written by its own flusher.
    pub buffer: Buffered,
    /// Its replicas' shared states.
    pub hosts: Vec<Arc<HostState>>,
}

impl Ingest for Sharded {
    fn submit(&self, mut rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        let parts = self.sharder.split(&mut rows);
        Box::pin(async move {
            let taken: Vec<(&Lane, Rows)> = self
                .lanes
                .iter()
                .zip(parts)
                .filter(|(_, part)| !part.is_empty())
                .collect();
            // Framed and checksummed outside the lock (disk mode).
            let framed: Vec<Option<Vec<u8>>> = taken
                .iter()
                .map(|(lane, part)| lane.buffer.0.spool().map(|_| spool::frame(part)))
                .collect();
            let bytes = taken.iter().map(|(_, part)| part.mem_size()).sum();
            let mut taken = Some((taken, framed));
            // Waits on the lane that was full (see `crate::lane::room`), then checks every lane again.
            let durable = take_or_wait(bytes, || {
                let _route = self.route.lock();
                let Some((lanes, framed)) = &taken else {
                    return Attempt::Done(Ok(Vec::new())); // unreachable: taken once, then done
                };
                // All or none: every lane is asked what its append would say before any
                // appends, so a refusal never leaves part of the request behind.
                for ((lane, part), framed) in lanes.iter().zip(framed) {
                    match lane.buffer.0.refusal(part, framed.as_deref()) {
                        None => {}
                        Some(e) if is_full(&e) => {
                            return Attempt::Full(refused(e), lane.buffer.0.room());
                        }
                        Some(e) => return Attempt::Done(Err(refused(e))),
                    }
                }
                let Some((lanes, framed)) = taken.take() else {
                    return Attempt::Done(Ok(Vec::new()));
                };
                Attempt::Done(append_all(lanes, framed))
            })
            .await?;
            for (spool, end) in durable {
                spool
                    .wait_durable(end)
                    .await
                    .map_err(|e| refused(AppendError::Spool(e)))?;
            }
            Ok(())
        })
    }

    fn pending_events(&self) -> usize {
        self.lanes.iter().map(|l| l.buffer.pending_events()).sum()
    }

    fn is_closed(&self) -> bool {
        self.lanes.iter().any(|l| l.buffer.is_closed())
    }

    fn pending(&self) -> Pending {
        let mut total = Pending::default();
        for lane in &self.lanes {
            let p = lane.buffer.pending();
            total.buffer_bytes += p.buffer_bytes;
            total.buffer_max_bytes += p.buffer_max_bytes;
            total.waiting_bytes += p.waiting_bytes;
            total.oldest = total.oldest.max(p.oldest);
            if let Some(s) = p.spool {
                let sum = total.spool.get_or_insert(SpoolFill {
                    bytes: 0,
                    max_bytes: 0,
                    failed: None,
                });
                sum.bytes += s.bytes;
                sum.max_bytes += s.max_bytes;
                sum.failed = sum.failed.take().or(s.failed);
            }
        }
        total
    }

    fn shards(&self) -> Vec<ShardStatus> {
        self.lanes
            .iter()
            .enumerate()
            .map(|(i, lane)| ShardStatus {
                shard: i + 1,
                hosts: lane.hosts.iter().map(|h| h.status()).collect(),
                pending: lane.buffer.pending(),
            })
            .collect()
    }
}

/// Appends each part to its lane (the caller holds the route lock and checked the room).
/// Returns the spool positions to wait for (`disk` mode).
fn append_all(
    lanes: Vec<(&Lane, Rows)>,
    framed: Vec<Option<Vec<u8>>>,
) -> Result<Vec<(&Arc<spool::Spool>, u64)>, SubmitError> {
    let mut durable = Vec::new();
    for ((lane, mut part), framed) in lanes.into_iter().zip(framed) {
        let buffer = &lane.buffer.0;
        match (framed, buffer.spool()) {
            (Some(framed), Some(spool)) => {
                let end = buffer.append_spooled(&mut part, &framed).map_err(refused)?;
                durable.push((spool, end));
            }
            _ => buffer.append(&mut part).map_err(refused)?,
        }
    }
    Ok(durable)
}

/// Why a body of `body_bytes` would be refused before it is decoded, if that is certain
/// enough to say (see [`Ingest::room_before_decoding`]). Lock-free in `memory` mode.
fn early_refusal(buffer: &DoubleBuffer, body_bytes: usize) -> Option<AppendError> {
    if let Some(spool) = buffer.spool() {
        if let Some(why) = spool.failure() {
            return Some(AppendError::Spool(SpoolRefusal::Failed(why)));
        }
        let (used, max) = spool.fill();
        return (used > 0 && used.saturating_add(body_bytes as u64) > max)
            .then_some(AppendError::Spool(SpoolRefusal::Full { used, max }));
    }
    let max = buffer.limits().max_bytes;
    let buffered = buffer.pending_bytes();
    (buffered > 0 && buffered.saturating_add(body_bytes) > max)
        .then_some(AppendError::Full { buffered, max })
}

/// Whether waiting can cure the refusal: room comes back as the flusher writes.
fn is_full(e: &AppendError) -> bool {
    matches!(
        e,
        AppendError::Full { .. } | AppendError::Spool(SpoolRefusal::Full { .. })
    )
}

/// What a refused append means for the client.
fn refused(e: AppendError) -> SubmitError {
    let retry_after = match &e {
        AppendError::Spool(SpoolRefusal::Full { .. }) => Duration::from_secs(5),
        AppendError::Spool(SpoolRefusal::Failed(_)) => Duration::from_secs(30),
        _ => Duration::from_secs(1),
    };
    match e {
        AppendError::TooLarge { .. } => SubmitError::TooLarge(e.to_string()),
        AppendError::Closed => SubmitError::ShuttingDown,
        AppendError::Full { .. } | AppendError::Spool(_) => SubmitError::Unavailable {
            reason: e.to_string(),
            retry_after,
        },
    }
}

/// One synchronous insert per request, answered after the sink confirms. No retries: the
/// client gets the error and decides.
pub struct Direct<S>(pub Arc<S>);

impl<S: Sink> Ingest for Direct<S> {
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        Box::pin(async move { Ok(self.0.write(rows.view(), None).await?) })
    }

    fn pending_events(&self) -> usize {
        0
    }
}

/// Drops everything: the `BUFFER_MODE=discard` benchmark ceiling.
pub struct Discard;

impl Ingest for Discard {
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        drop(rows);
        Box::pin(std::future::ready(Ok(())))
    }

    fn pending_events(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::buffer::Limits;
    use crate::table::event::testing::event;

    /// `n` rows from `n` devices, so both of two shards get some.
    fn rows(n: u32) -> Rows {
        let mut rows = Rows::default();
        for i in 0..n {
            let mut e = event(i);
            e.device_id = uuid::Uuid::from_u128(u128::from(i) * 0x9E37_79B9_7F4A_7C15);
            rows.push(&e);
        }
        rows
    }

    fn sharded(max_bytes: usize) -> Sharded {
        sharded_waiting(max_bytes, Duration::ZERO)
    }

    /// Two lanes that swap on every append and wait up to `full_wait` for room.
    fn sharded_waiting(max_bytes: usize, full_wait: Duration) -> Sharded {
        let lane = || Lane {
            buffer: Buffered(Arc::new(DoubleBuffer::new(Limits {
                swap_events: 1,
                flush_interval: Duration::from_secs(60),
                min_interval: Duration::ZERO,
                max_bytes,
                full_wait,
            }))),
            hosts: Vec::new(),
        };
        Sharded {
            sharder: Sharder::new("device_id", 2),
            lanes: vec![lane(), lane()],
            route: Default::default(),
        }
    }

    #[test]
    fn a_lane_whose_spool_would_refuse_leaves_the_other_lanes_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let mut writers = Vec::new();
        let mut lane = |name: &str| {
            let (spool, _) = spool::Spool::open(&tmp.path().join(name), 1 << 30).unwrap();
            let spool = Arc::new(spool);
            writers.push(spool::WriterGuard::spawn(spool.clone()).unwrap());
            let limits = Limits {
                swap_events: 1_000,
                flush_interval: Duration::from_secs(60),
                min_interval: Duration::ZERO,
                max_bytes: 1 << 20,
                full_wait: Duration::ZERO,
            };
            Lane {
                buffer: Buffered(Arc::new(DoubleBuffer::with_spool(limits, spool, None))),
                hosts: Vec::new(),
            }
        };
        let ingest = Sharded {
            sharder: Sharder::new("device_id", 2),
            lanes: vec![lane("a"), lane("b")],
            route: Default::default(),
        };
        // The second lane's spool takes no more records (its writer has stopped).
        writers.pop().unwrap().stop();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(ingest.submit(rows(20))).is_err());
        assert_eq!(ingest.lanes[0].buffer.pending_events(), 0, "nothing taken");
        assert_eq!(ingest.lanes[0].buffer.0.spool().unwrap().fill().0, 0);
    }

    #[test]
    fn rows_go_to_their_shards_lane() {
        let ingest = sharded(usize::MAX);
        let sent = rows(100);
        let expected = Sharder::new("device_id", 2).split(&mut sent.clone());
        futures_util::FutureExt::now_or_never(ingest.submit(sent))
            .expect("memory mode answers at once")
            .unwrap();
        for (lane, part) in ingest.lanes.iter().zip(&expected) {
            assert_eq!(lane.buffer.pending_events(), part.len());
            assert!(!part.is_empty());
        }
        assert_eq!(ingest.pending_events(), 100);
        assert_eq!(ingest.shards().len(), 2);
    }

    #[test]
    fn a_full_lane_refuses_the_whole_request() {
        let one_row = rows(1).mem_size();
        let ingest = sharded(one_row * 60);
        // Fill the second lane to the brim with rows of its shard only.
        let mut fill = rows(400);
        let mut parts = ingest.sharder.split(&mut fill);
        let mut second = Rows::default();
        for i in 0..parts[1].len().min(60) {
            second.push_encoded(parts[1].row(i));
        }
        parts[1].clear();
        ingest.lanes[1].buffer.0.append(&mut second).unwrap();
        let before = ingest.lanes[0].buffer.pending_events();
        let answer = futures_util::FutureExt::now_or_never(ingest.submit(rows(20))).unwrap();
        assert!(
            matches!(answer, Err(SubmitError::Unavailable { .. })),
            "{answer:?}"
        );
        assert_eq!(
            ingest.lanes[0].buffer.pending_events(),
            before,
            "the lane with room took nothing of a refused request"
        );
    }

    #[tokio::test]
    async fn a_full_lane_makes_the_request_wait_until_its_flusher_frees_room() {
        let one_row = rows(1).mem_size();
        // Waiting requests may hold a quarter of the cap: 100 rows, more than the 20 sent.
        let ingest = sharded_waiting(one_row * 400, Duration::from_secs(600));
        let mut fill = rows(1200);
        let parts = ingest.sharder.split(&mut fill);
        assert!(parts[1].len() >= 400);
        let mut second = Rows::default();
        for i in 0..400 {
            second.push_encoded(parts[1].row(i));
        }
        let full = ingest.lanes[1].buffer.0.clone();
        full.append(&mut second).unwrap();
        // The flusher takes the full half and writes it for as long as the test wants.
        let mut half = full.new_half();
        full.swap_when_due(&mut half).unwrap();
        let flusher = std::thread::spawn(move || {
            while full.room().waiting_bytes() == 0 {
                std::thread::yield_now();
            }
            full.release(&mut half);
        });
        let sent = rows(20);
        let expected = Sharder::new("device_id", 2).split(&mut sent.clone());
        ingest.submit(sent).await.unwrap();
        flusher.join().unwrap();
        for (lane, part) in ingest.lanes.iter().zip(&expected) {
            assert_eq!(lane.buffer.pending_events(), part.len(), "taken whole");
        }
        assert_eq!(ingest.lanes[1].buffer.0.room().waiting_bytes(), 0);
    }

    #[test]
    fn only_a_body_larger_than_the_room_left_is_refused_before_decoding() {
        let buffer = Arc::new(DoubleBuffer::new(Limits {
            swap_events: 1000,
            flush_interval: Duration::from_secs(60),
            min_interval: Duration::ZERO,
            max_bytes: 4096,
            full_wait: Duration::ZERO,
        }));
        let ingest = Buffered(buffer.clone());
        // Empty: even a body over the cap is decoded (it may encode small enough, or get 413).
        let early =
            |bytes| futures_util::FutureExt::now_or_never(ingest.room_before_decoding(bytes));
        assert!(matches!(early(10_000), Some(Ok(()))));
        buffer
            .append(&mut crate::table::event::testing::rows(0..10))
            .unwrap();
        let room = 4096 - buffer.pending_bytes();
        assert!(matches!(early(room), Some(Ok(()))));
        assert!(matches!(
            early(room + 1),
            Some(Err(SubmitError::Unavailable { .. }))
        ));
    }
}
