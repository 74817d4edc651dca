//! The ClickHouse sink: version detection, database and table creation, a schema check,
//! batch inserts over HTTP through the official `clickhouse` crate (Native blocks in the
//! table's key order built from the pre-encoded rows, or the RowBinary rows themselves;
//! LZ4-compressed with `CLICKHOUSE_COMPRESSION=lz4`), and the health ping.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use parking_lot::Mutex;

use super::cluster_schema::{ClusterTable, create_distributed_sql, create_local_sql};
use super::error::MISSING_TABLE_CODES;
use super::format::{FormatInfo, InsertFormat, order_by_of};
use super::schema::{
    Deduplication, ServerVersion, check_columns, create_table_sql, deduplication, upgrade_sql,
};
use super::{InsertId, Settings, Sink, SinkError, query_log};
use crate::format::RowsRef;
use crate::table::events::COLUMNS;

/// How long a health ping may take before ClickHouse counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows are sent in chunks of this many bytes, each compressed on its own: the request
/// streams, and no compressed block approaches ClickHouse's size limit.
const SEND_CHUNK: usize = 1 << 20;
/// Error codes that say a Native block's columns no longer match the table (a column
/// dropped or retyped underneath): the table is described again before the next attempt.
const SCHEMA_CHANGED_CODES: &[u32] = &[
    8,   // THERE_IS_NO_COLUMN
    10,  // NOT_FOUND_COLUMN_IN_BLOCK
    16,  // NO_SUCH_COLUMN_IN_TABLE
    53,  // TYPE_MISMATCH
    368, // BAD_CAST (18.16: a String column for a LowCardinality one)
];
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

/// Writes batches to one ClickHouse table.
///
/// Start-up does not require ClickHouse to be up: the first call that needs the server
/// ([`ClickHouseSink::prepare`], which every write goes through) detects the version,
/// creates the database and table and checks the table's columns, and a failure leaves it
/// to be tried again by the next call. If the table disappears later (`UNKNOWN_TABLE`), it
/// is recreated the same way.
///
/// The crate's own schema validation is off on every version: rows arrive pre-encoded
/// (`insert_formatted_with`), which it does not validate, and 18.16 refuses the setting it
/// needs. The column check in `prepare` takes its place, once, on every version.
pub struct ClickHouseSink {
    /// Client without a database or schema validation: works on every server version, used
    /// to detect the version, run DDL and ping.
    base: Client,
    database: String,
    table: String,
    /// `INSERT INTO table (columns) FORMAT `, built once; the format's name follows.
    insert_sql: String,
    /// The probe table this sink created and has not dropped yet (see `create_probe`):
    /// the only table it ever drops.
    probe_table: Mutex<Option<String>>,
    timeout: Duration,
    /// Whether inserts may be Native blocks (built on the caller's thread): the flusher's
    /// sink, not `direct` mode's, whose inserts run on request threads.
    columnar: bool,
    /// `CLICKHOUSE_COMPRESSION`, as health shows it.
    compression: &'static str,
    /// The insert format last decided, shared with the sink the HTTP handlers hold (each
    /// thread has its own sink and client) so `/v1/health` shows the flusher's.
    format_info: Arc<Mutex<Option<FormatInfo>>>,
    /// What `prepare` learned. A plain mutex around an `Arc`: held only to clone or replace
    /// the pointer, never across a request.
    prepared: Mutex<Option<Arc<Prepared>>>,
    /// In a cluster: `table` is `<table>_local` on this host, and `prepare` creates it as a
    /// `ReplicatedMergeTree` and the `Distributed` table beside it.
    cluster: Option<ClusterTable>,
}

/// The server's version and a client configured for it.
pub struct Prepared {
    /// The server's version, e.g. 18.16.
    pub version: ServerVersion,
    /// The version string as the server reported it.
    pub version_text: String,
    /// Whether a retried insert is stored once, from the table's definition.
    pub deduplication: Deduplication,
    /// How inserts are encoded (Native in key order, or RowBinary).
    format: InsertFormat,
    /// Client for inserts: database and the settings this version needs.
    client: Client,
}

impl ClickHouseSink {
    /// A sink for the events table of `settings`. Does no I/O.
    pub fn new(settings: &Settings) -> Self {
        Self::for_table(settings, &settings.events_table)
    }

