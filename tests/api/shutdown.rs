//! Signals, run against the built binary as a child process.

use crate::helpers::{batch, closed_port, count_rows, drop_database, unique_database};
use crate::process::{start_binary, stop_with};

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
