//! Type names read once: what a ClickHouse type *means* ([`Shape`], [`Scalar`]), from which
//! both views of it derive: the block layout ([`ColumnType`], how RowBinary values are cut
//! and written as Native columns) and the JSON side (`crate::table`, how a JSON value
//! becomes that RowBinary value). One parser, so the two can never disagree on a type.

use super::BlockError;
use super::column_zone::ColumnZone;
use super::types::{ColumnType, Order};

/// A type with one value per row and no inner type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scalar {
    /// `UInt8` … `UInt256` (bits).
    UInt(u16),
    /// `Int8` … `Int256` (bits).
    Int(u16),
    /// `Float32`.
    Float32,
    /// `Float64`.
    Float64,
    /// `Bool` (one byte, 0 or 1).
    Bool,
    /// `Decimal(P, S)`: an integer of `P` digits scaled by `10^-S`.
    Decimal {
        /// Total digits, 1–76.
        precision: u8,
        /// Digits after the point, at most `precision`.
        scale: u8,
    },
    /// `String`.
    String,
    /// `FixedString(N)`.
    FixedString(usize),
    /// `UUID`.
    Uuid,
    /// `Date`: days since 1970 as `UInt16`.
    Date,
    /// `Date32`: days since 1970 as `Int32`.
    Date32,
    /// `DateTime[(zone)]`: seconds since 1970 as `UInt32`.
    DateTime {
        /// The column's zone, if one other than UTC: zone-less times are read in it.
        zone: Option<ColumnZone>,
    },
    /// `DateTime64(p[, zone])`: ticks of `10^-p` seconds since 1970 as `Int64`.
    DateTime64 {
        /// Digits after the second, 0–9.
        precision: u8,
        /// As for `DateTime`.
        zone: Option<ColumnZone>,
    },
    /// `IPv4`: `UInt32`.
    Ipv4,
    /// `IPv6`: 16 bytes in network order.
    Ipv6,
    /// `JSON` (`JSON(...)` with its parameters, and `Object('json')`): an object, sent as its
    /// JSON text in RowBinary (a `String`'s layout), which the server parses as it parses
    /// a `JSONEachRow` insert (`input_format_binary_read_json_as_string`).
    Json,
    /// `Dynamic` (with or without `max_types`): any value, sent in RowBinary as its type
    /// (ClickHouse's binary type encoding) then the value; the type is the one the server's
    /// `JSONEachRow` reading infers for the JSON value.
    Dynamic,
    /// `Enum8`/`Enum16`: names and their numbers.
    Enum {
        /// 8 or 16.
        bits: u8,
        /// `(name, number)` in declaration order.
        values: Vec<(String, i16)>,
    },
}

/// A column type's structure: scalars and the wrappers ClickHouse composes them with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// One value.
    Scalar(Scalar),
    /// `Nullable(T)`.
    Nullable(Box<Shape>),
    /// `LowCardinality(T)`: stored as a dictionary, read and written as `T`.
    LowCardinality(Box<Shape>),
    /// `Array(T)`.
    Array(Box<Shape>),
    /// `Map(K, V)`.
    Map(Box<Shape>, Box<Shape>),
    /// `Tuple(T1, T2, ...)` or `Tuple(a T1, b T2, ...)`: element names when named.
    Tuple(Vec<(Option<String>, Shape)>),
    /// `Variant(T1, T2, ...)`: one of the types or NULL.
    Variant {
        /// The types sorted by name, as the server sorts them: a type's position is its
        /// discriminator (the byte before the value in RowBinary, 255 for NULL).
        members: Vec<Shape>,
        /// The positions in the order the server tries the types when it reads a value
        /// from text (see `text_order`).
        tried: Vec<u8>,
    },
}

