//! The HTTP server: actix's listeners, workers and connection limits around the routes.
//!
//! Assembled from actix-server and actix-http rather than actix-web's `HttpServer` for one
//! thing `HttpServer` does not expose: the `Expect: 100-continue` hook, so that a refusal that
//! needs no body (`401`, `413`, `415`, `503`) is answered instead of `100 Continue` and the
//! client does not send the body for nothing. Otherwise the same settings as `HttpServer`.

use std::net::TcpListener;
use std::time::Duration;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::{AppConfig, Server};
use actix_web::{App, HttpMessage, ResponseError, web};

use super::access::{AdminListener, Gate};
use super::{AppState, access, connection, count_requests, events, head_as_get};

/// Idle keep-alive connections are closed after this long.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How the server treats connections and shutdown.
pub struct ServerSettings {
    /// A client gets this long for the request head (the body's limit is in the handler),
    /// and a client that stops reading its response is dropped after it (`CLIENT_TIMEOUT_MS`).
    pub client_timeout: Duration,
    /// In-flight requests may take this long after the signal before they are cut off.
    pub request_budget_secs: u64,
    /// actix worker threads (`HTTP_WORKERS`; `None`: one per core).
    pub workers: Option<usize>,
    /// Open connections, all listeners together, against `HTTP_MAX_CONNECTIONS`.
    pub connections: std::sync::Arc<connection::Connections>,
    /// `TLS_CERT_FILE`/`TLS_KEY_FILE`: both listeners serve HTTPS (HTTP/2 and HTTP/1.1).
    pub tls: Option<std::sync::Arc<super::tls::ListenerTls>>,
}

/// The HTTP service's settings, the same over plain TCP and TLS: timeouts, keep-alive, the
/// graceful shutdown, the `Expect: 100-continue` refusals, each connection's pacing handed
/// to its handlers. `$io` is what the connection is paced over.
macro_rules! http_service {
    ($io:ty, $shutdown:expr, $client_timeout:expr, $addr:expr, $expect_state:expr, $is_admin:expr) => {{
        let (shutdown, expect_state, is_admin) = ($shutdown, $expect_state, $is_admin);
        HttpService::build()
            .on_connect_ext(|io: &connection::Paced<$io>, data| {
                data.insert(io.pacing());
            })
            .graceful_shutdown_signal(move || {
                let shutdown = shutdown.clone();
                async move { shutdown.notified().await }
            })
            .client_request_timeout($client_timeout)
            .keep_alive(KEEP_ALIVE)
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr($addr)
            .expect(fn_service(move |req: actix_http::Request| {
                let refusal = (!is_admin)
                    .then(|| {
                        events::precheck(&expect_state, req.method(), req.uri(), req.headers())
                            .err()
                    })
                    .flatten();
                async move {
                    match refusal {
                        Some(e) => Err(actix_http::Response::from(e.error_response())),
                        None => Ok(req),
                    }
                }
            }))
    }};
}

