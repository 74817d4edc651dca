//! The fault loop: kill -9 and SIGTERM of the service, ClickHouse outages, a full spool
//! volume, descriptor exhaustion and quiet periods, at random (seeded) times until the
//! deadline.

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::clickhouse::OwnClickHouse;
use crate::log;
use crate::rng::Rng;
use crate::service::{Service, describe};
use crate::volume::SpoolVolume;

/// How long a SIGTERMed service may take (SHUTDOWN_TIMEOUT_SECS=5, plus margin).
pub const TERM_TIMEOUT: Duration = Duration::from_secs(30);

/// What happened during the loop, for the report.
#[derive(Debug, Default)]
pub struct FaultLog {
    /// Faults injected, by kind.
    pub counts: BTreeMap<&'static str, u32>,
    /// The service's exit after each SIGTERM (`0` expected).
    pub term_exits: Vec<String>,
    /// Exits nobody asked for (found between faults), and failed starts.
    pub unexpected: Vec<String>,
}

impl FaultLog {
    fn count(&mut self, kind: &'static str) {
        *self.counts.entry(kind).or_default() += 1;
    }
}

/// Starts the service, retrying a few times; failures are recorded as unexpected.
pub fn start_service(service: &mut Service, faults: &mut FaultLog) -> Result<(), String> {
    for attempt in 1..=3 {
        match service.start() {
            Ok(()) => {
                log(&format!(
                    "service up (pid {})",
                    service.pid().unwrap_or_default()
                ));
                return Ok(());
            }
            Err(e) => {
                log(&format!("service start failed (attempt {attempt}): {e}"));
                faults.unexpected.push(format!("start failed: {e}"));
                service.kill();
                sleep(Duration::from_secs(1));
            }
        }
    }
    Err("the service would not start three times in a row".into())
}

/// Injects faults until `deadline`. The service and ClickHouse are running on entry and
/// on a successful return.
pub fn run(
    deadline: Instant,
    rng: &mut Rng,
    service: &mut Service,
    ch: &OwnClickHouse,
    volume: Option<&SpoolVolume>,
    faults: &mut FaultLog,
) -> Result<(), String> {
    while Instant::now() < deadline {
        if let Some(status) = service.try_wait() {
            let msg = format!("service exited on its own ({})", describe(&status));
            log(&msg);
            faults.unexpected.push(msg);
            start_service(service, faults)?;
        }
        // Some plain load between faults.
        sleep(rng.secs(1.0, 3.0));
        match rng.below(7) {
            0 => {
                faults.count("kill -9 service");
                log(&format!(
                    "FAULT kill -9 service (pid {})",
                    service.pid().unwrap_or_default()
                ));
                service.kill();
                sleep(rng.secs(0.5, 3.0));
                start_service(service, faults)?;
            }
            1 => {
                faults.count("SIGTERM service");
                log(&format!(
                    "FAULT SIGTERM service (pid {})",
                    service.pid().unwrap_or_default()
                ));
                let exit = service
                    .terminate(TERM_TIMEOUT)
                    .unwrap_or_else(|e| format!("error: {e}"));
                log(&format!("service exited: {exit}"));
                faults.term_exits.push(exit);
                sleep(rng.secs(0.2, 1.0));
                start_service(service, faults)?;
            }
            2 => {
                faults.count("ClickHouse outage");
                let outage = rng.secs(10.0, 20.0);
                log(&format!(
                    "FAULT stop ClickHouse for {:.1} s",
                    outage.as_secs_f64()
                ));
                let took = ch.stop()?;
                log(&format!(
                    "ClickHouse stopped (exit took {:.1} s)",
                    took.as_secs_f64()
                ));
                // Now and then the service dies too while ClickHouse is away: its spool
                // must carry the backlog over the restart.
                if rng.one_in(3) {
                    faults.count("kill -9 service during outage");
                    sleep(outage / 2);
                    log(&format!(
                        "FAULT kill -9 service during the outage (pid {})",
                        service.pid().unwrap_or_default()
                    ));
                    service.kill();
                    sleep(rng.secs(0.5, 2.0));
                    start_service(service, faults)?;
                    sleep(outage / 2);
                } else {
                    sleep(outage);
                }
                ch.ensure()?;
                log("ClickHouse back");
            }
            3 if volume.is_some() => {
                if let Some(volume) = volume {
                    full_disk(rng, service, ch, volume, faults)?;
                }
            }
            4 => descriptor_exhaustion(rng, service, ch, faults)?,
            5 if volume.is_some() => {
                if let Some(volume) = volume {
                    spool_write_failure(rng, service, volume, faults)?;
                }
            }
            _ => {
                faults.count("quiet period");
                let quiet = rng.secs(5.0, 15.0);
                log(&format!("quiet period {:.1} s", quiet.as_secs_f64()));
                sleep(quiet);
            }
        }
    }
    Ok(())
}

/// Free bytes left on the spool volume by the full-disk fault: the spool fills them.
const FULL_DISK_LEAVE: u64 = 4 << 20;

