//! event-ingest: collects analytics events over HTTP and writes them to ClickHouse in large
//! batch inserts.
//!
//! The stages, one folder each, in the order an event passes them: [`app`] builds and wires
//! the others from the configuration → [`http`] (the server, access, bodies, the one ingest
//! handler) → [`table`] reads a body with the table's columns and rules into encoded rows →
//! [`lane`] (the ingest seam, sharding, double buffer, spool, flusher, quarantine) →
//! [`sink`] (the one table sink: ClickHouse over HTTP, replicas) → [`format`] (ClickHouse's
//! formats with no I/O: type grammar, Native blocks in key order, sharding expressions).
//! Every table, the events table included, takes this one path; the events table is the
//! table whose columns are fixed and which the service may create.

// The stages, in the order an event passes them; each imports only the stages after it
// (and the shared modules below), never one that calls it (see docs/architecture.md).
pub mod app;
pub mod format;
pub mod http;
pub mod lane;
pub mod sink;
pub mod table;

// Shared by the stages: settings (read by `app` alone), the TLS provider, counters, logs,
// files, memory.
pub mod config;
pub mod crypto;
pub(crate) mod durable;
pub mod logging;
pub(crate) mod memory;
pub mod stats;

pub use app::Application;
pub use config::Config;
