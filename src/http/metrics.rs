//! `GET /metrics`: every metric in the Prometheus text format, and the middleware that
//! counts requests by route and status.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use super::AppState;
use crate::lane::ingest::HostStatus;
use crate::lane::ingest::ShardStatus;

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
    stats.buffer_waiting_bytes.set(pending.waiting_bytes as i64);
    let (spool_bytes, spool_max) = pending.spool.map_or((0, 0), |s| (s.bytes, s.max_bytes));
    stats.spool_bytes.set(spool_bytes as i64);
    stats.spool_max_bytes.set(spool_max as i64);
    stats
        .oldest_pending_seconds
        .set(pending.oldest.map_or(0, |d| d.as_secs() as i64));
    for (name, lane) in state.tables.each() {
        stats
            .table_buffer_events
            .with_label_values(&[name])
            .set(lane.ingest.pending_events() as i64);
    }
    let mut body = stats.encode();
    // The events table's hosts are the unlabelled ones.
    let tables: Vec<(&str, Vec<ShardStatus>)> = (state.tables.each().into_iter())
        .filter(|(_, lane)| !lane.events)
        .map(|(name, lane)| (name, lane.ingest.shards()))
        .collect();
    body.push_str(&host_metrics(&state.ingest.shards(), &tables));
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}

/// A per-host metric: name suffix, Prometheus type, help, and how to read it.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&HostStatus) -> f64,
);

/// In a cluster, each host's state, labelled by shard and `host:port` (values from
/// `CLICKHOUSE_HOSTS`, a fixed set): read from the lanes when scraped, so no per-host
/// metric is registered. The lanes of `INGEST_TABLES` are their own hosts' figures, in
/// `event_ingest_table_host_*` with a `table` label (operator configuration).
fn host_metrics(shards: &[ShardStatus], tables: &[(&str, Vec<ShardStatus>)]) -> String {
    use std::fmt::Write;
    let hosts: Vec<&HostStatus> = shards.iter().flat_map(|s| &s.hosts).collect();
    let table_hosts: Vec<(&str, &HostStatus)> = tables
        .iter()
        .flat_map(|(table, shards)| shards.iter().flat_map(|s| &s.hosts).map(|h| (*table, h)))
        .collect();
    let mut out = String::new();
    if hosts.is_empty() && table_hosts.is_empty() {
        return out;
    }
    let families: [Family; 5] = [
        (
            "up",
            "gauge",
            "1 if the host's last insert or ping succeeded",
            |h| f64::from(u8::from(h.up != Some(false))),
        ),
        (
            "inserts_total",
            "counter",
            "Successful inserts into the host",
            |h| h.inserts as f64,
        ),
        (
            "rows_total",
            "counter",
            "Rows inserted into the host",
            |h| h.rows as f64,
        ),
        (
            "insert_seconds_total",
            "counter",
            "Seconds its inserts took",
            |h| h.insert_seconds_total,
        ),
        (
            "last_insert_seconds",
            "gauge",
            "Seconds its last insert took",
            |h| h.last_insert_seconds.unwrap_or(0.0),
        ),
    ];
    for (suffix, kind, help, value) in families {
        if !hosts.is_empty() {
            let name = format!("event_ingest_clickhouse_host_{suffix}");
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for h in &hosts {
                let _ = writeln!(
                    out,
                    "{name}{{shard=\"{}\",host=\"{}\"}} {}",
                    h.shard,
                    h.host,
                    value(h)
                );
            }
        }
        if !table_hosts.is_empty() {
            let name = format!("event_ingest_table_host_{suffix}");
            let _ = writeln!(
                out,
                "# HELP {name} {help} (a table of INGEST_TABLES)\n# TYPE {name} {kind}"
            );
            for (table, h) in &table_hosts {
                let _ = writeln!(
                    out,
                    "{name}{{table=\"{table}\",shard=\"{}\",host=\"{}\"}} {}",
                    h.shard,
                    h.host,
                    value(h)
                );
            }
        }
    }
    out
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
