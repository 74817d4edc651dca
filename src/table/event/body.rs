//! The shapes a request body comes in, for every table's events, and the pieces of it read
//! before any column judges a value.
//!
//! Bodies come in three shapes ([`Format`]): a JSON array of objects, a single JSON object
//! (or an envelope `{"sent_at": ..., "events": [...]}`, [`Envelope`]), or NDJSON (one
//! object per line). A JSON body of any other shape is refused whole ([`DecodeError`]) and
//! nothing is stored; in NDJSON a line that is not an object is one rejected event.
//!
//! When an array cannot be read in one pass because of something inside one element (a
//! number too large for any type such as `1e400`, a string escape serde_json refuses), its
//! elements are cut out as raw text first ([`array_elements`]: that checks the grammar, not
//! the values) and each is read on its own, so the error costs that event alone. A lone
//! UTF-16 surrogate escape (`"\ud83d"`, what JavaScript's `JSON.stringify` makes of a
//! string cut in the middle of an emoji) becomes U+FFFD ([`loose_field`]), as
//! `String::from_utf16_lossy` and browsers' `TextDecoder` do: the event is kept and the
//! damage stays visible in the stored text.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::excerpt::shorten;

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
            .map(str::trim)
            .unwrap_or_default();
        let ndjson = [
            "application/x-ndjson",
            "application/ndjson",
            "application/jsonl",
        ]
        .iter()
        .any(|name| essence.eq_ignore_ascii_case(name));
        if ndjson { Format::Ndjson } else { Format::Json }
    }
}

/// Why a body cannot be read as events at all.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (a syntax error outside any one event, or a cut-off body).
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but neither an array of events, one event object, nor an envelope.
    #[error("body must be a JSON array of event objects or one event object: {0}")]
    WrongShape(String),
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

/// An object that may be an envelope: it is one if it has `events` (a duplicate `events`
/// or `sent_at` refuses the body).
#[derive(Deserialize)]
pub struct Envelope<'a> {
    /// `sent_at`, if given and not `null`.
    #[serde(borrow, default)]
    pub sent_at: Option<Loose<'a>>,
    /// `events`' JSON text, if given and not `null`.
    #[serde(borrow, default)]
    pub events: Option<&'a RawValue>,
}

/// The elements of a JSON array as raw text, each an object, at most `max`: the grammar is
/// checked, the values are not (see the module docs). What every table's field-by-field
/// reading starts from.
pub fn array_elements(text: &str, max: usize) -> Result<Vec<&RawValue>, DecodeError> {
    /// Elements as raw text; more than `.0` of them sets `.1` and stops.
    struct Raws<'s>(usize, &'s std::cell::Cell<bool>);
    impl<'de> Visitor<'de> for Raws<'_> {
        type Value = Vec<&'de RawValue>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON array of event objects")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut raws = Vec::new();
            while let Some(raw) = seq.next_element()? {
                if raws.len() == self.0 {
                    self.1.set(true);
                    return Err(de::Error::custom("stopped"));
                }
                raws.push(raw);
            }
            Ok(raws)
        }
    }
    let too_many = std::cell::Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let raws = de
        .deserialize_seq(Raws(max, &too_many))
        .and_then(|raws| de.end().map(|()| raws))
        .map_err(|e| match too_many.get() {
            true => DecodeError::TooManyEvents { max },
            false => DecodeError::of_body(e),
        })?;
    if let Some(index) = raws.iter().position(|raw| !raw.get().starts_with('{')) {
        return Err(DecodeError::NotAnObject { index });
    }
    Ok(raws)
}

/// A body serde_json could not read as events: bad JSON, or JSON of another shape.
impl DecodeError {
    /// A serde_json error about the body as a whole: JSON of the wrong shape, or not JSON.
    pub fn of_body(e: serde_json::Error) -> Self {
        let text = shorten(&e.to_string());
        match e.classify() {
            serde_json::error::Category::Data => DecodeError::WrongShape(text),
            _ => DecodeError::NotJson(text),
        }
    }
}

/// The events of an NDJSON body, at most `max`: each non-empty line read by `read` if it
/// is an object, else `not_object()` for that line alone. Shared by every table's decoder.
pub fn ndjson_events<'a, T>(
    text: &'a str,
    max: usize,
    mut read: impl FnMut(&'a str) -> T,
    not_object: impl Fn() -> T,
) -> Result<Vec<T>, DecodeError> {
    let mut events = Vec::new();
    for line in ndjson_lines(text) {
        if events.len() == max {
            return Err(DecodeError::TooManyEvents { max });
        }
        events.push(match line.starts_with('{') {
            true => read(line),
            false => not_object(),
        });
    }
    Ok(events)
}