impl Scalar {
    /// Bytes per value, `None` for `String`.
    pub fn width(&self) -> Option<usize> {
        Some(match self {
            Self::UInt(bits) | Self::Int(bits) => usize::from(*bits) / 8,
            Self::Float32 | Self::Date32 | Self::DateTime { .. } | Self::Ipv4 => 4,
            Self::Float64 | Self::DateTime64 { .. } => 8,
            Self::Bool => 1,
            Self::Decimal { precision, .. } => decimal_width(*precision),
            Self::String | Self::Json | Self::Dynamic => return None,
            Self::FixedString(n) => *n,
            Self::Uuid | Self::Ipv6 => 16,
            Self::Date => 2,
            Self::Enum { bits, .. } => usize::from(*bits) / 8,
        })
    }

    /// How values compare in a sorting key, as far as the block's sort evaluates them.
    fn order(&self) -> Order {
        let narrow = self.width().is_some_and(|w| w <= 8);
        match self {
            Self::UInt(_) if narrow => Order::Unsigned,
            Self::Int(_) | Self::Decimal { .. } if narrow => Order::Signed,
            Self::Float32 | Self::Float64 => Order::Float,
            Self::Bool | Self::Date | Self::DateTime { .. } | Self::Ipv4 => Order::Unsigned,
            Self::Date32 | Self::DateTime64 { .. } | Self::Enum { .. } => Order::Signed,
            Self::FixedString(_) => Order::Bytes,
            Self::Uuid => Order::Uuid,
            _ => Order::Unknown,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        if let Some(n) = wrapped(name, "FixedString") {
            return Some(Self::FixedString(n.trim().parse().ok()?));
        }
        if name == "DateTime" {
            return Some(Self::DateTime { zone: None });
        }
        if name == "JSON"
            || wrapped(name, "JSON").is_some()
            || wrapped(name, "Object").is_some_and(|a| a.trim().eq_ignore_ascii_case("'json'"))
        {
            return Some(Self::Json);
        }
        if name == "Dynamic" || wrapped(name, "Dynamic").is_some() {
            return Some(Self::Dynamic);
        }
        if let Some(zone) = wrapped(name, "DateTime") {
            return Some(Self::DateTime {
                zone: ColumnZone::parse(zone).ok()?,
            });
        }
        if let Some(args) = wrapped(name, "DateTime64") {
            let args = split_args(args);
            let precision: u8 = args.first()?.trim().parse().ok()?;
            let zone = match args.get(1) {
                Some(zone) => ColumnZone::parse(zone).ok()?,
                None => None,
            };
            return (precision <= 9).then_some(Self::DateTime64 { precision, zone });
        }
        if let Some(args) = wrapped(name, "Decimal") {
            let args = split_args(args);
            let [p, s] = args.as_slice() else { return None };
            return decimal(p.trim().parse().ok()?, s.trim().parse().ok()?);
        }
        for (prefix, precision) in [
            ("Decimal32", 9),
            ("Decimal64", 18),
            ("Decimal128", 38),
            ("Decimal256", 76),
        ] {
            if let Some(s) = wrapped(name, prefix) {
                return decimal(precision, s.trim().parse().ok()?);
            }
        }
        for (prefix, bits) in [("Enum8", 8), ("Enum16", 16)] {
            if let Some(body) = wrapped(name, prefix) {
                return Some(Self::Enum {
                    bits,
                    values: enum_values(body)?,
                });
            }
        }
        Some(match name {
            "UInt8" => Self::UInt(8),
            "UInt16" => Self::UInt(16),
            "UInt32" => Self::UInt(32),
            "UInt64" => Self::UInt(64),
            "UInt128" => Self::UInt(128),
            "UInt256" => Self::UInt(256),
            "Int8" => Self::Int(8),
            "Int16" => Self::Int(16),
            "Int32" => Self::Int(32),
            "Int64" => Self::Int(64),
            "Int128" => Self::Int(128),
            "Int256" => Self::Int(256),
            "Float32" => Self::Float32,
            "Float64" => Self::Float64,
            "Bool" | "Boolean" => Self::Bool,
            "String" => Self::String,
            "UUID" => Self::Uuid,
            "Date" => Self::Date,
            "Date32" => Self::Date32,
            "IPv4" => Self::Ipv4,
            "IPv6" => Self::Ipv6,
            _ => return None,
        })
    }
}

impl Shape {
    /// Parses a type name as `system.columns.type` spells it; `None` for a type this
    /// service does not write (`AggregateFunction`, `Object('json')`'s relatives, ...).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        if let Some(inner) = wrapped(name, "Nullable") {
            return Some(Self::Nullable(Box::new(Self::parse(inner)?)));
        }
        if let Some(inner) = wrapped(name, "LowCardinality") {
            return Some(Self::LowCardinality(Box::new(Self::parse(inner)?)));
        }
        if let Some(inner) = wrapped(name, "Array") {
            return Some(Self::Array(Box::new(Self::parse(inner)?)));
        }
        if let Some(args) = wrapped(name, "Map") {
            let args = split_args(args);
            let [k, v] = args.as_slice() else { return None };
            return Some(Self::Map(
                Box::new(Self::parse(k)?),
                Box::new(Self::parse(v)?),
            ));
        }
        if let Some(args) = wrapped(name, "Tuple") {
            let elements = split_args(args)
                .into_iter()
                .map(|element| tuple_element(&element))
                .collect::<Option<Vec<_>>>()?;
            return (!elements.is_empty()).then_some(Self::Tuple(elements));
        }
        if let Some(args) = wrapped(name, "Variant") {
            let mut names = split_args(args);
            names.sort();
            names.dedup();
            let members = (names.iter())
                .map(|name| Self::parse(name))
                .collect::<Option<Vec<_>>>()?;
            if members.is_empty() || members.len() >= 255 {
                return None;
            }
            let tried = super::text_order::text_order(&members);
            return Some(Self::Variant { members, tried });
        }
        Scalar::parse(name).map(Self::Scalar)
    }

    /// The block layout of this type; `None` for combinations ClickHouse does not allow
    /// or the builder does not write (`Nullable(Array(..))`, `LowCardinality(Array(..))`).
    pub fn layout(&self) -> Option<ColumnType> {
        Some(match self {
            Self::Scalar(Scalar::String | Scalar::Json) => ColumnType::String,
            Self::Scalar(Scalar::Dynamic) => ColumnType::Dynamic,
            Self::Scalar(s) => ColumnType::Fixed {
                width: s.width()?,
                order: s.order(),
            },
            Self::Nullable(inner) => match inner.as_ref() {
                Self::Scalar(_) => ColumnType::Nullable(Box::new(inner.layout()?)),
                _ => return None,
            },
            Self::LowCardinality(inner) => match inner.as_ref() {
                Self::Scalar(_) => ColumnType::LowCardinality(Box::new(inner.layout()?)),
                Self::Nullable(scalar) if matches!(scalar.as_ref(), Self::Scalar(_)) => {
                    ColumnType::LowCardinality(Box::new(inner.layout()?))
                }
                _ => return None,
            },
            Self::Array(inner) => ColumnType::Array(Box::new(inner.layout()?)),
            Self::Map(key, value) => match key.as_ref() {
                Self::Scalar(_) | Self::LowCardinality(_) => {
                    ColumnType::Map(Box::new(key.layout()?), Box::new(value.layout()?))
                }
                _ => return None,
            },
            Self::Tuple(elements) => ColumnType::Tuple(
                elements
                    .iter()
                    .map(|(_, shape)| shape.layout())
                    .collect::<Option<_>>()?,
            ),
            Self::Variant { members, .. } => {
                ColumnType::Variant(members.iter().map(Self::layout).collect::<Option<_>>()?)
            }
        })
    }

    /// Whether a `JSON` value is anywhere in the type (its inserts are RowBinary, with the
    /// server reading JSON as text).
    pub fn has_json(&self) -> bool {
        self.any(&|shape| matches!(shape, Self::Scalar(Scalar::Json)))
    }

    /// Whether the type's values can only be sent as RowBinary: a `JSON` value (sent as
    /// text), a `Dynamic` or a `Variant` (whose Native forms this service does not write).
    pub fn rowbinary_only(&self) -> bool {
        self.any(&|shape| {
            matches!(
                shape,
                Self::Scalar(Scalar::Json | Scalar::Dynamic) | Self::Variant { .. }
            )
        })
    }

    /// Whether `pick` holds for the type or a type inside it.
    fn any(&self, pick: &dyn Fn(&Shape) -> bool) -> bool {
        pick(self)
            || match self {
                Self::Scalar(_) => false,
                Self::Nullable(inner) | Self::LowCardinality(inner) | Self::Array(inner) => {
                    inner.any(pick)
                }
                Self::Map(key, value) => key.any(pick) || value.any(pick),
                Self::Tuple(elements) => elements.iter().any(|(_, s)| s.any(pick)),
                Self::Variant { members, .. } => members.iter().any(|s| s.any(pick)),
            }
    }

    /// Whether the type holds NULL without `Nullable` (`Variant`, `Dynamic`).
    pub fn takes_null(&self) -> bool {
        matches!(self, Self::Variant { .. } | Self::Scalar(Scalar::Dynamic))
    }

    /// The type without `LowCardinality` (what values look like).
    pub fn plain(&self) -> &Shape {
        match self {
            Self::LowCardinality(inner) => inner.plain(),
            other => other,
        }
    }
}

