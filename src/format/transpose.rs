//! Cutting RowBinary rows into columns: each value found once by walking the rows with the
//! columns' types, and kept in the form the Native writer copies from and the sort reads
//! ([`Columns`]). [`Cells`] is the older, copy-free view of the same cut (where each cell
//! starts), kept for callers that want a row's cells without building a block.

use std::collections::HashMap;

use foldhash::fast::FixedState;

use super::types::{ColumnType, leb128};
use super::{BlockError, Schema};

/// The rows of a batch cut into cells, borrowing the batch's bytes.
pub struct Cells<'a> {
    data: &'a [u8],
    columns: usize,
    /// `starts[row * columns + column]` is where that cell starts; one more entry holds the
    /// end of the data, so each cell ends where the next one starts.
    starts: Vec<usize>,
}

impl<'a> Cells<'a> {
    /// Cuts `count` rows of `data` (RowBinary, `schema`'s columns in order). Fails if the
    /// bytes are not exactly that many rows of those types.
    pub fn split(schema: &Schema, data: &'a [u8], count: usize) -> Result<Self, BlockError> {
        let columns = schema.columns.len();
        let mut starts = Vec::with_capacity(count * columns + 1);
        let mut at = 0;
        for row in 0..count {
            for column in &schema.columns {
                starts.push(at);
                let len = column
                    .ty
                    .value_len(&data[at..])
                    .ok_or(BlockError::Malformed { row })?;
                at += len;
            }
        }
        if at != data.len() {
            return Err(BlockError::Malformed { row: count });
        }
        starts.push(at);
        Ok(Self {
            data,
            columns,
            starts,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        (self.starts.len() - 1)
            .checked_div(self.columns)
            .unwrap_or(0)
    }

    /// Row `row`'s RowBinary bytes, all columns.
    pub fn row(&self, row: usize) -> &'a [u8] {
        &self.data[self.starts[row * self.columns]..self.starts[(row + 1) * self.columns]]
    }

    /// Row `row`'s value of column `column`, as RowBinary bytes.
    pub fn cell(&self, row: usize, column: usize) -> &'a [u8] {
        let i = row * self.columns + column;
        &self.data[self.starts[i]..self.starts[i + 1]]
    }
}

/// A batch transposed: each column's values in arrival order. Built in one pass over the
/// rows; writing the block then copies from here in the sorted order, column by column,
/// without cutting the rows again or reordering them whole.
pub(super) struct Columns<'a> {
    /// The batch's bytes.
    pub data: &'a [u8],
    /// Number of rows.
    pub rows: usize,
    /// One entry per schema column, in its order.
    pub columns: Vec<Values<'a>>,
}

/// One column's values, per type. Adding a type: a variant here only if no existing form
/// fits (a fixed-width type is `Fixed`, a length-prefixed one `Var`).
pub(super) enum Values<'a> {
    /// Fixed-width values back to back, `width` bytes each: RowBinary and Native alike.
    Fixed {
        /// Bytes per value.
        width: usize,
        /// `rows * width` bytes.
        bytes: Vec<u8>,
    },
    /// Variable-length values (`String`: LEB128 length, then bytes), copied back to back
    /// as Native writes them, length included, while the rows are cut. Why a copy: the
    /// block writes them in key order, i.e. at random, and a batch under load is tens of
    /// megabytes written by other threads; read in place, every value was a cache miss
    /// (measured: most of the writer's time, on one load). The column alone is a few
    /// bytes a row, and its copy is a sequential write.
    Var {
        /// The values, back to back.
        bytes: Vec<u8>,
        /// Where each row's value ends in `bytes` (it starts where the previous one ends).
        ends: Vec<usize>,
    },
    /// `Nullable(T)`: 1 per NULL row (Native's null map), and `T`'s values with `T`'s
    /// default under each NULL.
    Nullable {
        /// One byte per row.
        nulls: Vec<u8>,
        /// `T`'s values.
        inner: Box<Values<'a>>,
    },
    /// `LowCardinality(T)`: the batch's distinct values and each row's id among them.
    Dictionary(Dictionary<'a>),
    /// Composite types (`Array`, `Map`, `Tuple`) and `LowCardinality(Nullable(T))`: each
    /// value's span in the batch (RowBinary bytes of `ty`), written by `nested` in the
    /// block's order. They are never sort keys, so nothing else reads inside them.
    Nested {
        /// The column's type.
        ty: ColumnType,
        /// Where each row's value starts and ends in the batch.
        spans: Vec<(usize, usize)>,
    },
}

