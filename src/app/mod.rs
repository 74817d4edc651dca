//! Start-up and run: bind the listeners, reach ClickHouse, start the storage (buffer, spool,
//! flusher), serve until a signal, then shut down through the flusher's guard.
//!
//! [`Application::build`] is a list of named steps; what each setting means is in the
//! README and `event-ingest --help`, not in log lines.
//!
//! The first stage: it alone reads the configuration, builds every other stage from it and
//! wires them. May import every stage and shared module.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle};
use actix_web::web;

use crate::config::file::FileSettings;
use crate::config::{AppEnv, BufferMode, Config, Durability};
use crate::http::access::Gate;
use crate::http::events::Tables;
use crate::http::keys::{KeyRing, KeySpec, Role};
use crate::http::server::{ServerSettings, serve};
use crate::http::tls::ListenerTls;
use crate::http::{self, AppState};
use crate::lane::ShutdownReport;
use crate::lane::flusher::FlusherGuard;
use crate::lane::ingest::{Ingest, ServerCheck};
use crate::lane::spool::{SpoolError, WriterGuard};
use crate::sink::{self, TableSink};
use crate::stats::Stats;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `HTTP_HOST:HTTP_PORT` or `ADMIN_HOST:ADMIN_PORT`.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start: {0}")]
    Io(#[from] std::io::Error),
    /// `disk` mode: the spool could not be opened.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// In a cluster, `SPOOL_DIR` itself holds rows a run without `CLICKHOUSE_CLUSTER`
    /// acknowledged and did not write: the shard lanes would never read them.
    #[error(
        "{dir} holds {bytes} bytes of events a run without CLICKHOUSE_CLUSTER acknowledged and \
         did not write; start once without CLICKHOUSE_CLUSTER to deliver them, then with it"
    )]
    SingleServerBacklog {
        /// `SPOOL_DIR`.
        dir: String,
        /// Unwritten bytes in it.
        bytes: u64,
    },
    /// A spool this configuration does not open still holds acknowledged rows.
    #[error(
        "{dir} holds {bytes} bytes of acknowledged events this configuration would never \
         deliver ({setting}); start with the settings that wrote them to deliver them, or move \
         the folder out of SPOOL_DIR to discard them"
    )]
    StrandedSpool {
        /// The spool's folder.
        dir: String,
        /// Unwritten bytes in it.
        bytes: u64,
        /// The setting that leaves it unread.
        setting: String,
    },
    /// In a cluster, a table's `Distributed` sharding expression cannot be evaluated
    /// by the gateway (the table and the expression named).
    #[error("INGEST_TABLES: {0}")]
    TableSharding(String),
    /// A table's settings (`CONFIG_FILE`'s `[[tables]]`) do not fit it, or name a table
    /// the service does not write.
    #[error("CONFIG_FILE [[tables]]: {0}")]
    TableSettings(String),
    /// The TLS files for HTTPS to ClickHouse cannot be used.
    #[error("HTTPS to ClickHouse: {0}")]
    ClickHouseTls(#[from] sink::TlsError),
    /// `CONFIG_FILE` cannot be read or holds a mistake (the file and the mistake named).
    #[error("CONFIG_FILE: {0}")]
    ConfigFile(String),
    /// `TLS_CERT_FILE`/`TLS_KEY_FILE` cannot be used.
    #[error("TLS_CERT_FILE/TLS_KEY_FILE: {0}")]
    ListenerTls(String),
    /// A ClickHouse server's certificate is not accepted: a retry would not change that.
    #[error("ClickHouse at {url}: certificate not accepted ({reason})")]
    Certificate {
        /// The server's URL.
        url: String,
        /// What the verification said (unknown CA, a name it does not cover, expired).
        reason: String,
    },
    /// The cluster's hosts disagree with `CLICKHOUSE_HOSTS` (which host, and how).
    #[error("CLICKHOUSE_HOSTS does not match cluster {cluster}: {problems}")]
    Cluster {
        /// `CLICKHOUSE_CLUSTER`.
        cluster: String,
        /// Each disagreeing host and what it says.
        problems: String,
    },
}

