//! Values whose type is picked per value, as the server's own `JSONEachRow` reading picks
//! it (the servers that have these types, 24.x and later):
//!
//! - a `Variant`'s member: the members are tried in the server's order (computed with the
//!   type: `crate::format`'s `text_order`) and the first that reads the
//!   value takes it, read by the server's JSON rules for that member (a number in quotes, a
//!   boolean as 1 or 0, an empty string as 0, any value as its text for a `String`). The
//!   members read here are numbers, `Bool`, `String` and arrays of them ([`readable`]):
//!   the server reads a time, an address or an enum in a `Variant` with its best-effort
//!   parsers, which this service does not reproduce, so a table with such a member is not
//!   written (it answers `503` naming the column);
//! - a `Dynamic`'s type: inferred from the JSON value as the server's schema inference
//!   infers it (`Int64`, `UInt64`, `Float64`, `Bool`, `String`, `Date`, `DateTime`,
//!   `DateTime64(9)`, arrays of a common element type or of `Dynamic`, objects as named
//!   tuples), then written as that type's binary encoding and the value.
//!
//! Where the two readings can differ: the server reads times in more formats than this
//! service (its best-effort parser takes `Jan 2 2024` or `2024-01-02 25:00:00`); such a
//! string stays a `String` here, where the server's own insert would store a time.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::encode::{Problem, digit, encode, zero};
use super::json::Value;
use super::time::{self, TimeRange};
use crate::format::{Scalar, Shape, binary_type, put_leb128};

/// Appends a `Variant` value: the member's position (255 for `null`) and its value.
/// `members` by position, `tried`: the positions in the order the server tries them.
pub(super) fn put_variant(
    members: &[Shape],
    tried: &[u8],
    raw: &RawValue,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    let value = Value::read(raw)?;
    if let Value::Null = value {
        out.push(crate::format::NULL_DISCRIMINATOR);
        return Ok(());
    }
    let start = out.len();
    for &i in tried {
        out.push(i);
        if member(&members[usize::from(i)], raw, &value, range, out) {
            return Ok(());
        }
        out.truncate(start);
    }
    Err(format!("{} is none of the variant's types", value.kind()).into())
}

/// Whether every `Variant` in `shape` has only members read here as the server reads them.
pub(super) fn readable(shape: &Shape) -> bool {
    fn member(shape: &Shape) -> bool {
        match shape {
            Shape::Nullable(inner) | Shape::LowCardinality(inner) | Shape::Array(inner) => {
                member(inner)
            }
            Shape::Scalar(scalar) => matches!(
                scalar,
                Scalar::String
                    | Scalar::Bool
                    | Scalar::Int(_)
                    | Scalar::UInt(_)
                    | Scalar::Float32
                    | Scalar::Float64
            ),
            _ => false,
        }
    }
    match shape {
        Shape::Variant { members, .. } => members.iter().all(member),
        Shape::Scalar(_) => true,
        Shape::Nullable(inner) | Shape::LowCardinality(inner) | Shape::Array(inner) => {
            readable(inner)
        }
        Shape::Map(key, value) => readable(key) && readable(value),
        Shape::Tuple(elements) => elements.iter().all(|(_, s)| readable(s)),
    }
}

/// Appends `value` as the member `shape` reads it by the server's JSON rules; `false` when
/// it does not (the caller truncates).
fn member(
    shape: &Shape,
    raw: &RawValue,
    value: &Value<'_>,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> bool {
    match (shape, value) {
        (Shape::LowCardinality(inner), _) => member(inner, raw, value, range, out),
        (Shape::Nullable(_), Value::Null) => {
            out.push(1);
            true
        }
        (Shape::Nullable(inner), _) => {
            out.push(0);
            member(inner, raw, value, range, out)
        }
        (_, Value::Null) => false,
        // Any value, strings unquoted, others as their JSON text.
        (Shape::Scalar(Scalar::String), _) => {
            let text = match value {
                Value::Str(s) => s.as_ref(),
                _ => raw.get(),
            };
            put_leb128(out, text.len());
            out.extend_from_slice(text.as_bytes());
            true
        }
        // `true`/`false` only.
        (Shape::Scalar(Scalar::Bool), Value::Bool(b)) => {
            out.push(u8::from(*b));
            true
        }
        (Shape::Scalar(Scalar::Bool), _) => false,
        // A number, in quotes or not, or a boolean (also in quotes) as 1 or 0; an integer
        // type takes only integers' digits.
        (
            Shape::Scalar(
                scalar @ (Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float32 | Scalar::Float64),
            ),
            _,
        ) => {
            let text = match value {
                Value::Bool(b) => digit(*b),
                Value::Str(s) if s.is_empty() => "0",
                Value::Str(s) if s == "true" => "1",
                Value::Str(s) if s == "false" => "0",
                Value::Str(s) => s.as_ref(),
                Value::Number(n) => n,
                _ => return false,
            };
            let integer = matches!(scalar, Scalar::Int(_) | Scalar::UInt(_));
            let digits = text.strip_prefix('-').unwrap_or(text);
            if digits.is_empty() || (integer && !digits.bytes().all(|b| b.is_ascii_digit())) {
                return false;
            }
            encode(shape, &Value::Number(text), range, out).is_ok()
        }
        // Elements by the same rules; a `null` element is the element type's default.
        (Shape::Array(inner), Value::Array(elements)) => {
            put_leb128(out, elements.len());
            elements.iter().all(|raw| match Value::read(raw) {
                Ok(Value::Null) if !matches!(inner.plain(), Shape::Nullable(_)) => {
                    out.extend_from_slice(&zero(inner));
                    true
                }
                Ok(value) => member(inner, raw, &value, range, out),
                Err(_) => false,
            })
        }
        // No other member is read (see `readable`).
        _ => false,
    }
}

