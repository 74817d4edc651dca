//! Scenario 7: other tables of `INGEST_TABLES` in the cluster. Each table's rows
//! land on the shard its own `Distributed` table's expression names, exactly where the
//! server puts the same rows inserted through a twin `Distributed` table (one table per
//! expression form the gateway evaluates); a replica of shard 1 SIGKILLed under load on one
//! table loses and duplicates nothing; an expression the gateway cannot evaluate stops
//! start-up, naming the table and the expression.

use std::time::Duration;

use serde_json::{Value, json};

use crate::failover::{Lanes, kill_busiest_replica};
use crate::fixture::{Cluster, MEMBERS, number, query};
use crate::helpers::{
    SpoolDir, TestApp, clickhouse_at, spawn_app_in, test_env, unique_database, within,
};
use crate::load::{Load, PER_REQUEST, settle_table};

/// The tables: name, columns, sharding expression (one per form the gateway evaluates).
const TABLES: [(&str, &str, &str); 3] = [
    (
        "clicks",
        "user String, session String, sequence UInt32, amount UInt64",
        "cityHash64(user)",
    ),
    (
        "views",
        "id UInt64, session String, sequence UInt32, page String",
        "id",
    ),
    (
        "orders",
        "order_no Int32, session String, sequence UInt32, note String",
        "cityHash64(toString(order_no))",
    ),
];

/// `<name>_local` (replicated) and `<name>` (`Distributed` by `expression`) on every member,
/// as an operator creates them.
async fn create_table(cluster: &Cluster, db: &str, name: &str, columns: &str, expression: &str) {
    for (member, _) in MEMBERS {
        let url = cluster.url(member);
        clickhouse_at(&url, &format!("CREATE DATABASE IF NOT EXISTS `{db}`")).await;
        clickhouse_at(
            &url,
            &format!(
                "CREATE TABLE `{db}`.`{name}_local` ({columns}) ENGINE = \
                 ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{name}_local', \
                 '{{replica}}') ORDER BY (session, sequence)"
            ),
        )
        .await;
        clickhouse_at(
            &url,
            &format!(
                "CREATE TABLE `{db}`.`{name}` AS `{db}`.`{name}_local` ENGINE = \
                 Distributed({}, {db}, {name}_local, {expression})",
                cluster.name
            ),
        )
        .await;
    }
}

/// Row `i` of request `n` of `table`: keys spread over many values (negative order
/// numbers, ids over the whole `UInt64` range).
fn row(table: &str, tag: &str, n: u64, i: u32) -> Value {
    let k = n * u64::from(PER_REQUEST) + u64::from(i);
    let session = format!("{tag}-{n}");
    match table {
        "clicks" => json!({"user": format!("user-{}", k % 700), "session": session,
                           "sequence": i, "amount": k}),
        "views" => json!({"id": k.wrapping_mul(0x9E37_79B9_7F4A_7C15), "session": session,
                          "sequence": i, "page": "/home"}),
        _ => json!({"order_no": (k as i32).wrapping_mul(-7919), "session": session,
                    "sequence": i, "note": "ünïcødé"}),
    }
}

fn rows(table: &str, tag: &str, n: u64, count: u32) -> Vec<Value> {
    (0..count).map(|i| row(table, tag, n, i)).collect()
}

/// The rows with a field the table has no column for until it is added: `channel`.
fn with_channel(rows: Vec<Value>) -> Vec<Value> {
    (rows.into_iter())
        .map(|mut row| {
            row["channel"] = json!("mail");
            row
        })
        .collect()
}

fn views_request(tag: &str, n: u64, count: u32) -> String {
    Value::Array(rows("views", tag, n, count)).to_string()
}

async fn count(url: &str, sql: &str) -> Option<u64> {
    query(url, sql).await.ok()?.trim().parse().ok()
}

/// `count()` and a sum of row hashes of `db.table` on `member`, after a replica sync.
async fn shard_digest(cluster: &Cluster, member: &str, db: &str, table: &str) -> String {
    let url = cluster.url(member);
    clickhouse_at(&url, &format!("SYSTEM SYNC REPLICA `{db}`.`{table}`")).await;
    clickhouse_at(
        &url,
        &format!("SELECT count(), sum(cityHash64(session, sequence)) FROM `{db}`.`{table}`"),
    )
    .await
}

