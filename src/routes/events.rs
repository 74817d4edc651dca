//! `POST /v1/events`: read the body, decode, validate, hand the valid rows to ingest.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use serde::Serialize;
use time::OffsetDateTime;

use super::{ApiError, AppState};
use crate::event::{FieldError, decode_batch, validate_batch};

/// The `200` answer: how many events were taken and why the others were not.
#[derive(Serialize)]
struct Accepted {
    accepted: usize,
    rejected: usize,
    errors: Vec<FieldError>,
}

/// Accepts a JSON array of events. Valid events are kept even when others are rejected;
/// `200` means buffered (`double` mode) or committed (`direct` mode).
pub async fn post_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let expected = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    let body = read_body(payload, expected, state.body_max_bytes).await?;
    let server_time = OffsetDateTime::now_utc();
    let ip = client_ip(&req);
    let validated = validate_batch(decode_batch(&body)?, server_time, ip);
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

/// Reads the body up to `limit` bytes; stops reading (and answers `413`) past it, so a
/// huge body never sits in memory whole. `expected` (the `Content-Length`, if any) sizes
/// the buffer once, so a typical body is read without reallocating.
async fn read_body(
    mut payload: web::Payload,
    expected: usize,
    limit: usize,
) -> Result<web::BytesMut, ApiError> {
    if expected > limit {
        return Err(ApiError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(expected);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
