//! The events table's DDL, and the server-version facts that decide it.
//!
//! One schema, two dialects. Column names, order and RowBinary layout are identical on every
//! version, so the same encoded [`Rows`](crate::format::Rows) write to either:
//! - ClickHouse 20.1 and later (users run 24.x–26.x): `LowCardinality(String)` for the
//!   repetitive names, the `IPv6` type, and compression codecs on the time columns.
//! - Older servers (the Debian package is 18.16): `LowCardinality` only behind the
//!   `allow_experimental_low_cardinality_type` setting, `FixedString(16)` for the address
//!   (byte-for-byte what `IPv6` stores, and `IPv6NumToString` reads both), no codecs.

use std::fmt;

use crate::table::TimeRange;
use crate::table::events::TABLE;

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

    /// The dates and times the server shows as written: its calendar ends on 2106-02-07
    /// before 21.4.
    pub fn time_range(self) -> TimeRange {
        match self.at_least(21, 4) {
            true => TimeRange::FULL,
            false => TimeRange::UNTIL_2106,
        }
    }

    /// Whether the server has the `Bool` type (21.12+).
    pub fn has_bool(self) -> bool {
        self.at_least(21, 12)
    }

    /// Whether inserts accept `insert_deduplication_token` (22.2+).
    pub fn supports_dedup_token(self) -> bool {
        self.at_least(22, 2)
    }

    /// Whether the server has the `async_insert` setting (21.11+). Its asynchronous queue is
    /// a second buffer with its own flush timer and its own deduplication rules (tokens are
    /// ignored there unless `async_insert_deduplicate`), and recent servers turn it on by
    /// default: the service batches already, so its inserts opt out.
    pub fn knows_async_insert(self) -> bool {
        self.at_least(21, 11)
    }

    /// Settings sent with every insert on this server (none before 21.11: an older server
    /// refuses a setting it does not know).
    pub fn insert_settings(self) -> &'static [(&'static str, &'static str)] {
        if self.knows_async_insert() {
            &[("async_insert", "0")]
        } else {
            &[]
        }
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
/// - On 22.2+, `non_replicated_deduplication_window = 1000`: the last 1000 inserts' tokens
///   are remembered, so a retried or replayed batch is stored once.
pub fn create_table_sql(database: &str, table: &str, version: ServerVersion) -> String {
    let columns = column_list(version);
    // Plain MergeTree deduplicates by insert_deduplication_token only with this window.
    let settings = if version.supports_dedup_token() {
        " SETTINGS non_replicated_deduplication_window = 1000"
    } else {
        ""
    };
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{table}` ({columns}) ENGINE = MergeTree \
         {PARTITION_AND_ORDER}{settings}"
    )
}

/// The events table's partitioning and sorting (see [`create_table_sql`]), shared with the
/// cluster's `ReplicatedMergeTree` table.
pub(super) const PARTITION_AND_ORDER: &str = "PARTITION BY toYYYYMM(server_time) \
     ORDER BY (event, toDate(server_time), device_id, server_time)";

/// The events table's columns with their types (and codecs) for `version`, as a `CREATE
/// TABLE` lists them.
pub(super) fn column_list(version: ServerVersion) -> String {
    let columns: Vec<String> = TABLE
        .iter()
        .map(|c| match version.is_modern() {
            true if c.codec.is_empty() => format!("{} {}", c.name, c.modern),
            true => format!("{} {} {}", c.name, c.modern, c.codec),
            false => format!("{} {}", c.name, c.legacy),
        })
        .collect();
    columns.join(", ")
}

/// The `ALTER TABLE` that brings a table created by an earlier version up to date, if it
/// needs one: `client_time_corrected` arrived after the first release, defaulting to
/// `client_time` for old rows. (`ADD COLUMN IF NOT EXISTS` is not in 18.16, hence the
/// check against the actual columns.)
pub fn upgrade_sql(database: &str, table: &str, columns: &[(String, String)]) -> Option<String> {
    let has = |name: &str| columns.iter().any(|(n, _)| n == name);
    (has("client_time") && !has("client_time_corrected")).then(|| {
        format!(
            "ALTER TABLE `{database}`.`{table}` ADD COLUMN client_time_corrected \
             DateTime('UTC') DEFAULT client_time AFTER client_time"
        )
    })
}

/// Whether a retried insert carrying the same `insert_deduplication_token` is stored once,
/// as far as the table's definition tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deduplication {
    /// The server has no tokens (before 22.2): at-least-once, narrowed by its query log.
    NoTokens,
    /// Tokens are honoured: a `Replicated*MergeTree`, or a `*MergeTree` whose
    /// `non_replicated_deduplication_window` (the number of recent inserts remembered) is
    /// above zero.
    Window(u64),
    /// A plain `*MergeTree` without the window (created by someone else, or with it set to
    /// 0): the server ignores tokens, and a retried insert is stored twice.
    NoWindow,
    /// Not known (why is said): another engine (`Distributed`, `Buffer`, ...) honours
    /// tokens as the tables behind it do, or the table's definition could not be read.
    Unknown(String),
}

impl fmt::Display for Deduplication {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoTokens => write!(f, "no insert_deduplication_token on this server"),
            Self::Window(n) => write!(f, "by token, the last {n} inserts remembered"),
            Self::NoWindow => write!(f, "none: non_replicated_deduplication_window is 0"),
            Self::Unknown(why) => write!(f, "unknown: {why}"),
        }
    }
}

