//! The table's sorting key, evaluated in the gateway: which rows come first in a block, so
//! ClickHouse finds the block already in key order and skips its own sort.
//!
//! The key is read from the server (`system.tables.sorting_key`: `event, toDate(server_time),
//! device_id, server_time`) and parsed into parts this module evaluates exactly: plain
//! columns, and the calendar functions of a `Date`/`DateTime` in UTC whose value it can
//! compute (`toDate`, `toStartOfHour`, `toYYYYMM`, ...). The first part it cannot evaluate
//! (another function, a time zone other than UTC, a type whose order is not known here) ends
//! what it sorts by: the block is sorted by the longest prefix it can evaluate, and the
//! server sorts the rest. Ties keep arrival order, so the same rows always give the same
//! block (a retried or replayed batch is byte-identical).

use std::collections::HashMap;

use foldhash::fast::FixedState;

use super::Schema;
use super::transpose::{Cells, Columns, Scratch, Values, give, take};
use super::types::{ColumnType, Order, Zone, leb128};

const DAY: u64 = 86_400;

/// A function of a time column, evaluated exactly for UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    /// The column itself.
    Identity,
    /// `toDate`, `toStartOfDay`: the day.
    Day,
    /// `toStartOfHour`.
    Hour,
    /// `toStartOfMinute`.
    Minute,
    /// `toMonday`, `toStartOfWeek` is mode-dependent and not here.
    Monday,
    /// `toYYYYMM`, `toStartOfMonth`: the month.
    Month,
    /// `toStartOfQuarter`.
    Quarter,
    /// `toYear`, `toStartOfYear`.
    Year,
}

impl Func {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "toDate" | "toStartOfDay" | "toYYYYMMDD" => Self::Day,
            "toStartOfHour" => Self::Hour,
            "toStartOfMinute" => Self::Minute,
            "toMonday" => Self::Monday,
            "toYYYYMM" | "toStartOfMonth" => Self::Month,
            "toStartOfQuarter" => Self::Quarter,
            "toYear" | "toStartOfYear" => Self::Year,
            _ => return None,
        })
    }

    /// The function of `value`, seconds (`DateTime`) or days (`Date`, `is_date`), as a number
    /// that orders as the function's result does.
    fn apply(self, value: u64, is_date: bool) -> Option<u64> {
        let days = if is_date { value } else { value / DAY };
        Some(match self {
            Self::Identity => value,
            Self::Day => days,
            // Hours and minutes of a Date are its day (toStartOfHour(Date) is refused anyway).
            Self::Hour if is_date => return None,
            Self::Minute if is_date => return None,
            Self::Hour => value / 3600,
            Self::Minute => value / 60,
            // 1970-01-01 was a Thursday: day 4 is the first Monday.
            Self::Monday => (days + 3) / 7,
            Self::Month => {
                let (year, month) = year_month(days);
                year * 12 + month
            }
            Self::Quarter => {
                let (year, month) = year_month(days);
                year * 4 + (month - 1) / 3
            }
            Self::Year => year_month(days).0,
        })
    }
}

/// Civil year and month (1–12) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn year_month(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

/// One evaluated part of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    /// Index of the column in the block.
    column: usize,
    func: Func,
    /// What the column's values are, for decoding them.
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `String`, `LowCardinality(String)`: the bytes after the length.
    String,
    /// Fixed-width values compared as `order` says; `is_date`: a `Date` (days).
    Fixed {
        width: usize,
        order: Order,
        is_date: bool,
    },
}

/// The table's sorting key as far as the gateway evaluates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    parts: Vec<Part>,
    /// The key's expressions the block is sorted by.
    sorted_by: Vec<String>,
    /// The key's expressions from the first one that cannot be evaluated: the server sorts
    /// by these (empty: the block arrives in full key order).
    left_to_server: Vec<String>,
}

impl SortKey {
    /// No sorting: rows stay in arrival order (a table without a key, or none known).
    pub fn none() -> Self {
        Self {
            parts: Vec::new(),
            sorted_by: Vec::new(),
            left_to_server: Vec::new(),
        }
    }

