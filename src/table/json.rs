//! Reading a request body into event objects whose fields are kept as raw JSON text, so
//! each column reads its value by its own type (a `Decimal` from the number's digits, a
//! `Map` from an object), and a value one column cannot use is that field's error alone.
//!
//! The body shapes are those of `/v1/events` (array, one object, envelope with `sent_at`,
//! NDJSON), with the same whole-body errors ([`DecodeError`]).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::table::event::{
    DecodeError, Envelope, Format, Loose, array_elements, ndjson_events, shorten,
};

/// One event object: its fields in body order, values unparsed.
pub type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;

/// A decoded body: per event its fields or why the object could not be read, and the
/// envelope's `sent_at`.
#[derive(Debug, Default)]
pub struct Objects<'a> {
    /// One entry per event, in body order.
    pub events: Vec<Result<Fields<'a>, String>>,
    /// `sent_at` of an envelope body.
    pub sent_at: Option<Loose<'a>>,
}

/// A JSON value as a column reads it: scalars at once, composites one level at a time.
#[derive(Debug)]
pub enum Value<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    /// A string, borrowed when it had no escapes.
    Str(Cow<'a, str>),
    /// An array's elements.
    Array(Vec<&'a RawValue>),
    /// An object's fields.
    Object(Fields<'a>),
}

impl<'a> Value<'a> {
    /// Reads one level of `raw`.
    pub fn read(raw: &'a RawValue) -> Result<Self, String> {
        let text = raw.get();
        let bad = |e: serde_json::Error| shorten(&e.to_string());
        Ok(match text.as_bytes().first() {
            Some(b'n') => Value::Null,
            Some(b't') => Value::Bool(true),
            Some(b'f') => Value::Bool(false),
            // Without escapes the text between the quotes is the string (the raw value was
            // checked as JSON when it was cut out): no second parse.
            Some(b'"')
                if text.len() >= 2
                    && !text[1..text.len() - 1]
                        .bytes()
                        .any(|b| b == b'\\' || b < 0x20) =>
            {
                Value::Str(Cow::Borrowed(&text[1..text.len() - 1]))
            }
            Some(b'"') => Value::Str(match serde_json::from_str::<&str>(text) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => Cow::Owned(serde_json::from_str::<String>(text).map_err(bad)?),
            }),
            Some(b'[') => Value::Array(serde_json::from_str(text).map_err(bad)?),
            Some(b'{') => Value::Object(object(text)?),
            _ => Value::Number(text),
        })
    }

    /// What kind of value this is, for "expected X, got Y" errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Str(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        }
    }

    /// The value's JSON text: a composite's elements as they were sent, joined without
    /// spaces.
    pub fn to_json(&self) -> String {
        let quoted = |s: &str| serde_json::to_string(s).unwrap_or_default();
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Str(s) => quoted(s),
            Value::Array(elements) => {
                let texts: Vec<&str> = elements.iter().map(|raw| raw.get()).collect();
                format!("[{}]", texts.join(","))
            }
            Value::Object(fields) => {
                let mut text = String::with_capacity(64);
                text.push('{');
                for (i, (key, raw)) in fields.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    text.push_str(&quoted(key));
                    text.push(':');
                    text.push_str(raw.get());
                }
                text.push('}');
                text
            }
        }
    }
}

/// An object's fields in order (duplicates kept: the caller decides).
pub fn object(text: &str) -> Result<Fields<'_>, String> {
    struct Wrapper<'a>(Fields<'a>);
    impl<'de> Deserialize<'de> for Wrapper<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Wrapper<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut fields = Vec::new();
                    while let Some(Key(key)) = map.next_key()? {
                        fields.push((key, map.next_value::<&RawValue>()?));
                    }
                    Ok(Wrapper(fields))
                }
            }
            d.deserialize_map(V)
        }
    }
    serde_json::from_str::<Wrapper<'_>>(text)
        .map(|w| w.0)
        .map_err(|e| shorten(&e.to_string()))
}

