//! Configuration: every setting comes from an environment variable, read once at start-up.
//!
//! Each setting is declared once, in the `settings!` table below: its type, default and
//! meaning. The `Config` struct, `Default`, the variables read, `event-ingest --help` and the
//! README check are generated from that table. Names are part of the public interface
//! (scripts, compose files and tests rely on them) and never renamed. Every variable has a
//! default, so `event-ingest` starts with none set. A bad value stops start-up with a
//! one-line error that names the variable.
//!
//! May import: nothing of the service. Read by the application's assembly (`app`) alone,
//! which hands each stage the settings it needs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cluster;
pub mod file;
mod secret;
mod table;

pub use cluster::{HostPort, SHARDING_COLUMNS};
pub use secret::Secret;
use table::settings;
pub use table::{Setting, help_text};

/// Where the process runs; picks defaults such as the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// In memory: lost if the process dies before the flush (default in `dev` and `test`).
    Memory,
    /// Synced to the spool on disk (`SPOOL_DIR`) first: survives crashes and restarts
    /// (default in `prod`).
    Disk,
}

/// How insert bodies travel to ClickHouse (`CLICKHOUSE_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// ClickHouse's LZ4 block framing: a third fewer bytes on the wire, for the gateway's
    /// CPU to compress and the server's to decompress.
    Lz4,
    /// Plain bytes: no decompression on the server, more bytes on the wire.
    None,
}

