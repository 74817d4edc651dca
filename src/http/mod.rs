//! HTTP routes: which path and method go to which handler, and the state handlers share.
//! Unknown paths answer `404` and wrong methods `405`, both with a JSON body.
//!
//! The second stage: listeners, access, bodies, the one ingest handler and the operations
//! routes. May import `lane` (the `Ingest` seam and what it reports), `table` (reading a body
//! against a table's columns), `format` and the shared modules; never the sink, nor `app`.

pub mod access;
mod body;
pub mod client;
pub mod connection;
pub mod cpu;
mod error;
pub mod events;
pub mod health;
pub mod idempotency;
pub mod inflight;
pub mod keys;
mod metrics;
mod openapi;
#[cfg(test)]
mod oracle;
pub mod server;
mod status;
pub mod tls;

use std::sync::Arc;

use actix_web::web;

pub use error::ApiError;
pub use metrics::count_requests;

use crate::lane::ingest::{Ingest, ServerCheck};
use crate::stats::Stats;

/// What every handler can reach. Cloned into each actix worker as `web::Data` (an `Arc`).
pub struct AppState {
    /// Where accepted rows go (double buffer or direct insert).
    pub ingest: Arc<dyn Ingest>,
    /// The storage's server, for the status page's version.
    pub server: Arc<dyn ServerCheck>,
    /// The probes' shared, rate-limited ClickHouse check.
    pub clickhouse_check: health::ClickHouseCheck,
    /// Shared counters.
    pub stats: Arc<Stats>,
    /// Largest body accepted, before and after decompression (`BODY_MAX_BYTES`).
    pub body_max_bytes: usize,
    /// Longest a body may take to arrive (`CLIENT_TIMEOUT_MS`).
    pub client_timeout: std::time::Duration,
    /// Most events in one request (`MAX_EVENTS_PER_REQUEST`).
    pub max_events: usize,
    /// Bytes all bodies in progress may hold together (`INFLIGHT_BODY_MAX_BYTES`).
    pub inflight: Arc<inflight::InflightBudget>,
    /// Where large bodies are decompressed and decoded, off the actix workers.
    pub cpu: cpu::CpuPool,
    /// The API keys (`INGEST_API_KEYS`, `ADMIN_API_KEYS`, `CONFIG_FILE`'s `[[keys]]`).
    pub keys: Arc<keys::KeyRing>,
    /// Answers remembered by `Idempotency-Key`.
    pub idempotency: idempotency::Idempotency,
    /// Proxies whose forwarding headers are believed (`TRUSTED_PROXIES`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `BUFFER_MODE`, for the status page.
    pub mode: &'static str,
    /// `CLICKHOUSE_TLS_SKIP_VERIFY` with an `https://` ClickHouse: shown in `/v1/status`.
    pub clickhouse_tls_unverified: bool,
    /// The tables of `INGEST_TABLES` and their lanes.
    pub tables: Arc<events::Tables>,
    /// When the process started, for the status page's uptime.
    pub started: std::time::Instant,
}

/// What a route is for, which decides who may use it (see [`access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Clients' writes: `INGEST_API_KEYS`, the public listener only.
    Ingest,
    /// Health probes: open to anyone, details for operators only.
    Probe,
    /// Files pages load (the browser client): open to anyone.
    Public,
    /// Metrics, status, docs: operators only.
    Operations,
}

