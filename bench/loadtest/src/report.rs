//! The Markdown report: results, ratios, target checks; and the chart's data.

use std::fmt::Write as _;
use std::time::Duration;

use crate::chart::{Line, Panel};
use crate::{Run, System};

pub struct Meta {
    pub clickhouse_version: String,
    pub oha_version: String,
    pub duration: Duration,
    pub cores: usize,
    /// `(events, JSON array bytes, NDJSON bytes)` per body.
    pub bodies: Vec<(usize, usize, usize)>,
    pub elapsed: Duration,
    /// event-ingest's `DURABILITY`.
    pub durability: String,
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let n = v.round() as i128;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn ms(v: f64) -> String {
    if !v.is_finite() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// CPU µs per event: `0.123`, `1.23`, `12.3`; `–` when not measured.
fn us(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() && v < 1.0 => format!("{v:.3}"),
        Some(v) if v.is_finite() && v < 10.0 => format!("{v:.2}"),
        Some(v) if v.is_finite() => format!("{v:.1}"),
        _ => "–".into(),
    }
}

/// ch-buffer's ClickHouse CPU leaves out the Buffer table's background flush.
fn lower_bound(r: &Run, cell: String) -> String {
    if r.system == System::ChBuffer && cell != "–" {
        format!("≥ {cell}")
    } else {
        cell
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        (Some(_), Some(_)) => "∞".into(),
        _ => "–".into(),
    }
}

fn find(runs: &[Run], s: System, c: usize, events: usize) -> Option<&Run> {
    runs.iter()
        .find(|r| r.system == s && r.concurrency == c && r.events == events && r.load.is_some())
}

fn stored_cell(r: &Run) -> String {
    match (r.stored_ok(), r.stored, r.acked_in_all()) {
        (None, _, _) => "n/a".into(),
        (Some(true), Some(s), _) => match &r.exit {
            Some(e) => format!("yes ({}; exit {e})", thousands(s as f64)),
            None => format!("yes ({})", thousands(s as f64)),
        },
        (Some(false), Some(s), Some(a)) => {
            let exit = r
                .exit
                .as_ref()
                .map(|e| format!("; exit {e}"))
                .unwrap_or_default();
            format!(
                "**NO** ({} stored, {} acked{exit})",
                thousands(s as f64),
                thousands(a as f64)
            )
        }
        _ => "**NO** (not counted)".into(),
    }
}

/// One line for the progress log on stderr.
pub fn progress_line(r: &Run) -> String {
    let head = format!(
        "{} c={} events={}",
        r.system.name(),
        r.concurrency,
        r.events
    );
    match (&r.load, &r.error) {
        (Some(l), err) => format!(
            "{head}: {} req/s, {} events/s, p99 {} ms, non-2xx {}, errors {}, stored=acked {}{}",
            thousands(l.req_per_sec()),
            thousands(r.events_per_sec().unwrap_or(0.0)),
            ms(l.p99_ms),
            l.non_2xx,
            l.errors,
            stored_cell(r),
            err.as_ref()
                .map(|e| format!(" — error: {e}"))
                .unwrap_or_default()
        ),
        (None, Some(e)) => format!("{head}: FAILED: {e}"),
        (None, None) => format!("{head}: no result"),
    }
}

/// The report and whether every target check that could be evaluated passed.
pub fn markdown(meta: &Meta, runs: &[Run]) -> (String, bool) {
    let mut s = String::new();
    let _ = writeln!(s, "# event-ingest load benchmark\n");
    let bodies: Vec<String> = meta
        .bodies
        .iter()
        .map(|(n, a, nd)| format!("{n} events = {a} B JSON array / {nd} B NDJSON"))
        .collect();
    let _ = writeln!(
        s,
        "{} s per run, oha (`{}`) with keep-alive, `-w` (requests in flight at the deadline are \
         awaited, so the 2xx count is exactly what was acknowledged); {} cores shared by oha, the \
         server and ClickHouse {}; bodies: {}. Whole run: {:.0} s.\n",
        meta.duration.as_secs(),
        meta.oha_version,
        meta.cores,
        meta.clickhouse_version,
        bodies.join(", "),
        meta.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        s,
        "- **event-ingest**: release binary, `BUFFER_MODE=double`, `DURABILITY={}`, defaults \
         otherwise, fresh process and table per run; stopped with SIGTERM (exit 0 = nothing \
         accepted was lost), then `count()` of its table.\n\
         - **event-ingest-disk**: the same with `DURABILITY=disk` (every request's record \
         synced to a spool under the output folder before its `200`).\n\
         - **parse-only**: a minimal actix-web server (`parse-only`, built with the driver) that \
         reads each body into plain `serde_json` structs with owned strings and answers `200`: \
         what a straightforward service spends only parsing. The pipeline's CPU (service + \
         ClickHouse) is compared with it below.\n\
         - **http-only**: the parse-only server with `--no-parse`: each body read whole and \
         answered with the same `200`, not parsed. What answering these requests costs on this \
         machine, the floor under every server here.\n\
         - **bare-parse**: same binary, `BUFFER_MODE=discard` (parse + validate, store nothing): \
         the HTTP ceiling.\n\
         - **ch-direct** / **ch-buffer**: the same events as NDJSON POSTed to ClickHouse's HTTP \
         interface (`INSERT … FORMAT JSONEachRow`), into the MergeTree table, or into a \
         `Buffer(…, 16, 10, 100, 10000, 1000000, 10000000, 100000000)` table in front of it \
         (dropped after the run, which flushes it, before counting). Their table has the same \
         columns as event-ingest's but `ip String DEFAULT ''` (no peer address to store) and \
         `server_time DEFAULT now()`; the bodies carry `server_time` themselves (stamped when \
         the body file is written), because 18.16's `JSONEachRow` fills omitted columns with \
         zeros, not with their `DEFAULT`.\n\
         - RSS: the server's VmRSS at the end of the load (peak VmHWM in brackets). inserts: \
         the server's `counters.inserts` once its buffer is empty. acked = 2xx × events/body.\n\
         - drain s: from the end of the load until every acknowledged event is in the MergeTree \
         table (event-ingest: last flush and exit after SIGTERM; ch-buffer: the flush on DROP; \
         ch-direct: 0, an acknowledged insert is committed). Work a Buffer table defers lands \
         here, outside the measured events/s.\n\
         - non-2xx: event-ingest answers 503 when its buffer holds `BUFFER_MAX_BYTES` and no room \
         came within `BUFFER_FULL_WAIT_MS` (ClickHouse writes slower than requests arrive: \
         back-pressure, a request waits for room first; nothing stored from a refused one); \
         ClickHouse answers 500 e.g. for `Too many parts` (code 252) under many small inserts.\n\
         - CPU, in µs per event (oha's own CPU is in none of them): **svc** = user + system CPU \
         time of the server process (all threads, flusher included; `/proc/<pid>/stat`) from the \
         start of the load until its buffer is empty (bare-parse: until the load ends), ÷ events \
         acknowledged. **CH** = `UserTimeMicroseconds + SystemTimeMicroseconds` of the run's \
         INSERT queries in `system.query_log` (after `SYSTEM FLUSH LOGS`), ÷ the rows they \
         wrote; for ch-buffer (marked ≥) only the inserts into the Buffer table, its background \
         flush is no query. **sum** = svc + CH for event-ingest, svc alone for bare-parse (stores \
         nothing), CH alone for ch-direct/ch-buffer (no gateway). **CH server** (with \
         `--clickhouse-pid`) = the whole ClickHouse process's CPU (`/proc/<pid>/stat`) from the \
         start of the load until its merges have settled after the last row was stored (the \
         window opens and closes with `system.merges` empty), ÷ the rows stored: CH plus what \
         it leaves out, the merges of the parts the inserts made and a Buffer table's \
         flushes.\n",
        meta.durability
    );

    let _ = writeln!(
        s,
        "| system | conc | events/req | req/s | events/s | svc CPU µs/event | CH CPU µs/stored event | sum µs/event | CH server µs/stored event | p50 ms | p99 ms | max ms | non-2xx | errors | RSS MB | inserts | drain s | stored = acked |"
    );
    let _ = writeln!(
        s,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    );
    for r in runs {
        match &r.load {
            Some(l) => {
                let rss = r
                    .memory
                    .map(|(rss, hwm)| {
                        format!(
                            "{:.1} ({:.1})",
                            rss as f64 / 1048576.0,
                            hwm as f64 / 1048576.0
                        )
                    })
                    .unwrap_or_else(|| "–".into());
                let mut non_2xx = l.non_2xx.to_string();
                if l.non_2xx > 0 {
                    let codes: Vec<String> = l
                        .status_codes
                        .iter()
                        .filter(|(c, _)| !c.starts_with('2'))
                        .map(|(c, n)| format!("{n}×{c}"))
                        .collect();
                    non_2xx = format!("{} ({})", l.non_2xx, codes.join(", "));
                }
                let mut stored = stored_cell(r);
                if let Some(e) = &r.error {
                    stored = format!("{stored}; error: {}", e.replace('|', "/"));
                }
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.system.name(),
                    r.concurrency,
                    r.events,
                    thousands(l.req_per_sec()),
                    thousands(r.events_per_sec().unwrap_or(0.0)),
                    us(r.service_us_per_event()),
                    lower_bound(r, us(r.clickhouse_us_per_event())),
                    lower_bound(r, us(r.total_us_per_event())),
                    us(r.clickhouse_process_us_per_event()),
                    ms(l.p50_ms),
                    ms(l.p99_ms),
                    ms(l.max_ms),
                    non_2xx,
                    l.errors,
                    rss,
                    r.inserts.map_or("–".into(), |i| thousands(i as f64)),
                    r.drain_secs.map_or("–".into(), |d| format!("{d:.1}")),
                    stored
                );
            }
            None => {
                let e = r
                    .error
                    .as_deref()
                    .unwrap_or("no result")
                    .replace(['|', '\n'], " ");
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | FAILED: {e} | | | | | | | | | | | | | | |",
                    r.system.name(),
                    r.concurrency,
                    r.events
                );
            }
        }
    }
    let error_kinds: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let l = r.load.as_ref()?;
            (!l.error_kinds.is_empty()).then(|| {
                format!(
                    "{} c={} events={}: {}",
                    r.system.name(),
                    r.concurrency,
                    r.events,
                    l.error_kinds.join("; ")
                )
            })
        })
        .collect();
    if !error_kinds.is_empty() {
        let _ = writeln!(s, "\nErrors (no response): {}", error_kinds.join(" · "));
    }

    // Ratios of event-ingest to each alternative.
    let _ = writeln!(
        s,
        "\n## event-ingest relative to the alternatives\n\n\
         | conc | events/req | events/s ÷ bare-parse | ÷ ch-buffer | ÷ ch-direct | req/s ÷ bare-parse | p99 ms: event-ingest / bare-parse / ch-buffer / ch-direct |\n\
         |---:|---:|---:|---:|---:|---:|---|"
    );
    let mut keys: Vec<(usize, usize)> = runs.iter().map(|r| (r.events, r.concurrency)).collect();
    keys.dedup();
    keys.sort_unstable();
    keys.dedup();
    for (events, c) in keys {
        let Some(ei) = find(runs, System::EventIngest, c, events) else {
            continue;
        };
        let eps = |sys| find(runs, sys, c, events).and_then(Run::events_per_sec);
        let p99 = |sys| {
            find(runs, sys, c, events)
                .and_then(|r| r.load.as_ref())
                .map_or("–".into(), |l| ms(l.p99_ms))
        };
        let rps = |sys| {
            find(runs, sys, c, events)
                .and_then(|r| r.load.as_ref())
                .map(|l| l.req_per_sec())
        };
        let _ = writeln!(
            s,
            "| {c} | {events} | {} | {} | {} | {} | {} / {} / {} / {} |",
            ratio(ei.events_per_sec(), eps(System::BareParse)),
            ratio(ei.events_per_sec(), eps(System::ChBuffer)),
            ratio(ei.events_per_sec(), eps(System::ChDirect)),
            ratio(rps(System::EventIngest), rps(System::BareParse)),
            p99(System::EventIngest),
            p99(System::BareParse),
            p99(System::ChBuffer),
            p99(System::ChDirect),
        );
    }

    pipeline_section(&mut s, runs);

    let (checks, all_pass) = checks(runs);
    let _ = writeln!(s, "\n## Targets\n");
    for c in checks {
        let _ = writeln!(s, "- {c}");
    }
    (s, all_pass)
}

