//! Start-up and run: bind the listener, reach ClickHouse, start the flusher, serve until a
//! signal, then shut down through the flusher's guard.

use std::net::TcpListener;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};

use crate::buffer::{DoubleBuffer, Limits};
use crate::config::{AppEnv, BufferMode, Config, Durability};
use crate::flusher;
use crate::ingest::{Buffered, Direct, Discard, Ingest};
use crate::quarantine::Quarantine;
use crate::routes::client::ApiKeys;
use crate::routes::{self, AppState};
use crate::shutdown::{self, FlusherGuard, ShutdownReport};
use crate::sink::ClickHouseSink;
use crate::spool::{Spool, SpoolError, WriterGuard};
use crate::stats::Stats;

/// Why the application could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `HTTP_HOST:HTTP_PORT`.
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
}

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    flusher: Option<FlusherGuard>,
    /// `disk` mode: the spool's writer, stopped after the flusher.
    spool_writer: Option<WriterGuard>,
    quarantine_dir: std::path::PathBuf,
    stats: Arc<Stats>,
    /// When SIGTERM/SIGINT arrived; the shutdown budget counts from it.
    signalled_at: Arc<OnceLock<Instant>>,
}

impl Application {
    /// Binds the listener (port `0` picks a free port, see [`Application::port`]), checks
    /// ClickHouse (a failure is logged, not fatal: the flusher retries and `/v1/health`
    /// says why) and starts the flusher thread in `double` mode.
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        let addr = format!("{}:{}", config.http_host, config.http_port);
        let listener =
            TcpListener::bind(&addr).map_err(|source| StartupError::Bind { addr, source })?;
        let port = listener.local_addr()?.port();

        // Handlers and the flusher each get their own client: the flusher's connections
        // live on its own runtime, the handlers' on the actix workers'.
        // Direct mode inserts on the HTTP workers: rows go out as encoded, no block is built.
        let sink = Arc::new(match config.buffer_mode {
            BufferMode::Direct => ClickHouseSink::new(&config).row_binary_only(),
            _ => ClickHouseSink::new(&config),
        });
        match sink.prepare().await {
            Ok(p) => {
                log::info!(
                    "ClickHouse {} at {}, writing to {}",
                    p.version_text,
                    config.clickhouse_url(),
                    sink.target()
                );
                if p.version.supports_dedup_token() {
                    log::info!(
                        "inserts carry insert_deduplication_token; a retried or replayed batch \
                         is stored once where the table deduplicates: {}",
                        p.deduplication
                    );
                } else {
                    log::info!(
                        "ClickHouse {} has no insert_deduplication_token: delivery is \
                         at-least-once; an insert that may have reached it is looked up in \
                         system.query_log before it is sent again, and is stored twice only \
                         if the query log cannot tell",
                        p.version_text
                    );
                }
            }
            Err(e) => log::warn!(
                "ClickHouse at {} not ready ({e}); serving anyway, will retry",
                config.clickhouse_url()
            ),
        }

