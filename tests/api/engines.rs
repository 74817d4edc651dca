//! What each server version does with the service's inserts and tables, checked on the
//! engine of the run (`TEST_ENGINE`): 18.16, and ClickHouse 26.x behind the test double.
//! Settings sent with inserts, deduplication by token and the table's window, the upgrade of
//! a table of the first layout, the version shown, the `IPv6` column, and the codes a modern
//! server answers for a row it refuses.

use std::sync::Arc;

use event_ingest::Config;
use event_ingest::sink::Deduplication;
use event_ingest::sink::{InsertId, ServerVersion, Sink, TableSink};
use event_ingest::table::event::testing::rows;
use event_ingest::table::events::TABLE;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    PATIENCE, batch, clickhouse, clickhouse_at, clickhouse_json, clickhouse_url, count_rows,
    drop_database, event, skip, spawn_app, spawn_app_in, test_env, unique_database, wait_for_rows,
    within,
};

/// The version of the server the run is against, as it reports it.
async fn server_version() -> (String, ServerVersion) {
    let text = clickhouse("SELECT version()").await.trim().to_string();
    let version = ServerVersion::parse(&text).expect("a version");
    (text, version)
}

/// A sink of the service writing to `database.events`, as the application configures it.
fn sink(database: &str) -> TableSink {
    TableSink::events(&event_ingest::app::sink_settings(
        &Config::from_vars(test_env(database, &[])).expect("test config"),
    ))
}

/// Forwards to the shared ClickHouse and keeps the request line of every request.
fn recording_proxy(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let (mut client_rx, mut client_tx) = client.into_split();
                let (mut server_rx, mut server_tx) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
                });
                let mut buf = vec![0; 64 * 1024];
                while let Ok(n @ 1..) = client_rx.read(&mut buf).await {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    for line in text.lines() {
                        if line.starts_with("POST /") || line.starts_with("GET /") {
                            seen.lock().push(line.to_string());
                        }
                    }
                    if server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                down.abort();
            });
        }
    })
}

#[tokio::test]
async fn inserts_opt_out_of_the_servers_asynchronous_queue_where_it_has_one() {
    let (text, version) = server_version().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let proxy = recording_proxy(listener, seen.clone());
    let app = spawn_app(&[("CLICKHOUSE_PORT", &port)]).await;
    assert_eq!(app.post_events(batch(0, 5)).await.status(), 200);
    app.wait_for_rows(5).await;
    let inserts: Vec<String> = seen
        .lock()
        .iter()
        .filter(|line| line.contains("query=INSERT"))
        .cloned()
        .collect();
    assert!(!inserts.is_empty(), "the insert went through the proxy");
    for insert in &inserts {
        // 21.11+ has the setting (and 26.x turns it on by default); an older server refuses
        // a setting it does not know, so it must not be sent there.
        assert_eq!(
            insert.contains("async_insert=0"),
            version >= ServerVersion::parse("21.11").unwrap(),
            "ClickHouse {text}: {insert}"
        );
    }
    app.stop().await;
    proxy.abort();
}

#[tokio::test]
async fn a_batch_sent_again_with_its_token_is_stored_once() {
    let (text, version) = server_version().await;
    if !version.supports_dedup_token() {
        return skip(
            "engines::a_batch_sent_again_with_its_token_is_stored_once",
            &format!(
                "ClickHouse {text} has no insert_deduplication_token (22.2+); its query-log \
                 look-up is covered by durability::a_retry_after_an_ambiguous_failure_stores_the_batch_once"
            ),
        );
    }
    let database = unique_database();
    let sink = sink(&database);
    within(PATIENCE, sink.prepare()).await.expect("prepared");
    // The table the service creates remembers the last 1000 inserts' tokens.
    assert_eq!(
        sink.state().deduplication(),
        Some(Deduplication::Window(1000))
    );
    let rows = rows(0..10);
    for _ in 0..2 {
        let id = InsertId {
            token: "batch-1",
            maybe_sent: false, // the token alone: no look-up before sending
        };
        within(PATIENCE, sink.write(rows.view(), Some(id)))
            .await
            .expect("stored");
    }
    assert_eq!(count_rows(&database).await, 10, "stored once");
    let other = InsertId {
        token: "batch-2",
        maybe_sent: false,
    };
    within(PATIENCE, sink.write(rows.view(), Some(other)))
        .await
        .expect("stored");
    assert_eq!(
        count_rows(&database).await,
        20,
        "another token is another insert"
    );
    drop_database(&database).await;
}

#[tokio::test]
async fn a_table_without_the_deduplication_window_is_detected() {
    let (text, version) = server_version().await;
    if !version.supports_dedup_token() {
        return skip(
            "engines::a_table_without_the_deduplication_window_is_detected",
            &format!("ClickHouse {text} has neither tokens nor the window setting (22.2+)"),
        );
    }
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    let columns: Vec<String> = TABLE
        .iter()
        .map(|c| format!("{} {}", c.name, c.modern))
        .collect();
    // Created by someone else: a plain MergeTree, without the window.
    clickhouse(&format!(
        "CREATE TABLE `{database}`.events ({}) ENGINE = MergeTree ORDER BY sequence",
        columns.join(", ")
    ))
    .await;
    let sink = sink(&database);
    within(PATIENCE, sink.prepare()).await.expect("prepared");
    assert_eq!(sink.state().deduplication(), Some(Deduplication::NoWindow));
    // What that means, as the README says: the token is ignored, a retry is stored twice.
    let rows = rows(0..3);
    for _ in 0..2 {
        let id = InsertId {
            token: "same",
            maybe_sent: false,
        };
        within(PATIENCE, sink.write(rows.view(), Some(id)))
            .await
            .expect("stored");
    }
    assert_eq!(count_rows(&database).await, 6);
    drop_database(&database).await;
}