/// ClickHouse down and the spool volume nearly full (a ballast file), the service
/// restarted on it: it must refuse with 503 before the volume is full, not fail writes,
/// and deliver everything once ClickHouse is back, without another restart.
fn full_disk(
    rng: &mut Rng,
    service: &mut Service,
    ch: &OwnClickHouse,
    volume: &SpoolVolume,
    faults: &mut FaultLog,
) -> Result<(), String> {
    faults.count("full spool volume");
    log("FAULT full spool volume: ClickHouse down, volume filled, service restarted on it");
    ch.stop()?;
    let exit = service
        .terminate(TERM_TIMEOUT)
        .unwrap_or_else(|e| format!("error: {e}"));
    faults.term_exits.push(exit);
    let ballast = volume.fill_leaving(FULL_DISK_LEAVE)?;
    log(&format!(
        "ballast of {} MiB; {} MiB free",
        ballast >> 20,
        volume.free_bytes()? >> 20
    ));
    start_service(service, faults)?;
    // Until the spool refuses (or a while: the load may be too light to fill it).
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(30) {
        sleep(Duration::from_millis(500));
        let Some(h) = service.health() else { continue };
        let (used, max) = (
            h["spool"]["bytes"].as_u64().unwrap_or(0),
            h["spool"]["max_bytes"].as_u64().unwrap_or(u64::MAX),
        );
        last = format!(
            "spool {used} of {max} bytes, failed: {}",
            h["spool"]["failed"]
        );
        if used as f64 >= max as f64 * 0.9 {
            break;
        }
    }
    log(&format!(
        "{last}; {} MiB free on the volume",
        volume.free_bytes()? >> 20
    ));
    sleep(rng.secs(2.0, 5.0));
    ch.ensure()?;
    log("ClickHouse back; the spool drains on the full volume");
    sleep(rng.secs(5.0, 10.0));
    volume.empty();
    log("ballast removed");
    Ok(())
}

/// The spool volume filled to the last page by another process while the service runs:
/// a spool write fails, the requests in it get 503 (their events must never be stored),
/// and once the ballast is gone the service takes events again without a restart.
fn spool_write_failure(
    rng: &mut Rng,
    service: &mut Service,
    volume: &SpoolVolume,
    faults: &mut FaultLog,
) -> Result<(), String> {
    faults.count("spool write failure");
    let ballast = volume.fill_up()?;
    log(&format!(
        "FAULT spool volume filled by another process ({} MiB)",
        ballast >> 20
    ));
    sleep(rng.secs(3.0, 8.0));
    let failed = service
        .health()
        .map(|h| h["spool"]["failed"].to_string())
        .unwrap_or_default();
    volume.empty();
    log(&format!("ballast removed (spool failed: {failed})"));
    // Taken again without a restart, within a few of the writer's one-second checks.
    let started = Instant::now();
    loop {
        let recovered = service
            .health()
            .is_some_and(|h| h["spool"]["failed"].is_null());
        if recovered {
            log(&format!(
                "spool writing again after {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            let msg = "spool still failed 30 s after the volume had room again".to_string();
            log(&msg);
            faults.unexpected.push(msg);
            return Ok(());
        }
        sleep(Duration::from_millis(500));
    }
}

/// Descriptors for the service at the descriptor-exhaustion fault.
const FAULT_NOFILE: u64 = 128;
/// Idle connections opened at a time to take them.
const IDLE_CONNECTIONS: usize = 300;

/// A backlog to replay (ClickHouse down a while), then the service restarted with few file
/// descriptors and idle connections taking them all while ClickHouse is back: spool reads
/// and inserts fail with EMFILE and must be retried, never skipped.
fn descriptor_exhaustion(
    rng: &mut Rng,
    service: &mut Service,
    ch: &OwnClickHouse,
    faults: &mut FaultLog,
) -> Result<(), String> {
    faults.count("descriptor exhaustion");
    log(&format!(
        "FAULT descriptor exhaustion: backlog, then RLIMIT_NOFILE={FAULT_NOFILE} and \
         {IDLE_CONNECTIONS} idle connections"
    ));
    ch.stop()?;
    sleep(rng.secs(5.0, 10.0));
    let exit = service
        .terminate(TERM_TIMEOUT)
        .unwrap_or_else(|e| format!("error: {e}"));
    faults.term_exits.push(exit);
    service.nofile = Some(FAULT_NOFILE);
    let started = start_service(service, faults);
    service.nofile = None;
    started?;
    let port = service.port();
    let connect = || {
        (0..IDLE_CONNECTIONS)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(
                    &([127, 0, 0, 1], port).into(),
                    Duration::from_millis(200),
                )
                .ok()
            })
            .collect::<Vec<_>>()
    };
    let mut idle = connect();
    ch.ensure()?;
    log(&format!(
        "ClickHouse back; {} idle connections hold the service's descriptors",
        idle.len()
    ));
    // Idle connections are closed by the service after its request timeout: keep some open.
    let hold = rng.secs(8.0, 15.0);
    let until = Instant::now() + hold;
    while Instant::now() < until {
        sleep(Duration::from_secs(2));
        idle.truncate(IDLE_CONNECTIONS / 2);
        idle.extend(connect());
    }
    drop(idle);
    log("idle connections closed");
    // Back to a normal limit for the rest of the run.
    let exit = service
        .terminate(TERM_TIMEOUT)
        .unwrap_or_else(|e| format!("error: {e}"));
    faults.term_exits.push(exit);
    start_service(service, faults)
}