        let stats = Arc::new(Stats::default());
        let mut spool_writer = None;
        if config.buffer_mode != BufferMode::Double && config.durability == Some(Durability::Disk) {
            log::warn!(
                "DURABILITY=disk applies to BUFFER_MODE=double only; {:?} mode has no spool",
                config.buffer_mode
            );
        }
        let (ingest, flusher): (Arc<dyn Ingest>, _) = match config.buffer_mode {
            BufferMode::Double => {
                let limits = Limits {
                    size: config.buffer_size,
                    flush_interval: config.flush_interval(),
                    min_interval: config.min_insert_interval(),
                    max_bytes: config.buffer_max_bytes,
                };
                let buffer = match config.durability() {
                    Durability::Memory => DoubleBuffer::new(limits),
                    Durability::Disk => {
                        let (spool, backlog) =
                            Spool::open(config.spool_dir.as_ref(), config.spool_max_bytes)?;
                        let spool = Arc::new(spool);
                        if let Some(b) = backlog {
                            log::info!(
                                "spool {}: replaying {} bytes left by the previous run before \
                                 new events",
                                config.spool_dir,
                                b.bytes
                            );
                        }
                        spool_writer = Some(WriterGuard::spawn(spool.clone())?);
                        DoubleBuffer::with_spool(limits, spool, backlog.map(|b| b.from))
                    }
                };
                let buffer = Arc::new(buffer);
                let guard = flusher::spawn(
                    buffer.clone(),
                    ClickHouseSink::new(&config).sharing_format_info(&sink),
                    Arc::new(Quarantine::new(config.quarantine_dir())),
                    stats.clone(),
                    config.shutdown_timeout(),
                )?;
                (Arc::new(Buffered(buffer)), Some(guard))
            }
            BufferMode::Direct => (Arc::new(Direct(sink.clone())), None),
            BufferMode::Discard => {
                log::warn!("BUFFER_MODE=discard: events are validated and thrown away");
                (Arc::new(Discard), None)
            }
        };

        let state = web::Data::new(AppState {
            ingest,
            sink,
            stats: stats.clone(),
            body_max_bytes: config.body_max_bytes,
            max_events: config.max_events_per_request,
            client_timeout: config.client_timeout(),
            api_keys: ApiKeys::new(config.api_keys()),
            // Validated when the configuration was read.
            trusted_proxies: config.trusted_proxy_nets().unwrap_or_default(),
            mode: match config.buffer_mode {
                BufferMode::Double => "double",
                BufferMode::Direct => "direct",
                BufferMode::Discard => "discard",
            },
            started: Instant::now(),
        });
        if state.api_keys.is_open() && config.app_env == AppEnv::Prod {
            log::warn!("INGEST_API_KEYS is empty: anyone who can reach this port can post events");
        }
        let signalled_at = Arc::new(OnceLock::new());
        let on_signal = {
            let signalled_at = signalled_at.clone();
            async move {
                shutdown::signal().await;
                let _ = signalled_at.set(Instant::now());
            }
        };
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .wrap(actix_web::middleware::from_fn(routes::count_requests))
                .configure(routes::configure)
        })
        // A client gets this long for the request head (the body's limit is in the handler),
        // and idle keep-alive connections are closed after a few seconds.
        .client_request_timeout(config.client_timeout())
        .keep_alive(std::time::Duration::from_secs(15))
        .listen(listener)?
        // Our own handler, so that SIGINT is as graceful as SIGTERM.
        .shutdown_signal(on_signal)
        // In-flight requests may take this long to finish; the final flush's deadline is
        // counted from the signal too, so the whole shutdown stays within the budget.
        .shutdown_timeout(config.shutdown_timeout_secs);
        if let Some(workers) = config.http_workers {
            server = server.workers(workers);
        }
        log::info!(
            "listening on {}:{port} ({:?} mode, {:?} durability)",
            config.http_host,
            config.buffer_mode,
            config.durability()
        );
        Ok(Self {
            port,
            server: server.run(),
            flusher,
            spool_writer,
            quarantine_dir: config.quarantine_dir(),
            stats,
            signalled_at,
        })
    }

    /// The port actually bound (useful with `HTTP_PORT=0`).
    pub fn port(&self) -> u16 {
        self.port
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
        let (flusher, writer) = (self.flusher, self.spool_writer);
        // The guards block while their threads finish; keep that off the async runtime. The
        // spool's writer stops last: the final flush may wait for its last sync.
        let report = tokio::task::spawn_blocking(move || {
            let report = flusher.map(|g| g.shutdown(began)).unwrap_or_default();
            if let Some(writer) = writer {
                writer.stop();
            }
            report
        })
        .await
        .map_err(std::io::Error::other)?;
        let quarantined = self.stats.events_quarantined.get();
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
