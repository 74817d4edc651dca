//! The events table as data: its columns (name, type on modern and on older servers,
//! codec) in the order its rows are encoded. The service may create this table (see the
//! sink's DDL); the tables of `INGEST_TABLES` are read from the server as they are.

/// One column of the table as this service creates it.
#[derive(Debug, Clone, Copy)]
pub struct ColumnDef {
    /// Column name (also the order rows are encoded in: see [`COLUMNS`]).
    pub name: &'static str,
    /// Type on modern servers.
    pub modern: &'static str,
    /// Type on servers before 20.1.
    pub legacy: &'static str,
    /// Compression codec on modern servers (empty: the default, LZ4).
    pub codec: &'static str,
}

const fn col(
    name: &'static str,
    modern: &'static str,
    legacy: &'static str,
    codec: &'static str,
) -> ColumnDef {
    ColumnDef {
        name,
        modern,
        legacy,
        codec,
    }
}

/// The events table. Times compress best as deltas; free-form strings with ZSTD; the
/// repetitive names are `LowCardinality` (a dictionary per part).
pub const TABLE: [ColumnDef; 11] = [
    col(
        "client_time",
        "DateTime('UTC')",
        "DateTime('UTC')",
        "CODEC(Delta, ZSTD(1))",
    ),
    col(
        "client_time_corrected",
        "DateTime('UTC')",
        "DateTime('UTC')",
        "CODEC(Delta, ZSTD(1))",
    ),
    col(
        "server_time",
        "DateTime('UTC')",
        "DateTime('UTC')",
        "CODEC(Delta, ZSTD(1))",
    ),
    col("device_id", "UUID", "UUID", ""),
    col(
        "device_os",
        "LowCardinality(String)",
        "LowCardinality(String)",
        "",
    ),
    col("session", "String", "String", "CODEC(ZSTD(1))"),
    col("sequence", "UInt32", "UInt32", ""),
    col(
        "event",
        "LowCardinality(String)",
        "LowCardinality(String)",
        "",
    ),
    col("param_int", "UInt32", "UInt32", ""),
    col("param_str", "String", "String", "CODEC(ZSTD(1))"),
    col("ip", "IPv6", "FixedString(16)", ""),
];

/// The events table's column names in encoding order; inserts name them explicitly, so a
/// table with extra (defaulted) columns still accepts the rows.
pub const COLUMNS: [&str; TABLE.len()] = {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].name;
        i += 1;
    }
    names
};

/// The events table's schema with its rules, built once: what `/v1/events` reads bodies
/// with and what its rows are read back with (the quarantine).
pub fn schema() -> Result<&'static super::TableSchema, &'static super::SchemaError> {
    static SCHEMA: std::sync::LazyLock<Result<super::TableSchema, super::SchemaError>> =
        std::sync::LazyLock::new(super::TableSchema::events);
    SCHEMA.as_ref()
}