    /// The key of `sorting_key` (as `system.tables.sorting_key` or the `ORDER BY` of the
    /// table's definition spells it, with or without parentheses) over `schema`'s columns.
    pub fn plan(sorting_key: &str, schema: &Schema) -> Self {
        let mut key = Self::none();
        let text = sorting_key.trim();
        let text = match text.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
            Some(inner) if balanced(inner) => inner,
            _ => text,
        };
        if text.is_empty() || text == "tuple()" {
            return key;
        }
        let expressions = split_top_level(text);
        for (i, expression) in expressions.iter().enumerate() {
            match part(expression, schema) {
                Some(part) => {
                    key.parts.push(part);
                    key.sorted_by.push(expression.clone());
                }
                None => {
                    key.left_to_server = expressions[i..].to_vec();
                    break;
                }
            }
        }
        key
    }

    /// Whether the gateway sorts by the whole key (the server's sort has nothing to do).
    pub fn is_complete(&self) -> bool {
        self.left_to_server.is_empty()
    }

    /// The expressions the block is sorted by.
    pub fn sorted_by(&self) -> &[String] {
        &self.sorted_by
    }

    /// The expressions left for the server to sort by (from the first one the gateway cannot
    /// evaluate).
    pub fn left_to_server(&self) -> &[String] {
        &self.left_to_server
    }

    /// The rows' order in the block: arrival positions sorted by the key, ties in arrival
    /// order, so the same rows always give the same order.
    pub fn permutation(&self, cells: &Cells<'_>) -> Vec<u32> {
        self.order(cells, &mut Scratch::default())
            .unwrap_or_else(|| (0..cells.rows() as u32).collect())
    }

    /// The rows' order, or `None` when it is the arrival order (no key, fewer than two
    /// rows, or every row's key equal).
    ///
    /// Each part's values become unsigned numbers that order as the values do (strings by
    /// their rank among the batch's distinct strings, from the column's dictionary when it
    /// has one), offset by the batch's minimum and packed, most significant part first, into
    /// as few bits as the batch's ranges need: one bit string of whole 64-bit words per row.
    /// Rows are then distributed by the top bits of that string (a counting sort, which
    /// keeps arrival order), and each bucket of more than one row is sorted by the whole
    /// string (a stable sort: ties keep arrival order). With distinct devices the buckets
    /// hold a row or two: the sort is linear, and no string is compared in it.
    /// Buffers come from `scratch`; the caller gives the order back to `scratch.order`.
    pub(super) fn order(&self, source: &impl KeySource, scratch: &mut Scratch) -> Option<Vec<u32>> {
        let rows = source.rows();
        if self.parts.is_empty() || rows < 2 {
            return None;
        }
        let parts: Vec<Evaluated<'_, _>> = self
            .parts
            .iter()
            .map(|part| Evaluated::new(part, source))
            .collect();
        // Each part's values, computed once in a loop of its own kind.
        let values: Vec<Vec<u128>> = parts
            .iter()
            .map(|part| {
                let mut values = take(&mut scratch.parts, rows);
                part.fill(rows, &mut values);
                values
            })
            .collect();
        // Each part's range in this batch: its values are packed minus the minimum, in as
        // many bits as the range needs.
        let ranges: Vec<(u128, u32)> = values
            .iter()
            .map(|values| {
                let (min, max) = values
                    .iter()
                    .fold((u128::MAX, 0), |(lo, hi), &v| (lo.min(v), hi.max(v)));
                (min, 128 - (max - min).leading_zeros())
            })
            .collect();
        let bits: u32 = ranges.iter().map(|(_, bits)| bits).sum();
        let mut keys = take(&mut scratch.keys, rows * words_for(bits));
        let words = words_for(bits);
        keys.resize(rows * words, 0);
        let mut offset = 0;
        for (values, &(min, bits)) in values.iter().zip(&ranges) {
            if bits == 0 {
                continue;
            }
            for (key, value) in keys.chunks_exact_mut(words).zip(values) {
                put_bits(key, offset, bits, value - min);
            }
            offset += bits;
        }
        for values in values.into_iter().rev() {
            give(&mut scratch.parts, values);
        }
        if bits == 0 {
            give(&mut scratch.keys, keys);
            return None;
        }
        let order = sort_keys(&keys, words, bits, scratch);
        give(&mut scratch.keys, keys);
        Some(order)
    }
}

