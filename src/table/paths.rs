//! Nested fields read in the same pass as the top-level ones: a table's paths as a tree of
//! steps from a top-level field ([`Node`]), walked as the value is deserialized ([`Walk`]),
//! so a path's value goes straight into its column's slot; and with a rest column, every
//! field no column and no path took, kept as it was sent ([`RestItem`]) and written as one
//! JSON object or as a `Map(String, String)` of dotted keys ([`put_rest`]).
//!
//! An array is one value: a path may take a field of one of its elements (`items[0].id`),
//! and the rest keeps the array whole.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::{Key, Value};
use super::pass::{PATH_STRICT, PATH_TYPED, Read, Slot};
use super::settings::RestKind;
use super::{Problem, TableSchema};
use crate::format::put_leb128;
use crate::table::event::loose_field;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// An object's field.
    Key(String),
    /// An array's element.
    Index(usize),
}

/// Where paths go below one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Node {
    /// A path ends here: the column it fills and how its value is read.
    leaf: Option<(usize, Read)>,
    /// Fields below, for an object.
    keys: Vec<(String, Node)>,
    /// Elements below, for an array.
    indexes: Vec<(usize, Node)>,
}

impl Node {
    /// Adds the path `steps` (below this node) ending in `column`.
    pub(super) fn insert(
        &mut self,
        steps: &[Step],
        column: usize,
        read: Read,
        name: &str,
        path: &str,
    ) -> Result<(), String> {
        let inside = || {
            format!("path {path:?} goes inside a field another path already fills a column with")
        };
        if self.leaf.is_some() {
            return Err(inside());
        }
        let Some((step, below)) = steps.split_first() else {
            if !self.keys.is_empty() || !self.indexes.is_empty() {
                return Err(inside());
            }
            self.leaf = Some((column, read));
            return Ok(());
        };
        let child = match step {
            Step::Key(key) if self.indexes.is_empty() => {
                match self.keys.iter().position(|(k, _)| k == key) {
                    Some(i) => &mut self.keys[i].1,
                    None => {
                        self.keys.push((key.clone(), Node::default()));
                        &mut self.keys.last_mut().expect("just pushed").1
                    }
                }
            }
            Step::Index(index) if self.keys.is_empty() => {
                match self.indexes.iter().position(|(k, _)| k == index) {
                    Some(i) => &mut self.indexes[i].1,
                    None => {
                        self.indexes.push((*index, Node::default()));
                        &mut self.indexes.last_mut().expect("just pushed").1
                    }
                }
            }
            _ => {
                return Err(format!(
                    "path {path:?} reads a field as an object and as an array (column {name})"
                ));
            }
        };
        child.insert(below, column, read, name, path)
    }

    fn key(&self, key: &str) -> Option<&Node> {
        (self.keys.iter())
            .find(|(k, _)| super::pass::same_key(k, key))
            .map(|(_, n)| n)
    }

    fn index(&self, index: usize) -> Option<&Node> {
        self.indexes
            .iter()
            .find(|(i, _)| *i == index)
            .map(|(_, n)| n)
    }
}

/// A field the rest column keeps, in body order: objects the walk went into are opened and
/// closed around what was left of them (an object nothing was left of leaves nothing).
#[derive(Debug, Clone)]
pub(super) enum RestItem<'de> {
    /// The fields that follow, up to the matching `Close`, are inside this one.
    Open(Cow<'de, str>),
    /// A field and its value.
    Field(Cow<'de, str>, RestValue<'de>),
    /// The end of the latest `Open`.
    Close,
}

/// A kept value.
#[derive(Debug, Clone)]
pub(super) enum RestValue<'de> {
    /// As sent.
    Raw(&'de RawValue),
    /// JSON text made from what the reader gave (a value of another kind than the paths
    /// through it expect, read before its kind was known).
    Text(String),
}

impl RestValue<'_> {
    fn text(&self) -> &str {
        match self {
            RestValue::Raw(raw) => raw.get(),
            RestValue::Text(text) => text,
        }
    }
}

/// What a walk fills: one event's slots, its problems and (with a rest column) its rest.
pub(super) struct Taken<'w, 'de> {
    pub schema: &'w TableSchema,
    pub slots: &'w mut [Slot<'de>],
    pub problems: &'w mut Vec<(Cow<'static, str>, Problem)>,
    pub rest: &'w mut Vec<RestItem<'de>>,
    /// Whether leftovers are kept (the table has a rest column).
    pub keep_rest: bool,
    /// Leaves read as raw text, as the field-by-field reading reads every field.
    pub raw_leaves: bool,
}

