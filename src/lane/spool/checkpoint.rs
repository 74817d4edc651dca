//! The spool's checkpoint file: the spool's identity, how far ClickHouse has confirmed, and
//! the batch being written now.
//!
//! The file is created once, preallocated, with two fixed-size slots; each update
//! overwrites the older slot in place (`pwrite` + `fdatasync`) with a sequence number and a
//! CRC-32. Reading takes the valid slot with the highest sequence, so a crash mid-write
//! leaves the previous state in force, never half of each. An update needs no new disk
//! space (no temporary file, no new block), so the flusher can still record progress,
//! confirm batches and trim segments when the volume is full. (On a copy-on-write
//! filesystem such as btrfs or ZFS an overwrite does take new blocks: keep the headroom
//! there, see [`super::open`]'s free-space check.)
//!
//! The flusher writes one batch at a time, in spool order, so "confirmed up to" plus "the
//! one batch begun after it" (and which of its rows are done) is the whole state; a batch's
//! stable identity (and `insert_deduplication_token`) is its spool range.

use crate::durable::sync_dir;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// File name inside `SPOOL_DIR`.
const NAME: &str = "checkpoint";
/// First line of the earlier format: one text file replaced through `checkpoint.tmp` (read
/// once and converted).
const HEADER_V1: &str = "event-ingest spool checkpoint v1";
/// First line of a slot: says what the file is, and its format version.
const HEADER: &str = "event-ingest spool checkpoint v2";
/// Bytes per slot: the state is a few lines (the done ranges are coalesced).
const SLOT: usize = 4096;

/// What the flusher has done with the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Random identity of this spool folder, minted when it was created (and again when
    /// `folder` shows the files were copied into another folder): part of every
    /// deduplication token, so two spools' batches at the same positions never collide.
    pub id: String,
    /// The inode of the folder `id` was minted for (0: not recorded yet).
    pub folder: u64,
    /// Every record before this position is in ClickHouse (or the quarantine).
    pub confirmed: u64,
    /// A batch sent (maybe more than once) but not yet confirmed: replayed as exactly this
    /// range, so the retry carries the same token.
    pub begun: Option<Range<u64>>,
    /// Records of the begun batch whose rows are all stored or quarantined, by where they
    /// start (bytes from the batch's start): a replay skips them, so servers without
    /// deduplication tokens do not store them twice either. By position, not by row index,
    /// so a record damaged since does not shift the others' marks.
    pub done_records: Vec<Range<u64>>,
    /// Rows of one record of the begun batch (the record's start, bytes from the batch's
    /// start; the rows by index within the record) stored or quarantined.
    pub done_rows: Vec<(u64, Range<usize>)>,
    /// Rows of the begun batch by index, as files written before marks were positions
    /// hold them (read, and kept until the batch is confirmed).
    pub done: Vec<Range<usize>>,
}

