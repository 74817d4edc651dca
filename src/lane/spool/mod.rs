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
//! are refused (`503`); at most [`PENDING_MAX`] bytes queued for the writer. At open the
//! volume's free space is checked (`statvfs`): when this spool's share of it (the lanes'
//! spools split the free space evenly) cannot hold `SPOOL_MAX_BYTES` plus headroom
//! ([`HEADROOM_SHARE`] of the volume, between [`HEADROOM_MIN`] and [`HEADROOM_MAX`]), the
//! effective limit is lowered to what it can (with a warning), so a small or shared volume
//! refuses appends with `503` before it is full rather than failing a write. Segments are
//! cut at an eighth of the spool's limit (64 KiB to 64 MiB), so trimming frees space
//! steadily however small the limit. The checkpoint is updated in place, so a full volume never stops delivery.
//!
//! Part of the lane. May import the rest of `lane`, `format` and the shared modules.

mod checkpoint;
mod record;
mod segments;
mod writer;

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use self::checkpoint::{Checkpoint, CheckpointFile};
use self::segments::{Chunk, SEGMENT_BYTES};
use crate::format::Rows;

use crate::durable::{create_dir_durably, sync_dir};
pub use record::now_ms;
pub use segments::ReadLimits;
pub use writer::WriterGuard;

/// Frames `rows` as one spool record stamped now (length, CRC-32, time), ready for
/// [`DoubleBuffer::append_spooled`](crate::lane::buffer::DoubleBuffer::append_spooled). Callers do it
/// before taking the buffer's lock: the checksum is the costly part.
pub fn frame(rows: &Rows) -> Vec<u8> {
    let mut framed = Vec::with_capacity(record::encoded_len(rows));
    record::encode(rows, record::now_ms(), &mut framed);
    framed
}

/// Most bytes queued for the writer: if the disk falls this far behind, requests are
/// refused rather than queued in memory.
pub const PENDING_MAX: usize = 64 << 20;

/// Share of the volume kept free when capping the spool to the free space at open (1/20:
/// 5%): room for the quarantine, the filesystem's own needs and other writers.
pub const HEADROOM_SHARE: u64 = 20;
/// Least headroom kept, however small the volume.
pub const HEADROOM_MIN: u64 = 256 << 10;
/// Most headroom kept, however large the volume: 5% of a large shared volume (12 GiB of
/// 250 GiB) would refuse a spool that has gigabytes free, for room nobody needs.
pub const HEADROOM_MAX: u64 = 1 << 30;
/// Holes kept (one per failed write) past the checkpoint: a request waiting on a record in
/// one still learns it was refused however late it looks.
const HOLES_KEPT: usize = 1024;
/// Smallest segment file (on a tiny volume): below this, file creation dominates.
const SEGMENT_MIN: u64 = 64 << 10;

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
    /// Set while a write or sync has failed and the writer waits for room to start again
    /// (see `writer.rs`): appends are refused meanwhile. Read by every append without a lock.
    failing: AtomicBool,
    /// Why, while `failing`.
    failure: Mutex<String>,
    /// Why the writer thread is gone, if it is: set once, for good.
    dead: OnceLock<String>,
    /// Positions given to records a failed write did not make durable: their requests got
    /// `503`, nothing reads them, and the flusher sends a range holding one from disk, not
    /// from memory. One per failure; those the checkpoint has passed are dropped.
    holes: Mutex<Vec<Range<u64>>>,
    /// The begun batch's records, once read for its done marks.
    layout: Mutex<Option<(Range<u64>, Layout)>>,
    /// Whether `holes` holds any: the requests' and the flusher's checks take its lock
    /// only then (never, unless a write has failed).
    any_holes: AtomicBool,
    /// Position up to which ClickHouse has the rows (mirrors the checkpoint).
    confirmed: AtomicU64,
    /// Where the oldest segment file still on disk starts: `next - oldest` is what the spool
    /// takes on disk (at most `disk_max`).
    oldest: AtomicU64,
    /// Most bytes the spool's segment files may take: what the volume could hold at open,
    /// less headroom (`u64::MAX` when it holds `SPOOL_MAX_BYTES` easily).
    disk_max: u64,
    /// A segment is closed once it holds this much ([`SEGMENT_BYTES`], less on a small
    /// volume).
    segment_bytes: u64,
    /// The flusher's bookkeeping; behind a mutex only to be shareable, it has one user.
    checkpoint: Mutex<Books>,
    /// Segment files' start positions, oldest first; the writer appends to the last.
    segments: Mutex<Vec<u64>>,
    /// Tests: fail this many reads (`EMFILE`) before reading again.
    #[cfg(test)]
    pub(crate) read_faults: std::sync::atomic::AtomicU32,
    /// Tests: fail this many checkpoint updates before writing again.
    #[cfg(test)]
    pub(crate) checkpoint_faults: std::sync::atomic::AtomicU32,
    /// Tests: fail this many creations of a new segment file (`EMFILE`).
    #[cfg(test)]
    pub(crate) roll_faults: std::sync::atomic::AtomicU32,
    /// Held open for the process's life: its lock keeps a second process off this folder.
    _lock: File,
}

