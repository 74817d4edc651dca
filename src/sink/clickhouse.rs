//! The ClickHouse sink: version detection, database and table creation, batch inserts in
//! RowBinary over HTTP through the official `clickhouse` crate, and the health ping.

use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use parking_lot::Mutex;

use super::error::MISSING_TABLE_CODES;
use super::schema::{ServerVersion, create_table_sql};
use super::{Sink, SinkError};
use crate::config::Config;
use crate::event::EventRow;

/// How long a health ping may take before ClickHouse counts as unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Writes batches to one ClickHouse table.
///
/// Start-up does not require ClickHouse to be up: the first call that needs the server
/// ([`ClickHouseSink::prepare`], which every write goes through) detects the version and
/// creates the database and table, and a failure leaves it to be tried again by the next
/// call. If the table disappears later (`UNKNOWN_TABLE`), it is recreated the same way.
pub struct ClickHouseSink {
    /// Client without a database or schema validation: works on every server version, used
    /// to detect the version, run DDL and ping.
    base: Client,
    database: String,
    table: String,
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
    /// Client for inserts: database set, validation and settings as the version allows.
    client: Client,
}

impl ClickHouseSink {
    /// A sink for `CLICKHOUSE_*` in `config`. Does no I/O.
    pub fn new(config: &Config) -> Self {
        let base = Client::default()
            .with_url(config.clickhouse_url())
            .with_user(&config.clickhouse_user)
            .with_password(&config.clickhouse_password)
            .with_validation(false);
        Self {
            base,
            database: config.clickhouse_name.clone(),
            table: config.clickhouse_table.clone(),
            timeout: config.clickhouse_timeout(),
            prepared: Mutex::new(None),
        }
    }

    /// The table's `database.table` name.
    pub fn target(&self) -> String {
        format!("{}.{}", self.database, self.table)
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
        let mut client = self
            .base
            .clone()
            .with_database(&self.database)
            .with_validation(version.supports_client_validation());
        for (name, value) in version.required_settings() {
            client = client.with_setting(*name, *value);
        }
        let prepared = Arc::new(Prepared {
            version,
            version_text,
            client,
        });
        *self.prepared.lock() = Some(prepared.clone());
        Ok(prepared)
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

    async fn insert(&self, client: &Client, rows: &[EventRow]) -> Result<(), SinkError> {
        // With validation on, starting an insert fetches the table's schema: bound that too.
        let mut insert = self
            .bounded(client.insert::<EventRow>(&self.table))
            .await?
            .with_timeouts(Some(self.timeout), Some(self.timeout));
        for row in rows {
            insert.write(row).await?;
        }
        Ok(insert.end().await?)
    }
}

impl Sink for ClickHouseSink {
    async fn write(&self, rows: &[EventRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let prepared = self.prepare().await?;
        let result = self.insert(&prepared.client, rows).await;
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
