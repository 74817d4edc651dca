//! What ClickHouse spends to store a row, by insert body: RowBinary or Native, arrival
//! order or the table's key order, LZ4 or plain. Each body is inserted into a fresh copy of
//! the table, with a `query_id`; the server's own figures are then read from
//! `system.query_log` (`UserTimeMicroseconds + SystemTimeMicroseconds` of the insert,
//! divided by `written_rows`). `ProfileEvents` is read in either form: `Names`/`Values`
//! arrays (18.16) or a `Map` (21.8 and later). A server without `system.query_log` (chDB,
//! the tests' modern engine, keeps none) gets its bytes printed and "no query log" for the
//! cost.
//!
//! Two tables: `events` (the events table as the service creates it, rows from
//! `event::testing::load_rows`) and `mixed` (20 columns of mixed types, [`MIXED_DDL`], rows
//! encoded from JSON by the schema-driven path of `POST /v1/tables/{table}`).
//!
//! ```sh
//! cargo run --release --example insert_cost -- [ROWS] [REPEATS] [events|mixed]
//! # defaults 1000000 3 events
//! ```
//! Against `CLICKHOUSE_HOST:CLICKHOUSE_PORT` (default 127.0.0.1:8123); uses the database
//! `insert_cost`, dropped at the end.

use std::time::Instant;

use bytes::Bytes;
use clickhouse::{Client, Compression};
use event_ingest::format::Rows;
use event_ingest::format::{BlockBuilder, Cells, Schema, SortKey};
use event_ingest::sink::{ServerVersion, create_table_sql};
use event_ingest::table::event::{Format, testing};
use event_ingest::table::events::COLUMNS;
use event_ingest::table::{ColumnInfo, RequestFacts, TableSchema, json};

const DB: &str = "insert_cost";
const KEY: &str = "event, toDate(server_time), device_id, server_time";

/// A 20-column table of mixed types, every one of them on 18.16 too.
const MIXED_DDL: &str = "CREATE TABLE insert_cost.mixed (u8 UInt8, u16 UInt16, u32 UInt32, \
    u64 UInt64, i8 Int8, i16 Int16, i32 Int32, i64 Int64, f32 Float32, f64 Float64, \
    amount Decimal(18, 4), name String, code FixedString(8), id UUID, day Date, at DateTime, \
    kind Enum8('a' = 1, 'b' = 2, 'c' = 3), country LowCardinality(String), \
    note Nullable(String), tags Array(UInt32)) \
    ENGINE = MergeTree PARTITION BY toYYYYMM(day) ORDER BY (country, kind, day, u64)";
const MIXED_KEY: &str = "country, kind, day, u64";

/// `n` rows of the mixed table, validated and encoded from JSON as the service does.
fn mixed_rows(schema: &TableSchema, n: usize) -> Rows {
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: 0,
        ip: std::net::Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    let countries = ["DE", "FR", "US", "BR", "JP", "IN", "NG", "GB"];
    let mut rows = Rows::default();
    let mut i = 0usize;
    while i < n {
        let batch: Vec<String> = (i..n.min(i + 10_000))
            .map(|i| {
                let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                format!(
                    r#"{{"u8":{},"u16":{},"u32":{},"u64":{h},"i8":{},"i16":{},"i32":{},"i64":{},"f32":{}.5,"f64":{}.25,"amount":"{}.{:04}","name":"user-{}","code":"C{:07}","id":"{}","day":"2026-{:02}-{:02}","at":"2026-11-30 {:02}:{:02}:{:02}","kind":"{}","country":"{}","note":{},"tags":[{},{}]}}"#,
                    h % 256,
                    h % 65_536,
                    h % 4_000_000_000,
                    (h % 256) as i64 - 128,
                    (h % 65_536) as i64 - 32_768,
                    (h >> 20) as i32,
                    h as i64,
                    h % 1000,
                    h % 100_000,
                    h % 1_000_000,
                    h % 10_000,
                    h % 50_000,
                    h % 10_000_000,
                    uuid::Uuid::from_u64_pair(h, !h),
                    1 + h % 12,
                    1 + h % 28,
                    h % 24,
                    h % 60,
                    (h >> 8) % 60,
                    ["a", "b", "c"][(h % 3) as usize],
                    countries[(h % 8) as usize],
                    if h.is_multiple_of(4) {
                        "null".to_string()
                    } else {
                        format!("\"note {}\"", h % 97)
                    },
                    h % 1000,
                    h % 7,
                )
            })
            .collect();
        let body = format!("[{}]", batch.join(","));
        let objects = json::decode(body.as_bytes(), Format::Json, 10_000).unwrap();
        let mut out = schema.validate(objects.events, facts, &[]);
        assert_eq!(out.rejected, 0, "{:?}", out.errors.first());
        rows.append(&mut out.rows);
        i += 10_000;
    }
    rows
}

