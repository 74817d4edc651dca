//! The flusher thread: waits for the active half to be due, swaps it out, and writes it to
//! the sink as one insert, retrying transient failures with exponential back-off.
//!
//! A dedicated OS thread (with its own single-threaded Tokio runtime for the async
//! ClickHouse client) rather than a task on the HTTP workers: its waits on the buffer's
//! condvar and its back-off sleeps must never stall request handling, and a worker
//! runtime's shutdown must not take the final flush down with it.
//!
//! While a batch is being retried, its half stays out of the buffer (counted against
//! `BUFFER_MAX_BYTES`) and handlers keep filling the other half; if that fills too, they
//! answer `503`. A batch ClickHouse rejects as bad data is split in two until the
//! offending rows are isolated; the good rows are written and the bad ones are dropped,
//! counted and logged (a quarantine file is the reliability issue's work).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::buffer::{DoubleBuffer, SwapReason};
use std::ops::Range;

use crate::event::{Rows, RowsRef};
use crate::shutdown::{FlusherGuard, ShutdownReport};
use crate::sink::{Sink, SinkError};
use crate::stats::Stats;

/// First back-off after a failed insert.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest back-off: long enough not to hammer a struggling server, short enough that a
/// recovered one is used again quickly.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// During an outage, one warning per this interval, not one per retry.
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Most rows in one insert. ClickHouse cuts a larger insert into blocks of
/// `max_insert_block_size` (about a million rows) committed separately, so a retry of a
/// partly committed insert would duplicate; below that an insert is all or nothing. Only a
/// backlog after an outage gets this large.
pub const MAX_INSERT_ROWS: usize = 500_000;

/// Starts the flusher thread for `buffer`. The returned guard closes the buffer and waits
/// for the final flush when shut down or dropped (see [`FlusherGuard`]).
pub fn spawn<S: Sink>(
    buffer: Arc<DoubleBuffer>,
    sink: S,
    stats: Arc<Stats>,
    shutdown_timeout: Duration,
) -> std::io::Result<FlusherGuard> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = mpsc::channel();
    let flusher = Flusher {
        buffer: buffer.clone(),
        sink,
        stats,
        runtime,
    };
    let thread = std::thread::Builder::new()
        .name("flusher".into())
        .spawn(move || {
            // The receiver is gone only if the guard gave up waiting; nothing to tell then.
            let _ = done_tx.send(flusher.run());
        })?;
    Ok(FlusherGuard::new(buffer, thread, done_rx, shutdown_timeout))
}

struct Flusher<S> {
    buffer: Arc<DoubleBuffer>,
    sink: S,
    stats: Arc<Stats>,
    runtime: tokio::runtime::Runtime,
}

/// How writing one chunk ended, short of success.
enum Failure {
    /// The sink refused the rows as data: do not retry them.
    Data(SinkError),
    /// Shutdown's deadline passed first.
    Deadline,
}

impl<S: Sink> Flusher<S> {
    fn run(self) -> ShutdownReport {
        let mut half = self.buffer.new_half();
        let mut report = ShutdownReport::default();
        while let Some(reason) = self.buffer.swap_when_due(&mut half) {
            let rows = half.len();
            let started = Instant::now();
            let trigger = match reason {
                SwapReason::Size => "size",
                SwapReason::Timer => "timer",
                SwapReason::Shutdown => "shutdown",
            };
            let unwritten = self.write_batch(&half);
            self.stats
                .record_flush(trigger, rows, rows - unwritten, started.elapsed());
            report.unwritten += unwritten;
            log::debug!(
                "flushed {} of {rows} events ({reason:?}) in {:?}",
                rows - unwritten,
                started.elapsed()
            );
            self.buffer.release(&mut half);
        }
        if report.unwritten > 0 {
            log::error!(
                "shutdown deadline passed: {} buffered events were not written",
                report.unwritten
            );
        }
        report
    }

