//! Which body an insert carries: a Native block of the table's column types sorted by its
//! sorting key (the default), or the rows' RowBinary as they are (the fallback for a table
//! whose types the block builder does not encode, and for `direct` mode).

use serde::Serialize;

use crate::format::{BlockBuilder, Schema, SortKey};

/// How inserts are encoded, decided once per `prepare` from the table as the server
/// describes it.
#[derive(Debug, Clone)]
pub enum InsertFormat {
    /// Columnar, in key order: ClickHouse neither converts rows nor sorts (or sorts only the
    /// part of the key the gateway cannot evaluate).
    Native(BlockBuilder),
    /// The encoded rows as they are; the reason is logged and shown in `/v1/health`.
    RowBinary(String),
}

/// What `/v1/health` shows of the format: whether the server still sorts, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormatInfo {
    /// `Native` or `RowBinary`.
    pub format: &'static str,
    /// `lz4` or `none`.
    pub compression: &'static str,
    /// Key expressions each block is sorted by in the gateway.
    pub sorted_by: Vec<String>,
    /// Key expressions the gateway cannot evaluate: ClickHouse sorts each block by these
    /// (the whole key with `RowBinary`).
    pub server_sorts_by: Vec<String>,
    /// Why inserts are not Native blocks, if they are not.
    pub fallback_reason: Option<String>,
}

impl InsertFormat {
    /// The format for the table's `columns` (`(name, type)` in RowBinary order) and its
    /// sorting key as the server spells it. `server_utc`: the server's time zone is UTC.
    pub fn plan(columns: &[(String, String)], sorting_key: &str, server_utc: bool) -> Self {
        match Schema::new(columns, server_utc) {
            Ok(schema) => {
                let key = SortKey::plan(sorting_key, &schema);
                Self::Native(BlockBuilder::new(schema, key))
            }
            Err(e) => Self::RowBinary(e.to_string()),
        }
    }

    /// The `FORMAT` clause's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Native(_) => "Native",
            Self::RowBinary(_) => "RowBinary",
        }
    }

    /// What health reports; `sorting_key` is the table's whole key.
    pub fn info(&self, sorting_key: &str, compression: &'static str) -> FormatInfo {
        match self {
            Self::Native(builder) => FormatInfo {
                format: self.name(),
                compression,
                sorted_by: builder.key().sorted_by().to_vec(),
                server_sorts_by: builder.key().left_to_server().to_vec(),
                fallback_reason: None,
            },
            Self::RowBinary(reason) => FormatInfo {
                format: self.name(),
                compression,
                sorted_by: Vec::new(),
                server_sorts_by: if sorting_key.trim().is_empty() {
                    Vec::new()
                } else {
                    vec![sorting_key.trim().to_string()]
                },
                fallback_reason: Some(reason.clone()),
            },
        }
    }
}

/// The `ORDER BY` expression of a table's definition (`SHOW CREATE TABLE`, or
/// `system.tables.create_table_query`), for servers whose `system.tables` has no
/// `sorting_key`. Empty if it has none (an engine without a key, or the old
/// `MergeTree(date, key, granularity)` syntax, which is left to the server).
pub fn order_by_of(create_query: &str) -> String {
    let Some(at) = create_query.find("ORDER BY ") else {
        return String::new();
    };
    let rest = &create_query[at + "ORDER BY ".len()..];
    let end = [
        " SETTINGS ",
        " SAMPLE BY ",
        " TTL ",
        " PRIMARY KEY ",
        " PARTITION BY ",
    ]
    .iter()
    .filter_map(|clause| rest.find(clause))
    .min()
    .unwrap_or(rest.len());
    rest[..end].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_by_is_cut_from_the_definition() {
        let ddl = "CREATE TABLE db.events (a String) ENGINE = MergeTree PARTITION BY \
                   toYYYYMM(t) ORDER BY (event, toDate(server_time)) SETTINGS index_granularity = 8192";
        assert_eq!(order_by_of(ddl), "(event, toDate(server_time))");
        assert_eq!(order_by_of("CREATE TABLE t (a UInt8) ENGINE = Log"), "");
    }

    #[test]
    fn a_type_the_builder_lacks_falls_back_to_rowbinary_and_says_why() {
        let columns = vec![
            ("a".to_string(), "String".to_string()),
            ("b".to_string(), "AggregateFunction(sum, UInt8)".to_string()),
        ];
        let format = InsertFormat::plan(&columns, "a", true);
        let info = format.info("a", "lz4");
        assert_eq!(info.format, "RowBinary");
        assert!(
            info.fallback_reason
                .unwrap()
                .contains("AggregateFunction(sum, UInt8)")
        );
        assert_eq!(info.server_sorts_by, ["a"]);
    }
}
