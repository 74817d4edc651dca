//! Decoding a request body into candidate events, without judging their fields yet.
//!
//! Bodies come in three shapes ([`Format`]): a JSON array of objects, a single JSON object
//! (or an envelope `{"sent_at": ..., "events": [...]}`), or NDJSON (one object per line). A
//! JSON body of any other shape is refused whole and nothing is stored. Each object becomes
//! a [`RawEvent`] whose fields accept any JSON value, so a wrong type in one field becomes
//! that event's field error instead of failing the batch; a duplicate key rejects its event
//! alone; in NDJSON a line that is not an object is likewise one rejected event. An array
//! is decoded in a single pass, and strings borrow from the body where they have no escapes.
//!
//! Lexical errors inside one event (a number too large for any type such as `1e400`, a
//! string escape serde_json refuses) reject that event alone, naming the field, as long as
//! the array's structure can still be read: the single pass then gives way to a second one
//! that skips each element unparsed first (skipping checks the grammar, not the values)
//! and reads its fields one by one. A lone UTF-16 surrogate escape (`"\ud83d"`, what
//! JavaScript's `JSON.stringify` makes of a string cut in the middle of an emoji) becomes
//! U+FFFD, as `String::from_utf16_lossy` and browsers' `TextDecoder` do: the event is kept
//! and the damage stays visible in the stored text.

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
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
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
            Some(name) => Err(Unreadable {
                field: name,
                error: format!("duplicate field `{name}`"),
            }),
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
pub type Candidate<'a> = Result<RawEvent<'a>, Unreadable>;

/// Why one event object could not be read: the field at fault (`""` when the object as a
/// whole is) and what is wrong, in a message that quotes no more than an excerpt of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The field, or `""`.
    pub field: &'static str,
    /// What is wrong.
    pub error: String,
}

impl Unreadable {
    fn whole(error: impl Into<String>) -> Self {
        Self {
            field: "",
            error: error.into(),
        }
    }
}

/// A decoded body: its candidate events, and the envelope's `sent_at` if it had one.
#[derive(Debug, Default)]
pub struct Decoded<'a> {
    /// One candidate per event, in body order.
    pub events: Vec<Candidate<'a>>,
    /// `sent_at` of an envelope body (`{"sent_at": ..., "events": [...]}`).
    pub sent_at: Option<Loose<'a>>,
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

/// Why the bounded array visitor stopped early; kept beside the deserializer, whose own
/// errors carry only text.
#[derive(Clone, Copy)]
enum EarlyEnd {
    TooMany,
    NotObject(usize),
}

/// A JSON array of event objects, decoded one element at a time up to `max`.
struct EventsVisitor<'s> {
    max: usize,
    /// Events to make room for up front (an estimate from the body's size, at most `max`):
    /// growing a vector of candidates by doubling was a tenth of the decoding time.
    expected: usize,
    stop: &'s std::cell::Cell<Option<EarlyEnd>>,
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
                Element::Object(_) if events.len() == self.max => EarlyEnd::TooMany,
                Element::Object(candidate) => {
                    events.push(candidate);
                    continue;
                }
                Element::NotObject => EarlyEnd::NotObject(events.len()),
            };
            self.stop.set(Some(stop));
            return Err(de::Error::custom("stopped"));
        }
        Ok(events)
    }
}

/// Decodes `text` as a JSON array of at most `max` event objects: in one pass, or, when
/// that fails on something inside an element, element by element (see the module docs).
fn event_array(text: &str, max: usize) -> Result<Vec<Candidate<'_>>, DecodeError> {
    match single_pass(text, max) {
        Err(DecodeError::NotJson(_) | DecodeError::WrongShape(_)) => element_by_element(text, max),
        done => done,
    }
}

/// The fast path: every element decoded in the same pass as the array.
fn single_pass(text: &str, max: usize) -> Result<Vec<Candidate<'_>>, DecodeError> {
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
        Some(EarlyEnd::TooMany) => DecodeError::TooManyEvents { max },
        Some(EarlyEnd::NotObject(index)) => DecodeError::NotAnObject { index },
        None => DecodeError::of_body(e),
    })
}

/// The slow path, for arrays the single pass could not read: each element is first skipped
/// as raw text (which checks the JSON grammar but not what strings and numbers hold), then
/// read on its own, so a lexical error costs its event only.
fn element_by_element(text: &str, max: usize) -> Result<Vec<Candidate<'_>>, DecodeError> {
    Ok(array_elements(text, max)?
        .into_iter()
        .map(|raw| read_event(raw.get()))
        .collect())
}

/// The elements of a JSON array as raw text, each an object, at most `max`: the grammar is
/// checked, the values are not (see [`element_by_element`]). Shared by every table's
/// field-by-field reading.
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

/// Splits `body` into candidates, at most `max_events` of them. Fails only when the body as
/// a whole has the wrong shape (see the module docs) or too many events. A JSON object with
/// an `events` array is an envelope: its events are the candidates and its `sent_at` is
/// returned alongside.
pub fn decode_batch(
    body: &[u8],
    format: Format,
    max_events: usize,
) -> Result<Decoded<'_>, DecodeError> {
    // One UTF-8 check for the whole body; parsing from `&str` then skips it per string,
    // which was a sixth of the decoding time.
    let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotText)?;
    match format {
        Format::Json if text.trim_start().starts_with('{') => {
            let envelope: Envelope<'_> =
                serde_json::from_str(text).map_err(DecodeError::of_body)?;
            match envelope.events {
                Some(events) if !events.get().starts_with('[') => Err(DecodeError::WrongShape(
                    "`events` must be an array of event objects".into(),
                )),
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
        Format::Ndjson => Ok(Decoded {
            events: ndjson_events(text, max_events, read_event, || {
                Err(Unreadable::whole("line is not a JSON object"))
            })?,
            sent_at: None,
        }),
    }
}

/// One event object given as its own JSON text (an NDJSON line, a lone object, an array
/// element the single pass could not read). When the object does not parse as a whole, its
/// fields are read one at a time, so the error names the field at fault.
fn read_event(json: &str) -> Candidate<'_> {
    match serde_json::from_str::<Element<'_>>(json) {
        Ok(Element::Object(candidate)) => candidate,
        Ok(Element::NotObject) => Err(Unreadable::whole("not a JSON object")),
        Err(e) => {
            field_by_field(json).unwrap_or_else(|| Err(Unreadable::whole(shorten(&e.to_string()))))
        }
    }
}

