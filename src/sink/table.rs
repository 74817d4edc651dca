//! The sink of another table's lane: the table's columns read from the server
//! (never created here), shared with the handlers that encode rows against them
//! ([`TableState`]), and inserts of Native blocks built with the one block builder.
//!
//! Each row carries the 4-byte tag of the column list it was encoded under (a hash of the
//! columns' names and types, so it means the same after a restart). A batch is written as
//! one insert per run of rows with the same tag, each with its own column list: rows
//! encoded before an `ADD COLUMN` are written as they are (the new column takes its
//! default), and rows whose columns the table no longer has (dropped or retyped) are
//! refused as data, so the flusher quarantines them with that reason, never drops them.
//!
//! In a cluster (`CLICKHOUSE_CLUSTER`) the operator's `<table>_local` is written on one
//! replica of each row's shard ([`TableSink::for_replica`]), and its columns, with the
//! `Distributed` table's sharding expression, are read from the first host that answers
//! (see `table_shard.rs`).

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use parking_lot::Mutex;

use super::format::order_by_of;
use super::schema::ServerVersion;
use super::table_columns::{self, Definition};
use super::{Connection, InsertId, Settings, Sink, SinkError, query_log};
use crate::format::{BlockBuilder, ColumnType, RowsRef, Schema, SortKey};
use crate::format::{KeyPlan, ShardingKey};
use crate::table::{ColumnInfo, SchemaError, TableSchema};

pub use super::table_columns::TAG_BYTES;

/// A column list as loaded: the schema the handlers encode with and the block builder the
/// sink writes with.
pub struct Loaded {
    /// The writable columns.
    pub schema: TableSchema,
    /// What each row of this list starts with.
    pub tag: [u8; TAG_BYTES],
    builder: BlockBuilder,
    layouts: Vec<ColumnType>,
    /// `(columns) FORMAT ...`: the insert after its table's name.
    insert_sql: String,
}

/// What a table's handlers and its sink share.
pub struct TableState {
    /// `db.table`.
    pub target: String,
    /// The list rows are encoded with now, or why the table cannot take rows.
    current: Mutex<Result<Arc<Loaded>, String>>,
    /// Every list rows may have been encoded with, by tag: this process's, and (`disk`
    /// mode) those saved by earlier runs whose rows may still be in the spool.
    pub(super) known: Mutex<HashMap<[u8; TAG_BYTES], Arc<Loaded>>>,
    /// `disk` mode: where the lists are saved (the table's spool directory).
    columns_dir: Option<PathBuf>,
    /// In a cluster: the `Distributed` table's sharding expression, once read.
    pub(super) sharding: Mutex<Option<ShardingKey>>,
    /// In a cluster: where the key sits in rows of each list, under the current expression.
    pub(super) key_plans: parking_lot::RwLock<HashMap<[u8; TAG_BYTES], Arc<KeyPlan>>>,
    /// In a cluster: why the `Distributed` table's sharding expression cannot be evaluated
    /// here, if it was read and cannot (start-up stops on it).
    pub(super) unevaluable: Mutex<Option<String>>,
}

impl crate::table::ColumnList for Loaded {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }

    fn tag(&self) -> &[u8] {
        &self.tag
    }
}

impl crate::table::Columns for TableState {
    fn current(&self) -> Result<Arc<dyn crate::table::ColumnList>, String> {
        TableState::current(self).map(|loaded| loaded as Arc<dyn crate::table::ColumnList>)
    }
}

impl TableState {
    /// The current column list, or why there is none.
    pub fn current(&self) -> Result<Arc<Loaded>, String> {
        self.current.lock().clone()
    }

    /// One encoded row (tag first) as JSON with its column names, if its list is known.
    pub fn decode_row(&self, row: &[u8]) -> Option<serde_json::Value> {
        let (tag, body) = row.split_at_checked(TAG_BYTES)?;
        let tag: [u8; TAG_BYTES] = tag.try_into().ok()?;
        let loaded = self.known.lock().get(&tag).cloned()?;
        loaded.schema.decode_row(body)
    }
}

