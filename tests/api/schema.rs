//! Tables created by someone else: extra columns are fine, incompatible ones are refused
//! with a message naming the column (and the events wait, they are not dropped).

use serde_json::Value;

use crate::helpers::{
    PATIENCE, batch, clickhouse, spawn_app_in, unique_database, wait_for_rows, within,
};

const COLUMNS: &str = "client_time DateTime, server_time DateTime, device_id UUID, \
    device_os String, session String, sequence UInt32, event String, param_int UInt32, \
    param_str String";

#[tokio::test]
async fn a_table_with_extra_defaulted_columns_takes_the_rows() {
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    clickhouse(&format!(
        "CREATE TABLE `{database}`.events ({COLUMNS}, ip FixedString(16), \
         note String DEFAULT 'n/a') ENGINE = MergeTree ORDER BY sequence"
    ))
    .await;
    let app = spawn_app_in(&database, &[]).await;
    assert_eq!(app.post_events(batch(0, 3)).await.status(), 200);
    wait_for_rows(&database, 3).await;
    let notes = clickhouse(&format!("SELECT DISTINCT note FROM `{database}`.events")).await;
    assert_eq!(notes.trim(), "n/a");
    app.stop().await;
}

#[tokio::test]
async fn an_incompatible_table_is_reported_and_nothing_is_dropped() {
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    clickhouse(&format!(
        "CREATE TABLE `{database}`.events ({COLUMNS}, ip String) ENGINE = MergeTree ORDER BY sequence"
    ))
    .await;
    let app = spawn_app_in(&database, &[("SHUTDOWN_TIMEOUT_SECS", "1")]).await;
    assert_eq!(app.post_events(batch(0, 3)).await.status(), 200);
    let health: Value = within(PATIENCE, async {
        loop {
            let response = app.get("/v1/health").await;
            let body: Value = response.json().await.unwrap();
            if body["last_flush_error"].is_string() {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(health["status"], "failing");
    let error = health["last_flush_error"].as_str().unwrap();
    assert!(error.contains("column ip has type String"), "{error}");
    assert_eq!(health["buffered_events"], 3);
    let report = app.stop().await;
    assert_eq!(
        report.unwritten, 3,
        "kept, not dropped, until shutdown gave up"
    );
}
