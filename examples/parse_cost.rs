//! Instructions per request body for `/v1/events`' parse path (decode, validate, encode to
//! RowBinary: the events table's schema and rules through `TableSchema::validate_body`),
//! counted with cachegrind rather than timed: the shared machine's timings scatter,
//! instruction counts do not.
//!
//! Run: `cargo build --release --example parse_cost`, then
//! `valgrind --tool=cachegrind --cache-sim=no target/release/examples/parse_cost BODY generic N REPEAT`
//! with `BODY` a JSON array of events (e.g. `/work/shared/fixtures/seed-payload.json`, read
//! at run time, never copied here), `N` the number of bodies and `REPEAT` how many times the
//! body's events are repeated (1 for the 30-event body, 34 for 1,020 events). Instructions
//! per body: the difference of the `I refs` of two runs (N and 0) divided by N.
//!
//! `flat` and `nested` compare a table's settings with plain columns: the same events, with
//! an `extra` field, read into a table of plain columns (`flat`: every field top-level), and
//! with `device_os` under `context.device.os`, `param_int`/`param_str`/`extra` under
//! `properties`, read by three paths and a rest column that keeps `properties.extra`
//! (`nested`); `top` reads the nested body into the plain columns (the nested fields
//! skipped, as a table without settings skips them).
//!
//! `serde` reads the same body the plain way (owned strings, no validation, no encoding):
//! what the parse-only server of `make loadtest` does with it.
//!
//! Measured with paths and a rest column in place (30-event body, 2,000 bodies): `top`
//! 201.4 k instructions per body, `nested` 256.8 k (1.27x: the paths and the rest column
//! cost 27 % over reading the same body's top-level fields), `flat` 187.1 k (the same
//! events sent flat, a 12 % smaller body with nothing to keep in a rest column: 1.37x).
//!
//! Measured when the hand-written path was removed (`hand` was its mode, until e2fef9b):
//! 30 events, hand-written 174.3 k, generic with the events table's rules 166.8 k; 1,020
//! events 5.884 M and 5.580 M.

use std::hint::black_box;
use std::net::Ipv6Addr;

use event_ingest::table::event::{DecodeError, Format};
use event_ingest::table::{ColumnInfo, RequestFacts, TableSchema, TableSettings};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: parse_cost BODY.json generic|serde|flat|nested|top N [REPEAT]";
    let path = args.next().expect(usage);
    let which = args.next().expect(usage);
    let n: usize = args.next().and_then(|s| s.parse().ok()).expect(usage);
    let repeat: usize = args.next().map_or(1, |s| s.parse().expect(usage));
    let text = std::fs::read_to_string(&path).expect("readable body");
    let text = match which.as_str() {
        "flat" => reshaped(&text, false),
        "nested" | "top" => reshaped(&text, true),
        _ => text,
    };
    let body = repeated(&text, repeat);
    let now = time::OffsetDateTime::from_unix_timestamp(1_606_867_260).expect("time");
    let schema = match which.as_str() {
        "generic" | "serde" => TableSchema::events().expect("the events table's schema"),
        _ => plain(which == "nested"),
        // `top`: the nested body into the same columns without settings (the nested
        // fields skipped).
    };
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: now.unix_timestamp_nanos(),
        ip: Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    let mut rows = 0;
    for _ in 0..n {
        rows += match which.as_str() {
            "generic" | "flat" | "nested" | "top" => {
                let out = schema
                    .validate_body(black_box(&body), Format::Json, 100_000, facts, &[], |_| {
                        Ok::<_, DecodeError>(None)
                    })
                    .expect("a valid body");
                black_box(out.rows).len()
            }
            "serde" => black_box(
                serde_json::from_slice::<Vec<PlainEvent>>(black_box(&body)).expect("a valid body"),
            )
            .len(),
            other => panic!("{other}: {usage}"),
        };
    }
    println!("{which}: {n} bodies of {} bytes, {rows} rows", body.len());
}

/// One event read the plain way (`serde`): owned strings, no validation, no encoding, as
/// the parse-only server `make loadtest` compares with reads it.
#[derive(serde::Deserialize)]
#[allow(dead_code)]
struct PlainEvent {
    client_time: String,
    device_id: String,
    device_os: String,
    session: String,
    sequence: u32,
    event: String,
    param_int: u32,
    param_str: String,
}

/// The array's events `repeat` times over, as one JSON array.
fn repeated(text: &str, repeat: usize) -> Vec<u8> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    format!("[{}]", vec![inner; repeat].join(",")).into_bytes()
}

/// The events with an `extra` field: top-level, or nested as a client of a product
/// analytics SDK sends them.
fn reshaped(text: &str, nested: bool) -> String {
    let events: Vec<serde_json::Value> = serde_json::from_str(text).expect("a JSON array");
    let out: Vec<serde_json::Value> = events
        .into_iter()
        .map(|mut e| {
            let o = e.as_object_mut().expect("an event object");
            o.insert("extra".into(), "campaign-42".into());
            if !nested {
                return e;
            }
            let take = |o: &mut serde_json::Map<String, serde_json::Value>, k: &str| {
                o.remove(k).unwrap_or_default()
            };
            let os = take(o, "device_os");
            let (pi, ps, extra) = (take(o, "param_int"), take(o, "param_str"), take(o, "extra"));
            o.insert("context".into(), serde_json::json!({"device": {"os": os}}));
            o.insert(
                "properties".into(),
                serde_json::json!({"param_int": pi, "param_str": ps, "extra": extra}),
            );
            e
        })
        .collect();
    serde_json::to_string(&out).expect("JSON")
}

/// Plain columns for the events' fields (no rules), with `extra`; `nested`: filled by
/// paths, and `extra` as the rest column.
fn plain(nested: bool) -> TableSchema {
    let columns: Vec<ColumnInfo> = [
        ("client_time", "DateTime"),
        ("device_id", "UUID"),
        ("device_os", "String"),
        ("session", "String"),
        ("sequence", "UInt32"),
        ("event", "String"),
        ("param_int", "Int64"),
        ("param_str", "String"),
        ("extra", "String"),
    ]
    .iter()
    .map(|(name, ty)| ColumnInfo::plain(name, ty))
    .collect();
    let schema = TableSchema::new("db.t", &columns, "server_time", "ip").expect("a schema");
    if !nested {
        return schema;
    }
    let paths = [
        ("device_os", "context.device.os"),
        ("param_int", "properties.param_int"),
        ("param_str", "properties.param_str"),
    ];
    schema
        .with_settings(&TableSettings {
            paths: paths
                .iter()
                .map(|(c, p)| (c.to_string(), p.to_string()))
                .collect(),
            rest: Some("extra".into()),
            ..TableSettings::default()
        })
        .expect("settings that fit")
}