/// Writes one allowed table. Each thread gets its own (see [`TableSink::sharing`]): a
/// client's pooled connections belong to the runtime that opened them.
pub struct TableSink {
    /// Where inserts (and, on old servers, the check of a lost answer) go.
    base: Client,
    /// Where the table's definition is read, tried in order: `base`, or in a cluster every
    /// host of `CLICKHOUSE_HOSTS` (so every shard's sinks agree on one list).
    readers: Vec<Client>,
    database: String,
    table: String,
    /// The table inserts name: `table`, or in a cluster `<table>_local`.
    insert_table: String,
    /// `CLICKHOUSE_CLUSTER`, if set: the sharding expression is read from `table`.
    cluster: Option<String>,
    timeout: Duration,
    server_time_column: String,
    client_ip_column: String,
    version: Arc<Mutex<Option<ServerVersion>>>,
    /// Whether the server reads `RowBinaryWithDefaults` (asked with the version).
    server_defaults: Arc<Mutex<bool>>,
    state: Arc<TableState>,
}

impl TableSink {
    /// A sink for `name` (`table` in `CLICKHOUSE_NAME`, or `db.table`). Does no I/O.
    pub fn new(settings: &Settings, name: &str) -> Self {
        let base = settings.connection.client();
        let readers = match settings.cluster.is_some() {
            true => settings.hosts.iter().map(Connection::client).collect(),
            false => vec![base.clone()],
        };
        let (database, table) = match name.split_once('.') {
            Some((db, table)) => (db.to_string(), table.to_string()),
            None => (settings.database.clone(), name.to_string()),
        };
        let target = format!("{database}.{table}");
        Self {
            base,
            readers,
            insert_table: match settings.cluster.is_some() {
                true => format!("{table}_local"),
                false => table.clone(),
            },
            cluster: settings.cluster.clone(),
            database,
            table,
            timeout: settings.timeout,
            server_time_column: settings.server_time_column.clone(),
            client_ip_column: settings.client_ip_column.clone(),
            version: Arc::new(Mutex::new(None)),
            server_defaults: Arc::new(Mutex::new(false)),
            state: Arc::new(TableState {
                current: Mutex::new(Err(format!("{target}: columns not read yet"))),
                known: Mutex::new(HashMap::new()),
                columns_dir: settings
                    .columns_root
                    .as_ref()
                    .map(|root| root.join(format!("table-{name}"))),
                target,
                sharding: Mutex::new(None),
                key_plans: Default::default(),
                unevaluable: Mutex::new(None),
            }),
        }
    }

    /// Another sink for the same table, with its own client (for another thread's runtime)
    /// and the same shared state.
    pub fn sharing(settings: &Settings, other: &TableSink) -> Self {
        let name = format!("{}.{}", other.database, other.table);
        Self {
            version: other.version.clone(),
            server_defaults: other.server_defaults.clone(),
            state: other.state.clone(),
            ..Self::new(settings, &name)
        }
    }

    /// In a cluster: another sink for the same table that inserts into `<table>_local` on
    /// the server `connection` names (one replica of a shard), reading the definition as
    /// every sink does.
    pub fn for_replica(settings: &Settings, other: &TableSink, connection: &Connection) -> Self {
        Self {
            base: connection.client(),
            ..Self::sharing(settings, other)
        }
    }

    /// The state the handlers encode with.
    pub fn state(&self) -> Arc<TableState> {
        self.state.clone()
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        super::bounded(self.timeout, fut).await
    }

    /// Reads the table's columns again; a changed list becomes the one new rows are encoded
    /// with (rows already encoded keep theirs). Returns the problem if the table cannot take
    /// rows (missing, or a column of a type this service cannot write).
    ///
    /// `disk` mode: a new list is saved in the spool directory (see [`table_columns`])
    /// before any row is encoded with it; if it cannot be, the list in use stays (or, with
    /// none yet, the table answers `503`), so no row is acknowledged under a list a restart
    /// could not read back.
    pub async fn refresh(&self) -> Result<(), String> {
        let result = self.load().await;
        self.adopt(result)
    }

