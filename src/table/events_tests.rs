//! The events table as an instance of the generic path, beyond the oracle's fixed cases
//! (`routes::oracle`): the good event's exact row, `sent_at`'s correction rules, the error
//! cap, and property tests of near-valid and arbitrary bodies.

use std::net::Ipv6Addr;

use ::time::OffsetDateTime;
use ::time::macros::datetime;
use proptest::prelude::*;

use super::{RequestFacts, TableSchema, TableValidated};
use crate::table::event::testing::event;
use crate::table::event::{DecodeError, Event, Format, Loose, MAX_REPORTED_ERRORS, parse_time};

const GOOD: &str = r#"{"client_time":"2020-12-01 23:59:00","device_id":"0287D9AA-4ADF-4B37-A60F-3E9E645C821E","device_os":"IOS 13.5.1","session":"ybuRi8mAUypxjbxQ","sequence":1,"event":"app_start","param_int":0,"param_str":"some text"}"#;

fn schema() -> TableSchema {
    TableSchema::events().expect("the events table's schema")
}

/// `body` as `/v1/events` reads it at `now`, `sent_at` from the envelope.
fn validate_at(body: &[u8], format: Format, now: OffsetDateTime) -> TableValidated {
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: now.unix_timestamp_nanos(),
        ip: Ipv6Addr::LOCALHOST,
        sent_at: None,
    };
    schema()
        .validate_body(body, format, 10_000, facts, &[], |loose| {
            Ok::<_, DecodeError>(match loose {
                Some(Loose::Str(s)) => parse_time(&s).ok(),
                _ => None,
            })
        })
        .expect("a readable body")
}

fn validate(body: &str) -> TableValidated {
    validate_at(
        body.as_bytes(),
        Format::Json,
        datetime!(2024-05-06 07:08:09.5 UTC),
    )
}

fn encoded(event: &Event<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    event.encode(&mut out);
    out
}

/// The original service's example, as the event it must become.
fn expected() -> Vec<u8> {
    let mut e = Event {
        server_time: datetime!(2024-05-06 07:08:09 UTC).unix_timestamp() as u32,
        ..event(1)
    };
    e.param_int = 0;
    encoded(&e)
}

fn with(field: &str, value: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
    let value: serde_json::Value = serde_json::from_str(value).unwrap();
    v[field] = value;
    format!("[{v}]")
}