    /// Writes `rows` in chunks of at most [`MAX_INSERT_ROWS`], splitting around rows the
    /// sink rejects as bad data. Returns how many rows were left unwritten because
    /// shutdown's deadline passed (0 otherwise).
    fn write_batch(&self, rows: &Rows) -> usize {
        let mut pending: Vec<Range<usize>> = (0..rows.len())
            .step_by(MAX_INSERT_ROWS)
            .rev()
            .map(|start| start..(start + MAX_INSERT_ROWS).min(rows.len()))
            .collect();
        let mut dropped: Vec<(usize, SinkError)> = Vec::new();
        while let Some(range) = pending.pop() {
            match self.write_with_retry(rows.slice(range.clone())) {
                Ok(()) => {}
                Err(Failure::Deadline) => {
                    self.report_dropped(&dropped);
                    return range.len() + pending.iter().map(Range::len).sum::<usize>();
                }
                Err(Failure::Data(error)) if range.len() == 1 => {
                    dropped.push((range.start, error));
                }
                Err(Failure::Data(_)) => {
                    let mid = range.start + range.len() / 2;
                    pending.push(mid..range.end);
                    pending.push(range.start..mid);
                }
            }
        }
        self.report_dropped(&dropped);
        0
    }

    /// One error line per batch with dropped rows; each row's error only at debug.
    fn report_dropped(&self, dropped: &[(usize, SinkError)]) {
        let Some((_, first)) = dropped.first() else {
            return;
        };
        self.stats.events_dropped.inc_by(dropped.len() as u64);
        log::error!(
            "dropped {} events ClickHouse rejects as bad data; first error: {first}",
            dropped.len()
        );
        for (index, error) in dropped {
            log::debug!("dropped row {index} of its batch: {error}");
        }
    }

    /// One chunk until it is written, rejected as data, or shutdown's deadline passes.
    fn write_with_retry(&self, rows: RowsRef<'_>) -> Result<(), Failure> {
        let mut backoff = BACKOFF_MIN;
        let started = Instant::now();
        let mut last_log: Option<Instant> = None;
        for attempt in 1u32.. {
            let error = match self.attempt(rows).ok_or(Failure::Deadline)? {
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
                    self.stats.record_error(&e, false);
                    return Err(Failure::Data(e));
                }
                Err(e) => e,
            };
            self.stats.record_error(&error, true);
            if last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                log::warn!(
                    "insert of {} events failed (attempt {attempt}, failing for {:?}); \
                     retrying with back-off up to {BACKOFF_MAX:?}: {error}",
                    rows.count,
                    started.elapsed()
                );
                last_log = Some(Instant::now());
            }
            let was_closed = self.buffer.deadline().is_some();
            self.buffer.backoff_sleep(jitter(backoff));
            backoff = if !was_closed && self.buffer.deadline().is_some() {
                // Shutdown began during the back-off: try again soon, within its deadline.
                BACKOFF_MIN
            } else {
                (backoff * 2).min(BACKOFF_MAX)
            };
        }
        unreachable!("the attempt counter does not run out")
    }

    /// One insert. After shutdown has begun it is cut off at the deadline; `None` means the
    /// deadline passed (before or during the attempt).
    fn attempt(&self, rows: RowsRef<'_>) -> Option<Result<(), SinkError>> {
        let write = self.sink.write(rows);
        match self.buffer.deadline() {
            None => Some(self.runtime.block_on(write)),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                // The timer must be created inside the runtime, hence the async block.
                let bounded = async move { tokio::time::timeout(left, write).await };
                self.runtime.block_on(bounded).ok()
            }
        }
    }
}

