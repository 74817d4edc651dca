//! Hostile input gets a clear answer, never a panic or a hang, and the server keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{PATIENCE, TestApp, batch, spawn_app, within};

fn addr(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_string()
}

/// Reads whatever the server sends until it closes or `limit` passes.
async fn read_reply(stream: &mut TcpStream, limit: Duration) -> String {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn a_slow_drip_body_gets_408() {
    let app = spawn_app(&[("CLIENT_TIMEOUT_MS", "1000")]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n[{")
        .await
        .unwrap();
    let reply = read_reply(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(app.post_events(batch(0, 1)).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_slow_drip_head_is_cut_off() {
    let app = spawn_app(&[("CLIENT_TIMEOUT_MS", "1000")]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(b"POST /v1/events HTTP/1.1\r\nHo")
        .await
        .unwrap();
    // Closed (with or without a 408) well before the test's own limit.
    let reply = within(Duration::from_secs(10), async {
        let mut buf = Vec::new();
        let _ = stream.read_to_end(&mut buf).await;
        String::from_utf8_lossy(&buf).into_owned()
    })
    .await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    app.stop().await;
}

#[tokio::test]
async fn hundreds_of_idle_connections_do_not_block_real_clients() {
    let app = spawn_app(&[]).await;
    let mut idle = Vec::new();
    for _ in 0..400 {
        idle.push(TcpStream::connect(addr(&app)).await.unwrap());
    }
    assert_eq!(app.post_events(batch(0, 5)).await.status(), 200);
    app.wait_for_rows(5).await;
    drop(idle);
    app.stop().await;
}

#[tokio::test]
async fn pathological_json_gets_an_answer_not_a_crash() {
    let app = spawn_app(&[]).await;
    let deep = format!(
        r#"[{{"event": {}{}}}]"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let huge_number = batch(0, 1).replace("\"sequence\":0", "\"sequence\":1e400");
    let long_number = batch(0, 1).replace(
        "\"sequence\":0",
        &format!("\"sequence\":{}", "9".repeat(5000)),
    );
    let long_string = batch(0, 1).replace("some text", &"x".repeat(9 * 1024 * 1024));
    let nul = batch(0, 1).replace("some text", "a\\u0000b");
    // Each is one event: the array's structure is readable, so the answer is `200` with that
    // event accepted or rejected, never a `400` for the whole body nor a crash.
    for (name, body, accepted) in [
        ("deep nesting", deep, 0),
        ("1e400", huge_number, 0),
        ("5000 digits", long_number, 0),
        ("9 MB string", long_string, 0),
        ("NUL", nul, 1),
    ] {
        let response = app.post_events(body).await;
        assert_eq!(response.status(), 200, "{name}");
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(answer["accepted"], accepted, "{name}: {answer}");
        assert_eq!(answer["rejected"], 1 - accepted, "{name}: {answer}");
    }
    // Only the NUL event was valid; the server is still healthy.
    app.wait_for_rows(1).await;
    assert_eq!(app.get("/v1/health").await.status(), 200);
    app.stop().await;
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn post_raw(
    app: &TestApp,
    encoding: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/json");
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.body(body).send().await.expect("request sent")
}

/// a small gzip body whose `events` is a huge string used to be quoted back
/// whole in the `400`.
#[tokio::test]
async fn errors_quote_client_input_only_in_short_excerpts() {
    let app = spawn_app(&[]).await;
    let envelope = format!(r#"{{"events": "{}"}}"#, "x".repeat(5 << 20));
    let response = post_raw(&app, Some("gzip"), gzip(envelope.as_bytes())).await;
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.len() < 1024, "{} bytes: {}", text.len(), &text[..200]);
    // A broken NDJSON line and an unknown encoding are quoted in excerpts too.
    let line = format!("{{\"event\": \"{}\" 1}}\n", "y".repeat(1 << 20));
    let response = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", "application/x-ndjson")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().len() < 1024);
    let response = post_raw(&app, Some(&"z".repeat(4000)), "[]").await;
    assert_eq!(response.status(), 415);
    assert!(response.text().await.unwrap().len() < 1024);
    app.stop().await;
}

/// a client that asks for a large response and never reads it is dropped once
/// its window has stayed shut for `CLIENT_TIMEOUT_MS`, instead of holding the response.
#[tokio::test]
async fn a_client_that_never_reads_its_response_is_dropped() {
    let app = spawn_app(&[("CLIENT_TIMEOUT_MS", "1000")]).await;
    let path = "/swagger/swagger-ui-bundle.js";
    let size = app.get(path).await.bytes().await.unwrap().len();
    assert!(size > 500_000, "{size}");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr(&app).parse().unwrap()).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Not reading: the window closes, the server's probes see no progress.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut received = Vec::new();
    let outcome = within(Duration::from_secs(20), stream.read_to_end(&mut received)).await;
    assert!(
        outcome.is_err() || received.len() < size,
        "the whole response ({} bytes) was still there after 8 s",
        received.len()
    );
    assert_eq!(app.post_events(batch(0, 1)).await.status(), 200);
    app.stop().await;
}

/// a lone surrogate (a string cut mid-emoji) and an unrepresentable number
/// reject at most their own event, naming the field; the good events are stored.
#[tokio::test]
async fn lexical_errors_inside_an_array_cost_one_event_only() {
    let app = spawn_app(&[]).await;
    let good = |n: u32| crate::helpers::event(n).to_string();
    let surrogate = good(1).replace("some text", "trunc\\ud83d");
    let huge = good(2).replace("\"param_int\":14", "\"param_int\":1e400");
    assert!(huge.contains("1e400"), "{huge}");
    let body = format!("[{},{surrogate},{huge},{}]", good(0), good(3));
    let response = app.post_events(body).await;
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 3, "{answer}");
    assert_eq!(answer["rejected"], 1, "{answer}");
    assert_eq!(answer["errors"][0]["index"], 2, "{answer}");
    assert_eq!(answer["errors"][0]["field"], "param_int", "{answer}");
    app.wait_for_rows(3).await;
    let stored = crate::helpers::clickhouse(&format!(
        "SELECT param_str FROM `{}`.events WHERE sequence = 1 FORMAT TSVRaw",
        app.database
    ))
    .await;
    assert_eq!(stored.trim(), "trunc\u{FFFD}");
    app.stop().await;
}

/// a body of many empty gzip members is refused after a bounded number of them.
#[tokio::test]
async fn a_body_of_many_empty_gzip_members_is_refused() {
    let app = spawn_app(&[]).await;
    let mut body = gzip(b"").repeat(200_000);
    body.extend(gzip(batch(0, 2).as_bytes()));
    let response = post_raw(&app, Some("gzip"), body).await;
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(
        answer["error"].as_str().unwrap().contains("members"),
        "{answer}"
    );
    // A few members are fine.
    let mut body = gzip(b"").repeat(10);
    body.extend(gzip(batch(0, 2).as_bytes()));
    assert_eq!(post_raw(&app, Some("gzip"), body).await.status(), 200);
    app.wait_for_rows(2).await;
    app.stop().await;
}

/// while one worker's only thread would be decoding large bodies, a probe on the
/// same worker is answered first: the work runs on the CPU pool, not on the worker.
#[tokio::test]
async fn probes_are_answered_while_large_bodies_are_decoded() {
    let app = spawn_app(&[("HTTP_WORKERS", "1"), ("BUFFER_MODE", "discard")]).await;
    // 10,000 events (2.4 MB) gzip'd: tens of milliseconds of decompressing, decoding and
    // validating each (more in a debug build), all of it CPU.
    let body = gzip(batch(0, 10_000).as_bytes());
    let heavy: Vec<_> = (0..4)
        .map(|_| {
            let http = app.http.clone();
            let url = format!("{}/v1/events", app.address);
            let body = body.clone();
            tokio::spawn(async move {
                let status = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                (status, std::time::Instant::now())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let probe = app.get("/v1/status").await;
    let probed_at = std::time::Instant::now();
    assert_eq!(probe.status(), 200);
    let mut before_probe = 0;
    for task in heavy {
        let (status, at) = within(Duration::from_secs(60), task).await.unwrap();
        assert_eq!(status.unwrap(), 200);
        before_probe += usize::from(at < probed_at);
    }
    assert!(
        before_probe < 4,
        "the probe waited for every heavy request to be decoded"
    );
    app.stop().await;
}

/// past `INFLIGHT_BODY_MAX_BYTES`, a new body gets `503` + `Retry-After`
/// before it is read; once the holder leaves, requests go through again.
#[tokio::test]
async fn bodies_in_progress_share_a_budget() {
    let app = spawn_app(&[("INFLIGHT_BODY_MAX_BYTES", "100000")]).await;
    let head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
                 Content-Length: 90000\r\n\r\n[";
    // A holder whose body never finishes reserves its stated 90,000 bytes; then 80 events
    // (about 16 KB) do not fit beside it. If one of our requests held its bytes just when
    // the holder's head was read, the holder is the one refused (it gets the 503 on its
    // socket): start over with a new holder. Other 503s (a buffer full on a slow engine) do
    // not count: only the budget's.
    let holder = within(PATIENCE, async {
        loop {
            let mut holder = TcpStream::connect(addr(&app)).await.unwrap();
            holder.write_all(head).await.unwrap();
            loop {
                let response = app.post_events(batch(0, 80)).await;
                let status = response.status();
                let retry_after = response.headers().get("retry-after").cloned();
                let body = response.text().await.unwrap();
                if status == 503 && body.contains("request bodies in progress") {
                    assert_eq!(retry_after.unwrap(), "1");
                    return holder;
                }
                assert!(status == 200 || status == 503, "{status}: {body}");
                let mut byte = [0u8; 1];
                let answered = tokio::time::timeout(
                    Duration::from_millis(20),
                    tokio::io::AsyncReadExt::read(&mut holder, &mut byte),
                )
                .await;
                if answered.is_ok() {
                    break; // the holder was refused or closed: a new one
                }
            }
        }
    })
    .await;
    drop(holder);
    // The holder's bytes come back once its connection is gone. The budget is checked
    // before anything else, so any answer but the budget's own 503 shows it (on a slow
    // engine the buffer filled above may still answer 503 for a while).
    within(PATIENCE, async {
        loop {
            let response = app.post_events(batch(1000, 2)).await;
            let status = response.status();
            let body = response.text().await.unwrap();
            if !(status == 503 && body.contains("request bodies in progress")) {
                assert!(status == 200 || status == 503, "{status}: {body}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    app.stop().await;
}

/// a `sent_at` in 1970 would have "corrected" a 2020 event to 2077.
#[tokio::test]
async fn an_implausible_correction_keeps_client_time() {
    let app = spawn_app(&[]).await;
    let body = serde_json::json!({
        "sent_at": "1970-01-01 00:00:00",
        "events": [crate::helpers::event(1)],
    });
    assert_eq!(app.post_events(body.to_string()).await.status(), 200);
    app.wait_for_rows(1).await;
    let stored = crate::helpers::clickhouse(&format!(
        "SELECT toString(client_time_corrected) FROM `{}`.events FORMAT TSVRaw",
        app.database
    ))
    .await;
    assert_eq!(stored.trim(), "2020-12-01 23:59:00");
    app.stop().await;
}

/// The bearer scheme in any case, and `HEAD` on the probes.
#[tokio::test]
async fn bearer_is_case_insensitive_and_probes_answer_head() {
    let app = spawn_app(&[("INGEST_API_KEYS", "k")]).await;
    let response = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("authorization", "BEARER k")
        .body(batch(0, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    for path in ["/v1/health", "/v1/ready", "/openapi.json", "/metrics"] {
        let response = app
            .http
            .head(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "HEAD {path}");
        assert!(response.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }
    app.stop().await;
}

#[tokio::test]
async fn not_found_answers_are_counted() {
    let app = spawn_app(&[]).await;
    assert_eq!(app.get("/no/such/path").await.status(), 404);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("event_ingest_http_requests_total") && l.contains("\"404\"")),
        "{metrics}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_broken_chunked_body_gets_a_readable_answer() {
    let app = spawn_app(&[]).await;
    let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
    stream
        .write_all(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              10\r\n[{\"a\": 1}",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let reply = read_reply(&mut stream, Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert!(!reply.contains("None"), "{reply}");
    assert!(reply.contains("ended before it was complete"), "{reply}");
    app.stop().await;
}

/// a key list naming no key, and a ClickHouse host that is more than a host, stop
/// start-up instead of running open or talking to somewhere else.
#[test]
fn misconfigurations_stop_start_up() {
    use event_ingest::Config;
    for (var, value) in [
        ("INGEST_API_KEYS", " , "),
        ("CLICKHOUSE_HOST", "127.0.0.1/evil?x="),
        ("CLICKHOUSE_PORT", "0"),
    ] {
        let vars = crate::helpers::test_env("db", &[(var, value), ("APP_ENV", "prod")]);
        let error = Config::from_vars(vars).err().map(|e| e.to_string());
        assert!(
            error.as_deref().is_some_and(|e| e.contains(var)),
            "{var}={value:?}: {error:?}"
        );
    }
}

/// `23:59:60` is one rule in both formats: accepted, stored as `23:59:59`.
#[tokio::test]
async fn a_leap_second_is_accepted_in_both_formats() {
    let app = spawn_app(&[]).await;
    let mut plain = crate::helpers::event(1);
    plain["client_time"] = "2016-12-31 23:59:60".into();
    let mut rfc = crate::helpers::event(2);
    rfc["client_time"] = "2016-12-31T23:59:60Z".into();
    let response = app
        .post_events(serde_json::json!([plain, rfc]).to_string())
        .await;
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    app.wait_for_rows(2).await;
    let stored = crate::helpers::clickhouse(&format!(
        "SELECT DISTINCT toString(client_time) FROM `{}`.events FORMAT TSVRaw",
        app.database
    ))
    .await;
    assert_eq!(stored.trim(), "2016-12-31 23:59:59");
    app.stop().await;
}

/// `Expect: 100-continue` gets the final status when the body is refused
/// anyway, and `100 Continue` only when it may be sent.
#[tokio::test]
async fn expect_continue_gets_the_refusal_instead_of_continue() {
    let app = spawn_app(&[("INGEST_API_KEYS", "k"), ("BODY_MAX_BYTES", "4096")]).await;
    for (key, length, expected) in [
        ("nope", 100, "HTTP/1.1 401"),
        ("k", 100_000, "HTTP/1.1 413"),
        ("k", 100, "HTTP/1.1 100 Continue"),
    ] {
        let mut stream = TcpStream::connect(addr(&app)).await.unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 256];
        let n = within(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap();
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(reply.starts_with(expected), "{key} {length}: {reply}");
    }
    app.stop().await;
}