    /// A sink writing to `table` of `settings`' database. Does no I/O.
    fn for_table(settings: &Settings, table: &str) -> Self {
        Self {
            base: settings.connection.client(),
            database: settings.database.clone(),
            table: table.to_string(),
            insert_sql: format!("INSERT INTO `{table}` ({}) FORMAT ", COLUMNS.join(", ")),
            probe_table: Mutex::new(None),
            timeout: settings.timeout,
            columnar: true,
            compression: settings.connection.compression.name(),
            format_info: Arc::new(Mutex::new(None)),
            prepared: Mutex::new(None),
            cluster: None,
        }
    }

    /// A sink writing to `<table>_local` on the host `settings` are aimed at (see
    /// [`Settings::at`]), which creates that table as a `ReplicatedMergeTree` and `<table>`
    /// as the `Distributed` table sharded by `sharding` on this host. Each host gets its DDL
    /// when its sink first reaches it, rather than `ON CLUSTER`: on 18.16 a distributed DDL
    /// runs without the query's settings (so the `LowCardinality` columns are refused), and
    /// it waits out `distributed_ddl_task_timeout` while a host is down.
    pub fn cluster_replica(settings: &Settings, sharding: String) -> Self {
        let mut sink = Self::for_table(settings, &format!("{}_local", settings.events_table));
        sink.cluster = Some(ClusterTable {
            cluster: settings.cluster.clone().unwrap_or_default(),
            distributed: settings.events_table.clone(),
            sharding,
        });
        sink
    }

    /// The client without a database, for queries about the server.
    pub(super) fn base(&self) -> &Client {
        &self.base
    }

    /// This sink sends the rows as encoded (RowBinary), never building blocks: for `direct`
    /// mode, whose inserts run on the HTTP workers and are one request each.
    pub fn row_binary_only(mut self) -> Self {
        self.columnar = false;
        self
    }

    /// Shares `other`'s view of the insert format, so what this sink decides shows where
    /// `other` is asked (the flusher's sink and the handlers' one).
    pub fn sharing_format_info(mut self, other: &ClickHouseSink) -> Self {
        self.format_info = other.format_info.clone();
        self
    }

    /// How inserts are encoded and sorted, once a sink sharing this view has reached the
    /// server (for `/v1/health`).
    pub fn format_info(&self) -> Option<FormatInfo> {
        self.format_info.lock().clone()
    }

    /// The table's `database.table` name.
    pub fn target(&self) -> String {
        format!("{}.{}", self.database, self.table)
    }

    /// The version string the server reported, if it has been reached since start-up.
    pub fn version_text(&self) -> Option<String> {
        self.prepared
            .lock()
            .as_ref()
            .map(|p| p.version_text.clone())
    }

    /// The server's version, if it has been reached since start-up.
    pub fn version(&self) -> Option<ServerVersion> {
        self.prepared.lock().as_ref().map(|p| p.version)
    }

