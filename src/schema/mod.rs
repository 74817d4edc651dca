//! Any table's events (issue 12): a table's columns as ClickHouse describes them
//! ([`TableSchema`]), and each request's JSON events validated against them and encoded at
//! once into RowBinary [`Rows`], field by field, the way `/v1/events` does for its own table.
//!
//! A JSON field fills the column of the same name; fields the table lacks are counted and
//! ignored. A missing field or a `null` for a non-`Nullable` column takes the column's
//! default as far as the gateway can compute it: a literal `DEFAULT` (`0`, `'web'`),
//! `now()`, else the type's zero value (see the README: RowBinary and Native carry no
//! per-row "use the default" flag on the servers this writes to). `MATERIALIZED`, `ALIAS`
//! and `EPHEMERAL` columns are never written. Server-filled columns (`SERVER_TIME_COLUMN`,
//! `CLIENT_IP_COLUMN`, and `client_time_corrected` beside `client_time`) are filled as
//! `/v1/events` fills them, and a client's value for them is ignored.

mod decode;
mod encode;
pub mod json;
pub mod number;
mod openapi;
mod time;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv6Addr;

use serde_json::value::RawValue;

pub use encode::{Problem, encode, type_name, zero};
pub use json::{Objects, Value};
pub use openapi::json_schema;

use crate::block::{Rows, Scalar, Shape};
use crate::event::{FieldError, MAX_DEVICE_QUEUE_SECS, MAX_REPORTED_ERRORS};

/// One column as `system.columns` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, clickhouse::Row)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Type, as the server spells it.
    #[serde(rename = "type")]
    pub type_name: String,
    /// `DEFAULT`, `MATERIALIZED`, `ALIAS`, `EPHEMERAL` or empty.
    pub default_kind: String,
    /// The default's expression, or empty.
    pub default_expression: String,
}

impl ColumnInfo {
    /// A column without a default (tests).
    pub fn plain(name: &str, type_name: &str) -> Self {
        Self {
            name: name.into(),
            type_name: type_name.into(),
            default_kind: String::new(),
            default_expression: String::new(),
        }
    }
}

/// Why a table cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A column of a type this service does not write, without a default to leave it to.
    #[error(
        "table {table}: column {column} has type {type_name}, which this service cannot write \
         (give it a DEFAULT to leave it out of inserts)"
    )]
    Unsupported {
        /// The table.
        table: String,
        /// The column.
        column: String,
        /// Its type.
        type_name: String,
    },
    /// No column the service may write.
    #[error("table {0} has no column this service can write")]
    NoColumns(String),
    /// The table does not exist (yet).
    #[error("table {0} does not exist")]
    Missing(String),
}

/// Who fills a column.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fill {
    /// The client's field.
    Client,
    /// The time the request arrived (`SERVER_TIME_COLUMN`).
    ServerTime,
    /// The client's address (`CLIENT_IP_COLUMN`).
    ClientIp,
    /// `client_time` corrected for the client's clock skew, as `/v1/events` does.
    Corrected,
}

/// What a missing field takes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Missing {
    /// These RowBinary bytes (a literal default, or the type's zero value).
    Bytes(Vec<u8>),
    /// The request's time (`DEFAULT now()`).
    Now,
}

/// One column the service writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// Column name (also the JSON field's).
    pub name: String,
    /// Type as the server spells it.
    pub type_name: String,
    /// The parsed type.
    pub shape: Shape,
    /// Whether the column has a `DEFAULT` the gateway cannot compute (its zero value is
    /// written instead), for the README's and the OpenAPI's notes.
    pub default_expression: String,
    /// A `DEFAULT` column: with [`TableSchema::server_defaults`], a missing field is left to
    /// the server's expression.
    has_default: bool,
    fill: Fill,
    missing: Missing,
}

/// A table's writable columns, in the order rows are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// `database.table`, as clients and logs name it.
    pub table: String,
    columns: Vec<TableColumn>,
    by_name: HashMap<String, usize>,
    /// The `client_time` column, when `client_time_corrected` is filled from it.
    client_time: Option<usize>,
    /// Rows are `RowBinaryWithDefaults`: a flag byte before each column (1: the server
    /// computes the column's `DEFAULT`, no value follows; 0: the value follows).
    server_defaults: bool,
}

/// Server-side facts about one request, shared by its events.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    /// When the request arrived, nanoseconds since 1970.
    pub server_time_nanos: i128,
    /// The client's address.
    pub ip: Ipv6Addr,
    /// When the client says it sent the request (seconds), if it did.
    pub sent_at: Option<i64>,
}

