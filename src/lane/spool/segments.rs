//! Segment files: the spool is one logical byte stream cut into files of about
//! [`SEGMENT_BYTES`], each named by the stream position of its first byte, so positions
//! are stable across restarts and whole files can be deleted once ClickHouse has them.
//!
//! Reading validates every record. After a torn or corrupt record (a crash mid-write, a bad
//! disk) reading resynchronises: it scans on for the next record marker that starts an
//! intact record (its length within the file, its CRC good) and goes on from there, with
//! one log line saying how many bytes were skipped; only the damaged record's events are
//! lost. With no intact record after it (a torn tail) the rest of the file is skipped. A
//! new process never appends after a damaged tail; it starts a new file.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, RecordError};
use crate::format::Rows;

/// A segment is closed and a new one started once it holds this much: small enough that
/// trimming frees disk steadily, large enough that file creation is rare.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The file holding the segment that starts at `start`.
pub fn path(dir: &Path, start: u64) -> PathBuf {
    dir.join(format!("{start:020}.seg"))
}

/// The segments in `dir` as `(start, length)`, in stream order.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(start) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse().ok())
        else {
            continue;
        };
        out.push((start, entry.metadata()?.len()));
    }
    out.sort_unstable();
    Ok(out)
}

/// Rows read back from the spool: whole records from `start` to `end`.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Where reading ended: the next record's position (past any skipped damage).
    pub end: u64,
    /// When the first record read was written, Unix milliseconds (0: none read).
    pub oldest_ms: u64,
    /// Damage skipped on the way, one line each, for the log.
    pub skipped: Vec<String>,
    /// Each record read: where it starts, its length and how many rows it held.
    pub records: Vec<(u64, u64, usize)>,
}

/// How much one read may gather.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Read no record at or past this position.
    pub until: u64,
    /// Stop once this many rows are gathered (whole records: may end a little past it).
    pub max_rows: usize,
    /// Stop once this many bytes are gathered (same).
    pub max_bytes: usize,
}

/// Appends to `rows` the records from `from` on, within `limits`, and says where it
/// stopped. `segments` are the `(start, end)` of each file, `end` being where the next
/// file starts, or the durable end for the newest. `from` must be a record boundary.
pub fn read(
    dir: &Path,
    segments: &[(u64, u64)],
    from: u64,
    limits: ReadLimits,
    rows: &mut Rows,
) -> io::Result<Chunk> {
    let mut chunk = Chunk {
        end: from,
        ..Chunk::default()
    };
    let mut buf = Vec::new();
    for &(start, end) in segments {
        let end = end.min(limits.until);
        if end <= chunk.end {
            continue;
        }
        // Positions between files (skipped damage, a trimmed start) hold nothing.
        chunk.end = chunk.end.max(start);
        let file = File::open(path(dir, start))?;
        let file_len = file.metadata()?.len();
        while chunk.end < end {
            if rows.len() >= limits.max_rows || rows.data().len() >= limits.max_bytes {
                return Ok(chunk);
            }
            let offset = chunk.end - start;
            // One read for many records; the record's own length decides the rest.
            let want = (end - chunk.end).min(1 << 20) as usize;
            read_at(&file, offset, want, &mut buf)?;
            let mut at = 0;
            loop {
                let before = rows.len();
                match record::decode(&buf[at..], rows) {
                    Ok(r) => {
                        if chunk.oldest_ms == 0 {
                            chunk.oldest_ms = r.written_at_ms;
                        }
                        chunk
                            .records
                            .push((chunk.end, r.len as u64, rows.len() - before));
                        at += r.len;
                        chunk.end += r.len as u64;
                        if chunk.end >= end
                            || rows.len() >= limits.max_rows
                            || rows.data().len() >= limits.max_bytes
                        {
                            break;
                        }
                    }
                    Err(RecordError::Torn { need, .. }) => {
                        let here = offset + at as u64;
                        let readable = file_len.min(end - start).saturating_sub(here);
                        if need as u64 > readable {
                            // A tail cut short, or a damaged length: look further.
                            let limit = file_len.min(end - start);
                            let next = resync(&file, here + 1, limit)?;
                            skip_damage(&mut chunk, dir, start, here, next, end, TORN);
                            break;
                        }
                        if at > 0 {
                            break; // the rest of this record is beyond this read
                        }
                        // One record larger than a read: read exactly it (it is there,
                        // unless the file shrank meanwhile: then it is torn after all).
                        read_at(&file, offset, need, &mut buf)?;
                        if buf.len() < need {
                            chunk.skipped.push(damage(dir, start, here, readable, TORN));
                            chunk.end = end;
                            break;
                        }
                    }
                    Err(e) => {
                        let here = offset + at as u64;
                        let limit = file_len.min(end - start);
                        let next = resync(&file, here + 1, limit)?;
                        skip_damage(&mut chunk, dir, start, here, next, end, &e.to_string());
                        break;
                    }
                }
            }
        }
    }
    Ok(chunk)
}

