//! `POST /v1/tables/{table}`: any table in `INGEST_TABLES`, each event validated
//! against the table's own columns, read back from ClickHouse field for field.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{
    PATIENCE, TestApp, clickhouse, clickhouse_json, modern_engine, spawn_app_in, unique_database,
    within,
};

pub(crate) async fn post_table(app: &TestApp, table: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/tables/{table}", app.address))
        .json(body)
        .send()
        .await
        .expect("request sent")
}

pub(crate) async fn wait_for(database: &str, table: &str, n: u64) {
    within(PATIENCE, async {
        loop {
            let count = clickhouse(&format!("SELECT count() FROM `{database}`.`{table}`")).await;
            if count.trim().parse::<u64>().ok() == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// Columns both engines have, with a value and how `toString` reads it back.
fn common_columns() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        ("i8", "Int8", json!(-128), "-128"),
        (
            "u64",
            "UInt64",
            json!("18446744073709551615"),
            "18446744073709551615",
        ),
        (
            "i64",
            "Int64",
            json!(-9223372036854775808i64),
            "-9223372036854775808",
        ),
        ("f64", "Float64", json!(0.5), "0.5"),
        (
            "dec",
            "Decimal(18, 4)",
            json!("12345678901234.5678"),
            "12345678901234.5678",
        ),
        ("s", "String", json!("héllo \u{1F600}"), "héllo \u{1F600}"),
        ("fs", "FixedString(3)", json!("ab"), "ab"),
        (
            "id",
            "UUID",
            json!("00112233-4455-6677-8899-aabbccddeeff"),
            "00112233-4455-6677-8899-aabbccddeeff",
        ),
        ("d", "Date", json!("2020-12-01"), "2020-12-01"),
        (
            "t",
            "DateTime('UTC')",
            json!(1606867140),
            "2020-12-01 23:59:00",
        ),
        ("e", "Enum8('a' = 1, 'b' = 2)", json!("b"), "b"),
        ("n", "Nullable(UInt32)", json!(null), "\\N"),
        (
            "arr",
            "Array(Nullable(String))",
            json!(["x", null]),
            "['x',NULL]",
        ),
        ("empty", "Array(UInt8)", json!([]), "[]"),
        ("tup", "Tuple(UInt8, String)", json!([7, "z"]), "(7,'z')"),
        ("lc", "LowCardinality(String)", json!("w"), "w"),
        (
            "alc",
            "Array(LowCardinality(String))",
            json!(["p", "q", "p"]),
            "['p','q','p']",
        ),
        (
            "lcn",
            "LowCardinality(Nullable(String))",
            json!(null),
            "\\N",
        ),
    ]
}

/// Columns only the modern engine has.
fn modern_columns() -> Vec<(&'static str, &'static str, Value, &'static str)> {
    vec![
        (
            "i128",
            "Int128",
            json!("-170141183460469231731687303715884105728"),
            "-170141183460469231731687303715884105728",
        ),
        ("u256", "UInt256", json!("1"), "1"),
        (
            "dec76",
            "Decimal(76, 10)",
            json!("-0.0000000001"),
            "-0.0000000001",
        ),
        ("b", "Bool", json!(true), "true"),
        ("d32", "Date32", json!("1900-01-01"), "1900-01-01"),
        (
            "t64",
            "DateTime64(3, 'UTC')",
            json!("2020-12-01T23:59:00.123Z"),
            "2020-12-01 23:59:00.123",
        ),
        ("v4", "IPv4", json!("1.2.3.4"), "1.2.3.4"),
        ("v6", "IPv6", json!("2001:db8::1"), "2001:db8::1"),
        ("m", "Map(String, UInt8)", json!({"k": 1}), "{'k':1}"),
        ("lcn2", "LowCardinality(Nullable(String))", json!("w"), "w"),
        (
            "named",
            "Tuple(a UInt8, b String)",
            json!({"b": "q"}),
            "(0,'q')",
        ),
    ]
}

pub(crate) async fn table_with(database: &str, table: &str, columns: &str) {
    clickhouse(&format!("CREATE DATABASE IF NOT EXISTS `{database}`")).await;
    // 18.16 has LowCardinality behind a setting (ignored by later servers).
    let url = match modern_engine() {
        true => crate::helpers::clickhouse_url(),
        false => format!(
            "{}/?allow_experimental_low_cardinality_type=1",
            crate::helpers::clickhouse_url()
        ),
    };
    crate::helpers::clickhouse_at(
        &url,
        &format!(
            "CREATE TABLE `{database}`.`{table}` ({columns}) ENGINE = MergeTree ORDER BY tuple()"
        ),
    )
    .await;
}

#[tokio::test]
async fn every_type_the_engine_has_round_trips_and_bad_fields_reject_their_event_only() {
    let mut columns = common_columns();
    if modern_engine() {
        columns.extend(modern_columns());
    }
    let database = unique_database();
    let ddl: Vec<String> = columns
        .iter()
        .map(|(n, t, _, _)| format!("`{n}` {t}"))
        .collect();
    table_with(&database, "every type", &ddl.join(", ")).await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "every type")]).await;
    let good: serde_json::Map<String, Value> = columns
        .iter()
        .map(|(n, _, v, _)| (n.to_string(), v.clone()))
        .collect();
    let mut bad = good.clone();
    bad.insert("i8".into(), json!(128));
    bad.insert("fs".into(), json!("abcd"));
    bad.insert("e".into(), json!("c"));
    bad.insert("dec".into(), json!("123456789012345.6789"));
    let mut unknown = good.clone();
    unknown.insert("not_a_column".into(), json!(1));
    let body = json!([good, bad, unknown]);
    let response = post_table(&app, "every type", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(answer["rejected"], 1);
    let errors: Vec<(String, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["index"], 1);
            (
                e["field"].as_str().unwrap().into(),
                e["error"].as_str().unwrap().into(),
            )
        })
        .collect();
    let expected = [
        ("i8", "out of range for Int8"),
        ("dec", "more than 18 digits for Decimal(18, 4)"),
        ("fs", "exceeds FixedString(3)"),
        ("e", "not one of the enum's values: a, b"),
    ];
    for (field, error) in expected {
        assert!(
            errors.contains(&(field.to_string(), error.to_string())),
            "{field}: {error} in {errors:?}"
        );
    }
    wait_for(&database, "every type", 2).await;
    let select: Vec<String> = columns
        .iter()
        .map(|(n, _, _, _)| format!("toString(`{n}`) AS `{n}`"))
        .collect();
    let rows = clickhouse_json(&format!(
        "SELECT {} FROM `{database}`.`every type`",
        select.join(", ")
    ))
    .await;
    assert_eq!(rows.len(), 2);
    for row in rows {
        for (name, _, _, shown) in &columns {
            // `toString` of NULL is NULL: JSON null.
            let got = match &row[*name] {
                Value::Null => "\\N".to_string(),
                v => v.as_str().unwrap().to_string(),
            };
            // FixedString's padding: shown by some servers, not others.
            assert_eq!(got.trim_end_matches('\0'), *shown, "{name}");
        }
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(r#"table_events_total{outcome="ignored_fields",table="every type"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"table_buffer_events{table="every type"}"#),
        "{metrics}"
    );
    let status: Value = app.get("/v1/status").await.json().await.unwrap();
    let entry = &status["tables"][0];
    assert_eq!(entry["table"], "every type");
    assert_eq!(
        (entry["accepted"].as_u64(), entry["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(entry["state"], "ok");
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["tables"]["every type"]["status"], "ok", "{health}");
    app.stop().await;
}

#[tokio::test]
async fn unknown_tables_are_404_and_a_missing_one_is_503_until_it_exists() {
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "later"), ("SCHEMA_REFRESH_SECS", "1")],
    )
    .await;
    let event = json!([{"n": 1}]);
    let response = post_table(&app, "nope", &event).await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("INGEST_TABLES"),
        "{body}"
    );
    let response = post_table(&app, "later", &event).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let ready = app.get("/v1/ready").await;
    assert_eq!(ready.status(), 503);
    table_with(&database, "later", "n UInt8").await;
    within(PATIENCE, async {
        loop {
            if post_table(&app, "later", &event).await.status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    wait_for(&database, "later", 1).await;
    // The events table is still /v1/events, and /v1/tables/events too.
    let events = post_table(&app, "events", &json!([crate::helpers::event(1)])).await;
    assert_eq!(events.status(), 200);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_column_is_stored_under_load_without_a_restart_and_nothing_is_lost() {
    let database = unique_database();
    table_with(&database, "grows", "n UInt32").await;
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "grows"),
            ("SCHEMA_REFRESH_SECS", "1"),
            ("BUFFER_FLUSH_MS", "200"),
        ],
    )
    .await;
    // Four clients post without pause while the column is added.
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let address = app.address.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut acked = Vec::new();
                for i in 0..150u32 {
                    let n = c * 1000 + i;
                    let body = json!([{"n": n, "extra": format!("e{n}")}]);
                    let response = http
                        .post(format!("{address}/v1/tables/grows"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    if response.status() == 200 {
                        acked.push(n);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                acked
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    clickhouse(&format!(
        "ALTER TABLE `{database}`.grows ADD COLUMN extra String"
    ))
    .await;
    let mut acked = Vec::new();
    for client in clients {
        acked.extend(client.await.unwrap());
    }
    acked.sort();
    assert_eq!(acked.len(), 600, "every request accepted");
    within(PATIENCE, async {
        while stored_n(&database).await.len() < acked.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(stored_n(&database).await, acked, "each row once");
    // Posted after the column existed and was seen (within SCHEMA_REFRESH_SECS): stored.
    let with_extra = clickhouse(&format!(
        "SELECT count() FROM `{database}`.grows WHERE extra = concat('e', toString(n))"
    ))
    .await;
    assert!(
        with_extra.trim().parse::<u64>().unwrap() > 0,
        "{with_extra}"
    );
    app.stop().await;
}

async fn stored_n(database: &str) -> Vec<u32> {
    clickhouse(&format!("SELECT n FROM `{database}`.grows ORDER BY n"))
        .await
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// Posts `[{n, t}]` for `n` in `range` to `table` at `address`, one event a request;
/// returns the `n` acknowledged with `200`.
pub(crate) async fn post_each(address: &str, table: &str, range: std::ops::Range<u32>) -> Vec<u32> {
    let http = reqwest::Client::new();
    let mut acked = Vec::new();
    for n in range {
        let response = http
            .post(format!("{address}/v1/tables/{table}"))
            .json(&json!([{"n": n, "t": table}]))
            .send()
            .await;
        if response.is_ok_and(|r| r.status() == 200) {
            acked.push(n);
        }
    }
    acked
}

/// The `n` stored in `table`, sorted, and whether every row names its own table.
pub(crate) async fn stored_in(database: &str, table: &str) -> (Vec<u32>, bool) {
    let rows = clickhouse_json(&format!(
        "SELECT n, t FROM `{database}`.`{table}` ORDER BY n"
    ))
    .await;
    let own = rows.iter().all(|r| r["t"] == table);
    (
        rows.iter()
            .map(|r| r["n"].as_u64().unwrap() as u32)
            .collect(),
        own,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_in_disk_mode_with_three_tables_buffered_stores_each_row_once_in_its_table() {
    let database = unique_database();
    for table in ["a", "b", "c"] {
        table_with(&database, table, "n UInt32, t String").await;
    }
    let spool = crate::helpers::SpoolDir::new();
    let env = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        ("INGEST_TABLES", "a,b,c"),
        // Nothing is flushed before the kill: every row is in a buffer and its spool.
        ("BUFFER_FLUSH_MS", "600000"),
        ("BUFFER_MIN_INTERVAL_MS", "0"),
    ];
    let (mut child, address) = crate::process::start_binary(&database, &env).await;
    let mut acked = Vec::new();
    for (i, table) in ["a", "b", "c"].into_iter().enumerate() {
        let first = 100 * i as u32;
        acked.push(post_each(&address, table, first..first + 20).await);
    }
    crate::process::signal(&child, "KILL");
    within(PATIENCE, child.wait()).await.unwrap();
    for table in ["a", "b", "c"] {
        assert_eq!(
            stored_in(&database, table).await.0,
            Vec::<u32>::new(),
            "{table}"
        );
    }
    let (child, _) = crate::process::start_binary(
        &database,
        &[
            ("DURABILITY", "disk"),
            ("SPOOL_DIR", spool.path()),
            ("INGEST_TABLES", "a,b,c"),
            ("BUFFER_FLUSH_MS", "200"),
        ],
    )
    .await;
    for (table, acked) in ["a", "b", "c"].into_iter().zip(&acked) {
        assert_eq!(acked.len(), 20, "{table}");
        within(PATIENCE, async {
            while stored_in(&database, table).await.0.len() < acked.len() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    let (status, log) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    for (table, acked) in ["a", "b", "c"].into_iter().zip(&acked) {
        let (stored, own) = stored_in(&database, table).await;
        assert_eq!(&stored, acked, "{table}: each acknowledged row once");
        assert!(own, "{table}: only its own rows");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_answers_503_and_recovers_while_the_other_keeps_flowing() {
    let database = unique_database();
    for table in ["steady", "flaky"] {
        table_with(&database, table, "n UInt32, t String").await;
    }
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "steady,flaky"),
            ("SCHEMA_REFRESH_SECS", "1"),
            ("BUFFER_FLUSH_MS", "200"),
        ],
    )
    .await;
    let address = app.address.clone();
    let steady = tokio::spawn({
        let address = address.clone();
        async move {
            let mut acked = Vec::new();
            for round in 0..15u32 {
                acked.extend(post_each(&address, "steady", round * 20..round * 20 + 20).await);
                tokio::time::sleep(Duration::from_millis(1000)).await;
            }
            acked
        }
    });
    clickhouse(&format!("DROP TABLE `{database}`.flaky")).await;
    // Its requests are refused once the service notices, not before the table is back.
    within(PATIENCE, async {
        while post_each(&address, "flaky", 0..1).await.len() == 1 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        post_each(&address, "flaky", 1..2).await.is_empty(),
        "still 503"
    );
    table_with(&database, "flaky", "n UInt32, t String").await;
    within(PATIENCE, async {
        while post_each(&address, "flaky", 1000..1001).await.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let acked = steady.await.unwrap();
    assert_eq!(acked.len(), 300, "the steady table never refused");
    within(PATIENCE, async {
        while stored_in(&database, "steady").await.0.len() < acked.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(stored_in(&database, "steady").await.0, acked);
    within(PATIENCE, async {
        while !stored_in(&database, "flaky").await.0.contains(&1000) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn openapi_describes_each_allowed_tables_event_from_its_columns() {
    let database = unique_database();
    table_with(
        &database,
        "clicks",
        "kind Enum8('a' = 1, 'b' = 2), note Nullable(String), tags Array(String), \
         server_time DateTime",
    )
    .await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "clicks")]).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(doc["paths"]["/v1/tables/{table}"]["post"].is_object());
    let body = &doc["paths"]["/v1/tables/clicks"]["post"]["requestBody"]["content"];
    assert!(body["application/json"].is_object(), "{body}");
    let event = &doc["components"]["schemas"]["TableEvent_clicks"]["properties"];
    assert_eq!(event["kind"]["enum"], json!(["a", "b"]));
    assert_eq!(event["note"]["nullable"], true);
    assert_eq!(event["tags"]["type"], "array");
    assert_eq!(event["server_time"]["readOnly"], true);
    app.stop().await;
}

#[tokio::test]
async fn rows_buffered_under_a_dropped_column_are_quarantined_with_the_reason_and_later_rows_flow()
{
    let database = unique_database();
    table_with(&database, "shrinks", "n UInt32, gone String").await;
    let spool = crate::helpers::SpoolDir::new();
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "shrinks"),
            ("SCHEMA_REFRESH_SECS", "1"),
            ("SPOOL_DIR", spool.path()),
            // Held in the buffer while the column goes away.
            ("BUFFER_FLUSH_MS", "4000"),
            ("BUFFER_MIN_INTERVAL_MS", "0"),
        ],
    )
    .await;
    let old = json!([{"n": 1, "gone": "x"}, {"n": 2, "gone": "y"}]);
    assert_eq!(post_table(&app, "shrinks", &old).await.status(), 200);
    clickhouse(&format!(
        "ALTER TABLE `{database}`.shrinks DROP COLUMN gone"
    ))
    .await;
    let lines = spool.quarantined(2).await;
    for line in &lines {
        assert_eq!(line["table"], "shrinks", "{line}");
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("gone"), "{error}");
        assert!(
            line["event"]["n"].is_number(),
            "read back by its own columns: {line}"
        );
    }
    // Rows encoded after the change are stored.
    within(PATIENCE, async {
        let mut n = 10;
        loop {
            post_table(&app, "shrinks", &json!([{"n": n, "gone": "z"}])).await;
            let count = clickhouse(&format!("SELECT count() FROM `{database}`.shrinks")).await;
            if count.trim() != "0" {
                return;
            }
            n += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn a_missing_field_takes_the_columns_default_expression_where_the_server_can_apply_it() {
    let database = unique_database();
    table_with(
        &database,
        "defaults",
        "n UInt32, t DateTime('UTC'), d Date DEFAULT toDate(t), label String DEFAULT 'web'",
    )
    .await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "defaults")]).await;
    let body = json!([{"n": 1, "t": "2020-12-01 23:59:00"}]);
    assert_eq!(post_table(&app, "defaults", &body).await.status(), 200);
    wait_for(&database, "defaults", 1).await;
    let row = clickhouse(&format!(
        "SELECT toString(d), label FROM `{database}`.defaults"
    ))
    .await;
    // A literal DEFAULT is applied on every server; an expression only where the server
    // reads RowBinaryWithDefaults (not 18.16: the type's zero value there).
    let expected = match modern_engine() {
        true => "2020-12-01\tweb",
        false => "0000-00-00\tweb", // 18.16 shows the zero Date so
    };
    assert_eq!(row.trim(), expected);
    app.stop().await;
}

/// The value of the metric line `name{labels}` in a Prometheus text exposition.
pub(crate) fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn each_tables_flushes_inserts_and_written_events_are_its_own_in_metrics_health_and_status() {
    let database = unique_database();
    for table in ["left", "right"] {
        table_with(&database, table, "n UInt32, t String").await;
    }
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "left,right"), ("BUFFER_FLUSH_MS", "100")],
    )
    .await;
    let rows = |n: u32| {
        json!(
            (0..n)
                .map(|i| json!({"n": i, "t": "x"}))
                .collect::<Vec<_>>()
        )
    };
    assert_eq!(post_table(&app, "left", &rows(3)).await.status(), 200);
    assert_eq!(post_table(&app, "right", &rows(5)).await.status(), 200);
    wait_for(&database, "left", 3).await;
    wait_for(&database, "right", 5).await;
    // The rows are visible in ClickHouse a moment before the flusher has read the insert's
    // answer and counted them: wait for the service's own count.
    let series =
        |table: &str| format!("event_ingest_table_events_written_total{{table=\"{table}\"}}");
    let metrics = within(PATIENCE, async {
        loop {
            let metrics = app.get("/metrics").await.text().await.unwrap();
            if metric(&metrics, &series("left")) == Some(3.0)
                && metric(&metrics, &series("right")) == Some(5.0)
            {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let of = |name: &str, table: &str| {
        metric(
            &metrics,
            &format!("event_ingest_table_{name}{{table=\"{table}\"}}"),
        )
    };
    assert_eq!(of("events_written_total", "left"), Some(3.0), "{metrics}");
    assert_eq!(of("events_written_total", "right"), Some(5.0), "{metrics}");
    for table in ["left", "right"] {
        assert!(of("inserts_total", table) >= Some(1.0), "{metrics}");
        assert!(of("flushes_total", table) >= Some(1.0), "{metrics}");
        assert_eq!(
            of("events_quarantined_total", table),
            Some(0.0),
            "{metrics}"
        );
    }
    // The events table's figures keep their names and count the events table only.
    assert_eq!(
        metric(&metrics, "event_ingest_events_written_total"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "event_ingest_inserts_total"),
        Some(0.0),
        "{metrics}"
    );
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    for (table, n) in [("left", 3), ("right", 5)] {
        let entry = &health["tables"][table];
        assert_eq!(entry["status"], "ok", "{health}");
        assert_eq!(entry["counters"]["events_written"], n, "{health}");
        assert_eq!(entry["last_insert"]["rows"], n, "{health}");
        assert_eq!(entry["last_flush_error"], Value::Null, "{health}");
    }
    assert_eq!(health["counters"]["events_written"], 0, "{health}");
    let status: Value = app.get("/v1/status").await.json().await.unwrap();
    for (i, (table, n)) in [("left", 3), ("right", 5)].into_iter().enumerate() {
        let entry = &status["tables"][i];
        assert_eq!(entry["table"], table, "{status}");
        assert_eq!(entry["events_written"], n, "{status}");
        assert!(entry["last_insert"]["at"].is_string(), "{status}");
    }
    app.stop().await;
}

#[tokio::test]
async fn arrays_of_one_nested_structure_must_be_of_one_length() {
    let database = unique_database();
    table_with(
        &database,
        "nested",
        "id UInt32, n Nested(a UInt8, b String)",
    )
    .await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "nested")]).await;
    let body = json!([
        {"id": 1, "n.a": [1, 2], "n.b": ["x", "y"]},
        {"id": 2, "n.a": [1, 2], "n.b": ["x"]},
        {"id": 3, "n.a": [1]},
        {"id": 4},
        {"id": 5, "n": [{"a": 1, "b": "x"}]},
    ]);
    let response = post_table(&app, "nested", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    let errors: Vec<(u64, String, String)> = answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let text = e["error"].as_str().unwrap().to_string();
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().into(),
                text,
            )
        })
        .collect();
    assert_eq!(errors.len(), 3, "{answer}");
    assert_eq!((errors[0].0, errors[0].1.as_str()), (1, "n.b"), "{answer}");
    assert!(errors[0].2.contains("n.a has 2"), "{answer}");
    assert_eq!((errors[1].0, errors[1].1.as_str()), (2, "n.b"), "{answer}");
    // The structure sent whole would be dropped: refused, naming its arrays.
    assert_eq!((errors[2].0, errors[2].1.as_str()), (4, "n"), "{answer}");
    assert!(errors[2].2.contains("n.a, n.b"), "{answer}");
    // The good rows are stored: the table was never refused a whole insert.
    wait_for(&database, "nested", 2).await;
    let stored = clickhouse(&format!(
        "SELECT id, n.a, n.b FROM `{database}`.nested ORDER BY id"
    ))
    .await;
    assert_eq!(stored, "1\t[1,2]\t['x','y']\n4\t[]\t[]\n");
    app.stop().await;
}

#[tokio::test]
async fn a_table_may_be_named_with_its_database_and_unknown_names_are_quoted_short() {
    let database = unique_database();
    table_with(&database, "t1", "id UInt32").await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "t1")]).await;
    let qualified = format!("{database}.t1");
    let response = post_table(&app, &qualified, &json!([{"id": 1}])).await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    // A byte order mark before the body is not part of the events.
    let bom = reqwest::Client::new()
        .post(format!("{}/v1/tables/t1", app.address))
        .header("content-type", "application/json")
        .body(format!("\u{feff}{}", json!([{"id": 2}])))
        .send()
        .await
        .unwrap();
    assert_eq!(bom.status(), 200, "{}", bom.text().await.unwrap());
    wait_for(&database, "t1", 2).await;

    let long = "x".repeat(10_000);
    let response = post_table(&app, &long, &json!([{"id": 3}])).await;
    assert_eq!(response.status(), 404);
    let text = response.text().await.unwrap();
    assert!(text.len() < 400, "{} bytes: {}", text.len(), &text[..200]);
    assert!(text.contains("more bytes"), "{text}");
    app.stop().await;
}

#[tokio::test]
async fn an_array_of_tuples_is_stored_or_refused_never_dropped() {
    let database = unique_database();
    table_with(
        &database,
        "tuples",
        "id UInt32, at Array(Tuple(UInt8, String))",
    )
    .await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "tuples")]).await;
    let response = post_table(&app, "tuples", &json!([{"id": 1, "at": [[7, "a"]]}])).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    if answer["accepted"] == 1 {
        // A server that keeps the column whole (20.x and later).
        wait_for(&database, "tuples", 1).await;
        let stored = clickhouse(&format!("SELECT at FROM `{database}`.tuples")).await;
        assert_eq!(stored.trim(), "[(7,'a')]");
    } else {
        // 18.16 keeps it as `at.1`, `at.2`: the whole value is refused, by name.
        assert_eq!(answer["rejected"], 1, "{answer}");
        assert_eq!(answer["errors"][0]["field"], "at", "{answer}");
        assert!(
            answer["errors"][0]["error"]
                .as_str()
                .unwrap()
                .contains("at.1, at.2"),
            "{answer}"
        );
    }
    app.stop().await;
}

/// A table of `INGEST_TABLES` is written by the same sink as the events table: a row its
/// table refuses (a derived column that throws for that row's value, with a code that does
/// not say "bad data") is found by probing a `Null` copy of the table, so the good rows go
/// in one real insert and the refused one is quarantined, read back by its own columns.
#[tokio::test]
async fn a_row_a_table_refuses_is_found_with_a_null_copy_and_the_rest_goes_in_one_insert() {
    let database = unique_database();
    table_with(
        &database,
        "clicks",
        "n UInt32, s String, short String MATERIALIZED toString(toFixedString(s, 2))",
    )
    .await;
    let spool = crate::helpers::SpoolDir::new();
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "clicks"), ("SPOOL_DIR", spool.path())],
    )
    .await;
    let body: Vec<Value> = (0..10)
        .map(|n| json!({"n": n, "s": if n == 6 { "too long" } else { "ok" }}))
        .collect();
    assert_eq!(
        post_table(&app, "clicks", &Value::Array(body))
            .await
            .status(),
        200
    );
    wait_for(&database, "clicks", 9).await;
    let lines = spool.quarantined(1).await;
    assert_eq!(lines[0]["table"], "clicks", "{}", lines[0]);
    assert_eq!(lines[0]["event"]["n"], 6, "{}", lines[0]);
    let stats = app.stats.clone();
    assert!(app.stop().await.is_clean());
    let inserts = stats.table_inserts.with_label_values(&["clicks"]).get();
    assert_eq!(
        inserts, 1,
        "the 9 good rows in one insert, not split in halves"
    );
    // The probe's table went with the search.
    let others = clickhouse(&format!(
        "SELECT groupArray(name) FROM system.tables WHERE database = '{database}' \
         AND name != 'clicks'"
    ))
    .await;
    assert_eq!(others.trim(), "[]");
}
