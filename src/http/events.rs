//! The one ingest handler: `POST /v1/events` and `POST /v1/tables/{table}` read the body,
//! decode and validate it against the table's schema, and hand the valid rows to the
//! table's lane. `/v1/events` is `/v1/tables/<CLICKHOUSE_TABLE>`: the events table, whose
//! columns and rules are fixed (`crate::table::events`); a table of `INGEST_TABLES` is read
//! by its own columns as ClickHouse describes them, its rows tagged with that column list.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::body::Encoding;
use super::idempotency::{self, Begin};
use super::inflight::Reservation;
use super::keys::Key;
use super::{ApiError, AppState, body, client};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::lane::ingest::Ingest;
use crate::table::event::{FieldError, Format, Loose, parse_time};
use crate::table::{ColumnList, Columns, RequestFacts, TableSchema, TableValidated};

/// One allowed table: the columns its rows are encoded with, and where they go.
pub struct TableLane {
    /// The name it was configured with (`CLICKHOUSE_TABLE`, or as in `INGEST_TABLES`).
    pub name: String,
    /// The column list rows are encoded with now (kept up to date by the table's sink).
    pub columns: Arc<dyn Columns>,
    /// The table's buffer (or direct insert).
    pub ingest: Arc<dyn Ingest>,
    /// The table's own figures (flushes, inserts, errors), for metrics, health and status.
    pub stats: Arc<crate::stats::TableStats>,
    /// The events table: its figures are also kept under the earlier, unlabelled names, and
    /// its lane is the one health and the status page report as the service's own.
    pub events: bool,
}

/// Every allowed table by the names clients use: the events table's (`events`,
/// `db.events`) and each of `INGEST_TABLES` as written there.
pub struct Tables {
    /// Each table's lane under each of its names.
    pub lanes: HashMap<String, Arc<TableLane>>,
    /// The events table's lane (`/v1/events`), also under its names in `lanes`.
    pub events: Option<Arc<TableLane>>,
    /// `CLICKHOUSE_NAME`: a table of it may be named with or without it (`t`, `db.t`).
    pub database: String,
}

impl Tables {
    /// The lane of the table clients call `name`: as configured, or the same table with or
    /// without `CLICKHOUSE_NAME.`.
    fn lane(&self, name: &str) -> Option<&TableLane> {
        let lane = self.lanes.get(name).or_else(|| {
            // Rarely needed: the other spelling of a table of `CLICKHOUSE_NAME`.
            match name
                .strip_prefix(self.database.as_str())
                .and_then(|rest| rest.strip_prefix('.'))
            {
                Some(bare) => self.lanes.get(bare),
                None => self.lanes.get(&format!("{}.{name}", self.database)),
            }
        });
        lane.map(|lane| &**lane)
    }

    /// The events table's lane.
    pub fn events(&self) -> Option<&TableLane> {
        self.events.as_deref()
    }

    /// Each table once, under the name it was configured with, sorted by it.
    pub fn each(&self) -> Vec<(&str, &TableLane)> {
        let mut each: Vec<(&str, &TableLane)> = (self.lanes.iter())
            .filter(|(name, lane)| **name == lane.name)
            .map(|(name, lane)| (name.as_str(), &**lane))
            .collect();
        each.sort_by_key(|(name, _)| *name);
        each
    }
}

/// One event as clients send it to `/v1/events` (documentation of what validation accepts).
#[allow(dead_code)] // Read by the OpenAPI generator only.
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "client_time": "2020-12-01 23:59:00",
    "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C821E",
    "device_os": "IOS 13.5.1",
    "session": "ybuRi8mAUypxjbxQ",
    "sequence": 1,
    "event": "app_start",
    "param_int": 0,
    "param_str": "some text"
}))]
pub struct EventIn {
    /// `YYYY-MM-DD hh:mm:ss` (UTC) or RFC 3339; 1970–2106.
    client_time: String,
    /// A UUID.
    #[schema(format = "uuid")]
    device_id: String,
    /// Non-empty, at most 256 bytes.
    device_os: String,
    /// Non-empty, at most 256 bytes.
    session: String,
    /// Unsigned 32-bit.
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    sequence: u32,
    /// Non-empty, at most 256 bytes.
    event: String,
    /// Unsigned 32-bit; default 0.
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    param_int: Option<u32>,
    /// At most 8 KiB; default empty.
    param_str: Option<String>,
}

