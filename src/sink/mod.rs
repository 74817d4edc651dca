//! The sink: where a batch of rows is finally written. The flusher and the direct mode only
//! see the [`Sink`] trait; [`TableSink`] is its one real implementation, for every table
//! (the events table is one whose columns are fixed and which the service may create).
//!
//! May import `table` (the events table's definition, the schema rows are encoded with),
//! `format` (blocks, expressions) and the shared modules. Never a lane's buffer, spool or
//! flusher, never `http` or `app`, never the configuration: it is handed [`Settings`].

mod cluster_schema;
mod error;
mod format;
mod query_log;
mod replicas;
mod schema;
mod settings;
mod table;
mod table_columns;
mod table_shard;
mod tls;

use std::future::Future;
use std::sync::Arc;

pub use cluster_schema::{ClusterTable, Membership};
pub use error::{Refusal, SinkError};
pub use format::{FormatInfo, InsertFormat};
pub use replicas::{ClusterCheck, HostState, HostStatus, ReplicaSet};
pub use schema::{Deduplication, ServerVersion, create_table_sql};
pub use settings::{Compression, Connection, Settings};
pub use table::{Loaded, TAG_BYTES, TableSink, TableState, quote};
pub use tls::{TlsError, TlsFiles, is_certificate_error};

use crate::format::RowsRef;

/// Awaits one ClickHouse call for at most `limit`: a server that does not answer is a
/// retryable failure, like one that refuses the connection. Every sink's calls go through it.
async fn bounded<T>(
    limit: std::time::Duration,
    fut: impl Future<Output = ::clickhouse::error::Result<T>>,
) -> Result<T, SinkError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SinkError::Retryable(format!("no answer within {limit:?}"))),
    }
}

/// How the flusher names an insert, so a sink can avoid storing it twice.
#[derive(Debug, Clone, Copy)]
pub struct InsertId<'a> {
    /// The same for every attempt of these rows, across retries and restarts.
    pub token: &'a str,
    /// An earlier attempt may have reached the server: this is a retry, or the replay of a
    /// batch begun before a restart.
    pub maybe_sent: bool,
}

/// Writes whole batches of encoded rows. One call is one insert: either all rows are
/// stored or none is (ClickHouse inserts one block atomically below
/// `max_insert_block_size`, which callers stay under), so a failed call is retried whole.
pub trait Sink: Send + Sync + 'static {
    /// Writes `rows` as one insert. `id` identifies these exact rows across retries and
    /// restarts; a sink that can deduplicate by it (ClickHouse 22.2+'s
    /// `insert_deduplication_token`, or a look at an older server's query log) stores a
    /// retried insert once.
    fn write(
        &self,
        rows: RowsRef<'_>,
        id: Option<InsertId<'_>>,
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

    /// Whether the server answers a query now (bounded in time): an insert refused the same
    /// way again and again while it does is refused for its rows, not for the server's state.
    /// A sink that cannot tell answers with an error.
    fn answers_queries(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Err(SinkError::Retryable(
            "this sink cannot be asked".into(),
        )))
    }

    /// Ends a search begun by `probe`: drops whatever the probes needed (for ClickHouse the
    /// probe table the sink created).
    fn end_probe(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        std::future::ready(Ok(()))
    }

    /// How many bytes at the start of each row name the column list it was encoded under
    /// (0: one list for every row). Rows of different lists go in separate inserts, so the
    /// flusher never gives one [`Sink::write`] rows of two lists: each write is one insert,
    /// stored or refused whole, never half stored and then resent.
    fn list_tag_len(&self) -> usize {
        0
    }
}

/// A shared sink is a sink (lets a caller keep a handle on the one it hands to the flusher).
impl<T: Sink> Sink for Arc<T> {
    fn write(
        &self,
        rows: RowsRef<'_>,
        id: Option<InsertId<'_>>,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).write(rows, id)
    }

    fn probe(
        &self,
        rows: RowsRef<'_>,
        fresh: bool,
    ) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).probe(rows, fresh)
    }

    fn end_probe(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).end_probe()
    }

    fn answers_queries(&self) -> impl Future<Output = Result<(), SinkError>> + Send {
        (**self).answers_queries()
    }

    fn list_tag_len(&self) -> usize {
        (**self).list_tag_len()
    }
}
