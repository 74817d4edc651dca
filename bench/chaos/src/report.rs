//! The Markdown report: the run's settings, the faults, the responses and the verdict.

use std::fmt::Write as _;

use crate::faults::FaultLog;
use crate::load::Tally;
use crate::verify::Verdict;

/// Everything the report shows.
pub struct Report<'a> {
    /// PRNG seed (re-run with `--seed`).
    pub seed: u64,
    /// Planned minutes of faults.
    pub minutes: f64,
    /// Actual seconds of load.
    pub load_secs: f64,
    /// Client threads.
    pub clients: usize,
    /// Events per request.
    pub batch: usize,
    /// Pause of each client between requests, in milliseconds.
    pub pause_ms: u64,
    /// The run's database.
    pub database: &'a str,
    /// The run's spool folder.
    pub spool_dir: &'a str,
    /// Faults and exits.
    pub faults: &'a FaultLog,
    /// All clients' responses.
    pub tally: &'a Tally,
    /// Seconds the final drain took, and whether it settled.
    pub drain: (f64, bool),
    /// The service's exit after the final SIGTERM.
    pub final_exit: &'a str,
    /// The comparison.
    pub verdict: &'a Verdict,
    /// Why the run fails, if it does.
    pub failures: &'a [String],
    /// Anomalies that do not fail the run.
    pub warnings: &'a [String],
}

/// Renders the report.
pub fn render(r: &Report) -> String {
    let v = r.verdict;
    let t = r.tally;
    let mut s = String::new();
    let status = if r.failures.is_empty() {
        "PASS"
    } else {
        "FAIL"
    };
    let _ = writeln!(s, "# Chaos run: {status}\n");
    let _ = writeln!(
        s,
        "Seed `{}` · {:.1} min planned, {:.0} s of load · {} clients × {} events per request, \
         {} ms pause · database `{}` · spool `{}`\n",
        r.seed, r.minutes, r.load_secs, r.clients, r.batch, r.pause_ms, r.database, r.spool_dir
    );
    for f in r.failures {
        let _ = writeln!(s, "- **FAIL: {f}**");
    }
    for w in r.warnings {
        let _ = writeln!(s, "- warning: {w}");
    }
    if !r.failures.is_empty() || !r.warnings.is_empty() {
        s.push('\n');
    }

    let _ = writeln!(s, "## Events\n\n| | events |\n|---|---:|");
    let rows: [(&str, u64); 16] = [
        ("sent", v.sent),
        ("acknowledged (200)", v.acked),
        ("acknowledged good", v.acked_good),
        ("acknowledged good, stored", v.acked_good_stored),
        ("**lost** (acknowledged good, not stored)", v.lost),
        ("lost but in the quarantine", v.lost_in_quarantine),
        ("rows in ClickHouse", v.stored_rows),
        ("duplicated (extra copies)", v.duplicated),
        ("stored, never acknowledged", v.stored_unacked),
        ("stored, unknown device", v.stored_foreign),
        ("acknowledged poison", v.acked_poison),
        ("poison quarantined", v.poison_quarantined),
        (
            "poison lost (neither quarantined nor stored)",
            v.poison_lost,
        ),
        ("quarantine lines", v.quarantine_lines),
        ("quarantine lines repeated", v.quarantine_duplicates),
        ("quarantined good events", v.quarantine_good),
    ];
    for (name, n) in rows {
        let _ = writeln!(s, "| {name} | {n} |");
    }
    if v.quarantine_unreadable > 0 {
        let _ = writeln!(
            s,
            "| quarantine lines unreadable or unknown | {} |",
            v.quarantine_unreadable
        );
    }
    if !v.lost_examples.is_empty() {
        let _ = writeln!(
            s,
            "\nLost (device/sequence, first {}): {}",
            v.lost_examples.len(),
            v.lost_examples.join(", ")
        );
    }

    let _ = writeln!(s, "\n## Requests\n\n| | requests |\n|---|---:|");
    let _ = writeln!(s, "| sent (resends included) | {} |", t.requests);
    for (code, n) in &t.statuses {
        let _ = writeln!(s, "| HTTP {code} | {n} |");
    }
    let _ = writeln!(s, "| connection error / timeout | {} |", t.conn_errors);
    let _ = writeln!(s, "| 200 with rejected events | {} |", t.partial_rejects);
    let _ = writeln!(s, "| **other 5xx** | {} |", t.other_5xx());
    for b in &t.bad_5xx {
        let _ = writeln!(s, "\n    {b}");
    }

    let _ = writeln!(s, "\n## Faults\n\n| fault | times |\n|---|---:|");
    for (kind, n) in &r.faults.counts {
        let _ = writeln!(s, "| {kind} | {n} |");
    }
    let _ = writeln!(
        s,
        "\nExit codes after SIGTERM: {} (final: {}). Final drain: {:.1} s{}.",
        if r.faults.term_exits.is_empty() {
            "none during the loop".to_string()
        } else {
            r.faults.term_exits.join(", ")
        },
        r.final_exit,
        r.drain.0,
        if r.drain.1 { "" } else { " (did not settle)" }
    );
    if !r.faults.unexpected.is_empty() {
        let _ = writeln!(s, "\nUnexpected:");
        for u in &r.faults.unexpected {
            let _ = writeln!(s, "- {u}");
        }
    }
    let _ = writeln!(s, "\nService log: `target/chaos/service.log`.");
    s
}