    /// What [`TableSink::refresh`] does with what it read (no server I/O).
    fn adopt(&self, result: Result<(Loaded, Definition), String>) -> Result<(), String> {
        let result = match result {
            Ok((loaded, definition)) => self.save(&loaded, &definition).map(|()| loaded),
            Err(problem) => Err(problem),
        };
        let mut current = self.state.current.lock();
        match result {
            Ok(loaded) => {
                let changed = current.as_ref().map_or(true, |c| c.tag != loaded.tag);
                if changed {
                    let known = &mut *self.state.known.lock();
                    let loaded = known.entry(loaded.tag).or_insert_with(|| Arc::new(loaded));
                    log::info!(
                        "{}: writing columns {}",
                        self.state.target,
                        loaded
                            .schema
                            .columns()
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    *current = Ok(loaded.clone());
                }
                Ok(())
            }
            Err(problem) => {
                if current.as_ref().err() != Some(&problem) {
                    log::warn!("{problem}");
                }
                // A table that is gone or unreadable takes no rows; a list that could not
                // be saved leaves the one in use (saved earlier) in place.
                if !problem.starts_with(UNSAVED) || current.is_err() {
                    *current = Err(problem.clone());
                }
                Err(problem)
            }
        }
    }

    /// `disk` mode: saves `loaded`'s definition unless this process knows it already.
    fn save(&self, loaded: &Loaded, definition: &Definition) -> Result<(), String> {
        let Some(dir) = &self.state.columns_dir else {
            return Ok(());
        };
        if self.state.known.lock().contains_key(&loaded.tag) {
            return Ok(());
        }
        table_columns::save(dir, loaded.tag, definition).map_err(|e| {
            format!(
                "{UNSAVED} {}: {e}; rows keep the columns in use",
                self.state.target
            )
        })
    }

    /// `disk` mode: the column lists saved by earlier runs, so rows spooled under them are
    /// written with them. Call before the first [`TableSink::refresh`]. A list that no
    /// longer builds (a type this version cannot write) is skipped with a warning; rows
    /// encoded under it are quarantined when replayed.
    pub fn restore(&self) {
        let Some(dir) = &self.state.columns_dir else {
            return;
        };
        let saved = match table_columns::load_all(dir) {
            Ok(saved) => saved,
            Err(e) => {
                log::warn!("{}: saved column lists not readable: {e}", dir.display());
                return;
            }
        };
        let mut known = self.state.known.lock();
        for (tag, definition) in saved {
            match self.build(&definition) {
                Ok(loaded) if loaded.tag == tag => {
                    known.insert(tag, Arc::new(loaded));
                }
                Ok(_) => log::warn!(
                    "{}: saved column list {tag:02x?} builds to another tag; skipped",
                    self.state.target
                ),
                Err(e) => log::warn!(
                    "{}: saved column list {tag:02x?} skipped: {e}",
                    self.state.target
                ),
            }
        }
    }

    /// `disk` mode, at start-up before any row is accepted or replayed: deletes the saved
    /// column lists that neither the rows an earlier run left in the table's spools
    /// (`spooled`: their tags, `None` when they could not be read, which keeps every list)
    /// nor the list in use need. They are forgotten too, so a list read again later is
    /// saved again before rows use it.
    pub fn prune_columns(&self, spooled: Option<HashSet<[u8; TAG_BYTES]>>) {
        let Some(dir) = &self.state.columns_dir else {
            return;
        };
        let Some(mut keep) = spooled else {
            return;
        };
        if let Ok(current) = self.state.current() {
            keep.insert(current.tag);
        }
        self.state.known.lock().retain(|tag, _| keep.contains(tag));
        match table_columns::prune(dir, &keep) {
            Ok(deleted) if !deleted.is_empty() => log::info!(
                "{}: {} column lists no spooled row needs deleted",
                self.state.target,
                deleted.len()
            ),
            Ok(_) => {}
            Err(e) => log::warn!("{}: column lists not pruned: {e}", dir.display()),
        }
    }

    /// Reads the table's definition from the first reader that answers and builds its
    /// column list (in a cluster, with the sharding expression).
    async fn load(&self) -> Result<(Loaded, Definition), String> {
        let mut unreachable = Vec::new();
        for client in &self.readers {
            match self.load_from(client).await {
                Err(Load::Unreachable(problem)) => unreachable.push(problem),
                Err(Load::Problem(problem)) => return Err(problem),
                Ok(loaded) => return Ok(loaded),
            }
        }
        Err(unreachable.join("; "))
    }

    async fn load_from(&self, client: &Client) -> Result<(Loaded, Definition), Load> {
        let target = &self.state.target;
        let unreachable =
            |e: SinkError| Load::Unreachable(format!("{target}: columns not readable ({e})"));
        if self.version.lock().is_none() {
            let text = self
                .bounded(client.query("SELECT version()").fetch_one::<String>())
                .await
                .map_err(unreachable)?;
            let formats = self
                .bounded(
                    client
                        .query(
                            "SELECT count() FROM system.formats \
                             WHERE name = 'RowBinaryWithDefaults' AND is_input",
                        )
                        .fetch_one::<u64>(),
                )
                .await
                .map_err(unreachable)?;
            *self.server_defaults.lock() = formats > 0;
            *self.version.lock() = ServerVersion::parse(&text);
        }
        let infos = self
            .bounded(
                client
                    .query(
                        "SELECT name, type, default_kind, default_expression FROM system.columns \
                         WHERE database = ? AND table = ?",
                    )
                    .bind(&self.database)
                    .bind(&self.insert_table)
                    .fetch_all::<ColumnInfo>(),
            )
            .await
            .map_err(unreachable)?;
        // A missing table says so before anything else is asked.
        if infos.is_empty() {
            return Err(Load::Problem(match &self.cluster {
                Some(_) => missing_local(target, &self.insert_table),
                None => missing(target),
            }));
        }
        let create_table = self
            .bounded(
                client
                    .query(
                        "SELECT create_table_query FROM system.tables \
                         WHERE database = ? AND name = ?",
                    )
                    .bind(&self.database)
                    .bind(&self.insert_table)
                    .fetch_optional::<String>(),
            )
            .await
            .map_err(unreachable)?
            .unwrap_or_default();
        let zone = self
            .bounded(client.query("SELECT timezone()").fetch_one::<String>())
            .await
            .map_err(unreachable)?;
        let sharding = match &self.cluster {
            Some(cluster) => Some(self.sharding_key(client, cluster).await?),
            None => None,
        };
        let definition = Definition {
            columns: infos,
            create_table,
            zone,
            server_defaults: *self.server_defaults.lock(),
            server_time_column: self.server_time_column.clone(),
            client_ip_column: self.client_ip_column.clone(),
        };
        let loaded = self.build(&definition).map_err(Load::Problem)?;
        if let Some(key) = sharding {
            self.use_sharding(key, &loaded)?;
        }
        Ok((loaded, definition))
    }

    /// The column list of `definition`: no I/O, so a list saved by an earlier run is built
    /// again exactly as it was (same columns, same tag).
    fn build(&self, definition: &Definition) -> Result<Loaded, String> {
        let target = &self.state.target;
        let schema = TableSchema::new(
            target,
            &definition.columns,
            &definition.server_time_column,
            &definition.client_ip_column,
        )
        .map(|schema| match definition.server_defaults {
            true => schema.server_defaults(),
            false => schema,
        })
        .map_err(|e| match e {
            SchemaError::Missing(_) => missing(target),
            e => e.to_string(),
        })?;
        let zone = definition.zone.as_str();
        let columns = schema.column_list();
        let block_schema = Schema::new(&columns, matches!(zone, "UTC" | "Etc/UTC"))
            .map_err(|e| format!("{target}: {e}"))?;
        let key = SortKey::plan(&order_by_of(&definition.create_table), &block_schema);
        let layouts = block_schema.columns.iter().map(|c| c.ty.clone()).collect();
        let quoted: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
        let format = match schema.uses_server_defaults() {
            true => "RowBinaryWithDefaults",
            false => "Native",
        };
        // `INSERT INTO` and the table are each sink's own (a cluster's `<table>_local`).
        let insert_sql = format!("({}) FORMAT {format}", quoted.join(", "));
        let mut tagged = columns.clone();
        tagged.push((String::new(), format.to_string()));
        Ok(Loaded {
            tag: tag_of(&tagged),
            schema,
            builder: BlockBuilder::new(block_schema, key),
            layouts,
            insert_sql,
        })
    }

    /// The list `tag` names, reading the table first if this process has not yet.
    async fn loaded(&self, tag: [u8; TAG_BYTES]) -> Result<Option<Arc<Loaded>>, SinkError> {
        if self.state.known.lock().is_empty() {
            self.refresh().await.map_err(SinkError::Retryable)?;
        }
        Ok(self.state.known.lock().get(&tag).cloned())
    }

    /// `(database, table, insert table)`.
    pub(super) fn names(&self) -> (&str, &str, &str) {
        (&self.database, &self.table, &self.insert_table)
    }

    /// How long one ClickHouse call may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the host inserts go to answers now (a replica's re-probe).
    pub(super) async fn ping_insert_host(&self) -> Result<(), SinkError> {
        self.bounded(self.base.query("SELECT 1").fetch_one::<u8>())
            .await
            .map(|_| ())
    }

    /// The table's name in SQL, as the insert names it.
    fn insert_target(&self) -> String {
        format!("{}.{}", quote(&self.database), quote(&self.insert_table))
    }

    async fn send(
        &self,
        sql: &str,
        body: Vec<u8>,
        token: Option<(&str, bool)>,
    ) -> Result<(), SinkError> {
        let version = *self.version.lock();
        let dedup = version.is_some_and(|v| v.supports_dedup_token());
        let mut client = self.base.clone().with_database(&self.database);
        let settings = version.map(|v| [v.required_settings(), v.insert_settings()].concat());
        for (name, value) in settings.iter().flatten() {
            client = client.with_setting(*name, *value);
        }
        if let Some((token, maybe_sent)) = token {
            if dedup {
                client = client.with_setting("insert_deduplication_token", token);
            } else {
                if maybe_sent
                    && query_log::finished(&self.base, token, self.timeout).await? == Some(true)
                {
                    return Ok(());
                }
                client = client
                    .with_setting("query_id", token)
                    .with_setting("log_queries", "1");
            }
        }
        let mut insert = client
            .insert_formatted_with(sql.to_string())
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        insert.send(Bytes::from(body)).await?;
        Ok(insert.end().await?)
    }
}

impl Sink for TableSink {
    async fn answers_queries(&self) -> Result<(), SinkError> {
        self.ping_insert_host().await
    }

    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        // Runs of rows under one column list: (list, rows' bytes without tags, count).
        let mut runs: Vec<(Arc<Loaded>, Vec<u8>, usize)> = Vec::new();
        let mut at = 0;
        for _ in 0..rows.count {
            let tag: [u8; TAG_BYTES] = rows
                .data
                .get(at..at + TAG_BYTES)
                .and_then(|t| t.try_into().ok())
                .ok_or_else(|| SinkError::Data("a row shorter than its tag".into()))?;
            // Consecutive rows nearly always share their list: no lookup for those.
            let same = runs
                .last()
                .filter(|(l, _, _)| l.tag == tag)
                .map(|(l, _, _)| l.clone());
            let loaded = match same {
                Some(loaded) => Some(loaded),
                None => self.loaded(tag).await?,
            };
            let Some(loaded) = loaded else {
                return Err(SinkError::Data(format!(
                    "row encoded under a column list of {} this process does not know (the \
                     table changed before a restart)",
                    self.state.target
                )));
            };
            let body = &rows.data[at + TAG_BYTES..];
            let len = row_len(&loaded.layouts, body, loaded.schema.uses_server_defaults())
                .ok_or_else(|| SinkError::Data("a row that does not fit its columns".into()))?;
            match runs.last_mut() {
                Some((l, data, n)) if l.tag == tag => {
                    data.extend_from_slice(&body[..len]);
                    *n += 1;
                }
                _ => runs.push((loaded, body[..len].to_vec(), 1)),
            }
            at += TAG_BYTES + len;
        }
        let current = self.state.current();
        for (i, (loaded, data, count)) in runs.iter().enumerate() {
            if let Ok(current) = &current
                && current.tag != loaded.tag
            {
                let now = current.schema.column_list();
                if let Some((name, ty)) = loaded
                    .schema
                    .column_list()
                    .into_iter()
                    .find(|c| !now.contains(c))
                {
                    return Err(SinkError::Data(format!(
                        "row encoded when {} had column {name} {ty}, which it no longer has",
                        self.state.target
                    )));
                }
            }
            let block = match loaded.schema.uses_server_defaults() {
                // Sent as encoded: a Native block has no per-row "use the default".
                true => data.clone(),
                false => loaded
                    .builder
                    .build(data, *count)
                    .map_err(|e| SinkError::Data(e.to_string()))?,
            };
            let token = id.map(|id| match runs.len() {
                1 => (id.token.to_string(), id.maybe_sent),
                _ => (format!("{}-{i}", id.token), id.maybe_sent),
            });
            let sql = format!("INSERT INTO {} {}", self.insert_target(), loaded.insert_sql);
            let result = self
                .send(&sql, block, token.as_ref().map(|(t, m)| (t.as_str(), *m)))
                .await;
            if let Err(e) = &result
                && e.code().is_some_and(|c| SCHEMA_CODES.contains(&c))
            {
                // The table changed underneath: read it again before the retry.
                let _ = self.refresh().await;
            }
            result?;
        }
        Ok(())
    }
}

