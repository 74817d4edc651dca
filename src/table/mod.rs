//! Every table's events, the events table's included: a table's columns as
//! ClickHouse describes them ([`TableSchema`]), and each request's JSON events validated
//! against them and encoded at once into RowBinary [`Rows`], field by field. `/v1/events` is
//! the events table's schema with per-column rules ([`rules`]) that keep its contract word
//! for word; the tables of `INGEST_TABLES` have none.
//!
//! A JSON field fills the column of the same name; fields the table lacks are counted and
//! ignored, unless the table's settings ([`settings`]) read nested fields into columns or
//! keep the rest in one column (`paths`), fill columns from the `User-Agent`, or give new
//! fields columns of their own (`add_columns`: [`NewColumn`], added through [`Columns`]). A missing field or a `null` for a non-`Nullable` column takes the column's
//! default as far as the gateway can compute it: a literal `DEFAULT` (`0`, `'web'`),
//! `now()`, else the type's zero value (see the README: RowBinary and Native carry no
//! per-row "use the default" flag on the servers this writes to). `MATERIALIZED`, `ALIAS`
//! and `EPHEMERAL` columns are never written. Server-filled columns (`SERVER_TIME_COLUMN`,
//! `CLIENT_IP_COLUMN`, and `client_time_corrected` beside `client_time`) are filled as
//! `/v1/events` fills them, and a client's value for them is ignored.
//!
//! The reader of a table's events, before any lane. May import `format` and the shared
//! modules; never `sink`, `lane`, `http` or `app`.

mod decode;
mod encode;
pub mod event;
pub mod events;
pub mod json;
pub mod number;
mod openapi;
mod pass;
mod paths;
mod row;
pub mod rules;
pub mod settings;
mod time;
mod user_agent;
mod variant;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv6Addr;

pub use encode::{Problem, encode, type_name, zero};
pub use json::{Objects, Value};
pub use openapi::json_schema;
use pass::{Events, Read, Slot};
use row::{Direct, Stamp};
use rules::{Rule, Strict};
pub use settings::{AddColumns, SettingError, TableSettings};
pub use time::TimeRange;
pub use user_agent::{MAX_USER_AGENT_BYTES, bounded as bounded_user_agent};

use crate::format::{Rows, Scalar, Shape};
use crate::table::event::{
    DecodeError, FieldError, Format, Loose, MAX_REPORTED_ERRORS, loose_field,
};

/// A column list rows can be encoded with: the table's schema as it was read, and the tag
/// each row encoded with it starts with (empty for the events table, whose list is fixed).
pub trait ColumnList: Send + Sync {
    /// The columns and how each is read.
    fn schema(&self) -> &TableSchema;
    /// The bytes before each row.
    fn tag(&self) -> &[u8];
}

/// Where a table's current column list is found: the sink that reads the table's definition
/// keeps it up to date; handlers encode with whatever it holds when a request comes.
pub trait Columns: Send + Sync {
    /// The list in use, or why the table cannot take rows now (missing, unreadable).
    fn current(&self) -> Result<std::sync::Arc<dyn ColumnList>, String>;

    /// Adds columns for fields that had none (`add_columns`): done once the list in use
    /// has them.
    fn add_columns(
        &self,
        wanted: Vec<NewColumn>,
    ) -> futures_util::future::BoxFuture<'static, Result<(), NotAdded>> {
        let _ = wanted;
        Box::pin(std::future::ready(Err(NotAdded::Failed(
            "this table's columns are not added on demand".into(),
        ))))
    }
}

/// Why columns were not added for a request's fields (`503`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAdded {
    /// The table changed less than `SCHEMA_REFRESH_SECS` ago: at most one change per
    /// interval.
    #[error(
        "the table's columns changed less than SCHEMA_REFRESH_SECS ago; columns for {fields} are added in {secs} s"
    )]
    Later {
        /// The fields waiting for columns.
        fields: String,
        /// Seconds until the next change may be made.
        secs: u64,
    },
    /// The server did not add them, or cannot be asked now.
    #[error("columns for new fields not added: {0}")]
    Failed(String),
}

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
    /// A setting of the table's that its columns cannot take.
    #[error(transparent)]
    Setting(#[from] SettingError),
}

