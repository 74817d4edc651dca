//! Hostile input gets a clear answer, never a panic or a hang, and the server keeps serving.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, batch, spawn_app, within};

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
    for (name, body) in [
        ("deep nesting", deep),
        ("1e400", huge_number),
        ("5000 digits", long_number),
        ("9 MB string", long_string),
        ("NUL", nul),
    ] {
        let response = app.post_events(body).await;
        let status = response.status();
        assert!(
            status.is_client_error() || status == 200,
            "{name}: {status}"
        );
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(answer.is_object(), "{name}: {answer}");
    }
    // Only the NUL event was valid; the server is still healthy.
    app.wait_for_rows(1).await;
    assert_eq!(app.get("/v1/health").await.status(), 200);
    app.stop().await;
}
