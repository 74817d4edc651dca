//! The one-pass reading of a JSON array of events against a table's columns: each object's
//! keys are looked up once in the schema's column index and each value is deserialized
//! straight into that column's slot by a visitor that keeps what the column needs (a
//! borrowed string, an integer, a boolean; the raw text where digits or structure matter:
//! `Decimal`, floats, 128/256-bit integers, `Array`/`Map`/`Tuple`). The row is encoded in
//! column order once the object ends. No per-event vector of fields, no second reading of
//! each value's text: this is what makes the generic path as cheap as a hand-written one.
//!
//! Exactness before speed: whatever this pass cannot decide exactly as the field-by-field
//! reading ([`super::json::decode`] then [`TableSchema::validate`]) would, it does not try
//! to. A number with a fraction or exponent where the column is not a float and not read
//! strictly (its digits matter: `1.0` fits a `UInt8`, `1.5` does not), a lexical error
//! (`1e400`, a lone surrogate), more events than allowed: the pass stops and the body is
//! read again the field-by-field way, which gives the same rows and the same errors as
//! before, only slower. Well-formed bodies never take that way. An element that is not an
//! object refuses the body where the pass meets it (as `/v1/events` always answered; the
//! field-by-field reading checks the whole array's grammar first).
//!
//! Two readings feed the pass's steps: the plain scan (`scan`), for tables without
//! settings, and serde_json's, for what the scan gives way on and for tables with settings.
//!
//! Part of the table's reader. May import the rest of `table`, `format` and the shared
//! modules.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::Key;
use super::paths::{RestItem, RestValue, Taken};
use super::{Problem, RequestFacts, TableSchema, TableValidated, Unclaimed};
use crate::format::Rows;
use crate::table::event::{DecodeError, Loose, ndjson_lines};

mod scan;

/// One field's value as the pass kept it for its column.
#[derive(Debug, Clone, Default)]
pub(super) enum Slot<'a> {
    /// The field was not in the object.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    /// A string, borrowed from the body when it had no escapes.
    Str(Cow<'a, str>),
    /// An array or object where the column takes a scalar: only its kind matters (for the
    /// "expected ..., got an array" error), its content was skipped.
    Composite(Composite),
    /// The value's JSON text, for columns that read it themselves.
    Raw(&'a RawValue),
    /// A number with a fraction or exponent, for a strictly read column (which refuses it
    /// whatever its digits).
    Float,
}

impl<'a> From<Option<Loose<'a>>> for Slot<'a> {
    fn from(value: Option<Loose<'a>>) -> Self {
        match value {
            None => Slot::Null,
            Some(Loose::Str(s)) => Slot::Str(s),
            Some(Loose::UInt(n)) => Slot::UInt(n),
            Some(Loose::Int(n)) => Slot::Int(n),
            Some(Loose::Float(_)) => Slot::Float,
            Some(Loose::Bool(b)) => Slot::Bool(b),
            // Its kind matters only to a column that is not read strictly.
            Some(Loose::Composite) => Slot::Composite(Composite::Object),
        }
    }
}

/// Which composite a skipped value was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Composite {
    Array,
    Object,
}