/// Where a top-level field that no column and no path takes goes.
pub(super) enum Unclaimed {
    /// It gets a column (`add_columns`): the body is read again once it exists.
    Column,
    /// Into the rest column, if there is one; else counted as unknown.
    Rest,
    /// Refused (`add_columns`' pattern or cap, without a rest column to keep it).
    Refused(Problem),
}

impl TableSchema {
    /// Where top-level field `name` with `raw` goes when no column and no path takes it;
    /// a column it gets is pushed to `wanted` (once).
    pub(super) fn unclaimed(
        &self,
        name: &str,
        raw: &serde_json::value::RawValue,
        wanted: &mut Vec<NewColumn>,
    ) -> Unclaimed {
        let Some(shaping) = &self.shaping else {
            return Unclaimed::Rest;
        };
        let Some(add) = &shaping.add else {
            return Unclaimed::Rest;
        };
        let keep_rest = shaping.rest.is_some();
        let refuse = |problem: String| match keep_rest {
            true => Unclaimed::Rest,
            false => Unclaimed::Refused(problem.into()),
        };
        let text = raw.get();
        let kind = match text.as_bytes().first() {
            Some(b'"') => NewKind::String,
            Some(b't' | b'f') => NewKind::Bool,
            Some(b'[') => NewKind::Strings,
            Some(b'{') => {
                return refuse(
                    "no column for this field, and an object gets none (paths or the rest \
                     column take its fields)"
                        .into(),
                );
            }
            // Nothing to store, and no type to choose.
            Some(b'n') | None => return Unclaimed::Rest,
            Some(_) if text.contains(['.', 'e', 'E']) => NewKind::Float64,
            Some(_) => NewKind::Int64,
        };
        if wanted.iter().any(|c| c.name == name) {
            return Unclaimed::Column;
        }
        if !add.pattern.is_match(name) {
            return refuse(format!(
                "no column for this field, and its name does not match add_columns.pattern \
                 ({})",
                add.pattern.as_str()
            ));
        }
        if self.columns.len() + wanted.len() >= add.max {
            return refuse(format!(
                "no column for this field, and the table has add_columns.max ({}) columns",
                add.max
            ));
        }
        wanted.push(NewColumn {
            name: name.to_string(),
            kind,
        });
        Unclaimed::Column
    }
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
    /// The fields nothing else took (the table's `rest`).
    Rest(settings::RestKind),
    /// The request's `User-Agent`, or what it says.
    Agent(settings::AgentPart),
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
    /// The field that fills it, as errors name it: its name, or its path.
    pub field: String,
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
    /// The common scalar this column is, for the direct encoding of its usual values.
    direct: Direct,
    /// A missing or `null` field rejects the event (see [`Rule::required`]).
    required: bool,
    /// The strict reading of the column's rule, if it has one (see [`Rule::strict`]).
    strict: Option<Strict>,
}

/// A table's writable columns, in the order rows are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    /// `database.table`, as clients and logs name it.
    pub table: String,
    columns: Vec<TableColumn>,
    by_name: HashMap<String, usize>,
    /// How the one-pass reading takes each column's value (see `pass`), by column.
    reads: Vec<Read>,
    /// Whether each column's name has no quote, backslash or control character: a key in a
    /// body whose bytes are the name then is the name, and the plain scan compares it in
    /// place.
    plain_names: Vec<bool>,
    /// The `client_time` column, when `client_time_corrected` is filled from it.
    client_time: Option<usize>,
    /// Rows are `RowBinaryWithDefaults`: a flag byte before each column (1: the server
    /// computes the column's `DEFAULT`, no value follows; 0: the value follows).
    server_defaults: bool,
    /// The `Array` columns of each `Nested` structure (`n.a`, `n.b`: the part of the name
    /// before the first dot), by index, where it has two or more: ClickHouse refuses a
    /// whole insert whose row has arrays of different lengths in one group, so an event
    /// that has them is refused here, per field.
    nested: Vec<Vec<usize>>,
    /// The dates and times the server shows as written (see [`TimeRange`]).
    range: TimeRange,
    /// The table's paths and rest column, if its settings have them.
    shaping: Option<Box<settings::Shaping>>,
}

