//! Events: the table row, how a request body is decoded into candidate events, and how each
//! candidate is validated into a row. Everything a request does before it touches the buffer.

pub mod decode;
pub mod row;
pub mod validate;

pub use decode::{DecodeError, decode_batch};
pub use row::EventRow;
pub use validate::{FieldError, Validated, validate_batch};

/// Rows for tests and benchmarks: valid, distinct, deterministic.
#[doc(hidden)]
pub mod testing {
    use super::EventRow;
    use std::net::Ipv6Addr;
    use time::macros::datetime;

    /// A valid row whose `sequence` is `n`.
    pub fn row(n: u32) -> EventRow {
        EventRow {
            client_time: datetime!(2020-12-01 23:59:00 UTC),
            server_time: datetime!(2020-12-02 00:00:00 UTC),
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
}
