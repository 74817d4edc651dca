//! The one sink: writes one table, any table. What differs between tables is data held in
//! its [`TableState`]:
//!
//! - **where its column list comes from.** A table of `INGEST_TABLES` is read from the
//!   server (`system.columns`), never created here; each of its rows starts with the 4-byte
//!   tag of the list it was encoded under (a hash of the columns' names and types, so it
//!   means the same after a restart). The events table's list is fixed ([`Owned`]): its
//!   rows carry no tag, and the service may create the table (with its database, and in a
//!   cluster `<table>_local` and the `Distributed` table over it) and upgrade it.
//! - **how its rows are sharded** in a cluster: by the `Distributed` table's expression, read
//!   with its columns, or for the events table by `CLICKHOUSE_SHARDING_KEY`.
//!
//! Every table is then written the same way. A batch is one insert per run of rows with the
//! same list, each naming its columns: rows encoded before an `ADD COLUMN` are written as
//! they are (the new column takes its default), and rows whose columns the table no longer
//! has are refused as data, so the flusher quarantines them with that reason. An insert is
//! a Native block in the table's sorting-key order, built from the encoded rows on the
//! caller's thread, or the rows as encoded (`direct` mode, a server-side `DEFAULT`, or a
//! type the block builder lacks), streamed in compressed chunks. A retried insert carries
//! its deduplication token (22.2+), or on older servers is first looked up in the query
//! log. Rows are probed for a bad one in a `Null` copy of the table this sink creates under
//! a name of its own and drops after.
//!
//! In a cluster (`CLICKHOUSE_CLUSTER`) `<table>_local` is written on one replica of each
//! row's shard ([`TableSink::for_replica`]); a read table's definition comes from the first
//! host that answers (see `table_shard.rs`).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clickhouse::Client;
use parking_lot::Mutex;

use super::cluster_schema::{ClusterTable, create_distributed_sql, create_local_sql};
use super::error::MISSING_TABLE_CODES;
use super::format::{FormatInfo, InsertFormat, order_by_of};
use super::schema::{
    Deduplication, ServerVersion, check_columns, create_table_sql, deduplication, upgrade_sql,
};
use super::table_columns::{self, Definition};
use super::{Connection, InsertId, Settings, Sink, SinkError, query_log};
use crate::format::{ColumnType, KeyPlan, RowsRef, ShardingKey};
use crate::table::{ColumnInfo, NewColumn, NotAdded, SchemaError, TableSchema, TableSettings};

pub use super::table_columns::TAG_BYTES;

/// How long a health ping may take before ClickHouse counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows are sent in chunks of this many bytes, each compressed on its own: the request
/// streams, and no compressed block approaches ClickHouse's size limit.
const SEND_CHUNK: usize = 1 << 20;
/// The key of a fixed list (the events table's) among the lists a table knows: its rows
/// carry no tag.
const FIXED: [u8; TAG_BYTES] = [0; TAG_BYTES];
/// Time zone names that are UTC, for `DateTime` columns without their own zone.
const UTC_NAMES: &[&str] = &[
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
    "GMT",
    "Etc/GMT",
];

/// The one option a table may have that the others lack: the service owns it. Its column
/// list is fixed (the events table's, `crate::table::events`), and the table is created if
/// missing.
pub struct Owned {
    /// The columns rows are encoded with, and the rules they are read by.
    schema: TableSchema,
}

/// A column list: the schema the handlers encode with and how the sink writes it.
pub struct Loaded {
    /// The writable columns.
    pub schema: TableSchema,
    /// What each row of this list starts with (nothing for a fixed list).
    pub tag: [u8; TAG_BYTES],
    tagged: bool,
    /// How rows of this list are written, once the server was read (a fixed list is known
    /// before).
    write: Option<Writer>,
}

/// How one column list's rows go into an insert.
struct Writer {
    /// A Native block in key order, or the rows as encoded.
    format: InsertFormat,
    /// Each column's layout, to find where a row ends.
    layouts: Vec<ColumnType>,
    /// `(columns)`: what an insert names.
    columns_sql: String,
}

impl Loaded {
    /// The `FORMAT` of rows sent as encoded.
    fn row_format(&self) -> &'static str {
        match self.schema.uses_server_defaults() {
            true => "RowBinaryWithDefaults",
            false => "RowBinary",
        }
    }
}

/// What the server said about itself, asked once.
#[derive(Debug, Clone)]
struct ServerFacts {
    version: ServerVersion,
    text: String,
    /// Whether it reads `RowBinaryWithDefaults`.
    server_defaults: bool,
}

/// What a table's handlers and its sinks (every thread's, every replica's) share.
pub struct TableState {
    /// `db.table`.
    pub target: String,
    /// The events table: its list is fixed and the service may create it.
    owned: Option<Owned>,
    /// Whether inserts may be Native blocks (built on the caller's thread): not in `direct`
    /// mode, whose inserts run on the HTTP workers.
    columnar: bool,
    /// The list rows are encoded with now, or why the table cannot take rows.
    current: Mutex<Result<Arc<Loaded>, String>>,
    /// Every list rows may have been encoded with, by tag: this process's, and (`disk`
    /// mode) those saved by earlier runs whose rows may still be in the spool.
    pub(super) known: Mutex<HashMap<[u8; TAG_BYTES], Arc<Loaded>>>,
    /// `disk` mode, a read table: where its lists are saved (its spool directory).
    columns_dir: Option<PathBuf>,
    /// In a cluster: the sharding expression, once read (the events table's from the
    /// start).
    pub(super) sharding: Mutex<Option<ShardingKey>>,
    /// In a cluster: where the key sits in rows of each list, under the current expression.
    pub(super) key_plans: parking_lot::RwLock<HashMap<[u8; TAG_BYTES], Arc<KeyPlan>>>,
    /// In a cluster: why the `Distributed` table's sharding expression cannot be evaluated
    /// here, if it was read and cannot (start-up stops on it).
    pub(super) unevaluable: Mutex<Option<String>>,
    /// The server's version, once reached.
    server: Mutex<Option<ServerFacts>>,
    /// What the table does with a retried insert's token, once read.
    deduplication: Mutex<Option<Deduplication>>,
    /// How the current list's inserts are encoded and sorted (`/v1/health`).
    format_info: Mutex<Option<FormatInfo>>,
    /// How the table's events are read (`CONFIG_FILE`'s `[[tables]]`).
    settings: Mutex<TableSettings>,
    /// A read table's columns as last read, before its settings: what new settings are
    /// checked against.
    base: Mutex<Option<TableSchema>>,
    /// Why the table's settings do not fit its columns, when they did not last time read.
    setting_problem: Mutex<Option<String>>,
    /// When this process last changed the table's columns (`add_columns`).
    changed_at: Mutex<Option<Instant>>,
}