/// Server-side facts about one request, shared by its events.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The request's `User-Agent` header, if it has one.
    pub user_agent: Option<&'a str>,
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
    /// Rejected events counted by the first field at fault (`""`: unreadable object).
    pub reasons: Vec<(Cow<'static, str>, usize)>,
    /// Columns the table's `add_columns` gives fields that had none: the body is read
    /// again once the table has them (its rows, read before, are not kept).
    pub wanted: Vec<NewColumn>,
}

/// A column `add_columns` gives a top-level field that had none, typed by its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewColumn {
    /// The field's name.
    pub name: String,
    /// What its value was.
    pub kind: NewKind,
}

/// The type of an added column, by the first value its field had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewKind {
    /// A string: `Nullable(String)`.
    String,
    /// An integer: `Nullable(Int64)`.
    Int64,
    /// A number with a fraction or exponent: `Nullable(Float64)`.
    Float64,
    /// `true`/`false`: `Nullable(Bool)` (`Nullable(UInt8)` on servers without `Bool`).
    Bool,
    /// An array: `Array(String)`, its elements as text.
    Strings,
}

impl NewKind {
    /// The column's type, on a server with `Bool` or without.
    pub fn type_name(self, has_bool: bool) -> &'static str {
        match self {
            Self::String => "Nullable(String)",
            Self::Int64 => "Nullable(Int64)",
            Self::Float64 => "Nullable(Float64)",
            Self::Bool if has_bool => "Nullable(Bool)",
            Self::Bool => "Nullable(UInt8)",
            Self::Strings => "Array(String)",
        }
    }
}