/// Per-request state of the pass, shared by its events.
pub(super) struct Pass<'s, 'de> {
    schema: &'s TableSchema,
    facts: &'s RequestFacts<'s>,
    stamp: super::Stamp,
    tag: &'s [u8],
    max: usize,
    out: TableValidated,
    slots: Vec<Slot<'de>>,
    /// The column each key of the previous event filled, by the key's position: events of
    /// one client list their fields in the same order, so a key is checked against one
    /// name first and looked up only when that guess fails.
    order: Vec<Option<usize>>,
    problems: Vec<(Cow<'static, str>, Problem)>,
    /// The event's fields a rest column keeps (a table with one).
    rest: Vec<RestItem<'de>>,
    index: usize,
    /// Set when the body is refused as a whole (an element that is not an object), as the
    /// field-by-field reading would refuse it.
    refused: Option<DecodeError>,
}

/// Where the remembered field positions of [`Pass::order`] name a path's first field
/// (`ROOT + r`) rather than a column.
const ROOT: usize = usize::MAX / 2;

/// Why the pass stopped: the body goes the field-by-field way instead.
const GIVE_UP: &str = "one pass gives way";

/// Where a body's events are, for the pass.
#[derive(Debug, Clone, Copy)]
pub(super) enum Events<'a> {
    /// A JSON array of event objects.
    Array(&'a str),
    /// One event object.
    Object(&'a str),
    /// One event object per non-empty line (NDJSON).
    Lines(&'a str),
    /// Not a shape the pass reads.
    None,
}

impl TableSchema {
    /// Validates and encodes a body's events in one pass; `Ok(None)` when the body needs the
    /// field-by-field reading (see the module docs), `Err` when the body is refused. Tables
    /// without settings are read by the plain scan (`scan`) first; what it gives way on is
    /// read by serde_json.
    pub(super) fn one_pass(
        &self,
        events: Events<'_>,
        max_events: usize,
        facts: &RequestFacts<'_>,
        tag: &[u8],
    ) -> Result<Option<TableValidated>, DecodeError> {
        let pass = || self.pass(events, max_events, facts, tag);
        // The scan spends its pass when it gives way, so serde_json gets a fresh one; a
        // table with settings goes to serde_json at once, building its pass once.
        if self.shaping.is_none()
            && let Some(out) = pass().and_then(|p| p.scan(events))
        {
            return Ok(Some(out));
        }
        pass().map_or(Ok(None), |p| p.read(events))
    }

    /// The pass's state for a body (`None` for a shape it does not read).
    pub(super) fn pass<'s, 'de>(
        &'s self,
        events: Events<'de>,
        max_events: usize,
        facts: &'s RequestFacts<'s>,
        tag: &'s [u8],
    ) -> Option<Pass<'s, 'de>> {
        let size = match events {
            Events::Array(text) | Events::Object(text) | Events::Lines(text) => text.len(),
            Events::None => return None,
        };
        // Real events are a few hundred bytes; 64 leaves room and bounds the guess. An
        // event's row is smaller than its JSON: the body's size holds the rows.
        let expected = (size / 64).clamp(1, max_events.max(1));
        Some(Pass {
            schema: self,
            facts,
            stamp: self.stamp(facts),
            tag,
            max: max_events,
            out: TableValidated {
                rows: Rows::with_capacity(expected, 64),
                ..TableValidated::default()
            },
            slots: vec![Slot::Absent; self.columns.len()],
            order: Vec::with_capacity(self.columns.len()),
            problems: Vec::new(),
            rest: Vec::new(),
            index: 0,
            refused: None,
        })
    }
}

impl<'de> Pass<'_, 'de> {
    /// The plain scan's reading of the body, `None` when it gives way. Only for a table
    /// without settings: it reads top-level fields, not the settings' paths.
    pub(super) fn scan(mut self, events: Events<'de>) -> Option<TableValidated> {
        debug_assert!(self.schema.shaping.is_none(), "the scan reads no paths");
        scan::events(&mut self, events)?;
        Some(self.out)
    }

    /// serde_json's reading of the body.
    pub(super) fn read(self, events: Events<'de>) -> Result<Option<TableValidated>, DecodeError> {
        let mut pass = self;
        let read = match events {
            Events::Array(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                de.deserialize_seq(&mut pass).and_then(|()| de.end())
            }
            Events::Object(text) => {
                let mut de = serde_json::Deserializer::from_str(text);
                Event(&mut pass)
                    .deserialize(&mut de)
                    .and_then(|()| de.end())
            }
            Events::Lines(text) => {
                for line in ndjson_lines(text) {
                    if pass.index == pass.max {
                        return Err(DecodeError::TooManyEvents { max: pass.max });
                    }
                    if !line.starts_with('{') {
                        pass.not_an_object_line();
                        continue;
                    }
                    let mut de = serde_json::Deserializer::from_str(line);
                    if Event(&mut pass)
                        .deserialize(&mut de)
                        .and_then(|()| de.end())
                        .is_err()
                    {
                        return Ok(None);
                    }
                }
                Ok(())
            }
            Events::None => return Ok(None),
        };
        match (read, pass.refused) {
            (_, Some(refused)) => Err(refused),
            (Ok(()), None) => Ok(Some(pass.out)),
            (Err(_), None) => Ok(None),
        }
    }
}

impl<'de> Visitor<'de> for &mut Pass<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Event(&mut *self))?.is_some() {
            if self.index > self.max {
                return Err(de::Error::custom(GIVE_UP));
            }
        }
        Ok(())
    }
}

