//! Sharding: which shard of a cluster each row belongs to, computed in the gateway exactly as
//! the `Distributed` table's sharding expression `cityHash64(toString(<key>)) % shards`
//! would, so a row's shard depends only on its own bytes (a replay after a restart splits a
//! batch exactly as the first run did) and rows inserted through `<table>` by other tools
//! land where the gateway's do.

use crate::block::Rows;
use crate::event::key_text;

/// Splits rows by shard.
#[derive(Debug, Clone)]
pub struct Sharder {
    column: String,
    shards: usize,
}

impl Sharder {
    /// Shards rows by `column` (one of `config::SHARDING_COLUMNS`, checked at start-up) over
    /// `shards` shards (at least 1).
    pub fn new(column: &str, shards: usize) -> Self {
        Self {
            column: column.to_string(),
            shards: shards.max(1),
        }
    }

    /// The ClickHouse expression this sharder evaluates, without the modulo: the
    /// `Distributed` table's sharding key.
    pub fn expression(&self) -> String {
        format!("cityHash64(toString({}))", self.column)
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
        let mut scratch = [0u8; 36];
        match key_text(row, &self.column, &mut scratch) {
            Some(text) => (ch_cityhash102::cityhash64(text) % self.shards as u64) as usize,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::testing::event;

    /// `cityHash64` values ClickHouse 18.16 gave for these strings (docs/cluster-notes.md).
    #[test]
    fn the_hash_is_clickhouses_cityhash64() {
        for (text, expected) in [
            ("", 11_160_318_154_034_397_263u64),
            ("a", 2_603_192_927_274_642_682),
            ("abc", 4_220_206_313_085_259_313),
            ("dev-1", 2_965_553_883_061_279_387),
            (
                "61f0c404-5cb3-11e7-907b-a6006ad3dba0",
                3_613_831_417_417_701_967,
            ),
            ("ünïcødé ✓ 设备", 8_586_406_237_927_328_668),
            (&"x".repeat(17), 14_762_337_010_942_834_261),
            (&"0123456789".repeat(7), 7_040_186_705_704_256_002),
            (&"ab".repeat(100), 12_782_225_866_474_870_722),
        ] {
            assert_eq!(
                ch_cityhash102::cityhash64(text.as_bytes()),
                expected,
                "{text:?}"
            );
        }
    }

    #[test]
    fn each_key_column_is_read_as_clickhouse_prints_it() {
        let mut e = event(7);
        e.device_id = "61f0c404-5cb3-11e7-907b-a6006ad3dba0".parse().unwrap();
        e.session = "dev-1".into();
        e.param_int = 4_000_000_000;
        let mut row = Vec::new();
        e.encode(&mut row);
        let mut scratch = [0u8; 36];
        for (column, text) in [
            ("device_id", "61f0c404-5cb3-11e7-907b-a6006ad3dba0"),
            ("device_os", "IOS 13.5.1"),
            ("session", "dev-1"),
            ("sequence", "7"),
            ("event", "app_start"),
            ("param_int", "4000000000"),
            ("param_str", "some text"),
        ] {
            let got = key_text(&row, column, &mut scratch).unwrap();
            assert_eq!(got, text.as_bytes(), "{column}");
        }
        assert!(key_text(&row, "ip", &mut scratch).is_none());
        // 3613831417417701967 % 2 = 1: the second shard of two.
        assert_eq!(Sharder::new("device_id", 2).shard_of(&row), 1);
        assert_eq!(Sharder::new("session", 3).shard_of(&row), 1);
    }

    #[test]
    fn split_keeps_order_within_a_shard_and_every_row_once() {
        let mut rows = Rows::default();
        for n in 0..200u32 {
            let mut e = event(n);
            e.device_id = uuid::Uuid::from_u128(u128::from(n) * 0x9E37_79B9_7F4A_7C15);
            rows.push(&e);
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
