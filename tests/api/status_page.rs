//! The status page, rendered by a real headless browser (Debian's `chromium`; `make test`
//! installs it), must show the figures the server reports.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{PATIENCE, event, spawn_app, within};

pub(crate) fn find_chromium() -> Option<String> {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return Some(path);
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .map(str::to_string)
}

/// Renders `url` headless, lets its scripts run for a few (virtual) seconds, and returns
/// the resulting DOM. `trusted`: the one certificate (PEM file) to accept for HTTPS, by the
/// hash of its public key (the way Chromium pins a test certificate).
pub(crate) async fn render(chromium: &str, url: &str, trusted: Option<&str>) -> String {
    // Removed when dropped, whether the run succeeds, fails or times out.
    let profile = tempfile::Builder::new()
        .prefix("ei-chromium-")
        .tempdir()
        .expect("a profile folder");
    let output =
        within(
            Duration::from_secs(90),
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=4000",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(trusted.map(|cert| {
                    format!("--ignore-certificate-errors-spki-list={}", spki_hash(cert))
                }))
                .arg(url)
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("chromium runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The base64 SHA-256 of a certificate's public key (what Chromium's SPKI list takes).
fn spki_hash(cert: &str) -> String {
    let script = format!(
        "openssl x509 -pubkey -noout -in '{cert}' | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64"
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The text of the element with `id` in `dom` (elements here hold plain text).
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {dom}"));
    let open = start + dom[start..].find('>').expect("tag closes") + 1;
    let close = open + dom[open..].find('<').expect("text ends");
    &dom[open..close]
}

#[tokio::test]
async fn the_status_page_shows_live_figures_in_a_real_browser() {
    status_page_shows_live_figures(false).await;
}

/// The same over HTTPS (HTTP/2 by ALPN): the page and its requests for figures.
#[tokio::test]
async fn the_status_page_loads_over_https_in_a_real_browser() {
    status_page_shows_live_figures(true).await;
}

async fn status_page_shows_live_figures(tls: bool) {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (make test installs it)"
        );
        eprintln!("skipped: no chromium here; `make test` installs it");
        return;
    };
    let pki = crate::tls::Pki::new();
    let (cert, key) = pki.issue("listener", &["localhost", "127.0.0.1"]);
    let app = match tls {
        true => spawn_app(&[("TLS_CERT_FILE", &cert), ("TLS_KEY_FILE", &key)]).await,
        false => spawn_app(&[]).await,
    };
    let (client, base) = match tls {
        true => (
            crate::tls::trusting(&pki.ca_file(), false),
            crate::tls::https(&app),
        ),
        false => (reqwest::Client::new(), app.address.clone()),
    };
    let mut bad = event(9);
    bad["device_id"] = json!("nope");
    let body = json!([event(1), event(2), event(3), bad]).to_string();
    let posted = client
        .post(format!("{base}/v1/events"))
        .body(body)
        .send()
        .await;
    assert_eq!(posted.unwrap().status(), 200);
    app.wait_for_rows(3).await;
    let status: Value = within(PATIENCE, async {
        loop {
            let got = client
                .get(format!("{base}/v1/status"))
                .send()
                .await
                .unwrap();
            let status: Value = got.json().await.unwrap();
            if status["recent_flushes"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
            {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;

    let dom = render(&chromium, &format!("{base}/"), tls.then_some(cert.as_str())).await;
    assert_eq!(
        text_of(&dom, "clickhouse-version"),
        status["clickhouse_version"].as_str().unwrap()
    );
    assert_eq!(text_of(&dom, "mode"), "double");
    assert_eq!(text_of(&dom, "accepted"), "3");
    assert_eq!(text_of(&dom, "rejected"), "1");
    assert_eq!(text_of(&dom, "written"), "3");
    assert_eq!(text_of(&dom, "last-error"), "none");
    assert!(text_of(&dom, "updated").starts_with("updated"), "{dom}");
    let flushes = &dom[dom.find("id=\"flushes\"").unwrap()..];
    assert!(
        flushes.contains("<td>timer</td><td>3</td><td>3</td>"),
        "{flushes}"
    );
    app.stop().await;
}
