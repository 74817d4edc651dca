//! The flusher thread: waits for the active half to be due, swaps it out, and writes it to
//! the sink as one insert; in `disk` mode it also keeps the spool's books and replays what
//! is on disk only.
//!
//! A dedicated OS thread (with its own single-threaded Tokio runtime for the async
//! ClickHouse client) rather than a task on the HTTP workers: its waits on the buffer's
//! condvar and its back-off sleeps must never stall request handling, and a worker
//! runtime's shutdown must not take the final flush down with it.
//!
//! While a batch is being retried, its half stays out of the buffer (counted against
//! `BUFFER_MAX_BYTES`) and handlers keep filling the other half; if that fills too, they
//! answer `503` (`memory` mode) or the buffer spills to the spool (`disk` mode). How one
//! batch is written (chunks, retries, splitting around bad rows, quarantine) is in
//! [`write`].
//!
//! In `disk` mode every batch is a spool range. Before it is sent the flusher waits for
//! the range to be durable and records it as begun in the checkpoint (and, while it takes
//! several inserts, which of them are done); once ClickHouse has it, the checkpoint moves
//! past it. A backlog (a previous run's, or a spill) is read back
//! from the spool in order, before the memory halves that come after it.
//!
//! Part of the lane. May import the rest of `lane`, `sink`, `table`, `format` and the
//! shared modules.

mod backoff;
mod guard;
mod isolate;
mod replay;
mod write;

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::format::Rows;
use crate::lane::buffer::{DoubleBuffer, Due};
use crate::lane::quarantine::Quarantine;
use crate::lane::spool::Spool;
use crate::sink::Sink;
use crate::stats::LaneStats;
pub use guard::ShutdownReport;

pub use backoff::Backoff;
pub use guard::FlusherGuard;
use write::Batch;
pub use write::MAX_INSERT_ROWS;

/// Starts the flusher thread for `buffer` (and its spool, in `disk` mode). The returned
/// guard closes the buffer and waits for the final flush when shut down or dropped (see
/// [`FlusherGuard`]).
pub fn spawn<S: Sink>(
    buffer: Arc<DoubleBuffer>,
    sink: S,
    quarantine: Arc<Quarantine>,
    stats: impl Into<LaneStats>,
    shutdown_timeout: Duration,
) -> std::io::Result<FlusherGuard> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = mpsc::channel();
    let flusher = Flusher {
        spool: buffer.spool().cloned(),
        buffer: buffer.clone(),
        sink,
        quarantine,
        stats: stats.into(),
        runtime,
        instance: uuid::Uuid::new_v4().simple().to_string(),
        batches: 0,
        held: RefCell::new(Vec::new()),
    };
    let thread = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || {
            let (lane, stats) = (flusher.buffer.clone(), flusher.stats.clone());
            let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| flusher.run()))
                .unwrap_or_else(|panic| stopped(&lane, &stats, &*panic));
            // The receiver is gone only if the guard gave up waiting; nothing to tell then.
            let _ = done_tx.send(report);
        })?;
    Ok(FlusherGuard::new(buffer, thread, done_rx, shutdown_timeout))
}

/// A flusher that panicked: its lane writes nothing more. Said in the log, in health and
/// readiness, and by `/v1/live` failing, so a supervisor restarts the process (in `disk`
/// mode the spool keeps the rows for the next run); in `memory` mode the lane stops
/// taking rows it would never write. The rows it held are counted as unwritten.
fn stopped(
    lane: &DoubleBuffer,
    stats: &LaneStats,
    panic: &(dyn std::any::Any + Send),
) -> ShutdownReport {
    let why = crate::lane::panic_message(panic);
    let what = format!("a lane's flusher thread stopped ({why}); restart the process");
    log::error!("{what}");
    stats.record_fatal("flusher", what);
    let pending = lane.pending_events();
    match lane.spool() {
        Some(_) => ShutdownReport {
            spooled: pending,
            ..ShutdownReport::default()
        },
        None => {
            lane.close(Instant::now());
            ShutdownReport {
                unwritten: pending,
                ..ShutdownReport::default()
            }
        }
    }
}

struct Flusher<S> {
    buffer: Arc<DoubleBuffer>,
    spool: Option<Arc<Spool>>,
    sink: S,
    quarantine: Arc<Quarantine>,
    stats: LaneStats,
    runtime: tokio::runtime::Runtime,
    /// `memory` mode's batch identity: this process, and a batch counter.
    instance: String,
    batches: u64,
    /// `memory` mode: rejected rows the quarantine could not take yet (see `write`).
    held: RefCell<Vec<write::Held>>,
}

