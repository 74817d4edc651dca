//! The schema-driven encoder without a server: per type bytes and errors, defaults,
//! server-filled columns, and a property test of random schemas × random JSON. The
//! server's view (every type read back) is in `tests/api/tables.rs`.

use std::net::Ipv6Addr;

use proptest::prelude::*;

use super::*;
use crate::format::{BlockBuilder, Cells, Schema, SortKey};
use crate::table::event::{DecodeError, Format};

/// The plain scan's reading of a body, as `one_pass` tries it first.
fn scanned(
    schema: &TableSchema,
    events: pass::Events<'_>,
    max: usize,
    facts: &RequestFacts<'_>,
    tag: &[u8],
) -> Option<TableValidated> {
    schema.pass(events, max, facts, tag)?.scan(events)
}

/// serde_json's reading of a body, as `one_pass` falls back to it.
fn serde_read(
    schema: &TableSchema,
    events: pass::Events<'_>,
    max: usize,
    facts: &RequestFacts<'_>,
    tag: &[u8],
) -> Result<Option<TableValidated>, DecodeError> {
    schema
        .pass(events, max, facts, tag)
        .map_or(Ok(None), |p| p.read(events))
}

fn facts() -> RequestFacts<'static> {
    RequestFacts {
        user_agent: None,
        server_time_nanos: 1_606_867_200_000_000_000,
        ip: "::ffff:10.1.2.3".parse().unwrap(),
        sent_at: None,
    }
}

fn schema(columns: &[(&str, &str)]) -> TableSchema {
    let infos: Vec<ColumnInfo> = columns
        .iter()
        .map(|(n, t)| ColumnInfo::plain(n, t))
        .collect();
    TableSchema::new("db.t", &infos, "server_time", "ip").unwrap()
}

/// `body` through the request path (one pass where it can), checked against the
/// field-by-field reading: the same rows, rejections and errors.
fn run(schema: &TableSchema, body: &str) -> TableValidated {
    let out = schema
        .validate_body(body.as_bytes(), Format::Json, 1000, facts(), &[], |_| {
            Ok::<_, DecodeError>(None)
        })
        .unwrap();
    let objects = json::decode(body.as_bytes(), Format::Json, 1000).unwrap();
    assert_same(&out, &schema.validate(objects.events, facts(), &[]));
    out
}

fn assert_same(a: &TableValidated, b: &TableValidated) {
    assert_eq!(a.rows.data(), b.rows.data());
    assert_eq!(a.rows.len(), b.rows.len());
    assert_eq!(a.rejected, b.rejected);
    assert_eq!(a.errors, b.errors);
    assert_eq!(a.unknown_fields, b.unknown_fields);
    assert_eq!(a.reasons, b.reasons);
    assert_eq!(a.wanted, b.wanted);
}

