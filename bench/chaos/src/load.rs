//! The load: client threads, each with its own device id and sequence counter, posting
//! batches and remembering exactly which events were acknowledged.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle, sleep};
use std::time::Duration;

use bench_support::http;

use crate::rng::Rng;

/// `param_str` of a good event (ClickHouse's `toUInt8` accepts it).
pub const GOOD: &str = "7";
/// `param_str` of a poison event (ClickHouse refuses it as bad data, code 6).
pub const POISON: &str = "poison";
/// `param_str` of a poison event ClickHouse refuses with a code that does not say "bad
/// data" (`toUInt8` takes it; `toFixedString(_, 2)` throws code 131, whose insert looks
/// retryable): the service must find it by what retries show, not by its code.
pub const POISON_LOOKS_RETRYABLE: &str = "255";

/// Whether `param_str` is one of the poison values.
pub fn is_poison(param_str: &str) -> bool {
    param_str == POISON || param_str == POISON_LOOKS_RETRYABLE
}

/// What one client thread does.
#[derive(Clone)]
pub struct LoadConfig {
    /// `http://127.0.0.1:port/v1/events`.
    pub url: String,
    /// Events per request.
    pub batch: usize,
    /// One batch in this many carries one poison event.
    pub poison_one_in: u64,
    /// Pause between requests (0: none).
    pub pause: Duration,
}

/// One generated event's fate, indexed by its `sequence`.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Answered 200 (and not rejected by validation).
    pub acked: bool,
    /// `param_str` is a poison value (see [`is_poison`]).
    pub poison: bool,
}

/// Response counts of one client (or all, merged).
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// Requests sent (resends included).
    pub requests: u64,
    /// Count per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection errors and timeouts.
    pub conn_errors: u64,
    /// 200 answers that rejected some events (ours are all valid: unexpected).
    pub partial_rejects: u64,
    /// The first bodies of 5xx answers other than 503.
    pub bad_5xx: Vec<String>,
}

impl Tally {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.conn_errors += other.conn_errors;
        self.partial_rejects += other.partial_rejects;
        for b in &other.bad_5xx {
            if self.bad_5xx.len() < 5 {
                self.bad_5xx.push(b.clone());
            }
        }
    }

    /// 5xx answers other than 503.
    pub fn other_5xx(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| (500..600).contains(*s) && **s != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// What a client thread returns.
pub struct ClientResult {
    /// Its `device_id`.
    pub device_id: String,
    /// Every event it generated, by `sequence`.
    pub events: Vec<Sent>,
    /// Its responses.
    pub tally: Tally,
}

/// Starts `clients` threads posting until `stop` is set.
pub fn spawn(
    clients: usize,
    cfg: &LoadConfig,
    seed: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<JoinHandle<ClientResult>> {
    (0..clients)
        .map(|i| {
            let cfg = cfg.clone();
            let stop = Arc::clone(stop);
            let rng = Rng::new(seed ^ (0xC1_1E47 + i as u64).wrapping_mul(0x9E37_79B9));
            thread::spawn(move || client(cfg, rng, &stop))
        })
        .collect()
}

/// One client's loop.
fn client(cfg: LoadConfig, mut rng: Rng, stop: &AtomicBool) -> ClientResult {
    let agent = http::agent(Duration::from_secs(10));
    let device_id = rng.uuid();
    let mut events: Vec<Sent> = Vec::new();
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        let first = events.len();
        let poison_at = rng
            .one_in(cfg.poison_one_in)
            .then(|| rng.below(cfg.batch as u64) as usize);
        for i in 0..cfg.batch {
            events.push(Sent {
                acked: false,
                poison: poison_at == Some(i),
            });
        }
        let body = body(&device_id, first, &events[first..]);
        // Resend the same batch while the service says 503.
        loop {
            tally.requests += 1;
            let result = agent
                .post(&cfg.url)
                .header("Content-Type", "application/json")
                .send(&body);
            let mut resp = match result {
                Ok(r) => r,
                Err(_) => {
                    tally.conn_errors += 1;
                    sleep(Duration::from_millis(100 + rng.below(200)));
                    break;
                }
            };
            let status = resp.status().as_u16();
            *tally.statuses.entry(status).or_default() += 1;
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok());
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            match status {
                200 => {
                    let rejected = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["rejected"].as_u64());
                    if rejected == Some(0) {
                        for e in &mut events[first..] {
                            e.acked = true;
                        }
                    } else {
                        tally.partial_rejects += 1;
                    }
                    break;
                }
                503 => {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let wait = retry_after.unwrap_or(0.2).clamp(0.05, 1.0);
                    sleep(Duration::from_secs_f64(wait));
                }
                _ => {
                    if (500..600).contains(&status) && tally.bad_5xx.len() < 5 {
                        let snippet: String = text.chars().take(300).collect();
                        tally.bad_5xx.push(format!("{status}: {snippet}"));
                    }
                    sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
        if !cfg.pause.is_zero() {
            sleep(cfg.pause);
        }
    }
    ClientResult {
        device_id,
        events,
        tally,
    }
}

/// The JSON array for `events`, whose sequences start at `first`.
fn body(device_id: &str, first: usize, events: &[Sent]) -> String {
    let mut s = String::with_capacity(events.len() * 200);
    s.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Every other poison event is refused with a retryable-looking code.
        let param = match (e.poison, (first + i) % 2) {
            (false, _) => GOOD,
            (true, 0) => POISON,
            (true, _) => POISON_LOOKS_RETRYABLE,
        };
        let _ = write!(
            s,
            r#"{{"client_time":"2020-12-01 23:59:00","device_id":"{device_id}","device_os":"IOS 13.5.1","session":"chaos","sequence":{},"event":"app_start","param_int":{},"param_str":"{param}"}}"#,
            first + i,
            i
        );
    }
    s.push(']');
    s
}

#[cfg(test)]
mod tests {
    use super::{Sent, body};

    #[test]
    fn body_is_a_json_array_with_sequences() {
        let ev = [
            Sent {
                acked: false,
                poison: false,
            },
            Sent {
                acked: false,
                poison: true,
            },
        ];
        let b = body("d", 40, &ev);
        let v: serde_json::Value = serde_json::from_str(&b).expect("valid JSON");
        assert_eq!(v[1]["sequence"], 41);
        assert_eq!(v[1]["param_str"], "poison");
        assert_eq!(v[0]["param_str"], "7");
    }
}
