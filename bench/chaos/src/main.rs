//! `make chaos`: fault injection against the real service and a real ClickHouse.
//!
//! Client threads post batches (some with a poison event ClickHouse refuses) while the
//! driver kills the service (`kill -9`), stops it (SIGTERM), takes its ClickHouse away
//! for 10–20 s, or leaves it alone, at seeded random times. Afterwards every acknowledged
//! (200) event must be in ClickHouse, or — poison — in the quarantine. The Markdown report
//! goes to stdout and `target/chaos/report.md`; the exit status is 1 when an acknowledged
//! event was lost or the service answered a 5xx other than 503.
//!
//! The run uses its own ClickHouse (ports 18123/19000, data in `target/chaos/clickhouse`,
//! emptied at the start of each run and kept afterwards), a fresh database and a fresh
//! spool folder.

mod clickhouse;
mod faults;
mod load;
mod report;
mod rng;
mod service;
mod verify;
mod volume;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bench_support::http::ClickHouse;
use clap::Parser;

use crate::clickhouse::OwnClickHouse;
use crate::faults::FaultLog;
use crate::load::{LoadConfig, Tally};
use crate::rng::Rng;
use crate::service::{Service, ServiceConfig};

#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "Fault injection for event-ingest: kill -9, SIGTERM and ClickHouse outages under load, then a no-loss check"
)]
struct Args {
    /// Minutes of faults under load.
    #[arg(long, env = "MINUTES", default_value_t = 5.0)]
    minutes: f64,
    /// Client threads, each with its own device id.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 20)]
    batch: usize,
    /// One batch in this many carries one poison event.
    #[arg(long, default_value_t = 50)]
    poison_one_in: u64,
    /// Pause of each client between requests, in milliseconds (0: as fast as it answers,
    /// some 30k events/s, which makes the backlog after an outage take minutes to drain).
    #[arg(long, default_value_t = 10)]
    pause_ms: u64,
    /// PRNG seed [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// The event-ingest binary.
    #[arg(long, default_value = "target/release/event-ingest")]
    service_bin: PathBuf,
    /// `BUFFER_MAX_BYTES` for the service (small, so the buffer spills during outages).
    #[arg(long, default_value_t = 4 << 20)]
    buffer_max_bytes: u64,
    /// The script that starts and stops ClickHouse.
    #[arg(long, default_value = "scripts/clickhouse.sh")]
    clickhouse_script: PathBuf,
    /// HTTP port of the run's own ClickHouse.
    #[arg(long, default_value_t = 18123)]
    clickhouse_port: u16,
    /// Native TCP port of the run's own ClickHouse.
    #[arg(long, default_value_t = 19000)]
    clickhouse_tcp_port: u16,
    /// Size of the tmpfs mounted as the spool's volume, in MiB, for the full-disk fault
    /// (0: no volume of its own, no full-disk fault; needs root).
    #[arg(long, default_value_t = 64)]
    spool_volume_mb: u64,
    /// Logs, spools, ClickHouse's data and the report go here.
    #[arg(long, default_value = "target/chaos")]
    out_dir: PathBuf,
}

/// When the driver started, for log timestamps.
static START: OnceLock<Instant> = OnceLock::new();

/// Seconds since 1970.
pub fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Prints `HH:MM:SS (+s) msg` (UTC wall clock and seconds since the start).
pub fn log(msg: &str) {
    let now = unix_secs() % 86_400;
    let since = START.get_or_init(Instant::now).elapsed().as_secs_f64();
    println!(
        "{:02}:{:02}:{:02} (+{since:6.1}s) {msg}",
        now / 3600,
        now / 60 % 60,
        now % 60
    );
}

