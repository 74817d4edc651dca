//! The flusher against an in-process sink.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::FlusherGuard;
use super::spawn;
use crate::format::RowsRef;
use crate::lane::buffer::{DoubleBuffer, Limits};
use crate::lane::quarantine::Quarantine;
use crate::sink::{InsertId, Sink, SinkError};
use crate::stats::Stats;
use crate::table::event::testing;
use parking_lot::Mutex;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

/// An in-process sink: no wire is crossed, so a fake is the honest tool here. It
/// records what it receives as encoded rows.
#[derive(Default)]
struct FakeSink {
    written: Mutex<Vec<u8>>,
    rows_written: AtomicUsize,
    inserts: AtomicUsize,
    /// Fail this many attempts with a retryable error first.
    failures: AtomicUsize,
    /// Reject any chunk containing this row's encoding as bad data.
    poison: Option<Vec<u8>>,
    /// Never answer.
    hang: bool,
    /// The token of every attempt, in order.
    tokens: Mutex<Vec<String>>,
    /// How long each write takes.
    delay: Duration,
    /// Probes answered (`None`: the sink cannot probe).
    probes: Option<AtomicUsize>,
    /// Reject rows with these encodings too (changed between runs: an altered table).
    poison_set: Mutex<Vec<Vec<u8>>>,
    /// Drop an insert whose token was stored before, as ClickHouse 22.2+ does.
    dedup: bool,
    /// Tokens stored.
    stored_tokens: Mutex<std::collections::HashSet<String>>,
    /// Refuse inserts of more rows than this as over the server's memory limit.
    max_rows: Option<usize>,
    /// Refuse this many inserts with an exception that names no row (the table's state).
    table_refusals: AtomicUsize,
    /// Panic in every write.
    panics: bool,
    /// Rows of this many bytes whose first 4 name their column list: each run of one list
    /// is its own insert, stored in order until one is refused (as a table's sink does).
    tagged_rows: Option<usize>,
}

impl FakeSink {
    fn rejects(&self, rows: RowsRef<'_>) -> bool {
        let has = |p: &Vec<u8>| rows.data.windows(p.len()).any(|w| w == p.as_slice());
        self.poison.as_ref().is_some_and(has) || self.poison_set.lock().iter().any(has)
    }
}

impl Sink for FakeSink {
    async fn answers_queries(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn probe(&self, rows: RowsRef<'_>, _fresh: bool) -> Result<(), SinkError> {
        let Some(probes) = &self.probes else {
            return Err(SinkError::Retryable("cannot probe".into()));
        };
        probes.fetch_add(1, Relaxed);
        match self.rejects(rows) {
            true => Err(SinkError::Data(
                "Code: 6. DB::Exception: cannot parse".into(),
            )),
            false => Ok(()),
        }
    }

    fn list_tag_len(&self) -> usize {
        self.tagged_rows.map_or(0, |_| 4)
    }

    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        if let Some(len) = self.tagged_rows {
            // One insert per run of one list, in order: a refused run leaves the runs
            // before it stored.
            for run in rows
                .data
                .chunks(len)
                .collect::<Vec<_>>()
                .chunk_by(|a, b| a[..4] == b[..4])
            {
                let data = run.concat();
                let run = RowsRef {
                    data: &data,
                    count: run.len(),
                };
                if self.rejects(run) {
                    return Err(SinkError::Data(
                        "Code: 53. DB::Exception: type mismatch".into(),
                    ));
                }
                self.inserts.fetch_add(1, Relaxed);
                self.rows_written.fetch_add(run.count, Relaxed);
                self.written.lock().extend_from_slice(run.data);
            }
            return Ok(());
        }
        self.tokens
            .lock()
            .push(id.map(|i| i.token).unwrap_or_default().to_string());
        if self.hang {
            std::future::pending::<()>().await;
        }
        assert!(!self.panics, "the sink panics");
        tokio::time::sleep(self.delay).await;
        if self
            .failures
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Retryable("connection refused".into()));
        }
        if self.rejects(rows) {
            return Err(SinkError::Data(
                "Code: 53. DB::Exception: type mismatch".into(),
            ));
        }
        if self
            .table_refusals
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SinkError::Retryable(
                "Code: 4242. DB::Exception: the table takes no inserts now".into(),
            ));
        }
        if self.max_rows.is_some_and(|max| rows.count > max) {
            return Err(SinkError::Retryable(
                "Code: 241. DB::Exception: Memory limit (for query) exceeded".into(),
            ));
        }
        if self.dedup
            && let Some(id) = id
            && !self.stored_tokens.lock().insert(id.token.to_string())
        {
            return Ok(()); // stored before under this token: dropped
        }
        self.inserts.fetch_add(1, Relaxed);
        self.rows_written.fetch_add(rows.count, Relaxed);
        self.written.lock().extend_from_slice(rows.data);
        Ok(())
    }
}

