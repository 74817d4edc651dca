//! The spool's own small volume (a tmpfs), so a fault can fill it: mounted on the spool
//! folder at the start of a run (root only), unmounted at the end.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on the spool folder; unmounted (lazily) when dropped.
pub struct SpoolVolume {
    dir: PathBuf,
}

impl SpoolVolume {
    /// Mounts a `mb`-MiB tmpfs on `dir` (created if missing). `Err` says why not (not root,
    /// no `mount`): the run goes on without the full-disk fault.
    pub fn mount(dir: &Path, mb: u64) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// Bytes free on the volume.
    pub fn free_bytes(&self) -> Result<u64, String> {
        let path = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes())
            .map_err(|e| e.to_string())?;
        // SAFETY: statvfs(3) writes into the zeroed struct we own; the path is NUL-terminated.
        let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut vfs) } != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        Ok(vfs.f_bavail * vfs.f_frsize)
    }

    /// Fills the volume with a ballast file until `leave` bytes are free.
    pub fn fill_leaving(&self, leave: u64) -> Result<u64, String> {
        let want = self.free_bytes()?.saturating_sub(leave);
        let mut file = std::fs::File::create(self.ballast())
            .map_err(|e| format!("{}: {e}", self.ballast().display()))?;
        let block = vec![0u8; 1 << 20];
        let mut written = 0;
        while written < want {
            let n = block.len().min((want - written) as usize);
            file.write_all(&block[..n])
                .map_err(|e| format!("ballast: {e}"))?;
            written += n as u64;
        }
        Ok(written)
    }

    /// Fills the volume to the last page with a ballast file (another process's data, as
    /// far as the service can tell); returns the bytes written.
    pub fn fill_up(&self) -> Result<u64, String> {
        let mut file = std::fs::File::create(self.ballast())
            .map_err(|e| format!("{}: {e}", self.ballast().display()))?;
        let mut written = 0;
        for size in [1 << 20, 4096] {
            let block = vec![0u8; size];
            while file.write_all(&block).is_ok() {
                written += size as u64;
            }
        }
        Ok(written)
    }

    /// Removes the ballast file.
    pub fn empty(&self) {
        let _ = std::fs::remove_file(self.ballast());
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join("ballast")
    }
}

impl Drop for SpoolVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}
