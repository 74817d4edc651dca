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

use crate::event::{DecodeError, Format, Loose, ndjson_events, shorten};

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

/// Reads a body that starts with `{` the way [`decode`] does (the first `events` and
/// `sent_at` count), without judging the events themselves.
pub(super) fn object_body(text: &str) -> ObjectBody<'_> {
    let Ok(fields) = object(text) else {
        return ObjectBody::Other;
    };
    let first = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    match first("events") {
        None => ObjectBody::Event,
        Some(events) if events.get().starts_with('[') => {
            match first("sent_at").map(|v| serde_json::from_str::<Option<Loose<'_>>>(v.get())) {
                None => ObjectBody::Envelope(events.get(), None),
                Some(Ok(sent_at)) => ObjectBody::Envelope(events.get(), sent_at),
                Some(Err(_)) => ObjectBody::Other,
            }
        }
        Some(_) => ObjectBody::Other,
    }
}

/// Splits `body` into event objects, at most `max_events` (see the module docs).
pub fn decode(body: &[u8], format: Format, max_events: usize) -> Result<Objects<'_>, DecodeError> {
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotText)?;
    let whole = DecodeError::of_body;
    match format {
        Format::Json if text.trim_start().starts_with('{') => {
            let raw: &RawValue = serde_json::from_str(text).map_err(whole)?;
            let fields = object(raw.get()).map_err(DecodeError::NotJson)?;
            let events = fields.iter().find(|(k, _)| k == "events").map(|(_, v)| *v);
            match events {
                Some(events) if !events.get().starts_with('[') => Err(DecodeError::WrongShape(
                    "`events` must be an array of event objects".into(),
                )),
                Some(events) => {
                    let sent_at = match fields.iter().find(|(k, _)| k == "sent_at") {
                        Some((_, v)) => {
                            serde_json::from_str::<Option<Loose<'_>>>(v.get()).map_err(whole)?
                        }
                        None => None,
                    };
                    Ok(Objects {
                        events: array(events.get(), max_events)?,
                        sent_at,
                    })
                }
                None => Ok(Objects {
                    events: vec![Ok(fields)],
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

/// An array element: an object's fields, read in the same pass as the array, or not an
/// object at all.
struct Element<'a>(Option<Fields<'a>>);

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(Key(key)) = map.next_key()? {
                    fields.push((key, map.next_value::<&RawValue>()?));
                }
                Ok(Element(Some(fields)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Element(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON array of event objects, each object's fields read in the same pass.
fn array(text: &str, max: usize) -> Result<Vec<Result<Fields<'_>, String>>, DecodeError> {
    let elements: Vec<Element<'_>> = serde_json::from_str(text).map_err(DecodeError::of_body)?;
    if elements.len() > max {
        return Err(DecodeError::TooManyEvents { max });
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(index, element)| match element.0 {
            Some(fields) => Ok(Ok(fields)),
            None => Err(DecodeError::NotAnObject { index }),
        })
        .collect()
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
