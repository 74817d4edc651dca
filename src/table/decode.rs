//! One encoded row read back as a JSON object with the table's column names: what the
//! quarantine keeps for a row ClickHouse refused, so an operator can read it and re-post it
//! (the values are in the forms `POST /v1/tables/{table}` accepts).

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value as Json, json};

use super::TableSchema;
use super::number::to_text;
use crate::format::{Scalar, Shape, leb128};

impl TableSchema {
    /// `row` (RowBinary, this schema's columns) as a JSON object; `None` if it does not fit.
    pub fn decode_row(&self, row: &[u8]) -> Option<Json> {
        let mut rest = row;
        let mut object = Map::new();
        for column in self.columns() {
            // RowBinaryWithDefaults: 1 is "the server's default", and the field was absent.
            if self.uses_server_defaults() && take(&mut rest, 1)?[0] == 1 {
                continue;
            }
            object.insert(column.name.clone(), value(&column.shape, &mut rest)?);
        }
        rest.is_empty().then_some(Json::Object(object))
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = data.split_at_checked(n)?;
    *data = rest;
    Some(head)
}

fn value(shape: &Shape, data: &mut &[u8]) -> Option<Json> {
    Some(match shape {
        Shape::Nullable(inner) => match take(data, 1)?[0] {
            1 => Json::Null,
            _ => value(inner, data)?,
        },
        Shape::LowCardinality(inner) => value(inner, data)?,
        Shape::Array(inner) => {
            let (count, prefix) = leb128(data)?;
            take(data, prefix)?;
            let items = (0..count)
                .map(|_| value(inner, data))
                .collect::<Option<Vec<_>>>()?;
            Json::Array(items)
        }
        Shape::Map(key, inner) => {
            let (count, prefix) = leb128(data)?;
            take(data, prefix)?;
            let mut object = Map::new();
            for _ in 0..count {
                let k = match value(key, data)? {
                    Json::String(s) => s,
                    other => other.to_string(),
                };
                object.insert(k, value(inner, data)?);
            }
            Json::Object(object)
        }
        Shape::Tuple(elements) => {
            let values = elements
                .iter()
                .map(|(_, s)| value(s, data))
                .collect::<Option<Vec<_>>>()?;
            match elements.iter().all(|(n, _)| n.is_some()) {
                true => Json::Object(
                    elements
                        .iter()
                        .map(|(n, _)| n.clone().unwrap_or_default())
                        .zip(values)
                        .collect(),
                ),
                false => Json::Array(values),
            }
        }
        Shape::Variant { members, .. } => match take(data, 1)?[0] {
            crate::format::NULL_DISCRIMINATOR => Json::Null,
            d => value(members.get(usize::from(d))?, data)?,
        },
        Shape::Scalar(Scalar::Dynamic) => {
            let (shape, took) = crate::format::binary_type::read(data)?;
            take(data, took)?;
            match shape {
                Some(shape) => value(&shape, data)?,
                None => Json::Null,
            }
        }
        Shape::Scalar(scalar) => scalar_value(scalar, data)?,
    })
}

fn scalar_value(scalar: &Scalar, data: &mut &[u8]) -> Option<Json> {
    if let Scalar::String | Scalar::Json = scalar {
        let (len, prefix) = leb128(data)?;
        take(data, prefix)?;
        let text = String::from_utf8_lossy(take(data, len)?);
        return Some(match scalar {
            Scalar::Json => serde_json::from_str(&text).unwrap_or_else(|_| json!(text)),
            _ => json!(text),
        });
    }
    let bytes = take(data, scalar.width()?)?;
    let uint = || {
        let mut buf = [0u8; 8];
        buf[..bytes.len().min(8)].copy_from_slice(&bytes[..bytes.len().min(8)]);
        u64::from_le_bytes(buf)
    };
    let time = |seconds: i64, nanos: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(seconds) * 1_000_000_000 + i128::from(nanos),
        )
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(Json::String)
    };
    Some(match scalar {
        Scalar::UInt(bits) if *bits <= 32 => json!(uint()),
        Scalar::Int(bits) if *bits <= 32 => {
            let shift = 64 - u32::from(*bits);
            json!(((uint() << shift) as i64) >> shift)
        }
        // 64 bits and wider as strings: exact in every JSON reader.
        Scalar::UInt(_) => json!(to_text(bytes, false, 0)),
        Scalar::Int(_) => json!(to_text(bytes, true, 0)),
        Scalar::Decimal { scale, .. } => json!(to_text(bytes, true, *scale)),
        Scalar::Float32 => json!(f32::from_le_bytes(bytes.try_into().ok()?)),
        Scalar::Float64 => json!(f64::from_le_bytes(bytes.try_into().ok()?)),
        Scalar::Bool => json!(bytes[0] != 0),
        Scalar::FixedString(_) => {
            json!(String::from_utf8_lossy(bytes).trim_end_matches('\0'))
        }
        Scalar::Uuid => {
            let high = u64::from_le_bytes(bytes[..8].try_into().ok()?);
            let low = u64::from_le_bytes(bytes[8..].try_into().ok()?);
            json!(uuid::Uuid::from_u64_pair(high, low).to_string())
        }
        Scalar::Date => {
            let days = i64::from(u16::from_le_bytes(bytes.try_into().ok()?));
            Json::String(time(days * 86_400, 0)?.as_str()?[..10].to_string())
        }
        Scalar::Date32 => {
            let days = i64::from(i32::from_le_bytes(bytes.try_into().ok()?));
            Json::String(time(days * 86_400, 0)?.as_str()?[..10].to_string())
        }
        Scalar::DateTime { .. } => time(i64::from(u32::from_le_bytes(bytes.try_into().ok()?)), 0)?,
        Scalar::DateTime64 { precision, .. } => {
            let ticks = i64::from_le_bytes(bytes.try_into().ok()?);
            let per_second = 10i64.pow(u32::from(*precision));
            let nanos = ticks.rem_euclid(per_second) * 10i64.pow(9 - u32::from(*precision));
            time(ticks.div_euclid(per_second), nanos)?
        }
        Scalar::Ipv4 => {
            json!(Ipv4Addr::from(u32::from_le_bytes(bytes.try_into().ok()?)).to_string())
        }
        Scalar::Ipv6 => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            json!(Ipv6Addr::from(octets).to_canonical().to_string())
        }
        Scalar::Enum { bits, values } => {
            let number = match bits {
                8 => i16::from(bytes[0] as i8),
                _ => i16::from_le_bytes(bytes.try_into().ok()?),
            };
            match values.iter().find(|(_, n)| *n == number) {
                Some((name, _)) => json!(name),
                None => json!(number),
            }
        }
        Scalar::String | Scalar::Json | Scalar::Dynamic => return None,
    })
}
