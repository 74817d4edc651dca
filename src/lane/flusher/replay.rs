//! Reading a backlog back from the spool (a previous run's, or a spill) and writing it,
//! batch by batch, until the flusher has caught up with what handlers append.

use std::time::{Duration, Instant};

use super::{Flusher, MAX_INSERT_ROWS, SpoolWaitEnd};
use crate::format::Rows;
use crate::lane::spool::{self, ReadLimits};
use crate::sink::Sink;

impl<S: Sink> Flusher<S> {
    /// Reads the spool from `from` and writes it, batch by batch, until it has caught up
    /// with what handlers append (then they go back to memory). `Err` carries the rows the
    /// shutdown deadline cut off.
    pub(super) fn replay(&mut self, from: u64, rows: &mut Rows) -> Result<(), usize> {
        let Some(spool) = self.spool.clone() else {
            return Ok(());
        };
        let limits = self.buffer.limits();
        let mut cursor = from;
        // Set once the buffer takes appends again: the spool's records end there.
        let mut until: Option<u64> = None;
        loop {
            if until.is_some_and(|end| cursor >= end) {
                return Ok(());
            }
            if spool.durable() <= cursor {
                match until {
                    None => until = Some(self.buffer.end_spill()),
                    Some(end) => match self.wait_durable(&spool, end) {
                        Ok(()) => {}
                        Err(SpoolWaitEnd::Deadline) => return Err(0),
                        Err(SpoolWaitEnd::Failed) => return Ok(()), // never acknowledged
                    },
                }
                continue;
            }
            let durable = spool.durable();
            // A read error is the OS's (descriptors, memory, network storage), not damage,
            // which the reader skips itself: retry until it passes, never skip data.
            let read = self.retry_local("spool_read", || {
                spool
                    .read(
                        cursor,
                        ReadLimits {
                            until: until.unwrap_or(u64::MAX),
                            max_rows: MAX_INSERT_ROWS,
                            max_bytes: (limits.max_bytes / 2).max(1 << 20),
                        },
                        rows,
                    )
                    .inspect_err(|_| rows.clear()) // it may have gathered some: start over
            });
            let Some(chunk) = read else {
                return Err(0); // shutdown's deadline passed; the rows stay in the spool
            };
            for damage in &chunk.skipped {
                log::warn!("spool damage skipped: {damage}");
            }
            if rows.is_empty() {
                if chunk.end <= cursor {
                    // Nothing readable yet (cannot normally happen): do not spin.
                    self.buffer.backoff_sleep(Duration::from_millis(100));
                    continue;
                }
                // Only damage between here and there: move past it.
                cursor = chunk.end;
                self.confirm(&spool, cursor);
                continue;
            }
            self.buffer
                .set_inflight_since(since_unix_ms(chunk.oldest_ms));
            let unwritten = self.flush(rows, "spool", Some(cursor..chunk.end));
            self.buffer.set_inflight_since(None);
            // The batch's spool range is confirmed: room for requests waiting on a full spool.
            self.buffer.room().freed();
            rows.clear();
            if unwritten > 0 {
                return Err(unwritten);
            }
            cursor = chunk.end;
            // Everything durable at the time of the read was read: appends may go to memory
            // again (under steady traffic the spool is never exactly caught up).
            if until.is_none() && cursor >= durable {
                until = Some(self.buffer.end_spill());
            }
        }
    }
}

/// The `Instant` at which something written at Unix time `ms` happened (`None` for 0).
fn since_unix_ms(ms: u64) -> Option<Instant> {
    if ms == 0 {
        return None;
    }
    Instant::now().checked_sub(Duration::from_millis(spool::now_ms().saturating_sub(ms)))
}
