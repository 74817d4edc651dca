//! Scenario 6: ZooKeeper stopped for 10 s under load. Every replica answers 242 (read-only)
//! to inserts; the gateway holds the rows and delivers them once the replicas are writable
//! again: nothing lost, nothing twice. (An insert whose commit ZooKeeper left unknown is
//! retried; a part the replica kept from the first try without registering it is the
//! server's leftover, not counted: see `Cluster::unregistered_rows`.)

use std::time::Duration;

use crate::fixture::{Cluster, MEMBERS};
use crate::helpers::{spawn_app_in, unique_database};
use crate::load::{Load, settle};

#[tokio::test]
async fn rows_are_held_while_zookeeper_is_away() {
    let Some(cluster) = Cluster::take("cluster::zookeeper").await else {
        return;
    };
    let db = unique_database();
    let env = cluster.env();
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_in(&db, &overrides).await;
    let load = Load::start("zk", vec![app.address.clone()]);
    load.wait_for(30).await;
    let written_before = app.stats.events_written.get();
    cluster.down("zk");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    let held = health["buffered_events"].as_u64().unwrap_or(0);
    let readonly_error = health["last_flush_error"]
        .as_str()
        .unwrap_or("")
        .to_string();
    cluster.up("zk");
    for (member, _) in MEMBERS {
        cluster.wait_writable(member).await;
    }
    load.wait_for(30).await;
    let sent = load.stop().await;
    let figures = settle(&cluster.url("a"), &db, &sent, Duration::from_secs(120)).await;
    println!(
        "ZooKeeper down 10 s: {figures:?}; {held} events held at its end (written before: \
         {written_before}); last error then: {readonly_error}"
    );
    assert!(held > 0, "rows were held while the replicas were read-only");
    assert_eq!(figures.lost, 0, "{figures:?}");
    // A row stored twice may only be in a part a replica kept on its own when ZooKeeper
    // went away mid-commit (`Unknown status`, code 319), which the server never registered
    // (and sets aside at its next restart); the service's retry stored the rows once.
    let mut unregistered = 0;
    for (member, _) in MEMBERS {
        unregistered += cluster.unregistered_rows(member, &db, "events_local").await;
    }
    assert!(
        figures.duplicated <= unregistered,
        "{figures:?}; rows in parts never registered: {unregistered}"
    );
    app.stop().await;
    cluster.drop_database(&db).await;
}
