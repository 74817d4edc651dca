//! Metrics: counters, gauges and histograms shared by the handlers and the flusher, kept in
//! a `prometheus` registry and served at `GET /metrics`; the health endpoint and the
//! shutdown report read the same values. Every label has a small fixed set of values
//! (route patterns, status codes, field names, triggers), never client input or keys.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use serde::Serialize;

mod lane;
pub use lane::{LaneStats, LastInsert, TableStats};

/// All metrics of one process.
pub struct Stats {
    registry: Registry,
    /// HTTP requests by route pattern and status code.
    pub http_requests: IntCounterVec,
    /// Request body bytes received (as sent, before decompression).
    pub bytes_received: IntCounter,
    /// Events accepted (buffered in `double` mode, committed in `direct` mode).
    pub events_accepted: IntCounter,
    /// Events rejected by validation, by the first field at fault (`object`: unreadable).
    pub events_rejected: IntCounterVec,
    /// Every table's events by table and outcome: `accepted`, `rejected`, and
    /// `ignored_fields` (fields the table has no column for).
    pub table_events: IntCounterVec,
    /// Every table's flushes, by table (the events table's also unlabelled: `flushes`).
    pub table_flushes: IntCounterVec,
    /// Every table's successful inserts, by table.
    pub table_inserts: IntCounterVec,
    /// Every table's events ClickHouse confirmed, by table.
    pub table_events_written: IntCounterVec,
    /// Every table's events quarantined, by table.
    pub table_events_quarantined: IntCounterVec,
    /// Every table's failed inserts, by table and kind (`retryable`, `data`).
    pub table_insert_errors: IntCounterVec,
    /// The events table's events ClickHouse confirmed (every table's: `table_*`).
    pub events_written: IntCounter,
    /// Events ClickHouse refused as bad data, isolated and put in the quarantine file.
    pub events_quarantined: IntCounter,
    /// Successful inserts (batches).
    pub inserts: IntCounter,
    /// Failed insert attempts that will be retried.
    pub insert_retries: IntCounter,
    /// ClickHouse errors by kind (`retryable`, `data`).
    pub clickhouse_errors: IntCounterVec,
    /// Swaps of the buffer by trigger (`size`, `timer`, `shutdown`, `backlog`, `spool`).
    pub flushes: IntCounterVec,
    /// Seconds from swap to confirmed insert, retries included.
    pub flush_duration: Histogram,
    /// Events per flushed batch.
    pub flush_rows: Histogram,
    /// Events held in the buffer (both halves); set when scraped.
    pub buffer_events: IntGauge,
    /// Every table's events held in its buffers, by table; set when scraped.
    pub table_buffer_events: prometheus::IntGaugeVec,
    /// Events of requests made with an API key, by the key's name and outcome:
    /// `accepted`, `rejected` (validation), `limited` (over the key's rate).
    pub key_events: IntCounterVec,
    /// Bytes held in the buffer (both halves); set when scraped.
    pub buffer_bytes: IntGauge,
    /// `BUFFER_MAX_BYTES`.
    pub buffer_max_bytes: IntGauge,
    /// Bytes held by requests waiting for room in a full buffer; set when scraped.
    pub buffer_waiting_bytes: IntGauge,
    /// `disk` mode: unconfirmed bytes in the spool; set when scraped.
    pub spool_bytes: IntGauge,
    /// `SPOOL_MAX_BYTES` (0 in `memory` mode).
    pub spool_max_bytes: IntGauge,
    /// Age of the oldest accepted event not yet in ClickHouse (0: none); set when scraped.
    pub oldest_pending_seconds: IntGauge,
    /// The last write error, for the health endpoint; cleared by the next success.
    pub last_error: Mutex<Option<String>>,
    /// Failed local storage operations (retried or deferred), by operation (`spool_read`,
    /// `checkpoint`, `quarantine`).
    pub local_io_errors: IntCounterVec,
    /// Local storage operations failing now (0: none).
    pub local_io_failing: IntGauge,
    /// The local storage operations failing now, with their latest error, for health and
    /// readiness; an operation's entry is removed by its next success.
    local_errors: Mutex<BTreeMap<&'static str, String>>,
    /// A lane's thread that stopped for good (a panic): the process can no longer keep its
    /// promises and should be restarted; `/v1/live` fails from then on.
    fatal: Mutex<Option<String>>,
    /// The latest flushes, newest last, for the status page.
    pub recent_flushes: Mutex<VecDeque<FlushRecord>>,
}

