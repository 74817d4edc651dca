//! `GET /metrics`: the Prometheus text format, with the counters a scrape needs.

use serde_json::json;

use crate::helpers::{PATIENCE, event, spawn_app, within};

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_events_and_flushes() {
    let app = spawn_app(&[("INGEST_API_KEYS", "metrics-secret-key")]).await;
    let mut bad = event(3);
    bad["device_id"] = json!("nope");
    let response = app
        .http
        .post(format!("{}/v1/events", app.address))
        .bearer_auth("metrics-secret-key")
        .body(json!([event(1), event(2), bad]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.post_events("[]").await.status(), 401);
    app.wait_for_rows(2).await;

    let text = within(PATIENCE, async {
        loop {
            let text = app.get("/metrics").await.text().await.unwrap();
            // The flush is recorded after its insert: wait for both, every name.
            if sample(&text, "event_ingest_events_written_total") == Some(2.0)
                && sample(&text, "event_ingest_flushes_total{trigger=\"timer\"}") == Some(1.0)
                && sample(&text, "event_ingest_table_flushes_total{table=\"events\"}") == Some(1.0)
            {
                return text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    for (series, value) in [
        ("event_ingest_events_accepted_total", 2.0),
        (
            "event_ingest_events_rejected_total{reason=\"device_id\"}",
            1.0,
        ),
        (
            "event_ingest_http_requests_total{route=\"/v1/events\",status=\"200\"}",
            1.0,
        ),
        (
            "event_ingest_http_requests_total{route=\"/v1/events\",status=\"401\"}",
            1.0,
        ),
        ("event_ingest_inserts_total", 1.0),
        // The events table's figures under its name too, as every table's.
        (
            "event_ingest_table_events_total{outcome=\"accepted\",table=\"events\"}",
            2.0,
        ),
        (
            "event_ingest_table_events_total{outcome=\"rejected\",table=\"events\"}",
            1.0,
        ),
        (
            "event_ingest_table_events_written_total{table=\"events\"}",
            2.0,
        ),
        ("event_ingest_table_inserts_total{table=\"events\"}", 1.0),
        ("event_ingest_table_flushes_total{table=\"events\"}", 1.0),
        ("event_ingest_flushes_total{trigger=\"timer\"}", 1.0),
        ("event_ingest_flush_batch_events_count", 1.0),
        ("event_ingest_buffer_max_bytes", 268_435_456.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series}\n{text}");
    }
    assert!(sample(&text, "event_ingest_bytes_received_total").unwrap() > 100.0);
    assert!(!text.contains("metrics-secret-key"));
    app.stop().await;
}
