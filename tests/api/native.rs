//! Native blocks against the server itself, on both engines: the gateway's sort equals the
//! server's own `ORDER BY`, every column type the builder writes reads back as its
//! RowBinary twin does, and `/v1/health` says how inserts are sorted.

use std::net::Ipv6Addr;

use event_ingest::format::Rows;
use event_ingest::format::{BlockBuilder, Schema, SortKey};
use event_ingest::sink::{ServerVersion, create_table_sql};
use event_ingest::table::event::Event;
use event_ingest::table::events::COLUMNS;
use serde_json::Value;

use crate::helpers::{
    PATIENCE, clickhouse, clickhouse_json, clickhouse_url, drop_database, spawn_app_in,
    unique_database, wait_for_rows, within,
};

/// The server's version, and the settings its DDL needs (18.16: experimental LowCardinality).
async fn server() -> (ServerVersion, String) {
    let text = clickhouse("SELECT version()").await;
    let version = ServerVersion::parse(&text).expect("a version");
    let settings = version
        .required_settings()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    (version, settings)
}

/// Runs `sql` with `settings` in the URL and `body` as the data (none: `sql` is the body);
/// panics on an error.
async fn post(sql: &str, settings: &str, body: Vec<u8>) -> String {
    let request = reqwest::Client::new().post(format!("{}/?{settings}", clickhouse_url()));
    let request = match body.is_empty() {
        true => request.body(sql.to_string()),
        false => request.query(&[("query", sql)]).body(body),
    };
    let response = request.send().await.expect("ClickHouse reachable");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{sql}: {status} {text}");
    text
}

/// The `(name, type)` of `columns` in `database.table`, in that order.
async fn column_types(database: &str, table: &str, columns: &[&str]) -> Vec<(String, String)> {
    let all: Vec<(String, String)> = clickhouse_json(&format!(
        "SELECT name, type FROM system.columns WHERE database = '{database}' \
         AND table = '{table}'"
    ))
    .await
    .iter()
    .map(|row| {
        (
            row["name"].as_str().unwrap().into(),
            row["type"].as_str().unwrap().into(),
        )
    })
    .collect();
    columns
        .iter()
        .map(|c| all.iter().find(|(n, _)| n == c).cloned().expect("column"))
        .collect()
}

/// A small deterministic generator (xorshift64*), so a failure can be replayed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` events with few names (some sharing prefixes, some non-ASCII), times across day
/// boundaries, devices repeating and UUID halves varying independently.
fn random_rows(seed: u64, n: u32) -> Rows {
    let mut random = Random(seed);
    let names = ["view", "app_start", "app_st", "ärger", "", "purchase", "Z"];
    let devices: Vec<u128> = (0..40)
        .map(|_| u128::from(random.next()) << 64 | u128::from(random.below(4)))
        .collect();
    let mut rows = Rows::default();
    for i in 0..n {
        let name = names[random.below(names.len() as u64) as usize];
        let day_start = 1_606_780_800 + 86_400 * random.below(4) as u32;
        let server_time = day_start + [0, 1, 3_599, 86_399][random.below(4) as usize];
        let device = devices[random.below(devices.len() as u64) as usize];
        let device = match random.below(3) {
            0 => device,
            1 => device & u128::from(u64::MAX), // only the second half set
            _ => device ^ (u128::from(random.below(3)) << 64),
        };
        rows.push(&Event {
            client_time: random.next() as u32,
            client_time_corrected: random.next() as u32,
            server_time,
            device_id: uuid::Uuid::from_u128(device),
            device_os: ["IOS 13.5.1", "Android 14"][random.below(2) as usize].into(),
            session: format!("s{}", random.below(100)).into(),
            sequence: i,
            event: name.into(),
            param_int: random.next() as u32,
            param_str: "x".repeat(random.below(200) as usize).into(),
            ip: Ipv6Addr::from(random.next() as u128),
        });
    }
    rows
}

