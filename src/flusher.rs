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
//! offending rows are isolated; the good rows are written and the bad ones are dropped
//! with an error log (a quarantine file is the reliability issue's work).

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::buffer::{DoubleBuffer, Half};
use crate::event::EventRow;
use crate::shutdown::{FlusherGuard, ShutdownReport};
use crate::sink::{Sink, SinkError};
use crate::stats::Stats;

/// First back-off after a failed insert.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest back-off: long enough not to hammer a struggling server, short enough that a
/// recovered one is used again quickly.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Starts the flusher thread for `buffer`. The returned guard closes the buffer and waits
/// for the final flush (at most `shutdown_timeout`) when shut down or dropped.
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
        shutdown_timeout,
        deadline: None,
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
    shutdown_timeout: Duration,
    /// Set when shutdown is first seen: after it, retries stop.
    deadline: Option<Instant>,
}

impl<S: Sink> Flusher<S> {
    fn run(mut self) -> ShutdownReport {
        let mut half = Half::default();
        let mut report = ShutdownReport::default();
        while let Some(reason) = self.buffer.swap_when_due(&mut half) {
            let rows = half.rows.len();
            let started = Instant::now();
            let unwritten = self.write_batch(&half.rows, &mut report);
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

    /// Writes `rows`, splitting around rows the sink rejects as bad data. Returns how many
    /// rows were left unwritten because shutdown's deadline passed (0 otherwise).
    fn write_batch(&mut self, rows: &[EventRow], report: &mut ShutdownReport) -> usize {
        let mut pending = vec![rows];
        while let Some(chunk) = pending.pop() {
            match self.write_with_retry(chunk) {
                Ok(()) => {}
                // Give up on this chunk and everything after it.
                Err(None) => return chunk.len() + pending.iter().map(|c| c.len()).sum::<usize>(),
                Err(Some(error)) if chunk.len() == 1 => {
                    report.dropped += 1;
                    self.stats
                        .events_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::error!("dropping an event ClickHouse rejects: {error}; row: {chunk:?}");
                }
                Err(Some(error)) => {
                    log::warn!(
                        "ClickHouse rejected a batch of {} as bad data, splitting it: {error}",
                        chunk.len()
                    );
                    let (a, b) = chunk.split_at(chunk.len() / 2);
                    pending.push(b);
                    pending.push(a);
                }
            }
        }
        0
    }

    /// One chunk until it is written (`Ok`), rejected as data (`Err(Some)`), or shutdown's
    /// deadline passes (`Err(None)`).
    fn write_with_retry(&mut self, rows: &[EventRow]) -> Result<(), Option<SinkError>> {
        let mut backoff = BACKOFF_MIN;
        for attempt in 1u32.. {
            if self.past_deadline() {
                return Err(None);
            }
            let error = match self.runtime.block_on(self.sink.write(rows)) {
                Ok(()) => {
                    self.stats.record_insert(rows.len());
                    if attempt > 1 {
                        log::info!(
                            "insert of {} events succeeded on attempt {attempt}",
                            rows.len()
                        );
                    }
                    return Ok(());
                }
                Err(e) if e.is_retryable() => e,
                Err(e) => {
                    self.stats.record_error(&e, false);
                    return Err(Some(e));
                }
            };
            self.stats.record_error(&error, true);
            // Attempts 1, 2, 4, 8, ...: an outage logs a handful of lines, not one per retry.
            if attempt.is_power_of_two() {
                log::warn!(
                    "insert of {} events failed (attempt {attempt}), retrying in {backoff:?}: {error}",
                    rows.len()
                );
            }
            let wait = jitter(backoff);
            if self.buffer.is_closed() {
                let left = self
                    .deadline
                    .map_or(wait, |d| d.saturating_duration_since(Instant::now()));
                std::thread::sleep(wait.min(left));
            } else if self.buffer.sleep_unless_closed(wait) {
                // Shutdown began during the back-off: try again soon, within its deadline.
                backoff = BACKOFF_MIN;
                continue;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        unreachable!("the attempt counter does not run out")
    }

    fn past_deadline(&mut self) -> bool {
        if self.deadline.is_none() && self.buffer.is_closed() {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
        }
        self.deadline.is_some_and(|d| Instant::now() >= d)
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
