//! One JSON value into one RowBinary value of a column's type ([`Shape`]), or an error a
//! person can act on (`out of range for UInt8`, `not an IPv4 address`, ...).
//!
//! RowBinary per type: integers, floats, `Bool`, `Date` (`UInt16` days), `Date32` (`Int32`
//! days), `DateTime` (`UInt32` s), `DateTime64` (`Int64` ticks), `Decimal` (its integer),
//! `Enum` (its number) and `IPv4` (`UInt32`) little-endian; `UUID` as its high then low
//! 64-bit halves, each little-endian; `IPv6` 16 bytes in network order; `String` a LEB128
//! length then the bytes; `FixedString(N)` N bytes zero-padded; `Nullable` a flag byte (1 =
//! NULL) then the value; `Array`/`Map` a LEB128 count then the elements (key, value pairs);
//! `Tuple` its elements back to back; `LowCardinality(T)` as `T`.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::value::RawValue;

use super::json::Value;
use super::number::{self, NumberError};
use super::time::{self, TimeRange};
use super::variant;
use crate::format::{Scalar, Shape, put_leb128};

/// What is wrong with a value.
pub type Problem = Cow<'static, str>;

/// Appends `value` as `shape`'s RowBinary value. On error, `out` may hold part of it: the
/// caller truncates.
pub fn encode(
    shape: &Shape,
    value: &Value<'_>,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    match shape {
        Shape::Nullable(inner) => match value {
            Value::Null => {
                out.push(1);
                Ok(())
            }
            value => {
                out.push(0);
                encode(inner, value, range, out)
            }
        },
        Shape::LowCardinality(inner) => encode(inner, value, range, out),
        _ if matches!(value, Value::Null) && !shape.takes_null() => {
            Err("null where a value is required".into())
        }
        Shape::Variant { .. } | Shape::Scalar(Scalar::Dynamic) => {
            // Read from the value's text (which `encode_raw` is given directly).
            let text = value.to_json();
            let raw: Box<RawValue> =
                serde_json::from_str(&text).map_err(|e| Problem::from(e.to_string()))?;
            encode_raw(shape, &raw, range, out)
        }
        Shape::Scalar(scalar) => scalar_value(scalar, value, range, out),
        Shape::Array(inner) => {
            let Value::Array(elements) = value else {
                return Err(expected("an array", value));
            };
            put_leb128(out, elements.len());
            for (i, raw) in elements.iter().enumerate() {
                encode_raw(inner, raw, range, out).map_err(|e| format!("element {i}: {e}"))?;
            }
            Ok(())
        }
        Shape::Map(key, inner) => {
            let Value::Object(fields) = value else {
                return Err(expected("an object", value));
            };
            put_leb128(out, fields.len());
            for (k, raw) in fields {
                encode(key, &Value::Str(k.clone()), range, out)
                    .map_err(|e| format!("key {}: {e}", crate::table::event::excerpt(k)))?;
                encode_raw(inner, raw, range, out)
                    .map_err(|e| format!("value of {}: {e}", crate::table::event::excerpt(k)))?;
            }
            Ok(())
        }
        Shape::Tuple(elements) => match value {
            Value::Array(values) if values.len() == elements.len() => {
                for (i, ((_, shape), raw)) in elements.iter().zip(values).enumerate() {
                    encode_raw(shape, raw, range, out).map_err(|e| format!("element {i}: {e}"))?;
                }
                Ok(())
            }
            Value::Array(values) => {
                Err(format!("expected {} elements, got {}", elements.len(), values.len()).into())
            }
            Value::Object(fields) if elements.iter().all(|(name, _)| name.is_some()) => {
                for (name, shape) in elements {
                    let name = name.as_deref().unwrap_or_default();
                    match fields.iter().find(|(k, _)| k == name) {
                        Some((_, raw)) => encode_raw(shape, raw, range, out)
                            .map_err(|e| format!("{name}: {e}"))?,
                        None => out.extend_from_slice(&zero(shape)),
                    }
                }
                Ok(())
            }
            value => Err(expected("an array (or an object for a named tuple)", value)),
        },
    }
}

