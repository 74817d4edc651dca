//! Writing a ClickHouse Native block: the column count and row count, then each column
//! whole (name, type name, values), rows in the sort's order (copied from the transposed
//! columns by the permutation).
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
//!   distinct values in order of first appearance in the block, so the same rows give the same
//!   bytes.

use super::nested;
use super::transpose::{Columns, Dictionary, Values, WIDE};
use super::types::{HAS_ADDITIONAL_KEYS, KEYS_VERSION, UPDATE_DICTIONARY, put_leb128};
use super::{Column, Schema};

/// Appends the Native block of `columns` to `out`, rows in `order` (arrival positions), or
/// in arrival order for `None`.
pub fn write_block(
    schema: &Schema,
    columns: &Columns<'_>,
    order: Option<&[u32]>,
    out: &mut Vec<u8>,
) {
    put_leb128(out, schema.columns.len());
    put_leb128(out, columns.rows);
    for (column, values) in schema.columns.iter().zip(&columns.columns) {
        write_header(column, out);
        write_values(values, columns.data, order, out);
    }
}

fn write_header(column: &Column, out: &mut Vec<u8>) {
    put_leb128(out, column.name.len());
    out.extend_from_slice(column.name.as_bytes());
    put_leb128(out, column.type_name.len());
    out.extend_from_slice(column.type_name.as_bytes());
}

/// Writes one column's values in Native form, in `order`.
fn write_values(values: &Values<'_>, data: &[u8], order: Option<&[u32]>, out: &mut Vec<u8>) {
    match values {
        Values::Fixed { width, bytes } => match order {
            None => out.extend_from_slice(bytes),
            Some(order) => gather_fixed(bytes, *width, order, out),
        },
        Values::Var { bytes, ends } => match order {
            None => out.extend_from_slice(bytes),
            Some(order) => gather_var(bytes, ends, order, out),
        },
        Values::Nullable { nulls, inner } => {
            // RowBinary's flag byte is Native's null map entry.
            match order {
                None => out.extend_from_slice(nulls),
                Some(order) => gather_fixed(nulls, 1, order, out),
            }
            write_values(inner, data, order, out);
        }
        Values::Dictionary(dictionary) => {
            out.extend_from_slice(&KEYS_VERSION.to_le_bytes());
            write_low_cardinality(dictionary, order, out)
        }
        Values::Nested { ty, spans } => {
            let value = |row: usize| &data[spans[row].0..spans[row].1];
            match order {
                None => nested::write_values(ty, (0..spans.len()).map(value), out),
                Some(order) => {
                    nested::write_values(ty, order.iter().map(|&row| value(row as usize)), out)
                }
            }
        }
    }
}

/// Appends the `width`-byte values of `bytes` in `order`: one constant-size copy each for
/// the common widths.
fn gather_fixed(bytes: &[u8], width: usize, order: &[u32], out: &mut Vec<u8>) {
    fn gather<const N: usize>(bytes: &[u8], order: &[u32], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + order.len() * N, 0);
        for (slot, &row) in out[start..].chunks_exact_mut(N).zip(order) {
            let at = row as usize * N;
            slot.copy_from_slice(&bytes[at..at + N]);
        }
    }
    match width {
        1 => gather::<1>(bytes, order, out),
        2 => gather::<2>(bytes, order, out),
        4 => gather::<4>(bytes, order, out),
        8 => gather::<8>(bytes, order, out),
        16 => gather::<16>(bytes, order, out),
        _ => {
            for &row in order {
                let at = row as usize * width;
                out.extend_from_slice(&bytes[at..at + width]);
            }
        }
    }
}

/// Appends the strings of a `Var` column (`bytes`, `ends`) in `order`. Most are short: each
/// is copied as a fixed 32-byte move (the bytes past its end are overwritten by the next
/// one), rather than a copy of its own length, which is a call per value.
fn gather_var(bytes: &[u8], ends: &[usize], order: &[u32], out: &mut Vec<u8>) {
    let base = out.len();
    out.resize(base + bytes.len() + WIDE, 0);
    let mut at = base;
    for &row in order {
        let row = row as usize;
        let start = row.checked_sub(1).map_or(0, |previous| ends[previous]);
        let len = ends[row] - start;
        if len <= WIDE && start + WIDE <= bytes.len() {
            out[at..at + WIDE].copy_from_slice(&bytes[start..start + WIDE]);
        } else {
            out[at..at + len].copy_from_slice(&bytes[start..start + len]);
        }
        at += len;
    }
    out.truncate(base + bytes.len());
}

/// The dictionary renumbered in order of first appearance in the block's row order (so the
/// same rows give the same bytes), then the indexes, as narrow as the key count allows.
fn write_low_cardinality(dictionary: &Dictionary<'_>, order: Option<&[u32]>, out: &mut Vec<u8>) {
    let keys_count = dictionary.keys.len();
    let (width_code, width) = match keys_count {
        n if n <= 1 << 8 => (0u64, 1usize),
        n if n <= 1 << 16 => (1, 2),
        n if n as u64 <= 1 << 32 => (2, 4),
        _ => (3, 8),
    };
    out.extend_from_slice(&(width_code | HAS_ADDITIONAL_KEYS | UPDATE_DICTIONARY).to_le_bytes());
    out.extend_from_slice(&(keys_count as u64).to_le_bytes());
    let ids = &dictionary.ids;
    let Some(order) = order else {
        // Arrival order: the ids are already numbered by first appearance.
        for key in &dictionary.keys {
            out.extend_from_slice(key);
        }
        out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
        write_indexes(ids.iter().copied(), width, out);
        return;
    };
    let mut renumbered = vec![u32::MAX; keys_count];
    let mut next = 0u32;
    for &row in order {
        let id = ids[row as usize] as usize;
        if renumbered[id] == u32::MAX {
            renumbered[id] = next;
            next += 1;
            out.extend_from_slice(dictionary.keys[id]);
        }
    }
    out.extend_from_slice(&(order.len() as u64).to_le_bytes());
    let indexes = order
        .iter()
        .map(|&row| renumbered[ids[row as usize] as usize]);
    write_indexes(indexes, width, out);
}

fn write_indexes(indexes: impl Iterator<Item = u32>, width: usize, out: &mut Vec<u8>) {
    match width {
        1 => out.extend(indexes.map(|i| i as u8)),
        2 => indexes.for_each(|i| out.extend_from_slice(&(i as u16).to_le_bytes())),
        4 => indexes.for_each(|i| out.extend_from_slice(&i.to_le_bytes())),
        _ => indexes.for_each(|i| out.extend_from_slice(&u64::from(i).to_le_bytes())),
    }
}
