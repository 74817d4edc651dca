//! event-ingest: collects analytics events over HTTP and writes them to ClickHouse in large
//! batch inserts.
//!
//! The stages, one module each, in the order an event passes them:
//! [`config`] → [`routes`] (HTTP) → [`event`] (decode, validate, the row; [`schema`] does
//! the same for any other table from its own columns) → [`ingest`] (the seam; in a cluster
//! [`shard`] picks each row's shard, and so its lane) → [`buffer`] (double buffer) and, in
//! `disk` mode, [`spool`] (write-ahead log) → [`flusher`] (thread, retries) → [`sink`]
//! (ClickHouse; each batch sent as a columnar [`block`] in the table's key order), with rows
//! ClickHouse refuses going to the [`quarantine`]. [`startup`] wires them, [`shutdown`] ends
//! them, [`stats`] counts, [`memory`] tunes the allocator.

// Public: what the binary, the integration tests and the benchmarks use.
pub mod block;
pub mod buffer;
pub mod config;
pub mod event;
pub mod logging;
pub mod routes;
pub mod schema;
pub mod shard;
pub mod shutdown;
pub mod sink;
pub mod startup;
pub mod stats;

// Stage internals, reached only through the stages above.
pub(crate) mod durable;
pub(crate) mod flusher;
pub(crate) mod ingest;
pub(crate) mod memory;
pub(crate) mod quarantine;
pub(crate) mod room;
pub(crate) mod spool;

pub use config::Config;
pub use startup::Application;