    /// Detects the server version and creates the database and table if missing. Cheap
    /// after the first success: returns what it learned then.
    pub async fn prepare(&self) -> Result<Arc<Prepared>, SinkError> {
        if let Some(prepared) = self.prepared.lock().clone() {
            return Ok(prepared);
        }
        let version_text = self.server_version().await?;
        let version = ServerVersion::parse(&version_text).ok_or_else(|| {
            SinkError::Retryable(format!("unrecognised server version {version_text:?}"))
        })?;
        let mut ddl = vec![format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database)];
        match &self.cluster {
            None => ddl.push(create_table_sql(&self.database, &self.table, version)),
            Some(cluster) => {
                ddl.push(create_local_sql(&self.database, &self.table, version));
                ddl.push(create_distributed_sql(&self.database, &self.table, cluster));
            }
        }
        for sql in ddl {
            let mut query = self.base.query(&sql);
            for (name, value) in version.required_settings() {
                query = query.with_setting(*name, *value);
            }
            self.bounded(query.execute()).await?;
        }
        let mut columns = self.columns().await?;
        if let Some(sql) = upgrade_sql(&self.database, &self.table, &columns) {
            // A table created by an earlier version: add what it lacks, then look again.
            log::info!("upgrading {}: {sql}", self.target());
            self.bounded(self.base.query(&sql).execute()).await?;
            columns = self.columns().await?;
        }
        check_columns(&columns).map_err(|problem| {
            SinkError::Retryable(format!("table {} does not fit: {problem}", self.target()))
        })?;
        let format = if self.columnar {
            self.insert_format(&columns).await?
        } else {
            InsertFormat::RowBinary(
                "direct mode: each request is one insert, sent as encoded".into(),
            )
        };
        let deduplication = self.deduplication(version).await?;
        if deduplication == Deduplication::NoWindow {
            log::warn!(
                "{} has no non_replicated_deduplication_window: ClickHouse ignores the \
                 insert_deduplication_token of retried inserts, so a batch retried after a lost \
                 answer or replayed after a crash may be stored twice. To store it once: \
                 ALTER TABLE {} MODIFY SETTING non_replicated_deduplication_window = 1000",
                self.target(),
                self.target()
            );
        }
        let mut client = self.base.clone().with_database(&self.database);
        let settings = version.required_settings().iter();
        for (name, value) in settings.chain(version.insert_settings()) {
            client = client.with_setting(*name, *value);
        }
        let prepared = Arc::new(Prepared {
            version,
            version_text,
            deduplication,
            format,
            client,
        });
        *self.prepared.lock() = Some(prepared.clone());
        Ok(prepared)
    }

    /// Decides the insert format from the table's columns, its sorting key and the server's
    /// time zone, and says so (once per change: the flusher's and the handlers' sinks share
    /// what was said).
    async fn insert_format(&self, columns: &[(String, String)]) -> Result<InsertFormat, SinkError> {
        // check_columns has ensured each of ours exists.
        let ours: Vec<(String, String)> = COLUMNS
            .iter()
            .filter_map(|name| columns.iter().find(|(n, _)| n == name).cloned())
            .collect();
        let sorting_key = self.sorting_key().await?;
        let zone = self
            .bounded(self.base.query("SELECT timezone()").fetch_one::<String>())
            .await?;
        let format = InsertFormat::plan(&ours, &sorting_key, UTC_NAMES.contains(&zone.as_str()));
        let info = format.info(&sorting_key, self.compression);
        let mut shown = self.format_info.lock();
        if shown.as_ref() != Some(&info) {
            match &format {
                InsertFormat::Native(builder) if builder.key().is_complete() => log::info!(
                    "inserts into {}: Native blocks sorted by the table's key ({sorting_key}), {}",
                    self.target(),
                    self.compression
                ),
                InsertFormat::Native(_) => log::warn!(
                    "inserts into {}: Native blocks sorted by ({}) only; the gateway cannot \
                     evaluate ({}) of the table's key, so ClickHouse sorts each insert by it",
                    self.target(),
                    info.sorted_by.join(", "),
                    info.server_sorts_by.join(", ")
                ),
                InsertFormat::RowBinary(why) => log::warn!(
                    "inserts into {} are RowBinary rows in arrival order ({why}); ClickHouse \
                     converts and sorts each one",
                    self.target()
                ),
            }
            *shown = Some(info);
        }
        Ok(format)
    }

    /// The table's sorting key as the server spells it: `system.tables.sorting_key`, or the
    /// `ORDER BY` of its definition on servers without that column; empty if neither says.
    async fn sorting_key(&self) -> Result<String, SinkError> {
        let key = self
            .bounded(
                self.base
                    .query("SELECT sorting_key FROM system.tables WHERE database = ? AND name = ?")
                    .bind(&self.database)
                    .bind(&self.table)
                    .fetch_optional::<String>(),
            )
            .await;
        match key {
            Ok(key) => return Ok(key.unwrap_or_default()),
            // An older server: no such column.
            Err(e) if e.code().is_some() => {}
            Err(e) => return Err(e),
        }
        let definition = self
            .bounded(
                self.base
                    .query(
                        "SELECT create_table_query FROM system.tables \
                         WHERE database = ? AND name = ?",
                    )
                    .bind(&self.database)
                    .bind(&self.table)
                    .fetch_optional::<String>(),
            )
            .await;
        match definition {
            Ok(definition) => Ok(order_by_of(&definition.unwrap_or_default())),
            Err(e) if e.code().is_some() => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    /// What the table does with a retried insert's token (see [`Deduplication`]).
    async fn deduplication(&self, version: ServerVersion) -> Result<Deduplication, SinkError> {
        if !version.supports_dedup_token() {
            return Ok(Deduplication::NoTokens);
        }
        let table = self
            .bounded(
                self.base
                    .query(
                        "SELECT engine, create_table_query FROM system.tables \
                         WHERE database = ? AND name = ?",
                    )
                    .bind(&self.database)
                    .bind(&self.table)
                    .fetch_one::<(String, String)>(),
            )
            .await;
        let (engine, create_query) = match table {
            Ok(table) => table,
            // The server answered but will not say (a user without access to system
            // tables): not a reason to stop writing.
            Err(e) if e.code().is_some() => {
                return Ok(Deduplication::Unknown(format!(
                    "the table's definition is not readable ({e})"
                )));
            }
            Err(e) => return Err(e),
        };
        // The server's default, for a MergeTree table whose DDL does not set the window.
        let server_window = self
            .bounded(
                self.base
                    .query(
                        "SELECT toUInt64(value) FROM system.merge_tree_settings \
                         WHERE name = 'non_replicated_deduplication_window'",
                    )
                    .fetch_optional::<u64>(),
            )
            .await;
        let server_window = match server_window {
            Ok(window) => window.unwrap_or(0),
            Err(e) if e.code().is_some() => {
                return Ok(Deduplication::Unknown(format!(
                    "the server's default window is not readable ({e})"
                )));
            }
            Err(e) => return Err(e),
        };
        Ok(deduplication(&engine, &create_query, server_window))
    }

    /// The table's `(name, type)` columns.
    async fn columns(&self) -> Result<Vec<(String, String)>, SinkError> {
        self.bounded(
            self.base
                .query("SELECT name, type FROM system.columns WHERE database = ? AND table = ?")
                .bind(&self.database)
                .bind(&self.table)
                .fetch_all::<(String, String)>(),
        )
        .await
    }

    /// `SELECT version()`; also the health check: it proves the server answers queries.
    pub async fn server_version(&self) -> Result<String, SinkError> {
        let query = self.base.query("SELECT version()").fetch_one::<String>();
        super::bounded(PING_TIMEOUT, query).await
    }

    pub(super) async fn bounded<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        super::bounded(self.timeout, fut).await
    }

    /// One insert of `rows` into the table `sql` names (`INSERT ... FORMAT `): a Native block
    /// built here, on the caller's thread (the flusher's), or the rows as they are.
    async fn insert(
        &self,
        prepared: &Prepared,
        sql: &str,
        rows: RowsRef<'_>,
        id: Option<InsertId<'_>>,
    ) -> Result<(), SinkError> {
        let (body, format) = match &prepared.format {
            InsertFormat::Native(builder) => match builder.build(rows.data, rows.count) {
                Ok(block) => (Bytes::from(block), "Native"),
                Err(e) => {
                    // Rows this service encoded always fit the columns checked at prepare;
                    // if not, the rows still go out, as RowBinary.
                    log::warn!("sending {} rows as RowBinary: {e}", rows.count);
                    (Bytes::copy_from_slice(rows.data), "RowBinary")
                }
            },
            InsertFormat::RowBinary(_) => (Bytes::copy_from_slice(rows.data), "RowBinary"),
        };
        let result = self
            .send(prepared, format!("{sql}{format}"), &body, id)
            .await;
        if let (InsertFormat::Native(builder), "Native") = (&prepared.format, format) {
            // The request has let go of its chunks: the block's memory serves the next one.
            if let Ok(block) = body.try_into_mut() {
                builder.recycle(block.into());
            }
        }
        if let Err(e) = &result
            && format == "Native"
            && e.code().is_some_and(|c| SCHEMA_CHANGED_CODES.contains(&c))
        {
            // The block's columns no longer match the table: describe it again next time.
            log::info!(
                "{} changed underneath ({e}); reading its columns again",
                self.target()
            );
            *self.prepared.lock() = None;
        }
        result
    }

    async fn send(
        &self,
        prepared: &Prepared,
        sql: String,
        body: &Bytes,
        id: Option<InsertId<'_>>,
    ) -> Result<(), SinkError> {
        // Settings of this insert alone: the client is cloned once per insert.
        let client = match id {
            Some(id) if prepared.version.supports_dedup_token() => prepared
                .client
                .clone()
                .with_setting("insert_deduplication_token", id.token),
            Some(id) => prepared
                .client
                .clone()
                .with_setting("query_id", id.token)
                .with_setting("log_queries", "1"),
            None => prepared.client.clone(),
        };
        let mut insert = client
            .insert_formatted_with(sql)
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        let mut at = 0;
        while at < body.len() {
            let end = (at + SEND_CHUNK).min(body.len());
            insert.send(body.slice(at..end)).await?;
            at = end;
        }
        Ok(insert.end().await?)
    }
}