/// A flusher over a fresh buffer; the temporary folder (its quarantine's parent) is removed
/// when the caller drops it.
/// Starts a flusher over a memory buffer of `size`-event swaps, with a shutdown budget long
/// enough for any test's work on a loaded machine (a short one made a probe-and-split test
/// flaky under the full suite).
fn start(
    sink: Arc<FakeSink>,
    size: usize,
) -> (
    Arc<DoubleBuffer>,
    Arc<Stats>,
    FlusherGuard,
    tempfile::TempDir,
) {
    start_with_budget(sink, size, Duration::from_secs(10))
}

/// [`start`] with a shutdown budget of `budget`.
fn start_with_budget(
    sink: Arc<FakeSink>,
    size: usize,
    budget: Duration,
) -> (
    Arc<DoubleBuffer>,
    Arc<Stats>,
    FlusherGuard,
    tempfile::TempDir,
) {
    let buffer = Arc::new(DoubleBuffer::new(Limits {
        swap_events: size,
        flush_interval: Duration::from_secs(3600),
        min_interval: Duration::ZERO,
        max_bytes: usize::MAX,
        full_wait: Duration::ZERO,
    }));
    let stats = Arc::new(Stats::default());
    let quarantine_tmp = tempfile::tempdir().expect("temp dir");
    let quarantine = quarantine_tmp.path().join("q");
    let guard = spawn(
        buffer.clone(),
        sink,
        Arc::new(Quarantine::new(quarantine)),
        stats.clone(),
        budget,
    )
    .unwrap();
    (buffer, stats, guard, quarantine_tmp)
}

/// A `disk`-mode buffer over `spool` (1,000-event swaps, 50 ms timer, 64 MiB cap), spilled
/// from `from` as after a restart with a backlog.
fn spilled_buffer(spool: Arc<crate::lane::spool::Spool>, from: Option<u64>) -> Arc<DoubleBuffer> {
    Arc::new(DoubleBuffer::with_spool(
        Limits {
            swap_events: 1_000,
            flush_interval: Duration::from_millis(50),
            min_interval: Duration::ZERO,
            max_bytes: 1 << 26,
            full_wait: Duration::ZERO,
        },
        spool,
        from,
    ))
}

fn append(buffer: &DoubleBuffer, range: std::ops::Range<u32>) {
    buffer.append(&mut testing::rows(range)).unwrap();
}

fn encoded(range: impl IntoIterator<Item = u32>) -> Vec<u8> {
    let mut out = Vec::new();
    for n in range {
        testing::event(n).encode(&mut out);
    }
    out
}

