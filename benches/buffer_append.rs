//! Appending 30-event batches under contention, one line per buffer design, with 1–8
//! producer threads and one consumer draining as the flusher would:
//!
//! - `mutex_vec_whole`: the original service's design, one `Mutex` around a vector that the
//!   consumer takes whole under the same lock (so every drain leaves producers an empty
//!   vector to grow again); its consumer polls the lock.
//! - `double_buffer`: `event_ingest::lane::buffer::DoubleBuffer`; the consumer sleeps on the
//!   condvar until a half is due, swaps it, and releases it with its capacity.
//! - `crossbeam_channel`: producers send each batch through a bounded channel to the
//!   consumer, which appends it to its own batch.
//!
//! Rows are encoded before the clock starts: only handing them over is measured, as the
//! slowest producer's time for all its appends (so lock waits are included).
//! Run: `cargo bench --bench buffer_append`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use crossbeam_channel::{Receiver, Sender};
use event_ingest::format::Rows;
use event_ingest::lane::buffer::{DoubleBuffer, Limits};
use event_ingest::table::event::testing::rows;
use parking_lot::Mutex;

const BATCH: u32 = 30;
const BATCHES_PER_THREAD: usize = 200;

/// What a producer appends to; the consumer drains it on its own thread.
trait Target: Send + Sync + 'static {
    fn append(&self, rows: &mut Rows);
    fn drain(&self);
    /// Unblocks a consumer waiting in `drain`.
    fn stop(&self) {}
}

struct WholeVec(Mutex<Rows>);

impl Target for WholeVec {
    fn append(&self, rows: &mut Rows) {
        self.0.lock().append(rows);
    }
    fn drain(&self) {
        let taken = std::mem::take(&mut *self.0.lock());
        black_box(taken);
    }
}

struct Double(DoubleBuffer, Mutex<Rows>);

impl Target for Double {
    fn append(&self, rows: &mut Rows) {
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

struct Channel(Sender<Rows>, Receiver<Rows>, Mutex<Rows>);

impl Target for Channel {
    fn append(&self, rows: &mut Rows) {
        self.0.send(std::mem::take(rows)).expect("consumer alive");
    }
    fn drain(&self) {
        let mut batch = self.2.lock();
        if let Ok(mut rows) = self.1.recv_timeout(Duration::from_millis(10)) {
            batch.append(&mut rows);
        }
        if batch.len() >= 10_000 {
            batch.clear();
        }
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
                let mut batches: Vec<Rows> =
                    (0..BATCHES_PER_THREAD).map(|_| rows(0..BATCH)).collect();
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
            (producers * BATCHES_PER_THREAD) as u64 * u64::from(BATCH),
        ));
        group.bench_with_input(
            BenchmarkId::new("mutex_vec_whole", producers),
            &producers,
            |b, &n| b.iter_custom(|iters| run(Arc::new(WholeVec(Mutex::default())), n, iters)),
        );
        group.bench_with_input(
            BenchmarkId::new("double_buffer", producers),
            &producers,
            |b, &n| {
                b.iter_custom(|iters| {
                    let buffer = DoubleBuffer::new(Limits {
                        swap_events: 10_000,
                        flush_interval: Duration::from_millis(1),
                        min_interval: Duration::ZERO,
                        max_bytes: usize::MAX,
                        full_wait: Duration::ZERO,
                    });
                    run(Arc::new(Double(buffer, Mutex::default())), n, iters)
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("crossbeam_channel", producers),
            &producers,
            |b, &n| {
                b.iter_custom(|iters| {
                    let (tx, rx) = crossbeam_channel::bounded(1024);
                    run(Arc::new(Channel(tx, rx, Mutex::default())), n, iters)
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, buffer_append);
criterion_main!(benches);