fn app_env(cluster: &Cluster, tables: &str) -> Vec<(&'static str, String)> {
    let mut env = cluster.env();
    env.push(("INGEST_TABLES", tables.to_string()));
    env
}

async fn spawn(db: &str, env: &[(&'static str, String)]) -> TestApp {
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    spawn_app_in(db, &overrides).await
}

#[tokio::test]
async fn other_tables_rows_land_where_their_distributed_table_puts_them() {
    let Some(cluster) = Cluster::take("cluster::tables_placement").await else {
        return;
    };
    let db = unique_database();
    for (name, columns, expression) in TABLES {
        create_table(&cluster, &db, name, columns, expression).await;
        // The twin the server itself places rows in.
        create_table(&cluster, &db, &format!("{name}_ref"), columns, expression).await;
    }
    let app = spawn(&db, &app_env(&cluster, "clicks,views,orders")).await;
    let requests = 20u64;
    let a = cluster.url("a");
    for (name, _, _) in TABLES {
        for n in 0..requests {
            let batch = rows(name, "place", n, PER_REQUEST);
            let response = app
                .http
                .post(format!("{}/v1/tables/{name}", app.address))
                .json(&batch)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            let lines: Vec<String> = batch.iter().map(Value::to_string).collect();
            clickhouse_at(
                &format!("{a}/?insert_distributed_sync=1"),
                &format!(
                    "INSERT INTO `{db}`.`{name}_ref` FORMAT JSONEachRow\n{}",
                    lines.join("\n")
                ),
            )
            .await;
        }
    }
    let expected = requests * u64::from(PER_REQUEST);
    for (name, _, expression) in TABLES {
        within(Duration::from_secs(120), async {
            while count(&a, &format!("SELECT count() FROM `{db}`.`{name}`")).await != Some(expected)
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        let mut per_shard = Vec::new();
        for (member, shard) in [("a", 1), ("c", 2)] {
            let url = cluster.url(member);
            let misplaced = number(
                &url,
                &format!(
                    "SELECT count() FROM `{db}`.`{name}_local` WHERE {expression} % 2 != {}",
                    shard - 1
                ),
            )
            .await;
            assert_eq!(misplaced, 0, "{name} on {member}");
            let gateway = shard_digest(&cluster, member, &db, &format!("{name}_local")).await;
            let server = shard_digest(&cluster, member, &db, &format!("{name}_ref_local")).await;
            assert_eq!(
                gateway, server,
                "{name}: shard {shard} as the server places it"
            );
            per_shard.push(gateway.trim().to_string());
        }
        assert!(
            per_shard.iter().all(|d| !d.starts_with("0\t")),
            "{name}: both shards get rows: {per_shard:?}"
        );
        println!("{name} ({expression}): shards {per_shard:?}, as the server places them");
    }
    let health: Value = app.get("/v1/health").await.json().await.unwrap();
    let hosts = &health["tables"]["views"]["shards"][1]["hosts"][0];
    assert_eq!(hosts["host"], cluster.host("c"));
    assert!(hosts["rows"].as_u64().unwrap_or(0) > 0, "{health}");
    app.stop().await;
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn another_tables_killed_replica_loses_nothing() {
    let Some(cluster) = Cluster::take("cluster::tables_replica_kill").await else {
        return;
    };
    let db = unique_database();
    let (name, columns, expression) = TABLES[1];
    create_table(&cluster, &db, name, columns, expression).await;
    // `disk` mode: each shard of the table has its own spool.
    let spool = SpoolDir::new();
    let mut env = app_env(&cluster, name);
    env.push(("DURABILITY", "disk".into()));
    env.push(("SPOOL_DIR", spool.path().to_string()));
    let app = spawn(&db, &env).await;
    for shard in ["shard-1", "shard-2"] {
        let dir = std::path::Path::new(spool.path())
            .join("table-views")
            .join(shard);
        assert!(dir.join("checkpoint").exists(), "{}", dir.display());
    }
    let load = Load::start_on(
        "tkill",
        vec![app.address.clone()],
        "/v1/tables/views",
        views_request,
    );
    let (victim, survivor) =
        kill_busiest_replica(&cluster, &app, &load, Lanes::Table("views")).await;
    let sent = load.stop().await;
    let figures = settle_table(
        &cluster.url(survivor),
        &db,
        name,
        &sent,
        Duration::from_secs(90),
    )
    .await;
    println!("table {name}: replica {victim} SIGKILLed under load: {figures:?}");
    assert_eq!(figures.lost, 0, "{figures:?}");
    assert_eq!(figures.duplicated, 0, "{figures:?}");
    cluster.wait_writable(victim).await;
    let local = format!("{name}_local");
    let (killed, other) = (
        shard_digest(&cluster, victim, &db, &local).await,
        shard_digest(&cluster, survivor, &db, &local).await,
    );
    assert_eq!(killed, other, "the restarted replica caught up");
    app.stop().await;
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn an_expression_the_gateway_cannot_evaluate_stops_start_up() {
    let Some(cluster) = Cluster::take("cluster::tables_refused").await else {
        return;
    };
    let db = unique_database();
    create_table(
        &cluster,
        &db,
        "lottery",
        "session String, sequence UInt32",
        "rand()",
    )
    .await;
    let env = app_env(&cluster, "lottery");
    let overrides: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let config = event_ingest::Config::from_vars(test_env(&db, &overrides)).expect("config");
    let error = match event_ingest::Application::build(config).await {
        Ok(_) => panic!("started with a sharding expression it cannot evaluate"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.contains(&format!("{db}.lottery")) && error.contains("rand()"),
        "{error}"
    );
    cluster.drop_database(&db).await;
}

#[tokio::test]
async fn a_column_added_on_every_host_is_written_on_every_shard() {
    let Some(cluster) = Cluster::take("cluster::tables_add_column").await else {
        return;
    };
    let db = unique_database();
    let (name, columns, expression) = TABLES[0];
    create_table(&cluster, &db, name, columns, expression).await;
    let mut env = app_env(&cluster, name);
    env.push(("SCHEMA_REFRESH_SECS", "1".into()));
    let app = spawn(&db, &env).await;
    let post = |n: u64| {
        let batch = with_channel(rows(name, "added", n, PER_REQUEST));
        let request = app
            .http
            .post(format!("{}/v1/tables/{name}", app.address))
            .json(&batch);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(post(0).await, 200);
    // A replicated table's ALTER reaches its shard's other replica by itself.
    let alters = [
        ("a", "_local"),
        ("c", "_local"),
        ("a", ""),
        ("b", ""),
        ("c", ""),
    ];
    for (member, suffix) in alters {
        clickhouse_at(
            &cluster.url(member),
            &format!("ALTER TABLE `{db}`.`{name}{suffix}` ADD COLUMN channel String"),
        )
        .await;
    }
    // Within a few refreshes, rows carry the new column on both shards.
    let mut n = 1;
    within(Duration::from_secs(60), async {
        loop {
            assert_eq!(post(n).await, 200);
            n += 1;
            let mut filled = Vec::new();
            for member in ["a", "c"] {
                let sql =
                    format!("SELECT count() FROM `{db}`.`{name}_local` WHERE channel = 'mail'");
                filled.push(count(&cluster.url(member), &sql).await.unwrap_or(0));
            }
            if filled.iter().all(|&f| f > 0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    let expected = n * u64::from(PER_REQUEST);
    let a = cluster.url("a");
    within(Duration::from_secs(60), async {
        while count(&a, &format!("SELECT count() FROM `{db}`.`{name}`")).await != Some(expected) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    app.stop().await;
    cluster.drop_database(&db).await;
}

/// A table read by its `[[tables]]` settings is sharded like any other: the key column
/// filled by a path puts each row on the shard its `Distributed` table names, and the rest
/// column keeps the fields no column took.
#[tokio::test]
async fn a_table_with_paths_and_a_rest_column_is_sharded_by_its_nested_key() {
    let Some(cluster) = Cluster::take("cluster::tables_paths").await else {
        return;
    };
    let db = unique_database();
    let expression = "cityHash64(user)";
    create_table(
        &cluster,
        &db,
        "shop",
        "user String, session String, sequence UInt32, page_url String, properties String",
        expression,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event-ingest.toml");
    std::fs::write(
        &file,
        "[[tables]]\nname = \"shop\"\nrest = \"properties\"\n\
         paths = { user = \"context.user.id\", page_url = \"context.page.url\" }\n",
    )
    .unwrap();
    let mut env = app_env(&cluster, "shop");
    env.push(("CONFIG_FILE", file.to_str().unwrap().to_string()));
    let app = spawn(&db, &env).await;
    let requests = 10u64;
    for n in 0..requests {
        let batch: Vec<Value> = (0..PER_REQUEST)
            .map(|i| {
                json!({"session": format!("s-{n}"), "sequence": i,
                       "context": {"user": {"id": format!("user-{}", (n * 97 + u64::from(i)) % 300)},
                                   "page": {"url": "/cart", "title": "Cart"}},
                       "price": i})
            })
            .collect();
        let response = app
            .http
            .post(format!("{}/v1/tables/shop", app.address))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let a = cluster.url("a");
    let expected = requests * u64::from(PER_REQUEST);
    within(Duration::from_secs(120), async {
        while count(&a, &format!("SELECT count() FROM `{db}`.shop")).await != Some(expected) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (member, shard) in [("a", 1), ("c", 2)] {
        let url = cluster.url(member);
        let here = number(&url, &format!("SELECT count() FROM `{db}`.shop_local")).await;
        assert!(here > 0, "shard {shard} holds rows");
        let misplaced = number(
            &url,
            &format!(
                "SELECT count() FROM `{db}`.shop_local WHERE {expression} % 2 != {}",
                shard - 1
            ),
        )
        .await;
        assert_eq!(misplaced, 0, "shard {shard}");
    }
    let odd = number(
        &a,
        &format!(
            "SELECT count() FROM `{db}`.shop WHERE page_url != '/cart' OR user = '' \
             OR properties NOT LIKE '%\"title\":\"Cart\"%' OR properties NOT LIKE '%\"price\":%'"
        ),
    )
    .await;
    assert_eq!(odd, 0, "every row's paths and rest");
    app.stop().await;
    cluster.drop_database(&db).await;
}

/// `add_columns` in a cluster: a new field's column is added on every host, to
/// `<table>_local` and to the `Distributed` table, and the request's rows keep the field on
/// both shards.
#[tokio::test]
async fn a_new_fields_column_is_added_on_every_host() {
    let Some(cluster) = Cluster::take("cluster::tables_add_columns").await else {
        return;
    };
    let db = unique_database();
    let (name, columns, expression) = TABLES[0];
    create_table(&cluster, &db, name, columns, expression).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event-ingest.toml");
    std::fs::write(
        &file,
        format!(
            "[[tables]]\nname = \"{name}\"\nadd_columns = {{ max = 20, pattern = \"^[a-z]+$\" }}\n"
        ),
    )
    .unwrap();
    let mut env = app_env(&cluster, name);
    env.push(("CONFIG_FILE", file.to_str().unwrap().to_string()));
    let app = spawn(&db, &env).await;
    let requests = 10u64;
    for n in 0..requests {
        let batch = with_channel(rows(name, "new", n, PER_REQUEST));
        let response = app
            .http
            .post(format!("{}/v1/tables/{name}", app.address))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    for (member, _) in MEMBERS {
        for table in [format!("{name}_local"), name.to_string()] {
            let sql = format!(
                "SELECT type FROM system.columns WHERE database = '{db}' AND table = '{table}' \
                 AND name = 'channel'"
            );
            let ty = query(&cluster.url(member), &sql).await.unwrap();
            assert_eq!(ty.trim(), "Nullable(String)", "{member} {table}");
        }
    }
    let a = cluster.url("a");
    let expected = requests * u64::from(PER_REQUEST);
    let sql = format!("SELECT count() FROM `{db}`.`{name}` WHERE channel = 'mail'");
    within(Duration::from_secs(120), async {
        while count(&a, &sql).await != Some(expected) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for member in ["a", "c"] {
        let here = number(
            &cluster.url(member),
            &format!("SELECT count() FROM `{db}`.`{name}_local` WHERE channel = 'mail'"),
        )
        .await;
        assert!(here > 0, "{member}'s shard holds rows with the new column");
    }
    app.stop().await;
    cluster.drop_database(&db).await;
}
