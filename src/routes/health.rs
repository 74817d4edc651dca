//! `GET /v1/health`: `200` when ClickHouse answers a query and inserts are going through,
//! `503` with the reason otherwise (ClickHouse unreachable, or its latest insert failed
//! while events wait). Either way the body carries the buffer's and the spool's state, the
//! oldest unflushed event's age and the last flush error, so an operator sees a backlog
//! building. `GET /v1/ready` is `503` while saturated (memory, or in `disk` mode the spool).

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::AppState;
use crate::ingest::SpoolFill;

/// Pings ClickHouse (`SELECT version()`, bounded to a couple of seconds).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "probes",
    responses(
        (status = 200, description = "ClickHouse answers and inserts go through; buffer state and counters", body = Object),
        (status = 503, description = "ClickHouse unreachable (`unavailable`) or inserts failing (`failing`)", body = Object),
    )
)]
pub async fn get_health(state: web::Data<AppState>) -> HttpResponse {
    let buffered_events = state.ingest.pending_events();
    let backlog = state.ingest.backlog();
    let (buffer_bytes, buffer_max_bytes) = state.ingest.fill();
    let last_error = state.stats.last_error.lock().clone();
    let (mut response, status, version, error) = match state.sink.server_version().await {
        // It answers queries, but inserts fail (permissions, too many parts, ...).
        Ok(version) if last_error.is_some() && buffered_events > 0 => (
            HttpResponse::ServiceUnavailable(),
            "failing",
            Some(version),
            last_error.clone(),
        ),
        Ok(version) => (HttpResponse::Ok(), "ok", Some(version), None),
        Err(e) => (
            HttpResponse::ServiceUnavailable(),
            "unavailable",
            None,
            Some(e.to_string()),
        ),
    };
    response.json(json!({
        "status": status,
        "error": error,
        "clickhouse_version": version,
        "buffered_events": buffered_events,
        "buffer_bytes": buffer_bytes,
        "buffer_max_bytes": buffer_max_bytes,
        "oldest_unflushed_seconds": backlog.oldest.map(|d| d.as_secs_f64()),
        "spool": backlog.spool,
        "last_flush_error": last_error,
        "insert_format": state.sink.format_info(),
        "counters": {
            "events_accepted": state.stats.events_accepted.get(),
            "events_written": state.stats.events_written.get(),
            "inserts": state.stats.inserts.get(),
            "events_quarantined": state.stats.events_quarantined.get(),
        },
    }))
}

/// Above this share of `BUFFER_MAX_BYTES` the instance reports itself not ready, so a load
/// balancer sends traffic elsewhere before requests start getting `503`.
const READY_MAX_FILL: f64 = 0.9;

/// `GET /v1/ready`, for readiness probes: `200` when ClickHouse answers and the buffer has
/// room, `503` with the reasons otherwise (also while shutting down).
#[utoipa::path(
    get,
    path = "/v1/ready",
    tag = "probes",
    responses(
        (status = 200, description = "Ready for traffic", body = Object),
        (status = 503, description = "Not ready; `reasons` says why", body = Object),
    )
)]
pub async fn get_ready(state: web::Data<AppState>) -> HttpResponse {
    let (used, max) = state.ingest.fill();
    let mut reasons = Vec::new();
    if let Err(e) = state.sink.server_version().await {
        reasons.push(e.to_string());
    }
    let spool = state.ingest.backlog().spool;
    match &spool {
        Some(SpoolFill {
            failed: Some(why), ..
        }) => reasons.push(format!("spool unusable: {why}")),
        Some(s) if s.bytes as f64 >= s.max_bytes as f64 * READY_MAX_FILL => {
            reasons.push(format!("spool {} of {} bytes full", s.bytes, s.max_bytes));
        }
        // In disk mode a full memory buffer spills to the spool: only the spool saturates.
        Some(_) => {}
        None if max > 0 && used as f64 >= max as f64 * READY_MAX_FILL => {
            reasons.push(format!("buffer {used} of {max} bytes full"));
        }
        None => {}
    }
    if state.ingest.is_closed() {
        reasons.push("shutting down".to_string());
    }
    let body = json!({
        "ready": reasons.is_empty(),
        "reasons": reasons,
        "buffer_bytes": used,
        "buffer_max_bytes": max,
        "spool_bytes": spool.as_ref().map(|s| s.bytes),
        "spool_max_bytes": spool.as_ref().map(|s| s.max_bytes),
    });
    if reasons.is_empty() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