/// The single column's RowBinary for `value`, or its error.
fn one(type_name: &str, value: &str) -> Result<Vec<u8>, String> {
    let s = schema(&[("c", type_name)]);
    let out = run(&s, &format!(r#"{{"c": {value}}}"#));
    match out.errors.first() {
        Some(e) => Err(e.error.to_string()),
        None => {
            assert_eq!(out.rows.len(), 1);
            Ok(out.rows.row(0).to_vec())
        }
    }
}

#[test]
fn the_issues_error_messages_are_given_verbatim() {
    assert_eq!(one("UInt8", "256"), Err("out of range for UInt8".into()));
    assert_eq!(one("IPv4", r#""1.2.3""#), Err("not an IPv4 address".into()));
    assert_eq!(
        one("Enum8('a' = 1, 'b' = 2)", r#""c""#),
        Err("not one of the enum's values: a, b".into())
    );
    assert_eq!(
        one("Decimal(18, 4)", "123456789012345.6789"),
        Err("more than 18 digits for Decimal(18, 4)".into())
    );
    assert_eq!(
        one("FixedString(3)", r#""abcd""#),
        Err("exceeds FixedString(3)".into())
    );
}

#[test]
fn each_type_encodes_as_rowbinary() {
    let le = |n: i64, w: usize| n.to_le_bytes()[..w].to_vec();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        ("Int8", "-1", vec![0xff]),
        ("UInt16", r#""65535""#, vec![0xff, 0xff]),
        (
            "Int64",
            "-9223372036854775808",
            i64::MIN.to_le_bytes().to_vec(),
        ),
        (
            "UInt64",
            "18446744073709551615",
            u64::MAX.to_le_bytes().to_vec(),
        ),
        ("Int128", r#""-2""#, (-2i128).to_le_bytes().to_vec()),
        ("UInt256", "1", {
            let mut v = vec![0; 32];
            v[0] = 1;
            v
        }),
        ("Float32", "1.5", 1.5f32.to_le_bytes().to_vec()),
        ("Float64", "-0.25", (-0.25f64).to_le_bytes().to_vec()),
        ("Decimal(9, 2)", "12.5", le(1250, 4)),
        ("Decimal(18, 4)", r#""-0.0001""#, le(-1, 8)),
        (
            "Decimal(38, 10)",
            "1",
            (10_000_000_000i128).to_le_bytes().to_vec(),
        ),
        ("Bool", "true", vec![1]),
        ("String", r#""é""#, vec![2, 0xc3, 0xa9]),
        ("String", "42", vec![2, b'4', b'2']),
        ("FixedString(3)", r#""ab""#, vec![b'a', b'b', 0]),
        ("Date", r#""1970-01-03""#, vec![2, 0]),
        ("Date32", r#""1969-12-31""#, le(-1, 4)),
        ("DateTime", r#""2020-12-01 23:59:00""#, le(1_606_867_140, 4)),
        ("DateTime('UTC')", "1606867140000", le(1_606_867_140, 4)),
        // Without an offset: the column zone's wall-clock time (Berlin: +01:00 in winter).
        (
            "DateTime('Europe/Berlin')",
            r#""2020-12-01 12:00:00""#,
            le(1_606_820_400, 4),
        ),
        (
            "DateTime('Europe/Berlin')",
            r#""2020-12-01T12:00:00Z""#,
            le(1_606_824_000, 4),
        ),
        (
            "DateTime64(3, 'Europe/Berlin')",
            r#""2020-07-01 12:00:00.250""#,
            le(1_593_597_600_250, 8),
        ),
        (
            "DateTime64(3)",
            r#""2020-12-01T23:59:00.123Z""#,
            le(1_606_867_140_123, 8),
        ),
        ("DateTime64(6, 'UTC')", "1.5", le(1_500_000, 8)),
        (
            "IPv4",
            r#""1.2.3.4""#,
            0x0102_0304u32.to_le_bytes().to_vec(),
        ),
        (
            "IPv6",
            r#""1.2.3.4""#,
            "::ffff:1.2.3.4"
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        ),
        ("Enum8('a' = 1, 'b' = -2)", r#""b""#, vec![0xfe]),
        ("Enum16('a' = 1000)", "1000", 1000i16.to_le_bytes().to_vec()),
        ("LowCardinality(String)", r#""x""#, vec![1, b'x']),
        ("Nullable(UInt8)", "null", vec![1]),
        ("Nullable(UInt8)", "7", vec![0, 7]),
        ("LowCardinality(Nullable(String))", "null", vec![1]),
        ("Array(UInt8)", "[1, 2]", vec![2, 1, 2]),
        (
            "Array(Nullable(String))",
            r#"["a", null]"#,
            vec![2, 0, 1, b'a', 1],
        ),
        ("Array(Array(UInt8))", "[[], [3]]", vec![2, 0, 1, 3]),
        ("Map(String, UInt8)", r#"{"k": 1}"#, vec![1, 1, b'k', 1]),
        ("Tuple(UInt8, String)", r#"[1, "x"]"#, vec![1, 1, b'x']),
        (
            "Tuple(a UInt8, b String)",
            r#"{"b": "x"}"#,
            vec![0, 1, b'x'],
        ),
        // A missing element takes its type's default: an Enum's smallest value.
        (
            "Tuple(a Enum8('x' = 5, 'y' = 3), b UInt8)",
            r#"{"b": 1}"#,
            vec![3, 1],
        ),
    ];
    for (ty, value, bytes) in cases {
        assert_eq!(one(ty, value), Ok(bytes), "{ty} {value}");
    }
    let uuid = one("UUID", r#""00112233-4455-6677-8899-aabbccddeeff""#).unwrap();
    assert_eq!(uuid[..8], 0x0011_2233_4455_6677u64.to_le_bytes());
}

#[test]
fn bad_values_name_what_is_wrong() {
    let cases = [
        ("Int8", "1.5", "expected an integer"),
        ("UInt32", r#""x""#, "expected an integer, got a string"),
        ("Int256", "[1]", "expected an integer, got an array"),
        ("Float32", "1e39", "out of range for Float32"),
        (
            "Decimal(9, 2)",
            "1.001",
            "more than 2 digits after the point for Decimal(9, 2)",
        ),
        ("Bool", r#""yes""#, "expected true or false, got a string"),
        ("UUID", r#""nope""#, "not a UUID"),
        ("Date", r#""2200-01-01""#, "out of range for Date"),
        (
            "DateTime",
            r#""1969-12-31 23:59:59""#,
            "out of range for DateTime",
        ),
        ("DateTime", r#""tomorrow""#, time::EXPECTED),
        (
            "DateTime64(3)",
            "-62167219200001",
            "out of range for DateTime64(3)",
        ),
        ("IPv6", r#""x::y""#, "not an IPv6 address"),
        ("Enum16('a' = 1)", "2", "not one of the enum's values: a"),
        (
            "Array(UInt8)",
            "[1, 300]",
            "element 1: out of range for UInt8",
        ),
        (
            "Array(UInt8)",
            "[null]",
            "element 0: null where a value is required",
        ),
        (
            "Map(String, UInt8)",
            r#"{"k": -1}"#,
            "value of k: out of range for UInt8",
        ),
        ("Tuple(UInt8, UInt8)", "[1]", "expected 2 elements, got 1"),
        ("String", "{}", "expected a string, got an object"),
    ];
    for (ty, value, error) in cases {
        assert_eq!(one(ty, value), Err(error.to_string()), "{ty} {value}");
    }
}

#[test]
fn a_datetime_given_as_a_number_with_a_fraction_is_refused_not_cut() {
    assert_eq!(
        one("DateTime", "1.5"),
        Err("a fraction of a second, which DateTime does not keep".into())
    );
    assert_eq!(one("DateTime", "2.0"), Ok(2u32.to_le_bytes().to_vec()));
    // A time with a fraction keeps it where the type does.
    assert_eq!(
        one("DateTime64(3)", "1.5"),
        Ok(1500i64.to_le_bytes().to_vec())
    );
}

#[test]
fn dates_past_what_an_old_server_shows_are_refused_by_field() {
    let old = |ty: &str, value: &str| {
        let s = schema(&[("c", ty)]).with_time_range(TimeRange::UNTIL_2106);
        let out = run(&s, &format!(r#"{{"c": {value}}}"#));
        match out.errors.first() {
            Some(e) => Err(e.error.to_string()),
            None => Ok(out.rows.row(0).to_vec()),
        }
    };
    // The last day and second 18.16 shows, then the first it shows as 1970-01-01.
    assert_eq!(
        old("Date", r#""2106-02-07""#),
        Ok(49_710u16.to_le_bytes().to_vec())
    );
    assert_eq!(
        old("Date", r#""2106-02-08""#),
        Err(
            "out of range for Date on this server, which shows a day after 2106-02-07 as \
             1970-01-01"
                .into()
        )
    );
    let last = 49_710u32 * 86_400 - 1;
    assert_eq!(
        old("DateTime", r#""2106-02-06 23:59:59""#),
        Ok(last.to_le_bytes().to_vec())
    );
    assert_eq!(
        old("Nullable(DateTime)", "4294944000"),
        Err(
            "out of range for DateTime on this server, which shows a time from 2106-02-07 \
             as 1970-01-01"
                .into()
        )
    );
    assert_eq!(
        old("Array(Date)", r#"["2149-06-06"]"#),
        Err(
            "element 0: out of range for Date on this server, which shows a day after \
             2106-02-07 as 1970-01-01"
                .into()
        )
    );
    // Every server takes them where the types hold them.
    assert_eq!(
        one("Date", r#""2149-06-06""#),
        Ok(65_535u16.to_le_bytes().to_vec())
    );
    assert_eq!(
        one("DateTime", "4294944000"),
        Ok(4_294_944_000u32.to_le_bytes().to_vec())
    );
}

#[test]
fn one_bad_field_rejects_its_event_only_and_every_bad_field_is_listed() {
    let s = schema(&[("a", "UInt8"), ("b", "String"), ("c", "IPv4")]);
    let out = run(
        &s,
        r#"[{"a": 1, "b": "x"}, {"a": 999, "b": 5, "c": "no"}, {"a": 2, "zzz": 1}]"#,
    );
    assert_eq!((out.rows.len(), out.rejected), (2, 1));
    let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_ref()).collect();
    assert_eq!(fields, ["a", "c"]);
    assert!(out.errors.iter().all(|e| e.index == 1));
    assert_eq!(out.unknown_fields, 1);
    let dup = run(&s, r#"{"a": 1, "a": 2}"#);
    assert_eq!(dup.errors[0].error, "duplicate field `a`");
}

#[test]
fn missing_and_null_fields_take_defaults_and_derived_columns_are_left_out() {
    let infos = vec![
        ColumnInfo::plain("n", "UInt32"),
        ColumnInfo::plain("maybe", "Nullable(String)"),
        ColumnInfo {
            default_kind: "DEFAULT".into(),
            default_expression: "'web'".into(),
            ..ColumnInfo::plain("source", "String")
        },
        ColumnInfo {
            default_kind: "DEFAULT".into(),
            default_expression: "now()".into(),
            ..ColumnInfo::plain("at", "DateTime")
        },
        ColumnInfo {
            default_kind: "MATERIALIZED".into(),
            default_expression: "n * 2".into(),
            ..ColumnInfo::plain("double", "UInt64")
        },
        ColumnInfo {
            default_kind: "DEFAULT".into(),
            default_expression: "42".into(),
            ..ColumnInfo::plain("blob", "AggregateFunction(sum, UInt64)")
        },
    ];
    let s = TableSchema::new("db.t", &infos, "server_time", "ip").unwrap();
    let names: Vec<&str> = s.columns().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["n", "maybe", "source", "at"]);
    let out = run(&s, r#"{"n": null}"#);
    let mut expected = vec![0, 0, 0, 0, 1, 3, b'w', b'e', b'b'];
    expected.extend_from_slice(&1_606_867_200u32.to_le_bytes());
    assert_eq!(out.rows.row(0), expected);
}

#[test]
fn unsupported_types_are_refused_naming_table_column_and_type() {
    let infos = [
        ColumnInfo::plain("a", "UInt8"),
        ColumnInfo::plain("v", "AggregateFunction(sum, UInt64)"),
    ];
    let err = TableSchema::new("db.t", &infos, "server_time", "ip").unwrap_err();
    assert_eq!(
        err,
        SchemaError::Unsupported {
            table: "db.t".into(),
            column: "v".into(),
            type_name: "AggregateFunction(sum, UInt64)".into()
        }
    );
    let text = err.to_string();
    assert!(text.contains("db.t") && text.contains(" v ") && text.contains("AggregateFunction"));
}

#[test]
fn server_filled_columns_ignore_the_client() {
    let s = schema(&[
        ("server_time", "DateTime64(3)"),
        ("ip", "IPv4"),
        ("client_time", "DateTime"),
        ("client_time_corrected", "DateTime"),
    ]);
    let event = r#"{"server_time": 1, "ip": "9.9.9.9", "client_time": "2020-12-01 23:58:00", "client_time_corrected": 5}"#;
    // Sent one minute after the event, by a clock ten minutes behind: corrected to the
    // server's time minus that minute. The same in each body shape, `sent_at` from the
    // header or the envelope.
    let enveloped = format!(r#"{{"sent_at": "2020-12-01 23:59:00", "events": [{event}]}}"#);
    for (body, format) in [
        (event.to_string(), Format::Json),
        (format!("[{event}]"), Format::Json),
        (format!("{event}\n{event}\n"), Format::Ndjson),
        (enveloped, Format::Json),
    ] {
        let out = s
            .validate_body(body.as_bytes(), format, 10, facts(), &[], |envelope| {
                Ok::<_, DecodeError>(match envelope {
                    Some(crate::table::event::Loose::Str(t)) => {
                        crate::table::event::parse_time(&t).ok()
                    }
                    _ => Some(1_606_867_140),
                })
            })
            .unwrap();
        let objects = json::decode(body.as_bytes(), format, 10).unwrap();
        let f = RequestFacts {
            user_agent: None,
            sent_at: Some(1_606_867_140),
            ..facts()
        };
        assert_same(&out, &s.validate(objects.events, f, &[]));
        let row = out.rows.row(0);
        assert_eq!(row[..8], 1_606_867_200_000i64.to_le_bytes());
        assert_eq!(row[8..12], 0x0a01_0203u32.to_le_bytes());
        assert_eq!(row[12..16], 1_606_867_080u32.to_le_bytes());
        assert_eq!(row[16..20], 1_606_867_140u32.to_le_bytes());
    }
}

/// Types the property test draws from.
fn type_names() -> impl Strategy<Value = String> {
    let leaf = prop::sample::select(vec![
        "UInt8",
        "Int16",
        "UInt64",
        "Int128",
        "UInt256",
        "Float32",
        "Float64",
        "Decimal(9, 2)",
        "Decimal(38, 5)",
        "Decimal(76, 10)",
        "Bool",
        "String",
        "FixedString(4)",
        "UUID",
        "Date",
        "Date32",
        "DateTime",
        "DateTime64(3)",
        "IPv4",
        "IPv6",
        "Enum8('a' = 1, 'b' = 2)",
        "Nullable(Int32)",
        "LowCardinality(String)",
        "LowCardinality(Nullable(String))",
    ])
    .prop_map(str::to_string);
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| format!("Array({t})")),
            inner.clone().prop_map(|t| format!("Map(String, {t})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("Tuple({a}, {b})")),
        ]
    })
}

/// JSON values of every kind, nested a little.
fn json_values() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        1 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        10 => integral_values(),
    ]
}

/// JSON values without a fraction or exponent: the bodies the one pass reads whole.
fn integral_values() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (0u64..300).prop_map(serde_json::Value::from),
        "[a-z0-9 .:-]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("2020-12-01 23:59:00")),
        Just(serde_json::Value::from("2020-12-01T23:59:00+02:00")),
        Just(serde_json::Value::from("1850-01-01 00:00:00")),
        Just(serde_json::Value::from("\u{e9}\"\\ \n\u{1F600}")),
        Just(serde_json::Value::from("2020-12-01 23:59:00.5")),
        Just(serde_json::Value::from("::1")),
        Just(serde_json::Value::from("a")),
        Just(serde_json::Value::from(
            "00112233-4455-6677-8899-aabbccddeeff"
        )),
        Just(serde_json::Value::from("-12345678901234567890.12345")),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-c]", inner, 0..3)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Random schemas × random JSON: never a panic; every event is accepted or rejected,
    /// the accepted rows cut into exactly the schema's cells and build a block, and each
    /// accepted row read back as JSON encodes to the same bytes.
    #[test]
    fn random_schemas_and_values_never_panic_and_accepted_rows_build(
        types in prop::collection::vec(type_names(), 1..5),
        events in prop::collection::vec(prop::collection::vec(json_values(), 5), 1..6),
    ) {
        let columns: Vec<(String, String)> = types
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("c{i}"), t.clone()))
            .collect();
        let infos: Vec<ColumnInfo> = columns.iter().map(|(n, t)| ColumnInfo::plain(n, t)).collect();
        let schema = TableSchema::new("db.t", &infos, "server_time", "ip").unwrap();
        let body: Vec<serde_json::Value> = events
            .iter()
            .map(|values| {
                serde_json::Value::Object(
                    columns
                        .iter()
                        .zip(values)
                        .map(|((n, _), v)| (n.clone(), v.clone()))
                        .collect(),
                )
            })
            .collect();
        let text = serde_json::to_string(&body).unwrap();
        let out = run(&schema, &text);
        prop_assert_eq!(out.rows.len() + out.rejected, events.len());
        let block_schema = Schema::new(&schema.column_list(), true).unwrap();
        let cells = Cells::split(&block_schema, out.rows.data(), out.rows.len());
        prop_assert!(cells.is_ok());
        prop_assert_eq!(cells.unwrap().rows(), out.rows.len());
        let builder = BlockBuilder::new(block_schema, SortKey::none());
        prop_assert!(builder.build(out.rows.data(), out.rows.len()).is_ok());
        // What was accepted round-trips: each row read back as JSON encodes to its bytes.
        for i in 0..out.rows.len() {
            let row = out.rows.row(i);
            let json = schema.decode_row(row);
            prop_assert!(json.is_some(), "row {} does not decode", i);
            let text = serde_json::to_string(&json.unwrap()).unwrap();
            let again = schema.validate(
                json::decode(text.as_bytes(), Format::Json, 1).unwrap().events,
                facts(),
                &[],
            );
            prop_assert_eq!(again.errors.len(), 0, "{} -> {:?}", text, again.errors);
            prop_assert_eq!(again.rows.row(0), row, "{}", text);
        }
    }
}

/// A table of columns `c0`, `c1`, ... of `types`, and `server_time`; with its column list.
fn numbered(types: &[String]) -> (TableSchema, Vec<(String, String)>) {
    let mut columns: Vec<(String, String)> = types
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("c{i}"), t.clone()))
        .collect();
    columns.push(("server_time".into(), "DateTime".into()));
    let infos: Vec<ColumnInfo> = columns
        .iter()
        .map(|(n, t)| ColumnInfo::plain(n, t))
        .collect();
    let schema = TableSchema::new("db.t", &infos, "server_time", "ip").unwrap();
    (schema, columns)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// The one pass reads a body exactly as the field-by-field reading does (the same
    /// rows, rejections, errors and unknown fields), and reads it whole: it does not give
    /// way on bodies without fractions, unknown fields or duplicate keys included.
    #[test]
    fn the_one_pass_reads_bodies_as_the_field_by_field_reading_does(
        types in prop::collection::vec(type_names(), 1..6),
        events in prop::collection::vec(prop::collection::vec(integral_values(), 6), 1..6),
        unknown in any::<bool>(),
        duplicate in any::<bool>(),
    ) {
        let (schema, columns) = numbered(&types);
        let body: Vec<serde_json::Value> = events
            .iter()
            .map(|values| {
                let mut object: serde_json::Map<String, serde_json::Value> = columns
                    .iter()
                    .zip(values)
                    .map(|((n, _), v)| (n.clone(), v.clone()))
                    .collect();
                if unknown {
                    object.insert("zz_unknown".into(), values[0].clone());
                }
                serde_json::Value::Object(object)
            })
            .collect();
        let mut text = serde_json::to_string(&body).unwrap();
        if duplicate {
            text = text.replace(r#"{"c0":"#, r#"{"c0":1,"c0":"#);
        }
        let fast = schema
            .one_pass(pass::Events::Array(&text), 100, &facts(), &[])
            .unwrap();
        prop_assert!(fast.is_some(), "gave way on {}", text);
        // Without fractions, the plain scan reads these bodies itself.
        prop_assert!(
            scanned(&schema, pass::Events::Array(&text), 100, &facts(), &[]).is_some(),
            "the scan gave way on {}",
            text
        );
        let objects = json::decode(text.as_bytes(), Format::Json, 100).unwrap();
        assert_same(&fast.unwrap(), &schema.validate(objects.events, facts(), &[]));
    }
}

#[test]
fn with_server_defaults_a_missing_field_is_flagged_for_the_servers_expression() {
    let infos = vec![
        ColumnInfo::plain("n", "UInt32"),
        ColumnInfo {
            default_kind: "DEFAULT".into(),
            default_expression: "toDate(t)".into(),
            ..ColumnInfo::plain("d", "Date")
        },
        ColumnInfo::plain("s", "Nullable(String)"),
    ];
    let s = TableSchema::new("db.t", &infos, "server_time", "ip")
        .unwrap()
        .server_defaults();
    assert!(s.uses_server_defaults());
    let out = run(&s, r#"[{"n": 1}, {"n": 2, "d": "1970-01-03", "s": null}]"#);
    assert_eq!(out.rows.row(0), [0, 1, 0, 0, 0, 1, 0, 1]);
    assert_eq!(out.rows.row(1), [0, 2, 0, 0, 0, 0, 2, 0, 0, 1]);
    assert_eq!(
        s.decode_row(out.rows.row(0)),
        Some(serde_json::json!({"n": 1, "s": null}))
    );
    // Without a DEFAULT column there is nothing to flag: plain RowBinary.
    let plain = schema(&[("n", "UInt32")]).server_defaults();
    assert!(!plain.uses_server_defaults());
}

/// The events table as an instance of the generic path writes the RowBinary bytes the
/// hand-written `/v1/events` path wrote before it was removed (the committed fixture, made
/// by it), row for row: a spool written before the switch replays after it.
#[test]
fn the_events_tables_rows_are_the_bytes_of_the_fixture() {
    use crate::table::event::{Loose, parse_time};
    let body = r#"{"sent_at": "2020-12-02 00:00:30", "events": [
        {"client_time": "2020-12-01 23:59:00", "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C821E",
         "device_os": "IOS 13.5.1", "session": "ybuRi8mAUypxjbxQ", "sequence": 1,
         "event": "app_start", "param_int": 4294967295, "param_str": "some text"},
        {"param_str": "\u00e9\"\\ \ud83d\ude00", "event": "caf\u00e9", "sequence": 0,
         "session": "s", "device_os": "Android 14", "client_time": "2020-12-01T23:00:00+01:00",
         "device_id": "00112233-4455-6677-8899-aabbccddeeff", "extra": [1, {"a": 2}]},
        {"client_time": "1999-01-01 00:00:00", "device_id": "0287d9aa4adf4b37a60f3e9e645c821e",
         "device_os": "x", "session": "y", "sequence": 7, "event": "z", "param_int": null},
        {"client_time": "2020-12-01 23:59:00", "device_id": "nope", "device_os": "",
         "session": "y", "sequence": -1, "event": "z"}
    ]}"#;
    let table = TableSchema::events().unwrap();
    let server_time = ::time::OffsetDateTime::from_unix_timestamp(1_606_867_260).unwrap();
    let ip: Ipv6Addr = "::ffff:10.1.2.3".parse().unwrap();
    let sent_at = |loose: Option<Loose<'_>>| match loose {
        Some(Loose::Str(s)) => parse_time(&s).ok(),
        _ => None,
    };
    let facts = RequestFacts {
        user_agent: None,
        server_time_nanos: server_time.unix_timestamp_nanos(),
        ip,
        sent_at: None,
    };
    let generic = table
        .validate_body(body.as_bytes(), Format::Json, 100, facts, &[], |l| {
            Ok::<_, DecodeError>(sent_at(l))
        })
        .unwrap();
    assert_eq!(generic.rows.len(), 3);
    assert_eq!(generic.rejected, 1);
    let hex: String = generic
        .rows
        .data()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, include_str!("fixtures/events_rows.hex").trim());
}

#[test]
fn a_variant_with_a_member_read_by_the_servers_best_effort_parsers_is_refused() {
    for (ty, refused) in [
        ("Variant(String, Int64, Array(Float64), Bool)", false),
        ("Array(Variant(String, UInt8))", false),
        ("Dynamic", false),
        ("Variant(String, DateTime)", true),
        ("Variant(IPv4, String)", true),
    ] {
        let infos = [ColumnInfo::plain("v", ty)];
        let result = TableSchema::new("db.t", &infos, "server_time", "ip");
        assert_eq!(
            matches!(result, Err(SchemaError::Unsupported { .. })),
            refused,
            "{ty}"
        );
    }
}

#[test]
fn fields_without_columns_ask_for_columns_typed_by_their_values() {
    let adding = |max| {
        schema(&[("event", "String")])
            .with_settings(&TableSettings {
                add_columns: Some(crate::table::AddColumns {
                    max,
                    pattern: "^[a-z]+$".into(),
                }),
                ..TableSettings::default()
            })
            .unwrap()
    };
    let out = run(
        &adding(10),
        r#"[{"event": "a", "s": "x", "i": -1, "f": 1.5, "b": true, "arr": [1], "n": null},
            {"event": "b", "s": "y", "o": {"k": 1}, "Bad": 1}]"#,
    );
    let wanted: Vec<(&str, NewKind)> = (out.wanted.iter())
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    assert_eq!(
        wanted,
        [
            ("s", NewKind::String),
            ("i", NewKind::Int64),
            ("f", NewKind::Float64),
            ("b", NewKind::Bool),
            ("arr", NewKind::Strings),
        ]
    );
    // `null` chose no type: an unknown field until a value comes.
    assert_eq!(out.unknown_fields, 1);
    let fields: Vec<&str> = out.errors.iter().map(|e| e.field.as_ref()).collect();
    assert_eq!(
        fields,
        ["o"],
        "the event's first problem: an object gets no column"
    );
    // The cap counts the table's columns and those already asked for.
    let capped = run(&adding(3), r#"{"event": "a", "s": "x", "i": 1, "f": 1.5}"#);
    assert_eq!(capped.wanted.len(), 2);
    assert_eq!(capped.errors[0].field, "f");
    assert!(capped.errors[0].error.contains("add_columns.max (3)"));
}

/// JSON text of one value for the scan's differential test: ordinary values, and the
/// forms where the scan must give way or match serde_json exactly (escapes, lone
/// surrogates, control characters, `-0`, leading zeros, 64-bit edges, floats, malformed
/// literals and composites, nesting at serde_json's limit).
fn value_texts() -> impl Strategy<Value = String> {
    let readable = prop::sample::select(READABLE.to_vec()).prop_map(String::from);
    let strange = prop::sample::select(STRANGE.to_vec()).prop_map(String::from);
    prop_oneof![
        20 => "[a-z0-9 :-]{0,20}".prop_map(|s| format!("\"{s}\"")),
        12 => prop_oneof![(0u64..300).prop_map(|n| n.to_string()), any::<i64>().prop_map(|n| n.to_string())],
        12 => readable,
        2 => strange,
        1 => (120usize..130).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
    ]
}

/// Values the scan reads itself or hands whole to serde_json.
const READABLE: [&str; 24] = [
    r#""""#,
    r#""2020-12-01 23:59:00""#,
    r#""0287D9AA-4ADF-4B37-A60F-3E9E645C0001""#,
    r#""a\"b""#,
    r#""\u00e9\n\/""#,
    r#""\ud83d\ude00""#,
    r#""é€😀 ~""#,
    r#""ends with \\""#,
    "0",
    "-1",
    "18446744073709551615",
    "-9223372036854775808",
    "255",
    "256",
    "true",
    "false",
    "null",
    "[1,2]",
    "[]",
    r#"["a",["b"]]"#,
    r#"{"a":1}"#,
    "{}",
    r#"["]"]"#,
    "[[[[1]]]]",
];

/// Values the scan must give way on, or read exactly as serde_json does.
const STRANGE: [&str; 26] = [
    r#""\ud800""#,
    r#""\x""#,
    "\"ctl\u{1}\"",
    "\"tab\tinside\"",
    "-0",
    "01",
    "-01",
    "1.5",
    "1.0",
    "1e5",
    "1E+2",
    "-2e-3",
    "1e400",
    "-",
    "1.",
    ".5",
    "1e",
    "18446744073709551616",
    "-9223372036854775809",
    "tru",
    "nul",
    "truex",
    "[1,]",
    "[,1]",
    r#"{"a":}"#,
    r#"{"a":1,}"#,
];

/// Whitespace between tokens, mostly none.
fn gaps() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        30 => Just(""),
        6 => prop::sample::select(vec![" ", "\n", "\t", " \r\n "]),
        // Not JSON's whitespace.
        1 => Just("\u{a0}"),
    ]
}

/// One element of a body: mostly an object of fields named after the columns (and
/// strangers, escaped names, duplicates), sometimes not an object, sometimes glitched.
fn element_texts(names: Vec<&'static str>) -> impl Strategy<Value = String> {
    let key = prop::sample::select(names);
    let field = (key, value_texts(), gaps(), gaps());
    let glitch = prop_oneof![
        19 => Just(""),
        1 => prop::sample::select(vec![",", ":", "}", "x", "\""]),
    ];
    prop_oneof![
        19 => (prop::collection::vec(field, 0..9), glitch, gaps()).prop_map(|(fields, glitch, gap)| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v, a, b)| format!("{a}{k}{b}:{a}{v}{b}"))
                .collect();
            format!("{{{gap}{}{glitch}}}", fields.join(","))
        }),
        1 => value_texts(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The plain scan reads a body exactly as serde_json's pass does, or gives way: the
    /// same rows, rejections, errors and unknown fields, on bodies full of the forms it
    /// must give way on. Arrays, single objects and NDJSON lines, the events table's
    /// strict columns and random tables.
    #[test]
    fn the_scan_reads_bodies_as_serde_json_does_or_gives_way(
        events_table in any::<bool>(),
        types in prop::collection::vec(type_names(), 1..5),
        elements in prop::collection::vec(
            element_texts(vec![
                r#""c0""#, r#""c1""#, r#""c2""#, r#""c3""#, r#""c\u0030""#, r#""zz""#,
                r#""client_time""#, r#""device_id""#, r#""sequence""#, r#""event""#,
                r#""param_int""#, r#""param_str""#, r#""server_time""#, r#""ip""#,
                r#""a.b""#,
            ]),
            0..6,
        ),
        (before, between, after) in (gaps(), gaps(), gaps()),
        shape in 0..3u8,
        trailing in prop::sample::select(vec!["", "", "", "", "", "", "", "", ",", "]", "x"]),
        max in prop::sample::select(vec![100usize, 3]),
    ) {
        let schema = match events_table {
            true => TableSchema::events().unwrap(),
            false => numbered(&types).0,
        };
        let text = match shape {
            0 => format!("{before}[{}]{after}{trailing}", elements.join(&format!("{between},{between}"))),
            1 => format!("{before}{}{after}{trailing}", elements.first().map_or("{}", String::as_str)),
            _ => format!("{}{trailing}", elements.join("\n")),
        };
        let events = match shape {
            0 => pass::Events::Array(&text),
            1 => pass::Events::Object(&text),
            _ => pass::Events::Lines(&text),
        };
        if let Some(scanned) = scanned(&schema, events, max, &facts(), &[9]) {
            match serde_read(&schema, events, max, &facts(), &[9]) {
                Ok(Some(read)) => assert_same(&scanned, &read),
                other => prop_assert!(false, "the scan read {:?}; serde_json's pass: {:?}", text, other.map(|o| o.map(|o| o.errors))),
            }
        }
    }
}

/// Each value of both lists (and nesting at serde_json's limit) in each kind of column, as
/// an unknown field and twice in one event, in an array, an object and a line: the scan
/// reads it as serde_json's pass does, or gives way.
#[test]
fn the_scan_reads_each_value_as_serde_json_does_or_gives_way() {
    let table = schema(&[
        ("s", "String"),
        ("n", "Int64"),
        ("u", "UInt8"),
        ("f", "Float64"),
        ("a", "Array(String)"),
        ("b", "Bool"),
        ("server_time", "DateTime"),
    ]);
    let strict = table.clone().with_rules(&[
        (
            "s",
            rules::Rule {
                strict: true,
                ..Default::default()
            },
        ),
        (
            "n",
            rules::Rule {
                strict: true,
                ..Default::default()
            },
        ),
    ]);
    let deep = [
        "[".repeat(125),
        "]".repeat(125),
        "[".repeat(126),
        "]".repeat(126),
    ];
    let (at_limit, past_limit) = (deep[0].clone() + &deep[1], deep[2].clone() + &deep[3]);
    let values = READABLE
        .iter()
        .chain(&STRANGE)
        .copied()
        .chain([at_limit.as_str(), past_limit.as_str()]);
    let (mut read, mut all) = (0, 0);
    for value in values {
        for key in ["s", "n", "u", "f", "a", "b", "server_time", "zz"] {
            for event in [
                format!(r#"{{"{key}": {value}}}"#),
                format!(r#"{{"s": "x", "{key}":{value}, "{key}": 1}}"#),
            ] {
                for (shape, text) in [(0, format!("[{event}]")), (1, event.clone()), (2, event)] {
                    let events = match shape {
                        0 => pass::Events::Array(&text),
                        1 => pass::Events::Object(&text),
                        _ => pass::Events::Lines(&text),
                    };
                    for schema in [&table, &strict] {
                        all += 1;
                        if let Some(scanned) = scanned(schema, events, 10, &facts(), &[]) {
                            read += 1;
                            match serde_read(schema, events, 10, &facts(), &[]) {
                                Ok(Some(out)) => assert_same(&scanned, &out),
                                other => panic!(
                                    "the scan read {text}; serde_json's pass: {:?}",
                                    other.map(|o| o.map(|o| o.errors))
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
    // Most are read by the scan itself.
    assert!(read * 2 > all, "{read} of {all}");
}

#[test]
fn the_scan_reads_the_events_tables_plain_bodies_whole() {
    let schema = TableSchema::events().unwrap();
    let body = r#" [ {"client_time": "2020-12-01 23:59:00", "device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C0001",
        "device_os": "IOS 13.5.1", "session": "ybuRi8mAUypxjbxQ", "sequence": 1, "event": "app_start",
        "param_int": 7, "param_str": "say \"hi\"", "unknown": [1, {"a": null}]},
        {"device_id": "0287D9AA-4ADF-4B37-A60F-3E9E645C0001", "client_time": "2020-12-01 23:59:01",
        "device_os": "IOS 13.5.1", "session": "ybuRi8mAUypxjbxQ", "sequence": 2, "event": "x"} ] "#;
    let events = pass::Events::Array(body);
    let scanned = scanned(&schema, events, 100, &facts(), &[]).expect("read whole");
    assert_eq!(
        (scanned.rows.len(), scanned.rejected, scanned.unknown_fields),
        (2, 0, 1),
        "{:?}",
        scanned.errors
    );
    assert_same(
        &scanned,
        &serde_read(&schema, events, 100, &facts(), &[])
            .unwrap()
            .unwrap(),
    );
}

#[test]
fn keys_compare_equal_only_when_every_byte_is() {
    for len in 0..20 {
        let key: String = (0..len).map(|i| char::from(b'a' + i as u8)).collect();
        assert!(pass::same_key(&key, &key.clone()), "{key}");
        for at in 0..len {
            let mut other = key.clone().into_bytes();
            other[at] = b'Z';
            let other = String::from_utf8(other).unwrap();
            assert!(!pass::same_key(&key, &other), "{key} {other}");
        }
        assert!(!pass::same_key(&key, &format!("{key}a")));
    }
}

/// A column whose name has a backslash or a quote is never matched in place: the bytes
/// `a\` in a body start an escape, not the name.
#[test]
fn the_scan_compares_in_place_only_names_a_body_cannot_spell_otherwise() {
    let table = schema(&[(r"a\", "String"), (r#"q""#, "String"), ("n", "String")]);
    for body in [
        r#"[{"a\\": "1", "q\"": "2", "n": "3"}, {"a\\": "4", "q\"": "5", "n": "6"}]"#,
        r#"[{"a\\": "1"}, {"a\": "x", "n": "2"}]"#,
        r#"[{"q\"": "1"}, {"q"": "x"}]"#,
        r#"[{"n": "1"}, {"n\"": "x", "n": "2"}]"#,
    ] {
        let events = pass::Events::Array(body);
        if let Some(scanned) = scanned(&table, events, 10, &facts(), &[]) {
            let read = serde_read(&table, events, 10, &facts(), &[]).unwrap();
            assert_same(&scanned, &read.expect(body));
        }
    }
    let plain = pass::Events::Array(
        r#"[{"a\\": "1", "q\"": "2", "n": "3"}, {"a\\": "4", "q\"": "5", "n": "6"}]"#,
    );
    let scanned = scanned(&table, plain, 10, &facts(), &[]).expect("read");
    assert_eq!(scanned.rows.len(), 2);
}