/// A type as inference sees it before the final one is known.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    /// An empty array's element: takes any other.
    Nothing,
    /// `null`: makes a scalar `Nullable`.
    Null,
    Bool,
    /// Whether some value was negative (an `UInt64` then cannot hold them all).
    Int64(bool),
    UInt64,
    Float64,
    String,
    Date,
    DateTime,
    DateTime64,
    Array(Box<Ty>),
    /// Fields sorted by name.
    Tuple(Vec<(String, Ty)>),
    Nullable(Box<Ty>),
    /// Elements with no common type (each one's own).
    Dynamic,
}

/// Appends a `Dynamic` value: its inferred type's binary encoding, then the value.
pub(super) fn put_dynamic(
    raw: &RawValue,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    let ty = infer(raw)?;
    if ty == Ty::Null {
        out.push(binary_type::NOTHING);
        return Ok(());
    }
    let shape = finish(ty);
    if !binary_type::write(&shape, out) {
        return Err("a value whose type the server would not infer".into());
    }
    put_value(&shape, raw, range, out)
}

fn infer(raw: &RawValue) -> Result<Ty, Problem> {
    Ok(match Value::read(raw)? {
        Value::Null => Ty::Null,
        Value::Bool(_) => Ty::Bool,
        Value::Number(text) if text.contains(['.', 'e', 'E']) => Ty::Float64,
        Value::Number(text) if text.parse::<i64>().is_ok() => Ty::Int64(text.starts_with('-')),
        Value::Number(text) if text.parse::<u64>().is_ok() => Ty::UInt64,
        // An integer past 64 bits: its text.
        Value::Number(_) => Ty::String,
        Value::Str(s) => time_type(&s),
        // The elements' common type, made `Nullable` at the end if some were `null`.
        Value::Array(elements) => {
            let mut common = Some(Ty::Nothing);
            let mut null = false;
            for element in &elements {
                match infer(element)? {
                    Ty::Null => null = true,
                    ty => common = common.and_then(|c| unify(c, ty)),
                }
            }
            let common = common.map(|c| if null { nullable(c) } else { c });
            Ty::Array(Box::new(common.unwrap_or(Ty::Dynamic)))
        }
        // An empty object: a tuple without elements, which merges with other objects and is
        // stored as its text where nothing else decides.
        Value::Object(fields) if fields.is_empty() => Ty::Tuple(Vec::new()),
        Value::Object(fields) => {
            let mut tuple: Vec<(String, Ty)> = Vec::with_capacity(fields.len());
            for (key, raw) in &fields {
                if key.is_empty() {
                    return Err("an object with an empty key (a tuple element needs a name)".into());
                }
                match tuple.binary_search_by(|(k, _)| k.as_str().cmp(key)) {
                    Ok(_) => {
                        return Err(format!("duplicate key {}", super::event::excerpt(key)).into());
                    }
                    Err(at) => tuple.insert(at, (key.to_string(), infer(raw)?)),
                }
            }
            Ty::Tuple(tuple)
        }
    })
}

/// What the server infers from a string: a date or time in the forms this service reads
/// (see the module's note), else `String`.
fn time_type(s: &str) -> Ty {
    // A number in a string stays a string.
    if s.trim().parse::<f64>().is_ok() {
        return Ty::String;
    }
    let Some(nanos) = time::from_text(&local_time(s)) else {
        return Ty::String;
    };
    let days = time::days(nanos);
    if s.len() == 10 {
        return match days {
            0..=LAST_DATE => Ty::Date,
            _ if in_datetime64(nanos) => Ty::DateTime64,
            _ => Ty::String,
        };
    }
    let fraction = s.get(19..).is_some_and(|t| t.starts_with('.'));
    let seconds = time::seconds(nanos);
    match fraction {
        false if (0..=i128::from(u32::MAX)).contains(&seconds) => Ty::DateTime,
        _ if in_datetime64(nanos) => Ty::DateTime64,
        _ => Ty::String,
    }
}

