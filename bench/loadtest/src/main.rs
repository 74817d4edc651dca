//! `make loadtest`: event-ingest against its alternatives under the same load.
//!
//! For each system × concurrency × body size, `oha` POSTs the same generated events for a
//! fixed time with keep-alive; the driver then checks that what was acknowledged is what
//! ClickHouse holds, and prints a Markdown report (also `target/loadtest/report.md`) and two
//! charts (`target/loadtest/events_per_sec.png` and `cpu_per_event.png`, or `.svg` without
//! any font file). Per run it also reads the CPU an event costs: the server process's from
//! `/proc`, ClickHouse's from `system.query_log` (its inserts) and, with `--clickhouse-pid`,
//! from the server's `/proc` (merges included).
//!
//! Systems:
//! - `event-ingest`: the release binary, `BUFFER_MODE=double`, fresh per run.
//! - `bare-parse`: the same binary with `BUFFER_MODE=discard` (parse and validate, store
//!   nothing): the HTTP ceiling.
//! - `ch-direct`: `INSERT ... FORMAT JSONEachRow` straight to ClickHouse's HTTP interface.
//! - `ch-buffer`: the same into a `Buffer` table in front of the MergeTree table.

mod body;
mod chart;
mod oha;
mod proc;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bench_support::http::{self, ClickHouse};
use clap::{Parser, ValueEnum};

