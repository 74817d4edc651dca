//! The event-ingest child process: started with the chaos configuration (disk durability,
//! a small buffer, its own spool), probed through `/v1/health`, killed and terminated.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use bench_support::http;
use bench_support::proc::die_with_parent;
use ureq::Agent;

/// How long a start may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything needed to (re)start the service the same way.
pub struct ServiceConfig {
    /// The release binary.
    pub bin: PathBuf,
    /// The service's HTTP port (kept across restarts).
    pub port: u16,
    /// ClickHouse's HTTP port.
    pub clickhouse_port: u16,
    /// `CLICKHOUSE_NAME`.
    pub database: String,
    /// `SPOOL_DIR` (kept across restarts).
    pub spool_dir: PathBuf,
    /// `BUFFER_MAX_BYTES`.
    pub buffer_max_bytes: u64,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
}

/// The service; killed (SIGKILL) when dropped so a failing driver leaves nothing behind.
pub struct Service {
    cfg: ServiceConfig,
    child: Option<Child>,
    agent: Agent,
    starts: u32,
    /// `RLIMIT_NOFILE` for the next starts (`None`: inherited).
    pub nofile: Option<u64>,
}

impl Service {
    /// A service not yet started.
    pub fn new(cfg: ServiceConfig) -> Self {
        Self {
            cfg,
            child: None,
            agent: http::agent(Duration::from_secs(5)),
            starts: 0,
            nofile: None,
        }
    }

    /// The service's HTTP port.
    pub fn port(&self) -> u16 {
        self.cfg.port
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.cfg.port)
    }

    /// The current pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Spawns it and waits until `/v1/health` answers (200 or 503). Must be called from the
    /// main thread: the child dies with the thread that spawned it (`PR_SET_PDEATHSIG`).
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("service already running".into());
        }
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.log)
            .map_err(|e| format!("open {}: {e}", self.cfg.log.display()))?;
        let _ = writeln!(
            log,
            "==== chaos: start #{} at unix {} ====",
            self.starts,
            crate::unix_secs()
        );
        let err = log
            .try_clone()
            .map_err(|e| format!("{}: {e}", self.cfg.log.display()))?;
        let mut cmd = Command::new(&self.cfg.bin);
        cmd.env("APP_ENV", "test")
            .env("HTTP_HOST", "127.0.0.1")
            .env("HTTP_PORT", self.cfg.port.to_string())
            .env("CLICKHOUSE_HOST", "127.0.0.1")
            .env("CLICKHOUSE_PORT", self.cfg.clickhouse_port.to_string())
            .env("CLICKHOUSE_NAME", &self.cfg.database)
            .env("CLICKHOUSE_TABLE", "events")
            .env("BUFFER_FLUSH_MS", "200")
            .env("BUFFER_MAX_BYTES", self.cfg.buffer_max_bytes.to_string())
            .env("DURABILITY", "disk")
            .env("SPOOL_DIR", &self.cfg.spool_dir)
            .env("SPOOL_MAX_BYTES", (512u64 << 20).to_string())
            .env("SHUTDOWN_TIMEOUT_SECS", "5")
            .env(
                "RUST_LOG",
                // The clickhouse crate logs every request at info.
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,clickhouse=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        die_with_parent(&mut cmd);
        if let Some(limit) = self.nofile {
            limit_descriptors(&mut cmd, limit);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", self.cfg.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let url = format!("{}/v1/health", self.base_url());
        loop {
            if let Some(status) = self.try_wait() {
                return Err(format!(
                    "service exited during start-up ({}); see {}",
                    describe(&status),
                    self.cfg.log.display()
                ));
            }
            if http::get(&self.agent, &url).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "service did not answer {url} within {} s",
                    START_TIMEOUT.as_secs()
                ));
            }
            sleep(Duration::from_millis(50));
        }
    }

    /// `Some(status)` if it has exited (and is then forgotten).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait up to `timeout` for the exit; SIGKILL past that. Returns the exit
    /// as text (`0`, `1`, `signal 9`) or an error saying it had to be killed.
    pub fn terminate(&mut self, timeout: Duration) -> Result<String, String> {
        let Some(pid) = self.pid() else {
            return Err("service not running".into());
        };
        // SAFETY: plain kill(2) on our own, not yet reaped, child.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Ok(describe(&status));
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "did not exit within {} s of SIGTERM; killed",
                    timeout.as_secs()
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The `/v1/health` JSON, if it answers.
    pub fn health(&self) -> Option<serde_json::Value> {
        let (_, body) = http::get(&self.agent, &format!("{}/v1/health", self.base_url())).ok()?;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Gives the child at most `limit` file descriptors (`RLIMIT_NOFILE`, soft and hard).
fn limit_descriptors(cmd: &mut Command, limit: u64) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: only setrlimit(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Describes an exit status: `0`, `1`, `signal 9`.
pub fn describe(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => c.to_string(),
        (None, Some(s)) => format!("signal {s}"),
        _ => "?".into(),
    }
}
