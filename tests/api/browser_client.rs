//! The browser client (`GET /v1/client.js`) in a real headless Chromium, on pages served from
//! other origins (other ports): a page of an allowed origin tracks events and flushes them,
//! another tracks and leaves (its events go as beacons), and a page of an origin the key
//! does not name stores nothing.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::helpers::{PATIENCE, spawn_app, within};
use crate::status_page::{find_chromium, render};

/// Serves `pages` (path, HTML) on `listener`; any other path gets the first.
fn serve_pages(
    listener: TcpListener,
    pages: Vec<(&'static str, String)>,
) -> tokio::task::JoinHandle<()> {
    let pages = std::sync::Arc::new(pages);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let n = socket.read(&mut request).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&request[..n]);
                let path = head.split(' ').nth(1).unwrap_or("/");
                let page = (pages.iter().find(|(p, _)| *p == path))
                    .unwrap_or(&pages[0])
                    .1
                    .clone();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    })
}

/// A page that loads the client from `service`, tracks `n` events from sequence `first`,
/// then flushes them (`leave`: the page goes away instead, so they go as beacons).
fn page(service: &str, first: u32, n: u32, leave: bool) -> String {
    let then = match leave {
        // What the browser does as the page goes away (headless Chromium dumping the page
        // does not follow a navigation away from it).
        true => {
            "window.dispatchEvent(new PageTransitionEvent('pagehide')); \
                 setTimeout(() => { document.getElementById('state').textContent = 'left'; }, 500);"
        }
        false => {
            "ingest.flush().then(() => { document.getElementById('state').textContent = 'sent'; });"
        }
    };
    format!(
        r#"<!doctype html><html><body><div id="state">start</div>
<script src="{service}/v1/client.js"></script>
<script>
const ingest = eventIngest({{ url: "{service}", key: "pk-page", flushMs: 60000 }});
for (let i = 0; i < {n}; i++) {{
  ingest.track({{ device_os: "Chromium", sequence: {first} + i, event: "page_view" }});
}}
{then}
</script></body></html>"#
    )
}

async fn stored(app: &crate::helpers::TestApp, sequences: std::ops::Range<u32>) -> u64 {
    let sql = format!(
        "SELECT count() FROM `{}`.events WHERE sequence >= {} AND sequence < {}",
        app.database, sequences.start, sequences.end
    );
    crate::helpers::clickhouse(&sql)
        .await
        .trim()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn pages_send_events_with_the_client_once_and_other_origins_store_nothing() {
    let Some(chromium) = find_chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium is required in CI"
        );
        eprintln!("skipped: no chromium here; `make test` installs it");
        return;
    };
    let allowed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://127.0.0.1:{}", allowed.local_addr().unwrap().port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keys.toml");
    std::fs::write(
        &config,
        format!("[[keys]]\nname = \"page\"\nsecret = \"pk-page\"\norigins = [\"{origin}\"]\n"),
    )
    .unwrap();
    let app = spawn_app(&[("CONFIG_FILE", config.to_str().unwrap())]).await;
    let service = app.address.clone();

    // A page that tracks and flushes; one that tracks and leaves (its events go as beacons).
    let pages = serve_pages(
        allowed,
        vec![
            ("/flush", page(&service, 0, 3, false)),
            ("/leave", page(&service, 10, 2, true)),
        ],
    );
    let dom = render(&chromium, &format!("{origin}/flush"), None).await;
    assert!(dom.contains(">sent<"), "{dom}");
    let dom = render(&chromium, &format!("{origin}/leave"), None).await;
    assert!(dom.contains(">left<"), "{dom}");

    // The same pages from an origin the key does not name: refused by CORS and the service.
    let other_origin = format!("http://127.0.0.1:{}", other.local_addr().unwrap().port());
    let strangers = serve_pages(
        other,
        vec![
            ("/flush", page(&service, 100, 2, false)),
            ("/leave", page(&service, 200, 2, true)),
        ],
    );
    render(&chromium, &format!("{other_origin}/flush"), None).await;
    render(&chromium, &format!("{other_origin}/leave"), None).await;

    within(PATIENCE, async {
        while stored(&app, 0..20).await < 5 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(stored(&app, 0..3).await, 3, "the flushed events, once");
    assert_eq!(stored(&app, 10..12).await, 2, "the beacons, once");
    assert_eq!(
        stored(&app, 100..300).await,
        0,
        "nothing from another origin"
    );
    pages.abort();
    strangers.abort();
    app.stop().await;
}