/// A profile event of a `system.query_log` row, as `ProfileEvents` is kept: `Map` or the
/// `Names`/`Values` arrays.
fn profile_event(map: bool, name: &str) -> String {
    match map {
        true => format!("ProfileEvents['{name}']"),
        false => format!("ProfileEvents.Values[indexOf(ProfileEvents.Names, '{name}')]"),
    }
}

/// The query reading one insert's CPU (user + system microseconds) and `written_rows` by its
/// `query_id`, for the form this server keeps `ProfileEvents` in; `None` without a query
/// log (after a flush, the table exists on a server that keeps one).
async fn cpu_sql(base: &Client) -> Option<String> {
    let _ = base.query("SYSTEM FLUSH LOGS").execute().await;
    // 18.16: `ProfileEvents.Names` and `ProfileEvents.Values`; later: `ProfileEvents Map(...)`.
    let columns: Vec<(String, String)> = base
        .query(
            "SELECT name, type FROM system.columns WHERE database = 'system' \
             AND table = 'query_log' AND name LIKE 'ProfileEvents%'",
        )
        .fetch_all()
        .await
        .unwrap_or_default();
    if columns.is_empty() {
        return None;
    }
    let map = columns
        .iter()
        .any(|(name, ty)| name == "ProfileEvents" && ty.starts_with("Map"));
    Some(format!(
        "SELECT toUInt64({} + {}), toUInt64(written_rows) FROM system.query_log \
         WHERE query_id = ? AND type = 2",
        profile_event(map, "UserTimeMicroseconds"),
        profile_event(map, "SystemTimeMicroseconds")
    ))
}