#[tokio::test]
async fn blocks_arrive_in_the_order_clickhouse_sorts_the_key_in() {
    let (version, settings) = server().await;
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    post(
        &create_table_sql(&database, "events", version),
        &settings,
        vec![],
    )
    .await;
    // Log tables keep rows in the order they arrive.
    for table in ["as_native", "as_rowbinary"] {
        let ddl = format!("CREATE TABLE `{database}`.{table} AS `{database}`.events ENGINE = Log");
        post(&ddl, &settings, vec![]).await;
    }
    let columns = column_types(&database, "events", &COLUMNS).await;
    let key = clickhouse(&format!(
        "SELECT sorting_key FROM system.tables WHERE database = '{database}' AND name = 'events'"
    ))
    .await;
    let zone = clickhouse("SELECT timezone()").await;
    let schema = Schema::new(&columns, zone.trim() == "UTC").expect("every type known");
    let key = SortKey::plan(key.trim(), &schema);
    assert!(key.is_complete(), "{key:?}");
    let builder = BlockBuilder::new(schema, key);

    let names = COLUMNS.join(", ");
    for seed in 1..=3 {
        let rows = random_rows(seed, 3_000);
        let block = builder.build(rows.data(), rows.len()).expect("a block");
        clickhouse(&format!("TRUNCATE TABLE `{database}`.as_native")).await;
        clickhouse(&format!("TRUNCATE TABLE `{database}`.as_rowbinary")).await;
        let insert = |table: &str, format: &str| {
            format!("INSERT INTO `{database}`.{table} ({names}) FORMAT {format}")
        };
        post(&insert("as_native", "Native"), &settings, block).await;
        post(
            &insert("as_rowbinary", "RowBinary"),
            &settings,
            rows.data().to_vec(),
        )
        .await;

        let key_columns = "event, toDate(server_time), toString(device_id), server_time";
        let as_sent = clickhouse(&format!(
            "SELECT {key_columns} FROM `{database}`.as_native FORMAT TSV"
        ))
        .await;
        let sorted_by_server = clickhouse(&format!(
            "SELECT {key_columns} FROM `{database}`.as_rowbinary \
             ORDER BY event, toDate(server_time), device_id, server_time FORMAT TSV"
        ))
        .await;
        assert_eq!(as_sent.lines().count(), 3_000);
        assert!(
            as_sent == sorted_by_server,
            "seed {seed}: the block's order differs from ClickHouse's ORDER BY"
        );
        // Every column of every row reads back as the RowBinary twin's (type mapping).
        let all = COLUMNS
            .iter()
            .map(|c| format!("toString({c})"))
            .collect::<Vec<_>>()
            .join(", ");
        let read = |table: &str| {
            format!("SELECT {all} FROM `{database}`.{table} ORDER BY sequence FORMAT TSV")
        };
        let native = clickhouse(&read("as_native")).await;
        assert!(
            native == clickhouse(&read("as_rowbinary")).await,
            "seed {seed}"
        );
    }
    drop_database(&database).await;
}