/// Every error answer.
#[allow(dead_code)] // Read by the OpenAPI generator only.
#[derive(utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

/// The `200` answer: how many events were taken and why the others were not.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Events kept (buffered, or committed in `direct` mode).
    accepted: usize,
    /// Events rejected by validation.
    rejected: usize,
    /// Why, for the first 100 rejected fields.
    errors: Vec<FieldError>,
}

/// Accepts events as a JSON array, one JSON object, or NDJSON (by `Content-Type`),
/// optionally gzip- or zstd-compressed (by `Content-Encoding`). Valid events are kept even
/// when others are rejected; `200` means buffered (`double` mode) or committed (`direct`).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    request_body(
        content(
            (Vec<EventIn> = "application/json"),
            (EventIn = "application/x-ndjson"),
        ),
        description = "A JSON array of events, one event object, or NDJSON (one object a \
            line). May be sent with `Content-Encoding: gzip` or `zstd`."
    ),
    responses(
        (status = 200, description = "Valid events kept; invalid ones listed", body = Accepted),
        (status = 400, description = "Body is not events at all; nothing stored", body = ErrorBody),
        (status = 401, description = "Missing or unknown API key (when keys are configured)", body = ErrorBody),
        (status = 403, description = "The key may not write this table, is used from a page origin not its own, is an admin key, or is a secret key sent as ?key=; a CORS preflight from an origin not allowed", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is in progress", body = ErrorBody),
        (status = 413, description = "Body or event count over the limits", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Encoding", body = ErrorBody),
        (status = 429, description = "The key is over its rate: retry after Retry-After seconds (RateLimit and RateLimit-Policy headers as in the IETF draft)", body = ErrorBody),
        (status = 503, description = "Buffer full or shutting down; retry after Retry-After seconds", body = ErrorBody),
    ),
    params(
        ("key" = Option<String>, Query, description = "A browser key (one with origins), for pages and navigator.sendBeacon; other keys go in Authorization or X-Api-Key. Requests from a browser key's origins (and CORS_ALLOWED_ORIGINS) get CORS answers: OPTIONS preflights 204."),
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 255 bytes, scoped to the API key: a resend within IDEMPOTENCY_WINDOW_SECS gets the first 200 answer (with Idempotent-Replayed: true) and stores nothing again; 409 while the first is in progress."),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    ingest(req, None, payload, state).await
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
        (status = 403, description = "The key may not write this table (or see /v1/events)"),
        (status = 404, description = "Table not in INGEST_TABLES"),
        (status = 429, description = "The key is over its rate; retry after Retry-After"),
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
    ingest(req, Some(path.into_inner()), payload, state).await
}

/// Which table a request's rows are for, as the handler needs it.
struct Target<'a> {
    /// The table's lane: its figures, where its rows go.
    lane: &'a TableLane,
    /// The column list the rows are encoded with (and the tag each row starts with).
    columns: Arc<dyn ColumnList>,
}

impl<'a> Target<'a> {
    /// The table `name` names (`None`: `/v1/events`): `404` if it is not allowed, `503`
    /// while it cannot be read.
    fn of(state: &'a AppState, name: Option<&str>) -> Result<Self, ApiError> {
        let lane = match name {
            None => state.tables.events(),
            Some(name) => state.tables.lane(name),
        };
        let Some(lane) = lane else {
            // Quoted short: the name is the client's.
            let name = name.unwrap_or_default();
            return Err(ApiError::UnknownTable(crate::table::event::excerpt(name)));
        };
        let columns = lane
            .columns
            .current()
            .map_err(|reason| ApiError::Unavailable {
                reason,
                retry_after: Duration::from_secs(5),
            })?;
        Ok(Target { lane, columns })
    }
}

/// Both routes: the client's key, the table, the body, its rows into the table's lane.
async fn ingest(
    req: HttpRequest,
    table: Option<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Before reading a byte of the body: a client without a key, with a key for another
    // table or page, or over its rate, costs nothing more.
    let key = state
        .keys
        .keys()
        .ingest_key(req.headers(), req.query_string())?;
    let target = Target::of(&state, table.as_deref())?;
    let idempotency_key = match req.headers().get(IDEMPOTENCY_KEY) {
        Some(value) => match value.to_str() {
            Ok(text) if !text.is_empty() && text.len() <= idempotency::MAX_KEY_BYTES => {
                Some(text.to_string())
            }
            _ => return Err(ApiError::BadIdempotencyKey),
        },
        None => None,
    };
    if let Some(key) = &key {
        let names = [
            table.as_deref().unwrap_or(&target.lane.name),
            &target.lane.name,
        ];
        key.check_table(&names)?;
        key.check_origin(req.headers())?;
    }
    // Events charged to the key before the body is read (from its length).
    let paid = match &key {
        Some(key) => key
            .admit(content_length(req.headers()))
            .map_err(ApiError::RateLimited)?,
        None => 0,
    };
    let Some(idempotency_key) = idempotency_key else {
        let body = take(&req, key.as_deref(), paid, target, payload, &state).await?;
        return Ok(answer(body));
    };
    let scope = key.as_ref().map_or("", |k| k.name.as_str()).to_string();
    match state.idempotency.begin(&scope, &idempotency_key) {
        Begin::Replay(body) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("idempotent-replayed", "true"))
            .body(body)),
        Begin::InProgress => Err(ApiError::IdempotencyInProgress),
        Begin::New => match take(&req, key.as_deref(), paid, target, payload, &state).await {
            Ok(body) => {
                let answer_body = body.clone();
                let saved = match state.idempotency.journaled() {
                    // `disk` mode: a sync of the journal, on the blocking pool, not here.
                    true => {
                        let held = state.clone();
                        web::block(move || {
                            held.idempotency
                                .finish(&scope, &idempotency_key, answer_body)
                        })
                        .await
                        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
                    }
                    false => state
                        .idempotency
                        .finish(&scope, &idempotency_key, answer_body),
                };
                if let Err(e) = saved {
                    log::warn!(
                        "an Idempotency-Key answer is not in the journal ({e}): a resend after \
                         a restart would be taken again"
                    );
                }
                Ok(answer(body))
            }
            Err(e) => {
                state.idempotency.abandon(&scope, &idempotency_key);
                Err(e)
            }
        },
    }
}

