//! `GET /v1/health`: `200` when ClickHouse answers a query and inserts are going through,
//! `503` with the reason otherwise (ClickHouse unreachable, or its latest insert failed
//! while events wait). Either way the body carries the buffer's and the spool's state, the
//! oldest unflushed event's age, the last flush error and any local storage operation
//! failing (spool read, checkpoint, quarantine: also `503`), so an operator sees a backlog
//! building. `GET /v1/ready` is `503` while saturated (memory, or in `disk` mode the spool).
//! `GET /v1/live` is `200` while the process serves, whatever ClickHouse does. In a cluster
//! both show each shard's hosts, and readiness names a shard whose lane is full.
//!
//! Probes are open to anyone (load balancers and kubelets send no keys), so they must be
//! cheap and say nothing an attacker could use: ClickHouse is asked at most once a second
//! whatever the request rate ([`ClickHouseCheck`]), and its error texts and version are
//! shown only to privileged callers (see [`Gate::privileged`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde_json::json;

use super::AppState;
use super::access::Gate;
use crate::lane::ingest::ServerCheck;
use crate::lane::ingest::{Pending, ShardStatus, SpoolFill};

/// How long one answer from ClickHouse serves every probe.
const CHECK_MAX_AGE: Duration = Duration::from_secs(1);

/// What probes show unprivileged callers instead of ClickHouse's own error text.
const UNAVAILABLE: &str = "ClickHouse is not answering queries";

type Check = Shared<BoxFuture<'static, Result<String, String>>>;

/// The latest `SELECT version()`, shared: callers within [`CHECK_MAX_AGE`] of its start
/// await the same query (or take its answer), so a flood of probes costs ClickHouse one
/// query a second. The lock is held only to read or replace the handle, never while the
/// query runs.
pub struct ClickHouseCheck {
    server: Arc<dyn ServerCheck>,
    latest: parking_lot::Mutex<Option<(Instant, Check)>>,
}

impl ClickHouseCheck {
    /// Checks through `server`.
    pub fn new(server: Arc<dyn ServerCheck>) -> Self {
        Self {
            server,
            latest: parking_lot::Mutex::new(None),
        }
    }

