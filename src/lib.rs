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

// The stages, in the order an event passes them; each imports only the stages after it
// (and the shared modules below), never one that calls it (see docs/architecture.md).
pub mod app;
pub mod format;
pub mod http;
pub mod lane;
pub mod sink;
pub mod table;

// Shared by the stages: settings (read by `app` alone), counters, logs, files, memory.
pub mod config;
pub(crate) mod durable;
pub mod logging;
pub(crate) mod memory;
pub mod stats;

pub use app::Application;
pub use config::Config;
