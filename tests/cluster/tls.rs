//! Scenario: one replica reached over HTTPS. Shard 2's replica is named `https://localhost:<p>`
//! in `CLICKHOUSE_HOSTS` (its certificate from the test CA the script made), the others plain
//! HTTP: the gateway creates the tables there and its rows land on it like any shard's.

use std::time::Duration;

use crate::fixture::{Cluster, number};
use crate::helpers::{spawn_app_in, unique_database, within};
use crate::load::{PER_REQUEST, request};

#[tokio::test]
async fn a_replica_reached_over_https_takes_its_shards_rows() {
    let Some(cluster) = Cluster::take("cluster::tls").await else {
        return;
    };
    let db = unique_database();
    let overrides = [
        ("CLICKHOUSE_HOSTS", cluster.hosts_https.as_str()),
        ("CLICKHOUSE_CLUSTER", cluster.name.as_str()),
        ("CLICKHOUSE_CA_FILE", cluster.ca_file.as_str()),
    ];
    let app = spawn_app_in(&db, &overrides).await;
    let requests = 20;
    for n in 0..requests {
        let response = app.post_events(request("tls", n, PER_REQUEST)).await;
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let total = u64::from(PER_REQUEST) * requests;
    let a = cluster.url("a");
    within(Duration::from_secs(60), async {
        while crate::fixture::query(&a, &format!("SELECT count() FROM `{db}`.events"))
            .await
            .map(|t| t.trim().parse::<u64>().unwrap_or(0))
            != Ok(total)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let on_c = number(
        &cluster.url("c"),
        &format!("SELECT count() FROM `{db}`.events_local"),
    )
    .await;
    assert!(on_c > 0, "shard 2 (over HTTPS) holds rows");
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    println!("tls: {total} events, {on_c} on shard 2 over HTTPS");
    app.stop().await;
    cluster.drop_database(&db).await;
}
