//! Request bodies: read with a size cap and within the in-flight budget, then decoded per
//! `Content-Encoding` (gzip, zstd) with the same cap on the decompressed size, so a small
//! compressed bomb is refused (`413`) after reading at most the cap, never expanded into
//! memory whole. Reading is async (on the actix worker); decompression is [`decode`], a
//! plain function the handler runs on the bounded CPU pool for all but small bodies.

use std::io::Read;

use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use super::ApiError;
use super::inflight::Reservation;
use crate::table::event::excerpt;

/// Most gzip members or zstd frames in one body. Concatenated files are a few; a body of
/// half a million empty members once cost 1.7 s of CPU to decode nothing.
pub const MAX_MEMBERS: usize = 100;

/// Decompressed output is reserved from the in-flight budget in steps of this size.
const RESERVE_STEP: usize = 1 << 20;

/// How the body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// None (`identity`, or no header).
    Identity,
    /// `gzip` (or `x-gzip`), possibly several members back to back.
    Gzip,
    /// `zstd`, possibly several frames back to back.
    Zstd,
}

impl Encoding {
    /// From the request's header; `415` for anything else, before the body is read.
    pub fn of(req: &HttpRequest) -> Result<Self, ApiError> {
        Self::of_headers(req.headers())
    }

    /// [`Encoding::of`] from the headers alone.
    pub fn of_headers(headers: &header::HeaderMap) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::CONTENT_ENCODING) else {
            return Ok(Encoding::Identity);
        };
        let value = String::from_utf8_lossy(value.as_bytes())
            .trim()
            .to_ascii_lowercase();
        match value.as_str() {
            "" | "identity" => Ok(Encoding::Identity),
            "gzip" | "x-gzip" => Ok(Encoding::Gzip),
            "zstd" => Ok(Encoding::Zstd),
            other => Err(ApiError::UnsupportedEncoding(excerpt(other))),
        }
    }
}

/// Reads the body as sent, up to `limit` bytes, within `timeout` (a slow-drip client gets
/// `408`), reserving its bytes in `reservation` (`503` when the in-flight budget is spent:
/// at once for a stated `Content-Length`, else when a chunk crosses it). Counts the bytes
/// received in `received`.
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
    received: &prometheus::IntCounter,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    // Its bytes are read as they are taken, not held back as pipelined requests are.
    let _reading = req
        .conn_data::<std::sync::Arc<super::connection::Pacing>>()
        .map(|pacing| pacing.reading_body());
    let raw = tokio::time::timeout(timeout, read_raw(req, payload, limit, reservation))
        .await
        .map_err(|_| ApiError::Timeout(timeout))??;
    received.inc_by(raw.len() as u64);
    Ok(raw)
}

