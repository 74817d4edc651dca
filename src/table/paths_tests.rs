//! A table's settings without a server: nested fields into columns by path, the rest kept
//! as JSON text or a `Map`, the `User-Agent` columns, and the settings a table's columns
//! cannot take. Every body is read both ways (one pass, field by field) with one result.

use serde_json::{Value as Json, json};

use super::*;
use crate::table::event::{DecodeError, Format};

fn facts(user_agent: Option<&str>) -> RequestFacts<'_> {
    RequestFacts {
        user_agent,
        server_time_nanos: 1_606_867_200_000_000_000,
        ip: "::ffff:10.1.2.3".parse().unwrap(),
        sent_at: None,
    }
}

fn shaped(columns: &[(&str, &str)], settings: &TableSettings) -> Result<TableSchema, String> {
    let infos: Vec<ColumnInfo> = columns
        .iter()
        .map(|(n, t)| ColumnInfo::plain(n, t))
        .collect();
    let schema = TableSchema::new("db.t", &infos, "server_time", "ip").unwrap();
    schema.with_settings(settings).map_err(|e| e.to_string())
}

fn paths(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(c, p)| (c.to_string(), p.to_string()))
        .collect()
}

/// `body` read both ways, which must agree: the rows as JSON, and the errors.
fn read(schema: &TableSchema, body: &str, user_agent: Option<&str>) -> (Vec<Json>, Vec<String>) {
    let out = schema
        .validate_body(
            body.as_bytes(),
            Format::Json,
            1000,
            facts(user_agent),
            &[],
            |_| Ok::<_, DecodeError>(None),
        )
        .unwrap();
    let objects = json::decode(body.as_bytes(), Format::Json, 1000).unwrap();
    let slow = schema.validate(objects.events, facts(user_agent), &[]);
    assert_eq!(out.rows.data(), slow.rows.data(), "both readings, {body}");
    assert_eq!(out.errors, slow.errors, "both readings, {body}");
    assert_eq!(out.unknown_fields, slow.unknown_fields);
    let rows = (0..out.rows.len())
        .map(|i| schema.decode_row(out.rows.row(i)).unwrap())
        .collect();
    let errors = out
        .errors
        .iter()
        .map(|e| format!("{} {}: {}", e.index, e.field, e.error))
        .collect();
    (rows, errors)
}

const PURCHASE: &str = r#"[{"event": "purchase",
    "context": {"page": {"url": "https://shop.example/p/1", "title": "Shoes"},
                "campaign": {"name": "winter", "source": "mail"}},
    "properties": {"sku": "S-1", "price": 12.5, "coupon": null},
    "items": [{"id": "i-1", "n": 2}, {"id": "i-2"}],
    "sku": "top-level, not the path's"}]"#;

fn shop(rest_type: &str) -> TableSchema {
    shaped(
        &[
            ("event", "String"),
            ("page_url", "String"),
            ("sku", "String"),
            ("price", "Float64"),
            ("first_item", "String"),
            ("properties", rest_type),
        ],
        &TableSettings {
            paths: paths(&[
                ("page_url", "context.page.url"),
                ("sku", "properties.sku"),
                ("price", "properties.price"),
                ("first_item", "items[0].id"),
            ]),
            rest: Some("properties".into()),
            ..TableSettings::default()
        },
    )
    .unwrap()
}

#[test]
fn nested_fields_fill_their_columns_and_the_rest_is_kept_as_json_text() {
    let (rows, errors) = read(&shop("String"), PURCHASE, None);
    assert_eq!(errors, Vec::<String>::new());
    let row = &rows[0];
    assert_eq!(row["event"], "purchase");
    assert_eq!(row["page_url"], "https://shop.example/p/1");
    assert_eq!(row["sku"], "S-1");
    assert_eq!(row["price"], 12.5);
    assert_eq!(row["first_item"], "i-1");
    let rest: Json = serde_json::from_str(row["properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        rest,
        json!({
            "context": {"page": {"title": "Shoes"}, "campaign": {"name": "winter", "source": "mail"}},
            "properties": {"coupon": null},
            "items": [{"id": "i-1", "n": 2}, {"id": "i-2"}],
            "sku": "top-level, not the path's"
        })
    );
}

#[test]
fn the_rest_as_a_map_has_dotted_keys_and_values_as_their_json_text() {
    let (rows, errors) = read(&shop("Map(String, String)"), PURCHASE, None);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        rows[0]["properties"],
        json!({
            "context.page.title": "Shoes",
            "context.campaign.name": "winter",
            "context.campaign.source": "mail",
            "properties.coupon": "null",
            "items": r#"[{"id": "i-1", "n": 2}, {"id": "i-2"}]"#,
            "sku": "top-level, not the path's"
        })
    );
}

#[test]
fn a_bad_value_at_a_path_is_an_error_named_by_the_path_and_other_events_are_kept() {
    let body = r#"[{"context": {"page": {"url": {"x": 1}}}, "properties": {"price": "x"}},
                   {"context": {"page": {"url": "u"}}, "properties": {"price": 1.25}},
                   {"context": "not an object", "properties": {"sku": "a", "sku": "b"}}]"#;
    let (rows, errors) = read(&shop("String"), body, None);
    assert_eq!(
        errors,
        vec![
            "0 context.page.url: expected a string, got an object",
            "0 properties.price: expected a number, got a string",
            "2 properties.sku: duplicate field `properties.sku`",
        ]
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0]["page_url"].as_str(), rows[0]["price"].as_f64()),
        (Some("u"), Some(1.25))
    );
}