use crate::body::Bodies;
use crate::oha::LoadResult;

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum System {
    /// The release binary in `double` (buffered) mode, `DURABILITY` from `--durability`.
    EventIngest,
    /// The same with `DURABILITY=disk`: each request synced to the spool before its `200`.
    EventIngestDisk,
    /// A parse-only actix-web server (`parse-only`): the body read into plain `serde_json`
    /// structs, `200`, nothing kept. What the whole pipeline's CPU is measured against.
    ParseOnly,
    /// The parse-only server with `--no-parse`: the body read whole and answered `200`, not
    /// parsed. What answering HTTP alone costs on this machine: the floor under any server.
    HttpOnly,
    /// The same binary with `BUFFER_MODE=discard`: parse and validate only.
    BareParse,
    /// ClickHouse HTTP, `INSERT ... FORMAT JSONEachRow` into a `Buffer` table.
    ChBuffer,
    /// ClickHouse HTTP, `INSERT ... FORMAT JSONEachRow` into the MergeTree table.
    ChDirect,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::EventIngest => "event-ingest",
            System::EventIngestDisk => "event-ingest-disk",
            System::ParseOnly => "parse-only",
            System::HttpOnly => "http-only",
            System::BareParse => "bare-parse",
            System::ChBuffer => "ch-buffer",
            System::ChDirect => "ch-direct",
        }
    }
    /// event-ingest, in either durability.
    pub fn is_event_ingest(self) -> bool {
        matches!(self, System::EventIngest | System::EventIngestDisk)
    }
    /// A server that only parses (stores nothing).
    pub fn parses_only(self) -> bool {
        matches!(
            self,
            System::BareParse | System::ParseOnly | System::HttpOnly
        )
    }
    /// Its colour in the charts (the CPU chart's service/ClickHouse split uses 4 and 5).
    pub fn color(self) -> usize {
        match self {
            System::EventIngest => 0,
            System::BareParse => 1,
            System::ChBuffer => 2,
            System::ChDirect => 3,
            System::EventIngestDisk => 6,
            System::ParseOnly => 7,
            System::HttpOnly => 8,
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            System::EventIngest => "ei",
            System::EventIngestDisk => "ed",
            System::ParseOnly => "po",
            System::HttpOnly => "ho",
            System::BareParse => "bp",
            System::ChBuffer => "cb",
            System::ChDirect => "cd",
        }
    }
    pub const ALL: [System; 7] = [
        System::EventIngest,
        System::EventIngestDisk,
        System::ParseOnly,
        System::HttpOnly,
        System::BareParse,
        System::ChBuffer,
        System::ChDirect,
    ];
}

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    about = "Load benchmark: event-ingest vs parse-only, ClickHouse Buffer-table and direct inserts"
)]
pub struct Args {
    /// Seconds of load per run [default: 10; 3 with --quick].
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Concurrencies (connections), comma-separated [default: 1,8,32,128; 1,32 with --quick].
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Events per request body, comma-separated [default: 30,1000; 30 with --quick].
    #[arg(long, value_delimiter = ',')]
    events: Vec<usize>,
    /// Systems to run, comma-separated [default: all].
    #[arg(long, value_delimiter = ',', value_enum)]
    systems: Vec<System>,
    /// Smoke run: 3 s runs, concurrency 1 and 32, 30-event bodies (explicit options win).
    #[arg(long)]
    quick: bool,
    /// ClickHouse HTTP host.
    #[arg(long, env = "CLICKHOUSE_HOST", default_value = "127.0.0.1")]
    clickhouse_host: String,
    /// ClickHouse HTTP port.
    #[arg(long, env = "CLICKHOUSE_PORT", default_value_t = 8123)]
    clickhouse_port: u16,
    /// Database for every run's tables (created if missing).
    #[arg(long, default_value = "loadtest")]
    database: String,
    /// The event-ingest binary.
    #[arg(long, default_value = "target/release/event-ingest")]
    server_bin: PathBuf,
    /// The parse-only server (`cargo build --release -p loadtest` builds it).
    #[arg(long, default_value = "target/release/parse-only")]
    parse_only_bin: PathBuf,
    /// The oha binary.
    #[arg(long, default_value = "oha")]
    oha: PathBuf,
    /// Bodies, logs, oha's JSON, the report and the chart go here.
    #[arg(long, default_value = "target/loadtest")]
    out_dir: PathBuf,
    /// Keep each run's tables afterwards (by default they are dropped once counted).
    #[arg(long)]
    keep_tables: bool,
    /// Exit with status 1 when a target check fails.
    #[arg(long)]
    strict: bool,
    /// event-ingest's `DURABILITY`: `memory` (buffered in the process) or `disk` (synced to
    /// a spool under the output folder before `200`).
    #[arg(long, default_value = "memory", value_parser = ["memory", "disk"])]
    durability: String,
    /// event-ingest serves HTTPS (`TLS_CERT_FILE`/`TLS_KEY_FILE`: `server.crt`/`server.key`
    /// of `--tls-dir`); the load generator connects over TLS, keeping its connections.
    #[arg(long)]
    listener_tls: bool,
    /// event-ingest writes to ClickHouse over HTTPS (`https://` on `--clickhouse-https-port`,
    /// trusting `ca.crt` of `--tls-dir`).
    #[arg(long)]
    clickhouse_tls: bool,
    /// ClickHouse's HTTPS port (`make clickhouse` serves 8443).
    #[arg(long, default_value_t = 8443)]
    clickhouse_https_port: u16,
    /// The test CA and the certificate for `localhost`/`127.0.0.1` that `make clickhouse`
    /// makes (`ca.crt`, `server.crt`, `server.key`).
    #[arg(long, env = "CLICKHOUSE_TLS_DIR")]
    tls_dir: Option<PathBuf>,
    /// Requests carry an API key (`X-Api-Key`): a key of `CONFIG_FILE` without a rate, or
    /// with `--key-rate` events per second (a token bucket per key).
    #[arg(long)]
    api_key: bool,
    /// After each run of event-ingest and parse-only, a second load at half the request
    /// rate the first one reached (`oha -q`, latency-corrected), for the latency a server
    /// gives with room to spare; its events are stored and counted too.
    #[arg(long)]
    half_load: bool,
    /// With `--api-key`: the key's `events_per_second` (set it above the load to measure
    /// the bucket's cost, not its refusals).
    #[arg(long)]
    key_rate: Option<u64>,
    /// The ClickHouse server's process id, on this machine (`scripts/loadtest.sh` passes the
    /// one `scripts/clickhouse.sh` started): each storing run also reads the whole server's
    /// CPU from `/proc`, background merges and a Buffer table's flushes included.
    #[arg(long)]
    clickhouse_pid: Option<u32>,
}

impl Args {
    /// `--tls-dir`, or where `scripts/clickhouse.sh` keeps it.
    fn tls_dir(&self) -> PathBuf {
        self.tls_dir.clone().unwrap_or_else(|| {
            let state = std::env::var_os("XDG_STATE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/state")
                });
            state.join("event-ingest/clickhouse-tls")
        })
    }
}

/// One system × concurrency × body run.
#[derive(Debug, Clone)]
pub struct Run {
    pub system: System,
    pub concurrency: usize,
    pub events: usize,
    pub load: Option<LoadResult>,
    /// With `--half-load`: the second load, at half of `load`'s request rate.
    pub half_load: Option<LoadResult>,
    /// `(VmRSS, VmHWM)` of the server at the end of the load.
    pub memory: Option<(u64, u64)>,
    /// Inserts issued by the server (`counters.inserts`), read before SIGTERM.
    pub inserts: Option<u64>,
    /// Rows in the table afterwards.
    pub stored: Option<u64>,
    /// The server's exit code after SIGTERM.
    pub exit: Option<String>,
    /// Seconds from the end of the load until every acknowledged event was in its table:
    /// event-ingest's last flush and exit, the Buffer table's flush on DROP.
    pub drain_secs: Option<f64>,
    /// CPU seconds (user + system, all threads) the server process used from the start of
    /// the load until its buffer was empty (event-ingest) or the load ended (bare-parse).
    pub service_cpu_secs: Option<f64>,
    /// `(CPU µs, rows written)` of the run's INSERT queries, from `system.query_log`.
    pub clickhouse_cpu: Option<(u64, u64)>,
    /// CPU seconds of the whole ClickHouse process (`--clickhouse-pid`) from the start of
    /// the load until its merges had settled after the last row was stored.
    pub clickhouse_process_cpu_secs: Option<f64>,
    /// What went wrong, if anything did.
    pub error: Option<String>,
}

