//! The `/v1/events` contract as an oracle: ~500 bodies (good events, every field wrong in
//! every way, missing, null, duplicate and extra fields, escapes and lone surrogates,
//! envelopes and `X-Sent-At`, NDJSON, single objects, bodies the one-pass reading gives up
//! on, event limits, whole-body errors) with the answers the hand-written path gave before
//! it was removed (`fixtures/events_answers.json`: status, `accepted`, `rejected`, `errors`,
//! the rejected-by-field reasons and the rows' bytes). Whatever path `/v1/events` takes, it
//! must give exactly these answers.

use std::net::Ipv6Addr;

use actix_web::ResponseError;
use serde_json::{Value, json};

use super::ApiError;
use super::events::read_events;
use crate::table::event::Format;
use crate::table::{TableSchema, TableValidated};

/// The request's time and address for every case.
fn server_time() -> time::OffsetDateTime {
    // 2020-12-02 00:01:00 UTC, a minute after the good event's `client_time`.
    time::OffsetDateTime::from_unix_timestamp(1_606_867_260).expect("a valid time")
}

fn ip() -> Ipv6Addr {
    "::ffff:10.1.2.3".parse().expect("an address")
}

/// One case's answer as the fixture records it.
fn answer(result: Result<TableValidated, ApiError>) -> Value {
    match result {
        Err(e) => json!({"status": e.status_code().as_u16(), "error": e.to_string()}),
        Ok(out) => {
            let reasons: Vec<Value> = out.reasons.iter().map(|(f, n)| json!([f, n])).collect();
            let rows: String = out.rows.data().iter().map(|b| format!("{b:02x}")).collect();
            json!({
                "status": 200,
                "accepted": out.rows.len(),
                "rejected": out.rejected,
                "errors": out.errors,
                "reasons": reasons,
                "rows": rows,
            })
        }
    }
}

/// A case's body, format, limit and header through [`read_events`].
fn run(schema: &TableSchema, case: &Value) -> Value {
    let (body, format, max_events, header) = inputs(case);
    answer(read_events(
        schema,
        &[],
        &body,
        format,
        max_events,
        header.as_deref(),
        server_time(),
        ip(),
        None,
    ))
}

fn inputs(case: &Value) -> (Vec<u8>, Format, usize, Option<String>) {
    let body = match (case["body"].as_str(), case["body_hex"].as_str()) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(hex)) => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect(),
        (None, None) => panic!("case without a body: {case}"),
    };
    let format = match case["format"].as_str() {
        Some("ndjson") => Format::Ndjson,
        _ => Format::Json,
    };
    let max_events = case["max_events"].as_u64().expect("max_events") as usize;
    let header = case["sent_at_header"].as_str().map(str::to_string);
    (body, format, max_events, header)
}

fn cases() -> Vec<Value> {
    serde_json::from_str(include_str!("../table/fixtures/events_answers.json"))
        .expect("the fixture is JSON")
}

#[test]
fn every_case_gets_the_answer_the_hand_written_path_gave() {
    let schema = TableSchema::events().expect("the events schema");
    let cases = cases();
    assert!(cases.len() > 400, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        let got = run(&schema, case);
        if got != case["answer"] {
            wrong.push(format!(
                "{}:\n  expected {}\n  got      {}",
                case["name"], case["answer"], got
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}