#[test]
fn transient_failures_are_retried_until_every_row_is_written_once() {
    let sink = Arc::new(FakeSink {
        failures: AtomicUsize::new(3),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 10);
    append(&buffer, 0..10);
    // The size trigger fired; wait until the retries got the batch through.
    while sink.inserts.load(Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = guard.shutdown(Instant::now());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(*sink.written.lock(), encoded(0..10));
    assert_eq!(stats.insert_retries.get(), 3);
    assert!(stats.last_error.lock().is_none(), "cleared by the success");
}

#[test]
fn a_poison_row_is_isolated_and_the_rest_written() {
    let sink = Arc::new(FakeSink {
        poison: Some(encoded([13])),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 1_000);
    append(&buffer, 0..32);
    let report = guard.shutdown(Instant::now());
    assert!(report.is_clean(), "{report:?}");
    // Chunks are written in order, so the bytes are the batch less the poison row.
    assert_eq!(*sink.written.lock(), encoded((0..32).filter(|&n| n != 13)));
    assert_eq!(stats.events_quarantined.get(), 1);
}

#[test]
fn a_refusal_a_copy_of_the_table_does_not_share_is_waited_out_not_blamed_on_the_rows() {
    let sink = Arc::new(FakeSink {
        table_refusals: AtomicUsize::new(6),
        probes: Some(AtomicUsize::new(0)),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 1_000);
    append(&buffer, 0..32);
    assert!(guard.shutdown(Instant::now()).is_clean());
    assert_eq!(*sink.written.lock(), encoded(0..32));
    assert_eq!(sink.inserts.load(Relaxed), 1, "one insert, not split");
    assert_eq!(stats.events_quarantined.get(), 0);
}

#[test]
fn a_flusher_that_panics_says_so_and_its_rows_count_as_unwritten() {
    let sink = Arc::new(FakeSink {
        panics: true,
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 10);
    append(&buffer, 0..32);
    let waited = Instant::now();
    while stats.fatal().is_none() && waited.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(stats.fatal().unwrap().contains("flusher thread stopped"));
    assert!(stats.local_error().is_some());
    let report = guard.shutdown(Instant::now());
    assert!(!report.is_clean(), "{report:?}");
}

#[test]
fn an_insert_refused_as_too_large_is_split_not_resent_whole() {
    let sink = Arc::new(FakeSink {
        max_rows: Some(5),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 1_000);
    append(&buffer, 0..32);
    assert!(guard.shutdown(Instant::now()).is_clean());
    assert_eq!(*sink.written.lock(), encoded(0..32));
    assert!(sink.inserts.load(Relaxed) >= 7);
    assert_eq!(stats.events_quarantined.get(), 0);
}

#[test]
fn with_a_probe_the_good_rows_go_in_one_insert() {
    let sink = Arc::new(FakeSink {
        poison: Some(encoded([13])),
        probes: Some(AtomicUsize::new(0)),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 1_000);
    append(&buffer, 0..32);
    assert!(guard.shutdown(Instant::now()).is_clean());
    assert_eq!(*sink.written.lock(), encoded((0..32).filter(|&n| n != 13)));
    assert_eq!(
        sink.inserts.load(Relaxed),
        1,
        "not one insert per good half"
    );
    assert!(sink.probes.as_ref().unwrap().load(Relaxed) >= 5);
    assert_eq!(stats.events_quarantined.get(), 1);
    let tokens = sink.tokens.lock().clone();
    assert!(tokens.last().unwrap().contains(":0-32:kept:"), "{tokens:?}");
}

#[test]
fn shutdown_flushes_what_no_trigger_would() {
    let sink = Arc::new(FakeSink::default());
    let (buffer, _, guard, _tmp) = start(sink.clone(), 1_000_000);
    append(&buffer, 0..7);
    append(&buffer, 7..9);
    assert!(guard.shutdown(Instant::now()).is_clean());
    assert_eq!(sink.rows_written.load(Relaxed), 9);
    assert_eq!(sink.inserts.load(Relaxed), 1, "one insert for the rest");
}

/// A batch of 700,000 rows (a second of events at 700,000 a second) is one insert: one
/// part for ClickHouse to merge, not a full insert and a small remainder.
#[test]
fn a_700000_row_batch_is_one_insert() {
    let sink = Arc::new(FakeSink::default());
    let (buffer, _, guard, _tmp) = start(sink.clone(), 2_000_000);
    append(&buffer, 0..700_000);
    assert!(guard.shutdown(Instant::now()).is_clean());
    assert_eq!(sink.rows_written.load(Relaxed), 700_000);
    assert_eq!(sink.inserts.load(Relaxed), 1);
}

#[test]
fn a_sink_that_never_answers_cannot_hold_shutdown_past_its_deadline() {
    let sink = Arc::new(FakeSink {
        hang: true,
        ..FakeSink::default()
    });
    let (buffer, _, guard, _tmp) = start_with_budget(sink, 1_000_000, Duration::from_millis(300));
    append(&buffer, 0..5);
    let report = guard.shutdown(Instant::now());
    // The deadline is 300 ms; it returns (rather than hanging) and owns up to the loss.
    assert_eq!(report.unwritten, 5);
    assert!(!report.is_clean());
}

#[test]
fn retries_carry_the_same_token() {
    let sink = Arc::new(FakeSink {
        failures: AtomicUsize::new(2),
        ..FakeSink::default()
    });
    let (buffer, _, guard, _tmp) = start(sink.clone(), 10);
    append(&buffer, 0..10);
    while sink.inserts.load(Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    append(&buffer, 10..20);
    assert!(guard.shutdown(Instant::now()).is_clean());
    let tokens = sink.tokens.lock().clone();
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert_eq!(tokens[0], tokens[1]);
    assert_eq!(tokens[1], tokens[2]);
    assert_ne!(tokens[2], tokens[3], "the next batch has its own");
}

#[test]
fn a_spool_backlog_goes_first_and_steady_traffic_returns_to_memory() {
    use crate::lane::spool::{self, Spool, WriterGuard};
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("spill");
    let (spool, _) = Spool::open(&dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    // As after a restart with a backlog: the buffer starts spilled at position 0.
    let buffer = spilled_buffer(spool.clone(), Some(0));
    let submit = |n: u32| {
        let mut rows = testing::rows(n..n + 5);
        let framed = spool::frame(&rows);
        buffer.append_spooled(&mut rows, &framed).unwrap()
    };
    let mut n = 0;
    while n < 500 {
        submit(n);
        n += 5;
    }
    let sink = Arc::new(FakeSink {
        delay: Duration::from_millis(20),
        ..FakeSink::default()
    });
    let quarantine_tmp = tempfile::tempdir().expect("temp dir");
    let quarantine = quarantine_tmp.path().join("q");
    let guard = spawn(
        buffer.clone(),
        sink.clone(),
        Arc::new(Quarantine::new(quarantine)),
        Arc::new(Stats::default()),
        Duration::from_secs(5),
    )
    .unwrap();
    // Steady traffic during the replay: never a moment when the spool is caught up exactly.
    let mut in_memory = false;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        let end = submit(n);
        n += 5;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(spool.wait_durable(end)).unwrap();
        in_memory |= buffer.pending_events() > 0;
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(in_memory, "the buffer went back to memory");
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    // Every row once, in order: the backlog first, then the rest.
    assert_eq!(*sink.written.lock(), encoded(0..n));
}

#[test]
fn a_replayed_batch_skips_the_chunks_stored_before_the_restart() {
    replay_skips_done_rows(false, true);
    replay_skips_done_rows(true, true);
}

/// The rows stored before the restart are skipped also when the rest of the batch now goes
/// in whole (the table was fixed meanwhile): the chunk is cut around them, not resent.
#[test]
fn a_replayed_batch_accepted_whole_never_resends_the_rows_marked_done() {
    replay_skips_done_rows(false, false);
}

fn replay_skips_done_rows(probing: bool, still_bad: bool) {
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("replay");
    // A first run sent rows 0..32 as one batch: ClickHouse refused it (row 20 is bad), the
    // first half went in, and the process died.
    let whole = 0..32;
    first_run(&dir, std::slice::from_ref(&whole), 0..16);
    let sink = Arc::new(FakeSink {
        poison: still_bad.then(|| encoded([20])),
        probes: probing.then(|| AtomicUsize::new(0)),
        ..FakeSink::default()
    });
    let (guard, writer) = replay_run(&dir, sink.clone());
    let expected = match still_bad {
        true => encoded((16..32).filter(|&n| n != 20)),
        false => encoded(16..32),
    };
    while sink.rows_written.load(Relaxed) < expected.len() / encoded([0]).len() {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    assert_eq!(*sink.written.lock(), expected);
    if still_bad {
        let quarantined = std::fs::read_dir(dir.join("quarantine")).unwrap().count();
        assert_eq!(quarantined, 1, "row 20's file");
    }
}

/// Done marks name records by position: a record of the begun batch damaged between runs
/// (its rows are lost, and said so) leaves the other records' marks where they were, so
/// the replay neither resends the rows stored before the restart nor skips rows that were
/// never stored.
#[test]
fn a_record_damaged_between_runs_does_not_shift_the_rows_marked_done() {
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("replay");
    // A first run: three records of ten rows begun as one batch; the second record's rows
    // were stored, then the process died.
    let spans = first_run(&dir, &[0..10, 10..20, 20..30], 10..20);
    // The first record is damaged on disk since.
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = (spans[0].start + (spans[0].end - spans[0].start) / 2) as usize;
    bytes[middle] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let sink = Arc::new(FakeSink::default());
    let (guard, writer) = replay_run(&dir, sink.clone());
    let expected = encoded(20..30);
    assert!(eventually(Duration::from_secs(10), || {
        sink.rows_written.load(Relaxed) >= 10
    }));
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    assert_eq!(
        *sink.written.lock(),
        expected,
        "only the third record's rows"
    );
}

/// A "previous run" in `dir`: one record per range of `records`, begun as one batch, rows
/// `done` of it stored; returns each record's span.
fn first_run(
    dir: &std::path::Path,
    records: &[std::ops::Range<u32>],
    done: std::ops::Range<usize>,
) -> Vec<std::ops::Range<u64>> {
    use crate::lane::spool::{self, Spool, WriterGuard};
    let (spool, _) = Spool::open(dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let spans: Vec<_> = (records.iter())
        .map(|r| {
            spool
                .reserve(&spool::frame(&testing::rows(r.clone())))
                .unwrap()
        })
        .collect();
    let end = spans.last().expect("a record").end;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(spool.wait_durable(end)).unwrap();
    spool.begin(spans[0].start..end).unwrap();
    spool.mark_done(done).unwrap();
    writer.stop();
    spans
}

/// The next run over `dir`'s spool: its flusher replays the begun batch into `sink`.
fn replay_run(
    dir: &std::path::Path,
    sink: Arc<FakeSink>,
) -> (super::FlusherGuard, crate::lane::spool::WriterGuard) {
    use crate::lane::spool::{Spool, WriterGuard};
    let limits = Limits {
        swap_events: 1_000,
        flush_interval: Duration::from_millis(50),
        min_interval: Duration::ZERO,
        max_bytes: 1 << 26,
        full_wait: Duration::ZERO,
    };
    let (spool, backlog) = Spool::open(dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let buffer = Arc::new(DoubleBuffer::with_spool(
        limits,
        spool,
        backlog.map(|b| b.from),
    ));
    let guard = spawn(
        buffer,
        sink,
        Arc::new(Quarantine::new(dir.join("quarantine"))),
        Arc::new(Stats::default()),
        Duration::from_secs(5),
    )
    .unwrap();
    (guard, writer)
}

/// A spool holding `requests` records of 5 rows each (sequences from 0), left by a
/// "previous run"; returns the reopened spool, its writer and a buffer starting spilled.
fn spool_with_backlog(
    dir: &std::path::Path,
    requests: u32,
) -> (
    Arc<crate::lane::spool::Spool>,
    crate::lane::spool::WriterGuard,
    Arc<DoubleBuffer>,
) {
    use crate::lane::spool::{self, Spool, WriterGuard};
    {
        let (spool, _) = Spool::open(dir, 1 << 30).unwrap();
        let spool = Arc::new(spool);
        let writer = WriterGuard::spawn(spool.clone()).unwrap();
        let mut end = 0;
        for r in 0..requests {
            let framed = spool::frame(&testing::rows(r * 5..r * 5 + 5));
            end = spool.reserve(&framed).unwrap().end;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(spool.wait_durable(end)).unwrap();
        writer.stop();
    }
    let (spool, backlog) = Spool::open(dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let buffer = spilled_buffer(spool.clone(), backlog.map(|b| b.from));
    (spool, writer, buffer)
}

/// Waits until `done` holds, for at most `limit`; whether it did.
fn eventually(limit: Duration, done: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[test]
fn transient_read_errors_delay_a_replay_but_never_skip_it() {
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("readfault");
    let (spool, writer, buffer) = spool_with_backlog(&dir, 40);
    // EMFILE on the next 25 reads: more than any fixed retry budget.
    spool.read_faults.store(25, Relaxed);
    let sink = Arc::new(FakeSink::default());
    let stats = Arc::new(Stats::default());
    let guard = spawn(
        buffer,
        sink.clone(),
        Arc::new(Quarantine::new(dir.join("quarantine"))),
        stats.clone(),
        Duration::from_secs(5),
    )
    .unwrap();
    let failing_seen = eventually(Duration::from_secs(20), || {
        stats.local_error().is_some() || sink.rows_written.load(Relaxed) > 0
    });
    assert!(failing_seen);
    let all = eventually(Duration::from_secs(30), || {
        sink.rows_written.load(Relaxed) >= 200
    });
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    assert!(all, "only {} of 200 rows", sink.rows_written.load(Relaxed));
    assert_eq!(
        *sink.written.lock(),
        encoded(0..200),
        "every row, once, in order"
    );
    let errors = stats
        .local_io_errors
        .with_label_values(&["spool_read"])
        .get();
    assert_eq!(errors, 25, "each failure counted");
    assert_eq!(stats.local_error(), None, "cleared by the read that passed");
}

#[test]
fn an_unwritable_quarantine_shows_at_once_and_holds_back_no_good_rows() {
    // `memory` mode; the quarantine's folder cannot be created (a file is in the way).
    let blocker_tmp = tempfile::tempdir().expect("temp dir");
    let blocker = blocker_tmp.path().join("qfile");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let sink = Arc::new(FakeSink {
        poison: Some(encoded([3])),
        probes: Some(AtomicUsize::new(0)),
        ..FakeSink::default()
    });
    let buffer = Arc::new(DoubleBuffer::new(Limits {
        swap_events: 10,
        flush_interval: Duration::from_secs(3600),
        min_interval: Duration::ZERO,
        max_bytes: usize::MAX,
        full_wait: Duration::ZERO,
    }));
    let stats = Arc::new(Stats::default());
    let guard = spawn(
        buffer.clone(),
        sink.clone(),
        Arc::new(Quarantine::new(blocker.join("quarantine"))),
        stats.clone(),
        Duration::from_millis(500),
    )
    .unwrap();
    append(&buffer, 0..10); // row 3 is rejected
    append(&buffer, 10..20);
    append(&buffer, 20..30);
    let flowing = eventually(Duration::from_secs(10), || {
        sink.rows_written.load(Relaxed) >= 29
    });
    let shown = stats.local_error();
    let report = guard.shutdown(Instant::now());
    assert!(
        flowing,
        "good rows held back: {}",
        sink.rows_written.load(Relaxed)
    );
    assert!(
        shown
            .as_deref()
            .is_some_and(|e| e.starts_with("quarantine")),
        "{shown:?}"
    );
    // The first write, a retry before each later batch (none to two: appends may share a
    // half), and one at exit.
    let failures = stats
        .local_io_errors
        .with_label_values(&["quarantine"])
        .get();
    assert!((2..=4).contains(&failures), "{failures}");
    assert_eq!(*sink.written.lock(), encoded((0..30).filter(|&n| n != 3)));
    assert_eq!(
        report.unwritten, 1,
        "the rejected row, never stored: {report:?}"
    );
    std::fs::remove_file(blocker).unwrap();
}

#[test]
fn kept_rows_that_differ_on_a_replay_get_their_own_token() {
    use crate::lane::spool::{Spool, WriterGuard};
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("kept");
    let sink = Arc::new(FakeSink {
        probes: Some(AtomicUsize::new(0)),
        dedup: true,
        ..FakeSink::default()
    });
    // First run: rows 20 and 21 are rejected, the 38 others stored; the quarantine cannot
    // be written, so the batch is never confirmed (as after a crash before the quarantine).
    *sink.poison_set.lock() = vec![encoded([20]), encoded([21])];
    let (spool, writer, buffer) = spool_with_backlog(&dir, 8);
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    // Parking fails too (a folder is in the way), so the rows stay in the spool.
    let parked = crate::lane::quarantine::parked_path(&dir);
    std::fs::create_dir(&parked).unwrap();
    let guard = spawn(
        buffer,
        sink.clone(),
        Arc::new(Quarantine::new(blocker.join("quarantine"))),
        Arc::new(Stats::default()),
        Duration::from_millis(300),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        sink.rows_written.load(Relaxed) >= 38
    }));
    assert_eq!(guard.shutdown(Instant::now()).spooled, 2);
    writer.stop();
    drop(spool);

    std::fs::remove_dir(&parked).unwrap();

    // The table was altered meanwhile: row 21 is fine now. The replay keeps 39 rows; under
    // the first run's token they would be dropped, and row 21 lost.
    *sink.poison_set.lock() = vec![encoded([20])];
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let buffer = spilled_buffer(spool, backlog.map(|b| b.from));
    let guard = spawn(
        buffer,
        sink.clone(),
        Arc::new(Quarantine::new(dir.join("quarantine"))),
        Arc::new(Stats::default()),
        Duration::from_secs(5),
    )
    .unwrap();
    let row_21 = encoded([21]);
    let stored_21 = eventually(Duration::from_secs(10), || {
        sink.written
            .lock()
            .windows(row_21.len())
            .any(|w| w == row_21.as_slice())
    });
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    assert!(
        stored_21,
        "row 21 was dropped as a duplicate: it was never stored"
    );
}

#[test]
fn disk_mode_parks_rows_the_quarantine_cannot_take_and_later_batches_flow() {
    use crate::lane::spool::{self, Spool, WriterGuard};
    let dir_tmp = tempfile::tempdir().expect("temp dir");
    let dir = dir_tmp.path().join("parking");
    // A backlog of rows 0..40 (row 3 rejected) and a quarantine that cannot be written.
    let (spool, writer, buffer) = spool_with_backlog(&dir, 8);
    let blocker = dir_tmp.path().join("qfile");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let sink = Arc::new(FakeSink {
        poison: Some(encoded([3])),
        probes: Some(AtomicUsize::new(0)),
        ..FakeSink::default()
    });
    let stats = Arc::new(Stats::default());
    let guard = spawn(
        buffer.clone(),
        sink.clone(),
        Arc::new(Quarantine::new(blocker.join("quarantine"))),
        stats.clone(),
        Duration::from_secs(2),
    )
    .unwrap();
    // Later requests: batches after the one with the rejected row.
    let mut end = 0;
    for n in (40..60).step_by(5) {
        let mut rows = testing::rows(n..n + 5);
        let framed = spool::frame(&rows);
        end = buffer.append_spooled(&mut rows, &framed).unwrap();
    }
    let flowing = eventually(Duration::from_secs(10), || {
        sink.rows_written.load(Relaxed) >= 59
    });
    let shown = stats.local_error();
    let report = guard.shutdown(Instant::now());
    writer.stop();
    assert!(
        flowing,
        "good rows held back: {}",
        sink.rows_written.load(Relaxed)
    );
    assert!(
        shown
            .as_deref()
            .is_some_and(|e| e.starts_with("quarantine")),
        "{shown:?}"
    );
    assert_eq!(*sink.written.lock(), encoded((0..60).filter(|&n| n != 3)));
    assert!(report.is_clean(), "every batch confirmed: {report:?}");
    assert_eq!(spool.durable(), end);
    let parked = std::fs::read_to_string(crate::lane::quarantine::parked_path(&dir)).unwrap();
    assert_eq!(parked.lines().count(), 1, "row 3, on disk: {parked}");
    drop((spool, buffer));

    // Nothing is replayed; the next start moves the parked row to the quarantine.
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert!(
        backlog.is_none(),
        "the spool was confirmed past the rejected row"
    );
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let buffer = spilled_buffer(spool, None);
    let stats = Arc::new(Stats::default());
    let guard = spawn(
        buffer,
        sink.clone(),
        Arc::new(Quarantine::new(dir.join("quarantine"))),
        stats.clone(),
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(guard.shutdown(Instant::now()).is_clean());
    writer.stop();
    assert!(!crate::lane::quarantine::parked_path(&dir).exists());
    assert_eq!(stats.events_quarantined.get(), 1);
    let files: Vec<_> = std::fs::read_dir(dir.join("quarantine"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(files.len(), 1);
    let line: serde_json::Value = serde_json::from_str(files[0].trim()).unwrap();
    assert_eq!(line["event"]["sequence"], 3);
    assert_eq!(
        line["error"],
        "ClickHouse rejected the data: Code: 6. DB::Exception: cannot parse"
    );
}

/// Rows of two column lists in one batch are never one write: the sink inserts each list's
/// run on its own, so a batch whose second run is refused as data would otherwise be
/// resent, first run included, while the search for the bad row splits it.
#[test]
fn a_batch_spanning_two_column_lists_stores_each_row_once_when_one_run_is_refused() {
    let row = |tag: u8, n: u32| {
        let mut row = vec![tag, 0, 0, 0];
        row.extend_from_slice(&n.to_le_bytes());
        row
    };
    let sink = Arc::new(FakeSink {
        tagged_rows: Some(8),
        poison: Some(row(2, 14)),
        ..FakeSink::default()
    });
    let (buffer, stats, guard, _tmp) = start(sink.clone(), 19);
    let mut rows = crate::format::Rows::default();
    for n in 0..19 {
        rows.push_encoded(&row(if n < 10 { 1 } else { 2 }, n));
    }
    buffer.append(&mut rows).unwrap();
    while stats.events_quarantined.get() == 0 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = guard.shutdown(Instant::now());
    assert!(report.is_clean(), "{report:?}");
    let written = sink.written.lock().clone();
    let mut ids: Vec<u32> = written
        .chunks(8)
        .map(|r| u32::from_le_bytes(r[4..].try_into().unwrap()))
        .collect();
    ids.sort_unstable();
    let expected: Vec<u32> = (0..19).filter(|&n| n != 14).collect();
    assert_eq!(ids, expected, "each good row once");
}
