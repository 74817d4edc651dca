//! Client clock skew: `sent_at` (envelope field or `X-Sent-At`) corrects event times the
//! way Segment does, keeping the raw `client_time`.

use serde_json::json;

use crate::helpers::{clickhouse, event, spawn_app};

#[tokio::test]
async fn sent_at_corrects_client_time_and_keeps_the_raw_one() {
    let app = spawn_app(&[]).await;
    // The device's clock is a day ahead: it stamps its event and its send time with it.
    let device_now = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let happened = (device_now - time::Duration::seconds(30))
        .format(&fmt)
        .unwrap();
    let sent = device_now.format(&fmt).unwrap();
    let mut e1 = event(1);
    e1["client_time"] = json!(happened);
    let mut e2 = event(2);
    e2["client_time"] = json!(happened);

    let envelope = json!({"sent_at": sent, "events": [e1]});
    assert_eq!(app.post_events(envelope.to_string()).await.status(), 200);
    let header = app
        .http
        .post(format!("{}/v1/events", app.address))
        .header("x-sent-at", &sent)
        .body(json!([e2]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(header.status(), 200);
    let bad = json!({"sent_at": "yesterday", "events": [event(3)]});
    assert_eq!(app.post_events(bad.to_string()).await.status(), 400);
    let plain = app.post_events(json!([event(4)]).to_string()).await;
    assert_eq!(plain.status(), 200);
    app.wait_for_rows(3).await;

    let rows = clickhouse(&format!(
        "SELECT sequence, toString(client_time), \
         toUnixTimestamp(server_time) - toUnixTimestamp(client_time_corrected), \
         client_time_corrected = client_time FROM `{}`.events ORDER BY sequence FORMAT TSV",
        app.database
    ))
    .await;
    let rows: Vec<Vec<&str>> = rows.lines().map(|l| l.split('\t').collect()).collect();
    for row in &rows[..2] {
        assert_eq!(row[1], happened, "raw client_time kept");
        let lag: i64 = row[2].parse().unwrap();
        // 30 s before it was sent; allow for a second boundary between the two clocks.
        assert!((29..=31).contains(&lag), "{row:?}");
    }
    assert_eq!(rows[2][0], "4");
    assert_eq!(
        rows[2][3], "1",
        "without sent_at the corrected time is client_time"
    );
    app.stop().await;
}
