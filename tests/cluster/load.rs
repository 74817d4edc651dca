//! Load for the scenarios: requests of distinct events from many devices, sent one after
//! another to one or more gateways while a test breaks the cluster, and the accounting
//! afterwards: every acknowledged event stored, none stored twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::fixture::query;
use crate::helpers::within;

/// Events per request.
pub const PER_REQUEST: u32 = 100;
/// Devices the events come from (each has its own `device_id`, so both shards get rows).
pub const DEVICES: u32 = 1000;

/// A request's events: session `{tag}-{request}` (unique per request, so a request's rows
/// can be counted), sequence 0..n, devices spread over [`DEVICES`].
pub fn request(tag: &str, request: u64, n: u32) -> String {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let device = (request as u32).wrapping_mul(PER_REQUEST).wrapping_add(i) % DEVICES;
            json!({
                "client_time": "2026-11-30 12:00:00",
                "device_id": format!("00000000-0000-4000-8000-{device:012x}"),
                "device_os": "IOS 17.1",
                "session": format!("{tag}-{request}"),
                "sequence": i,
                "event": "app_start",
                "param_int": i,
                "param_str": "cluster test",
            })
        })
        .collect();
    Value::Array(events).to_string()
}

/// Load running in the background.
pub struct Load {
    gateways: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: JoinHandle<Sent>,
}

/// What the load sent.
#[derive(Debug, Default)]
pub struct Sent {
    /// Sessions whose request was answered `200` (all [`PER_REQUEST`] events acknowledged).
    pub acked: Vec<String>,
    /// Requests answered otherwise, or not answered (a killed gateway): not resent, so
    /// their events may be stored or not, but never twice.
    pub unacked: u64,
}

impl Load {
    /// Sends requests of events to `gateways` in turn until stopped.
    pub fn start(tag: &str, gateways: Vec<String>) -> Load {
        Self::start_on(tag, gateways, "/v1/events", request)
    }

    /// Sends requests built by `body` (tag, request number, rows) to `path` of `gateways`
    /// in turn until stopped; each request's rows carry `session` `{tag}-{request}` and
    /// `sequence` 0..n, as [`figures_of`] counts them.
    pub fn start_on(
        tag: &str,
        gateways: Vec<String>,
        path: &'static str,
        body: fn(&str, u64, u32) -> String,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let tag = tag.to_string();
        let gateways = Arc::new(Mutex::new(gateways));
        let task = {
            let (stop, acked, gateways) = (stop.clone(), acked.clone(), gateways.clone());
            tokio::spawn(async move {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .build()
                    .expect("client");
                let mut sent = Sent::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let gateway = {
                        let list = gateways.lock().unwrap();
                        list[n as usize % list.len()].clone()
                    };
                    let response = http
                        .post(format!("{gateway}{path}"))
                        .header("content-type", "application/json")
                        .body(body(&tag, n, PER_REQUEST))
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status() == 200 => {
                            sent.acked.push(format!("{tag}-{n}"));
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => {
                            sent.unacked += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    n += 1;
                }
                sent
            })
        };
        Load {
            gateways,
            stop,
            acked,
            task,
        }
    }

    /// Sends the next requests to these gateways instead (one restarted on another port).
    pub fn set_gateways(&self, gateways: Vec<String>) {
        *self.gateways.lock().unwrap() = gateways;
    }

    /// Requests acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests have been acknowledged.
    pub async fn wait_for(&self, more: u64) {
        let target = self.acked() + more;
        within(Duration::from_secs(120), async {
            while self.acked() < target {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }

    /// Stops and returns what was sent.
    pub async fn stop(self) -> Sent {
        self.stop.store(true, Ordering::Relaxed);
        within(Duration::from_secs(60), self.task)
            .await
            .expect("load task")
    }
}

/// The scenario's figures, printed by each test for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// Events acknowledged with `200`.
    pub acknowledged: u64,
    /// Events stored (through the `Distributed` table).
    pub stored: u64,
    /// Acknowledged events not stored.
    pub lost: u64,
    /// Stored rows beyond the first of each (session, sequence).
    pub duplicated: u64,
}

/// Counts what `db.table` (a `Distributed` table with `session` and `sequence` columns,
/// read on `url`) holds against `sent`.
pub async fn figures_of(url: &str, db: &str, table: &str, sent: &Sent) -> Result<Figures, String> {
    let text = query(
        url,
        &format!(
            "SELECT session, count(), uniqExact(sequence) FROM `{db}`.`{table}` \
             GROUP BY session FORMAT TSV"
        ),
    )
    .await?;
    let mut stored = 0;
    let mut duplicated = 0;
    let mut per_session = std::collections::HashMap::new();
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(session), Some(count), Some(unique)) = (cols.next(), cols.next(), cols.next())
        else {
            return Err(format!("unexpected row {line:?}"));
        };
        let count: u64 = count.parse().map_err(|e| format!("{line:?}: {e}"))?;
        let unique: u64 = unique.parse().map_err(|e| format!("{line:?}: {e}"))?;
        stored += count;
        duplicated += count - unique;
        per_session.insert(session.to_string(), unique);
    }
    let per = u64::from(PER_REQUEST);
    let lost = sent
        .acked
        .iter()
        .map(|s| per - per_session.get(s).copied().unwrap_or(0).min(per))
        .sum();
    Ok(Figures {
        acknowledged: sent.acked.len() as u64 * per,
        stored,
        lost,
        duplicated,
    })
}

/// Polls until every acknowledged event is stored (or `limit` passes: then the last
/// figures, with what is lost), and returns the figures.
pub async fn settle(url: &str, db: &str, sent: &Sent, limit: Duration) -> Figures {
    settle_table(url, db, "events", sent, limit).await
}

/// [`settle`] for `db.table`.
pub async fn settle_table(
    url: &str,
    db: &str,
    table: &str,
    sent: &Sent,
    limit: Duration,
) -> Figures {
    let started = Instant::now();
    loop {
        let current = figures_of(url, db, table, sent).await;
        match current {
            Ok(f) if f.lost == 0 => return f,
            Ok(f) if started.elapsed() > limit => return f,
            Err(e) if started.elapsed() > limit => panic!("cannot count: {e}"),
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}
