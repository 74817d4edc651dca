//! The double buffer: request handlers append to the active half; the flusher swaps it for
//! the empty inactive half and writes the full one while handlers keep appending.
//!
//! One `parking_lot::Mutex` guards the active half. It is held only to append a request's
//! rows (already encoded: a memcpy of their bytes) or to swap two halves, never across
//! I/O, so a slow ClickHouse never blocks a request handler: it only makes the buffer fill.
//! `parking_lot` because its uncontended lock is one atomic operation and it spins briefly
//! before parking, which fits critical sections this short; its `Condvar` lets the flusher
//! sleep until a threshold is crossed instead of polling.
//!
//! Bounds: the active half swaps at `BUFFER_SIZE` events or `BUFFER_FLUSH_MS` after its
//! first event, whichever comes first; but a size-triggered swap comes no sooner than
//! `BUFFER_MIN_INTERVAL_MS` after the previous swap (unless the half holds half the memory
//! cap), so a high event rate makes bigger inserts rather than more of them: ClickHouse
//! wants about one insert per second per table, and every extra part costs merges. Memory is capped by `BUFFER_MAX_BYTES` over both
//! halves (the active one plus the one being written): past it appends fail with
//! [`AppendError::Full`] and the handler answers `503`, so an outage can never grow the
//! process until it is killed, and nothing is dropped silently.
//!
//! In `disk` mode ([`DoubleBuffer::with_spool`]) the same critical section also queues the
//! request's spool record, so buffer order and spool order agree and every half covers one
//! contiguous spool range (its batch identity). When memory is full the rows go to the
//! spool only: the buffer *spills*, later appends skip memory too (order again), and the
//! flusher reads them back from disk ([`Due::Spool`]) until it has caught up
//! ([`DoubleBuffer::end_spill`]). A previous run's backlog starts the buffer spilled.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::format::Rows;
use crate::lane::room::RoomWait;
use crate::lane::spool::{Spool, SpoolRefusal};

/// The thresholds the flusher swaps on and the memory cap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Events in the active half that trigger a swap (`BUFFER_SIZE`).
    pub swap_events: usize,
    /// Longest time an event waits in the active half (`BUFFER_FLUSH_MS`).
    pub flush_interval: Duration,
    /// Shortest time between a swap and the next size-triggered one
    /// (`BUFFER_MIN_INTERVAL_MS`, capped at `flush_interval`).
    pub min_interval: Duration,
    /// Cap on both halves' bytes together (`BUFFER_MAX_BYTES`).
    pub max_bytes: usize,
    /// Longest a request waits for room when the buffer is full (`BUFFER_FULL_WAIT_MS`;
    /// zero: refused at once). See [`crate::lane::room`].
    pub full_wait: Duration,
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The memory cap would be exceeded; try again once a flush has freed space.
    #[error("buffer full ({buffered} of {max} bytes in use)")]
    Full {
        /// Bytes buffered now.
        buffered: usize,
        /// `BUFFER_MAX_BYTES`.
        max: usize,
    },
    /// One request's rows alone exceed the cap: retrying cannot help.
    #[error("request holds {bytes} bytes of events, more than BUFFER_MAX_BYTES ({max})")]
    TooLarge {
        /// The request's rows' size.
        bytes: usize,
        /// `BUFFER_MAX_BYTES`.
        max: usize,
    },
    /// Shutdown has begun; nothing new is taken.
    #[error("shutting down")]
    Closed,
    /// `disk` mode: the spool cannot take the rows either.
    #[error(transparent)]
    Spool(#[from] SpoolRefusal),
}

/// What made the flusher swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapReason {
    /// The active half reached `BUFFER_SIZE`.
    Size,
    /// `BUFFER_FLUSH_MS` passed since the half's first event.
    Timer,
    /// Shutdown: everything left is flushed.
    Shutdown,
    /// The buffer has spilled to the spool: the half goes now, the disk backlog after it.
    Backlog,
}

impl SwapReason {
    /// The `trigger` label of `flushes_total` and the flush log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Size => "size",
            Self::Timer => "timer",
            Self::Shutdown => "shutdown",
            Self::Backlog => "backlog",
        }
    }
}

/// What the flusher should write next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// The half just swapped out, why, and (`disk` mode) the spool range it covers.
    Half(SwapReason, Option<Range<u64>>),
    /// Rows on disk only, from this spool position: read them back until caught up.
    Spool(u64),
}

