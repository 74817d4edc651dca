//! Never losing an accepted event: ClickHouse outages under load, `kill -9`, a damaged spool,
//! rows ClickHouse refuses, a full spool, and retries after an ambiguous failure.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    PATIENCE, SpoolDir, batch, clickhouse, clickhouse_url, closed_port, count_rows, drop_database,
    event, forward_to_clickhouse, post_until_refused, spawn_app, unique_database, wait_for_rows,
    within,
};
use crate::load::{self, lost_and_duplicated, stored};
use crate::own_clickhouse::OwnClickHouse;
use crate::process::{signal, start_binary, stop_with};

/// Whether the server at `url` deduplicates by `insert_deduplication_token` (22.2+).
async fn supports_tokens(url: &str) -> bool {
    let version = crate::helpers::clickhouse_at(url, "SELECT version()").await;
    let mut parts = version
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (22, 2)
}

/// Polls until every acknowledged sequence is stored (or panics after `limit`).
async fn wait_until_stored(url: &str, database: &str, acked: &[u32], limit: Duration) {
    within(limit, async {
        loop {
            let (lost, _) = lost_and_duplicated(acked, &stored(url, database).await);
            if lost == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clickhouse_outage_under_load_loses_and_duplicates_nothing() {
    let ch = OwnClickHouse::start().await;
    let spool = SpoolDir::new();
    let port = ch.port.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        ("BUFFER_MAX_BYTES", "262144"),
        ("BUFFER_FLUSH_MS", "200"),
    ])
    .await;
    let load = load::start(&app.address, 8, 20);
    tokio::time::sleep(Duration::from_secs(2)).await;

    ch.down().await;
    // 12 s without ClickHouse: memory stays within its cap, the spool takes the rest.
    let mut spool_peak = 0;
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let health: Value = app.get("/v1/health").await.json().await.unwrap();
        let (used, max) = (
            health["buffer_bytes"].as_u64(),
            health["buffer_max_bytes"].as_u64(),
        );
        assert!(used <= max, "memory over its cap: {health}");
        spool_peak = spool_peak.max(health["spool"]["bytes"].as_u64().unwrap());
    }
    ch.up().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tally = load.stop().await;

    assert!(tally.acked.len() > 1_000, "{tally:?}");
    assert!(
        spool_peak > 262_144,
        "the spool held more than memory could: {spool_peak}"
    );
    wait_until_stored(&ch.url(), &app.database, &tally.acked, 2 * PATIENCE).await;
    let stored = stored(&ch.url(), &app.database).await;
    let (lost, duplicated) = lost_and_duplicated(&tally.acked, &stored);
    assert_eq!(lost, 0, "{:?}", tally.statuses);
    if supports_tokens(&ch.url()).await {
        assert_eq!(duplicated, 0, "retries carried their tokens");
    } else if duplicated > 0 {
        // Before 22.2 delivery is at-least-once, as documented: an insert ClickHouse stored
        // while stopping, whose answer was lost, is resent unless the query log can tell.
        eprintln!("at-least-once on this server: {duplicated} events stored twice");
    }
    assert_eq!(
        stored.len(),
        tally.acked.len(),
        "only acknowledged events are stored"
    );
    assert_eq!(tally.unexpected_5xx(), 0, "{:?}", tally.statuses);
    assert!(app.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_disk_mode_loses_no_acknowledged_event() {
    let database = unique_database();
    let spool = SpoolDir::new();
    let env = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        ("BUFFER_FLUSH_MS", "500"),
    ];
    let (mut child, address) = start_binary(&database, &env).await;
    let load = load::start(&address, 8, 20);
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&child, "KILL");
    within(PATIENCE, child.wait()).await.unwrap();
    let tally = load.stop().await;
    assert!(tally.acked.len() > 100, "{tally:?}");
    assert_eq!(tally.unexpected_5xx(), 0, "{:?}", tally.statuses);

    let (child, _) = start_binary(&database, &env).await;
    wait_until_stored(&clickhouse_url(), &database, &tally.acked, PATIENCE).await;
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    let (lost, duplicated) =
        lost_and_duplicated(&tally.acked, &stored(&clickhouse_url(), &database).await);
    assert_eq!(lost, 0);
    // An insert ClickHouse stored just before the kill, not yet confirmed in the spool, is
    // replayed under the same token: dropped by 22.2+, found in the query log before.
    assert_eq!(duplicated, 0, "the replay stored nothing twice");
    drop_database(&database).await;
}

/// The spool's newest segment file.
fn newest_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter(|p| p.metadata().unwrap().len() > 0)
        .collect();
    segments.sort();
    segments.pop().expect("a segment with records")
}

