//! The block builder's CPU per row, as the flusher's thread spends it: the thread's own CPU
//! time (`CLOCK_THREAD_CPUTIME_ID`) over repeated builds of the same batch, with the
//! allocator tuned as the service tunes it (every buffer past 128 KiB its own mapping).
//! CPU time, unlike criterion's wall time in `benches/block.rs`, hardly moves when other
//! processes share the cores; the minimum over the runs is the figure to compare. Then the
//! same for the LZ4 framing the sink applies to the sorted block (`CLICKHOUSE_COMPRESSION=lz4`:
//! the `clickhouse` crate's, one frame per 1 MiB chunk), with the bytes it saves.
//!
//! ```sh
//! cargo run --release --example block_cpu -- [ROWS] [RUNS]   # defaults 100000 30
//! ```

use event_ingest::format::{BlockBuilder, Schema, SortKey};
use event_ingest::table::event::testing;
use event_ingest::table::events::TABLE;

/// This thread's CPU time, in seconds.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    // SAFETY: only sets allocator parameters, before any other thread exists (as the
    // service's `memory::tune_allocator` does at start-up).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(100_000);
    let runs = args.get(1).copied().unwrap_or(30).max(1);
    let rows = testing::load_rows(n);
    let columns: Vec<(String, String)> = TABLE
        .iter()
        .map(|c| (c.name.to_string(), c.modern.to_string()))
        .collect();
    let schema = Schema::new(&columns, true).expect("known types");
    let mut sorted_block = Vec::new();
    for (name, key) in [
        (
            "sorted by the events key",
            "event, toDate(server_time), device_id, server_time",
        ),
        ("arrival order", ""),
    ] {
        let builder = BlockBuilder::new(schema.clone(), SortKey::plan(key, &schema));
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = thread_cpu();
            let block = builder.build(rows.data(), rows.len()).expect("a block");
            times.push(thread_cpu() - start);
            if sorted_block.is_empty() {
                sorted_block = block;
            } else {
                // As the flusher does once the insert is done: the next block is written
                // into memory already mapped.
                builder.recycle(block);
            }
        }
        times.sort_by(f64::total_cmp);
        let per_row = |t: f64| t * 1e6 / n as f64;
        println!(
            "{name}: {n} rows, CPU per row min {:.3} µs, median {:.3} µs ({runs} runs)",
            per_row(times[0]),
            per_row(times[runs / 2])
        );
    }
    lz4_framing(&sorted_block, n, runs);
}

/// Times the sink's LZ4 framing of `block` (the `clickhouse` crate's, per 1 MiB chunk, as
/// `ClickHouseSink` sends it) and prints its CPU per row and the bytes before and after.
fn lz4_framing(block: &[u8], n: usize, runs: usize) {
    use clickhouse::Compression;
    use clickhouse::insert_formatted::CompressedData;
    const CHUNK: usize = 1 << 20; // the sink's SEND_CHUNK
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = thread_cpu();
        for chunk in block.chunks(CHUNK) {
            std::hint::black_box(CompressedData::new(chunk, Compression::Lz4).expect("lz4"));
        }
        times.push(thread_cpu() - start);
    }
    // The same LZ4 block compression, for its size; each frame adds a 16-byte checksum and
    // a 9-byte header.
    let compressed: usize = block
        .chunks(CHUNK)
        .map(|chunk| lz4_flex::block::compress(chunk).len() + 25)
        .sum();
    times.sort_by(f64::total_cmp);
    let per_row = |t: f64| t * 1e6 / n as f64;
    println!(
        "lz4 framing of the sorted block: {} → {compressed} bytes ({:.2}×), CPU per row min \
         {:.3} µs, median {:.3} µs ({runs} runs)",
        block.len(),
        block.len() as f64 / compressed as f64,
        per_row(times[0]),
        per_row(times[runs / 2])
    );
}
