//! Configuration: every setting comes from an environment variable, read once at start-up.
//!
//! Names are part of the public interface (scripts, compose files and tests rely on them), so
//! they are spelled out in one table in the README and never renamed. Every variable has a
//! default, so `event-ingest` starts with none set. A bad value stops start-up with a one-line
//! error that names the variable.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

/// Where the process runs; picks defaults such as the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppEnv {
    /// A developer's machine: `info` logs.
    Dev,
    /// Automated tests: `warn` logs, so test output stays readable.
    Test,
    /// Production: `info` logs.
    Prod,
}

/// How accepted events travel to ClickHouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BufferMode {
    /// Events are appended to the active half of a double buffer and written in large
    /// batches by the flusher thread; `200` means "buffered".
    Double,
    /// Each request is one synchronous insert; `200` means "committed". Kept to compare
    /// with the original service's unbuffered mode, and for callers that must know.
    Direct,
    /// Benchmarks only: requests are decoded, validated and encoded exactly as in `double`
    /// mode, then thrown away. The load benchmark's "bare parse" ceiling; never use it for
    /// real traffic (it answers `200` and stores nothing).
    Discard,
}

/// What `200` promises about a request's events (`BUFFER_MODE=double`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In memory: lost if the process dies before the flush (default in `dev` and `test`).
    Memory,
    /// Synced to the spool on disk (`SPOOL_DIR`) first: survives crashes and restarts
    /// (default in `prod`).
    Disk,
}

