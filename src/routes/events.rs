//! `POST /v1/events`: read the body, decode, validate, hand the valid rows to ingest.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use time::OffsetDateTime;

use super::{ApiError, AppState, body};
use crate::event::{FieldError, Format, decode_batch, validate_batch};

/// The `200` answer: how many events were taken and why the others were not.
#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    rejected: usize,
    errors: Vec<FieldError>,
}

/// Accepts events as a JSON array, one JSON object, or NDJSON (by `Content-Type`),
/// optionally gzip- or zstd-compressed (by `Content-Encoding`). Valid events are kept even
/// when others are rejected; `200` means buffered (`double` mode) or committed (`direct`).
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = body::read(&req, payload, state.body_max_bytes).await?;
    let server_time = OffsetDateTime::now_utc();
    let ip = client_ip(&req);
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let candidates = decode_batch(&body, Format::from_content_type(content_type))?;
    if candidates.len() > state.max_events {
        return Err(ApiError::TooManyEvents(format!(
            "{} events in one request; MAX_EVENTS_PER_REQUEST is {}",
            candidates.len(),
            state.max_events
        )));
    }
    let validated = validate_batch(candidates, server_time, ip);
    let accepted = validated.rows.len();
    if accepted > 0 {
        state.ingest.submit(validated.rows).await?;
    }
    state.stats.record_request(accepted, validated.rejected);
    Ok(HttpResponse::Ok().json(Accepted {
        accepted,
        rejected: validated.rejected,
        errors: validated.errors,
    }))
}

/// The peer's address as IPv6 (IPv4 mapped). Forwarded headers are not trusted here:
/// without a configured list of trusted proxies any client could forge them.
fn client_ip(req: &HttpRequest) -> Ipv6Addr {
    match req.peer_addr().map(|a| a.ip()) {
        Some(IpAddr::V4(v4)) => v4.to_ipv6_mapped(),
        Some(IpAddr::V6(v6)) => v6,
        None => Ipv6Addr::UNSPECIFIED,
    }
}