/// How a problem saving a column list starts (it leaves the list in use in place).
const UNSAVED: &str = "column list not saved for";

/// How reading a definition from one host failed: that host did not answer (the next one
/// is asked), or it answered with a problem of the table's.
pub(super) enum Load {
    Unreachable(String),
    Problem(String),
}

/// The problem of a cluster table whose `<table>_local` does not exist.
fn missing_local(target: &str, local: &str) -> String {
    format!(
        "table {local} (what {target} is written through in a cluster) does not exist on the \
         host asked (INGEST_TABLES); its requests get 503 until it does"
    )
}

/// The problem of a table that does not exist.
fn missing(target: &str) -> String {
    format!("table {target} does not exist (INGEST_TABLES); its requests get 503 until it does")
}

/// Codes after which the table is read again: a missing table or database, a column
/// missing or of another type.
const SCHEMA_CODES: &[u32] = &[8, 10, 16, 53, 60, 81, 368];

/// The tag of a column list.
pub fn tag_of(columns: &[(String, String)]) -> [u8; TAG_BYTES] {
    let mut hasher = twox_hash::XxHash32::with_seed(0);
    for (name, ty) in columns {
        hasher.write(name.as_bytes());
        hasher.write(&[0]);
        hasher.write(ty.as_bytes());
        hasher.write(&[0]);
    }
    (hasher.finish() as u32).to_le_bytes()
}

