//! Decoding a request body into candidate events, without judging their fields yet.
//!
//! Two passes over the body: first it must be a JSON array of objects (else the whole
//! request is refused and nothing is stored); then each object is read on its own into a
//! [`RawEvent`] whose fields accept any JSON value, so a wrong type in one field becomes
//! that event's field error instead of failing the batch. Strings borrow from the body
//! where they contain no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Why a body is not a JSON array of objects.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or JSON but not an array.
    #[error("body must be a JSON array of event objects: {0}")]
    NotAnArray(String),
    /// An array element is not an object.
    #[error("element {index} is not a JSON object")]
    NotAnObject {
        /// Position of the element in the array.
        index: usize,
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

/// One array element with every known field optional and loosely typed; unknown fields are
/// ignored, `null` counts as absent.
#[derive(Debug, Default, Deserialize)]
pub struct RawEvent<'a> {
    /// `client_time`
    #[serde(borrow, default)]
    pub client_time: Option<Loose<'a>>,
    /// `device_id`
    #[serde(borrow, default)]
    pub device_id: Option<Loose<'a>>,
    /// `device_os`
    #[serde(borrow, default)]
    pub device_os: Option<Loose<'a>>,
    /// `session`
    #[serde(borrow, default)]
    pub session: Option<Loose<'a>>,
    /// `sequence`
    #[serde(borrow, default)]
    pub sequence: Option<Loose<'a>>,
    /// `event`
    #[serde(borrow, default)]
    pub event: Option<Loose<'a>>,
    /// `param_int`
    #[serde(borrow, default)]
    pub param_int: Option<Loose<'a>>,
    /// `param_str`
    #[serde(borrow, default)]
    pub param_str: Option<Loose<'a>>,
}

/// One candidate: the parsed event, or why the object could not be read at all (e.g. a
/// duplicate key), which rejects that event alone.
pub type Candidate<'a> = Result<RawEvent<'a>, String>;

/// Splits `body` into candidates. Fails only when the body is not a JSON array of objects.
pub fn decode_batch(body: &[u8]) -> Result<Vec<Candidate<'_>>, DecodeError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| DecodeError::NotAnArray(e.to_string()))?;
    if let Some(index) = elements.iter().position(|e| !e.get().starts_with('{')) {
        return Err(DecodeError::NotAnObject { index });
    }
    Ok(elements
        .into_iter()
        .map(|raw| serde_json::from_str(raw.get()).map_err(|e| e.to_string()))
        .collect())
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

    #[test]
    fn a_non_array_body_is_refused() {
        for body in [
            &b"{}"[..],
            b"42",
            b"not json",
            b"",
            b"[1, 2]",
            b"[{}, \"x\"]",
        ] {
            assert!(
                decode_batch(body).is_err(),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn wrong_types_are_kept_for_the_validator() {
        let body = br#"[{"sequence": "one", "param_int": -3, "event": {"a": [1]}, "extra": 1}]"#;
        let batch = decode_batch(body).unwrap();
        let raw = batch[0].as_ref().unwrap();
        assert_eq!(raw.sequence, Some(Loose::Str("one".into())));
        assert_eq!(raw.param_int, Some(Loose::Int(-3)));
        assert_eq!(raw.event, Some(Loose::Composite));
        assert_eq!(raw.session, None);
    }

    #[test]
    fn plain_strings_borrow_from_the_body() {
        let body = br#"[{"session": "abc", "event": "a\"b"}]"#;
        let batch = decode_batch(body).unwrap();
        let raw = batch[0].as_ref().unwrap();
        assert!(matches!(
            raw.session,
            Some(Loose::Str(Cow::Borrowed("abc")))
        ));
        assert_eq!(raw.event, Some(Loose::Str(Cow::Owned("a\"b".into()))));
    }

    #[test]
    fn a_duplicate_key_rejects_only_its_event() {
        let batch = decode_batch(br#"[{"event": "a", "event": "b"}, {"event": "c"}]"#).unwrap();
        assert!(batch[0].is_err());
        assert!(batch[1].is_ok());
    }
}