/// [`encode`] from the value's JSON text (an array's, map's or tuple's elements too): a
/// `Variant` or `Dynamic` value is read from it as the server reads it (see `variant`); any
/// other type reads [`Value`]s.
pub fn encode_raw(
    shape: &Shape,
    raw: &RawValue,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    match shape {
        Shape::Variant { members, tried } => variant::put_variant(members, tried, raw, range, out),
        Shape::Scalar(Scalar::Dynamic) => variant::put_dynamic(raw, range, out),
        _ => encode(shape, &Value::read(raw)?, range, out),
    }
}

/// The type's default value (what ClickHouse stores for a missing field without a
/// `DEFAULT`): zero, empty, NULL, and for an `Enum` its smallest value (0 may not be one).
pub fn zero(shape: &Shape) -> Vec<u8> {
    match shape {
        Shape::Scalar(Scalar::Enum { bits, values }) => {
            let least = values.iter().map(|(_, n)| *n).min().unwrap_or(0);
            match bits {
                8 => vec![least as i8 as u8],
                _ => least.to_le_bytes().to_vec(),
            }
        }
        Shape::LowCardinality(inner) => zero(inner),
        // The empty object (what ClickHouse stores for a missing or null `JSON` field).
        Shape::Scalar(Scalar::Json) => b"\x02{}".to_vec(),
        // NULL.
        Shape::Variant { .. } => vec![crate::format::NULL_DISCRIMINATOR],
        Shape::Scalar(Scalar::Dynamic) => vec![crate::format::binary_type::NOTHING],
        Shape::Tuple(elements) => elements.iter().flat_map(|(_, s)| zero(s)).collect(),
        other => other
            .layout()
            .map(|l| l.default_value())
            .unwrap_or_default(),
    }
}

fn expected(what: &str, value: &Value<'_>) -> Problem {
    format!("expected {what}, got {}", value.kind()).into()
}

/// The name of a scalar type as ClickHouse spells it, for messages.
pub fn type_name(scalar: &Scalar) -> String {
    match scalar {
        Scalar::UInt(bits) => format!("UInt{bits}"),
        Scalar::Int(bits) => format!("Int{bits}"),
        Scalar::Float32 => "Float32".into(),
        Scalar::Float64 => "Float64".into(),
        Scalar::Bool => "Bool".into(),
        Scalar::Decimal { precision, scale } => format!("Decimal({precision}, {scale})"),
        Scalar::String => "String".into(),
        Scalar::Json => "JSON".into(),
        Scalar::Dynamic => "Dynamic".into(),
        Scalar::FixedString(n) => format!("FixedString({n})"),
        Scalar::Uuid => "UUID".into(),
        Scalar::Date => "Date".into(),
        Scalar::Date32 => "Date32".into(),
        Scalar::DateTime { zone: None } => "DateTime".into(),
        Scalar::DateTime { zone: Some(z) } => format!("DateTime('{}')", z.name()),
        Scalar::DateTime64 {
            precision,
            zone: None,
        } => format!("DateTime64({precision})"),
        Scalar::DateTime64 {
            precision,
            zone: Some(z),
        } => format!("DateTime64({precision}, '{}')", z.name()),
        Scalar::Ipv4 => "IPv4".into(),
        Scalar::Ipv6 => "IPv6".into(),
        Scalar::Enum { bits, .. } => format!("Enum{bits}"),
    }
}

