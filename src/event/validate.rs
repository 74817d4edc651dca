//! Validation: each candidate event is checked field by field and either becomes an
//! [`Event`] (encoded at once into the request's [`Rows`]) or a list of [`FieldError`]s.
//! One bad event never rejects its neighbours.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use serde::Serialize;
use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};
use uuid::Uuid;

use super::decode::{Candidate, Loose, RawEvent};
use super::row::Event;
use crate::block::Rows;

/// Longest `device_os`, `session` or `event`, in bytes. These are identifiers and names;
/// anything longer is a client bug, and short values keep the sort key compact.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest `param_str`, in bytes: room for a URL or a small JSON blob, not for a payload.
pub const MAX_PARAM_STR_BYTES: usize = 8 * 1024;
/// At most this many field errors are listed in a response; `rejected` still counts all.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// `YYYY-MM-DD hh:mm:ss`, the original service's format, taken as UTC.
const PLAIN_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Why one event was rejected, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The event's position in the request's array.
    pub index: usize,
    /// The offending field, or `""` when the object as a whole could not be read.
    #[schema(value_type = String)]
    pub field: Cow<'static, str>,
    /// What is wrong, in words a client developer can act on.
    #[schema(value_type = String)]
    pub error: Cow<'static, str>,
}

/// The outcome of validating one request's events.
#[derive(Debug, Default)]
pub struct Validated {
    /// The accepted events, encoded, in request order.
    pub rows: Rows,
    /// How many events were rejected.
    pub rejected: usize,
    /// The first [`MAX_REPORTED_ERRORS`] errors.
    pub errors: Vec<FieldError>,
    /// Rejected events counted by the first field at fault (`""`: unreadable object).
    pub reasons: Vec<(&'static str, usize)>,
}

/// Validates every candidate. `server_time` and `ip` are the request's, shared by its events.
///
/// `sent_at` (seconds since 1970), when the request carried it, corrects each event's time
/// for the client's clock skew (see [`Event::client_time_corrected`]).
pub fn validate_batch(
    candidates: Vec<Candidate<'_>>,
    server_time: OffsetDateTime,
    ip: Ipv6Addr,
    sent_at: Option<i64>,
) -> Validated {
    let mut out = Validated {
        // One allocation per request, sized for typical mobile events.
        rows: Rows::with_capacity(candidates.len(), 128),
        ..Validated::default()
    };
    // The column is a `DateTime`: whole seconds, and within u32 for centuries to come.
    let server_time = u32::try_from(server_time.unix_timestamp()).unwrap_or(u32::MAX);
    for (index, candidate) in candidates.into_iter().enumerate() {
        let result = candidate
            .map_err(|e| vec![(e.field, Cow::Owned(e.error))])
            .and_then(|raw| validate_event(raw, server_time, ip));
        match result {
            Ok(mut event) => {
                if let Some(corrected) =
                    sent_at.and_then(|sent_at| corrected_time(&event, sent_at, server_time))
                {
                    event.client_time_corrected = corrected;
                }
                out.rows.push(&event)
            }
            Err(errors) => {
                out.rejected += 1;
                let reason = errors.first().map_or("", |(field, _)| *field);
                match out.reasons.iter_mut().find(|(f, _)| *f == reason) {
                    Some((_, n)) => *n += 1,
                    None => out.reasons.push((reason, 1)),
                }
                for (field, error) in errors {
                    if out.errors.len() < MAX_REPORTED_ERRORS {
                        out.errors.push(FieldError {
                            index,
                            field: Cow::Borrowed(field),
                            error,
                        });
                    }
                }
            }
        }
    }
    out
}

/// Longest an event may plausibly wait on a device before being sent: a year offline.
/// `sent_at - client_time` beyond it means one of the two is wrong.
pub const MAX_DEVICE_QUEUE_SECS: i64 = 365 * 24 * 3600;

/// `server_time - (sent_at - client_time)`: when the event happened by the server's clock.
/// `None` (keep `client_time`) when that is not plausible: the event would have happened
/// after it was sent (a corrected time later than `server_time`, e.g. `sent_at` in 1970),
/// it waited longer than [`MAX_DEVICE_QUEUE_SECS`], or the result leaves 1970..2106.
fn corrected_time(event: &Event<'_>, sent_at: i64, server_time: u32) -> Option<u32> {
    let waited = sent_at - i64::from(event.client_time);
    if !(0..=MAX_DEVICE_QUEUE_SECS).contains(&waited) {
        return None;
    }
    u32::try_from(i64::from(server_time) - waited).ok()
}

type Problems = Vec<(&'static str, Cow<'static, str>)>;

/// Checks one event; on failure returns every field's problem, not just the first.
fn validate_event(
    raw: RawEvent<'_>,
    server_time: u32,
    ip: Ipv6Addr,
) -> Result<Event<'_>, Problems> {
    let mut problems = Problems::new();
    let p = &mut problems;
    let client_time = check(p, "client_time", time_field(raw.client_time));
    let device_id = check(p, "device_id", uuid_field(raw.device_id));
    let device_os = check(p, "device_os", name_field(raw.device_os));
    let session = check(p, "session", name_field(raw.session));
    let sequence = check(p, "sequence", u32_field(raw.sequence, None));
    let event = check(p, "event", name_field(raw.event));
    let param_int = check(p, "param_int", u32_field(raw.param_int, Some(0)));
    let param_str = check(p, "param_str", param_str_field(raw.param_str));
    match (
        client_time,
        device_id,
        device_os,
        session,
        sequence,
        event,
        param_int,
        param_str,
    ) {
        (
            Some(client_time),
            Some(device_id),
            Some(device_os),
            Some(session),
            Some(sequence),
            Some(event),
            Some(param_int),
            Some(param_str),
        ) => Ok(Event {
            client_time,
            client_time_corrected: client_time,
            server_time,
            device_id,
            device_os,
            session,
            sequence,
            event,
            param_int,
            param_str,
            ip,
        }),
        _ => Err(problems),
    }
}

