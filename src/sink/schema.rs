//! The events table's DDL, and the server-version facts that decide it.
//!
//! One schema, two dialects. Column names, order and RowBinary layout are identical on every
//! version, so the same [`EventRow`](crate::event::EventRow) writes to either:
//! - ClickHouse 20.1 and later (users run 24.x–26.x): `LowCardinality(String)` for the
//!   repetitive names, the `IPv6` type, and compression codecs on the time columns.
//! - Older servers (the Debian package is 18.16): `LowCardinality` only behind the
//!   `allow_experimental_low_cardinality_type` setting, `FixedString(16)` for the address
//!   (byte-for-byte what `IPv6` stores, and `IPv6NumToString` reads both), no codecs.

use std::fmt;

/// A ClickHouse server version, as `SELECT version()` reports it (`24.8.4.13`, `18.16.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Year-based major version, e.g. 24.
    pub major: u32,
    /// Minor version (month of the release for modern versions).
    pub minor: u32,
}

impl ServerVersion {
    /// Parses the first two numbers of a version string.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(str::parse::<u32>);
        Some(Self {
            major: parts.next()?.ok()?,
            minor: parts.next().and_then(Result::ok).unwrap_or(0),
        })
    }

    fn at_least(self, major: u32, minor: u32) -> bool {
        self >= ServerVersion { major, minor }
    }

    /// `IPv6` type, codecs and non-experimental `LowCardinality` (all there by 20.1).
    pub fn is_modern(self) -> bool {
        self.at_least(20, 1)
    }

    /// Whether the `clickhouse` crate's schema validation works: it sends the setting
    /// `describe_include_subcolumns`, which old servers refuse as unknown. Checked against
    /// 24.x+ only, where users run it; older servers write plain RowBinary.
    pub fn supports_client_validation(self) -> bool {
        self.at_least(24, 1)
    }

    /// Whether inserts accept `insert_deduplication_token` (22.2+).
    pub fn supports_dedup_token(self) -> bool {
        self.at_least(22, 2)
    }

    /// Settings every query on this server needs for our DDL.
    pub fn required_settings(self) -> &'static [(&'static str, &'static str)] {
        if self.is_modern() {
            &[]
        } else {
            &[("allow_experimental_low_cardinality_type", "1")]
        }
    }
}

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `CREATE TABLE IF NOT EXISTS` for the events table.
///
/// - `PARTITION BY toYYYYMM(server_time)`: monthly partitions on the server's clock, so a
///   client with a wrong clock cannot create a partition per bogus month; monthly keeps the
///   partition count low, as ClickHouse recommends.
/// - `ORDER BY (event, toDate(server_time), device_id, server_time)`: analytics queries
///   filter by event name and a time range first, then group by device; rows of one device
///   sit together within a day, which also compresses `session`/`device_os` well.
pub fn create_table_sql(database: &str, table: &str, version: ServerVersion) -> String {
    let (time_codec, str_codec, ip_type) = if version.is_modern() {
        (" CODEC(Delta, ZSTD(1))", " CODEC(ZSTD(1))", "IPv6")
    } else {
        ("", "", "FixedString(16)")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{table}` (\
            client_time DateTime('UTC'){time_codec}, \
            server_time DateTime('UTC'){time_codec}, \
            device_id UUID, \
            device_os LowCardinality(String), \
            session String{str_codec}, \
            sequence UInt32, \
            event LowCardinality(String), \
            param_int UInt32, \
            param_str String{str_codec}, \
            ip {ip_type}\
        ) ENGINE = MergeTree \
        PARTITION BY toYYYYMM(server_time) \
        ORDER BY (event, toDate(server_time), device_id, server_time)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let old = ServerVersion::parse("18.16.1").unwrap();
        let new = ServerVersion::parse("24.8.4.13").unwrap();
        assert!(old < new);
        assert!(!old.is_modern() && new.is_modern());
        assert!(!old.supports_client_validation() && new.supports_client_validation());
        assert!(new.supports_dedup_token() && !old.supports_dedup_token());
        assert_eq!(ServerVersion::parse("nonsense"), None);
    }

    #[test]
    fn ddl_differs_only_where_the_server_does() {
        let old = create_table_sql("db", "t", ServerVersion::parse("18.16.1").unwrap());
        let new = create_table_sql("db", "t", ServerVersion::parse("25.3").unwrap());
        assert!(old.contains("ip FixedString(16)") && new.contains("ip IPv6"));
        assert!(!old.contains("CODEC") && new.contains("CODEC"));
        for ddl in [old, new] {
            assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS `db`.`t`"));
        }
    }
}
