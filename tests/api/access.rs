//! Who may write, and where the client address comes from.

use serde_json::Value;

use crate::helpers::{batch, spawn_app};

#[tokio::test]
async fn api_keys_guard_the_events_endpoint_only() {
    let app = spawn_app(&[("INGEST_API_KEYS", "alpha-key, beta-key")]).await;
    let url = format!("{}/v1/events", app.address);

    let response = app.post_events(batch(0, 1)).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());
    let wrong = app
        .http
        .post(&url)
        .bearer_auth("gamma-key")
        .body(batch(0, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let bearer = app
        .http
        .post(&url)
        .bearer_auth("beta-key")
        .body(batch(0, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let header = app
        .http
        .post(&url)
        .header("x-api-key", "alpha-key")
        .body(batch(2, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), 200);

    // Probes stay open.
    assert_eq!(app.get("/v1/health").await.status(), 200);
    app.wait_for_rows(5).await;
    app.stop().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    for (trusted, expected) in [
        ("127.0.0.1/32", "::ffff:203.0.113.9"),
        ("", "::ffff:127.0.0.1"),
    ] {
        let app = spawn_app(&[("TRUSTED_PROXIES", trusted)]).await;
        let response = app
            .http
            .post(format!("{}/v1/events", app.address))
            .header("x-forwarded-for", "203.0.113.9")
            .body(batch(0, 1))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            app.stored_ip().await,
            expected,
            "TRUSTED_PROXIES={trusted:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn ready_reflects_clickhouse_and_buffer_room() {
    let app = spawn_app(&[]).await;
    let response = app.get("/v1/ready").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["ready"], true);
    app.stop().await;

    let port = crate::helpers::closed_port().to_string();
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port),
        ("BUFFER_MAX_BYTES", "8192"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ])
    .await;
    // Fill the buffer past 90 % while ClickHouse is away.
    while app.post_events(batch(0, 1)).await.status() == 200 {}
    let response = app.get("/v1/ready").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    let reasons = body["reasons"].to_string();
    assert!(
        reasons.contains("buffer") && reasons.contains("unavailable"),
        "{reasons}"
    );
    app.stop().await;
}

/// Every ingest route of the route table, with `{table}` standing for the events table
/// (served by every route that takes a table).
fn ingest_paths() -> Vec<String> {
    use event_ingest::http::{Class, ROUTES};
    let paths: Vec<String> = ROUTES
        .iter()
        .filter(|r| r.class == Class::Ingest)
        .map(|r| r.path.replace("{table}", "events"))
        .collect();
    assert!(paths.len() >= 2, "{paths:?}");
    paths
}

/// `POST` one event to `url`, with `key` as a bearer token if given; the status.
async fn post_one(http: &reqwest::Client, url: String, key: Option<&str>, n: u32) -> u16 {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .body(batch(n, 1));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn every_ingest_route_is_open_to_clients_under_every_access_setting() {
    let paths = ingest_paths();
    let configurations: [&[(&str, &str)]; 3] = [
        &[],
        &[("APP_ENV", "prod"), ("DURABILITY", "memory")],
        &[("ADMIN_API_KEYS", "adm"), ("INGEST_API_KEYS", "ing")],
    ];
    for vars in configurations {
        let keyed = vars.iter().any(|(k, _)| *k == "INGEST_API_KEYS");
        let app = spawn_app(vars).await;
        let mut stored = 0;
        for path in &paths {
            let url = format!("{}{path}", app.address);
            let key = keyed.then_some("ing");
            assert_eq!(
                post_one(&app.http, url.clone(), key, stored).await,
                200,
                "{path} {vars:?}"
            );
            stored += 1;
            if keyed {
                assert_eq!(
                    post_one(&app.http, url.clone(), None, 99).await,
                    401,
                    "{path}"
                );
                // An admin key is known, and may not post: 403, not 401.
                assert_eq!(
                    post_one(&app.http, url, Some("adm"), 99).await,
                    403,
                    "{path}"
                );
            }
        }
        app.wait_for_rows(stored.into()).await;
        app.stop().await;
    }

    // With an admin listener: served on the public listener, not on the admin one.
    let app = spawn_app(&[("ADMIN_PORT", "0")]).await;
    let admin = app.admin_address.clone().expect("admin port");
    for (i, path) in paths.iter().enumerate() {
        let n = u32::try_from(i).unwrap();
        let public = format!("{}{path}", app.address);
        assert_eq!(post_one(&app.http, public, None, n).await, 200, "{path}");
        let admin = format!("{admin}{path}");
        assert_eq!(post_one(&app.http, admin, None, 99).await, 404, "{path}");
    }
    app.wait_for_rows(paths.len() as u64).await;
    app.stop().await;
}
