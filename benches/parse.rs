//! Request parsing per body: decode the JSON array, validate every event, encode it to
//! RowBinary — everything a handler does before the buffer, on the original service's
//! 30-event body shape and on a 1,000-event body, through the path `/v1/events` takes: the
//! generic (schema-driven) path with the events table's schema and rules. Throughput in
//! body bytes per second. Timings on a shared machine scatter; `examples/parse_cost.rs`
//! counts instructions instead.
//! Run: `cargo bench --bench parse`.

use std::hint::black_box;
use std::net::Ipv6Addr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use event_ingest::table::event::{DecodeError, Format};
use event_ingest::table::{RequestFacts, TableSchema};
use time::OffsetDateTime;

/// A JSON array of `n` events shaped like the original service's benchmark body
/// (≈ 220 bytes an event).
fn body(n: u32) -> Vec<u8> {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"client_time": "2020-12-01 23:59:00","device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C{:04X}","device_os": "IOS 13.5.1","session": "ybuRi8mAUypxjbxQ","sequence": {i},"event": "app_start","param_int": {},"param_str": "some text"}}"#,
                i % 0x10000,
                i * 7
            )
        })
        .collect();
    format!("[{}]", events.join(",")).into_bytes()
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_validate_encode");
    let now = OffsetDateTime::now_utc();
    let schema = TableSchema::events().expect("the events table's schema");
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: now.unix_timestamp_nanos(),
        ip: Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    for n in [30u32, 1_000] {
        let body = body(n);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::new("events", n), &body, |b, body| {
            b.iter(|| {
                let out = schema
                    .validate_body(
                        black_box(body),
                        Format::Json,
                        10_000,
                        facts,
                        &[0; 4],
                        |_| Ok::<_, DecodeError>(None),
                    )
                    .expect("valid");
                assert_eq!(out.rejected, 0);
                black_box(out.rows)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
