//! Appending 30-event batches under contention: the original service's design (one
//! `Mutex<Vec>` taken whole by the flusher) against the double buffer, with 1–8 producer
//! threads and a consumer draining as the flusher would. Run: `cargo bench --bench buffer_append`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use event_ingest::buffer::{DoubleBuffer, Half, Limits};
use event_ingest::event::EventRow;
use event_ingest::event::testing::row;
use parking_lot::Mutex;

const BATCH: usize = 30;
const BATCHES_PER_THREAD: usize = 200;

/// What a producer appends to; the consumer drains it on its own thread.
trait Target: Send + Sync + 'static {
    fn append(&self, rows: &mut Vec<EventRow>);
    fn drain(&self);
    /// Unblocks a consumer waiting in `drain`.
    fn stop(&self) {}
}

/// The original design: one vector, the flusher takes it whole under the same lock.
struct WholeVec(Mutex<Vec<EventRow>>);

impl Target for WholeVec {
    fn append(&self, rows: &mut Vec<EventRow>) {
        self.0.lock().append(rows);
    }
    fn drain(&self) {
        let taken = std::mem::take(&mut *self.0.lock());
        black_box(taken);
    }
}

struct Double(DoubleBuffer, Mutex<Half>);

impl Target for Double {
    fn append(&self, rows: &mut Vec<EventRow>) {
        // The cap is far above what the bench holds; a refusal would be a bench bug.
        self.0.append(rows).expect("buffer has room");
    }
    fn drain(&self) {
        let mut spare = self.1.lock();
        if self.0.swap_when_due(&mut spare).is_some() {
            self.0.release(&mut spare);
        }
    }
    fn stop(&self) {
        self.0.close(Instant::now());
    }
}

fn run<T: Target>(target: Arc<T>, producers: usize, iters: u64) -> Duration {
    let stop = Arc::new(AtomicBool::new(false));
    let consumer = {
        let (target, stop) = (target.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                target.drain();
            }
        })
    };
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let threads: Vec<_> = (0..producers)
            .map(|_| {
                let target = target.clone();
                // Rows are built before the clock starts: only the append is measured.
                let mut batches: Vec<Vec<EventRow>> = (0..BATCHES_PER_THREAD)
                    .map(|_| (0..BATCH as u32).map(row).collect())
                    .collect();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    for batch in &mut batches {
                        target.append(batch);
                    }
                    started.elapsed()
                })
            })
            .collect();
        total += threads
            .into_iter()
            .map(|t| t.join().expect("producer"))
            .max()
            .unwrap_or_default();
    }
    stop.store(true, Ordering::Relaxed);
    target.stop();
    consumer.join().expect("consumer");
    total
}

fn buffer_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_30_event_batches");
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
    for producers in [1usize, 2, 4, 8] {
        group.throughput(Throughput::Elements(
            (producers * BATCHES_PER_THREAD * BATCH) as u64,
        ));
        group.bench_with_input(
            BenchmarkId::new("mutex_vec_whole", producers),
            &producers,
            |b, &n| {
                b.iter_custom(|iters| run(Arc::new(WholeVec(Mutex::new(Vec::new()))), n, iters))
            },
        );
        group.bench_with_input(
            BenchmarkId::new("double_buffer", producers),
            &producers,
            |b, &n| {
                b.iter_custom(|iters| {
                    let buffer = DoubleBuffer::new(Limits {
                        size: 10_000,
                        flush_interval: Duration::from_millis(1),
                        max_bytes: usize::MAX,
                    });
                    run(
                        Arc::new(Double(buffer, Mutex::new(Half::default()))),
                        n,
                        iters,
                    )
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, buffer_append);
criterion_main!(benches);
