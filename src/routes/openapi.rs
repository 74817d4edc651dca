//! The OpenAPI 3 description, generated from the handlers' annotations, served at
//! `/openapi.json`, with Swagger UI at `/swagger/` (assets vendored in the binary: nothing
//! is fetched at build or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::{AppState, events, health, metrics, status, tables};
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
        tables::post_table,
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

/// `/openapi.json`: the annotated description, plus one path per allowed table
/// (`/v1/tables/<name>`) whose body is that table's event as a JSON Schema generated from its
/// columns (`TableEvent_<name>` in the components). A table not readable yet is listed
/// without a body schema.
pub async fn get_openapi(state: web::Data<AppState>) -> HttpResponse {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let template = doc["paths"]["/v1/tables/{table}"]["post"].clone();
    let mut names: Vec<&String> = state.tables.lanes.keys().collect();
    names.sort();
    for name in names {
        let lane = &state.tables.lanes[name];
        let mut operation = template.clone();
        if let Some(op) = operation.as_object_mut() {
            op.remove("parameters");
            op.insert("summary".into(), json!(format!("Events for table {name}")));
            op.insert("operationId".into(), json!(format!("post_table_{name}")));
        }
        if let Ok(loaded) = lane.state.current() {
            let component = format!("TableEvent_{name}");
            doc["components"]["schemas"][&component] = crate::schema::json_schema(&loaded.schema);
            let one = json!({ "$ref": format!("#/components/schemas/{component}") });
            operation["requestBody"]["content"] = json!({
                "application/json": { "schema": { "oneOf": [{"type": "array", "items": one}, one] } },
                "application/x-ndjson": { "schema": one },
            });
        }
        if let Some(paths) = doc["paths"].as_object_mut() {
            paths.insert(format!("/v1/tables/{name}"), json!({ "post": operation }));
        }
    }
    HttpResponse::Ok().json(doc)
}