    /// The server's version, or why it did not answer.
    pub async fn version(&self) -> Result<String, String> {
        let check = {
            let mut latest = self.latest.lock();
            match &*latest {
                Some((started, check)) if started.elapsed() < CHECK_MAX_AGE => check.clone(),
                _ => {
                    let check = self.server.clone().ping().shared();
                    *latest = Some((Instant::now(), check.clone()));
                    check
                }
            }
        };
        check.await
    }
}

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
pub async fn get_health(
    req: HttpRequest,
    state: web::Data<AppState>,
    gate: web::Data<Gate>,
) -> HttpResponse {
    let privileged = gate.privileged(&req);
    // Asked first: the ping may take a while, and everything below is then read at one
    // moment, so the overall status and each table's agree.
    let version_check = state.clickhouse_check.version().await;
    let buffered_events = state.ingest.pending_events();
    let pending = state.ingest.pending();
    let last_error = state.stats.last_error.lock().clone();
    // A spool read, checkpoint or quarantine write failing: the pipeline waits on it.
    let storage_error = state.stats.local_error();
    // In a cluster: a shard whose replicas all failed while its lane holds rows (the other
    // shards' successes clear `last_error`, so it is asked of the lanes).
    let shards = state.ingest.shards();
    let shard_down = shards
        .iter()
        .find(|s| !s.has_healthy_replica() && s.pending.oldest.is_some())
        .map(|s| format!("shard {}: no replica answering; its rows are held", s.shard));
    // A table of `INGEST_TABLES` whose rows wait on a failed insert (its own error, kept per table), or
    // in a cluster one of its shards with rows held and no replica answering.
    let table_failing = (state.tables.each().into_iter())
        .filter(|(_, lane)| !lane.events && lane.ingest.pending().holds_rows())
        .find_map(|(name, lane)| {
            let down = lane
                .ingest
                .shards()
                .into_iter()
                .find(|s| !s.has_healthy_replica() && s.pending.oldest.is_some());
            if let Some(shard) = down {
                return Some(format!(
                    "table {name}, shard {}: no replica answering; its rows are held",
                    shard.shard
                ));
            }
            let error = lane.stats.last_error.lock().clone()?;
            Some(format!("table {name}: {error}"))
        });
    // A spool whose write failed refuses events until its volume has room: any table's.
    let spool_failed = (pending.spool.as_ref().and_then(|s| s.failed.clone()))
        .map(|why| format!("spool write failed: {why}"))
        .or_else(|| {
            (state.tables.each().into_iter())
                .filter(|(_, lane)| !lane.events)
                .find_map(|(name, lane)| {
                    let why = lane.ingest.pending().spool?.failed?;
                    Some(format!("table {name}: spool write failed: {why}"))
                })
        });
    let storage_error = storage_error.or(spool_failed);
    let (mut response, status, version, error) = match version_check {
        Ok(version) if storage_error.is_some() => (
            HttpResponse::ServiceUnavailable(),
            "failing",
            Some(version),
            storage_error.clone(),
        ),
        Ok(version) if shard_down.is_some() => (
            HttpResponse::ServiceUnavailable(),
            "failing",
            Some(version),
            shard_down,
        ),
        Ok(version) if table_failing.is_some() => (
            HttpResponse::ServiceUnavailable(),
            "failing",
            Some(version),
            table_failing,
        ),
        // It answers queries, but inserts fail (permissions, too many parts, ...).
        // Rows wait anywhere (halves, a batch read back from the spool, the spool itself).
        Ok(version) if last_error.is_some() && pending.holds_rows() => (
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
            Some(e),
        ),
    };
    let mut spool = pending.spool;
    let (error, version, last_error, storage_error) = if privileged {
        (error, version, last_error, storage_error)
    } else {
        if let Some(s) = &mut spool {
            s.failed = s.failed.as_ref().map(|_| "spool write failed".to_string());
        }
        let error = error.map(|_| match status {
            "failing" => "inserts are failing".to_string(),
            _ => UNAVAILABLE.to_string(),
        });
        let storage_error = storage_error.map(|_| "local storage failing".to_string());
        (
            error,
            None,
            last_error.map(|_| "insert failed".into()),
            storage_error,
        )
    };
    // The tables of `INGEST_TABLES` (the events table's are the top-level figures): each
    // one's state and what waits to reach it.
    let tables: serde_json::Map<String, serde_json::Value> = (state.tables.each().into_iter())
        .filter(|(_, lane)| !lane.events)
        .map(|(name, lane)| {
            let pending = lane.ingest.pending();
            let buffered = lane.ingest.pending_events();
            let problem = lane.columns.current().err();
            let last_error = lane.stats.last_error.lock().clone();
            // As for the events table: failing while its rows wait on a failed insert.
            let status = match (&problem, &last_error) {
                (Some(_), _) => "unavailable",
                (None, Some(_)) if pending.holds_rows() => "failing",
                _ => "ok",
            };
            let entry = json!({
                "status": status,
                "error": problem.filter(|_| privileged),
                "buffered_events": buffered,
                "buffer_bytes": pending.buffer_bytes,
                "spool_bytes": pending.spool.as_ref().map(|s| s.bytes),
                "last_flush_error": last_error.map(|e| match privileged {
                    true => e,
                    false => "insert failed".into(),
                }),
                "last_insert": *lane.stats.last_insert.lock(),
                // In a cluster: its lane per shard and their replicas (as `shards` below).
                "shards": shards_json(&lane.ingest.shards(), privileged),
                "counters": {
                    "flushes": lane.stats.flushes.get(),
                    "inserts": lane.stats.inserts.get(),
                    "events_written": lane.stats.events_written.get(),
                    "events_quarantined": lane.stats.events_quarantined.get(),
                },
            });
            (name.to_string(), entry)
        })
        .collect();
    response.json(json!({
        "status": status,
        "error": error,
        "tables": tables,
        "clickhouse_version": version,
        "buffered_events": buffered_events,
        "buffer_bytes": pending.buffer_bytes,
        "buffer_max_bytes": pending.buffer_max_bytes,
        "buffer_waiting_bytes": pending.waiting_bytes,
        "oldest_unflushed_seconds": pending.oldest.map(|d| d.as_secs_f64()),
        "spool": spool,
        "last_flush_error": last_error,
        "storage_error": storage_error,
        "insert_format": state.server.insert_format(),
        "shards": shards_json(&shards, privileged),
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
pub async fn get_ready(
    req: HttpRequest,
    state: web::Data<AppState>,
    gate: web::Data<Gate>,
) -> HttpResponse {
    let privileged = gate.privileged(&req);
    let pending = state.ingest.pending();
    let (used, max) = (pending.buffer_bytes, pending.buffer_max_bytes);
    let mut reasons = Vec::new();
    let shards = state.ingest.shards();
    // In a cluster a shard with no replica answering holds its rows while its lane has room
    // (per-shard reasons below), so the gateway stays in the load balancer even when every
    // host is down; one server's outage keeps its own rule.
    if shards.is_empty()
        && let Err(e) = state.clickhouse_check.version().await
    {
        reasons.push(if privileged { e } else { UNAVAILABLE.into() });
    }
    let spool = pending.spool;
    match &spool {
        Some(SpoolFill {
            failed: Some(why), ..
        }) if privileged => reasons.push(format!("spool unusable: {why}")),
        Some(SpoolFill {
            failed: Some(_), ..
        }) => reasons.push("spool unusable".into()),
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
    match state.stats.local_error() {
        Some(e) if privileged => reasons.push(format!("local storage failing: {e}")),
        Some(_) => reasons.push("local storage failing".into()),
        None => {}
    }
    for shard in shards {
        if let Some(full) = lane_full(&shard.pending) {
            let replicas = if shard.has_healthy_replica() {
                "writing"
            } else {
                "no replica answering"
            };
            reasons.push(format!("shard {} ({replicas}): {full}", shard.shard));
        }
    }
    for (name, lane) in state.tables.each() {
        if let Err(why) = lane.columns.current() {
            reasons.push(match privileged {
                true => why,
                false => format!("table {name} unavailable"),
            });
        }
        // The events table's shards are reported above.
        for shard in lane.ingest.shards().iter().filter(|_| !lane.events) {
            if let Some(full) = lane_full(&shard.pending) {
                reasons.push(format!("table {name}, shard {}: {full}", shard.shard));
            }
        }
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

/// Whether one lane (a cluster's shard) is too full to take more, and how full.
fn lane_full(pending: &Pending) -> Option<String> {
    match &pending.spool {
        Some(s) if s.failed.is_some() => Some("spool unusable".into()),
        Some(s) if s.bytes as f64 >= s.max_bytes as f64 * READY_MAX_FILL => {
            Some(format!("spool {} of {} bytes full", s.bytes, s.max_bytes))
        }
        Some(_) => None,
        None => {
            let (used, max) = (pending.buffer_bytes, pending.buffer_max_bytes);
            (max > 0 && used as f64 >= max as f64 * READY_MAX_FILL)
                .then(|| format!("buffer {used} of {max} bytes full"))
        }
    }
}

/// Each shard of a cluster: its replicas (up, last error, inserts, rows, latency) and what
/// its lane holds. Error texts only for privileged callers.
fn shards_json(shards: &[ShardStatus], privileged: bool) -> serde_json::Value {
    let shards: Vec<serde_json::Value> = shards
        .iter()
        .map(|shard| {
            let hosts: Vec<serde_json::Value> = shard
                .hosts
                .iter()
                .map(|h| {
                    let mut host = serde_json::to_value(h).unwrap_or_default();
                    if !privileged && h.last_error.is_some() {
                        host["last_error"] = json!("insert or ping failed");
                    }
                    host
                })
                .collect();
            let p = &shard.pending;
            json!({
                "shard": shard.shard,
                "healthy_replica": shard.has_healthy_replica(),
                "hosts": hosts,
                "buffer_bytes": p.buffer_bytes,
                "buffer_max_bytes": p.buffer_max_bytes,
                "oldest_unflushed_seconds": p.oldest.map(|d| d.as_secs_f64()),
                "spool_bytes": p.spool.as_ref().map(|s| s.bytes),
                "spool_max_bytes": p.spool.as_ref().map(|s| s.max_bytes),
            })
        })
        .collect();
    json!(shards)
}

/// `GET /v1/live`, for liveness probes: `200` while the process serves requests and every
/// lane's flusher runs; `503` once one has stopped for good (a restart is what fixes it).
/// It asks nothing of ClickHouse: restarting the service cannot fix ClickHouse, and would
/// lose what a `memory`-mode buffer holds.
#[utoipa::path(
    get,
    path = "/v1/live",
    tag = "probes",
    responses(
        (status = 200, description = "The process serves requests", body = Object),
        (status = 503, description = "A lane's flusher stopped: restart the process", body = Object),
    )
)]
pub async fn get_live(state: web::Data<AppState>) -> HttpResponse {
    match state.stats.fatal() {
        None => HttpResponse::Ok().json(json!({ "live": true })),
        Some(why) => {
            HttpResponse::ServiceUnavailable().json(json!({ "live": false, "error": why }))
        }
    }
}