/// The whole pipeline (service + ClickHouse) against the parse-only server, per body and
/// concurrency: CPU per event and throughput, for each durability measured.
fn pipeline_section(s: &mut String, runs: &[Run]) {
    let mut keys: Vec<(usize, usize)> = runs
        .iter()
        .filter(|r| r.system == System::ParseOnly)
        .map(|r| (r.events, r.concurrency))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n## The pipeline against the parse-only server\n\n\
         pipeline = event-ingest's CPU per acknowledged event + ClickHouse's per stored event; \
         ratio = pipeline ÷ parse-only's CPU per event (at or below 1.0 is the goal); events/s \
         ratio = event-ingest's ÷ parse-only's. http-only = the same server answering the same \
         requests without parsing them: what HTTP alone costs here; floor = http-only + \
         ClickHouse's share, the least any server that answers these requests and stores their \
         rows could spend, and floor ratio = floor ÷ parse-only (a ratio below it is out of \
         reach whatever the reading costs); above floor = the service's own work per event \
         (reading, encoding, buffering, flushing). CH server µs = the whole ClickHouse \
         process's CPU per stored row, the merges of the parts included (not in the ratios: \
         parse-only stores nothing).\n\n\
         | conc | events/req | parse-only µs/event | http-only µs | system | svc µs | CH µs | pipeline µs | CPU ratio | floor ratio | above floor µs | events/s ratio | p99 ms | p99 ms at half load (parse-only's) | CH server µs |\n\
         |---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (events, c) in keys {
        let Some(po) = find(runs, System::ParseOnly, c, events) else {
            continue;
        };
        let http = find(runs, System::HttpOnly, c, events).and_then(Run::service_us_per_event);
        for sys in [System::EventIngest, System::EventIngestDisk] {
            let Some(r) = find(runs, sys, c, events) else {
                continue;
            };
            let floor = http.zip(r.clickhouse_us_per_event()).map(|(h, ch)| h + ch);
            let above = r.total_us_per_event().zip(floor).map(|(t, f)| t - f);
            let _ = writeln!(
                s,
                "| {c} | {events} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} |",
                us(po.service_us_per_event()),
                us(http),
                sys.name(),
                us(r.service_us_per_event()),
                us(r.clickhouse_us_per_event()),
                us(r.total_us_per_event()),
                ratio(r.total_us_per_event(), po.service_us_per_event()),
                ratio(floor, po.service_us_per_event()),
                us(above),
                ratio(r.events_per_sec(), po.events_per_sec()),
                r.load.as_ref().map_or("–".into(), |l| ms(l.p99_ms)),
                half_p99(r),
                half_p99(po),
                us(r.clickhouse_process_us_per_event()),
            );
        }
    }
}

