//! Events as every table's requests carry them: the body shapes (`body`), the times
//! clients send (`crate::table::time`), what a rejected event's answer says
//! ([`FieldError`]), and rows for tests and benchmarks ([`testing`], with a typed event of
//! the events table in `row`). Validating and encoding is the table's schema's
//! (`crate::table`), for the events table too.
//!
//! Part of the table stage. May import `format` and the shared modules.

mod body;
mod excerpt;
#[cfg(any(test, feature = "testing"))]
mod row;

use std::borrow::Cow;

use serde::Serialize;

pub use super::time::parse_time;
pub use body::{
    DecodeError, Envelope, Format, Loose, array_elements, loose_field, ndjson_events, ndjson_lines,
};
pub use excerpt::{excerpt, shorten};
#[cfg(any(test, feature = "testing"))]
pub use row::Event;

/// At most this many field errors are listed in a response; `rejected` still counts all.
pub const MAX_REPORTED_ERRORS: usize = 100;

/// Longest an event may plausibly wait on a device before being sent: a year offline.
/// `sent_at - client_time` beyond it means one of the two is wrong.
pub const MAX_DEVICE_QUEUE_SECS: i64 = 365 * 24 * 3600;

/// Why one event was rejected, as reported to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The event's position in the request's array.
    pub index: usize,
    /// The offending field, or `""` when the object as a whole could not be read.
    #[schema(value_type = String)]
    pub field: Cow<'static, str>,
    /// What is wrong, in words a client developer can act on.
    #[schema(value_type = String)]
    pub error: Cow<'static, str>,
}

/// Events for tests and benchmarks: valid, distinct, deterministic. Not part of the
/// service: built for the crate's own tests and with the `testing` feature.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::Event;
    use crate::format::Rows;
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

    /// Rows as the service's flusher gets them under load: distinct random devices, a few
    /// dozen event names, a few seconds of server time, client times over a day.
    pub fn load_rows(n: usize) -> Rows {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let names: Vec<String> = (0..30).map(|i| format!("event_{i}")).collect();
        let mut rows = Rows::default();
        for i in 0..n {
            let now = 1_764_547_200 + (i * 5 / n) as u32;
            rows.push(&Event {
                client_time: now - (next() % 86_400) as u32,
                client_time_corrected: now - (next() % 86_400) as u32,
                server_time: now,
                device_id: uuid::Uuid::from_u64_pair(next(), next()),
                device_os: ["IOS 13.5.1", "Android 14", "Android 13", "IOS 17.1"]
                    [next() as usize % 4]
                    .into(),
                session: format!("{:016x}", next()).into(),
                sequence: (next() % 1000) as u32,
                event: names[next() as usize % names.len()].as_str().into(),
                param_int: (next() % 100_000) as u32,
                param_str: "some text".into(),
                ip: Ipv6Addr::from(0xffff_0000_0000u128 | u128::from(next() as u32)),
            });
        }
        rows
    }
}
