//! API keys from `CONFIG_FILE`: tables, page origins, rates, CORS, `?key=` for browser keys,
//! the file read again while running, and the per-key metrics.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{PATIENCE, TestApp, batch, spawn_app, within};

/// A config file in its own folder (removed with it).
pub(crate) struct ConfigFile(tempfile::TempDir);

impl ConfigFile {
    pub(crate) fn new(toml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("event-ingest.toml"), toml).unwrap();
        Self(dir)
    }

    pub(crate) fn path(&self) -> String {
        self.0
            .path()
            .join("event-ingest.toml")
            .to_str()
            .unwrap()
            .to_string()
    }

    /// Replaces the file as an editor would (a new file renamed over the old one).
    pub(crate) fn rewrite(&self, toml: &str) {
        let tmp = self.0.path().join("new.toml");
        std::fs::write(&tmp, toml).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }
}

const KEYS: &str = r#"
[[keys]]
name = "backend"
secret = "sk-backend"

[[keys]]
name = "orders-only"
secret = "sk-orders"
tables = ["orders"]

[[keys]]
name = "shop-web"
secret = "pk-shop"
origins = ["https://shop.example"]

[[keys]]
name = "slow"
secret = "sk-slow"
events_per_second = 5
burst = 10

[[keys]]
name = "ops"
secret = "sk-ops"
role = "admin"
"#;