#[tokio::test]
async fn a_torn_spool_tail_is_skipped_with_a_log_line_and_the_rest_replays() {
    let database = unique_database();
    let spool = SpoolDir::new();
    let disk = [("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())];
    // ClickHouse is unreachable: SIGTERM leaves the events in the spool, and exits 0.
    let log = crate::process::spool_with_clickhouse_down(&database, spool.path(), 5).await;
    assert!(log.contains("stay in the spool"), "{log}");

    // A crash mid-write: the last record (the fifth request) is cut short.
    let segment = newest_segment(spool.dir());
    let len = segment.metadata().unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 50)
        .unwrap();

    let (child, _) = start_binary(&database, &disk).await;
    wait_for_rows(&database, 40).await;
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    assert!(log.contains("torn record"), "{log}");
    let stored = stored(&clickhouse_url(), &database).await;
    let expected: HashMap<u32, u64> = (0..40).map(|s| (s, 1)).collect();
    assert_eq!(stored, expected);
    drop_database(&database).await;
}

#[tokio::test]
async fn rows_clickhouse_rejects_are_quarantined_and_the_rest_flows() {
    let spool = SpoolDir::new();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())]).await;
    // Altered underneath: a derived column that cannot be computed for some rows.
    clickhouse(&format!(
        "ALTER TABLE `{}`.events ADD COLUMN param_num UInt8 MATERIALIZED toUInt8(param_str)",
        app.database
    ))
    .await;
    let poison = [3, 11, 17];
    let events: Vec<Value> = (0..20)
        .map(|s| {
            let mut e = event(s);
            e["param_str"] = if poison.contains(&s) { "abc" } else { "12" }.into();
            e
        })
        .collect();
    assert_eq!(
        app.post_events(Value::Array(events).to_string())
            .await
            .status(),
        200
    );
    wait_for_rows(&app.database, 17).await;

    let lines = spool.quarantined(3).await;
    let mut quarantined: Vec<u64> = lines
        .iter()
        .map(|l| l["event"]["sequence"].as_u64().unwrap())
        .collect();
    quarantined.sort();
    assert_eq!(quarantined, [3, 11, 17]);
    for line in &lines {
        assert!(
            line["error"].as_str().unwrap().contains("Code: 6"),
            "{line}"
        );
        assert_eq!(line["event"]["param_str"], "abc");
    }

    // The pipeline keeps flowing.
    let more: Vec<Value> = (100..110)
        .map(|s| {
            let mut e = event(s);
            e["param_str"] = "7".into();
            e
        })
        .collect();
    assert_eq!(
        app.post_events(Value::Array(more).to_string())
            .await
            .status(),
        200
    );
    wait_for_rows(&app.database, 27).await;
    let stats = app.stats.clone();
    assert!(app.stop().await.is_clean());
    assert_eq!(stats.events_quarantined.get(), 3);
    // Found with the probe table: the 17 good rows went in one insert, not in halves.
    assert_eq!(stats.inserts.get(), 2, "one insert per request");
}

#[tokio::test]
async fn a_row_refused_with_a_retryable_looking_code_is_quarantined_and_the_lane_flows() {
    let spool = SpoolDir::new();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())]).await;
    // A derived column that throws for one row's value with a code that does not say
    // "bad data" (131, TOO_LARGE_STRING_SIZE): the whole insert is refused each time.
    clickhouse(&format!(
        "ALTER TABLE `{}`.events ADD COLUMN short String \
         MATERIALIZED toString(toFixedString(param_str, 2))",
        app.database
    ))
    .await;
    let events: Vec<Value> = (0..10)
        .map(|s| {
            let mut e = event(s);
            e["param_str"] = if s == 6 { "too long" } else { "ok" }.into();
            e
        })
        .collect();
    let response = app.post_events(Value::Array(events).to_string()).await;
    assert_eq!(response.status(), 200);
    wait_for_rows(&app.database, 9).await;
    let lines = spool.quarantined(1).await;
    assert_eq!(lines[0]["event"]["sequence"], 6);
    assert!(
        lines[0]["error"].as_str().unwrap().contains("Code: 131"),
        "{}",
        lines[0]
    );

    // Rows posted later are stored too.
    let later: Vec<Value> = (100..105)
        .map(|s| {
            let mut e = event(s);
            e["param_str"] = "ok".into();
            e
        })
        .collect();
    let response = app.post_events(Value::Array(later).to_string()).await;
    assert_eq!(response.status(), 200);
    wait_for_rows(&app.database, 14).await;
    let stats = app.stats.clone();
    assert!(app.stop().await.is_clean());
    assert_eq!(stats.events_quarantined.get(), 1);
}

