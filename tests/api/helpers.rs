//! `spawn_app` and friends: start the application in-process (or the binary as a child),
//! talk to it over HTTP, and read ClickHouse back over its own HTTP interface (not through
//! the crate under test), so a test checks what really landed.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use event_ingest::lane::ShutdownReport;
use event_ingest::stats::Stats;
use event_ingest::{Application, Config, config::AppEnv, logging};
use serde_json::Value;
use tokio::task::JoinHandle;

/// Longest wait for anything that polls (rows landing, a process exiting). Generous: it
/// bounds a failing test, it is not a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The ClickHouse a run of the suite is against, from `TEST_ENGINE`; `make test` runs the
/// suite once for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `TEST_ENGINE` unset or `18.16`: a real server (Debian's ClickHouse 18.16).
    Legacy,
    /// `TEST_ENGINE=modern`: ClickHouse 26.x (chDB) behind the test double of its HTTP
    /// interface, `tests/support/chdb-http.py`.
    Modern,
}

impl Engine {
    /// The engine this run is against.
    pub fn current() -> Self {
        match std::env::var("TEST_ENGINE").as_deref() {
            Ok("modern") => Engine::Modern,
            Ok("18.16") | Err(_) => Engine::Legacy,
            Ok(other) => panic!("TEST_ENGINE={other:?}: expected `modern` or `18.16`"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Engine::Legacy => "18.16",
            Engine::Modern => "modern",
        }
    }
}

/// Whether the suite runs on the modern engine.
pub fn modern_engine() -> bool {
    Engine::current() == Engine::Modern
}

/// Records that `test` is skipped on this run's engine, and why; the caller then returns.
/// A skip is never silent: it is printed and appended to `target/test-skips/<engine>.txt`,
/// which `make test` lists with a count.
pub fn skip(test: &str, reason: &str) {
    let engine = Engine::current().name();
    eprintln!("SKIPPED on {engine}: {test}: {reason}");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-skips");
    let line = format!("{test}: {reason}\n");
    let written = std::fs::create_dir_all(dir).and_then(|()| {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("{dir}/{engine}.txt"))?
            .write_all(line.as_bytes())
    });
    written.expect("skip recorded");
}