impl Run {
    fn new(system: System, concurrency: usize, events: usize) -> Self {
        Run {
            system,
            concurrency,
            events,
            load: None,
            half_load: None,
            memory: None,
            inserts: None,
            stored: None,
            exit: None,
            drain_secs: None,
            service_cpu_secs: None,
            clickhouse_cpu: None,
            clickhouse_process_cpu_secs: None,
            error: None,
        }
    }
    /// Events acknowledged by the measured load: 2xx responses × events per body.
    pub fn acked(&self) -> Option<u64> {
        self.load.as_ref().map(|l| l.ok * self.events as u64)
    }
    /// Events acknowledged by both loads (what the table must hold).
    pub fn acked_in_all(&self) -> Option<u64> {
        let half = self.half_load.as_ref().map_or(0, |l| l.ok);
        self.acked().map(|a| a + half * self.events as u64)
    }
    pub fn events_per_sec(&self) -> Option<f64> {
        self.load
            .as_ref()
            .map(|l| l.ok_per_sec() * self.events as f64)
    }
    /// Service CPU µs per acknowledged event (event-ingest and bare-parse only).
    pub fn service_us_per_event(&self) -> Option<f64> {
        let acked = self.acked().filter(|&a| a > 0)?;
        Some(self.service_cpu_secs? * 1e6 / acked as f64)
    }
    /// ClickHouse CPU µs per row its INSERT queries wrote (not bare-parse, which stores
    /// nothing).
    pub fn clickhouse_us_per_event(&self) -> Option<f64> {
        let (us, rows) = self.clickhouse_cpu.filter(|&(_, rows)| rows > 0)?;
        Some(us as f64 / rows as f64)
    }
    /// The whole ClickHouse server's CPU µs per row the run stored: its inserts, the merges
    /// of the parts they made and a Buffer table's flushes (what `system.query_log` leaves
    /// out).
    pub fn clickhouse_process_us_per_event(&self) -> Option<f64> {
        let stored = self.stored.filter(|&n| n > 0)?;
        Some(self.clickhouse_process_cpu_secs? * 1e6 / stored as f64)
    }
    /// The CPU an event costs end to end: service + ClickHouse for event-ingest, the service
    /// alone for bare-parse (stores nothing), ClickHouse alone for the direct alternatives
    /// (no gateway).
    pub fn total_us_per_event(&self) -> Option<f64> {
        match self.system {
            System::EventIngest | System::EventIngestDisk => {
                Some(self.service_us_per_event()? + self.clickhouse_us_per_event()?)
            }
            System::BareParse | System::ParseOnly | System::HttpOnly => self.service_us_per_event(),
            System::ChBuffer | System::ChDirect => self.clickhouse_us_per_event(),
        }
    }
    /// `system c=N events=M`, naming the run in the report's checks.
    pub fn label(&self) -> String {
        format!(
            "{} c={} events={}",
            self.system.name(),
            self.concurrency,
            self.events
        )
    }

    /// `Some(true)` when the stored rows equal the acknowledged events (and, for
    /// event-ingest, the server exited 0); `None` where nothing is stored.
    pub fn stored_ok(&self) -> Option<bool> {
        if self.system.parses_only() {
            return None;
        }
        let exit_ok = !self.system.is_event_ingest() || self.exit.as_deref() == Some("0");
        match (self.stored, self.acked_in_all()) {
            (Some(s), Some(a)) => Some(s == a && exit_ok),
            _ if self.load.is_some() => Some(false),
            _ => None,
        }
    }
}

struct Ctx<'a> {
    args: &'a Args,
    ch: ClickHouse,
    duration: Duration,
    oha: PathBuf,
    server_bin: PathBuf,
    logs: PathBuf,
}

/// Column list of event-ingest's table on ClickHouse 18.16, with the two server-side
/// columns given defaults, and `ip` as a plain `String` (the alternatives have no peer
/// address to store).
const ALT_COLUMNS: &str = "client_time DateTime('UTC'), server_time DateTime('UTC') DEFAULT now(), \
     device_id UUID, device_os LowCardinality(String), session String, sequence UInt32, \
     event LowCardinality(String), param_int UInt32, param_str String, ip String DEFAULT ''";