/// Back-off between attempts of a failing local storage operation: from 100 ms, doubling,
/// ±25%, at most 5 s (tests: 1 to 10 ms).
#[cfg(not(test))]
const LOCAL_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5), 2, 0.25);
#[cfg(test)]
const LOCAL_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(1), Duration::from_millis(10), 2, 0.0);
/// While a local storage operation keeps failing, one log line per this interval.
const LOG_LOCAL_EVERY: Duration = Duration::from_secs(30);

/// Why the flusher stopped waiting for the spool.
enum SpoolWaitEnd {
    /// Shutdown's deadline passed.
    Deadline,
    /// The spool failed: its records will never be durable.
    Failed,
}

impl<S: Sink> Flusher<S> {
    fn run(mut self) -> ShutdownReport {
        let mut half = self.buffer.new_half();
        let mut from_disk = Rows::default();
        let mut report = ShutdownReport::default();
        while let Some(due) = self.buffer.swap_when_due(&mut half) {
            match due {
                Due::Half(reason, span) => {
                    let unwritten = self.flush(&half, reason.as_str(), span);
                    self.count_unwritten(unwritten, &mut report);
                    self.buffer.release(&mut half);
                }
                Due::Spool(from) => {
                    if let Err(unwritten) = self.replay(from, &mut from_disk) {
                        self.count_unwritten(unwritten, &mut report);
                        break;
                    }
                }
            }
        }
        if report.unwritten > 0 {
            log::error!(
                "shutdown deadline passed: {} buffered events were not written",
                report.unwritten
            );
        }
        if report.spooled > 0 {
            log::info!(
                "shutdown deadline passed: {} events stay in the spool for the next start",
                report.spooled
            );
        }
        let held = self.retry_held();
        if held > 0 {
            log::error!(
                "{held} events ClickHouse rejected as bad data could not be written to the \
                 quarantine and are lost"
            );
            report.unwritten += held;
        }
        report
    }

    /// Rows the deadline cut off are lost in `memory` mode, kept on disk in `disk` mode.
    fn count_unwritten(&self, unwritten: usize, report: &mut ShutdownReport) {
        match self.spool {
            Some(_) => report.spooled += unwritten,
            None => report.unwritten += unwritten,
        }
    }

    /// Writes one batch (a half, or rows read back from the spool covering `span`) and
    /// keeps the spool's books. Returns how many rows the shutdown deadline cut off.
    fn flush(&mut self, rows: &Rows, trigger: &'static str, span: Option<Range<u64>>) -> usize {
        let started = Instant::now();
        let mut tracked = None;
        self.retry_held();
        if self.buffer.past_deadline() {
            // Too late to send; and a batch begun now would replace the one still unconfirmed.
            return rows.len();
        }
        if let (Some(spool), Some(span)) = (self.spool.clone(), span) {
            match self.wait_durable(&spool, span.end) {
                Ok(()) => match self.begin(&spool, &span) {
                    Some(replay) => tracked = Some((spool, span, replay)),
                    None => return rows.len(), // the deadline passed; they stay in the spool
                },
                Err(SpoolWaitEnd::Deadline) => return rows.len(),
                // Never durable, so never acknowledged: send them anyway, untracked.
                Err(SpoolWaitEnd::Failed) => {}
            }
        }
        // A failed write refused some of these rows (their requests got 503): the range is
        // read back from disk, which holds exactly the rows that were acknowledged.
        let reread;
        let rows = match &tracked {
            Some((spool, span, _)) if spool.has_hole_in(span) => {
                match self.read_range(spool, span) {
                    Some(read) => {
                        reread = read;
                        &reread
                    }
                    None => return rows.len(), // the deadline passed; they stay in the spool
                }
            }
            _ => rows,
        };
        let id = match &tracked {
            Some((spool, span, _)) => spool.batch_id(span),
            None => {
                self.batches += 1;
                format!("{}:{}", self.instance, self.batches)
            }
        };
        let done = match &tracked {
            Some((spool, span, _)) => match self.retry_local("spool read", || spool.done(span)) {
                Some(done) => done,
                None => return rows.len(), // the deadline passed; they stay in the spool
            },
            None => Vec::new(),
        };
        let unwritten = self.write_batch(Batch {
            rows,
            id: &id,
            spool: tracked.as_ref().map(|(spool, _, _)| &**spool),
            done: &done,
            replay: tracked.as_ref().is_some_and(|(_, _, replay)| *replay),
        });
        let written = rows.len() - unwritten;
        self.stats
            .record_flush(trigger, rows.len(), written, started.elapsed());
        log::debug!(
            "flushed {written} of {} events ({trigger}) in {:?}",
            rows.len(),
            started.elapsed()
        );
        if let Some((spool, span, _)) = tracked
            && unwritten == 0
        {
            self.confirm(&spool, span.end);
        }
        unwritten
    }