mod cluster;
mod lane;
pub mod shutdown;
mod stranded;
mod tables;

use tables::{Refresher, start_tables};

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    admin_port: Option<u16>,
    server: Server,
    quarantine_dir: std::path::PathBuf,
    /// Every table's flushers and spool writers, the events table's first.
    storages: Vec<Storage>,
    /// Reads the tables of `INGEST_TABLES` every `SCHEMA_REFRESH_SECS`; stopped at shutdown.
    refresher: Option<Refresher>,
    stats: Arc<Stats>,
    /// When SIGTERM/SIGINT arrived; the shutdown budget counts from it.
    signalled_at: Arc<OnceLock<Instant>>,
}

/// Where accepted rows go, and the threads that take them there.
struct Storage {
    ingest: Arc<dyn Ingest>,
    /// `double` mode: the flusher threads, one per lane.
    flushers: Vec<FlusherGuard>,
    /// `disk` mode: the spool's group-commit writer.
    spool_writers: Vec<WriterGuard>,
}

impl Application {
    /// Binds the listeners (port `0` picks a free port, see [`Application::port`]), checks
    /// ClickHouse (a failure is logged, not fatal: the flusher retries and `/v1/health`
    /// says why) and starts the flusher thread in `double` mode.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        crate::memory::tune_allocator();
        let public = bind(&config.http_host, config.http_port)?;
        let admin = match config.admin_port {
            Some(port) => Some(bind(&config.admin_host, port)?),
            None => None,
        };
        let port = public.local_addr()?.port();
        let admin_port = match &admin {
            Some(l) => Some(l.local_addr()?.port()),
            None => None,
        };
        // Rows an earlier run acknowledged, in a spool no lane of this run would read.
        stranded::refuse_stranded_spools(&config)?;
        if config.clickhouse_uses_tls() {
            clickhouse_tls(&config)?;
            if config.clickhouse_tls_skip_verify {
                log::warn!(
                    "CLICKHOUSE_TLS_SKIP_VERIFY: ClickHouse's certificate is not verified; \
                     anyone on the path can read and change what is sent"
                );
            }
        }
        let stats = Arc::new(Stats::default());
        // Every table is started the same way; the events table first.
        let table_settings = tables::table_settings(&config)?;
        let mut events = tables::events_table(&config, &stats, &table_settings)?;
        let server: Arc<dyn ServerCheck> = match config.is_cluster() {
            true => cluster::check(&config, &mut events).await?,
            false => {
                check_clickhouse(&events.sink, &config).await?;
                Arc::new(TableSink::sharing(&sink_settings(&config), &events.sink))
            }
        };
        if config.buffer_mode == BufferMode::Discard {
            log::warn!("BUFFER_MODE=discard: events are validated and thrown away");
        }
        if config.buffer_mode != BufferMode::Double && config.durability == Some(Durability::Disk) {
            log::warn!(
                "DURABILITY=disk applies to BUFFER_MODE=double only; {:?} mode has no spool",
                config.buffer_mode
            );
        }
        let listener_tls = listener_tls(&config)?;
        let keys = key_ring(&config, &stats)?;
        let mut all = vec![events];
        all.extend(tables::read_tables(&config, &stats, &table_settings).await?);
        let (desk, jobs) = Refresher::desk();
        let (tables, storages, table_sinks) = start_tables(&config, all, &desk)?;
        tables::watch_table_settings(
            &config,
            table_settings,
            table_sinks.iter().map(TableSink::state).collect(),
        );
        let refresher = match table_sinks.is_empty() {
            true => None,
            false => Some(Refresher::spawn(
                table_sinks,
                config.schema_refresh_secs,
                jobs,
            )?),
        };
        // The events table's lane: what health, readiness and the status page report.
        let events_ingest = storages[0].ingest.clone();
        let state = app_state(
            &config,
            events_ingest,
            server,
            stats.clone(),
            tables,
            keys.clone(),
        )?;
        let gate = web::Data::new(Gate {
            admin_port,
            keys: keys.clone(),
            prod: config.app_env == AppEnv::Prod,
        });
        warn_about_open_endpoints(&state, &gate);
        let signalled_at = Arc::new(OnceLock::new());
        // Every lane's buffer: at the signal, requests waiting for room are answered at once
        // (`BUFFER_FULL_WAIT_MS` must not hold up the drain of in-flight requests).
        let buffers: Vec<_> = (storages.iter().flat_map(|s| &s.flushers))
            .map(|f| f.buffer().clone())
            .collect();
        let on_signal = {
            let signalled_at = signalled_at.clone();
            async move {
                shutdown::signal().await;
                let _ = signalled_at.set(Instant::now());
                for buffer in &buffers {
                    buffer.room().stop();
                }
            }
        };
        let settings = ServerSettings {
            client_timeout: config.client_timeout(),
            // In-flight requests get part of the budget, then are cut off; the final flush's
            // deadline is counted from the signal, so it keeps the rest (see `shutdown`).
            request_budget_secs: shutdown::request_budget_secs(config.shutdown_timeout_secs),
            workers: config.http_workers,
            connections: crate::http::connection::Connections::new(config.http_max_connections),
            tls: listener_tls.clone(),
        };
        let server = serve(public, admin, state, gate, &settings, on_signal)?;
        if let Some(admin_port) = admin_port {
            log::info!(
                "admin listener on {}:{admin_port} (metrics, status, docs, probes)",
                config.admin_host
            );
        }
        log::info!(
            "listening on {}:{port} ({:?} mode, {:?} durability)",
            config.http_host,
            config.buffer_mode,
            config.durability()
        );
        Ok(Self {
            port,
            admin_port,
            server,
            quarantine_dir: config.quarantine_dir(),
            storages,
            refresher,
            stats,
            signalled_at,
        })
    }

    /// The port actually bound (useful with `HTTP_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin listener's port, when `ADMIN_PORT` is set (useful with `ADMIN_PORT=0`).
    pub fn admin_port(&self) -> Option<u16> {
        self.admin_port
    }

    /// A handle to stop the server from elsewhere (tests; signals are handled already).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Counters shared with the handlers and flusher.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Serves until SIGTERM/SIGINT (or [`ServerHandle::stop`]), waits for in-flight
    /// requests, then flushes everything buffered, bounded by `SHUTDOWN_TIMEOUT_SECS`.
    pub async fn run_until_stopped(self) -> std::io::Result<ShutdownReport> {
        self.server.await?;
        let began = self
            .signalled_at
            .get()
            .copied()
            .unwrap_or_else(Instant::now);
        let (mut flushers, mut writers) = (Vec::new(), Vec::new());
        for storage in self.storages {
            flushers.extend(storage.flushers);
            writers.extend(storage.spool_writers);
        }
        let refresher = self.refresher;
        // The guards block while their threads finish; keep that off the async runtime. The
        // spool's writer stops last: the final flush may wait for its last sync.
        let report = tokio::task::spawn_blocking(move || {
            if let Some(refresher) = refresher {
                refresher.stop();
            }
            for flusher in &flushers {
                flusher.begin_shutdown(began);
            }
            let mut report = ShutdownReport::default();
            for flusher in flushers {
                let lane = flusher.shutdown(began);
                report.unwritten += lane.unwritten;
                report.spooled += lane.spooled;
                report.timed_out |= lane.timed_out;
            }
            for writer in writers {
                writer.stop();
            }
            report
        })
        .await
        .map_err(std::io::Error::other)?;
        let quarantined = self.stats.events_quarantined_all();
        if quarantined > 0 {
            log::error!(
                "{quarantined} events ClickHouse rejected as bad data were quarantined during \
                 this run, in {}",
                self.quarantine_dir.display()
            );
        }
        if report.spooled > 0 {
            log::info!(
                "stopped; {} events stay in the spool and are written at the next start",
                report.spooled
            );
        } else if report.is_clean() {
            log::info!("stopped; everything buffered was written");
        }
        Ok(report)
    }
}

