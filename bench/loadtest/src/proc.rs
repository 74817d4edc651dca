//! Child processes that cannot outlive the driver, with bounded waits.

use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bench_support::proc::die_with_parent;

/// A running child: killed (SIGKILL) and reaped when dropped, so an error or a panic in
/// the driver leaves nothing running. The kernel also kills it if the driver dies outright
/// (`PR_SET_PDEATHSIG`), e.g. on Ctrl-C or `kill -9`.
pub struct Guarded {
    child: Option<Child>,
    name: String,
}

/// Spawns `cmd` with stdout and stderr appended to `log`.
pub fn spawn(mut cmd: Command, name: &str, log: &Path) -> Result<Guarded, String> {
    let out = File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|e| format!("start {name}: {e}"))?;
    Ok(Guarded {
        child: Some(child),
        name: name.to_string(),
    })
}

impl Guarded {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `Some(status)` once it has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        match self.child.as_mut() {
            Some(c) => c.try_wait().map_err(|e| format!("{}: {e}", self.name)),
            None => Err(format!("{} already reaped", self.name)),
        }
    }

    /// Waits at most `timeout` for it to exit; kills it past that and says so.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{} did not exit within {:.0} s; killed",
                    self.name,
                    timeout.as_secs_f64()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then a bounded wait for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, String> {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        self.wait_timeout(timeout)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

/// `(VmRSS, VmHWM)` of `pid` in bytes, from `/proc/<pid>/status`.
pub fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.trim();
            let kb: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Describes an exit status: `0`, `1`, `signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// CPU time `pid` has used so far, user + system, all its threads (dead ones included), in
/// seconds: fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks (`_SC_CLK_TCK`, 100 a
/// second on Linux, so ±20 ms over a window: small against a 10 s run on two cores).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
        .map(|ticks| ticks as f64 / clock_ticks_per_sec())
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf reads a constant of the running system.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or `)`, so fields are counted from its last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 (state) is index 0
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15() {
        let stat = "4242 (event ingest) S 1 4242 4242 0 -1 4194560 1234 0 0 0 750 125 0 0 20 0 9 0 555 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(875));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
