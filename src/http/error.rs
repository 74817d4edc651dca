//! Handler errors and the one place they become HTTP status codes and JSON bodies.

use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::lane::ingest::SubmitError;
use crate::table::event::DecodeError;

/// Everything a handler can fail with. Every variant answers `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a JSON array of objects (`400`).
    #[error(transparent)]
    BadBody(#[from] DecodeError),
    /// `sent_at` (envelope field or `X-Sent-At`) is not a time (`400`).
    #[error("sent_at: {0}")]
    BadSentAt(String),
    /// The body could not be read (`400`).
    #[error("could not read the request body: {0}")]
    Payload(String),
    /// The body is larger than `BODY_MAX_BYTES` (`413`).
    #[error("request body larger than {limit} bytes")]
    TooLarge {
        /// `BODY_MAX_BYTES`.
        limit: usize,
    },
    /// The events are more than the buffer may hold at all, or more than
    /// `MAX_EVENTS_PER_REQUEST` (`413`).
    #[error("{0}")]
    TooManyEvents(String),
    /// A `Content-Encoding` other than gzip, zstd or identity (`415`).
    #[error("unsupported Content-Encoding {0:?}; use gzip, zstd or none")]
    UnsupportedEncoding(String),
    /// The buffer is full or shutdown has begun (`503` with `Retry-After`).
    #[error("{reason}")]
    Unavailable {
        /// Why, for the client.
        reason: String,
        /// When to try again.
        retry_after: Duration,
    },
    /// ClickHouse refused the rows as data (`500`): a schema problem on our side, not the
    /// client's.
    #[error("storage rejected the events: {0}")]
    Storage(String),
    /// The body did not arrive within `CLIENT_TIMEOUT_MS` (`408`).
    #[error("request body not received within {0:?}")]
    Timeout(std::time::Duration),
    /// No or wrong API key (`401`).
    #[error("missing or invalid API key: send Authorization: Bearer <key> or X-Api-Key")]
    Unauthorized,
    /// A bug or a lost worker thread (`500`); the text says which, never client input.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// The route exists but is closed here (`403`); the text says how to open it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The key may not do this: another table, another page origin, an admin key posting,
    /// a key that may not travel in the URL (`403`); the text names the key, not its secret.
    #[error("{0}")]
    KeyRefused(String),
    /// A request with the same `Idempotency-Key` is being processed (`409`).
    #[error("a request with this Idempotency-Key is being processed; retry shortly")]
    IdempotencyInProgress,
    /// The `Idempotency-Key` is longer than 255 bytes or not text (`400`).
    #[error("Idempotency-Key must be text of at most 255 bytes")]
    BadIdempotencyKey,
    /// The key is over its rate (`429` with `Retry-After` and the `RateLimit` headers).
    #[error("key over its rate of {} events per second (burst {}); retry after {:?}", .0.per_second, .0.burst, .0.retry_after)]
    RateLimited(super::keys::Limited),
    /// No such path (`404`).
    #[error("not found")]
    NotFound,
    /// `POST /v1/tables/{table}` for a table not in `INGEST_TABLES`.
    #[error("table \"{0}\" is not one clients may write to (INGEST_TABLES)")]
    UnknownTable(String),
    /// The path exists, the method does not (`405`).
    #[error("method not allowed; allowed: {allow}")]
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: &'static str,
    },
}

impl ApiError {
    /// `503`: the in-flight body budget (`INFLIGHT_BODY_MAX_BYTES`) is spent.
    pub fn busy() -> Self {
        ApiError::Unavailable {
            reason: "too many request bodies in progress; retry shortly".into(),
            retry_after: Duration::from_secs(1),
        }
    }

    /// A `405` naming the allowed method; a helper for routes' default services.
    pub fn method_not_allowed(allow: &'static str) -> Result<HttpResponse, ApiError> {
        Err(ApiError::MethodNotAllowed { allow })
    }
}

impl From<crate::table::NotAdded> for ApiError {
    fn from(e: crate::table::NotAdded) -> Self {
        let retry_after = match &e {
            crate::table::NotAdded::Later { secs, .. } => Duration::from_secs(*secs),
            crate::table::NotAdded::Failed(_) => Duration::from_secs(5),
        };
        ApiError::Unavailable {
            reason: e.to_string(),
            retry_after,
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Unavailable {
                reason,
                retry_after,
            } => ApiError::Unavailable {
                reason,
                retry_after,
            },
            SubmitError::TooLarge(reason) => ApiError::TooManyEvents(reason),
            SubmitError::ShuttingDown => ApiError::Unavailable {
                reason: "shutting down".into(),
                retry_after: Duration::from_secs(1),
            },
            SubmitError::Rejected(e) => ApiError::Storage(e),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadBody(DecodeError::TooManyEvents { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadBody(_)
            | ApiError::Payload(_)
            | ApiError::BadSentAt(_)
            | ApiError::BadIdempotencyKey => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyInProgress => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } | ApiError::TooManyEvents(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Storage(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::KeyRefused(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound | ApiError::UnknownTable(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Unavailable { retry_after, .. } => {
                response.insert_header((header::RETRY_AFTER, retry_after.as_secs().max(1)));
            }
            ApiError::MethodNotAllowed { allow } => {
                response.insert_header((header::ALLOW, *allow));
            }
            ApiError::Unauthorized => {
                response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::RateLimited(limited) => {
                // Whole seconds, rounded up: a client waiting this long finds room.
                let wait = limited.retry_after.as_secs()
                    + u64::from(limited.retry_after.subsec_nanos() > 0);
                let wait = wait.max(1);
                response.insert_header((header::RETRY_AFTER, wait));
                // The IETF draft's fields: the policy (burst over the window it refills in)
                // and what is left now.
                let window = (limited.burst / limited.per_second.max(1)).max(1);
                response
                    .insert_header(("ratelimit-policy", format!("{};w={window}", limited.burst)));
                response.insert_header((
                    "ratelimit",
                    format!("limit={}, remaining=0, reset={wait}", limited.burst),
                ));
            }
            _ => {}
        }
        response.json(json!({ "error": self.to_string() }))
    }
}
