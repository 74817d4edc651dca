//! Runs `oha` for a fixed duration and reads its JSON summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::proc;

/// What one `oha` run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Wall time of the run (the duration plus waiting for in-flight requests), seconds.
    pub secs: f64,
    /// Responses of any status.
    pub responses: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Responses with another status.
    pub non_2xx: u64,
    /// Requests without a response (connection errors, timeouts), by error.
    pub errors: u64,
    pub error_kinds: Vec<String>,
    pub status_codes: BTreeMap<String, u64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadResult {
    pub fn req_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.responses as f64 / self.secs
        } else {
            0.0
        }
    }
    pub fn ok_per_sec(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }
}

#[derive(Deserialize)]
struct OhaJson {
    summary: Summary,
    metrics: Metrics,
    #[serde(rename = "statusCodeDistribution", default)]
    status_codes: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    errors: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Summary {
    total: f64,
}

#[derive(Deserialize)]
struct Metrics {
    latency_ms: LatencyMs,
}

#[derive(Deserialize)]
struct LatencyMs {
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

pub struct Load<'a> {
    pub oha: &'a Path,
    pub url: &'a str,
    pub body: &'a Path,
    pub content_type: &'a str,
    /// Accept the server's certificate unchecked (the test certificate of `--listener-tls`).
    pub insecure: bool,
    /// Sent as `X-Api-Key`.
    pub key: Option<&'a str>,
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests per second for all connections together (`-q`, with oha's latency
    /// correction, so a late request counts from when it was due); `None` = as fast as the
    /// server answers.
    pub rate: Option<f64>,
    /// Where oha's JSON and its log go: `<stem>.json`, `<stem>.log`.
    pub out_stem: PathBuf,
}

/// Runs oha with keep-alive for `duration` at `concurrency` connections, waiting for the
/// requests in flight at the deadline (`-w`), so that every request sent is counted: what
/// the server acknowledged is exactly the 2xx count.
pub fn run(load: &Load<'_>) -> Result<LoadResult, String> {
    let json_path = load.out_stem.with_extension("json");
    let log_path = load.out_stem.with_extension("oha.log");
    let _ = std::fs::remove_file(&json_path);
    let mut cmd = Command::new(load.oha);
    cmd.arg("--no-tui")
        .args(["--output-format", "json", "-o"])
        .arg(&json_path)
        .args(["-z", &format!("{}ms", load.duration.as_millis())])
        .arg("-w")
        .args(["-c", &load.concurrency.to_string()])
        .args(["-m", "POST", "-T", load.content_type])
        .arg("-D")
        .arg(load.body)
        .args(["-t", "30s"])
        .args(load.insecure.then_some("--insecure"))
        .args(load.rate.into_iter().flat_map(|q| {
            [
                "-q".to_string(),
                format!("{q:.0}"),
                "--latency-correction".to_string(),
            ]
        }))
        .args(
            load.key
                .into_iter()
                .flat_map(|k| ["-H".to_string(), format!("x-api-key: {k}")]),
        )
        .arg(load.url)
        .env("NO_COLOR", "1");
    let mut child = proc::spawn(cmd, "oha", &log_path)?;
    // Bounded: the run, plus the 30 s request timeout for the last ones, plus slack.
    let status = child.wait_timeout(load.duration + Duration::from_secs(60))?;
    if !status.success() {
        return Err(format!(
            "oha exited with {}: {}",
            proc::describe(&status),
            proc::tail(&log_path, 10)
        ));
    }
    let text = std::fs::read_to_string(&json_path)
        .map_err(|e| format!("oha output {}: {e}", json_path.display()))?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<LoadResult, String> {
    let j: OhaJson = serde_json::from_str(text).map_err(|e| format!("oha JSON: {e}"))?;
    let mut r = LoadResult {
        secs: j.summary.total,
        p50_ms: j.metrics.latency_ms.p50.unwrap_or(f64::NAN),
        p99_ms: j.metrics.latency_ms.p99.unwrap_or(f64::NAN),
        max_ms: j.metrics.latency_ms.max.unwrap_or(f64::NAN),
        ..LoadResult::default()
    };
    for (code, n) in &j.status_codes {
        r.responses += n;
        if code.starts_with('2') {
            r.ok += n;
        } else {
            r.non_2xx += n;
        }
    }
    r.status_codes = j.status_codes;
    for (kind, n) in j.errors {
        r.errors += n;
        r.error_kinds.push(format!("{n}× {kind}"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_oha_json() {
        let text = r#"{"summary":{"successRate":1.0,"total":2.0,"slowest":0.01,"fastest":0.0001,
            "average":0.001,"requestsPerSec":150.0,"totalData":10,"sizePerRequest":1,"sizePerSec":5.0},
            "metrics":{"success_rate":1.0,"requests_per_sec":150.0,
              "latency_ms":{"min":0.1,"mean":1.0,"p50":0.9,"p95":2.0,"p99":3.5,"max":10.0}},
            "statusCodeDistribution":{"200":290,"503":10},
            "errorDistribution":{"connection closed":2}}"#;
        let r = super::parse(text).unwrap();
        assert_eq!((r.responses, r.ok, r.non_2xx, r.errors), (300, 290, 10, 2));
        assert_eq!(r.req_per_sec(), 150.0);
        assert_eq!(r.ok_per_sec(), 145.0);
        assert_eq!((r.p50_ms, r.p99_ms, r.max_ms), (0.9, 3.5, 10.0));
    }
}