/// ClickHouse's HTTP address for tests (`CLICKHOUSE_HOST`/`CLICKHOUSE_PORT`, as the app).
pub fn clickhouse_url() -> String {
    let host = std::env::var("CLICKHOUSE_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "8123".into());
    format!("http://{host}:{port}")
}

/// A fresh database name, so tests never see each other's rows.
pub fn unique_database() -> String {
    format!("it_{}", uuid::Uuid::new_v4().simple())
}

/// Environment for a test app: its own database, port 0, everything else overridable.
pub fn test_env(database: &str, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
    let host = std::env::var("CLICKHOUSE_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("CLICKHOUSE_PORT").unwrap_or_else(|_| "8123".into());
    let mut vars: Vec<(String, String)> = [
        ("APP_ENV", "test"),
        ("HTTP_HOST", "127.0.0.1"),
        ("HTTP_PORT", "0"),
        ("CLICKHOUSE_HOST", &host),
        ("CLICKHOUSE_PORT", &port),
        ("CLICKHOUSE_NAME", database),
        ("BUFFER_FLUSH_MS", "100"),
        // Refusals at once, as the tests of a full buffer expect; `full_wait.rs` tests the wait.
        ("BUFFER_FULL_WAIT_MS", "0"),
        ("HTTP_WORKERS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in overrides {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), v.to_string()));
    }
    vars
}

/// A running application and what a test needs to talk to it.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// The admin listener's address, with `ADMIN_PORT` set.
    pub admin_address: Option<String>,
    /// The test's database.
    pub database: String,
    /// The app's counters.
    pub stats: Arc<Stats>,
    /// HTTP client.
    pub http: reqwest::Client,
    handle: ServerHandle,
    server: JoinHandle<std::io::Result<ShutdownReport>>,
}

/// Starts the application with the test environment plus `overrides`.
pub async fn spawn_app(overrides: &[(&str, &str)]) -> TestApp {
    spawn_app_in(&unique_database(), overrides).await
}

/// [`spawn_app`] writing to a database the test has prepared.
pub async fn spawn_app_in(database: &str, overrides: &[(&str, &str)]) -> TestApp {
    logging::init(AppEnv::Test);
    let database = database.to_string();
    let config = Config::from_vars(test_env(&database, overrides)).expect("test config");
    let host = config.http_host.clone();
    let app = Application::build(config).await.expect("app builds");
    let address = format!("http://{host}:{}", app.port());
    let admin_address = app.admin_port().map(|port| format!("http://{host}:{port}"));
    let handle = app.handle();
    let stats = app.stats();
    let server = tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        admin_address,
        database,
        stats,
        http: reqwest::Client::new(),
        handle,
        server,
    }
}

impl TestApp {
    /// `POST /v1/events` with `body`.
    pub async fn post_events(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// `GET` a path.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// Rows in this test's table right now.
    pub async fn count(&self) -> u64 {
        count_rows(&self.database).await
    }

    /// Polls until the table holds `n` rows, or panics after [`PATIENCE`].
    pub async fn wait_for_rows(&self, n: u64) {
        wait_for_rows(&self.database, n).await
    }

    /// Waits for the table to hold one row and returns its `ip` as ClickHouse prints it.
    pub async fn stored_ip(&self) -> String {
        self.wait_for_rows(1).await;
        let ip = clickhouse(&format!(
            "SELECT IPv6NumToString(ip) FROM `{}`.events",
            self.database
        ))
        .await;
        ip.trim().to_string()
    }

    /// Stops the server (as a signal would) and returns the shutdown report.
    pub async fn stop(self) -> ShutdownReport {
        let database = self.database.clone();
        let report = self.stop_keeping_data().await;
        drop_database(&database).await;
        report
    }

    /// [`TestApp::stop`], leaving the database for a restart to write to.
    pub async fn stop_keeping_data(self) -> ShutdownReport {
        self.handle.stop(true).await;
        within(PATIENCE, self.server)
            .await
            .expect("server task")
            .expect("server ran")
    }
}

/// Runs a ClickHouse query over HTTP and returns the body; panics on an error status.
pub async fn clickhouse(sql: &str) -> String {
    clickhouse_at(&clickhouse_url(), sql).await
}

/// [`clickhouse`] against the server at `url`.
pub async fn clickhouse_at(url: &str, sql: &str) -> String {
    let response = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .await
        .expect("ClickHouse reachable");
    let status = response.status();
    let text = response.text().await.expect("body");
    assert!(status.is_success(), "{sql}: {status} {text}");
    text
}

/// `sql` with `FORMAT JSONEachRow`, one value per row.
pub async fn clickhouse_json(sql: &str) -> Vec<Value> {
    clickhouse(&format!("{sql} FORMAT JSONEachRow"))
        .await
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON row"))
        .collect()
}

/// Rows in `database.events`, 0 if the table does not exist yet.
pub async fn count_rows(database: &str) -> u64 {
    let exists = clickhouse(&format!("EXISTS TABLE `{database}`.events")).await;
    if exists.trim() != "1" {
        return 0;
    }
    clickhouse(&format!("SELECT count() FROM `{database}`.events"))
        .await
        .trim()
        .parse()
        .expect("a count")
}

/// Polls until `database.events` holds `n` rows; panics if it does not within [`PATIENCE`]
/// or if it ever holds more.
pub async fn wait_for_rows(database: &str, n: u64) {
    let poll = async {
        loop {
            let count = count_rows(database).await;
            assert!(count <= n, "expected {n} rows, found {count}");
            if count == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    within(PATIENCE, poll).await;
}

/// Removes a test's database.
pub async fn drop_database(database: &str) {
    clickhouse(&format!("DROP DATABASE IF EXISTS `{database}`")).await;
}

/// Awaits `fut`, panicking if it takes longer than `limit` (nothing in a test may hang).
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {limit:?}"))
}

/// An answer's per-event errors as `(index, field)`, in order.
pub fn error_fields(answer: &Value) -> Vec<(u64, &str)> {
    answer["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["index"].as_u64().unwrap(), e["field"].as_str().unwrap()))
        .collect()
}

/// A valid event as the original service's clients send it, distinguished by `sequence`.
pub fn event(sequence: u32) -> Value {
    serde_json::json!({
        "client_time": "2020-12-01 23:59:00",
        "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C821E",
        "device_os": "IOS 13.5.1",
        "session": "ybuRi8mAUypxjbxQ",
        "sequence": sequence,
        "event": "app_start",
        "param_int": sequence * 7,
        "param_str": "some text",
    })
}

/// A JSON array of `n` valid events, sequences `first..first + n`.
pub fn batch(first: u32, n: u32) -> String {
    Value::Array((first..first + n).map(event).collect()).to_string()
}

/// A local port with nothing listening on it (bound, then released). Another process could
/// take it meanwhile; on loopback during a test run that is unlikely enough.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Posts `per_request` events at a time until the app refuses a request; returns how many
/// events were accepted before that, and the refusal.
pub async fn post_until_refused(app: &TestApp, per_request: u32) -> (u32, reqwest::Response) {
    let mut accepted = 0;
    loop {
        let response = app.post_events(batch(accepted, per_request)).await;
        if response.status() != 200 {
            return (accepted, response);
        }
        accepted += per_request;
        assert!(accepted < 100_000, "never refused");
    }
}

/// Forwards every connection `listener` accepts to the shared ClickHouse: it "comes back"
/// on a port the app was given while nothing listened there.
pub fn forward_to_clickhouse(listener: tokio::net::TcpListener) -> JoinHandle<()> {
    forward(listener, tokio::sync::watch::channel(true).1)
}

/// Forwards each connection to the shared ClickHouse, passing what the app sends only while
/// `open` is `true` (held meanwhile, on connections old and new): a request sent while
/// closed is taken and stays unanswered, not refused. ClickHouse closes a keep-alive
/// connection that stays idle for a few seconds (as during a hold): the next request on the
/// app's connection then goes to ClickHouse on a new one, as a client reconnecting would.
fn forward(
    listener: tokio::net::TcpListener,
    open: tokio::sync::watch::Receiver<bool>,
) -> JoinHandle<()> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let upstream = clickhouse_url().trim_start_matches("http://").to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let mut open = open.clone();
            tokio::spawn(async move {
                let (mut from_app, to_app) = client.into_split();
                // Answers go back by one upstream connection at a time.
                let to_app = Arc::new(tokio::sync::Mutex::new(to_app));
                let mut server: Option<(tokio::net::tcp::OwnedWriteHalf, JoinHandle<()>)> = None;
                let mut chunk = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_app.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if open.wait_for(|open| *open).await.is_err() {
                        break;
                    }
                    if server
                        .as_ref()
                        .is_none_or(|(_, answers)| answers.is_finished())
                    {
                        let Ok(stream) = tokio::net::TcpStream::connect(upstream.as_str()).await
                        else {
                            break;
                        };
                        let (mut from_server, to_server) = stream.into_split();
                        let to_app = to_app.clone();
                        let answers = tokio::spawn(async move {
                            let mut to_app = to_app.lock().await;
                            let _ = tokio::io::copy(&mut from_server, &mut *to_app).await;
                        });
                        server = Some((to_server, answers));
                    }
                    let Some((to_server, _)) = server.as_mut() else {
                        break;
                    };
                    if to_server.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                }
                if let Some((mut to_server, answers)) = server {
                    let _ = to_server.shutdown().await;
                    let _ = answers.await;
                }
                let _ = to_app.lock().await.shutdown().await;
            });
        }
    })
}

