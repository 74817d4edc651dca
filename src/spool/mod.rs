//! The disk spool (`DURABILITY=disk`): a write-ahead log of accepted rows, so that a `200`
//! survives a crash, a restart or a long ClickHouse outage.
//!
//! - **Append.** A request's rows become one checksummed [`record`], given the next
//!   position in one logical byte stream *inside the buffer's critical section* (so spool
//!   order and buffer order agree) and queued for the writer. The handler answers once the
//!   writer reports the stream durable past its record.
//! - **Group commit.** The [`writer`] thread takes everything queued, writes it to the
//!   current [`segments`] file and `fdatasync`s once: concurrent requests share one sync.
//! - **Batches.** The flusher sends spool ranges: before a batch goes out its range is
//!   recorded in the [`checkpoint`], so a retry or a replay after a crash sends the same
//!   rows under the same deduplication token; a batch written in several inserts has each
//!   one noted as done, so a replay skips those even where tokens are not available. Once
//!   ClickHouse confirms, the checkpoint moves past it and whole segment files behind it
//!   are deleted.
//! - **Replay.** At start the records after the checkpoint are read back, damaged tails
//!   skipped, and flushed before anything newer.
//!
//! Bounds: `SPOOL_MAX_BYTES` (default 10 GiB) over unconfirmed bytes, beyond which appends
//! are refused (`503`); at most [`PENDING_MAX`] bytes queued for the writer.

pub mod checkpoint;
pub mod record;
pub mod segments;
pub mod writer;

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use self::checkpoint::{Checkpoint, sync_dir};
use self::segments::{Chunk, ReadLimits};
use crate::event::Rows;

pub use writer::WriterGuard;

/// Most bytes queued for the writer: if the disk falls this far behind, requests are
/// refused rather than queued in memory.
pub const PENDING_MAX: usize = 64 << 20;

/// Why the spool cannot take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpoolRefusal {
    /// `SPOOL_MAX_BYTES` of unconfirmed rows are on disk already.
    #[error("spool full ({used} of {max} bytes unconfirmed)")]
    Full {
        /// Unconfirmed bytes.
        used: u64,
        /// `SPOOL_MAX_BYTES`.
        max: u64,
    },
    /// The disk is slower than the requests: too much is waiting to be written.
    #[error("spool writer behind ({0} bytes waiting for the disk)")]
    Behind(usize),
    /// A write or sync failed; the spool takes nothing until restart.
    #[error("spool unusable: {0}")]
    Failed(String),
}

/// Why the spool could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Another process holds the spool folder's lock.
    #[error("{0} is in use by another event-ingest process")]
    Locked(PathBuf),
    /// The folder or a file in it could not be read or written.
    #[error("spool {dir}: {source}")]
    Io {
        /// `SPOOL_DIR`.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Records queued for the writer; lives under its own lock, taken inside the buffer's.
struct Tail {
    /// Position of the next record.
    next: u64,
    /// Records not yet handed to the writer.
    pending: Vec<u8>,
    /// Set when shutting down: the writer writes what is queued and stops.
    closed: bool,
}

/// The spool of one process; see the module docs.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    tail: Mutex<Tail>,
    /// Wakes the writer when an empty queue gets a record, and on close.
    tail_wake: Condvar,
    /// Position up to which the stream is on disk and synced; handlers wait on it.
    durable: watch::Sender<u64>,
    /// Why the writer stopped, if it failed. Set once, for good; a `OnceLock` so that every
    /// append and every waiting handler can check it without taking a lock.
    failed: OnceLock<String>,
    /// Position up to which ClickHouse has the rows (mirrors the checkpoint).
    confirmed: AtomicU64,
    /// The flusher's bookkeeping; behind a mutex only to be shareable, it has one user.
    checkpoint: Mutex<Checkpoint>,
    /// Segment files' start positions, oldest first; the writer appends to the last.
    segments: Mutex<Vec<u64>>,
    /// Held open for the process's life: its lock keeps a second process off this folder.
    _lock: File,
}

