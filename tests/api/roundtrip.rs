//! Property: whatever the encoder accepts, ClickHouse reads back equal. Random events (any
//! Unicode, control characters and NUL in strings; extreme numbers and times) go through
//! the real HTTP endpoint, the buffer and an insert, and are compared field by field.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{clickhouse_json, spawn_app};

/// A string of 1..=max chars from all of Unicode, NUL and control characters included,
/// that is not blank (validation requires a visible name).
fn name(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(|chars| {
        let s: String = chars.into_iter().collect();
        format!("n{s}")
    })
}

fn event() -> impl Strategy<Value = Value> {
    (
        0u32..=u32::MAX,
        any::<u128>(),
        name(40),
        name(40),
        any::<u32>(),
        name(40),
        any::<u32>(),
        proptest::collection::vec(any::<char>(), 0..200),
    )
        .prop_map(|(t, id, os, session, sequence, event, param_int, param)| {
            let time = time::OffsetDateTime::from_unix_timestamp(i64::from(t)).unwrap();
            json!({
                "client_time": time.format(&time::format_description::well_known::Rfc3339).unwrap(),
                "device_id": uuid::Uuid::from_u128(id).to_string(),
                "device_os": os,
                "session": session,
                "sequence": sequence,
                "event": event,
                "param_int": param_int,
                "param_str": param.into_iter().collect::<String>(),
            })
        })
}

#[tokio::test]
async fn whatever_is_accepted_reads_back_equal() {
    let mut runner = TestRunner::new(Config::default());
    let strategy = proptest::collection::vec(event(), 300);
    let events = strategy.new_tree(&mut runner).unwrap().current();
    // Tag each event with its position so rows can be matched up.
    let events: Vec<Value> = events
        .into_iter()
        .enumerate()
        .map(|(i, mut e)| {
            e["param_int"] = json!(i);
            e
        })
        .collect();

    let app = spawn_app(&[]).await;
    let response = app
        .post_events(Value::Array(events.clone()).to_string())
        .await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["accepted"], events.len(), "{answer}");
    app.wait_for_rows(events.len() as u64).await;

    let rows = clickhouse_json(&format!(
        "SELECT toUnixTimestamp(client_time) AS t, toString(device_id) AS device_id, device_os, \
         session, sequence, event, param_int, param_str FROM `{}`.events ORDER BY param_int",
        app.database
    ))
    .await;
    assert_eq!(rows.len(), events.len());
    for (row, sent) in rows.iter().zip(&events) {
        let sent_time = time::OffsetDateTime::parse(
            sent["client_time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let t: i64 = row["t"].to_string().trim_matches('"').parse().unwrap();
        assert_eq!(t, sent_time.unix_timestamp(), "{sent}");
        for field in [
            "device_id",
            "device_os",
            "session",
            "sequence",
            "event",
            "param_int",
            "param_str",
        ] {
            assert_eq!(row[field], sent[field], "{field} of {sent}");
        }
    }
    app.stop().await;
}