impl Checkpoint {
    /// A new spool's checkpoint, for the folder with inode `folder`.
    pub fn fresh(folder: u64) -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            folder,
            confirmed: 0,
            begun: None,
            done_records: Vec::new(),
            done_rows: Vec::new(),
            done: Vec::new(),
        }
    }

    /// Whether any row of the begun batch is marked done.
    pub fn any_done(&self) -> bool {
        !(self.done_records.is_empty() && self.done_rows.is_empty() && self.done.is_empty())
    }

    /// Parses one slot's (or the v1 file's) text; `None` if it is not an intact checkpoint.
    /// Returns the sequence number too (0 for v1).
    fn parse(text: &str, header: &str) -> Option<(u64, Self)> {
        let (body, crc) = text.trim_end().rsplit_once("\ncrc ")?;
        if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != header {
            return None;
        }
        let mut seq = 0;
        let mut checkpoint = Checkpoint {
            id: String::new(),
            folder: 0,
            confirmed: 0,
            begun: None,
            done_records: Vec::new(),
            done_rows: Vec::new(),
            done: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "seq" => seq = value.parse().ok()?,
                "id" => checkpoint.id = value.to_string(),
                "folder" => checkpoint.folder = value.parse().ok()?,
                "confirmed" => checkpoint.confirmed = value.parse().ok()?,
                "begun" => {
                    let (a, b) = value.split_once('-')?;
                    checkpoint.begun = Some(a.parse().ok()?..b.parse().ok()?);
                }
                "done" => {
                    for range in value.split(',') {
                        let (a, b) = range.split_once('-')?;
                        checkpoint.done.push(a.parse().ok()?..b.parse().ok()?);
                    }
                }
                "done-records" => {
                    for range in value.split(',') {
                        let (a, b) = range.split_once('-')?;
                        checkpoint
                            .done_records
                            .push(a.parse().ok()?..b.parse().ok()?);
                    }
                }
                "done-rows" => {
                    for mark in value.split(',') {
                        let (at, range) = mark.split_once(':')?;
                        let (a, b) = range.split_once('-')?;
                        let rows = a.parse().ok()?..b.parse().ok()?;
                        checkpoint.done_rows.push((at.parse().ok()?, rows));
                    }
                }
                _ => return None,
            }
        }
        (!checkpoint.id.is_empty()).then_some((seq, checkpoint))
    }

    /// One slot's text, sequence `seq`.
    fn render(&self, seq: u64) -> String {
        let mut body = format!(
            "{HEADER}\nseq {seq}\nid {}\nfolder {}\nconfirmed {}",
            self.id, self.folder, self.confirmed
        );
        if let Some(r) = &self.begun {
            body.push_str(&format!("\nbegun {}-{}", r.start, r.end));
        }
        if !self.done.is_empty() {
            let done: Vec<String> = coalesce(&self.done)
                .iter()
                .map(|r| format!("{}-{}", r.start, r.end))
                .collect();
            body.push_str(&format!("\ndone {}", done.join(",")));
        }
        if !self.done_records.is_empty() {
            let done: Vec<String> = coalesce(&self.done_records)
                .iter()
                .map(|r| format!("{}-{}", r.start, r.end))
                .collect();
            body.push_str(&format!("\ndone-records {}", done.join(",")));
        }
        if !self.done_rows.is_empty() {
            let mut marks = self.done_rows.clone();
            marks.sort_by_key(|(at, rows)| (*at, rows.start));
            let done: Vec<String> = marks
                .iter()
                .map(|(at, r)| format!("{at}:{}-{}", r.start, r.end))
                .collect();
            body.push_str(&format!("\ndone-rows {}", done.join(",")));
        }
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}\ncrc {crc:08x}\n")
    }
}

