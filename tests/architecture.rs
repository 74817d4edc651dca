//! The import rule of `src/` (docs/architecture.md), read from the code: the stages, in the
//! order an event passes them, import only the stages after them; the shared modules import
//! no stage; the configuration is read by the application's assembly alone; handlers see
//! the lane's seam, not the sink; ClickHouse's formats do no I/O; and every folder says
//! what it holds and may import.

use std::path::{Path, PathBuf};

/// The stages, callers first.
const STAGES: &[&str] = &["app", "http", "lane", "sink", "table", "format"];
/// Modules every stage may use, which use no stage.
const SHARED: &[&str] = &["config", "crypto", "durable", "logging", "memory", "stats"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/lane/spool/mod.rs`: `lane`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The file's code, less comments and its test module; `None` for a file of tests.
fn code(file: &Path) -> Option<String> {
    let name = file.file_name()?.to_string_lossy();
    if name == "tests.rs" || name.ends_with("_tests.rs") || name == "oracle.rs" {
        return None;
    }
    let text = std::fs::read_to_string(file).unwrap();
    let text = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    Some(lines.join("\n"))
}

/// The top-level modules `code` names as `crate::<module>`.
fn imports(code: &str) -> Vec<String> {
    let mut found: Vec<String> = code
        .match_indices("crate::")
        .map(|(at, _)| {
            code[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn imports_run_one_way_from_the_request_to_clickhouse() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let rank = |m: &str| STAGES.iter().position(|s| *s == m);
    let mut broken = Vec::new();
    for file in &files {
        let me = module_of(&src, file);
        let Some(code) = code(file) else { continue };
        for used in imports(&code) {
            let why = match (rank(&me), rank(&used)) {
                _ if used == me => continue,
                (Some(a), Some(b)) if b < a => "a stage imports one that calls it",
                (None, Some(_)) if SHARED.contains(&me.as_str()) => {
                    "a shared module imports a stage"
                }
                _ if used == "config"
                    && !["app", "main", "lib", "logging"].contains(&me.as_str()) =>
                {
                    "the configuration is read by the application's assembly alone"
                }
                _ if me == "http" && used == "sink" => "handlers see the lane's seam, not the sink",
                _ => continue,
            };
            broken.push(format!("{}: crate::{used} ({why})", file.display()));
        }
        if me == "format" {
            for io in ["std::fs", "std::net", "tokio::", "clickhouse::"] {
                if code.contains(io) {
                    broken.push(format!(
                        "{}: {io} (the format layer does no I/O)",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports against the rule:\n{}",
        broken.join("\n")
    );
}

#[test]
fn every_folder_says_what_it_holds_and_may_import() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut silent = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "mod.rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        let header: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if header.is_empty() || !header.contains("May import") {
            silent.push(file.display().to_string());
        }
    }
    assert!(
        silent.is_empty(),
        "folders without a `//!` header naming what they may import:\n{}",
        silent.join("\n")
    );
}
