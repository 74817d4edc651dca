//! `POST /v1/events`: what is stored, what is rejected, and what each answer promises.

use serde_json::{Value, json};

use crate::helpers::{batch, clickhouse, clickhouse_json, error_fields, event, spawn_app};

#[tokio::test]
async fn a_posted_batch_is_stored_with_every_field_equal() {
    let app = spawn_app(&[]).await;
    let sent = json!([
        {"client_time": "2020-12-01 23:59:00", "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C821E",
         "device_os": "IOS 13.5.1", "session": "ybuRi8mAUypxjbxQ", "sequence": 1, "event": "app_start",
         "param_int": 0, "param_str": "some text"},
        {"client_time": "2021-06-30T12:00:05.999+02:00", "device_id": "9b2c1d0e-0000-4000-8000-00000000abcd",
         "device_os": "Android 14", "session": "s-2", "sequence": 4294967295u32, "event": "purchase",
         "param_int": 4294967295u32, "param_str": "ünïcødé \"quoted\" \\ tab\t"},
    ]);
    let before = time::OffsetDateTime::now_utc().unix_timestamp();

    let response = app.post_events(sent.to_string()).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"accepted": 2, "rejected": 0, "errors": []}));

    app.wait_for_rows(2).await;
    let rows = clickhouse_json(&format!(
        "SELECT toString(client_time) AS client_time, toUnixTimestamp(server_time) AS server_time, \
         toString(device_id) AS device_id, device_os, session, sequence, event, param_int, param_str, \
         IPv6NumToString(ip) AS ip FROM `{}`.events ORDER BY sequence",
        app.database
    ))
    .await;
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(rows[0]["client_time"], "2020-12-01 23:59:00");
    assert_eq!(
        rows[1]["client_time"], "2021-06-30 10:00:05",
        "RFC 3339 stored as UTC"
    );
    assert_eq!(rows[0]["device_id"], "0287d9aa-4adf-4b37-a60f-3e9e645c821e");
    assert_eq!(rows[1]["device_id"], "9b2c1d0e-0000-4000-8000-00000000abcd");
    for (row, sent) in rows.iter().zip(sent.as_array().unwrap()) {
        for field in [
            "device_os",
            "session",
            "event",
            "param_str",
            "sequence",
            "param_int",
        ] {
            assert_eq!(row[field], sent[field], "{field}");
        }
        assert_eq!(row["ip"], "::ffff:127.0.0.1");
        // 18.16 quotes 64-bit integers in JSON; accept either form.
        let server_time: i64 = row["server_time"]
            .to_string()
            .trim_matches('"')
            .parse()
            .unwrap();
        assert!((before..=after).contains(&server_time), "{server_time}");
    }
    app.stop().await;
}

#[tokio::test]
async fn valid_events_are_kept_and_each_invalid_one_is_reported() {
    let app = spawn_app(&[]).await;
    let mut bad_uuid = event(2);
    bad_uuid["device_id"] = json!("not-a-uuid");
    let mut bad_two = event(3);
    bad_two["sequence"] = json!(-1);
    bad_two["device_os"] = json!("");
    let body = json!([event(1), bad_uuid, bad_two, event(4), "x"]);

    // An element that is not an object makes the whole body malformed.
    let response = app.post_events(body.to_string()).await;
    assert_eq!(response.status(), 400);

    let body = json!([event(1), bad_uuid, bad_two, event(4)]);
    let response = app.post_events(body.to_string()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], 2);
    assert_eq!(answer["rejected"], 2);
    assert_eq!(
        error_fields(&answer),
        [(1, "device_id"), (2, "device_os"), (2, "sequence")]
    );

    app.wait_for_rows(2).await;
    let stored = clickhouse(&format!(
        "SELECT groupArray(sequence) FROM (SELECT sequence FROM `{}`.events ORDER BY sequence)",
        app.database
    ))
    .await;
    assert_eq!(stored.trim(), "[1,4]");
    app.stop().await;
}

#[tokio::test]
async fn malformed_bodies_get_400_and_store_nothing() {
    let app = spawn_app(&[]).await;
    for body in [
        "",
        "not json",
        "{\"event\": \"x\"",
        "42",
        "[1, 2, 3]",
        "[{\"sequence\": 1}",
        "\u{0}",
    ] {
        let response = app.post_events(body).await;
        assert_eq!(response.status(), 400, "{body:?}");
        let answer: Value = response.json().await.unwrap();
        assert!(answer["error"].is_string(), "{body:?}: {answer}");
    }
    let response = app.post_events(vec![b'[', 0xff, 0xfe, b']']).await;
    assert_eq!(response.status(), 400, "invalid UTF-8");

    // A valid request afterwards is the only thing that lands.
    assert_eq!(app.post_events(batch(7, 1)).await.status(), 200);
    app.wait_for_rows(1).await;
    assert_eq!(app.stats.events_accepted.get(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_oversized_body_gets_413() {
    let app = spawn_app(&[("BODY_MAX_BYTES", "4096")]).await;
    let response = app.post_events(batch(0, 100)).await;
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("4096"));
    app.stop().await;
}

#[tokio::test]
async fn direct_mode_answers_only_after_rows_are_queryable() {
    let app = spawn_app(&[("BUFFER_MODE", "direct")]).await;
    for round in 0..3u32 {
        let response = app.post_events(batch(round * 10, 10)).await;
        assert_eq!(response.status(), 200);
        // No polling: the rows must be there the moment the answer is.
        assert_eq!(app.count().await, u64::from(round + 1) * 10);
    }
    app.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_json() {
    let app = spawn_app(&[]).await;
    let response = app.get("/nope").await;
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());

    let response = app.get("/v1/events").await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    assert!(response.json::<Value>().await.unwrap()["error"].is_string());

    let response = app
        .http
        .delete(format!("{}/v1/health", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    app.stop().await;
}

#[tokio::test]
async fn ipv6_clients_are_recorded() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let app = crate::helpers::spawn_app(&[("HTTP_HOST", "::1")]).await;
    let address = app.address.replace("http://::1:", "http://[::1]:");
    let response = app
        .http
        .post(format!("{address}/v1/events"))
        .body(batch(0, 1))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(app.stored_ip().await, "::1");
    app.stop().await;
}
