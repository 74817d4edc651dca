//! Times for a table's `DateTime('zone')` columns: written without an
//! offset they are the column zone's wall-clock time, as ClickHouse reads them; with an
//! offset they are that instant. A date or time is stored as sent or refused by field.

use serde_json::{Value, json};

use crate::helpers::{clickhouse, clickhouse_json, modern_engine, spawn_app_in, unique_database};
use crate::tables::{post_table, table_with, wait_for};

#[tokio::test]
async fn times_without_an_offset_are_read_in_the_columns_time_zone() {
    let database = unique_database();
    // `DateTime64` only where the engine has it (not 18.16). Aliases differ from column
    // names: 18.16 lets an alias shadow a column within the same SELECT.
    let modern = modern_engine();
    let columns = match modern {
        true => "n UInt32, at DateTime('Europe/Berlin'), at64 DateTime64(3, 'Europe/Berlin')",
        false => "n UInt32, at DateTime('Europe/Berlin')",
    };
    // `client_time_corrected` is filled from `client_time` (no `sent_at`: the same instant).
    let columns = format!(
        "{columns}, client_time DateTime('Europe/Berlin'), \
         client_time_corrected DateTime('Europe/Berlin')"
    );
    table_with(&database, "zoned", &columns).await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "zoned")]).await;
    let body = json!([
        // Winter (+01:00) and summer (+02:00) wall-clock times in Berlin.
        {"n": 1, "at": "2020-12-01 12:00:00", "at64": "2020-12-01 12:00:00.250",
         "client_time": "2020-12-01 12:00:00"},
        {"n": 2, "at": "2020-07-01 12:00:00", "at64": "2020-07-01 12:00:00.250"},
        // An offset says which instant, whatever the column's zone.
        {"n": 3, "at": "2020-12-01T12:00:00Z", "at64": "2020-12-01T12:00:00.250+00:00"},
        // A bare date is midnight in the zone.
        {"n": 4, "at": "2020-12-01", "at64": "2020-12-01"},
    ]);
    let response = post_table(&app, "zoned", &body).await;
    assert_eq!(response.status(), 200);
    wait_for(&database, "zoned", 4).await;
    let rows = clickhouse_json(&format!(
        "SELECT n, toString(at) AS local, toString(toTimeZone(at, 'UTC')) AS utc, \
         toString(client_time) AS client, toString(client_time_corrected) AS corrected{} \
         FROM `{database}`.zoned ORDER BY n",
        match modern {
            true => ", toString(at64) AS local64",
            false => "",
        }
    ))
    .await;
    let expected = [
        (
            1,
            "2020-12-01 12:00:00",
            "2020-12-01 11:00:00",
            "2020-12-01 12:00:00.250",
        ),
        (
            2,
            "2020-07-01 12:00:00",
            "2020-07-01 10:00:00",
            "2020-07-01 12:00:00.250",
        ),
        (
            3,
            "2020-12-01 13:00:00",
            "2020-12-01 12:00:00",
            "2020-12-01 13:00:00.250",
        ),
        (
            4,
            "2020-12-01 00:00:00",
            "2020-11-30 23:00:00",
            "2020-12-01 00:00:00.000",
        ),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:?}");
    for (row, (n, at, utc, at64)) in rows.iter().zip(expected) {
        assert_eq!(row["n"], n, "{row}");
        assert_eq!(row["local"], at, "{row}");
        assert_eq!(row["utc"], utc, "{row}");
        assert_eq!(row["corrected"], row["client"], "{row}");
        if modern {
            assert_eq!(row["local64"], at64, "{row}");
        }
    }
    app.stop().await;
}

/// A date or time the server would show as another (18.16 shows any day after 2106-02-07
/// as 1970-01-01) is refused by field; a modern server stores it as sent.
#[tokio::test]
async fn a_date_past_what_the_server_shows_is_refused_by_field_or_stored_as_sent() {
    let database = unique_database();
    table_with(&database, "far", "id UInt32, d Date, t DateTime('UTC')").await;
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "far")]).await;
    let body = json!([
        {"id": 1, "d": "2106-02-07", "t": "2106-02-06 23:59:59"},
        {"id": 2, "d": "2149-06-06", "t": "2106-02-07 06:28:15"},
        {"id": 3, "d": "2024-01-01", "t": 1.5},
    ]);
    let response = post_table(&app, "far", &body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    // A fraction of a second in a number is never cut silently.
    let errors = answer["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["index"] == 2
            && e["field"] == "t"
            && e["error"].as_str().unwrap().contains("fraction")),
        "{answer}"
    );
    let expected = match modern_engine() {
        true => {
            assert_eq!(answer["accepted"], 2, "{answer}");
            "1\t2106-02-07\t2106-02-06 23:59:59\n2\t2149-06-06\t2106-02-07 06:28:15\n"
        }
        false => {
            assert_eq!(answer["accepted"], 1, "{answer}");
            assert!(
                errors.iter().any(|e| e["index"] == 1
                    && e["field"] == "d"
                    && e["error"].as_str().unwrap().contains("after 2106-02-07")),
                "{answer}"
            );
            assert!(
                errors.iter().any(|e| e["index"] == 1 && e["field"] == "t"),
                "{answer}"
            );
            "1\t2106-02-07\t2106-02-06 23:59:59\n"
        }
    };
    let rows = expected.lines().count() as u64;
    wait_for(&database, "far", rows).await;
    let stored = clickhouse(&format!(
        "SELECT id, d, t FROM `{database}`.far ORDER BY id FORMAT TabSeparated"
    ))
    .await;
    assert_eq!(stored, expected);
    app.stop().await;
}
