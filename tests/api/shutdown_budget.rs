//! The shutdown budget (`SHUTDOWN_TIMEOUT_SECS`) is shared: a slow client cannot use it all
//! and leave nothing for the final flush.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::helpers::{batch, count_rows, drop_database, unique_database};
use crate::process::{start_binary, stop_with};

#[tokio::test]
async fn a_client_trickling_a_body_cannot_starve_the_final_flush() {
    let database = unique_database();
    let (child, address) = start_binary(
        &database,
        &[
            ("SHUTDOWN_TIMEOUT_SECS", "4"),
            ("BUFFER_SIZE", "1000000"),
            ("BUFFER_FLUSH_MS", "3600000"),
        ],
    )
    .await;
    // A request whose body never ends: one byte now and then, far longer than the budget.
    let mut slow = TcpStream::connect(address.trim_start_matches("http://"))
        .await
        .unwrap();
    slow.write_all(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100000\r\n\r\n[",
    )
    .await
    .unwrap();
    let trickle = tokio::spawn(async move {
        while slow.write_all(b" ").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/events"))
        .body(batch(0, 5))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (status, log) = stop_with(child, "TERM").await;
    trickle.abort();
    assert!(status.success(), "{status}: {log}");
    assert_eq!(count_rows(&database).await, 5, "{log}");
    drop_database(&database).await;
}