/// One array element, which must be an object.
struct Event<'p, 's, 'de>(&'p mut Pass<'s, 'de>);

impl<'de> DeserializeSeed<'de> for Event<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Event<'_, '_, '_> {
    /// An element that is not an object refuses the body, as it would be refused anyway.
    fn not_object<E: de::Error>(self) -> Result<(), E> {
        self.0.refused = Some(DecodeError::NotAnObject {
            index: self.0.index,
        });
        Err(E::custom(GIVE_UP))
    }
}

impl<'de> Visitor<'de> for Event<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_object()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.not_object()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.not_object()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.not_object()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.not_object()
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.not_object()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_object()
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let pass = self.0;
        pass.begin();
        let mut position = 0;
        while let Some(Key(key)) = map.next_key()? {
            let (column, root) = pass.column_of(position, &key);
            position += 1;
            match (column, &pass.schema.shaping) {
                (Some(i), _) => pass.take(i, &mut Mapped(&mut map))?,
                (None, None) => {
                    map.next_value::<IgnoredAny>()?;
                    pass.unknown(&key);
                }
                (None, Some(_)) => shaped_field(pass, &key, root, &mut map)?,
            }
        }
        pass.end();
        Ok(())
    }
}

/// Where the pass takes a field's value from: serde_json's reading of the object
/// ([`Mapped`]) or the plain scan's (`scan`). Each reads the value exactly as serde_json
/// does, or fails.
pub(super) trait Values<'de> {
    type Error;
    /// Skips the value (grammar checked as `IgnoredAny` checks it).
    fn skip(&mut self) -> Result<(), Self::Error>;
    /// The value's JSON text.
    fn raw(&mut self) -> Result<&'de RawValue, Self::Error>;
    /// The value as [`Scalar`] keeps it.
    fn scalar<const S: bool>(&mut self) -> Result<Slot<'de>, Self::Error>;
}

/// A field's value in serde_json's reading of its object.
struct Mapped<'m, A>(&'m mut A);

impl<'de, A: MapAccess<'de>> Values<'de> for Mapped<'_, A> {
    type Error = A::Error;
    fn skip(&mut self) -> Result<(), A::Error> {
        self.0.next_value::<IgnoredAny>().map(drop)
    }
    fn raw(&mut self) -> Result<&'de RawValue, A::Error> {
        self.0.next_value()
    }
    fn scalar<const S: bool>(&mut self) -> Result<Slot<'de>, A::Error> {
        self.0.next_value_seed(Scalar::<S>)
    }
}

impl<'s, 'de> Pass<'s, 'de> {
    /// Before an event's first field.
    pub(super) fn begin(&mut self) {
        // A plain store per slot: `fill` clones the value into each one, about 90
        // instructions more per event of the events table.
        for slot in &mut self.slots {
            *slot = Slot::Absent;
        }
        self.problems.clear();
        self.rest.clear();
    }

    /// The name of the column the previous event had at `position`, when its bytes in a
    /// body can only be that name (no quote, backslash or control character in it).
    pub(super) fn guessed_name(&self, position: usize) -> Option<(usize, &'s str)> {
        let i = (*self.order.get(position)?)?;
        let name = &self.schema.columns.get(i)?.name;
        self.schema.plain_names[i].then_some((i, name.as_str()))
    }

