//! `GET /v1/health`, and serving through a ClickHouse outage.

use serde_json::Value;
use tokio::net::TcpListener;

use crate::helpers::{
    PATIENCE, batch, closed_port, forward_to_clickhouse, spawn_app, wait_for_rows, within,
};

#[tokio::test]
async fn health_is_ok_when_clickhouse_answers() {
    let app = spawn_app(&[]).await;
    let response = app.get("/v1/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert!(body["clickhouse_version"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn events_accepted_during_an_outage_land_when_clickhouse_returns() {
    // The app points at a port where nothing listens yet.
    let port = closed_port();
    let app = spawn_app(&[("CLICKHOUSE_PORT", &port.to_string())]).await;

    let response = app.get("/v1/health").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert!(body["error"].is_string());

    // It keeps serving: events are buffered while the flusher retries.
    assert_eq!(app.post_events(batch(0, 30)).await.status(), 200);
    assert_eq!(app.post_events(batch(30, 30)).await.status(), 200);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let body: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(body["buffered_events"], 60);
    assert!(body["last_flush_error"].is_string());

    // ClickHouse "comes back" on that port: a TCP forwarder to the real server.
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the app's ClickHouse port is still free");
    let forwarder = forward_to_clickhouse(listener);

    wait_for_rows(&app.database, 60).await;
    // Healthy again once the flusher has recorded its success (just after the rows land).
    within(PATIENCE, async {
        while app.get("/v1/health").await.status() != 200 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    let report = app.stop().await;
    assert!(report.is_clean());
    forwarder.abort();
}

/// A backlog replayed after a restart into a table that refuses every insert: the rows wait
/// in a batch read back from the spool (not in the buffer's halves), and health says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_while_a_spooled_backlog_cannot_be_delivered() {
    use crate::helpers::{SpoolDir, clickhouse, drop_database, unique_database};
    use crate::process::start_binary;
    let database = unique_database();
    let spool = SpoolDir::new();
    let disk = [("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())];
    crate::process::spool_with_clickhouse_down(&database, spool.path(), 1).await;
    let http = reqwest::Client::new();

    // The events table is now a view: it answers queries and takes no insert.
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    clickhouse(&format!(
        "CREATE TABLE `{database}`.source (client_time DateTime('UTC'), \
         client_time_corrected DateTime('UTC'), server_time DateTime('UTC'), device_id UUID, \
         device_os String, session String, sequence UInt32, event String, param_int UInt32, \
         param_str String, ip FixedString(16)) ENGINE = Memory"
    ))
    .await;
    clickhouse(&format!(
        "CREATE VIEW `{database}`.events AS SELECT * FROM `{database}`.source"
    ))
    .await;
    let (child, address) = start_binary(&database, &disk).await;
    let health = crate::helpers::within(PATIENCE, async {
        loop {
            let response = http
                .get(format!("{address}/v1/health"))
                .send()
                .await
                .unwrap();
            let code = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap();
            if body["last_flush_error"].is_string() {
                return (code, body);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(health.0, 503, "{}", health.1);
    assert_eq!(health.1["status"], "failing", "{}", health.1);
    drop(child);
    drop_database(&database).await;
}
