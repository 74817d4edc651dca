//! Sink errors, classified the way a retry loop needs them: try again later, or never.

use std::time::Duration;

/// A failed write or query against the sink.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SinkError {
    /// The server could not be reached or answered with a transient failure (connection
    /// refused or reset, timeout, overload, too many parts, memory limit, missing table that
    /// will be recreated). The same batch will succeed later: retry with backoff.
    #[error("ClickHouse unavailable: {0}")]
    Retryable(String),
    /// The server rejected the data itself (cannot parse, type mismatch, value out of
    /// range). Sending it again cannot succeed: do not retry.
    #[error("ClickHouse rejected the data: {0}")]
    Data(String),
}

/// ClickHouse error codes that mean "these rows are wrong", as Vector's ClickHouse sink
/// classifies them: retrying the same bytes gives the same answer. Errors about the table
/// rather than the rows (a missing column, a syntax error, our row type not matching the
/// schema) are deliberately absent: they hit every row, so they are retried (and push back
/// with `503`) until an operator fixes the table, instead of dropping everything.
const DATA_ERROR_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    32,  // ATTEMPT_TO_READ_AFTER_EOF
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    53,  // TYPE_MISMATCH
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    153, // ILLEGAL_DIVISION (a derived column divides by a row's zero)
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    // What servers since 19.x answer for a row that a table's own rules refuse: a CHECK
    // constraint, throwIf() in a derived column, a derived UUID or address from a bad string.
    376, // CANNOT_PARSE_UUID
    395, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469, // VIOLATED_CONSTRAINT
    675, // CANNOT_PARSE_IPV4
    676, // CANNOT_PARSE_IPV6
];

/// Codes that describe the server's or the table's state rather than the rows: a retry of
/// the same rows succeeds once that state passes (or an operator fixes it), so they are
/// never taken to be about the rows however often they repeat. A hint, read together with
/// what retries show (see [`SinkError::refusal`]).
const SERVER_STATE_CODES: &[u32] = &[
    8, 10, 16, 368, // the table's columns changed underneath: described again
    48,  // NOT_IMPLEMENTED (the table is a view, or an engine that takes no inserts)
    60, 81,  // UNKNOWN_TABLE, UNKNOWN_DATABASE: recreated
    159, // TIMEOUT_EXCEEDED
    164, // READONLY
    192, 193, 194, 195, 497, 516, // the user, its password or its rights
    202, 203, // TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
    209, 210, 279, // SOCKET_TIMEOUT, NETWORK_ERROR, ALL_CONNECTION_TRIES_FAILED
    225, 999, // NO_ZOOKEEPER, KEEPER_EXCEPTION
    236, 394, // ABORTED, QUERY_WAS_CANCELLED
    242, // TABLE_IS_READ_ONLY
    243, // NOT_ENOUGH_SPACE
    252, // TOO_MANY_PARTS (merges behind), but see `Refusal::Size`
    285, 286, // TOO_FEW_LIVE_REPLICAS, UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319, // UNKNOWN_STATUS_OF_INSERT
    425, 1000, // SYSTEM_ERROR, POCO_EXCEPTION (the server's own files)
];

/// Codes that say the insert is too large for the server as sent.
const SIZE_CODES: &[u32] = &[
    173, // CANNOT_ALLOCATE_MEMORY
    241, // MEMORY_LIMIT_EXCEEDED
];

/// What a retryable refusal says a retry may do, by what the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No answer, or an answer about the server's or the table's state (down, overloaded,
    /// read-only, ZooKeeper away, a table missing): the same rows go in later.
    Server,
    /// The insert is too large for the server (its memory limit, too many partitions in one
    /// block): smaller inserts of the same rows go in.
    Size,
    /// Any other exception: retried, and taken to be about the rows if it repeats while the
    /// server answers other queries (a derived column that throws for one row's value, a
    /// check of a newer server this service does not know).
    Rows,
}

/// Codes that mean the database or table vanished; the sink recreates them and retries.
pub(crate) const MISSING_TABLE_CODES: &[u32] = &[60, 81]; // UNKNOWN_TABLE, UNKNOWN_DATABASE