    /// The column the event's field at `position` names, and (tables with settings) the
    /// path whose first field it is, by its index in the paths' roots. The column the
    /// previous event had at this position is tried first.
    pub(super) fn column_of(
        &mut self,
        position: usize,
        key: &str,
    ) -> (Option<usize>, Option<usize>) {
        let schema = self.schema;
        match self.order.get(position) {
            Some(&Some(i))
                if schema
                    .columns
                    .get(i)
                    .is_some_and(|c| same_key(&c.name, key)) =>
            {
                (Some(i), None)
            }
            Some(&Some(i)) if i >= ROOT && schema.is_root(i - ROOT, key) => (None, Some(i - ROOT)),
            guess => {
                let found = schema.index_of(key);
                let root = match (found, &schema.shaping) {
                    (None, Some(shaping)) => shaping.root_index(key),
                    _ => None,
                };
                let remembered = found.or(root.map(|r| ROOT + r));
                match guess {
                    Some(_) => self.order[position] = remembered,
                    None => self.order.push(remembered),
                }
                (found, root)
            }
        }
    }

    /// Column `i`'s field: its value read as the column reads it, or skipped.
    #[inline(always)]
    pub(super) fn take<V: Values<'de>>(
        &mut self,
        i: usize,
        values: &mut V,
    ) -> Result<(), V::Error> {
        let schema = self.schema;
        match schema.reads[i] {
            // A server-filled column ignores the client's value.
            Read::Ignore => values.skip()?,
            _ if !matches!(self.slots[i], Slot::Absent) => {
                values.skip()?;
                // The first duplicate is the event's only problem.
                if self.problems.is_empty() {
                    self.problems.push(schema.duplicate(i));
                }
            }
            // (Never found by its name: see `TableSchema::index_of`.)
            Read::Elsewhere => {}
            Read::Raw => self.slots[i] = Slot::Raw(values.raw()?),
            Read::Typed => self.slots[i] = values.scalar::<false>()?,
            Read::Strict => self.slots[i] = values.scalar::<true>()?,
        }
        Ok(())
    }

    /// An NDJSON line that is not an object: that event's error.
    pub(super) fn not_an_object_line(&mut self) {
        self.problems
            .push(("".into(), "line is not a JSON object".into()));
        self.out.reject(self.index, &mut self.problems);
        self.index += 1;
    }

    /// A field no column takes, in a table without settings (its value skipped).
    pub(super) fn unknown(&mut self, key: &str) {
        match self.schema.flattened(key) {
            Some(problem) if self.problems.is_empty() => self.problems.push(problem),
            Some(_) => {}
            None => self.out.unknown_fields += 1,
        }
    }

    /// After an event's last field: its row encoded, or the event rejected.
    pub(super) fn end(&mut self) {
        let schema = self.schema;
        if self.problems.is_empty() {
            let (slots, facts, stamp, tag) = (&self.slots, self.facts, &self.stamp, self.tag);
            let (problems, rest) = (&mut self.problems, &self.rest);
            self.out.rows.push_encoded_if(|buf| {
                buf.extend_from_slice(tag);
                schema.encode_row(slots, rest, facts, stamp, buf, problems);
                problems.is_empty()
            });
        }
        if !self.problems.is_empty() {
            self.out.reject(self.index, &mut self.problems);
        }
        self.index += 1;
    }
}

/// A top-level field of a table with settings that no column takes by its name: a path's
/// first field, kept in the rest column, or unknown. Out of line, so the reading of
/// ordinary fields stays as small as it was.
#[inline(never)]
fn shaped_field<'de, A: MapAccess<'de>>(
    pass: &mut Pass<'_, 'de>,
    key: &Cow<'de, str>,
    root: Option<usize>,
    map: &mut A,
) -> Result<(), A::Error> {
    let key = key.clone();
    let schema = pass.schema;
    let Some(shaping) = &schema.shaping else {
        return Ok(());
    };
    let keep_rest = shaping.rest.is_some();
    let mut taken = Taken {
        schema,
        slots: &mut pass.slots,
        problems: &mut pass.problems,
        rest: &mut pass.rest,
        keep_rest,
        raw_leaves: false,
    };
    match root.map(|r| &shaping.roots[r].1) {
        Some(node) => map.next_value_seed(taken.root(key, node))?,
        None if keep_rest || shaping.add.is_some() => {
            let raw = map.next_value::<&'de RawValue>()?;
            match schema.unclaimed(&key, raw, &mut pass.out.wanted) {
                Unclaimed::Column => {}
                Unclaimed::Rest if keep_rest => {
                    pass.rest.push(RestItem::Field(key, RestValue::Raw(raw)))
                }
                Unclaimed::Rest => pass.out.unknown_fields += 1,
                Unclaimed::Refused(problem) => {
                    if pass.problems.is_empty() {
                        pass.problems.push((key.to_string().into(), problem));
                    }
                }
            }
        }
        None => {
            map.next_value::<IgnoredAny>()?;
            pass.out.unknown_fields += 1;
        }
    }
    Ok(())
}