/// The checkpoint's state and the file it is kept in.
struct Books {
    file: CheckpointFile,
    state: Checkpoint,
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
    /// Bytes of rows `dir`'s spool holds that ClickHouse has not confirmed, read without
    /// opening it (no lock taken, nothing written): 0 for a folder without a spool.
    pub fn unconfirmed_bytes(dir: &Path) -> io::Result<u64> {
        let Some(checkpoint) = checkpoint::CheckpointFile::read(dir)? else {
            return Ok(0);
        };
        let segments = segments::list(dir)?;
        let end = segments.last().map_or(0, |&(start, len)| start + len);
        let first = segments.first().map_or(end, |&(start, _)| start);
        Ok(end.saturating_sub(first.max(checkpoint.confirmed)))
    }

    /// The first `N` bytes of every row from `from` (an earlier run's backlog) to the end,
    /// each once (for a read table, the tags of the column lists those rows still need).
    /// Reads the backlog once, a few MiB at a time.
    pub fn row_prefixes<const N: usize>(&self, from: u64) -> io::Result<HashSet<[u8; N]>> {
        let mut prefixes = HashSet::new();
        let mut at = from;
        let mut rows = Rows::default();
        loop {
            rows.clear();
            let limits = ReadLimits {
                until: u64::MAX,
                max_rows: 100_000,
                max_bytes: 8 << 20,
            };
            let chunk = self.read(at, limits, &mut rows)?;
            for i in 0..rows.len() {
                if let Some(prefix) = rows.row(i).get(..N).and_then(|t| t.try_into().ok()) {
                    prefixes.insert(prefix);
                }
            }
            if chunk.end <= at {
                return Ok(prefixes);
            }
            at = chunk.end;
        }
    }

