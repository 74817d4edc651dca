//! Child processes that cannot outlive the driver (`PR_SET_PDEATHSIG`).

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Makes the child that `cmd` spawns get SIGKILL when the thread that spawned it dies
/// (`PR_SET_PDEATHSIG`), e.g. on Ctrl-C or `kill -9` of the driver. The spawn fails if the
/// driver is already gone by the time the child runs.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, getppid) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The driver died before prctl took effect.
            if libc::getppid() == 1 {
                return Err(io::Error::other("parent exited"));
            }
            Ok(())
        });
    }
}
