//! Another table whose inserts fail: its own status, error and counters in
//! `/v1/health` and `/metrics`, and the service `failing` while its rows wait, without
//! the other tables' figures moving.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{PATIENCE, clickhouse, spawn_app_in, unique_database, within};
use crate::tables::{metric, post_table, table_with, wait_for};

#[tokio::test]
async fn a_table_whose_inserts_fail_is_failing_alone_and_the_service_says_so() {
    let database = unique_database();
    table_with(&database, "good", "n UInt32, t String").await;
    // Its columns read like any table's, but the engine refuses every insert (code 48).
    clickhouse(&format!(
        "CREATE TABLE `{database}`.stuck (n UInt32, t String) \
         ENGINE = Merge(`{database}`, '^nothing$')"
    ))
    .await;
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "good,stuck"),
            ("BUFFER_FLUSH_MS", "100"),
            // The stuck rows are never written: do not wait long for them at the end.
            ("SHUTDOWN_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let row = json!([{"n": 1, "t": "x"}]);
    assert_eq!(post_table(&app, "stuck", &row).await.status(), 200);
    assert_eq!(post_table(&app, "good", &row).await.status(), 200);
    wait_for(&database, "good", 1).await;
    let health: Value = within(PATIENCE, async {
        loop {
            let health: Value = app.get("/v1/health").await.json().await.unwrap();
            if health["tables"]["stuck"]["status"] == "failing" {
                return health;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(health["status"], "failing", "{health}");
    assert!(
        health["error"].as_str().unwrap().contains("table stuck"),
        "{health}"
    );
    assert!(
        health["tables"]["stuck"]["last_flush_error"]
            .as_str()
            .unwrap()
            .contains("48"),
        "{health}"
    );
    assert_eq!(health["tables"]["stuck"]["buffered_events"], 1, "{health}");
    assert_eq!(health["tables"]["good"]["status"], "ok", "{health}");
    assert_eq!(
        health["tables"]["good"]["last_flush_error"],
        Value::Null,
        "{health}"
    );
    assert_eq!(health["last_flush_error"], Value::Null, "{health}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let errors = |table: &str| {
        metric(
            &metrics,
            &format!(
                "event_ingest_table_insert_errors_total{{kind=\"retryable\",table=\"{table}\"}}"
            ),
        )
    };
    assert!(errors("stuck") >= Some(1.0), "{metrics}");
    assert_eq!(errors("good"), Some(0.0), "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"event_ingest_table_events_written_total{table="stuck"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    app.stop().await;
}
