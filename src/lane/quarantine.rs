//! The quarantine: rows ClickHouse refuses as bad data, kept as JSON lines under
//! `SPOOL_DIR/quarantine/` instead of being retried forever or thrown away.
//!
//! One file per UTC day (`YYYY-MM-DD.jsonl`), one line per row: when, ClickHouse's error,
//! the batch it came from, and the row decoded back to the table's column names, so an
//! operator can read it, fix the table or the client, and re-post the events. Written in
//! both durability modes, fsynced before the batch counts as done (in `disk` mode the spool
//! forgets the rows only after that; while the quarantine cannot be written they are
//! parked, fsynced, in the spool's folder instead and moved here later).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Reads one of a table's encoded rows back as JSON (`None` if it cannot).
pub type RowDecoder = std::sync::Arc<dyn Fn(&[u8]) -> Option<serde_json::Value> + Send + Sync>;

/// Where rejected rows go.
pub struct Quarantine {
    dir: PathBuf,
    /// The table whose lane this is (lines name it), and how its rows are read back (with
    /// the column list they were encoded under).
    table: String,
    decode: RowDecoder,
    /// Serialises writers (only the flusher writes; the lock keeps lines whole regardless).
    lock: Mutex<()>,
}

/// One rejected row.
pub struct Rejected<'a> {
    /// The row's RowBinary bytes.
    pub row: &'a [u8],
    /// ClickHouse's answer.
    pub error: String,
}

impl Quarantine {
    /// The quarantine of a table's lane in `dir` (created on first use; one folder for
    /// every table).
    pub fn for_table(dir: impl Into<PathBuf>, table: &str, decode: RowDecoder) -> Self {
        Self {
            dir: dir.into(),
            table: table.to_string(),
            decode,
            lock: Mutex::new(()),
        }
    }