/// One request's outcome.
#[derive(Debug, Default)]
pub struct TableValidated {
    /// Accepted events, encoded.
    pub rows: Rows,
    /// How many events were rejected.
    pub rejected: usize,
    /// The first errors.
    pub errors: Vec<FieldError>,
    /// Fields the table has no column for (ignored).
    pub unknown_fields: usize,
}

impl TableSchema {
    /// The writable columns of `table` described by `columns`. `server_time_column` and
    /// `client_ip_column`: `SERVER_TIME_COLUMN`, `CLIENT_IP_COLUMN`.
    pub fn new(
        table: &str,
        columns: &[ColumnInfo],
        server_time_column: &str,
        client_ip_column: &str,
    ) -> Result<Self, SchemaError> {
        if columns.is_empty() {
            return Err(SchemaError::Missing(table.to_string()));
        }
        let has = |name: &str| columns.iter().any(|c| c.name == name);
        let mut out = Vec::new();
        for info in columns {
            if matches!(
                info.default_kind.as_str(),
                "MATERIALIZED" | "ALIAS" | "EPHEMERAL"
            ) {
                continue;
            }
            let shape = Shape::parse(&info.type_name).filter(|s| s.layout().is_some());
            let Some(shape) = shape else {
                if info.default_kind == "DEFAULT" {
                    // Left out of inserts: the server computes it.
                    continue;
                }
                return Err(SchemaError::Unsupported {
                    table: table.to_string(),
                    column: info.name.clone(),
                    type_name: info.type_name.clone(),
                });
            };
            let is_time = matches!(
                shape.plain(),
                Shape::Scalar(Scalar::DateTime { .. } | Scalar::DateTime64 { .. })
            );
            let fill = if info.name == server_time_column && is_time {
                Fill::ServerTime
            } else if info.name == client_ip_column
                && matches!(
                    shape.plain(),
                    Shape::Scalar(
                        Scalar::Ipv6 | Scalar::Ipv4 | Scalar::FixedString(16) | Scalar::String
                    )
                )
            {
                Fill::ClientIp
            } else if info.name == "client_time_corrected" && is_time && has("client_time") {
                Fill::Corrected
            } else {
                Fill::Client
            };
            let missing = match info.default_kind.as_str() {
                "DEFAULT" => literal_default(&shape, &info.default_expression),
                _ => Missing::Bytes(zero(&shape)),
            };
            out.push(TableColumn {
                name: info.name.clone(),
                type_name: info.type_name.clone(),
                shape,
                default_expression: info.default_expression.clone(),
                has_default: info.default_kind == "DEFAULT",
                fill,
                missing,
            });
        }
        if out.is_empty() {
            return Err(SchemaError::NoColumns(table.to_string()));
        }
        let by_name = out
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.clone(), i))
            .collect();
        let client_time = match out.iter().any(|c| c.fill == Fill::Corrected) {
            true => out.iter().position(|c| c.name == "client_time"),
            false => None,
        };
        Ok(Self {
            table: table.to_string(),
            columns: out,
            by_name,
            client_time,
            server_defaults: false,
        })
    }

    /// The same columns encoded as `RowBinaryWithDefaults` (for a server that reads it, 23.x
    /// and later), when some column has a `DEFAULT`: a missing field then takes the column's
    /// own expression, computed by the server per row.
    pub fn server_defaults(mut self) -> Self {
        self.server_defaults = self.columns.iter().any(|c| c.has_default);
        self
    }

    /// Whether rows are `RowBinaryWithDefaults` (see [`TableSchema::server_defaults`]).
    pub fn uses_server_defaults(&self) -> bool {
        self.server_defaults
    }

    /// The columns, in encoding order.
    pub fn columns(&self) -> &[TableColumn] {
        &self.columns
    }

    /// `(name, type)` per column, in encoding order (what the block builder and the
    /// insert's column list take).
    pub fn column_list(&self) -> Vec<(String, String)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.type_name.clone()))
            .collect()
    }

    /// Whether a client's field fills this column (server-filled columns ignore it).
    pub fn is_client_field(&self, column: &TableColumn) -> bool {
        column.fill == Fill::Client
    }

    /// Validates and encodes every event of a request; each row starts with `tag` (the
    /// sink's mark of the column list it was encoded under).
    pub fn validate(
        &self,
        objects: Vec<Result<json::Fields<'_>, String>>,
        facts: RequestFacts,
        tag: &[u8],
    ) -> TableValidated {
        let mut out = TableValidated {
            rows: Rows::with_capacity(objects.len(), 64 * self.columns.len()),
            ..TableValidated::default()
        };
        let mut slots: Vec<Option<&RawValue>> = vec![None; self.columns.len()];
        let mut problems: Vec<(Cow<'static, str>, Problem)> = Vec::new();
        // One row at a time, copied into the rows once whole (a rejected row leaves nothing).
        let mut scratch = Vec::new();
        for (index, object) in objects.into_iter().enumerate() {
            problems.clear();
            slots.iter_mut().for_each(|s| *s = None);
            match object {
                Err(error) => problems.push(("".into(), error.into())),
                Ok(fields) => {
                    for (name, raw) in &fields {
                        match self.index_of(name) {
                            Some(i) if slots[i].is_some() => {
                                problems.push((
                                    self.columns[i].name.clone().into(),
                                    format!("duplicate field `{}`", self.columns[i].name).into(),
                                ));
                            }
                            Some(i) => slots[i] = Some(raw),
                            None => out.unknown_fields += 1,
                        }
                    }
                    if problems.is_empty() {
                        scratch.clear();
                        scratch.extend_from_slice(tag);
                        self.encode_row(&slots, &facts, &mut scratch, &mut problems);
                        if problems.is_empty() {
                            out.rows.push_encoded(&scratch);
                        }
                    }
                }
            }
            if !problems.is_empty() {
                out.rejected += 1;
                for (field, error) in problems.drain(..) {
                    if out.errors.len() < MAX_REPORTED_ERRORS {
                        out.errors.push(FieldError {
                            index,
                            field,
                            error,
                        });
                    }
                }
            }
        }
        out
    }

    /// The column a field fills: compared in place for a table of a few dozen columns
    /// (cheaper than hashing the name), looked up beyond.
    fn index_of(&self, name: &str) -> Option<usize> {
        if self.columns.len() <= 32 {
            return self.columns.iter().position(|c| c.name == name);
        }
        self.by_name.get(name).copied()
    }

    /// Encodes one event's columns into `buf`; problems are pushed, per field.
    fn encode_row(
        &self,
        slots: &[Option<&RawValue>],
        facts: &RequestFacts,
        buf: &mut Vec<u8>,
        problems: &mut Vec<(Cow<'static, str>, Problem)>,
    ) {
        for (column, slot) in self.columns.iter().zip(slots) {
            if self.server_defaults {
                let absent = match slot {
                    None => true,
                    Some(raw) => {
                        raw.get() == "null" && !matches!(column.shape.plain(), Shape::Nullable(_))
                    }
                };
                if column.fill == Fill::Client && column.has_default && absent {
                    buf.push(1);
                    continue;
                }
                buf.push(0);
            }
            match column.fill {
                Fill::ServerTime => put_time(&column.shape, facts.server_time_nanos, buf),
                Fill::ClientIp => put_ip(&column.shape, facts.ip, buf),
                Fill::Corrected => match self.corrected(slots, facts) {
                    Some(nanos) => put_time(&column.shape, nanos, buf),
                    None => column.put_missing(facts, buf),
                },
                Fill::Client => {
                    let value = match slot.map(Value::read) {
                        None | Some(Ok(Value::Null))
                            if !matches!(column.shape.plain(), Shape::Nullable(_)) =>
                        {
                            column.put_missing(facts, buf);
                            continue;
                        }
                        None => {
                            column.put_missing(facts, buf);
                            continue;
                        }
                        Some(Ok(value)) => value,
                        Some(Err(e)) => {
                            problems.push((column.name.clone().into(), e.into()));
                            continue;
                        }
                    };
                    if let Err(e) = encode(&column.shape, &value, buf) {
                        problems.push((column.name.clone().into(), e));
                    }
                }
            }
        }
    }

    /// `client_time` corrected by the request's `sent_at`: `server_time - (sent_at -
    /// client_time)` when plausible, else `client_time` itself (the `/v1/events` rule).
    fn corrected(&self, slots: &[Option<&RawValue>], facts: &RequestFacts) -> Option<i128> {
        let column = self.client_time?;
        let raw = slots[column]?;
        let client = match Value::read(raw).ok()? {
            Value::Str(s) => time::from_text_in(&s, zone_of(&self.columns[column].shape))?,
            Value::Number(n) => time::from_number(n)?,
            _ => return None,
        };
        let Some(sent_at) = facts.sent_at else {
            return Some(client);
        };
        let client_seconds = client.div_euclid(1_000_000_000) as i64;
        let waited = sent_at - client_seconds;
        if !(0..=MAX_DEVICE_QUEUE_SECS).contains(&waited) {
            return Some(client);
        }
        let server_seconds = facts.server_time_nanos.div_euclid(1_000_000_000);
        Some((server_seconds - i128::from(waited)) * 1_000_000_000)
    }
}

impl TableColumn {
    fn put_missing(&self, facts: &RequestFacts, buf: &mut Vec<u8>) {
        match &self.missing {
            Missing::Bytes(bytes) => buf.extend_from_slice(bytes),
            Missing::Now => put_time(&self.shape, facts.server_time_nanos, buf),
        }
    }
}

/// The zone of a `DateTime('zone')`/`DateTime64(p, 'zone')` column (wrappers looked
/// through), in which its times without an offset are read.
fn zone_of(shape: &Shape) -> Option<&crate::block::ColumnZone> {
    match shape {
        Shape::Nullable(inner) | Shape::LowCardinality(inner) => zone_of(inner),
        Shape::Scalar(Scalar::DateTime { zone } | Scalar::DateTime64 { zone, .. }) => zone.as_ref(),
        _ => None,
    }
}

/// A time into a `DateTime`/`DateTime64` column (wrappers looked through).
fn put_time(shape: &Shape, nanos: i128, buf: &mut Vec<u8>) {
    match shape {
        Shape::Nullable(inner) => {
            buf.push(0);
            put_time(inner, nanos, buf)
        }
        Shape::LowCardinality(inner) => put_time(inner, nanos, buf),
        Shape::Scalar(Scalar::DateTime64 { precision, .. }) => {
            let ticks = i64::try_from(time::ticks(nanos, *precision)).unwrap_or(i64::MAX);
            buf.extend_from_slice(&ticks.to_le_bytes());
        }
        _ => {
            let seconds = u32::try_from(nanos.div_euclid(1_000_000_000)).unwrap_or(u32::MAX);
            buf.extend_from_slice(&seconds.to_le_bytes());
        }
    }
}

/// The client's address into an `IPv6`, `FixedString(16)`, `IPv4` or `String` column.
fn put_ip(shape: &Shape, ip: Ipv6Addr, buf: &mut Vec<u8>) {
    match shape {
        Shape::Nullable(inner) => {
            buf.push(0);
            put_ip(inner, ip, buf)
        }
        Shape::LowCardinality(inner) => put_ip(inner, ip, buf),
        Shape::Scalar(Scalar::Ipv4) => {
            // An IPv6 client has no IPv4 address: 0.0.0.0.
            let v4 = ip.to_ipv4_mapped().map_or(0, u32::from);
            buf.extend_from_slice(&v4.to_le_bytes());
        }
        Shape::Scalar(Scalar::String) => {
            let text = ip.to_canonical().to_string();
            crate::block::put_leb128(buf, text.len());
            buf.extend_from_slice(text.as_bytes());
        }
        _ => buf.extend_from_slice(&ip.octets()),
    }
}

/// What a missing field of a `DEFAULT expression` column takes: the literal's value when the
/// expression is a number or a quoted string, the request's time for `now()`, else zero.
fn literal_default(shape: &Shape, expression: &str) -> Missing {
    let expression = expression.trim();
    let now = matches!(expression, "now()" | "now64()")
        || (expression.starts_with("now64(") && expression.ends_with(')'));
    if now
        && matches!(
            shape.plain(),
            Shape::Scalar(Scalar::DateTime { .. } | Scalar::DateTime64 { .. })
        )
    {
        return Missing::Now;
    }
    let value = if let Some(inner) = expression
        .strip_prefix('\'')
        .and_then(|e| e.strip_suffix('\''))
        .filter(|inner| !inner.contains('\''))
    {
        Some(Value::Str(Cow::Owned(inner.replace("\\\\", "\\"))))
    } else if !expression.is_empty()
        && expression
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'.' | b'e' | b'E' | b'+'))
    {
        Some(Value::Number(expression))
    } else {
        None
    };
    let mut bytes = Vec::new();
    match value.map(|v| encode(shape, &v, &mut bytes)) {
        Some(Ok(())) => Missing::Bytes(bytes),
        _ => Missing::Bytes(zero(shape)),
    }
}

#[cfg(test)]
mod tests;
