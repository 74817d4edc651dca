//! The run's own ClickHouse instance: started and stopped through `scripts/clickhouse.sh`
//! on its own ports and data folder, with the wait for the exit the script does not do.

use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

use bench_support::http::ClickHouse;

/// How long a SIGTERMed server gets to exit before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// One clickhouse-server owned by the chaos run.
pub struct OwnClickHouse {
    /// `scripts/clickhouse.sh`.
    pub script: PathBuf,
    /// HTTP port (queries, and the service's inserts).
    pub http_port: u16,
    /// Native TCP port (the interserver port is this + 9).
    pub tcp_port: u16,
    /// Data, logs and `server.pid`.
    pub data_dir: PathBuf,
}

impl OwnClickHouse {
    /// The HTTP interface of this instance.
    pub fn http(&self) -> ClickHouse {
        // Verification answers can hold millions of rows.
        ClickHouse::new("127.0.0.1", self.http_port, Duration::from_secs(60)).unlimited_answers()
    }

    fn script(&self, action: &str) -> Result<(), String> {
        let status = Command::new(&self.script)
            .arg(action)
            .env("CLICKHOUSE_HOST", "127.0.0.1")
            .env("CLICKHOUSE_PORT", self.http_port.to_string())
            .env("CLICKHOUSE_TCP_PORT", self.tcp_port.to_string())
            .env("CLICKHOUSE_DATA_DIR", &self.data_dir)
            .status()
            .map_err(|e| format!("{} {action}: {e}", self.script.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{} {action}: {status}", self.script.display()))
        }
    }

    /// Starts it unless it already answers `/ping`; returns once it does.
    pub fn ensure(&self) -> Result<(), String> {
        self.script("ensure")
    }

    /// Starts from an empty data folder: stops a server left running by an earlier run,
    /// then deletes its data and logs. Earlier runs' tables (many parts) make start-up and
    /// DROP take a minute on 18.16, and every poison insert logs a stack trace (hundreds of
    /// MB per minute of chaos).
    pub fn reset(&self) -> Result<(), String> {
        if self.pid().is_some_and(alive) {
            crate::log("stopping a ClickHouse left running by an earlier run");
            self.stop()?;
        }
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("remove {}: {e}", self.data_dir.display())),
        }
    }

    /// The pid recorded by the script, if any.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_dir.join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// SIGTERM through the script, then waits for the process to be gone (SIGKILL after
    /// [`STOP_TIMEOUT`]). Returns how long the exit took.
    pub fn stop(&self) -> Result<Duration, String> {
        let started = Instant::now();
        let pid = self.pid();
        self.script("stop")?;
        let Some(pid) = pid else {
            return Ok(started.elapsed());
        };
        if wait_gone(pid, STOP_TIMEOUT) {
            return Ok(started.elapsed());
        }
        crate::log(&format!(
            "clickhouse-server (pid {pid}) still running after {} s; SIGKILL",
            STOP_TIMEOUT.as_secs()
        ));
        // SAFETY: plain kill(2); the pid is the server's from its pid file.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
        if wait_gone(pid, Duration::from_secs(10)) {
            Ok(started.elapsed())
        } else {
            Err(format!("clickhouse-server (pid {pid}) survived SIGKILL"))
        }
    }
}

/// Whether `pid` is gone (or a zombie nobody reaps yet) within `timeout`.
pub fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if !alive(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        sleep(Duration::from_millis(50));
    }
}

/// `/proc/<pid>` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: `123 (name) S ...`.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}
