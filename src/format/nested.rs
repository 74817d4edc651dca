//! Native columns of composite types (`Array`, `Map`, `Tuple`) and of
//! `LowCardinality(Nullable(T))`, kept apart from the flat types' writer in `native`.
//!
//! A Native column is its state prefix, then its data. Only `LowCardinality` has a prefix
//! (the keys version); a composite's prefix is its elements' prefixes, depth first, so an
//! `Array(LowCardinality(String))` column starts with the version, then the offsets, then
//! the dictionary. Per type, the data is:
//! - `Array(T)`: each row's end offset as `UInt64` (running total of elements), then all
//!   rows' elements as one `T` column;
//! - `Map(K, V)`: as `Array(Tuple(K, V))`: offsets, then the keys' column, then the values';
//! - `Tuple(...)`: each element's column in turn;
//! - `LowCardinality(Nullable(T))`: as `LowCardinality(T)`, except that key 0 is NULL (a
//!   `T` default stands in its place) and NULL rows point at it: how the server reads a
//!   block's own dictionary of a nullable type.

use std::collections::HashMap;

use super::types::{ColumnType, HAS_ADDITIONAL_KEYS, KEYS_VERSION, UPDATE_DICTIONARY, leb128};

/// Writes the state prefix of a column of `ty`.
pub(super) fn write_prefix(ty: &ColumnType, out: &mut Vec<u8>) {
    match ty {
        ColumnType::LowCardinality(_) => out.extend_from_slice(&KEYS_VERSION.to_le_bytes()),
        ColumnType::Array(inner) => write_prefix(inner, out),
        ColumnType::Map(key, value) => {
            write_prefix(key, out);
            write_prefix(value, out);
        }
        ColumnType::Tuple(elements) => elements.iter().for_each(|e| write_prefix(e, out)),
        ColumnType::Fixed { .. } | ColumnType::String | ColumnType::Nullable(_) => {}
        // Never in a Native block (`Shape::rowbinary_only`).
        ColumnType::Variant(_) | ColumnType::Dynamic => {}
    }
}

/// Writes the data of a column of `ty` (its prefix already written).
pub(super) fn write_data<'a>(
    ty: &ColumnType,
    values: impl Iterator<Item = &'a [u8]> + Clone,
    out: &mut Vec<u8>,
) {
    match ty {
        ColumnType::LowCardinality(inner) if matches!(**inner, ColumnType::Nullable(_)) => {
            write_low_cardinality_nullable(inner, values, out)
        }
        ColumnType::LowCardinality(_) => write_low_cardinality(values, out),
        ColumnType::Array(inner) => {
            let elements = elements(values, &[inner], out);
            write_data(inner, elements[0].iter().copied(), out);
        }
        ColumnType::Map(key, value) => {
            let columns = elements(values, &[key, value], out);
            write_data(key, columns[0].iter().copied(), out);
            write_data(value, columns[1].iter().copied(), out);
        }
        ColumnType::Tuple(types) => {
            let mut columns: Vec<Vec<&[u8]>> = vec![Vec::new(); types.len()];
            for value in values {
                let mut rest = value;
                for (ty, column) in types.iter().zip(&mut columns) {
                    let (cell, tail) = cut(ty, rest);
                    column.push(cell);
                    rest = tail;
                }
            }
            for (ty, column) in types.iter().zip(&columns) {
                write_data(ty, column.iter().copied(), out);
            }
        }
        ColumnType::Fixed { .. } | ColumnType::String | ColumnType::Nullable(_) => {
            write_values(ty, values, out)
        }
        // Never in a Native block (`Shape::rowbinary_only`).
        ColumnType::Variant(_) | ColumnType::Dynamic => {}
    }
}

