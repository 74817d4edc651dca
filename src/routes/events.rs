//! `POST /v1/events`: read the body, decode, validate, hand the valid rows to ingest. The
//! events table is one instance of the generic path (`crate::schema`): its schema with the
//! rules `/v1/events` has always applied (`schema::rules::events`).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::body::Encoding;
use super::inflight::Reservation;
use super::openapi::{ErrorBody, EventIn};
use super::{ApiError, AppState, body, client};
use std::sync::LazyLock;

use crate::event::{FieldError, Format, Loose, parse_time};
use crate::ingest::Ingest;
use crate::schema::{RequestFacts, SchemaError, TableSchema, TableValidated};

/// The events table's schema with its rules: fixed in the code, built once.
static EVENTS: LazyLock<Result<TableSchema, SchemaError>> = LazyLock::new(TableSchema::events);

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

impl Accepted {
    /// The answer for `accepted` rows kept and `rejected` events with `errors`.
    pub(super) fn new(accepted: usize, rejected: usize, errors: Vec<FieldError>) -> Self {
        Self {
            accepted,
            rejected,
            errors,
        }
    }
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
        (status = 401, description = "Missing or wrong API key (when INGEST_API_KEYS is set)", body = ErrorBody),
        (status = 413, description = "Body or event count over the limits", body = ErrorBody),
        (status = 415, description = "Unsupported Content-Encoding", body = ErrorBody),
        (status = 503, description = "Buffer full or shutting down; retry after Retry-After seconds", body = ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key" = []))
)]
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Before reading a byte of the body: an unauthenticated client costs nothing more.
    if !state.api_keys.allows(&req) {
        return Err(ApiError::Unauthorized);
    }
    let (encoding, mut reservation, raw) =
        read_body(&req, payload, &state, state.ingest.as_ref()).await?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let work = Work {
        inline: encoding == Encoding::Identity && raw.len() <= INLINE_MAX_BYTES,
        raw,
        encoding,
        format: Format::from_content_type(content_type),
        body_max_bytes: state.body_max_bytes,
        max_events: state.max_events,
        sent_at_header: req
            .headers()
            .get("x-sent-at")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
        server_time: OffsetDateTime::now_utc(),
        ip: client::client_ip(&req, &state.trusted_proxies),
    };
    let validated = if work.inline {
        work.run(&mut reservation)?
    } else {
        // The reservation ends with the work: what is left are the encoded rows.
        state.cpu.run(move || work.run(&mut reservation)).await??
    };
    let accepted = validated.rows.len();
    if accepted > 0 {
        state.ingest.submit(validated.rows).await?;
    }
    state.stats.record_request(accepted, &validated.reasons);
    Ok(HttpResponse::Ok().json(Accepted {
        accepted,
        rejected: validated.rejected,
        errors: validated.errors,
    }))
}

/// Bodies up to this size, uncompressed, are decoded on the worker: the hop to the CPU
/// pool would cost more than the work (a typical request is a few kilobytes).
pub(super) const INLINE_MAX_BYTES: usize = 64 * 1024;

/// Reads a request's body (within the in-flight budget and the client timeout) for
/// `ingest`, and refuses it before the costly part (decoding, validating, encoding) when
/// `ingest` cannot take that much now, as its append would after it. What every ingest
/// route does first, once the client is allowed in.
pub(super) async fn read_body(
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
}

impl Work {
    /// Decompresses, decodes and validates.
    fn run(self, reservation: &mut Reservation) -> Result<TableValidated, ApiError> {
        let body = body::decode(self.raw, self.encoding, self.body_max_bytes, reservation)?;
        let schema = EVENTS
            .as_ref()
            .map_err(|_| ApiError::Internal("the events table's schema"))?;
        read_events(
            schema,
            &body,
            self.format,
            self.max_events,
            self.sent_at_header,
            self.server_time,
            self.ip,
        )
    }
}

/// What `/v1/events` makes of a body once it is decompressed: the rows of its valid events
/// and why the others were rejected, or why the body as a whole was refused. The whole
/// contract of the route's answer, pinned by the oracle test (`routes::oracle`).
pub(super) fn read_events(
    schema: &TableSchema,
    body: &[u8],
    format: Format,
    max_events: usize,
    sent_at_header: Option<String>,
    server_time: OffsetDateTime,
    ip: std::net::Ipv6Addr,
) -> Result<TableValidated, ApiError> {
    let facts = RequestFacts {
        server_time_nanos: server_time.unix_timestamp_nanos(),
        ip,
        sent_at: None,
    };
    schema.validate_body(body, format, max_events, facts, &[], |envelope| {
        sent_at(sent_at_header.as_deref(), envelope)
    })
}

/// When the client says it sent the request: the envelope's `sent_at`, else the
/// `X-Sent-At` header. A value that is there but unreadable refuses the request (`400`),
/// since every event's corrected time would depend on it.
pub(super) fn sent_at(
    header: Option<&str>,
    envelope: Option<Loose<'_>>,
) -> Result<Option<i64>, ApiError> {
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
    path: &str,
    headers: &header::HeaderMap,
) -> Result<(), ApiError> {
    if super::class_of(path) != super::Class::Ingest || method != actix_web::http::Method::POST {
        return Ok(());
    }
    if !state.api_keys.allows_headers(headers) {
        return Err(ApiError::Unauthorized);
    }
    Encoding::of_headers(headers)?;
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
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
