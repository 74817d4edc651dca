//! Scenario 5: two gateways on the cluster, each with its own spool (`disk` mode), each
//! SIGKILLed and restarted in turn under load: every acknowledged event stored, none twice.

use std::time::Duration;

use crate::fixture::Cluster;
use crate::helpers::{SpoolDir, unique_database, within};
use crate::load::{Load, settle};
use crate::process::{signal, start_binary, stop_with};

#[tokio::test]
async fn two_gateways_killed_in_turn_lose_and_duplicate_nothing() {
    let Some(cluster) = Cluster::take("cluster::gateways").await else {
        return;
    };
    let db = unique_database();
    let spools = [SpoolDir::new(), SpoolDir::new()];
    let env = |spool: &SpoolDir| {
        vec![
            ("CLICKHOUSE_HOSTS", cluster.hosts.clone()),
            ("CLICKHOUSE_CLUSTER", cluster.name.clone()),
            ("DURABILITY", "disk".to_string()),
            ("SPOOL_DIR", spool.path().to_string()),
        ]
    };
    let start = |i: usize| {
        let vars = env(&spools[i]);
        let db = db.clone();
        async move {
            let overrides: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
            start_binary(&db, &overrides).await
        }
    };
    let mut gateways = vec![start(0).await, start(1).await];
    let load = Load::start(
        "gateways",
        gateways
            .iter()
            .map(|(_, address)| address.clone())
            .collect(),
    );
    load.wait_for(50).await;
    for i in 0..2 {
        signal(&gateways[i].0, "KILL");
        within(Duration::from_secs(30), gateways[i].0.wait())
            .await
            .expect("killed");
        load.wait_for(50).await;
        gateways[i] = start(i).await;
        load.set_gateways(gateways.iter().map(|(_, a)| a.clone()).collect());
        load.wait_for(50).await;
    }
    let sent = load.stop().await;
    let figures = settle(&cluster.url("a"), &db, &sent, Duration::from_secs(90)).await;
    println!(
        "two gateways, each SIGKILLed once under load (disk mode): {figures:?}; requests not \
         acknowledged {}",
        sent.unacked
    );
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.duplicated, 0, "{figures:?}");
    for (child, _) in gateways {
        let (status, log) = stop_with(child, "TERM").await;
        assert!(status.success(), "{log}");
    }
    cluster.drop_database(&db).await;
}