/// The API keys: `INGEST_API_KEYS` and `ADMIN_API_KEYS` (every table, no limit) and
/// `CONFIG_FILE`'s `[[keys]]`; with a file, the task that reads it again when it changes
/// (checked every second) or on `SIGHUP`, keeping the keys in use when the new file is bad.
fn key_ring(config: &Config, stats: &Stats) -> Result<Arc<KeyRing>, StartupError> {
    let from_env = |list: Vec<String>, var: &str, role| {
        (list.iter().enumerate())
            .map(|(i, secret)| KeySpec::plain(&format!("{var}#{}", i + 1), secret, role))
            .collect::<Vec<_>>()
    };
    let mut env_keys = from_env(config.api_keys(), "INGEST_API_KEYS", Role::Ingest);
    env_keys.extend(from_env(config.admin_keys(), "ADMIN_API_KEYS", Role::Admin));
    let path = std::path::PathBuf::from(&config.config_file);
    let file_keys = match config.config_file.is_empty() {
        true => Vec::new(),
        false => key_specs(&FileSettings::read(&path).map_err(StartupError::ConfigFile)?),
    };
    let ring = Arc::new(KeyRing::new(
        &[env_keys.clone(), file_keys].concat(),
        config.cors_origins(),
        Some(stats.key_events.clone()),
    ));
    if config.config_file.is_empty() {
        return Ok(ring);
    }
    let watched = Arc::downgrade(&ring);
    watch_files(vec![path.clone()], move || {
        // Gone with the application.
        let Some(ring) = watched.upgrade() else {
            return false;
        };
        match FileSettings::read(&path) {
            Ok(settings) => {
                ring.replace(&[env_keys.clone(), key_specs(&settings)].concat());
                log::info!(
                    "{}: read again; {} keys",
                    path.display(),
                    settings.keys.len()
                );
            }
            Err(why) => log::warn!("CONFIG_FILE not applied, the keys in use stay: {why}"),
        }
        true
    });
    Ok(ring)
}

