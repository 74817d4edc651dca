//! A ClickHouse of a test's own, on its own ports and data folder, for tests that stop and
//! restart the server (the shared one must stay up for every other test). Started through
//! `scripts/clickhouse.sh`, as `make test` starts the shared one, or `scripts/chdb.sh` when
//! the suite runs on the modern engine (`TEST_ENGINE=modern`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::helpers::within;

/// Longest wait for the server to start or stop.
const STARTUP: Duration = Duration::from_secs(120);

/// A private ClickHouse; stopped (and its data removed) when dropped.
pub struct OwnClickHouse {
    /// HTTP port.
    pub port: u16,
    tcp_port: u16,
    dir: PathBuf,
}

impl OwnClickHouse {
    /// Starts one and waits until it answers `/ping`.
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("own-ch-{}", uuid::Uuid::new_v4().simple()));
        let server = Self {
            port: steady_port(),
            tcp_port: steady_port(),
            dir,
        };
        server.up().await;
        server
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server on its data folder (again).
    pub async fn up(&self) {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut cmd = if crate::helpers::modern_engine() {
            let mut cmd = tokio::process::Command::new(format!("{root}/scripts/chdb.sh"));
            cmd.env("CHDB_HOST", "127.0.0.1")
                .env("CHDB_PORT", self.port.to_string())
                .env("CHDB_DATA_DIR", &self.dir);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(format!("{root}/scripts/clickhouse.sh"));
            cmd.env("CLICKHOUSE_HOST", "127.0.0.1")
                .env("CLICKHOUSE_PORT", self.port.to_string())
                .env("CLICKHOUSE_TCP_PORT", self.tcp_port.to_string())
                .env("CLICKHOUSE_DATA_DIR", &self.dir);
            cmd
        };
        cmd.arg("ensure");
        let status = within(STARTUP, cmd.status()).await.expect("script runs");
        assert!(status.success(), "own ClickHouse did not start");
    }

    /// Stops the server (SIGTERM, as an operator would) and waits until it has exited.
    pub async fn down(&self) {
        let Some(pid) = self.pid() else { return };
        let _ = Command::new("kill").arg(pid.to_string()).status();
        let stat = PathBuf::from(format!("/proc/{pid}/stat"));
        // Gone, or a zombie nobody reaps (PID 1 in a container may not).
        let running = move || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| !r.trim_start().starts_with('Z'))
            })
        };
        within(STARTUP, async {
            while running() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        let _ = std::fs::remove_file(self.dir.join("server.pid"));
    }

    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("server.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// A free port below the ephemeral range (32768 and up on Linux): while the server is down
/// between restarts, an outgoing connection of another test could otherwise be given its
/// port as a local address, and the restart would fail to bind.
fn steady_port() -> u16 {
    loop {
        let n = uuid::Uuid::new_v4().as_u128();
        // The interserver port is the TCP port + 9: keep both in range.
        let port = 20_000 + (n % 12_000) as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 9) {
            return port;
        }
    }
}

impl Drop for OwnClickHouse {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