/// Splits each RowBinary value of an array (one type in `types`) or map (key and value
/// types) into its elements, writing the running offsets; returns the elements per type.
fn elements<'a>(
    values: impl Iterator<Item = &'a [u8]>,
    types: &[&ColumnType],
    out: &mut Vec<u8>,
) -> Vec<Vec<&'a [u8]>> {
    let mut columns: Vec<Vec<&[u8]>> = vec![Vec::new(); types.len()];
    let mut offset = 0u64;
    for value in values {
        let (count, prefix) = leb128(value).unwrap_or((0, value.len()));
        let mut rest = &value[prefix..];
        for _ in 0..count {
            for (ty, column) in types.iter().zip(&mut columns) {
                let (cell, tail) = cut(ty, rest);
                column.push(cell);
                rest = tail;
            }
        }
        offset += count as u64;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    columns
}

/// The first value of `ty` in `data`, and what follows it. The rows were checked when they
/// were cut into cells, so a value always fits; were it not to, the rest is taken whole
/// rather than panic.
fn cut<'a>(ty: &ColumnType, data: &'a [u8]) -> (&'a [u8], &'a [u8]) {
    let len = ty.value_len(data).unwrap_or(data.len());
    data.split_at(len)
}

/// `LowCardinality(Nullable(T))` data: `nullable` is the `Nullable(T)` layout.
pub(super) fn write_low_cardinality_nullable<'a>(
    nullable: &ColumnType,
    values: impl Iterator<Item = &'a [u8]>,
    out: &mut Vec<u8>,
) {
    let placeholder = match nullable {
        ColumnType::Nullable(inner) => inner.default_value(),
        other => other.default_value(),
    };
    // Key 0 is NULL; the others are the block's distinct values in order of appearance.
    let mut keys: Vec<&[u8]> = vec![&placeholder];
    let mut positions: HashMap<&[u8], u64> = HashMap::new();
    let mut indexes: Vec<u64> = Vec::new();
    for value in values {
        let index = match value.split_first() {
            Some((0, rest)) => {
                let next = keys.len() as u64;
                *positions.entry(rest).or_insert_with(|| {
                    keys.push(rest);
                    next
                })
            }
            _ => 0,
        };
        indexes.push(index);
    }
    write_dictionary(&keys, &indexes, out);
}

/// Writes one whole column of `values` (each a RowBinary value of `ty`) in Native form,
/// its state prefix included: how composite columns, and their elements, are written.
pub(super) fn write_values<'a>(
    ty: &ColumnType,
    values: impl Iterator<Item = &'a [u8]> + Clone,
    out: &mut Vec<u8>,
) {
    match ty {
        ColumnType::Fixed { .. } | ColumnType::String => {
            for value in values {
                out.extend_from_slice(value);
            }
        }
        // Never in a Native block: a table with these types is sent as RowBinary
        // (`Shape::rowbinary_only`).
        ColumnType::Variant(_) | ColumnType::Dynamic => {}
        ColumnType::Nullable(inner) => {
            // RowBinary's flag byte is Native's null map entry.
            out.extend(values.clone().map(|value| value[0]));
            let default = inner.default_value();
            for value in values {
                match value[0] {
                    0 => out.extend_from_slice(&value[1..]),
                    _ => out.extend_from_slice(&default),
                }
            }
        }
        ColumnType::LowCardinality(inner) if matches!(**inner, ColumnType::Nullable(_)) => {
            out.extend_from_slice(&KEYS_VERSION.to_le_bytes());
            write_low_cardinality_nullable(inner, values, out);
        }
        ColumnType::LowCardinality(_) => {
            out.extend_from_slice(&KEYS_VERSION.to_le_bytes());
            write_low_cardinality(values, out);
        }
        ColumnType::Array(_) | ColumnType::Map(..) | ColumnType::Tuple(_) => {
            write_prefix(ty, out);
            write_data(ty, values, out);
        }
    }
}

/// A `LowCardinality` column's data after its state prefix (the keys version).
fn write_low_cardinality<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut positions: HashMap<&[u8], u64> = HashMap::new();
    let mut indexes: Vec<u64> = Vec::new();
    // Rows sorted by a key often repeat the previous value: skip the hash for those.
    let mut last: Option<(&[u8], u64)> = None;
    for value in values {
        if let Some((previous, index)) = last
            && previous == value
        {
            indexes.push(index);
            continue;
        }
        let next = keys.len() as u64;
        let index = *positions.entry(value).or_insert_with(|| {
            keys.push(value);
            next
        });
        last = Some((value, index));
        indexes.push(index);
    }
    write_dictionary(&keys, &indexes, out);
}

