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
