//! Another table's spooled rows across a restart during which the table changed (issue
//! 12): they are written with the column list they were encoded under, saved in the
//! table's spool directory, and pruned at a start once no spooled row needs them.

use std::time::Duration;

use crate::helpers::{PATIENCE, SpoolDir, clickhouse, clickhouse_json, unique_database, within};
use crate::tables::{metric, post_each, stored_in, table_with};

/// Bytes in the quarantine's files (none if it does not exist).
fn quarantined_bytes(spool: &SpoolDir) -> u64 {
    let Ok(entries) = std::fs::read_dir(spool.dir().join("quarantine")) else {
        return 0;
    };
    entries
        .map(|e| e.unwrap().metadata().unwrap())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_spooled_before_an_add_column_made_while_down_are_all_stored_once_after_restart() {
    let database = unique_database();
    table_with(&database, "widens", "n UInt32, t String").await;
    let spool = SpoolDir::new();
    let env = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        ("INGEST_TABLES", "widens"),
        // Nothing is flushed before the kill: every row is in the buffer and the spool.
        ("BUFFER_FLUSH_MS", "600000"),
        ("BUFFER_MIN_INTERVAL_MS", "0"),
    ];
    let (child, address) = crate::process::start_binary(&database, &env).await;
    let acked = post_each(&address, "widens", 0..20).await;
    assert_eq!(acked.len(), 20);
    crate::process::signal(&child, "KILL");
    let mut child = child;
    within(PATIENCE, child.wait()).await.unwrap();
    assert!(stored_in(&database, "widens").await.0.is_empty());
    clickhouse(&format!(
        "ALTER TABLE `{database}`.widens ADD COLUMN extra String DEFAULT 'later'"
    ))
    .await;
    let (child, address) = crate::process::start_binary(
        &database,
        &[
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
            ("INGEST_TABLES", "widens"),
            ("BUFFER_FLUSH_MS", "200"),
        ],
    )
    .await;
    within(PATIENCE, async {
        while stored_in(&database, "widens").await.0.len() < acked.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let metrics = reqwest::get(format!("{address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (status, log) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    let (stored, own) = stored_in(&database, "widens").await;
    assert_eq!(stored, acked, "each acknowledged row once: {log}");
    assert!(own);
    assert_eq!(
        metric(
            &metrics,
            r#"event_ingest_table_events_quarantined_total{table="widens"}"#
        ),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(quarantined_bytes(&spool), 0, "nothing quarantined: {log}");
    // Written with their own list: the added column took its default.
    let extras = clickhouse_json(&format!("SELECT DISTINCT extra FROM `{database}`.widens")).await;
    assert_eq!(extras, vec![serde_json::json!({"extra": "later"})]);
    // Both lists were kept while rows needed the old one.
    let table_dir = spool.dir().join("table-widens");
    assert_eq!(column_lists(&table_dir).len(), 2, "{log}");
    // Every row written: the next start keeps only the list in use.
    let (child, _) = crate::process::start_binary(
        &database,
        &[
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
            ("INGEST_TABLES", "widens"),
        ],
    )
    .await;
    let (status, log) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    assert_eq!(column_lists(&table_dir).len(), 1, "{log}");
}

/// The `columns-*.json` files in a table's spool directory.
fn column_lists(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("columns-") && n.ends_with(".json"))
        .collect()
}