/// A column's distinct values, numbered in order of first appearance, and each row's id.
/// Built once per batch: the Native writer renumbers it for the sorted order and the
/// sort ranks its few values instead of comparing a string per row.
pub(super) struct Dictionary<'a> {
    /// `T`'s width for a fixed-width `T`; `None` for `String`.
    width: Option<usize>,
    /// Each row's id.
    pub ids: Vec<u32>,
    /// The distinct values (RowBinary bytes of `T`), by id.
    pub keys: Vec<&'a [u8]>,
    /// Ids of values of at most 16 bytes (length prefix included), by the value's bytes
    /// as one number: names and codes, nearly every `LowCardinality` value. Hashing and
    /// comparing a `u128` costs a fraction of hashing and comparing a slice, and this
    /// lookup runs once per row.
    short: HashMap<u128, u32, FixedState>,
    /// Ids of longer values.
    long: HashMap<&'a [u8], u32, FixedState>,
    /// The short values seen last, each in the slot its bits pick, with its id + 1 (0:
    /// empty): a column's few dozen distinct values are found here with one multiply and
    /// one compare, the map asked only on a miss (measured: 81 instructions per value
    /// through the map alone).
    recent: Box<[(u128, u32); RECENT_SLOTS]>,
}

/// The fixed-size move a short string is copied with, here and in the block writer's
/// gather: one move of this many bytes (the bytes past the value's end overwritten or cut
/// off), rather than a copy of the value's own length, which is a call per value.
pub(super) const WIDE: usize = 32;

/// Slots of [`Dictionary::recent`]: room for the distinct values of a typical
/// `LowCardinality` column (names, codes, versions) with few collisions.
const RECENT_SLOTS: usize = 64;

impl<'a> Columns<'a> {
    /// Transposes `count` rows of `data` (RowBinary, `schema`'s columns in order) into
    /// buffers from `scratch`. Fails if the bytes are not exactly that many rows of those
    /// types.
    pub fn transpose(
        schema: &Schema,
        data: &'a [u8],
        count: usize,
        scratch: &mut Scratch,
    ) -> Result<Self, BlockError> {
        let mut columns: Vec<Values<'a>> = schema
            .columns
            .iter()
            .map(|c| Values::new(&c.ty, count, scratch))
            .collect();
        let mut at = 0;
        let mut result = Ok(());
        'rows: for row in 0..count {
            for values in &mut columns {
                match values.push(data, at, row) {
                    Some(next) => at = next,
                    None => {
                        result = Err(BlockError::Malformed { row });
                        break 'rows;
                    }
                }
            }
        }
        if result.is_ok() && at != data.len() {
            result = Err(BlockError::Malformed { row: count });
        }
        let columns = Self {
            data,
            rows: count,
            columns,
        };
        match result {
            Ok(()) => Ok(columns),
            Err(e) => {
                columns.recycle(scratch);
                Err(e)
            }
        }
    }

    /// Row `row`'s value of column `column`, as RowBinary bytes of its type (for
    /// `Nullable`, of `T`).
    pub fn value(&self, row: usize, column: usize) -> &[u8] {
        self.columns[column].value(self.data, row)
    }

    /// Gives the buffers back to `scratch`, for the next batch.
    pub fn recycle(self, scratch: &mut Scratch) {
        // In reverse, so the next batch takes each column's buffer back in order.
        for values in self.columns.into_iter().rev() {
            values.recycle(scratch);
        }
    }
}

