//! `Idempotency-Key`: a request sent again with the same key (scoped to its API key) within
//! `IDEMPOTENCY_WINDOW_SECS` gets the first request's answer and stores nothing again, so a
//! client that lost an answer can resend without duplicating. Only taken requests (`200`)
//! are remembered: a refused one (`503`, `429`, ...) is processed again when resent. While
//! the first is still being processed, a second gets `409`.
//!
//! Held in memory, at most `IDEMPOTENCY_MAX_BYTES` (keys and answers together; the oldest go
//! first), and per process: with several gateways, a load balancer must route a key's
//! retries to the same one (or the table must deduplicate, see the README).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Longest `Idempotency-Key` taken.
pub const MAX_KEY_BYTES: usize = 255;

/// What a request with an `Idempotency-Key` does.
pub enum Begin {
    /// The first with this key: process it, then [`Idempotency::finish`] (or
    /// [`Idempotency::abandon`]).
    New,
    /// Answered before: this body, with `200`.
    Replay(Vec<u8>),
    /// Another request with this key is being processed.
    InProgress,
}

enum Entry {
    InProgress,
    Done(Vec<u8>),
}

struct State {
    entries: HashMap<(String, String), (Instant, Entry)>,
    /// Keys in the order they were taken, for the window and the byte bound.
    order: VecDeque<(Instant, (String, String))>,
    bytes: usize,
}

/// The answers remembered by key.
pub struct Idempotency {
    window: Duration,
    max_bytes: usize,
    state: Mutex<State>,
}

impl Idempotency {
    /// Remembers answers for `window`, in at most `max_bytes`.
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Self {
            window,
            max_bytes,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    /// Starts a request with `key` under API key `scope`.
    pub fn begin(&self, scope: &str, key: &str) -> Begin {
        let now = Instant::now();
        let id = (scope.to_string(), key.to_string());
        let mut st = self.state.lock();
        self.expire(&mut st, now);
        match st.entries.get(&id) {
            Some((_, Entry::Done(body))) => return Begin::Replay(body.clone()),
            Some((_, Entry::InProgress)) => return Begin::InProgress,
            None => {}
        }
        st.bytes += id.0.len() + id.1.len();
        st.entries.insert(id.clone(), (now, Entry::InProgress));
        st.order.push_back((now, id));
        Begin::New
    }

    /// The request with `key` was taken: its answer is given to any resend.
    pub fn finish(&self, scope: &str, key: &str, body: Vec<u8>) {
        let mut st = self.state.lock();
        let id = (scope.to_string(), key.to_string());
        let len = body.len();
        if let Some((_, entry)) = st.entries.get_mut(&id) {
            *entry = Entry::Done(body);
            st.bytes += len;
        }
        // The oldest go first while over the bound.
        while st.bytes > self.max_bytes {
            let Some((_, oldest)) = st.order.pop_front() else {
                break;
            };
            self.remove(&mut st, &oldest);
        }
    }

    /// The request with `key` was not taken: a resend is processed again.
    pub fn abandon(&self, scope: &str, key: &str) {
        let mut st = self.state.lock();
        let id = (scope.to_string(), key.to_string());
        self.remove(&mut st, &id);
        st.order.retain(|(_, k)| *k != id);
    }

    fn expire(&self, st: &mut State, now: Instant) {
        while let Some((at, _)) = st.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((_, id)) = st.order.pop_front() {
                self.remove(st, &id);
            }
        }
    }

    fn remove(&self, st: &mut State, id: &(String, String)) {
        if let Some((_, entry)) = st.entries.remove(id) {
            let body = match entry {
                Entry::Done(body) => body.len(),
                Entry::InProgress => 0,
            };
            st.bytes = st.bytes.saturating_sub(id.0.len() + id.1.len() + body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_request_is_answered_again_and_a_refused_one_processed_again() {
        let memory = Idempotency::new(Duration::from_secs(60), 1 << 20);
        assert!(matches!(memory.begin("web", "b1"), Begin::New));
        assert!(matches!(memory.begin("web", "b1"), Begin::InProgress));
        // Another API key's same Idempotency-Key is another request.
        assert!(matches!(memory.begin("app", "b1"), Begin::New));
        memory.finish("web", "b1", b"{\"accepted\":3}".to_vec());
        assert!(
            matches!(memory.begin("web", "b1"), Begin::Replay(body) if body == b"{\"accepted\":3}")
        );
        memory.abandon("app", "b1");
        assert!(matches!(memory.begin("app", "b1"), Begin::New));
    }

    #[test]
    fn the_window_and_the_byte_bound_let_the_oldest_go() {
        let memory = Idempotency::new(Duration::ZERO, 1 << 20);
        assert!(matches!(memory.begin("k", "a"), Begin::New));
        memory.finish("k", "a", vec![0; 10]);
        assert!(
            matches!(memory.begin("k", "a"), Begin::New),
            "past the window"
        );
        let memory = Idempotency::new(Duration::from_secs(60), 100);
        for i in 0..20 {
            let key = format!("key-{i}");
            assert!(matches!(memory.begin("k", &key), Begin::New));
            memory.finish("k", &key, vec![0; 30]);
        }
        assert!(memory.state.lock().bytes <= 100);
        assert!(
            matches!(memory.begin("k", "key-19"), Begin::Replay(_)),
            "the newest stays"
        );
        assert!(
            matches!(memory.begin("k", "key-0"), Begin::New),
            "the oldest went"
        );
    }
}