/// An object key, borrowed when it has no escapes.
pub(super) struct Key<'a>(pub(super) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// What a JSON object body is, decided as [`decode`] decides it.
pub(super) enum ObjectBody<'a> {
    /// An envelope: its `events` array's text, and its `sent_at`.
    Envelope(&'a str, Option<Loose<'a>>),
    /// One event object (no `events` field).
    Event,
    /// Anything else (unreadable, `events` not an array): [`decode`] says what is wrong.
    Other,
}

/// Reads a body that starts with `{` the way [`decode`] does, without judging the events
/// themselves.
pub(super) fn object_body(text: &str) -> ObjectBody<'_> {
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(Envelope { events: None, .. }) => ObjectBody::Event,
        Ok(Envelope {
            events: Some(events),
            sent_at,
        }) if events.get().starts_with('[') => ObjectBody::Envelope(events.get(), sent_at),
        _ => ObjectBody::Other,
    }
}

/// Splits `body` into event objects, at most `max_events`: a JSON array, one object, an
/// envelope `{"sent_at": ..., "events": [...]}` (a duplicate `events` or `sent_at` refuses
/// it), or NDJSON. The array's elements are cut out as raw text first, so a lexical error
/// inside one (`1e400`, a lone surrogate) costs that event alone.
pub fn decode(body: &[u8], format: Format, max_events: usize) -> Result<Objects<'_>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotText)?;
    match format {
        Format::Json if text.trim_start().starts_with('{') => {
            let envelope: Envelope<'_> =
                serde_json::from_str(text).map_err(DecodeError::of_body)?;
            match envelope.events {
                Some(events) if !events.get().starts_with('[') => Err(DecodeError::WrongShape(
                    "`events` must be an array of event objects".into(),
                )),
                Some(events) => Ok(Objects {
                    events: array(events.get(), max_events)?,
                    sent_at: envelope.sent_at,
                }),
                // No `events`: the object is one event.
                None => Ok(Objects {
                    events: vec![object(text)],
                    sent_at: None,
                }),
            }
        }
        Format::Json => Ok(Objects {
            events: array(text, max_events)?,
            sent_at: None,
        }),
        Format::Ndjson => Ok(Objects {
            events: ndjson_events(text, max_events, object, || {
                Err("line is not a JSON object".to_string())
            })?,
            sent_at: None,
        }),
    }
}

/// A JSON array of event objects, each object's fields cut out as raw text.
fn array(text: &str, max: usize) -> Result<Vec<Result<Fields<'_>, String>>, DecodeError> {
    Ok(array_elements(text, max)?
        .into_iter()
        .map(|raw| object(raw.get()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_of_every_shape_give_their_objects() {
        let array = decode(br#"[{"a":1},{"b":"x"}]"#, Format::Json, 10).unwrap();
        assert_eq!(array.events.len(), 2);
        let one = decode(br#"{"a":1}"#, Format::Json, 10).unwrap();
        assert_eq!(one.events.len(), 1);
        let envelope = decode(
            br#"{"sent_at":"2020-12-01 23:59:00","events":[{"a":1}]}"#,
            Format::Json,
            10,
        )
        .unwrap();
        assert!(envelope.sent_at.is_some());
        let lines = decode(b"{\"a\":1}\n\n[1]\n", Format::Ndjson, 10).unwrap();
        assert!(lines.events[0].is_ok() && lines.events[1].is_err());
        assert!(matches!(
            decode(b"[1]", Format::Json, 10),
            Err(DecodeError::NotAnObject { index: 0 })
        ));
        assert!(matches!(
            decode(b"[{},{}]", Format::Json, 1),
            Err(DecodeError::TooManyEvents { max: 1 })
        ));
        assert!(matches!(
            decode(b"[{", Format::Json, 1),
            Err(DecodeError::NotJson(_))
        ));
    }

    #[test]
    fn values_keep_numbers_as_written() {
        let fields = object(r#"{"d": 0.10, "s": "a\"b", "n": null, "o": {"k": [1]}}"#).unwrap();
        let values: Vec<Value<'_>> = fields
            .iter()
            .map(|(_, v)| Value::read(v).unwrap())
            .collect();
        assert!(matches!(values[0], Value::Number("0.10")));
        assert!(matches!(&values[1], Value::Str(s) if s == "a\"b"));
        assert!(matches!(values[2], Value::Null));
        assert!(matches!(&values[3], Value::Object(f) if f.len() == 1));
    }
}
