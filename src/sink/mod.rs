//! Sinks: where a batch of rows is finally written. The flusher and the direct mode only see
//! the [`Sink`] trait; ClickHouse is the one real implementation.

pub mod clickhouse;
pub mod error;
pub mod schema;

use std::future::Future;
use std::sync::Arc;

pub use self::clickhouse::ClickHouseSink;
pub use error::SinkError;
pub use schema::ServerVersion;

use crate::event::RowsRef;

/// Writes whole batches of encoded rows. One call is one insert: either all rows are
/// stored or none is (ClickHouse inserts one block atomically below
/// `max_insert_block_size`, which callers stay under), so a failed call is retried whole.
pub trait Sink: Send + Sync + 'static {
    /// Writes `rows` as one insert. `token` identifies these exact rows across retries and
    /// restarts; a sink that can deduplicate by it (ClickHouse 22.2+'s
    /// `insert_deduplication_token`) stores a retried insert once.
    fn write(
        &self,
        rows: RowsRef<'_>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Sends `rows` somewhere that checks them as `write` would but stores nothing, to find
    /// rows the sink rejects without storing the others piecemeal. `fresh`: the check
    /// must reflect the target as it is now (the first probe of a search). A sink that
    /// cannot probe answers with a retryable error, and the caller splits real writes.
    fn probe(
        &self,
        rows: RowsRef<'_>,
        fresh: bool,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        let _ = (rows, fresh);
        std::future::ready(Err(SinkError::Retryable("this sink cannot probe".into())))
    }
}

/// A shared sink is a sink (lets a caller keep a handle on the one it hands to the flusher).
impl<T: Sink> Sink for Arc<T> {
    fn write(
        &self,
        rows: RowsRef<'_>,
        token: Option<&str>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).write(rows, token)
    }

    fn probe(
        &self,
        rows: RowsRef<'_>,
        fresh: bool,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).probe(rows, fresh)
    }
}
