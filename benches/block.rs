//! The block builder alone: a 100,000-row batch of RowBinary rows (distinct random devices,
//! 30 event names, 5 seconds of server time) cut into cells, sorted by the events table's
//! key and written as one Native block, as the flusher does before each insert. No server.
//! Run: `cargo bench --bench block` (criterion reports time per batch and rows per second;
//! divide the time by 100,000 for µs per row).

use std::net::Ipv6Addr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use event_ingest::block::Rows;
use event_ingest::block::{BlockBuilder, Schema, SortKey};
use event_ingest::event::Event;
use event_ingest::sink::TABLE;

const ROWS: usize = 100_000;

fn batch() -> Rows {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let names: Vec<String> = (0..30).map(|i| format!("event_{i}")).collect();
    let mut rows = Rows::default();
    for i in 0..ROWS {
        let now = 1_764_547_200 + (i * 5 / ROWS) as u32;
        rows.push(&Event {
            client_time: now - (next() % 86_400) as u32,
            client_time_corrected: now - (next() % 86_400) as u32,
            server_time: now,
            device_id: uuid::Uuid::from_u64_pair(next(), next()),
            device_os: ["IOS 13.5.1", "Android 14"][next() as usize % 2].into(),
            session: format!("{:016x}", next()).into(),
            sequence: (next() % 1000) as u32,
            event: names[next() as usize % names.len()].as_str().into(),
            param_int: (next() % 100_000) as u32,
            param_str: "some text".into(),
            ip: Ipv6Addr::from(0xffff_0000_0000u128 | u128::from(next() as u32)),
        });
    }
    rows
}

fn block(c: &mut Criterion) {
    let rows = batch();
    let mut group = c.benchmark_group("native_block");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for (name, legacy) in [("modern_types", false), ("legacy_18_16_types", true)] {
        let columns: Vec<(String, String)> = TABLE
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    if legacy { c.legacy } else { c.modern }.to_string(),
                )
            })
            .collect();
        let schema = Schema::new(&columns, true).expect("known types");
        let key = SortKey::plan(
            "event, toDate(server_time), device_id, server_time",
            &schema,
        );
        let sorted = BlockBuilder::new(schema.clone(), key);
        group.bench_function(format!("100k_rows_sorted_{name}"), |b| {
            b.iter(|| sorted.build(rows.data(), rows.len()).expect("block"))
        });
        if !legacy {
            let unsorted = BlockBuilder::new(schema, SortKey::none());
            group.bench_function("100k_rows_arrival_order", |b| {
                b.iter(|| unsorted.build(rows.data(), rows.len()).expect("block"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, block);
criterion_main!(benches);
