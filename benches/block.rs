//! The block builder alone: a 100,000-row batch of RowBinary rows (distinct random devices,
//! 30 event names, 5 seconds of server time) cut into cells, sorted by the events table's
//! key and written as one Native block, as the flusher does before each insert. No server.
//! Run: `cargo bench --bench block` (criterion reports time per batch and rows per second;
//! divide the time by 100,000 for µs per row).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use event_ingest::format::{BlockBuilder, Schema, SortKey};
use event_ingest::table::event::testing;
use event_ingest::table::events::TABLE;

const ROWS: usize = 100_000;

fn block(c: &mut Criterion) {
    let rows = testing::load_rows(ROWS);
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
