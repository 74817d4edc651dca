//! The spool on a real folder: group commit, read-back, restart, trimming and damage.

use std::sync::Arc;

use super::segments::ReadLimits;
use super::{Backlog, Spool, WriterGuard, record};
use crate::format::Rows;
use crate::table::event::testing::rows;

/// A spool folder inside a temporary folder that is removed, with everything in it, when
/// the guard drops (also when the test fails).
fn temp_dir() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("spool");
    (tmp, dir)
}

/// Appends requests of 10 rows each (sequences `0..10`, `10..20`, ...) and waits for them.
fn append(spool: &Spool, requests: u32) -> u64 {
    let mut end = 0;
    for r in 0..requests {
        let mut framed = Vec::new();
        record::encode(&rows(r * 10..r * 10 + 10), 1, &mut framed);
        end = spool.reserve(&framed).unwrap().end;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(spool.wait_durable(end)).unwrap();
    end
}

fn read_all(spool: &Spool, from: u64) -> (Rows, super::segments::Chunk) {
    let mut out = Rows::default();
    let limits = ReadLimits {
        until: u64::MAX,
        max_rows: usize::MAX,
        max_bytes: usize::MAX,
    };
    let chunk = spool.read(from, limits, &mut out).unwrap();
    (out, chunk)
}

#[test]
fn records_survive_a_restart_until_confirmed_and_a_torn_tail_is_skipped() {
    let (_tmp, dir) = temp_dir();
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(backlog, None);
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let end = append(&spool, 3);
    let (back, chunk) = read_all(&spool, 0);
    assert_eq!((back, chunk.end), (rows(0..30), end));
    spool.begin(0..end).unwrap();
    writer.stop();
    drop(spool);

    // A second process is refused while the first holds the folder.
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert!(matches!(
        Spool::open(&dir, 1 << 30),
        Err(super::SpoolError::Locked(_))
    ));
    assert_eq!(
        backlog,
        Some(Backlog {
            from: 0,
            bytes: end
        })
    );
    assert_eq!(
        read_all(&spool, 0).0,
        rows(0..30),
        "the begun batch, exactly"
    );
    spool.confirm(end).unwrap();
    drop(spool);

    // Confirmed: nothing to replay; the old segment is gone. Then a cut record.
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(backlog, None);
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let end2 = append(&spool, 2);
    writer.stop();
    drop(spool);
    let newest = super::segments::path(&dir, end);
    let len = std::fs::metadata(&newest).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(backlog.map(|b| b.from), Some(end));
    let (back, chunk) = read_all(&spool, end);
    assert_eq!(back, rows(0..10), "the first record; the cut one skipped");
    assert_eq!(chunk.skipped.len(), 1, "{:?}", chunk.skipped);
    assert!(chunk.end >= end2 - 7);
}

#[test]
fn a_full_spool_refuses_records() {
    let (_tmp, dir) = temp_dir();
    let (spool, _) = Spool::open(&dir, 100).unwrap();
    let mut framed = Vec::new();
    record::encode(&rows(0..10), 1, &mut framed);
    assert!(matches!(
        spool.reserve(&framed),
        Err(super::SpoolRefusal::Full { .. })
    ));
}

#[test]
fn a_run_that_wrote_nothing_does_not_confuse_the_next_one() {
    let (_tmp, dir) = temp_dir();
    let (spool, _) = Spool::open(&dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let end = append(&spool, 2);
    writer.stop();
    drop(spool);
    // A run that takes no traffic (ClickHouse down, not ready) leaves an empty segment.
    let (idle, _) = Spool::open(&dir, 1 << 30).unwrap();
    drop(idle);

    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(
        backlog,
        Some(Backlog {
            from: 0,
            bytes: end
        })
    );
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    spool.confirm(end).unwrap();
    // The live segment survived the trim: new records are written and read back.
    let end2 = append(&spool, 1);
    let (back, chunk) = read_all(&spool, end);
    assert_eq!((back, chunk.end), (rows(0..10), end2));
    writer.stop();
}

#[test]
fn a_failed_confirm_is_made_good_by_the_next_begin() {
    let (_tmp, dir) = temp_dir();
    let (spool, _) = Spool::open(&dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let first = append(&spool, 2);
    spool.begin(0..first).unwrap();
    spool
        .checkpoint_faults
        .store(1, std::sync::atomic::Ordering::Relaxed);
    assert!(spool.confirm(first).is_err(), "the injected fault");
    let second = append(&spool, 2);
    assert!(!spool.begin(first..second).unwrap());
    // A crash before the second batch is confirmed.
    writer.stop();
    drop(spool);
    let (spool, backlog) = Spool::open(&dir, 1 << 30).unwrap();
    assert_eq!(
        backlog.map(|b| b.from),
        Some(first),
        "the first batch was confirmed by the second's begin: not replayed"
    );
    let (back, chunk) = read_all(&spool, first);
    assert_eq!(
        chunk.end, second,
        "the begun batch, exactly, under its token"
    );
    assert_eq!(back.len(), 20);
    assert!(spool.begin(first..second).unwrap(), "a replay");
}

/// Starts and stops the spool once, appending `requests`: each run starts a new segment.
fn run_once(dir: &std::path::Path, requests: u32) -> u64 {
    let (spool, _) = Spool::open(dir, 1 << 30).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let end = append(&spool, requests);
    writer.stop();
    end
}

#[test]
fn a_segment_deleted_by_hand_does_not_stop_trimming() {
    let (_tmp, dir) = temp_dir();
    let first = run_once(&dir, 1);
    run_once(&dir, 1);
    let (spool, _) = Spool::open(&dir, 1 << 30).unwrap();
    let segment = |start| super::segments::path(&dir, start);
    assert!(segment(0).exists() && segment(first).exists());
    std::fs::remove_file(segment(0)).unwrap();
    spool.confirm(spool.next_position()).unwrap();
    assert!(!segment(first).exists(), "the next one was trimmed too");
}

#[test]
fn a_copied_spool_folder_gets_its_own_identity() {
    let (_tmp, dir) = temp_dir();
    run_once(&dir, 1);
    let id = |dir: &std::path::Path| {
        let (spool, _) = Spool::open(dir, 1 << 30).unwrap();
        spool.batch_id(&(0..1))
    };
    let original = id(&dir);
    assert_eq!(id(&dir), original, "stable across restarts");
    let (_copy_tmp, copy) = temp_dir();
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let copied = id(&copy);
    assert_ne!(copied, original, "positions in a copy never share a token");
    assert_eq!(id(&copy), copied, "and it keeps its own from then on");
    assert_eq!(id(&dir), original);
}

#[test]
fn reading_resumes_at_the_next_intact_record_after_damage() {
    let record_len = record::encoded_len(&rows(0..10)) as u64;
    // A flipped payload byte (bad CRC), then a damaged length (it claims more than the file).
    for (at, bytes) in [(30, vec![0xAA]), (4, vec![0xFF; 4])] {
        let (_tmp, dir) = temp_dir();
        let end = run_once(&dir, 3);
        let segment = super::segments::path(&dir, 0);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &bytes, record_len + at).unwrap();
        let (spool, _) = Spool::open(&dir, 1 << 30).unwrap();
        let (back, chunk) = read_all(&spool, 0);
        let mut expected = rows(0..10);
        expected.append(&mut rows(20..30));
        assert_eq!(back, expected, "only the damaged record's rows are lost");
        assert_eq!(chunk.end, end);
        assert_eq!(chunk.skipped.len(), 1, "{:?}", chunk.skipped);
        assert!(chunk.skipped[0].contains(&format!("skipped {record_len} bytes")));
    }
}

#[test]
fn a_segment_that_cannot_be_created_yet_does_not_stop_the_writer() {
    let (_tmp, dir) = temp_dir();
    let (mut spool, _) = Spool::open(&dir, 1 << 30).unwrap();
    spool.segment_bytes = 100; // every round starts a new segment
    spool
        .roll_faults
        .store(2, std::sync::atomic::Ordering::Relaxed);
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    for _ in 0..4 {
        append(&spool, 1); // panics if the spool failed
    }
    assert_eq!(spool.failure(), None);
    let (back, _) = read_all(&spool, 0);
    assert_eq!(back.len(), 40, "every record, across the files");
    writer.stop();
}

#[test]
fn spools_sharing_a_volume_split_its_free_space() {
    use super::{HEADROOM_MIN, volume_cap};
    const GIB: u64 = 1 << 30;
    // 100 GiB free of 250 GiB (1 GiB headroom): one spool may fill 99 GiB, each of six
    // 16.5 GiB, plus what it holds already; a limit below that binds instead.
    assert_eq!(
        volume_cap(250 * GIB, 100 * GIB, 0, 200 * GIB, 1),
        Some(99 * GIB)
    );
    assert_eq!(
        volume_cap(250 * GIB, 100 * GIB, 0, 200 * GIB, 6),
        Some(99 * GIB / 6)
    );
    assert_eq!(
        volume_cap(250 * GIB, 100 * GIB, 3 * GIB, 200 * GIB, 6),
        Some(99 * GIB / 6 + 3 * GIB)
    );
    assert_eq!(volume_cap(250 * GIB, 100 * GIB, 0, 10 * GIB, 6), None);
    // A full volume: only what the spool holds.
    assert_eq!(
        volume_cap(4 << 20, HEADROOM_MIN / 2, 1 << 10, GIB, 3),
        Some(1 << 10)
    );
}

#[test]
fn headroom_is_a_share_of_the_volume_within_bounds() {
    use super::{HEADROOM_MAX, HEADROOM_MIN, headroom};
    assert_eq!(headroom(4 << 20), HEADROOM_MIN, "a tiny tmpfs");
    assert_eq!(headroom(10 << 30), 512 << 20, "5 % of 10 GiB");
    assert_eq!(headroom(250 << 30), HEADROOM_MAX, "a large shared volume");
}

#[test]
fn a_batch_read_back_from_spool_records_builds_the_same_native_block() {
    // Varied load rows, framed request by request as handlers frame them, then decoded
    // back as a replay reads them: the block (what ClickHouse and its block-hash
    // deduplication see) must be the one the batch made before the crash.
    let builder = crate::format::tests::builder();
    let whole = crate::table::event::testing::load_rows(2_000);
    let mut records = Vec::new();
    let mut at = 0;
    for size in [1, 30, 700, 269, 1_000] {
        let mut request = Rows::default();
        for i in at..at + size {
            request.push_encoded(whole.row(i));
        }
        records.extend_from_slice(&super::frame(&request));
        at += size;
    }
    let mut replayed = Rows::default();
    let mut offset = 0;
    while offset < records.len() {
        offset += record::decode(&records[offset..], &mut replayed)
            .expect("a whole record")
            .len;
    }
    assert_eq!(replayed, whole);
    assert_eq!(
        builder.build(replayed.data(), replayed.len()).unwrap(),
        builder.build(whole.data(), whole.len()).unwrap()
    );
}

#[test]
fn the_row_prefixes_of_a_backlog_are_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(tmp.path(), 1 << 30).unwrap();
    let spool = std::sync::Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let mut start = None;
    let mut end = 0;
    // Two records, so reading goes on past the first.
    for tags in [[[1u8, 0, 0, 0], [2, 0, 0, 0]], [[1, 0, 0, 0], [3, 0, 0, 0]]] {
        let mut rows = Rows::default();
        for tag in tags {
            let mut row = tag.to_vec();
            row.extend_from_slice(b"body");
            rows.push_encoded(&row);
        }
        let range = spool.reserve(&super::frame(&rows)).unwrap();
        start.get_or_insert(range.start);
        end = range.end;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(spool.wait_durable(end)).unwrap();
    let tags = spool.row_prefixes::<4>(start.unwrap()).unwrap();
    assert_eq!(
        tags,
        std::collections::HashSet::from([[1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]])
    );
    assert!(spool.row_prefixes::<4>(end).unwrap().is_empty());
    writer.stop();
}

/// A cap smaller than a segment: the files still roll and are trimmed as rows are
/// confirmed, so the spool takes events for good and keeps to about its cap on disk.
#[test]
fn a_spool_capped_under_one_segment_rolls_trims_and_keeps_taking_events() {
    let (_tmp, dir) = temp_dir();
    let cap = 256 << 10;
    let (spool, _) = Spool::open(&dir, cap).unwrap();
    let spool = Arc::new(spool);
    let writer = WriterGuard::spawn(spool.clone()).unwrap();
    let mut from = 0;
    // Ten times the cap, confirmed as it goes.
    for _ in 0..150 {
        let end = append(&spool, 20);
        spool.begin(from..end).unwrap();
        spool.confirm(end).unwrap();
        from = end;
    }
    assert!(from > 10 * cap, "wrote {from}");
    let on_disk: u64 = super::segments::list(&dir)
        .unwrap()
        .iter()
        .map(|&(_, len)| len)
        .sum();
    assert!(
        on_disk <= cap,
        "{on_disk} bytes of segments for a {cap}-byte cap"
    );
    writer.stop();
}

/// A process that died after creating the checkpoint file and before writing its first
/// state leaves a file of empty slots: the next start opens the spool as new.
#[test]
fn a_checkpoint_created_but_never_written_does_not_stop_the_next_start() {
    let (_tmp, dir) = temp_dir();
    std::fs::create_dir_all(&dir).unwrap();
    drop(super::checkpoint::CheckpointFile::open(&dir).unwrap());
    assert_eq!(Spool::unconfirmed_bytes(&dir).unwrap(), 0);
    let (spool, backlog) = Spool::open(&dir, 1 << 30).expect("opens");
    assert_eq!(backlog, None);
    drop(spool);
    Spool::open(&dir, 1 << 30).expect("and again, with its state written");
}