settings! {
    /// `dev`, `test` or `prod`: picks the default log level (`info`; `warn` in `test`;
    /// `prod` logs JSON lines) and the default `DURABILITY`.
    app_env: AppEnv = AppEnv::Dev, "dev";
    /// A TOML file for what does not fit in environment variables: the API keys
    /// (`[[keys]]`: name, secret or secret_sha256, role, tables, origins, events_per_second,
    /// burst). Read at start-up (a bad file stops it) and again when it changes or on
    /// `SIGHUP` (a bad file then keeps the keys in use, with a `warn` line).
    config_file: String = String::new(), "empty (none)";
    /// How long a request's answer is remembered by its `Idempotency-Key` (a resend within
    /// it gets that answer and stores nothing again).
    idempotency_window_secs: u64 = 3600, "3600";
    /// Most bytes the remembered answers and their keys take; past it the oldest go.
    idempotency_max_bytes: usize = 64 << 20, "67108864";
    /// Page origins (`https://app.example`) whose requests with a header key get CORS
    /// answers; a browser key's own `origins` always do.
    cors_allowed_origins: String = String::new(), "empty (browser keys' origins only)";
    /// Address to listen on.
    http_host: String = "0.0.0.0".into(), "0.0.0.0";
    /// Port to listen on; `0` picks a free one (the start-up log line says which).
    http_port: u16 = 8080, "8080";
    /// A PEM certificate (chain) for the listeners: with `TLS_KEY_FILE`, `HTTP_PORT` (and
    /// `ADMIN_PORT`) serve HTTPS, with HTTP/2 offered beside HTTP/1.1. Read again when the
    /// files change or on `SIGHUP`: a renewal needs no restart.
    tls_cert_file: String = String::new(), "empty (plain HTTP)";
    /// The PEM private key of `TLS_CERT_FILE`.
    tls_key_file: String = String::new(), "empty";
    /// actix worker threads.
    http_workers: Option<usize> = None, "one per CPU core";
    /// ClickHouse HTTP interface host; `https://<host>` speaks HTTPS (as managed
    /// ClickHouse, e.g. ClickHouse Cloud, requires), `http://<host>` or the host alone plain
    /// HTTP.
    clickhouse_host: String = "127.0.0.1".into(), "127.0.0.1";
    /// ClickHouse HTTP interface port.
    clickhouse_port: Option<u16> = None, "8123, or 8443 with https://";
    /// A PEM bundle of the CAs to trust for HTTPS to ClickHouse, instead of the system's
    /// roots (or, where it has none, the bundled Mozilla set).
    clickhouse_ca_file: String = String::new(), "empty (the system's roots)";
    /// A PEM client certificate (chain) to present to a ClickHouse, or a proxy in front of
    /// it, that requires one; with `CLICKHOUSE_CLIENT_KEY_FILE`.
    clickhouse_client_cert_file: String = String::new(), "empty (none)";
    /// The PEM private key of `CLICKHOUSE_CLIENT_CERT_FILE`.
    clickhouse_client_key_file: String = String::new(), "empty (none)";
    /// Accept any certificate from ClickHouse (testing only: a `warn` line at start-up,
    /// and shown in `/v1/status`).
    clickhouse_tls_skip_verify: bool = false, "false";
    /// A cluster's HTTP endpoints instead of `CLICKHOUSE_HOST`/`CLICKHOUSE_PORT`: `,`
    /// between replicas of one shard, `;` between shards, in the cluster's shard order
    /// (`a:8123,b:8123;c:8123` is shard 1 = a, b and shard 2 = c). Several hosts need
    /// `CLICKHOUSE_CLUSTER`.
    clickhouse_hosts: String = String::new(), "empty (CLICKHOUSE_HOST:CLICKHOUSE_PORT)";
    /// The cluster's name in the servers' `remote_servers`. Set: each shard gets its own
    /// lane (buffer, flusher, spool `SPOOL_DIR/shard-<n>`), rows go to `<table>_local`
    /// (`ReplicatedMergeTree`) on one replica of their shard, and `<table>` is created as
    /// the `Distributed` table to query.
    clickhouse_cluster: String = String::new(), "empty (one server)";
    /// The column whose `cityHash64(toString(<column>)) % shards` picks a row's shard, as
    /// the `Distributed` table's sharding expression: `device_id`, `device_os`, `session`,
    /// `sequence`, `event`, `param_int` or `param_str`.
    clickhouse_sharding_key: String = "device_id".into(), "device_id";
    /// ClickHouse user.
    clickhouse_user: String = "default".into(), "default";
    /// ClickHouse password; never printed or logged.
    clickhouse_password: Secret = Secret::default(), "empty";
    /// Database, created at start-up if missing.
    clickhouse_name: String = "default".into(), "default";
    /// Table, created at start-up if missing.
    clickhouse_table: String = "events".into(), "events";
    /// Longest wait in milliseconds for one ClickHouse request, after which it counts as
    /// failed and is retried.
    clickhouse_timeout_ms: u64 = 30_000, "30000";
    /// Insert bodies sent as they are (`none`) or `lz4`-compressed (ClickHouse's block
    /// framing). `none` by measurement: LZ4 cost the gateway more CPU per row than it saved
    /// ClickHouse; `lz4` sends a third fewer bytes, worth it over a slow or metered link.
    clickhouse_compression: Compression = Compression::None, "none";
    /// `double` (buffered batches), `direct` (one insert per request) or `discard`
    /// (benchmarks only: parse and drop).
    buffer_mode: BufferMode = BufferMode::Double, "double";
    /// Events in the active half that trigger a swap.
    buffer_size: usize = 10_000, "10000";
    /// Longest time in milliseconds an event waits in the active half.
    buffer_flush_ms: u64 = 1_000, "1000";
    /// Shortest time in milliseconds between a swap and the next one triggered by size
    /// (capped at `BUFFER_FLUSH_MS`; `0` disables): at high rates the halves grow instead of
    /// inserts multiplying, keeping about one insert per second.
    buffer_min_interval_ms: u64 = 1_000, "1000";
    /// Cap in bytes on buffered data of the whole process, both halves of every lane
    /// together (each table's lane, each shard's, gets an even share); past its share a lane's
    /// requests get `503` (`memory`) or go to the spool only (`disk`).
    buffer_max_bytes: usize = 256 * 1024 * 1024, "268435456 (256 MiB)";
    /// Longest time in milliseconds a request waits for room when the buffer (`disk`: the
    /// spool) is full, before its `503` (before its body is decoded, and again at the append
    /// if other requests took the room meanwhile); `0` refuses at once. Waiting requests hold at most
    /// a quarter of `BUFFER_MAX_BYTES` per lane; past it, and after the shutdown signal,
    /// they are refused at once.
    buffer_full_wait_ms: u64 = 5_000, "5000";
    /// What `200` promises: `memory` (buffered in the process) or `disk` (synced to the
    /// spool first).
    durability: Option<Durability> = None, "disk in prod, else memory";
    /// The spool's folder (`disk` mode; one process per folder, enforced with a lock file)
    /// and the quarantine's parent (`SPOOL_DIR/quarantine`, both modes).
    spool_dir: String = "./data/spool".into(), "./data/spool";
    /// Cap in bytes on unconfirmed data in the spool; past it requests get `503`.
    spool_max_bytes: u64 = 10 << 30, "10737418240 (10 GiB)";
    /// Largest request body in bytes, as sent and after decompression (`413` past it).
    body_max_bytes: usize = 10 * 1024 * 1024, "10485760 (10 MiB)";
    /// Bytes all request bodies being received, decompressed or decoded may hold together;
    /// past it new requests get `503` with `Retry-After` before their body is read (one
    /// request alone is always let through).
    inflight_body_max_bytes: Option<usize> = None, "a quarter of BUFFER_MAX_BYTES";
    /// Time in milliseconds a client has to send a request's head, then its body (`408`
    /// past it); at least 1000. Slow-drip clients cannot hold connections and buffers.
    client_timeout_ms: u64 = 10_000, "10000";
    /// Most client connections open at once, every listener together; past it a new
    /// connection is answered `503` and closed. Each connection holds at most 64 KiB of
    /// answers its client has not read: past that its requests are not read.
    http_max_connections: usize = 10_000, "10000";
    /// Most events in one request (`413` past it).
    max_events_per_request: usize = 10_000, "10000";
    /// Comma-separated keys, one of which `POST /v1/events` must carry
    /// (`Authorization: Bearer <key>` or `X-Api-Key: <key>`); empty leaves the endpoint
    /// open (warned about in `prod`). Compared in constant time, never printed or logged.
    ingest_api_keys: Secret = Secret::default(), "empty";
    /// Address of the admin listener; used only with `ADMIN_PORT`.
    admin_host: String = "127.0.0.1".into(), "127.0.0.1";
    /// When set, a second listener for the operations routes (`/metrics`, `/v1/status`, `/`,
    /// `/swagger/`, `/openapi.json`) and the probes, which are then no longer served on
    /// `HTTP_PORT`; ingest routes stay on `HTTP_PORT` only.
    admin_port: Option<u16> = None, "none";
    /// Comma-separated keys the operations routes then require (same headers as
    /// `INGEST_API_KEYS`), on whichever listener serves them; probes show error details only
    /// with one. Never printed or logged.
    admin_api_keys: Secret = Secret::default(), "empty";
    /// Comma-separated CIDRs or addresses (e.g. `10.0.0.0/8,::1`) whose `X-Forwarded-For`
    /// and `Forwarded` headers are believed; empty: the client is the TCP peer.
    trusted_proxies: String = String::new(), "empty";
    /// Comma-separated tables clients may write to with `POST /v1/tables/{table}` (names in
    /// `CLICKHOUSE_NAME`, or `db.table`); each has its own buffer, flush and spool
    /// (`SPOOL_DIR/table-<name>`). The events table is always allowed; the others must exist.
    ingest_tables: String = String::new(), "the events table alone";
    /// Column the service fills with the request's arrival time in the tables of
    /// `INGEST_TABLES`
    /// (`DateTime`/`DateTime64`); a client's value for it is ignored.
    server_time_column: String = "server_time".into(), "server_time";
    /// Column the service fills with the client's address in the tables of `INGEST_TABLES`
    /// (`IPv6`, `IPv4`, `FixedString(16)` or `String`); a client's value for it is ignored.
    client_ip_column: String = "ip".into(), "ip";
    /// Longest time in seconds before the columns of a table of `INGEST_TABLES` are read
    /// again (an added column is accepted within it); also how often a missing table is looked for.
    schema_refresh_secs: u64 = 30, "30";
    /// Budget in seconds from SIGTERM/SIGINT to exit, for in-flight requests and the final
    /// flush together; past it the process says what it could not write and exits non-zero.
    shutdown_timeout_secs: u64 = 30, "30";
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

impl Config {
    /// The tables of `INGEST_TABLES` other than the events table, as configured (`name` or
    /// `db.name`), without duplicates.
    pub fn extra_tables(&self) -> Vec<String> {
        let mut tables: Vec<String> = Vec::new();
        for name in self.ingest_tables.split(',').map(str::trim) {
            let events = [
                self.clickhouse_table.clone(),
                format!("{}.{}", self.clickhouse_name, self.clickhouse_table),
            ];
            if !name.is_empty()
                && !events.contains(&name.to_string())
                && !tables.iter().any(|t| t == name)
            {
                tables.push(name.to_string());
            }
        }
        tables
    }

    /// How many lanes the process runs: every table's (the events table's and each of
    /// `INGEST_TABLES`), one per
    /// shard each in a cluster. They share `BUFFER_MAX_BYTES` evenly, and in `disk` mode
    /// (a spool each under `SPOOL_DIR`) the volume's free space.
    pub fn lanes(&self) -> u64 {
        let tables = 1 + self.extra_tables().len();
        let shards = match self.is_cluster() {
            true => self.clickhouse_shards().map_or(1, |s| s.len().max(1)),
            false => 1,
        };
        (tables * shards) as u64
    }

    /// Tables of `INGEST_TABLES` named like the events table but in another database
    /// (`other.events`): each is a table of its own, written through
    /// `/v1/tables/other.events`, not the events table; said at start-up because an
    /// operator writing it most likely meant the events table.
    pub fn events_namesakes(&self) -> Vec<String> {
        self.extra_tables()
            .into_iter()
            .filter(|name| {
                name.split_once('.').is_some_and(|(db, table)| {
                    table == self.clickhouse_table && db != self.clickhouse_name
                })
            })
            .collect()
    }

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
        // Only this program's variables: the rest of the environment is none of its business
        // (and envy would try to read a stray `BUFFER_SIZE_X` as nothing, harmlessly, but a
        // stray variable named like a field of another type could fail the parse).
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(k, _)| SETTINGS.iter().any(|s| s.var() == *k))
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
        if self.http_max_connections == 0 {
            return invalid("HTTP_MAX_CONNECTIONS", "must be at least 1");
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
            ("INGEST_API_KEYS", self.ingest_api_keys.expose()),
            ("ADMIN_API_KEYS", self.admin_api_keys.expose()),
        ] {
            if !value.trim().is_empty() && split_list(value).next().is_none() {
                return invalid(var, "is set but names no key");
            }
        }
        if !is_host(cluster::strip_scheme(&self.clickhouse_host).1) {
            return invalid(
                "CLICKHOUSE_HOST",
                "must be a host name or an IP address, optionally after https:// or http://, \
                 without port or path",
            );
        }
        if let Some(bad) = split_list(&self.cors_allowed_origins).find(|o| !file::is_origin(o)) {
            return Err(ConfigError::Invalid {
                var: "CORS_ALLOWED_ORIGINS",
                reason: format!("{bad:?} is not an origin (scheme://host[:port], no path)"),
            });
        }
        if self.clickhouse_port == Some(0) {
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
        let shards = self.clickhouse_shards();
        if let Err(e) = &shards {
            return invalid("CLICKHOUSE_HOSTS", e);
        }
        let hosts: usize = shards.map(|s| s.iter().map(Vec::len).sum()).unwrap_or(0);
        if hosts > 1 && self.clickhouse_cluster.is_empty() {
            return invalid(
                "CLICKHOUSE_HOSTS",
                "names several hosts: set CLICKHOUSE_CLUSTER to the cluster they form",
            );
        }
        if self.is_cluster() && self.buffer_mode == BufferMode::Direct {
            return invalid(
                "CLICKHOUSE_CLUSTER",
                "needs BUFFER_MODE=double (direct mode writes to one server)",
            );
        }
        if !self.clickhouse_cluster.is_empty() && !is_identifier(&self.clickhouse_cluster) {
            return invalid("CLICKHOUSE_CLUSTER", "must match [A-Za-z_][A-Za-z0-9_]*");
        }
        if !SHARDING_COLUMNS.contains(&self.clickhouse_sharding_key.as_str()) {
            return invalid(
                "CLICKHOUSE_SHARDING_KEY",
                &format!("must be one of {}", SHARDING_COLUMNS.join(", ")),
            );
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

    /// The ClickHouse URL (without credentials): `http://` or `https://`, host, port.
    pub fn clickhouse_url(&self) -> String {
        self.clickhouse_endpoint().url()
    }

    /// `CLICKHOUSE_HOST` and `CLICKHOUSE_PORT` as one endpoint (the port by the scheme when
    /// not set).
    fn clickhouse_endpoint(&self) -> HostPort {
        let (tls, host) = cluster::strip_scheme(&self.clickhouse_host);
        HostPort {
            host: host.trim_matches(['[', ']']).to_string(),
            port: self.clickhouse_port.unwrap_or(cluster::default_port(tls)),
            tls,
        }
    }

    /// Whether any ClickHouse endpoint is reached over HTTPS.
    pub fn clickhouse_uses_tls(&self) -> bool {
        self.clickhouse_shards()
            .is_ok_and(|shards| shards.iter().flatten().any(|h| h.tls))
    }

    /// The ClickHouse hosts by shard: `CLICKHOUSE_HOSTS` parsed, or the one
    /// `CLICKHOUSE_HOST:CLICKHOUSE_PORT` when it is empty.
    pub fn clickhouse_shards(&self) -> Result<Vec<Vec<HostPort>>, String> {
        if self.clickhouse_hosts.trim().is_empty() {
            return Ok(vec![vec![self.clickhouse_endpoint()]]);
        }
        cluster::parse_hosts(&self.clickhouse_hosts, self.clickhouse_port)
    }

    /// Whether `CLICKHOUSE_CLUSTER` is set: lanes per shard, replicated tables.
    pub fn is_cluster(&self) -> bool {
        !self.clickhouse_cluster.is_empty()
    }

    /// This configuration aimed at one host of the cluster (its sinks are built from it).
    pub fn for_host(&self, host: &HostPort) -> Config {
        Config {
            clickhouse_host: match host.tls {
                true => format!("https://{}", host.host),
                false => host.host.clone(),
            },
            clickhouse_port: Some(host.port),
            ..self.clone()
        }
    }

    /// `INGEST_API_KEYS`, split; empty when the endpoint is open.
    pub fn api_keys(&self) -> Vec<String> {
        split_list(self.ingest_api_keys.expose())
            .map(str::to_string)
            .collect()
    }

    /// `ADMIN_API_KEYS`, split; empty when operations routes need no key.
    pub fn admin_keys(&self) -> Vec<String> {
        split_list(self.admin_api_keys.expose())
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

    /// `event-ingest --print-config`: every setting's effective value, one `VAR=value` line
    /// each in table order, secrets redacted; unset optional settings say their default.
    pub fn print(&self) -> String {
        let values = serde_json::to_value(self).unwrap_or_default();
        let mut out: String = SETTINGS
            .iter()
            .map(|setting| {
                let value = match &values[setting.field] {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => format!("(unset: {})", setting.default),
                    other => other.to_string(),
                };
                format!("{}={value}\n", setting.var())
            })
            .collect();
        if !self.config_file.is_empty() {
            // The file as read, secrets redacted.
            out.push_str(&format!("\n# {}\n", self.config_file));
            match file::FileSettings::read(self.config_file.as_ref()) {
                Ok(settings) => out.push_str(&toml::to_string(&settings).unwrap_or_default()),
                Err(why) => out.push_str(&format!("# not readable: {why}\n")),
            }
        }
        out
    }

    /// `CORS_ALLOWED_ORIGINS`, split.
    pub fn cors_origins(&self) -> Vec<String> {
        split_list(&self.cors_allowed_origins)
            .map(str::to_string)
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

    /// `BUFFER_FULL_WAIT_MS` as a duration.
    pub fn full_wait(&self) -> Duration {
        Duration::from_millis(self.buffer_full_wait_ms)
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
    if SETTINGS.iter().any(|s| message.contains(&s.var())) {
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
    fn the_events_tables_namesake_in_another_database_is_told_apart() {
        let c = config(&[
            ("CLICKHOUSE_NAME", "analytics"),
            (
                "INGEST_TABLES",
                "events,analytics.events,other.events,other.clicks",
            ),
        ])
        .unwrap();
        assert_eq!(c.extra_tables(), vec!["other.events", "other.clicks"]);
        assert_eq!(c.events_namesakes(), vec!["other.events"]);
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
        assert_eq!(c.clickhouse_password.expose(), "hunter2");
        assert_eq!(c.api_keys(), ["key-one", "key-two"]);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("key-"),
            "{shown}"
        );
    }

    /// A value other than the default for every setting: a setting added to the table
    /// without one here fails `every_setting_is_read_from_its_variable`.
    const NON_DEFAULT: &[(&str, &str)] = &[
        ("APP_ENV", "test"),
        ("HTTP_HOST", "127.0.0.2"),
        ("HTTP_PORT", "8081"),
        ("HTTP_WORKERS", "3"),
        ("HTTP_MAX_CONNECTIONS", "500"),
        ("CLICKHOUSE_HOST", "ch.internal"),
        ("CLICKHOUSE_PORT", "8124"),
        ("CONFIG_FILE", "/etc/event-ingest.toml"),
        ("IDEMPOTENCY_WINDOW_SECS", "60"),
        ("IDEMPOTENCY_MAX_BYTES", "1048576"),
        ("CORS_ALLOWED_ORIGINS", "https://app.example"),
        ("TLS_CERT_FILE", "/etc/ssl/listener.pem"),
        ("TLS_KEY_FILE", "/etc/ssl/listener.key"),
        ("CLICKHOUSE_CA_FILE", "/etc/ssl/ch-ca.pem"),
        ("CLICKHOUSE_CLIENT_CERT_FILE", "/etc/ssl/client.pem"),
        ("CLICKHOUSE_CLIENT_KEY_FILE", "/etc/ssl/client.key"),
        ("CLICKHOUSE_TLS_SKIP_VERIFY", "true"),
        ("CLICKHOUSE_HOSTS", "ch-1:8123"),
        ("CLICKHOUSE_CLUSTER", "events_cluster"),
        ("CLICKHOUSE_SHARDING_KEY", "session"),
        ("CLICKHOUSE_USER", "ingest"),
        ("CLICKHOUSE_PASSWORD", "pw"),
        ("CLICKHOUSE_NAME", "analytics"),
        ("CLICKHOUSE_TABLE", "app_events"),
        ("CLICKHOUSE_TIMEOUT_MS", "5000"),
        ("CLICKHOUSE_COMPRESSION", "lz4"),
        ("BUFFER_MODE", "direct"),
        ("BUFFER_SIZE", "5"),
        ("BUFFER_FLUSH_MS", "5"),
        ("BUFFER_MIN_INTERVAL_MS", "0"),
        ("BUFFER_MAX_BYTES", "4096"),
        ("BUFFER_FULL_WAIT_MS", "0"),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", "/var/spool/x"),
        ("SPOOL_MAX_BYTES", "2097152"),
        ("BODY_MAX_BYTES", "2048"),
        ("CLIENT_TIMEOUT_MS", "2000"),
        ("MAX_EVENTS_PER_REQUEST", "7"),
        ("INGEST_API_KEYS", "k"),
        ("INFLIGHT_BODY_MAX_BYTES", "4096"),
        ("ADMIN_HOST", "0.0.0.0"),
        ("ADMIN_PORT", "9090"),
        ("ADMIN_API_KEYS", "a"),
        ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ("SHUTDOWN_TIMEOUT_SECS", "9"),
        ("INGEST_TABLES", "pageviews"),
        ("SERVER_TIME_COLUMN", "arrived"),
        ("CLIENT_IP_COLUMN", "addr"),
        ("SCHEMA_REFRESH_SECS", "5"),
    ];

    /// Settings as `--print-config` shows them (secrets redacted), by field.
    fn shown(c: &Config) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(c).unwrap() {
            serde_json::Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn every_setting_is_read_from_its_variable() {
        let defaults = shown(&Config::default());
        assert_eq!(defaults.len(), SETTINGS.len());
        for setting in SETTINGS {
            let var = setting.var();
            let Some((_, value)) = NON_DEFAULT.iter().find(|(v, _)| *v == var) else {
                panic!("{var}: add a non-default value to NON_DEFAULT");
            };
            let c = config(&[(&var, value)]).unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            let secret = matches!(
                var.as_str(),
                "CLICKHOUSE_PASSWORD" | "INGEST_API_KEYS" | "ADMIN_API_KEYS"
            );
            let changed = if secret {
                format!("{:?}", shown(&c)[setting.field])
                    != format!("{:?}", defaults[setting.field])
            } else {
                shown(&c)[setting.field] != defaults[setting.field]
            };
            assert!(changed, "{var}={value} did not change `{}`", setting.field);
        }
        assert_eq!(
            NON_DEFAULT.len(),
            SETTINGS.len(),
            "NON_DEFAULT lists a removed setting"
        );
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(format!("{c:?}"), format!("{:?}", config(&[]).unwrap()));
    }

    /// The variables named in the first column of the README's configuration table.
    fn readme_variables() -> std::collections::BTreeSet<String> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has a Configuration section");
        section
            .lines()
            .filter(|line| line.starts_with("| `"))
            .flat_map(|line| {
                let first = line.split('|').nth(1).unwrap_or_default();
                first
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn readme_table_lists_exactly_the_settings() {
        let documented = readme_variables();
        for setting in SETTINGS {
            assert!(
                documented.contains(&setting.var()),
                "README lacks {}",
                setting.var()
            );
        }
        // RUST_LOG is env_logger's, read by `logging`, not a setting of this table.
        for var in &documented {
            assert!(
                var == "RUST_LOG" || SETTINGS.iter().any(|s| s.var() == *var),
                "README names {var}, which the code does not read"
            );
        }
    }

    #[test]
    fn help_lists_every_setting_with_its_default() {
        let help = help_text(SETTINGS);
        for setting in SETTINGS {
            let line = format!("{}  (default: {})", setting.var(), setting.default);
            assert!(help.contains(&line), "missing: {line}");
            assert!(
                !setting.help.trim().is_empty(),
                "{} has no meaning",
                setting.var()
            );
        }
    }

    #[test]
    fn hosts_and_key_lists_are_checked_at_start() {
        for (var, value) in [
            ("CLICKHOUSE_HOST", "127.0.0.1/evil?x="),
            ("CLICKHOUSE_HOST", "user@host"),
            ("CLICKHOUSE_HOST", "ftp://h"),
            ("CLICKHOUSE_HOST", "https://h:8443"),
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
            "http://localhost",
            "https://ch.example.cloud",
        ] {
            assert!(config(&[("CLICKHOUSE_HOST", host)]).is_ok(), "{host}");
        }
        // `https://` speaks HTTPS, on 8443 unless CLICKHOUSE_PORT says otherwise.
        let cloud = config(&[("CLICKHOUSE_HOST", "https://ch.example.cloud")]).unwrap();
        assert_eq!(cloud.clickhouse_url(), "https://ch.example.cloud:8443");
        assert!(cloud.clickhouse_uses_tls());
        let port = config(&[
            ("CLICKHOUSE_HOST", "https://h"),
            ("CLICKHOUSE_PORT", "9440"),
        ]);
        assert_eq!(port.unwrap().clickhouse_url(), "https://h:9440");
        assert_eq!(
            config(&[]).unwrap().clickhouse_url(),
            "http://127.0.0.1:8123"
        );

        let c = config(&[("ADMIN_API_KEYS", "a, b"), ("ADMIN_PORT", "9090")]).unwrap();
        assert_eq!(c.admin_keys(), ["a", "b"]);
        assert!(!format!("{c:?}").contains("a, b"));
    }

    #[test]
    fn cluster_settings_are_checked_at_start() {
        let single = config(&[]).unwrap();
        assert!(!single.is_cluster());
        assert_eq!(single.clickhouse_shards().unwrap().len(), 1);
        let c = config(&[
            ("CLICKHOUSE_HOSTS", "a:1,b:2;c:3"),
            ("CLICKHOUSE_CLUSTER", "events_cluster"),
        ])
        .unwrap();
        assert!(c.is_cluster());
        let shards = c.clickhouse_shards().unwrap();
        assert_eq!(shards.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(c.for_host(&shards[1][0]).clickhouse_url(), "http://c:3");
        for (vars, var) in [
            (&[("CLICKHOUSE_HOSTS", "a:1;b:2")][..], "CLICKHOUSE_HOSTS"),
            (&[("CLICKHOUSE_HOSTS", "a:1;;b:2")][..], "CLICKHOUSE_HOSTS"),
            (&[("CLICKHOUSE_CLUSTER", "x-y")][..], "CLICKHOUSE_CLUSTER"),
            (
                &[("CLICKHOUSE_SHARDING_KEY", "ip")][..],
                "CLICKHOUSE_SHARDING_KEY",
            ),
        ] {
            let err = config(vars).unwrap_err().to_string();
            assert!(err.contains(var), "{vars:?}: {err}");
        }
        // The tables of INGEST_TABLES are sharded by their own Distributed tables (read at start-up).
        let tables = config(&[
            ("CLICKHOUSE_HOSTS", "a:1;b:2"),
            ("CLICKHOUSE_CLUSTER", "c"),
            ("INGEST_TABLES", "events,pageviews"),
        ])
        .unwrap();
        assert_eq!(tables.extra_tables(), vec!["pageviews"]);
    }

    #[test]
    fn every_lane_has_a_spool_sharing_the_volume() {
        assert_eq!(config(&[]).unwrap().lanes(), 1);
        let tables = [("INGEST_TABLES", "events,pageviews,clicks")];
        assert_eq!(config(&tables).unwrap().lanes(), 3);
        let cluster = config(&[
            tables[0],
            ("CLICKHOUSE_HOSTS", "a:1,b:1;c:1"),
            ("CLICKHOUSE_CLUSTER", "c"),
        ])
        .unwrap();
        assert_eq!(cluster.lanes(), 6, "three tables of two shards");
    }

    #[test]
    fn trusted_proxies_parse_as_networks() {
        let c = config(&[("TRUSTED_PROXIES", "10.0.0.0/8, ::1, 192.168.1.7")]).unwrap();
        let nets = c.trusted_proxy_nets().unwrap();
        assert_eq!(nets.len(), 3);
        assert!(nets[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
    }
}
