//! The quarantine: rows ClickHouse refuses as bad data, kept as JSON lines under
//! `SPOOL_DIR/quarantine/` instead of being retried forever or thrown away.
//!
//! One file per UTC day (`YYYY-MM-DD.jsonl`), one line per row: when, ClickHouse's error,
//! the batch it came from, and the row decoded back to the table's column names, so an
//! operator can read it, fix the table or the client, and re-post the events. Written in
//! both durability modes, fsynced before the batch counts as done (in `disk` mode the spool
//! forgets the rows only after that).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use parking_lot::Mutex;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::event::decode_json;

/// Where rejected rows go.
pub struct Quarantine {
    dir: PathBuf,
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
    /// A quarantine in `dir` (created on first use).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            lock: Mutex::new(()),
        }
    }

    /// The folder the files are in.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Appends one line per row of `rejected`, from batch `batch`, and syncs the file.
    pub fn put(&self, batch: &str, rejected: &[Rejected<'_>]) -> io::Result<PathBuf> {
        let now = OffsetDateTime::now_utc();
        let at = now.format(&Rfc3339).unwrap_or_default();
        let mut lines = Vec::new();
        for r in rejected {
            let event = decode_json(r.row).unwrap_or_else(|| {
                json!({ "undecodable_row_hex": r.row.iter().map(|b| format!("{b:02x}")).collect::<String>() })
            });
            let line = json!({
                "quarantined_at": at,
                "error": r.error,
                "batch": batch,
                "event": event,
            });
            serde_json::to_writer(&mut lines, &line)?;
            lines.push(b'\n');
        }
        let _guard = self.lock.lock();
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{}.jsonl", now.date()));
        let new = !path.exists();
        let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(&lines)?;
        file.sync_data()?;
        if new {
            // The file's name must survive a crash too.
            crate::spool::sync_dir(&self.dir)?;
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::rows;

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
}
