//! The cluster's tables and the start-up check of its topology: `<table>_local` as a
//! `ReplicatedMergeTree` on every host, `<table>` as the `Distributed` table over it, and
//! whether the hosts in `CLICKHOUSE_HOSTS` are the shards the servers say they are.

use super::schema::{PARTITION_AND_ORDER, ServerVersion, column_list};
use super::{SinkError, TableSink};

/// Retried inserts must land within the last this-many blocks of their shard to be
/// deduplicated (by token on 22.2+, by block checksum on older servers). ClickHouse's
/// default was 100 before 23.x: with several gateways and a batch a second each, a retry
/// after a long outage could fall out of it.
pub const REPLICATED_DEDUP_WINDOW: u32 = 1000;

/// How the gateway's tables sit in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterTable {
    /// `CLICKHOUSE_CLUSTER`.
    pub cluster: String,
    /// `CLICKHOUSE_TABLE`: the `Distributed` table users query.
    pub distributed: String,
    /// The sharding expression without the modulo, e.g. `cityHash64(toString(device_id))`.
    pub sharding: String,
}

/// `CREATE TABLE IF NOT EXISTS <db>.<local>` as a `ReplicatedMergeTree` whose ZooKeeper path
/// names the shard through the `{shard}` macro and whose replica name is `{replica}`.
pub fn create_local_sql(database: &str, local: &str, version: ServerVersion) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{local}` ({}) ENGINE = \
         ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{database}/{local}', '{{replica}}') \
         {PARTITION_AND_ORDER} SETTINGS replicated_deduplication_window = \
         {REPLICATED_DEDUP_WINDOW}",
        column_list(version)
    )
}

/// `CREATE TABLE IF NOT EXISTS <db>.<table>` as the `Distributed` table over `local`.
pub fn create_distributed_sql(database: &str, local: &str, table: &ClusterTable) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{database}`.`{}` AS `{database}`.`{local}` \
         ENGINE = Distributed({}, {database}, {local}, {})",
        table.distributed, table.cluster, table.sharding
    )
}

/// What one host says about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Shards the cluster has, as this host's `remote_servers` define it (0: unknown name).
    pub shards: u32,
    /// Shards whose weight is not 1 (the gateway's `% shards` would differ).
    pub weighted: Vec<u32>,
    /// The shard this host is (`is_local`), if it can tell.
    pub shard: Option<u32>,
}

impl Membership {
    /// Why this host (the `index`-th shard of `CLICKHOUSE_HOSTS`, 0-based, of `expected`)
    /// disagrees with `CLICKHOUSE_HOSTS`, if it does.
    pub fn disagreement(&self, cluster: &str, index: usize, expected: usize) -> Option<String> {
        if self.shards == 0 {
            return Some(format!("has no cluster {cluster} in its remote_servers"));
        }
        if self.shards as usize != expected {
            return Some(format!(
                "says cluster {cluster} has {} shards; CLICKHOUSE_HOSTS names {expected}",
                self.shards
            ));
        }
        if !self.weighted.is_empty() {
            return Some(format!(
                "gives shards {:?} of {cluster} a weight other than 1; the gateway shards by \
                 `% shards`, which needs equal weights",
                self.weighted
            ));
        }
        match self.shard {
            Some(shard) if shard as usize != index + 1 => Some(format!(
                "is shard {shard} of {cluster}, but CLICKHOUSE_HOSTS puts it in shard {}",
                index + 1
            )),
            _ => None,
        }
    }
}

impl TableSink {
    /// Asks this host how it sees `cluster` (`system.clusters`).
    pub async fn membership(&self, cluster: &str) -> Result<Membership, SinkError> {
        let rows = self
            .bounded(
                self.base()
                    .query(
                        "SELECT shard_num, shard_weight, is_local FROM system.clusters \
                         WHERE cluster = ?",
                    )
                    .bind(cluster)
                    .fetch_all::<(u32, u32, u8)>(),
            )
            .await?;
        let mut shards: Vec<u32> = rows.iter().map(|r| r.0).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut weighted: Vec<u32> = rows.iter().filter(|r| r.1 != 1).map(|r| r.0).collect();
        weighted.dedup();
        Ok(Membership {
            shards: shards.len() as u32,
            weighted,
            shard: rows.iter().find(|r| r.2 == 1).map(|r| r.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ddl_names_the_shard_macro_and_the_sharding_expression() {
        let v = ServerVersion::parse("18.16.1").unwrap();
        let local = create_local_sql("db", "events_local", v);
        assert!(local.contains(
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}')"
        ));
        assert!(local.contains("replicated_deduplication_window = 1000"));
        let table = ClusterTable {
            cluster: "c".into(),
            distributed: "events".into(),
            sharding: "cityHash64(toString(device_id))".into(),
        };
        assert_eq!(
            create_distributed_sql("db", "events_local", &table),
            "CREATE TABLE IF NOT EXISTS `db`.`events` AS `db`.`events_local` \
             ENGINE = Distributed(c, db, events_local, cityHash64(toString(device_id)))"
        );
    }

    #[test]
    fn a_host_in_the_wrong_shard_is_named() {
        let m = |shards, shard| Membership {
            shards,
            weighted: vec![],
            shard,
        };
        assert_eq!(m(2, Some(1)).disagreement("c", 0, 2), None);
        assert_eq!(m(2, None).disagreement("c", 1, 2), None);
        assert!(
            m(0, None)
                .disagreement("c", 0, 2)
                .unwrap()
                .contains("no cluster")
        );
        assert!(
            m(3, Some(1))
                .disagreement("c", 0, 2)
                .unwrap()
                .contains("3 shards")
        );
        let wrong = m(2, Some(2)).disagreement("c", 0, 2).unwrap();
        assert!(
            wrong.contains("is shard 2") && wrong.contains("in shard 1"),
            "{wrong}"
        );
    }
}
