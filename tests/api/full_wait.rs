//! `BUFFER_FULL_WAIT_MS`: a request that finds the buffer (in `disk` mode, the spool) full
//! waits for the flusher to free room instead of being refused at once; it gets `503` only
//! when no room came within the bound, at once when shutdown begins, and at once while the
//! lane's inserts fail (no room is coming then).
//!
//! ClickHouse is held (it takes the inserts and answers nothing, [`HeldClickHouse`]) while
//! the buffer fills, so nothing frees room and nothing fails; then it is released: the test
//! decides when room comes, no timing is assumed.

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::helpers::{
    HeldClickHouse, PATIENCE, SpoolDir, batch, closed_port, count_rows, spawn_app, wait_for_rows,
    within,
};
use crate::process::{collect_stderr, signal, start_binary};

const MAX_BYTES: u64 = 65_536;
const PER_REQUEST: u32 = 30;
/// Longer than any hold in these tests: a held insert is slow, never failed.
const INSERT_TIMEOUT_MS: &str = "600000";

/// What fills up: the memory buffer, or (`disk` mode) the spool.
#[derive(Clone, Copy)]
enum Fills {
    Buffer,
    Spool,
}

/// `/v1/status`: the buffer's figures without pinging ClickHouse (which may be held).
async fn status(address: &str) -> Value {
    reqwest::get(format!("{address}/v1/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn waiting_bytes(status: &Value) -> u64 {
    status["buffer"]["waiting_bytes"].as_u64().unwrap()
}

/// Posts bodies while the room left takes one more, so that the next one finds the buffer
/// full (without waiting itself); returns how many events were accepted.
async fn fill(address: &str, what: Fills, max: u64) -> u32 {
    fill_from(address, what, max, 0).await
}

/// [`fill`], numbering events from `first` (the events already sent).
async fn fill_from(address: &str, what: Fills, max: u64, first: u32) -> u32 {
    let http = reqwest::Client::new();
    let mut sent = first;
    loop {
        let status = status(address).await;
        let used = match what {
            Fills::Buffer => status["buffer"]["bytes"].as_u64().unwrap(),
            Fills::Spool => status["spool"]["bytes"].as_u64().unwrap(),
        };
        if used + batch(sent, PER_REQUEST).len() as u64 > max {
            return sent;
        }
        let response = post(&http, address, sent).await;
        assert_eq!(response.status(), 200, "room was left");
        sent += PER_REQUEST;
    }
}

async fn post(http: &reqwest::Client, address: &str, first: u32) -> reqwest::Response {
    http.post(format!("{address}/v1/events"))
        .header("content-type", "application/json")
        .body(batch(first, PER_REQUEST))
        .send()
        .await
        .expect("an answer, not a cut connection")
}

/// Sends the next body in the background and returns once it is seen waiting for room,
/// or once it was answered without waiting.
async fn send_while_full(address: &str, first: u32) -> (JoinHandle<reqwest::Response>, bool) {
    let request = {
        let address = address.to_string();
        tokio::spawn(async move { post(&reqwest::Client::new(), &address, first).await })
    };
    let waited = within(PATIENCE, async {
        loop {
            if waiting_bytes(&status(address).await) > 0 {
                return true;
            }
            if request.is_finished() {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    (request, waited)
}

/// Fills while ClickHouse is held, sends one more, releases ClickHouse: the waiting request
/// is taken.
async fn a_request_waits_for_room_and_is_taken(what: Fills, overrides: &[(&str, &str)]) {
    let clickhouse = HeldClickHouse::start().await;
    let mut env = vec![
        ("CLICKHOUSE_PORT", clickhouse.port.to_string()),
        ("CLICKHOUSE_TIMEOUT_MS", INSERT_TIMEOUT_MS.to_string()),
        ("BUFFER_MAX_BYTES", MAX_BYTES.to_string()),
        ("BUFFER_FULL_WAIT_MS", "600000".to_string()),
    ];
    env.extend(overrides.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&env).await;
    // One batch through first: the lane has reached ClickHouse (its version and table are
    // known), so the hold below makes an insert slow, not a start-up query fail.
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &app.address, 0).await.status(), 200);
    wait_for_rows(&app.database, u64::from(PER_REQUEST)).await;
    clickhouse.hold();
    let max = match what {
        Fills::Buffer => MAX_BYTES,
        Fills::Spool => status(&app.address).await["spool"]["max_bytes"]
            .as_u64()
            .unwrap(),
    };
    let sent = fill_from(&app.address, what, max, PER_REQUEST).await;
    let (request, waited) = send_while_full(&app.address, sent).await;
    assert!(waited, "answered {:?} without waiting", request.await);

    clickhouse.release();
    let response = within(PATIENCE, request).await.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    wait_for_rows(&app.database, u64::from(sent + PER_REQUEST)).await;
    assert_eq!(waiting_bytes(&status(&app.address).await), 0);
    assert!(app.stop().await.is_clean());
}

#[tokio::test]
async fn a_request_that_finds_the_buffer_full_waits_for_room_and_is_taken() {
    a_request_waits_for_room_and_is_taken(Fills::Buffer, &[]).await;
}

#[tokio::test]
async fn in_disk_mode_a_request_that_finds_the_spool_full_waits_for_room_and_is_taken() {
    let spool = SpoolDir::new();
    a_request_waits_for_room_and_is_taken(
        Fills::Spool,
        &[
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
            ("SPOOL_MAX_BYTES", "1048576"),
        ],
    )
    .await;
}

#[tokio::test]
async fn no_room_within_the_bound_is_a_503_with_retry_after() {
    let clickhouse = HeldClickHouse::start().await;
    let port = clickhouse.port.to_string();
    let max = MAX_BYTES.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_TIMEOUT_MS", INSERT_TIMEOUT_MS),
        ("BUFFER_MAX_BYTES", &max),
        ("BUFFER_FULL_WAIT_MS", "1000"),
    ])
    .await;
    clickhouse.hold();
    let sent = fill(&app.address, Fills::Buffer, MAX_BYTES).await;
    let (request, waited) = send_while_full(&app.address, sent).await;
    let response = within(PATIENCE, request).await.unwrap();
    assert!(waited, "answered {response:?} without waiting");
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("buffer full"),
        "{body}"
    );
    let status = status(&app.address).await;
    assert_eq!(waiting_bytes(&status), 0, "the wait's seat is given back");
    assert_eq!(
        status["buffer"]["events"], sent,
        "nothing of the refused request"
    );
    clickhouse.release();
    app.stop().await;
}

/// While inserts fail no room is coming: a full buffer refuses at once, as with the wait
/// off, instead of holding every request for `BUFFER_FULL_WAIT_MS` of an outage.
#[tokio::test]
async fn while_inserts_fail_a_full_buffer_refuses_at_once() {
    let port = closed_port().to_string();
    let max = MAX_BYTES.to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port),
        ("BUFFER_MAX_BYTES", &max),
        ("BUFFER_FULL_WAIT_MS", "3600000"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    let sent = fill(&app.address, Fills::Buffer, MAX_BYTES).await;
    // Found full: answered once the flusher's first insert has failed (if it had not yet),
    // not an hour later.
    let response = within(PATIENCE, post(&reqwest::Client::new(), &app.address, sent)).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(waiting_bytes(&status(&app.address).await), 0);
    app.stop().await;
}

#[tokio::test]
async fn the_shutdown_signal_answers_a_waiting_request_at_once() {
    let database = crate::helpers::unique_database();
    let clickhouse = HeldClickHouse::start().await;
    // An hour's wait, and a drain budget of 30 s that a waiting request would use up.
    let (mut child, address) = start_binary(
        &database,
        &[
            ("CLICKHOUSE_PORT", &clickhouse.port.to_string()),
            ("CLICKHOUSE_TIMEOUT_MS", INSERT_TIMEOUT_MS),
            ("BUFFER_MAX_BYTES", &MAX_BYTES.to_string()),
            ("BUFFER_FULL_WAIT_MS", "3600000"),
            ("SHUTDOWN_TIMEOUT_SECS", "60"),
        ],
    )
    .await;
    let stderr = collect_stderr(&mut child);
    clickhouse.hold();
    let sent = fill(&address, Fills::Buffer, MAX_BYTES).await;
    let (request, waited) = send_while_full(&address, sent).await;
    assert!(waited, "answered {:?} without waiting", request.await);

    signal(&child, "TERM");
    // Answered, not cut off when the drain budget runs out (30 s, longer than PATIENCE).
    let response = within(PATIENCE, request).await.unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));

    // ClickHouse answers again for the final flush: what was accepted is written, and
    // nothing of the refused request.
    clickhouse.release();
    let status = within(PATIENCE, child.wait()).await.unwrap();
    let log = stderr.await.unwrap();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(count_rows(&database).await, u64::from(sent), "{log}");
    crate::helpers::drop_database(&database).await;
}