/// Bytes of a `Decimal(precision, _)`.
fn decimal_width(precision: u8) -> usize {
    match precision {
        0..=9 => 4,
        10..=18 => 8,
        19..=38 => 16,
        _ => 32,
    }
}

fn decimal(precision: u8, scale: u8) -> Option<Scalar> {
    (1..=76)
        .contains(&precision)
        .then_some(())
        .filter(|()| scale <= precision)
        .map(|()| Scalar::Decimal { precision, scale })
}

/// `name Type` or `Type`.
fn tuple_element(text: &str) -> Option<(Option<String>, Shape)> {
    let text = text.trim();
    if let Some(shape) = Shape::parse(text) {
        return Some((None, shape));
    }
    let (name, ty) = match text.strip_prefix('`') {
        Some(quoted) => quoted.split_once('`')?,
        None => text.split_once(char::is_whitespace)?,
    };
    Some((Some(name.to_string()), Shape::parse(ty)?))
}

/// `'a' = 1, 'b' = 2` → `[("a", 1), ("b", 2)]` (quotes and backslashes unescaped).
fn enum_values(body: &str) -> Option<Vec<(String, i16)>> {
    let mut values = Vec::new();
    for item in split_args(body) {
        let item = item.trim();
        let rest = item.strip_prefix('\'')?;
        let mut name = String::new();
        let mut chars = rest.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => name.push(chars.next()?.1),
                '\'' => {
                    end = Some(i + 1);
                    break;
                }
                c => name.push(c),
            }
        }
        let number = rest[end?..].trim().strip_prefix('=')?.trim().parse().ok()?;
        values.push((name, number));
    }
    (!values.is_empty()).then_some(values)
}