/// p99 latency of the run's half load, in ms.
fn half_p99(r: &Run) -> String {
    r.half_load.as_ref().map_or("–".into(), |l| ms(l.p99_ms))
}

/// The target checks, each `PASS`, `FAIL` or `n/a` with its figures.
fn checks(runs: &[Run]) -> (Vec<String>, bool) {
    let mut out = Vec::new();
    let mut all_pass = true;
    let mut check = |label: &str, value: Option<(bool, String)>| match value {
        Some((pass, detail)) => {
            all_pass &= pass;
            out.push(format!(
                "**{}** {label}: {detail}",
                if pass { "PASS" } else { "FAIL" }
            ));
        }
        None => out.push(format!("n/a {label}: not measured in this run")),
    };
    let eps = |s, c| find(runs, s, c, 30).and_then(Run::events_per_sec);
    let rps = |s, c| {
        find(runs, s, c, 30)
            .and_then(|r| r.load.as_ref())
            .map(|l| l.req_per_sec())
    };
    let ge = |a: Option<f64>, b: Option<f64>, k: f64, unit: &str| {
        let (a, b) = (a?, b?);
        Some((
            a >= k * b,
            format!(
                "{} vs {k} × {} = {} {unit} ({})",
                thousands(a),
                thousands(b),
                thousands(k * b),
                ratio(Some(a), Some(b))
            ),
        ))
    };
    let ei32 = eps(System::EventIngest, 32);
    check(
        "(a) 30-event bodies, c=32: event-ingest events/s ≥ 3× ch-buffer",
        ge(ei32, eps(System::ChBuffer, 32), 3.0, "events/s"),
    );
    check(
        "(a) 30-event bodies, c=32: event-ingest events/s ≥ 25× ch-direct",
        ge(ei32, eps(System::ChDirect, 32), 25.0, "events/s"),
    );
    check(
        "(a) 30-event bodies, c=32: event-ingest events/s ≥ 50% of bare-parse",
        ge(ei32, eps(System::BareParse, 32), 0.5, "events/s"),
    );
    check(
        "(b) 30-event bodies, c=1: event-ingest req/s ≥ 70% of bare-parse",
        ge(
            rps(System::EventIngest, 1),
            rps(System::BareParse, 1),
            0.7,
            "req/s",
        ),
    );
    check(
        "(c) 30-event bodies, c=32: event-ingest p99 < 5 ms",
        find(runs, System::EventIngest, 32, 30)
            .and_then(|r| r.load.as_ref())
            .map(|l| (l.p99_ms < 5.0, format!("{} ms", ms(l.p99_ms)))),
    );
    let storing: Vec<&Run> = runs.iter().filter(|r| !r.system.parses_only()).collect();
    let bad: Vec<String> = storing
        .iter()
        .filter(|r| r.stored_ok() != Some(true))
        .map(|r| r.label())
        .collect();
    check(
        "(d) every storing run: rows in ClickHouse = events acknowledged (event-ingest: exit 0 after SIGTERM)",
        (!storing.is_empty()).then(|| {
            (
                bad.is_empty(),
                if bad.is_empty() {
                    format!("{} runs", storing.len())
                } else {
                    format!("mismatch in {}", bad.join(", "))
                },
            )
        }),
    );
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| r.label())
        .collect();
    check(
        "(e) every run completed",
        Some((
            failed.is_empty(),
            if failed.is_empty() {
                format!("{} runs", runs.len())
            } else {
                format!("errors in {}", failed.join(", "))
            },
        )),
    );
    let ei32_run = find(runs, System::EventIngest, 32, 30);
    check(
        "(f) 30-event bodies, c=32: event-ingest's ClickHouse CPU per stored event ≤ 0.45 µs",
        ei32_run
            .and_then(Run::clickhouse_us_per_event)
            .map(|v| (v <= 0.45, format!("{} µs", us(Some(v))))),
    );
    check(
        "(g) 30-event bodies, c=32: event-ingest's service CPU per event ≤ 1.3× bare-parse's",
        ei32_run.and_then(Run::service_us_per_event).and_then(|ei| {
            let bp = find(runs, System::BareParse, 32, 30).and_then(Run::service_us_per_event)?;
            Some((
                ei <= 1.3 * bp,
                format!(
                    "{} vs 1.3 × {} = {} µs ({})",
                    us(Some(ei)),
                    us(Some(bp)),
                    us(Some(1.3 * bp)),
                    ratio(Some(ei), Some(bp))
                ),
            ))
        }),
    );
    let po32 = find(runs, System::ParseOnly, 32, 30);
    check(
        "(h) 30-event bodies, c=32: the pipeline's CPU per event (event-ingest + ClickHouse) ≤ parse-only's",
        ei32_run.and_then(Run::total_us_per_event).and_then(|p| {
            let po = po32.and_then(Run::service_us_per_event)?;
            Some((
                p <= po,
                format!(
                    "{} vs {} µs ({})",
                    us(Some(p)),
                    us(Some(po)),
                    ratio(Some(p), Some(po))
                ),
            ))
        }),
    );
    check(
        "(i) 30-event bodies, c=32: event-ingest events/s ≥ parse-only's",
        ge(ei32, po32.and_then(Run::events_per_sec), 1.0, "events/s"),
    );
    check(
        "(j) 30-event bodies, c=32, half of saturation (--half-load): event-ingest p99 < 2 ms",
        ei32_run.and_then(|r| r.half_load.as_ref()).map(|l| {
            (
                l.p99_ms < 2.0,
                format!(
                    "{} ms at {} req/s",
                    ms(l.p99_ms),
                    thousands(l.req_per_sec())
                ),
            )
        }),
    );
    (out, all_pass)
}

