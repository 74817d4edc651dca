//! Writing a ClickHouse Native block: the column count and row count, then each column
//! whole (name, type name, values), rows in the order of the cells (already sorted).
//!
//! Over HTTP (`INSERT ... FORMAT Native`, no `client_protocol_version`) a block has no
//! block-info header. Per type, the values are:
//! - fixed-width types: the values back to back, as in RowBinary;
//! - `String`: each value's LEB128 length and bytes, as in RowBinary;
//! - `Nullable(T)`: one byte per row (1 = NULL), then `T`'s column with `T`'s default under
//!   each NULL;
//! - `LowCardinality(T)`: `UInt64` 1 (the keys' serialization version, "shared dictionaries
//!   with additional keys"), then `UInt64` flags (index width 0–3 for `UInt8`–`UInt64`,
//!   bit 9 "has additional keys", bit 10 "update dictionary"), `UInt64` key count, the keys
//!   as a `T` column, `UInt64` row count and one index per row. The keys are the block's
//!   distinct values in order of first appearance, so the same rows give the same bytes.

use std::collections::HashMap;

use super::nested;
use super::transpose::Cells;
use super::types::{ColumnType, put_leb128};
use super::{Column, Schema};

/// LowCardinality serialization version: shared dictionaries with additional keys.
pub(super) const KEYS_VERSION: u64 = 1;
/// The block's keys follow (no global dictionary).
pub(super) const HAS_ADDITIONAL_KEYS: u64 = 1 << 9;
/// Forget any dictionary of an earlier block.
pub(super) const UPDATE_DICTIONARY: u64 = 1 << 10;

/// Appends the Native block of `cells`, rows in their order, to `out`.
pub fn write_block(schema: &Schema, cells: &Cells<'_>, out: &mut Vec<u8>) {
    put_leb128(out, schema.columns.len());
    put_leb128(out, cells.rows());
    for (index, column) in schema.columns.iter().enumerate() {
        write_column(column, index, cells, out);
    }
}

fn write_column(column: &Column, index: usize, cells: &Cells<'_>, out: &mut Vec<u8>) {
    put_leb128(out, column.name.len());
    out.extend_from_slice(column.name.as_bytes());
    put_leb128(out, column.type_name.len());
    out.extend_from_slice(column.type_name.as_bytes());
    let values = (0..cells.rows()).map(|row| cells.cell(row, index));
    write_values(&column.ty, values, out);
}

/// Writes one column of `values` (each a RowBinary value of `ty`) in Native form.
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
            nested::write_low_cardinality_nullable(inner, values, out);
        }
        ColumnType::LowCardinality(_) => {
            out.extend_from_slice(&KEYS_VERSION.to_le_bytes());
            write_low_cardinality(values, out);
        }
        ColumnType::Array(_) | ColumnType::Map(..) | ColumnType::Tuple(_) => {
            nested::write_prefix(ty, out);
            nested::write_data(ty, values, out);
        }
    }
}

/// A `LowCardinality` column's data after its state prefix (the keys version).
pub(super) fn write_low_cardinality<'a>(values: impl Iterator<Item = &'a [u8]>, out: &mut Vec<u8>) {
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
    let (width_code, width) = match keys.len() {
        n if n <= 1 << 8 => (0u64, 1usize),
        n if n <= 1 << 16 => (1, 2),
        n if n as u64 <= 1 << 32 => (2, 4),
        _ => (3, 8),
    };
    out.extend_from_slice(&(width_code | HAS_ADDITIONAL_KEYS | UPDATE_DICTIONARY).to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    for key in &keys {
        out.extend_from_slice(key);
    }
    out.extend_from_slice(&(indexes.len() as u64).to_le_bytes());
    out.reserve(indexes.len() * width);
    for index in indexes {
        out.extend_from_slice(&index.to_le_bytes()[..width]);
    }
}
