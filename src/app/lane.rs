//! One lane's storage: a double buffer and, in `disk` mode, its own spool with its
//! group-commit writer. Built the same way for the events table, for each shard of a
//! cluster and for each other table, so a lane means one thing wherever it is started.

use std::path::Path;
use std::sync::Arc;

use super::StartupError;
use crate::config::{Config, Durability};
use crate::lane::buffer::{DoubleBuffer, Limits};
use crate::lane::spool::{Spool, WriterGuard};

/// A lane's buffer and what backs it.
pub(super) struct LaneBuffer {
    /// Where the lane's requests append and its flusher swaps.
    pub buffer: Arc<DoubleBuffer>,
    /// `disk` mode: the spool's writer, stopped after the flusher.
    pub writer: Option<WriterGuard>,
    /// `disk` mode: the spool (its id seeds a cluster lane's replica choice).
    pub spool: Option<Arc<Spool>>,
    /// `disk` mode: where the rows an earlier run left in the spool begin, if it left any.
    pub backlog_from: Option<u64>,
}

/// The buffer's triggers from the configuration, with `max_bytes` as this lane's share of
/// `BUFFER_MAX_BYTES`.
pub(super) fn limits(config: &Config, max_bytes: usize) -> Limits {
    Limits {
        swap_events: config.buffer_size,
        flush_interval: config.flush_interval(),
        min_interval: config.min_insert_interval(),
        max_bytes,
        full_wait: config.full_wait(),
    }
}

/// Opens the lane's buffer: in memory, or (`disk` mode) over the spool in `spool_dir`, of at
/// most `spool_max_bytes`, whose backlog from an earlier run is replayed first.
pub(super) fn open(
    config: &Config,
    limits: Limits,
    spool_dir: &Path,
    spool_max_bytes: u64,
) -> Result<LaneBuffer, StartupError> {
    if config.durability() == Durability::Memory {
        return Ok(LaneBuffer {
            buffer: Arc::new(DoubleBuffer::new(limits)),
            writer: None,
            spool: None,
            backlog_from: None,
        });
    }
    let (spool, backlog) = Spool::open_sharing(spool_dir, spool_max_bytes, config.spool_lanes())?;
    let spool = Arc::new(spool);
    if let Some(b) = &backlog {
        log::info!(
            "spool {}: replaying {} bytes left by the previous run first",
            spool_dir.display(),
            b.bytes
        );
    }
    let writer = WriterGuard::spawn(spool.clone())?;
    let from = backlog.map(|b| b.from);
    Ok(LaneBuffer {
        buffer: Arc::new(DoubleBuffer::with_spool(limits, spool.clone(), from)),
        writer: Some(writer),
        spool: Some(spool),
        backlog_from: from,
    })
}
