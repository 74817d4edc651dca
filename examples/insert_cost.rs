//! What ClickHouse spends to store a row, by insert body: RowBinary or Native, arrival
//! order or the table's key order, LZ4 or plain. Each body is inserted into a fresh copy of
//! the events table as the service creates it, with a `query_id`; the server's own figures
//! are then read from `system.query_log` (`UserTimeMicroseconds + SystemTimeMicroseconds`
//! of the insert, divided by `written_rows`).
//!
//! ```sh
//! cargo run --release --example insert_cost -- [ROWS] [REPEATS]   # defaults 1000000 3
//! ```
//! Against `CLICKHOUSE_HOST:CLICKHOUSE_PORT` (default 127.0.0.1:8123); uses the database
//! `insert_cost`, dropped at the end.

use std::time::Instant;

use bytes::Bytes;
use clickhouse::{Client, Compression};
use event_ingest::block::COLUMNS;
use event_ingest::block::{BlockBuilder, Cells, Schema, SortKey};
use event_ingest::event::testing;
use event_ingest::sink::{ServerVersion, create_table_sql};

const DB: &str = "insert_cost";
const KEY: &str = "event, toDate(server_time), device_id, server_time";

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
    ddl(create_table_sql(DB, "events", version))
        .execute()
        .await
        .unwrap();
    let columns: Vec<(String, String)> = base
        .query("SELECT name, type FROM system.columns WHERE database = ? AND table = 'events'")
        .bind(DB)
        .fetch_all()
        .await
        .unwrap();
    let ours: Vec<(String, String)> = COLUMNS
        .iter()
        .map(|c| columns.iter().find(|(n, _)| n == c).unwrap().clone())
        .collect();
    let schema = Schema::new(&ours, true).unwrap();
    let sorted = BlockBuilder::new(schema.clone(), SortKey::plan(KEY, &schema));
    let unsorted = BlockBuilder::new(schema.clone(), SortKey::none());

    let data = testing::load_rows(n);
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
        "ClickHouse {version_text}, {n} rows per insert, {repeats} inserts each; \
         gateway build (transpose + sort + encode): {build_us:.3} us/row"
    );
    let bodies: [(&str, &str, &[u8]); 4] = [
        ("RowBinary", "arrival", data.data()),
        ("RowBinary", "key", &rowbinary_sorted),
        ("Native", "arrival", &native_unsorted),
        ("Native", "key", &native_sorted),
    ];
    println!("| body | order | compression | bytes sent | ClickHouse CPU µs/row (each insert) |");
    println!("|---|---|---|---:|---|");
    let names = COLUMNS.join(", ");
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
                    .insert_formatted_with(format!("INSERT INTO events ({names}) FORMAT {format}"));
                for chunk in body.chunks(1 << 20) {
                    insert.send(Bytes::copy_from_slice(chunk)).await.unwrap();
                }
                insert.end().await.unwrap();
                ids.push(id);
            }
            let mut costs = Vec::new();
            for id in &ids {
                // The query log is written asynchronously: flush it until the insert is there.
                let mut tries = 0;
                let (cpu, written): (u64, u64) = loop {
                    base.query("SYSTEM FLUSH LOGS").execute().await.unwrap();
                    let found = base
                    .query(
                        "SELECT toUInt64(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'UserTimeMicroseconds')] \
                         + ProfileEvents.Values[indexOf(ProfileEvents.Names, 'SystemTimeMicroseconds')]), \
                         toUInt64(written_rows) FROM system.query_log \
                         WHERE query_id = ? AND type = 2",
                    )
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