/// `inner` of `outer(inner)`.
fn wrapped<'a>(name: &'a str, outer: &str) -> Option<&'a str> {
    name.strip_prefix(outer)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// Splits a type's arguments at top-level commas (not inside parentheses or quotes).
pub(crate) fn split_args(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote = false;
    let mut escaped = false;
    let mut current = String::new();
    for c in text.chars() {
        if quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => quote = false,
                _ => {}
            }
            current.push(c);
            continue;
        }
        match c {
            '\'' => quote = true,
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        parts.push(current.trim().to_string());
    }
    parts
}

impl ColumnType {
    /// Parses a type name as `system.columns.type` spells it (through [`Shape`], the one
    /// reading of type names).
    pub fn parse(name: &str) -> Result<Self, BlockError> {
        let name = name.trim();
        Shape::parse(name)
            .and_then(|shape| shape.layout())
            .ok_or_else(|| BlockError::UnsupportedType(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_wrappers_parse_as_the_server_spells_them() {
        let cases = [
            (
                "Decimal(18, 4)",
                Shape::Scalar(Scalar::Decimal {
                    precision: 18,
                    scale: 4,
                }),
            ),
            (
                "Decimal64(4)",
                Shape::Scalar(Scalar::Decimal {
                    precision: 18,
                    scale: 4,
                }),
            ),
            (
                "DateTime64(3, 'UTC')",
                Shape::Scalar(Scalar::DateTime64 {
                    precision: 3,
                    zone: None,
                }),
            ),
            (
                "DateTime('Europe/Berlin')",
                Shape::Scalar(Scalar::DateTime {
                    zone: ColumnZone::parse("'Europe/Berlin'").unwrap(),
                }),
            ),
            (
                "Enum8('a' = 1, 'b\\'c' = -2)",
                Shape::Scalar(Scalar::Enum {
                    bits: 8,
                    values: vec![("a".into(), 1), ("b'c".into(), -2)],
                }),
            ),
            (
                "Map(String, Array(Nullable(UInt8)))",
                Shape::Map(
                    Box::new(Shape::Scalar(Scalar::String)),
                    Box::new(Shape::Array(Box::new(Shape::Nullable(Box::new(
                        Shape::Scalar(Scalar::UInt(8)),
                    ))))),
                ),
            ),
            (
                "Tuple(a String, `b c` Int256)",
                Shape::Tuple(vec![
                    (Some("a".into()), Shape::Scalar(Scalar::String)),
                    (Some("b c".into()), Shape::Scalar(Scalar::Int(256))),
                ]),
            ),
            (
                "Tuple(String, DateTime64(6))",
                Shape::Tuple(vec![
                    (None, Shape::Scalar(Scalar::String)),
                    (
                        None,
                        Shape::Scalar(Scalar::DateTime64 {
                            precision: 6,
                            zone: None,
                        }),
                    ),
                ]),
            ),
        ];
        for (name, shape) in cases {
            assert_eq!(Shape::parse(name), Some(shape), "{name}");
        }
        for name in ["JSON", "JSON(max_dynamic_paths = 16)", "Object('json')"] {
            assert_eq!(
                Shape::parse(name),
                Some(Shape::Scalar(Scalar::Json)),
                "{name}"
            );
        }
        // Variants sorted by name: a variant's position is its discriminator; tried as the
        // server tries them (an array first, `String` last).
        assert_eq!(
            Shape::parse("Variant(UInt8, Array(String), String)"),
            Some(Shape::Variant {
                members: vec![
                    Shape::Array(Box::new(Shape::Scalar(Scalar::String))),
                    Shape::Scalar(Scalar::String),
                    Shape::Scalar(Scalar::UInt(8)),
                ],
                tried: vec![0, 2, 1],
            })
        );
        for name in ["Dynamic", "Dynamic(max_types=8)"] {
            assert_eq!(Shape::parse(name), Some(Shape::Scalar(Scalar::Dynamic)));
        }
        for name in [
            "Object('other')",
            "Variant(String, Object('other'))",
            "AggregateFunction(sum, UInt64)",
            "Decimal(77, 2)",
            "Decimal(9, 10)",
            "DateTime64(10)",
            "Enum8()",
        ] {
            assert_eq!(Shape::parse(name), None, "{name}");
        }
    }

    #[test]
    fn layouts_follow_what_clickhouse_allows() {
        let layout = |name: &str| Shape::parse(name).and_then(|s| s.layout());
        assert_eq!(
            layout("Decimal(38, 2)"),
            Some(ColumnType::Fixed {
                width: 16,
                order: Order::Unknown
            })
        );
        assert_eq!(
            layout("Decimal(18, 2)"),
            Some(ColumnType::Fixed {
                width: 8,
                order: Order::Signed
            })
        );
        assert!(layout("LowCardinality(Nullable(String))").is_some());
        assert!(layout("Array(LowCardinality(String))").is_some());
        assert_eq!(layout("Nullable(Array(String))"), None);
        assert_eq!(layout("LowCardinality(Array(String))"), None);
        assert_eq!(layout("Map(Array(String), String)"), None);
    }
}
