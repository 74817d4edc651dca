//! Column types as data: parsed from the type names ClickHouse reports in `system.columns`,
//! with each type's RowBinary value length (to cut rows into cells) and its Native form.

use std::fmt;

use super::binary_type;

/// A column type the block builder can transpose from RowBinary into Native.
///
/// Parsed from the server's own spelling (`LowCardinality(String)`, `DateTime('UTC')`,
/// `Nullable(UInt32)`), so a table's columns are data, not a compiled-in struct: the
/// every table and per-shard blocks share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    /// Fixed-width little-endian integers and floats, `Date` (`UInt16` days), `DateTime`
    /// (`UInt32` seconds), `UUID`, `IPv4`, `IPv6`, `FixedString(N)`: the RowBinary value and
    /// the Native value are the same `width` bytes.
    Fixed {
        /// Bytes per value.
        width: usize,
        /// How values order (for sorting keys).
        order: Order,
    },
    /// `String`: LEB128 length then bytes, in RowBinary and in Native alike.
    String,
    /// `Nullable(T)`: RowBinary has a flag byte before each value (the value is absent when
    /// the flag is 1); Native has the column of flags, then `T`'s column with defaults for
    /// the nulls.
    Nullable(Box<ColumnType>),
    /// `LowCardinality(T)` for a non-nullable `T`: RowBinary is `T`'s; Native is a
    /// dictionary of the block's distinct values and an index per row. 18.16 refuses a
    /// plain column for a `LowCardinality` one, so the block must carry this form.
    LowCardinality(Box<ColumnType>),
    /// `Array(T)`: RowBinary is a LEB128 count then the elements; Native is the running
    /// offsets (`UInt64`) then all rows' elements as one `T` column.
    Array(Box<ColumnType>),
    /// `Map(K, V)`: RowBinary is a LEB128 count then key, value pairs; Native is that of
    /// `Array(Tuple(K, V))`.
    Map(Box<ColumnType>, Box<ColumnType>),
    /// `Tuple(...)`: RowBinary is the elements back to back; Native is one column per element.
    Tuple(Vec<ColumnType>),
    /// `Variant(...)`, variants sorted by name: RowBinary is the variant's position (255 for
    /// NULL) then its value. Sent as RowBinary only.
    Variant(Vec<ColumnType>),
    /// `Dynamic`: RowBinary is the value's type in ClickHouse's binary type encoding
    /// ([`binary_type`]; `Nothing` for NULL) then the value. Sent as RowBinary only.
    ///
    /// [`binary_type`]: super::binary_type
    Dynamic,
}

/// How values of a fixed-width type compare, as ClickHouse compares them in `ORDER BY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Unsigned little-endian integer (`UInt*`, `Date`, `DateTime`, `IPv4`).
    Unsigned,
    /// Signed little-endian integer (`Int*`).
    Signed,
    /// IEEE float, NaN last.
    Float,
    /// `UUID`: two little-endian `UInt64` halves as sent, compared second half first (how
    /// ClickHouse lays a UUID out as a `UInt128` in memory and compares it).
    Uuid,
    /// Byte-wise (`FixedString(N)`).
    Bytes,
    /// Not known to match the server's order (`IPv6`): never used to sort.
    Unknown,
}

/// A time-typed column's time zone, as far as sorting by a function of it cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    /// Not a time type.
    None,
    /// `Date` (days, no zone) or a `DateTime` whose zone is UTC.
    Utc,
    /// A `DateTime` in another zone, or in the server's zone when that is not UTC:
    /// day or hour boundaries would need the zone's rules.
    Other,
}

/// LowCardinality serialization version: shared dictionaries with additional keys.
pub(super) const KEYS_VERSION: u64 = 1;
/// The block's keys follow (no global dictionary).
pub(super) const HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
/// Forget any dictionary of an earlier block.
pub(super) const UPDATE_DICTIONARY: u64 = 1 << 10;

impl ColumnType {
    /// Length of the RowBinary value at the start of `data`, or `None` if `data` is too
    /// short to hold one.
    pub fn value_len(&self, data: &[u8]) -> Option<usize> {
        match self {
            Self::Fixed { width, .. } => (data.len() >= *width).then_some(*width),
            Self::String => {
                let (len, prefix) = leb128(data)?;
                let total = prefix.checked_add(len)?;
                (data.len() >= total).then_some(total)
            }
            Self::Nullable(inner) => match data.first()? {
                1 => Some(1),
                0 => Some(1 + inner.value_len(&data[1..])?),
                _ => None,
            },
            Self::LowCardinality(inner) => inner.value_len(data),
            Self::Array(inner) => {
                let (count, mut at) = leb128(data)?;
                for _ in 0..count {
                    at = at.checked_add(inner.value_len(data.get(at..)?)?)?;
                }
                Some(at)
            }
            Self::Map(key, value) => {
                let (count, mut at) = leb128(data)?;
                for _ in 0..count {
                    at = at.checked_add(key.value_len(data.get(at..)?)?)?;
                    at = at.checked_add(value.value_len(data.get(at..)?)?)?;
                }
                Some(at)
            }
            Self::Tuple(elements) => elements.iter().try_fold(0usize, |at, element| {
                at.checked_add(element.value_len(data.get(at..)?)?)
            }),
            Self::Variant(variants) => match *data.first()? {
                NULL_DISCRIMINATOR => Some(1),
                d => 1usize.checked_add(variants.get(usize::from(d))?.value_len(&data[1..])?),
            },
            Self::Dynamic => {
                let (shape, at) = binary_type::read(data)?;
                match shape {
                    None => Some(at),
                    Some(shape) => at.checked_add(shape.layout()?.value_len(&data[at..])?),
                }
            }
        }
    }

