//! The column lists a table's rows were encoded under, kept on disk (`disk` mode) in the
//! table's spool directory, one file per list (`columns-<tag>.json`): a row spooled before
//! a restart is replayed with the list it was encoded under, even if the table changed
//! (an `ADD COLUMN`) while the service was down. Each file is written and fsynced before
//! its list becomes the one requests encode with, so no row is acknowledged under a list
//! that a restart could not read back.
//!
//! Files no spooled row needs any more are deleted at start-up ([`prune`]), before any row
//! is accepted or replayed: the rows an earlier run left in the table's spools are read for
//! the tags they carry ([`spooled_tags`]), and only those lists and the one in use are kept.
//! A crash during or after pruning loses nothing a record needs: no other row exists yet.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::table::{ColumnInfo, TimeRange};

/// Bytes of the column-list tag before each row.
pub const TAG_BYTES: usize = 4;

/// Everything a column list is built from, as read from the server and the configuration:
/// built again from this, it is the same list with the same tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Definition {
    /// The table's columns from `system.columns`.
    pub columns: Vec<ColumnInfo>,
    /// The table's `CREATE TABLE` statement (its sort key).
    pub create_table: String,
    /// The server's time zone.
    pub zone: String,
    /// Whether the server reads `RowBinaryWithDefaults`.
    pub server_defaults: bool,
    /// `SERVER_TIME_COLUMN` and `CLIENT_IP_COLUMN` when the list was read.
    pub server_time_column: String,
    /// See `server_time_column`.
    pub client_ip_column: String,
    /// The dates and times the server shows (lists saved before it was kept: every value).
    #[serde(default)]
    pub time_range: TimeRange,
}

/// `columns-<tag in hex>.json`.
fn file_name(tag: [u8; TAG_BYTES], suffix: &str) -> String {
    format!("columns-{:08x}.json{suffix}", u32::from_be_bytes(tag))
}

/// Writes the definition of the list tagged `tag` into `dir` (created if missing) and makes
/// it durable: written to a temporary file, fsynced, renamed, and the directory fsynced. A
/// list already on disk is not written again.
pub fn save(dir: &Path, tag: [u8; TAG_BYTES], definition: &Definition) -> io::Result<()> {
    let target = dir.join(file_name(tag, ""));
    if target.exists() {
        return Ok(());
    }
    crate::durable::create_dir_durably(dir)?;
    let json = serde_json::to_vec_pretty(definition).map_err(io::Error::other)?;
    let temporary = dir.join(file_name(tag, ".tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(&json)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&temporary, &target)?;
    File::open(dir)?.sync_all()
}

/// Deletes the lists in `dir` whose tag is not in `keep` (and any temporary file a crash
/// left mid-save), then makes the deletions durable; returns the tags deleted.
pub fn prune(dir: &Path, keep: &HashSet<[u8; TAG_BYTES]>) -> io::Result<Vec<[u8; TAG_BYTES]>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut deleted = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if name.starts_with("columns-") && name.ends_with(".json.tmp") {
            fs::remove_file(entry.path())?;
            continue;
        }
        let Some(tag) = tag_of_file(name) else {
            continue;
        };
        if !keep.contains(&tag) {
            fs::remove_file(entry.path())?;
            deleted.push(tag);
        }
    }
    File::open(dir)?.sync_all()?;
    Ok(deleted)
}

/// The tag a `columns-<tag>.json` file holds.
fn tag_of_file(name: &str) -> Option<[u8; TAG_BYTES]> {
    name.strip_prefix("columns-")?
        .strip_suffix(".json")
        .filter(|hex| hex.len() == 2 * TAG_BYTES)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .map(u32::to_be_bytes)
}

/// Every list saved in `dir`, with its tag (none if `dir` does not exist). A file that
/// cannot be read is reported, not fatal: only the rows encoded under it are affected
/// (they are quarantined with the reason, as before these files existed).
pub fn load_all(dir: &Path) -> io::Result<Vec<([u8; TAG_BYTES], Definition)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(tag) = name.to_str().and_then(tag_of_file) else {
            continue;
        };
        match fs::read(entry.path()).map(|bytes| serde_json::from_slice::<Definition>(&bytes)) {
            Ok(Ok(definition)) => out.push((tag, definition)),
            Ok(Err(e)) => log::warn!("{}: unreadable ({e})", entry.path().display()),
            Err(e) => log::warn!("{}: unreadable ({e})", entry.path().display()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> Definition {
        Definition {
            columns: vec![ColumnInfo {
                name: "n".into(),
                type_name: "UInt32".into(),
                default_kind: String::new(),
                default_expression: String::new(),
            }],
            create_table: "CREATE TABLE t (n UInt32) ENGINE = MergeTree ORDER BY n".into(),
            zone: "UTC".into(),
            server_defaults: false,
            server_time_column: "server_time".into(),
            client_ip_column: "ip".into(),
            time_range: Default::default(),
        }
    }

    #[test]
    fn a_saved_list_loads_back_with_its_tag_and_other_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("table-t");
        assert!(load_all(&dir).unwrap().is_empty(), "no directory yet");
        save(&dir, [1, 2, 3, 4], &definition()).unwrap();
        save(&dir, [1, 2, 3, 4], &definition()).unwrap();
        fs::write(dir.join("00000000000000000000.seg"), b"x").unwrap();
        fs::write(dir.join("columns-zz.json"), b"{}").unwrap();
        assert_eq!(load_all(&dir).unwrap(), vec![([1, 2, 3, 4], definition())]);
    }

    #[test]
    fn pruning_keeps_the_lists_asked_for_and_nothing_else_of_its_own() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("table-t");
        for tag in [[1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]] {
            save(&dir, tag, &definition()).unwrap();
        }
        fs::write(dir.join("columns-04040404.json.tmp"), b"{").unwrap();
        fs::write(dir.join("00000000000000000000.seg"), b"x").unwrap();
        let keep = HashSet::from([[1, 1, 1, 1], [3, 3, 3, 3]]);
        assert_eq!(prune(&dir, &keep).unwrap(), vec![[2, 2, 2, 2]]);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "00000000000000000000.seg",
                "columns-01010101.json",
                "columns-03030303.json"
            ]
        );
        assert!(prune(&tmp.path().join("none"), &keep).unwrap().is_empty());
    }
}