/// Spreads retries of many instances over ±25% of `d`, so they do not hit a recovering
/// server in lockstep.
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::Limits;
    use crate::event::testing;
    use parking_lot::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::sync::atomic::Ordering::Relaxed;

    /// An in-process sink: no wire is crossed, so a fake is the honest tool here. It
    /// records what it receives as encoded rows.
    #[derive(Default)]
    struct FakeSink {
        written: Mutex<Vec<u8>>,
        rows_written: AtomicUsize,
        inserts: AtomicUsize,
        /// Fail this many attempts with a retryable error first.
        failures: AtomicUsize,
        /// Reject any chunk containing this row's encoding as bad data.
        poison: Option<Vec<u8>>,
        /// Never answer.
        hang: bool,
    }

    impl Sink for FakeSink {
        async fn write(&self, rows: RowsRef<'_>) -> Result<(), SinkError> {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self
                .failures
                .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(SinkError::Retryable("connection refused".into()));
            }
            if let Some(poison) = &self.poison
                && rows.data.windows(poison.len()).any(|w| w == poison)
            {
                return Err(SinkError::Data(
                    "Code: 53. DB::Exception: type mismatch".into(),
                ));
            }
            self.inserts.fetch_add(1, Relaxed);
            self.rows_written.fetch_add(rows.count, Relaxed);
            self.written.lock().extend_from_slice(rows.data);
            Ok(())
        }
    }

    fn start(sink: Arc<FakeSink>, size: usize) -> (Arc<DoubleBuffer>, Arc<Stats>, FlusherGuard) {
        let buffer = Arc::new(DoubleBuffer::new(Limits {
            size,
            flush_interval: Duration::from_secs(3600),
            min_interval: Duration::ZERO,
            max_bytes: usize::MAX,
        }));
        let stats = Arc::new(Stats::default());
        let guard = spawn(
            buffer.clone(),
            sink,
            stats.clone(),
            Duration::from_millis(300),
        )
        .unwrap();
        (buffer, stats, guard)
    }

    fn append(buffer: &DoubleBuffer, range: std::ops::Range<u32>) {
        buffer.append(&mut testing::rows(range)).unwrap();
    }

    fn encoded(range: impl IntoIterator<Item = u32>) -> Vec<u8> {
        let mut out = Vec::new();
        for n in range {
            testing::event(n).encode(&mut out);
        }
        out
    }

    #[test]
    fn transient_failures_are_retried_until_every_row_is_written_once() {
        let sink = Arc::new(FakeSink {
            failures: AtomicUsize::new(3),
            ..FakeSink::default()
        });
        let (buffer, stats, guard) = start(sink.clone(), 10);
        append(&buffer, 0..10);
        // The size trigger fired; wait until the retries got the batch through.
        while sink.inserts.load(Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let report = guard.shutdown(Instant::now());
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(*sink.written.lock(), encoded(0..10));
        assert_eq!(stats.insert_retries.get(), 3);
        assert!(stats.last_error.lock().is_none(), "cleared by the success");
    }

    #[test]
    fn a_poison_row_is_isolated_and_the_rest_written() {
        let sink = Arc::new(FakeSink {
            poison: Some(encoded([13])),
            ..FakeSink::default()
        });
        let (buffer, stats, guard) = start(sink.clone(), 1_000);
        append(&buffer, 0..32);
        let report = guard.shutdown(Instant::now());
        assert!(report.is_clean(), "{report:?}");
        // Chunks are written in order, so the bytes are the batch less the poison row.
        assert_eq!(*sink.written.lock(), encoded((0..32).filter(|&n| n != 13)));
        assert_eq!(stats.events_dropped.get(), 1);
    }

    #[test]
    fn shutdown_flushes_what_no_trigger_would() {
        let sink = Arc::new(FakeSink::default());
        let (buffer, _, guard) = start(sink.clone(), 1_000_000);
        append(&buffer, 0..7);
        append(&buffer, 7..9);
        assert!(guard.shutdown(Instant::now()).is_clean());
        assert_eq!(sink.rows_written.load(Relaxed), 9);
        assert_eq!(sink.inserts.load(Relaxed), 1, "one insert for the rest");
    }

    #[test]
    fn a_sink_that_never_answers_cannot_hold_shutdown_past_its_deadline() {
        let sink = Arc::new(FakeSink {
            hang: true,
            ..FakeSink::default()
        });
        let (buffer, _, guard) = start(sink, 1_000_000);
        append(&buffer, 0..5);
        let report = guard.shutdown(Instant::now());
        // The deadline is 300 ms; it returns (rather than hanging) and owns up to the loss.
        assert_eq!(report.unwritten, 5);
        assert!(!report.is_clean());
    }
}
