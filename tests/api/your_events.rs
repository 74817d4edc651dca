//! Events as clients send them, read as a table's `[[tables]]` entry says: nested fields
//! into columns by path, every other field kept in a rest column, the `User-Agent` and
//! what it says, and the table's own server-filled column; settings the table cannot take
//! stop start-up naming them.

use serde_json::{Value, json};

use crate::helpers::{
    clickhouse, error_fields, modern_engine, spawn_app_in, test_env, unique_database,
};
use crate::keys::ConfigFile;
use crate::tables::{table_with, wait_for};

const CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, \
                      like Gecko) Chrome/120.0.0.0 Safari/537.36";

fn settings(rest: &str) -> String {
    format!(
        r#"
[[tables]]
name = "shop"
server_time_column = "received_at"
paths = {{ page_url = "context.page.url", sku = "properties.sku", qty = "properties.qty", at = "context.at", first_item = "items[0].id" }}
rest = "{rest}"
user_agent = "ua"
browser = "browser"
os = "os"
device = "device"
"#
    )
}

fn columns(rest_type: &str) -> String {
    format!(
        "event String, page_url String, sku String, qty UInt32, at DateTime('UTC'), \
         first_item String, received_at DateTime, ua String, browser String, os String, \
         device String, {rest_type}"
    )
}

