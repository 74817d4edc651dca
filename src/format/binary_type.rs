//! ClickHouse's binary encoding of data types: what a `Dynamic` value starts with in
//! RowBinary (the value's type, then the value in that type's RowBinary form). Only the
//! types a JSON value is inferred as are written; the same ones are read back.

use super::shape::{Scalar, Shape};
use super::types::{leb128, put_leb128};

/// `Nothing`: a `Dynamic` NULL (no value follows).
pub const NOTHING: u8 = 0x00;
const UINT64: u8 = 0x04;
const INT64: u8 = 0x0A;
const FLOAT64: u8 = 0x0E;
const DATE: u8 = 0x0F;
const DATETIME: u8 = 0x11;
/// Followed by the precision byte.
const DATETIME64: u8 = 0x13;
const STRING: u8 = 0x15;
/// Followed by the element type.
const ARRAY: u8 = 0x1E;
/// Followed by the count, then each element's name (LEB128 length, bytes) and type.
const NAMED_TUPLE: u8 = 0x20;
/// Followed by the inner type.
const NULLABLE: u8 = 0x23;
/// Followed by the `max_types` byte.
const DYNAMIC: u8 = 0x2B;
const BOOL: u8 = 0x2D;
/// `max_types` of a `Dynamic` inside an inferred type (the server's default).
const DYNAMIC_MAX_TYPES: u8 = 32;

/// Appends `shape`'s binary encoding; `false` (with `out` unchanged) for a type outside
/// the written set.
pub fn write(shape: &Shape, out: &mut Vec<u8>) -> bool {
    let start = out.len();
    let written = put(shape, out);
    if !written {
        out.truncate(start);
    }
    written
}

fn put(shape: &Shape, out: &mut Vec<u8>) -> bool {
    match shape {
        Shape::Scalar(scalar) => {
            let code = match scalar {
                Scalar::UInt(64) => UINT64,
                Scalar::Int(64) => INT64,
                Scalar::Float64 => FLOAT64,
                Scalar::Bool => BOOL,
                Scalar::String => STRING,
                Scalar::Date => DATE,
                Scalar::DateTime { zone: None } => DATETIME,
                Scalar::DateTime64 {
                    precision,
                    zone: None,
                } => {
                    out.extend_from_slice(&[DATETIME64, *precision]);
                    return true;
                }
                Scalar::Dynamic => {
                    out.extend_from_slice(&[DYNAMIC, DYNAMIC_MAX_TYPES]);
                    return true;
                }
                _ => return false,
            };
            out.push(code);
            true
        }
        Shape::Array(inner) => {
            out.push(ARRAY);
            put(inner, out)
        }
        Shape::Nullable(inner) => {
            out.push(NULLABLE);
            put(inner, out)
        }
        Shape::Tuple(elements) => {
            out.push(NAMED_TUPLE);
            put_leb128(out, elements.len());
            elements.iter().all(|(name, element)| match name {
                Some(name) => {
                    put_leb128(out, name.len());
                    out.extend_from_slice(name.as_bytes());
                    put(element, out)
                }
                None => false,
            })
        }
        _ => false,
    }
}

/// The type at the start of `data` (`None` for `Nothing`, a NULL) and the bytes it took;
/// `None` for a code outside the written set or a cut encoding.
#[allow(clippy::type_complexity)]
pub fn read(data: &[u8]) -> Option<(Option<Shape>, usize)> {
    let scalar = |scalar| Some((Some(Shape::Scalar(scalar)), 1));
    match *data.first()? {
        NOTHING => Some((None, 1)),
        UINT64 => scalar(Scalar::UInt(64)),
        INT64 => scalar(Scalar::Int(64)),
        FLOAT64 => scalar(Scalar::Float64),
        BOOL => scalar(Scalar::Bool),
        STRING => scalar(Scalar::String),
        DATE => scalar(Scalar::Date),
        DATETIME => scalar(Scalar::DateTime { zone: None }),
        DATETIME64 => Some((
            Some(Shape::Scalar(Scalar::DateTime64 {
                precision: *data.get(1)?,
                zone: None,
            })),
            2,
        )),
        DYNAMIC => {
            data.get(1)?;
            Some((Some(Shape::Scalar(Scalar::Dynamic)), 2))
        }
        ARRAY => {
            let (inner, at) = read(&data[1..])?;
            Some((Some(Shape::Array(Box::new(inner?))), 1 + at))
        }
        NULLABLE => {
            let (inner, at) = read(&data[1..])?;
            Some((Some(Shape::Nullable(Box::new(inner?))), 1 + at))
        }
        NAMED_TUPLE => {
            let (count, prefix) = leb128(&data[1..])?;
            let mut at = 1 + prefix;
            let mut elements = Vec::with_capacity(count.min(64));
            for _ in 0..count {
                let (len, prefix) = leb128(data.get(at..)?)?;
                let name = data.get(at + prefix..at.checked_add(prefix)?.checked_add(len)?)?;
                at += prefix + len;
                let (element, took) = read(data.get(at..)?)?;
                at += took;
                elements.push((Some(String::from_utf8(name.to_vec()).ok()?), element?));
            }
            Some((Some(Shape::Tuple(elements)), at))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_types_read_back_as_written() {
        for name in [
            "Int64",
            "UInt64",
            "Float64",
            "Bool",
            "String",
            "Date",
            "DateTime",
            "DateTime64(9)",
            "Dynamic",
            "Array(Nullable(Int64))",
            "Array(Array(String))",
            "Tuple(a Int64, `b c` Array(Nullable(String)))",
        ] {
            let shape = Shape::parse(name).unwrap();
            let mut out = Vec::new();
            assert!(write(&shape, &mut out), "{name}");
            assert_eq!(read(&out), Some((Some(shape), out.len())), "{name}");
        }
        assert_eq!(read(&[NOTHING]), Some((None, 1)));
        // `Array(Int64)`, as ClickHouse's documentation gives it.
        assert_eq!(read(&[0x1E, 0x0A]).unwrap().0, Shape::parse("Array(Int64)"));
        assert!(!write(&Shape::parse("UInt8").unwrap(), &mut Vec::new()));
        assert_eq!(read(&[ARRAY]), None);
    }
}