/// The buffer has spilled: rows from a spool position on are on disk only.
#[derive(Debug, Clone, Copy)]
struct Spill {
    from: u64,
    since: Instant,
}

struct State {
    active: Rows,
    /// When the first row entered the active half; `None` while it is empty.
    first_at: Option<Instant>,
    /// Bytes in the half the flusher holds (swapped out, not yet written).
    inflight_bytes: usize,
    /// Rows in that half, for reporting what a shutdown could not write.
    inflight_rows: usize,
    /// Set by [`DoubleBuffer::close`]: when the flusher must stop retrying.
    deadline: Option<Instant>,
    /// When the flusher last swapped, for `min_interval`.
    last_swap: Option<Instant>,
    /// `disk` mode: the spool range of the active half's rows.
    active_span: Option<Range<u64>>,
    /// `disk` mode: set while rows are on disk only (see the module docs).
    spill: Option<Spill>,
    /// When the oldest row the flusher holds arrived (health's oldest-event age).
    inflight_since: Option<Instant>,
    /// Rows of the halves released lately: the largest, halved at each release that is
    /// smaller. What a released half keeps room for (see [`DoubleBuffer::release`]).
    recent_rows: usize,
}

/// Rows preallocated per half: a steady load at the default `BUFFER_SIZE` never grows a
/// half under the lock, and a huge `BUFFER_SIZE` does not reserve memory up front.
const PREALLOC_ROWS: usize = 16 * 1024;
/// Bytes per row assumed when preallocating (a typical mobile event encodes to ~100).
const PREALLOC_ROW_BYTES: usize = 128;

/// The double buffer shared by the request handlers and the flusher.
pub struct DoubleBuffer {
    state: Mutex<State>,
    /// Wakes the flusher: on the first row of an empty half (so it can arm its timer), when
    /// the half reaches `size`, and on close. At most twice per half, not per append.
    wake: Condvar,
    limits: Limits,
    /// `disk` mode's spool.
    spool: Option<Arc<Spool>>,
    /// Bytes in memory over both halves (the active half plus the flusher's), written only
    /// under `state`'s lock, read without it: the early-`503` check and health read it
    /// once per request, and that must not take the lock the appends queue on.
    pending_bytes: AtomicUsize,
    /// Where requests wait for room when the buffer is full; fired on release and close.
    room: RoomWait,
}

impl DoubleBuffer {
    /// An empty buffer, its active half preallocated like [`DoubleBuffer::new_half`].
    pub fn new(limits: Limits) -> Self {
        Self {
            state: Mutex::new(State {
                active: Self::empty_half(limits),
                first_at: None,
                inflight_bytes: 0,
                inflight_rows: 0,
                deadline: None,
                last_swap: None,
                active_span: None,
                spill: None,
                inflight_since: None,
                recent_rows: 0,
            }),
            wake: Condvar::new(),
            limits,
            spool: None,
            pending_bytes: AtomicUsize::new(0),
            // Waiting requests may hold a quarter of the cap, like the in-flight budget's
            // default share: together with it, at most 1.5 × BUFFER_MAX_BYTES per lane.
            room: RoomWait::new(limits.full_wait, limits.max_bytes / 4),
        }
    }

    /// A `disk` mode buffer: appends go through [`DoubleBuffer::append_spooled`]. With a
    /// `backlog` position (what the previous run left) it starts spilled, so the flusher
    /// replays the spool from there before anything newer.
    pub fn with_spool(limits: Limits, spool: Arc<Spool>, backlog: Option<u64>) -> Self {
        let mut buffer = Self::new(limits);
        buffer.spool = Some(spool);
        buffer.state.get_mut().spill = backlog.map(|from| Spill {
            from,
            since: Instant::now(),
        });
        buffer
    }

    /// An empty half with the same preallocation as the active one: the flusher's spare, so
    /// that whichever half handlers append to, it does not start from zero capacity.
    pub fn new_half(&self) -> Rows {
        Self::empty_half(self.limits)
    }

    fn empty_half(limits: Limits) -> Rows {
        Rows::with_capacity(limits.swap_events.min(PREALLOC_ROWS), PREALLOC_ROW_BYTES)
    }

    /// `disk` mode's spool.
    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// The configured limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Moves `rows` into the active half, all or none. `rows` is left empty on success.
    pub fn append(&self, rows: &mut Rows) -> Result<(), AppendError> {
        self.append_inner(rows, None).map(|_| ())
    }