async fn post(app: &crate::helpers::TestApp, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/tables/shop", app.address))
        .header("user-agent", CHROME)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Posts events given as their JSON texts to `table`; the answer.
async fn post_texts(
    app: &crate::helpers::TestApp,
    table: &str,
    texts: &[impl AsRef<str>],
) -> Value {
    let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    reqwest::Client::new()
        .post(format!("{}/v1/tables/{table}", app.address))
        .header("content-type", "application/json")
        .body(format!("[{}]", texts.join(",")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads `columns` of `table` and of `<table>_ref` (the server's own insert of the same
/// texts) row by row: `rows` rows, the same in both.
async fn read_as_the_server_reads(database: &str, columns: &str, table: &str, rows: usize) {
    let read = |table: String| {
        let query =
            format!("SELECT {columns} FROM `{database}`.{table} ORDER BY id FORMAT JSONEachRow");
        async move { clickhouse(&query).await }
    };
    let stored = read(table.to_string()).await;
    let reference = read(format!("{table}_ref")).await;
    let differing: Vec<String> = (stored.lines().zip(reference.lines()))
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("stored    {a}\nreference {b}"))
        .collect();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
    assert_eq!(stored.lines().count(), rows, "{stored}");
}

/// The server's own `JSONEachRow` insert of the same texts into `table`.
async fn insert_as_the_server_reads(database: &str, table: &str, texts: &[String]) {
    crate::helpers::clickhouse_at(
        &crate::helpers::clickhouse_url(),
        &format!(
            "INSERT INTO `{database}`.{table} FORMAT JSONEachRow\n{}",
            texts.join("\n")
        ),
    )
    .await;
}

fn purchases() -> Value {
    json!([
        {"event": "purchase",
         "context": {"page": {"url": "https://shop.example/p/1", "title": "Shoes"},
                     "at": "2026-12-07 10:00:00",
                     "campaign": {"name": "winter", "source": "mail"}},
         "properties": {"sku": "S-1", "qty": 2, "price": 12.5, "coupon": null},
         "items": [{"id": "i-1"}, {"id": "i-2"}]},
        {"event": "purchase",
         "context": {"page": {"url": "https://shop.example/p/2"}, "at": "yesterday"},
         "properties": {"sku": "S-2", "qty": -1}},
        {"event": "view", "context": {"page": {"url": "https://shop.example/"}}}
    ])
}

#[tokio::test]
async fn nested_fields_fill_their_columns_and_the_rest_is_kept_as_json_text() {
    let database = unique_database();
    table_with(&database, "shop", &columns("properties String")).await;
    let file = ConfigFile::new(&settings("properties"));
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "shop"), ("CONFIG_FILE", &file.path())],
    )
    .await;
    let answer = post(&app, &purchases()).await;
    // Bad values at paths are errors named by the path; the rest of the batch is stored.
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(
        error_fields(&answer),
        vec![(1, "properties.qty"), (1, "context.at")],
        "{answer}"
    );
    wait_for(&database, "shop", 2).await;
    let extract = match modern_engine() {
        true => {
            "JSONExtractString(properties, 'context', 'campaign', 'name') AS campaign, \
                 JSONExtractFloat(properties, 'properties', 'price') AS price"
        }
        false => {
            "visitParamExtractString(visitParamExtractRaw(visitParamExtractRaw(\
                  properties, 'context'), 'campaign'), 'name') AS campaign, \
                  visitParamExtractFloat(visitParamExtractRaw(properties, 'properties'), 'price') \
                  AS price"
        }
    };
    let stored = clickhouse(&format!(
        "SELECT event, page_url, sku, qty, toString(at) AS at_text, first_item, ua, browser, \
         os, device, received_at > now() - 600 AS recent, {extract}, properties \
         FROM `{database}`.shop ORDER BY event FORMAT JSONEachRow"
    ))
    .await;
    let rows: Vec<Value> = stored
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first = &rows[0];
    for (column, value) in [
        ("event", json!("purchase")),
        ("page_url", json!("https://shop.example/p/1")),
        ("sku", json!("S-1")),
        ("qty", json!(2)),
        ("at_text", json!("2026-12-07 10:00:00")),
        ("first_item", json!("i-1")),
        ("ua", json!(CHROME)),
        ("browser", json!("Chrome")),
        ("os", json!("Windows 10")),
        ("device", json!("pc")),
        ("recent", json!(1)),
        ("campaign", json!("winter")),
        ("price", json!(12.5)),
    ] {
        assert_eq!(first[column], value, "{column}: {first}");
    }
    let rest: Value = serde_json::from_str(first["properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        rest,
        json!({
            "context": {"page": {"title": "Shoes"}, "campaign": {"name": "winter", "source": "mail"}},
            "properties": {"price": 12.5, "coupon": null},
            "items": [{"id": "i-1"}, {"id": "i-2"}]
        })
    );
    // An event without the nested fields takes the columns' defaults.
    let view = &rows[1];
    assert_eq!(view["page_url"], "https://shop.example/");
    assert_eq!((&view["sku"], &view["qty"]), (&json!(""), &json!(0)));
    assert_eq!(view["properties"], "{}");
    app.stop().await;
}

#[tokio::test]
async fn the_rest_as_a_map_keeps_dotted_keys() {
    if !modern_engine() {
        return; // 18.16 has no Map
    }
    let database = unique_database();
    table_with(
        &database,
        "shop",
        &columns("properties Map(String, String)"),
    )
    .await;
    let file = ConfigFile::new(&settings("properties"));
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "shop"), ("CONFIG_FILE", &file.path())],
    )
    .await;
    let answer = post(&app, &json!([purchases()[0].clone()])).await;
    assert_eq!(answer["accepted"], 1, "{answer}");
    wait_for(&database, "shop", 1).await;
    let stored = clickhouse(&format!(
        "SELECT properties['context.campaign.source'], properties['properties.price'], \
         properties['properties.coupon'], length(properties) FROM `{database}`.shop \
         FORMAT JSONCompactEachRow"
    ))
    .await;
    let stored: Value = serde_json::from_str(stored.trim()).unwrap();
    assert_eq!(stored, json!(["mail", "12.5", "null", 6]));
    app.stop().await;
}