async fn post(
    app: &TestApp,
    query: &str,
    headers: &[(&str, &str)],
    body: String,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/events{query}", app.address))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

async fn error(response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap();
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn each_key_keeps_to_its_tables_origins_and_role() {
    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[("CONFIG_FILE", &file.path())]).await;
    let ok = post(
        &app,
        "",
        &[("authorization", "Bearer sk-backend")],
        batch(0, 2),
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(post(&app, "", &[], batch(2, 1)).await.status(), 401);
    assert_eq!(
        post(&app, "", &[("x-api-key", "nope")], batch(2, 1))
            .await
            .status(),
        401
    );
    let other_table = post(&app, "", &[("x-api-key", "sk-orders")], batch(2, 1)).await;
    assert_eq!(other_table.status(), 403);
    let why = error(other_table).await;
    assert!(
        why.contains("orders-only") && why.contains("events"),
        "{why}"
    );
    let admin = post(&app, "", &[("x-api-key", "sk-ops")], batch(2, 1)).await;
    assert_eq!(admin.status(), 403);
    // A browser key: in the URL, from its origin (or no page at all), not from another.
    let shop = [("origin", "https://shop.example")];
    assert_eq!(
        post(&app, "?key=pk-shop", &shop, batch(2, 2))
            .await
            .status(),
        200
    );
    let evil = post(
        &app,
        "?key=pk-shop",
        &[("origin", "https://evil.example")],
        batch(4, 1),
    )
    .await;
    assert_eq!(evil.status(), 403);
    // A secret key never in the URL.
    let leaked = post(&app, "?key=sk-backend", &[], batch(4, 1)).await;
    assert_eq!(leaked.status(), 403);
    assert!(error(leaked).await.contains("URL"));
    app.wait_for_rows(4).await;
    // The operations routes take the admin key.
    let metrics = reqwest::Client::new()
        .get(format!("{}/metrics", app.address))
        .header("x-api-key", "sk-ops")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains(r#"event_ingest_key_events_total{key="backend",outcome="accepted"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"event_ingest_key_events_total{key="shop-web",outcome="accepted"} 2"#),
        "{text}"
    );
    let status = reqwest::Client::new()
        .get(format!("{}/v1/status", app.address))
        .header("x-api-key", "sk-backend")
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 401, "an ingest key is no admin key");
    // The status page's figures per key, by name.
    let status: Value = reqwest::Client::new()
        .get(format!("{}/v1/status", app.address))
        .header("x-api-key", "sk-ops")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let backend = (status["keys"].as_array().unwrap().iter())
        .find(|k| k["key"] == "backend")
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(
        (backend["accepted"].as_u64(), backend["limited"].as_u64()),
        (Some(2), Some(0))
    );
    assert!(
        !status.to_string().contains("sk-backend"),
        "no secret shown"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_and_other_keys_are_not_slowed() {
    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[("CONFIG_FILE", &file.path())]).await;
    let slow = [("x-api-key", "sk-slow")];
    assert_eq!(
        post(&app, "", &slow, batch(0, 10)).await.status(),
        200,
        "the burst"
    );
    let limited = post(&app, "", &slow, batch(10, 5)).await;
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(limited.headers()["ratelimit-policy"], "10;w=2");
    assert!(
        limited.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("limit=10, remaining=0")
    );
    // Another key meanwhile.
    let fast = post(&app, "", &[("x-api-key", "sk-backend")], batch(100, 50)).await;
    assert_eq!(fast.status(), 200);
    // Room again after the wait the answer gave.
    within(PATIENCE, async {
        while post(&app, "", &slow, batch(10, 5)).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    app.wait_for_rows(65).await;
    app.stop().await;
}

#[tokio::test]
async fn a_body_over_a_keys_rate_is_refused_by_its_length_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[("CONFIG_FILE", &file.path())]).await;
    let slow = [("x-api-key", "sk-slow")];
    // The whole burst, and the key's bytes per event are known.
    assert_eq!(post(&app, "", &slow, batch(0, 10)).await.status(), 200);
    // Eight events are announced (the bucket gains 5 a second) and never sent: the
    // answer comes from the length alone.
    let length = batch(10, 8).len();
    let mut stream = tokio::net::TcpStream::connect(app.address.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         x-api-key: sk-slow\r\ncontent-length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer}"
    );
    // The events it had room for are still taken once the wait has passed.
    within(PATIENCE, async {
        while post(&app, "", &slow, batch(10, 5)).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    app.wait_for_rows(15).await;
    app.stop().await;
}

#[tokio::test]
async fn pages_of_allowed_origins_get_cors_answers_and_beacons_are_taken() {
    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[
        ("CONFIG_FILE", &file.path()),
        ("CORS_ALLOWED_ORIGINS", "https://admin.example"),
    ])
    .await;
    let client = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        client
            .request(
                reqwest::Method::OPTIONS,
                format!("{}/v1/events", app.address),
            )
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type, x-api-key")
            .send()
    };
    for origin in ["https://shop.example", "https://admin.example"] {
        let answer = preflight(origin).await.unwrap();
        assert_eq!(answer.status(), 204, "{origin}");
        let h = answer.headers();
        assert_eq!(h["access-control-allow-origin"], origin);
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        let allowed = h["access-control-allow-headers"].to_str().unwrap();
        for name in ["Content-Type", "X-Api-Key", "Idempotency-Key", "X-Sent-At"] {
            assert!(allowed.contains(name), "{allowed}");
        }
        assert!(h.contains_key("access-control-max-age"));
    }
    assert_eq!(
        preflight("https://evil.example").await.unwrap().status(),
        403
    );
    // What navigator.sendBeacon sends: text/plain, the key in the URL, the page's origin.
    let beacon = client
        .post(format!("{}/v1/events?key=pk-shop", app.address))
        .header("origin", "https://shop.example")
        .header("content-type", "text/plain;charset=UTF-8")
        .body(batch(0, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(beacon.status(), 200);
    assert_eq!(
        beacon.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    // A refusal carries it too, so the page can read why.
    let refused = client
        .post(format!("{}/v1/events", app.address))
        .header("origin", "https://shop.example")
        .body(batch(3, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    app.wait_for_rows(3).await;
    app.stop().await;
}

#[tokio::test]
async fn the_config_file_is_read_again_while_running_and_a_bad_one_changes_nothing() {
    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[("CONFIG_FILE", &file.path())]).await;
    let new_key = [("x-api-key", "sk-new")];
    assert_eq!(post(&app, "", &new_key, batch(0, 1)).await.status(), 401);
    file.rewrite(&format!(
        "{KEYS}\n[[keys]]\nname = \"new\"\nsecret = \"sk-new\"\n"
    ));
    within(PATIENCE, async {
        while post(&app, "", &new_key, batch(0, 1)).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    // A mistake: the keys in use stay.
    file.rewrite("[[keys]]\nname = \"broken\"\n");
    // Nothing to wait for but time: two of the file's one-second checks.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(post(&app, "", &new_key, batch(1, 1)).await.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn a_config_file_with_a_mistake_stops_start_up_naming_it() {
    let file =
        ConfigFile::new("[[keys]]\nname = \"a\"\nsecret = \"x\"\norigins = [\"shop.example\"]\n");
    let config = event_ingest::Config::from_vars(crate::helpers::test_env(
        &crate::helpers::unique_database(),
        &[("CONFIG_FILE", &file.path())],
    ))
    .unwrap();
    let err = match event_ingest::Application::build(config).await {
        Ok(_) => panic!("started"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains(&file.path()) && err.contains("origin"),
        "{err}"
    );
}

#[tokio::test]
async fn a_batch_resent_with_its_idempotency_key_is_answered_again_and_stored_once() {
    let file = ConfigFile::new(KEYS);
    let app = spawn_app(&[("CONFIG_FILE", &file.path())]).await;
    let key = ("x-api-key", "sk-backend");
    let first = post(
        &app,
        "",
        &[key, ("idempotency-key", "batch-7")],
        batch(0, 4),
    )
    .await;
    assert_eq!(first.status(), 200);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first: Value = first.json().await.unwrap();
    let again = post(
        &app,
        "",
        &[key, ("idempotency-key", "batch-7")],
        batch(0, 4),
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // Another key's same Idempotency-Key is another request.
    let other = post(
        &app,
        "?key=pk-shop",
        &[("idempotency-key", "batch-7")],
        batch(4, 1),
    )
    .await;
    assert_eq!(other.status(), 200);
    assert!(!other.headers().contains_key("idempotent-replayed"));
    let long = "x".repeat(256);
    let refused = post(&app, "", &[key, ("idempotency-key", &long)], batch(9, 1)).await;
    assert_eq!(refused.status(), 400);
    app.wait_for_rows(5).await;
    // Nothing more arrives: the resend stored nothing.
    let stats = app.stats.clone();
    assert!(app.stop().await.is_clean());
    assert_eq!(stats.events_written.get(), 5);
}

/// In `disk` mode a remembered answer outlives a restart: the resend after it is answered
/// with the first answer and stores nothing.
#[tokio::test]
async fn in_disk_mode_an_idempotent_resend_after_a_restart_stores_nothing() {
    let spool = crate::helpers::SpoolDir::new();
    let database = crate::helpers::unique_database();
    let env = [("DURABILITY", "disk"), ("SPOOL_DIR", spool.path())];
    let app = crate::helpers::spawn_app_in(&database, &env).await;
    let idem = ("idempotency-key", "order-42");
    assert_eq!(post(&app, "", &[idem], batch(0, 3)).await.status(), 200);
    app.wait_for_rows(3).await;
    assert!(app.stop_keeping_data().await.is_clean());

    let app = crate::helpers::spawn_app_in(&database, &env).await;
    let again = post(&app, "", &[idem], batch(0, 3)).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(post(&app, "", &[], batch(3, 1)).await.status(), 200);
    app.wait_for_rows(4).await;
    let stats = app.stats.clone();
    assert!(app.stop().await.is_clean());
    assert_eq!(
        stats.events_written.get(),
        1,
        "only the new event after the restart"
    );
}

/// `SIGHUP` reads `CONFIG_FILE` again even when nothing about the file looks changed (a
/// new file of the same size and time, as a configuration tool may leave it): the new key
/// works after the signal, not before.
#[tokio::test]
async fn sighup_reads_the_config_file_again() {
    let old = "[[keys]]\nname = \"app\"\nsecret = \"sk-first-1\"\n";
    let new = "[[keys]]\nname = \"app\"\nsecret = \"sk-later-2\"\n";
    assert_eq!(old.len(), new.len());
    let file = ConfigFile::new(old);
    // A file holding the config file's time, to set it back after the edit.
    let reference = file.0.path().join("reference");
    let touch = |from: &str, to: &str| {
        let status = std::process::Command::new("touch")
            .args(["-r", from, to])
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(&reference, "").unwrap();
    touch(&file.path(), reference.to_str().unwrap());
    let database = crate::helpers::unique_database();
    let (child, address) =
        crate::process::start_binary(&database, &[("CONFIG_FILE", &file.path())]).await;
    let post = |key: &'static str| {
        let address = address.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{address}/v1/events"))
                .header("x-api-key", key)
                .body(batch(0, 1))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(post("sk-first-1").await, 200);
    // Replaced by a file of the same size and time (renamed over it at once, so the file
    // watcher never sees another time or size).
    let replacement = file.0.path().join("replacement");
    std::fs::write(&replacement, new).unwrap();
    touch(reference.to_str().unwrap(), replacement.to_str().unwrap());
    std::fs::rename(&replacement, file.path()).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        post("sk-later-2").await,
        401,
        "not read again before the signal"
    );
    crate::process::signal(&child, "HUP");
    within(PATIENCE, async {
        while post("sk-later-2").await != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(post("sk-first-1").await, 401);
    let (status, _) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success());
}