    /// `disk` mode: queues `record` (`rows` encoded as a spool record) for the spool and
    /// moves `rows` into the active half, or, when memory is full or the buffer has
    /// spilled, leaves them on disk only. Returns the spool position to wait for before
    /// answering.
    pub fn append_spooled(&self, rows: &mut Rows, record: &[u8]) -> Result<u64, AppendError> {
        self.append_inner(rows, Some(record))
            .map(|end| end.unwrap_or(0))
    }

    /// Why [`DoubleBuffer::append`] (with `record`: [`DoubleBuffer::append_spooled`]) would
    /// refuse `rows` now, if it would: the same checks, without appending.
    pub fn refusal(&self, rows: &Rows, record: Option<&[u8]>) -> Option<AppendError> {
        let bytes = rows.mem_size();
        if bytes > self.limits.max_bytes {
            return Some(AppendError::TooLarge {
                bytes,
                max: self.limits.max_bytes,
            });
        }
        let st = self.state.lock();
        if st.deadline.is_some() {
            return Some(AppendError::Closed);
        }
        let buffered = st.active.mem_size() + st.inflight_bytes;
        drop(st);
        match (&self.spool, record) {
            (Some(spool), Some(record)) => spool.refusal(record.len() as u64).map(Into::into),
            _ if buffered + bytes > self.limits.max_bytes => Some(AppendError::Full {
                buffered,
                max: self.limits.max_bytes,
            }),
            _ => None,
        }
    }