/// What deduplication a table of `engine`, created by `create_query` (as
/// `system.tables` shows them), gives on a server with tokens whose default
/// `non_replicated_deduplication_window` is `server_window`.
pub fn deduplication(engine: &str, create_query: &str, server_window: u64) -> Deduplication {
    if engine.starts_with("Replicated") && engine.ends_with("MergeTree") {
        // replicated_deduplication_window: on by default (100 before 23.x, 1000 and up since)
        return Deduplication::Window(100);
    }
    if !engine.ends_with("MergeTree") {
        return Deduplication::Unknown(format!(
            "a {engine} table deduplicates as the tables behind it do"
        ));
    }
    let key = "non_replicated_deduplication_window";
    let window = create_query
        .find(key)
        .and_then(|at| {
            let value = create_query[at + key.len()..]
                .trim_start()
                .strip_prefix('=')?;
            let value = value.trim_start();
            let end = value
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(value.len());
            value[..end].parse().ok()
        })
        .unwrap_or(server_window);
    match window {
        0 => Deduplication::NoWindow,
        n => Deduplication::Window(n),
    }
}

/// Checks that a table's `(name, type)` columns can take our rows: every column we write
/// exists with a type whose RowBinary form is ours. Extra columns are fine (inserts name
/// their columns; the others take their defaults).
pub fn check_columns(columns: &[(String, String)]) -> Result<(), String> {
    for name in crate::table::events::COLUMNS {
        let Some((_, ty)) = columns.iter().find(|(n, _)| n == name) else {
            return Err(format!("column {name} is missing"));
        };
        let ok = match name {
            "client_time" | "client_time_corrected" | "server_time" => {
                ty == "DateTime" || ty.starts_with("DateTime('")
            }
            "device_id" => ty == "UUID",
            "sequence" | "param_int" => ty == "UInt32",
            "ip" => ty == "IPv6" || ty == "FixedString(16)",
            _ => ty == "String" || ty == "LowCardinality(String)",
        };
        if !ok {
            return Err(format!(
                "column {name} has type {ty}, which these rows do not fit"
            ));
        }
    }
    Ok(())
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
        assert!(new.supports_dedup_token() && !old.supports_dedup_token());
        let async_since = ServerVersion::parse("21.11.2").unwrap();
        let before = ServerVersion::parse("21.10.6").unwrap();
        assert!(async_since.knows_async_insert() && !before.knows_async_insert());
        assert_eq!(new.insert_settings(), [("async_insert", "0")]);
        assert!(old.insert_settings().is_empty() && before.insert_settings().is_empty());
        assert_eq!(ServerVersion::parse("nonsense"), None);
    }

    fn columns(ip: &str) -> Vec<(String, String)> {
        let mut cols: Vec<(String, String)> = TABLE
            .iter()
            .filter(|c| c.name != "ip")
            .map(|c| (c.name.to_string(), c.modern.to_string()))
            .collect();
        cols.push(("extra".into(), "Array(String)".into()));
        cols.push(("ip".into(), ip.into()));
        cols
    }

    #[test]
    fn column_check_accepts_both_dialects_and_names_the_problem() {
        assert_eq!(check_columns(&columns("IPv6")), Ok(()));
        assert_eq!(check_columns(&columns("FixedString(16)")), Ok(()));
        let err = check_columns(&columns("String")).unwrap_err();
        assert!(err.contains("ip") && err.contains("String"), "{err}");
        let mut missing = columns("IPv6");
        missing.retain(|(n, _)| n != "session");
        assert!(check_columns(&missing).unwrap_err().contains("session"));
    }

    #[test]
    fn the_table_lists_the_encoded_columns_in_order() {
        let names: Vec<&str> = TABLE.iter().map(|c| c.name).collect();
        assert_eq!(names, crate::table::events::COLUMNS);
    }

    #[test]
    fn deduplication_is_read_from_the_tables_definition() {
        let ours = "CREATE TABLE db.events (...) ENGINE = MergeTree PARTITION BY x ORDER BY y \
                    SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 8192";
        assert_eq!(
            deduplication("MergeTree", ours, 0),
            Deduplication::Window(1000)
        );
        let theirs = "CREATE TABLE db.events (...) ENGINE = MergeTree ORDER BY y \
                      SETTINGS index_granularity = 8192";
        assert_eq!(
            deduplication("MergeTree", theirs, 0),
            Deduplication::NoWindow
        );
        // A server configured with a default window applies it to tables that do not say.
        assert_eq!(
            deduplication("MergeTree", theirs, 50),
            Deduplication::Window(50)
        );
        let off = "ENGINE = ReplacingMergeTree SETTINGS non_replicated_deduplication_window = 0";
        assert_eq!(
            deduplication("ReplacingMergeTree", off, 100),
            Deduplication::NoWindow
        );
        assert!(matches!(
            deduplication("ReplicatedMergeTree", theirs, 0),
            Deduplication::Window(_)
        ));
        assert!(matches!(
            deduplication("Distributed", "", 0),
            Deduplication::Unknown(why) if why.contains("Distributed")
        ));
    }

    #[test]
    fn ddl_differs_only_where_the_server_does() {
        let old = create_table_sql("db", "t", ServerVersion::parse("18.16.1").unwrap());
        let new = create_table_sql("db", "t", ServerVersion::parse("25.3").unwrap());
        assert!(old.contains("ip FixedString(16)") && new.contains("ip IPv6"));
        assert!(!old.contains("CODEC") && new.contains("CODEC"));
        assert!(
            !old.contains("SETTINGS")
                && new.ends_with("non_replicated_deduplication_window = 1000")
        );
        for ddl in [old, new] {
            assert!(
                ddl.starts_with("CREATE TABLE IF NOT EXISTS `db`.`t` (client_time DateTime('UTC')")
            );
        }
    }
}
