//! The lane: what happens to a table's rows between the handler and the sink, one lane per
//! table and shard. The seam handlers see ([`ingest::Ingest`]), the sharder, the double
//! buffer and its room, the spool (`disk` mode), the flusher thread and the quarantine.
//!
//! May import: `sink` (the flusher writes through it), `table` (rows read back for the
//! quarantine and the sharder), `format`, and the shared modules. Never `app` or `http`.

pub mod buffer;
pub(crate) mod flusher;
pub(crate) mod ingest;
pub(crate) mod quarantine;
pub(crate) mod room;
pub mod shard;
pub(crate) mod spool;

pub use flusher::ShutdownReport;

/// What a thread's panic said, for the line that reports it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".into())
}