impl ClickHouseSink {
    /// Creates a probe table for one search: the target's columns, defaults and
    /// `MATERIALIZED` expressions, `ENGINE = Null`, so an insert into it fails exactly where
    /// the target's would and stores nothing (no parts, no merges). Its name is the target's
    /// with `_probe_` and 64 random bits, created without `IF NOT EXISTS`: it can never be a
    /// table someone else made (a clash is refused by the server, and the caller splits real
    /// inserts instead). Only the name recorded here is ever dropped.
    async fn create_probe(&self, prepared: &Prepared) -> Result<String, SinkError> {
        self.drop_probe().await?;
        let (db, table) = (&self.database, &self.table);
        let name = format!("{table}_probe_{:016x}", rand::random::<u64>());
        let sql = format!("CREATE TABLE `{db}`.`{name}` AS `{db}`.`{table}` ENGINE = Null");
        let mut query = self.base.query(&sql);
        for (setting, value) in prepared.version.required_settings() {
            query = query.with_setting(*setting, *value);
        }
        self.bounded(query.execute()).await?;
        *self.probe_table.lock() = Some(name.clone());
        Ok(name)
    }

    /// Drops the probe table this sink created, if any.
    async fn drop_probe(&self) -> Result<(), SinkError> {
        let Some(name) = self.probe_table.lock().clone() else {
            return Ok(());
        };
        let sql = format!("DROP TABLE IF EXISTS `{}`.`{name}`", self.database);
        self.bounded(self.base.query(&sql).execute()).await?;
        let mut recorded = self.probe_table.lock();
        if recorded.as_deref() == Some(name.as_str()) {
            *recorded = None;
        }
        Ok(())
    }
}