const ALT_ENGINE: &str = "ENGINE = MergeTree PARTITION BY toYYYYMM(server_time) \
     ORDER BY (event, toDate(server_time), device_id, server_time)";
const LOW_CARDINALITY: &str = "allow_experimental_low_cardinality_type=1";
/// The API key of `--api-key` runs.
const LOAD_KEY: &str = "sk-loadtest-0123456789";

fn main() {
    let args = Args::parse();
    match real_main(&args) {
        Ok(all_pass) => {
            if args.strict && !all_pass {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("loadtest: {e}");
            std::process::exit(2);
        }
    }
}

fn real_main(args: &Args) -> Result<bool, String> {
    let duration =
        Duration::from_secs(
            args.duration_secs
                .unwrap_or(if args.quick { 3 } else { 10 }),
        );
    let concurrencies = pick(&args.concurrency, &[1, 8, 32, 128], &[1, 32], args.quick);
    let event_counts = pick(&args.events, &[30, 1000], &[30], args.quick);
    let mut systems = if args.systems.is_empty() {
        System::ALL.to_vec()
    } else {
        args.systems.clone()
    };
    systems.sort();
    systems.dedup();
    if concurrencies.contains(&0) || event_counts.contains(&0) || duration.is_zero() {
        return Err("concurrency, events and duration must be positive".into());
    }

    let logs = args.out_dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("create {}: {e}", logs.display()))?;
    let oha = resolve_oha(&args.oha)?;
    let oha_version = command_output(&oha, "--version").ok_or_else(|| {
        format!(
            "{} does not run; install it: cargo install oha --locked",
            oha.display()
        )
    })?;
    let needs_server = systems
        .iter()
        .any(|s| s.is_event_ingest() || *s == System::BareParse);
    let server_bin = std::path::absolute(&args.server_bin)
        .map_err(|e| format!("{}: {e}", args.server_bin.display()))?;
    if needs_server && !server_bin.is_file() {
        return Err(format!(
            "{} not found; build it first: cargo build --release",
            server_bin.display()
        ));
    }
    if (systems.contains(&System::ParseOnly) || systems.contains(&System::HttpOnly))
        && !args.parse_only_bin.is_file()
    {
        return Err(format!(
            "{} not found; build it first: cargo build --release -p loadtest",
            args.parse_only_bin.display()
        ));
    }
    // OPTIMIZE/DROP of a full Buffer table may take a while.
    let ch = ClickHouse::new(
        &args.clickhouse_host,
        args.clickhouse_port,
        Duration::from_secs(120),
    );
    let ch_version = ch
        .version()
        .map_err(|e| format!("{e}\n(start one with: scripts/clickhouse.sh ensure)"))?;
    ch.query(&format!("CREATE DATABASE IF NOT EXISTS {}", args.database))?;

    let bodies: Vec<Bodies> = event_counts
        .iter()
        .map(|&n| body::write_bodies(&args.out_dir.join("bodies"), n))
        .collect::<Result<_, _>>()?;

    let ctx = Ctx {
        args,
        ch,
        duration,
        oha,
        server_bin,
        logs,
    };
    let total = bodies.len() * concurrencies.len() * systems.len();
    eprintln!(
        "loadtest: {total} runs of {} s ({} systems × concurrency {:?} × {:?} events/body); ClickHouse {ch_version} at {}; {oha_version}",
        duration.as_secs(),
        systems.len(),
        concurrencies,
        event_counts,
        ctx.ch.base_url()
    );
    let started = Instant::now();
    let mut runs = Vec::new();
    for b in &bodies {
        for &c in &concurrencies {
            for &s in &systems {
                let t = Instant::now();
                let run = run_one(&ctx, s, c, b);
                eprintln!(
                    "[{}/{total}] {} ({:.1} s)",
                    runs.len() + 1,
                    report::progress_line(&run),
                    t.elapsed().as_secs_f64()
                );
                runs.push(run);
            }
        }
    }

    let meta = report::Meta {
        clickhouse_version: ch_version,
        oha_version,
        duration,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        bodies: bodies
            .iter()
            .map(|b| (b.events, b.json_array_bytes, b.ndjson_bytes))
            .collect(),
        elapsed: started.elapsed(),
        durability: {
            let mut modes = vec![args.durability.clone()];
            if args.listener_tls {
                modes.push("HTTPS on the listener (TLS_CERT_FILE)".into());
            }
            if args.clickhouse_tls {
                modes.push("HTTPS to ClickHouse (CLICKHOUSE_HOST=https://...)".into());
            }
            if args.api_key {
                modes.push(match args.key_rate {
                    Some(rate) => format!("an API key limited to {rate} events/s"),
                    None => "an API key without a limit".into(),
                });
            }
            modes.join("`, with `")
        },
    };
    let (markdown, all_pass) = report::markdown(&meta, &runs);
    let chart_path = chart::write(
        &args.out_dir.join("events_per_sec"),
        "events/s by concurrency (oha, keep-alive)",
        "events/s (log)",
        &report::panels(&runs, &event_counts),
    );
    let cpu_chart_path = chart::write(
        &args.out_dir.join("cpu_per_event"),
        "CPU per event by concurrency",
        "CPU µs per event (log)",
        &report::cpu_panels(&runs, &event_counts),
    );
    let mut markdown = markdown;
    for (what, path) in [("Chart", &chart_path), ("CPU chart", &cpu_chart_path)] {
        match path {
            Ok(p) => markdown.push_str(&format!("\n{what}: `{}`\n", p.display())),
            Err(e) => markdown.push_str(&format!("\n{what}: not written ({e})\n")),
        }
    }
    print!("{markdown}");
    let report_path = args.out_dir.join("report.md");
    std::fs::write(&report_path, &markdown)
        .map_err(|e| format!("write {}: {e}", report_path.display()))?;
    let shown = |p: &Result<PathBuf, String>| {
        p.as_ref()
            .map_or("no chart".into(), |p| p.display().to_string())
    };
    eprintln!(
        "loadtest: wrote {}, {} and {}",
        report_path.display(),
        shown(&chart_path),
        shown(&cpu_chart_path)
    );
    Ok(all_pass)
}

