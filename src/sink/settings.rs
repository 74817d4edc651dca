//! What the sinks are told about ClickHouse: how to reach a server, and what every sink of
//! the service shares (database, cluster, server-filled columns, where column lists are
//! kept). Built by the application from its configuration: no sink reads the configuration.

use std::path::PathBuf;
use std::time::Duration;

use clickhouse::Client;

/// How the bytes of inserts travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// ClickHouse's LZ4 block framing.
    Lz4,
    /// Plain bytes.
    None,
}

impl Compression {
    /// As `/v1/health` shows it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::None => "none",
        }
    }
}

/// One ClickHouse server: where it is and how to log in.
#[derive(Clone)]
pub struct Connection {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// The user.
    pub user: String,
    /// Its password (never logged).
    pub password: String,
    /// How inserts travel.
    pub compression: Compression,
    /// For an `https://` URL: the TLS client configuration (shared by every connection).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("compression", &self.compression)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// A client for this server, without a database and without the crate's schema
    /// validation (rows arrive encoded; see the sinks).
    pub fn client(&self) -> Client {
        let compression = match self.compression {
            Compression::Lz4 => clickhouse::Compression::Lz4,
            Compression::None => clickhouse::Compression::None,
        };
        let client = match &self.tls {
            Some(config) => super::tls::client(config.clone()),
            None => Client::default(),
        };
        client
            .with_url(&self.url)
            .with_user(&self.user)
            .with_password(&self.password)
            .with_compression(compression)
            .with_validation(false)
    }
}

/// What every sink of the service shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The server (`CLICKHOUSE_HOST:CLICKHOUSE_PORT`), or in a cluster the host a sink is
    /// aimed at.
    pub connection: Connection,
    /// In a cluster, every host (`CLICKHOUSE_HOSTS`): where tables' definitions are read, so
    /// every shard's sinks agree on one column list. Empty otherwise.
    pub hosts: Vec<Connection>,
    /// The database (`CLICKHOUSE_NAME`).
    pub database: String,
    /// The events table (`CLICKHOUSE_TABLE`).
    pub events_table: String,
    /// In a cluster, the column the events table is sharded by (`CLICKHOUSE_SHARDING_KEY`).
    pub sharding_column: String,
    /// The cluster (`CLICKHOUSE_CLUSTER`), if any.
    pub cluster: Option<String>,
    /// Longest one query or insert may take.
    pub timeout: Duration,
    /// `SERVER_TIME_COLUMN`.
    pub server_time_column: String,
    /// `CLIENT_IP_COLUMN`.
    pub client_ip_column: String,
    /// `disk` mode: the folder under which each table's column lists are kept beside its
    /// spool (`table-<name>`). `None` in `memory` mode.
    pub columns_root: Option<PathBuf>,
}

impl Settings {
    /// The same settings aimed at another server (a replica of a shard).
    pub fn at(&self, connection: &Connection) -> Settings {
        Settings {
            connection: connection.clone(),
            ..self.clone()
        }
    }
}
