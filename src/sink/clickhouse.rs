//! The ClickHouse sink: version detection, database and table creation, a schema check,
//! batch inserts of pre-encoded RowBinary over HTTP through the official `clickhouse` crate
//! (LZ4-compressed), and the health ping.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clickhouse::Client;
use parking_lot::Mutex;

use super::error::MISSING_TABLE_CODES;
use super::schema::{
    Deduplication, ServerVersion, check_columns, create_table_sql, deduplication, upgrade_sql,
};
use super::{InsertId, Sink, SinkError, query_log};
use crate::config::Config;
use crate::event::{COLUMNS, RowsRef};

/// How long a health ping may take before ClickHouse counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows are sent in chunks of this many bytes, each compressed on its own: the request
/// streams, and no compressed block approaches ClickHouse's size limit.
const SEND_CHUNK: usize = 1 << 20;

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
    /// `INSERT INTO table (columns) FORMAT RowBinary`, built once.
    insert_sql: String,
    /// The same into the probe table (`{table}_probe`, `ENGINE = Null`).
    probe_sql: String,
    timeout: Duration,
    /// What `prepare` learned. A plain mutex around an `Arc`: held only to clone or replace
    /// the pointer, never across a request.
    prepared: Mutex<Option<Arc<Prepared>>>,
}

/// The server's version and a client configured for it.
pub struct Prepared {
    /// The server's version, e.g. 18.16.
    pub version: ServerVersion,
    /// The version string as the server reported it.
    pub version_text: String,
    /// Whether a retried insert is stored once, from the table's definition.
    pub deduplication: Deduplication,
    /// Client for inserts: database and the settings this version needs.
    client: Client,
}

impl ClickHouseSink {
    /// A sink for `CLICKHOUSE_*` in `config`. Does no I/O.
    pub fn new(config: &Config) -> Self {
        let base = Client::default()
            .with_url(config.clickhouse_url())
            .with_user(&config.clickhouse_user)
            .with_password(config.clickhouse_password.expose())
            .with_validation(false);
        Self {
            base,
            database: config.clickhouse_name.clone(),
            table: config.clickhouse_table.clone(),
            insert_sql: format!(
                "INSERT INTO `{}` ({}) FORMAT RowBinary",
                config.clickhouse_table,
                COLUMNS.join(", ")
            ),
            probe_sql: format!(
                "INSERT INTO `{}_probe` ({}) FORMAT RowBinary",
                config.clickhouse_table,
                COLUMNS.join(", ")
            ),
            timeout: config.clickhouse_timeout(),
            prepared: Mutex::new(None),
        }
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
        let ddl = [
            format!("CREATE DATABASE IF NOT EXISTS `{}`", self.database),
            create_table_sql(&self.database, &self.table, version),
        ];
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
            client,
        });
        *self.prepared.lock() = Some(prepared.clone());
        Ok(prepared)
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
        match tokio::time::timeout(PING_TIMEOUT, query).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SinkError::Retryable(format!(
                "no answer within {PING_TIMEOUT:?}"
            ))),
        }
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = clickhouse::error::Result<T>>,
    ) -> Result<T, SinkError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(SinkError::Retryable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }

    async fn insert(
        &self,
        prepared: &Prepared,
        sql: &str,
        rows: RowsRef<'_>,
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
            .insert_formatted_with(sql.to_string())
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for chunk in rows.data.chunks(SEND_CHUNK) {
            insert.send(Bytes::copy_from_slice(chunk)).await?;
        }
        Ok(insert.end().await?)
    }
}

impl ClickHouseSink {
    /// (Re)creates the probe table: the target's columns, defaults and `MATERIALIZED`
    /// expressions, `ENGINE = Null`, so an insert into it fails exactly where the target's
    /// would and stores nothing (no parts, no merges).
    async fn recreate_probe(&self, prepared: &Prepared) -> Result<(), SinkError> {
        let (db, table) = (&self.database, &self.table);
        let ddl = [
            format!("DROP TABLE IF EXISTS `{db}`.`{table}_probe`"),
            format!("CREATE TABLE `{db}`.`{table}_probe` AS `{db}`.`{table}` ENGINE = Null"),
        ];
        for sql in ddl {
            let mut query = self.base.query(&sql);
            for (name, value) in prepared.version.required_settings() {
                query = query.with_setting(*name, *value);
            }
            self.bounded(query.execute()).await?;
        }
        Ok(())
    }
}

impl Sink for ClickHouseSink {
    async fn probe(&self, rows: RowsRef<'_>, fresh: bool) -> Result<(), SinkError> {
        let prepared = self.prepare().await?;
        if fresh {
            self.recreate_probe(&prepared).await?;
        }
        self.insert(&prepared, &self.probe_sql, rows, None).await
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
