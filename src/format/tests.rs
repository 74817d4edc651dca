//! Block builder tests without a server: layout, order, determinism. The server's view (its
//! own `ORDER BY`, both engines reading every type back) is in `tests/api/native.rs`.

use super::*;
use crate::format::Rows;
use crate::table::event::testing::{event, rows};
use crate::table::events::COLUMNS;
use crate::table::events::TABLE;

/// The events table's builder, sorting by the table's key (shared with other stages' tests).
pub(crate) fn builder() -> BlockBuilder {
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
fn dictionary_values_short_and_long_at_any_position_keep_their_identity() {
    // Values of 0..40 bytes (with the length byte: 1..41, across the 16-byte packed form),
    // prefixes of each other, zero bytes inside, and the batch's last values shorter
    // than 16 bytes from its end: each distinct value gets one key, in first appearance.
    let schema = Schema::new(
        &[("s".to_string(), "LowCardinality(String)".to_string())],
        true,
    )
    .unwrap();
    let mut values: Vec<Vec<u8>> = (0..40).map(|n| vec![b'a'; n]).collect();
    values.extend((1..20).map(|n| vec![0; n]));
    let order: Vec<usize> = (0..values.len()).chain((0..values.len()).rev()).collect();
    let mut data = Vec::new();
    for &i in &order {
        data.push(values[i].len() as u8);
        data.extend_from_slice(&values[i]);
    }
    let block = BlockBuilder::new(schema, SortKey::none())
        .build(&data, order.len())
        .unwrap();
    let mut expected_keys = Vec::new();
    for v in &values {
        expected_keys.push(v.len() as u8);
        expected_keys.extend_from_slice(v);
    }
    let mut tail = (values.len() as u64).to_le_bytes().to_vec();
    tail.extend_from_slice(&expected_keys);
    tail.extend_from_slice(&(order.len() as u64).to_le_bytes());
    tail.extend(order.iter().map(|&i| i as u8));
    assert!(
        block.ends_with(&tail),
        "each distinct value once, ids by first appearance"
    );
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
        let events = crate::table::events::schema().unwrap();
        let json = events.decode_row(rows.row(i as usize)).unwrap();
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
fn a_recycled_block_is_written_into_again_with_the_same_bytes() {
    // Tests run on their own threads, so this one's scratch is its own.
    let b = builder();
    let rows = varied(1000);
    let first = b.build(rows.data(), rows.len()).unwrap();
    let expected = first.clone();
    let at = first.as_ptr();
    b.recycle(first);
    // Without the recycle, this would likely take the freed block's memory.
    let elsewhere = Vec::<u8>::with_capacity(expected.capacity());
    let again = b.build(rows.data(), rows.len()).unwrap();
    assert_eq!(
        again.as_ptr(),
        at,
        "the next block reuses the recycled buffer"
    );
    assert_eq!(again, expected);
    // A smaller batch into the same (larger) buffer writes only its own bytes.
    let small = varied(10);
    let fresh = b.build(small.data(), small.len()).unwrap();
    b.recycle(again);
    assert_eq!(b.build(small.data(), small.len()).unwrap(), fresh);
    drop(elsewhere);
}

#[test]
fn the_build_buffers_keep_their_room_between_full_and_small_batches_and_follow_a_lasting_fall() {
    // Tests run on their own threads, so this one's scratch is its own.
    let b = builder();
    let (full, small) = (varied(20_000), varied(500));
    let room = || super::SCRATCH.with_borrow(|s| s.room());
    let build = |rows: &Rows| {
        let block = b.build(rows.data(), rows.len()).unwrap();
        b.recycle(block);
    };
    build(&full);
    let needed = room();
    for _ in 0..3 {
        // A timer's small batch between full ones: trimming here made each full batch
        // map and fault in its buffers again.
        build(&small);
        assert_eq!(
            room(),
            needed,
            "a small batch keeps the room full ones need"
        );
        build(&full);
        assert_eq!(room(), needed, "a full batch finds its room");
    }
    for _ in 0..super::transpose::SHRINK_AFTER {
        build(&small);
    }
    assert!(
        room() < needed / 10,
        "after a lasting fall the room follows: {} of {needed} bytes",
        room()
    );
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

/// Rows of many column types with few distinct values per column (many ties), in a
/// scrambled order, from a fixed seed.
fn mixed(n: usize, seed: u64) -> (Schema, Vec<u8>) {
    let columns: Vec<(String, String)> = [
        ("n", "Nullable(UInt32)"),
        ("s", "String"),
        ("lc", "LowCardinality(String)"),
        ("f", "FixedString(3)"),
        ("i", "Int16"),
        ("x", "Float64"),
        ("d", "Date"),
        ("lf", "LowCardinality(UInt16)"),
        ("u", "UUID"),
        ("ns", "Nullable(String)"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let mut state = seed;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let mut data = Vec::new();
    for _ in 0..n {
        match next(3) {
            0 => data.push(1),
            _ => {
                data.push(0);
                data.extend_from_slice(&(next(50) as u32).to_le_bytes());
            }
        }
        for letters in [b"abc", b"xyz"] {
            let len = next(4) as usize;
            data.push(len as u8);
            data.extend((0..len).map(|_| letters[next(3) as usize]));
        }
        data.extend((0..3).map(|_| next(3) as u8));
        data.extend_from_slice(&(next(7) as i16 - 3).to_le_bytes());
        let x = [-1.5f64, 0.0, 2.5, f64::NAN, -0.0, f64::INFINITY][next(6) as usize];
        data.extend_from_slice(&x.to_le_bytes());
        data.extend_from_slice(&(18_000 + next(400) as u16).to_le_bytes());
        data.extend_from_slice(&(next(5) as u16).to_le_bytes());
        data.extend_from_slice(&next(4).to_le_bytes());
        data.extend_from_slice(&next(3).to_le_bytes());
        // NULL, or a string of 0 to 60 bytes (short and long copies alike).
        match next(3) {
            0 => data.push(1),
            _ => {
                let len = next(61) as usize;
                data.extend_from_slice(&[0, len as u8]);
                data.extend((0..len).map(|i| b'a' + (i % 26) as u8));
            }
        }
    }
    (Schema::new(&columns, true).unwrap(), data)
}

/// How ClickHouse orders one cell of the mixed rows' key columns, as a sortable value.
fn reference_key(column: &str, cell: &[u8]) -> (i128, Vec<u8>) {
    let n = |len: usize| {
        let mut buf = [0u8; 16];
        buf[..len].copy_from_slice(&cell[..len]);
        u128::from_le_bytes(buf)
    };
    match column {
        "s" | "lc" => (0, cell[1..].to_vec()),
        "f" => (0, cell.to_vec()),
        "i" => (i128::from(n(2) as u16 as i16), vec![]),
        "x" => {
            let x = f64::from_bits(n(8) as u64);
            // NaN last. ClickHouse finds -0.0 and 0.0 equal; the gateway puts -0.0 first,
            // which the server's check still finds sorted.
            let rank = match x {
                x if x.is_nan() => i128::MAX,
                f64::INFINITY => i128::MAX - 1,
                x => (x * 4.0) as i128,
            };
            (rank, vec![u8::from(x == 0.0 && x.is_sign_positive())])
        }
        "d" => (n(2) as i128, vec![]),
        "lf" => (n(2) as i128, vec![]),
        // Bytes 8..16 first: the second little-endian half is the more significant.
        "u" => (n(16) as i128 ^ i128::MIN, vec![]),
        _ => unreachable!("{column}"),
    }
}

#[test]
fn any_key_sorts_as_a_stable_sort_by_the_decoded_values_and_writes_those_rows() {
    for (seed, rows) in [(1, 2), (2, 17), (3, 700), (4, 5_000)] {
        let (schema, data) = mixed(rows, seed);
        let cells = Cells::split(&schema, &data, rows).unwrap();
        for key in [
            "s, i",
            "lc, x, d",
            "f, u",
            "lf, d, s, lc, i, x, u",
            "x",
            "i, f",
            "u",
        ] {
            let names: Vec<&str> = key.split(", ").collect();
            let index = |name: &str| schema.columns.iter().position(|c| c.name == name).unwrap();
            let mut expected: Vec<u32> = (0..rows as u32).collect();
            expected.sort_by_key(|&row| {
                names
                    .iter()
                    .map(|name| reference_key(name, cells.cell(row as usize, index(name))))
                    .collect::<Vec<_>>()
            });
            let sort_key = SortKey::plan(key, &schema);
            assert!(sort_key.is_complete(), "{key}");
            assert_eq!(sort_key.permutation(&cells), expected, "{key}, {rows} rows");
            // The block holds those rows in that order: the same bytes as the rows
            // reordered beforehand and written in arrival order.
            let mut reordered = Vec::new();
            for &row in &expected {
                reordered.extend_from_slice(cells.row(row as usize));
            }
            let sorted = BlockBuilder::new(schema.clone(), sort_key);
            let unsorted = BlockBuilder::new(schema.clone(), SortKey::none());
            assert_eq!(
                sorted.build(&data, rows).unwrap(),
                unsorted.build(&reordered, rows).unwrap(),
                "{key}, {rows} rows"
            );
        }
    }
}
