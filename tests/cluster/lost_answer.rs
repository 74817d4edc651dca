//! Scenario 4: an insert's answer is lost after ClickHouse committed it (a proxy in front of
//! each replica of shard 1 drops the answer to the first insert it forwards), and the
//! gateway retries on the other replica with the same identity: stored once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::fixture::{Cluster, number};
use crate::helpers::{PATIENCE, spawn_app_in, unique_database, within};
use crate::load::{PER_REQUEST, request};

/// A TCP proxy to `upstream` that forwards everything, except that on the first connection
/// carrying an insert (`query=INSERT` in its request) it swallows ClickHouse's answer and
/// closes the connection: the insert is committed, the client never hears so.
struct LosingProxy {
    address: String,
    /// Inserts whose answer was dropped.
    dropped: Arc<AtomicU32>,
    /// Inserts seen.
    inserts: Arc<AtomicU32>,
}

impl LosingProxy {
    async fn start(upstream: String) -> LosingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let dropped = Arc::new(AtomicU32::new(0));
        let inserts = Arc::new(AtomicU32::new(0));
        let (d, i) = (dropped.clone(), inserts.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, d.clone(), i.clone()));
            }
        });
        LosingProxy {
            address,
            dropped,
            inserts,
        }
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    dropped: Arc<AtomicU32>,
    inserts: Arc<AtomicU32>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let inserting = Arc::new(AtomicU32::new(0));
    let upward = {
        let inserting = inserting.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match client_read.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if buf[..n].windows(12).any(|w| w == b"query=INSERT") {
                    inserting.store(1, Ordering::SeqCst);
                    inserts.fetch_add(1, Ordering::SeqCst);
                }
                if server_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if inserting.load(Ordering::SeqCst) == 1
            && dropped
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            // Committed (ClickHouse answers after the part is written): lose the answer.
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    upward.abort();
}

#[tokio::test]
async fn an_answer_lost_after_commit_then_retried_on_the_other_replica_is_stored_once() {
    let Some(cluster) = Cluster::take("cluster::lost_answer").await else {
        return;
    };
    let db = unique_database();
    let proxy_a = LosingProxy::start(cluster.host("a")).await;
    let proxy_b = LosingProxy::start(cluster.host("b")).await;
    let hosts = format!(
        "{},{};{}",
        proxy_a.address,
        proxy_b.address,
        cluster.host("c")
    );
    let app = spawn_app_in(
        &db,
        &[
            ("CLICKHOUSE_HOSTS", &hosts),
            ("CLICKHOUSE_CLUSTER", &cluster.name),
        ],
    )
    .await;
    let response = app.post_events(request("lost", 0, PER_REQUEST)).await;
    assert_eq!(response.status(), 200);
    within(PATIENCE * 2, async {
        while app.stats.events_written.get() < u64::from(PER_REQUEST) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (dropped, inserts) = (
        proxy_a.dropped.load(Ordering::SeqCst) + proxy_b.dropped.load(Ordering::SeqCst),
        [&proxy_a, &proxy_b].map(|p| p.inserts.load(Ordering::SeqCst)),
    );
    assert!(dropped >= 1, "an answer was lost");
    assert!(
        inserts.iter().all(|n| *n >= 1),
        "the insert was retried on the other replica: inserts seen {inserts:?}"
    );
    let shard_1 = |m: &'static str| {
        let (url, db) = (cluster.url(m), db.clone());
        async move {
            crate::helpers::clickhouse_at(
                &url,
                &format!("SYSTEM SYNC REPLICA `{db}`.events_local"),
            )
            .await;
            number(&url, &format!("SELECT count() FROM `{db}`.events_local")).await
        }
    };
    let (on_a, on_b, on_c) = (shard_1("a").await, shard_1("b").await, shard_1("c").await);
    let total = number(
        &cluster.url("a"),
        &format!("SELECT count() FROM `{db}`.events"),
    )
    .await;
    println!(
        "lost answer: {dropped} answer(s) dropped, inserts seen by the proxies {inserts:?}; \
         shard 1 rows a={on_a} b={on_b}, shard 2 {on_c}, total {total} of {PER_REQUEST}"
    );
    assert_eq!(on_a, on_b);
    assert_eq!(on_a + on_c, u64::from(PER_REQUEST), "stored once");
    assert_eq!(total, u64::from(PER_REQUEST));
    app.stop().await;
    cluster.drop_database(&db).await;
}
