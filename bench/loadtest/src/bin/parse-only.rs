//! The parse-only server `make loadtest` measures the pipeline against: actix-web reading
//! each `POST /v1/events` body into plain `serde_json` structs (owned strings, the way a
//! straightforward service would) and answering `200` without keeping anything.
//!
//! `parse-only <port> [--no-parse]`; `GET /health` answers `200` once it listens. Workers:
//! actix's default (one per core), as event-ingest's. With `--no-parse` (the loadtest's
//! `http-only`) the body is read whole and answered with the same `200` unparsed: what
//! answering HTTP alone costs, the floor under any server that reads the same requests.

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::Deserialize;

/// One event of the loadtest's bodies (and of the original service's benchmark body).
#[derive(Deserialize)]
#[allow(dead_code)]
struct Event {
    client_time: String,
    device_id: String,
    device_os: String,
    session: String,
    sequence: u32,
    event: String,
    param_int: u32,
    param_str: String,
}

async fn events(body: web::Bytes) -> HttpResponse {
    match serde_json::from_slice::<Vec<Event>>(&body) {
        Ok(events) => HttpResponse::Ok()
            .content_type("application/json")
            .body(format!("{{\"accepted\":{}}}", events.len())),
        Err(e) => HttpResponse::BadRequest().body(e.to_string()),
    }
}

/// The body read whole and not parsed; the answer is as long as `events`'s for 30 events.
async fn unparsed(body: web::Bytes) -> HttpResponse {
    std::hint::black_box(&body);
    HttpResponse::Ok()
        .content_type("application/json")
        .body("{\"accepted\":30}")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: parse-only <port> [--no-parse]");
    let parse = std::env::args().nth(2).as_deref() != Some("--no-parse");
    HttpServer::new(move || {
        let handler = match parse {
            true => web::post().to(events),
            false => web::post().to(unparsed),
        };
        App::new()
            .app_data(web::PayloadConfig::new(16 << 20))
            .route("/v1/events", handler)
            .route("/health", web::get().to(HttpResponse::Ok))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