/// The whole configuration, one field per environment variable (upper-cased field name).
#[derive(Clone, Deserialize)]
pub struct Config {
    /// `APP_ENV`: `dev` (default), `test` or `prod`.
    #[serde(default = "defaults::app_env")]
    pub app_env: AppEnv,
    /// `HTTP_HOST`: address to listen on (default `0.0.0.0`).
    #[serde(default = "defaults::http_host")]
    pub http_host: String,
    /// `HTTP_PORT`: port to listen on (default `8080`); `0` picks a free one, logged at start.
    #[serde(default = "defaults::http_port")]
    pub http_port: u16,
    /// `HTTP_WORKERS`: actix worker threads (default: one per CPU core).
    #[serde(default)]
    pub http_workers: Option<usize>,
    /// `CLICKHOUSE_HOST`: ClickHouse HTTP interface host (default `127.0.0.1`).
    #[serde(default = "defaults::clickhouse_host")]
    pub clickhouse_host: String,
    /// `CLICKHOUSE_PORT`: ClickHouse HTTP interface port (default `8123`).
    #[serde(default = "defaults::clickhouse_port")]
    pub clickhouse_port: u16,
    /// `CLICKHOUSE_USER` (default `default`).
    #[serde(default = "defaults::clickhouse_user")]
    pub clickhouse_user: String,
    /// `CLICKHOUSE_PASSWORD` (default empty). Never printed: `Debug` redacts it.
    #[serde(default)]
    pub clickhouse_password: String,
    /// `CLICKHOUSE_NAME`: database (default `default`); created at start-up if missing.
    #[serde(default = "defaults::clickhouse_name")]
    pub clickhouse_name: String,
    /// `CLICKHOUSE_TABLE`: table (default `events`); created at start-up if missing.
    #[serde(default = "defaults::clickhouse_table")]
    pub clickhouse_table: String,
    /// `CLICKHOUSE_TIMEOUT_MS`: longest wait for one ClickHouse request, after which it
    /// counts as failed and is retried (default 30 000).
    #[serde(default = "defaults::clickhouse_timeout_ms")]
    pub clickhouse_timeout_ms: u64,
    /// `BUFFER_MODE`: `double` (default) or `direct`.
    #[serde(default = "defaults::buffer_mode")]
    pub buffer_mode: BufferMode,
    /// `BUFFER_SIZE`: events in the active half that trigger a swap (default 10 000).
    #[serde(default = "defaults::buffer_size")]
    pub buffer_size: usize,
    /// `BUFFER_FLUSH_MS`: longest time an event waits in the active half (default 1 000).
    #[serde(default = "defaults::buffer_flush_ms")]
    pub buffer_flush_ms: u64,
    /// `BUFFER_MIN_INTERVAL_MS`: shortest time between a swap and the next one triggered by
    /// size (default 1 000, capped at `BUFFER_FLUSH_MS`; 0 disables): at high rates the
    /// halves grow instead of inserts multiplying, keeping about one insert per second.
    #[serde(default = "defaults::buffer_min_interval_ms")]
    pub buffer_min_interval_ms: u64,
    /// `BUFFER_MAX_BYTES`: cap on buffered data, both halves together, before requests are
    /// refused with `503` (default 256 MiB).
    #[serde(default = "defaults::buffer_max_bytes")]
    pub buffer_max_bytes: usize,
    /// `DURABILITY`: `memory` or `disk` (default `disk` when `APP_ENV=prod`, else `memory`);
    /// see [`Durability`] and [`Config::durability`].
    #[serde(default)]
    pub durability: Option<Durability>,
    /// `SPOOL_DIR`: the spool's folder in `disk` mode, and the quarantine's parent in both
    /// modes (default `./data/spool`).
    #[serde(default = "defaults::spool_dir")]
    pub spool_dir: String,
    /// `SPOOL_MAX_BYTES`: cap on unconfirmed bytes in the spool, beyond which requests get
    /// `503` (default 10 GiB).
    #[serde(default = "defaults::spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// `BODY_MAX_BYTES`: largest request body accepted, as sent and after decompression,
    /// else `413` (default 10 MiB).
    #[serde(default = "defaults::body_max_bytes")]
    pub body_max_bytes: usize,
    /// `INFLIGHT_BODY_MAX_BYTES`: bytes all request bodies being received, decompressed or
    /// decoded may hold together, past which new requests get `503` with `Retry-After`
    /// before their body is read (default a quarter of `BUFFER_MAX_BYTES`; one request
    /// alone is always let through).
    #[serde(default)]
    pub inflight_body_max_bytes: Option<usize>,
    /// `CLIENT_TIMEOUT_MS`: longest a client may take to send a request's head, and then
    /// its body, before getting `408` (default 10 000, at least 1 000): slow-drip clients
    /// cannot hold connections and buffers forever.
    #[serde(default = "defaults::client_timeout_ms")]
    pub client_timeout_ms: u64,
    /// `MAX_EVENTS_PER_REQUEST`: most events in one request, else `413` (default 10 000).
    #[serde(default = "defaults::max_events_per_request")]
    pub max_events_per_request: usize,
    /// `INGEST_API_KEYS`: comma-separated keys, one of which `POST /v1/events` must carry
    /// (`Authorization: Bearer <key>` or `X-Api-Key: <key>`); empty (default) leaves the
    /// endpoint open. Never printed: `Debug` redacts it.
    #[serde(default)]
    pub ingest_api_keys: String,
    /// `ADMIN_HOST`: address of the admin listener (default `127.0.0.1`); used only with
    /// `ADMIN_PORT`.
    #[serde(default = "defaults::admin_host")]
    pub admin_host: String,
    /// `ADMIN_PORT`: when set, a second listener for operations routes (`/metrics`,
    /// `/v1/status`, `/`, `/swagger/`, `/openapi.json`) and probes, which are then no longer
    /// served on `HTTP_PORT`; ingest routes stay on `HTTP_PORT` only (default: none).
    #[serde(default)]
    pub admin_port: Option<u16>,
    /// `ADMIN_API_KEYS`: comma-separated keys operations routes then require (same headers
    /// as `INGEST_API_KEYS`), on whichever listener serves them; probes show error details
    /// only with one. Never printed: `Debug` redacts it.
    #[serde(default)]
    pub admin_api_keys: String,
    /// `TRUSTED_PROXIES`: comma-separated CIDRs (e.g. `10.0.0.0/8,::1/128`) whose
    /// `X-Forwarded-For` / `Forwarded` headers are believed; default none, so the client
    /// address is the TCP peer's.
    #[serde(default)]
    pub trusted_proxies: String,
    /// `SHUTDOWN_TIMEOUT_SECS`: budget from SIGTERM/SIGINT to exit, for finishing in-flight
    /// requests and the final flush together; past it the process logs what it could not
    /// write and exits non-zero (default 30).
    #[serde(default = "defaults::shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
}

