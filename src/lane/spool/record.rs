//! One spool record: a request's encoded rows framed with a length and a CRC-32, so a
//! reader can tell a whole record from a torn or corrupted one.
//!
//! Layout, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `EIS1`: a record starts here |
//! | 4 | payload length |
//! | 4 | CRC-32 of everything after this field |
//! | 8 | when the record was written, Unix milliseconds (oldest-event age) |
//! | 4 | row count `n` |
//! | 4 × n | each row's length |
//! | … | the rows' RowBinary bytes |
//!
//! The payload is the row lengths and bytes; the CRC covers time, count and payload.

use crate::format::Rows;

/// Marks the start of a record.
pub const MAGIC: [u8; 4] = *b"EIS1";
/// Bytes before the payload.
pub const HEADER: usize = 24;

/// Now, in Unix milliseconds: a record's `written_at`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Appends `rows` as one record to `out`.
pub fn encode(rows: &Rows, written_at_ms: u64, out: &mut Vec<u8>) {
    let payload = 4 * rows.len() + rows.data().len();
    out.reserve(HEADER + payload);
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&written_at_ms.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
    for len in rows.row_lens() {
        out.extend_from_slice(&(len as u32).to_le_bytes());
    }
    out.extend_from_slice(rows.data());
    let crc = crc32fast::hash(&out[start + 12..]);
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// The encoded size of `rows` as a record.
pub fn encoded_len(rows: &Rows) -> usize {
    HEADER + 4 * rows.len() + rows.data().len()
}

/// Why bytes are not a whole, intact record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The bytes end before the record does: a write cut short by a crash.
    #[error("record cut short ({have} of {need} bytes)")]
    Torn {
        /// Bytes present.
        have: usize,
        /// Bytes the header announces.
        need: usize,
    },
    /// The bytes are there but are not the record that was written.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
}

/// A record read back.
#[derive(Debug)]
pub struct RecordRead {
    /// Bytes the record takes, header included.
    pub len: usize,
    /// When it was written, Unix milliseconds.
    pub written_at_ms: u64,
}

/// Reads the record at the start of `bytes`, appending its rows to `into`. On error `into`
/// is unchanged.
pub fn decode(bytes: &[u8], into: &mut Rows) -> Result<RecordRead, RecordError> {
    if bytes.len() < HEADER {
        return Err(RecordError::Torn {
            have: bytes.len(),
            need: HEADER,
        });
    }
    if bytes[..4] != MAGIC {
        return Err(RecordError::Corrupt("no record marker"));
    }
    let payload = u32_at(bytes, 4) as usize;
    let len = HEADER + payload;
    if bytes.len() < len {
        return Err(RecordError::Torn {
            have: bytes.len(),
            need: len,
        });
    }
    if crc32fast::hash(&bytes[12..len]) != u32_at(bytes, 8) {
        return Err(RecordError::Corrupt("checksum mismatch"));
    }
    let written_at_ms = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let count = u32_at(bytes, 20) as usize;
    let lens_end = HEADER
        .checked_add(
            count
                .checked_mul(4)
                .ok_or(RecordError::Corrupt("row count"))?,
        )
        .filter(|&end| end <= len)
        .ok_or(RecordError::Corrupt("row count larger than the record"))?;
    let lens = bytes[HEADER..lens_end]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize);
    if lens.clone().sum::<usize>() != len - lens_end {
        return Err(RecordError::Corrupt("row lengths do not add up"));
    }
    let mut at = lens_end;
    for row_len in lens {
        into.push_encoded(&bytes[at..at + row_len]);
        at += row_len;
    }
    Ok(RecordRead { len, written_at_ms })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::event::testing::rows;

    #[test]
    fn a_record_reads_back_as_the_rows_written() {
        let original = rows(0..5);
        let mut bytes = Vec::new();
        encode(&original, 42, &mut bytes);
        assert_eq!(bytes.len(), encoded_len(&original));
        let mut back = Rows::default();
        let decoded = decode(&bytes, &mut back).unwrap();
        assert_eq!((decoded.len, decoded.written_at_ms), (bytes.len(), 42));
        assert_eq!(back, original);
    }

    #[test]
    fn a_cut_record_is_torn_and_a_flipped_byte_is_corrupt() {
        let mut bytes = Vec::new();
        encode(&rows(0..3), 1, &mut bytes);
        let mut into = Rows::default();
        for cut in [0, 10, HEADER, bytes.len() - 1] {
            assert!(matches!(
                decode(&bytes[..cut], &mut into),
                Err(RecordError::Torn { .. })
            ));
        }
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(
            decode(&bytes, &mut into).unwrap_err(),
            RecordError::Corrupt("checksum mismatch")
        );
        assert!(into.is_empty());
        assert!(matches!(
            decode(&[0u8; 64], &mut into),
            Err(RecordError::Corrupt(_))
        ));
    }
}