#[test]
fn a_good_event_becomes_its_row_in_any_time_format() {
    let out = validate(&format!("[{GOOD}]"));
    assert_eq!(out.rejected, 0);
    assert_eq!(out.rows.data(), expected());
    let out = validate(&with("client_time", r#""2020-12-02T01:59:00.250+02:00""#));
    assert_eq!(out.rows.data(), expected());
}

/// `sent_at` 10 s after the event: corrected. In 1970, two years after the event, or
/// before it: not plausible, `client_time` kept.
#[test]
fn implausible_corrections_keep_client_time() {
    let now = datetime!(2024-05-06 07:08:09 UTC);
    let client = datetime!(2020-12-01 23:59:00 UTC).unix_timestamp();
    for (sent_at, expected) in [
        (0, client),
        (client + 2 * 365 * 24 * 3600, client),
        (client - 1, client),
        (client + 10, now.unix_timestamp() - 10),
    ] {
        let sent_at = OffsetDateTime::from_unix_timestamp(sent_at).unwrap();
        let sent_at = format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            sent_at.year(),
            u8::from(sent_at.month()),
            sent_at.day(),
            sent_at.hour(),
            sent_at.minute(),
            sent_at.second()
        );
        let body = format!(r#"{{"sent_at": "{sent_at}", "events": [{GOOD}]}}"#);
        let out = validate_at(body.as_bytes(), Format::Json, now);
        let data = out.rows.data();
        let corrected = u32::from_le_bytes(data[4..8].try_into().unwrap());
        assert_eq!(i64::from(corrected), expected, "sent_at {sent_at}");
    }
}

#[test]
fn valid_neighbours_survive_and_the_error_list_is_capped() {
    let bad = with("device_id", r#""nope""#);
    let bad = bad.trim_start_matches('[').trim_end_matches(']');
    let out = validate(&format!("[{GOOD},{bad},{GOOD},{{}}]"));
    assert_eq!(out.rows.len(), 2);
    assert_eq!(out.rejected, 2);
    assert_eq!(out.errors[0].index, 1);
    assert_eq!(out.errors[0].field, "device_id");
    // The empty object reports all of its missing required fields.
    assert!(out.errors[1..].iter().all(|e| e.index == 3));
    assert_eq!(out.errors.len(), 1 + 6);
    let out = validate(&format!("[{}]", vec!["{}"; 50].join(",")));
    assert_eq!(out.rejected, 50);
    assert_eq!(out.errors.len(), MAX_REPORTED_ERRORS);
    assert_eq!(out.reasons, [("client_time".into(), 50)]);
}

/// A valid event whose `sequence` is `n`.
fn valid_event(n: usize) -> String {
    format!(
        r#"{{"client_time":"2020-12-01 23:59:00","device_id":"0287d9aa-4adf-4b37-a60f-3e9e645c821e","device_os":"iOS 17","session":"s-{n}","sequence":{n},"event":"app_start","param_int":{n},"param_str":"x"}}"#
    )
}

proptest! {
    /// Near-valid bodies (valid events, then a few bytes deleted, inserted, replaced or the
    /// tail cut): reading always answers, counts every event once, and an unmutated body is
    /// accepted whole. Random bytes alone almost never decode, so they would rarely reach
    /// an assertion.
    #[test]
    fn near_valid_bodies_are_answered(
        n in 1usize..20,
        ndjson: bool,
        mutations in proptest::collection::vec((0u8..4, any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let events: Vec<String> = (0..n).map(valid_event).collect();
        let mut body = if ndjson { events.join("\n") } else { format!("[{}]", events.join(",")) }.into_bytes();
        for (kind, at, byte) in &mutations {
            let i = at.index(body.len());
            match kind {
                0 => { body.remove(i); }
                1 => body.insert(i, *byte),
                2 => body[i] = *byte,
                _ => body.truncate(i),
            }
            if body.is_empty() { break; }
        }
        let format = if ndjson { Format::Ndjson } else { Format::Json };
        let facts = RequestFacts {
            user_agent: None,
            server_time_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
            ip: Ipv6Addr::LOCALHOST,
            sent_at: None,
        };
        let schema = schema();
        let fast = schema.validate_body(&body, format, 10_000, facts, &[], |_| Ok::<_, DecodeError>(None));
        if mutations.is_empty() {
            let fast = fast.as_ref();
            prop_assert!(fast.is_ok(), "{:?}", fast.err());
            let out = fast.unwrap();
            prop_assert_eq!((out.rows.len(), out.rejected), (n, 0));
        }
        // The one pass and the field-by-field reading agree, whatever the damage; except
        // that an element that is not an object refuses the body as soon as the one pass
        // meets it, before any later grammar error (as `/v1/events` always answered: the
        // oracle pins it), where the field-by-field reading checks the grammar first.
        let slow = super::json::decode(&body, format, 10_000)
            .map(|objects| schema.validate(objects.events, facts, &[]));
        if let Err(DecodeError::NotAnObject { .. }) = fast {
            return Ok(());
        }
        match (fast, slow) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!(a.rows.data(), b.rows.data());
                prop_assert_eq!(a.rejected, b.rejected);
                prop_assert_eq!(a.errors, b.errors);
                prop_assert_eq!(a.reasons, b.reasons);
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
            (a, b) => prop_assert!(false, "one pass {:?}, field by field {:?}", a.map(|o| o.rejected), b.map(|o| o.rejected)),
        }
    }

    /// JSON-shaped bodies with arbitrary values in every field: one event, accepted or
    /// rejected, never a panic.
    #[test]
    fn any_field_values_are_answered(
        values in proptest::collection::vec(
            prop_oneof![
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|f| format!("{f:?}")),
                ".{0,300}".prop_map(|s| serde_json::to_string(&s).unwrap()),
                Just("null".to_string()),
                Just("[[{}]]".to_string()),
            ],
            8,
        )
    ) {
        let fields = ["client_time", "device_id", "device_os", "session", "sequence", "event", "param_int", "param_str"];
        let object: Vec<String> = fields.iter().zip(&values).map(|(f, v)| format!("\"{f}\": {v}")).collect();
        let body = format!("[{{{}}}]", object.join(","));
        let facts = RequestFacts {
            user_agent: None,
            server_time_nanos: OffsetDateTime::now_utc().unix_timestamp_nanos(),
            ip: Ipv6Addr::LOCALHOST,
            sent_at: None,
        };
        if let Ok(out) = schema().validate_body(body.as_bytes(), Format::Json, 10_000, facts, &[], |_| Ok::<_, DecodeError>(None)) {
            prop_assert_eq!(out.rows.len() + out.rejected, 1);
        }
    }
}
