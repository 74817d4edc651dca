//! [`Rows`]: encoded rows back to back, with where each ends. The unit that moves from a
//! request into the buffer, from the buffer to the flusher, and from there to the sink.
//! (Encoding an event is the `event` stage's: `Rows::push` is defined there.)

/// RowBinary-encoded rows and their boundaries. Boundaries let the flusher cut a batch
/// into inserts, or in halves around a row ClickHouse rejects, without decoding anything.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rows {
    data: Vec<u8>,
    /// `ends[i]` is the offset just past row `i` in `data`.
    ends: Vec<usize>,
}

/// A borrowed run of whole rows, as a sink writes them.
#[derive(Debug, Clone, Copy)]
pub struct RowsRef<'a> {
    /// The rows' bytes.
    pub data: &'a [u8],
    /// How many rows `data` holds.
    pub count: usize,
}

impl Rows {
    /// Empty, with room for `rows` rows of about `row_bytes` bytes each.
    pub fn with_capacity(rows: usize, row_bytes: usize) -> Self {
        Self {
            data: Vec::with_capacity(rows * row_bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Moves all of `other`'s rows to the end of `self`, leaving `other` empty (with its
    /// allocation). Two memcpys: this is what runs under the buffer's lock.
    pub fn append(&mut self, other: &mut Rows) {
        let base = self.data.len();
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|end| end + base));
        other.clear();
    }

    /// Appends one row that is already encoded (read back from the spool).
    pub fn push_encoded(&mut self, row: &[u8]) {
        self.data.extend_from_slice(row);
        self.ends.push(self.data.len());
    }

    /// Appends one row that `encode` writes straight into the buffer (no copy): how the
    /// `event` stage encodes a validated event.
    pub fn push_encoded_with(&mut self, encode: impl FnOnce(&mut Vec<u8>)) {
        encode(&mut self.data);
        self.ends.push(self.data.len());
    }

    /// Appends one row encoded by `encode` straight into the rows' bytes; when `encode`
    /// returns `false` (the event was rejected half-way) its bytes are cut off again and no
    /// row is added. No scratch buffer and no copy per row.
    pub fn push_encoded_if(&mut self, encode: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let start = self.data.len();
        let kept = encode(&mut self.data);
        match kept {
            true => self.ends.push(self.data.len()),
            false => self.data.truncate(start),
        }
        kept
    }

    /// Row `i`'s encoded bytes.
    pub fn row(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    /// Each row's encoded length, in order (what the spool stores besides the bytes).
    pub fn row_lens(&self) -> impl Iterator<Item = usize> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.ends.iter().zip(starts).map(|(end, start)| end - start)
    }

    /// All rows' bytes, back to back.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Memory these rows account for: their bytes plus one boundary each.
    pub fn mem_size(&self) -> usize {
        self.data.len() + self.ends.len() * std::mem::size_of::<usize>()
    }

    /// Capacity actually reserved, in rows (for shrinking after a backlog).
    pub fn capacity(&self) -> usize {
        self.ends.capacity()
    }

    /// Empties, keeping the allocation.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    /// Gives back memory beyond about `rows` rows.
    pub fn shrink_to(&mut self, rows: usize) {
        let avg = self.data.capacity() / self.ends.capacity().max(1);
        self.ends.shrink_to(rows);
        self.data.shrink_to(rows * avg.max(1));
    }

    /// All rows, borrowed.
    pub fn view(&self) -> RowsRef<'_> {
        self.slice(0..self.len())
    }

    /// Rows `range.start..range.end`, borrowed.
    pub fn slice(&self, range: std::ops::Range<usize>) -> RowsRef<'_> {
        let start = match range.start {
            0 => 0,
            i => self.ends[i - 1],
        };
        let end = match range.end {
            0 => 0,
            i => self.ends[i - 1],
        };
        RowsRef {
            data: &self.data[start..end],
            count: range.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::table::event::testing::{event, rows};

    #[test]
    fn append_rebases_boundaries_and_empties_the_source() {
        let mut a = rows(0..2);
        let mut b = rows(2..5);
        let whole = rows(0..5);
        a.append(&mut b);
        assert!(b.is_empty());
        assert_eq!(a, whole);
        assert_eq!(a.len(), 5);
    }

    #[test]
    fn slices_hold_whole_rows() {
        let all = rows(0..4);
        let mut one = Vec::new();
        event(2).encode(&mut one);
        let s = all.slice(2..3);
        assert_eq!((s.data, s.count), (&one[..], 1));
        assert_eq!(all.slice(0..4).data.len(), all.view().data.len());
        assert_eq!(all.slice(1..1).count, 0);
    }
}