/// `YYYY-MM-DDThh:mm:ss[.f]` without an offset, which the server reads as its local (UTC)
/// time, in the form [`time::from_text`] reads as such (`T` as a space); any other text as
/// it is.
fn local_time(s: &str) -> Cow<'_, str> {
    match s.as_bytes().get(10) {
        Some(b'T') if !s[11..].contains(['Z', 'z', '+', '-']) => {
            Cow::Owned(format!("{} {}", &s[..10], &s[11..]))
        }
        _ => Cow::Borrowed(s),
    }
}

/// 2149-06-06, the last `Date`.
const LAST_DATE: i128 = 65_535;

/// Whether a time is within `DateTime64`'s range (1900-01-01 to 2299-12-31).
fn in_datetime64(nanos: i128) -> bool {
    const FIRST: i128 = -2_208_988_800;
    const END: i128 = 10_413_792_000;
    (FIRST..END).contains(&time::seconds(nanos))
}

/// The type both `a` and `b` are read as, `None` when they have none (the array then
/// holds `Dynamic` elements).
fn unify(a: Ty, b: Ty) -> Option<Ty> {
    use Ty::*;
    Some(match (a, b) {
        (Int64(x), Int64(y)) => Int64(x || y),
        (a, b) if a == b => a,
        (Nothing, t) | (t, Nothing) => t,
        // An array whose elements had no common type takes anything.
        (Dynamic, _) | (_, Dynamic) => Dynamic,
        (Null, t) | (t, Null) => nullable(t),
        (Nullable(a), b) | (b, Nullable(a)) => nullable(unify(*a, b)?),
        (Bool, Int64(n)) | (Int64(n), Bool) => Int64(n),
        (Bool | Int64(false), UInt64) | (UInt64, Bool | Int64(false)) => UInt64,
        (Bool | Int64(_) | UInt64, Float64) | (Float64, Bool | Int64(_) | UInt64) => Float64,
        (Bool | String | Date | DateTime | DateTime64, String)
        | (String, Bool | Date | DateTime | DateTime64) => String,
        (Bool, Date | DateTime | DateTime64) | (Date | DateTime | DateTime64, Bool) => String,
        (Tuple(e), String | Bool | Date | DateTime | DateTime64)
        | (String | Bool | Date | DateTime | DateTime64, Tuple(e))
            if e.is_empty() =>
        {
            String
        }
        (Date, DateTime) | (DateTime, Date) => DateTime,
        (Date | DateTime, DateTime64) | (DateTime64, Date | DateTime) => DateTime64,
        (Array(a), Array(b)) => Array(Box::new(unify(*a, *b)?)),
        (Tuple(a), Tuple(b)) => {
            let mut merged = a;
            for (key, ty) in b {
                match merged.binary_search_by(|(k, _)| k.cmp(&key)) {
                    Ok(at) => {
                        let mine = std::mem::replace(&mut merged[at].1, Nothing);
                        merged[at].1 = match (mine, ty) {
                            // (A field's `null` and `{}` make a `Nullable(String)`, where
                            // an array's make a `String`.)
                            (Null, Tuple(e)) | (Tuple(e), Null) if e.is_empty() => {
                                Nullable(Box::new(String))
                            }
                            (mine, ty) => unify(mine, ty)?,
                        };
                    }
                    Err(at) => merged.insert(at, (key, ty)),
                }
            }
            Tuple(merged)
        }
        _ => return None,
    })
}

/// `t` where some values were `null`: `Nullable` for a scalar; an array, tuple or
/// `Dynamic` takes a `null` as its default.
fn nullable(t: Ty) -> Ty {
    match t {
        Ty::Array(_) | Ty::Tuple(_) | Ty::Dynamic | Ty::Nullable(_) | Ty::Null => t,
        Ty::Nothing => Ty::Null,
        t => Ty::Nullable(Box::new(t)),
    }
}

