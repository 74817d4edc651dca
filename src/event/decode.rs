//! Decoding a request body into candidate events, without judging their fields yet.
//!
//! Bodies come in three shapes ([`Format`]): a JSON array of objects, a single JSON object
//! (or an envelope `{"sent_at": ..., "events": [...]}`), or NDJSON (one object per line). A
//! JSON body of any other shape is refused whole and nothing is stored. Each object becomes
//! a [`RawEvent`] whose fields accept any JSON value, so a wrong type in one field becomes
//! that event's field error instead of failing the batch; a duplicate key rejects its event
//! alone; in NDJSON a line that is not an object is likewise one rejected event. An array
//! is decoded in a single pass, and strings borrow from the body where they have no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// How a body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json` (and anything unspecified): an array of objects or one object.
    Json,
    /// `application/x-ndjson` (or `application/jsonl`): one object per line.
    Ndjson,
}

impl Format {
    /// The format a `Content-Type` names; JSON when absent or unknown.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        let essence = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|ct| ct.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
                Format::Ndjson
            }
            _ => Format::Json,
        }
    }
}

/// Why a body cannot be read as events at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON of another shape.
    #[error("body must be a JSON array of event objects or one event object: {0}")]
    NotAnArray(String),
    /// A body that is not UTF-8 text.
    #[error("body is not UTF-8 text")]
    NotText,
    /// An array element is not an object.
    #[error("element {index} is not a JSON object")]
    NotAnObject {
        /// Position of the element in the array.
        index: usize,
    },
    /// More events than `MAX_EVENTS_PER_REQUEST`; decoding stopped there, so a body of
    /// millions of tiny elements costs no more memory than the limit allows.
    #[error("more than {max} events in one request (MAX_EVENTS_PER_REQUEST)")]
    TooManyEvents {
        /// The limit.
        max: usize,
    },
}

/// Any JSON value, kept just precisely enough to validate a field and report a type error.
#[derive(Debug, Clone, PartialEq)]
pub enum Loose<'a> {
    /// A string, borrowed from the body when it had no escapes.
    Str(Cow<'a, str>),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// `true` or `false`.
    Bool(bool),
    /// An array or object (content skipped).
    Composite,
}

/// One event object with every known field optional and loosely typed; unknown fields are
/// ignored, `null` counts as absent.
#[derive(Debug, Default)]
pub struct RawEvent<'a> {
    /// `client_time`
    pub client_time: Option<Loose<'a>>,
    /// `device_id`
    pub device_id: Option<Loose<'a>>,
    /// `device_os`
    pub device_os: Option<Loose<'a>>,
    /// `session`
    pub session: Option<Loose<'a>>,
    /// `sequence`
    pub sequence: Option<Loose<'a>>,
    /// `event`
    pub event: Option<Loose<'a>>,
    /// `param_int`
    pub param_int: Option<Loose<'a>>,
    /// `param_str`
    pub param_str: Option<Loose<'a>>,
}

/// The keys of an event object that matter; anything else is skipped unread.
#[derive(Deserialize, Clone, Copy)]
#[serde(field_identifier, rename_all = "snake_case")]
enum Field {
    ClientTime,
    DeviceId,
    DeviceOs,
    Session,
    Sequence,
    Event,
    ParamInt,
    ParamStr,
    #[serde(other)]
    Other,
}

/// One element of a body, decoded in the same pass as the body itself: an event object
/// (itself possibly unreadable, e.g. a duplicate key, which rejects that event alone) or
/// something that is not an object at all.
enum Element<'a> {
    Object(Candidate<'a>),
    NotObject,
}

impl<'de: 'a, 'a> Deserialize<'de> for Element<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ElementVisitor(std::marker::PhantomData))
    }
}

struct ElementVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ElementVisitor<'a> {
    type Value = Element<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut event = RawEvent::default();
        let mut duplicate = None;
        // Fields seen so far, `null` ones included (a slot alone cannot tell).
        let mut seen = 0u16;
        while let Some(field) = map.next_key::<Field>()? {
            let (slot, name) = match field {
                Field::ClientTime => (&mut event.client_time, "client_time"),
                Field::DeviceId => (&mut event.device_id, "device_id"),
                Field::DeviceOs => (&mut event.device_os, "device_os"),
                Field::Session => (&mut event.session, "session"),
                Field::Sequence => (&mut event.sequence, "sequence"),
                Field::Event => (&mut event.event, "event"),
                Field::ParamInt => (&mut event.param_int, "param_int"),
                Field::ParamStr => (&mut event.param_str, "param_str"),
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let value: Option<Loose<'a>> = map.next_value()?;
            let bit = 1 << field as u16;
            if seen & bit != 0 {
                duplicate.get_or_insert(name);
            } else {
                seen |= bit;
                *slot = value;
            }
        }
        Ok(Element::Object(match duplicate {
            Some(name) => Err(format!("duplicate field `{name}`")),
            None => Ok(event),
        }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::NotObject)
    }
    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Element::NotObject)
    }
}

