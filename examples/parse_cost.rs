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
//! Measured when the hand-written path was removed (`hand` was its mode, until e2fef9b):
//! 30 events, hand-written 174.3 k, generic with the events table's rules 166.8 k; 1,020
//! events 5.884 M and 5.580 M.

use std::hint::black_box;
use std::net::Ipv6Addr;

use event_ingest::table::event::{DecodeError, Format};
use event_ingest::table::{RequestFacts, TableSchema};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: parse_cost BODY.json generic N [REPEAT]";
    let path = args.next().expect(usage);
    let which = args.next().expect(usage);
    let n: usize = args.next().and_then(|s| s.parse().ok()).expect(usage);
    let repeat: usize = args.next().map_or(1, |s| s.parse().expect(usage));
    let text = std::fs::read_to_string(&path).expect("readable body");
    let body = repeated(&text, repeat);
    let now = time::OffsetDateTime::from_unix_timestamp(1_606_867_260).expect("time");
    let schema = TableSchema::events().expect("the events table's schema");
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: now.unix_timestamp_nanos(),
        ip: Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    let mut rows = 0;
    for _ in 0..n {
        rows += match which.as_str() {
            "generic" => {
                let out = schema
                    .validate_body(black_box(&body), Format::Json, 100_000, facts, &[], |_| {
                        Ok::<_, DecodeError>(None)
                    })
                    .expect("a valid body");
                black_box(out.rows).len()
            }
            other => panic!("{other}: {usage}"),
        };
    }
    println!("{which}: {n} bodies of {} bytes, {rows} rows", body.len());
}

/// The array's events `repeat` times over, as one JSON array.
fn repeated(text: &str, repeat: usize) -> Vec<u8> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    format!("[{}]", vec![inner; repeat].join(",")).into_bytes()
}