/// Length of one RowBinary row of `layouts` at the start of `data` (`with_defaults`:
/// `RowBinaryWithDefaults`, a flag byte before each value, 1 meaning no value follows).
fn row_len(layouts: &[ColumnType], data: &[u8], with_defaults: bool) -> Option<usize> {
    layouts.iter().try_fold(0usize, |at, ty| {
        let mut at = at;
        if with_defaults {
            let flag = *data.get(at)?;
            at += 1;
            if flag == 1 {
                return Some(at);
            }
        }
        at.checked_add(ty.value_len(data.get(at..)?)?)
    })
}

/// An identifier in backquotes, backquotes and backslashes escaped: no client input is
/// spliced into SQL, and names from configuration or the server are quoted whole.
pub fn quote(name: &str) -> String {
    format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(columns: &[(&str, &str)]) -> Definition {
        Definition {
            columns: columns
                .iter()
                .map(|(name, ty)| ColumnInfo {
                    name: name.to_string(),
                    type_name: ty.to_string(),
                    default_kind: String::new(),
                    default_expression: String::new(),
                })
                .collect(),
            create_table: "CREATE TABLE db.t (n UInt32) ENGINE = MergeTree ORDER BY n".into(),
            zone: "UTC".into(),
            server_defaults: false,
            server_time_column: "server_time".into(),
            client_ip_column: "ip".into(),
        }
    }

    fn sink(spool_dir: &std::path::Path) -> TableSink {
        let settings = Settings {
            connection: Connection {
                url: "http://127.0.0.1:8123".into(),
                user: "default".into(),
                password: String::new(),
                compression: crate::sink::Compression::None,
            },
            hosts: Vec::new(),
            database: "db".into(),
            events_table: "events".into(),
            cluster: None,
            timeout: Duration::from_secs(1),
            server_time_column: "server_time".into(),
            client_ip_column: "ip".into(),
            columns_root: Some(spool_dir.to_path_buf()),
        };
        TableSink::new(&settings, "db.t")
    }

    fn read(sink: &TableSink, columns: &[(&str, &str)]) -> Result<(Loaded, Definition), String> {
        let definition = definition(columns);
        Ok((sink.build(&definition)?, definition))
    }

    /// A list that cannot be saved is never the one rows are encoded with: the list in use
    /// stays, or with none yet the table takes no rows; once it can be saved, it is used.
    #[test]
    fn a_list_that_cannot_be_saved_is_not_used() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = sink(tmp.path());
        let dir = tmp.path().join("table-db.t");
        let one = [("n", "UInt32")];
        let two = [("n", "UInt32"), ("extra", "String")];
        let tag = |columns: &[(&str, &str)]| read(&sink, columns).unwrap().0.tag;
        let blocker = |columns: &[(&str, &str)]| {
            let hex = u32::from_be_bytes(tag(columns));
            dir.join(format!("columns-{hex:08x}.json.tmp"))
        };
        // No list yet and it cannot be saved: no rows taken.
        std::fs::create_dir_all(blocker(&one)).unwrap();
        let problem = sink.adopt(read(&sink, &one)).unwrap_err();
        assert!(problem.starts_with(UNSAVED), "{problem}");
        assert!(sink.state().current().is_err());
        std::fs::remove_dir(blocker(&one)).unwrap();
        sink.adopt(read(&sink, &one)).unwrap();
        assert_eq!(sink.state().current().unwrap().tag, tag(&one));
        // A column added, its list not savable: rows keep the list in use.
        std::fs::create_dir_all(blocker(&two)).unwrap();
        let problem = sink.adopt(read(&sink, &two)).unwrap_err();
        assert!(problem.starts_with(UNSAVED), "{problem}");
        assert_eq!(sink.state().current().unwrap().tag, tag(&one));
        assert!(
            !dir.join(format!(
                "columns-{:08x}.json",
                u32::from_be_bytes(tag(&two))
            ))
            .exists()
        );
        // Saved on the next read: used from then on, and found again after a restart.
        std::fs::remove_dir(blocker(&two)).unwrap();
        sink.adopt(read(&sink, &two)).unwrap();
        assert_eq!(sink.state().current().unwrap().tag, tag(&two));
        let restarted = self::sink(tmp.path());
        restarted.restore();
        let known = restarted
            .state()
            .known
            .lock()
            .keys()
            .copied()
            .collect::<HashSet<_>>();
        assert_eq!(known, HashSet::from([tag(&one), tag(&two)]));
    }
}
