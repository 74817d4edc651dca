//! Input formats and encodings: NDJSON, a single object, gzip and zstd bodies, and the
//! limits on them.

use std::io::Write;

use serde_json::Value;

use crate::helpers::{TestApp, batch, event, spawn_app};

async fn post(
    app: &TestApp,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    request.send().await.expect("request sent")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn ndjson(first: u32, n: u32) -> String {
    (first..first + n)
        .map(|i| format!("{}\n", event(i)))
        .collect()
}

#[tokio::test]
async fn ndjson_gzip_zstd_and_single_objects_all_land() {
    let app = spawn_app(&[]).await;

    // NDJSON with one bad line: that line is one rejected event, the rest land.
    let body = format!("{}not json\n{}", ndjson(0, 3), ndjson(3, 2));
    let response = post(&app, "application/x-ndjson", None, body.into_bytes()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (answer["accepted"].as_u64(), answer["rejected"].as_u64()),
        (Some(5), Some(1))
    );
    assert_eq!(answer["errors"][0]["index"], 3);

    // gzip'd NDJSON.
    let response = post(
        &app,
        "application/x-ndjson",
        Some("gzip"),
        gzip(ndjson(10, 4).as_bytes()),
    )
    .await;
    assert_eq!(response.status(), 200);

    // zstd'd JSON array.
    let body = zstd::encode_all(batch(20, 6).as_bytes(), 3).unwrap();
    let response = post(&app, "application/json", Some("zstd"), body).await;
    assert_eq!(response.status(), 200);

    // One object, not in an array.
    let response = post(
        &app,
        "application/json",
        None,
        event(30).to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 1);

    app.wait_for_rows(5 + 4 + 6 + 1).await;
    app.stop().await;
}

#[tokio::test]
async fn limits_and_unknown_encodings_are_refused_whole() {
    let app = spawn_app(&[
        ("BODY_MAX_BYTES", "65536"),
        ("MAX_EVENTS_PER_REQUEST", "50"),
    ])
    .await;

    // A gzip bomb: tiny on the wire, far over the limit once decompressed.
    let bomb = gzip(&vec![b' '; 20 * 1024 * 1024]);
    assert!(bomb.len() < 65536);
    let response = post(&app, "application/json", Some("gzip"), bomb).await;
    assert_eq!(response.status(), 413);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());

    let response = post(&app, "application/json", None, batch(0, 51).into_bytes()).await;
    assert_eq!(response.status(), 413);

    let response = post(
        &app,
        "application/json",
        Some("br"),
        batch(0, 1).into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 415);

    let response = post(&app, "application/json", Some("gzip"), b"not gzip".to_vec()).await;
    assert_eq!(response.status(), 400);

    // Nothing of the above was stored; a good request afterwards is all there is.
    assert_eq!(
        post(&app, "application/json", None, batch(0, 2).into_bytes())
            .await
            .status(),
        200
    );
    app.wait_for_rows(2).await;
    app.stop().await;
}