/// Where the sort reads a column's values: the transposed batch the block builder makes, or
/// the cells of [`SortKey::permutation`].
pub(super) trait KeySource {
    /// Number of rows.
    fn rows(&self) -> usize;
    /// Row `row`'s value of column `column`, as RowBinary bytes.
    fn value(&self, row: usize, column: usize) -> &[u8];
    /// Column `column`'s dictionary, if it has one: each row's id, and the values by id.
    fn dictionary(&self, _column: usize) -> Option<(&[u32], &[&[u8]])> {
        None
    }
    /// Column `column`'s values back to back, if it is fixed-width and stored so.
    fn fixed(&self, _column: usize) -> Option<&[u8]> {
        None
    }
}

impl KeySource for Cells<'_> {
    fn rows(&self) -> usize {
        Cells::rows(self)
    }

    fn value(&self, row: usize, column: usize) -> &[u8] {
        self.cell(row, column)
    }
}

impl KeySource for Columns<'_> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn value(&self, row: usize, column: usize) -> &[u8] {
        Columns::value(self, row, column)
    }

    fn dictionary(&self, column: usize) -> Option<(&[u32], &[&[u8]])> {
        match &self.columns[column] {
            Values::Dictionary(d) => Some((&d.ids, &d.keys)),
            _ => None,
        }
    }

    fn fixed(&self, column: usize) -> Option<&[u8]> {
        match &self.columns[column] {
            Values::Fixed { bytes, .. } => Some(bytes),
            _ => None,
        }
    }
}

/// 64-bit words for a key of `bits` bits (at least one, so an empty key still has rows).
fn words_for(bits: u32) -> usize {
    bits.div_ceil(64).max(1) as usize
}

/// Writes the low `bits` bits of `value` into the bit string `key` (64-bit words, most
/// significant first) at `offset` bits from its start.
fn put_bits(key: &mut [u64], mut offset: u32, bits: u32, value: u128) {
    let mut left = bits;
    while left > 0 {
        let word = (offset / 64) as usize;
        let used = offset % 64;
        let take = left.min(64 - used);
        let chunk = (value >> (left - take)) as u64 & (u64::MAX >> (64 - take));
        key[word] |= chunk << (64 - used - take);
        offset += take;
        left -= take;
    }
}

/// Keys of at least this many bytes are sorted bucket by bucket on a copy laid out in bucket
/// order (see [`sort_keys`]). Fewer stay in the cache, and copying them costs more than it
/// saves (`examples/block_cpu` on a 32 MiB L3: 10 % slower at 300,000 rows of three words,
/// 10 % faster at 700,000 and a million, 15 % at two million).
const BUCKETED_FROM: usize = 16 << 20;

/// The order of rows whose keys are `words`-word bit strings of which the first `bits` bits
/// are used: a counting sort by the top bits, then a stable sort of each bucket.
fn sort_keys(keys: &[u64], words: usize, bits: u32, scratch: &mut Scratch) -> Vec<u32> {
    sort_keys_copying_from(keys, words, bits, BUCKETED_FROM, scratch)
}