#[tokio::test]
async fn a_setting_the_table_cannot_take_stops_start_up_naming_table_setting_and_column() {
    let database = unique_database();
    table_with(&database, "shop", "event String, n UInt8").await;
    for (toml, expected) in [
        (
            "[[tables]]\nname = \"shop\"\npaths = { page_url = \"context.page.url\" }\n",
            "setting paths.page_url: the table has no column page_url",
        ),
        (
            "[[tables]]\nname = \"shop\"\nrest = \"n\"\n",
            "setting rest: column n is UInt8",
        ),
        (
            "[[tables]]\nname = \"elsewhere\"\nrest = \"n\"\n",
            "elsewhere is not a table this service writes",
        ),
    ] {
        let file = ConfigFile::new(toml);
        let config = event_ingest::Config::from_vars(test_env(
            &database,
            &[("INGEST_TABLES", "shop"), ("CONFIG_FILE", &file.path())],
        ))
        .unwrap();
        let err = match event_ingest::Application::build(config).await {
            Ok(_) => panic!("started with {toml}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{err}");
        assert!(err.contains("shop") || err.contains("elsewhere"), "{err}");
    }
}

/// A `JSON` column takes an object and stores what the server's own `JSONEachRow` insert of
/// the same text stores; anything but an object is refused by field, `null` or a missing
/// field is the empty object; and the rest may be kept in a `JSON` column.
#[tokio::test]
async fn a_json_column_stores_what_the_servers_own_parse_of_the_text_stores() {
    if !modern_engine() {
        return; // 18.16 has no JSON type
    }
    let database = unique_database();
    for table in ["docs", "docs_ref"] {
        table_with(&database, table, "id UInt32, j JSON, rest JSON").await;
    }
    let file = ConfigFile::new("[[tables]]\nname = \"docs\"\nrest = \"rest\"\n");
    let app = spawn_app_in(
        &database,
        &[("INGEST_TABLES", "docs"), ("CONFIG_FILE", &file.path())],
    )
    .await;
    let texts = [
        r#"{"id": 1, "j": {"a": {"b": [1, 2]}, "c": 1.50, "d": "x\u00e9\n", "e": null, "f": 18446744073709551615}, "extra": {"k": true}}"#,
        r#"{"id": 2, "j": {"nested": {"deeper": {"list": [{"x": 1}, {"x": "two"}]}}}}"#,
        r#"{"id": 3, "j": null}"#,
        r#"{"id": 4}"#,
    ];
    let answer = post_texts(&app, "docs", &texts).await;
    assert_eq!(answer["accepted"], 4, "{answer}");
    // The server's own parse of the same events, the rest as the service keeps it.
    let reference: Vec<String> = texts
        .iter()
        .map(|t| {
            let mut v: Value = serde_json::from_str(t).unwrap();
            let extra = v.as_object_mut().unwrap().remove("extra");
            v["rest"] = match extra {
                Some(extra) => json!({"extra": extra}),
                None => json!({}),
            };
            v.to_string()
        })
        .collect();
    insert_as_the_server_reads(&database, "docs_ref", &reference).await;
    wait_for(&database, "docs", 4).await;
    let read = |table: &str| {
        let database = database.clone();
        let table = table.to_string();
        async move {
            clickhouse(&format!(
                "SELECT id, j, rest FROM `{database}`.{table} ORDER BY id FORMAT JSONEachRow"
            ))
            .await
        }
    };
    let stored = read("docs").await;
    assert_eq!(stored, read("docs_ref").await);
    assert_eq!(stored.lines().count(), 4, "{stored}");
    // Not an object: refused by field, as the server would refuse the whole insert.
    let refused = post_texts(
        &app,
        "docs",
        &[r#"{"id": 5, "j": [1, 2]}"#, r#"{"id": 6, "j": "text"}"#],
    )
    .await;
    assert_eq!(refused["rejected"], 2, "{refused}");
    assert_eq!(
        refused["errors"][0]["error"], "expected an object, got an array",
        "{refused}"
    );
    app.stop().await;
}

/// A table's `[[tables]]` entry is read again when `CONFIG_FILE` changes: a new path is
/// used from the table's next reading, without a restart; a setting the table cannot take
/// is refused and the settings in use stay.
#[tokio::test]
async fn changed_settings_are_used_without_a_restart_and_bad_ones_are_refused() {
    let database = unique_database();
    table_with(&database, "pages", "n UInt32, url String").await;
    let entry =
        |path: &str| format!("[[tables]]\nname = \"pages\"\npaths = {{ url = \"{path}\" }}\n");
    let file = ConfigFile::new(&entry("page.url"));
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "pages"),
            ("CONFIG_FILE", &file.path()),
            ("SCHEMA_REFRESH_SECS", "1"),
        ],
    )
    .await;
    let send = |n: u32| {
        let address = app.address.clone();
        async move {
            let body = json!([{"n": n, "page": {"url": "old", "href": "new"}}]);
            reqwest::Client::new()
                .post(format!("{address}/v1/tables/pages"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(send(0).await, 200);
    // A path into a column the table lacks: refused, the settings in use stay.
    file.rewrite(&entry("page.href").replace("url = ", "missing = "));
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(send(1).await, 200);
    file.rewrite(&entry("page.href"));
    let mut n = 2;
    crate::helpers::within(crate::helpers::PATIENCE, async {
        loop {
            assert_eq!(send(n).await, 200);
            wait_for(&database, "pages", u64::from(n) + 1).await;
            let url = clickhouse(&format!(
                "SELECT url FROM `{database}`.pages WHERE n = {n} FORMAT TabSeparated"
            ))
            .await;
            if url.trim() == "new" {
                return;
            }
            n += 1;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
    .await;
    let before = clickhouse(&format!(
        "SELECT n, url FROM `{database}`.pages WHERE n < 2 ORDER BY n FORMAT TabSeparated"
    ))
    .await;
    assert_eq!(before, "0\told\n1\told\n");
    app.stop().await;
}

/// `Dynamic` and `Variant` columns: each value stored as the server's own `JSONEachRow`
/// insert of the same text stores it (the type the server infers for a `Dynamic`, the
/// member it picks for a `Variant`), compared row by row with that insert.
#[tokio::test]
async fn dynamic_and_variant_columns_store_what_the_servers_own_parse_stores() {
    if !modern_engine() {
        return; // 18.16 has neither type
    }
    let database = unique_database();
    let columns = "id UInt32, d Dynamic, v Variant(String, Int64, Array(Int64), Bool, Float64), \
                   w Variant(UInt8, Array(String), String), \
                   n Variant(Int64, Bool)";
    for table in ["picked", "picked_ref"] {
        table_with(&database, table, columns).await;
    }
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "picked")]).await;
    let values = [
        "null",
        "true",
        "false",
        "0",
        "1",
        "-5",
        "300",
        "18446744073709551615",
        "18446744073709551616",
        "1.5",
        "1e3",
        r#""x""#,
        r#""""#,
        r#""12""#,
        r#""1.5""#,
        r#""true""#,
        r#""x\"y\u00e9""#,
        r#""2024-01-02""#,
        r#""2024-01-02 03:04:05""#,
        r#""2024-01-02T03:04:05Z""#,
        r#""2024-01-02T03:04:05""#,
        r#""2024-01-02 03:04:05.123""#,
        r#""2024-01-02T03:04:05.5+05:30""#,
        r#""2200-01-01""#,
        "[1,2]",
        "[1, 2.5]",
        r#"[1,"a"]"#,
        "[]",
        "[null,1]",
        "[[1],[2,3]]",
        "[[],[1]]",
        "[true,false]",
        "[1,true]",
        "[-1,18446744073709551615]",
        r#"["2024-01-01","2024-01-01 00:00:00"]"#,
        r#"["x",null]"#,
        r#"{"a":1}"#,
        r#"{"b": 1, "a": {"c": "x"}}"#,
        "{}",
        r#"{"a":[1,2],"b":null}"#,
        r#"[{"b":1},{"a":2}]"#,
        "[{}]",
        "[null,{}]",
        r#"[{},"x"]"#,
        r#"[null,{},"x"]"#,
        r#"[{},{"a":1}]"#,
        r#"{"a":{},"b":null}"#,
        r#"[{"a":null},{"a":{}}]"#,
        r#"["2024-01-02",true]"#,
        r#"[[],[true,null,"2024-01-02 03:04:05.25"],""]"#,
        r#"{"a":[false,"2200-01-01",null]}"#,
        r#"["2024-01-02",null,{}]"#,
    ];
    let texts: Vec<String> = (values.iter().enumerate())
        .map(|(i, v)| format!(r#"{{"id": {i}, "d": {v}, "v": {v}, "w": {v}}}"#))
        .collect();
    let answer = post_texts(&app, "picked", &texts).await;
    assert_eq!(answer["accepted"], values.len(), "{answer}");
    insert_as_the_server_reads(&database, "picked_ref", &texts).await;
    wait_for(&database, "picked", values.len() as u64).await;
    let columns = "id, d, dynamicType(d), v, variantType(v), w, variantType(w)";
    read_as_the_server_reads(&database, columns, "picked", values.len()).await;
    // A value none of a variant's types reads: refused by field (the server would refuse
    // the whole insert).
    let refused = post_texts(
        &app,
        "picked",
        &[r#"{"id": 100, "n": "text"}"#, r#"{"id": 101, "n": 7}"#],
    )
    .await;
    assert_eq!(refused["accepted"], 1, "{refused}");
    assert_eq!(refused["errors"][0]["field"], "n", "{refused}");
    app.stop().await;
}

/// `add_columns`: a top-level field without a column, whose name matches the pattern, gets
/// one typed by its first value, and the request's events are stored with it; a name that
/// does not match, an object, or a field past the cap is refused by field; a second change
/// within `SCHEMA_REFRESH_SECS` answers `503` with `Retry-After`.
#[tokio::test]
async fn fields_without_columns_get_them_within_the_pattern_and_the_cap() {
    let database = unique_database();
    table_with(&database, "open", "event String").await;
    table_with(&database, "roomy", "event String").await;
    let file = ConfigFile::new(
        "[[tables]]\nname = \"open\"\nadd_columns = { max = 6, pattern = \"^[a-z][a-z0-9_]*$\" }\n\
         [[tables]]\nname = \"roomy\"\nadd_columns = { max = 100, pattern = \"^[a-z]+$\" }\n",
    );
    let app = spawn_app_in(
        &database,
        &[
            ("INGEST_TABLES", "open,roomy"),
            ("CONFIG_FILE", &file.path()),
            ("SCHEMA_REFRESH_SECS", "3600"),
        ],
    )
    .await;
    let answer = post_texts(
        &app,
        "open",
        &[
            r#"{"event": "signup", "plan": "pro", "seats": 3, "ratio": 0.5, "trial": true, "tags": ["a", 1]}"#,
            r#"{"event": "signup", "plan": "free", "note": null}"#,
            r#"{"event": "bad", "Bad-Name": 1}"#,
            r#"{"event": "bad", "ctx": {"a": 1}}"#,
        ],
    )
    .await;
    assert_eq!(answer["accepted"], 2, "{answer}");
    assert_eq!(
        error_fields(&answer),
        [(2, "Bad-Name"), (3, "ctx")],
        "{answer}"
    );
    let types = |table: &str| {
        let query = format!(
            "SELECT name, type FROM system.columns WHERE database = '{database}' \
             AND table = '{table}' FORMAT TSV"
        );
        async move { clickhouse(&query).await }
    };
    let bool_type = match modern_engine() {
        true => "Nullable(Bool)",
        false => "Nullable(UInt8)",
    };
    assert_eq!(
        types("open").await,
        format!(
            "event\tString\nplan\tNullable(String)\nseats\tNullable(Int64)\n\
             ratio\tNullable(Float64)\ntrial\t{bool_type}\ntags\tArray(String)\n"
        )
    );
    wait_for(&database, "open", 2).await;
    let stored = clickhouse(&format!(
        "SELECT event, plan, seats, ratio, toUInt8(trial), tags FROM `{database}`.open \
         ORDER BY plan FORMAT TSV"
    ))
    .await;
    assert_eq!(
        stored,
        "signup\tfree\t\\N\t\\N\t\\N\t[]\nsignup\tpro\t3\t0.5\t1\t['a','1']\n"
    );
    // The table has add_columns.max columns now: a new field is refused by field.
    let capped = post_texts(&app, "open", &[r#"{"event": "late", "extra": "x"}"#]).await;
    assert_eq!(error_fields(&capped), [(0, "extra")], "{capped}");
    let message = capped["errors"][0]["error"].as_str().unwrap();
    assert!(message.contains("add_columns.max (6)"), "{message}");
    // One change per table per SCHEMA_REFRESH_SECS: the second waits, with Retry-After.
    let first = post_texts(&app, "roomy", &[r#"{"event": "a", "first": 1}"#]).await;
    assert_eq!(first["accepted"], 1, "{first}");
    let second = reqwest::Client::new()
        .post(format!("{}/v1/tables/roomy", app.address))
        .header("content-type", "application/json")
        .body(r#"[{"event": "b", "second": 2}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 503);
    let wait: u64 = second.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(wait > 3000, "{wait}");
    let reason = second.text().await.unwrap();
    assert!(reason.contains("second"), "{reason}");
    assert_eq!(
        types("roomy").await,
        "event\tString\nfirst\tNullable(Int64)\n"
    );
    app.stop().await;
}

/// `add_columns` in `disk` mode: events acknowledged with a field that got its column are in
/// the spool under the list that has it; after `kill -9` before any flush, the next start
/// replays them with the field.
#[tokio::test]
async fn events_that_got_a_column_survive_kill_9_before_their_flush() {
    let database = unique_database();
    table_with(&database, "open", "event String").await;
    let spool = crate::helpers::SpoolDir::new();
    let file = ConfigFile::new(
        "[[tables]]\nname = \"open\"\nadd_columns = { max = 10, pattern = \"^[a-z]+$\" }\n",
    );
    let config = file.path();
    let env = [
        ("INGEST_TABLES", "open"),
        ("CONFIG_FILE", config.as_str()),
        ("DURABILITY", "disk"),
        ("SPOOL_DIR", spool.path()),
        // No flush before the kill.
        ("BUFFER_FLUSH_MS", "600000"),
        ("BUFFER_MIN_INTERVAL_MS", "600000"),
    ];
    let (child, address) = crate::process::start_binary(&database, &env).await;
    let answer: Value = reqwest::Client::new()
        .post(format!("{address}/v1/tables/open"))
        .json(&json!([{"event": "a", "plan": "pro"}, {"event": "b", "plan": "free"}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["accepted"], 2, "{answer}");
    crate::process::signal(&child, "KILL");
    let mut child = child;
    crate::helpers::within(crate::helpers::PATIENCE, child.wait())
        .await
        .unwrap();
    let stored = clickhouse(&format!("SELECT count() FROM `{database}`.open")).await;
    assert_eq!(stored.trim(), "0", "nothing was flushed before the kill");
    let (child, _) = crate::process::start_binary(&database, &env).await;
    wait_for(&database, "open", 2).await;
    let rows = clickhouse(&format!(
        "SELECT event, plan FROM `{database}`.open ORDER BY event FORMAT TSV"
    ))
    .await;
    assert_eq!(rows, "a\tpro\nb\tfree\n");
    let (status, log) = crate::process::stop_with(child, "TERM").await;
    assert!(status.success(), "{log}");
    crate::helpers::drop_database(&database).await;
}

/// Values drawn from a fixed seed: scalars at the edges the inference cares about, arrays
/// and objects nested up to three deep (objects inside arrays left out: where their fields'
/// types conflict the server's own insert fails or drops fields, see docs/tables.md).
fn drawn_values(n: usize) -> Vec<String> {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0i64, -5, 255, 256, -129, 2_147_483_648, i64::MAX])
            .prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, 1 << 63]).prop_map(Value::from),
        prop::sample::select(vec![1.5f64, -0.25, 1e10, 3.0]).prop_map(Value::from),
        prop::sample::select(vec![
            "x",
            "",
            "12",
            "-3",
            "1.5",
            "true",
            "null",
            "2024-01-02",
            "2024-01-02 03:04:05",
            "2024-01-02T03:04:05Z",
            "2024-01-02 03:04:05.25",
            "1970-01-01",
            "2200-01-01",
            "é",
            "[1]",
            "{}",
        ])
        .prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(String::from),
                inner,
                0..4,
            )
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    });
    fn object_in_array(value: &Value) -> bool {
        match value {
            Value::Array(items) => items
                .iter()
                .any(|item| item.is_object() || object_in_array(item)),
            Value::Object(fields) => fields.values().any(object_in_array),
            _ => false,
        }
    }
    let mut runner = TestRunner::deterministic();
    let mut drawn = Vec::new();
    while drawn.len() < n {
        let value = value.new_tree(&mut runner).unwrap().current();
        if !object_in_array(&value) {
            drawn.push(value.to_string());
        }
    }
    drawn
}

/// The comparison of `dynamic_and_variant_columns_store_what_the_servers_own_parse_stores`
/// over 300 values drawn from a fixed seed.
#[tokio::test]
async fn drawn_values_in_dynamic_and_variant_columns_store_what_the_server_stores() {
    if !modern_engine() {
        return; // 18.16 has neither type
    }
    let database = unique_database();
    let columns =
        "id UInt32, d Dynamic, v Variant(String, Int64, Array(Int64), Bool, Array(String))";
    for table in ["drawn", "drawn_ref"] {
        table_with(&database, table, columns).await;
    }
    let app = spawn_app_in(&database, &[("INGEST_TABLES", "drawn")]).await;
    let values = drawn_values(300);
    let texts: Vec<String> = (values.iter().enumerate())
        .map(|(i, v)| format!(r#"{{"id": {i}, "d": {v}, "v": {v}}}"#))
        .collect();
    let answer = post_texts(&app, "drawn", &texts).await;
    assert_eq!(answer["accepted"], values.len(), "{answer}");
    insert_as_the_server_reads(&database, "drawn_ref", &texts).await;
    wait_for(&database, "drawn", values.len() as u64).await;
    let columns = "id, d, dynamicType(d), v, variantType(v)";
    read_as_the_server_reads(&database, columns, "drawn", values.len()).await;
    app.stop().await;
}