/// The `200` answer, its JSON body built.
fn answer(body: Vec<u8>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

/// Takes a request's events once its key and table are known: reads the body, decodes and
/// validates it, counts its events against the key, and hands the valid rows to the lane.
/// Returns the `200` answer's JSON.
async fn take(
    req: &HttpRequest,
    key: Option<&Key>,
    paid: usize,
    target: Target<'_>,
    payload: web::Payload,
    state: &web::Data<AppState>,
) -> Result<Vec<u8>, ApiError> {
    let state = &**state;
    let (encoding, mut reservation, raw) =
        read_body(req, payload, state, target.lane.ingest.as_ref()).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let sent_bytes = raw.len();
    let work = Work {
        inline: encoding == Encoding::Identity && raw.len() <= INLINE_MAX_BYTES,
        raw,
        encoding,
        format: Format::from_content_type(content_type),
        body_max_bytes: state.body_max_bytes,
        max_events: state.max_events,
        sent_at_header: req
            .headers()
            .get(X_SENT_AT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        server_time: OffsetDateTime::now_utc(),
        ip: client::client_ip(req, &state.trusted_proxies),
        // Only for a table that keeps it: bounded, and copied once per request.
        user_agent: match target.columns.schema().uses_user_agent() {
            true => req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .map(|v| crate::table::bounded_user_agent(&v).to_string()),
            false => None,
        },
        columns: target.columns,
    };
    let (mut validated, again) = if work.inline {
        work.run(&mut reservation)?
    } else {
        // The reservation ends with the work: what is left are the encoded rows.
        state.cpu.run(move || work.run(&mut reservation)).await??
    };
    // Fields that get columns (`add_columns`): the body is read again once the table has
    // them, so no event loses its field.
    if let Some(Again { mut work, body }) = again {
        let wanted = std::mem::take(&mut validated.wanted);
        let names: Vec<String> = wanted.iter().map(|c| c.name.clone()).collect();
        target.lane.columns.add_columns(wanted).await?;
        work.columns = Target::of(state, Some(&target.lane.name))?.columns;
        validated = work.read(&body)?;
        if !validated.wanted.is_empty() {
            return Err(ApiError::Unavailable {
                reason: format!("columns for {} are being added; retry", names.join(", ")),
                retry_after: Duration::from_secs(1),
            });
        }
    }
    let accepted = validated.rows.len();
    if let Some(key) = &key {
        // Every event of the request counts, rejected ones too: they cost the same to read.
        let events = accepted + validated.rejected;
        if let Err(limited) = key.take(events, sent_bytes, paid) {
            key.record(0, 0, events);
            return Err(ApiError::RateLimited(limited));
        }
        key.record(accepted, validated.rejected, 0);
    }
    if accepted > 0 {
        target.lane.ingest.submit(validated.rows).await?;
    }
    // Every table's figures under its name; the events table's also under the earlier,
    // unlabelled names.
    if target.lane.events {
        state.stats.record_request(accepted, &validated.reasons);
    }
    target
        .lane
        .stats
        .record_request(accepted, validated.rejected, validated.unknown_fields);
    serde_json::to_vec(&Accepted {
        accepted,
        rejected: validated.rejected,
        errors: validated.errors,
    })
    .map_err(|_| ApiError::Internal("the answer could not be written"))
}

/// `Idempotency-Key`, a name built once: looking a header up by a `&str` that is not one of
/// the standard names allocates that name for each request.
const IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");
/// `X-Sent-At` (see [`IDEMPOTENCY_KEY`]).
const X_SENT_AT: header::HeaderName = header::HeaderName::from_static("x-sent-at");

/// Bodies up to this size, uncompressed, are decoded on the worker: the hop to the CPU
/// pool would cost more than the work (a typical request is a few kilobytes).
const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Reads a request's body (within the in-flight budget and the client timeout) for
/// `ingest`, and refuses it before the costly part (decoding, validating, encoding) when
/// `ingest` cannot take that much now, as its append would after it. What every ingest
/// route does first, once the client is allowed in.
async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    state: &AppState,
    ingest: &dyn Ingest,
) -> Result<(Encoding, Reservation, Vec<u8>), ApiError> {
    let encoding = Encoding::of(req)?;
    let mut reservation = state.inflight.reservation();
    let raw = body::read(
        req,
        payload,
        state.body_max_bytes,
        state.client_timeout,
        &state.stats.bytes_received,
        &mut reservation,
    )
    .await?;
    ingest.room_before_decoding(raw.len()).await?;
    Ok((encoding, reservation, raw))
}

/// Everything between receiving a body and handing its rows over, owned, so it can run on
/// the CPU pool.
struct Work {
    inline: bool,
    raw: Vec<u8>,
    encoding: Encoding,
    format: Format,
    body_max_bytes: usize,
    max_events: usize,
    sent_at_header: Option<String>,
    server_time: OffsetDateTime,
    ip: std::net::Ipv6Addr,
    /// The request's `User-Agent`, for a table with columns for it.
    user_agent: Option<String>,
    columns: Arc<dyn ColumnList>,
}

/// A body to read again once the table has the columns its fields asked for.
struct Again {
    work: Work,
    body: Vec<u8>,
}

impl Work {
    /// Decompresses, decodes and validates; with the body, when its fields asked for
    /// columns (`add_columns`).
    fn run(
        mut self,
        reservation: &mut Reservation,
    ) -> Result<(TableValidated, Option<Again>), ApiError> {
        let raw = std::mem::take(&mut self.raw);
        let body = body::decode(raw, self.encoding, self.body_max_bytes, reservation)?;
        let validated = self.read(&body)?;
        let again = match validated.wanted.is_empty() {
            true => None,
            false => Some(Again { body, work: self }),
        };
        Ok((validated, again))
    }

    /// Validates a decompressed body.
    fn read(&self, body: &[u8]) -> Result<TableValidated, ApiError> {
        read_events(
            self.columns.schema(),
            self.columns.tag(),
            body,
            self.format,
            self.max_events,
            self.sent_at_header.as_deref(),
            self.server_time,
            self.ip,
            self.user_agent.as_deref(),
        )
    }
}

/// What an ingest route makes of a body once it is decompressed: the rows of its valid
/// events (each starting with `tag`) and why the others were rejected, or why the body as a
/// whole was refused. The whole contract of the route's answer, pinned for the events table
/// by the oracle test (`routes::oracle`).
#[allow(clippy::too_many_arguments)]
pub(super) fn read_events(
    schema: &TableSchema,
    tag: &[u8],
    body: &[u8],
    format: Format,
    max_events: usize,
    sent_at_header: Option<&str>,
    server_time: OffsetDateTime,
    ip: std::net::Ipv6Addr,
    user_agent: Option<&str>,
) -> Result<TableValidated, ApiError> {
    let facts = RequestFacts {
        user_agent,
        server_time_nanos: server_time.unix_timestamp_nanos(),
        ip,
        sent_at: None,
    };
    schema.validate_body(body, format, max_events, facts, tag, |envelope| {
        sent_at(sent_at_header, envelope)
    })
}

/// When the client says it sent the request: the envelope's `sent_at`, else the
/// `X-Sent-At` header. A value that is there but unreadable refuses the request (`400`),
/// since every event's corrected time would depend on it.
fn sent_at(header: Option<&str>, envelope: Option<Loose<'_>>) -> Result<Option<i64>, ApiError> {
    let text = match envelope {
        Some(Loose::Str(s)) => Some(s),
        Some(_) => return Err(ApiError::BadSentAt("expected a string".into())),
        None => header.map(Into::into),
    };
    text.map(|t| parse_time(&t).map_err(|e| ApiError::BadSentAt(e.into())))
        .transpose()
}

/// For a request with `Expect: 100-continue`, before the client is told to send its body:
/// what [`post_events`] would refuse without reading the body (no key, an unsupported
/// encoding, a stated length over `BODY_MAX_BYTES`, a spent in-flight budget) is answered
/// with that status at once, instead of `100 Continue` followed by the refusal.
pub fn precheck(
    state: &AppState,
    method: &actix_web::http::Method,
    uri: &actix_web::http::Uri,
    headers: &header::HeaderMap,
) -> Result<(), ApiError> {
    if super::class_of(uri.path()) != super::Class::Ingest
        || method != actix_web::http::Method::POST
    {
        return Ok(());
    }
    state
        .keys
        .keys()
        .ingest_key(headers, uri.query().unwrap_or(""))?;
    Encoding::of_headers(headers)?;
    let length = content_length(headers).unwrap_or(0);
    if length > state.body_max_bytes {
        return Err(ApiError::TooLarge {
            limit: state.body_max_bytes,
        });
    }
    if !state.inflight.would_fit(length) {
        return Err(ApiError::busy());
    }
    Ok(())
}

/// The request's `Content-Length`, if it gives one.
fn content_length(headers: &actix_web::http::header::HeaderMap) -> Option<usize> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
}
