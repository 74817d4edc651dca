//! `Idempotency-Key`: a request sent again with the same key (scoped to its API key) within
//! `IDEMPOTENCY_WINDOW_SECS` gets the first request's answer and stores nothing again, so a
//! client that lost an answer can resend without duplicating. Only taken requests (`200`)
//! are remembered: a refused one (`503`, `429`, ...) is processed again when resent. While
//! the first is still being processed, a second gets `409`.
//!
//! Held in memory, at most `IDEMPOTENCY_MAX_BYTES` (keys and answers together; the oldest go
//! first), and per process: with several gateways, a load balancer must route a key's
//! retries to the same one (or the table must deduplicate, see the README). In `disk` mode
//! each remembered answer is also appended to a journal in `SPOOL_DIR` and synced before it
//! is given, so a resend after a restart gets it too; the journal is rewritten with the
//! answers still in their window at start-up, and whenever it grows past twice the bound.

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
    /// `disk` mode: the journal, serialising its appends (never held with `state`).
    journal: Option<Mutex<Journal>>,
}

/// The journal file and how much it holds.
struct Journal {
    path: std::path::PathBuf,
    file: std::fs::File,
    bytes: usize,
}

/// One journal line.
#[derive(serde::Serialize, serde::Deserialize)]
struct Line {
    scope: String,
    key: String,
    /// When the request was taken, Unix milliseconds.
    at_ms: u64,
    body: String,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Idempotency {
    /// Remembers answers for `window`, in at most `max_bytes`, in memory.
    pub fn new(window: Duration, max_bytes: usize) -> Self {
        Self {
            window,
            max_bytes,
            state: Mutex::new(State {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            journal: None,
        }
    }

    /// The same, also kept in the journal at `path` (`disk` mode): the answers an earlier
    /// run gave within the window are remembered again, and the file rewritten with them.
    pub fn with_journal(
        window: Duration,
        max_bytes: usize,
        path: std::path::PathBuf,
    ) -> std::io::Result<Self> {
        let memory = Self::new(window, max_bytes);
        let now = unix_ms();
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        // A torn last line (a crash mid-append) does not parse: that answer was not given.
        let mut lines: Vec<Line> = (text.lines())
            .filter_map(|l| serde_json::from_str::<Line>(l).ok())
            .filter(|l| now.saturating_sub(l.at_ms) < window_ms)
            .collect();
        lines.sort_by_key(|l| l.at_ms);
        {
            let mut st = memory.state.lock();
            for line in &lines {
                let age = Duration::from_millis(now.saturating_sub(line.at_ms));
                let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                let id = (line.scope.clone(), line.key.clone());
                st.bytes += id.0.len() + id.1.len() + line.body.len();
                st.entries.insert(
                    id.clone(),
                    (at, Entry::Done(line.body.clone().into_bytes())),
                );
                st.order.push_back((at, id));
            }
        }
        let journal = Journal::rewrite(path, &lines)?;
        Ok(Self {
            journal: Some(Mutex::new(journal)),
            ..memory
        })
    }

    /// Whether answers are also kept in a journal (`disk` mode): [`Idempotency::finish`]
    /// then syncs a file.
    pub fn journaled(&self) -> bool {
        self.journal.is_some()
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

    /// The request with `key` was taken: its answer is given to any resend. In `disk` mode
    /// it is in the journal, synced, when this returns `Ok` (blocking: call it off the
    /// async workers).
    pub fn finish(&self, scope: &str, key: &str, body: Vec<u8>) -> std::io::Result<()> {
        let line = self.journal.as_ref().map(|_| Line {
            scope: scope.to_string(),
            key: key.to_string(),
            at_ms: unix_ms(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        // Remembered in memory whatever the journal does: this process answers resends.
        self.remember(scope, key, body);
        match (&self.journal, line) {
            (Some(journal), Some(line)) => journal
                .lock()
                .append(&line, self.max_bytes, || self.live_lines()),
            _ => Ok(()),
        }
    }

    /// The answers remembered now, as journal lines (to rewrite the journal with).
    fn live_lines(&self) -> Vec<Line> {
        let st = self.state.lock();
        let now_ms = unix_ms();
        (st.order.iter())
            .filter_map(|(at, id)| match st.entries.get(id) {
                Some((_, Entry::Done(body))) => Some(Line {
                    scope: id.0.clone(),
                    key: id.1.clone(),
                    at_ms: now_ms.saturating_sub(
                        u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
                    ),
                    body: String::from_utf8_lossy(body).into_owned(),
                }),
                _ => None,
            })
            .collect()
    }

    fn remember(&self, scope: &str, key: &str, body: Vec<u8>) {
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

impl Journal {
    /// Writes `lines` to a new file, syncs it and puts it in place of `path`.
    fn rewrite(path: std::path::PathBuf, lines: &[Line]) -> std::io::Result<Self> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut text = Vec::new();
        for line in lines {
            serde_json::to_writer(&mut text, line)?;
            text.push(b'\n');
        }
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        if let Some(dir) = path.parent() {
            crate::durable::sync_dir(dir)?;
        }
        let file = std::fs::OpenOptions::new().append(true).open(&path)?;
        Ok(Self {
            path,
            file,
            bytes: text.len(),
        })
    }

    /// Appends `line` and syncs it; past twice `max_bytes`, rewrites the file with `live`
    /// first (the answers still remembered).
    fn append(
        &mut self,
        line: &Line,
        max_bytes: usize,
        live: impl FnOnce() -> Vec<Line>,
    ) -> std::io::Result<()> {
        use std::io::Write;
        if self.bytes > 2 * max_bytes.max(1 << 20) {
            *self = Self::rewrite(self.path.clone(), &live())?;
        }
        let mut text = serde_json::to_vec(line)?;
        text.push(b'\n');
        self.file.write_all(&text)?;
        self.file.sync_data()?;
        self.bytes += text.len();
        Ok(())
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
        memory
            .finish("web", "b1", b"{\"accepted\":3}".to_vec())
            .unwrap();
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
        memory.finish("k", "a", vec![0; 10]).unwrap();
        assert!(
            matches!(memory.begin("k", "a"), Begin::New),
            "past the window"
        );
        let memory = Idempotency::new(Duration::from_secs(60), 100);
        for i in 0..20 {
            let key = format!("key-{i}");
            assert!(matches!(memory.begin("k", &key), Begin::New));
            memory.finish("k", &key, vec![0; 30]).unwrap();
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

#[cfg(test)]
mod journal_tests {
    use super::*;

    /// An answer given before a restart is given again after it; a torn last line and
    /// answers past the window are not.
    #[test]
    fn answers_outlive_a_restart_in_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idempotency.jsonl");
        let memory =
            Idempotency::with_journal(Duration::from_secs(60), 1 << 20, path.clone()).unwrap();
        assert!(matches!(memory.begin("web", "b1"), Begin::New));
        memory
            .finish("web", "b1", b"{\"accepted\":2}".to_vec())
            .unwrap();
        drop(memory);
        // A crash mid-append leaves a torn line.
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"scope\":\"web\",\"key\":\"b2\",\"at")
            .unwrap();
        let again =
            Idempotency::with_journal(Duration::from_secs(60), 1 << 20, path.clone()).unwrap();
        assert!(
            matches!(again.begin("web", "b1"), Begin::Replay(body) if body == b"{\"accepted\":2}")
        );
        assert!(matches!(again.begin("web", "b2"), Begin::New));
        drop(again);
        let expired = Idempotency::with_journal(Duration::ZERO, 1 << 20, path).unwrap();
        assert!(matches!(expired.begin("web", "b1"), Begin::New));
    }
}
