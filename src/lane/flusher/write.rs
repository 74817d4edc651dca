//! Writing one batch: chunks below ClickHouse's block size, each retried with capped
//! exponential back-off and jitter while the failure is transient, each carrying a
//! deduplication token derived from the batch's identity and the chunk's rows; a chunk
//! ClickHouse rejects as bad data is split in two until the offending rows are isolated,
//! the good rows are written and the bad ones go to the quarantine.

use std::ops::Range;
use std::time::{Duration, Instant};

use super::{Backoff, Flusher};
use crate::format::{Rows, RowsRef};
use crate::lane::quarantine::Rejected;
use crate::lane::spool::Spool;
use crate::sink::{InsertId, Refusal, Sink, SinkError};

/// Back-off between insert attempts: from 100 ms, doubling, ±25%; at most 10 s, long
/// enough not to hammer a struggling server, short enough that a recovered one is used
/// again quickly.
const INSERT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(10), 2, 0.25);
/// During an outage, one warning per this interval, not one per retry.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Most rows in one insert. ClickHouse cuts a larger insert into blocks of
/// `max_insert_block_size` (1,048,576 rows by default on 18.16; 1,048,449 on 26.9)
/// committed separately, so a retry of a partly committed insert would duplicate; below
/// that an insert is all or nothing. A busy second's batch fits in one insert, one part
/// for ClickHouse to merge: a cap below it splits the batch into a full insert and a small
/// remainder, two parts a second, and the whole ClickHouse server then spent 40 % more CPU
/// per stored row, its merges included (`docs/performance.md`). The flusher's block scratch
/// holds about two copies of one insert's rows.
pub const MAX_INSERT_ROWS: usize = 1_000_000;
const _: () = assert!(
    MAX_INSERT_ROWS < 1_048_449,
    "one insert must stay one block"
);

/// One batch to write: its rows and how the spool knows it.
pub(super) struct Batch<'a> {
    /// The rows, in order.
    pub rows: &'a Rows,
    /// The batch's identity, the prefix of its chunks' tokens.
    pub id: &'a str,
    /// `disk` mode: the spool whose begun range this batch is.
    pub spool: Option<&'a Spool>,
    /// Rows (by index) stored before a restart: skipped.
    pub done: &'a [Range<usize>],
    /// Begun before a restart: some of it may be in ClickHouse already.
    pub replay: bool,
}

/// `memory` mode: most rejected rows held in memory while the quarantine is unwritable.
const HELD_MAX_ROWS: usize = 10_000;

/// Rejected rows of one batch the quarantine could not take yet (`memory` mode).
pub(super) struct Held {
    batch: String,
    /// Each row's bytes and ClickHouse's error.
    rows: Vec<(Vec<u8>, String)>,
}

/// The batch's chunks, in order: at most `max` rows each, and never rows of two column
/// lists (the first `tag_len` bytes of a row name its list), since the sink writes those in
/// separate inserts. The same rows are always cut the same way (a replay meets the same
/// chunks).
fn chunks(rows: &Rows, max: usize, tag_len: usize) -> Vec<Range<usize>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    for i in 1..rows.len() {
        let tag = |i: usize| rows.row(i).get(..tag_len);
        if i - start == max || (tag_len > 0 && tag(i) != tag(i - 1)) {
            chunks.push(start..i);
            start = i;
        }
    }
    if start < rows.len() {
        chunks.push(start..rows.len());
    }
    chunks
}

/// The parts of `range` outside every range of `done`, in order.
fn not_done(range: &Range<usize>, done: &[Range<usize>]) -> Vec<Range<usize>> {
    let mut left = vec![range.clone()];
    for d in done {
        left = (left.into_iter())
            .flat_map(|r| [r.start..r.end.min(d.start), r.start.max(d.end)..r.end])
            .filter(|r| !r.is_empty())
            .collect();
    }
    left
}