#[test]
fn a_value_of_another_kind_than_the_paths_expect_is_kept_in_the_rest() {
    let body = r#"[{"context": "plain", "items": {"id": 1}, "properties": [1, 2]}]"#;
    let (rows, errors) = read(&shop("String"), body, None);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(rows[0]["page_url"], "");
    let rest: Json = serde_json::from_str(rows[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        rest,
        json!({"context": "plain", "items": {"id": 1}, "properties": [1, 2]})
    );
}

#[test]
fn without_a_rest_column_fields_no_path_takes_are_counted_as_unknown() {
    let schema = shaped(
        &[("url", "String"), ("n", "UInt8")],
        &TableSettings {
            paths: paths(&[("url", "page.url")]),
            ..TableSettings::default()
        },
    )
    .unwrap();
    let (rows, _) = read(
        &schema,
        r#"[{"page": {"url": "u", "x": 1}, "n": 3, "zz": 1}]"#,
        None,
    );
    assert_eq!(rows[0], json!({"url": "u", "n": 3}));
}

#[test]
fn the_user_agent_and_what_it_says_fill_their_columns() {
    let schema = shaped(
        &[
            ("n", "UInt8"),
            ("ua", "String"),
            ("browser", "LowCardinality(String)"),
            ("os", "String"),
            ("device", "Nullable(String)"),
        ],
        &TableSettings {
            user_agent: Some("ua".into()),
            browser: Some("browser".into()),
            os: Some("os".into()),
            device: Some("device".into()),
            ..TableSettings::default()
        },
    )
    .unwrap();
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                  Gecko) Chrome/120.0.0.0 Safari/537.36";
    // A client's own field of the same name does not replace the header's.
    let (rows, _) = read(
        &schema,
        r#"[{"n": 1, "browser": "mine"}, {"n": 2}]"#,
        Some(chrome),
    );
    for row in &rows {
        assert_eq!(row["ua"], chrome);
        assert_eq!(
            (&row["browser"], &row["os"], &row["device"]),
            (&json!("Chrome"), &json!("Windows 10"), &json!("pc"))
        );
    }
    let (rows, _) = read(&schema, r#"[{"n": 1}]"#, None);
    assert_eq!(
        rows[0],
        json!({"n": 1, "ua": "", "browser": "", "os": "", "device": null})
    );
}

#[test]
fn settings_a_table_cannot_take_name_the_setting_and_the_column() {
    let columns = [("n", "UInt8"), ("s", "String"), ("at", "DateTime")];
    let fails = |settings: TableSettings| shaped(&columns, &settings).unwrap_err();
    assert_eq!(
        fails(TableSettings {
            paths: paths(&[("missing", "a.b")]),
            ..TableSettings::default()
        }),
        "table db.t: setting paths.missing: the table has no column missing"
    );
    assert_eq!(
        fails(TableSettings {
            rest: Some("n".into()),
            ..TableSettings::default()
        }),
        "table db.t: setting rest: column n is UInt8: the rest is kept in a String (JSON text), \
         a Map(String, String) or a JSON column"
    );
    assert_eq!(
        fails(TableSettings {
            browser: Some("at".into()),
            ..TableSettings::default()
        }),
        "table db.t: setting browser: column at is DateTime: it takes text (String, \
         LowCardinality(String) or Nullable(String))"
    );
    assert!(
        fails(TableSettings {
            paths: paths(&[("s", "n.x")]),
            ..TableSettings::default()
        })
        .contains("starts at field n, which fills column n")
    );
    assert!(
        fails(TableSettings {
            paths: paths(&[("s", "a.b"), ("n", "a.b.c")]),
            ..TableSettings::default()
        })
        .contains("goes inside a field another path already fills")
    );
    assert!(
        fails(TableSettings {
            paths: paths(&[("s", "a[x]")]),
            ..TableSettings::default()
        })
        .contains("field names joined by dots")
    );
}

#[test]
fn a_body_the_one_pass_gives_way_on_is_read_the_same_field_by_field() {
    // `1.0` in an integer column: the one pass leaves the body to the field-by-field reading.
    let schema = shaped(
        &[("n", "UInt8"), ("deep", "UInt8"), ("rest", "String")],
        &TableSettings {
            paths: paths(&[("deep", "a.b")]),
            rest: Some("rest".into()),
            ..TableSettings::default()
        },
    )
    .unwrap();
    let (rows, errors) = read(
        &schema,
        r#"[{"n": 1.0, "a": {"b": 2.0, "c": "é\n"}}]"#,
        None,
    );
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(rows[0]["deep"], 2);
    assert_eq!(rows[0]["rest"], r#"{"a":{"c":"é\n"}}"#);
}

#[test]
fn the_tables_json_schema_shows_nested_fields_where_their_paths_lead() {
    let schema = json_schema(&shop("String"));
    let properties = &schema["properties"];
    assert_eq!(properties["event"]["type"], "string");
    let url = &properties["context"]["properties"]["page"]["properties"]["url"];
    assert_eq!(url["type"], "string", "{schema}");
    assert!(url["description"].as_str().unwrap().contains("page_url"));
    assert_eq!(
        properties["properties"]["properties"]["price"]["type"],
        "number"
    );
    assert_eq!(properties["items"]["type"], "array", "{schema}");
    assert_eq!(
        properties["items"]["items"]["properties"]["id"]["type"],
        "string"
    );
    // Filled by paths, not by top-level fields of their names.
    assert!(properties.get("page_url").is_none() && properties.get("sku").is_none());
    assert!(
        schema["description"]
            .as_str()
            .unwrap()
            .contains("properties")
    );
}
