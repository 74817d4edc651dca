//! The OpenAPI 3 description, generated from the handlers' annotations, served at
//! `/openapi.json`, with Swagger UI at `/swagger/` (assets vendored in the binary: nothing
//! is fetched at build or run time).

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::events::{ErrorBody, EventIn};
use super::{AppState, events, health, metrics, status};
use crate::table::event::FieldError;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "event-ingest",
        description = "Collects analytics events and writes them to ClickHouse in batches."
    ),
    paths(
        events::post_events,
        events::post_table,
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
    for (name, lane) in state.tables.each() {
        let mut operation = template.clone();
        if let Some(op) = operation.as_object_mut() {
            op.remove("parameters");
            op.insert("summary".into(), json!(format!("Events for table {name}")));
            op.insert("operationId".into(), json!(format!("post_table_{name}")));
        }
        if let Ok(loaded) = lane.columns.current() {
            let component = format!("TableEvent_{name}");
            doc["components"]["schemas"][&component] = crate::table::json_schema(loaded.schema());
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
