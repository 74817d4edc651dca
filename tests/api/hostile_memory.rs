//! Memory after abusive clients, measured on the built binary
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

    // a 9 MB string in 9 KB of gzip, the answer never read.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    write!(gz, r#"{{"events": "{}"}}"#, "x".repeat(9 << 20)).unwrap();
    let bomb = gz.finish().unwrap();
    // most of a 9 MB body, the rest never sent.
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

/// Connections that pipeline probes and read no answer.
const FLOOD_CONNECTIONS: usize = 48;
/// Probes each of them sends.
const FLOOD_REQUESTS: usize = 5_000;
/// RSS may exceed its starting point by this much while they do: at most 16 KiB of
/// unsent answers a connection, plus what one read of pipelined requests answers.
const FLOOD_MIB: u64 = 48;

/// Bytes of answers the kernel may hold for one connection: its send buffer (the service
/// asks for 16 KiB, which Linux doubles).
const SEND_QUEUE_MAX: u64 = 64 * 1024;

/// The send queues (bytes written, not yet taken by the client) of the established
/// connections of the server listening on `port`, from `/proc/net/tcp`.
fn send_queues(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state (01: established), tx_queue:rx_queue
            let (address, state, queues) = (fields.get(1)?, fields.get(3)?, fields.get(4)?);
            (address.ends_with(&local) && *state == "01").then_some(())?;
            u64::from_str_radix(queues.split(':').next()?, 16).ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_answers_do_not_grow_memory() {
    let database = unique_database();
    let (child, address) = start_binary(&database, &[]).await;
    let pid = child.id().unwrap();
    let target: std::net::SocketAddr = address.trim_start_matches("http://").parse().unwrap();
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("{address}/v1/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let before = rss_mib(pid);

    let pipelined = "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n".repeat(FLOOD_REQUESTS);
    let mut floods = Vec::new();
    for _ in 0..FLOOD_CONNECTIONS {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(target).await.unwrap();
        let pipelined = pipelined.clone();
        floods.push(tokio::spawn(async move {
            // Stops when the server stops reading: the requests then wait in the sockets.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                stream.write_all(pipelined.as_bytes()),
            )
            .await;
            stream
        }));
    }
    // Liveness throughout: each probe on a fresh connection, answered.
    let mut slowest = Duration::ZERO;
    let mut peak = before;
    let flooding = std::time::Instant::now();
    while flooding.elapsed() < Duration::from_secs(6) {
        let asked = std::time::Instant::now();
        // Liveness, not speed: a bound only to end a failing wait (the latency is measured
        // with the release binary, see docs).
        let live = crate::helpers::within(
            PATIENCE,
            reqwest::Client::new()
                .get(format!("{address}/v1/live"))
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(live.status(), 200);
        slowest = slowest.max(asked.elapsed());
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut held = Vec::new();
    for flood in floods {
        held.push(flood.await.unwrap());
    }
    peak = peak.max(rss_mib(pid));
    // What the kernel holds for the unread clients is bounded too: left to itself a
    // connection's send buffer grew to megabytes of answers, made before any pacing.
    let queued = send_queues(target.port());
    assert!(
        queued.len() >= FLOOD_CONNECTIONS,
        "{} connections seen",
        queued.len()
    );
    let most = queued.iter().max().copied().unwrap_or(0);
    assert!(
        most <= SEND_QUEUE_MAX,
        "{most} bytes of answers queued in the kernel for one connection"
    );
    eprintln!(
        "RSS {before} MiB before, at most {peak} MiB under {FLOOD_CONNECTIONS} unread \
         connections; slowest /v1/live {slowest:?}"
    );
    assert!(
        peak <= before + FLOOD_MIB,
        "RSS {before} MiB before, {peak} MiB with unread answers"
    );
    drop(held);
    // And the memory goes back once they have left (polled; PATIENCE ends a failing wait).
    let left = std::time::Instant::now();
    let mut settled = rss_mib(pid);
    while settled > before + AFTER_MIB && left.elapsed() < PATIENCE {
        tokio::time::sleep(Duration::from_millis(250)).await;
        settled = rss_mib(pid);
    }
    assert!(
        settled <= before + AFTER_MIB,
        "RSS {before} MiB before, {settled} MiB after"
    );
    drop(child);
    drop_database(&database).await;
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let database = unique_database();
    let (child, address) = start_binary(&database, &[("HTTP_MAX_CONNECTIONS", "3")]).await;
    let target: std::net::SocketAddr = address.trim_start_matches("http://").parse().unwrap();
    // start_binary's own client may still hold a connection for a moment: fill the rest.
    let mut held = Vec::new();
    let refused = loop {
        let mut stream = tokio::net::TcpStream::connect(target).await.unwrap();
        stream
            .write_all(b"GET /v1/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = vec![0; 1024];
        let n = crate::helpers::within(Duration::from_secs(5), async {
            use tokio::io::AsyncReadExt;
            stream.read(&mut answer).await.unwrap()
        })
        .await;
        let answer = String::from_utf8_lossy(&answer[..n]).to_string();
        if !answer.starts_with("HTTP/1.1 200") {
            break answer;
        }
        held.push(stream);
        assert!(held.len() <= 3, "{} connections served", held.len());
    };
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("too many connections"), "{refused}");
    // A connection that ends gives its place back.
    held.clear();
    let http = reqwest::Client::new();
    let again = crate::helpers::within(Duration::from_secs(10), async {
        loop {
            match http.get(format!("{address}/v1/live")).send().await {
                Ok(r) if r.status() == 200 => break r.status(),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert_eq!(again, 200);
    drop(child);
    drop_database(&database).await;
}