/// The keys of `CONFIG_FILE`, as the handlers check them.
fn key_specs(settings: &FileSettings) -> Vec<KeySpec> {
    (settings.keys.iter())
        .map(|entry| KeySpec {
            name: entry.name.clone(),
            digest: match (&entry.secret, &entry.secret_sha256) {
                (Some(secret), _) => crate::http::keys::digest(secret.as_bytes()),
                (None, Some(hex)) => hex_digest(hex),
                (None, None) => [0; 32], // refused when the file was read
            },
            role: match entry.role {
                crate::config::file::Role::Ingest => Role::Ingest,
                crate::config::file::Role::Admin => Role::Admin,
            },
            tables: entry.tables.clone(),
            origins: entry.origins.clone(),
            rate: entry
                .events_per_second
                .map(|rate| (rate, entry.burst.unwrap_or(rate))),
        })
        .collect()
}

/// 64 hex digits (checked when the file was read) as 32 bytes.
fn hex_digest(hex: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = hex
            .get(2 * i..2 * i + 2)
            .and_then(|pair| u8::from_str_radix(pair, 16).ok())
            .unwrap_or(0);
    }
    out
}

/// `TLS_CERT_FILE`/`TLS_KEY_FILE`: the listeners' certificate, and the task that loads it
/// again when its files change (checked every second) or on `SIGHUP`.
fn listener_tls(config: &Config) -> Result<Option<Arc<ListenerTls>>, StartupError> {
    let (cert, key) = (&config.tls_cert_file, &config.tls_key_file);
    if cert.is_empty() && key.is_empty() {
        return Ok(None);
    }
    let tls = ListenerTls::load(cert.as_ref(), key.as_ref()).map_err(StartupError::ListenerTls)?;
    let tls = Arc::new(tls);
    let watched = Arc::downgrade(&tls);
    watch_files(vec![cert.into(), key.into()], move || {
        // Gone with the application.
        let Some(tls) = watched.upgrade() else {
            return false;
        };
        tls.reload();
        true
    });
    Ok(Some(tls))
}

/// Calls `changed` when any of `files` changes (their times and sizes, looked at every
/// second) and on `SIGHUP`, until it answers `false`: how `CONFIG_FILE` and the listeners'
/// certificate are read again without a restart.
fn watch_files(files: Vec<std::path::PathBuf>, mut changed: impl FnMut() -> bool + Send + 'static) {
    let stamps = move || {
        (files.iter())
            .map(|f| {
                std::fs::metadata(f)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect::<Vec<_>>()
    };
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut seen = stamps();
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { hangup.as_mut()?.recv().await } => true,
            };
            let now = stamps();
            if !forced && now == seen {
                continue;
            }
            seen = now;
            if !changed() {
                return;
            }
        }
    });
}

