//! Scenario 3: shard 2 (its only replica, c) stopped for 15 s under load in `disk` mode.
//! Shard 1 keeps receiving (the longest pause between its inserts is measured and printed,
//! not asserted: the team's tests assert no timings), `/v1/ready` stays 200 while shard 2's
//! lane holds its rows (and `/v1/health` says shard 2 is failing), and they arrive after c
//! returns.

use std::time::{Duration, Instant};

use crate::fixture::Cluster;
use crate::helpers::{SpoolDir, TestApp, spawn_app_in, unique_database};
use crate::load::{Load, settle};

/// Successful inserts into shard `shard`'s hosts, from the gateway's health.
async fn shard_inserts(app: &TestApp, shard: usize) -> u64 {
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    health["shards"][shard - 1]["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["inserts"].as_u64())
        .sum()
}

#[tokio::test]
async fn a_down_shard_holds_its_rows_while_the_other_flows() {
    let Some(cluster) = Cluster::take("cluster::shard_outage").await else {
        return;
    };
    let db = unique_database();
    let spool = SpoolDir::new();
    let mut env: Vec<(&str, &str)> = vec![
        ("CLICKHOUSE_HOSTS", &cluster.hosts),
        ("CLICKHOUSE_CLUSTER", &cluster.name),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
    ];
    env.push(("CLICKHOUSE_TIMEOUT_MS", "5000"));
    let app = spawn_app_in(&db, &env).await;
    let load = Load::start("outage", vec![app.address.clone()]);
    load.wait_for(30).await;
    cluster.down("c");
    let outage = Instant::now();
    let (mut last_count, mut last_change) = (shard_inserts(&app, 1).await, Instant::now());
    let (mut longest_pause, mut not_ready, mut polls) = (Duration::ZERO, 0u32, 0u32);
    let acked_before = load.acked();
    while outage.elapsed() < Duration::from_secs(15) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let count = shard_inserts(&app, 1).await;
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        longest_pause = longest_pause.max(last_change.elapsed());
        polls += 1;
        if app.get("/v1/ready").await.status() != 200 {
            not_ready += 1;
        }
    }
    let acked_during = load.acked() - acked_before;
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    let held = health["shards"][1]["spool_bytes"].as_u64().unwrap_or(0);
    let health_error = health["error"].as_str().unwrap_or_default().to_string();
    cluster.up("c");
    load.wait_for(30).await;
    let sent = load.stop().await;
    let figures = settle(&cluster.url("a"), &db, &sent, Duration::from_secs(90)).await;
    println!(
        "shard 2 down 15 s (disk mode): {figures:?}; requests acknowledged during the outage \
         {acked_during}; shard 2 spool held {held} bytes at its end; longest pause between \
         shard 1 inserts {:.1} s (polled every 100 ms); /v1/ready not 200 in {not_ready} of \
         {polls} polls",
        longest_pause.as_secs_f64()
    );
    assert!(acked_during > 0, "requests were taken during the outage");
    assert!(held > 0, "shard 2's spool held its rows");
    assert!(
        health_error.contains("shard 2: no replica answering"),
        "health names the down shard: {health}"
    );
    assert_eq!(not_ready, 0, "ready while shard 2's lane had room");
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.duplicated, 0, "{figures:?}");
    app.stop().await;
    cluster.drop_database(&db).await;
}
