//! Waiting for room in a full buffer (`BUFFER_FULL_WAIT_MS`): back-pressure that slows a
//! client down instead of bouncing it.
//!
//! When a lane's buffer (or, in `disk` mode, its spool) is full, a request waits,
//! asynchronously, for the flusher to free room, and is answered `503` with `Retry-After`
//! only when none came within the bound. Under a short overload a client of an event
//! collector would rather have its events acknowledged a little later than retry in a loop;
//! and every refused request costs its HTTP handling and body read for nothing, so a closed
//! loop of clients stores more per CPU second when they wait.
//!
//! The wait never blocks an actix worker and never holds the buffer's lock: a waiting
//! request awaits a [`tokio::sync::Notify`] that the flusher fires each time it frees room
//! (a half written and released, a spool range confirmed) and that shutdown fires too. Bounds:
//! each wait lasts at most `BUFFER_FULL_WAIT_MS` (`0`: refuse at once); the requests waiting
//! on one lane hold at most a quarter of its `BUFFER_MAX_BYTES` together (their body as sent
//! before decoding, their encoded rows at the append), past which a request is refused at
//! once, so a flood cannot park unbounded bodies in memory; and once the shutdown signal
//! arrives ([`RoomWait::stop`]) nobody waits any more, so draining in-flight requests is not
//! held up by them.
//!
//! Waiting only makes sense while the flusher is delivering, merely slower than the load:
//! while the lane's inserts fail (ClickHouse down, every replica of a shard down) no room
//! comes until it is back, so a full lane refuses at once ([`RoomWait::set_failing`]), as
//! with the wait off: a client is told `503` now, not after `BUFFER_FULL_WAIT_MS` of an
//! outage.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// One lane's waiting room.
#[derive(Debug)]
pub struct RoomWait {
    /// Fired when room may have been freed, and on stop.
    freed: Notify,
    /// Bytes the waiting requests hold.
    waiting: AtomicUsize,
    /// Most bytes waiting requests may hold together.
    cap: usize,
    /// Longest wait (`BUFFER_FULL_WAIT_MS`).
    max_wait: Duration,
    /// Set at the shutdown signal: no more waiting.
    stopped: AtomicBool,
    /// Set while the lane's inserts fail: no room is coming, so no waiting.
    failing: AtomicBool,
}

impl RoomWait {
    /// A room where requests wait up to `max_wait`, holding at most `cap` bytes together.
    pub fn new(max_wait: Duration, cap: usize) -> Self {
        Self {
            freed: Notify::new(),
            waiting: AtomicUsize::new(0),
            cap,
            max_wait,
            stopped: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// Room may have been freed: every waiting request checks again. Called by the flusher's
    /// thread (no runtime needed); cheap when nobody waits.
    pub fn freed(&self) {
        self.freed.notify_waiters();
    }

    /// The shutdown signal: wakes every waiting request to be answered now, and makes later
    /// ones refuse at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.freed.notify_waiters();
    }

    /// The flusher's last insert failed (`true`, retryable: it backs off and retries) or
    /// went through (`false`). While failing, requests that find the lane full are refused
    /// at once, and those already waiting are woken to be refused.
    pub fn set_failing(&self, failing: bool) {
        let was = self.failing.swap(failing, Ordering::AcqRel);
        if failing && !was {
            self.freed.notify_waiters();
        }
    }

    fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Bytes the waiting requests hold (metrics and tests).
    pub fn waiting_bytes(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// A place among the waiting requests for `bytes`, if the cap allows.
    fn seat(&self, bytes: usize) -> Option<Seat<'_>> {
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                w.checked_add(bytes).filter(|&after| after <= self.cap)
            })
            .ok()
            .map(|_| Seat { room: self, bytes })
    }
}

/// Bytes counted as waiting until dropped (the request got room, gave up, or went away).
struct Seat<'a> {
    room: &'a RoomWait,
    bytes: usize,
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        self.room.waiting.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// What one try to take a request gave.
pub enum Attempt<'a, T, E> {
    /// Taken, or refused for a reason waiting cannot change.
    Done(Result<T, E>),
    /// Refused for want of room in the lane whose room is given.
    Full(E, &'a RoomWait),
}