/// [`sort_keys`], the keys copied into bucket order from `copy_from` bytes of them.
fn sort_keys_copying_from(
    keys: &[u64],
    words: usize,
    bits: u32,
    copy_from: usize,
    scratch: &mut Scratch,
) -> Vec<u32> {
    let rows = keys.len() / words;
    // About one bucket per row, at most 2^16 (the counts stay in the cache).
    let radix = bits.min(16).min(usize::BITS - rows.leading_zeros());
    let bucket = |row: usize| (keys[row * words] >> (64 - radix)) as usize;
    let buckets = 1 << radix;
    let mut starts = take(&mut scratch.buckets, buckets + 1);
    starts.resize(buckets + 1, 0);
    for row in 0..rows {
        starts[bucket(row) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut order = take(&mut scratch.order, rows);
    order.resize(rows, 0);
    let mut next = take(&mut scratch.buckets, buckets);
    next.extend_from_slice(&starts[..buckets]);
    // Large keys are copied into bucket order as the rows are distributed, so that each
    // bucket's sort compares keys lying next to each other. Compared in place, each
    // comparison reads two rows' keys from anywhere in tens of megabytes: a cache miss
    // each, most of the sort's time at a million rows.
    let copy = bits > radix && rows * words * size_of::<u64>() >= copy_from;
    let mut bucketed = take(&mut scratch.keys, if copy { rows * words } else { 0 });
    if copy {
        bucketed.resize(rows * words, 0);
    }
    for (row, key) in keys.chunks_exact(words).enumerate() {
        let b = bucket(row);
        let at = next[b] as usize;
        order[at] = row as u32;
        if copy {
            bucketed[at * words..(at + 1) * words].copy_from_slice(key);
        }
        next[b] += 1;
    }
    give(&mut scratch.buckets, next);
    if bits > radix {
        // Within a bucket rows are in arrival order: a stable sort keeps ties so. With the
        // copy, what is sorted is each row's place in its bucket, then the rows follow.
        let mut places = take(&mut scratch.buckets, 0);
        let mut moved = take(&mut scratch.buckets, 0);
        for window in starts.windows(2) {
            let (from, to) = (window[0] as usize, window[1] as usize);
            if to - from < 2 {
                continue;
            }
            if !copy {
                let key = |row: u32| &keys[row as usize * words..(row as usize + 1) * words];
                order[from..to].sort_by(|&a, &b| key(a).cmp(key(b)));
                continue;
            }
            let keys = &bucketed[from * words..to * words];
            let key = |place: u32| &keys[place as usize * words..(place as usize + 1) * words];
            places.clear();
            places.extend(0..(to - from) as u32);
            places.sort_by(|&a, &b| key(a).cmp(key(b)));
            moved.clear();
            moved.extend(places.iter().map(|&place| order[from + place as usize]));
            order[from..to].copy_from_slice(&moved);
        }
        give(&mut scratch.buckets, moved);
        give(&mut scratch.buckets, places);
    } // else the buckets are the whole key
    give(&mut scratch.keys, bucketed);
    give(&mut scratch.buckets, starts);
    order
}

/// One key part, evaluated per row as an unsigned number that orders as the part does.
enum Evaluated<'s, S: KeySource> {
    /// Strings (and `FixedString`s): each row's id among the batch's distinct values, and
    /// each id's rank in their order.
    Ranked {
        ids: std::borrow::Cow<'s, [u32]>,
        ranks: Vec<u32>,
    },
    /// A UUID or a number (through the part's function), read in place when the column is
    /// stored back to back.
    Number {
        part: &'s Part,
        bytes: Option<&'s [u8]>,
        source: &'s S,
    },
}

impl<'s, S: KeySource> Evaluated<'s, S> {
    fn new(part: &'s Part, source: &'s S) -> Self {
        let ranked = match part.kind {
            Kind::String => Some(true),
            Kind::Fixed {
                order: Order::Bytes,
                ..
            } => Some(false),
            Kind::Fixed { .. } => None,
        };
        let Some(is_string) = ranked else {
            return Self::Number {
                part,
                bytes: source.fixed(part.column),
                source,
            };
        };
        let payload = |v: &'s [u8]| if is_string { string_payload(v) } else { v };
        match source.dictionary(part.column) {
            Some((ids, keys)) => Self::Ranked {
                ids: std::borrow::Cow::Borrowed(ids),
                ranks: ranks_of_distinct(keys.iter().map(|k| payload(k))),
            },
            None => {
                let (ids, distinct) = dictionary(
                    (0..source.rows()).map(|row| payload(source.value(row, part.column))),
                );
                Self::Ranked {
                    ids: std::borrow::Cow::Owned(ids),
                    ranks: ranks_of_distinct(distinct.into_iter()),
                }
            }
        }
    }

    /// Appends every row's value to `out`: one loop per kind of part, the decoding chosen
    /// once rather than per row.
    fn fill(&self, rows: usize, out: &mut Vec<u128>) {
        match self {
            Self::Ranked { ids, ranks } => {
                out.extend(ids.iter().map(|&id| u128::from(ranks[id as usize])));
            }
            Self::Number {
                part,
                bytes: Some(bytes),
                ..
            } => match part.kind {
                Kind::Fixed {
                    order: Order::Uuid, ..
                } => out.extend(bytes.chunks_exact(16).map(|v| {
                    // Both little-endian halves, the second the more significant: how
                    // ClickHouse compares UUIDs.
                    let mut buf = [0u8; 16];
                    buf.copy_from_slice(v);
                    u128::from_le_bytes(buf)
                })),
                Kind::Fixed {
                    width,
                    order,
                    is_date,
                } => {
                    let func = part.func;
                    out.extend(bytes.chunks_exact(width).map(|v| {
                        let n = ordered_number(v, order);
                        u128::from(func.apply(n, is_date).unwrap_or(n))
                    }));
                }
                Kind::String => out.extend((0..rows).map(|row| self.value(row))),
            },
            Self::Number { .. } => out.extend((0..rows).map(|row| self.value(row))),
        }
    }

    #[inline]
    fn value(&self, row: usize) -> u128 {
        match self {
            Self::Ranked { ids, ranks } => u128::from(ranks[ids[row] as usize]),
            Self::Number {
                part,
                bytes,
                source,
            } => {
                let Kind::Fixed {
                    width,
                    order,
                    is_date,
                } = part.kind
                else {
                    return 0; // Strings are ranked (see `new`).
                };
                let v = match bytes {
                    Some(bytes) => &bytes[row * width..(row + 1) * width],
                    None => source.value(row, part.column),
                };
                if order == Order::Uuid {
                    let half = |i: usize| {
                        let mut buf = [0u8; 8];
                        buf.copy_from_slice(&v[i..i + 8]);
                        u64::from_le_bytes(buf)
                    };
                    // Second half first: how ClickHouse compares UUIDs.
                    return (u128::from(half(8)) << 64) | u128::from(half(0));
                }
                let n = ordered_number(&v[..width], order);
                u128::from(part.func.apply(n, is_date).unwrap_or(n))
            }
        }
    }
}

/// Each value's id among the distinct values, numbered in order of first appearance, and
/// the distinct values by id.
fn dictionary<'a>(values: impl Iterator<Item = &'a [u8]>) -> (Vec<u32>, Vec<&'a [u8]>) {
    let mut ids: HashMap<&[u8], u32, FixedState> = HashMap::default();
    let mut distinct: Vec<&[u8]> = Vec::new();
    let mut last: Option<(&[u8], u32)> = None;
    let row_ids: Vec<u32> = values
        .map(|value| {
            if let Some((previous, id)) = last
                && previous == value
            {
                return id;
            }
            let next = distinct.len() as u32;
            let id = *ids.entry(value).or_insert_with(|| {
                distinct.push(value);
                next
            });
            last = Some((value, id));
            id
        })
        .collect();
    (row_ids, distinct)
}