    /// Opens (or creates) the spool in `dir`: takes its lock, reads the checkpoint, deletes
    /// confirmed segments and starts a new segment after the old ones; caps `max_bytes` to
    /// what the volume can hold. Returns the backlog the previous run left, to replay before
    /// anything new.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<(Self, Option<Backlog>), SpoolError> {
        Self::open_sharing(dir, max_bytes, 1)
    }

    /// [`Spool::open`] for one of `sharers` spools on the same volume (one per lane: the
    /// every table's, per shard in a cluster): each may take its
    /// share of the volume's free space, not all of it, so together they stop before the
    /// volume is full instead of each counting on the same free bytes.
    pub fn open_sharing(
        dir: &Path,
        max_bytes: u64,
        sharers: u64,
    ) -> Result<(Self, Option<Backlog>), SpoolError> {
        let io_err = |source| SpoolError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        create_dir_durably(dir).map_err(io_err)?;
        let lock = File::create(dir.join("lock")).map_err(io_err)?;
        if lock.try_lock().is_err() {
            return Err(SpoolError::Locked(dir.to_path_buf()));
        }
        let folder = fs::metadata(dir).map_err(io_err)?.ino();
        let (mut file, loaded) = CheckpointFile::open(dir).map_err(io_err)?;
        let checkpoint = match loaded {
            Some(c) if c.folder == folder => c,
            Some(mut c) => {
                if c.folder != 0 {
                    // Copied or restored into another folder: its positions are not ours
                    // to name, so they get a new identity (and new tokens).
                    log::warn!(
                        "spool {}: the folder is not the one its identity was made for \
                         (copied or restored?); giving it a new identity",
                        dir.display()
                    );
                    c.id = Checkpoint::fresh(folder).id;
                }
                c.folder = folder;
                file.store(&c).map_err(io_err)?;
                c
            }
            None => {
                let c = Checkpoint::fresh(folder);
                file.store(&c).map_err(io_err)?;
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
            remove_if_present(&segments::path(dir, old[0].0)).map_err(io_err)?;
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
        // Gaps between files: holes a failed write left (nothing was written there).
        let holes: Vec<Range<u64>> = (old.windows(2))
            .filter(|w| w[0].0 + w[0].1 < w[1].0)
            .map(|w| w[0].0 + w[0].1..w[1].0)
            .collect();
        let on_disk: u64 = old.iter().map(|&(_, len)| len).sum();
        let disk_max = disk_cap(dir, on_disk, max_bytes, sharers).map_err(io_err)?;
        // An eighth of what the spool may hold, so files roll and are trimmed well before
        // the cap, however small the cap or the volume.
        let segment_bytes = (max_bytes.min(disk_max) / 8).clamp(SEGMENT_MIN, SEGMENT_BYTES);
        let mut starts: Vec<u64> = old.iter().map(|&(s, _)| s).collect();
        starts.push(start);
        let spool = Self {
            dir: dir.to_path_buf(),
            max_bytes: max_bytes.min(disk_max),
            tail: Mutex::new(Tail {
                next: start,
                pending: Vec::new(),
                closed: false,
            }),
            tail_wake: Condvar::new(),
            durable: watch::Sender::new(start),
            failing: AtomicBool::new(false),
            failure: Mutex::new(String::new()),
            dead: OnceLock::new(),
            any_holes: AtomicBool::new(!holes.is_empty()),
            holes: Mutex::new(holes),
            layout: Mutex::new(None),
            confirmed: AtomicU64::new(backlog.map_or(start, |b| b.from)),
            oldest: AtomicU64::new(starts[0]),
            disk_max,
            segment_bytes,
            checkpoint: Mutex::new(Books {
                file,
                state: checkpoint,
            }),
            segments: Mutex::new(starts),
            #[cfg(test)]
            read_faults: Default::default(),
            #[cfg(test)]
            checkpoint_faults: Default::default(),
            #[cfg(test)]
            roll_faults: Default::default(),
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
        if let Some(refusal) = self.refusal_of(&tail, record.len() as u64) {
            return Err(refusal);
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

    /// Why a record of `bytes` would be refused now, if it would: what [`Spool::reserve`]
    /// checks, for a caller that must know before appending anywhere (a request split over
    /// several lanes is taken by all of them or by none).
    pub fn refusal(&self, bytes: u64) -> Option<SpoolRefusal> {
        self.refusal_of(&self.tail.lock(), bytes)
    }

    fn refusal_of(&self, tail: &Tail, bytes: u64) -> Option<SpoolRefusal> {
        if let Some(why) = self.failure() {
            return Some(SpoolRefusal::Failed(why));
        }
        if tail.closed {
            return Some(SpoolRefusal::Failed("spool writer stopped".into()));
        }
        let used = tail.next - self.confirmed.load(Relaxed);
        let on_disk = tail.next - self.oldest.load(Relaxed);
        if used + bytes > self.max_bytes || on_disk + bytes > self.disk_max {
            return Some(SpoolRefusal::Full {
                used,
                max: self.max_bytes,
            });
        }
        if tail.pending.len() > PENDING_MAX {
            return Some(SpoolRefusal::Behind(tail.pending.len()));
        }
        None
    }

    /// Position the next record will get.
    pub fn next_position(&self) -> u64 {
        self.tail.lock().next
    }

    /// Waits until the stream is durable up to `end` (the end of a record): `Err` when a
    /// failed write left that record out (it is in a hole) or the writer is gone.
    pub async fn wait_durable(&self, end: u64) -> Result<(), SpoolRefusal> {
        let mut rx = self.durable.subscribe();
        // The writer signals its end by touching the value, which wakes this check.
        let ok = rx
            .wait_for(|&d| d >= end || self.dead.get().is_some())
            .await
            .map(|d| *d);
        match ok {
            Ok(d) if d >= end && self.in_hole(end) => {
                Err(SpoolRefusal::Failed(self.failure().unwrap_or_else(|| {
                    "the write of this record failed".into()
                })))
            }
            Ok(d) if d >= end => Ok(()),
            _ => Err(SpoolRefusal::Failed(
                self.dead
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "spool writer stopped".into()),
            )),
        }
    }

    /// Whether the record ending at `end` was left out by a failed write.
    fn in_hole(&self, end: u64) -> bool {
        self.any_holes.load(Relaxed)
            && (self.holes.lock().iter()).any(|hole| hole.start < end && end <= hole.end)
    }

    /// Whether `range` holds positions a failed write left out: its rows in memory include
    /// refused ones, so it is read back from disk instead.
    pub fn has_hole_in(&self, range: &Range<u64>) -> bool {
        self.any_holes.load(Relaxed)
            && (self.holes.lock().iter())
                .any(|hole| hole.start < range.end && range.start < hole.end)
    }

    /// Whether the writer thread is gone (nothing will be durable again).
    pub fn is_dead(&self) -> bool {
        self.dead.get().is_some()
    }

    /// Position up to which the stream is durable.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Unconfirmed bytes and `SPOOL_MAX_BYTES` (capped to what the volume holds).
    pub fn fill(&self) -> (u64, u64) {
        let used = self.next_position() - self.confirmed.load(Relaxed);
        (used, self.max_bytes)
    }

    /// Why the spool refuses records, if it does: a failed write (until the writer can
    /// write again) or a writer gone.
    pub fn failure(&self) -> Option<String> {
        if let Some(why) = self.dead.get() {
            return Some(why.clone());
        }
        self.failing
            .load(Relaxed)
            .then(|| self.failure.lock().clone())
    }

    /// This spool's persistent random id (kept in its checkpoint): part of every insert
    /// identity from it, so two gateways or two lanes never share one.
    pub fn id(&self) -> String {
        self.checkpoint.lock().state.id.clone()
    }

    /// The token prefix of the batch `range`: the spool's identity and the range, stable
    /// across retries and restarts.
    pub fn batch_id(&self, range: &Range<u64>) -> String {
        let id = &self.checkpoint.lock().state.id;
        format!("{id}:{}-{}", range.start, range.end)
    }

    /// Writes `next` as the checkpoint; only what is on disk counts, so a failed write
    /// leaves the old state in force.
    fn store(&self, books: &mut Books, next: Checkpoint) -> io::Result<()> {
        #[cfg(test)]
        if self
            .checkpoint_faults
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("injected checkpoint fault"));
        }
        books.file.store(&next)?;
        books.state = next;
        Ok(())
    }

    /// Records that `range` is about to be sent. `true`: it was begun already, before a
    /// restart (a replay: some of it may be in ClickHouse).
    ///
    /// Batches are sent one at a time in spool order, so beginning `range` also confirms
    /// everything before it: a `confirm` that failed earlier cannot leave an old
    /// `confirmed` next to a new `begun` (after a crash that pair would replay the
    /// confirmed batch again, cut differently, under new tokens).
    pub fn begin(&self, range: Range<u64>) -> io::Result<bool> {
        let mut books = self.checkpoint.lock();
        let c = &books.state;
        if c.begun.as_ref() == Some(&range) {
            return Ok(true);
        }
        let next = Checkpoint {
            confirmed: c.confirmed.max(range.start),
            begun: Some(range),
            done_records: Vec::new(),
            done_rows: Vec::new(),
            done: Vec::new(),
            ..c.clone()
        };
        let confirmed = next.confirmed;
        self.store(&mut books, next)?;
        drop(books);
        self.confirmed.fetch_max(confirmed, Relaxed);
        // Trimming is housekeeping: the next confirm tries again.
        if let Err(e) = self.trim(confirmed) {
            log::warn!("spool {}: cannot delete a segment: {e}", self.dir.display());
        }
        Ok(false)
    }

    /// The rows of batch `range` already done, by index in the batch as it reads now, if it
    /// is the begun batch (a replay). The marks are kept by record position: a record
    /// damaged since leaves the others' marks where they were.
    pub fn done(&self, range: &Range<u64>) -> io::Result<Vec<Range<usize>>> {
        let state = {
            let books = self.checkpoint.lock();
            match &books.state.begun {
                Some(begun) if begun == range && books.state.any_done() => books.state.clone(),
                _ => return Ok(Vec::new()),
            }
        };
        let mut done = state.done.clone();
        let mut first = 0;
        for (at, _, n) in self.layout(range)? {
            let offset = at - range.start;
            if state.done_records.iter().any(|r| r.contains(&offset)) {
                done.push(first..first + n);
            }
            for (_, rows) in state.done_rows.iter().filter(|(o, _)| *o == offset) {
                done.push(first + rows.start.min(n)..first + rows.end.min(n));
            }
            first += n;
        }
        Ok(checkpoint::coalesce(&done))
    }

    /// Records that rows `rows` (by index in the begun batch as it reads now) are stored
    /// (or quarantined): kept as the records they belong to.
    pub fn mark_done(&self, rows: Range<usize>) -> io::Result<()> {
        let Some(begun) = self.checkpoint.lock().state.begun.clone() else {
            return Ok(());
        };
        let layout = self.layout(&begun)?;
        let mut books = self.checkpoint.lock();
        if books.state.begun.as_ref() != Some(&begun) {
            return Ok(());
        }
        let mut next = books.state.clone();
        let mut first = 0;
        for (at, len, n) in layout {
            let offset = at - begun.start;
            let (a, b) = (rows.start.max(first), rows.end.min(first + n));
            if a == first && b == first + n && n > 0 {
                next.done_records.push(offset..offset + len);
            } else if a < b {
                next.done_rows.push((offset, a - first..b - first));
            }
            first += n;
        }
        next.done_records = checkpoint::coalesce(&next.done_records);
        self.store(&mut books, next)
    }

    /// Where each record of batch `range` starts, its length and its rows, as the batch
    /// reads now (a damaged record is not there): read once per batch and remembered.
    fn layout(&self, range: &Range<u64>) -> io::Result<Layout> {
        if let Some((known, layout)) = &*self.layout.lock()
            && known == range
        {
            return Ok(layout.clone());
        }
        let mut rows = Rows::default();
        let limits = ReadLimits {
            until: range.end,
            max_rows: usize::MAX,
            max_bytes: usize::MAX,
        };
        let chunk = self.read(range.start, limits, &mut rows)?;
        *self.layout.lock() = Some((range.clone(), chunk.records.clone()));
        Ok(chunk.records)
    }

    /// Records that ClickHouse has everything before `end`, then deletes whole segment
    /// files behind it.
    pub fn confirm(&self, end: u64) -> io::Result<()> {
        {
            let mut books = self.checkpoint.lock();
            let next = Checkpoint {
                confirmed: end,
                begun: None,
                done_records: Vec::new(),
                done_rows: Vec::new(),
                done: Vec::new(),
                ..books.state.clone()
            };
            self.store(&mut books, next)?;
        }
        self.confirmed.fetch_max(end, Relaxed);
        let mut holes = self.holes.lock();
        while holes.len() > HOLES_KEPT && holes[0].end <= end {
            holes.remove(0);
        }
        drop(holes);
        self.trim(end)
    }

    /// After a failed write or sync (see `writer.rs`): the records from `start` on are not
    /// durable and never will be. Refuses appends until [`Spool::writable_again`], leaves a
    /// hole over every position handed out, and wakes the requests waiting on them
    /// (they get `503`). Returns where the hole ends: the next segment starts there.
    fn fail_from(&self, start: u64, why: String) -> u64 {
        let mut tail = self.tail.lock();
        *self.failure.lock() = why;
        self.failing.store(true, Relaxed);
        tail.pending.clear();
        let end = tail.next;
        if start < end {
            self.holes.lock().push(start..end);
            self.any_holes.store(true, Relaxed);
        }
        drop(tail);
        self.durable.send_replace(end);
        end
    }

    /// The writer writes again: appends are taken.
    fn writable_again(&self) {
        self.failing.store(false, Relaxed);
    }

    /// Deletes whole segment files before `end` (never the newest: the writer appends to
    /// it). A file already gone (deleted by hand) counts as deleted, so one missing file
    /// does not stop all later trimming.
    fn trim(&self, end: u64) -> io::Result<()> {
        let mut starts = self.segments.lock();
        while starts.len() > 1 && starts[1] <= end && starts[0] < starts[1] {
            remove_if_present(&segments::path(&self.dir, starts[0]))?;
            starts.remove(0);
            self.oldest.store(starts[0], Relaxed);
        }
        Ok(())
    }

    /// Reads records from `from` (a record boundary) into `rows`, up to `until` and the
    /// limits — or exactly the begun batch's range if `from` starts it, so a replay resends
    /// what was sent.
    pub fn read(&self, from: u64, mut limits: ReadLimits, rows: &mut Rows) -> io::Result<Chunk> {
        #[cfg(test)]
        if self
            .read_faults
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        if let Some(begun) = &self.checkpoint.lock().state.begun
            && begun.start == from
        {
            limits.until = limits.until.min(begun.end);
            limits.max_rows = usize::MAX;
            limits.max_bytes = usize::MAX;
        }
        let durable = self.durable();
        let spans: Vec<(u64, u64)> = {
            let starts = self.segments.lock();
            let holes = self.holes.lock();
            starts
                .iter()
                .zip(starts.iter().skip(1).copied().chain([durable]))
                // A file ends where a hole begins: nothing was written there.
                .map(|(&s, e)| {
                    let cut = holes.iter().map(|h| h.start).filter(|&h| s <= h && h < e);
                    (s, cut.min().unwrap_or(e))
                })
                .collect()
        };
        limits.until = limits.until.min(durable);
        segments::read(&self.dir, &spans, from, limits, rows)
    }
}

/// A batch's records as they read: where each starts, its length and how many rows it holds.
type Layout = Vec<(u64, u64, usize)>;

/// Removes `path`; already gone counts as done.
fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Bytes kept free on a volume of `volume` bytes: a share of it, within fixed bounds.
fn headroom(volume: u64) -> u64 {
    (volume / HEADROOM_SHARE).clamp(HEADROOM_MIN, HEADROOM_MAX)
}

/// Most bytes the spool's files may take in `dir`'s volume: its share (one of `sharers`) of
/// the free space less the headroom, plus what the spool holds already (`on_disk`);
/// `u64::MAX` when that is more than `max_bytes` (the configured limit binds). Logs a
/// warning when the volume is the limit, or when it cannot be asked (then only `max_bytes`
/// applies).
fn disk_cap(dir: &Path, on_disk: u64, max_bytes: u64, sharers: u64) -> io::Result<u64> {
    let vfs = match rustix::fs::statvfs(dir) {
        Ok(vfs) => vfs,
        Err(e) => {
            log::warn!(
                "spool {}: cannot read the volume's free space ({e}); only SPOOL_MAX_BYTES \
                 limits the spool",
                dir.display()
            );
            return Ok(u64::MAX);
        }
    };
    let block = vfs.f_frsize.max(1);
    let volume = vfs.f_blocks.saturating_mul(block);
    let free = vfs.f_bavail.saturating_mul(block);
    let Some(holdable) = volume_cap(volume, free, on_disk, max_bytes, sharers) else {
        return Ok(u64::MAX);
    };
    let share = match sharers {
        0 | 1 => String::new(),
        n => format!(" (its share: 1/{n} of the free space, one per spool on it)"),
    };
    log::warn!(
        "spool {}: its volume can hold {holdable} bytes of spool{share} ({free} free, \
         {on_disk} in the spool, {} kept free), less than SPOOL_MAX_BYTES ({max_bytes}); \
         events are refused with 503 beyond that",
        dir.display(),
        headroom(volume)
    );
    Ok(holdable)
}

/// What one of `sharers` spools may hold on a volume of `volume` bytes with `free` bytes
/// free, when it holds `on_disk` already: `None` when that is at least `max_bytes`.
fn volume_cap(volume: u64, free: u64, on_disk: u64, max_bytes: u64, sharers: u64) -> Option<u64> {
    let holdable = free.saturating_sub(headroom(volume)) / sharers.max(1) + on_disk;
    (holdable < max_bytes).then_some(holdable)
}

#[cfg(test)]
mod tests;