/// One candidate: the parsed event, or why the object could not be read at all (e.g. a
/// duplicate key), which rejects that event alone.
pub type Candidate<'a> = Result<RawEvent<'a>, String>;

/// A decoded body: its candidate events, and the envelope's `sent_at` if it had one.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    /// One candidate per event, in body order.
    pub events: Vec<Candidate<'a>>,
    /// `sent_at` of an envelope body (`{"sent_at": ..., "events": [...]}`).
    pub sent_at: Option<Loose<'a>>,
}

/// An object that may be an envelope: it is one if it has `events`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    sent_at: Option<Loose<'a>>,
    #[serde(borrow, default)]
    events: Option<&'a RawValue>,
}

/// Why the bounded array visitor stopped early; kept beside the deserializer, whose own
/// errors carry only text.
#[derive(Clone, Copy)]
enum Stop {
    TooMany,
    NotObject(usize),
}

/// A JSON array of event objects, decoded one element at a time up to `max`.
struct EventsVisitor<'s> {
    max: usize,
    /// Events to make room for up front (an estimate from the body's size, at most `max`):
    /// growing a vector of candidates by doubling was a tenth of the decoding time.
    expected: usize,
    stop: &'s std::cell::Cell<Option<Stop>>,
}

impl<'de> Visitor<'de> for EventsVisitor<'_> {
    type Value = Vec<Candidate<'de>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut events = Vec::with_capacity(self.expected);
        while let Some(element) = seq.next_element::<Element<'de>>()? {
            let stop = match element {
                Element::Object(_) if events.len() == self.max => Stop::TooMany,
                Element::Object(candidate) => {
                    events.push(candidate);
                    continue;
                }
                Element::NotObject => Stop::NotObject(events.len()),
            };
            self.stop.set(Some(stop));
            return Err(de::Error::custom("stopped"));
        }
        Ok(events)
    }
}

/// Decodes `text` as a JSON array of at most `max` event objects.
fn event_array(text: &str, max: usize) -> Result<Vec<Candidate<'_>>, DecodeError> {
    let stop = std::cell::Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_seq(EventsVisitor {
            max,
            // Real events are a few hundred bytes; 64 leaves room and bounds the guess.
            expected: (text.len() / 64).min(max),
            stop: &stop,
        })
        .and_then(|events| de.end().map(|()| events));
    result.map_err(|e| match stop.get() {
        Some(Stop::TooMany) => DecodeError::TooManyEvents { max },
        Some(Stop::NotObject(index)) => DecodeError::NotAnObject { index },
        None => DecodeError::NotAnArray(e.to_string()),
    })
}

/// Splits `body` into candidates, at most `max_events` of them. Fails only when the body as
/// a whole has the wrong shape (see the module docs) or too many events. A JSON object with
/// an `events` array is an envelope: its events are the candidates and its `sent_at` is
/// returned alongside.
pub fn decode_batch(
    body: &[u8],
    format: Format,
    max_events: usize,
) -> Result<Decoded<'_>, DecodeError> {
    let not_events = |e: serde_json::Error| DecodeError::NotAnArray(e.to_string());
    // One UTF-8 check for the whole body; parsing from `&str` then skips it per string,
    // which was a sixth of the decoding time.
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotText)?;
    match format {
        Format::Json if text.trim_start().starts_with('{') => {
            let envelope: Envelope<'_> = serde_json::from_str(text).map_err(not_events)?;
            match envelope.events {
                Some(events) => Ok(Decoded {
                    events: event_array(events.get(), max_events)?,
                    sent_at: envelope.sent_at,
                }),
                // No `events`: the object is one event.
                None => Ok(Decoded {
                    events: vec![read_event(text)],
                    sent_at: None,
                }),
            }
        }
        Format::Json => Ok(Decoded {
            events: event_array(text, max_events)?,
            sent_at: None,
        }),
        Format::Ndjson => {
            let mut events = Vec::new();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if events.len() == max_events {
                    return Err(DecodeError::TooManyEvents { max: max_events });
                }
                events.push(if line.starts_with('{') {
                    read_event(line)
                } else {
                    Err("line is not a JSON object".to_string())
                });
            }
            Ok(Decoded {
                events,
                sent_at: None,
            })
        }
    }
}

/// One event object given as its own JSON text (an NDJSON line, a lone object).
fn read_event(json: &str) -> Candidate<'_> {
    match serde_json::from_str::<Element<'_>>(json) {
        Ok(Element::Object(candidate)) => candidate,
        Ok(Element::NotObject) => Err("not a JSON object".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(std::marker::PhantomData))
    }
}

