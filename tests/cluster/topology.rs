//! Start-up checks the hosts against the cluster: a list in the wrong shard order stops the
//! gateway with a line naming each host that disagrees; a host down at start-up does not.

use std::time::Duration;

use tokio::process::Command;

use crate::fixture::Cluster;
use crate::helpers::{closed_port, test_env, unique_database, within};

#[tokio::test]
async fn hosts_in_the_wrong_shard_stop_start_up_naming_them() {
    let Some(cluster) = Cluster::take("cluster::topology").await else {
        return;
    };
    let db = unique_database();
    let (a, b, c) = (cluster.host("a"), cluster.host("b"), cluster.host("c"));
    let swapped = format!("{c};{a},{b}");
    let log = start_up_fails(
        &db,
        &[
            ("CLICKHOUSE_HOSTS", &swapped),
            ("CLICKHOUSE_CLUSTER", &cluster.name),
        ],
    )
    .await;
    assert!(
        log.contains(&format!(
            "{c} is shard 2 of {}, but CLICKHOUSE_HOSTS puts it in shard 1",
            cluster.name
        )),
        "{log}"
    );
    assert!(log.contains(&format!("{a} is shard 1")), "{log}");
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn a_host_down_at_start_up_does_not_stop_the_gateway() {
    let Some(cluster) = Cluster::take("cluster::topology_down").await else {
        return;
    };
    let db = unique_database();
    cluster.down("c");
    let env = cluster.env();
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = crate::helpers::spawn_app_in(&db, &overrides).await;
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["shards"][1]["hosts"][0]["up"], false, "{health}");
    let response = app.post_events(crate::load::request("down", 0, 100)).await;
    assert_eq!(response.status(), 200);
    let ready = app.get("/v1/ready").await;
    assert_eq!(ready.status(), 200, "shard 2 is down but its lane has room");
    cluster.up("c");
    cluster.wait_writable("c").await;
    // c gets its tables when its lane first reaches it, then the rows.
    within(Duration::from_secs(60), async {
        while crate::fixture::query(
            &cluster.url("a"),
            &format!("SELECT count() FROM `{db}`.events"),
        )
        .await
        .map(|t| t.trim().to_string())
            != Ok("100".into())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    app.stop().await;
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn rows_left_in_a_single_server_spool_stop_a_cluster_start() {
    let Some(cluster) = Cluster::take("cluster::single_server_backlog").await else {
        return;
    };
    let db = unique_database();
    let spool = crate::helpers::SpoolDir::new();
    let nowhere = closed_port().to_string();
    let (child, address) = crate::process::start_binary(
        &db,
        &[
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
            ("CLICKHOUSE_PORT", &nowhere),
            ("SHUTDOWN_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let response = reqwest::Client::new()
        .post(format!("{address}/v1/events"))
        .header("content-type", "application/json")
        .body(crate::load::request("single", 0, 10))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (status, log) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success(), "the rows stay in the spool: {log}");
    let log = start_up_fails(
        &db,
        &[
            ("CLICKHOUSE_HOSTS", &cluster.hosts),
            ("CLICKHOUSE_CLUSTER", &cluster.name),
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
        ],
    )
    .await;
    assert!(
        log.contains("acknowledged and did not write; start once without CLICKHOUSE_CLUSTER"),
        "{log}"
    );
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn every_host_down_keeps_the_gateway_ready_while_its_lanes_have_room() {
    let db = unique_database();
    let hosts = format!(
        "127.0.0.1:{},127.0.0.1:{};127.0.0.1:{}",
        closed_port(),
        closed_port(),
        closed_port()
    );
    let app = crate::helpers::spawn_app_in(
        &db,
        &[
            ("CLICKHOUSE_HOSTS", &hosts),
            ("CLICKHOUSE_CLUSTER", "events_cluster"),
            ("SHUTDOWN_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let response = app
        .post_events(crate::load::request("nowhere", 0, 100))
        .await;
    assert_eq!(response.status(), 200);
    let ready = app.get("/v1/ready").await;
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["ready"], true, "{body}");
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["shards"][0]["hosts"][0]["up"], false, "{health}");
    app.stop().await;
}

/// Runs the binary with `vars` (and a free port) to its exit, which must be a failure;
/// returns its log.
async fn start_up_fails(db: &str, vars: &[(&str, &str)]) -> String {
    let port = closed_port().to_string();
    let mut vars = vars.to_vec();
    vars.push(("HTTP_PORT", &port));
    let output = within(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_event-ingest"))
            .kill_on_drop(true)
            .env_clear()
            .envs(test_env(db, &vars))
            .output(),
    )
    .await
    .expect("runs");
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{log}");
    log
}