/// The rank of each of `distinct` values (all different, compared byte-wise as ClickHouse
/// compares strings), in their order.
fn ranks_of_distinct<'a>(distinct: impl Iterator<Item = &'a [u8]>) -> Vec<u32> {
    let distinct: Vec<&[u8]> = distinct.collect();
    let mut by_value: Vec<u32> = (0..distinct.len() as u32).collect();
    by_value.sort_unstable_by_key(|&id| distinct[id as usize]);
    let mut rank = vec![0u32; distinct.len()];
    for (r, id) in by_value.into_iter().enumerate() {
        rank[id as usize] = r as u32;
    }
    rank
}

/// A fixed-width little-endian value as a `u64` that orders as the value does.
#[inline(always)]
fn ordered_number(bytes: &[u8], order: Order) -> u64 {
    let raw = little_endian(bytes);
    let bits = bytes.len() as u32 * 8;
    match order {
        Order::Signed => {
            // Sign-extend, then flip the sign bit: negatives first.
            let shift = 64 - bits;
            (((raw << shift) as i64 >> shift) as u64) ^ (1 << 63)
        }
        Order::Float => {
            let (value, bits) = if bits == 32 {
                let f = f32::from_bits(raw as u32);
                (f64::from(f), f64::from(f).to_bits())
            } else {
                (f64::from_bits(raw), raw)
            };
            if value.is_nan() {
                u64::MAX // NaN last, as ClickHouse sorts keys
            } else if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            }
        }
        _ => raw,
    }
}