/// Records damage at file offset `here` of the segment starting at `start` and moves
/// `chunk.end` past it: to `next` (the file offset of the next intact record) or, with none,
/// to `end`.
fn skip_damage(
    chunk: &mut Chunk,
    dir: &Path,
    start: u64,
    here: u64,
    next: Option<u64>,
    end: u64,
    what: &str,
) {
    let resume = next.map_or(end, |n| start + n);
    let skipped = resume.saturating_sub(start + here);
    let line = match next {
        Some(_) => format!(
            "{}: {what} at byte {here}; skipped {skipped} bytes to the next intact record",
            path(dir, start).display()
        ),
        None => damage(dir, start, here, skipped, what),
    };
    chunk.skipped.push(line);
    chunk.end = resume;
}

/// The file offset of the first intact record at or after `from` and ending by `limit`
/// (`None`: there is none). A candidate starts with the record marker and decodes whole,
/// CRC included; the CRC makes a marker inside a payload vanishingly unlikely to pass
/// (it would need a well-formed record, checksum and all, embedded in an event's text).
fn resync(file: &File, from: u64, limit: u64) -> io::Result<Option<u64>> {
    const WINDOW: usize = 1 << 20;
    let mut buf = Vec::new();
    let mut record_buf = Vec::new();
    let mut scratch = Rows::default();
    let mut pos = from;
    while pos + record::HEADER as u64 <= limit {
        let want = ((limit - pos) as usize).min(WINDOW);
        read_at(file, pos, want, &mut buf)?;
        if buf.len() < record::HEADER {
            return Ok(None);
        }
        for i in 0..=buf.len() - record::MAGIC.len() {
            if buf[i..i + record::MAGIC.len()] != record::MAGIC {
                continue;
            }
            let candidate = pos + i as u64;
            read_at(file, candidate, record::HEADER, &mut record_buf)?;
            if record_buf.len() < record::HEADER {
                continue;
            }
            let payload =
                u32::from_le_bytes([record_buf[4], record_buf[5], record_buf[6], record_buf[7]]);
            let len = record::HEADER as u64 + u64::from(payload);
            if candidate + len > limit {
                continue;
            }
            read_at(file, candidate, len as usize, &mut record_buf)?;
            let ok = record::decode(&record_buf, &mut scratch).is_ok();
            scratch.clear();
            if ok {
                return Ok(Some(candidate));
            }
        }
        // The next window overlaps this one's last bytes: a marker across the edge is seen.
        pos += (buf.len() - record::MAGIC.len() + 1) as u64;
    }
    Ok(None)
}

/// How a record cut short is described in the log.
const TORN: &str = "torn record (cut short, as by a crash mid-write)";

fn damage(dir: &Path, start: u64, at: u64, skipped: u64, what: &str) -> String {
    format!(
        "{}: {what} at byte {at}; skipped the file's last {skipped} bytes",
        path(dir, start).display()
    )
}

/// Reads up to `len` bytes at `offset` into `buf` (fewer at the end of the file).
fn read_at(file: &File, offset: u64, len: usize, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    buf.truncate(filled);
    Ok(())
}