/// Bytes on the wire: LZ4 in ClickHouse's framing (1 MiB chunks, as the sink sends them,
/// 25 bytes of checksum and header each), or the body itself.
fn wire_bytes(body: &[u8], lz4: bool) -> usize {
    if !lz4 {
        return body.len();
    }
    body.chunks(1 << 20)
        .map(|c| lz4_flex::block::compress(c).len() + 25)
        .sum()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000);
    let repeats = args.get(1).copied().unwrap_or(3);
    let mixed = std::env::args().skip(1).any(|a| a == "mixed");
    let table = if mixed { "mixed" } else { "events" };
    let host = std::env::var("CLICKHOUSE_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "8123".into());
    let base = Client::default()
        .with_url(format!("http://{host}:{port}"))
        .with_validation(false);
    let version_text: String = base.query("SELECT version()").fetch_one().await.unwrap();
    let version = ServerVersion::parse(&version_text).unwrap();
    let ddl = |sql: String| {
        let mut q = base.query(&sql);
        for (k, v) in version.required_settings() {
            q = q.with_setting(*k, *v);
        }
        q
    };
    ddl(format!("DROP DATABASE IF EXISTS {DB}"))
        .execute()
        .await
        .unwrap();
    ddl(format!("CREATE DATABASE {DB}"))
        .execute()
        .await
        .unwrap();
    let create = match mixed {
        true => MIXED_DDL.to_string(),
        false => create_table_sql(DB, "events", version),
    };
    ddl(create).execute().await.unwrap();
    let columns: Vec<(String, String)> = base
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
        .bind(DB)
        .bind(table)
        .fetch_all()
        .await
        .unwrap();
    let (ours, key, data) = if mixed {
        let infos: Vec<ColumnInfo> = columns
            .iter()
            .map(|(name, ty)| ColumnInfo::plain(name, ty))
            .collect();
        let schema = TableSchema::new("mixed", &infos, "server_time", "ip").unwrap();
        (schema.column_list(), MIXED_KEY, mixed_rows(&schema, n))
    } else {
        let ours: Vec<(String, String)> = COLUMNS
            .iter()
            .map(|c| columns.iter().find(|(n, _)| n == c).unwrap().clone())
            .collect();
        (ours, KEY, testing::load_rows(n))
    };
    let schema = Schema::new(&ours, true).unwrap();
    let sorted = BlockBuilder::new(schema.clone(), SortKey::plan(key, &schema));
    let unsorted = BlockBuilder::new(schema.clone(), SortKey::none());

    let started = Instant::now();
    let native_sorted = sorted.build(data.data(), data.len()).unwrap();
    let build_us = started.elapsed().as_secs_f64() * 1e6 / n as f64;
    let native_unsorted = unsorted.build(data.data(), data.len()).unwrap();
    let cells = Cells::split(&schema, data.data(), data.len()).unwrap();
    let mut rowbinary_sorted = Vec::with_capacity(data.data().len());
    for i in sorted.key().permutation(&cells) {
        rowbinary_sorted.extend_from_slice(data.row(i as usize));
    }
    println!(
        "ClickHouse {version_text}, table {table} ({} columns), {n} rows per insert, \
         {repeats} inserts each; gateway build (transpose + sort + encode): {build_us:.3} us/row",
        ours.len()
    );
    let bodies: [(&str, &str, &[u8]); 4] = [
        ("RowBinary", "arrival", data.data()),
        ("RowBinary", "key", &rowbinary_sorted),
        ("Native", "arrival", &native_unsorted),
        ("Native", "key", &native_sorted),
    ];
    println!("| body | order | compression | bytes sent | ClickHouse CPU µs/row (each insert) |");
    println!("|---|---|---|---:|---|");
    let names = ours
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    for (format, order, body) in bodies {
        for lz4 in [true, false] {
            let compression = if lz4 {
                Compression::Lz4
            } else {
                Compression::None
            };
            let client = base.clone().with_database(DB).with_compression(compression);
            let mut ids = Vec::new();
            for r in 0..repeats {
                let id = format!("cost-{format}-{order}-{lz4}-{r}-{}", uuid::Uuid::new_v4());
                let mut insert = client
                    .clone()
                    .with_setting("query_id", &id)
                    .with_setting("log_queries", "1")
                    .insert_formatted_with(format!(
                        "INSERT INTO {table} ({names}) FORMAT {format}"
                    ));
                for chunk in body.chunks(1 << 20) {
                    insert.send(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
                insert.end().await.unwrap();
                ids.push(id);
            }
            let mut costs = Vec::new();
            let Some(cpu_sql) = cpu_sql(&base).await else {
                println!(
                    "| {format} | {order} | {} | {} | no query log on this server |",
                    if lz4 { "lz4" } else { "none" },
                    wire_bytes(body, lz4)
                );
                continue;
            };
            for id in &ids {
                // The query log is written asynchronously: flush it until the insert is there.
                let mut tries = 0;
                let (cpu, written): (u64, u64) = loop {
                    base.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
                    let found = base
                        .query(&cpu_sql)
                        .bind(id)
                        .fetch_optional()
                        .await
                        .unwrap();
                    match found {
                        Some(found) => break found,
                        None if tries < 20 => tries += 1,
                        None => panic!("insert {id} is not in system.query_log"),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                };
                costs.push(format!("{:.2}", cpu as f64 / written as f64));
            }
            println!(
                "| {format} | {order} | {} | {} | {} |",
                if lz4 { "lz4" } else { "none" },
                wire_bytes(body, lz4),
                costs.join(", ")
            );
        }
    }
    ddl(format!("DROP DATABASE IF EXISTS {DB}"))
        .execute()
        .await
        .unwrap();
}