/// One route: its path (an actix pattern), its class, and how it is served.
pub struct Route {
    /// The path pattern, as actix matches it (`{table}` is one path segment).
    pub path: &'static str,
    /// Who may use it.
    pub class: Class,
    /// The actix resource serving `path`.
    resource: fn(&'static str) -> actix_web::Resource,
}

/// Every route the service serves, with its class. The access gate and the `Expect` hook
/// read the class from here, so a route cannot be served without one. The Swagger UI's
/// files (`/swagger/...`) are not listed: like every unlisted path, they are operations.
pub const ROUTES: &[Route] = &[
    Route::new("/v1/events", Class::Ingest, |p| {
        only(p, POST, events::post_events)
    }),
    Route::new("/v1/tables/{table}", Class::Ingest, |p| {
        only(p, POST, events::post_table)
    }),
    Route::new("/v1/health", Class::Probe, |p| {
        only(p, GET, health::get_health)
    }),
    Route::new("/v1/ready", Class::Probe, |p| {
        only(p, GET, health::get_ready)
    }),
    Route::new("/v1/live", Class::Probe, |p| only(p, GET, health::get_live)),
    Route::new("/v1/client.js", Class::Public, |p| {
        only(p, GET, get_client_js)
    }),
    Route::new("/openapi.json", Class::Operations, |p| {
        only(p, GET, openapi::get_openapi)
    }),
    Route::new("/", Class::Operations, |p| only(p, GET, status::get_page)),
    Route::new("/v1/status", Class::Operations, |p| {
        only(p, GET, status::get_status)
    }),
    Route::new("/metrics", Class::Operations, |p| {
        only(p, GET, metrics::get_metrics)
    }),
];

/// The browser client (`src/http/client.js`): a page loads it from the service it sends to.
async fn get_client_js() -> actix_web::HttpResponse {
    actix_web::HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            "public, max-age=3600",
        ))
        .body(include_str!("client.js"))
}

impl Route {
    const fn new(
        path: &'static str,
        class: Class,
        resource: fn(&'static str) -> actix_web::Resource,
    ) -> Self {
        Self {
            path,
            class,
            resource,
        }
    }
}

/// The class of the route `path` goes to; paths no route serves are operations (their
/// `404` is then given only to whoever may see operations routes).
pub fn class_of(path: &str) -> Class {
    static PATTERNS: std::sync::LazyLock<Vec<(actix_web::dev::ResourceDef, Class)>> =
        std::sync::LazyLock::new(|| {
            ROUTES
                .iter()
                .map(|r| (actix_web::dev::ResourceDef::new(r.path), r.class))
                .collect()
        });
    PATTERNS
        .iter()
        .find(|(pattern, _)| pattern.is_match(path))
        .map_or(Class::Operations, |(_, class)| *class)
}

/// Registers every route on an actix `App`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    for route in ROUTES {
        cfg.service((route.resource)(route.path));
    }
    // After the routes: actix tries resources in order, and this one's pattern is a regular
    // expression (an allocation and a match for each request that got this far).
    // The document is built per request (each allowed table's columns may change).
    cfg.service(
        utoipa_swagger_ui::SwaggerUi::new("/swagger/{_:.*}")
            .config(utoipa_swagger_ui::Config::from("/openapi.json")),
    );
    cfg.default_service(web::to(|| async { Err::<(), _>(ApiError::NotFound) }));
}

/// The one method a route is served with.
const GET: &str = "GET";
/// See [`GET`].
const POST: &str = "POST";

/// A path served by `method` (`GET` or `POST`) alone; other methods get a JSON `405`
/// naming it.
fn only<F, Args>(path: &str, method: &'static str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    // A plain guard: actix's own method guard records each method it checks in the
    // request's extensions (three allocations per request), for an `Allow` header this
    // resource's own `405` below does not use.
    let wanted = match method {
        POST => actix_web::http::Method::POST,
        _ => actix_web::http::Method::GET,
    };
    let route = web::route().guard(actix_web::guard::fn_guard(move |ctx| {
        ctx.head().method == wanted
    }));
    web::resource(path)
        .name(path)
        .route(route.to(handler))
        .default_service(web::to(move || async move {
            ApiError::method_not_allowed(method)
        }))
}

/// Serves `HEAD` wherever `GET` is served (probes, metrics, docs): the request continues as
/// a `GET`, and actix, which noted the method when it parsed the request, sends the
/// response's head without its body.
pub async fn head_as_get(
    mut req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    if req.method() == actix_web::http::Method::HEAD {
        req.head_mut().method = actix_web::http::Method::GET;
    }
    next.call(req).await
}
