//! The status page, rendered by a real headless browser (Debian's `chromium`; `make test`
//! installs it), must show the figures the server reports.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{PATIENCE, event, spawn_app, within};

fn find_chromium() -> Option<String> {
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
/// the resulting DOM.
async fn render(chromium: &str, url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("ei-chromium-{}", uuid::Uuid::new_v4()));
    let output = within(
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
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
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
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI (make test installs it)"
        );
        eprintln!("skipped: no chromium here; `make test` installs it");
        return;
    };
    let app = spawn_app(&[]).await;
    let mut bad = event(9);
    bad["device_id"] = json!("nope");
    let body = json!([event(1), event(2), event(3), bad]).to_string();
    assert_eq!(app.post_events(body).await.status(), 200);
    app.wait_for_rows(3).await;
    let status: Value = within(PATIENCE, async {
        loop {
            let status: Value = app.get("/v1/status").await.json().await.unwrap();
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

    let dom = render(&chromium, &format!("{}/", app.address)).await;
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
