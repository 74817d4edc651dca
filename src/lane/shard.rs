//! Sharding: which shard of a cluster each row belongs to, computed in the gateway exactly as
//! the table's `Distributed` sharding expression (`<expression> % shards`) would, so a row's
//! shard depends only on its own bytes (a replay after a restart splits a batch exactly as
//! the first run did) and rows inserted through `<table>` by other tools land where the
//! gateway's do.
//!
//! The expressions evaluated, each checked against ClickHouse 18.16's own answers (tests):
//! - `cityHash64(toString(<col>))`: CityHash64 (v1.0.2) of the value as ClickHouse prints it
//!   (a string itself, a `FixedString` without its trailing zero bytes, an integer in
//!   decimal, a UUID's 36 lowercase characters; not a `Date`, which 18.16 prints
//!   `0000-00-00` for day 0 where later servers print `1970-01-01`);
//! - `cityHash64(<col>)`: of a string's (or `FixedString`'s, all `N`) bytes; of an integer,
//!   `intHash64` of its bits zero-extended to 64 (how the server hashes a number);
//! - `<col>` for an unsigned integer column: the value itself.
//!
//! The key column's value is read from the encoded row with its column list (any table's,
//! [`KeyPlan`], in `crate::format`); how the list of a row is found is the lane's business ([`RowKeys`]).

use std::sync::Arc;

pub use crate::format::{KeyPlan, RowKeys, ShardingKey};

use crate::format::Rows;

/// Splits rows by shard.
#[derive(Clone)]
pub struct Sharder {
    keys: Arc<dyn RowKeys>,
    expression: String,
    shards: usize,
}

impl std::fmt::Debug for Sharder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sharder")
            .field("expression", &self.expression)
            .field("shards", &self.shards)
            .finish()
    }
}

impl Sharder {
    /// A sharder over the events table's columns by `cityHash64(toString(<column>))`, as
    /// the events table's sink plans it (tests: the service builds every table's sharder
    /// with [`Sharder::with_keys`] over the table's state).
    #[cfg(test)]
    pub fn new(column: &str, shards: usize) -> Self {
        let key = ShardingKey::text_hash(column);
        let columns: Vec<(String, String)> = crate::table::events::TABLE
            .iter()
            .map(|c| (c.name.to_string(), c.legacy.to_string()))
            .collect();
        // The events columns' layouts are the same on every server; a column outside the
        // list (refused by the configuration) sends every row to the first shard.
        let plan = key.plan(&columns, false);
        let keys: Arc<dyn RowKeys> = match plan {
            Ok(plan) => Arc::new(plan),
            Err(_) => Arc::new(NoKey),
        };
        Self::with_keys(keys, key.expression(), shards)
    }

    /// A sharder over `shards` shards (at least 1) evaluating `expression` with `keys`.
    pub fn with_keys(keys: Arc<dyn RowKeys>, expression: &str, shards: usize) -> Self {
        Self {
            keys,
            expression: expression.to_string(),
            shards: shards.max(1),
        }
    }

    /// The ClickHouse expression this sharder evaluates, without the modulo: the
    /// `Distributed` table's sharding key.
    pub fn expression(&self) -> String {
        self.expression.clone()
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The shard (0-based: shard `n` of `CLICKHOUSE_HOSTS` is `n - 1`) of one encoded row.
    /// Rows this service encoded always carry the key; anything else goes to the first
    /// shard rather than nowhere.
    pub fn shard_of(&self, row: &[u8]) -> usize {
        if self.shards == 1 {
            return 0;
        }
        match self.keys.value(row) {
            Some(value) => (value % self.shards as u64) as usize,
            None => 0,
        }
    }

    /// `rows` split by shard, in their order within each shard; `rows` is left empty. One
    /// shard takes the rows as they are (no copy).
    pub fn split(&self, rows: &mut Rows) -> Vec<Rows> {
        let mut parts: Vec<Rows> = (0..self.shards).map(|_| Rows::default()).collect();
        if self.shards == 1 {
            std::mem::swap(&mut parts[0], rows);
            return parts;
        }
        for i in 0..rows.len() {
            let row = rows.row(i);
            parts[self.shard_of(row)].push_encoded(row);
        }
        rows.clear();
        parts
    }
}

/// Keys of a column the rows do not have.
#[cfg(test)]
struct NoKey;

#[cfg(test)]
impl RowKeys for NoKey {
    fn value(&self, _: &[u8]) -> Option<u64> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_string(out: &mut Vec<u8>, s: &[u8]) {
        crate::format::put_leb128(out, s.len());
        out.extend_from_slice(s);
    }

    /// An events-table row: three times, the device, then the strings and numbers.
    fn events_row(device: uuid::Uuid, session: &str, sequence: u32, param_int: u32) -> Vec<u8> {
        let mut row = vec![0u8; 12];
        let (high, low) = device.as_u64_pair();
        row.extend_from_slice(&high.to_le_bytes());
        row.extend_from_slice(&low.to_le_bytes());
        put_string(&mut row, b"IOS 13.5.1");
        put_string(&mut row, session.as_bytes());
        row.extend_from_slice(&sequence.to_le_bytes());
        put_string(&mut row, b"app_start");
        row.extend_from_slice(&param_int.to_le_bytes());
        put_string(&mut row, b"some text");
        row.extend_from_slice(&[0; 16]);
        row
    }

    #[test]
    fn each_events_key_column_is_read_as_clickhouse_prints_it() {
        let device = uuid::Uuid::parse_str("61f0c404-5cb3-11e7-907b-a6006ad3dba0").unwrap();
        let row = events_row(device, "dev-1", 7, 4_000_000_000);
        for (column, text) in [
            ("device_id", "61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
            ("device_os", "IOS 13.5.1"),
            ("session", "dev-1"),
            ("sequence", "7"),
            ("event", "app_start"),
            ("param_int", "4000000000"),
            ("param_str", "some text"),
        ] {
            let shards = 1000;
            let expected = (ch_cityhash102::cityhash64(text.as_bytes()) % shards) as usize;
            assert_eq!(
                Sharder::new(column, shards as usize).shard_of(&row),
                expected,
                "{column}"
            );
        }
        // 3613831417417701967 % 2 = 1: the second shard of two.
        assert_eq!(Sharder::new("device_id", 2).shard_of(&row), 1);
        assert_eq!(Sharder::new("session", 3).shard_of(&row), 1);
    }

    #[test]
    fn split_keeps_order_within_a_shard_and_every_row_once() {
        let mut rows = Rows::default();
        for n in 0..200u32 {
            let device = uuid::Uuid::from_u128(u128::from(n) * 0x9E37_79B9_7F4A_7C15);
            rows.push_encoded(&events_row(device, "s", n, n));
        }
        let all = rows.clone();
        let sharder = Sharder::new("device_id", 2);
        let parts = sharder.split(&mut rows);
        assert!(rows.is_empty());
        assert_eq!(parts[0].len() + parts[1].len(), 200);
        assert!(
            parts.iter().all(|p| !p.is_empty()),
            "200 devices hit both shards"
        );
        for (shard, part) in parts.iter().enumerate() {
            let mut last = None;
            for i in 0..part.len() {
                assert_eq!(sharder.shard_of(part.row(i)), shard);
                let at = (0..all.len()).find(|&j| all.row(j) == part.row(i)).unwrap();
                assert!(last.is_none_or(|l| l < at), "order kept");
                last = Some(at);
            }
        }
        let one = Sharder::new("device_id", 1).split(&mut all.clone());
        assert_eq!(one, vec![all]);
    }
}