/// The final type: what no value decided is a `String`.
fn finish(ty: Ty) -> Shape {
    let scalar = Shape::Scalar;
    match ty {
        Ty::Nothing | Ty::String => scalar(Scalar::String),
        Ty::Null => Shape::Nullable(Box::new(scalar(Scalar::String))),
        Ty::Bool => scalar(Scalar::Bool),
        Ty::Int64(_) => scalar(Scalar::Int(64)),
        Ty::UInt64 => scalar(Scalar::UInt(64)),
        Ty::Float64 => scalar(Scalar::Float64),
        Ty::Date => scalar(Scalar::Date),
        Ty::DateTime => scalar(Scalar::DateTime { zone: None }),
        Ty::DateTime64 => scalar(Scalar::DateTime64 {
            precision: 9,
            zone: None,
        }),
        Ty::Array(inner) => Shape::Array(Box::new(finish(*inner))),
        Ty::Tuple(fields) if fields.is_empty() => scalar(Scalar::String),
        Ty::Tuple(fields) => Shape::Tuple(
            fields
                .into_iter()
                .map(|(k, t)| (Some(k), finish(t)))
                .collect(),
        ),
        Ty::Nullable(inner) => Shape::Nullable(Box::new(finish(*inner))),
        Ty::Dynamic => scalar(Scalar::Dynamic),
    }
}

/// Appends `raw` as the inferred `shape`: `null` is the type's default where it is not
/// `Nullable`, a `String` takes any value's text.
fn put_value(
    shape: &Shape,
    raw: &RawValue,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    let value = Value::read(raw)?;
    match (shape, &value) {
        (Shape::Scalar(Scalar::Dynamic), _) => put_dynamic(raw, range, out),
        (Shape::Nullable(_), Value::Null) => {
            out.push(1);
            Ok(())
        }
        (Shape::Nullable(inner), _) => {
            out.push(0);
            put_value(inner, raw, range, out)
        }
        (_, Value::Null) => {
            out.extend_from_slice(&zero(shape));
            Ok(())
        }
        (Shape::Scalar(Scalar::String), Value::Str(s)) => {
            put_leb128(out, s.len());
            out.extend_from_slice(s.as_bytes());
            Ok(())
        }
        (Shape::Scalar(Scalar::String), _) => {
            put_leb128(out, raw.get().len());
            out.extend_from_slice(raw.get().as_bytes());
            Ok(())
        }
        (Shape::Scalar(_), Value::Bool(b)) if !matches!(shape, Shape::Scalar(Scalar::Bool)) => {
            encode(shape, &Value::Number(digit(*b)), range, out)
        }
        (Shape::Scalar(Scalar::DateTime { .. } | Scalar::DateTime64 { .. }), Value::Str(s)) => {
            encode(shape, &Value::Str(local_time(s)), TimeRange::FULL, out)
        }
        (Shape::Array(inner), Value::Array(elements)) => {
            put_leb128(out, elements.len());
            elements
                .iter()
                .try_for_each(|raw| put_value(inner, raw, range, out))
        }
        (Shape::Tuple(fields), Value::Object(present)) => {
            fields.iter().try_for_each(|(name, ty)| {
                let name = name.as_deref().unwrap_or_default();
                match present.iter().find(|(k, _)| k == name) {
                    Some((_, raw)) => put_value(ty, raw, range, out),
                    None => {
                        out.extend_from_slice(&zero(ty));
                        Ok(())
                    }
                }
            })
        }
        _ => encode(shape, &value, range, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inferred(json: &str) -> String {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        let ty = infer(&raw).unwrap();
        match ty {
            Ty::Null => "NULL".into(),
            ty => format!("{:?}", finish(ty)),
        }
    }

    #[test]
    fn types_are_inferred_as_the_server_infers_them() {
        assert_eq!(inferred("null"), "NULL");
        assert_eq!(inferred("[1, 2.5]"), inferred("[2.5]"));
        assert_eq!(inferred("[1, true]"), inferred("[1]"));
        assert_eq!(
            inferred("[-1, 18446744073709551615]"),
            inferred("[[], 1, \"a\"]")
        );
        assert!(inferred("[1, \"a\"]").contains("Dynamic"));
        assert_eq!(inferred("[]"), inferred("[\"a\"]"));
        assert_eq!(inferred("{}"), inferred("\"{}\""));
        assert_eq!(inferred("[null, 1]"), "Array(Nullable(Scalar(Int(64))))");
        assert_eq!(inferred("[[1], null]"), inferred("[[1]]"));
        assert_eq!(
            inferred(r#"[{"b": 1}, {"a": 2}]"#),
            inferred(r#"[{"a": 1, "b": 2}]"#)
        );
        assert_eq!(inferred("\"2024-01-02\""), "Scalar(Date)");
        assert_eq!(
            inferred("\"2024-01-02T03:04:05\""),
            inferred("\"2024-01-02 03:04:05\"")
        );
        assert!(inferred("\"2024-01-02 03:04:05.5\"").contains("DateTime64"));
        assert!(inferred("\"2200-01-01\"").contains("DateTime64"));
        assert_eq!(inferred("\"12\""), "Scalar(String)");
    }
}