/// Why the configuration could not be read; the message names the variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable could not be parsed as its type.
    #[error("invalid environment: {0}")]
    Parse(String),
    /// A variable parsed but is out of its allowed range.
    #[error("invalid {var}: {reason}")]
    Invalid {
        /// The environment variable's name.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

mod defaults {
    use super::{AppEnv, BufferMode};
    pub fn app_env() -> AppEnv {
        AppEnv::Dev
    }
    pub fn http_host() -> String {
        "0.0.0.0".into()
    }
    pub fn http_port() -> u16 {
        8080
    }
    pub fn admin_host() -> String {
        "127.0.0.1".into()
    }
    pub fn clickhouse_host() -> String {
        "127.0.0.1".into()
    }
    pub fn clickhouse_port() -> u16 {
        8123
    }
    pub fn clickhouse_user() -> String {
        "default".into()
    }
    pub fn clickhouse_name() -> String {
        "default".into()
    }
    pub fn clickhouse_table() -> String {
        "events".into()
    }
    pub fn clickhouse_timeout_ms() -> u64 {
        30_000
    }
    pub fn buffer_mode() -> BufferMode {
        BufferMode::Double
    }
    pub fn buffer_size() -> usize {
        10_000
    }
    pub fn buffer_flush_ms() -> u64 {
        1_000
    }
    pub fn buffer_min_interval_ms() -> u64 {
        1_000
    }
    pub fn buffer_max_bytes() -> usize {
        256 * 1024 * 1024
    }
    pub fn body_max_bytes() -> usize {
        10 * 1024 * 1024
    }
    pub fn client_timeout_ms() -> u64 {
        10_000
    }
    pub fn max_events_per_request() -> usize {
        10_000
    }
    pub fn spool_dir() -> String {
        "./data/spool".into()
    }
    pub fn spool_max_bytes() -> u64 {
        10 << 30
    }
    pub fn shutdown_timeout_secs() -> u64 {
        30
    }
}

/// The variables this module reads, for naming one in an error whose text lacks it.
const VARS: &[&str] = &[
    "APP_ENV",
    "HTTP_HOST",
    "HTTP_PORT",
    "HTTP_WORKERS",
    "CLICKHOUSE_HOST",
    "CLICKHOUSE_PORT",
    "CLICKHOUSE_USER",
    "CLICKHOUSE_PASSWORD",
    "CLICKHOUSE_NAME",
    "CLICKHOUSE_TABLE",
    "CLICKHOUSE_TIMEOUT_MS",
    "BUFFER_MODE",
    "BUFFER_SIZE",
    "BUFFER_FLUSH_MS",
    "BUFFER_MAX_BYTES",
    "BUFFER_MIN_INTERVAL_MS",
    "DURABILITY",
    "SPOOL_DIR",
    "SPOOL_MAX_BYTES",
    "BODY_MAX_BYTES",
    "INFLIGHT_BODY_MAX_BYTES",
    "MAX_EVENTS_PER_REQUEST",
    "CLIENT_TIMEOUT_MS",
    "SHUTDOWN_TIMEOUT_SECS",
    "INGEST_API_KEYS",
    "ADMIN_HOST",
    "ADMIN_PORT",
    "ADMIN_API_KEYS",
    "TRUSTED_PROXIES",
];

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Reads the given variables as if they were the environment (tests build configs this
    /// way without touching the process environment, which is shared between threads).
    pub fn from_vars<I>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| VARS.contains(&k.as_str()))
            .collect();
        let config: Config = envy::from_iter(vars.clone())
            .map_err(|e| ConfigError::Parse(name_variable(e.to_string(), &vars)))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var, reason: &str| {
            Err(ConfigError::Invalid {
                var,
                reason: reason.to_string(),
            })
        };
        if self.buffer_size == 0 {
            return invalid("BUFFER_SIZE", "must be at least 1");
        }
        if self.buffer_flush_ms == 0 {
            return invalid("BUFFER_FLUSH_MS", "must be at least 1");
        }
        if self.buffer_max_bytes < 1024 {
            return invalid("BUFFER_MAX_BYTES", "must be at least 1024");
        }
        if self.spool_max_bytes < 1 << 20 {
            return invalid("SPOOL_MAX_BYTES", "must be at least 1048576");
        }
        if self.spool_dir.is_empty() {
            return invalid("SPOOL_DIR", "must not be empty");
        }
        if self.body_max_bytes < 1024 {
            return invalid("BODY_MAX_BYTES", "must be at least 1024");
        }
        // actix checks request-head deadlines against a clock it refreshes about twice a
        // second; shorter limits would cut off ordinary clients.
        if self.client_timeout_ms < 1000 {
            return invalid("CLIENT_TIMEOUT_MS", "must be at least 1000");
        }
        if self.inflight_body_max_bytes.is_some_and(|n| n < 1024) {
            return invalid("INFLIGHT_BODY_MAX_BYTES", "must be at least 1024");
        }
        if self.max_events_per_request == 0 {
            return invalid("MAX_EVENTS_PER_REQUEST", "must be at least 1");
        }
        if self.http_workers == Some(0) {
            return invalid("HTTP_WORKERS", "must be at least 1");
        }
        if self.clickhouse_timeout_ms == 0 {
            return invalid("CLICKHOUSE_TIMEOUT_MS", "must be at least 1");
        }
        // A list that names no key (" , ") is a deployment mistake, not a wish for an open
        // endpoint: refuse it rather than run open.
        for (var, value) in [
            ("INGEST_API_KEYS", &self.ingest_api_keys),
            ("ADMIN_API_KEYS", &self.admin_api_keys),
        ] {
            if !value.trim().is_empty() && split_list(value).next().is_none() {
                return invalid(var, "is set but names no key");
            }
        }
        if !is_host(&self.clickhouse_host) {
            return invalid(
                "CLICKHOUSE_HOST",
                "must be a host name or an IP address, without scheme, port or path",
            );
        }
        if self.clickhouse_port == 0 {
            return invalid("CLICKHOUSE_PORT", "must not be 0");
        }
        if self
            .admin_port
            .is_some_and(|p| p != 0 && p == self.http_port)
        {
            return invalid("ADMIN_PORT", "must differ from HTTP_PORT");
        }
        if let Err(e) = self.trusted_proxy_nets() {
            return invalid("TRUSTED_PROXIES", &e);
        }
        // Both names are spliced into DDL and INSERT statements, so only plain identifiers
        // are allowed: no quoting games, no injection.
        for (var, value) in [
            ("CLICKHOUSE_NAME", &self.clickhouse_name),
            ("CLICKHOUSE_TABLE", &self.clickhouse_table),
        ] {
            if !is_identifier(value) {
                return invalid(var, "must match [A-Za-z_][A-Za-z0-9_]*");
            }
        }
        Ok(())
    }

    /// `DURABILITY`, or its default for `APP_ENV`.
    pub fn durability(&self) -> Durability {
        self.durability.unwrap_or(match self.app_env {
            AppEnv::Prod => Durability::Disk,
            AppEnv::Dev | AppEnv::Test => Durability::Memory,
        })
    }

    /// Where rejected rows go: `SPOOL_DIR/quarantine`.
    pub fn quarantine_dir(&self) -> std::path::PathBuf {
        std::path::Path::new(&self.spool_dir).join("quarantine")
    }

    /// The ClickHouse HTTP URL (without credentials).
    pub fn clickhouse_url(&self) -> String {
        match self.clickhouse_host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => format!("http://[{v6}]:{}", self.clickhouse_port),
            Err(_) => format!("http://{}:{}", self.clickhouse_host, self.clickhouse_port),
        }
    }

    /// `INGEST_API_KEYS`, split; empty when the endpoint is open.
    pub fn api_keys(&self) -> Vec<String> {
        split_list(&self.ingest_api_keys)
            .map(str::to_string)
            .collect()
    }

    /// `ADMIN_API_KEYS`, split; empty when operations routes need no key.
    pub fn admin_keys(&self) -> Vec<String> {
        split_list(&self.admin_api_keys)
            .map(str::to_string)
            .collect()
    }

    /// `TRUSTED_PROXIES`, parsed (a bare address is a single-host network).
    pub fn trusted_proxy_nets(&self) -> Result<Vec<ipnet::IpNet>, String> {
        split_list(&self.trusted_proxies)
            .map(|item| {
                item.parse::<ipnet::IpNet>()
                    .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("{item:?} is not a CIDR or an IP address"))
            })
            .collect()
    }

    /// `BUFFER_FLUSH_MS` as a duration.
    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.buffer_flush_ms)
    }

    /// `BUFFER_MIN_INTERVAL_MS` as a duration, capped at `BUFFER_FLUSH_MS` (the timer's
    /// promise wins).
    pub fn min_insert_interval(&self) -> Duration {
        Duration::from_millis(self.buffer_min_interval_ms.min(self.buffer_flush_ms))
    }

    /// `SHUTDOWN_TIMEOUT_SECS` as a duration.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// `INFLIGHT_BODY_MAX_BYTES`, or its default: a quarter of `BUFFER_MAX_BYTES`.
    pub fn inflight_body_max_bytes(&self) -> usize {
        self.inflight_body_max_bytes
            .unwrap_or(self.buffer_max_bytes / 4)
    }

    /// `CLIENT_TIMEOUT_MS` as a duration.
    pub fn client_timeout(&self) -> Duration {
        Duration::from_millis(self.client_timeout_ms)
    }

    /// `CLICKHOUSE_TIMEOUT_MS` as a duration.
    pub fn clickhouse_timeout(&self) -> Duration {
        Duration::from_millis(self.clickhouse_timeout_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        // No variables set gives every default; validation cannot fail on them.
        Self::from_vars(std::iter::empty()).expect("the defaults are valid")
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("app_env", &self.app_env)
            .field(
                "http",
                &format_args!("{}:{}", self.http_host, self.http_port),
            )
            .field("clickhouse", &self.clickhouse_url())
            .field("clickhouse_user", &self.clickhouse_user)
            .field("clickhouse_password", &"<redacted>")
            .field("clickhouse_name", &self.clickhouse_name)
            .field("clickhouse_table", &self.clickhouse_table)
            .field("buffer_mode", &self.buffer_mode)
            .field("buffer_size", &self.buffer_size)
            .field("buffer_flush_ms", &self.buffer_flush_ms)
            .field("buffer_max_bytes", &self.buffer_max_bytes)
            .field("durability", &self.durability())
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .field(
                "ingest_api_keys",
                &format_args!("<{} redacted>", self.api_keys().len()),
            )
            .field(
                "admin",
                &format_args!("{}:{:?}", self.admin_host, self.admin_port),
            )
            .field(
                "admin_api_keys",
                &format_args!("<{} redacted>", self.admin_keys().len()),
            )
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// A DNS name (letters, digits, `-`, `.`, `_`) or an IP address (IPv6 bare or in
/// brackets): nothing that could change the URL built around it.
fn is_host(s: &str) -> bool {
    let bracketed = s.strip_prefix('[').and_then(|s| s.strip_suffix(']'));
    if let Some(v6) = bracketed {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    s.parse::<std::net::IpAddr>().is_ok()
        || (!s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            }))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// envy names the variable for number parse errors but not for enum ones ("unknown variant
/// `fast`"); find the variable whose value the message quotes and name it.
fn name_variable(message: String, vars: &[(String, String)]) -> String {
    if VARS.iter().any(|v| message.contains(v)) {
        return message;
    }
    match vars
        .iter()
        .find(|(_, value)| !value.is_empty() && message.contains(&format!("`{value}`")))
    {
        Some((name, value)) => format!("{name}={value:?}: {message}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(c.app_env, AppEnv::Dev);
        assert_eq!(c.http_port, 8080);
        assert_eq!(c.clickhouse_url(), "http://127.0.0.1:8123");
        assert_eq!(c.clickhouse_table, "events");
        assert_eq!(c.buffer_mode, BufferMode::Double);
        assert_eq!(c.buffer_size, 10_000);
        assert_eq!(c.buffer_flush_ms, 1_000);
        assert_eq!(c.buffer_max_bytes, 268_435_456);
    }

    #[test]
    fn durability_defaults_to_disk_in_prod_only() {
        assert_eq!(config(&[]).unwrap().durability(), Durability::Memory);
        let prod = config(&[("APP_ENV", "prod")]).unwrap();
        assert_eq!(prod.durability(), Durability::Disk);
        let chosen = config(&[("APP_ENV", "prod"), ("DURABILITY", "memory")]).unwrap();
        assert_eq!(chosen.durability(), Durability::Memory);
        assert!(config(&[("DURABILITY", "paper")]).is_err());
        assert!(config(&[("SPOOL_MAX_BYTES", "10")]).is_err());
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (var, value) in [
            ("BUFFER_SIZE", "abc"),
            ("BUFFER_MODE", "fast"),
            ("APP_ENV", "staging"),
            ("HTTP_PORT", "70000"),
            ("BUFFER_SIZE", "0"),
            ("CLICKHOUSE_TABLE", "events; DROP TABLE x"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
        ] {
            let err = config(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = config(&[
            ("CLICKHOUSE_PASSWORD", "hunter2"),
            ("INGEST_API_KEYS", "key-one, key-two"),
        ])
        .unwrap();
        assert_eq!(c.clickhouse_password, "hunter2");
        assert_eq!(c.api_keys(), ["key-one", "key-two"]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("key-"),
            "{shown}"
        );
    }

    #[test]
    fn hosts_and_key_lists_are_checked_at_start() {
        for (var, value) in [
            ("CLICKHOUSE_HOST", "127.0.0.1/evil?x="),
            ("CLICKHOUSE_HOST", "user@host"),
            ("CLICKHOUSE_HOST", "http://h"),
            ("CLICKHOUSE_HOST", ""),
            ("CLICKHOUSE_PORT", "0"),
            ("INGEST_API_KEYS", " , "),
            ("ADMIN_API_KEYS", ","),
            ("ADMIN_PORT", "8080"),
        ] {
            let err = config(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}={value}: {err}");
        }
        for host in [
            "localhost",
            "clickhouse-0.ch.svc",
            "10.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(config(&[("CLICKHOUSE_HOST", host)]).is_ok(), "{host}");
        }
        let c = config(&[("ADMIN_API_KEYS", "a, b"), ("ADMIN_PORT", "9090")]).unwrap();
        assert_eq!(c.admin_keys(), ["a", "b"]);
        assert!(!format!("{c:?}").contains("a, b"));
    }

    #[test]
    fn trusted_proxies_parse_as_networks() {
        let c = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, ::1, 192.168.1.7")]).unwrap();
        let nets = c.trusted_proxy_nets().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
    }
}