/// Now, to the second, in RFC 3339 (as the status page shows times).
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// A counter family's total over all its labels.
fn sum(family: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    family
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// How many flushes the status page lists.
const RECENT_FLUSHES: usize = 10;

/// One flush, as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct FlushRecord {
    /// When it finished, RFC 3339.
    pub at: String,
    /// What triggered it (`size`, `timer`, `shutdown`, `backlog`, `spool`).
    pub trigger: &'static str,
    /// Events in the batch.
    pub events: usize,
    /// Events written (less only when shutdown gave up).
    pub written: usize,
    /// Milliseconds from swap to confirmed insert, retries included.
    pub millis: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

impl Stats {
    /// A fresh registry with every metric at zero. Names and labels are constants, so
    /// registration cannot fail at run time; the `expect`s guard against a typo in them.
    pub fn new() -> Self {
        let r = Registry::new_custom(Some("event_ingest".into()), None).expect("valid prefix");
        Self {
            http_requests: counter_vec(
                &r,
                "http_requests_total",
                "HTTP requests",
                &["route", "status"],
            ),
            bytes_received: counter(&r, "bytes_received_total", "Request body bytes received"),
            events_accepted: counter(&r, "events_accepted_total", "Events accepted"),
            events_rejected: counter_vec(
                &r,
                "events_rejected_total",
                "Events rejected by validation",
                &["reason"],
            ),
            table_events: counter_vec(
                &r,
                "table_events_total",
                "Events for each table, the events table included",
                &["table", "outcome"],
            ),
            table_flushes: counter_vec(
                &r,
                "table_flushes_total",
                "Flushes of a table's buffer",
                &["table"],
            ),
            table_inserts: counter_vec(
                &r,
                "table_inserts_total",
                "Successful inserts into a table",
                &["table"],
            ),
            table_events_written: counter_vec(
                &r,
                "table_events_written_total",
                "A table's events ClickHouse confirmed",
                &["table"],
            ),
            table_events_quarantined: counter_vec(
                &r,
                "table_events_quarantined_total",
                "A table's events refused as bad data, put in the quarantine",
                &["table"],
            ),
            table_insert_errors: counter_vec(
                &r,
                "table_insert_errors_total",
                "Failed inserts into a table, by kind (retryable, data)",
                &["table", "kind"],
            ),
            events_written: counter(&r, "events_written_total", "Events ClickHouse confirmed"),
            events_quarantined: counter(
                &r,
                "events_quarantined_total",
                "Events ClickHouse refused as bad data, put in the quarantine",
            ),
            inserts: counter(&r, "inserts_total", "Successful inserts"),
            insert_retries: counter(&r, "insert_retries_total", "Failed insert attempts retried"),
            clickhouse_errors: counter_vec(
                &r,
                "clickhouse_errors_total",
                "ClickHouse errors",
                &["kind"],
            ),
            flushes: counter_vec(&r, "flushes_total", "Buffer swaps by trigger", &["trigger"]),
            flush_duration: histogram(
                &r,
                "flush_duration_seconds",
                "Seconds from swap to confirmed insert",
                prometheus::exponential_buckets(0.001, 4.0, 10).expect("valid buckets"),
            ),
            flush_rows: histogram(
                &r,
                "flush_batch_events",
                "Events per flushed batch",
                prometheus::exponential_buckets(1.0, 4.0, 12).expect("valid buckets"),
            ),
            buffer_events: gauge(&r, "buffer_events", "Events held in the buffer"),
            key_events: counter_vec(
                &r,
                "key_events_total",
                "Events of requests made with an API key, by key name and outcome",
                &["key", "outcome"],
            ),
            table_buffer_events: {
                let g = prometheus::IntGaugeVec::new(
                    Opts::new("table_buffer_events", "Events held in a table's buffers"),
                    &["table"],
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            buffer_bytes: gauge(&r, "buffer_bytes", "Bytes held in the buffer"),
            buffer_max_bytes: gauge(&r, "buffer_max_bytes", "BUFFER_MAX_BYTES"),
            buffer_waiting_bytes: gauge(
                &r,
                "buffer_waiting_bytes",
                "Bytes held by requests waiting for room in a full buffer",
            ),
            spool_bytes: gauge(&r, "spool_bytes", "Unconfirmed bytes in the disk spool"),
            spool_max_bytes: gauge(&r, "spool_max_bytes", "SPOOL_MAX_BYTES"),
            oldest_pending_seconds: gauge(
                &r,
                "oldest_pending_seconds",
                "Age of the oldest accepted event not yet in ClickHouse",
            ),
            local_io_errors: counter_vec(
                &r,
                "local_io_errors_total",
                "Failed local storage operations (spool read, checkpoint, quarantine)",
                &["op"],
            ),
            local_io_failing: gauge(
                &r,
                "local_io_failing",
                "Local storage operations failing now",
            ),
            local_errors: Mutex::new(BTreeMap::new()),
            fatal: Mutex::new(None),
            last_error: Mutex::new(None),
            recent_flushes: Mutex::new(VecDeque::with_capacity(RECENT_FLUSHES)),
            registry: r,
        }
    }

    /// Records a request's validation outcome; `reasons` counts rejected events by field.
    pub fn record_request(
        &self,
        accepted: usize,
        reasons: &[(std::borrow::Cow<'static, str>, usize)],
    ) {
        self.events_accepted.inc_by(accepted as u64);
        for (field, n) in reasons {
            if *n > 0 {
                let reason = if field.is_empty() { "object" } else { field };
                self.events_rejected
                    .with_label_values(&[reason])
                    .inc_by(*n as u64);
            }
        }
    }

    /// Records one flush of the buffer (one swapped half, however many inserts it took).
    pub fn record_flush(
        &self,
        trigger: &'static str,
        events: usize,
        written: usize,
        took: Duration,
    ) {
        self.flushes.with_label_values(&[trigger]).inc();
        self.flush_rows.observe(events as f64);
        self.flush_duration.observe(took.as_secs_f64());
        let at = now_rfc3339();
        let mut recent = self.recent_flushes.lock();
        if recent.len() == RECENT_FLUSHES {
            recent.pop_front();
        }
        recent.push_back(FlushRecord {
            at,
            trigger,
            events,
            written,
            millis: took.as_millis() as u64,
        });
    }

    /// Records a confirmed insert of `rows` rows.
    pub fn record_insert(&self, rows: usize) {
        self.inserts.inc();
        self.events_written.inc_by(rows as u64);
        let mut last = self.last_error.lock();
        if last.is_some() {
            *last = None;
        }
    }

    /// Records a failed insert: a retryable one (`retrying`) counts as a retry, a data error
    /// does not (its rows go to the quarantine instead).
    pub fn record_error(&self, retrying: bool, error: &impl std::fmt::Display) {
        if retrying {
            self.insert_retries.inc();
        }
        let kind = if retrying { "retryable" } else { "data" };
        self.clickhouse_errors.with_label_values(&[kind]).inc();
        *self.last_error.lock() = Some(error.to_string());
    }

    /// Records a failed local storage operation `op` (a fixed name): counted, and shown by
    /// health and readiness until the operation next succeeds.
    pub fn record_local_error(&self, op: &'static str, error: &impl ToString) {
        self.local_io_errors.with_label_values(&[op]).inc();
        let mut errors = self.local_errors.lock();
        errors.insert(op, error.to_string());
        self.local_io_failing.set(errors.len() as i64);
    }

    /// Local storage operation `op` succeeded: it no longer counts as failing.
    pub fn clear_local_error(&self, op: &'static str) {
        let mut errors = self.local_errors.lock();
        if errors.remove(op).is_some() {
            self.local_io_failing.set(errors.len() as i64);
        }
    }

    /// Records that a lane's thread stopped for good (`what`: which and why); it shows as a
    /// local storage error (health, readiness) and fails `/v1/live`.
    pub fn record_fatal(&self, op: &'static str, what: String) {
        self.record_local_error(op, &what);
        self.fatal.lock().get_or_insert(what);
    }

    /// Why the process should be restarted, if it should.
    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().clone()
    }

    /// The local storage operations failing now, as one line (`None`: none is).
    pub fn local_error(&self) -> Option<String> {
        let errors = self.local_errors.lock();
        (!errors.is_empty()).then(|| {
            errors
                .iter()
                .map(|(op, e)| format!("{op}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Rejected events over all reasons.
    pub fn events_rejected_total(&self) -> u64 {
        sum(&self.events_rejected)
    }

    /// Events quarantined during this run, in every table.
    pub fn events_quarantined_all(&self) -> u64 {
        self.events_quarantined.get() + sum(&self.table_events_quarantined)
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for I/O; a failure would be a malformed metric.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