/// A little-endian value of at most 8 bytes. The common widths are read with one load of
/// their own size: copied into a zeroed 8-byte buffer and read back whole, a narrower value
/// cannot be forwarded from the store that wrote it, and the read waits for both stores to
/// reach the cache (perf: a fifth of the block build's own time under load).
#[inline(always)]
fn little_endian(bytes: &[u8]) -> u64 {
    match *bytes {
        [a] => u64::from(a),
        [a, b] => u64::from(u16::from_le_bytes([a, b])),
        [a, b, c, d] => u64::from(u32::from_le_bytes([a, b, c, d])),
        [a, b, c, d, e, f, g, h] => u64::from_le_bytes([a, b, c, d, e, f, g, h]),
        _ => {
            let mut buf = [0u8; 8];
            buf[..bytes.len()].copy_from_slice(bytes);
            u64::from_le_bytes(buf)
        }
    }
}

/// The bytes of a RowBinary `String` value without its length.
fn string_payload(cell: &[u8]) -> &[u8] {
    match leb128(cell) {
        Some((_, prefix)) => &cell[prefix..],
        None => cell,
    }
}

/// The part for one key expression, if the gateway evaluates it exactly.
fn part(expression: &str, schema: &Schema) -> Option<Part> {
    let expression = expression.trim();
    let (func, argument) = match expression.find('(') {
        Some(open) => {
            let name = expression[..open].trim();
            let argument = expression[open + 1..].strip_suffix(')')?;
            (Func::parse(name)?, argument.trim())
        }
        None => (Func::Identity, expression),
    };
    let name = unquote(argument)?;
    let column = schema.columns.iter().position(|c| c.name == name)?;
    let col = &schema.columns[column];
    let ty = match &col.ty {
        ColumnType::LowCardinality(inner) => inner.as_ref(),
        ty => ty,
    };
    let kind = match ty {
        ColumnType::String if func == Func::Identity => Kind::String,
        ColumnType::Fixed { order, .. } if *order == Order::Unknown => return None,
        ColumnType::Fixed { width, order } => {
            if func != Func::Identity && (col.zone != Zone::Utc || *order != Order::Unsigned) {
                return None;
            }
            Kind::Fixed {
                width: *width,
                order: *order,
                is_date: col.zone == Zone::Utc && *width == 2,
            }
        }
        _ => return None,
    };
    if func != Func::Identity
        && func
            .apply(0, matches!(kind, Kind::Fixed { is_date: true, .. }))
            .is_none()
    {
        return None;
    }
    Some(Part { column, func, kind })
}

/// A column name, plain or in backquotes; `None` for anything else (an expression).
fn unquote(name: &str) -> Option<String> {
    if let Some(inner) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
        return (!inner.contains('`')).then(|| inner.to_string());
    }
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    plain.then(|| name.to_string())
}

fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// `a, f(b, c), d` → `["a", "f(b, c)", "d"]` (commas inside parentheses or quotes stay).
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut current = String::new();
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ',') if depth == 0 => {
                parts.push(current.trim().to_string());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current.trim().to_string());
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        let columns = [
            ("event", "LowCardinality(String)"),
            ("server_time", "DateTime('UTC')"),
            ("local_time", "DateTime('Europe/Berlin')"),
            ("device_id", "UUID"),
            ("ip", "IPv6"),
            ("day", "Date"),
        ];
        let columns: Vec<(String, String)> = columns
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        Schema::new(&columns, true).unwrap()
    }

    #[test]
    fn the_events_key_is_evaluated_whole() {
        let key = SortKey::plan(
            "event, toDate(server_time), device_id, server_time",
            &schema(),
        );
        assert!(key.is_complete());
        assert_eq!(key.sorted_by().len(), 4);
        let key = SortKey::plan("(event, toYYYYMM(day), `server_time`)", &schema());
        assert!(key.is_complete(), "{key:?}");
        assert!(SortKey::plan("tuple()", &schema()).is_complete());
    }

    #[test]
    fn the_longest_evaluable_prefix_is_kept() {
        for (text, kept, left) in [
            ("event, cityHash64(device_id), server_time", 1, 2),
            ("event, toDate(local_time)", 1, 1),
            ("ip, event", 0, 2),
            ("event, missing", 1, 1),
            ("event, server_time + 1", 1, 1),
            ("toDate(server_time, 'Asia/Tokyo')", 0, 1),
        ] {
            let key = SortKey::plan(text, &schema());
            assert_eq!(key.sorted_by().len(), kept, "{text}");
            assert_eq!(key.left_to_server().len(), left, "{text}");
        }
        // A zone that is not UTC still orders the same for the column itself.
        assert!(SortKey::plan("local_time", &schema()).is_complete());
    }

    #[test]
    fn keys_sort_the_same_compared_in_place_or_copied_into_buckets() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for (rows, words) in [(5_000, 1), (5_000, 2), (20_000, 3), (1, 1)] {
            // Eight values of the leading bits (eight large buckets), and so few values of
            // the rest that most keys have ties.
            let mut keys = vec![0u64; rows * words];
            for key in keys.chunks_exact_mut(words) {
                key[0] = rng.random_range(0..8u64) << 61 | rng.random_range(0..4u64);
                for word in &mut key[1..] {
                    *word = rng.random_range(0..3);
                }
            }
            let bits = 64 * words as u32;
            let mut expected: Vec<u32> = (0..rows as u32).collect();
            expected.sort_by_key(|&row| &keys[row as usize * words..(row as usize + 1) * words]);
            let mut scratch = Scratch::default();
            let in_place = sort_keys_copying_from(&keys, words, bits, usize::MAX, &mut scratch);
            let copied = sort_keys_copying_from(&keys, words, bits, 0, &mut scratch);
            assert_eq!(in_place, expected, "{rows} rows of {words} words, in place");
            assert_eq!(copied, expected, "{rows} rows of {words} words, copied");
        }
    }

    #[test]
    fn calendar_functions_match_the_calendar() {
        // 2020-12-01 23:59:00 UTC, and 2021-01-01 00:00:00.
        assert_eq!(year_month(1_606_867_140 / DAY), (2020, 12));
        assert_eq!(year_month(1_609_459_200 / DAY), (2021, 1));
        assert_eq!(year_month(0), (1970, 1));
        assert_eq!(year_month(59), (1970, 3)); // 1970-03-01
        // 1970-01-05 was a Monday.
        assert_eq!(Func::Monday.apply(3, true), Func::Monday.apply(0, true));
        assert_ne!(Func::Monday.apply(4, true), Func::Monday.apply(3, true));
    }

    #[test]
    fn values_of_every_width_read_as_little_endian() {
        let bytes = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08];
        for width in 1..=8 {
            let mut buf = [0u8; 8];
            buf[..width].copy_from_slice(&bytes[..width]);
            assert_eq!(
                little_endian(&bytes[..width]),
                u64::from_le_bytes(buf),
                "{width} bytes"
            );
        }
    }

    #[test]
    fn numbers_order_as_their_types() {
        let signed = |v: i32| ordered_number(&v.to_le_bytes(), Order::Signed);
        assert!(signed(-5) < signed(-1) && signed(-1) < signed(0) && signed(0) < signed(7));
        let float = |v: f64| ordered_number(&v.to_le_bytes(), Order::Float);
        assert!(
            float(-2.5) < float(-0.5) && float(-0.5) < float(0.0) && float(1.0) < float(f64::NAN)
        );
        assert!(float(f64::INFINITY) < float(f64::NAN));
    }
}