/// Binds `host:port`, naming the address in the error.
fn bind(host: &str, port: u16) -> Result<TcpListener, StartupError> {
    let addr = format!("{host}:{port}");
    TcpListener::bind(&addr).map_err(|source| StartupError::Bind { addr, source })
}

/// Reaches ClickHouse once (creating the database and table) and says what delivery it
/// allows; a failure is logged, not fatal (the flusher retries and `/v1/health` says why),
/// except a certificate ClickHouse presents and this service does not accept.
async fn check_clickhouse(sink: &TableSink, config: &Config) -> Result<(), StartupError> {
    match sink.prepare().await {
        Ok((text, version)) => {
            log::info!(
                "ClickHouse {text} at {}, writing to {}",
                config.clickhouse_url(),
                sink.target()
            );
            match sink.state().deduplication() {
                Some(dedup) if version.supports_dedup_token() => log::info!(
                    "retried and replayed inserts carry insert_deduplication_token ({dedup})"
                ),
                _ => log::info!(
                    "ClickHouse {text} has no insert_deduplication_token: at-least-once \
                     delivery (see the README's delivery guarantees)"
                ),
            }
        }
        Err(e) if sink::is_certificate_error(&e) => {
            return Err(StartupError::Certificate {
                url: config.clickhouse_url(),
                reason: certificate_reason(&e),
            });
        }
        Err(e) => log::warn!(
            "ClickHouse at {} not ready ({e}); serving anyway, will retry",
            config.clickhouse_url()
        ),
    }
    Ok(())
}

/// What a certificate error says, without the layers of request errors around it.
pub(crate) fn certificate_reason(error: &str) -> String {
    let mut reason = match error.find("invalid peer certificate") {
        Some(at) => &error[at..],
        None => error,
    };
    // The closing brackets of the layers around it.
    while reason.ends_with(')') && reason.matches(')').count() > reason.matches('(').count() {
        reason = &reason[..reason.len() - 1];
    }
    reason.to_string()
}

/// What every handler can reach.
fn app_state(
    config: &Config,
    ingest: Arc<dyn Ingest>,
    server: Arc<dyn ServerCheck>,
    stats: Arc<Stats>,
    tables: Tables,
    keys: Arc<KeyRing>,
) -> Result<web::Data<AppState>, StartupError> {
    let window = std::time::Duration::from_secs(config.idempotency_window_secs);
    // `disk` mode: remembered answers outlive a restart, beside the spool.
    let idempotency = match config.durability() {
        Durability::Disk if config.buffer_mode == BufferMode::Double => {
            let path = std::path::Path::new(&config.spool_dir).join("idempotency.jsonl");
            std::fs::create_dir_all(&config.spool_dir)?;
            http::idempotency::Idempotency::with_journal(
                window,
                config.idempotency_max_bytes,
                path,
            )?
        }
        _ => http::idempotency::Idempotency::new(window, config.idempotency_max_bytes),
    };
    Ok(web::Data::new(AppState {
        tables: Arc::new(tables),
        ingest,
        clickhouse_check: http::health::ClickHouseCheck::new(server.clone()),
        server,
        stats,
        body_max_bytes: config.body_max_bytes,
        max_events: config.max_events_per_request,
        inflight: http::inflight::InflightBudget::new(config.inflight_body_max_bytes()),
        cpu: http::cpu::CpuPool::new(),
        client_timeout: config.client_timeout(),
        keys,
        idempotency,
        // Validated when the configuration was read.
        trusted_proxies: config.trusted_proxy_nets().unwrap_or_default(),
        clickhouse_tls_unverified: config.clickhouse_uses_tls()
            && config.clickhouse_tls_skip_verify,
        mode: match config.buffer_mode {
            BufferMode::Double => "double",
            BufferMode::Direct => "direct",
            BufferMode::Discard => "discard",
        },
        started: Instant::now(),
    }))
}

