//! Scenario 2: the replica of shard 1 taking the inserts is SIGKILLed under load: inserts
//! fail over to the other replica, nothing acknowledged is lost or stored twice, and the
//! killed replica catches up after its restart.

use std::time::Duration;

use crate::fixture::Cluster;
use crate::helpers::{PATIENCE, TestApp, spawn_app_in, unique_database, within};
use crate::load::{Load, settle};

#[tokio::test]
async fn a_killed_replica_loses_nothing_and_catches_up() {
    let Some(cluster) = Cluster::take("cluster::replica_kill").await else {
        return;
    };
    let db = unique_database();
    let env = cluster.env();
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_in(&db, &overrides).await;
    let load = Load::start("kill", vec![app.address.clone()]);
    load.wait_for(30).await;
    let victim = busiest_replica_of_shard_1(&cluster, &app).await;
    cluster.kill(victim);
    let survivor = if victim == "a" { "b" } else { "a" };
    let before = inserts_into(&app, &cluster.host(survivor)).await;
    load.wait_for(300).await;
    // Failover, not waiting: the other replica took inserts while the victim was down.
    within(PATIENCE, async {
        while inserts_into(&app, &cluster.host(survivor)).await <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    cluster.up(victim);
    load.wait_for(30).await;
    let sent = load.stop().await;
    let figures = settle(&cluster.url(survivor), &db, &sent, Duration::from_secs(90)).await;
    println!("replica {victim} SIGKILLed under load: {figures:?}");
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.duplicated, 0, "{figures:?}");
    cluster.wait_writable(victim).await;
    let (killed, other) = (
        cluster.replica_digest(victim, &db).await,
        cluster.replica_digest(survivor, &db).await,
    );
    assert_eq!(killed, other, "the restarted replica caught up");
    app.stop().await;
    cluster.drop_database(&db).await;
}

/// Successful inserts into `host`, as the gateway's health shows them.
async fn inserts_into(app: &TestApp, host: &str) -> u64 {
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    health["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["hosts"].as_array().into_iter().flatten())
        .find(|h| h["host"] == host)
        .and_then(|h| h["inserts"].as_u64())
        .unwrap_or(0)
}

/// The shard-1 replica that took the most inserts so far (the gateway's preferred one),
/// once one has taken an insert.
async fn busiest_replica_of_shard_1(cluster: &Cluster, app: &TestApp) -> &'static str {
    let busiest = within(PATIENCE, async {
        loop {
            let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
            let hosts = health["shards"][0]["hosts"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let busiest = hosts
                .into_iter()
                .max_by_key(|h| h["inserts"].as_u64().unwrap_or(0));
            match busiest {
                Some(h) if h["inserts"].as_u64().unwrap_or(0) > 0 => return h,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await;
    cluster.member_of(busiest["host"].as_str().expect("host"))
}
