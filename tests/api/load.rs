//! A steady load of concurrent clients that remember which events were acknowledged, and
//! the check that ClickHouse holds exactly those: the yardstick of the durability tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::helpers::{batch, clickhouse_at};

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Sequences of every event answered `200`.
    pub acked: Vec<u32>,
    /// Responses by status code.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no answer (connection refused or reset: the service was killed).
    pub no_answer: usize,
}

impl Tally {
    /// Responses with a 5xx status other than `503`: never acceptable.
    pub fn unexpected_5xx(&self) -> usize {
        self.statuses
            .iter()
            .filter(|(s, _)| **s >= 500 && **s != 503)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Clients posting until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<Tally>>,
}

/// Starts `clients` clients posting `per_request` events at a time to `address`. Client
/// `c`'s sequences start at `c * 1_000_000`, so every event is unique. A `503` makes the
/// client wait briefly and resend the same events, as a well-behaved client does; no
/// answer at all counts as not acknowledged, and the client moves on.
pub fn start(address: &str, clients: u32, per_request: u32) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let clients = (0..clients)
        .map(|c| {
            let (stop, url) = (stop.clone(), format!("{address}/v1/events"));
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .expect("client");
                let mut tally = Tally::default();
                let mut next = c * 1_000_000;
                while !stop.load(Relaxed) {
                    let sent = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(batch(next, per_request))
                        .send()
                        .await;
                    match sent {
                        Ok(r) => {
                            *tally.statuses.entry(r.status().as_u16()).or_default() += 1;
                            if r.status() == 200 {
                                tally.acked.extend(next..next + per_request);
                                next += per_request;
                            } else {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        }
                        Err(_) => {
                            tally.no_answer += 1;
                            next += per_request;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
                tally
            })
        })
        .collect();
    Load { stop, clients }
}

impl Load {
    /// Stops the clients and adds up what they saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Relaxed);
        let mut total = Tally::default();
        for client in self.clients {
            let t = client.await.expect("client task");
            total.acked.extend(t.acked);
            total.no_answer += t.no_answer;
            for (status, n) in t.statuses {
                *total.statuses.entry(status).or_default() += n;
            }
        }
        total
    }
}

/// How many times each sequence is stored in `database.events` on the server at `url`.
pub async fn stored(url: &str, database: &str) -> HashMap<u32, u64> {
    clickhouse_at(
        url,
        &format!("SELECT sequence, count() FROM `{database}`.events GROUP BY sequence FORMAT TSV"),
    )
    .await
    .lines()
    .filter_map(|line| {
        let (seq, n) = line.split_once('\t')?;
        Some((seq.parse().ok()?, n.parse().ok()?))
    })
    .collect()
}

/// Acknowledged events missing from `stored`, and extra copies of acknowledged ones.
pub fn lost_and_duplicated(acked: &[u32], stored: &HashMap<u32, u64>) -> (usize, u64) {
    let lost = acked.iter().filter(|s| !stored.contains_key(s)).count();
    let duplicated = acked
        .iter()
        .map(|s| stored.get(s).map_or(0, |n| n.saturating_sub(1)))
        .sum();
    (lost, duplicated)
}