/// The non-empty lines of an NDJSON body, trimmed.
pub fn ndjson_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// A field's value from its raw JSON text, read leniently: a string with a lone surrogate
/// escape is kept with U+FFFD in its place; a number no type can hold (`1e400`) is the
/// field's error, `number out of range`. `null` is `None`.
pub fn loose_field(text: &str) -> Result<Option<Loose<'_>>, String> {
    match serde_json::from_str::<Option<Loose<'_>>>(text) {
        Ok(value) => Ok(value),
        Err(_) if text.starts_with('"') => Ok(Some(Loose::Str(Cow::Owned(unescape_lossy(text))))),
        Err(_) if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) => {
            Err("number out of range".to_string())
        }
        Err(e) => Err(shorten(&e.to_string())),
    }
}

/// A JSON string literal (quotes included, grammar already checked) unescaped with lone
/// UTF-16 surrogates replaced by U+FFFD.
fn unescape_lossy(literal: &str) -> String {
    let inner = literal
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(literal);
    let mut out = String::with_capacity(inner.len());
    // Consecutive `\uXXXX` escapes, decoded together so that surrogate pairs join.
    let mut units: Vec<u16> = Vec::new();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(
            char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER)),
        );
    };
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            flush(&mut units, &mut out);
            out.push(c);
            continue;
        }
        let escaped = chars.next();
        if escaped == Some('u') {
            let hex: String = chars.by_ref().take(4).collect();
            match u16::from_str_radix(&hex, 16) {
                Ok(unit) => units.push(unit),
                Err(_) => units.push(0xFFFD),
            }
            continue;
        }
        flush(&mut units, &mut out);
        out.push(match escaped {
            Some('b') => '\u{8}',
            Some('f') => '\u{c}',
            Some('n') => '\n',
            Some('r') => '\r',
            Some('t') => '\t',
            Some(other) => other,
            None => char::REPLACEMENT_CHARACTER,
        });
    }
    flush(&mut units, &mut out);
    out
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
    fn content_types_pick_the_format() {
        for (ct, format) in [
            (None, Format::Json),
            (Some("application/json; charset=utf-8"), Format::Json),
            (Some("Application/X-NDJSON"), Format::Ndjson),
            (Some("application/jsonl"), Format::Ndjson),
            (Some(" application/ndjson ; charset=utf-8"), Format::Ndjson),
            (Some("text/plain"), Format::Json),
        ] {
            assert_eq!(Format::from_content_type(ct), format, "{ct:?}");
        }
    }

    #[test]
    fn array_elements_check_the_grammar_the_limit_and_the_element_kinds() {
        let raws = array_elements(r#"[{"a": 1e400}, {"b": "\ud83d"}]"#, 10).unwrap();
        assert_eq!(raws.len(), 2, "lexical errors are left to each element");
        assert!(matches!(
            array_elements("[{}, {}, {}]", 2),
            Err(DecodeError::TooManyEvents { max: 2 })
        ));
        assert!(matches!(
            array_elements("[{}, 1]", 10),
            Err(DecodeError::NotAnObject { index: 1 })
        ));
        assert!(matches!(
            array_elements("[{} {}]", 10),
            Err(DecodeError::NotJson(_))
        ));
        assert!(matches!(
            array_elements("42", 10),
            Err(DecodeError::WrongShape(_))
        ));
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(
            loose_field(r#""trunc\ud83d""#),
            Ok(Some(Loose::Str("trunc\u{FFFD}".into())))
        );
        assert_eq!(
            loose_field(r#""a\n\ud83d\ude00\udc00b\u00e9""#),
            Ok(Some(Loose::Str("a\n😀\u{FFFD}bé".into())))
        );
        assert_eq!(loose_field("1e400"), Err("number out of range".into()));
        assert_eq!(loose_field("null"), Ok(None));
        assert_eq!(loose_field("-3"), Ok(Some(Loose::Int(-3))));
    }

    #[test]
    fn ndjson_lines_skip_blank_lines_and_stop_at_the_limit() {
        let lines: Vec<&str> = ndjson_lines("{}\r\n\n  \n[1]\n").collect();
        assert_eq!(lines, ["{}", "[1]"]);
        let read = ndjson_events("{}\nx\n", 10, |_| true, || false).unwrap();
        assert_eq!(read, [true, false]);
        assert!(matches!(
            ndjson_events("{}\n{}\n", 1, |_| true, || false),
            Err(DecodeError::TooManyEvents { max: 1 })
        ));
    }
}
