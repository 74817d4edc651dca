//! The spool on a volume that fills up: a small tmpfs as `SPOOL_DIR`, ClickHouse away until
//! the spool refuses, then back. Needs root (for `mount`); skipped with a printed reason
//! where mounting is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

use crate::helpers::{
    PATIENCE, TestApp, batch, clickhouse, clickhouse_url, closed_port, drop_database,
    forward_to_clickhouse, post_until_refused, spawn_app, unique_database, within,
};
use crate::load::{lost_and_duplicated, stored};
use crate::process::{start_binary, stop_with};

/// A 4 MiB tmpfs mounted on a fresh folder, unmounted and removed when dropped.
struct SmallVolume(PathBuf);

impl SmallVolume {
    /// `None` (with the reason printed) where this process may not mount.
    fn mount() -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("tmpfs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&dir)
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self(dir)),
            other => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({}); run as root to test a full spool volume",
                    match other {
                        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                        Err(e) => e.to_string(),
                    }
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        // Lazily: a failed test may leave the app holding files there.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Bytes of segment files in `dir`.
fn segment_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| p.metadata().unwrap().len())
        .sum()
}

/// Polls `path` until it answers 200.
async fn until_ok(app: &TestApp, path: &str) {
    within(PATIENCE, async {
        while app.get(path).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Polls until every acknowledged sequence `0..acked` is stored.
async fn until_stored(database: &str, acked: u32) {
    let acked: Vec<u32> = (0..acked).collect();
    within(2 * PATIENCE, async {
        loop {
            // The app creates the database, then the table, once it reaches ClickHouse.
            let exists = format!(
                "SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'events'"
            );
            if clickhouse(&exists).await.trim() == "0" {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let (lost, _) = lost_and_duplicated(&acked, &stored(&clickhouse_url(), database).await);
            if lost == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_volume_refuses_before_it_is_full_then_drains_without_restart() {
    let Some(volume) = SmallVolume::mount() else {
        return;
    };
    let port = closed_port();
    // SPOOL_MAX_BYTES stays at its 10 GiB default: the volume is the limit.
    let app = spawn_app(&[
        ("CLICKHOUSE_PORT", &port.to_string()),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", volume.path()),
        ("BUFFER_MAX_BYTES", "65536"),
    ])
    .await;
    let (acked, refused) = post_until_refused(&app, 100).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("spool full"),
        "refused for being full, not for a failed write: {body}"
    );
    let ready = app.get("/v1/ready").await;
    assert_eq!(ready.status(), 503);
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert!(health["spool"]["failed"].is_null(), "{health}");
    let max = health["spool"]["max_bytes"].as_u64().unwrap();
    assert!(max < 4 << 20, "capped to the volume: {health}");

    // ClickHouse comes back: every acknowledged event is delivered, the spool drains and the
    // same request is taken, all without a restart.
    let forwarder = forward_to_clickhouse(TcpListener::bind(("127.0.0.1", port)).await.unwrap());
    until_stored(&app.database, acked).await;
    within(PATIENCE, async {
        while app.post_events(batch(acked, 100)).await.status() != 200 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    until_stored(&app.database, acked + 100).await;
    let stored = stored(&clickhouse_url(), &app.database).await;
    assert!(stored.values().all(|&n| n == 1), "each once");
    until_ok(&app, "/v1/ready").await;
    assert!(
        segment_bytes(&volume.0) < max / 2,
        "confirmed segments were deleted: {} bytes left",
        segment_bytes(&volume.0)
    );
    assert!(app.stop().await.is_clean());
    forwarder.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_full_spool_volume_delivers_everything_and_accepts_again() {
    let Some(volume) = SmallVolume::mount() else {
        return;
    };
    let database = unique_database();
    let down = closed_port().to_string();
    let disk = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", volume.path()),
        ("BUFFER_MAX_BYTES", "65536"),
        ("SHUTDOWN_TIMEOUT_SECS", "1"),
    ];
    let mut env = disk.to_vec();
    env.push(("CLICKHOUSE_PORT", &down));
    let (child, address) = start_binary(&database, &env).await;
    let http = reqwest::Client::new();
    let post = |first: u32| {
        http.post(format!("{address}/v1/events"))
            .body(batch(first, 100))
            .send()
    };
    let mut acked = 0;
    loop {
        let status = post(acked).await.unwrap().status();
        if status != 200 {
            assert_eq!(status, 503);
            break;
        }
        acked += 100;
        assert!(acked < 100_000, "never refused");
    }
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");

    // Restarted on the full volume, with ClickHouse reachable.
    let (child, address) = start_binary(&database, &disk).await;
    until_stored(&database, acked).await;
    let status = http
        .post(format!("{address}/v1/events"))
        .body(batch(acked, 100))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "accepts again");
    until_stored(&database, acked + 100).await;
    let (status, log) = stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    let stored = stored(&clickhouse_url(), &database).await;
    assert!(stored.values().all(|&n| n == 1), "each once");
    drop_database(&database).await;
}

/// Fills what is left of `dir`'s volume with a file of its own (another process's data, as
/// far as the service can tell); returns its path.
fn fill_volume(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 << 10];
    while file.write_all(&block).is_ok() {}
    // The last partial block, a page at a time.
    while file.write_all(&block[..4096]).is_ok() {}
    path
}

/// The volume fills up under the spool after start-up, so a write fails: the requests whose
/// records were in it get 503 and their rows are never stored; once there is room again the
/// spool takes events without a restart; every acknowledged row is stored once, also after
/// a restart on the same spool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_spool_write_is_recovered_without_restart_and_refused_rows_are_never_stored() {
    let Some(volume) = SmallVolume::mount() else {
        return;
    };
    let database = unique_database();
    let env = [
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", volume.path()),
        ("BUFFER_FLUSH_MS", "100"),
        ("BUFFER_MIN_INTERVAL_MS", "0"),
    ];
    let app = crate::helpers::spawn_app_in(&database, &env).await;
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut next = 0;
    let mut post = async |app: &TestApp, acked: &mut Vec<u32>, refused: &mut Vec<u32>| {
        let status = app.post_events(batch(next, 100)).await.status();
        match status.as_u16() {
            200 => acked.push(next),
            503 => refused.push(next),
            other => panic!("answered {other}"),
        }
        next += 100;
        status.as_u16()
    };
    assert_eq!(post(&app, &mut acked, &mut refused).await, 200);
    let filler = fill_volume(&volume.0);
    within(PATIENCE, async {
        while post(&app, &mut acked, &mut refused).await == 200 {}
    })
    .await;
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    assert_eq!(health["status"], "failing", "{health}");
    assert!(health["spool"]["failed"].is_string(), "{health}");

    // Room again: taken without a restart.
    std::fs::remove_file(filler).unwrap();
    within(PATIENCE, async {
        while post(&app, &mut acked, &mut refused).await != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(post(&app, &mut acked, &mut refused).await, 200);
    until_ok(&app, "/v1/ready").await;
    assert!(app.stop_keeping_data().await.is_clean());

    // Restarted on the same spool: whatever it still holds is delivered, nothing twice.
    let app = crate::helpers::spawn_app_in(&database, &env).await;
    within(PATIENCE, async {
        loop {
            let health: Value = app.get("/v1/health").await.json().await.unwrap();
            if health["spool"]["bytes"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let stored = stored(&clickhouse_url(), &database).await;
    assert!(app.stop().await.is_clean());
    for first in &acked {
        for seq in *first..first + 100 {
            assert_eq!(stored.get(&seq), Some(&1), "acknowledged {seq} stored once");
        }
    }
    for first in &refused {
        assert!(
            (*first..first + 100).all(|seq| !stored.contains_key(&seq)),
            "refused batch {first} stored anyway"
        );
    }
    assert_eq!(
        stored.len(),
        acked.len() * 100,
        "only acknowledged rows stored"
    );
}