/// Runs `attempt` until it is done, waiting for room while it says full, up to the full
/// lane's `max_wait` counted from the first refusal; then returns that refusal. A request
/// holding `bytes` takes a seat among the waiting ones first; without one it is refused at
/// once. `attempt` runs on the caller's task: it must not block.
pub async fn take_or_wait<'a, T, E>(
    bytes: usize,
    mut attempt: impl FnMut() -> Attempt<'a, T, E>,
) -> Result<T, E> {
    let mut deadline = None;
    let mut seat = None;
    // Registered before the try that may fail, so room freed between that try and the wait
    // is not missed.
    let mut armed: Option<(&'a RoomWait, Pin<Box<Notified<'a>>>)> = None;
    loop {
        let (refusal, room) = match attempt() {
            Attempt::Done(result) => return result,
            Attempt::Full(refusal, room) => (refusal, room),
        };
        if room.max_wait.is_zero() || room.is_stopped() || room.is_failing() {
            return Err(refusal);
        }
        let deadline = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + room.max_wait);
        if tokio::time::Instant::now() >= deadline {
            return Err(refusal);
        }
        if seat.is_none() {
            match room.seat(bytes) {
                Some(s) => seat = Some(s),
                None => return Err(refusal),
            }
        }
        match armed.take() {
            Some((armed_room, notified)) if std::ptr::eq(armed_room, room) => {
                // A timeout ends in one more try (above), then the refusal.
                let _ = tokio::time::timeout_at(deadline, notified).await;
            }
            _ => {
                let mut notified = Box::pin(room.freed.notified());
                notified.as_mut().enable();
                armed = Some((room, notified));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_request_that_gets_room_within_the_bound_is_taken() {
        let room = Arc::new(RoomWait::new(Duration::from_secs(30), 100));
        let full = Arc::new(AtomicBool::new(true));
        let freer = {
            let (room, full) = (room.clone(), full.clone());
            std::thread::spawn(move || {
                while room.waiting_bytes() == 0 {
                    std::thread::yield_now();
                }
                full.store(false, Ordering::Release);
                room.freed();
            })
        };
        let tries = Cell::new(0);
        let result = take_or_wait(10, || {
            tries.set(tries.get() + 1);
            match full.load(Ordering::Acquire) {
                true => Attempt::Full("full", &room),
                false => Attempt::Done(Ok::<_, &str>(tries.get())),
            }
        })
        .await;
        freer.join().unwrap();
        assert!(result.is_ok(), "{result:?}");
        assert_eq!(room.waiting_bytes(), 0, "the seat is given back");
    }

    #[tokio::test]
    async fn a_failing_lane_refuses_at_once_and_wakes_its_waiters() {
        let room = Arc::new(RoomWait::new(Duration::from_secs(3600), 100));
        room.set_failing(true);
        // Would wait an hour otherwise.
        let limit = Duration::from_secs(30);
        let at_once = take_or_wait(10, || Attempt::Full("full", &room));
        let result: Result<(), _> = tokio::time::timeout(limit, at_once).await.expect("at once");
        assert_eq!(result, Err("full"));

        room.set_failing(false);
        let failer = {
            let room = room.clone();
            std::thread::spawn(move || {
                while room.waiting_bytes() == 0 {
                    std::thread::yield_now();
                }
                room.set_failing(true);
            })
        };
        let woken = take_or_wait(10, || Attempt::Full("full", &room));
        let result: Result<(), _> = tokio::time::timeout(limit, woken).await.expect("woken");
        failer.join().unwrap();
        assert_eq!(result, Err("full"));
        assert_eq!(room.waiting_bytes(), 0);
    }

    #[tokio::test]
    async fn no_room_within_the_bound_is_the_refusal() {
        let room = RoomWait::new(Duration::from_millis(20), 100);
        let result: Result<(), _> = take_or_wait(10, || Attempt::Full("full", &room)).await;
        assert_eq!(result, Err("full"));
        assert_eq!(room.waiting_bytes(), 0);
    }

    #[tokio::test]
    async fn no_wait_configured_or_no_seat_left_refuses_at_once() {
        // Both would otherwise wait an hour: the test ending at all is the assertion.
        let off = RoomWait::new(Duration::ZERO, 100);
        let result: Result<(), _> = take_or_wait(10, || Attempt::Full("full", &off)).await;
        assert_eq!(result, Err("full"));
        let small = RoomWait::new(Duration::from_secs(3600), 100);
        let result: Result<(), _> = take_or_wait(101, || Attempt::Full("full", &small)).await;
        assert_eq!(result, Err("full"));
    }

    #[tokio::test]
    async fn stop_ends_every_wait() {
        let room = Arc::new(RoomWait::new(Duration::from_secs(3600), 100));
        let stopper = {
            let room = room.clone();
            std::thread::spawn(move || {
                while room.waiting_bytes() == 0 {
                    std::thread::yield_now();
                }
                room.stop();
            })
        };
        let result: Result<(), _> = take_or_wait(10, || Attempt::Full("full", &room)).await;
        stopper.join().unwrap();
        assert_eq!(result, Err("full"));
        let result: Result<(), _> = take_or_wait(10, || Attempt::Full("full", &room)).await;
        assert_eq!(result, Err("full"), "after stop, no wait at all");
    }
}