/// Keeps a field's value, or records its problem.
fn check<T>(
    problems: &mut Problems,
    field: &'static str,
    result: Result<T, &'static str>,
) -> Option<T> {
    result
        .map_err(|e| problems.push((field, Cow::Borrowed(e))))
        .ok()
}

fn string(value: Option<Loose<'_>>) -> Result<Cow<'_, str>, &'static str> {
    match value {
        None => Err("missing"),
        Some(Loose::Str(s)) => Ok(s),
        Some(_) => Err("expected a string"),
    }
}

fn name_field(value: Option<Loose<'_>>) -> Result<Cow<'_, str>, &'static str> {
    let s = string(value)?;
    if s.trim().is_empty() {
        Err("must not be empty")
    } else if s.len() > MAX_NAME_BYTES {
        Err("longer than 256 bytes")
    } else {
        Ok(s)
    }
}

fn param_str_field(value: Option<Loose<'_>>) -> Result<Cow<'_, str>, &'static str> {
    match value {
        None => Ok(Cow::Borrowed("")),
        Some(v) => {
            let s = string(Some(v))?;
            if s.len() > MAX_PARAM_STR_BYTES {
                Err("longer than 8192 bytes")
            } else {
                Ok(s)
            }
        }
    }
}

fn u32_field(value: Option<Loose<'_>>, default: Option<u32>) -> Result<u32, &'static str> {
    match value {
        None => default.ok_or("missing"),
        Some(Loose::UInt(n)) => u32::try_from(n).map_err(|_| "larger than 4294967295"),
        Some(Loose::Int(_)) => Err("must not be negative"),
        Some(_) => Err("expected an unsigned 32-bit integer"),
    }
}

fn uuid_field(value: Option<Loose<'_>>) -> Result<Uuid, &'static str> {
    Uuid::try_parse(&string(value)?).map_err(|_| "not a UUID")
}

fn time_field(value: Option<Loose<'_>>) -> Result<u32, &'static str> {
    let t = parse_time(&string(value)?)?;
    // ClickHouse `DateTime` is an unsigned 32-bit count of seconds: 1970 to 2106.
    u32::try_from(t).map_err(|_| "outside 1970-01-01 .. 2106-02-07")
}

/// A time as clients send them (`YYYY-MM-DD hh:mm:ss` UTC, or RFC 3339), in seconds since
/// 1970. Also used for `sent_at`.
///
/// A leap second (`23:59:60`) is accepted in both formats and stored as `23:59:59`, the
/// last whole second before it: it is a valid UTC time, and the column cannot hold it.
pub fn parse_time(s: &str) -> Result<i64, &'static str> {
    if let Some(t) = parse_plain_time(s.as_bytes()) {
        return Ok(t);
    }
    if let Some(date) = s.strip_suffix(" 23:59:60")
        && let Some(t) = parse_plain_time(format!("{date} 23:59:59").as_bytes())
    {
        return Ok(t);
    }
    PrimitiveDateTime::parse(s, PLAIN_TIME)
        .map(PrimitiveDateTime::assume_utc)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc3339))
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| "expected 'YYYY-MM-DD hh:mm:ss' (UTC) or RFC 3339")
}

