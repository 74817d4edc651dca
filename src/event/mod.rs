//! Events: how a request body is decoded into candidate events, how each candidate is
//! validated into an [`Event`], and how events are encoded into [`Rows`](crate::block::Rows)
//! for the table.
//! Everything a request does before it touches the buffer.

mod decode;
mod excerpt;
mod row;
mod validate;

pub use decode::{DecodeError, Decoded, Format, Loose, decode_batch};
pub use excerpt::{excerpt, shorten};
pub use row::{Event, decode_json};
pub use validate::{FieldError, Validated, parse_time, validate_batch};

/// Events for tests and benchmarks: valid, distinct, deterministic.
#[doc(hidden)]
pub mod testing {
    use super::Event;
    use crate::block::Rows;
    use std::net::Ipv6Addr;

    /// A valid event whose `sequence` and `param_int` are `n`.
    pub fn event(n: u32) -> Event<'static> {
        Event {
            client_time: 1_606_867_140, // 2020-12-01 23:59:00 UTC
            client_time_corrected: 1_606_867_140,
            server_time: 1_606_867_200,
            device_id: uuid::Uuid::from_u128(0x0287D9AA_4ADF_4B37_A60F_3E9E645C821E),
            device_os: "IOS 13.5.1".into(),
            session: "ybuRi8mAUypxjbxQ".into(),
            sequence: n,
            event: "app_start".into(),
            param_int: n,
            param_str: "some text".into(),
            ip: Ipv6Addr::LOCALHOST,
        }
    }

    /// Encoded events for `range`.
    pub fn rows(range: std::ops::Range<u32>) -> Rows {
        let mut rows = Rows::default();
        for n in range {
            rows.push(&event(n));
        }
        rows
    }
}