fn main() -> ExitCode {
    START.get_or_init(Instant::now);
    let args = Args::parse();
    let out_dir =
        match std::fs::create_dir_all(&args.out_dir).and_then(|()| args.out_dir.canonicalize()) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("chaos: {}: {e}", args.out_dir.display());
                return ExitCode::from(2);
            }
        };
    let ch = OwnClickHouse {
        script: args.clickhouse_script.clone(),
        http_port: args.clickhouse_port,
        tcp_port: args.clickhouse_tcp_port,
        data_dir: out_dir.join("clickhouse"),
    };
    let result = run(&args, &out_dir, &ch);
    log("stopping the run's ClickHouse");
    if let Err(e) = ch.stop() {
        eprintln!("chaos: stopping ClickHouse: {e}");
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// The whole run; `Ok(passed)`.
fn run(args: &Args, out_dir: &Path, ch: &OwnClickHouse) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut rng = Rng::new(seed);
    let stamp = unix_secs();
    let database = format!("chaos_{stamp}");
    let spool_dir = out_dir.join(format!("spool-{stamp}"));
    let log_path = out_dir.join("service.log");
    std::fs::write(&log_path, "").map_err(|e| format!("{}: {e}", log_path.display()))?;
    log(&format!(
        "seed {seed}; {} min; {} clients × {} events; database {database}; spool {}",
        args.minutes,
        args.clients,
        args.batch,
        spool_dir.display()
    ));

    ch.reset()?;
    ch.ensure()?;
    remove_old_spools(out_dir, &spool_dir);
    let volume = match args.spool_volume_mb {
        0 => None,
        mb => match volume::SpoolVolume::mount(&spool_dir, mb) {
            Ok(v) => {
                log(&format!(
                    "spool on its own {mb} MiB tmpfs (full-disk fault on)"
                ));
                Some(v)
            }
            Err(e) => {
                log(&format!(
                    "no tmpfs for the spool ({e}): full-disk fault off"
                ));
                None
            }
        },
    };
    let http = ch.http();
    let mut faults = FaultLog::default();
    let mut service = Service::new(ServiceConfig {
        bin: args.service_bin.clone(),
        port: free_port()?,
        clickhouse_port: args.clickhouse_port,
        database: database.clone(),
        spool_dir: spool_dir.clone(),
        buffer_max_bytes: args.buffer_max_bytes,
        log: log_path,
    });
    faults::start_service(&mut service, &mut faults)?;
    add_poison_column(&http, &database)?;

    // Load and faults.
    let stop = Arc::new(AtomicBool::new(false));
    let load_cfg = LoadConfig {
        url: format!("{}/v1/events", service.base_url()),
        batch: args.batch.max(1),
        poison_one_in: args.poison_one_in.max(1),
        pause: Duration::from_millis(args.pause_ms),
    };
    let load_start = Instant::now();
    let handles = load::spawn(args.clients.max(1), &load_cfg, seed, &stop);
    let deadline = load_start + Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    let looped = faults::run(
        deadline,
        &mut rng,
        &mut service,
        ch,
        volume.as_ref(),
        &mut faults,
    );
    stop.store(true, Ordering::Relaxed);
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.join().map_err(|_| "a client thread panicked")?);
    }
    let load_secs = load_start.elapsed().as_secs_f64();
    looped?;
    log(&format!("load stopped after {load_secs:.0} s"));

    // Both up, then let the backlog drain.
    ch.ensure()?;
    if let Some(status) = service.try_wait() {
        let msg = format!("service exited on its own ({})", service::describe(&status));
        log(&msg);
        faults.unexpected.push(msg);
    }
    if service.pid().is_none() {
        faults::start_service(&mut service, &mut faults)?;
    }
    let drain = drain(&service, &http, &database);
    log(&format!(
        "drain: {:.1} s{}",
        drain.0,
        if drain.1 { "" } else { " (did not settle)" }
    ));
    let final_exit = service
        .terminate(faults::TERM_TIMEOUT)
        .unwrap_or_else(|e| format!("error: {e}"));
    log(&format!("service SIGTERM at the end: exit {final_exit}"));

    let verdict = verify::verify(&http, &database, &clients, &spool_dir)?;
    let mut tally = Tally::default();
    for c in &clients {
        tally.merge(&c.tally);
    }
    let mut failures = Vec::new();
    if verdict.lost > 0 {
        failures.push(format!("{} acknowledged events lost", verdict.lost));
    }
    if tally.other_5xx() > 0 {
        failures.push(format!("{} 5xx answers other than 503", tally.other_5xx()));
    }
    let warnings = warnings(&verdict, &tally, &faults, &final_exit, drain.1);
    let spool = spool_dir.display().to_string();
    let text = report::render(&report::Report {
        seed,
        minutes: args.minutes,
        load_secs,
        clients: args.clients,
        batch: args.batch,
        pause_ms: args.pause_ms,
        database: &database,
        spool_dir: &spool,
        faults: &faults,
        tally: &tally,
        drain,
        final_exit: &final_exit,
        verdict: &verdict,
        failures: &failures,
        warnings: &warnings,
    });
    println!("\n{text}");
    let report_path = out_dir.join("report.md");
    std::fs::write(&report_path, &text)
        .map_err(|e| format!("write {}: {e}", report_path.display()))?;
    log(&format!("report written to {}", report_path.display()));
    Ok(failures.is_empty())
}

