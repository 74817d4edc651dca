//! Memory after abusive clients (findings 1 and 4 of issue 14), measured on the built binary
//! as a child process, so the test harness's own allocations do not blur the figure.

use std::io::Write;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpSocket;

use crate::helpers::{PATIENCE, drop_database, unique_database};
use crate::process::start_binary;

/// Resident memory of process `pid`, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        / 1024
}

/// RSS may exceed its starting point by this much once every abusive client has left.
const AFTER_MIB: u64 = 32;

#[tokio::test]
async fn memory_returns_after_abusive_clients_leave() {
    let database = unique_database();
    let (child, address) = start_binary(&database, &[("CLIENT_TIMEOUT_MS", "3000")]).await;
    let pid = child.id().unwrap();
    let target = address.trim_start_matches("http://").parse().unwrap();
    let http = reqwest::Client::new();
    let warm = http
        .post(format!("{address}/v1/events"))
        .body(crate::helpers::batch(0, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(warm.status(), 200);
    let before = rss_mib(pid);

    // Finding 1: a 9 MB string in 9 KB of gzip, the answer never read.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    write!(gz, r#"{{"events": "{}"}}"#, "x".repeat(9 << 20)).unwrap();
    let bomb = gz.finish().unwrap();
    // Finding 4: most of a 9 MB body, the rest never sent.
    let partial = vec![b' '; 8 << 20];
    let mut held = Vec::new();
    for i in 0..64 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        let (length, body) = if i % 2 == 0 {
            (bomb.len(), &bomb[..])
        } else {
            (9 << 20, &partial[..])
        };
        let encoding = if i % 2 == 0 {
            "Content-Encoding: gzip\r\n"
        } else {
            ""
        };
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             {encoding}Content-Length: {length}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // A refused body (503 before it is read) may not be taken in full.
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(body)).await;
        held.push(stream);
    }
    // Long enough for every gzip body to be decoded and answered.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let during = rss_mib(pid);
    drop(held);

    // Polled, not timed: the bound is on memory; PATIENCE only ends a failing wait.
    let started = std::time::Instant::now();
    let mut settled = rss_mib(pid);
    while settled > before + AFTER_MIB && started.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        settled = rss_mib(pid);
    }
    assert!(
        settled <= before + AFTER_MIB,
        "RSS {before} MiB before, {during} MiB with 64 abusive clients, still {settled} MiB \
         {PATIENCE:?} after they left"
    );
    eprintln!(
        "RSS: {before} MiB before, {during} MiB with 64 abusive clients, {settled} MiB after"
    );
    // Still serving.
    let after = http
        .post(format!("{address}/v1/events"))
        .body(crate::helpers::batch(10, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    drop(child);
    drop_database(&database).await;
}