/// RowBinary of one value of each type, for row `i`.
fn typed_row(i: u8, modern: bool, out: &mut Vec<u8>) {
    let n = u64::from(i);
    out.push(i); // UInt8
    out.push((i as i8).wrapping_neg() as u8); // Int8
    out.extend_from_slice(&(u16::MAX - u16::from(i)).to_le_bytes()); // UInt16
    out.extend_from_slice(&(-(i32::from(i)) as i16).to_le_bytes()); // Int16
    out.extend_from_slice(&(u32::MAX - u32::from(i)).to_le_bytes()); // UInt32
    out.extend_from_slice(&(i32::MIN + i32::from(i)).to_le_bytes()); // Int32
    out.extend_from_slice(&(u64::MAX - n).to_le_bytes()); // UInt64
    out.extend_from_slice(&(i64::MIN + n as i64).to_le_bytes()); // Int64
    out.extend_from_slice(&(0.5f32 + f32::from(i)).to_le_bytes()); // Float32
    out.extend_from_slice(&(-1.25f64 * f64::from(i)).to_le_bytes()); // Float64
    out.extend_from_slice(&(18_000u16 + u16::from(i)).to_le_bytes()); // Date
    out.extend_from_slice(&(1_606_867_140u32 + u32::from(i)).to_le_bytes()); // DateTime
    out.extend_from_slice(&(1_606_867_140u32 - u32::from(i)).to_le_bytes()); // DateTime('UTC')
    out.extend_from_slice(&(0x0011_2233_4455_6677u64 + n).to_le_bytes()); // UUID, first half
    out.extend_from_slice(&(0x8899_aabb_ccdd_eeffu64 - n).to_le_bytes()); // UUID, second half
    out.extend_from_slice(&[b'a' + i % 26, 0, b'z']); // FixedString(3)
    let text = format!("ü{}", "x".repeat(usize::from(i) * 3));
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes()); // String
    let lc = ["one", "two", "three", ""][usize::from(i % 4)];
    out.push(lc.len() as u8);
    out.extend_from_slice(lc.as_bytes()); // LowCardinality(String)
    out.extend_from_slice(&[b'k', b'0' + i % 3]); // LowCardinality(FixedString(2))
    if i.is_multiple_of(3) {
        out.push(1); // Nullable(UInt32): NULL
    } else {
        out.push(0);
        out.extend_from_slice(&u32::from(i).to_le_bytes());
    }
    if i.is_multiple_of(2) {
        out.push(1); // Nullable(String): NULL
    } else {
        out.extend_from_slice(&[0, 2, b'n', b'0' + i % 10]);
    }
    out.extend_from_slice(&(0xc0a8_0000u32 + u32::from(i)).to_le_bytes()); // IPv4 / UInt32
    if modern {
        out.extend_from_slice(&Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i)).octets());
    }
}

#[tokio::test]
async fn every_type_the_builder_writes_reads_back_as_its_rowbinary_twin() {
    let (version, settings) = server().await;
    let modern = version.is_modern();
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    let mut columns = vec![
        ("u8", "UInt8"),
        ("i8", "Int8"),
        ("u16", "UInt16"),
        ("i16", "Int16"),
        ("u32", "UInt32"),
        ("i32", "Int32"),
        ("u64", "UInt64"),
        ("i64", "Int64"),
        ("f32", "Float32"),
        ("f64", "Float64"),
        ("d", "Date"),
        ("dt", "DateTime"),
        ("dtu", "DateTime('UTC')"),
        ("id", "UUID"),
        ("fs", "FixedString(3)"),
        ("s", "String"),
        ("lc", "LowCardinality(String)"),
        ("lcf", "LowCardinality(FixedString(2))"),
        ("n", "Nullable(UInt32)"),
        ("ns", "Nullable(String)"),
        // 18.16 has no IPv4 type: the same four bytes as a UInt32 there.
        ("ip4", if modern { "IPv4" } else { "UInt32" }),
    ];
    if modern {
        columns.push(("ip6", "IPv6"));
    }
    let ddl: Vec<String> = columns.iter().map(|(n, t)| format!("{n} {t}")).collect();
    for table in ["as_native", "as_rowbinary"] {
        let sql = format!(
            "CREATE TABLE `{database}`.{table} ({}) ENGINE = MergeTree ORDER BY u8",
            ddl.join(", ")
        );
        post(&sql, &settings, vec![]).await;
    }
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let reported = column_types(&database, "as_native", &names).await;
    let schema = Schema::new(&reported, true).expect("every type known");
    let mut data = Vec::new();
    for i in 0..40 {
        typed_row(i, modern, &mut data);
    }
    let block = BlockBuilder::new(schema.clone(), SortKey::none())
        .build(&data, 40)
        .expect("a block");
    let list = names.join(", ");
    let insert = |table: &str, format: &str| {
        format!("INSERT INTO `{database}`.{table} ({list}) FORMAT {format}")
    };
    post(&insert("as_native", "Native"), &settings, block).await;
    post(&insert("as_rowbinary", "RowBinary"), &settings, data).await;
    let all = names
        .iter()
        .map(|c| format!("toString({c})"))
        .collect::<Vec<_>>()
        .join(", ");
    let read =
        |table: &str| format!("SELECT {all} FROM `{database}`.{table} ORDER BY u8 FORMAT TSV");
    let native = clickhouse(&read("as_native")).await;
    assert_eq!(native.lines().count(), 40);
    assert_eq!(native, clickhouse(&read("as_rowbinary")).await);
    assert!(native.contains("18446744073709551615") && native.contains("\\N"));
    drop_database(&database).await;
}

