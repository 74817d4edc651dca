//! Acknowledged rows a configuration would leave behind: a spool under `SPOOL_DIR` that no
//! lane of this configuration opens (a table taken out of `INGEST_TABLES`, fewer shards,
//! `DURABILITY=memory`, another `BUFFER_MODE`, a cluster's spools without the cluster or
//! the other way round) would never be read again. Start-up refuses, naming the folder and
//! the setting, rather than exit 0 later saying everything buffered was written.

use std::path::{Path, PathBuf};

use super::StartupError;
use crate::config::{BufferMode, Config, Durability};
use crate::lane::spool::Spool;

/// Refuses to start while a spool this configuration does not open still holds rows.
pub(super) fn refuse_stranded_spools(config: &Config) -> Result<(), StartupError> {
    let root = PathBuf::from(&config.spool_dir);
    let opened = opened_spools(config, &root);
    for dir in spools_under(&root) {
        if opened.contains(&dir) {
            continue;
        }
        let bytes = Spool::unconfirmed_bytes(&dir)?;
        if bytes == 0 {
            continue;
        }
        let display = dir.display().to_string();
        if dir == root && config.is_cluster() && opened_anything(config) {
            return Err(StartupError::SingleServerBacklog {
                dir: display,
                bytes,
            });
        }
        return Err(StartupError::StrandedSpool {
            dir: display,
            bytes,
            setting: why_not_opened(config, &root, &dir),
        });
    }
    Ok(())
}

/// Whether this configuration keeps spools at all.
fn opened_anything(config: &Config) -> bool {
    config.buffer_mode == BufferMode::Double && config.durability() == Durability::Disk
}

/// The spools this configuration's lanes open.
fn opened_spools(config: &Config, root: &Path) -> Vec<PathBuf> {
    if !opened_anything(config) {
        return Vec::new();
    }
    let shards = match config.is_cluster() {
        true => config.clickhouse_shards().map_or(1, |s| s.len().max(1)),
        false => 0,
    };
    let lanes_of = |dir: PathBuf| -> Vec<PathBuf> {
        match shards {
            0 => vec![dir],
            n => (1..=n).map(|i| dir.join(format!("shard-{i}"))).collect(),
        }
    };
    let mut opened = lanes_of(root.to_path_buf());
    for table in config.extra_tables() {
        opened.extend(lanes_of(root.join(format!("table-{table}"))));
    }
    opened
}

/// Every spool under `root`: the folders (`root` itself, `shard-*`, `table-*` and their
/// `shard-*`) that hold a spool's checkpoint.
fn spools_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut look = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = look.pop() {
        if dir.join("checkpoint").is_file() {
            found.push(dir.clone());
        }
        if depth == 2 {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let lane = name.starts_with("shard-") || (depth == 0 && name.starts_with("table-"));
            if lane && entry.path().is_dir() {
                look.push((entry.path(), depth + 1));
            }
        }
    }
    found.sort();
    found
}

/// The setting under which `dir`'s rows were written and this configuration differs.
fn why_not_opened(config: &Config, root: &Path, dir: &Path) -> String {
    if config.buffer_mode != BufferMode::Double {
        let mode = format!("{:?}", config.buffer_mode).to_lowercase();
        return format!("BUFFER_MODE={mode} keeps no spool");
    }
    if config.durability() != Durability::Disk {
        return "DURABILITY=memory keeps no spool".into();
    }
    let rel = dir.strip_prefix(root).unwrap_or(dir).to_string_lossy();
    let table = rel
        .strip_prefix("table-")
        .map(|t| t.split('/').next().unwrap_or(t));
    match table {
        Some(t) if !config.extra_tables().iter().any(|x| x == t) => {
            format!("INGEST_TABLES does not name {t}")
        }
        _ if rel.contains("shard-") && !config.is_cluster() => {
            "CLICKHOUSE_CLUSTER is not set".into()
        }
        _ if rel.contains("shard-") => "CLICKHOUSE_HOSTS names fewer shards".into(),
        _ => "CLICKHOUSE_CLUSTER is set".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lane::spool::{WriterGuard, frame};
    use crate::table::event::testing::rows;

    /// A spool in `dir` holding ten acknowledged rows, none confirmed.
    fn spool_with_rows(dir: &Path) {
        let (spool, _) = Spool::open(dir, 1 << 30).unwrap();
        let spool = std::sync::Arc::new(spool);
        let writer = WriterGuard::spawn(spool.clone()).unwrap();
        let end = spool.reserve(&frame(&rows(0..10))).unwrap().end;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(spool.wait_durable(end))
            .unwrap();
        writer.stop();
    }

    fn config(root: &Path, vars: &[(&str, &str)]) -> Config {
        let mut all = vec![("SPOOL_DIR".to_string(), root.display().to_string())];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_vars(all).unwrap()
    }

    #[test]
    fn rows_a_configuration_would_not_read_stop_its_start() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        spool_with_rows(&root.join("table-clicks"));
        let disk = [("DURABILITY", "disk")];
        let with_table = [("DURABILITY", "disk"), ("INGEST_TABLES", "clicks")];
        assert!(refuse_stranded_spools(&config(root, &with_table)).is_ok());
        for (vars, named) in [
            (&disk[..], "INGEST_TABLES does not name clicks"),
            (
                &[("INGEST_TABLES", "clicks"), ("DURABILITY", "memory")][..],
                "DURABILITY=memory",
            ),
            (
                &[
                    ("INGEST_TABLES", "clicks"),
                    ("DURABILITY", "disk"),
                    ("BUFFER_MODE", "direct"),
                ][..],
                "BUFFER_MODE=direct",
            ),
        ] {
            let error = refuse_stranded_spools(&config(root, vars))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("table-clicks") && error.contains(named),
                "{vars:?}: {error}"
            );
        }
        // Shards a run with fewer of them would not read.
        spool_with_rows(&root.join("shard-2"));
        let one_shard = [
            ("DURABILITY", "disk"),
            ("INGEST_TABLES", "clicks"),
            ("CLICKHOUSE_CLUSTER", "c"),
            ("CLICKHOUSE_HOSTS", "a:1"),
        ];
        let error = refuse_stranded_spools(&config(root, &one_shard))
            .unwrap_err()
            .to_string();
        assert!(error.contains("shard-2"), "{error}");
    }
}