#[tokio::test]
async fn a_table_of_the_first_layout_is_upgraded_in_place() {
    let (_, version) = server_version().await;
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    // The first release's table: no client_time_corrected; its types on this server.
    let columns: Vec<String> = TABLE
        .iter()
        .filter(|c| c.name != "client_time_corrected")
        .map(|c| {
            let ty = if version.is_modern() {
                c.modern
            } else {
                c.legacy
            };
            format!("{} {ty}", c.name)
        })
        .collect();
    // 18.16 takes LowCardinality only with this setting.
    let url = format!(
        "{}/?allow_experimental_low_cardinality_type=1",
        clickhouse_url()
    );
    let url = if version.is_modern() {
        clickhouse_url()
    } else {
        url
    };
    clickhouse_at(
        &url,
        &format!(
            "CREATE TABLE `{database}`.events ({}) ENGINE = MergeTree \
             PARTITION BY toYYYYMM(server_time) ORDER BY (event, server_time)",
            columns.join(", ")
        ),
    )
    .await;
    clickhouse(&format!(
        "INSERT INTO `{database}`.events (client_time, server_time, device_id, device_os, \
         session, sequence, event, param_int, param_str) VALUES ('2020-01-02 03:04:05', \
         '2020-01-02 03:04:06', '0287d9aa-4adf-4b37-a60f-3e9e645c821e', 'Android', 's', 1000, \
         'old', 0, '')"
    ))
    .await;

    let app = spawn_app_in(&database, &[]).await;
    assert_eq!(app.post_events(batch(0, 2)).await.status(), 200);
    wait_for_rows(&database, 3).await;
    let old = clickhouse_json(&format!(
        "SELECT toString(client_time_corrected) AS corrected FROM `{database}`.events \
         WHERE sequence = 1000"
    ))
    .await;
    assert_eq!(
        old[0]["corrected"], "2020-01-02 03:04:05",
        "old rows: client_time"
    );
    app.stop().await;
    drop_database(&database).await;
}

#[tokio::test]
async fn health_and_status_show_the_servers_own_version() {
    let (text, _) = server_version().await;
    let app = spawn_app(&[]).await;
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["clickhouse_version"], text.as_str());
    let status: Value = app.get("/v1/status").await.json().await.unwrap();
    assert_eq!(status["clickhouse_version"], text.as_str());
    app.stop().await;
}

#[tokio::test]
async fn every_field_reads_back_and_the_address_with_to_string_on_ipv6() {
    let (_, version) = server_version().await;
    let app = spawn_app(&[]).await;
    let mut sent = event(7);
    sent["client_time"] = "2024-02-29 12:00:00".into();
    let response = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("x-sent-at", "2024-02-29 12:00:10")
        .body(Value::Array(vec![sent.clone()]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.wait_for_rows(1).await;
    let row = &clickhouse_json(&format!(
        "SELECT toString(client_time) AS client_time, \
         toUnixTimestamp(server_time) - toUnixTimestamp(client_time_corrected) AS lag, \
         toString(device_id) AS device_id, device_os, session, sequence, event, param_int, \
         param_str, IPv6NumToString(ip) AS address, toTypeName(ip) AS ip_type FROM `{}`.events",
        app.database
    ))
    .await[0];
    for field in [
        "client_time",
        "device_os",
        "session",
        "sequence",
        "event",
        "param_int",
        "param_str",
    ] {
        assert_eq!(row[field], sent[field], "{field}: {row}");
    }
    assert_eq!(
        row["device_id"].as_str().unwrap(),
        sent["device_id"].as_str().unwrap().to_lowercase()
    );
    // Sent 10 s after it happened: the corrected time is 10 s before the server's.
    let lag: i64 = row["lag"].to_string().trim_matches('"').parse().unwrap();
    assert!((9..=11).contains(&lag), "{row}");
    assert_eq!(row["address"], "::ffff:127.0.0.1");
    if version.is_modern() {
        assert_eq!(row["ip_type"], "IPv6");
        let ip = clickhouse(&format!(
            "SELECT toString(ip) FROM `{}`.events",
            app.database
        ))
        .await;
        assert_eq!(ip.trim(), "::ffff:127.0.0.1", "IPv6 reads as text");
    } else {
        assert_eq!(row["ip_type"], "FixedString(16)");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_row_a_check_constraint_refuses_is_quarantined() {
    let (text, version) = server_version().await;
    if !version.is_modern() {
        return skip(
            "engines::a_row_a_check_constraint_refuses_is_quarantined",
            &format!("ClickHouse {text} has no CHECK constraints (19.x+)"),
        );
    }
    let spool = crate::helpers::SpoolDir::new();
    let dir = spool.path().to_string();
    let app = spawn_app(&[("DURABILITY", "disk"), ("SPOOL_DIR", &dir)]).await;
    clickhouse(&format!(
        "ALTER TABLE `{}`.events ADD CONSTRAINT small CHECK param_int < 100",
        app.database
    ))
    .await;
    // param_int is sequence * 7: sequences 15..20 break the rule.
    assert_eq!(app.post_events(batch(0, 20)).await.status(), 200);
    wait_for_rows(&app.database, 15).await;
    let lines = spool.quarantined(5).await;
    let mut refused: Vec<u64> = lines
        .iter()
        .map(|l| l["event"]["sequence"].as_u64().unwrap())
        .collect();
    refused.sort();
    assert_eq!(refused, [15, 16, 17, 18, 19]);
    for line in &lines {
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("Code: 469"), "{error}");
    }
    assert!(app.stop().await.is_clean());
}