/// What the previous run left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Where unconfirmed records begin.
    pub from: u64,
    /// Bytes of them (damage included, until read).
    pub bytes: u64,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`: takes its lock, reads the checkpoint, deletes
    /// confirmed segments and starts a new segment after the old ones. Returns the backlog
    /// the previous run left, to replay before anything new.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Option<Backlog>), SpoolError> {
        let io_err = |source| SpoolError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io_err)?;
        let lock = File::create(dir.join("lock")).map_err(io_err)?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.to_path_buf()));
        }
        let checkpoint = match Checkpoint::load(dir).map_err(io_err)? {
            Some(c) => c,
            None => {
                let c = Checkpoint::fresh();
                c.store(dir).map_err(io_err)?;
                c
            }
        };
        let mut old = segments::list(dir).map_err(io_err)?;
        let old_end = old.last().map_or(0, |&(start, len)| start + len);
        // A run that wrote nothing leaves an empty newest file, at the very position this
        // run starts at: it is not an old segment (the new one replaces it).
        if old.last().is_some_and(|&(_, len)| len == 0) {
            old.pop();
        }
        // Files wholly before the checkpoint are done with (a crash after confirming a batch
        // but before deleting them leaves some).
        while !old.is_empty() && old.get(1).map_or(old_end, |n| n.0) <= checkpoint.confirmed {
            fs::remove_file(segments::path(dir, old[0].0)).map_err(io_err)?;
            old.remove(0);
        }
        let start = old_end.max(checkpoint.confirmed);
        File::create(segments::path(dir, start)).map_err(io_err)?;
        sync_dir(dir).map_err(io_err)?;
        let backlog = old.first().map(|&(first, _)| {
            let from = first.max(checkpoint.confirmed);
            Backlog {
                from,
                bytes: start - from,
            }
        });
        let mut starts: Vec<u64> = old.iter().map(|&(s, _)| s).collect();
        starts.push(start);
        let spool = Self {
            dir: dir.to_path_buf(),
            max_bytes,
            tail: Mutex::new(Tail {
                next: start,
                pending: Vec::new(),
                closed: false,
            }),
            tail_wake: Condvar::new(),
            durable: watch::Sender::new(start),
            failed: OnceLock::new(),
            confirmed: AtomicU64::new(backlog.map_or(start, |b| b.from)),
            checkpoint: Mutex::new(checkpoint),
            segments: Mutex::new(starts),
            _lock: lock,
        };
        Ok((spool, backlog))
    }

    /// `SPOOL_DIR`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `record` for the writer and returns its position range. Called inside the
    /// buffer's critical section, so it only copies bytes.
    pub fn reserve(&self, record: &[u8]) -> Result<Range<u64>, SpoolRefusal> {
        let mut tail = self.tail.lock();
        if let Some(why) = self.failed.get() {
            return Err(SpoolRefusal::Failed(why.clone()));
        }
        if tail.closed {
            return Err(SpoolRefusal::Failed("spool writer stopped".into()));
        }
        let used = tail.next - self.confirmed.load(Relaxed);
        if used + record.len() as u64 > self.max_bytes {
            return Err(SpoolRefusal::Full {
                used,
                max: self.max_bytes,
            });
        }
        if tail.pending.len() > PENDING_MAX {
            return Err(SpoolRefusal::Behind(tail.pending.len()));
        }
        let was_empty = tail.pending.is_empty();
        tail.pending.extend_from_slice(record);
        let start = tail.next;
        tail.next += record.len() as u64;
        let end = tail.next;
        drop(tail);
        if was_empty {
            self.tail_wake.notify_one();
        }
        Ok(start..end)
    }

    /// Position the next record will get.
    pub fn next_position(&self) -> u64 {
        self.tail.lock().next
    }

    /// Waits until the stream is durable up to `end`.
    pub async fn wait_durable(&self, end: u64) -> Result<(), SpoolRefusal> {
        let mut rx = self.durable.subscribe();
        // The writer signals a failure by touching the value, which wakes this check.
        let ok = rx
            .wait_for(|&d| d >= end || self.failed.get().is_some())
            .await;
        match (ok, self.failed.get()) {
            (Ok(d), _) if *d >= end => Ok(()),
            (_, Some(why)) => Err(SpoolRefusal::Failed(why.clone())),
            (_, None) => Err(SpoolRefusal::Failed("spool writer stopped".into())),
        }
    }

    /// Position up to which the stream is durable.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Unconfirmed bytes and `SPOOL_MAX_BYTES`.
    pub fn fill(&self) -> (u64, u64) {
        let used = self.next_position() - self.confirmed.load(Relaxed);
        (used, self.max_bytes)
    }

    /// Why the spool refuses records, if it does.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// The token prefix of the batch `range`: the spool's identity and the range, stable
    /// across retries and restarts.
    pub fn batch_id(&self, range: &Range<u64>) -> String {
        let id = &self.checkpoint.lock().id;
        format!("{id}:{}-{}", range.start, range.end)
    }

    /// Records that `range` is about to be sent. `true`: it was begun already, before a
    /// restart (a replay: some of it may be in ClickHouse).
    pub fn begin(&self, range: Range<u64>) -> io::Result<bool> {
        let mut c = self.checkpoint.lock();
        if c.begun.as_ref() == Some(&range) {
            return Ok(true);
        }
        let next = Checkpoint {
            begun: Some(range),
            done: Vec::new(),
            ..c.clone()
        };
        // Only what is on disk counts: a failed store leaves the old state in force.
        next.store(&self.dir)?;
        *c = next;
        Ok(false)
    }

    /// The rows of batch `range` already done, if it is the begun batch (a replay).
    pub fn done(&self, range: &Range<u64>) -> Vec<Range<usize>> {
        let c = self.checkpoint.lock();
        match &c.begun {
            Some(begun) if begun == range => c.done.clone(),
            _ => Vec::new(),
        }
    }

    /// Records that rows `rows` of the begun batch are stored (or quarantined).
    pub fn mark_done(&self, rows: Range<usize>) -> io::Result<()> {
        let mut c = self.checkpoint.lock();
        let mut next = c.clone();
        next.done.push(rows);
        next.store(&self.dir)?;
        *c = next;
        Ok(())
    }

    /// Records that ClickHouse has everything before `end`, then deletes whole segment
    /// files behind it.
    pub fn confirm(&self, end: u64) -> io::Result<()> {
        {
            let mut c = self.checkpoint.lock();
            let next = Checkpoint {
                confirmed: end,
                begun: None,
                done: Vec::new(),
                ..c.clone()
            };
            next.store(&self.dir)?;
            *c = next;
        }
        self.confirmed.store(end, Relaxed);
        let mut starts = self.segments.lock();
        // Never the newest: the writer appends to it.
        while starts.len() > 1 && starts[1] <= end && starts[0] < starts[1] {
            fs::remove_file(segments::path(&self.dir, starts[0]))?;
            starts.remove(0);
        }
        Ok(())
    }

    /// Where the segment after the one holding `position` starts (`None`: it is the newest).
    pub fn next_segment_after(&self, position: u64) -> Option<u64> {
        self.segments.lock().iter().copied().find(|&s| s > position)
    }

    /// Reads records from `from` (a record boundary) into `rows`, up to `until` and the
    /// limits — or exactly the begun batch's range if `from` starts it, so a replay resends
    /// what was sent.
    pub fn read(&self, from: u64, mut limits: ReadLimits, rows: &mut Rows) -> io::Result<Chunk> {
        if let Some(begun) = &self.checkpoint.lock().begun
            && begun.start == from
        {
            limits.until = limits.until.min(begun.end);
            limits.max_rows = usize::MAX;
            limits.max_bytes = usize::MAX;
        }
        let durable = self.durable();
        let spans: Vec<(u64, u64)> = {
            let starts = self.segments.lock();
            starts
                .iter()
                .zip(starts.iter().skip(1).copied().chain([durable]))
                .map(|(&s, e)| (s, e))
                .collect()
        };
        limits.until = limits.until.min(durable);
        segments::read(&self.dir, &spans, from, limits, rows)
    }
}

#[cfg(test)]
mod tests;