impl<'a> Values<'a> {
    /// Empty values of `ty`, with room for `rows`.
    fn new(ty: &ColumnType, rows: usize, scratch: &mut Scratch) -> Self {
        match ty {
            ColumnType::Fixed { width, .. } => {
                // Zeroed and sized up front: each row's value is written into its slot (one
                // memset, then constant-size stores; appending was a call per value).
                let mut bytes = take(&mut scratch.bytes, rows * width);
                bytes.resize(rows * width, 0);
                Self::Fixed {
                    width: *width,
                    bytes,
                }
            }
            ColumnType::String => Self::Var {
                bytes: take(&mut scratch.bytes, rows * 16),
                ends: take(&mut scratch.ends, rows),
            },
            ColumnType::LowCardinality(inner) if matches!(**inner, ColumnType::Nullable(_)) => {
                Self::Nested {
                    ty: ty.clone(),
                    spans: take(&mut scratch.spans, rows),
                }
            }
            // (`Variant` and `Dynamic` are never in a Native block: `Shape::rowbinary_only`.)
            ColumnType::Array(_)
            | ColumnType::Map(..)
            | ColumnType::Tuple(_)
            | ColumnType::Variant(_)
            | ColumnType::Dynamic => Self::Nested {
                ty: ty.clone(),
                spans: take(&mut scratch.spans, rows),
            },
            ColumnType::Nullable(inner) => Self::Nullable {
                nulls: take(&mut scratch.bytes, rows),
                inner: Box::new(Self::new(inner, rows, scratch)),
            },
            ColumnType::LowCardinality(inner) => Self::Dictionary(Dictionary {
                width: match inner.as_ref() {
                    ColumnType::Fixed { width, .. } => Some(*width),
                    _ => None,
                },
                ids: take(&mut scratch.ids, rows),
                keys: Vec::new(),
                short: HashMap::default(),
                long: HashMap::default(),
                recent: Box::new([(0, 0); RECENT_SLOTS]),
            }),
        }
    }

    fn recycle(self, scratch: &mut Scratch) {
        match self {
            Self::Fixed { bytes, .. } => give(&mut scratch.bytes, bytes),
            Self::Var { bytes, ends } => {
                give(&mut scratch.ends, ends);
                give(&mut scratch.bytes, bytes);
            }
            Self::Nullable { nulls, inner } => {
                inner.recycle(scratch);
                give(&mut scratch.bytes, nulls);
            }
            Self::Dictionary(dictionary) => give(&mut scratch.ids, dictionary.ids),
            Self::Nested { spans, .. } => give(&mut scratch.spans, spans),
        }
    }

    /// Takes the value at `data[at..]`; returns where the next one starts, or `None` if
    /// the bytes there are not a value of this type.
    #[inline(always)]
    fn push(&mut self, data: &'a [u8], at: usize, row: usize) -> Option<usize> {
        match self {
            Self::Fixed { width, bytes } => match *width {
                1 => take_fixed::<1>(bytes, data, at, row),
                2 => take_fixed::<2>(bytes, data, at, row),
                4 => take_fixed::<4>(bytes, data, at, row),
                8 => take_fixed::<8>(bytes, data, at, row),
                16 => take_fixed::<16>(bytes, data, at, row),
                width => {
                    let value = fixed_value(data, at, width)?;
                    bytes[row * width..(row + 1) * width].copy_from_slice(value);
                    Some(at + width)
                }
            },
            Self::Var { bytes, ends } => {
                let value = string_value(data, at)?;
                let len = value.len();
                match data.get(at..at + WIDE) {
                    // Most strings are short: one fixed-size move, the tail cut off again.
                    Some(wide) if len <= WIDE => {
                        let end = bytes.len() + len;
                        bytes.extend_from_slice(wide);
                        bytes.truncate(end);
                    }
                    _ => bytes.extend_from_slice(value),
                }
                ends.push(bytes.len());
                Some(at + len)
            }
            Self::Nullable { nulls, inner } => Self::push_nullable(nulls, inner, data, at, row),
            Self::Dictionary(dictionary) => {
                let value = match dictionary.width {
                    Some(width) => fixed_value(data, at, width)?,
                    None => string_value(data, at)?,
                };
                dictionary.push(value, packed(data, at, value.len()));
                Some(at + value.len())
            }
            Self::Nested { ty, spans } => {
                let end = at + ty.value_len(data.get(at..)?)?;
                spans.push((at, end));
                Some(end)
            }
        }
    }

    /// `Nullable(T)`'s value: out of line, so that [`Values::push`], not recursive itself,
    /// is inlined into the transpose's loop (a call per value was a fifth of its cost).
    #[inline(never)]
    fn push_nullable(
        nulls: &mut Vec<u8>,
        inner: &mut Self,
        data: &'a [u8],
        at: usize,
        row: usize,
    ) -> Option<usize> {
        match *data.get(at)? {
            0 => {
                nulls.push(0);
                inner.push(data, at + 1, row)
            }
            1 => {
                nulls.push(1);
                inner.push_default();
                Some(at + 1)
            }
            _ => None,
        }
    }