/// CPU chart data: a panel per body size; per system the CPU an event costs in all (as the
/// report's "sum" column), and event-ingest's split into its service and ClickHouse parts.
pub fn cpu_panels(runs: &[Run], event_counts: &[usize]) -> Vec<Panel> {
    type Figure = fn(&Run) -> Option<f64>;
    let series: [(System, &str, usize, Figure); 9] = [
        (
            System::EventIngest,
            "event-ingest: sum",
            0,
            Run::total_us_per_event,
        ),
        (
            System::EventIngest,
            "event-ingest: service",
            4,
            Run::service_us_per_event,
        ),
        (
            System::EventIngest,
            "event-ingest: ClickHouse",
            5,
            Run::clickhouse_us_per_event,
        ),
        (
            System::EventIngestDisk,
            "event-ingest-disk: sum",
            System::EventIngestDisk.color(),
            Run::total_us_per_event,
        ),
        (
            System::ParseOnly,
            "parse-only: service",
            System::ParseOnly.color(),
            Run::service_us_per_event,
        ),
        (
            System::HttpOnly,
            "http-only: service",
            System::HttpOnly.color(),
            Run::service_us_per_event,
        ),
        (
            System::BareParse,
            "bare-parse: service",
            1,
            Run::service_us_per_event,
        ),
        (
            System::ChBuffer,
            "ch-buffer: ClickHouse (≥)",
            2,
            Run::clickhouse_us_per_event,
        ),
        (
            System::ChDirect,
            "ch-direct: ClickHouse",
            3,
            Run::clickhouse_us_per_event,
        ),
    ];
    event_counts
        .iter()
        .map(|&events| {
            let lines = series
                .iter()
                .filter_map(|&(sys, name, color, figure)| {
                    let points: Vec<(f64, f64)> = runs
                        .iter()
                        .filter(|r| r.system == sys && r.events == events)
                        .filter_map(|r| Some((r.concurrency as f64, figure(r)?)))
                        .collect();
                    (!points.is_empty()).then(|| Line {
                        system: name.to_string(),
                        color,
                        points,
                    })
                })
                .collect();
            Panel {
                title: format!("{events} events per request"),
                lines,
            }
        })
        .collect()
}