struct LooseVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for LooseVisitor<'a> {
    type Value = Loose<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Str(Cow::Owned(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::UInt(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(if v >= 0 {
            Loose::UInt(v as u64)
        } else {
            Loose::Int(v)
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Bool(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Composite)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Composite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_json(body: &[u8]) -> Result<Vec<Candidate<'_>>, DecodeError> {
        decode_batch(body, Format::Json, 1000).map(|d| d.events)
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_refused() {
        for body in [
            &b"42"[..],
            b"not json",
            b"",
            b"[1, 2]",
            b"[{}, \"x\"]",
            b"{\"a\": 1",
        ] {
            assert!(
                decode_json(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_single_object_is_one_event() {
        let batch = decode_json(br#" {"session": "s"}"#).unwrap();
        assert_eq!(batch.len(), 1);
        assert_eq!(
            batch[0].as_ref().unwrap().session,
            Some(Loose::Str("s".into()))
        );
    }

    #[test]
    fn ndjson_lines_are_events_and_a_bad_line_is_one_rejected_event() {
        let body = b"{\"sequence\": 1}\r\n\n  \n[1]\n{\"sequence\": 2}\nnot json\n{\"sequence\": 3";
        let batch = decode_batch(body, Format::Ndjson, 1000).unwrap().events;
        assert_eq!(batch.len(), 5);
        assert_eq!(batch[0].as_ref().unwrap().sequence, Some(Loose::UInt(1)));
        assert!(batch[1].is_err() && batch[3].is_err() && batch[4].is_err());
        assert_eq!(batch[2].as_ref().unwrap().sequence, Some(Loose::UInt(2)));
        assert!(matches!(
            decode_batch(b"\xff\n", Format::Ndjson, 1000),
            Err(DecodeError::NotText)
        ));
    }

    #[test]
    fn an_envelope_carries_events_and_sent_at() {
        let body =
            br#"{"sent_at": "2020-12-02 00:00:10", "events": [{"sequence": 1}, {"sequence": 2}]}"#;
        let decoded = decode_batch(body, Format::Json, 1000).unwrap();
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(
            decoded.sent_at,
            Some(Loose::Str("2020-12-02 00:00:10".into()))
        );
        assert!(decode_json(br#"{"events": [1]}"#).is_err());
        assert!(
            decode_json(br#"{"events": "x"}"#).is_err(),
            "a broken envelope is 400"
        );
    }

    #[test]
    fn decoding_stops_at_the_event_limit() {
        let many = format!("[{}]", ["{}"; 11].join(","));
        assert!(matches!(
            decode_batch(many.as_bytes(), Format::Json, 10),
            Err(DecodeError::TooManyEvents { max: 10 })
        ));
        let lines = "{}\n".repeat(11);
        assert!(matches!(
            decode_batch(lines.as_bytes(), Format::Ndjson, 10),
            Err(DecodeError::TooManyEvents { .. })
        ));
        assert_eq!(
            decode_batch(many.as_bytes(), Format::Json, 11)
                .unwrap()
                .events
                .len(),
            11
        );
        // Not-an-object is reported at its position, without decoding the rest.
        assert!(matches!(
            decode_json(b"[{}, 0, 0, 0]"),
            Err(DecodeError::NotAnObject { index: 1 })
        ));
    }

    #[test]
    fn a_duplicate_after_null_is_still_a_duplicate() {
        let batch = decode_json(br#"[{"event": null, "event": "x"}]"#).unwrap();
        assert!(batch[0].is_err());
    }

    #[test]
    fn content_types_pick_the_format() {
        for (ct, format) in [
            (None, Format::Json),
            (Some("application/json; charset=utf-8"), Format::Json),
            (Some("Application/X-NDJSON"), Format::Ndjson),
            (Some("application/jsonl"), Format::Ndjson),
            (Some("text/plain"), Format::Json),
        ] {
            assert_eq!(Format::from_content_type(ct), format, "{ct:?}");
        }
    }

    #[test]
    fn wrong_types_are_kept_for_the_validator() {
        let body = br#"[{"sequence": "one", "param_int": -3, "event": {"a": [1]}, "extra": 1}]"#;
        let batch = decode_json(body).unwrap();
        let raw = batch[0].as_ref().unwrap();
        assert_eq!(raw.sequence, Some(Loose::Str("one".into())));
        assert_eq!(raw.param_int, Some(Loose::Int(-3)));
        assert_eq!(raw.event, Some(Loose::Composite));
        assert_eq!(raw.session, None);
    }

    #[test]
    fn plain_strings_borrow_from_the_body() {
        let body = br#"[{"session": "abc", "event": "a\"b"}]"#;
        let batch = decode_json(body).unwrap();
        let raw = batch[0].as_ref().unwrap();
        assert!(matches!(
            raw.session,
            Some(Loose::Str(Cow::Borrowed("abc")))
        ));
        assert_eq!(raw.event, Some(Loose::Str(Cow::Owned("a\"b".into()))));
    }

    #[test]
    fn a_duplicate_key_rejects_only_its_event() {
        let batch = decode_json(br#"[{"event": "a", "event": "b"}, {"event": "c"}]"#).unwrap();
        assert!(batch[0].is_err());
        assert!(batch[1].is_ok());
    }
}