    /// The events table's quarantine in `dir`, its rows read back with the events table's
    /// schema (tests: the service builds every lane's with [`Quarantine::for_table`]).
    #[cfg(test)]
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let decode: RowDecoder =
            std::sync::Arc::new(|row: &[u8]| crate::table::events::schema().ok()?.decode_row(row));
        Self::for_table(dir, "events", decode)
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Appends one line per row of `rejected`, from batch `batch`, and syncs the file.
    pub fn put(&self, batch: &str, rejected: &[Rejected<'_>]) -> io::Result<PathBuf> {
        let lines = lines(&self.table, &self.decode, batch, rejected)?;
        let _guard = self.lock.lock();
        self.append_to_day(&lines)
    }

    /// `disk` mode, when [`put`](Self::put) fails: appends the same lines to the parking
    /// file in the spool's folder `spool_dir` and syncs it, so the batch can be confirmed
    /// (its rows leave the spool) while the quarantine is unwritable, without losing them.
    pub fn park(&self, spool_dir: &Path, batch: &str, rejected: &[Rejected<'_>]) -> io::Result<()> {
        let lines = lines(&self.table, &self.decode, batch, rejected)?;
        let _guard = self.lock.lock();
        append_synced(spool_dir, &parked_path(spool_dir), &lines)
    }

    /// Moves parked lines (see [`park`](Self::park)) into the quarantine: appended and
    /// synced there first, then the parking file is removed. Returns how many rows moved
    /// (0 if none were parked). A crash between the two steps leaves them in both; the
    /// next call appends them again (a duplicate line, never a lost one).
    pub fn unpark(&self, spool_dir: &Path) -> io::Result<usize> {
        let parked = parked_path(spool_dir);
        let _guard = self.lock.lock();
        let lines = match fs::read(&parked) {
            Ok(lines) => lines,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        if !lines.is_empty() {
            self.append_to_day(&lines)?;
        }
        fs::remove_file(&parked)?;
        crate::durable::sync_dir(spool_dir)?;
        Ok(lines.iter().filter(|&&b| b == b'\n').count())
    }

    /// Appends `lines` to today's file and syncs it. The caller holds the lock.
    fn append_to_day(&self, lines: &[u8]) -> io::Result<PathBuf> {
        crate::durable::create_dir_durably(&self.dir)?;
        let path = self
            .dir
            .join(format!("{}.jsonl", OffsetDateTime::now_utc().date()));
        append_synced(&self.dir, &path, lines)?;
        Ok(path)
    }
}

/// The parking file for rejected rows in `disk` mode (see [`Quarantine::park`]), in the
/// spool's folder: written only while the quarantine cannot be.
pub fn parked_path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(PARKED)
}

/// The parking file's name.
const PARKED: &str = "quarantine-parked.jsonl";

/// One JSON line per row of `rejected`, from batch `batch`, of `table`.
fn lines(
    table: &str,
    decode: &RowDecoder,
    batch: &str,
    rejected: &[Rejected<'_>],
) -> io::Result<Vec<u8>> {
    let at = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut lines = Vec::new();
    for r in rejected {
        let hex = || r.row.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let event = decode(r.row).unwrap_or_else(|| json!({ "undecodable_row_hex": hex() }));
        let line = json!({
            "quarantined_at": at,
            "error": r.error,
            "batch": batch,
            "table": table,
            "event": event,
        });
        serde_json::to_writer(&mut lines, &line)?;
        lines.push(b'\n');
    }
    Ok(lines)
}

/// Appends `bytes` to `path` (in folder `dir`) and syncs it; a new file's name is synced
/// in `dir` too, so it survives a crash.
fn append_synced(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let new = !path.exists();
    let mut file = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)?;
    // A crash mid-append leaves a torn last line: the new lines start on their own, so
    // only the torn one is unreadable.
    if ends_torn(&mut file)? {
        file.write_all(b"\n")?;
    }
    file.write_all(bytes)?;
    file.sync_data()?;
    if new {
        crate::durable::sync_dir(dir)?;
    }
    Ok(())
}

/// Whether `file` is not empty and does not end with a newline.
fn ends_torn(file: &mut fs::File) -> io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    if file.metadata()?.len() == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::End(-1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::event::testing::rows;

    #[test]
    fn a_torn_last_line_is_not_joined_by_the_next_append() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("quarantine");
        let q = Quarantine::new(&dir);
        let batch = rows(0..1);
        let rejected = [Rejected {
            row: batch.row(0),
            error: "Code: 6. bad".into(),
        }];
        let path = q.put("b1", &rejected).unwrap();
        // A crash mid-append: the last line is cut short.
        let mut text = fs::read(&path).unwrap();
        text.truncate(text.len() - 10);
        fs::write(&path, &text).unwrap();
        q.put("b2", &rejected).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let last: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(last["batch"], "b2");
    }

    #[test]
    fn each_rejected_row_is_one_json_line_with_its_error() {
        let dir_tmp = tempfile::tempdir().expect("temp dir");
        let dir = dir_tmp.path().join("quarantine");
        let q = Quarantine::new(&dir);
        let batch = rows(0..2);
        let rejected: Vec<_> = (0..2)
            .map(|i| Rejected {
                row: batch.row(i),
                error: format!("Code: 6. bad {i}"),
            })
            .collect();
        let path = q.put("b1", &rejected).unwrap();
        q.put("b2", &rejected[..1]).unwrap();
        let text = fs::read_to_string(path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["error"], "Code: 6. bad 1");
        assert_eq!(lines[1]["event"]["sequence"], 1);
        assert_eq!(lines[2]["batch"], "b2");
    }

    #[test]
    fn parked_rows_move_to_the_quarantine_once() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let q = Quarantine::new(tmp.path().join("quarantine"));
        let batch = rows(0..3);
        let rejected: Vec<_> = (0..3)
            .map(|i| Rejected {
                row: batch.row(i),
                error: format!("Code: 6. bad {i}"),
            })
            .collect();
        q.park(tmp.path(), "b1", &rejected[..2]).unwrap();
        q.park(tmp.path(), "b2", &rejected[2..]).unwrap();
        assert_eq!(q.unpark(tmp.path()).unwrap(), 3);
        assert!(!parked_path(tmp.path()).exists());
        assert_eq!(q.unpark(tmp.path()).unwrap(), 0, "nothing left parked");
        let files: Vec<_> = fs::read_dir(q.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let text = fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
        let batches: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["batch"].to_string())
            .collect();
        assert_eq!(batches, [r#""b1""#, r#""b1""#, r#""b2""#]);
    }
}
