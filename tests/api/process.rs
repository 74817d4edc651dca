//! The built binary as a child process: start it, signal it, read its log.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::helpers::{PATIENCE, closed_port, test_env, within};

/// Starts `event-ingest` with the test environment plus `overrides`; waits until it answers.
/// `EVENT_INGEST_BIN` names another build to run instead (to check that a test fails
/// against an older binary).
pub async fn start_binary(database: &str, overrides: &[(&str, &str)]) -> (Child, String) {
    let port = closed_port().to_string();
    let mut env = overrides.to_vec();
    env.push(("HTTP_PORT", &port));
    let binary = std::env::var("EVENT_INGEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_event-ingest").to_string());
    let child = Command::new(binary)
        .env_clear()
        .envs(test_env(database, &env))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("binary starts");
    let address = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    within(PATIENCE, async {
        while http
            .get(format!("{address}/v1/health"))
            .send()
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    (child, address)
}

/// Sends the signal and waits for the child to exit; returns its status and its log.
pub async fn stop_with(mut child: Child, name: &str) -> (std::process::ExitStatus, String) {
    let stderr = collect_stderr(&mut child);
    signal(&child, name);
    let status = within(PATIENCE, child.wait()).await.unwrap();
    (status, stderr.await.unwrap())
}

pub fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Drains the child's stderr in the background (a full pipe would block its logging) and
/// hands the text over once the child has exited.
pub fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// Runs the binary in `disk` mode over `spool_dir` with ClickHouse unreachable, posts
/// `requests` batches of ten events (sequences `10 * i ..`), and stops it with SIGTERM: the
/// events stay in the spool for the next run. Returns the stopped process's log.
pub async fn spool_with_clickhouse_down(database: &str, spool_dir: &str, requests: u32) -> String {
    let down = closed_port().to_string();
    let env = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool_dir),
        ("CLICKHOUSE_PORT", down.as_str()),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ];
    let (child, address) = start_binary(database, &env).await;
    let http = reqwest::Client::new();
    for i in 0..requests {
        let r = http
            .post(format!("{address}/v1/events"))
            .body(crate::helpers::batch(i * 10, 10));
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    log
}