/// `ranges` sorted, with touching or overlapping ones merged.
pub fn coalesce<T: Ord + Copy>(ranges: &[Range<T>]) -> Vec<Range<T>> {
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<T>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// A checkpoint file's newest state: its slot's sequence number, the state, and whether the
/// file is in the earlier, single-slot format.
fn parse(bytes: &[u8]) -> Option<(u64, Checkpoint, bool)> {
    if bytes.starts_with(HEADER_V1.as_bytes()) {
        let (seq, old) = Checkpoint::parse(std::str::from_utf8(bytes).ok()?, HEADER_V1)?;
        return Some((seq, old, true));
    }
    let (seq, state) = bytes
        .chunks(SLOT)
        .take(2)
        .filter_map(|slot| {
            let text = slot.split(|&b| b == 0).next().unwrap_or_default();
            Checkpoint::parse(std::str::from_utf8(text).ok()?, HEADER)
        })
        .max_by_key(|(seq, _)| *seq)?;
    Some((seq, state, false))
}

/// The checkpoint file, open for in-place updates.
pub struct CheckpointFile {
    file: File,
    /// Sequence number of the newest slot.
    seq: u64,
}

impl CheckpointFile {
    /// Opens `dir`'s checkpoint file, creating it (both slots preallocated, durably) when
    /// there is none and converting one in the earlier format. Returns the state it holds
    /// (`None`: a new file).
    pub fn open(dir: &Path) -> io::Result<(Self, Option<Checkpoint>)> {
        let path = dir.join(NAME);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((Self::create(dir, None)?, None));
            }
            Err(e) => return Err(e),
        };
        // Created, and the process gone before its first state was written: no state yet.
        if bytes.len() == 2 * SLOT && bytes.iter().all(|&b| b == 0) {
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            return Ok((Self { file, seq: 0 }, None));
        }
        let (seq, state, earlier_format) = parse(&bytes).ok_or_else(|| invalid(&path))?;
        if earlier_format {
            return Ok((Self::create(dir, Some(&state))?, Some(state)));
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        Ok((Self { file, seq }, Some(state)))
    }

    /// The state `dir`'s checkpoint file holds, read without changing anything (`None`: no
    /// file).
    pub fn read(dir: &Path) -> io::Result<Option<Checkpoint>> {
        let path = dir.join(NAME);
        match fs::read(&path) {
            Ok(bytes) if bytes.len() == 2 * SLOT && bytes.iter().all(|&b| b == 0) => Ok(None),
            Ok(bytes) => parse(&bytes)
                .map(|(_, state, _)| Some(state))
                .ok_or_else(|| invalid(&path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes a new file with both slots allocated (holding `state`, if any) through a
    /// temporary file, so a crash leaves either no file or a whole one.
    fn create(dir: &Path, state: Option<&Checkpoint>) -> io::Result<Self> {
        let tmp = dir.join(format!("{NAME}.tmp"));
        let mut slots = vec![0u8; 2 * SLOT];
        if let Some(state) = state {
            let text = state.render(1);
            if text.len() > SLOT {
                return Err(too_large());
            }
            slots[SLOT..SLOT + text.len()].copy_from_slice(text.as_bytes());
        }
        let mut file = File::create(&tmp)?;
        file.write_all(&slots)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(NAME))?;
        sync_dir(dir)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join(NAME))?;
        Ok(Self {
            file,
            seq: u64::from(state.is_some()),
        })
    }

    /// Makes `state` the checkpoint, durably, by overwriting the older slot in place. On
    /// error the previous state stays in force (on disk and in this handle).
    pub fn store(&mut self, state: &Checkpoint) -> io::Result<()> {
        let seq = self.seq + 1;
        let text = state.render(seq);
        if text.len() > SLOT {
            return Err(too_large());
        }
        let mut slot = vec![0u8; SLOT];
        slot[..text.len()].copy_from_slice(text.as_bytes());
        let offset = (seq % 2) * SLOT as u64;
        self.file.write_all_at(&slot, offset)?;
        self.file.sync_data()?;
        self.seq = seq;
        Ok(())
    }
}

fn invalid(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is not a valid checkpoint", path.display()),
    )
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "checkpoint state larger than its slot",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary folder, removed when the guard drops (also when the test fails).
    fn temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        (tmp, dir)
    }

    #[test]
    fn a_checkpoint_round_trips_and_a_torn_slot_leaves_the_previous_state() {
        let (_tmp, dir) = temp_dir();
        let (mut file, state) = CheckpointFile::open(&dir).unwrap();
        assert_eq!(state, None);
        let mut c = Checkpoint::fresh(7);
        file.store(&c).unwrap();
        c.confirmed = 1234;
        c.begun = Some(1234..5678);
        c.done = vec![0..10, 20..25, 10..15];
        c.done_records = vec![300..400, 0..100, 100..200];
        c.done_rows = vec![(200, 3..7), (200, 0..2)];
        file.store(&c).unwrap();
        drop(file);
        let (mut file, back) = CheckpointFile::open(&dir).unwrap();
        let mut expected = c.clone();
        expected.done = vec![0..15, 20..25];
        expected.done_records = vec![0..200, 300..400];
        expected.done_rows = vec![(200, 0..2), (200, 3..7)];
        assert_eq!(back, Some(expected.clone()));

        // An update torn mid-write (a flipped byte in the slot it was writing): the other
        // slot, the state before it, is read.
        let mut next = expected.clone();
        next.confirmed = 5678;
        next.begun = None;
        file.store(&next).unwrap();
        let mut bytes = fs::read(dir.join(NAME)).unwrap();
        let newest = (file.seq % 2) as usize * SLOT;
        bytes[newest + 60] ^= 1;
        fs::write(dir.join(NAME), &bytes).unwrap();
        assert_eq!(CheckpointFile::open(&dir).unwrap().1, Some(expected));
    }

    #[test]
    fn updates_take_no_new_space() {
        let (_tmp, dir) = temp_dir();
        let (mut file, _) = CheckpointFile::open(&dir).unwrap();
        let mut c = Checkpoint::fresh(1);
        for i in 0..100u64 {
            c.confirmed = i;
            c.begun = Some(i..i + 1);
            file.store(&c).unwrap();
        }
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(names.len(), 1, "no temporary file is left or needed");
        assert_eq!(names[0].metadata().unwrap().len(), 2 * SLOT as u64);
    }

    #[test]
    fn an_earlier_format_checkpoint_is_converted() {
        let (_tmp, dir) = temp_dir();
        let body = format!("{HEADER_V1}\nid abc\nconfirmed 42\nbegun 42-99\ndone 0-5");
        let crc = crc32fast::hash(body.as_bytes());
        fs::write(dir.join(NAME), format!("{body}\ncrc {crc:08x}\n")).unwrap();
        let (_, state) = CheckpointFile::open(&dir).unwrap();
        let state = state.unwrap();
        assert_eq!((state.id.as_str(), state.confirmed), ("abc", 42));
        assert_eq!(
            (state.begun, state.done),
            (Some(42..99), std::iter::once(0..5).collect())
        );
        let (_, again) = CheckpointFile::open(&dir).unwrap();
        assert_eq!(again.unwrap().id, "abc", "stored in the new format");
    }
}
