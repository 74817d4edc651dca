//! Files and folders made durable: a folder's entries synced after a file in it is
//! created, renamed or removed, and folders created so that they survive a power loss.
//! Used by every stage that keeps files (the spool, the quarantine, the saved column lists).

use std::fs::{self, File};
use std::io;
use std::path::Path;

/// Makes a folder's entries (a created, renamed or removed file) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and missing parents) and makes the new entries durable: a power loss soon
/// after the first start must not lose the folder with the records acknowledged in it.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Each created folder's entry lives in its parent.
    for created in missing {
        match created.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(parent) => sync_dir(parent)?,
            None => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}