    fn append_inner(
        &self,
        rows: &mut Rows,
        record: Option<&[u8]>,
    ) -> Result<Option<u64>, AppendError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let bytes = rows.mem_size();
        if bytes > self.limits.max_bytes {
            return Err(AppendError::TooLarge {
                bytes,
                max: self.limits.max_bytes,
            });
        }
        let mut st = self.state.lock();
        if st.deadline.is_some() {
            return Err(AppendError::Closed);
        }
        let buffered = st.active.mem_size() + st.inflight_bytes;
        let room = buffered + bytes <= self.limits.max_bytes;
        let mut span = None;
        if let (Some(spool), Some(record)) = (&self.spool, record) {
            let reserved = spool.reserve(record)?;
            if !room || st.spill.is_some() {
                let first = st.spill.is_none();
                st.spill.get_or_insert(Spill {
                    from: reserved.start,
                    since: Instant::now(),
                });
                drop(st);
                if first {
                    self.wake.notify_one(); // the active half goes now, the disk after it
                }
                return Ok(Some(reserved.end));
            }
            let start = st.active_span.as_ref().map_or(reserved.start, |s| s.start);
            st.active_span = Some(start..reserved.end);
            span = Some(reserved.end);
        } else if !room {
            return Err(AppendError::Full {
                buffered,
                max: self.limits.max_bytes,
            });
        }
        let before = st.active.len();
        st.active.append(rows);
        self.pending_bytes.fetch_add(bytes, Ordering::Relaxed);
        let first = st.first_at.is_none();
        if first {
            st.first_at = Some(Instant::now());
        }
        let crossed =
            before < self.limits.swap_events && st.active.len() >= self.limits.swap_events;
        drop(st);
        if first || crossed {
            self.wake.notify_one();
        }
        Ok(span)
    }

    /// Blocks until something is due, then says what: the active half, swapped with
    /// `spare` (which must be empty) on size, timer, shutdown or spill; or the spool's
    /// backlog. Returns `None` once the buffer is closed and empty (or its deadline has
    /// passed with only the spool left): nothing is left to flush. Swapped rows count as in
    /// flight until [`DoubleBuffer::release`].
    pub fn swap_when_due(&self, spare: &mut Rows) -> Option<Due> {
        debug_assert!(spare.is_empty());
        let mut st = self.state.lock();
        let reason = loop {
            let closed = st.deadline.is_some();
            if let Some(spill) = st.spill {
                if st.first_at.is_some() {
                    break SwapReason::Backlog;
                }
                if st.deadline.is_some_and(|d| Instant::now() >= d) {
                    return None;
                }
                return Some(Due::Spool(spill.from));
            }
            match st.first_at {
                None if closed => return None,
                None => self.wake.wait(&mut st),
                Some(_) if closed => break SwapReason::Shutdown,
                Some(first) => {
                    let now = Instant::now();
                    let timer_due = first + self.limits.flush_interval;
                    if now >= timer_due {
                        break SwapReason::Timer;
                    }
                    let full = st.active.len() >= self.limits.swap_events;
                    let size_due = st.last_swap.map_or(now, |t| t + self.limits.min_interval);
                    let pressed = st.active.mem_size().saturating_mul(2) >= self.limits.max_bytes;
                    if full && (now >= size_due || pressed) {
                        break SwapReason::Size;
                    }
                    let wake_at = if full {
                        size_due.min(timer_due)
                    } else {
                        timer_due
                    };
                    self.wake.wait_until(&mut st, wake_at);
                }
            }
        };
        std::mem::swap(&mut st.active, spare);
        st.inflight_since = st.first_at.take();
        st.last_swap = Some(Instant::now());
        st.inflight_bytes += spare.mem_size();
        st.inflight_rows += spare.len();
        Some(Due::Half(reason, st.active_span.take()))
    }

    /// The flusher has read the spool up to everything durable: appends go to memory
    /// again. Returns the position where they start; rows before it are on disk only and
    /// the flusher reads them first.
    pub fn end_spill(&self) -> u64 {
        let mut st = self.state.lock();
        st.spill = None;
        let position = self.spool.as_ref().map_or(0, |s| s.next_position());
        drop(st);
        self.room.freed();
        position
    }

    /// Records when the oldest row the flusher holds arrived (for a batch read back from
    /// the spool, which did not come through [`DoubleBuffer::swap_when_due`]).
    pub fn set_inflight_since(&self, since: Option<Instant>) {
        self.state.lock().inflight_since = since;
    }

    /// When the oldest event not yet in ClickHouse arrived, as far as this process knows.
    pub fn oldest_pending(&self) -> Option<Instant> {
        let st = self.state.lock();
        [st.inflight_since, st.first_at, st.spill.map(|s| s.since)]
            .into_iter()
            .flatten()
            .min()
    }

    /// The flusher is done with `half` (written, or given up on): its memory is free again.
    ///
    /// The half keeps room for the rows of the halves released lately and a quarter more
    /// (at least `BUFFER_SIZE`), so under a steady load above `BUFFER_SIZE` per swap (a
    /// high rate fills a half past it while the previous insert runs) appends do not grow a
    /// half again: growing one faulted in fresh pages inside the append, under the lock
    /// (measured: 2.7 % of the service's CPU at a million events a second). The room kept
    /// is at most half of `BUFFER_MAX_BYTES`, so the two halves' idle room stays within the
    /// cap. A half that grew past that (a backlog after an outage, a
    /// burst) gives the excess back within a few releases, as the remembered size halves
    /// with each smaller half: one outage does not pin its peak memory for the life of the
    /// process.
    pub fn release(&self, half: &mut Rows) {
        let used = half.len();
        let row_bytes = half.mem_size().checked_div(used).unwrap_or(1).max(1);
        let mut st = self.state.lock();
        st.inflight_bytes -= half.mem_size();
        self.pending_bytes
            .fetch_sub(half.mem_size(), Ordering::Relaxed);
        st.inflight_rows -= half.len();
        st.inflight_since = None;
        st.recent_rows = used.max(st.recent_rows / 2);
        let wanted = st.recent_rows + st.recent_rows / 4;
        drop(st);
        self.room.freed();
        half.clear();
        let bound = self.limits.max_bytes / 2 / row_bytes;
        let keep = wanted.min(bound).max(self.limits.swap_events);
        if half.capacity() > keep + keep / 2 {
            half.shrink_to(keep);
        }
    }

    /// Stops taking appends and wakes the flusher to swap what is left; the flusher stops
    /// retrying at `deadline`. Later calls keep the first deadline.
    pub fn close(&self, deadline: Instant) {
        self.state.lock().deadline.get_or_insert(deadline);
        self.wake.notify_all();
        self.room.stop(); // waiting requests are answered now
    }

    /// Whether shutdown's deadline has passed: nothing more may be attempted.
    pub fn past_deadline(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// The shutdown deadline, once [`DoubleBuffer::close`] has been called.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.lock().deadline
    }

    /// Sleeps up to `timeout`, returning early if the buffer is closed meanwhile (the
    /// flusher's back-off, so that shutdown does not wait it out). Once closed, it sleeps
    /// the full time, or until the deadline if that is sooner.
    pub fn backoff_sleep(&self, timeout: Duration) {
        let until = Instant::now() + timeout;
        let mut st = self.state.lock();
        if let Some(deadline) = st.deadline {
            drop(st);
            std::thread::sleep(
                until
                    .min(deadline)
                    .saturating_duration_since(Instant::now()),
            );
            return;
        }
        while st.deadline.is_none() && Instant::now() < until {
            self.wake.wait_until(&mut st, until);
        }
    }

    /// Where requests wait for room while the buffer (or its spool) is full.
    pub fn room(&self) -> &RoomWait {
        &self.room
    }

    /// Events held in both halves: what would be lost if the process ended now.
    pub fn pending_events(&self) -> usize {
        let st = self.state.lock();
        st.active.len() + st.inflight_rows
    }

    /// Bytes held in both halves, counted against `BUFFER_MAX_BYTES`.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::event::testing;
    use std::sync::Arc;

    fn buffer(size: usize, flush_ms: u64, max_bytes: usize) -> Arc<DoubleBuffer> {
        Arc::new(DoubleBuffer::new(Limits {
            swap_events: size,
            flush_interval: Duration::from_millis(flush_ms),
            min_interval: Duration::ZERO,
            max_bytes,
            full_wait: Duration::ZERO,
        }))
    }

    fn rows(n: u32) -> Rows {
        testing::rows(0..n)
    }

    fn row_size() -> usize {
        rows(1).mem_size()
    }

    #[test]
    fn size_swaps_before_the_timer() {
        let buf = buffer(10, 60_000, usize::MAX);
        buf.append(&mut rows(10)).unwrap();
        let mut spare = Rows::default();
        let started = Instant::now();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Size, None))
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(spare.len(), 10);
        assert_eq!(buf.pending_events(), 10, "swapped rows are in flight");
        buf.release(&mut spare);
        assert_eq!((buf.pending_events(), buf.pending_bytes()), (0, 0));
    }

    #[test]
    fn size_swaps_are_spaced_by_the_min_interval() {
        let buf = Arc::new(DoubleBuffer::new(Limits {
            swap_events: 10,
            flush_interval: Duration::from_secs(60),
            min_interval: Duration::from_millis(200),
            max_bytes: usize::MAX,
            full_wait: Duration::ZERO,
        }));
        let mut spare = Rows::default();
        buf.append(&mut rows(10)).unwrap();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Size, None))
        );
        buf.release(&mut spare);
        let first = Instant::now();
        buf.append(&mut rows(10)).unwrap();
        buf.append(&mut rows(10)).unwrap();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Size, None))
        );
        assert!(
            first.elapsed() >= Duration::from_millis(150),
            "{:?}",
            first.elapsed()
        );
        assert_eq!(spare.len(), 20, "the wait made one bigger batch");
    }

    #[test]
    fn timer_swaps_a_half_that_never_fills() {
        let buf = buffer(1_000, 50, usize::MAX);
        buf.append(&mut rows(3)).unwrap();
        let mut spare = Rows::default();
        let started = Instant::now();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Timer, None))
        );
        assert!(started.elapsed() >= Duration::from_millis(40));
        assert_eq!(spare.len(), 3);
    }

    #[test]
    fn an_append_from_another_thread_wakes_the_flusher() {
        let buf = buffer(5, 60_000, usize::MAX);
        let writer = {
            let buf = buf.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                buf.append(&mut rows(2)).unwrap();
                buf.append(&mut rows(3)).unwrap();
            })
        };
        let mut spare = Rows::default();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Size, None))
        );
        writer.join().unwrap();
        assert_eq!(spare.len(), 5);
    }

    #[test]
    fn memory_cap_refuses_whole_requests_and_recovers_after_release() {
        let one = row_size();
        let buf = buffer(2, 60_000, one * 3);
        buf.append(&mut rows(2)).unwrap();
        let mut spare = Rows::default();
        buf.swap_when_due(&mut spare).unwrap();
        // Two rows in flight, room for one more: a request of two is refused whole.
        let mut two = rows(2);
        assert!(matches!(
            buf.append(&mut two),
            Err(AppendError::Full { .. })
        ));
        assert_eq!(two.len(), 2, "a refused request keeps its rows");
        buf.append(&mut rows(1)).unwrap();
        buf.release(&mut spare);
        buf.append(&mut two).unwrap();
        assert_eq!(buf.pending_events(), 3);
    }

    #[test]
    fn a_request_larger_than_the_cap_is_too_large_not_full() {
        let one = row_size();
        let buf = buffer(10, 60_000, one * 2);
        assert!(matches!(
            buf.append(&mut rows(3)),
            Err(AppendError::TooLarge { .. })
        ));
    }

    #[test]
    fn close_swaps_the_rest_then_ends() {
        let buf = buffer(100, 60_000, usize::MAX);
        buf.append(&mut rows(4)).unwrap();
        buf.close(Instant::now());
        assert_eq!(buf.append(&mut rows(1)), Err(AppendError::Closed));
        let mut spare = Rows::default();
        assert_eq!(
            buf.swap_when_due(&mut spare),
            Some(Due::Half(SwapReason::Shutdown, None))
        );
        assert_eq!(spare.len(), 4);
        buf.release(&mut spare);
        assert_eq!(buf.swap_when_due(&mut spare), None);
    }

    #[test]
    fn a_released_half_keeps_what_it_grew_to_below_twice_the_size() {
        // Steady traffic a little over BUFFER_SIZE per swap: after the first cycles the
        // halves stop reallocating, because release() keeps capacity up to 2 × size.
        let buf = buffer(1_000, 60_000, usize::MAX);
        let mut spare = buf.new_half();
        for _ in 0..3 {
            buf.append(&mut rows(1_500)).unwrap();
            buf.swap_when_due(&mut spare).unwrap();
            assert_eq!(spare.len(), 1_500);
            buf.release(&mut spare);
            assert!(spare.is_empty());
            assert!(spare.capacity() >= 1_500, "{}", spare.capacity());
        }
    }

    #[test]
    fn a_backlog_half_shrinks_back_once_smaller_halves_follow() {
        let buf = buffer(16, 60_000, usize::MAX);
        buf.append(&mut rows(5_000)).unwrap();
        let mut spare = buf.new_half();
        buf.swap_when_due(&mut spare).unwrap();
        assert!(spare.capacity() >= 5_000);
        buf.release(&mut spare);
        // Both halves held 5,000 rows' room or more at some point; a dozen releases of
        // 16-row halves bring each back to a few times BUFFER_SIZE.
        for _ in 0..12 {
            buf.append(&mut rows(16)).unwrap();
            buf.swap_when_due(&mut spare).unwrap();
            buf.release(&mut spare);
        }
        assert!(spare.capacity() <= 64, "{}", spare.capacity());
        assert!(buf.state.lock().active.capacity() <= 64);
    }

    #[test]
    fn halves_above_buffer_size_keep_their_room() {
        // A high rate: each half holds 3,000 rows at BUFFER_SIZE 1,000. After the first
        // cycles neither half reallocates (room kept for twice the recent halves).
        let buf = buffer(1_000, 60_000, usize::MAX);
        let mut spare = buf.new_half();
        let mut capacities = Vec::new();
        for _ in 0..8 {
            buf.append(&mut rows(3_000)).unwrap();
            buf.swap_when_due(&mut spare).unwrap();
            buf.release(&mut spare);
            capacities.push(spare.capacity());
        }
        assert!(
            capacities[4..].iter().all(|&c| c >= 3_000),
            "{capacities:?}"
        );
    }

    #[test]
    fn the_room_a_half_keeps_is_within_half_the_cap() {
        // 3,000-row halves under a cap of 3,200 rows' bytes: each keeps room for at most
        // 1,600 rows (half the cap), not the 3,750 its recent size asks for.
        let buf = buffer(1_000, 60_000, 3_200 * row_size());
        let mut spare = buf.new_half();
        for _ in 0..4 {
            buf.append(&mut rows(3_000)).unwrap();
            buf.swap_when_due(&mut spare).unwrap();
            buf.release(&mut spare);
            assert!(spare.capacity() <= 2_400, "{}", spare.capacity());
        }
    }

    #[test]
    fn pending_bytes_read_without_the_lock_follow_appends_swaps_and_releases() {
        let buf = buffer(10, 60_000, usize::MAX);
        let locked = |buf: &DoubleBuffer| {
            let st = buf.state.lock();
            st.active.mem_size() + st.inflight_bytes
        };
        let mut spare = buf.new_half();
        buf.append(&mut rows(12)).unwrap();
        assert_eq!(buf.pending_bytes(), 12 * row_size());
        buf.swap_when_due(&mut spare).unwrap();
        buf.append(&mut rows(3)).unwrap();
        assert_eq!(buf.pending_bytes(), 15 * row_size());
        assert_eq!(buf.pending_bytes(), locked(&buf));
        buf.release(&mut spare);
        assert_eq!(buf.pending_bytes(), 3 * row_size());
        assert_eq!(buf.pending_bytes(), locked(&buf));
    }
}
