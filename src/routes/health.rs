//! `GET /v1/health`: `200` when ClickHouse answers a query and inserts are going through,
//! `503` with the reason otherwise (ClickHouse unreachable, or its latest insert failed
//! while events wait). Either way the body carries the buffer's state, so an operator sees
//! a backlog building.

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::stats::Stats;

/// Pings ClickHouse (`SELECT version()`, bounded to a couple of seconds).
pub async fn get_health(state: web::Data<AppState>) -> HttpResponse {
    let buffered_events = state.ingest.pending_events();
    let last_error = state.stats.last_error.lock().clone();
    let counters = json!({
        "events_accepted": Stats::get(&state.stats.events_accepted),
        "events_written": Stats::get(&state.stats.events_written),
        "inserts": Stats::get(&state.stats.inserts),
        "events_dropped": Stats::get(&state.stats.events_dropped),
    });
    match state.sink.server_version().await {
        // It answers queries, but inserts fail (permissions, too many parts, ...).
        Ok(version) if last_error.is_some() && buffered_events > 0 => {
            HttpResponse::ServiceUnavailable().json(json!({
                "status": "failing",
                "error": last_error,
                "clickhouse_version": version,
                "buffered_events": buffered_events,
                "last_flush_error": last_error,
                "counters": counters,
            }))
        }
        Ok(version) => HttpResponse::Ok().json(json!({
            "status": "ok",
            "clickhouse_version": version,
            "buffered_events": buffered_events,
            "last_flush_error": last_error,
            "counters": counters,
        })),
        Err(e) => HttpResponse::ServiceUnavailable().json(json!({
            "status": "unavailable",
            "error": e.to_string(),
            "buffered_events": buffered_events,
            "last_flush_error": last_error,
            "counters": counters,
        })),
    }
}