impl SinkError {
    /// Whether sending the same batch again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable(_))
    }

    /// The ClickHouse exception code in the message (`Code: 60. DB::Exception: ...`), if any.
    pub fn code(&self) -> Option<u32> {
        let (SinkError::Retryable(m) | SinkError::Data(m)) = self;
        exception_code(m)
    }

    /// What a retry of the rows refused with this error may do (`Data` errors: `Rows`).
    pub fn refusal(&self) -> Refusal {
        let message = match self {
            SinkError::Data(_) => return Refusal::Rows,
            SinkError::Retryable(m) => m,
        };
        match exception_code(message) {
            None => Refusal::Server,
            Some(252) if message.contains("partitions for single INSERT block") => Refusal::Size,
            Some(code) if SIZE_CODES.contains(&code) => Refusal::Size,
            Some(code) if SERVER_STATE_CODES.contains(&code) => Refusal::Server,
            Some(_) => Refusal::Rows,
        }
    }

    /// The same error, as a refusal of the rows (not to be retried).
    pub fn into_data(self) -> SinkError {
        match self {
            SinkError::Retryable(m) | SinkError::Data(m) => SinkError::Data(m),
        }
    }

    /// How long a client should wait before retrying a request refused because of this.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs(1)
    }
}

fn exception_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + 6..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl From<::clickhouse::error::Error> for SinkError {
    fn from(error: ::clickhouse::error::Error) -> Self {
        use ::clickhouse::error::Error as E;
        // The causes too: a network error's own text is "client error (Connect)", its
        // causes say why (refused, a certificate not trusted, ...).
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(e) = cause {
            let text = e.to_string();
            if !message.contains(&text) {
                message = format!("{message}: {text}");
            }
            cause = e.source();
        }
        match &error {
            E::BadResponse(text) => match exception_code(text) {
                Some(code) if DATA_ERROR_CODES.contains(&code) => SinkError::Data(message),
                _ => SinkError::Retryable(message),
            },
            // A value our row type cannot encode: that row alone is bad.
            E::Custom(_) => SinkError::Data(message),
            _ => SinkError::Retryable(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::clickhouse::error::Error;

    #[test]
    fn data_errors_are_not_retryable() {
        let e: SinkError = Error::BadResponse(
            "Code: 27. DB::Exception: Cannot parse input: expected , (version 18.16.1)".into(),
        )
        .into();
        assert!(!e.is_retryable());
        assert_eq!(e.code(), Some(27));
    }

    #[test]
    fn modern_servers_row_rejections_are_data_errors() {
        for text in [
            "Code: 469. DB::Exception: Constraint `c` for table db.events is violated at row 1. \
             (VIOLATED_CONSTRAINT) (version 26.9.2.1)",
            "Code: 395. DB::Exception: Value passed to 'throwIf' function is non-zero. \
             (FUNCTION_THROW_IF_VALUE_IS_NON_ZERO) (version 26.9.2.1)",
            "Code: 376. DB::Exception: Cannot parse uuid x. (CANNOT_PARSE_UUID)",
        ] {
            let e: SinkError = Error::BadResponse(text.into()).into();
            assert!(!e.is_retryable(), "{text}");
        }
    }

    #[test]
    fn refusals_are_read_for_what_a_retry_may_do() {
        let refusal = |text: &str| SinkError::from(Error::BadResponse(text.into())).refusal();
        assert_eq!(
            refusal("Code: 241. DB::Exception: Memory limit (for query) exceeded"),
            Refusal::Size
        );
        assert_eq!(
            refusal(
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100)"
            ),
            Refusal::Size
        );
        assert_eq!(
            refusal("Code: 252. DB::Exception: Too many parts (300)"),
            Refusal::Server
        );
        assert_eq!(
            refusal("Code: 242. DB::Exception: Table is in readonly mode"),
            Refusal::Server
        );
        assert_eq!(refusal("502 Bad Gateway"), Refusal::Server);
        assert_eq!(
            refusal(
                "Code: 131, e.displayText() = DB::Exception: String too long for type FixedString(2)"
            ),
            Refusal::Rows
        );
        assert_eq!(
            refusal(
                "Code: 190. DB::Exception: Elements 'n.a' and 'n.b' of Nested data structure 'n' (Array columns) have different array sizes."
            ),
            Refusal::Rows
        );
        assert_eq!(SinkError::from(Error::TimedOut).refusal(), Refusal::Server);
    }

    #[test]
    fn overload_and_network_errors_are_retryable() {
        for text in [
            "Code: 252. DB::Exception: Too many parts (300)",
            "Code: 241. DB::Exception: Memory limit (total) exceeded",
            "Code: 60. DB::Exception: Table default.events doesn't exist.",
            "502 Bad Gateway",
        ] {
            let e: SinkError = Error::BadResponse(text.into()).into();
            assert!(e.is_retryable(), "{text}");
        }
        assert!(SinkError::from(Error::TimedOut).is_retryable());
    }
}
