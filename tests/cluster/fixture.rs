//! The test cluster: its members' addresses, stopping, killing and restarting them with
//! the script, and the ClickHouse queries the tests check with.

use std::path::PathBuf;
use std::time::Duration;

use crate::helpers::{PATIENCE, clickhouse_at, skip, within};

/// The cluster `make test-cluster` started, held by one test at a time.
pub struct Cluster {
    dir: PathBuf,
    /// `CLICKHOUSE_HOSTS` as the script printed it.
    pub hosts: String,
    /// `CLICKHOUSE_CLUSTER`.
    pub name: String,
    /// `CLICKHOUSE_HOSTS` with shard 2's replica reached over HTTPS.
    pub hosts_https: String,
    /// The CA that signed every member's HTTPS certificate.
    pub ca_file: String,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// One test at a time: they stop and kill members.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Members by shard, as the script lays them out.
pub const MEMBERS: [(&str, usize); 3] = [("a", 1), ("b", 1), ("c", 2)];

impl Cluster {
    /// The cluster, every member up, once no other test holds it; `None` (and a recorded
    /// skip) when `CLUSTER_DIR` is not set.
    pub async fn take(test: &str) -> Option<Cluster> {
        let Ok(dir) = std::env::var("CLUSTER_DIR") else {
            skip(test, "no cluster: run `make test-cluster`");
            return None;
        };
        let turn = TURN.lock().await;
        let dir = PathBuf::from(dir);
        let env = std::fs::read_to_string(dir.join("cluster.env")).expect("cluster.env");
        let value = |name: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("{name} in cluster.env"))
                .to_string()
        };
        let cluster = Cluster {
            hosts: value("CLICKHOUSE_HOSTS"),
            name: value("CLICKHOUSE_CLUSTER"),
            hosts_https: value("CLICKHOUSE_HOSTS_HTTPS"),
            ca_file: value("CLICKHOUSE_CA_FILE"),
            dir,
            _turn: turn,
        };
        cluster.script(&["up"]);
        for (member, _) in MEMBERS {
            cluster.wait_writable(member).await;
        }
        Some(cluster)
    }

    /// `http://host:port` of a member (`a`, `b`, `c`).
    pub fn url(&self, member: &str) -> String {
        format!("http://{}", self.host(member))
    }

    /// `host:port` of a member, as `CLICKHOUSE_HOSTS` names it.
    pub fn host(&self, member: &str) -> String {
        let hosts: Vec<&str> = self.hosts.split([';', ',']).collect();
        let i = MEMBERS
            .iter()
            .position(|(m, _)| *m == member)
            .expect("member");
        hosts[i].to_string()
    }

    /// The member whose `host:port` this is.
    pub fn member_of(&self, host: &str) -> &'static str {
        MEMBERS
            .iter()
            .map(|(m, _)| *m)
            .find(|m| self.host(m) == host)
            .expect("a member's host")
    }

    fn script(&self, args: &[&str]) {
        let status = std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/clickhouse-cluster.sh"
        ))
        .arg(args[0])
        .arg(&self.dir)
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("script runs");
        assert!(status.success(), "clickhouse-cluster.sh {args:?}");
    }

    /// Starts a member (or ZooKeeper, `zk`) that is not running.
    pub fn up(&self, member: &str) {
        self.script(&["up", member]);
    }

    /// Stops a member (or `zk`) with SIGTERM and waits for it to exit.
    pub fn down(&self, member: &str) {
        self.script(&["down", member]);
    }

    /// SIGKILLs a member.
    pub fn kill(&self, member: &str) {
        let pid = std::fs::read_to_string(self.dir.join(member).join("pid")).expect("pid");
        let status = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits until a member takes writes to replicated tables (after a restart it may be
    /// read-only until its ZooKeeper session is back).
    pub async fn wait_writable(&self, member: &str) {
        let url = self.url(member);
        within(PATIENCE * 4, async {
            loop {
                let readonly = query(
                    &url,
                    "SELECT count() FROM system.replicas WHERE is_readonly",
                )
                .await;
                if readonly.as_deref().map(str::trim) == Ok("0") {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
    }

    /// Rows whose shard (by the sharding expression) is not the member's, in
    /// `db.events_local` on that member.
    pub async fn misplaced(&self, member: &str, db: &str, shard: usize) -> u64 {
        number(
            &self.url(member),
            &format!(
                "SELECT count() FROM `{db}`.events_local \
                 WHERE cityHash64(toString(device_id)) % 2 != {}",
                shard - 1
            ),
        )
        .await
    }

    /// `SYSTEM SYNC REPLICA` on a member, then its row count and a sum of row hashes.
    pub async fn replica_digest(&self, member: &str, db: &str) -> String {
        let url = self.url(member);
        clickhouse_at(&url, &format!("SYSTEM SYNC REPLICA `{db}`.events_local")).await;
        clickhouse_at(
            &url,
            &format!(
                "SELECT count(), sum(cityHash64(toString(device_id), session, sequence)) \
                 FROM `{db}`.events_local"
            ),
        )
        .await
    }

    /// Drops a test's database on every member (the replicated tables' ZooKeeper entries
    /// go with them).
    pub async fn drop_database(&self, db: &str) {
        for (member, _) in MEMBERS {
            let _ = query(
                &self.url(member),
                &format!("DROP DATABASE IF EXISTS `{db}`"),
            )
            .await;
        }
    }

    /// The environment a gateway on this cluster needs.
    /// Rows in active parts of `db.table` on `member` that its replica never registered in
    /// ZooKeeper: a part 18.16 keeps locally when ZooKeeper is lost during the insert's
    /// commit and the commit did not reach it (it answers `Unknown status, client must
    /// retry`, code 319). The retried insert stores the rows in a registered part; the
    /// local one shows on that replica alone until the server restarts (it is then renamed
    /// `ignored_<part>`) or its part check reaches it.
    pub async fn unregistered_rows(&self, member: &str, db: &str, table: &str) -> u64 {
        let url = self.url(member);
        let replica = query(
            &url,
            &format!(
                "SELECT concat(zookeeper_path, '/replicas/', replica_name, '/parts') \
                 FROM system.replicas WHERE database = '{db}' AND table = '{table}'"
            ),
        )
        .await
        .unwrap();
        let registered = query(
            &url,
            &format!(
                "SELECT name FROM system.zookeeper WHERE path = '{}'",
                replica.trim()
            ),
        )
        .await
        .unwrap();
        let registered: Vec<String> = registered.lines().map(|l| format!("'{l}'")).collect();
        let filter = match registered.is_empty() {
            true => String::new(),
            false => format!("AND name NOT IN ({})", registered.join(", ")),
        };
        number(
            &url,
            &format!(
                "SELECT sum(rows) FROM system.parts WHERE active AND database = '{db}' \
                 AND table = '{table}' {filter}"
            ),
        )
        .await
    }

    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CLICKHOUSE_HOSTS", self.hosts.clone()),
            ("CLICKHOUSE_CLUSTER", self.name.clone()),
        ]
    }
}

/// A query's answer, or its error as text (for polling through outages).
pub async fn query(url: &str, sql: &str) -> Result<String, String> {
    let response = reqwest::Client::new()
        .post(url)
        .body(sql.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = response.status().is_success();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if ok { Ok(text) } else { Err(text) }
}

/// A query answering one number.
pub async fn number(url: &str, sql: &str) -> u64 {
    clickhouse_at(url, sql)
        .await
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}
