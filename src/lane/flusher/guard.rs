//! The flusher's guard: closing the buffer, the final flush and a bounded wait for it.
//!
//! Like tracing-appender's `WorkerGuard`, the guard that owns the flusher thread finishes
//! its work when it goes away: [`FlusherGuard::shutdown`] (or dropping it) closes the
//! buffer to new events, lets the flusher swap and write what is left, and waits for it
//! until the deadline (`SHUTDOWN_TIMEOUT_SECS` after the signal) plus a short grace. What
//! could not be written is counted, never hidden.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::lane::buffer::DoubleBuffer;

/// Extra wait beyond the deadline: the flusher cuts its attempts off at the deadline, so
/// this only covers its last bookkeeping.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// Owns the flusher thread; see the module docs.
pub struct FlusherGuard {
    buffer: Arc<DoubleBuffer>,
    thread: Option<JoinHandle<()>>,
    done: Receiver<ShutdownReport>,
    timeout: Duration,
}

impl FlusherGuard {
    pub(crate) fn new(
        buffer: Arc<DoubleBuffer>,
        thread: JoinHandle<()>,
        done: Receiver<ShutdownReport>,
        timeout: Duration,
    ) -> Self {
        Self {
            buffer,
            thread: Some(thread),
            done,
            timeout,
        }
    }

    /// The lane's buffer (the shutdown signal stops its waiting requests).
    pub fn buffer(&self) -> &Arc<DoubleBuffer> {
        &self.buffer
    }

    /// Stops the buffer taking appends and starts the final flush, without waiting: with
    /// several lanes, every lane's flush then runs within the same budget.
    pub fn begin_shutdown(&self, began: Instant) {
        self.buffer.close(began + self.timeout);
    }

    /// Closes the buffer, waits for the final flush, and reports. The deadline is the
    /// shutdown timeout counted from `began` (when the signal arrived: draining in-flight
    /// requests came out of the same budget); blocks at most until then plus a short grace.
    pub fn shutdown(mut self, began: Instant) -> ShutdownReport {
        self.stop(began)
    }

    fn stop(&mut self, began: Instant) -> ShutdownReport {
        let Some(thread) = self.thread.take() else {
            return ShutdownReport::default();
        };
        let pending = self.buffer.pending_events();
        if pending > 0 {
            log::info!("flushing {pending} buffered events before exit");
        }
        let deadline = began + self.timeout;
        self.buffer.close(deadline);
        let wait = (deadline + JOIN_GRACE).saturating_duration_since(Instant::now());
        match self.done.recv_timeout(wait) {
            Ok(report) => {
                // The flusher has sent its report, so it is returning: the join is immediate.
                let _ = thread.join();
                report
            }
            Err(_) => {
                let pending = self.buffer.pending_events();
                if self.buffer.spool().is_some() {
                    log::warn!(
                        "flusher did not finish within {:?}; {pending} events stay in the \
                         spool for the next start",
                        self.timeout
                    );
                    return ShutdownReport {
                        unwritten: 0,
                        spooled: pending,
                        timed_out: true,
                    };
                }
                log::error!(
                    "flusher did not finish within {:?}; {pending} events were not written",
                    self.timeout
                );
                ShutdownReport {
                    unwritten: pending,
                    spooled: 0,
                    timed_out: true,
                }
            }
        }
    }
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.stop(Instant::now());
    }
}

/// What shutdown achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Buffered events that were not written and are lost (`memory` mode: deadline passed,
    /// ClickHouse down).
    pub unwritten: usize,
    /// Events not written but safe in the spool, for the next start (`disk` mode).
    pub spooled: usize,
    /// The flusher did not finish within the limit and was abandoned.
    pub timed_out: bool,
}

impl ShutdownReport {
    /// Whether nothing accepted was lost: everything was written, or (`disk` mode) is in the
    /// spool. The process may exit 0. (Rows ClickHouse refused as bad data are in the
    /// quarantine, counted in `Stats::events_quarantined`.)
    pub fn is_clean(&self) -> bool {
        self.unwritten == 0
    }
}
