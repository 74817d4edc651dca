//! The seam between request handlers and storage: where accepted rows go.
//!
//! Handlers only see [`Ingest`]. Today there are two implementations, the double buffer
//! ([`Buffered`]) and a synchronous insert per request ([`Direct`]); a Kafka or SQS
//! producer would be a third, without touching the HTTP layer.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::buffer::{AppendError, DoubleBuffer};
use crate::event::Rows;
use crate::sink::{Sink, SinkError};

/// Why accepted rows could not be taken. Nothing was stored, except possibly after a
/// retryable sink error in direct mode (a timeout after ClickHouse committed), so a resend
/// is at-least-once.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// One request holds more than the buffer may ever hold; resending cannot help.
    #[error("{0}")]
    TooLarge(String),
    /// Too much is buffered; the client should retry after the given time.
    #[error("{reason}")]
    Saturated {
        /// What is full.
        reason: String,
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The storage refused or failed the write (direct mode).
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// Takes a request's validated rows. `Ok` means the rows are as safe as this
/// implementation promises: buffered in memory, or committed.
pub trait Ingest: Send + Sync + 'static {
    /// Hands over `rows`. Boxed so handlers can hold any implementation as a trait object;
    /// one small allocation per request.
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>>;

    /// Events accepted but not yet confirmed by storage.
    fn pending_events(&self) -> usize;

    /// Bytes held and the most that may be held (`(0, 0)`: no buffer).
    fn fill(&self) -> (usize, usize) {
        (0, 0)
    }

    /// Whether shutdown has begun (nothing new is taken).
    fn is_closed(&self) -> bool {
        false
    }
}

/// Appends to the double buffer; the flusher thread writes it out.
pub struct Buffered(pub Arc<DoubleBuffer>);

impl Ingest for Buffered {
    fn submit(&self, mut rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        let result = self.0.append(&mut rows).map_err(|e| match e {
            AppendError::Full { .. } => SubmitError::Saturated {
                reason: e.to_string(),
                retry_after: Duration::from_secs(1),
            },
            AppendError::TooLarge { .. } => SubmitError::TooLarge(e.to_string()),
            AppendError::Closed => SubmitError::ShuttingDown,
        });
        Box::pin(std::future::ready(result))
    }

    fn pending_events(&self) -> usize {
        self.0.pending_events()
    }

    fn fill(&self) -> (usize, usize) {
        (self.0.pending_bytes(), self.0.limits().max_bytes)
    }

    fn is_closed(&self) -> bool {
        self.0.deadline().is_some()
    }
}

/// One synchronous insert per request, answered after the sink confirms. No retries: the
/// client gets the error and decides.
pub struct Direct<S>(pub Arc<S>);

impl<S: Sink> Ingest for Direct<S> {
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        Box::pin(async move { Ok(self.0.write(rows.as_ref()).await?) })
    }

    fn pending_events(&self) -> usize {
        0
    }
}

/// Drops everything: the `BUFFER_MODE=discard` benchmark ceiling.
pub struct Discard;

impl Ingest for Discard {
    fn submit(&self, rows: Rows) -> BoxFuture<'_, Result<(), SubmitError>> {
        drop(rows);
        Box::pin(std::future::ready(Ok(())))
    }

    fn pending_events(&self) -> usize {
        0
    }
}
