//! One lane's storage: a double buffer and, in `disk` mode, its own spool with its
//! group-commit writer. Built the same way for the events table, for each shard of a
//! cluster and for each table of `INGEST_TABLES`, so a lane means one thing wherever it is started.

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

/// A lane's buffer triggers from the configuration, with its even share of
/// `BUFFER_MAX_BYTES` (the process's cap: every table's lanes and every shard's together
/// hold no more).
pub(super) fn limits(config: &Config) -> Limits {
    let lanes = usize::try_from(config.lanes()).unwrap_or(usize::MAX).max(1);
    Limits {
        swap_events: config.buffer_size,
        flush_interval: config.flush_interval(),
        min_interval: config.min_insert_interval(),
        max_bytes: config.buffer_max_bytes / lanes,
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
    let (spool, backlog) = Spool::open_sharing(spool_dir, spool_max_bytes, config.lanes())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_together_holds_at_most_buffer_max_bytes() {
        let tables: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        for (vars, lanes) in [
            (vec![], 1),
            (vec![("INGEST_TABLES", tables.join(","))], 21),
            (
                vec![
                    ("INGEST_TABLES", tables.join(",")),
                    ("CLICKHOUSE_CLUSTER", "c".to_string()),
                    ("CLICKHOUSE_HOSTS", "a:1,b:1;c:1".to_string()),
                ],
                42,
            ),
        ] {
            let mut vars: Vec<(String, String)> =
                vars.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            vars.push(("BUFFER_MAX_BYTES".into(), (16 << 20).to_string()));
            let config = Config::from_vars(vars).unwrap();
            assert_eq!(config.lanes(), lanes);
            let share = limits(&config).max_bytes;
            assert!(
                share * lanes as usize <= 16 << 20,
                "{lanes} lanes of {share}"
            );
            assert!(
                share >= (16 << 20) / lanes as usize,
                "{lanes} lanes of {share}"
            );
        }
    }
}