    /// Records `span` as begun in the checkpoint, retrying a failed write (a batch sent
    /// untracked could be replayed under another identity, so the pipeline waits instead).
    /// `Some(true)` if it was begun before a restart (a replay); `None` if shutdown's
    /// deadline passed first.
    fn begin(&self, spool: &Spool, span: &Range<u64>) -> Option<bool> {
        self.retry_local("checkpoint", || spool.begin(span.clone()))
    }

    /// Records in the checkpoint that ClickHouse has the spool up to `end`. A failure is
    /// not retried here: the next batch's `begin` records it too (and a replay before that
    /// resends the batch under the same token); it shows in health until then.
    fn confirm(&self, spool: &Spool, end: u64) {
        match spool.confirm(end) {
            Ok(()) => self.stats.clear_local_error("checkpoint"),
            Err(e) => {
                self.stats.record_local_error("checkpoint", &e);
                log::error!("spool checkpoint not written (the batch may be sent again): {e}");
            }
        }
    }

    /// Runs the local storage operation `op` (a spool read, a checkpoint or quarantine
    /// write) until it succeeds, with back-off. While it fails, health, readiness and
    /// metrics say so (from the first failure), and the error is logged at most every
    /// [`LOG_LOCAL_EVERY`]. Transient errors (`EMFILE`, `ENOMEM`, `EIO` on network storage)
    /// pass, and nothing is skipped meanwhile. `None`: shutdown's deadline passed first.
    fn retry_local<T>(
        &self,
        op: &'static str,
        mut attempt: impl FnMut() -> std::io::Result<T>,
    ) -> Option<T> {
        let mut backoff = LOCAL_BACKOFF;
        let mut last_log: Option<Instant> = None;
        let started = Instant::now();
        loop {
            match attempt() {
                Ok(value) => {
                    self.stats.clear_local_error(op);
                    if last_log.is_some() {
                        log::info!("{op} succeeded after failing for {:?}", started.elapsed());
                    }
                    return Some(value);
                }
                Err(e) => {
                    self.stats.record_local_error(op, &e);
                    if last_log.is_none_or(|t| t.elapsed() >= LOG_LOCAL_EVERY) {
                        log::error!(
                            "{op} failed (failing for {:?}; will retry): {e}",
                            started.elapsed()
                        );
                        last_log = Some(Instant::now());
                    }
                }
            }
            self.buffer.backoff_sleep(backoff.next_delay());
            if self.buffer.past_deadline() {
                return None;
            }
        }
    }

    /// The rows the spool holds in `span`, read until it succeeds (`None`: shutdown's
    /// deadline passed first).
    fn read_range(&self, spool: &Spool, span: &Range<u64>) -> Option<Rows> {
        let mut rows = Rows::default();
        let limits = crate::lane::spool::ReadLimits {
            until: span.end,
            max_rows: usize::MAX,
            max_bytes: usize::MAX,
        };
        self.retry_local("spool_read", || {
            rows.clear();
            spool.read(span.start, limits, &mut rows)
        })?;
        Some(rows)
    }

    /// Blocks until the spool is durable up to `end`, the writer is gone, or shutdown's
    /// deadline passes.
    fn wait_durable(&self, spool: &Spool, end: u64) -> Result<(), SpoolWaitEnd> {
        loop {
            if spool.durable() >= end {
                return Ok(());
            }
            if spool.is_dead() {
                return Err(SpoolWaitEnd::Failed);
            }
            if self.buffer.past_deadline() {
                return Err(SpoolWaitEnd::Deadline);
            }
            // In slices, so a deadline set meanwhile is noticed.
            let wait = async {
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), spool.wait_durable(end)).await;
            };
            self.runtime.block_on(wait);
        }
    }
}

#[cfg(test)]
mod tests;