fn pick(given: &[usize], full: &[usize], quick: &[usize], is_quick: bool) -> Vec<usize> {
    let mut v = if !given.is_empty() {
        given.to_vec()
    } else if is_quick {
        quick.to_vec()
    } else {
        full.to_vec()
    };
    v.sort_unstable();
    v.dedup();
    v
}

/// `oha` on PATH, else cargo's bin folder.
fn resolve_oha(oha: &Path) -> Result<PathBuf, String> {
    if oha.components().count() > 1 {
        return Ok(oha.to_path_buf());
    }
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(oha))
                .find(|p| p.is_file())
        })
        .unwrap_or_default();
    if let Some(p) = in_path {
        return Ok(p);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    cargo_home
        .map(|h| h.join("bin").join(oha))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{} not found; install it: cargo install oha --locked",
                oha.display()
            )
        })
}

fn command_output(cmd: &Path, arg: &str) -> Option<String> {
    let out = Command::new(cmd).arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_one(ctx: &Ctx<'_>, system: System, c: usize, body: &Bodies) -> Run {
    let mut run = Run::new(system, c, body.events);
    let table = format!("{}_c{c}_b{}", system.prefix(), body.events);
    let result = match system {
        System::EventIngest | System::EventIngestDisk | System::BareParse => {
            run_server(ctx, &mut run, &table, body)
        }
        System::ParseOnly | System::HttpOnly => run_parse_only(ctx, &mut run, &table, body),
        System::ChDirect | System::ChBuffer => run_clickhouse(ctx, &mut run, &table, body),
    };
    if let Err(e) = result {
        run.error = Some(e);
    }
    run
}

fn fq(ctx: &Ctx<'_>, table: &str) -> String {
    format!("{}.{table}", ctx.args.database)
}

fn run_server(ctx: &Ctx<'_>, run: &mut Run, table: &str, body: &Bodies) -> Result<(), String> {
    let ch = &ctx.ch;
    ch.query(&format!("DROP TABLE IF EXISTS {}", fq(ctx, table)))?;
    let port = proc::free_port()?;
    let mode = if run.system.is_event_ingest() {
        "double"
    } else {
        "discard"
    };
    let mut cmd = Command::new(&ctx.server_bin);
    // Every tuning knob at its default, whatever the caller's environment says.
    for var in [
        "HTTP_WORKERS",
        "BUFFER_SIZE",
        "BUFFER_FLUSH_MS",
        "BUFFER_MAX_BYTES",
        "BODY_MAX_BYTES",
        "CLICKHOUSE_TIMEOUT_MS",
        "SHUTDOWN_TIMEOUT_SECS",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("APP_ENV", "prod")
        .env("HTTP_HOST", "127.0.0.1")
        .env("HTTP_PORT", port.to_string())
        .env("CLICKHOUSE_NAME", &ctx.args.database)
        .env("CLICKHOUSE_TABLE", table)
        .env("BUFFER_MODE", mode)
        .env(
            "DURABILITY",
            match run.system {
                System::EventIngestDisk => "disk",
                _ => &ctx.args.durability,
            },
        )
        .env("SPOOL_DIR", ctx.logs.join(format!("{table}.spool")));
    let tls = ctx.args.tls_dir();
    match ctx.args.clickhouse_tls {
        true => cmd
            .env(
                "CLICKHOUSE_HOST",
                format!("https://{}", ctx.args.clickhouse_host),
            )
            .env(
                "CLICKHOUSE_PORT",
                ctx.args.clickhouse_https_port.to_string(),
            )
            .env("CLICKHOUSE_CA_FILE", tls.join("ca.crt")),
        false => cmd
            .env("CLICKHOUSE_HOST", &ctx.args.clickhouse_host)
            .env("CLICKHOUSE_PORT", ctx.args.clickhouse_port.to_string()),
    };
    if ctx.args.listener_tls {
        cmd.env("TLS_CERT_FILE", tls.join("server.crt"))
            .env("TLS_KEY_FILE", tls.join("server.key"));
    }
    if ctx.args.api_key {
        let rate = match ctx.args.key_rate {
            Some(rate) => format!("events_per_second = {rate}\n"),
            None => String::new(),
        };
        let file = ctx.logs.join(format!("{table}.keys.toml"));
        std::fs::write(
            &file,
            format!("[[keys]]\nname = \"loadtest\"\nsecret = \"{LOAD_KEY}\"\n{rate}"),
        )
        .map_err(|e| format!("{}: {e}", file.display()))?;
        cmd.env("CONFIG_FILE", &file);
    }
    let log = ctx.logs.join(format!("{table}.server.log"));
    let mut server = proc::spawn(cmd, run.system.name(), &log)?;
    let (base, agent) = match ctx.args.listener_tls {
        true => (
            format!("https://127.0.0.1:{port}"),
            http::agent_trusting_any(Duration::from_secs(5)),
        ),
        false => (
            format!("http://127.0.0.1:{port}"),
            http::agent(Duration::from_secs(5)),
        ),
    };

    wait_ready(&mut server, &agent, &format!("{base}/v1/health"), run, &log)?;

    // The query log's event_time has whole seconds: a second earlier cannot reach an older
    // run of this table (dropped above, and a run lasts longer than that).
    let since = unix_secs().saturating_sub(1);
    let ch_window = match run.system.is_event_ingest() {
        true => ClickHouseWindow::open(ctx)?,
        false => None,
    };
    let cpu_start = proc::cpu_secs(server.pid());
    let url = format!("{base}/v1/events");
    let spec = oha::Load {
        insecure: ctx.args.listener_tls,
        key: ctx.args.api_key.then_some(LOAD_KEY),
        ..events_load(ctx, &url, body, run, table)
    };
    let load = oha::run(&spec)?;
    let mut drain_start = Instant::now();
    run.load = Some(load);
    run.memory = proc::memory(server.pid());

    if run.system.is_event_ingest() {
        // Let the flusher write what the last requests buffered (BUFFER_FLUSH_MS, 1 s by
        // default), so `inserts` counts them too; the shutdown flush covers anything left.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let health = http::get(&agent, &format!("{base}/v1/health"))
                .ok()
                .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok());
            if let Some(h) = &health {
                run.inserts = h["counters"]["inserts"].as_u64();
                if h["buffered_events"].as_u64() == Some(0) || Instant::now() >= deadline {
                    break;
                }
            } else if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // For event-ingest the window closes once the flusher has written what was acknowledged,
    // so the encoding, sorting and inserting it did for those events is counted too.
    if let (Some(start), Some(end)) = (cpu_start, proc::cpu_secs(server.pid())) {
        run.service_cpu_secs = Some(end - start);
    }
    run.half_load = half_load(ctx, spec, run)?;
    if run.half_load.is_some() {
        drain_start = Instant::now();
    }
    let status = server.terminate(Duration::from_secs(60))?;
    run.exit = Some(proc::describe(&status));
    if run.system.is_event_ingest() {
        run.drain_secs = Some(drain_start.elapsed().as_secs_f64());
    }
    if run.system.is_event_ingest() {
        run.stored = Some(ch.count(&fq(ctx, table))?);
        // The service names `database`.`table`; a search for a bad row inserts into
        // `<table>_probe_<id>`: the `` ` (`` after the name tells them apart.
        let prefix = format!("INSERT INTO `{}`.`{table}` (", ctx.args.database);
        run.clickhouse_cpu = Some(insert_cpu(ch, &prefix, since)?);
        run.clickhouse_process_cpu_secs = ch_window.map(|w| w.close(ctx)).transpose()?.flatten();
    }
    if !ctx.args.keep_tables {
        ch.query(&format!("DROP TABLE IF EXISTS {}", fq(ctx, table)))?;
    }
    Ok(())
}

/// The run's load on `url`: its JSON arrays, over plain HTTP, without a key, as fast as the
/// server answers.
fn events_load<'a>(
    ctx: &'a Ctx<'_>,
    url: &'a str,
    body: &'a Bodies,
    run: &Run,
    table: &str,
) -> oha::Load<'a> {
    oha::Load {
        oha: &ctx.oha,
        url,
        body: &body.json_array,
        content_type: "application/json",
        insecure: false,
        key: None,
        concurrency: run.concurrency,
        duration: ctx.duration,
        rate: None,
        out_stem: ctx.logs.join(table),
    }
}

