//! Signals, run against the built binary as a child process.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::helpers::{
    PATIENCE, batch, closed_port, count_rows, drop_database, test_env, unique_database, within,
};

/// Starts `event-ingest` with the test environment plus `overrides`; waits until it answers.
async fn start_binary(database: &str, overrides: &[(&str, &str)]) -> (Child, String) {
    let port = closed_port().to_string();
    let mut env = overrides.to_vec();
    env.push(("HTTP_PORT", &port));
    let child = Command::new(env!("CARGO_BIN_EXE_event-ingest"))
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
async fn stop_with(mut child: Child, name: &str) -> (std::process::ExitStatus, String) {
    let stderr = collect_stderr(&mut child);
    signal(&child, name);
    let status = within(PATIENCE, child.wait()).await.unwrap();
    (status, stderr.await.unwrap())
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Drains the child's stderr in the background (a full pipe would block its logging) and
/// hands the text over once the child has exited.
fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    })
}

/// Buffers events no trigger would flush for an hour, stops the binary with `signal`, and
/// checks every event was written and the exit code is 0.
async fn signal_flushes_everything_buffered(signal: &str) {
    let database = unique_database();
    let (child, address) = start_binary(
        &database,
        &[("BUFFER_SIZE", "1000000"), ("BUFFER_FLUSH_MS", "3600000")],
    )
    .await;
    let http = reqwest::Client::new();
    for i in 0..10 {
        let response = http
            .post(format!("{address}/v1/events"))
            .body(batch(i * 30, 30))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(count_rows(&database).await, 0);

    let (status, log) = stop_with(child, signal).await;
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains(&format!("{signal} received")), "{log}");
    assert_eq!(count_rows(&database).await, 300, "{log}");
    drop_database(&database).await;
}

#[tokio::test]
async fn sigterm_flushes_everything_buffered_and_exits_0() {
    signal_flushes_everything_buffered("TERM").await;
}

#[tokio::test]
async fn sigint_is_as_graceful_as_sigterm() {
    signal_flushes_everything_buffered("INT").await;
}

#[tokio::test]
async fn sigterm_with_clickhouse_down_gives_up_after_the_timeout_and_exits_non_zero() {
    let database = unique_database();
    let port = closed_port().to_string();
    let (child, address) = start_binary(
        &database,
        &[("CLICKHOUSE_PORT", &port), ("SHUTDOWN_TIMEOUT_SECS", "1")],
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/events"))
        .body(batch(0, 30))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (status, log) = stop_with(child, "TERM").await;
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("30 buffered events were not written"), "{log}");
}

#[tokio::test]
async fn prod_logs_are_json_lines() {
    let database = unique_database();
    let (child, _) = start_binary(&database, &[("APP_ENV", "prod")]).await;
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["msg"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
    drop_database(&database).await;
}
