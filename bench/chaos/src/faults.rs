//! The fault loop: kill -9 and SIGTERM of the service, ClickHouse outages and quiet
//! periods, at random (seeded) times until the deadline.

use std::collections::BTreeMap;
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::clickhouse::OwnClickHouse;
use crate::log;
use crate::rng::Rng;
use crate::service::{Service, describe};

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
        match rng.below(4) {
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
