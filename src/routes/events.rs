//! `POST /v1/events`: read the body, decode, validate, hand the valid rows to ingest.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::openapi::{ErrorBody, EventIn};
use super::{ApiError, AppState, body, client};
use crate::event::{FieldError, Format, Loose, decode_batch, parse_time, validate_batch};

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
    let body = body::read(
        &req,
        payload,
        state.body_max_bytes,
        state.client_timeout,
        &state.stats.bytes_received,
    )
    .await?;
    let server_time = OffsetDateTime::now_utc();
    let ip = client::client_ip(&req, &state.trusted_proxies);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(content_type);
    let decoded = decode_batch(&body, format, state.max_events)?;
    let sent_at = sent_at(&req, decoded.sent_at)?;
    let validated = validate_batch(decoded.events, server_time, ip, sent_at);
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

/// When the client says it sent the request: the envelope's `sent_at`, else the
/// `X-Sent-At` header. A value that is there but unreadable refuses the request (`400`),
/// since every event's corrected time would depend on it.
fn sent_at(req: &HttpRequest, envelope: Option<Loose<'_>>) -> Result<Option<i64>, ApiError> {
    let text = match envelope {
        Some(Loose::Str(s)) => Some(s),
        Some(_) => return Err(ApiError::BadSentAt("expected a string".into())),
        None => req
            .headers()
            .get("x-sent-at")
            .map(|v| v.to_str().unwrap_or("").to_string().into()),
    };
    text.map(|t| parse_time(&t).map_err(|e| ApiError::BadSentAt(e.into())))
        .transpose()
}