/// A ClickHouse that can turn slower than any load: while held ([`HeldClickHouse::hold`])
/// it takes what the app sends and answers nothing; released, it passes everything, the held
/// requests first, to the shared server. The app sees inserts that take long, not inserts
/// that fail (give it a `CLICKHOUSE_TIMEOUT_MS` longer than the hold).
pub struct HeldClickHouse {
    /// The port to give the app as `CLICKHOUSE_PORT`.
    pub port: u16,
    open: tokio::sync::watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HeldClickHouse {
    /// Listening and passing everything through (so the app starts as usual).
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, gate) = tokio::sync::watch::channel(true);
        let task = forward(listener, gate);
        Self { port, open, task }
    }

    /// From now on nothing the app sends reaches ClickHouse.
    pub fn hold(&self) {
        self.open.send_replace(false);
    }

    /// Everything held reaches ClickHouse, and what follows too.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for HeldClickHouse {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A spool folder (and its quarantine) of a test's own, inside a temporary folder that is
/// removed with everything in it when dropped, also when the test fails.
pub struct SpoolDir {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
}

impl SpoolDir {
    /// A fresh one; the spool creates the folder itself.
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().join("spool");
        Self { _tmp: tmp, dir }
    }

    /// The folder, for `SPOOL_DIR`.
    pub fn path(&self) -> &str {
        self.dir.to_str().expect("UTF-8 temp path")
    }

    /// The folder, for reading what the spool wrote.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The quarantine's lines (`SPOOL_DIR/quarantine/*`), once there are at least `n`.
    pub async fn quarantined(&self, n: usize) -> Vec<Value> {
        let dir = self.dir.join("quarantine");
        within(PATIENCE, async {
            loop {
                let lines: Vec<Value> = std::fs::read_dir(&dir)
                    .into_iter()
                    .flatten()
                    .flat_map(|f| {
                        std::fs::read_to_string(f.unwrap().path())
                            .unwrap_or_default()
                            .lines()
                            .map(|l| serde_json::from_str(l).unwrap())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if lines.len() >= n {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
    }
}