/// With `--half-load`: the same load again at half the request rate `run`'s reached.
fn half_load(
    ctx: &Ctx<'_>,
    mut spec: oha::Load<'_>,
    run: &Run,
) -> Result<Option<LoadResult>, String> {
    let rate = run.load.as_ref().map_or(0.0, |l| l.req_per_sec()) / 2.0;
    if !ctx.args.half_load || rate < 1.0 {
        return Ok(None);
    }
    if run.system.is_event_ingest() {
        // The first load's parts are still being merged for a while: that CPU is the
        // first load's, not this one's (bounded wait).
        merges_settled(&ctx.ch)?;
    }
    spec.rate = Some(rate);
    let mut stem = spec.out_stem.into_os_string();
    stem.push("_half");
    spec.out_stem = stem.into();
    oha::run(&spec).map(Some)
}

/// Waits until `url` answers `200`: bounded, and noticing an early exit.
fn wait_ready(
    server: &mut proc::Guarded,
    agent: &ureq::Agent,
    url: &str,
    run: &Run,
    log: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = server.try_wait()? {
            return Err(format!(
                "{} exited with {} at start-up: {}",
                run.system.name(),
                proc::describe(&status),
                proc::tail(log, 5)
            ));
        }
        if matches!(http::get(agent, url), Ok((200, _))) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not answer {url} within 30 s: {}",
                run.system.name(),
                proc::tail(log, 5)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The parse-only server (or, as http-only, the same answering without parsing): its CPU
/// from the start of the load to its end, nothing stored.
fn run_parse_only(ctx: &Ctx<'_>, run: &mut Run, table: &str, body: &Bodies) -> Result<(), String> {
    let port = proc::free_port()?;
    let mut cmd = Command::new(&ctx.args.parse_only_bin);
    cmd.arg(port.to_string());
    if run.system == System::HttpOnly {
        cmd.arg("--no-parse");
    }
    let log = ctx.logs.join(format!("{table}.server.log"));
    let mut server = proc::spawn(cmd, run.system.name(), &log)?;
    let base = format!("http://127.0.0.1:{port}");
    let agent = http::agent(Duration::from_secs(5));
    wait_ready(&mut server, &agent, &format!("{base}/health"), run, &log)?;
    let cpu_start = proc::cpu_secs(server.pid());
    let url = format!("{base}/v1/events");
    let spec = events_load(ctx, &url, body, run, table);
    run.load = Some(oha::run(&spec)?);
    run.memory = proc::memory(server.pid());
    if let (Some(start), Some(end)) = (cpu_start, proc::cpu_secs(server.pid())) {
        run.service_cpu_secs = Some(end - start);
    }
    run.half_load = half_load(ctx, spec, run)?;
    let status = server.terminate(Duration::from_secs(10))?;
    run.exit = Some(proc::describe(&status));
    Ok(())
}

fn run_clickhouse(ctx: &Ctx<'_>, run: &mut Run, table: &str, body: &Bodies) -> Result<(), String> {
    let ch = &ctx.ch;
    let base_table = fq(ctx, table);
    let buf_table = format!("{base_table}_buf");
    ch.query(&format!("DROP TABLE IF EXISTS {buf_table}"))?;
    ch.query(&format!("DROP TABLE IF EXISTS {base_table}"))?;
    ch.query_with(
        &format!("CREATE TABLE {base_table} ({ALT_COLUMNS}) {ALT_ENGINE}"),
        LOW_CARDINALITY,
    )?;
    let target = if run.system == System::ChBuffer {
        ch.query_with(
            &format!(
                "CREATE TABLE {buf_table} AS {base_table} ENGINE = Buffer({}, {table}, 16, 10, 100, 10000, 1000000, 10000000, 100000000)",
                ctx.args.database
            ),
            LOW_CARDINALITY,
        )?;
        buf_table.clone()
    } else {
        base_table.clone()
    };
    // log_queries=1: 18.16 logs no query by default, and the CPU figure comes from its log.
    let since = unix_secs().saturating_sub(1);
    let ch_window = ClickHouseWindow::open(ctx)?;
    let url = format!(
        "{}/?log_queries=1&query={}",
        ch.base_url(),
        http::url_encode(&format!("INSERT INTO {target} FORMAT JSONEachRow"))
    );
    let load = oha::run(&oha::Load {
        body: &body.ndjson,
        content_type: "application/x-ndjson",
        ..events_load(ctx, &url, body, run, table)
    });
    // Dropping a Buffer table flushes it into its destination first.
    let drain_start = Instant::now();
    let flushed = if run.system == System::ChBuffer {
        ch.query(&format!("DROP TABLE IF EXISTS {buf_table}"))
            .map(|_| ())
    } else {
        Ok(())
    };
    // A direct insert's rows are committed when it is acknowledged.
    run.drain_secs = Some(if run.system == System::ChBuffer {
        drain_start.elapsed().as_secs_f64()
    } else {
        0.0
    });
    run.load = Some(load?);
    flushed?;
    run.stored = Some(ch.count(&base_table)?);
    run.clickhouse_cpu = Some(insert_cpu(
        ch,
        &format!("INSERT INTO {target} FORMAT"),
        since,
    )?);
    run.clickhouse_process_cpu_secs = ch_window.map(|w| w.close(ctx)).transpose()?.flatten();
    if !ctx.args.keep_tables {
        ch.query(&format!("DROP TABLE IF EXISTS {base_table}"))?;
    }
    Ok(())
}

/// The whole ClickHouse process's CPU over one storing run (with `--clickhouse-pid`). The
/// window opens and closes with no merge running, so it holds the merges of this run's parts,
/// not an earlier run's (a merge scheduled after it closes is left out).
struct ClickHouseWindow {
    pid: u32,
    start: f64,
}

/// Longest wait for ClickHouse's merges to finish at either end of a window.
const MERGES_SETTLE: Duration = Duration::from_secs(60);

impl ClickHouseWindow {
    fn open(ctx: &Ctx<'_>) -> Result<Option<Self>, String> {
        let Some(pid) = ctx.args.clickhouse_pid else {
            return Ok(None);
        };
        if !merges_settled(&ctx.ch)? {
            return Ok(None); // an earlier run's merges would count
        }
        Ok(proc::cpu_secs(pid).map(|start| ClickHouseWindow { pid, start }))
    }

    /// CPU seconds since [`ClickHouseWindow::open`], once merges have settled (`None` when
    /// they had not within [`MERGES_SETTLE`]: the figure would leave some out).
    fn close(self, ctx: &Ctx<'_>) -> Result<Option<f64>, String> {
        let settled = merges_settled(&ctx.ch)?;
        Ok(proc::cpu_secs(self.pid)
            .filter(|_| settled)
            .map(|end| end - self.start))
    }
}

/// Waits until `system.merges` has been empty twice in a row, half a second apart (a merge
/// is scheduled a moment after the parts it merges appear), at most [`MERGES_SETTLE`];
/// whether it got there.
fn merges_settled(ch: &ClickHouse) -> Result<bool, String> {
    let deadline = Instant::now() + MERGES_SETTLE;
    let mut empty = 0;
    loop {
        match ch.query("SELECT count() FROM system.merges")?.trim() == "0" {
            true => empty += 1,
            false => empty = 0,
        }
        if empty == 2 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `(CPU µs, rows written)` summed over the INSERT queries whose text starts with `prefix`
/// and that ended at or after `since` (unix seconds), from `system.query_log` after
/// `SYSTEM FLUSH LOGS`. CPU is `UserTimeMicroseconds + SystemTimeMicroseconds` of each
/// query (all its threads); inserts that failed (`type = 4`) count their CPU but no rows.
/// A Buffer table's background flush into its MergeTree table is no query, so ch-buffer's
/// figure leaves it out.
fn insert_cpu(ch: &ClickHouse, prefix: &str, since: u64) -> Result<(u64, u64), String> {
    ch.query("SYSTEM FLUSH LOGS")?;
    let sql = format!(
        "SELECT sum(ProfileEvents.Values[indexOf(ProfileEvents.Names, 'UserTimeMicroseconds')] \
         + ProfileEvents.Values[indexOf(ProfileEvents.Names, 'SystemTimeMicroseconds')]), \
         sum(written_rows) FROM system.query_log \
         WHERE event_date >= toDate(toDateTime({since})) AND event_time >= toDateTime({since}) \
         AND type IN (2, 4) AND startsWith(query, '{}') FORMAT TabSeparated",
        prefix.replace('\\', "\\\\").replace('\'', "\\'")
    );
    let out = ch.query(&sql)?;
    let mut cols = out.split_whitespace().map(str::parse::<u64>);
    match (cols.next(), cols.next()) {
        (Some(Ok(us)), Some(Ok(rows))) => Ok((us, rows)),
        _ => Err(format!("unexpected answer from system.query_log: {out:?}")),
    }
}