/// `a == b` for the short keys of event objects, in words: the guessed key is compared
/// once per field, and a call to `memcmp` cost more than the comparison.
pub(super) fn same_key(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

/// [`same_key`] on bytes.
#[inline(always)]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let word = |s: &[u8], at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&s[at..at + 8]);
        u64::from_ne_bytes(w)
    };
    let half = |s: &[u8], at: usize| {
        let mut w = [0u8; 4];
        w.copy_from_slice(&s[at..at + 4]);
        u32::from_ne_bytes(w)
    };
    match a.len() {
        0..4 => a == b,
        // The first four bytes and the last four (overlapping when fewer than eight).
        n @ 4..8 => half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4),
        n => {
            let mut at = 0;
            while at + 8 <= n {
                if word(a, at) != word(b, at) {
                    return false;
                }
                at += 8;
            }
            // The last eight bytes (overlapping what was compared) cover any tail.
            at == n || word(a, n - 8) == word(b, n - 8)
        }
    }
}

/// How the pass reads a column's value (decided once per schema).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Skipped: a server-filled column ignores the client's value.
    Ignore,
    /// Kept as raw JSON text: the column reads digits or structure itself.
    Raw,
    /// Deserialized by [`Scalar`].
    Typed,
    /// Deserialized by [`Scalar`] with `STRICT`, for a column with a strict rule.
    Strict,
    /// Not by a top-level field of its name: the table's settings fill it (a path, the
    /// rest, the `User-Agent`).
    Elsewhere,
}

/// A scalar value, kept as the column needs it (see [`Slot`]). `STRICT`: as a strictly read
/// column judges it (see `rules::Strict`): a float is refused whatever its digits, so the
/// pass need not give way for one, and a non-negative integer is read as one whatever
/// serde_json called it.
///
/// `PATH`: read at a path (see `paths`), a type of its own so that the top-level fields'
/// reading is not shared with it and stays inlined into the event's.
pub(super) struct Scalar<const STRICT: bool, const PATH: bool = false>;

/// An ordinary column's value at a path.
pub(super) const PATH_TYPED: Scalar<false, true> = Scalar;
/// A strictly read column's value at a path.
pub(super) const PATH_STRICT: Scalar<true, true> = Scalar;

impl<'de, const S: bool, const P: bool> DeserializeSeed<'de> for Scalar<S, P> {
    type Value = Slot<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Slot<'de>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, const S: bool, const P: bool> Visitor<'de> for Scalar<S, P> {
    type Value = Slot<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Slot<'de>, E> {
        Ok(Slot::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Slot<'de>, E> {
        Ok(Slot::Bool(b))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Slot<'de>, E> {
        Ok(Slot::UInt(n))
    }
    // serde_json gives a negative integer here, never `-0` (that comes as a float), so the
    // number's text is exactly its decimal form.
    fn visit_i64<E>(self, n: i64) -> Result<Slot<'de>, E> {
        Ok(match u64::try_from(n) {
            Ok(n) if S => Slot::UInt(n),
            _ => Slot::Int(n),
        })
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Slot<'de>, E> {
        match S {
            true => Ok(Slot::Float),
            // The float lost the digits the column's rule reads: read the body field by
            // field.
            false => Err(E::custom(GIVE_UP)),
        }
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Slot<'de>, E> {
        Ok(Slot::Str(Cow::Owned(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Slot<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Slot::Composite(Composite::Array))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Slot<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Slot::Composite(Composite::Object))
    }
}
