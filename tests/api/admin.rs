//! Operations endpoints: the admin listener, `ADMIN_API_KEYS`,
//! probes that stay open but say nothing about ClickHouse to strangers, and one ClickHouse
//! check a second however often they are called.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{clickhouse_url, spawn_app, within};

/// Forwards connections to ClickHouse, counting `SELECT version()` queries on the way.
async fn counting_forwarder() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                while let Ok(n) = client_read.read(&mut buf).await {
                    if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    tail.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&tail);
                    counter.fetch_add(text.matches("version()").count(), Ordering::SeqCst);
                    let keep = tail.len().saturating_sub(8);
                    tail.drain(..keep);
                    // What was counted must not count again: keep only bytes after the
                    // last match's start.
                    if String::from_utf8_lossy(&tail).contains("version()") {
                        tail.clear();
                    }
                }
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn probes_share_one_clickhouse_check_a_second() {
    let (port, queries) = counting_forwarder().await;
    let port = port.to_string();
    let app = spawn_app(&[("CLICKHOUSE_PORT", &port)]).await;
    assert_eq!(app.get("/v1/health").await.status(), 200);
    let before = queries.load(Ordering::SeqCst);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        let probes: Vec<_> = (0..20)
            .map(|i| {
                let http = app.http.clone();
                let path = if i % 2 == 0 {
                    "/v1/health"
                } else {
                    "/v1/ready"
                };
                let url = format!("{}{path}", app.address);
                tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
            })
            .collect();
        for probe in probes {
            assert_eq!(within(Duration::from_secs(30), probe).await.unwrap(), 200);
        }
    }
    let seconds = started.elapsed().as_secs() as usize;
    let during = queries.load(Ordering::SeqCst) - before;
    // 200 probes; one query a second at most (plus one for the second already begun).
    assert!(
        during <= seconds + 2,
        "{during} ClickHouse checks for 200 probes in {seconds} s"
    );
    app.stop().await;
}

#[tokio::test]
async fn operations_routes_need_an_admin_key_and_probes_do_not() {
    let app = spawn_app(&[("ADMIN_API_KEYS", "adm"), ("INGEST_API_KEYS", "ing")]).await;
    let get = |path: &'static str, key: Option<&'static str>| {
        let mut request = app.http.get(format!("{}{path}", app.address));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    for path in ["/metrics", "/v1/status", "/", "/openapi.json", "/swagger/"] {
        assert_eq!(get(path, None).await, 401, "{path}");
        assert_eq!(
            get(path, Some("ing")).await,
            401,
            "{path} with the ingest key"
        );
        assert_eq!(
            get(path, Some("adm")).await,
            200,
            "{path} with the admin key"
        );
    }
    for path in ["/v1/health", "/v1/ready", "/v1/live"] {
        assert_eq!(get(path, None).await, 200, "{path}");
    }
    let health: serde_json::Value = app.get("/v1/health").await.json().await.unwrap();
    assert!(health["clickhouse_version"].is_null(), "{health}");
    let response = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("authorization", "Bearer ing")
        .body(crate::helpers::batch(0, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn probes_never_show_clickhouse_errors_to_strangers() {
    if crate::helpers::modern_engine() {
        return crate::helpers::skip(
            "admin::probes_never_show_clickhouse_errors_to_strangers",
            "the modern engine's HTTP test double has no users or passwords (it accepts any), \
             so a wrong password cannot make ClickHouse fail",
        );
    }
    let app = spawn_app(&[
        ("CLICKHOUSE_PASSWORD", "not-the-password"),
        ("ADMIN_API_KEYS", "adm"),
    ])
    .await;
    for path in ["/v1/health", "/v1/ready"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 503, "{path}");
        let text = response.text().await.unwrap();
        assert!(
            !text.to_lowercase().contains("password") && !text.contains("Code:"),
            "{path}: {text}"
        );
        let detailed = app
            .http
            .get(format!("{}{path}", app.address))
            .header("x-api-key", "adm")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            detailed.to_lowercase().contains("password"),
            "{path} with the key: {detailed}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn in_prod_operations_routes_are_closed_without_admin_settings() {
    let app = spawn_app(&[("APP_ENV", "prod"), ("DURABILITY", "memory")]).await;
    assert_eq!(app.get("/metrics").await.status(), 403);
    assert_eq!(app.get("/v1/status").await.status(), 403);
    let health = app.get("/v1/health").await;
    assert_eq!(health.status(), 200);
    let health: serde_json::Value = health.json().await.unwrap();
    assert!(health["clickhouse_version"].is_null(), "{health}");
    assert_eq!(
        app.post_events(crate::helpers::batch(0, 1)).await.status(),
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn an_admin_listener_takes_the_operations_routes() {
    let app = spawn_app(&[("ADMIN_PORT", "0")]).await;
    let public = app.address.clone();
    let admin = app.admin_address.clone().expect("admin port");
    let http = reqwest::Client::new();
    let status = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status().as_u16() }
    };
    for path in ["/metrics", "/v1/status", "/", "/openapi.json"] {
        assert_eq!(
            status(format!("{public}{path}")).await,
            404,
            "public {path}"
        );
        assert_eq!(status(format!("{admin}{path}")).await, 200, "admin {path}");
    }
    for path in ["/v1/health", "/v1/ready", "/v1/live"] {
        assert_eq!(
            status(format!("{public}{path}")).await,
            200,
            "public {path}"
        );
        assert_eq!(status(format!("{admin}{path}")).await, 200, "admin {path}");
    }
    let details: serde_json::Value = http
        .get(format!("{admin}/v1/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(details["clickhouse_version"].is_string(), "{details}");
    let post = |base: String| {
        let http = http.clone();
        async move {
            http.post(format!("{base}/v1/events"))
                .body(crate::helpers::batch(0, 1))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(admin.clone()).await, 404);
    assert_eq!(post(public.clone()).await, 200);
    app.stop().await;
}
