//! Scenario 1: every row lands on the shard its sharding expression names, the totals are
//! exact through the `Distributed` table, and both replicas of shard 1 hold the same rows.

use std::time::Duration;

use crate::fixture::{Cluster, MEMBERS, number};
use crate::helpers::{spawn_app_in, unique_database, within};
use crate::load::{DEVICES, PER_REQUEST, request};

#[tokio::test]
async fn rows_land_on_the_shard_their_key_names() {
    let Some(cluster) = Cluster::take("cluster::placement").await else {
        return;
    };
    let db = unique_database();
    let env = cluster.env();
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app_in(&db, &overrides).await;
    let requests = 100_000 / u64::from(PER_REQUEST);
    for n in 0..requests {
        let response = app.post_events(request("placement", n, PER_REQUEST)).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let a = cluster.url("a");
    within(Duration::from_secs(120), async {
        while crate::fixture::query(&a, &format!("SELECT count() FROM `{db}`.events"))
            .await
            .map(|t| t.trim().to_string())
            != Ok("100000".into())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (member, shard) in MEMBERS {
        assert_eq!(cluster.misplaced(member, &db, shard).await, 0, "{member}");
    }
    let devices = number(
        &a,
        &format!("SELECT uniqExact(device_id) FROM `{db}`.events"),
    )
    .await;
    assert_eq!(devices, u64::from(DEVICES));
    let shard_rows = |m: &'static str| {
        let (url, db) = (cluster.url(m), db.clone());
        async move { number(&url, &format!("SELECT count() FROM `{db}`.events_local")).await }
    };
    let (one, two) = (shard_rows("a").await, shard_rows("c").await);
    assert!(one > 0 && two > 0, "both shards get rows: {one} and {two}");
    let (digest_a, digest_b) = (
        cluster.replica_digest("a", &db).await,
        cluster.replica_digest("b", &db).await,
    );
    assert_eq!(digest_a, digest_b, "replicas a and b hold the same rows");
    println!(
        "placement: 100000 events from {DEVICES} devices; shard 1 {one} rows, shard 2 {two}; \
         misplaced 0; replicas a and b: {}",
        digest_a.trim()
    );
    app.stop().await;
    cluster.drop_database(&db).await;
}