/// `/v1/health`'s `insert_format` once the app has written something.
async fn insert_format(app: &crate::helpers::TestApp) -> Value {
    within(PATIENCE, async {
        loop {
            let body: Value = app.get("/v1/health").await.json().await.unwrap();
            if body["insert_format"].is_object() {
                return body["insert_format"].clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test]
async fn health_says_the_table_is_written_in_key_order() {
    let database = unique_database();
    let app = spawn_app_in(&database, &[]).await;
    assert_eq!(
        app.post_events(crate::helpers::batch(0, 5)).await.status(),
        200
    );
    wait_for_rows(&database, 5).await;
    let format = insert_format(&app).await;
    assert_eq!(format["format"], "Native");
    assert_eq!(format["compression"], "none");
    assert_eq!(format["sorted_by"].as_array().unwrap().len(), 4);
    assert_eq!(format["server_sorts_by"], serde_json::json!([]));
    app.stop().await;
    drop_database(&database).await;
}

#[tokio::test]
async fn a_key_the_gateway_cannot_evaluate_is_left_to_the_server_and_said() {
    let (_, settings) = server().await;
    let database = unique_database();
    clickhouse(&format!("CREATE DATABASE `{database}`")).await;
    let columns = "client_time DateTime, client_time_corrected DateTime, server_time DateTime, \
        device_id UUID, device_os String, session String, sequence UInt32, \
        event LowCardinality(String), param_int UInt32, param_str String, ip FixedString(16)";
    let sql = format!(
        "CREATE TABLE `{database}`.events ({columns}) ENGINE = MergeTree \
         ORDER BY (event, cityHash64(session), sequence)"
    );
    post(&sql, &settings, vec![]).await;
    // LZ4, the non-default, so that both compressions are read by the server.
    let app = spawn_app_in(&database, &[("CLICKHOUSE_COMPRESSION", "lz4")]).await;
    assert_eq!(
        app.post_events(crate::helpers::batch(0, 50)).await.status(),
        200
    );
    wait_for_rows(&database, 50).await;
    let format = insert_format(&app).await;
    assert_eq!(format["format"], "Native");
    assert_eq!(format["compression"], "lz4");
    assert_eq!(format["sorted_by"], serde_json::json!(["event"]));
    assert_eq!(
        format["server_sorts_by"],
        serde_json::json!(["cityHash64(session)", "sequence"])
    );
    let sum = clickhouse(&format!("SELECT sum(sequence) FROM `{database}`.events")).await;
    assert_eq!(sum.trim(), (0..50).sum::<u32>().to_string());
    app.stop().await;
    drop_database(&database).await;
}

#[tokio::test]
async fn a_column_retyped_between_inserts_is_read_again_and_later_batches_are_stored() {
    let (_, settings) = server().await;
    let database = unique_database();
    let app = spawn_app_in(&database, &[]).await;
    assert_eq!(
        app.post_events(crate::helpers::batch(0, 5)).await.status(),
        200
    );
    wait_for_rows(&database, 5).await;
    // An operator makes `session` a dictionary column. The block the gateway planned says
    // `String` for it: 18.16 refuses that for a `LowCardinality(String)` column (BAD_CAST),
    // newer servers convert it. Either way the next batch must be stored, as the new type.
    post(
        &format!("ALTER TABLE `{database}`.events MODIFY COLUMN session LowCardinality(String)"),
        &settings,
        vec![],
    )
    .await;
    assert_eq!(
        app.post_events(crate::helpers::batch(5, 5)).await.status(),
        200
    );
    wait_for_rows(&database, 10).await;
    let sessions = clickhouse(&format!(
        "SELECT toTypeName(session), count() FROM `{database}`.events \
         WHERE session = 'ybuRi8mAUypxjbxQ' GROUP BY toTypeName(session) FORMAT TSV"
    ))
    .await;
    assert_eq!(sessions.trim(), "LowCardinality(String)\t10");
    assert_eq!(app.stats.events_quarantined.get(), 0);
    assert!(app.stop().await.is_clean());
    drop_database(&database).await;
}
