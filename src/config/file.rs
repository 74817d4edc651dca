//! `CONFIG_FILE`: the TOML file for what does not fit in environment variables, read at
//! start-up and again when it changes: the API keys (`[[keys]]`), each with a name, its
//! secret (or the secret's SHA-256), a role, the tables it may write, the page origins a
//! browser key is used from, and a rate; and per-table settings (`[[tables]]`: nested
//! fields into columns, a column for the rest, the `User-Agent`; the events table's are
//! read at start-up only).
//!
//! ```toml
//! [[keys]]
//! name = "web"                        # in logs and metrics, never the secret
//! secret = "pk_7f3a..."               # or secret_sha256 = "<64 hex digits>"
//! role = "ingest"                     # or "admin"
//! tables = ["events", "pageviews"]    # default: every table
//! origins = ["https://shop.example"]  # a browser key: may come as ?key=, gets CORS
//! events_per_second = 100             # a token bucket; absent: unlimited
//! burst = 500                         # default: one second's worth
//!
//! [[tables]]
//! name = "shop_events"
//! paths = { page_url = "context.page.url", sku = "properties.sku" }
//! rest = "properties"                 # String (JSON text) or Map(String, String)
//! user_agent = "ua"                   # and browser, os, device
//! server_time_column = "received_at"  # SERVER_TIME_COLUMN, CLIENT_IP_COLUMN per table
//! add_columns = { max = 200, pattern = "^[a-z][a-z0-9_]{0,62}$" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// What `CONFIG_FILE` holds.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    /// The API keys.
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
    /// Per-table settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableEntry>,
}

/// One `[[tables]]` entry: how one table's events are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableEntry {
    /// The table, as clients name it (`CLICKHOUSE_TABLE`, or as in `INGEST_TABLES`).
    pub name: String,
    /// `SERVER_TIME_COLUMN` for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_time_column: Option<String>,
    /// `CLIENT_IP_COLUMN` for this table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip_column: Option<String>,
    /// Column = path of the nested field that fills it (`context.page.url`, `items[0].id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub paths: BTreeMap<String, String>,
    /// The column that keeps every field no column and no path took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rest: Option<String>,
    /// The column for the request's `User-Agent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// The column for the browser the `User-Agent` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    /// The column for its operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The column for its kind of device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Columns added for top-level fields that have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_columns: Option<AddColumnsEntry>,
}

/// `add_columns = { max = 200, pattern = "^[a-z][a-z0-9_]{0,62}$" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddColumnsEntry {
    /// The most columns the table may have, the added ones included.
    pub max: usize,
    /// What a field's name must match to get a column (a regular expression).
    pub pattern: String,
}

/// One `[[keys]]` entry.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEntry {
    /// Shown in logs, metrics and the status page.
    pub name: String,
    /// The secret clients send.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub secret: Option<String>,
    /// The secret's SHA-256 in hex, so the file need not hold the secret itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_sha256: Option<String>,
    /// `ingest` or `admin`.
    #[serde(default)]
    pub role: Role,
    /// The tables it may write (names as clients use them); absent: every table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<Vec<String>>,
    /// A browser key's page origins (`https://shop.example`): requests from them get CORS
    /// answers, and the key may come as the query parameter `key`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<String>,
    /// Sustained events per second; absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_per_second: Option<u32>,
    /// Events it may send at once above the rate (the bucket's size); default one second's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl std::fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("tables", &self.tables)
            .field("origins", &self.origins)
            .field("events_per_second", &self.events_per_second)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

fn redacted<S: serde::Serializer>(_: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

/// What a key may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Post events.
    #[default]
    Ingest,
    /// The operations routes (metrics, status, docs) and, like every key, probes.
    Admin,
}

impl FileSettings {
    /// Reads and checks `path`. The error names the file and what is wrong.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let settings: FileSettings =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        settings
            .check()
            .map_err(|why| format!("{}: {why}", path.display()))?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for key in &self.keys {
            let name = &key.name;
            if name.is_empty() || name.len() > 64 || !name.chars().all(is_name_char) {
                return Err(format!(
                    "key name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
                ));
            }
            if !names.insert(name) {
                return Err(format!("key {name} is named twice"));
            }
            match (&key.secret, &key.secret_sha256) {
                (Some(secret), None) if !secret.trim().is_empty() => {}
                (None, Some(hash))
                    if hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => {
                    return Err(format!("key {name}: secret_sha256 is 64 hex digits"));
                }
                _ => {
                    return Err(format!(
                        "key {name}: give secret or secret_sha256, one of them"
                    ));
                }
            }
            for origin in &key.origins {
                if !is_origin(origin) {
                    return Err(format!(
                        "key {name}: origin {origin:?} is scheme://host[:port], no path"
                    ));
                }
            }
            if key.events_per_second == Some(0) || key.burst == Some(0) {
                return Err(format!(
                    "key {name}: events_per_second and burst are at least 1"
                ));
            }
            if key.burst.is_some() && key.events_per_second.is_none() {
                return Err(format!("key {name}: burst without events_per_second"));
            }
            if key.role == Role::Admin && (!key.origins.is_empty() || key.tables.is_some()) {
                return Err(format!(
                    "key {name}: an admin key has no tables or origins (it posts no events)"
                ));
            }
        }
        let mut tables = std::collections::HashSet::new();
        for table in &self.tables {
            if table.name.is_empty() {
                return Err("[[tables]]: an entry without a name".into());
            }
            if !tables.insert(&table.name) {
                return Err(format!("[[tables]] {} is named twice", table.name));
            }
        }
        Ok(())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// `https://shop.example`, `http://localhost:3000`: what a browser sends as `Origin`.
pub fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', ' ', '@'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileSettings, String> {
        let settings: FileSettings = toml::from_str(text).map_err(|e| e.to_string())?;
        settings.check().map(|()| settings)
    }

    #[test]
    fn keys_are_read_with_their_defaults() {
        let s = parse(
            r#"
            [[keys]]
            name = "web"
            secret = "pk_1"
            tables = ["events"]
            origins = ["https://shop.example", "http://localhost:3000"]
            events_per_second = 10

            [[keys]]
            name = "ops"
            secret_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
            role = "admin"
            "#,
        )
        .unwrap();
        assert_eq!(s.keys.len(), 2);
        assert_eq!(s.keys[0].role, Role::Ingest);
        assert_eq!(s.keys[0].burst, None);
        assert_eq!(s.keys[1].role, Role::Admin);
        // Shown without the secret.
        let shown = toml::to_string(&s).unwrap();
        assert!(
            !shown.contains("pk_1") && shown.contains("<redacted>"),
            "{shown}"
        );
        assert!(!format!("{s:?}").contains("pk_1"));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("[[keys]]\nname = \"a\"", "secret"),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\nsecret_sha256 = \"00\"",
                "one of them",
            ),
            ("[[keys]]\nname = \"a\"\nsecret_sha256 = \"zz\"", "64 hex"),
            ("[[keys]]\nname = \"a b\"\nsecret = \"x\"", "letters"),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\n[[keys]]\nname = \"a\"\nsecret = \"y\"",
                "twice",
            ),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\norigins = [\"shop.example\"]",
                "origin",
            ),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\nevents_per_second = 0",
                "at least 1",
            ),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\nburst = 5",
                "burst without",
            ),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\nrole = \"admin\"\ntables = [\"t\"]",
                "admin",
            ),
            (
                "[[keys]]\nname = \"a\"\nsecret = \"x\"\nrole = \"root\"",
                "unknown variant",
            ),
            ("[[keyz]]\nname = \"a\"", "unknown field"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