/// `YYYY-MM-DD hh:mm:ss` read digit by digit: the format nearly every event uses, about ten
/// times faster than the general parser, which still handles everything else (and decides
/// what is an error).
fn parse_plain_time(b: &[u8]) -> Option<i64> {
    let &[
        y1,
        y2,
        y3,
        y4,
        b'-',
        m1,
        m2,
        b'-',
        d1,
        d2,
        b' ',
        h1,
        h2,
        b':',
        i1,
        i2,
        b':',
        s1,
        s2,
    ] = b
    else {
        return None;
    };
    let num = |digits: &[u8]| {
        digits.iter().try_fold(0u16, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u16::from(c - b'0'))
        })
    };
    let date = time::Date::from_calendar_date(
        i32::from(num(&[y1, y2, y3, y4])?),
        time::Month::try_from(u8::try_from(num(&[m1, m2])?).ok()?).ok()?,
        u8::try_from(num(&[d1, d2])?).ok()?,
    )
    .ok()?;
    let t = date
        .with_hms(
            u8::try_from(num(&[h1, h2])?).ok()?,
            u8::try_from(num(&[i1, i2])?).ok()?,
            u8::try_from(num(&[s1, s2])?).ok()?,
        )
        .ok()?;
    Some(t.assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;
    use crate::event::{Event, Format, decode_batch};
    use time::macros::datetime;

    const GOOD: &str = r#"{"client_time":"2020-12-01 23:59:00","device_id":"0287D9AA-4ADF-4B37-A60F-3E9E645C821E","device_os":"IOS 13.5.1","session":"ybuRi8mAUypxjbxQ","sequence":1,"event":"app_start","param_int":0,"param_str":"some text"}"#;

    fn validate(body: &str) -> Validated {
        let now = datetime!(2024-05-06 07:08:09.5 UTC);
        validate_batch(
            decode_batch(body.as_bytes(), Format::Json, 10_000)
                .unwrap()
                .events,
            now,
            Ipv6Addr::LOCALHOST,
            None,
        )
    }

    fn encoded(event: &Event<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        event.encode(&mut out);
        out
    }

    /// The original service's example, as the event it must become.
    fn expected() -> Event<'static> {
        Event {
            server_time: datetime!(2024-05-06 07:08:09 UTC).unix_timestamp() as u32,
            ..event(1)
        }
    }

    fn with_field(edit: impl FnOnce(&mut Event<'static>)) -> Vec<u8> {
        let mut e = expected();
        e.param_int = 0;
        edit(&mut e);
        encoded(&e)
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(GOOD).unwrap();
        let value: serde_json::Value = serde_json::from_str(value).unwrap();
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
        format!("[{v}]")
    }

    #[test]
    fn a_good_event_becomes_a_row() {
        let out = validate(&format!("[{GOOD}]"));
        assert_eq!(out.rejected, 0);
        assert_eq!(out.rows.len(), 1);
        assert_eq!(out.rows.view().data, with_field(|_| ()));
    }

    #[test]
    fn rfc3339_times_are_converted_to_utc() {
        let out = validate(&with("client_time", r#""2020-12-02T01:59:00.250+02:00""#));
        assert_eq!(out.rows.view().data, with_field(|_| ()));
    }

    #[test]
    fn a_leap_second_is_the_second_before_it_in_both_formats() {
        let expected = datetime!(2016-12-31 23:59:59 UTC).unix_timestamp();
        assert_eq!(parse_time("2016-12-31 23:59:60"), Ok(expected));
        assert_eq!(parse_time("2016-12-31T23:59:60Z"), Ok(expected));
        assert!(parse_time("2016-12-31 23:58:60").is_err());
    }

    #[test]
    fn implausible_corrections_keep_client_time() {
        let now = datetime!(2024-05-06 07:08:09 UTC);
        let body = with("client_time", r#""2020-12-01 23:59:00""#);
        let client = datetime!(2020-12-01 23:59:00 UTC).unix_timestamp();
        // sent_at in 1970: "corrected" would be decades after receipt. Sent two years after
        // the event: older than any device queue. Sent 10 s after it: corrected.
        for (sent_at, expected) in [
            (0, client),
            (client + 2 * 365 * 24 * 3600, client),
            (client - 1, client),
            (client + 10, now.unix_timestamp() - 10),
        ] {
            let candidates = decode_batch(body.as_bytes(), Format::Json, 10_000)
                .unwrap()
                .events;
            let out = validate_batch(candidates, now, Ipv6Addr::LOCALHOST, Some(sent_at));
            let data = out.rows.view().data;
            let corrected = u32::from_le_bytes(data[4..8].try_into().unwrap());
            assert_eq!(i64::from(corrected), expected, "sent_at {sent_at}");
        }
    }

    #[test]
    fn sent_at_corrects_for_clock_skew() {
        let now = datetime!(2024-05-06 07:08:09 UTC);
        // The client's clock is 100 s fast: it sent at 07:09:49 by its clock.
        let sent_at = now.unix_timestamp() + 100;
        let body = with("client_time", r#""2024-05-06 07:09:39""#);
        let candidates = decode_batch(body.as_bytes(), Format::Json, 10_000)
            .unwrap()
            .events;
        let out = validate_batch(candidates, now, Ipv6Addr::LOCALHOST, Some(sent_at));
        let data = out.rows.view().data;
        let client = u32::from_le_bytes(data[0..4].try_into().unwrap());
        let corrected = u32::from_le_bytes(data[4..8].try_into().unwrap());
        assert_eq!(i64::from(client), now.unix_timestamp() + 90);
        assert_eq!(
            i64::from(corrected),
            now.unix_timestamp() - 10,
            "10 s before receipt"
        );
    }

    #[test]
    fn the_fast_time_path_agrees_with_the_general_parser() {
        for s in [
            "2020-12-01 23:59:00",
            "1970-01-01 00:00:00",
            "2024-02-29 12:34:56",
            "2023-02-29 00:00:00",
            "2020-13-01 00:00:00",
            "2020-12-01 24:00:00",
            "2020-12-01 23:60:00",
            "2020-12-01 23:59:60",
            "2020-12-0a 23:59:00",
            "+020-12-01 23:59:00",
        ] {
            let general = PrimitiveDateTime::parse(s, PLAIN_TIME)
                .ok()
                .map(|t| t.assume_utc().unix_timestamp());
            assert_eq!(parse_plain_time(s.as_bytes()), general, "{s}");
        }
    }

    #[test]
    fn optional_params_default() {
        let out = validate(&with("param_str", "null"));
        assert_eq!(
            out.rows.view().data,
            with_field(|e| e.param_str = "".into())
        );
        let out = validate(&with("param_int", "null"));
        assert_eq!(out.rows.view().data, with_field(|_| ()));
    }

    #[test]
    fn each_bad_field_is_named() {
        let long = format!("\"{}\"", "x".repeat(MAX_NAME_BYTES + 1));
        let cases: &[(&str, &str)] = &[
            ("client_time", r#""yesterday""#),
            ("client_time", r#""1969-12-31 23:59:59""#),
            ("client_time", "null"),
            ("device_id", r#""not-a-uuid""#),
            ("device_os", r#""""#),
            ("session", "42"),
            ("event", &long),
            ("event", "null"),
            ("sequence", "-1"),
            ("sequence", "4294967296"),
            ("sequence", "1.5"),
            ("sequence", r#""1""#),
            ("param_int", "true"),
            ("param_str", "[1]"),
        ];
        for (field, value) in cases {
            let out = validate(&with(field, value));
            assert_eq!(out.rejected, 1, "{field}={value}");
            assert!(out.rows.is_empty());
            assert_eq!(out.errors[0].field, *field, "{field}={value}");
            assert_eq!(out.errors[0].index, 0);
        }
    }

    #[test]
    fn valid_neighbours_survive_and_indexes_are_reported() {
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
    }

    #[test]
    fn the_error_list_is_capped() {
        let body = format!("[{}]", vec!["{}"; 50].join(","));
        let out = validate(&body);
        assert_eq!(out.rejected, 50);
        assert_eq!(out.errors.len(), MAX_REPORTED_ERRORS);
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::event::{Format, decode_batch};
    use proptest::prelude::*;

    /// A valid event whose `sequence` is `n`.
    fn valid_event(n: usize) -> String {
        format!(
            r#"{{"client_time":"2020-12-01 23:59:00","device_id":"0287d9aa-4adf-4b37-a60f-3e9e645c821e","device_os":"iOS 17","session":"s-{n}","sequence":{n},"event":"app_start","param_int":{n},"param_str":"x"}}"#
        )
    }

    proptest! {
        /// Near-valid bodies (valid events, then a few bytes deleted, inserted, replaced or the
        /// tail cut): decoding and validating always answers, counts every event it decoded
        /// once, and an unmutated body is accepted whole. Random bytes alone almost never
        /// decode, so they would rarely reach an assertion.
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
            let decoded = decode_batch(&body, format, 10_000);
            if mutations.is_empty() {
                prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
            }
            if let Ok(decoded) = decoded {
                let candidates = decoded.events.len();
                let out = validate_batch(decoded.events, OffsetDateTime::now_utc(), Ipv6Addr::LOCALHOST, None);
                prop_assert_eq!(out.rows.len() + out.rejected, candidates);
                if mutations.is_empty() {
                    prop_assert_eq!((out.rows.len(), out.rejected), (n, 0));
                }
            }
        }

        /// JSON-shaped bodies with arbitrary values in every field.
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
            if let Ok(decoded) = decode_batch(body.as_bytes(), Format::Json, 10_000) {
                let out = validate_batch(decoded.events, OffsetDateTime::now_utc(), Ipv6Addr::LOCALHOST, None);
                prop_assert_eq!(out.rows.len() + out.rejected, 1);
            }
        }
    }
}