impl crate::table::ColumnList for Loaded {
    fn schema(&self) -> &TableSchema {
        &self.schema
    }

    fn tag(&self) -> &[u8] {
        match self.tagged {
            true => &self.tag,
            false => &[],
        }
    }
}

impl crate::table::Columns for TableState {
    fn current(&self) -> Result<Arc<dyn crate::table::ColumnList>, String> {
        TableState::current(self).map(|loaded| loaded as Arc<dyn crate::table::ColumnList>)
    }
}

impl TableState {
    /// Takes new settings for the table (`CONFIG_FILE` read again): checked against its
    /// columns as last read and used from the next reading of the table (within
    /// `SCHEMA_REFRESH_SECS`). `Ok(false)`: nothing changed. A setting the columns cannot
    /// take, or one read at start-up only (the events table's, the server-filled columns'
    /// names), is refused and the settings in use stay.
    pub fn replace_settings(&self, new: TableSettings) -> Result<bool, String> {
        let mut settings = self.settings.lock();
        if *settings == new {
            return Ok(false);
        }
        if self.owned.is_some()
            || settings.server_time_column != new.server_time_column
            || settings.client_ip_column != new.client_ip_column
        {
            return Err(format!(
                "{}: this change applies at the next start (the events table's settings and \
                 the server-filled columns' names are read at start-up)",
                self.target
            ));
        }
        if let Some(base) = &*self.base.lock() {
            base.clone()
                .with_settings(&new)
                .map_err(|e| e.to_string())?;
        }
        *settings = new;
        Ok(true)
    }

    /// Why the table's settings (`[[tables]]`) do not fit its columns, if they did not
    /// when it was last read.
    pub fn setting_problem(&self) -> Option<String> {
        self.setting_problem.lock().clone()
    }

    /// The current column list, or why there is none.
    pub fn current(&self) -> Result<Arc<Loaded>, String> {
        self.current.lock().clone()
    }

    /// Bytes of tag before each row: none for a fixed list.
    pub fn tag_len(&self) -> usize {
        match self.owned {
            Some(_) => 0,
            None => TAG_BYTES,
        }
    }

    /// A row's list tag and the row after it.
    pub(super) fn split_tag<'r>(&self, row: &'r [u8]) -> Option<([u8; TAG_BYTES], &'r [u8])> {
        match self.owned {
            Some(_) => Some((FIXED, row)),
            None => {
                let (tag, body) = row.split_at_checked(TAG_BYTES)?;
                Some((tag.try_into().ok()?, body))
            }
        }
    }

    /// One encoded row as JSON with its column names, if its list is known.
    pub fn decode_row(&self, row: &[u8]) -> Option<serde_json::Value> {
        let (tag, body) = self.split_tag(row)?;
        let loaded = self.known.lock().get(&tag).cloned()?;
        loaded.schema.decode_row(body)
    }

    /// The version string the server reported, if it has been reached since start-up.
    pub fn version_text(&self) -> Option<String> {
        self.server.lock().as_ref().map(|s| s.text.clone())
    }

    /// What the table does with a retried insert's token, once read.
    pub fn deduplication(&self) -> Option<Deduplication> {
        self.deduplication.lock().clone()
    }

    /// How inserts are encoded and sorted, once the table was read (for `/v1/health`).
    pub fn format_info(&self) -> Option<FormatInfo> {
        self.format_info.lock().clone()
    }
}

/// Writes one table. Each thread gets its own (see [`TableSink::sharing`]): a client's
/// pooled connections belong to the runtime that opened them.
///
/// Start-up does not require ClickHouse to be up: the first call that needs the server
/// reads the table (creating the events table first) and a failure leaves it to be tried
/// again by the next call. If the table disappears later (`UNKNOWN_TABLE`), the events
/// table is created again, and a read table takes no rows until it is back.
pub struct TableSink {
    /// Where inserts, DDL and probes go.
    base: Client,
    /// Where a read table's definition is read, tried in order: `base`, or in a cluster
    /// every host of `CLICKHOUSE_HOSTS` (so every shard's sinks agree on one list). The
    /// events table's is read where it is created: `base`.
    readers: Vec<Client>,
    database: String,
    table: String,
    /// The table inserts name: `table`, or in a cluster `<table>_local`.
    insert_table: String,
    /// `CLICKHOUSE_CLUSTER`, if set.
    cluster: Option<String>,
    timeout: Duration,
    server_time_column: String,
    client_ip_column: String,
    /// `CLICKHOUSE_COMPRESSION`, as health shows it.
    compression: &'static str,
    /// The events table: whether this sink's host has it (the DDL ran since start-up, or
    /// since the server said it was missing).
    created: AtomicBool,
    /// The probe table this sink created and has not dropped yet: the only table it ever
    /// drops.
    probe_table: Mutex<Option<String>>,
    state: Arc<TableState>,
}

/// Rows of one column list, in their order within a batch.
struct Run<'r> {
    loaded: Arc<Loaded>,
    /// The rows without their tags.
    data: Cow<'r, [u8]>,
    count: usize,
}

impl TableSink {
    /// A sink for `name` (`table` in `CLICKHOUSE_NAME`, or `db.table`), whose columns are
    /// read from the server. Does no I/O.
    pub fn new(settings: &Settings, name: &str) -> Self {
        let (database, table) = match name.split_once('.') {
            Some((db, table)) => (db.to_string(), table.to_string()),
            None => (settings.database.clone(), name.to_string()),
        };
        let columns_dir = settings
            .columns_root
            .as_ref()
            .map(|root| root.join(format!("table-{name}")));
        Self::build(settings, database, table, None, columns_dir)
    }

    /// The sink of the events table (`CLICKHOUSE_TABLE`): its columns are fixed, and it is
    /// created if missing; in a cluster, sharded by `CLICKHOUSE_SHARDING_KEY`. Does no I/O.
    pub fn events(settings: &Settings) -> Self {
        // The events table's schema is built from constants: a failure is a bug, caught by
        // every test.
        let schema = crate::table::events::schema()
            .expect("the events table's schema")
            .clone();
        let owned = Owned { schema };
        Self::build(
            settings,
            settings.database.clone(),
            settings.events_table.clone(),
            Some(owned),
            None,
        )
    }

