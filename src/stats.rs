//! Counters shared by the handlers and the flusher, read by the health endpoint and the
//! shutdown report. Relaxed atomics: each counter is independent and only ever summed.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

/// Process-wide counters. The request-path ones sit on their own cache lines, so the
/// handler threads bumping them do not contend with the flusher's.
#[derive(Default)]
pub struct Stats {
    /// Events accepted (buffered in `double` mode, committed in `direct` mode).
    pub events_accepted: CachePadded<AtomicU64>,
    /// Events rejected by validation.
    pub events_rejected: CachePadded<AtomicU64>,
    /// Events ClickHouse confirmed.
    pub events_written: AtomicU64,
    /// Successful inserts (batches).
    pub inserts: AtomicU64,
    /// Failed insert attempts that will be retried.
    pub insert_retries: AtomicU64,
    /// Events ClickHouse refused as bad data, isolated and dropped (logged at error).
    pub events_dropped: AtomicU64,
    /// The last write error, for the health endpoint; cleared by the next success.
    pub last_error: Mutex<Option<String>>,
}

impl Stats {
    /// Records a request's validation outcome.
    pub fn record_request(&self, accepted: usize, rejected: usize) {
        self.events_accepted.fetch_add(accepted as u64, Relaxed);
        if rejected > 0 {
            self.events_rejected.fetch_add(rejected as u64, Relaxed);
        }
    }

    /// Records a confirmed insert of `rows` rows.
    pub fn record_insert(&self, rows: usize) {
        self.inserts.fetch_add(1, Relaxed);
        self.events_written.fetch_add(rows as u64, Relaxed);
        let mut last = self.last_error.lock();
        if last.is_some() {
            *last = None;
        }
    }

    /// Records a failed attempt.
    pub fn record_error(&self, error: &impl ToString, retrying: bool) {
        if retrying {
            self.insert_retries.fetch_add(1, Relaxed);
        }
        *self.last_error.lock() = Some(error.to_string());
    }

    /// A counter's current value.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}