#[tokio::test]
async fn finding_rejected_rows_never_touches_a_table_the_service_did_not_create() {
    let spool = SpoolDir::new();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())]).await;
    let db = app.database.clone();
    // A user's own table under the name a scratch table would most likely take.
    clickhouse(&format!(
        "CREATE TABLE `{db}`.events_probe (id UInt32) ENGINE = MergeTree ORDER BY id"
    ))
    .await;
    clickhouse(&format!(
        "INSERT INTO `{db}`.events_probe VALUES (1), (2), (3)"
    ))
    .await;
    clickhouse(&format!(
        "ALTER TABLE `{db}`.events ADD COLUMN param_num UInt8 MATERIALIZED toUInt8(param_str)"
    ))
    .await;
    let events: Vec<Value> = (0..10)
        .map(|s| {
            let mut e = event(s);
            e["param_str"] = if s == 4 { "abc" } else { "1" }.into();
            e
        })
        .collect();
    let response = app.post_events(Value::Array(events).to_string()).await;
    assert_eq!(response.status(), 200);
    wait_for_rows(&db, 9).await;
    spool.quarantined(1).await;

    let user_table = clickhouse(&format!(
        "SELECT engine, (SELECT count() FROM `{db}`.events_probe) FROM system.tables \
         WHERE database = '{db}' AND name = 'events_probe'"
    ))
    .await;
    assert_eq!(user_table.trim(), "MergeTree\t3");
    // The scratch table the search used is gone with the search.
    let others = clickhouse(&format!(
        "SELECT groupArray(name) FROM system.tables WHERE database = '{db}' \
         AND name NOT IN ('events', 'events_probe')"
    ))
    .await;
    assert_eq!(others.trim(), "[]");
    assert!(app.stop().await.is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_and_recovers_without_restart() {
    let spool = SpoolDir::new();
    let port = closed_port();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port.to_string()),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        ("SPOOL_MAX_BYTES", "1048576"),
        ("BUFFER_MAX_BYTES", "65536"),
    ])
    .await;
    let (acked, refused) = post_until_refused(&app, 100).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("spool full"),
        "{body}"
    );
    assert!(
        acked > 65536 / 120,
        "memory spilled to the spool before it filled: {acked}"
    );
    assert_eq!(app.get("/v1/ready").await.status(), 503);

    // ClickHouse comes back: the spool drains and the same request is taken.
    let forwarder = forward_to_clickhouse(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    within(PATIENCE, async {
        while app.post_events(batch(acked, 100)).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    wait_for_rows(&app.database, u64::from(acked) + 100).await;
    let stored = stored(&clickhouse_url(), &app.database).await;
    assert!(stored.values().all(|&n| n == 1));
    within(PATIENCE, async {
        while app.get("/v1/ready").await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(app.stop().await.is_clean());
    forwarder.abort();
}

/// Forwards to the shared ClickHouse, but drops the connection instead of passing on the
/// answer to the first `INSERT`: ClickHouse has stored the rows, the sender cannot know.
fn ambiguous_proxy(listener: TcpListener, dropped: Arc<AtomicUsize>) -> JoinHandle<()> {
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let dropped = dropped.clone();
            tokio::spawn(async move {
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let insert_seen = Arc::new(AtomicBool::new(false));
                let seen = insert_seen.clone();
                let upstream_half = tokio::spawn(async move {
                    let mut buf = vec![0; 64 * 1024];
                    while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                        if buf[..n].windows(6).any(|w| w == b"INSERT") {
                            seen.store(true, Relaxed);
                        }
                        if server_tx.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = server_rx.read(&mut buf).await {
                    if insert_seen.load(Relaxed) && dropped.fetch_add(1, Relaxed) == 0 {
                        break; // the insert's answer: dropped with the connection
                    }
                    insert_seen.store(false, Relaxed);
                    if client_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                upstream_half.abort();
            });
        }
    })
}

#[tokio::test]
async fn a_retry_after_an_ambiguous_failure_stores_the_batch_once() {
    let port = closed_port();
    let dropped = Arc::new(AtomicUsize::new(0));
    let proxy = ambiguous_proxy(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        dropped.clone(),
    );
    let spool = SpoolDir::new();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port.to_string()),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
    ])
    .await;
    assert_eq!(app.post_events(batch(0, 50)).await.status(), 200);
    within(PATIENCE, async {
        while app.stats.inserts.get() == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(dropped.load(Relaxed) >= 1, "the proxy dropped an answer");
    assert!(
        app.stats.insert_retries.get() >= 1,
        "and the flusher retried"
    );
    let stored = stored(&clickhouse_url(), &app.database).await;
    assert_eq!(stored.len(), 50, "every event is stored");
    // The retry is recognised: by its token on 22.2+, by the server's query log before.
    assert!(stored.values().all(|&n| n == 1), "{stored:?}");
    assert_eq!(count_rows(&app.database).await, 50);
    assert!(app.stop().await.is_clean());
    proxy.abort();
}

#[tokio::test]
async fn an_unwritable_quarantine_shows_at_once_and_good_rows_keep_flowing() {
    // `memory` mode; the quarantine's folder cannot be created: SPOOL_DIR is a file.
    let blocker = std::env::temp_dir().join(format!("not-a-dir-{}", uuid::Uuid::new_v4()));
    std::fs::write(&blocker, b"").unwrap();
    let app = spawn_app(&[("SPOOL_DIR", blocker.to_str().unwrap())]).await;
    clickhouse(&format!(
        "ALTER TABLE `{}`.events ADD COLUMN param_num UInt8 MATERIALIZED toUInt8(param_str)",
        app.database
    ))
    .await;
    let events = |range: std::ops::Range<u32>, poison: Option<u32>| {
        let events: Vec<Value> = range
            .map(|s| {
                let mut e = event(s);
                e["param_str"] = if Some(s) == poison { "abc" } else { "12" }.into();
                e
            })
            .collect();
        Value::Array(events).to_string()
    };
    assert_eq!(app.post_events(events(0..10, Some(3))).await.status(), 200);
    wait_for_rows(&app.database, 9).await;
    // The good rows are stored before the rejected one goes to the quarantine: its failure
    // shows from that first attempt on.
    let body: Value = within(PATIENCE, async {
        loop {
            let health = app.get("/v1/health").await;
            let status = health.status();
            let body: Value = health.json().await.unwrap();
            if body["storage_error"].is_string() {
                assert_eq!(status, 503);
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(body["status"], "failing", "{body}");
    assert!(
        body["storage_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("quarantine")),
        "{body}"
    );
    let ready: Value = app.get("/v1/ready").await.json().await.unwrap();
    assert!(
        ready["reasons"]
            .to_string()
            .contains("local storage failing"),
        "{ready}"
    );
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("event_ingest_local_io_errors_total{op=\"quarantine\"}"),
        "{metrics}"
    );

    // A later batch is not held back by the rejected row.
    assert_eq!(app.post_events(events(10..20, None)).await.status(), 200);
    wait_for_rows(&app.database, 19).await;
    let report = app.stop().await;
    assert_eq!(
        report.unwritten, 1,
        "the rejected row, stored nowhere: {report:?}"
    );
    std::fs::remove_file(blocker).unwrap();
}

#[tokio::test]
async fn in_disk_mode_an_unwritable_quarantine_parks_the_rows_and_good_rows_keep_flowing() {
    // `disk` mode; the quarantine's folder cannot be created (a file is in its place).
    let spool = SpoolDir::new();
    std::fs::create_dir_all(spool.dir()).unwrap();
    let blocker = spool.dir().join("quarantine");
    std::fs::write(&blocker, b"").unwrap();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())]).await;
    clickhouse(&format!(
        "ALTER TABLE `{}`.events ADD COLUMN param_num UInt8 MATERIALIZED toUInt8(param_str)",
        app.database
    ))
    .await;
    let events = |range: std::ops::Range<u32>, poison: Option<u32>| {
        let events: Vec<Value> = range
            .map(|s| {
                let mut e = event(s);
                e["param_str"] = if Some(s) == poison { "abc" } else { "12" }.into();
                e
            })
            .collect();
        Value::Array(events).to_string()
    };
    assert_eq!(app.post_events(events(0..10, Some(3))).await.status(), 200);
    wait_for_rows(&app.database, 9).await;
    let body: Value = within(PATIENCE, async {
        loop {
            let body: Value = app.get("/v1/health").await.json().await.unwrap();
            if body["storage_error"].is_string() {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        body["storage_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("quarantine")),
        "{body}"
    );

    // A later batch is not held back by the rejected row, which waits on disk.
    assert_eq!(app.post_events(events(10..20, None)).await.status(), 200);
    wait_for_rows(&app.database, 19).await;
    let stats = app.stats.clone();
    let report = app.stop().await;
    assert!(report.is_clean(), "every batch confirmed: {report:?}");
    assert_eq!(stats.events_quarantined.get(), 0);
    let parked = std::fs::read_to_string(spool.dir().join("quarantine-parked.jsonl")).unwrap();
    let line: Value = serde_json::from_str(parked.trim()).unwrap();
    assert_eq!(line["event"]["sequence"], 3, "{parked}");

    // Once the quarantine can be written, the next start moves the row there.
    std::fs::remove_file(&blocker).unwrap();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())]).await;
    assert_eq!(app.post_events(events(20..21, None)).await.status(), 200);
    let lines = spool.quarantined(1).await;
    assert_eq!(lines[0]["event"]["sequence"], 3);
    assert!(app.stop().await.is_clean());
    assert!(!spool.dir().join("quarantine-parked.jsonl").exists());
}
