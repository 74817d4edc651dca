//! event-ingest: collects analytics events over HTTP and writes them to ClickHouse in large
//! batch inserts.
//!
//! The stages, one module each, in the order an event passes them:
//! [`config`] → [`routes`] (HTTP) → [`event`] (decode, validate, the row) → [`ingest`]
//! (the seam) → [`buffer`] (double buffer) and, in `disk` mode, [`spool`] (write-ahead log)
//! → [`flusher`] (thread, retries) → [`sink`] (ClickHouse; each batch sent as a columnar
//! [`block`] in the table's key order), with rows ClickHouse refuses
//! going to the [`quarantine`]. [`startup`] wires them, [`shutdown`] ends them, [`stats`]
//! counts.

pub mod block;
pub mod buffer;
pub mod config;
pub mod event;
pub mod flusher;
pub mod ingest;
pub mod logging;
pub mod quarantine;
pub mod routes;
pub mod shutdown;
pub mod sink;
pub mod spool;
pub mod startup;
pub mod stats;

pub use config::Config;
pub use startup::Application;
