//! A typed event of the events table and its RowBinary row, for tests and benchmarks only
//! (built for the crate's own tests and with the `testing` feature): the service encodes
//! every table's rows, the events table's included, with the table's schema
//! (`crate::table`), which writes these same bytes (pinned by `table/fixtures`), and reads
//! them back the same way.
//!
//! RowBinary is ClickHouse's plain binary row format; for
//! the column types used here it is: `UInt32` little-endian, `DateTime` as `UInt32` seconds,
//! `String` as a LEB128 length then the bytes (`LowCardinality(String)` the same), `UUID`
//! as its high then low 64-bit halves, each little-endian, and `IPv6`/`FixedString(16)` as
//! 16 raw bytes in network order.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use uuid::Uuid;

use crate::format::Rows;

impl Rows {
    /// Encodes and appends one event (in [`COLUMNS`](crate::table::events::COLUMNS) order).
    pub fn push(&mut self, event: &Event<'_>) {
        self.push_encoded_with(|out| event.encode(out));
    }
}

/// One validated event, borrowing its strings from the request body where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// When the client says the event happened: UTC seconds since 1970 (`DateTime`).
    pub client_time: u32,
    /// `client_time` corrected for the client's clock skew when the request says when it
    /// was sent (`sent_at`): `server_time - (sent_at - client_time)`, as Segment does;
    /// equal to `client_time` otherwise.
    pub client_time_corrected: u32,
    /// When this server received the request: UTC seconds since 1970. Partitioning uses
    /// this one: client clocks can be years off and would scatter parts across partitions.
    pub server_time: u32,
    /// The device's identifier.
    pub device_id: Uuid,
    /// Operating system and version, e.g. `IOS 13.5.1`.
    pub device_os: Cow<'a, str>,
    /// Client-chosen session identifier.
    pub session: Cow<'a, str>,
    /// The event's position within its session.
    pub sequence: u32,
    /// Event name, e.g. `app_start`.
    pub event: Cow<'a, str>,
    /// Free integer parameter (0 when absent).
    pub param_int: u32,
    /// Free string parameter (empty when absent).
    pub param_str: Cow<'a, str>,
    /// The client's address; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), as ClickHouse's
    /// `IPv6` type and `IPv6NumToString` expect.
    pub ip: Ipv6Addr,
}

impl Event<'_> {
    /// Appends this event's RowBinary encoding, columns in [`COLUMNS`] order.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&self.client_time.to_le_bytes());
        out.extend_from_slice(&self.client_time_corrected.to_le_bytes());
        out.extend_from_slice(&self.server_time.to_le_bytes());
        let (high, low) = self.device_id.as_u64_pair();
        out.extend_from_slice(&high.to_le_bytes());
        out.extend_from_slice(&low.to_le_bytes());
        put_string(out, &self.device_os);
        put_string(out, &self.session);
        out.extend_from_slice(&self.sequence.to_le_bytes());
        put_string(out, &self.event);
        out.extend_from_slice(&self.param_int.to_le_bytes());
        put_string(out, &self.param_str);
        out.extend_from_slice(&self.ip.octets());
    }

    /// Exact size of [`Event::encode`]'s output.
    pub fn encoded_len(&self) -> usize {
        let strings = [&self.device_os, &self.session, &self.event, &self.param_str];
        4 + 4
            + 4
            + 16
            + 4
            + 4
            + 16
            + strings
                .iter()
                .map(|s| leb128_len(s.len()) + s.len())
                .sum::<usize>()
    }
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s.as_bytes());
}

fn leb128_len(n: usize) -> usize {
    (usize::BITS - (n | 1).leading_zeros()).div_ceil(7) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::event::testing::event;

    #[test]
    fn encoding_matches_the_rowbinary_layout() {
        let mut e = event(7);
        e.device_id = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);
        e.device_os = "a".into();
        e.session = "".into();
        e.event = "é".into();
        e.param_str = "x".repeat(200).into();
        e.client_time = 1;
        e.client_time_corrected = 5;
        e.server_time = 0x0102_0304;
        e.param_int = 9;
        e.ip = Ipv6Addr::LOCALHOST;
        let mut out = Vec::new();
        e.encode(&mut out);
        let mut expected = vec![1, 0, 0, 0, 5, 0, 0, 0, 4, 3, 2, 1];
        expected.extend_from_slice(&0x0011_2233_4455_6677u64.to_le_bytes());
        expected.extend_from_slice(&0x8899_aabb_ccdd_eeffu64.to_le_bytes());
        expected.extend_from_slice(&[1, b'a', 0, 7, 0, 0, 0, 2, 0xc3, 0xa9, 9, 0, 0, 0]);
        expected.extend_from_slice(&[0xc8, 0x01]); // 200 as LEB128
        expected.extend_from_slice(&[b'x'; 200]);
        expected.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        assert_eq!(out, expected);
        assert_eq!(e.encoded_len(), out.len());
    }

    #[test]
    fn a_row_decodes_back_to_its_fields() {
        let mut e = event(3);
        e.param_str = "x".repeat(300).into();
        let mut out = Vec::new();
        e.encode(&mut out);
        let events = crate::table::events::schema().unwrap();
        let json = events.decode_row(&out).unwrap();
        assert_eq!(json["sequence"], 3);
        assert_eq!(json["param_str"].as_str().unwrap().len(), 300);
        assert_eq!(json["device_id"], e.device_id.to_string());
        assert!(events.decode_row(&out[..out.len() - 1]).is_none());
    }

    #[test]
    fn leb128_lengths() {
        for (n, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3)] {
            assert_eq!(leb128_len(n), len, "{n}");
            let mut out = Vec::new();
            put_string(&mut out, &"y".repeat(n));
            assert_eq!(out.len(), len + n);
        }
    }
}
