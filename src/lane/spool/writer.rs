//! The spool's writer thread: group commit.
//!
//! It sleeps until records are queued, takes *all* of them in one swap, writes them with
//! one `write` and makes them durable with one `fdatasync`, then publishes the new durable
//! position, which wakes every handler whose record it covers. While it syncs, new records
//! queue up for the next round, so the number of syncs per second stays near what the disk
//! can do however many requests arrive: the cost of one sync is shared by all of them.
//!
//! A failed write or sync is not retried (after a failed `fsync` the kernel may already
//! have dropped the pages, so a retry could report success for data that is gone). The
//! file is cut back to what was durable before the round; the round's records (and any
//! queued behind them) are refused: their requests get `503`, and their positions become a
//! hole nothing reads. Appends are refused while the writer waits for room on the volume
//! (checked every second); then it starts a new segment after the hole and the spool takes
//! events again, without a restart. If the file cannot be cut back, the writer stops for
//! good (a restart reads what is intact).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::Spool;
use super::segments;
use crate::durable::sync_dir;

/// Owns the writer thread: stopping it (or dropping the guard) writes what is queued,
/// syncs, and joins.
pub struct WriterGuard {
    spool: Arc<Spool>,
    thread: Option<JoinHandle<()>>,
}

impl WriterGuard {
    /// Starts the writer for `spool`.
    pub fn spawn(spool: Arc<Spool>) -> io::Result<Self> {
        let start = *spool.segments.lock().last().unwrap_or(&0);
        let file = OpenOptions::new()
            .append(true)
            .open(segments::path(&spool.dir, start))?;
        let writer = Writer {
            spool: spool.clone(),
            file,
            segment_len: 0,
            roll_failures: 0,
        };
        let thread = std::thread::Builder::new()
            .name("spool-writer".into())
            .spawn(move || {
                let spool = writer.spool.clone();
                if let Err(panic) =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| writer.run()))
                {
                    let why = crate::lane::panic_message(&*panic);
                    // As for a failed write: requests waiting for durability get `503`
                    // at once, and nothing more is taken, instead of waiting for ever.
                    log::error!(
                        "spool {}: writer thread stopped ({why})",
                        spool.dir.display()
                    );
                    let _ = spool.dead.set(format!("writer thread stopped ({why})"));
                    spool.tail.lock().pending.clear();
                    spool.durable.send_modify(|_| {});
                }
            })?;
        Ok(Self {
            spool,
            thread: Some(thread),
        })
    }

    /// Writes what is queued, then stops the thread.
    pub fn stop(mut self) {
        self.close();
    }

    fn close(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.spool.tail.lock().closed = true;
        self.spool.tail_wake.notify_all();
        let _ = thread.join();
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.close();
    }
}

struct Writer {
    spool: Arc<Spool>,
    file: File,
    segment_len: u64,
    /// Rounds since a new segment file could not be created (0: none failing).
    roll_failures: u32,
}

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        loop {
            let start = {
                let mut tail = self.spool.tail.lock();
                while tail.pending.is_empty() && !tail.closed {
                    self.spool.tail_wake.wait(&mut tail);
                }
                if tail.pending.is_empty() {
                    return;
                }
                std::mem::swap(&mut tail.pending, &mut batch);
                tail.next - batch.len() as u64
            };
            if let Err(e) = self.write(start, &batch) {
                batch.clear();
                let cut = self.cut_back();
                let resume_at = self.spool.fail_from(start, e.to_string());
                if let Err(cut) = cut {
                    log::error!(
                        "spool {}: write failed ({e}) and the file cannot be cut back to what                          was durable ({cut}); refusing events until restart",
                        self.spool.dir.display()
                    );
                    let _ = self.spool.dead.set(format!("{e}; then {cut}"));
                    self.spool.durable.send_modify(|_| {});
                    return;
                }
                log::error!(
                    "spool {}: write failed ({e}); the events in it were refused with 503, and                      events are refused until the volume has room again",
                    self.spool.dir.display()
                );
                if !self.resume(resume_at) {
                    return; // closed while waiting
                }
                continue;
            }
            self.spool.durable.send_replace(start + batch.len() as u64);
            batch.clear();
            if batch.capacity() > 2 * PENDING_KEEP {
                batch.shrink_to(PENDING_KEEP);
            }
        }
    }

    /// Writes `bytes` (whole records from stream position `start`) and syncs them, first
    /// starting a new segment file if the current one is full.
    ///
    /// A new file that cannot be created (no descriptor left, `EMFILE`; no inode) is not a
    /// failed write: the records go to the current file, which grows past its size, and the
    /// next round tries again. A failed sync of the folder is, as any failed sync.
    fn write(&mut self, start: u64, bytes: &[u8]) -> io::Result<()> {
        if self.segment_len >= self.spool.segment_bytes {
            match self.create_segment(start) {
                Ok(file) => {
                    sync_dir(&self.spool.dir)?;
                    self.file = file;
                    self.segment_len = 0;
                    self.spool.segments.lock().push(start);
                }
                Err(e) => {
                    if self.roll_failures == 0 {
                        log::warn!(
                            "spool {}: cannot start a new segment ({e}); appending to the \
                             current one meanwhile",
                            self.spool.dir.display()
                        );
                    }
                    self.roll_failures += 1;
                }
            }
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.segment_len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the current file back to what was durable before a failed round, and syncs it.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.segment_len)?;
        self.file.sync_data()
    }

    /// After a failed write: waits until the volume has room, then starts a new segment at
    /// `at` (after the hole) and lets appends in. `false` if the spool closed first.
    fn resume(&mut self, at: u64) -> bool {
        loop {
            {
                let mut tail = self.spool.tail.lock();
                if tail.closed {
                    return false;
                }
                self.spool
                    .tail_wake
                    .wait_for(&mut tail, std::time::Duration::from_secs(1));
                if tail.closed {
                    return false;
                }
            }
            let free = rustix::fs::statvfs(&self.spool.dir)
                .map(|v| v.f_bavail.saturating_mul(v.f_frsize))
                .unwrap_or(0);
            if free < RESUME_FREE {
                continue;
            }
            let started = File::create(segments::path(&self.spool.dir, at))
                .and_then(|file| sync_dir(&self.spool.dir).map(|()| file));
            if let Ok(file) = started {
                self.file = file;
                self.segment_len = 0;
                self.spool.segments.lock().push(at);
                self.spool.writable_again();
                log::info!(
                    "spool {}: writing again ({free} bytes free on its volume)",
                    self.spool.dir.display()
                );
                return true;
            }
        }
    }

    /// Creates the segment file starting at `start`.
    fn create_segment(&mut self, start: u64) -> io::Result<File> {
        #[cfg(test)]
        if self
            .spool
            .roll_faults
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| n.checked_sub(1),
            )
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        let file = File::create(segments::path(&self.spool.dir, start))?;
        if self.roll_failures > 0 {
            log::info!(
                "spool {}: new segment started after {} failed attempts",
                self.spool.dir.display(),
                self.roll_failures
            );
            self.roll_failures = 0;
        }
        Ok(file)
    }
}

/// Free bytes the volume must have before a writer that failed starts again.
const RESUME_FREE: u64 = super::HEADROOM_MIN;

/// Queue capacity kept between rounds (a burst's larger allocation is given back).
const PENDING_KEEP: usize = 4 << 20;
