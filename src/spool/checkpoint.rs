//! The spool's checkpoint file: the spool's identity, how far ClickHouse has confirmed, and
//! the batch being written now, replaced atomically (write, fsync, rename, fsync the folder)
//! so a crash leaves either the old or the new one, never half of each.
//!
//! The flusher writes one batch at a time, in spool order, so "confirmed up to" plus "the
//! one batch begun after it" (and which of its rows are done) is the whole state; a batch's
//! stable identity (and `insert_deduplication_token`) is its spool range.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;

/// File name inside `SPOOL_DIR`.
const NAME: &str = "checkpoint";
/// First line: says what the file is, and its format version.
const HEADER: &str = "event-ingest spool checkpoint v1";

/// What the flusher has done with the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Random identity of this spool folder, minted when it was created: part of every
    /// deduplication token, so two instances' batches at the same positions never collide.
    pub id: String,
    /// Every record before this position is in ClickHouse (or the quarantine).
    pub confirmed: u64,
    /// A batch sent (maybe more than once) but not yet confirmed: replayed as exactly this
    /// range, so the retry carries the same token.
    pub begun: Option<Range<u64>>,
    /// Rows of the begun batch (by index) already stored or quarantined: a replay skips
    /// them, so servers without deduplication tokens do not store them twice either.
    pub done: Vec<Range<usize>>,
}

impl Checkpoint {
    /// A new spool's checkpoint.
    pub fn fresh() -> Self {
        Self {
            id: uuid::Uuid::new_v4().simple().to_string(),
            confirmed: 0,
            begun: None,
            done: Vec::new(),
        }
    }

    /// Reads `dir`'s checkpoint; `Ok(None)` when there is none yet.
    pub fn load(dir: &Path) -> io::Result<Option<Self>> {
        let text = match fs::read_to_string(dir.join(NAME)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::parse(&text).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid checkpoint", dir.join(NAME).display()),
            )
        })
    }

    fn parse(text: &str) -> Option<Self> {
        let (body, crc) = text.trim_end().rsplit_once("\ncrc ")?;
        if u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut checkpoint = Checkpoint {
            id: String::new(),
            confirmed: 0,
            begun: None,
            done: Vec::new(),
        };
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            match key {
                "id" => checkpoint.id = value.to_string(),
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
                _ => return None,
            }
        }
        (!checkpoint.id.is_empty()).then_some(checkpoint)
    }

    fn render(&self) -> String {
        let mut body = format!("{HEADER}\nid {}\nconfirmed {}", self.id, self.confirmed);
        if let Some(r) = &self.begun {
            body.push_str(&format!("\nbegun {}-{}", r.start, r.end));
        }
        if !self.done.is_empty() {
            let done: Vec<String> = self
                .done
                .iter()
                .map(|r| format!("{}-{}", r.start, r.end))
                .collect();
            body.push_str(&format!("\ndone {}", done.join(",")));
        }
        let crc = crc32fast::hash(body.as_bytes());
        format!("{body}\ncrc {crc:08x}\n")
    }

    /// Replaces `dir`'s checkpoint with this one, durably.
    pub fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("{NAME}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(self.render().as_bytes())?;
        file.sync_data()?;
        fs::rename(&tmp, dir.join(NAME))?;
        sync_dir(dir)
    }
}

/// Makes a folder's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_rejects_tampering() {
        let dir = std::env::temp_dir().join(format!("ckpt-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        assert_eq!(Checkpoint::load(&dir).unwrap(), None);
        let mut c = Checkpoint::fresh();
        c.confirmed = 1234;
        c.begun = Some(1234..5678);
        c.done = vec![0..10, 20..25];
        c.store(&dir).unwrap();
        assert_eq!(Checkpoint::load(&dir).unwrap(), Some(c.clone()));
        let text = c.render().replace("1234", "1235");
        fs::write(dir.join(NAME), text).unwrap();
        assert!(Checkpoint::load(&dir).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
