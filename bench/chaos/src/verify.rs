//! The verdict: what each client had acknowledged against what ClickHouse holds and what
//! the quarantine files hold.

use std::collections::HashMap;
use std::path::Path;

use bench_support::http::ClickHouse;

use crate::load::{ClientResult, is_poison};

/// The counts the report prints; `lost` is the one that fails the run.
#[derive(Debug, Default)]
pub struct Verdict {
    /// Events generated and posted at least once.
    pub sent: u64,
    /// Events answered 200.
    pub acked: u64,
    /// Acknowledged good events.
    pub acked_good: u64,
    /// Acknowledged good events found in ClickHouse (distinct).
    pub acked_good_stored: u64,
    /// Acknowledged good events not in ClickHouse.
    pub lost: u64,
    /// Of those, how many sit in the quarantine instead.
    pub lost_in_quarantine: u64,
    /// Rows in the table.
    pub stored_rows: u64,
    /// Extra copies: sum of `count - 1` over stored (device, sequence).
    pub duplicated: u64,
    /// Stored events that were never acknowledged (sent, then the connection dropped).
    pub stored_unacked: u64,
    /// Stored rows of devices no client used (or sequences it never sent).
    pub stored_foreign: u64,
    /// Acknowledged poison events.
    pub acked_poison: u64,
    /// Acknowledged poison events found in the quarantine.
    pub poison_quarantined: u64,
    /// Acknowledged poison events in ClickHouse (should be impossible).
    pub poison_stored: u64,
    /// Acknowledged poison events neither quarantined nor stored.
    pub poison_lost: u64,
    /// Lines in the quarantine files.
    pub quarantine_lines: u64,
    /// Quarantine lines repeating an event already quarantined.
    pub quarantine_duplicates: u64,
    /// Quarantined good events (`param_str` not poison).
    pub quarantine_good: u64,
    /// Quarantine lines that could not be read.
    pub quarantine_unreadable: u64,
    /// A few lost events, `device_id/sequence`, for the report.
    pub lost_examples: Vec<String>,
}

/// Compares the clients' records with `db.events` and `spool_dir/quarantine/*.jsonl`.
pub fn verify(
    ch: &ClickHouse,
    database: &str,
    clients: &[ClientResult],
    spool_dir: &Path,
) -> Result<Verdict, String> {
    let index: HashMap<&str, usize> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| (c.device_id.as_str(), i))
        .collect();
    let mut v = Verdict::default();

    // Stored copies per client and sequence.
    let mut stored: Vec<Vec<u32>> = clients.iter().map(|c| vec![0; c.events.len()]).collect();
    // One query per device keeps each answer to a client's own events.
    for (i, c) in clients.iter().enumerate() {
        let tsv = ch.query(&format!(
            "SELECT sequence, count() FROM {database}.events \
             WHERE device_id = toUUID('{}') GROUP BY sequence FORMAT TSV",
            c.device_id
        ))?;
        for line in tsv.lines() {
            let (seq, n) = line
                .split_once('\t')
                .ok_or_else(|| format!("unexpected ClickHouse row: {line:?}"))?;
            let seq: usize = seq.parse().map_err(|e| format!("sequence {seq:?}: {e}"))?;
            let n: u32 = n.parse().map_err(|e| format!("count {n:?}: {e}"))?;
            v.stored_rows += u64::from(n);
            v.duplicated += u64::from(n.saturating_sub(1));
            match stored[i].get_mut(seq) {
                Some(slot) => *slot += n,
                None => v.stored_foreign += u64::from(n),
            }
        }
    }
    let total = ch.count(&format!("{database}.events"))?;
    v.stored_foreign += total.saturating_sub(v.stored_rows);
    v.stored_rows = total;

    // Quarantined copies per client and sequence.
    let mut quarantined: Vec<Vec<u32>> = clients.iter().map(|c| vec![0; c.events.len()]).collect();
    for text in quarantine_files(spool_dir)? {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            v.quarantine_lines += 1;
            let Ok(q) = serde_json::from_str::<serde_json::Value>(line) else {
                v.quarantine_unreadable += 1;
                continue;
            };
            let ev = &q["event"];
            if !ev["param_str"].as_str().is_some_and(is_poison) {
                v.quarantine_good += 1;
            }
            let slot = ev["device_id"]
                .as_str()
                .and_then(|d| index.get(d))
                .zip(ev["sequence"].as_u64())
                .and_then(|(&i, s)| quarantined[i].get_mut(s as usize));
            match slot {
                Some(slot) => {
                    if *slot > 0 {
                        v.quarantine_duplicates += 1;
                    }
                    *slot += 1;
                }
                None => v.quarantine_unreadable += 1,
            }
        }
    }

    for (i, c) in clients.iter().enumerate() {
        for (seq, e) in c.events.iter().enumerate() {
            v.sent += 1;
            let in_table = stored[i][seq] > 0;
            let in_quarantine = quarantined[i][seq] > 0;
            if !e.acked {
                v.stored_unacked += u64::from(in_table);
                continue;
            }
            v.acked += 1;
            if e.poison {
                v.acked_poison += 1;
                if in_quarantine {
                    v.poison_quarantined += 1;
                }
                if in_table {
                    v.poison_stored += 1;
                }
                if !in_quarantine && !in_table {
                    v.poison_lost += 1;
                }
            } else {
                v.acked_good += 1;
                if in_table {
                    v.acked_good_stored += 1;
                } else {
                    v.lost += 1;
                    v.lost_in_quarantine += u64::from(in_quarantine);
                    if v.lost_examples.len() < 10 {
                        v.lost_examples.push(format!("{}/{seq}", c.device_id));
                    }
                }
            }
        }
    }
    Ok(v)
}

/// The contents of every `*.jsonl` under `spool_dir/quarantine` (none: empty).
fn quarantine_files(spool_dir: &Path) -> Result<Vec<String>, String> {
    let dir = spool_dir.join("quarantine");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|x| x == "jsonl") {
            out.push(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("read {}: {e}", path.display()))?,
            );
        }
    }
    Ok(out)
}
