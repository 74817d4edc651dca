//! The OpenAPI 3 description, generated from the handlers' annotations, served at
//! `/openapi.json`, with Swagger UI at `/swagger/` (assets vendored in the binary: nothing
//! is fetched at build or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::{events, health, metrics, status};
use crate::event::FieldError;

/// One event as clients send it (documentation of what validation accepts).
#[allow(dead_code)] // Read by the OpenAPI generator only.
#[derive(ToSchema)]
#[schema(example = json!({
    "client_time": "2020-12-01 23:59:00",
    "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C821E",
    "device_os": "IOS 13.5.1",
    "session": "ybuRi8mAUypxjbxQ",
    "sequence": 1,
    "event": "app_start",
    "param_int": 0,
    "param_str": "some text"
}))]
pub struct EventIn {
    /// `YYYY-MM-DD hh:mm:ss` (UTC) or RFC 3339; 1970–2106.
    client_time: String,
    /// A UUID.
    #[schema(format = "uuid")]
    device_id: String,
    /// Non-empty, at most 256 bytes.
    device_os: String,
    /// Non-empty, at most 256 bytes.
    session: String,
    /// Unsigned 32-bit.
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    sequence: u32,
    /// Non-empty, at most 256 bytes.
    event: String,
    /// Unsigned 32-bit; default 0.
    #[schema(minimum = 0, maximum = 4294967295_u64)]
    param_int: Option<u32>,
    /// At most 8 KiB; default empty.
    param_str: Option<String>,
}

/// Every error answer.
#[allow(dead_code)] // Read by the OpenAPI generator only.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    error: String,
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "event-ingest",
        description = "Collects analytics events and writes them to ClickHouse in batches."
    ),
    paths(
        events::post_events,
        health::get_health,
        health::get_ready,
        health::get_live,
        status::get_status,
        metrics::get_metrics
    ),
    components(schemas(EventIn, ErrorBody, FieldError, events::Accepted)),
    modifiers(&Security),
    tags(
        (name = "events", description = "Sending events"),
        (name = "probes", description = "Health, readiness and metrics")
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Api-Key"))),
        );
    }
}