impl TableValidated {
    /// Counts event `index` as rejected for `problems` (drained, the first
    /// [`MAX_REPORTED_ERRORS`] of the request kept); its first problem's field is the reason.
    fn reject(&mut self, index: usize, problems: &mut Vec<(Cow<'static, str>, Problem)>) {
        self.rejected += 1;
        let reason = problems
            .first()
            .map_or(Cow::Borrowed(""), |(f, _)| f.clone());
        match self.reasons.iter_mut().find(|(f, _)| *f == reason) {
            Some((_, n)) => *n += 1,
            None => self.reasons.push((reason, 1)),
        }
        for (field, error) in problems.drain(..) {
            if self.errors.len() < MAX_REPORTED_ERRORS {
                self.errors.push(FieldError {
                    index,
                    field,
                    error,
                });
            }
        }
    }
}

/// The groups of `Array` columns whose arrays ClickHouse requires to be of one length in
/// each row: those whose names share the part before the first dot (its `Nested`
/// structures, as `system.columns` lists them), where a group has two or more.
fn nested_groups(columns: &[TableColumn]) -> Vec<Vec<usize>> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, column) in columns.iter().enumerate() {
        let Some((prefix, _)) = column.name.split_once('.') else {
            continue;
        };
        if !matches!(column.shape, Shape::Array(_)) || column.fill != Fill::Client {
            continue;
        }
        match groups.iter_mut().find(|(p, _)| *p == prefix) {
            Some((_, members)) => members.push(i),
            None => groups.push((prefix, vec![i])),
        }
    }
    groups
        .into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(_, members)| members)
        .collect()
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
            let shape = Shape::parse(&info.type_name)
                .filter(|s| s.layout().is_some() && variant::readable(s));
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
            let direct = Direct::of(&shape);
            out.push(TableColumn {
                name: info.name.clone(),
                field: info.name.clone(),
                type_name: info.type_name.clone(),
                shape,
                default_expression: info.default_expression.clone(),
                has_default: info.default_kind == "DEFAULT",
                fill,
                missing,
                direct,
                required: false,
                strict: None,
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
        let reads = out
            .iter()
            .map(|c| match c.fill {
                Fill::Client if reads_raw(&c.shape) => Read::Raw,
                Fill::Client => Read::Typed,
                _ => Read::Ignore,
            })
            .collect();
        let nested = nested_groups(&out);
        let plain_names = out
            .iter()
            .map(|c| !c.name.bytes().any(|b| matches!(b, b'"' | b'\\' | 0..0x20)))
            .collect();
        Ok(Self {
            table: table.to_string(),
            columns: out,
            by_name,
            reads,
            plain_names,
            client_time,
            server_defaults: false,
            nested,
            range: TimeRange::FULL,
            shaping: None,
        })
    }

    /// The events table ([`events::TABLE`]) as `/v1/events` validates it: its columns
    /// as the modern servers spell them (the bytes are the same on every server).
    pub fn events() -> Result<Self, SchemaError> {
        let columns: Vec<ColumnInfo> = events::TABLE
            .iter()
            .map(|c| ColumnInfo::plain(c.name, c.modern))
            .collect();
        Ok(Self::new("events", &columns, "server_time", "ip")?.with_rules(&rules::events()))
    }

    /// The same columns with `rules` (by column name; see [`rules`]) for the client's fields.
    pub fn with_rules(mut self, rules: &[(&str, Rule)]) -> Self {
        for (name, rule) in rules {
            if let Some(i) = self.columns.iter().position(|c| c.name == *name)
                && self.columns[i].fill == Fill::Client
            {
                let column = &mut self.columns[i];
                column.required = rule.required;
                column.strict = Strict::of(rule, &column.shape);
                if column.strict.is_some() {
                    self.reads[i] = Read::Strict;
                }
            }
        }
        self
    }

    /// The same columns encoded as `RowBinaryWithDefaults` (for a server that reads it, 23.x
    /// and later), when some column has a `DEFAULT`: a missing field then takes the column's
    /// own expression, computed by the server per row.
    pub fn server_defaults(mut self) -> Self {
        self.server_defaults = self.columns.iter().any(|c| c.has_default);
        self
    }

    /// The same columns read as `settings` say (paths, a rest column, the `User-Agent`);
    /// an error names the setting and the column the table cannot take it in.
    pub fn with_settings(mut self, settings: &TableSettings) -> Result<Self, SettingError> {
        let shaping = settings.apply(&self.table, &mut self.columns, &mut self.reads)?;
        self.shaping = shaping.map(Box::new);
        self.nested = nested_groups(&self.columns);
        Ok(self)
    }

    /// The same columns for a server whose dates and times end at `range`: a value past it
    /// is refused per field.
    pub fn with_time_range(mut self, range: TimeRange) -> Self {
        self.range = range;
        for column in &mut self.columns {
            column.direct.last_second = range.last_second;
        }
        self
    }

    /// Whether a column keeps the request's `User-Agent` or what it says.
    pub fn uses_user_agent(&self) -> bool {
        (self.columns.iter()).any(|c| matches!(c.fill, Fill::Agent(_)))
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

    /// Reads a request body (any of the `/v1/events` shapes, see [`json::decode`]) and
    /// validates and encodes its events; each row starts with `tag` (the sink's mark of the
    /// column list it was encoded under). `sent_at` turns the envelope's `sent_at` (if the
    /// body is one) into the request's; its error refuses the request, as a body error does.
    ///
    /// A JSON array, bare or in an envelope, is read in one pass (see `pass`); other shapes
    /// and bodies that pass cannot decide exactly go field by field ([`json::decode`], then
    /// [`TableSchema::validate`]), with the same result.
    pub fn validate_body<'b, E: From<DecodeError>>(
        &self,
        body: &'b [u8],
        format: Format,
        max_events: usize,
        facts: RequestFacts,
        tag: &[u8],
        sent_at: impl Fn(Option<Loose<'b>>) -> Result<Option<i64>, E>,
    ) -> Result<TableValidated, E> {
        let text = std::str::from_utf8(body).map_err(|_| DecodeError::NotText)?;
        // A byte order mark some clients and editors put first says nothing about the events.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (events, envelope_sent_at) = match format {
            Format::Ndjson => (Events::Lines(text), None),
            Format::Json => match text.trim_start().as_bytes().first() {
                Some(b'[') => (Events::Array(text), None),
                Some(b'{') => match json::object_body(text) {
                    json::ObjectBody::Envelope(array, sent_at) => (Events::Array(array), sent_at),
                    json::ObjectBody::Event => (Events::Object(text), None),
                    json::ObjectBody::Other => (Events::None, None),
                },
                _ => (Events::None, None),
            },
        };
        if let Ok(sent_at) = sent_at(envelope_sent_at) {
            match self.one_pass(events, max_events, &RequestFacts { sent_at, ..facts }, tag) {
                Ok(Some(out)) => return Ok(out),
                Ok(None) => {}
                Err(refused) => return Err(refused.into()),
            }
        }
        let objects = json::decode(body, format, max_events)?;
        let facts = RequestFacts {
            sent_at: sent_at(objects.sent_at)?,
            ..facts
        };
        Ok(self.validate(objects.events, facts, tag))
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
        let mut slots: Vec<Slot<'_>> = vec![Slot::Absent; self.columns.len()];
        let stamp = self.stamp(&facts);
        let mut problems: Vec<(Cow<'static, str>, Problem)> = Vec::new();
        let mut rest: Vec<paths::RestItem<'_>> = Vec::new();
        // One row at a time, copied into the rows once whole (a rejected row leaves nothing).
        let mut scratch = Vec::new();
        for (index, object) in objects.into_iter().enumerate() {
            problems.clear();
            rest.clear();
            slots.fill(Slot::Absent);
            match object {
                Err(error) => problems.push(("".into(), error.into())),
                Ok(fields) => {
                    // In body order; the first duplicate or unreadable value is the event's
                    // only problem, as in the one pass.
                    for (name, raw) in &fields {
                        match self.index_of(name) {
                            None => match &self.shaping {
                                None => match self.flattened(name) {
                                    Some(problem) if problems.is_empty() => problems.push(problem),
                                    Some(_) => {}
                                    None => out.unknown_fields += 1,
                                },
                                Some(shaping) => {
                                    let keep_rest = shaping.rest.is_some();
                                    let mut taken = paths::Taken {
                                        schema: self,
                                        slots: &mut slots,
                                        problems: &mut problems,
                                        rest: &mut rest,
                                        keep_rest,
                                        raw_leaves: true,
                                    };
                                    match shaping.root(name) {
                                        Some(node) => {
                                            let mut de =
                                                serde_json::Deserializer::from_str(raw.get());
                                            // The raw value was read as JSON already.
                                            let seed = taken.root(name.clone(), node);
                                            let _ = serde::de::DeserializeSeed::deserialize(
                                                seed, &mut de,
                                            );
                                        }
                                        None => match self.unclaimed(name, raw, &mut out.wanted) {
                                            Unclaimed::Column => {}
                                            Unclaimed::Rest if keep_rest => {
                                                taken.leftover(name.clone(), raw)
                                            }
                                            Unclaimed::Rest => out.unknown_fields += 1,
                                            Unclaimed::Refused(problem) => {
                                                if taken.problems.is_empty() {
                                                    taken
                                                        .problems
                                                        .push((name.to_string().into(), problem));
                                                }
                                            }
                                        },
                                    }
                                }
                            },
                            Some(_) if !problems.is_empty() => {}
                            Some(i) if self.reads[i] == Read::Ignore => {}
                            Some(i) if !matches!(slots[i], Slot::Absent) => {
                                problems.push(self.duplicate(i));
                            }
                            Some(i) if self.reads[i] == Read::Strict => {
                                match loose_field(raw.get()) {
                                    Ok(value) => slots[i] = Slot::from(value),
                                    Err(e) => problems
                                        .push((self.columns[i].field.clone().into(), e.into())),
                                }
                            }
                            Some(i) => slots[i] = Slot::Raw(raw),
                        }
                    }
                    if problems.is_empty() {
                        scratch.clear();
                        scratch.extend_from_slice(tag);
                        self.encode_row(&slots, &rest, &facts, &stamp, &mut scratch, &mut problems);
                        if problems.is_empty() {
                            out.rows.push_encoded(&scratch);
                        }
                    }
                }
            }
            if !problems.is_empty() {
                out.reject(index, &mut problems);
            }
        }
        out
    }

    /// The problem of a second value for column `i`.
    /// A field named after one of the table's `Nested` structures (or, on 18.16, an
    /// `Array(Tuple(...))` column, which it lists as `at.1`, `at.2`): the table keeps it as
    /// one array per member, and a value sent whole would be dropped, so it is refused.
    #[cold]
    fn flattened(&self, name: &str) -> Option<(Cow<'static, str>, Problem)> {
        let group = self.nested.iter().find(|group| {
            self.columns[group[0]]
                .name
                .split_once('.')
                .is_some_and(|(prefix, _)| prefix == name)
        })?;
        let members: Vec<&str> = group
            .iter()
            .map(|&i| self.columns[i].name.as_str())
            .collect();
        Some((
            name.to_string().into(),
            format!(
                "the table keeps this field as one array per member ({}): send those instead",
                members.join(", ")
            )
            .into(),
        ))
    }

    fn duplicate(&self, i: usize) -> (Cow<'static, str>, Problem) {
        let name = &self.columns[i].name;
        (
            name.clone().into(),
            format!("duplicate field `{name}`").into(),
        )
    }

    /// Whether `key` is the paths' first field `r`.
    fn is_root(&self, r: usize, key: &str) -> bool {
        (self.shaping.as_ref())
            .and_then(|s| s.roots.get(r))
            .is_some_and(|(k, _)| pass::same_key(k, key))
    }

    /// The column a field fills: compared in place for a table of a few dozen columns
    /// (cheaper than hashing the name), looked up beyond. A column the settings fill
    /// another way (a path, the rest, the `User-Agent`) is not found by its name.
    fn index_of(&self, name: &str) -> Option<usize> {
        let found = match self.columns.len() <= 32 {
            true => self
                .columns
                .iter()
                .position(|c| pass::same_key(&c.name, name)),
            false => self.by_name.get(name).copied(),
        };
        match self.shaping {
            None => found,
            Some(_) => found.filter(|&i| self.reads[i] != Read::Elsewhere),
        }
    }
}

/// Whether the one pass keeps a column's value as raw JSON text: where the digits as
/// written matter (floats, `Decimal`, 128/256-bit integers) or the structure does.
fn reads_raw(shape: &Shape) -> bool {
    match shape {
        Shape::Nullable(inner) | Shape::LowCardinality(inner) => reads_raw(inner),
        Shape::Array(_) | Shape::Map(..) | Shape::Tuple(_) | Shape::Variant { .. } => true,
        Shape::Scalar(Scalar::Json | Scalar::Dynamic) => true,
        Shape::Scalar(Scalar::Decimal { .. } | Scalar::Float32 | Scalar::Float64) => true,
        Shape::Scalar(Scalar::Int(bits) | Scalar::UInt(bits)) => *bits > 64,
        Shape::Scalar(_) => false,
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
    match value.map(|v| encode(shape, &v, TimeRange::FULL, &mut bytes)) {
        Some(Ok(())) => Missing::Bytes(bytes),
        _ => Missing::Bytes(zero(shape)),
    }
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod paths_tests;
#[cfg(test)]
mod tests;