/// An object's known fields, each kept as raw text; `None` when even that fails (the
/// object's own grammar is broken, or a key is unreadable).
struct RawFields<'a>(Vec<(Field, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        known => fields.push((known, map.next_value::<&RawValue>()?)),
                    }
                }
                Ok(RawFields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Reads an object whose single-pass decoding failed, one field at a time: a string is
/// unescaped leniently (lone surrogates become U+FFFD), any other value that cannot be
/// read rejects the event naming that field.
fn field_by_field(json: &str) -> Option<Candidate<'_>> {
    let RawFields(fields) = serde_json::from_str(json).ok()?;
    let mut event = RawEvent::default();
    let mut seen = Vec::with_capacity(fields.len());
    for (field, raw) in fields {
        let (slot, name) = match field {
            Field::ClientTime => (&mut event.client_time, "client_time"),
            Field::DeviceId => (&mut event.device_id, "device_id"),
            Field::DeviceOs => (&mut event.device_os, "device_os"),
            Field::Session => (&mut event.session, "session"),
            Field::Sequence => (&mut event.sequence, "sequence"),
            Field::Event => (&mut event.event, "event"),
            Field::ParamInt => (&mut event.param_int, "param_int"),
            Field::ParamStr => (&mut event.param_str, "param_str"),
            Field::Other => continue,
        };
        if seen.contains(&field) {
            return Some(Err(Unreadable {
                field: name,
                error: format!("duplicate field `{name}`"),
            }));
        }
        seen.push(field);
        *slot = match loose_field(raw.get()) {
            Ok(value) => value,
            Err(error) => return Some(Err(Unreadable { field: name, error })),
        };
    }
    Some(Ok(event))
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
    fn lexical_errors_reject_one_event_and_name_the_field() {
        let body = br#"[{"sequence": 1}, {"param_int": 1e400, "sequence": 2}, {"session": "\x"}, {"sequence": 3}]"#;
        // `\x` is a grammar error (no such escape): the array cannot be read.
        assert!(decode_json(body).is_err());
        let body = br#"[{"sequence": 1}, {"sequence": 2, "param_int": 1e400}, {"sequence": 3}]"#;
        let batch = decode_json(body).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].as_ref().unwrap().sequence, Some(Loose::UInt(1)));
        assert_eq!(
            batch[1].as_ref().unwrap_err(),
            &Unreadable {
                field: "param_int",
                error: "number out of range".into()
            }
        );
        assert_eq!(batch[2].as_ref().unwrap().sequence, Some(Loose::UInt(3)));
        let lines = b"{\"sequence\": 1e400}\n{\"sequence\": 2}";
        let batch = decode_batch(lines, Format::Ndjson, 10).unwrap().events;
        assert_eq!(batch[0].as_ref().unwrap_err().field, "sequence");
        assert!(batch[1].is_ok());
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let body = br#"[{"param_str": "trunc\ud83d", "event": "a\n\ud83d\ude00\udc00b\u00e9"}, {"sequence": 2}]"#;
        let batch = decode_json(body).unwrap();
        let raw = batch[0].as_ref().unwrap();
        assert_eq!(raw.param_str, Some(Loose::Str("trunc\u{FFFD}".into())));
        assert_eq!(raw.event, Some(Loose::Str("a\n😀\u{FFFD}bé".into())));
        assert!(batch[1].is_ok());
    }

    #[test]
    fn errors_quote_only_an_excerpt_of_the_body() {
        let body = format!(r#"{{"events": "{}"}}"#, "x".repeat(1 << 20));
        let err = decode_json(body.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 300, "{err}");
        let body = format!(r#"[{{"a": "{}" 1}}]"#, "y".repeat(1 << 20));
        let err = decode_json(body.as_bytes()).unwrap_err().to_string();
        assert!(err.len() < 400, "{err}");
    }

    #[test]
    fn a_duplicate_key_rejects_only_its_event() {
        let batch = decode_json(br#"[{"event": "a", "event": "b"}, {"event": "c"}]"#).unwrap();
        assert!(batch[0].is_err());
        assert!(batch[1].is_ok());
    }

    #[test]
    fn broken_json_and_json_of_another_shape_are_told_apart() {
        for body in [
            &b"[{\"event\": 1}"[..],
            b"{\"events\": [",
            b"[{} {}]",
            b"nope",
        ] {
            let err = decode_batch(body, Format::Json, 10).err();
            assert!(
                matches!(err, Some(DecodeError::NotJson(_))),
                "{body:?}: {err:?}"
            );
        }
        for body in [&b"42"[..], b"\"text\"", b"{\"events\": 7}"] {
            let err = decode_batch(body, Format::Json, 10).err();
            assert!(
                matches!(err, Some(DecodeError::WrongShape(_))),
                "{body:?}: {err:?}"
            );
        }
    }
}