/// In `prod`, says which endpoints anyone who can reach the port may use.
fn warn_about_open_endpoints(state: &AppState, gate: &Gate) {
    if !gate.prod {
        return;
    }
    let keys = state.keys.keys();
    if keys.ingest_open() {
        log::warn!(
            "no ingest key (INGEST_API_KEYS, CONFIG_FILE): anyone who can reach this port can post events"
        );
    }
    if gate.admin_port.is_none() && keys.admin_open() {
        log::warn!(
            "neither ADMIN_PORT nor ADMIN_API_KEYS is set: /metrics, /v1/status, / and the \
             API docs answer 403 (probes stay open, without error details)"
        );
    }
}

/// What the sinks are told of `config`: the server (`CLICKHOUSE_*`), in a cluster every host,
/// the database, the server-filled columns and, in `disk` mode, where column lists are kept.
pub fn sink_settings(config: &Config) -> sink::Settings {
    let hosts = match config.is_cluster() {
        true => config
            .clickhouse_shards()
            .unwrap_or_default()
            .iter()
            .flatten()
            .map(|host| connection(&config.for_host(host)))
            .collect(),
        false => Vec::new(),
    };
    sink::Settings {
        connection: connection(config),
        hosts,
        database: config.clickhouse_name.clone(),
        events_table: config.clickhouse_table.clone(),
        sharding_column: config.clickhouse_sharding_key.clone(),
        cluster: config
            .is_cluster()
            .then(|| config.clickhouse_cluster.clone()),
        timeout: config.clickhouse_timeout(),
        server_time_column: config.server_time_column.clone(),
        client_ip_column: config.client_ip_column.clone(),
        columns_root: (config.durability() == crate::config::Durability::Disk)
            .then(|| std::path::PathBuf::from(&config.spool_dir)),
    }
}

/// The server `config` names (`CLICKHOUSE_HOST:CLICKHOUSE_PORT`, user, password,
/// compression).
fn connection(config: &Config) -> sink::Connection {
    sink::Connection {
        url: config.clickhouse_url(),
        user: config.clickhouse_user.clone(),
        password: config.clickhouse_password.expose().to_string(),
        tls: match config.clickhouse_url().starts_with("https://") {
            // Checked at start-up (`clickhouse_tls`): a failure here is a file changed since.
            true => clickhouse_tls(config).ok(),
            false => None,
        },
        compression: match config.clickhouse_compression {
            crate::config::Compression::Lz4 => sink::Compression::Lz4,
            crate::config::Compression::None => sink::Compression::None,
        },
    }
}

/// The TLS client configuration for HTTPS to ClickHouse, built from its files once per
/// set of files (every sink's connections share it).
pub(crate) fn clickhouse_tls(
    config: &Config,
) -> Result<std::sync::Arc<rustls::ClientConfig>, sink::TlsError> {
    type Built = (sink::TlsFiles, std::sync::Arc<rustls::ClientConfig>);
    static BUILT: parking_lot::Mutex<Option<Built>> = parking_lot::Mutex::new(None);
    let files = clickhouse_tls_files(config);
    let mut built = BUILT.lock();
    if let Some((known, tls)) = &*built
        && *known == files
    {
        return Ok(tls.clone());
    }
    let tls = files.client_config()?;
    *built = Some((files, tls.clone()));
    Ok(tls)
}

/// The TLS files for HTTPS to ClickHouse (`CLICKHOUSE_CA_FILE`, ...).
fn clickhouse_tls_files(config: &Config) -> sink::TlsFiles {
    let path = |s: &str| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
    sink::TlsFiles {
        ca_file: path(&config.clickhouse_ca_file),
        client_cert: path(&config.clickhouse_client_cert_file),
        client_key: path(&config.clickhouse_client_key_file),
        skip_verify: config.clickhouse_tls_skip_verify,
    }
}

/// `config` aimed at `host` of the cluster, as the sinks are told it.
pub(crate) fn sink_settings_at(config: &Config, host: &crate::config::HostPort) -> sink::Settings {
    sink_settings(config).at(&connection(&config.for_host(host)))
}