    /// The type's default value, under a NULL.
    fn push_default(&mut self) {
        match self {
            // The column starts zeroed: zeros are every fixed-width type's default.
            Self::Fixed { .. } => {}
            // The empty string: its one length byte.
            Self::Var { bytes, ends } => {
                bytes.push(0);
                ends.push(bytes.len());
            }
            // Not built: `Nullable` holds none of these (see `ColumnType::parse`).
            Self::Nullable { .. } | Self::Dictionary(_) | Self::Nested { .. } => {}
        }
    }

    /// Row `row`'s value as RowBinary bytes of the column's type (for `Nullable`, of `T`),
    /// `data` being the batch's bytes.
    pub fn value<'v>(&'v self, data: &'v [u8], row: usize) -> &'v [u8] {
        match self {
            Self::Fixed { width, bytes } => &bytes[row * width..(row + 1) * width],
            Self::Var { bytes, ends } => var_value(bytes, ends, row),
            Self::Nullable { inner, .. } => inner.value(data, row),
            Self::Dictionary(dictionary) => dictionary.keys[dictionary.ids[row] as usize],
            Self::Nested { spans, .. } => &data[spans[row].0..spans[row].1],
        }
    }
}

/// Row `row`'s value of a `Var` column (its `bytes` and `ends`).
#[inline]
pub(super) fn var_value<'v>(bytes: &'v [u8], ends: &[usize], row: usize) -> &'v [u8] {
    let start = row.checked_sub(1).map_or(0, |previous| ends[previous]);
    &bytes[start..ends[row]]
}

/// Buffers a build takes and gives back, so that the flusher, building one block after
/// another, reuses their memory: a buffer this large is otherwise a fresh mapping each
/// time (see `memory`), every page of it faulted in and zeroed again (measured: a fifth
/// of the build's CPU).
///
/// Buffers keep their room from batch to batch: batches alternate between full ones (cut
/// at `BUFFER_SIZE`) and smaller ones (cut by the timer), and trimming to the last batch
/// made every full batch grow them again, faulting in fresh pages (about 50 MB/s at
/// 600,000 events/s). Bound: what the largest batch since the last release needed, which
/// `BUFFER_SIZE` and `BUFFER_MAX_BYTES` bound; the buffers are released when
/// [`SHRINK_AFTER`] batches in a row need less than a quarter of that ([`Scratch::expect`]),
/// so memory follows the batches down after a burst.
#[derive(Default)]
pub(super) struct Scratch {
    /// The most rows a batch built with these buffers had.
    peak_rows: usize,
    /// Batches in a row of less than a quarter of `peak_rows`.
    small_batches: u32,
    /// Fixed-width columns and null maps.
    pub bytes: Vec<Vec<u8>>,
    /// Dictionaries' ids.
    pub ids: Vec<Vec<u32>>,
    /// Composite values' spans.
    pub spans: Vec<Vec<(usize, usize)>>,
    /// Strings' ends.
    pub ends: Vec<Vec<usize>>,
    /// The sort's part values and keys (and, for a large batch, the keys' copy in bucket
    /// order: at most a second copy of them).
    pub parts: Vec<Vec<u128>>,
    pub keys: Vec<Vec<u64>>,
    /// The sort's bucket bounds (two) and the order.
    pub buckets: Vec<Vec<u32>>,
    pub order: Vec<Vec<u32>>,
    /// Finished blocks' buffers handed back after their insert ([`super::BlockBuilder::recycle`]).
    pub outputs: Vec<Vec<u8>>,
}

/// Batches in a row needing less than a quarter of the buffers' peak before they are let go.
pub(super) const SHRINK_AFTER: u32 = 16;

impl Scratch {
    /// Notes that the next batch has `rows` rows; releases every buffer once batches have
    /// stayed small for [`SHRINK_AFTER`] batches.
    pub(super) fn expect(&mut self, rows: usize) {
        if rows >= self.peak_rows / 4 {
            self.small_batches = 0;
            self.peak_rows = self.peak_rows.max(rows);
            return;
        }
        self.small_batches += 1;
        if self.small_batches >= SHRINK_AFTER {
            *self = Scratch {
                peak_rows: rows,
                ..Scratch::default()
            };
        }
    }