    /// The Native (and RowBinary) encoding of this type's default value: what a `Nullable`
    /// column carries under a NULL.
    pub fn default_value(&self) -> Vec<u8> {
        match self {
            Self::Fixed { width, .. } => vec![0; *width],
            Self::String => vec![0],
            Self::Nullable(_) => vec![1],
            Self::LowCardinality(inner) => inner.default_value(),
            Self::Array(_) | Self::Map(..) => vec![0],
            Self::Tuple(elements) => elements.iter().flat_map(Self::default_value).collect(),
            Self::Variant(_) => vec![NULL_DISCRIMINATOR],
            Self::Dynamic => vec![binary_type::NOTHING],
        }
    }
}

/// A `Variant`'s discriminator for NULL.
pub const NULL_DISCRIMINATOR: u8 = 255;

impl Zone {
    /// The zone of a column typed `name`; `server_utc`: the server's own time zone (what a
    /// `DateTime` without one uses) is UTC.
    pub fn of(name: &str, server_utc: bool) -> Self {
        let name = name.trim();
        let name = wrapped(name, "LowCardinality").unwrap_or(name);
        match name {
            "Date" => Self::Utc,
            "DateTime" if server_utc => Self::Utc,
            "DateTime" => Self::Other,
            _ => match wrapped(name, "DateTime") {
                Some("'UTC'") | Some("'Etc/UTC'") => Self::Utc,
                Some(_) => Self::Other,
                None => Self::None,
            },
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed { width, .. } => write!(f, "{width}-byte value"),
            Self::String => write!(f, "String"),
            Self::Nullable(inner) => write!(f, "Nullable({inner})"),
            Self::LowCardinality(inner) => write!(f, "LowCardinality({inner})"),
            Self::Array(inner) => write!(f, "Array({inner})"),
            Self::Map(key, value) => write!(f, "Map({key}, {value})"),
            Self::Dynamic => write!(f, "Dynamic"),
            Self::Variant(elements) | Self::Tuple(elements) => {
                let name = match self {
                    Self::Variant(_) => "Variant",
                    _ => "Tuple",
                };
                write!(f, "{name}(")?;
                for (i, element) in elements.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{element}")?;
                }
                write!(f, ")")
            }
        }
    }
}

/// `inner` of `outer(inner)`.
fn wrapped<'a>(name: &'a str, outer: &str) -> Option<&'a str> {
    name.strip_prefix(outer)?
        .strip_prefix('(')?
        .strip_suffix(')')
}

/// A LEB128 length at the start of `data`: `(value, bytes it took)`.
pub fn leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, byte) in data.iter().take(10).enumerate() {
        value |= usize::from(byte & 0x7f).checked_shl(7 * i as u32)?;
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Appends `n` as LEB128 (Native's row and column counts, string lengths).
pub fn put_leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BlockError;

    #[test]
    fn type_names_parse_as_the_server_spells_them() {
        let fixed = |width, order| ColumnType::Fixed { width, order };
        let cases = [
            ("UInt32", fixed(4, Order::Unsigned)),
            ("DateTime('UTC')", fixed(4, Order::Unsigned)),
            ("DateTime", fixed(4, Order::Unsigned)),
            ("UUID", fixed(16, Order::Uuid)),
            ("FixedString(16)", fixed(16, Order::Bytes)),
            ("IPv6", fixed(16, Order::Unknown)),
            ("Int64", fixed(8, Order::Signed)),
            ("String", ColumnType::String),
            (
                "LowCardinality(String)",
                ColumnType::LowCardinality(Box::new(ColumnType::String)),
            ),
            (
                "Nullable(UInt8)",
                ColumnType::Nullable(Box::new(fixed(1, Order::Unsigned))),
            ),
        ];
        for (name, ty) in cases {
            assert_eq!(ColumnType::parse(name).unwrap(), ty, "{name}");
        }
        for name in [
            "Nullable(LowCardinality(String))",
            "Nullable(Array(String))",
            "AggregateFunction(sum, UInt64)",
            "FixedString(x)",
        ] {
            assert!(
                matches!(ColumnType::parse(name), Err(BlockError::UnsupportedType(n)) if n == name),
                "{name}"
            );
        }
    }

    #[test]
    fn value_lengths_follow_rowbinary() {
        let string = ColumnType::String;
        assert_eq!(string.value_len(&[2, b'a', b'b', 9]), Some(3));
        assert_eq!(string.value_len(&[3, b'a']), None);
        let mut long = Vec::new();
        put_leb128(&mut long, 200);
        long.extend_from_slice(&[b'x'; 200]);
        assert_eq!(string.value_len(&long), Some(202));
        let nullable = ColumnType::parse("Nullable(UInt32)").unwrap();
        assert_eq!(nullable.value_len(&[1]), Some(1));
        assert_eq!(nullable.value_len(&[0, 1, 2, 3, 4]), Some(5));
        assert_eq!(nullable.value_len(&[2, 0, 0, 0, 0]), None);
        assert_eq!(leb128(&[0x80]), None);
    }
}
