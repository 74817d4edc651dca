//! Killing shard 1's busiest replica under load and seeing the other replica take the
//! inserts: the failover step the replica-kill scenarios share, for the events table's
//! lanes or another table's.

use std::time::Duration;

use serde_json::Value;

use crate::fixture::Cluster;
use crate::helpers::{PATIENCE, TestApp, within};
use crate::load::Load;

/// Whose lanes: the events table's (`shards` in `/v1/health`) or another table's
/// (`tables.<name>.shards`).
#[derive(Clone, Copy)]
pub enum Lanes {
    Events,
    Table(&'static str),
}

impl Lanes {
    fn shards(self, health: &Value) -> &Value {
        match self {
            Lanes::Events => &health["shards"],
            Lanes::Table(name) => &health["tables"][name]["shards"],
        }
    }
}

/// Successful inserts into `host` by `lanes`, as the gateway's health shows them.
async fn inserts_into(app: &TestApp, lanes: Lanes, host: &str) -> u64 {
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    lanes
        .shards(&health)
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["hosts"].as_array().into_iter().flatten())
        .find(|h| h["host"] == host)
        .and_then(|h| h["inserts"].as_u64())
        .unwrap_or(0)
}

/// The shard-1 replica that took the most inserts of `lanes` so far (the gateway's
/// preferred one), once one has taken an insert.
async fn busiest_replica_of_shard_1(
    cluster: &Cluster,
    app: &TestApp,
    lanes: Lanes,
) -> &'static str {
    let busiest = within(PATIENCE, async {
        loop {
            let health: Value = app.get("/v1/health").await.json().await.unwrap();
            let hosts = lanes.shards(&health)[0]["hosts"]
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

/// With `load` running: SIGKILLs shard 1's busiest replica, waits until the other replica
/// has taken inserts (failover, not waiting for the victim), restarts the victim and lets
/// the load go on a little. Returns `(victim, survivor)`.
pub async fn kill_busiest_replica(
    cluster: &Cluster,
    app: &TestApp,
    load: &Load,
    lanes: Lanes,
) -> (&'static str, &'static str) {
    load.wait_for(30).await;
    let victim = busiest_replica_of_shard_1(cluster, app, lanes).await;
    cluster.kill(victim);
    let survivor = if victim == "a" { "b" } else { "a" };
    let before = inserts_into(app, lanes, &cluster.host(survivor)).await;
    load.wait_for(300).await;
    within(PATIENCE, async {
        while inserts_into(app, lanes, &cluster.host(survivor)).await <= before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    cluster.up(victim);
    load.wait_for(30).await;
    (victim, survivor)
}
