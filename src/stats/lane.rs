//! What one lane's flusher records: each table's own figures, labelled `table` (the
//! events table's included), so one table's failures or successes never show as another's;
//! and for the events table also the process's unlabelled figures under their earlier
//! names, kept as aliases so existing dashboards keep reading it.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::IntCounter;
use serde::Serialize;

use super::Stats;

/// One table's figures: its counters (children of the `table_*` families, bound
/// once at start-up so recording allocates nothing), its last error and its last insert.
pub struct TableStats {
    /// Events clients sent that were kept.
    pub accepted: IntCounter,
    /// Events clients sent that were rejected by validation.
    pub rejected: IntCounter,
    /// Fields clients sent that the table has no column for.
    pub ignored_fields: IntCounter,
    /// Buffer swaps (flushes) of the table's lanes.
    pub flushes: IntCounter,
    /// Successful inserts into the table.
    pub inserts: IntCounter,
    /// Events ClickHouse confirmed for the table.
    pub events_written: IntCounter,
    /// The table's events refused as bad data and quarantined.
    pub events_quarantined: IntCounter,
    /// Failed inserts into the table that will be retried.
    pub errors_retryable: IntCounter,
    /// Failed inserts into the table refused as bad data.
    pub errors_data: IntCounter,
    /// The table's last insert error; cleared by its next success.
    pub last_error: Mutex<Option<String>>,
    /// When the table's last insert succeeded (RFC 3339), and how many rows it had.
    pub last_insert: Mutex<Option<LastInsert>>,
}

impl TableStats {
    /// Records one request's events: kept, rejected, and fields the table lacks.
    pub fn record_request(&self, accepted: usize, rejected: usize, ignored_fields: usize) {
        for (counter, n) in [
            (&self.accepted, accepted),
            (&self.rejected, rejected),
            (&self.ignored_fields, ignored_fields),
        ] {
            if n > 0 {
                counter.inc_by(n as u64);
            }
        }
    }
}

/// A table's last successful insert, as health and the status page show it.
#[derive(Debug, Clone, Serialize)]
pub struct LastInsert {
    /// When it was confirmed, RFC 3339.
    pub at: String,
    /// Rows it carried.
    pub rows: usize,
}

impl TableStats {
    /// The figures of `table`, registered under `stats`'s `table_*` families.
    pub fn new(stats: &Stats, table: &str) -> Self {
        let events = |outcome| stats.table_events.with_label_values(&[table, outcome]);
        Self {
            accepted: events("accepted"),
            rejected: events("rejected"),
            ignored_fields: events("ignored_fields"),
            flushes: stats.table_flushes.with_label_values(&[table]),
            inserts: stats.table_inserts.with_label_values(&[table]),
            events_written: stats.table_events_written.with_label_values(&[table]),
            events_quarantined: stats.table_events_quarantined.with_label_values(&[table]),
            errors_retryable: stats
                .table_insert_errors
                .with_label_values(&[table, "retryable"]),
            errors_data: stats
                .table_insert_errors
                .with_label_values(&[table, "data"]),
            last_error: Mutex::new(None),
            last_insert: Mutex::new(None),
        }
    }
}

/// A flusher's view of the figures: the process's (local storage errors, which are the
/// whole process's concern, and the events table's counters), or, for a table of
/// `INGEST_TABLES`,
/// lane, that table's own counters instead.
#[derive(Clone)]
pub struct LaneStats {
    all: Arc<Stats>,
    table: Option<Arc<TableStats>>,
    /// The events table's lane: the unlabelled figures are kept too.
    aliases: bool,
}

impl From<Arc<Stats>> for LaneStats {
    /// A lane recording the unlabelled figures only (tests).
    fn from(all: Arc<Stats>) -> Self {
        Self {
            all,
            table: None,
            aliases: true,
        }
    }
}

impl Deref for LaneStats {
    type Target = Stats;

    fn deref(&self) -> &Stats {
        &self.all
    }
}

impl LaneStats {
    /// A table of `INGEST_TABLES`: its flushes, inserts and errors count for `table` only.
    pub fn for_table(all: Arc<Stats>, table: Arc<TableStats>) -> Self {
        Self {
            all,
            table: Some(table),
            aliases: false,
        }
    }

    /// The events table's lanes: its figures under `table`, and under the unlabelled
    /// names too.
    pub fn for_events_table(all: Arc<Stats>, table: Arc<TableStats>) -> Self {
        Self {
            all,
            table: Some(table),
            aliases: true,
        }
    }

    /// One flush of the lane's buffer.
    pub fn record_flush(
        &self,
        trigger: &'static str,
        events: usize,
        written: usize,
        took: Duration,
    ) {
        if let Some(t) = &self.table {
            t.flushes.inc();
        }
        if self.aliases {
            self.all.record_flush(trigger, events, written, took);
        }
    }

    /// A confirmed insert of `rows` rows.
    pub fn record_insert(&self, rows: usize) {
        if self.aliases {
            self.all.record_insert(rows);
        }
        let Some(t) = &self.table else {
            return;
        };
        t.inserts.inc();
        t.events_written.inc_by(rows as u64);
        *t.last_insert.lock() = Some(LastInsert {
            at: super::now_rfc3339(),
            rows,
        });
        let mut last = t.last_error.lock();
        if last.is_some() {
            *last = None;
        }
    }

    /// A failed insert (see [`Stats::record_error`]).
    pub fn record_error(&self, retrying: bool, error: &impl std::fmt::Display) {
        if self.aliases {
            self.all.record_error(retrying, error);
        }
        let Some(t) = &self.table else {
            return;
        };
        match retrying {
            true => t.errors_retryable.inc(),
            false => t.errors_data.inc(),
        }
        *t.last_error.lock() = Some(error.to_string());
    }

    /// `n` events refused as bad data and put in the quarantine.
    pub fn record_quarantined(&self, n: usize) {
        if let Some(t) = &self.table {
            t.events_quarantined.inc_by(n as u64);
        }
        if self.aliases {
            self.all.events_quarantined.inc_by(n as u64);
        }
    }
}
