//! The double buffer seen from outside: what triggers a flush, how few inserts many clients
//! cause, and how a full buffer pushes back.

use std::time::Duration;

use crate::helpers::{
    PATIENCE, batch, clickhouse, closed_port, post_until_refused, spawn_app, within,
};

#[tokio::test]
async fn the_size_trigger_flushes_long_before_the_timer() {
    // The timer is an hour away: only the size trigger can flush within PATIENCE.
    let app = spawn_app(&[("BUFFER_SIZE", "50"), ("BUFFER_FLUSH_MS", "3600000")]).await;
    assert_eq!(app.post_events(batch(0, 30)).await.status(), 200);
    assert_eq!(app.post_events(batch(30, 20)).await.status(), 200);
    app.wait_for_rows(50).await;
    // Below the threshold nothing moves.
    assert_eq!(app.post_events(batch(50, 10)).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count().await, 50);
    assert_eq!(app.stats.inserts.get(), 1);
    app.stop().await;
}

#[tokio::test]
async fn the_timer_flushes_a_half_that_never_fills() {
    let app = spawn_app(&[("BUFFER_SIZE", "1000000"), ("BUFFER_FLUSH_MS", "2000")]).await;
    assert_eq!(app.post_events(batch(0, 5)).await.status(), 200);
    // Not flushed on append (the size is far away)...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.count().await, 0);
    // ...but by the timer.
    app.wait_for_rows(5).await;
    // The flusher counts the insert just after ClickHouse answers: stop first, then look.
    let stats = app.stats.clone();
    app.stop().await;
    assert_eq!(stats.inserts.get(), 1);
}

#[tokio::test]
async fn many_concurrent_clients_land_every_event_in_few_inserts() {
    const CLIENTS: u32 = 16;
    const REQUESTS: u32 = 40;
    const EVENTS: u32 = 30;
    // Flushes come from the one-second timer only, so the number of inserts is bounded by
    // the run's length in seconds, however fast or slow the requests are.
    let app = spawn_app(&[("BUFFER_SIZE", "1000000"), ("BUFFER_FLUSH_MS", "1000")]).await;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let (http, url) = (app.http.clone(), format!("{}/v1/events", app.address));
        clients.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            for r in 0..REQUESTS {
                let first = (c * REQUESTS + r) * EVENTS;
                let response = http
                    .post(&url)
                    .body(batch(first, EVENTS))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                let body: serde_json::Value = response.json().await.unwrap();
                accepted += body["accepted"].as_u64().unwrap();
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for client in clients {
        accepted += within(PATIENCE, client).await.unwrap();
    }
    let requests = u64::from(CLIENTS * REQUESTS);
    assert_eq!(accepted, requests * u64::from(EVENTS));
    app.wait_for_rows(accepted).await;

    // Every event exactly once.
    let distinct = clickhouse(&format!(
        "SELECT uniqExact(sequence) FROM `{}`.events",
        app.database
    ))
    .await;
    assert_eq!(distinct.trim().parse::<u64>().unwrap(), accepted);
    // Inserts counted by the server itself: each insert writes at least one new part.
    let parts: u64 = clickhouse(&format!(
        "SELECT count() FROM system.parts WHERE database = '{}' AND table = 'events' AND level = 0",
        app.database
    ))
    .await
    .trim()
    .parse()
    .unwrap();
    let inserts = app.stats.inserts.get();
    assert!(
        parts >= 1 && parts <= inserts,
        "parts {parts}, inserts {inserts}"
    );
    assert!(
        inserts * 20 < requests,
        "{inserts} inserts for {requests} requests"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_full_buffer_answers_503_with_retry_after() {
    // ClickHouse unreachable and a tiny memory cap: the buffer fills and pushes back.
    let port = closed_port().to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port),
        ("BUFFER_MAX_BYTES", "65536"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    let (accepted, refused) = post_until_refused(&app, 30).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("buffer full"));
    assert!(accepted > 0);
    // While it is that full, a body is refused before it is decoded (cheaply): even one
    // that is not events at all gets the 503, not a 400.
    let garbage = app.post_events("x".repeat(4096)).await;
    assert_eq!(garbage.status(), 503);
    // Still serving, and what it holds stays within the cap.
    assert_eq!(app.get("/nope").await.status(), 404);
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["buffered_events"], accepted);
    // Shutdown cannot write them either, and says so instead of claiming success.
    let report = app.stop().await;
    assert_eq!(report.unwritten, accepted as usize);
    assert!(!report.is_clean());
}
