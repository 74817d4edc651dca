//! Scenario 2: the replica of shard 1 taking the inserts is SIGKILLed under load: inserts
//! fail over to the other replica, nothing acknowledged is lost or stored twice, and the
//! killed replica catches up after its restart.

use std::time::Duration;

use crate::failover::{Lanes, kill_busiest_replica};
use crate::fixture::Cluster;
use crate::helpers::{spawn_app_in, unique_database};
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
    let (victim, survivor) = kill_busiest_replica(&cluster, &app, &load, Lanes::Events).await;
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