    fn build(
        settings: &Settings,
        database: String,
        table: String,
        owned: Option<Owned>,
        columns_dir: Option<PathBuf>,
    ) -> Self {
        let base = settings.connection.client();
        let readers = match settings.cluster.is_some() && owned.is_none() {
            true => settings.hosts.iter().map(Connection::client).collect(),
            false => vec![base.clone()],
        };
        let target = format!("{database}.{table}");
        let sharding = match (&owned, &settings.cluster) {
            (Some(_), Some(_)) => Some(ShardingKey::text_hash(&settings.sharding_column)),
            _ => None,
        };
        let mut known = HashMap::new();
        let current = match &owned {
            // The fixed list is there before the server is: rows are taken while it is down.
            Some(owned) => {
                let loaded = Arc::new(Loaded {
                    schema: owned.schema.clone(),
                    tag: FIXED,
                    tagged: false,
                    write: None,
                });
                known.insert(FIXED, loaded.clone());
                Ok(loaded)
            }
            None => Err(format!("{target}: columns not read yet")),
        };
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
            compression: settings.connection.compression.name(),
            created: AtomicBool::new(false),
            probe_table: Mutex::new(None),
            state: Arc::new(TableState {
                current: Mutex::new(current),
                known: Mutex::new(known),
                columns_dir,
                target,
                owned,
                columnar: true,
                sharding: Mutex::new(sharding),
                key_plans: Default::default(),
                unevaluable: Mutex::new(None),
                server: Mutex::new(None),
                deduplication: Mutex::new(None),
                format_info: Mutex::new(None),
                settings: Mutex::new(TableSettings::default()),
                base: Mutex::new(None),
                setting_problem: Mutex::new(None),
                changed_at: Mutex::new(None),
            }),
        }
    }

    /// The same sink reading events as `settings` say (paths, a rest column, the
    /// `User-Agent`, its own server-filled columns). Call before sharing. For the events
    /// table, whose list is fixed, the settings are checked here: the error names the
    /// setting and the column.
    pub fn with_settings(mut self, settings: TableSettings) -> Result<Self, SchemaError> {
        if let Some(column) = &settings.server_time_column {
            self.server_time_column = column.clone();
        }
        if let Some(column) = &settings.client_ip_column {
            self.client_ip_column = column.clone();
        }
        let state = Arc::get_mut(&mut self.state).expect("settings are applied before sharing");
        if let Some(owned) = &mut state.owned {
            owned.schema = owned.schema.clone().with_settings(&settings)?;
            let loaded = Arc::new(Loaded {
                schema: owned.schema.clone(),
                tag: FIXED,
                tagged: false,
                write: None,
            });
            state.known.get_mut().insert(FIXED, loaded.clone());
            *state.current.get_mut() = Ok(loaded);
        }
        *state.settings.get_mut() = settings;
        Ok(self)
    }

    /// Inserts send the rows as encoded, never building blocks: for `direct` mode, whose
    /// inserts run on the HTTP workers and are one request each. Call before sharing.
    pub fn row_binary_only(mut self) -> Self {
        if let Some(state) = Arc::get_mut(&mut self.state) {
            state.columnar = false;
        }
        self
    }

    /// Another sink for the same table, with its own client (for another thread's runtime)
    /// and the same shared state.
    pub fn sharing(settings: &Settings, other: &TableSink) -> Self {
        Self {
            base: settings.connection.client(),
            readers: match other.cluster.is_some() && other.state.owned.is_none() {
                true => settings.hosts.iter().map(Connection::client).collect(),
                false => vec![settings.connection.client()],
            },
            database: other.database.clone(),
            table: other.table.clone(),
            insert_table: other.insert_table.clone(),
            cluster: other.cluster.clone(),
            timeout: other.timeout,
            server_time_column: other.server_time_column.clone(),
            client_ip_column: other.client_ip_column.clone(),
            compression: other.compression,
            created: AtomicBool::new(false),
            probe_table: Mutex::new(None),
            state: other.state.clone(),
        }
    }

    /// In a cluster: another sink for the same table that inserts into `<table>_local` on
    /// the server `settings` are aimed at (one replica of a shard); the events table is
    /// created there, and read there.
    pub fn for_replica(settings: &Settings, other: &TableSink) -> Self {
        Self::sharing(settings, other)
    }

    /// The state the handlers encode with.
    pub fn state(&self) -> Arc<TableState> {
        self.state.clone()
    }

    /// The table's `database.table` name.
    pub fn target(&self) -> &str {
        &self.state.target
    }

    /// `(database, table, insert table)`.
    pub(super) fn names(&self) -> (&str, &str, &str) {
        (&self.database, &self.table, &self.insert_table)
    }

    /// How long one ClickHouse call may take.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client of the host inserts go to, for queries about the server.
    pub(super) fn base(&self) -> &Client {
        &self.base
    }

    pub(super) async fn bounded<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        super::bounded(self.timeout, fut).await
    }

    /// `SELECT version()` on the host inserts go to; also the health check: it proves the
    /// server answers queries.
    pub async fn server_version(&self) -> Result<String, SinkError> {
        let query = self.base.query("SELECT version()").fetch_one::<String>();
        super::bounded(PING_TIMEOUT, query).await
    }

    /// Reaches the server and reads the table (creating the events table first): what
    /// start-up logs. A failure is the table's problem, tried again by the next write.
    pub async fn prepare(&self) -> Result<(String, ServerVersion), String> {
        self.refresh().await?;
        let facts = self.state.server.lock().clone();
        facts
            .map(|f| (f.text, f.version))
            .ok_or_else(|| format!("{}: server not reached", self.state.target))
    }

    /// Reads the table's columns again; a changed list becomes the one new rows are encoded
    /// with (rows already encoded keep theirs). Returns the problem if the table cannot take
    /// rows (missing, or a column of a type this service cannot write). The events table is
    /// created first if this sink has not yet, and its fixed list stays the one rows are
    /// encoded with whatever the answer.
    ///
    /// `disk` mode: a new list of a read table is saved in its spool directory (see
    /// [`table_columns`]) before any row is encoded with it; if it cannot be, the list in
    /// use stays (or, with none yet, the table answers `503`), so no row is acknowledged
    /// under a list a restart could not read back.
    pub async fn refresh(&self) -> Result<(), String> {
        let result = match self.create().await {
            Ok(()) => self.load().await,
            Err(e) => Err(format!("{}: not created ({e})", self.state.target)),
        };
        self.adopt(result)
    }

    /// Adds columns for fields that had none (`add_columns`): one `ALTER TABLE ... ADD
    /// COLUMN` for all of them, at most one change per `every` (`SCHEMA_REFRESH_SECS`),
    /// then the table read again so new rows are encoded with them. A column added
    /// meanwhile (by another request or another gateway) is taken as it is. In a cluster
    /// the change is made on every host, to `<table>_local` first (a replica may have it
    /// already from another's change) and then to the `Distributed` table.
    pub async fn add_columns(&self, wanted: &[NewColumn], every: Duration) -> Result<(), NotAdded> {
        let missing = |state: &TableState| -> Vec<NewColumn> {
            let current = state.current().ok();
            (wanted.iter())
                .filter(|c| {
                    current.as_ref().is_none_or(|l| {
                        l.schema
                            .columns()
                            .iter()
                            .all(|column| column.name != c.name)
                    })
                })
                .cloned()
                .collect()
        };
        let todo = missing(&self.state);
        if todo.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = todo.iter().map(|c| c.name.as_str()).collect();
        if let Some(at) = *self.state.changed_at.lock() {
            let gone = at.elapsed();
            if gone < every {
                return Err(NotAdded::Later {
                    fields: names.join(", "),
                    secs: (every - gone).as_secs().max(1),
                });
            }
        }
        let version = (self.facts(&self.base).await)
            .map_err(|e| NotAdded::Failed(e.to_string()))?
            .version;
        let changes: Vec<String> = (todo.iter())
            .map(|c| {
                let ty = c.kind.type_name(version.has_bool());
                format!("ADD COLUMN {} {ty}", quote(&c.name))
            })
            .collect();
        let (tables, hosts) = match self.cluster {
            None => (vec![&self.insert_table], vec![&self.base]),
            Some(_) => (
                vec![&self.insert_table, &self.table],
                self.readers.iter().collect(),
            ),
        };
        // A refused change counts too: it is not asked again before `every`.
        *self.state.changed_at.lock() = Some(Instant::now());
        // One column at a time: one that a host has already (from another replica's
        // change, or another gateway's) leaves the others to be added.
        let mut altered = Ok(());
        for table in tables {
            for host in &hosts {
                for change in &changes {
                    let sql = format!(
                        "ALTER TABLE {}.{} {change}",
                        quote(&self.database),
                        quote(table)
                    );
                    match self.execute_on(host, &sql, version).await {
                        Err(e) if e.to_string().contains("already exists") => {}
                        Err(e) => altered = Err(e),
                        Ok(()) => {}
                    }
                }
            }
        }
        // In a cluster, a replica's own change may be refused while it takes its shard's
        // from another: what counts is that every host has the columns, soon.
        if self.cluster.is_some() {
            altered = self.wait_for_columns(&names, &hosts, ADDED_WITHIN).await;
        }
        match &altered {
            Ok(()) => log::info!(
                "{}: added columns {}",
                self.state.target,
                changes.join(", ")
            ),
            Err(e) => log::warn!("{}: columns not added ({e})", self.state.target),
        }
        self.refresh().await.map_err(NotAdded::Failed)?;
        match (missing(&self.state).is_empty(), altered) {
            (true, _) => Ok(()),
            (false, Err(e)) => Err(NotAdded::Failed(e.to_string())),
            (false, Ok(())) => Err(NotAdded::Failed(format!(
                "{} added, but the table read again does not have them",
                names.join(", ")
            ))),
        }
    }

    /// Waits until every host's `<table>_local` and `<table>` have `names`, for at most
    /// `limit`.
    async fn wait_for_columns(
        &self,
        names: &[&str],
        hosts: &[&Client],
        limit: Duration,
    ) -> Result<(), SinkError> {
        let listed: Vec<String> = names
            .iter()
            .map(|n| format!("'{}'", n.replace('\'', "\\'")))
            .collect();
        let sql = format!(
            "SELECT count() FROM system.columns WHERE database = ? AND table IN (?, ?) \
             AND name IN ({})",
            listed.join(", ")
        );
        let wanted = (2 * names.len()) as u64;
        let deadline = Instant::now() + limit;
        loop {
            let mut short = None;
            for host in hosts {
                let query = (host.query(&sql))
                    .bind(&self.database)
                    .bind(&self.insert_table)
                    .bind(&self.table)
                    .fetch_one::<u64>();
                match self.bounded(query).await {
                    Ok(n) if n == wanted => {}
                    Ok(n) => short = Some(SinkError::Retryable(format!("{n} of {wanted} columns"))),
                    Err(e) => short = Some(e),
                }
            }
            match short {
                None => return Ok(()),
                Some(e) if Instant::now() >= deadline => return Err(e),
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The events table: creates the database and the table (in a cluster `<table>_local`
    /// and the `Distributed` table over it) on this sink's host if it has not yet, and
    /// upgrades a table an earlier version created. Nothing for a read table.
    ///
    /// Each host of a cluster gets its DDL when its sink first reaches it, rather than
    /// `ON CLUSTER`: on 18.16 a distributed DDL runs without the query's settings (so the
    /// `LowCardinality` columns are refused), and it waits out
    /// `distributed_ddl_task_timeout` while a host is down.
    async fn create(&self) -> Result<(), SinkError> {
        if self.state.owned.is_none() || self.created.load(Ordering::Acquire) {
            return Ok(());
        }
        let version = self.facts(&self.base).await?.version;
        let (db, table, local) = (&self.database, &self.table, &self.insert_table);
        let mut ddl = vec![format!("CREATE DATABASE IF NOT EXISTS {}", quote(db))];
        match &self.cluster {
            None => ddl.push(create_table_sql(db, table, version)),
            Some(cluster) => {
                let expression = self
                    .state
                    .sharding
                    .lock()
                    .as_ref()
                    .map(|k| k.expression().to_string());
                ddl.push(create_local_sql(db, local, version));
                ddl.push(create_distributed_sql(
                    db,
                    local,
                    &ClusterTable {
                        cluster: cluster.clone(),
                        distributed: table.clone(),
                        sharding: expression.unwrap_or_default(),
                    },
                ));
            }
        }
        for sql in ddl {
            self.execute(&sql, version).await?;
        }
        let columns = self
            .bounded(
                self.base
                    .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                    .bind(db)
                    .bind(local)
                    .fetch_all::<(String, String)>(),
            )
            .await?;
        if let Some(sql) = upgrade_sql(db, local, &columns) {
            // A table created by an earlier version: add what it lacks.
            log::info!("upgrading {}: {sql}", self.state.target);
            self.execute(&sql, version).await?;
        }
        self.created.store(true, Ordering::Release);
        Ok(())
    }

    /// Runs one DDL statement with the settings this server needs for it.
    async fn execute(&self, sql: &str, version: ServerVersion) -> Result<(), SinkError> {
        self.execute_on(&self.base, sql, version).await
    }

    async fn execute_on(
        &self,
        client: &Client,
        sql: &str,
        version: ServerVersion,
    ) -> Result<(), SinkError> {
        let mut query = client.query(sql);
        for (name, value) in version.required_settings() {
            query = query.with_setting(*name, *value);
        }
        self.bounded(query.execute()).await
    }

    /// The server's version and whether it reads `RowBinaryWithDefaults`, asked of `client`
    /// the first time.
    async fn facts(&self, client: &Client) -> Result<ServerFacts, SinkError> {
        if let Some(facts) = self.state.server.lock().clone() {
            return Ok(facts);
        }
        let text = self
            .bounded(client.query("SELECT version()").fetch_one::<String>())
            .await?;
        let version = ServerVersion::parse(&text)
            .ok_or_else(|| SinkError::Retryable(format!("unrecognised server version {text:?}")))?;
        let formats = self
            .bounded(
                client
                    .query(
                        "SELECT count() FROM system.formats \
                         WHERE name = 'RowBinaryWithDefaults' AND is_input",
                    )
                    .fetch_one::<u64>(),
            )
            .await?;
        let facts = ServerFacts {
            version,
            text,
            server_defaults: formats > 0,
        };
        *self.state.server.lock() = Some(facts.clone());
        Ok(facts)
    }

    /// What [`TableSink::refresh`] does with what it read (no server I/O).
    fn adopt(&self, result: Result<(Loaded, Definition), String>) -> Result<(), String> {
        let result = match result {
            Ok((loaded, definition)) => self.save(&loaded, &definition).map(|()| loaded),
            Err(problem) => Err(problem),
        };
        let fixed = self.state.owned.is_some();
        let mut current = self.state.current.lock();
        match result {
            Ok(loaded) => {
                // The same columns read another way (the table's settings changed) replace
                // the list under its tag: the rows' bytes are laid out the same.
                let reread = current.as_ref().is_ok_and(|c| c.schema != loaded.schema);
                let changed = current
                    .as_ref()
                    .map_or(true, |c| c.tag != loaded.tag || c.write.is_none())
                    || reread;
                if changed || fixed {
                    let known = &mut *self.state.known.lock();
                    let loaded = match fixed {
                        // The same fixed list, written after what was read now.
                        true => {
                            let loaded = Arc::new(loaded);
                            known.insert(loaded.tag, loaded.clone());
                            loaded
                        }
                        false if reread => {
                            let loaded = Arc::new(loaded);
                            known.insert(loaded.tag, loaded.clone());
                            loaded
                        }
                        false => known
                            .entry(loaded.tag)
                            .or_insert_with(|| Arc::new(loaded))
                            .clone(),
                    };
                    if changed && !fixed {
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
                    }
                    self.show_format(&loaded);
                    *current = Ok(loaded);
                }
                Ok(())
            }
            Err(problem) => {
                if current.as_ref().err() != Some(&problem) {
                    log::warn!("{problem}");
                }
                // A read table that is gone or unreadable takes no rows; a list that could
                // not be saved leaves the one in use (saved earlier) in place; the fixed
                // list always stays.
                if !fixed && (!problem.starts_with(UNSAVED) || current.is_err()) {
                    *current = Err(problem.clone());
                }
                Err(problem)
            }
        }
    }

    /// Records how `loaded`'s inserts are encoded, and says so when that changes.
    fn show_format(&self, loaded: &Loaded) {
        let Some(writer) = &loaded.write else {
            return;
        };
        let key = order_key(writer);
        let info = writer.format.info(&key, self.compression);
        let mut shown = self.state.format_info.lock();
        if shown.as_ref() == Some(&info) {
            return;
        }
        let target = &self.state.target;
        match &writer.format {
            InsertFormat::Native(builder) if builder.key().is_complete() => log::info!(
                "inserts into {target}: Native blocks sorted by the table's key ({key}), {}",
                self.compression
            ),
            InsertFormat::Native(_) => log::warn!(
                "inserts into {target}: Native blocks sorted by ({}) only; the gateway cannot \
                 evaluate ({}) of the table's key, so ClickHouse sorts each insert by it",
                info.sorted_by.join(", "),
                info.server_sorts_by.join(", ")
            ),
            InsertFormat::RowBinary(why) if self.state.columnar => log::warn!(
                "inserts into {target} are rows in arrival order ({why}); ClickHouse converts \
                 and sorts each one"
            ),
            InsertFormat::RowBinary(_) => {}
        }
        *shown = Some(info);
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
            match self.build_list(&definition) {
                // Kept under the tag its rows carry, even where this version would tag the
                // same columns otherwise: the definition, not the tag, says how they read.
                Ok(loaded) => {
                    known.insert(tag, Arc::new(Loaded { tag, ..loaded }));
                }
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
        let facts = self.facts(client).await.map_err(unreachable)?;
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
            if self.state.owned.is_some() {
                // Dropped since it was created: created again by the next attempt.
                self.created.store(false, Ordering::Release);
            }
            return Err(Load::Problem(match &self.cluster {
                Some(_) => missing_local(target, &self.insert_table),
                None => missing(target),
            }));
        }
        let (engine, create_table) = self
            .bounded(
                client
                    .query(
                        "SELECT engine, create_table_query FROM system.tables \
                         WHERE database = ? AND name = ?",
                    )
                    .bind(&self.database)
                    .bind(&self.insert_table)
                    .fetch_optional::<(String, String)>(),
            )
            .await
            .map_err(unreachable)?
            .unwrap_or_default();
        let zone = self
            .bounded(client.query("SELECT timezone()").fetch_one::<String>())
            .await
            .map_err(unreachable)?;
        let sharding = match (&self.cluster, &self.state.owned) {
            (Some(cluster), None) => Some(self.sharding_key(client, cluster).await?),
            _ => None,
        };
        self.read_deduplication(client, facts.version, &engine, &create_table)
            .await
            .map_err(unreachable)?;
        let definition = Definition {
            columns: infos,
            create_table,
            zone,
            server_defaults: facts.server_defaults,
            server_time_column: self.server_time_column.clone(),
            client_ip_column: self.client_ip_column.clone(),
            time_range: facts.version.time_range(),
        };
        let loaded = self.build_list(&definition).map_err(Load::Problem)?;
        if let Some(key) = sharding {
            self.use_sharding(key, &loaded)?;
        }
        Ok((loaded, definition))
    }

    /// What the table does with a retried insert's token, read from its definition (on
    /// servers with tokens); a plain `MergeTree` without a window is warned about once.
    async fn read_deduplication(
        &self,
        client: &Client,
        version: ServerVersion,
        engine: &str,
        create_table: &str,
    ) -> Result<(), SinkError> {
        let found = match version.supports_dedup_token() {
            false => Deduplication::NoTokens,
            true => {
                // The server's default, for a MergeTree table whose DDL does not set it.
                let window = self
                    .bounded(
                        client
                            .query(
                                "SELECT toUInt64(value) FROM system.merge_tree_settings \
                                 WHERE name = 'non_replicated_deduplication_window'",
                            )
                            .fetch_optional::<u64>(),
                    )
                    .await;
                match window {
                    Ok(window) => deduplication(engine, create_table, window.unwrap_or(0)),
                    // The server answered but will not say (a user without access to
                    // system tables): not a reason to stop writing.
                    Err(e) if e.code().is_some() => Deduplication::Unknown(format!(
                        "the server's default window is not readable ({e})"
                    )),
                    Err(e) => return Err(e),
                }
            }
        };
        let mut known = self.state.deduplication.lock();
        if known.as_ref() != Some(&found) && found == Deduplication::NoWindow {
            let target = &self.state.target;
            log::warn!(
                "{target} has no non_replicated_deduplication_window: ClickHouse ignores the \
                 insert_deduplication_token of retried inserts, so a batch retried after a \
                 lost answer or replayed after a crash may be stored twice. To store it once: \
                 ALTER TABLE {target} MODIFY SETTING non_replicated_deduplication_window = 1000"
            );
        }
        *known = Some(found);
        Ok(())
    }

    /// The column list of `definition`: no I/O, so a list saved by an earlier run is built
    /// again exactly as it was (same columns, same tag). A fixed list keeps its schema and
    /// takes the server's types of its columns for the blocks (checked to fit its rows).
    fn build_list(&self, definition: &Definition) -> Result<Loaded, String> {
        let target = &self.state.target;
        let (schema, columns, tagged) = match &self.state.owned {
            Some(owned) => {
                let server: Vec<(String, String)> = (definition.columns.iter())
                    .map(|c| (c.name.clone(), c.type_name.clone()))
                    .collect();
                check_columns(&server)
                    .map_err(|problem| format!("table {target} does not fit: {problem}"))?;
                let columns = (owned.schema.columns().iter())
                    .filter_map(|c| server.iter().find(|(name, _)| *name == c.name).cloned())
                    .collect();
                // The settings were applied to the fixed list when the sink was built.
                let schema = (owned.schema.clone()).with_time_range(definition.time_range);
                (schema, columns, false)
            }
            None => {
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
                .map(|schema| schema.with_time_range(definition.time_range))
                .and_then(|schema| {
                    *self.state.base.lock() = Some(schema.clone());
                    let settings = self.state.settings.lock().clone();
                    Ok(schema.with_settings(&settings)?)
                })
                .map_err(|e| match e {
                    SchemaError::Missing(_) => missing(target),
                    SchemaError::Setting(e) => {
                        let problem = e.to_string();
                        *self.state.setting_problem.lock() = Some(problem.clone());
                        problem
                    }
                    e => e.to_string(),
                })?;
                *self.state.setting_problem.lock() = None;
                let columns = schema.column_list();
                (schema, columns, true)
            }
        };
        let utc = UTC_NAMES.contains(&definition.zone.as_str());
        let sorting_key = order_by_of(&definition.create_table);
        let format = match (self.state.columnar, schema.uses_server_defaults()) {
            (false, _) => InsertFormat::RowBinary(
                "direct mode: each request is one insert, sent as encoded".into(),
            ),
            // A Native block has no per-row "use the default".
            (true, true) => InsertFormat::RowBinary(
                "a column's DEFAULT is computed by the server for rows without its field".into(),
            ),
            (true, false) if schema.columns().iter().any(|c| c.shape.rowbinary_only()) => {
                InsertFormat::RowBinary(
                    "a JSON, Dynamic or Variant column is sent as RowBinary only".into(),
                )
            }
            (true, false) => InsertFormat::plan(&columns, &sorting_key, utc),
        };
        let layouts = (columns.iter())
            .map(|(_, ty)| ColumnType::parse(ty).map_err(|e| format!("{target}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let quoted: Vec<String> = columns.iter().map(|(n, _)| quote(n)).collect();
        // A `JSON` value is sent as its text, which the server parses as a JSONEachRow
        // insert would.
        let json = schema.columns().iter().any(|c| c.shape.has_json());
        let settings_sql = match json {
            true => " SETTINGS input_format_binary_read_json_as_string = 1",
            false => "",
        };
        // The tag names the rows' encoding, whatever the insert's format.
        let mut tagged_columns = columns.clone();
        tagged_columns.push((
            String::new(),
            match schema.uses_server_defaults() {
                true => "RowBinaryWithDefaults",
                false => "Native",
            }
            .to_string(),
        ));
        Ok(Loaded {
            tag: match tagged {
                true => tag_of(&tagged_columns),
                false => FIXED,
            },
            tagged,
            schema,
            write: Some(Writer {
                format,
                layouts,
                columns_sql: format!("({}){settings_sql}", quoted.join(", ")),
            }),
        })
    }

    /// The list `tag` names, ready to write: reading the table first if this process has
    /// not yet (or, for the events table, has not reached the server).
    async fn loaded(&self, tag: [u8; TAG_BYTES]) -> Result<Option<Arc<Loaded>>, SinkError> {
        let ready = || {
            let known = self.state.known.lock();
            let ready = known.get(&tag).filter(|l| l.write.is_some()).cloned();
            (ready, known.is_empty())
        };
        match ready() {
            (Some(loaded), _) => return Ok(Some(loaded)),
            (None, empty) if empty || self.state.owned.is_some() => {
                self.refresh().await.map_err(SinkError::Retryable)?;
            }
            (None, _) => {}
        }
        Ok(ready().0)
    }

    /// `rows` as runs of one column list each, in order. A fixed list's rows are one run,
    /// as they are.
    async fn runs<'r>(&self, rows: RowsRef<'r>) -> Result<Vec<Run<'r>>, SinkError> {
        if self.state.owned.is_some() {
            let loaded = self.loaded(FIXED).await?.ok_or_else(|| {
                SinkError::Retryable(format!("{}: not read yet", self.state.target))
            })?;
            return Ok(vec![Run {
                loaded,
                data: Cow::Borrowed(rows.data),
                count: rows.count,
            }]);
        }
        let mut runs: Vec<Run<'r>> = Vec::new();
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
                .filter(|run| run.loaded.tag == tag)
                .map(|run| run.loaded.clone());
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
            let layouts = loaded.write.as_ref().map_or(&[][..], |w| &w.layouts);
            let len = row_len(layouts, body, loaded.schema.uses_server_defaults())
                .ok_or_else(|| SinkError::Data("a row that does not fit its columns".into()))?;
            match runs.last_mut() {
                Some(run) if run.loaded.tag == tag => {
                    run.data.to_mut().extend_from_slice(&body[..len]);
                    run.count += 1;
                }
                _ => runs.push(Run {
                    loaded,
                    data: Cow::Owned(body[..len].to_vec()),
                    count: 1,
                }),
            }
            at += TAG_BYTES + len;
        }
        Ok(runs)
    }

    /// A run encoded under a list with a column the table no longer has is refused as data.
    fn check_columns_still_there(
        &self,
        run: &Run<'_>,
        current: &Result<Arc<Loaded>, String>,
    ) -> Result<(), SinkError> {
        let Ok(current) = current else {
            return Ok(());
        };
        if current.tag == run.loaded.tag {
            return Ok(());
        }
        let now = current.schema.column_list();
        match (run.loaded.schema.column_list().into_iter()).find(|c| !now.contains(c)) {
            Some((name, ty)) => Err(SinkError::Data(format!(
                "row encoded when {} had column {name} {ty}, which it no longer has",
                self.state.target
            ))),
            None => Ok(()),
        }
    }

    /// The table's name in SQL, as the insert names it.
    fn insert_target(&self) -> String {
        format!("{}.{}", quote(&self.database), quote(&self.insert_table))
    }

    /// One insert of `run` into `into` (a quoted `db.table`): a Native block built here, on
    /// the caller's thread, or the rows as they are.
    async fn insert(
        &self,
        into: &str,
        run: &Run<'_>,
        token: Option<(&str, bool)>,
    ) -> Result<(), SinkError> {
        let Some(writer) = &run.loaded.write else {
            return Err(SinkError::Retryable(format!(
                "{}: not read yet",
                self.state.target
            )));
        };
        let as_encoded = || (Bytes::copy_from_slice(&run.data), run.loaded.row_format());
        let (body, format) = match &writer.format {
            InsertFormat::Native(builder) => match builder.build(&run.data, run.count) {
                Ok(block) => (Bytes::from(block), "Native"),
                Err(e) => {
                    // Rows this service encoded always fit their list; if not, the rows
                    // still go out, as they are.
                    log::warn!("sending {} rows as RowBinary: {e}", run.count);
                    as_encoded()
                }
            },
            InsertFormat::RowBinary(_) => as_encoded(),
        };
        let sql = format!("INSERT INTO {into} {} FORMAT {format}", writer.columns_sql);
        let result = self.send(&sql, &body, token).await;
        if let (InsertFormat::Native(builder), "Native") = (&writer.format, format) {
            // The request has let go of its chunks: the block's memory serves the next one.
            if let Ok(block) = body.try_into_mut() {
                builder.recycle(block.into());
            }
        }
        result
    }

    async fn send(
        &self,
        sql: &str,
        body: &Bytes,
        token: Option<(&str, bool)>,
    ) -> Result<(), SinkError> {
        let version = self.facts(&self.base).await?.version;
        let mut client = self.base.clone().with_database(&self.database);
        for (name, value) in [version.required_settings(), version.insert_settings()].concat() {
            client = client.with_setting(name, value);
        }
        if let Some((token, maybe_sent)) = token {
            if version.supports_dedup_token() {
                client = client.with_setting("insert_deduplication_token", token);
            } else {
                if maybe_sent
                    && query_log::finished(&self.base, token, self.timeout).await? == Some(true)
                {
                    log::info!(
                        "insert {token} was stored before its answer was lost; not sending it \
                         again"
                    );
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
        let mut at = 0;
        while at < body.len() {
            let end = (at + SEND_CHUNK).min(body.len());
            insert.send(body.slice(at..end)).await?;
            at = end;
        }
        Ok(insert.end().await?)
    }

    /// Creates a probe table for one search: the table's columns, defaults and
    /// `MATERIALIZED` expressions, `ENGINE = Null`, so an insert into it fails exactly where
    /// the table's would and stores nothing (no parts, no merges). Its name is the insert
    /// table's with `_probe_` and 64 random bits, created without `IF NOT EXISTS`: it can
    /// never be a table someone else made (a clash is refused by the server, and the
    /// caller splits real inserts instead). Only the name recorded here is ever dropped.
    async fn create_probe(&self) -> Result<String, SinkError> {
        self.drop_probe().await?;
        let version = self.facts(&self.base).await?.version;
        let name = format!("{}_probe_{:016x}", self.insert_table, rand::random::<u64>());
        let db = quote(&self.database);
        let sql = format!(
            "CREATE TABLE {db}.{} AS {} ENGINE = Null",
            quote(&name),
            self.insert_target()
        );
        self.execute(&sql, version).await?;
        *self.probe_table.lock() = Some(name.clone());
        Ok(name)
    }

    /// Drops the probe table this sink created, if any.
    async fn drop_probe(&self) -> Result<(), SinkError> {
        let Some(name) = self.probe_table.lock().clone() else {
            return Ok(());
        };
        let sql = format!(
            "DROP TABLE IF EXISTS {}.{}",
            quote(&self.database),
            quote(&name)
        );
        self.bounded(self.base.query(&sql).execute()).await?;
        let mut recorded = self.probe_table.lock();
        if recorded.as_deref() == Some(name.as_str()) {
            *recorded = None;
        }
        Ok(())
    }
}

impl Sink for TableSink {
    async fn answers_queries(&self) -> Result<(), SinkError> {
        self.server_version().await.map(|_| ())
    }

    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        if rows.count == 0 {
            return Ok(());
        }
        let runs = self.runs(rows).await?;
        // Every run is checked before any is sent: a refusal never follows a stored run.
        let current = self.state.current();
        for run in &runs {
            self.check_columns_still_there(run, &current)?;
        }
        let into = self.insert_target();
        for (i, run) in runs.iter().enumerate() {
            let token = id.map(|id| match runs.len() {
                1 => (id.token.to_string(), id.maybe_sent),
                _ => (format!("{}-{i}", id.token), id.maybe_sent),
            });
            let result = self
                .insert(&into, run, token.as_ref().map(|(t, m)| (t.as_str(), *m)))
                .await;
            if let Err(e) = &result
                && let Some(code) = e.code()
                && SCHEMA_CODES.contains(&code)
            {
                // The table changed or vanished underneath: read it again (the events
                // table is created again) before the retry.
                if MISSING_TABLE_CODES.contains(&code) {
                    log::warn!("{} is missing", self.state.target);
                    self.created.store(false, Ordering::Release);
                }
                let _ = self.refresh().await;
            }
            result?;
        }
        Ok(())
    }

    async fn probe(&self, rows: RowsRef<'_>, fresh: bool) -> Result<(), SinkError> {
        let runs = self.runs(rows).await?;
        let existing = self.probe_table.lock().clone();
        let name = match existing {
            Some(name) if !fresh => name,
            _ => self.create_probe().await?,
        };
        let into = format!("{}.{}", quote(&self.database), quote(&name));
        for run in &runs {
            self.insert(&into, run, None).await?;
        }
        Ok(())
    }

    async fn end_probe(&self) -> Result<(), SinkError> {
        self.drop_probe().await
    }

    fn list_tag_len(&self) -> usize {
        self.state.tag_len()
    }
}

/// The sorting key a writer's blocks follow, as health shows it.
fn order_key(writer: &Writer) -> String {
    match &writer.format {
        InsertFormat::Native(builder) => {
            let key = builder.key();
            [key.sorted_by(), key.left_to_server()].concat().join(", ")
        }
        InsertFormat::RowBinary(_) => String::new(),
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
         host asked; its requests get 503 until it does"
    )
}

/// The problem of a table that does not exist.
fn missing(target: &str) -> String {
    format!("table {target} does not exist; its requests get 503 until it does")
}

/// Codes after which the table is read again: a missing table or database, a column
/// missing or of another type (368, `BAD_CAST`: 18.16's answer to a `String` column sent
/// for a `LowCardinality` one).
const SCHEMA_CODES: &[u32] = &[8, 10, 16, 53, 60, 81, 368];

/// How long a cluster's hosts may take to show columns added on demand.
const ADDED_WITHIN: Duration = Duration::from_secs(10);

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
                .map(|(name, ty)| ColumnInfo::plain(name, ty))
                .collect(),
            create_table: "CREATE TABLE db.t (n UInt32) ENGINE = MergeTree ORDER BY n".into(),
            zone: "UTC".into(),
            server_defaults: false,
            server_time_column: "server_time".into(),
            client_ip_column: "ip".into(),
            time_range: Default::default(),
        }
    }

    fn settings(spool_dir: &std::path::Path) -> Settings {
        Settings {
            connection: Connection {
                url: "http://127.0.0.1:8123".into(),
                user: "default".into(),
                password: String::new(),
                compression: crate::sink::Compression::None,
                tls: None,
            },
            hosts: Vec::new(),
            database: "db".into(),
            events_table: "events".into(),
            sharding_column: "device_id".into(),
            cluster: None,
            timeout: Duration::from_secs(1),
            server_time_column: "server_time".into(),
            client_ip_column: "ip".into(),
            columns_root: Some(spool_dir.to_path_buf()),
        }
    }

    fn sink(spool_dir: &std::path::Path) -> TableSink {
        TableSink::new(&settings(spool_dir), "db.t")
    }

    fn read(sink: &TableSink, columns: &[(&str, &str)]) -> Result<(Loaded, Definition), String> {
        let definition = definition(columns);
        Ok((sink.build_list(&definition)?, definition))
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

    /// A list saved by an earlier version that tagged the same columns otherwise is kept
    /// under the tag its spooled rows carry, so they are written, not quarantined.
    #[test]
    fn a_saved_list_is_kept_under_its_own_tag_after_an_upgrade() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = sink(tmp.path());
        let columns = [("n", "UInt32"), ("s", "String")];
        let (loaded, definition) = read(&sink, &columns).unwrap();
        let earlier = [0xde, 0xad, 0xbe, 0xef];
        assert_ne!(loaded.tag, earlier);
        let dir = tmp.path().join("table-db.t");
        table_columns::save(&dir, earlier, &definition).unwrap();
        let restarted = self::sink(tmp.path());
        restarted.restore();
        let mut row = earlier.to_vec();
        row.extend_from_slice(&7u32.to_le_bytes());
        row.extend_from_slice(&[1, b'x']);
        let decoded = restarted
            .state()
            .decode_row(&row)
            .expect("its list is known");
        assert_eq!(decoded["n"], 7);
        assert_eq!(decoded["s"], "x");
    }

    /// The events table is a table like the others whose list is fixed: its rows carry no
    /// tag, the list is there before the server is (rows are taken while it is down), a
    /// table that does not fit it is the table's problem without refusing rows, and the
    /// server's types of its columns decide the blocks.
    #[test]
    fn the_events_tables_list_is_fixed_and_outlives_any_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let sink = TableSink::events(&settings(tmp.path()));
        let state = sink.state();
        assert_eq!(state.tag_len(), 0);
        let before = state
            .current()
            .expect("a list before the server is reached");
        assert!(crate::table::ColumnList::tag(&*before).is_empty());
        assert!(before.write.is_none());
        let columns: Vec<(String, String)> = crate::table::events::TABLE
            .iter()
            .map(|c| (c.name.to_string(), c.legacy.to_string()))
            .collect();
        let fits: Vec<(&str, &str)> = columns
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let mut unfit = fits.clone();
        unfit.retain(|(n, _)| *n != "session");
        let problem = sink.build_list(&definition(&unfit)).err().unwrap();
        assert!(problem.contains("session"), "{problem}");
        assert!(sink.adopt(Err(problem)).is_err());
        assert!(state.current().is_ok(), "rows are still taken");
        sink.adopt(read(&sink, &fits)).unwrap();
        let after = state.current().unwrap();
        assert!(after.write.is_some());
        assert_eq!(after.tag, FIXED);
        assert!(state.decode_row(&[]).is_none());
    }
}