/// Reads the body as sent, up to `limit` bytes; stops reading (and answers `413`) past
/// it. The `Content-Length`, if any, is reserved at once and sizes the buffer.
async fn read_raw(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    let expected = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    if expected > limit {
        return Err(ApiError::TooLarge { limit });
    }
    if !reservation.grow(expected) {
        return Err(ApiError::busy());
    }
    // The claimed length sizes the buffer, but only up to 256 KiB before bytes arrive:
    // idle connections claiming 10 MiB each must not reserve it.
    let mut body = Vec::with_capacity(expected.min(256 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(payload_error)?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        // A body longer than it said, or without a length: reserve as it comes.
        let beyond = (body.len() + chunk.len()).saturating_sub(reservation.bytes());
        if beyond > 0 && !reservation.grow(beyond) {
            return Err(ApiError::busy());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a client sees when its body could not be received.
fn payload_error(e: PayloadError) -> ApiError {
    ApiError::Payload(match e {
        PayloadError::Incomplete(_) => {
            "the body ended before it was complete (connection closed, or malformed chunked \
             encoding)"
                .into()
        }
        PayloadError::EncodingCorrupted => "the body's transfer encoding is corrupted".into(),
        PayloadError::Overflow => "the body is larger than allowed".into(),
        PayloadError::UnknownLength => "the body's length is unknown".into(),
        other => crate::table::event::shorten(&other.to_string()),
    })
}

/// Decompresses `raw` per `encoding`, at most `limit` bytes, each megabyte of output
/// reserved in the in-flight budget. CPU-bound: the handler runs it off the actix workers
/// for large or compressed bodies.
pub fn decode(
    raw: Vec<u8>,
    encoding: Encoding,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    // Output bytes already reserved, across members.
    let mut reserved = 0;
    let mut input = &raw[..];
    match encoding {
        Encoding::Identity => return Ok(raw),
        // A body may be several gzip members back to back (concatenated files).
        Encoding::Gzip => members(&mut input, "gzip", |input| {
            let decoder = flate2::bufread::GzDecoder::new(input);
            decompress(
                decoder,
                limit,
                "gzip",
                &mut out,
                (reservation, &mut reserved),
            )
        })?,
        Encoding::Zstd => members(&mut input, "zstd", |input| {
            let invalid = |e: std::io::Error| ApiError::Payload(format!("invalid zstd body: {e}"));
            let mut decoder = zstd::stream::read::Decoder::with_buffer(input)
                .map_err(invalid)?
                .single_frame();
            // A frame may ask for a window of up to 128 MiB; allow no more than the limit
            // needs, so a tiny body cannot make the decoder allocate far past it.
            decoder.window_log_max(window_log(limit)).map_err(invalid)?;
            decompress(
                decoder,
                limit,
                "zstd",
                &mut out,
                (reservation, &mut reserved),
            )
        })?,
    }
    Ok(out)
}

/// Runs `one` for each member (or frame) of `input`, at most [`MAX_MEMBERS`] of them; each
/// call consumes one member from the front of `input`.
fn members<'a>(
    input: &mut &'a [u8],
    name: &str,
    mut one: impl FnMut(&mut &'a [u8]) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    for _ in 0..MAX_MEMBERS {
        one(input)?;
        if input.is_empty() {
            return Ok(());
        }
    }
    Err(ApiError::Payload(format!(
        "more than {MAX_MEMBERS} {name} members in one body"
    )))
}

/// The smallest zstd window (log2, within zstd's 10..=31) that covers `limit` bytes.
fn window_log(limit: usize) -> u32 {
    (usize::BITS - limit.max(1).leading_zeros()).clamp(10, 31)
}

/// Decompresses into `out` until it holds at most `limit` bytes; one byte more means the
/// body is too large. Output is reserved in [`RESERVE_STEP`]s (`503` when the budget is
/// spent).
fn decompress(
    decoder: impl Read,
    limit: usize,
    name: &str,
    out: &mut Vec<u8>,
    (reservation, reserved_until): (&mut Reservation, &mut usize),
) -> Result<(), ApiError> {
    let mut decoder = decoder.take((limit + 1 - out.len().min(limit)) as u64);
    loop {
        if out.len() >= *reserved_until {
            if !reservation.grow(RESERVE_STEP) {
                return Err(ApiError::busy());
            }
            *reserved_until += RESERVE_STEP;
        }
        let room = *reserved_until - out.len();
        let before = out.len();
        let read = (&mut decoder)
            .take(room as u64)
            .read_to_end(out)
            .map_err(|e| ApiError::Payload(format!("invalid {name} body: {e}")))?;
        if out.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        if read == 0 || out.len() - before < room {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::inflight::InflightBudget;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn unpack(raw: Vec<u8>, encoding: Encoding, limit: usize) -> Result<Vec<u8>, ApiError> {
        let budget = InflightBudget::new(64 << 20);
        let mut reservation = budget.reservation();
        let out = decode(raw, encoding, limit, &mut reservation);
        drop(reservation);
        assert_eq!(budget.used(), 0);
        out
    }

    #[test]
    fn compressed_bodies_decode_within_the_limit() {
        let data = b"[{\"event\": \"x\"}]".repeat(10);
        assert_eq!(unpack(gzip(&data), Encoding::Gzip, 1024).unwrap(), data);
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert_eq!(unpack(z, Encoding::Zstd, 1024).unwrap(), data);
    }

    #[test]
    fn a_bomb_is_too_large_not_out_of_memory() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let result = unpack(bomb, Encoding::Gzip, 1024 * 1024);
        assert!(matches!(result, Err(ApiError::TooLarge { .. })));
    }

    #[test]
    fn concatenated_members_and_frames_all_decode() {
        let mut two = gzip(b"[1,");
        two.extend(gzip(b"2]"));
        assert_eq!(unpack(two, Encoding::Gzip, 1024).unwrap(), b"[1,2]");
        let mut two = zstd::encode_all(&b"[1,"[..], 3).unwrap();
        two.extend(zstd::encode_all(&b"2]"[..], 3).unwrap());
        assert_eq!(unpack(two, Encoding::Zstd, 1024).unwrap(), b"[1,2]");
    }

    #[test]
    fn many_empty_members_are_refused_early() {
        let empty = gzip(b"");
        let mut body = empty.repeat(MAX_MEMBERS - 1);
        body.extend(gzip(b"[]"));
        assert_eq!(unpack(body, Encoding::Gzip, 1024).unwrap(), b"[]");
        let body = empty.repeat(500_000);
        assert!(matches!(
            unpack(body, Encoding::Gzip, 1 << 20),
            Err(ApiError::Payload(e)) if e.contains("members")
        ));
        let frame = zstd::encode_all(&b""[..], 3).unwrap();
        assert!(matches!(
            unpack(frame.repeat(MAX_MEMBERS + 1), Encoding::Zstd, 1024),
            Err(ApiError::Payload(_))
        ));
    }

    #[test]
    fn decompressed_output_counts_against_the_budget() {
        let budget = InflightBudget::new(2 << 20);
        let mut other = budget.reservation();
        assert!(other.grow(1 << 20));
        let mut mine = budget.reservation();
        let big = gzip(&vec![b' '; 3 << 20]);
        let result = decode(big, Encoding::Gzip, 8 << 20, &mut mine);
        assert!(matches!(result, Err(ApiError::Unavailable { .. })));
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let result = unpack(b"not gzip".to_vec(), Encoding::Gzip, 1024);
        assert!(matches!(result, Err(ApiError::Payload(_))));
    }
}