impl<'w, 'de> Taken<'w, 'de> {
    /// How the value of top-level field `key`, the root of `node`, is read.
    pub(super) fn root<'n, 't>(
        &'t mut self,
        key: Cow<'de, str>,
        node: &'n Node,
    ) -> Child<'n, 't, 'w, 'de> {
        Child {
            key,
            node,
            keep: self.keep_rest,
            taken: self,
        }
    }

    /// A top-level field no column and no path takes.
    pub(super) fn leftover(&mut self, key: Cow<'de, str>, raw: &'de RawValue) {
        self.rest.push(RestItem::Field(key, RestValue::Raw(raw)));
    }

    fn close(&mut self) {
        match self.rest.last() {
            Some(RestItem::Open(_)) => {
                self.rest.pop();
            }
            _ => self.rest.push(RestItem::Close),
        }
    }

    /// A path's value into its column's slot.
    fn leaf<D: Deserializer<'de>>(
        &mut self,
        column: usize,
        read: Read,
        d: D,
    ) -> Result<(), D::Error> {
        if !matches!(self.slots[column], Slot::Absent) {
            de::IgnoredAny::deserialize(d)?;
            if self.problems.is_empty() {
                let field = &self.schema.columns[column].field;
                self.problems.push((
                    field.clone().into(),
                    format!("duplicate field `{field}`").into(),
                ));
            }
            return Ok(());
        }
        self.slots[column] = match (self.raw_leaves, read) {
            (true, Read::Strict) => {
                let raw = <&RawValue>::deserialize(d)?;
                match loose_field(raw.get()) {
                    Ok(value) => Slot::from(value),
                    Err(e) => {
                        let field = self.schema.columns[column].field.clone();
                        self.problems.push((field.into(), e.into()));
                        return Ok(());
                    }
                }
            }
            (true, _) | (false, Read::Raw) => Slot::Raw(<&RawValue>::deserialize(d)?),
            (false, Read::Strict) => PATH_STRICT.deserialize(d)?,
            (false, _) => PATH_TYPED.deserialize(d)?,
        };
        Ok(())
    }
}

use serde::Deserialize;

/// The value of field `key` (or of an array element, `key` then being its index), with
/// the paths below it in `node`.
pub(super) struct Child<'n, 't, 'w, 'de> {
    key: Cow<'de, str>,
    node: &'n Node,
    /// Whether what no path takes is kept: not inside an array, which is kept whole.
    keep: bool,
    taken: &'t mut Taken<'w, 'de>,
}