    /// Bytes of room the buffers hold (for tests).
    #[cfg(test)]
    pub(super) fn room(&self) -> usize {
        fn room<T>(pool: &[Vec<T>]) -> usize {
            pool.iter().map(|b| b.capacity() * size_of::<T>()).sum()
        }
        room(&self.bytes)
            + room(&self.ids)
            + room(&self.spans)
            + room(&self.ends)
            + room(&self.parts)
            + room(&self.keys)
            + room(&self.buckets)
            + room(&self.order)
            + room(&self.outputs)
    }
}

/// An empty buffer from `pool` with room for `capacity`.
pub(super) fn take<T>(pool: &mut Vec<Vec<T>>, capacity: usize) -> Vec<T> {
    let mut buffer = pool.pop().unwrap_or_default();
    buffer.reserve(capacity);
    buffer
}

/// Returns `buffer` to `pool`, emptied, with its room (see [`Scratch`] for the bound).
pub(super) fn give<T>(pool: &mut Vec<Vec<T>>, mut buffer: Vec<T>) {
    buffer.clear();
    pool.push(buffer);
}

impl<'a> Dictionary<'a> {
    /// Numbers `value` (its [`packed`] form, if short): found in [`Dictionary::recent`]
    /// inline, else through the maps out of line.
    #[inline(always)]
    fn push(&mut self, value: &'a [u8], packed: Option<u128>) {
        if let Some(packed) = packed {
            let (known, id) = self.recent[recent_slot(packed)];
            if id != 0 && known == packed {
                self.ids.push(id - 1);
                return;
            }
        }
        self.push_looked_up(value, packed);
    }

    #[inline(never)]
    fn push_looked_up(&mut self, value: &'a [u8], packed: Option<u128>) {
        let next = self.keys.len() as u32;
        let keys = &mut self.keys;
        let id = match packed {
            Some(packed) => {
                let id = *self.short.entry(packed).or_insert_with(|| {
                    keys.push(value);
                    next
                });
                self.recent[recent_slot(packed)] = (packed, id + 1);
                id
            }
            None => *self.long.entry(value).or_insert_with(|| {
                keys.push(value);
                next
            }),
        };
        self.ids.push(id);
    }
}

/// The [`Dictionary::recent`] slot of a packed value: its bits mixed by one multiply.
#[inline(always)]
fn recent_slot(packed: u128) -> usize {
    let mixed = (packed as u64 ^ (packed >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 58) as usize % RECENT_SLOTS
}

/// The `len` bytes at `data[at..]` as one number, zero-padded, if `len` is at most 16.
/// Distinct values give distinct numbers: a `String`'s bytes start with its length, and a
/// fixed-width type's values all have one length. Read as one 16-byte load and masked
/// when the batch has 16 bytes there (nearly always), not copied byte by byte.
#[inline]
fn packed(data: &[u8], at: usize, len: usize) -> Option<u128> {
    if len > 16 {
        return None;
    }
    let mask = match len {
        16 => u128::MAX,
        len => (1u128 << (len * 8)) - 1,
    };
    match data.get(at..at + 16) {
        Some(wide) => Some(u128::from_le_bytes(wide.try_into().ok()?) & mask),
        None => {
            let mut bytes = [0u8; 16];
            bytes[..len].copy_from_slice(data.get(at..at + len)?);
            Some(u128::from_le_bytes(bytes))
        }
    }
}

/// Copies the `N` bytes at `data[at..]` into row `row`'s slot of `bytes` (a constant-size
/// copy, not a call); returns where the next value starts.
#[inline(always)]
fn take_fixed<const N: usize>(
    bytes: &mut [u8],
    data: &[u8],
    at: usize,
    row: usize,
) -> Option<usize> {
    let value: &[u8; N] = data.get(at..at.checked_add(N)?)?.try_into().ok()?;
    let slot: &mut [u8; N] = (&mut bytes[row * N..(row + 1) * N]).try_into().ok()?;
    *slot = *value;
    Some(at + N)
}

/// The `width` bytes at `data[at..]`.
#[inline]
fn fixed_value(data: &[u8], at: usize, width: usize) -> Option<&[u8]> {
    data.get(at..at.checked_add(width)?)
}

/// The RowBinary `String` at `data[at..]`, its length prefix included.
#[inline]
fn string_value(data: &[u8], at: usize) -> Option<&[u8]> {
    let rest = data.get(at..)?;
    let (len, prefix) = match rest.first() {
        Some(&b) if b < 0x80 => (usize::from(b), 1),
        _ => leb128(rest)?,
    };
    rest.get(..prefix.checked_add(len)?)
}
