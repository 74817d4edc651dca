//! `POST /v1/tables/{table}`: the `/v1/events` contract for any table in `INGEST_TABLES`,
//! each event validated against the table's own columns (`crate::schema`) and handed to
//! that table's lane (its own buffer, flush, spool and back-pressure).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use time::OffsetDateTime;

use super::body::Encoding;
use super::events::{Accepted, INLINE_MAX_BYTES, post_events, sent_at};
use super::{ApiError, AppState, body, client};
use crate::event::Format;
use crate::ingest::Ingest;
use crate::schema::RequestFacts;
use crate::sink::TableState;

/// One allowed table: the columns its rows are encoded with, and where they go.
pub struct TableLane {
    /// Shared with the table's sink.
    pub state: Arc<TableState>,
    /// The table's buffer (or direct insert).
    pub ingest: Arc<dyn Ingest>,
    /// The table's own figures (flushes, inserts, errors), for metrics, health and status.
    pub stats: Arc<crate::stats::TableStats>,
}

/// Every allowed table by the name clients use (as written in `INGEST_TABLES`).
#[derive(Default)]
pub struct Tables {
    /// Tables other than the events table.
    pub lanes: HashMap<String, TableLane>,
    /// The names that mean the events table (`events`, `db.events`).
    pub events: Vec<String>,
}

/// Accepts events for one allowed table: same bodies, answers and status codes as
/// `/v1/events`; `404` for a table not in `INGEST_TABLES`, `503` while the table is missing.
#[utoipa::path(
    post,
    path = "/v1/tables/{table}",
    tag = "events",
    params(("table" = String, Path, description = "A table in INGEST_TABLES")),
    request_body(
        content((Object = "application/json"), (Object = "application/x-ndjson")),
        description = "Events as for /v1/events; fields are the table's columns (see the \
            `x-tables` schemas of this document)"
    ),
    responses(
        (status = 200, description = "Valid events kept; invalid ones listed", body = Accepted),
        (status = 400, description = "Body is not events at all; nothing stored"),
        (status = 404, description = "Table not in INGEST_TABLES"),
        (status = 503, description = "Table missing or its buffer full; retry after Retry-After"),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn post_table(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let name = path.into_inner();
    if state.tables.events.contains(&name) {
        return post_events(req, payload, state).await;
    }
    if !state.api_keys.allows(&req) {
        return Err(ApiError::Unauthorized);
    }
    let Some(lane) = state.tables.lanes.get(&name) else {
        return Err(ApiError::UnknownTable(name));
    };
    let loaded = lane
        .state
        .current()
        .map_err(|reason| ApiError::Unavailable {
            reason,
            retry_after: Duration::from_secs(5),
        })?;
    let (encoding, mut reservation, raw) =
        super::events::read_body(&req, payload, &state, lane.ingest.as_ref()).await?;
    let format = Format::from_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let sent_at_header = req
        .headers()
        .get("x-sent-at")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let facts = RequestFacts {
        server_time_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
        ip: client::client_ip(&req, &state.trusted_proxies),
        sent_at: None,
    };
    let (body_max, max_events) = (state.body_max_bytes, state.max_events);
    let inline = encoding == Encoding::Identity && raw.len() <= INLINE_MAX_BYTES;
    let work = move |reservation: &mut super::inflight::Reservation| {
        let body = body::decode(raw, encoding, body_max, reservation)?;
        loaded
            .schema
            .validate_body(&body, format, max_events, facts, &loaded.tag, |envelope| {
                sent_at(sent_at_header.as_deref(), envelope)
            })
    };
    let validated = if inline {
        work(&mut reservation)?
    } else {
        state.cpu.run(move || work(&mut reservation)).await??
    };
    let accepted = validated.rows.len();
    if accepted > 0 {
        lane.ingest.submit(validated.rows).await?;
    }
    state.stats.record_table_request(
        &name,
        accepted,
        validated.rejected,
        validated.unknown_fields,
    );
    Ok(HttpResponse::Ok().json(Accepted::new(
        accepted,
        validated.rejected,
        validated.errors,
    )))
}