/// A `LowCardinality` dictionary after its state prefix: the flags (index width, the keys
/// follow, forget earlier dictionaries), the keys, then one index per row, as narrow as the
/// key count allows.
fn write_dictionary(keys: &[&[u8]], indexes: &[u64], out: &mut Vec<u8>) {
    let (width_code, width) = match keys.len() {
        n if n <= 1 << 8 => (0u64, 1usize),
        n if n <= 1 << 16 => (1, 2),
        n if n as u64 <= 1 << 32 => (2, 4),
        _ => (3, 8),
    };
    out.extend_from_slice(&(width_code | HAS_ADDITIONAL_KEYS | UPDATE_DICTIONARY).to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for key in keys {
        out.extend_from_slice(key);
    }
    out.extend_from_slice(&(indexes.len() as u64).to_le_bytes());
    out.reserve(indexes.len() * width);
    for index in indexes {
        out.extend_from_slice(&index.to_le_bytes()[..width]);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BlockBuilder, Schema, SortKey};

    fn block(type_name: &str, data: &[u8], rows: usize) -> Vec<u8> {
        let schema = Schema::new(&[("c".to_string(), type_name.to_string())], true).unwrap();
        let block = BlockBuilder::new(schema, SortKey::none())
            .build(data, rows)
            .unwrap();
        // Column count, row count, name, type name: the data follows.
        block[4 + type_name.len() + 1..].to_vec()
    }

    #[test]
    fn arrays_are_offsets_then_elements() {
        // [1, 2], [], [3] as Array(UInt8).
        let data = [2, 1, 2, 0, 1, 3];
        let mut expected = Vec::new();
        for offset in [2u64, 2, 3] {
            expected.extend_from_slice(&offset.to_le_bytes());
        }
        expected.extend_from_slice(&[1, 2, 3]);
        assert_eq!(block("Array(UInt8)", &data, 3), expected);
    }

    #[test]
    fn maps_are_offsets_then_keys_then_values() {
        // {"a": 1, "b": 2} as Map(String, UInt8).
        let data = [2, 1, b'a', 1, 1, b'b', 2];
        let mut expected = 2u64.to_le_bytes().to_vec();
        expected.extend_from_slice(&[1, b'a', 1, b'b', 1, 2]);
        assert_eq!(block("Map(String, UInt8)", &data, 1), expected);
    }

    #[test]
    fn tuples_are_one_column_per_element() {
        // (1, "x"), (2, "") as Tuple(UInt8, String).
        let data = [1, 1, b'x', 2, 0];
        assert_eq!(block("Tuple(UInt8, String)", &data, 2), [1, 2, 1, b'x', 0]);
    }

    #[test]
    fn a_nested_dictionary_has_its_version_before_the_offsets() {
        // [x, x] as Array(LowCardinality(String)).
        let data = [2, 1, b'x', 1, b'x'];
        let out = block("Array(LowCardinality(String))", &data, 1);
        assert_eq!(out[..8], 1u64.to_le_bytes());
        assert_eq!(out[8..16], 2u64.to_le_bytes());
        assert_eq!(out[out.len() - 2..], [0, 0]);
    }

    #[test]
    fn a_nullable_dictionary_keeps_key_zero_for_null() {
        // "x", NULL, "x" as LowCardinality(Nullable(String)).
        let data = [0, 1, b'x', 1, 0, 1, b'x'];
        let out = block("LowCardinality(Nullable(String))", &data, 3);
        let mut expected = 1u64.to_le_bytes().to_vec();
        expected.extend_from_slice(&(1u64 << 9 | 1 << 10).to_le_bytes());
        expected.extend_from_slice(&2u64.to_le_bytes());
        expected.extend_from_slice(&[0, 1, b'x']);
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(&[1, 0, 1]);
        assert_eq!(out, expected);
    }
}