/// A boolean as the number servers read it as.
pub(super) fn digit(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// The text of a number, or of a string holding one (64-bit and wider integers often come
/// as strings from JavaScript clients).
fn numeric_text<'v>(value: &'v Value<'_>) -> Option<&'v str> {
    match value {
        Value::Number(text) => Some(text),
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn scalar_value(
    scalar: &Scalar,
    value: &Value<'_>,
    range: TimeRange,
    out: &mut Vec<u8>,
) -> Result<(), Problem> {
    let out_of_range = || -> Problem { format!("out of range for {}", type_name(scalar)).into() };
    match scalar {
        // Taken by `encode` before it comes here.
        Scalar::Dynamic => return Err("a Dynamic value read without its text".into()),
        Scalar::UInt(bits) | Scalar::Int(bits) => {
            let signed = matches!(scalar, Scalar::Int(_));
            let text = match value {
                // As servers since 21.x read them (and a boolean's added column is
                // `UInt8` on a server without `Bool`).
                Value::Bool(b) => digit(*b),
                value => numeric_text(value).ok_or_else(|| expected("an integer", value))?,
            };
            let bytes = number::integer(text, *bits, signed).map_err(|e| match e {
                NumberError::OutOfRange => out_of_range(),
                NumberError::TooPrecise => "expected an integer".into(),
                NumberError::NotANumber => expected("an integer", value),
            })?;
            out.extend_from_slice(&bytes);
        }
        Scalar::Float32 | Scalar::Float64 => {
            let text = numeric_text(value).ok_or_else(|| expected("a number", value))?;
            let n: f64 = text
                .trim()
                .parse()
                .map_err(|_| expected("a number", value))?;
            let literal_infinity =
                matches!(value, Value::Str(s) if s.to_ascii_lowercase().contains("inf"));
            if matches!(scalar, Scalar::Float32) {
                let f = n as f32;
                if f.is_infinite() && !literal_infinity {
                    return Err(out_of_range());
                }
                out.extend_from_slice(&f.to_le_bytes());
            } else {
                if n.is_infinite() && !literal_infinity {
                    return Err(out_of_range());
                }
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        Scalar::Decimal { precision, scale } => {
            let text = numeric_text(value).ok_or_else(|| expected("a number", value))?;
            let width = scalar.width().unwrap_or(16);
            let bytes =
                number::decimal(text, *precision, *scale, width).map_err(|e| -> Problem {
                    match e {
                        NumberError::OutOfRange => {
                            format!("more than {precision} digits for {}", type_name(scalar)).into()
                        }
                        NumberError::TooPrecise => format!(
                            "more than {scale} digits after the point for {}",
                            type_name(scalar)
                        )
                        .into(),
                        NumberError::NotANumber => expected("a number", value),
                    }
                })?;
            out.extend_from_slice(&bytes);
        }
        Scalar::Bool => {
            let b = match value {
                Value::Bool(b) => *b,
                Value::Number("0") => false,
                Value::Number("1") => true,
                value => return Err(expected("true or false", value)),
            };
            out.push(u8::from(b));
        }
        Scalar::Json => {
            // An object, as its JSON text: the server reads it as a JSONEachRow insert would
            // (which refuses anything but an object).
            if !matches!(value, Value::Object(_)) {
                return Err(expected("an object", value));
            }
            let text = value.to_json();
            put_leb128(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Scalar::String => {
            let text: Cow<'_, str> = match value {
                Value::Str(s) => Cow::Borrowed(s.as_ref()),
                Value::Number(n) => Cow::Borrowed(n),
                Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
                Value::Array(_) | Value::Object(_) | Value::Null => {
                    return Err(expected("a string", value));
                }
            };
            put_leb128(out, text.len());
            out.extend_from_slice(text.as_bytes());
        }
        Scalar::FixedString(n) => {
            let Value::Str(s) = value else {
                return Err(expected("a string", value));
            };
            if s.len() > *n {
                return Err(format!("exceeds FixedString({n})").into());
            }
            out.extend_from_slice(s.as_bytes());
            out.extend(std::iter::repeat_n(0, n - s.len()));
        }
        Scalar::Uuid => {
            let Value::Str(s) = value else {
                return Err(expected("a string", value));
            };
            let id = uuid::Uuid::try_parse(s).map_err(|_| "not a UUID")?;
            let (high, low) = id.as_u64_pair();
            out.extend_from_slice(&high.to_le_bytes());
            out.extend_from_slice(&low.to_le_bytes());
        }
        Scalar::Date | Scalar::Date32 | Scalar::DateTime { .. } | Scalar::DateTime64 { .. } => {
            let zone = match scalar {
                Scalar::DateTime { zone } | Scalar::DateTime64 { zone, .. } => zone.as_ref(),
                _ => None,
            };
            let nanos = match value {
                Value::Str(s) => time::from_text_in(s, zone),
                Value::Number(n) => time::from_number(n),
                _ => None,
            }
            .ok_or(time::EXPECTED)?;
            if matches!(value, Value::Number(_))
                && matches!(scalar, Scalar::DateTime { .. })
                && nanos % 1_000_000_000 != 0
            {
                // Dropping it silently would store another time than the one sent.
                return Err(format!(
                    "a fraction of a second, which {} does not keep",
                    type_name(scalar)
                )
                .into());
            }
            match scalar {
                Scalar::Date => {
                    let days = u16::try_from(time::days(nanos))
                        .ok()
                        .filter(|&d| d <= range.last_day)
                        .ok_or_else(|| range.refusal(scalar))?;
                    out.extend_from_slice(&days.to_le_bytes());
                }
                Scalar::Date32 => {
                    // 1900-01-01 ..= 2299-12-31.
                    let days = time::days(nanos);
                    if !(-25_567..=120_529).contains(&days) {
                        return Err(out_of_range());
                    }
                    out.extend_from_slice(&(days as i32).to_le_bytes());
                }
                Scalar::DateTime { .. } => {
                    let seconds = u32::try_from(time::seconds(nanos))
                        .ok()
                        .filter(|&s| s <= range.last_second)
                        .ok_or_else(|| range.refusal(scalar))?;
                    out.extend_from_slice(&seconds.to_le_bytes());
                }
                Scalar::DateTime64 { precision, .. } => {
                    // The type's documented range: 1900-01-01 ..= 2299-12-31 23:59:59.
                    let seconds = time::seconds(nanos);
                    if !(-2_208_988_800..=10_413_791_999).contains(&seconds) {
                        return Err(out_of_range());
                    }
                    let ticks = i64::try_from(time::ticks(nanos, *precision))
                        .map_err(|_| out_of_range())?;
                    out.extend_from_slice(&ticks.to_le_bytes());
                }
                _ => {}
            }
        }
        Scalar::Ipv4 => {
            let Value::Str(s) = value else {
                return Err(expected("a string", value));
            };
            let ip: Ipv4Addr = s.trim().parse().map_err(|_| "not an IPv4 address")?;
            out.extend_from_slice(&u32::from(ip).to_le_bytes());
        }
        Scalar::Ipv6 => {
            let Value::Str(s) = value else {
                return Err(expected("a string", value));
            };
            let ip: IpAddr = s.trim().parse().map_err(|_| "not an IPv6 address")?;
            let v6 = match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.extend_from_slice(&v6.octets());
        }
        Scalar::Enum { bits, values } => {
            let found = match value {
                Value::Str(s) => values.iter().find(|(name, _)| name == s.as_ref()),
                Value::Number(n) => values
                    .iter()
                    .find(|(_, number)| n.parse::<i16>().is_ok_and(|n| n == *number)),
                _ => None,
            };
            let Some((_, number)) = found else {
                let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!("not one of the enum's values: {}", names.join(", ")).into());
            };
            if *bits == 8 {
                out.push(*number as i8 as u8);
            } else {
                out.extend_from_slice(&number.to_le_bytes());
            }
        }
    }
    Ok(())
}