impl<'de> DeserializeSeed<'de> for Child<'_, '_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if let Some((column, read)) = self.node.leaf {
            return self.taken.leaf(column, read, d);
        }
        if self.keep && !self.node.indexes.is_empty() {
            // An array is kept whole, and read again for the paths into it.
            let raw = <&'de RawValue>::deserialize(d)?;
            self.taken.leftover(self.key, raw);
            let mut inner = serde_json::Deserializer::from_str(raw.get());
            return Child {
                key: Cow::Borrowed(""),
                node: self.node,
                keep: false,
                taken: self.taken,
            }
            .deserialize(&mut inner)
            .map_err(de::Error::custom);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Child<'_, '_, '_, 'de> {
    /// A value of another kind than the paths expect: kept as its JSON text.
    fn other(self, text: String) {
        if self.keep {
            self.taken
                .rest
                .push(RestItem::Field(self.key, RestValue::Text(text)));
        }
    }
}

impl<'de> Visitor<'de> for Child<'_, '_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.other("null".into());
        Ok(())
    }
    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.other(b.to_string());
        Ok(())
    }
    fn visit_u64<E>(self, n: u64) -> Result<(), E> {
        self.other(n.to_string());
        Ok(())
    }
    fn visit_i64<E>(self, n: i64) -> Result<(), E> {
        self.other(n.to_string());
        Ok(())
    }
    fn visit_f64<E>(self, n: f64) -> Result<(), E> {
        self.other(serde_json::Number::from_f64(n).map_or("null".into(), |n| n.to_string()));
        Ok(())
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.other(serde_json::to_string(s).unwrap_or_default());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.node.indexes.is_empty() {
            // An array where the paths expect an object: kept as it was.
            let mut elements: Vec<&'de RawValue> = Vec::new();
            while let Some(raw) = seq.next_element::<&'de RawValue>()? {
                elements.push(raw);
            }
            let texts: Vec<&str> = elements.iter().map(|r| r.get()).collect();
            self.other(format!("[{}]", texts.join(",")));
            return Ok(());
        }
        let mut index = 0;
        loop {
            let found = match self.node.index(index) {
                Some(node) => seq
                    .next_element_seed(Child {
                        key: Cow::Borrowed(""),
                        node,
                        keep: false,
                        taken: &mut *self.taken,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !found {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.node.keys.is_empty() {
            // An object where the paths expect an array: kept as it was.
            let mut fields = Vec::new();
            while let Some(k) = map.next_key_seed(PathKey)? {
                let raw = map.next_value::<&'de RawValue>()?;
                fields.push(format!(
                    "{}:{}",
                    serde_json::to_string(&k).unwrap_or_default(),
                    raw.get()
                ));
            }
            self.other(format!("{{{}}}", fields.join(",")));
            return Ok(());
        }
        let keep = self.keep;
        if keep {
            self.taken.rest.push(RestItem::Open(self.key));
        }
        while let Some(key) = map.next_key_seed(PathKey)? {
            match self.node.key(&key) {
                Some(node) => map.next_value_seed(Child {
                    key,
                    node,
                    keep,
                    taken: &mut *self.taken,
                })?,
                None if keep => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    self.taken.leftover(key, raw);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if keep {
            self.taken.close();
        }
        Ok(())
    }
}

/// A key inside a path's field: read as a top-level key is, but through a seed of its own,
/// so the reading of top-level keys is not shared (and stays inlined there).
struct PathKey;

impl<'de> DeserializeSeed<'de> for PathKey {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        Key::deserialize(d).map(|Key(k)| k)
    }
}

/// Appends the rest column's RowBinary value for `items`: a `String` of JSON text, or a
/// `Map(String, String)`. `nullable`: the column is `Nullable` (a 0 flag first).
pub(super) fn put_rest(items: &[RestItem<'_>], kind: RestKind, nullable: bool, buf: &mut Vec<u8>) {
    if nullable {
        buf.push(0);
    }
    match kind {
        RestKind::Text => {
            // Written in place after a one-byte length, widened if the text is longer.
            let at = buf.len();
            buf.push(0);
            json_text(items, buf);
            let len = buf.len() - at - 1;
            match len < 0x80 {
                true => buf[at] = len as u8,
                false => {
                    let mut prefix = Vec::with_capacity(4);
                    put_leb128(&mut prefix, len);
                    buf.splice(at..at + 1, prefix);
                }
            }
        }
        RestKind::Map => {
            let mut pairs: Vec<(String, Cow<'_, str>)> = Vec::new();
            let mut prefix: Vec<&str> = Vec::new();
            for item in items {
                match item {
                    RestItem::Open(key) => prefix.push(key),
                    RestItem::Close => {
                        prefix.pop();
                    }
                    RestItem::Field(key, value) => {
                        let mut name = prefix.join(".");
                        if !name.is_empty() {
                            name.push('.');
                        }
                        name.push_str(key);
                        flatten(name, value.text(), &mut pairs);
                    }
                }
            }
            put_leb128(buf, pairs.len());
            for (key, value) in pairs {
                put_leb128(buf, key.len());
                buf.extend_from_slice(key.as_bytes());
                put_leb128(buf, value.len());
                buf.extend_from_slice(value.as_bytes());
            }
        }
    }
}

/// `name`'s value as `Map` pairs: a non-empty object's fields under `name.field`, a
/// string without its quotes, anything else as its JSON text.
fn flatten<'a>(name: String, text: &'a str, pairs: &mut Vec<(String, Cow<'a, str>)>) {
    let value = serde_json::from_str::<&RawValue>(text)
        .ok()
        .and_then(|raw| Value::read(raw).ok());
    match value {
        Some(Value::Str(s)) => pairs.push((name, s)),
        Some(Value::Object(fields)) if !fields.is_empty() => {
            for (key, raw) in fields {
                flatten(format!("{name}.{key}"), raw.get(), pairs);
            }
        }
        _ => pairs.push((name, Cow::Borrowed(text.trim()))),
    }
}

/// The kept fields as one JSON object.
fn json_text(items: &[RestItem<'_>], out: &mut Vec<u8>) {
    out.push(b'{');
    // Whether the object being written has a member yet.
    let mut first = true;
    for item in items {
        match item {
            RestItem::Open(key) | RestItem::Field(key, _) => {
                if !first {
                    out.push(b',');
                }
                push_key(key, out);
                match item {
                    RestItem::Field(_, value) => {
                        out.extend_from_slice(value.text().trim().as_bytes());
                        first = false;
                    }
                    _ => {
                        out.push(b'{');
                        first = true;
                    }
                }
            }
            RestItem::Close => {
                out.push(b'}');
                first = false;
            }
        }
    }
    out.push(b'}');
}

/// `"key":`, escaped as JSON.
fn push_key(key: &str, out: &mut Vec<u8>) {
    if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
    } else {
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.push(b'"');
    }
    out.push(b':');
}