impl Sink for ClickHouseSink {
    async fn probe(&self, rows: RowsRef<'_>, fresh: bool) -> Result<(), SinkError> {
        let prepared = self.prepare().await?;
        let existing = self.probe_table.lock().clone();
        let name = match existing {
            Some(name) if !fresh => name,
            _ => self.create_probe(&prepared).await?,
        };
        let sql = format!("INSERT INTO `{name}` ({}) FORMAT ", COLUMNS.join(", "));
        self.insert(&prepared, &sql, rows, None).await
    }

    async fn end_probe(&self) -> Result<(), SinkError> {
        self.drop_probe().await
    }

    async fn answers_queries(&self) -> Result<(), SinkError> {
        self.server_version().await.map(|_| ())
    }

    async fn write(&self, rows: RowsRef<'_>, id: Option<InsertId<'_>>) -> Result<(), SinkError> {
        if rows.count == 0 {
            return Ok(());
        }
        let prepared = self.prepare().await?;
        if let Some(id) = id
            && id.maybe_sent
            && !prepared.version.supports_dedup_token()
            && query_log::finished(&self.base, id.token, self.timeout).await? == Some(true)
        {
            log::info!(
                "insert {} was stored before its answer was lost; not sending it again",
                id.token
            );
            return Ok(());
        }
        let result = self.insert(&prepared, &self.insert_sql, rows, id).await;
        if let Err(e) = &result
            && e.code().is_some_and(|c| MISSING_TABLE_CODES.contains(&c))
        {
            // Dropped underneath us: forget what we knew so the next attempt recreates it.
            log::warn!("{} is missing; it will be recreated", self.target());
            *self.prepared.lock() = None;
        }
        result
    }
}
