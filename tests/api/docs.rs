//! The API description and Swagger UI, served from the binary.

use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn openapi_describes_every_endpoint_and_swagger_ui_is_served() {
    let app = spawn_app(&[]).await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/v1/events", "/v1/health", "/v1/ready", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    // The access model: the answers a key can get, the browser key and Idempotency-Key.
    let post = &doc["paths"]["/v1/events"]["post"];
    for status in ["401", "403", "409", "429", "503"] {
        assert!(post["responses"][status].is_object(), "{status}");
    }
    let params: Vec<&str> = (post["parameters"].as_array().unwrap().iter())
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        params.contains(&"key") && params.contains(&"Idempotency-Key"),
        "{params:?}"
    );
    let event = &doc["components"]["schemas"]["EventIn"]["properties"];
    for field in ["client_time", "device_id", "sequence", "param_str"] {
        assert!(event[field].is_object(), "{field}");
    }

    let response = app.get("/swagger/").await;
    assert_eq!(response.status(), 200);
    let html = response.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Its assets come from the binary, not from a CDN.
    assert!(!html.contains("https://"), "{html}");
    let config = app.get("/swagger/swagger-initializer.js").await;
    assert_eq!(config.status(), 200);
    assert!(config.text().await.unwrap().contains("/openapi.json"));
    app.stop().await;
}