/// Serves the routes on `public` (ingest, plus operations unless an admin listener exists)
/// and `admin` (operations and probes), until `on_signal` completes.
pub fn serve(
    public: TcpListener,
    admin: Option<TcpListener>,
    state: web::Data<AppState>,
    gate: web::Data<Gate>,
    settings: &ServerSettings,
    on_signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<Server> {
    let mut builder = actix_server::Server::build()
        // Our own handler, so that SIGINT is as graceful as SIGTERM.
        .shutdown_signal(on_signal)
        .shutdown_timeout(settings.request_budget_secs);
    if let Some(workers) = settings.workers {
        builder = builder.workers(workers);
    }
    let listeners = std::iter::once((public, false)).chain(admin.map(|l| (l, true)));
    for (listener, is_admin) in listeners {
        set_write_timeout(&listener, settings.client_timeout)?;
        let addr = listener.local_addr()?;
        let (state, gate) = (state.clone(), gate.clone());
        let client_timeout = settings.client_timeout;
        let shutdown = builder.graceful_shutdown_signal();
        let connections = settings.connections.clone();
        let tls = settings.tls.clone();
        builder = builder.listen(format!("event-ingest-{addr}"), listener, move || {
            let (state, gate) = (state.clone(), gate.clone());
            let expect_state = state.clone();
            let shutdown = shutdown.clone();
            let connections = connections.clone();
            let tls = tls.clone();
            let app = move || {
                let app = App::new().app_data(state.clone()).app_data(gate.clone());
                let app = if is_admin {
                    app.app_data(AdminListener)
                } else {
                    app
                };
                app.wrap(actix_web::middleware::from_fn(head_as_get))
                    .wrap(actix_web::middleware::from_fn(access::gate))
                    .wrap(actix_web::middleware::from_fn(access::cors))
                    .wrap(actix_web::middleware::from_fn(count_requests))
                    .configure(super::configure)
            };
            // What HttpServer passes (whether secure, the listener's address); actix-web's
            // own constructor for it is crate-private, this public one builds the same
            // value. Pinned by actix-web's version in Cargo.lock.
            let config = move |secure: bool| {
                move |(): ()| AppConfig::__priv_test_new(secure, addr.to_string(), addr)
            };
            let app = move || {
                app()
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response())
            };
            let connections = connections.clone();
            let plain = tls.is_none().then(|| {
                let connections = connections.clone();
                let h1 = http_service!(
                    tokio::net::TcpStream,
                    shutdown.clone(),
                    client_timeout,
                    addr,
                    expect_state.clone(),
                    is_admin
                )
                .h1(map_config(app(), config(false)));
                fn_service(move |io: tokio::net::TcpStream| {
                    let connections = connections.clone();
                    async move {
                        let (io, ticket) = connection::admit(io, &connections)
                            .await
                            .map_err(actix_http::error::DispatchError::Io)?;
                        let peer = io.peer_addr().ok();
                        Ok((connection::Paced::new(io, ticket), peer))
                    }
                })
                .and_then(h1)
            });
            let secure = tls.as_ref().map(|tls| {
                let acceptor = tls.acceptor();
                let service = http_service!(
                    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
                    shutdown.clone(),
                    client_timeout,
                    addr,
                    expect_state.clone(),
                    is_admin
                )
                .finish(map_config(app(), config(true)));
                fn_service(move |io: tokio::net::TcpStream| {
                    let (connections, acceptor) = (connections.clone(), acceptor.clone());
                    async move {
                        use actix_http::error::DispatchError;
                        let (io, ticket) = connection::admit(io, &connections)
                            .await
                            .map_err(DispatchError::Io)?;
                        let peer = io.peer_addr().ok();
                        // The handshake gets the time a request head gets.
                        let tls = tokio::time::timeout(client_timeout, acceptor.accept(io))
                            .await
                            .map_err(|_| DispatchError::SlowRequestTimeout)?
                            .map_err(DispatchError::Io)?;
                        let protocol = match tls.get_ref().1.alpn_protocol() {
                            Some(b"h2") => actix_http::Protocol::Http2,
                            _ => actix_http::Protocol::Http1,
                        };
                        Ok((connection::Paced::new(tls, ticket), protocol, peer))
                    }
                })
                .and_then(service)
            });
            // One type for either: boxed (a call per connection, not per request).
            match (plain, secure) {
                (Some(plain), _) => actix_service::boxed::factory(plain),
                (None, Some(secure)) => actix_service::boxed::factory(secure),
                (None, None) => unreachable!("one of the two is built"),
            }
        })?;
    }
    Ok(builder.run())
}

/// Connections accepted on `listener` are dropped by the kernel when data they were sent
/// stays unacknowledged for `timeout` (`TCP_USER_TIMEOUT`, inherited by accepted sockets),
/// which includes a client that stops reading: its window closes and the kernel's probes
/// go unanswered by progress. actix has no write timeout of its own (its keep-alive timer
/// starts only once a response is written out), so without this a client that never reads
/// holds its response in memory for as long as it keeps the connection open.
fn set_write_timeout(listener: &TcpListener, timeout: Duration) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let ms = libc::c_uint::try_from(timeout.as_millis()).unwrap_or(libc::c_uint::MAX);
        // SAFETY: a valid socket descriptor and a correctly sized option value.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&ms as *const libc::c_uint).cast(),
                std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (listener, timeout);
    Ok(())
}
