//! Shutdown as a guard: closing the buffer, the final flush and a bounded wait for it.
//!
//! Like tracing-appender's `WorkerGuard`, the guard that owns the flusher thread finishes
//! its work when it goes away: [`FlusherGuard::shutdown`] (or dropping it) closes the
//! buffer to new events, lets the flusher swap and write what is left, and waits for it at
//! most the configured timeout. What could not be written is counted, never hidden.

use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::buffer::DoubleBuffer;

/// Extra wait beyond the flusher's own deadline, for an insert already under way to finish.
const JOIN_GRACE: Duration = Duration::from_secs(2);

/// What shutdown achieved.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Buffered events that were not written (deadline passed, ClickHouse down).
    pub unwritten: usize,
    /// Events ClickHouse rejected as bad data during the process's life.
    pub dropped: usize,
    /// The flusher did not finish within the limit and was abandoned.
    pub timed_out: bool,
}

impl ShutdownReport {
    /// Whether everything accepted was written: the process may exit 0.
    pub fn is_clean(&self) -> bool {
        self.unwritten == 0 && !self.timed_out
    }
}

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

    /// Closes the buffer, waits for the final flush, and reports. Blocks the calling thread
    /// for at most the shutdown timeout plus a short grace.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop()
    }

    fn stop(&mut self) -> ShutdownReport {
        let Some(thread) = self.thread.take() else {
            return ShutdownReport::default();
        };
        let pending = self.buffer.pending_events();
        if pending > 0 {
            log::info!("flushing {pending} buffered events before exit");
        }
        self.buffer.close();
        match self.done.recv_timeout(self.timeout + JOIN_GRACE) {
            Ok(report) => {
                // The flusher has sent its report, so it is returning: the join is immediate.
                let _ = thread.join();
                report
            }
            Err(_) => {
                let unwritten = self.buffer.pending_events();
                log::error!(
                    "flusher did not finish within {:?}; {unwritten} events were not written",
                    self.timeout
                );
                ShutdownReport {
                    unwritten,
                    dropped: 0,
                    timed_out: true,
                }
            }
        }
    }
}

impl Drop for FlusherGuard {
    fn drop(&mut self) {
        self.stop();
    }
}