/// Anomalies that do not fail the run but deserve a look.
fn warnings(
    v: &verify::Verdict,
    t: &Tally,
    f: &FaultLog,
    final_exit: &str,
    settled: bool,
) -> Vec<String> {
    let mut w = Vec::new();
    if v.poison_lost > 0 {
        w.push(format!(
            "{} acknowledged poison events neither quarantined nor stored",
            v.poison_lost
        ));
    }
    if v.poison_stored > 0 {
        w.push(format!("{} poison events stored", v.poison_stored));
    }
    if v.duplicated > 0 {
        w.push(format!("{} duplicated rows", v.duplicated));
    }
    let bad_exits = f
        .term_exits
        .iter()
        .map(String::as_str)
        .chain([final_exit])
        .filter(|e| *e != "0")
        .count();
    if bad_exits > 0 {
        w.push(format!("{bad_exits} SIGTERM exits other than 0"));
    }
    if !f.unexpected.is_empty() {
        w.push(format!(
            "{} unexpected exits or failed starts",
            f.unexpected.len()
        ));
    }
    if t.partial_rejects > 0 {
        w.push(format!(
            "{} answers rejected some of our (valid) events",
            t.partial_rejects
        ));
    }
    if !settled {
        w.push(
            "the final drain did not settle (no progress for 60 s, or 15 min): \
             lost events may still be in the spool"
                .into(),
        );
    }
    w
}

/// Waits for the table, then adds a column computed from `param_str` so that ClickHouse
/// refuses any row whose `param_str` is not a number (code 6): the poison events.
fn add_poison_column(http: &ClickHouse, database: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let exists = http.query(&format!("EXISTS TABLE {database}.events"))?;
        if exists.trim() == "1" {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!("{database}.events was not created within 60 s"));
        }
        sleep(Duration::from_millis(200));
    }
    http.query(&format!(
        "ALTER TABLE {database}.events ADD COLUMN param_num UInt8 MATERIALIZED toUInt8(param_str)"
    ))?;
    log("added param_num UInt8 MATERIALIZED toUInt8(param_str): poison rows now fail");
    http.query(&format!(
        "ALTER TABLE {database}.events ADD COLUMN param_short String \
         MATERIALIZED toString(toFixedString(param_str, 2))"
    ))?;
    log(
        "added param_short MATERIALIZED toFixedString(param_str, 2): half the poison rows fail \
         with code 131, which does not say bad data",
    );
    Ok(())
}

/// Polls until the service holds nothing (`buffered_events` and `spool.bytes` 0 in its
/// health) and the stored count has not changed for 10 s. Gives up after 60 s without
/// progress or 15 min in all. Returns the seconds taken and whether it settled.
fn drain(service: &Service, http: &ClickHouse, database: &str) -> (f64, bool) {
    let started = Instant::now();
    let table = format!("{database}.events");
    let mut last: Option<(u64, Instant)> = None;
    let mut last_note = Instant::now();
    while started.elapsed() < Duration::from_secs(15 * 60) {
        let health = service.health();
        let pending = health.as_ref().map(|h| {
            h["buffered_events"].as_u64().unwrap_or(0) + h["spool"]["bytes"].as_u64().unwrap_or(0)
        });
        if let Ok(count) = http.count(&table) {
            match last {
                Some((n, since)) if n == count => {
                    let still = since.elapsed();
                    if pending == Some(0) && still >= Duration::from_secs(10) {
                        return (started.elapsed().as_secs_f64(), true);
                    }
                    if still >= Duration::from_secs(60) {
                        break;
                    }
                }
                _ => last = Some((count, Instant::now())),
            }
            if last_note.elapsed() >= Duration::from_secs(10) {
                last_note = Instant::now();
                let spool = health
                    .as_ref()
                    .and_then(|h| h["spool"]["bytes"].as_u64())
                    .map_or("?".to_string(), |b| b.to_string());
                log(&format!(
                    "draining: {count} rows stored, spool {spool} bytes"
                ));
            }
        }
        sleep(Duration::from_millis(500));
    }
    (started.elapsed().as_secs_f64(), false)
}

/// Removes the spool folders of earlier runs (`spool-*` other than `keep`).
fn remove_old_spools(out_dir: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(out_dir) else {
        return;
    };
    for path in entries.flatten().map(|e| e.path()) {
        let old = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("spool-"));
        if old && path != keep && std::fs::remove_dir_all(&path).is_ok() {
            log(&format!(
                "removed {} (an earlier run's spool)",
                path.display()
            ));
        }
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}
