//! A table in a cluster: the `Distributed` table's sharding expression (read with a read
//! table's columns; the events table's from `CLICKHOUSE_SHARDING_KEY`), evaluated per row
//! as [`RowKeys`] over the rows' column lists.

use std::sync::Arc;

use clickhouse::Client;

use super::table::{Load, Loaded, TableSink, TableState};
use crate::format::{RowKeys, ShardingKey};

impl TableSink {
    /// The sharding expression of the `Distributed` table `database.table`, as `client`'s
    /// host defines it. A missing table, one over another cluster or another local table,
    /// or an expression this service cannot evaluate is the table's problem (its requests
    /// get `503` with it; at start-up, an expression that cannot be evaluated stops it).
    pub(super) async fn sharding_key(
        &self,
        client: &Client,
        cluster: &str,
    ) -> Result<ShardingKey, Load> {
        let (database, table, local) = self.names();
        let target = format!("{database}.{table}");
        let engine = super::bounded(
            self.timeout(),
            client
                .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
                .bind(database)
                .bind(table)
                .fetch_optional::<String>(),
        )
        .await
        .map_err(|e| Load::Unreachable(format!("{target}: definition not readable ({e})")))?;
        let Some(engine) = engine else {
            return Err(Load::Problem(format!(
                "Distributed table {target} does not exist (INGEST_TABLES, in cluster \
                 {cluster}); its requests get 503 until it does"
            )));
        };
        let expression = distributed_sharding(&engine, cluster, database, local)
            .map_err(|why| self.unevaluable(format!("{target}: {why}")))?;
        ShardingKey::parse(&expression).map_err(|why| self.unevaluable(format!("{target}: {why}")))
    }

    /// Takes `key` as the table's sharding expression if it can be evaluated over the
    /// columns of `loaded` (forgetting the key positions of an earlier expression).
    pub(super) fn use_sharding(&self, key: ShardingKey, loaded: &Loaded) -> Result<(), Load> {
        let state = self.state();
        let plan = key.plan(
            &loaded.schema.column_list(),
            loaded.schema.uses_server_defaults(),
        );
        if let Err(why) = plan {
            return Err(self.unevaluable(format!("{}: {why}", state.target)));
        }
        *state.unevaluable.lock() = None;
        let mut sharding = state.sharding.lock();
        if sharding.as_ref() != Some(&key) {
            log::info!(
                "{}: rows sharded by {} % shards (its Distributed table's expression)",
                state.target,
                key.expression()
            );
            state.key_plans.write().clear();
            *sharding = Some(key);
        }
        Ok(())
    }

    fn unevaluable(&self, why: String) -> Load {
        *self.state().unevaluable.lock() = Some(why.clone());
        Load::Problem(why)
    }
}

impl TableState {
    /// In a cluster: why the table's sharding expression cannot be evaluated, if it was
    /// read and cannot.
    pub fn unevaluable_sharding(&self) -> Option<String> {
        self.unevaluable.lock().clone()
    }

    /// In a cluster: the sharding expression in use, once read.
    pub fn sharding_expression(&self) -> Option<String> {
        self.sharding
            .lock()
            .as_ref()
            .map(|k| k.expression().to_string())
    }
}

/// A row's key through its own column list (its tag), under the table's expression.
impl RowKeys for TableState {
    fn value(&self, row: &[u8]) -> Option<u64> {
        let (tag, body) = self.split_tag(row)?;
        let cached = self.key_plans.read().get(&tag).cloned();
        let plan = match cached {
            Some(plan) => plan,
            None => {
                let key = self.sharding.lock().clone()?;
                let loaded = self.known.lock().get(&tag).cloned()?;
                let plan = key
                    .plan(
                        &loaded.schema.column_list(),
                        loaded.schema.uses_server_defaults(),
                    )
                    .ok()?;
                let plan = Arc::new(plan);
                self.key_plans.write().insert(tag, plan.clone());
                plan
            }
        };
        plan.value(body)
    }
}

/// The sharding expression of a `Distributed(cluster, database, table, expression[, policy])`
/// engine (as `system.tables.engine_full` spells it), checked to be over `cluster` and
/// `database.local`, which the gateway writes.
pub fn distributed_sharding(
    engine: &str,
    cluster: &str,
    database: &str,
    local: &str,
) -> Result<String, String> {
    let engine = engine.trim();
    let args = engine
        .strip_prefix("Distributed(")
        .and_then(|rest| {
            // The engine's own closing parenthesis (SETTINGS may follow it).
            let mut depth = 1;
            let mut quoted = false;
            for (i, c) in rest.char_indices() {
                match c {
                    '\'' => quoted = !quoted,
                    '(' if !quoted => depth += 1,
                    ')' if !quoted => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(&rest[..i]);
                        }
                    }
                    _ => {}
                }
            }
            None
        })
        .ok_or_else(|| format!("is not a Distributed table ({engine})"))?;
    let args = split_top_level(args);
    let name = |i: usize| {
        args.get(i)
            .map(|a| a.trim().trim_matches(['\'', '`', '"']).to_string())
            .unwrap_or_default()
    };
    if name(0) != cluster {
        return Err(format!(
            "its Distributed engine is over cluster {}, not CLICKHOUSE_CLUSTER {cluster}",
            name(0)
        ));
    }
    let db = name(1);
    if (db != database && db != "currentDatabase()") || name(2) != local {
        return Err(format!(
            "its Distributed engine is over {db}.{}, not {database}.{local}, which the gateway \
             writes",
            name(2)
        ));
    }
    match args.get(3).map(|a| a.trim()) {
        Some(expression) if !expression.is_empty() => Ok(expression.to_string()),
        _ => Err(format!(
            "its Distributed engine has no sharding expression ({engine})"
        )),
    }
}

/// `text` split at commas outside parentheses and quotes.
fn split_top_level(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let (mut depth, mut quoted, mut escaped) = (0i32, false, false);
    let mut current = String::new();
    for c in text.chars() {
        if quoted {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => quoted = false,
                _ => {}
            }
        } else {
            match c {
                '\'' => quoted = true,
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sharding_expression_is_read_from_the_engine() {
        for (engine, expected) in [
            (
                "Distributed(c, db, t_local, cityHash64(toString(k)))",
                "cityHash64(toString(k))",
            ),
            ("Distributed(c, 'db', 't_local', u)", "u"),
            (
                "Distributed('c', currentDatabase(), t_local, u, 'policy')",
                "u",
            ),
            (
                "Distributed(c, db, t_local, cityHash64(k)) SETTINGS fsync_after_insert = 0",
                "cityHash64(k)",
            ),
        ] {
            assert_eq!(
                distributed_sharding(engine, "c", "db", "t_local").as_deref(),
                Ok(expected),
                "{engine}"
            );
        }
        for (engine, says) in [
            ("Distributed(c, db, t_local)", "no sharding expression"),
            ("Distributed(other, db, t_local, u)", "cluster other"),
            ("Distributed(c, db, elsewhere, u)", "db.elsewhere"),
            ("MergeTree ORDER BY k", "not a Distributed table"),
        ] {
            let why = distributed_sharding(engine, "c", "db", "t_local").unwrap_err();
            assert!(why.contains(says), "{engine}: {why}");
        }
    }
}
