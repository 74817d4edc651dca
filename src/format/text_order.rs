//! The order in which the server tries a `Variant`'s members when it reads a value from text
//! (`JSONEachRow` included): ClickHouse's `SerializationVariant::getVariantsDeserializeTextOrder`.
//! More deeply nested types first (arrays, maps, tuples), then by a fixed priority of kinds
//! (`Bool` above the integers, the integers from the smallest, decimals, floats, dates,
//! `String` last), then wrapped (`Nullable`, `LowCardinality`) before plain. Computed once,
//! when the type is parsed.

use super::shape::{Scalar, Shape};

/// The positions of `members` (sorted by name, as the server sorts them) in the order the
/// server tries them.
pub(super) fn text_order(members: &[Shape]) -> Vec<u8> {
    let mut order: Vec<u8> = (0..members.len())
        .filter_map(|i| u8::try_from(i).ok())
        .collect();
    order.sort_by_key(|&i| std::cmp::Reverse(priority(&members[usize::from(i)], 0, 0)));
    order
}

/// The server's text-reading priority of a type: (deepest nesting of arrays, tuples and
/// maps; the kinds' priorities summed; deepest `Nullable`/`LowCardinality`). Higher first.
fn priority(shape: &Shape, depth: usize, wrapped: usize) -> (usize, usize, usize) {
    match shape {
        Shape::Nullable(inner) | Shape::LowCardinality(inner) => {
            priority(inner, depth, wrapped + 1)
        }
        Shape::Array(inner) => {
            let (d, p, w) = priority(inner, depth + 1, wrapped);
            (d, p + kind_priority(Kind::Array), w)
        }
        Shape::Map(key, value) => {
            let (kd, kp, kw) = priority(key, depth + 1, wrapped);
            let (vd, vp, vw) = priority(value, depth + 1, wrapped);
            (kd.max(vd), kp + vp + kind_priority(Kind::Map), kw.max(vw))
        }
        Shape::Tuple(elements) => {
            let mut sum = (0, kind_priority(Kind::Tuple), 0);
            for (_, element) in elements {
                let (d, p, w) = priority(element, depth + 1, wrapped);
                sum = (sum.0.max(d), sum.1 + p, sum.2.max(w));
            }
            sum
        }
        Shape::Variant { members, .. } => members
            .iter()
            .map(|v| priority(v, depth, wrapped))
            .fold((0, 0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1), a.2.max(b.2))),
        Shape::Scalar(Scalar::Bool) => (depth, kind_priority(Kind::Int(8, true)) + 1, wrapped),
        Shape::Scalar(scalar) => (depth, Kind::of(scalar).map_or(0, kind_priority), wrapped),
    }
}

/// The kinds the server ranks, highest first.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Array,
    Tuple,
    Map,
    Enum(u8),
    Uuid,
    Ipv4,
    Ipv6,
    /// Bits and signedness.
    Int(u16, bool),
    /// Bits of the decimal's integer.
    Decimal(usize),
    Float(u8),
    Date,
    Date32,
    DateTime,
    DateTime64,
    FixedString,
    String,
}

impl Kind {
    fn of(scalar: &Scalar) -> Option<Self> {
        Some(match scalar {
            Scalar::UInt(bits) => Self::Int(*bits, false),
            Scalar::Int(bits) => Self::Int(*bits, true),
            Scalar::Float32 => Self::Float(32),
            Scalar::Float64 => Self::Float(64),
            Scalar::Decimal { .. } => Self::Decimal(scalar.width()? * 8),
            Scalar::String => Self::String,
            Scalar::FixedString(_) => Self::FixedString,
            Scalar::Uuid => Self::Uuid,
            Scalar::Date => Self::Date,
            Scalar::Date32 => Self::Date32,
            Scalar::DateTime { .. } => Self::DateTime,
            Scalar::DateTime64 { .. } => Self::DateTime64,
            Scalar::Ipv4 => Self::Ipv4,
            Scalar::Ipv6 => Self::Ipv6,
            Scalar::Enum { bits, .. } => Self::Enum(*bits),
            Scalar::Bool | Scalar::Json | Scalar::Dynamic => return None,
        })
    }
}

/// The server's list, highest first; a kind's priority is its distance from the end.
const RANKED: [Kind; 33] = [
    Kind::Array,
    Kind::Tuple,
    Kind::Map,
    // (AggregateFunction, never written here, ranks here.)
    Kind::Map,
    Kind::Enum(8),
    Kind::Enum(16),
    Kind::Uuid,
    Kind::Ipv4,
    Kind::Ipv6,
    Kind::Int(8, true),
    Kind::Int(8, false),
    Kind::Int(16, true),
    Kind::Int(16, false),
    Kind::Int(32, true),
    Kind::Int(32, false),
    Kind::Int(64, true),
    Kind::Int(64, false),
    Kind::Int(128, true),
    Kind::Int(128, false),
    Kind::Int(256, true),
    Kind::Int(256, false),
    Kind::Decimal(32),
    Kind::Decimal(64),
    Kind::Decimal(128),
    Kind::Decimal(256),
    Kind::Float(32),
    Kind::Float(64),
    Kind::Date,
    Kind::Date32,
    Kind::DateTime,
    Kind::DateTime64,
    Kind::FixedString,
    Kind::String,
];

fn kind_priority(kind: Kind) -> usize {
    RANKED.len()
        - RANKED
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(RANKED.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_tried_in_the_servers_order() {
        let shape = Shape::parse("Variant(String, Int64, Array(Int64), Bool, Float64)").unwrap();
        let Shape::Variant { members, tried } = &shape else {
            panic!()
        };
        let names: Vec<String> = (tried.iter())
            .map(|&i| format!("{:?}", members[usize::from(i)]))
            .collect();
        assert!(names[0].starts_with("Array"), "{names:?}");
        assert!(names[1].contains("Bool"), "{names:?}");
        assert!(names[2].contains("Int(64)"), "{names:?}");
        assert!(names[3].contains("Float64"), "{names:?}");
        assert!(names[4].contains("String"), "{names:?}");
    }
}