/// Attempts refused the same way in a row, while the server answers other queries, after
/// which the refusal is taken to be about the chunk's rows (see [`Refusal::Rows`]).
const SAME_REFUSALS: u32 = 3;
/// Attempts refused for size in a row before the chunk is split (see [`Refusal::Size`]):
/// one more than the first, as a busy server's memory limit may pass.
const SIZE_REFUSALS: u32 = 2;

/// How writing one chunk ended, short of success.
pub(super) enum Failure {
    /// The sink refused the rows as data: do not retry them.
    Data(SinkError),
    /// The sink refused the chunk as too large: write it in smaller inserts.
    TooLarge,
    /// Shutdown's deadline passed first.
    Deadline,
}

impl<S: Sink> Flusher<S> {
    /// Writes the batch's rows in chunks of at most [`MAX_INSERT_ROWS`], splitting around
    /// rows the sink rejects as bad data. `id` names the batch; chunk `a..b` is sent with
    /// the token `{id}:{a}-{b}:{digest}`, the same on every retry and replay of the same
    /// bytes (see [`digest`]). With a `spool` (the
    /// batch is its begun range), each chunk written while more remain is recorded as done,
    /// and chunks within `done` (recorded before a restart) are skipped: chunks and halves
    /// are cut the same way every time, so a replay meets the same ones. Returns how many
    /// rows were left unwritten because shutdown's deadline passed (0 otherwise).
    pub(super) fn write_batch(&self, batch: Batch<'_>) -> usize {
        let Batch {
            rows,
            id,
            spool,
            done,
            replay,
        } = batch;
        let mut pending = chunks(rows, MAX_INSERT_ROWS, self.sink.list_tag_len());
        pending.reverse();
        let mut rejected: Vec<Rejected<'_>> = Vec::new();
        while let Some(range) = pending.pop() {
            let left = not_done(&range, done);
            if left.first() != Some(&range) {
                // Rows stored before a restart are never sent again, whatever happens to
                // the rest: what is left of the chunk goes in its own chunks.
                pending.extend(left.into_iter().rev());
                continue;
            }
            let chunk = rows.slice(range.clone());
            let token = format!("{id}:{}-{}:{}", range.start, range.end, digest(chunk));
            let outcome = match self.write_with_retry(chunk, &token, replay) {
                Err(Failure::Data(error)) if range.len() == 1 => {
                    rejected.push(Rejected {
                        row: rows.row(range.start),
                        error: error.to_string(),
                    });
                    continue;
                }
                Err(Failure::Data(error)) => {
                    self.write_around_rejected(rows, &range, id, done, replay, &error)
                }
                other => other.map(|()| Some(Vec::new())),
            };
            match outcome {
                Ok(Some(bad)) => {
                    rejected.extend(bad.into_iter().map(|(i, e)| Rejected {
                        row: rows.row(i),
                        error: e.to_string(),
                    }));
                    // The last chunk needs no note: the batch's confirmation follows.
                    if let Some(spool) = spool
                        && !pending.is_empty()
                    {
                        // Rejected rows are kept before their range counts as done.
                        if !self.quarantine(id, &rejected, true) {
                            return rejected.len() + pending.iter().map(Range::len).sum::<usize>();
                        }
                        rejected.clear();
                        if let Err(e) = spool.mark_done(range.clone()) {
                            log::warn!(
                                "spool checkpoint not written (rows may be sent twice): {e}"
                            );
                        }
                    }
                }
                Err(Failure::Deadline) => {
                    // Best effort: the batch as a whole stays unwritten either way.
                    self.quarantine(id, &rejected, spool.is_some());
                    return range.len() + pending.iter().map(Range::len).sum::<usize>();
                }
                // No probe, or the probe and the table disagree, or too large: split real
                // inserts instead.
                Ok(None) | Err(Failure::Data(_) | Failure::TooLarge) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        if self.quarantine(id, &rejected, spool.is_some()) {
            0
        } else {
            rejected.len() // not stored anywhere: the batch is not done
        }
    }

    /// A chunk the sink refused as data: finds the rejected rows by probing and writes the
    /// rest in one insert (token `{id}:{a}-{b}:kept:{digest}`). Returns the rejected rows; `None`
    /// (the sink cannot probe) or `Failure::Data` (the rest was refused too) mean the chunk
    /// must be split into real inserts instead.
    fn write_around_rejected(
        &self,
        rows: &Rows,
        range: &Range<usize>,
        id: &str,
        done: &[Range<usize>],
        replay: bool,
        refused: &SinkError,
    ) -> Result<Option<Vec<(usize, SinkError)>>, Failure> {
        if self.buffer.past_deadline() {
            return Err(Failure::Deadline);
        }
        let Some(isolated) = self.isolate(rows, range.clone(), done, refused) else {
            return Ok(None);
        };
        if !isolated.kept.is_empty() {
            let kept = isolated.kept.view();
            let token = format!("{id}:{}-{}:kept:{}", range.start, range.end, digest(kept));
            match self.write_with_retry(kept, &token, replay) {
                Ok(()) => {}
                // The rest refused too, or too large: real inserts of the halves instead.
                Err(Failure::Data(_) | Failure::TooLarge) => return Ok(None),
                Err(Failure::Deadline) => return Err(Failure::Deadline),
            }
        }
        Ok(Some(isolated.bad))
    }

    /// Puts rejected rows in the quarantine file, one error line per batch. A failure shows
    /// in health, readiness and metrics at once, and holds back no good rows. `spooled`
    /// (`disk` mode): the rows are parked in the spool's folder instead (synced, so the
    /// batch can be confirmed and later batches go out) and moved to the quarantine before
    /// each later batch; only if parking fails too is it retried until one of them
    /// succeeds, the batch staying unconfirmed so the rows stay in the spool meanwhile;
    /// `false` if shutdown's deadline passed first. Otherwise (`memory` mode) the rows are
    /// held in memory and tried again before each later batch.
    fn quarantine(&self, id: &str, rejected: &[Rejected<'_>], spooled: bool) -> bool {
        if rejected.is_empty() {
            return true;
        }
        if let (true, Some(spool)) = (spooled, &self.spool) {
            return self
                .retry_local("quarantine_park", || {
                    let Err(e) = self.put_quarantine(id, rejected) else {
                        if !crate::lane::quarantine::parked_path(spool.dir()).exists() {
                            self.stats.clear_local_error("quarantine");
                        }
                        return Ok(());
                    };
                    self.stats.record_local_error("quarantine", &e);
                    self.quarantine.park(spool.dir(), id, rejected)?;
                    log::error!(
                        "{} events ClickHouse rejects as bad data cannot be written to the \
                         quarantine in {} ({e}); they are parked in {} and moved there before \
                         each later batch",
                        rejected.len(),
                        self.quarantine.dir().display(),
                        crate::lane::quarantine::parked_path(spool.dir()).display(),
                    );
                    Ok(())
                })
                .is_some();
        }
        if let Err(e) = self.put_quarantine(id, rejected) {
            self.stats.record_local_error("quarantine", &e);
            self.hold(id, rejected, &e);
        }
        true
    }

    /// One attempt at writing `rejected` (from batch `id`) to the quarantine.
    fn put_quarantine(&self, id: &str, rejected: &[Rejected<'_>]) -> std::io::Result<()> {
        let path = self.quarantine.put(id, rejected)?;
        self.stats.record_quarantined(rejected.len());
        log::error!(
            "{} events ClickHouse rejects as bad data are quarantined in {}; first error: {}",
            rejected.len(),
            path.display(),
            rejected[0].error
        );
        Ok(())
    }

    /// `memory` mode: keeps rows the quarantine could not take, up to [`HELD_MAX_ROWS`]
    /// (beyond that they are dropped, with an error: memory must stay bounded).
    fn hold(&self, id: &str, rejected: &[Rejected<'_>], error: &std::io::Error) {
        let mut held = self.held.borrow_mut();
        let room = HELD_MAX_ROWS.saturating_sub(held.iter().map(|h| h.rows.len()).sum());
        let kept = rejected.len().min(room);
        log::error!(
            "{} events ClickHouse rejects as bad data cannot be written to the quarantine in \
             {} ({error}); {kept} are held in memory to be retried{}",
            rejected.len(),
            self.quarantine.dir().display(),
            if kept < rejected.len() {
                ", the rest are dropped"
            } else {
                ""
            },
        );
        if kept > 0 {
            held.push(Held {
                batch: id.to_string(),
                rows: rejected[..kept]
                    .iter()
                    .map(|r| (r.row.to_vec(), r.error.clone()))
                    .collect(),
            });
        }
    }

    /// Tries once more to quarantine the rows kept after a failed write: parked on disk
    /// (`disk` mode) or held in memory (`memory` mode). Returns how many are still held in
    /// memory (parked rows are safe on disk and not counted).
    pub(super) fn retry_held(&self) -> usize {
        if let Some(spool) = &self.spool {
            self.unpark(spool.dir());
        }
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return 0;
        }
        while let Some(h) = held.first() {
            let rejected: Vec<Rejected<'_>> = h
                .rows
                .iter()
                .map(|(row, error)| Rejected {
                    row,
                    error: error.clone(),
                })
                .collect();
            if let Err(e) = self.put_quarantine(&h.batch, &rejected) {
                self.stats.record_local_error("quarantine", &e);
                break;
            }
            held.remove(0);
        }
        if held.is_empty() {
            self.stats.clear_local_error("quarantine");
        }
        held.iter().map(|h| h.rows.len()).sum()
    }

    /// `disk` mode: tries once to move rows parked in `spool_dir` (see [`Self::quarantine`])
    /// to the quarantine; they stay parked, on disk, until it succeeds.
    fn unpark(&self, spool_dir: &std::path::Path) {
        match self.quarantine.unpark(spool_dir) {
            Ok(0) => {}
            Ok(moved) => {
                self.stats.record_quarantined(moved);
                self.stats.clear_local_error("quarantine");
                log::error!(
                    "{moved} parked events ClickHouse rejects as bad data are now quarantined \
                     in {}",
                    self.quarantine.dir().display()
                );
            }
            Err(e) => self.stats.record_local_error("quarantine", &e),
        }
    }

    /// One chunk until it is written, rejected as data, or shutdown's deadline passes.
    fn write_with_retry(
        &self,
        rows: RowsRef<'_>,
        token: &str,
        replay: bool,
    ) -> Result<(), Failure> {
        let mut backoff = INSERT_BACKOFF;
        let started = Instant::now();
        let mut last_log: Option<Instant> = None;
        let mut attempt = 0u32;
        // The last refusal and how many attempts in a row were refused that way.
        let mut last: Option<(Refusal, Option<u32>)> = None;
        let mut streak = 0u32;
        loop {
            attempt += 1;
            let id = InsertId {
                token,
                maybe_sent: replay || attempt > 1,
            };
            let outcome = self.attempt(rows, id).ok_or(Failure::Deadline)?;
            // Requests wait for room only while inserts go through (see `crate::lane::room`).
            let failing = matches!(&outcome, Err(e) if e.is_retryable());
            self.buffer.room().set_failing(failing);
            let error = match outcome {
                Ok(()) => {
                    self.stats.record_insert(rows.count);
                    if attempt > 1 {
                        log::info!(
                            "insert of {} events succeeded after {attempt} attempts over {:?}",
                            rows.count,
                            started.elapsed()
                        );
                    }
                    return Ok(());
                }
                Err(e) if !e.is_retryable() => {
                    self.stats.record_error(e.is_retryable(), &e);
                    return Err(Failure::Data(e));
                }
                Err(e) => e,
            };
            self.stats.record_error(error.is_retryable(), &error);
            let refusal = (error.refusal(), error.code());
            streak = if last == Some(refusal) { streak + 1 } else { 1 };
            last = Some(refusal);
            match refusal.0 {
                Refusal::Size if streak >= SIZE_REFUSALS && rows.count > 1 => {
                    log::warn!(
                        "insert of {} events refused as too large {streak} times; splitting it: \
                         {error}",
                        rows.count
                    );
                    return Err(Failure::TooLarge);
                }
                // The table itself refuses them (a probe into a copy of it takes them):
                // not the rows' fault, so they wait, as for any other state of the table.
                Refusal::Rows
                    if streak >= SAME_REFUSALS
                        && self.server_answers()
                        && self.probe_takes(rows) =>
                {
                    streak = 0;
                }
                Refusal::Rows | Refusal::Size
                    if streak >= SAME_REFUSALS && self.server_answers() =>
                {
                    log::warn!(
                        "insert of {} events refused the same way {streak} times while \
                         ClickHouse answers other queries; looking for the rows it refuses: \
                         {error}",
                        rows.count
                    );
                    return Err(Failure::Data(error.into_data()));
                }
                _ => {}
            }
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                log::warn!(
                    "insert of {} events failed (attempt {attempt}, failing for {:?}); \
                     retrying with back-off up to {:?}: {error}",
                    rows.count,
                    started.elapsed(),
                    backoff.max()
                );
                last_log = Some(Instant::now());
            }
            let was_closed = self.buffer.deadline().is_some();
            self.buffer.backoff_sleep(backoff.next_delay());
            if !was_closed && self.buffer.deadline().is_some() {
                // Shutdown began during the back-off: try again soon, within its deadline.
                backoff.reset();
            }
        }
    }

    /// Whether the sink's probe (for ClickHouse an `ENGINE = Null` copy of the table, with
    /// its columns and expressions) takes `rows`: then a refusal of them is the table's, not
    /// theirs. `false` when it refuses them or cannot tell.
    fn probe_takes(&self, rows: RowsRef<'_>) -> bool {
        let taken = matches!(self.bounded(self.sink.probe(rows, true)), Some(Ok(())));
        if let Some(Err(e)) = self.bounded(self.sink.end_probe()) {
            log::warn!("could not drop the probe table: {e}");
        }
        taken
    }

    /// Whether the sink's server answers a query now (the deadline passed counts as no).
    fn server_answers(&self) -> bool {
        matches!(self.bounded(self.sink.answers_queries()), Some(Ok(())))
    }

    /// One insert. After shutdown has begun it is cut off at the deadline; `None` means the
    /// deadline passed (before or during the attempt).
    fn attempt(&self, rows: RowsRef<'_>, id: InsertId<'_>) -> Option<Result<(), SinkError>> {
        self.bounded(self.sink.write(rows, Some(id)))
    }

    /// Runs `fut` on the flusher's runtime; after shutdown has begun it is cut off at the
    /// deadline (`None`).
    pub(super) fn bounded<F: Future>(&self, fut: F) -> Option<F::Output> {
        match self.buffer.deadline() {
            None => Some(self.runtime.block_on(fut)),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                // The timer must be created inside the runtime, hence the async block.
                let bounded = async move { tokio::time::timeout(left, fut).await };
                self.runtime.block_on(bounded).ok()
            }
        }
    }
}

/// The chunk's content in its token: a 128-bit xxHash3 of its bytes, in hex. A token names
/// positions in the spool, and the same positions can hold other rows on a replay (rows
/// kept after a rejection differ once the table was altered, damage shifts row indexes,
/// a copied spool reuses positions); ClickHouse (or the query-log lookup) would then drop
/// rows that were never stored. With the digest, identical bytes keep their token and
/// different bytes never share one: a duplicate at worst, never a loss.
fn digest(rows: RowsRef<'_>) -> String {
    format!("{:032x}", twox_hash::XxHash3_128::oneshot(rows.data))
}
