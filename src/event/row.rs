//! The row as stored in ClickHouse: one struct, serialized by the `clickhouse` crate as RowBinary.

use std::net::Ipv6Addr;

use clickhouse::Row;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// One validated event, ready to insert. Field names and order are the table's columns
/// (see `sink::schema`), which RowBinary relies on.
///
/// Rows own their strings: a row outlives the request that produced it (it waits in the
/// buffer until the next flush), so it cannot borrow the request body.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize)]
pub struct EventRow {
    /// When the client says the event happened, UTC, whole seconds.
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub client_time: OffsetDateTime,
    /// When this server received the request, UTC, whole seconds. Partitioning uses this
    /// one: client clocks can be years off and would scatter parts across partitions.
    #[serde(with = "clickhouse::serde::time::datetime")]
    pub server_time: OffsetDateTime,
    /// The device's identifier.
    #[serde(with = "clickhouse::serde::uuid")]
    pub device_id: Uuid,
    /// Operating system and version, e.g. `IOS 13.5.1`.
    pub device_os: String,
    /// Client-chosen session identifier.
    pub session: String,
    /// The event's position within its session.
    pub sequence: u32,
    /// Event name, e.g. `app_start`.
    pub event: String,
    /// Free integer parameter (0 when absent).
    pub param_int: u32,
    /// Free string parameter (empty when absent).
    pub param_str: String,
    /// The client's address; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), as ClickHouse's
    /// `IPv6` type and `IPv6NumToString` expect. 16 bytes in RowBinary either way.
    pub ip: Ipv6Addr,
}

impl EventRow {
    /// Bytes this row holds in memory (struct plus string contents). The buffer counts this
    /// against `BUFFER_MAX_BYTES`, because memory, not wire size, is what runs out.
    pub fn mem_size(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.device_os.len()
            + self.session.len()
            + self.event.len()
            + self.param_str.len()
    }
}
