//! `GET /metrics`: every metric in the Prometheus text format, and the middleware that
//! counts requests by route and status.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use super::AppState;

/// Serves the registry, after setting the gauges that are read rather than counted.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    let pending = state.ingest.pending();
    let stats = &state.stats;
    stats
        .buffer_events
        .set(state.ingest.pending_events() as i64);
    stats.buffer_bytes.set(pending.buffer_bytes as i64);
    stats.buffer_max_bytes.set(pending.buffer_max_bytes as i64);
    let (spool_bytes, spool_max) = pending.spool.map_or((0, 0), |s| (s.bytes, s.max_bytes));
    stats.spool_bytes.set(spool_bytes as i64);
    stats.spool_max_bytes.set(spool_max as i64);
    stats
        .oldest_pending_seconds
        .set(pending.oldest.map_or(0, |d| d.as_secs() as i64));
    for (name, lane) in &state.tables.lanes {
        stats
            .table_buffer_events
            .with_label_values(&[name.as_str()])
            .set(lane.ingest.pending_events() as i64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(stats.encode())
}

/// Counts every request by its route's name (the API resources are named after their
/// paths; unknown paths and the docs count as `other`, so clients cannot create label
/// values) and status code. Reads borrowed strings only: nothing is allocated per request.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let response = next.call(req).await?;
    let request = response.request();
    if let Some(state) = request.app_data::<web::Data<AppState>>() {
        let route = request.match_name().unwrap_or("other");
        state
            .stats
            .http_requests
            .with_label_values(&[route, response.status().as_str()])
            .inc();
    }
    Ok(response)
}
