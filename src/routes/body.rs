//! Request bodies: read with a size cap, then decoded per `Content-Encoding` (gzip, zstd)
//! with the same cap on the decompressed size, so a small compressed bomb is refused
//! (`413`) after reading at most the cap, never expanded into memory whole.

use std::io::Read;

use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::StreamExt;

use super::ApiError;

/// Reads and decodes the body of `req`; `limit` bounds both the bytes received and the
/// bytes after decompression (`BODY_MAX_BYTES`), `timeout` the time to receive it (a
/// slow-drip client gets `408`). Counts the bytes received in `received`.
pub async fn read(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: std::time::Duration,
    received: &prometheus::IntCounter,
) -> Result<Vec<u8>, ApiError> {
    let raw = tokio::time::timeout(timeout, read_raw(req, payload, limit))
        .await
        .map_err(|_| ApiError::Timeout(timeout))??;
    received.inc_by(raw.len() as u64);
    let encoding = req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(raw),
        // Multi: a body may be several gzip members back to back (concatenated files).
        Some("gzip" | "x-gzip") => {
            decompress(flate2::read::MultiGzDecoder::new(&raw[..]), limit, "gzip")
        }
        Some("zstd") => {
            let invalid = |e: std::io::Error| ApiError::Payload(format!("invalid zstd body: {e}"));
            let mut decoder = zstd::stream::read::Decoder::new(&raw[..]).map_err(invalid)?;
            // A frame may ask for a window of up to 128 MiB; allow no more than the limit
            // needs, so a tiny body cannot make the decoder allocate far past it.
            decoder.window_log_max(window_log(limit)).map_err(invalid)?;
            decompress(decoder, limit, "zstd")
        }
        Some(other) => Err(ApiError::UnsupportedEncoding(other.to_string())),
    }
}

/// Reads the body as sent, up to `limit` bytes; stops reading (and answers `413`) past
/// it. The `Content-Length`, if any, sizes the buffer once.
async fn read_raw(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let expected = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .unwrap_or(0);
    if expected > limit {
        return Err(ApiError::TooLarge { limit });
    }
    // The claimed length sizes the buffer, but only up to 256 KiB before bytes arrive:
    // idle connections claiming 10 MiB each must not reserve it.
    let mut body = Vec::with_capacity(expected.min(256 * 1024));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Payload(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The smallest zstd window (log2, within zstd's 10..=31) that covers `limit` bytes.
fn window_log(limit: usize) -> u32 {
    (usize::BITS - limit.max(1).leading_zeros()).clamp(10, 31)
}

/// Decompresses at most `limit` bytes; one byte more means the body is too large.
fn decompress(decoder: impl Read, limit: usize, name: &str) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::new();
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::Payload(format!("invalid {name} body: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_bodies_decode_within_the_limit() {
        let data = b"[{\"event\": \"x\"}]".repeat(10);
        let out = decompress(flate2::read::GzDecoder::new(&gzip(&data)[..]), 1024, "gzip");
        assert_eq!(out.unwrap(), data);
        let z = zstd::encode_all(&data[..], 3).unwrap();
        let decoder = zstd::stream::read::Decoder::new(&z[..]).unwrap();
        assert_eq!(decompress(decoder, 1024, "zstd").unwrap(), data);
    }

    #[test]
    fn a_bomb_is_too_large_not_out_of_memory() {
        let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
        assert!(bomb.len() < 100 * 1024, "{}", bomb.len());
        let result = decompress(flate2::read::GzDecoder::new(&bomb[..]), 1024 * 1024, "gzip");
        assert!(matches!(result, Err(ApiError::TooLarge { .. })));
    }

    #[test]
    fn concatenated_gzip_members_all_decode() {
        let mut two = gzip(b"[1,");
        two.extend(gzip(b"2]"));
        let out = decompress(flate2::read::MultiGzDecoder::new(&two[..]), 1024, "gzip");
        assert_eq!(out.unwrap(), b"[1,2]");
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let result = decompress(flate2::read::GzDecoder::new(&b"not gzip"[..]), 1024, "gzip");
        assert!(matches!(result, Err(ApiError::Payload(_))));
    }
}
