//! The flush path in isolation: a full half (10,000 encoded rows) written through the real
//! `TableSink` of the events table — a Native block in key order, LZ4 compression, the `clickhouse` crate's
//! HTTP client — into an
//! in-process fake ClickHouse that only drains the body. No real server, no network beyond
//! loopback inside this process, so the figure is our encoding and shipping cost alone.
//! Run: `cargo bench --bench flush`.

use std::collections::HashMap;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use event_ingest::Config;
use event_ingest::sink::{Sink, TableSink};
use event_ingest::table::event::testing::rows;
use event_ingest::table::events::TABLE;
use futures_util::StreamExt;

const ROWS: u32 = 10_000;

/// RowBinary `String`: LEB128 length, then the bytes (all lengths here are < 128).
fn put_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Answers the few queries the sink makes: `SELECT version()`, the column check, DDL and
/// inserts (whose bodies are read and dropped).
async fn fake_clickhouse(
    query: web::Query<HashMap<String, String>>,
    mut body: web::Payload,
) -> HttpResponse {
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = body.next().await {
        if query.get("query").is_none() {
            text.extend_from_slice(&chunk);
        }
    }
    let sql = query
        .get("query")
        .cloned()
        .unwrap_or_else(|| String::from_utf8_lossy(&text).into_owned());
    let mut out = Vec::new();
    if sql.contains("version()") {
        put_str(&mut out, "24.8.1.1");
    } else if sql.contains("system.formats") {
        out.extend_from_slice(&1u64.to_le_bytes());
    } else if sql.contains("timezone()") {
        put_str(&mut out, "UTC");
    } else if sql.contains("create_table_query") {
        put_str(&mut out, "MergeTree");
        put_str(
            &mut out,
            "CREATE TABLE bench.events ENGINE = MergeTree PARTITION BY toYYYYMM(server_time) \
             ORDER BY (event, toDate(server_time), device_id, server_time) \
             SETTINGS non_replicated_deduplication_window = 1000",
        );
    } else if sql.contains("system.columns") {
        // name, type (and, for the definition, default kind and expression).
        let full = sql.contains("default_kind");
        for column in TABLE {
            put_str(&mut out, column.name);
            put_str(&mut out, column.modern);
            if full {
                put_str(&mut out, "");
                put_str(&mut out, "");
            }
        }
    }
    HttpResponse::Ok().body(out)
}

/// Starts the fake on a free loopback port in a thread of its own; returns the port.
fn start_fake() -> u16 {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let server = HttpServer::new(|| App::new().default_service(web::to(fake_clickhouse)))
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .expect("bind");
            tx.send(server.addrs()[0].port()).expect("port");
            server.run().await.expect("fake server");
        });
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("fake started")
}

fn flush(c: &mut Criterion) {
    let port = start_fake();
    let config = Config::from_vars([
        ("CLICKHOUSE_PORT".to_string(), port.to_string()),
        ("CLICKHOUSE_NAME".to_string(), "bench".to_string()),
    ])
    .expect("config");
    let sink = TableSink::events(&event_ingest::app::sink_settings(&config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(sink.prepare()).expect("fake answers prepare");
    let half = rows(0..ROWS);

    let mut group = c.benchmark_group("flush_full_half");
    group.throughput(Throughput::Elements(u64::from(ROWS)));
    group.bench_function("10000_rows_lz4_http", |b| {
        b.iter(|| rt.block_on(sink.write(half.view(), None)).expect("insert"))
    });
    group.finish();
}

criterion_group!(benches, flush);
criterion_main!(benches);
