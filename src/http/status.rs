//! `GET /`: a small status page (no external assets) that refreshes itself from
//! `GET /v1/status`, the same figures as JSON.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;

/// The page; its script polls `/v1/status` every second.
const PAGE: &str = include_str!("status.html");

/// Serves the status page.
pub async fn get_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .body(PAGE)
}

/// What the status page shows: counters, buffer fill, the latest flushes, the last error
/// and the ClickHouse version (as detected at start-up or first contact; no query here).
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "probes",
    responses((status = 200, description = "Counters, buffer, recent flushes, last error", body = Object))
)]
pub async fn get_status(state: web::Data<AppState>) -> HttpResponse {
    let stats = &state.stats;
    let pending = state.ingest.pending();
    // The events table's figures are the top-level ones.
    let mut tables: Vec<serde_json::Value> = (state.tables.each().into_iter())
        .filter(|(_, lane)| !lane.events)
        .map(|(name, lane)| {
            let count =
                |outcome: &str| stats.table_events.with_label_values(&[name, outcome]).get();
            json!({
                "table": name,
                "state": match lane.columns.current() {
                    Ok(_) => "ok".to_string(),
                    Err(why) => why,
                },
                "accepted": count("accepted"),
                "rejected": count("rejected"),
                "ignored_fields": count("ignored_fields"),
                "buffered_events": lane.ingest.pending_events(),
                "events_written": lane.stats.events_written.get(),
                "inserts": lane.stats.inserts.get(),
                "flushes": lane.stats.flushes.get(),
                "events_quarantined": lane.stats.events_quarantined.get(),
                "last_insert": *lane.stats.last_insert.lock(),
                "last_error": *lane.stats.last_error.lock(),
                // In a cluster: its shards' hosts, as `shards` below.
                "shards": lane
                    .ingest
                    .shards()
                    .into_iter()
                    .map(|shard| json!({ "shard": shard.shard, "hosts": shard.hosts }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    tables.sort_by(|a, b| a["table"].as_str().cmp(&b["table"].as_str()));
    HttpResponse::Ok().json(json!({
        "tables": tables,
        // Each API key's events by outcome (the page shows their recent rate).
        "keys": keys(stats),
        "clickhouse_version": state.server.version_text(),
        "clickhouse_tls_unverified": state.clickhouse_tls_unverified,
        "mode": state.mode,
        "uptime_secs": state.started.elapsed().as_secs(),
        // Resident memory, to see it come back after a burst.
        "rss_bytes": crate::memory::resident_bytes(),
        "counters": {
            "events_accepted": stats.events_accepted.get(),
            "events_rejected": stats.events_rejected_total(),
            "events_written": stats.events_written.get(),
            "events_quarantined": stats.events_quarantined.get(),
            "inserts": stats.inserts.get(),
        },
        "buffer": {
            "events": state.ingest.pending_events(),
            "bytes": pending.buffer_bytes,
            "max_bytes": pending.buffer_max_bytes,
            // Bodies and rows of requests waiting for room (`BUFFER_FULL_WAIT_MS`).
            "waiting_bytes": pending.waiting_bytes,
        },
        "spool": pending.spool,
        "oldest_unflushed_secs": pending.oldest.map(|d| d.as_secs_f64()),
        "recent_flushes": *stats.recent_flushes.lock(),
        "last_error": *stats.last_error.lock(),
        // In a cluster: each shard's hosts (shard, up/down, last error, inserts, rows,
        // latency).
        "shards": state
            .ingest
            .shards()
            .into_iter()
            .map(|shard| json!({ "shard": shard.shard, "hosts": shard.hosts }))
            .collect::<Vec<_>>(),
    }))
}

/// Each API key that made a request, by name, with its events by outcome.
fn keys(stats: &crate::stats::Stats) -> Vec<serde_json::Value> {
    use prometheus::core::Collector;
    let mut by_key: std::collections::BTreeMap<String, serde_json::Map<String, serde_json::Value>> =
        Default::default();
    for family in stats.key_events.collect() {
        for metric in family.get_metric() {
            let label = |name: &str| {
                (metric.get_label().iter())
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let entry = by_key.entry(label("key")).or_default();
            entry.insert(
                label("outcome"),
                json!(metric.get_counter().get_value() as u64),
            );
        }
    }
    (by_key.into_iter())
        .map(|(key, counts)| {
            let count = |o: &str| counts.get(o).cloned().unwrap_or(json!(0));
            json!({
                "key": key,
                "accepted": count("accepted"),
                "rejected": count("rejected"),
                "limited": count("limited"),
            })
        })
        .collect()
}