/// Chart data: a panel per body size, a line per system.
pub fn panels(runs: &[Run], event_counts: &[usize]) -> Vec<Panel> {
    event_counts
        .iter()
        .map(|&events| {
            let lines = System::ALL
                .iter()
                .filter_map(|&sys| {
                    let points: Vec<(f64, f64)> = runs
                        .iter()
                        .filter(|r| r.system == sys && r.events == events)
                        .filter_map(|r| Some((r.concurrency as f64, r.events_per_sec()?)))
                        .collect();
                    (!points.is_empty()).then(|| Line {
                        system: sys.name().to_string(),
                        color: sys.color(),
                        points,
                    })
                })
                .collect();
            Panel {
                title: format!("{events} events per request"),
                lines,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oha::LoadResult;

    fn run(system: System, c: usize, ok: u64, p99: f64, stored: Option<u64>) -> Run {
        let mut r = Run::new(system, c, 30);
        r.load = Some(LoadResult {
            secs: 1.0,
            responses: ok,
            ok,
            p99_ms: p99,
            ..LoadResult::default()
        });
        r.stored = stored;
        if system == System::EventIngest {
            r.exit = Some("0".into());
        }
        r
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn checks_pass_and_fail() {
        let mut runs = vec![
            run(System::EventIngest, 32, 10_000, 3.0, Some(300_000)),
            run(System::BareParse, 32, 15_000, 2.0, None),
            run(System::ChBuffer, 32, 3_000, 9.0, Some(90_000)),
            run(System::ChDirect, 32, 500, 50.0, Some(14_000)),
        ];
        // event-ingest: 0.6 s / 300,000 events = 2 µs service, 0.4 µs ClickHouse;
        // bare-parse: 0.6 s / 450,000 events = 1.333 µs; ch-buffer: 1.5 µs.
        runs[0].service_cpu_secs = Some(0.6);
        runs[0].clickhouse_cpu = Some((120_000, 300_000));
        runs[1].service_cpu_secs = Some(0.6);
        runs[2].clickhouse_cpu = Some((135_000, 90_000));
        // The whole server, its Buffer table's flushes and merges included: 3 µs per row.
        runs[2].clickhouse_process_cpu_secs = Some(0.27);
        let (md, all) = markdown(
            &Meta {
                clickhouse_version: "18.16.1".into(),
                oha_version: "oha 1.16.0".into(),
                duration: Duration::from_secs(1),
                cores: 2,
                bodies: vec![(30, 6600, 6700)],
                elapsed: Duration::from_secs(4),
                durability: "memory".into(),
            },
            &runs,
        );
        assert!(!all);
        assert!(
            md.contains("**PASS** (a) 30-event bodies, c=32: event-ingest events/s ≥ 3× ch-buffer")
        );
        assert!(
            md.contains(
                "**FAIL** (a) 30-event bodies, c=32: event-ingest events/s ≥ 25× ch-direct"
            )
        );
        assert!(md.contains("n/a (b)"));
        assert!(md.contains("**FAIL** (d)"), "{md}");
        assert!(md.contains("| 32 | 30 | 0.67× | 3.33× | 20.00× |"), "{md}");
        assert!(
            md.contains("| event-ingest | 32 | 30 | 10,000 | 300,000 | 2.00 | 0.400 | 2.40 |"),
            "{md}"
        );
        assert!(md.contains("| bare-parse | 32 | 30 | 15,000 | 450,000 | 1.33 | – | 1.33 |"));
        assert!(
            md.contains("| ch-buffer | 32 | 30 | 3,000 | 90,000 | – | ≥ 1.50 | ≥ 1.50 | 3.00 |"),
            "{md}"
        );
        assert!(md.contains("| 1.33 | – | 1.33 | – |"), "{md}");
        assert!(md.contains("**PASS** (f) 30-event bodies, c=32: event-ingest's ClickHouse CPU per stored event ≤ 0.45 µs: 0.400 µs"), "{md}");
        assert!(md.contains("**FAIL** (g) 30-event bodies, c=32: event-ingest's service CPU per event ≤ 1.3× bare-parse's: 2.00 vs 1.3 × 1.33 = 1.73 µs (1.50×)"), "{md}");
    }
}
