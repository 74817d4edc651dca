//! Block builder tests without a server: layout, order, determinism. The server's view (its
//! own `ORDER BY`, both engines reading every type back) is in `tests/api/native.rs`.

use super::*;
use crate::block::{COLUMNS, Rows};
use crate::event::testing::{event, rows};
use crate::sink::TABLE;

fn builder() -> BlockBuilder {
    let columns: Vec<(String, String)> = TABLE
        .iter()
        .map(|c| (c.name.to_string(), c.modern.to_string()))
        .collect();
    let schema = Schema::new(&columns, true).unwrap();
    let key = SortKey::plan(
        "event, toDate(server_time), device_id, server_time",
        &schema,
    );
    BlockBuilder::new(schema, key)
}

/// Varied rows: few event names, several days, devices, arrival order scrambled.
fn varied(n: u32) -> Rows {
    let mut out = Rows::default();
    for i in 0..n {
        let mut e = event(i);
        let mix = i.wrapping_mul(2_654_435_761);
        e.event = ["purchase", "app_start", "view"][(mix % 3) as usize].into();
        e.server_time = 1_606_867_200 + (mix % 5) * 40_000;
        e.device_id = uuid::Uuid::from_u128(u128::from(mix % 7) << 64 | u128::from(mix % 11));
        out.push(&e);
    }
    out
}

#[test]
fn the_block_header_and_a_plain_column_are_as_clickhouse_reads_them() {
    let schema = Schema::new(&[("n".to_string(), "UInt32".to_string())], true).unwrap();
    let data: Vec<u8> = [3u32, 1, 2].iter().flat_map(|n| n.to_le_bytes()).collect();
    let block = BlockBuilder::new(schema.clone(), SortKey::plan("n", &schema))
        .build(&data, 3)
        .unwrap();
    let mut expected = vec![1, 3, 1, b'n', 6];
    expected.extend_from_slice(b"UInt32");
    for n in [1u32, 2, 3] {
        expected.extend_from_slice(&n.to_le_bytes());
    }
    assert_eq!(block, expected);
}

#[test]
fn low_cardinality_is_a_dictionary_of_first_appearances_and_indexes() {
    let schema = Schema::new(
        &[("s".to_string(), "LowCardinality(String)".to_string())],
        true,
    )
    .unwrap();
    let data = [1, b'x', 1, b'y', 1, b'x', 0];
    let block = BlockBuilder::new(schema, SortKey::none())
        .build(&data, 4)
        .unwrap();
    let mut expected = vec![1, 4, 1, b's', 22];
    expected.extend_from_slice(b"LowCardinality(String)");
    expected.extend_from_slice(&1u64.to_le_bytes()); // keys version
    expected.extend_from_slice(&(1u64 << 9 | 1 << 10).to_le_bytes()); // UInt8 indexes
    expected.extend_from_slice(&3u64.to_le_bytes());
    expected.extend_from_slice(&[1, b'x', 1, b'y', 0]);
    expected.extend_from_slice(&4u64.to_le_bytes());
    expected.extend_from_slice(&[0, 1, 0, 2]);
    assert_eq!(block, expected);
}

#[test]
fn nullable_columns_carry_a_null_map_then_defaults_under_nulls() {
    let schema = Schema::new(&[("n".to_string(), "Nullable(UInt16)".to_string())], true).unwrap();
    let data = [0, 7, 0, 1, 0, 9, 0];
    let block = BlockBuilder::new(schema, SortKey::none())
        .build(&data, 3)
        .unwrap();
    let body = &block[block.len() - 9..];
    assert_eq!(body, [0, 1, 0, 7, 0, 0, 0, 9, 0]);
}

#[test]
fn wide_dictionaries_use_wider_indexes() {
    let schema = Schema::new(
        &[("s".to_string(), "LowCardinality(String)".to_string())],
        true,
    )
    .unwrap();
    let mut data = Vec::new();
    for i in 0..300u32 {
        let s = i.to_string();
        data.push(s.len() as u8);
        data.extend_from_slice(s.as_bytes());
    }
    let block = BlockBuilder::new(schema, SortKey::none())
        .build(&data, 300)
        .unwrap();
    // Column count, row count (two LEB128 bytes), name, type name, keys version.
    let flags_at = 6 + "LowCardinality(String)".len() + 8;
    let flags = u64::from_le_bytes(block[flags_at..flags_at + 8].try_into().unwrap());
    assert_eq!(flags & 0xff, 1, "UInt16 indexes past 256 keys");
    assert!(block.ends_with(&299u16.to_le_bytes()));
}

#[test]
fn rows_are_sorted_by_the_key_with_ties_in_arrival_order() {
    let rows = varied(500);
    let b = builder();
    let cells = Cells::split(b.schema(), rows.data(), rows.len()).unwrap();
    let order = b.key().permutation(&cells);
    let key_of = |i: u32| {
        let json = crate::event::decode_json(rows.row(i as usize)).unwrap();
        let time = time::OffsetDateTime::parse(
            json["server_time"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
        .unix_timestamp();
        let id = uuid::Uuid::parse_str(json["device_id"].as_str().unwrap()).unwrap();
        let (high, low) = id.as_u64_pair();
        (
            json["event"].as_str().unwrap().to_string(),
            time / 86_400,
            (low, high),
            time,
            i,
        )
    };
    let keys: Vec<_> = order.iter().map(|&i| key_of(i)).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "sorted, ties by arrival"
    );
}

#[test]
fn the_same_rows_give_the_same_bytes_however_they_arrived() {
    let b = builder();
    let whole = varied(1000);
    // The same rows appended request by request, in uneven pieces.
    let mut pieces = Rows::default();
    let mut at = 0;
    for size in [1, 7, 300, 2, 690] {
        let mut piece = Rows::default();
        for i in at..at + size {
            piece.push_encoded(whole.row(i));
        }
        pieces.append(&mut piece);
        at += size;
    }
    let first = b.build(whole.data(), whole.len()).unwrap();
    assert_eq!(first, b.build(whole.data(), whole.len()).unwrap());
    assert_eq!(first, b.build(pieces.data(), pieces.len()).unwrap());
}

#[test]
fn rows_that_do_not_fit_the_columns_are_refused() {
    let b = builder();
    let good = rows(0..3);
    let data = good.data();
    assert_eq!(
        b.build(&data[..data.len() - 1], 3),
        Err(BlockError::Malformed { row: 2 })
    );
    assert_eq!(b.build(data, 2), Err(BlockError::Malformed { row: 2 }));
    assert_eq!(COLUMNS.len(), b.schema().columns.len());
}
