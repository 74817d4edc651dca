//! A table's event as a JSON Schema, generated from its columns, for `/openapi.json`.

use serde_json::{Value as Json, json};

use super::encode::type_name;
use super::paths::Step;
use super::settings::parse_path;
use super::{Fill, TableSchema};
use crate::format::{Scalar, Shape};

/// The JSON Schema of one event object for `schema`'s table: one property per column a
/// client fills (server-filled ones are described as such and ignored if sent), a column
/// filled by a path where the path leads, and the rest column's fields as
/// `additionalProperties`.
pub fn json_schema(schema: &TableSchema) -> Json {
    let mut properties = serde_json::Map::new();
    let mut rest = None;
    for column in schema.columns() {
        if let Fill::Rest(_) = column.fill {
            rest = Some(column.name.clone());
            continue;
        }
        if column.field != column.name
            && let Ok(steps) = parse_path(&column.field)
        {
            let mut property = shape_schema(&column.shape);
            if let Some(object) = property.as_object_mut() {
                let description = format!(
                    "column `{}` (`{}`); missing or null: the column's default",
                    column.name, column.type_name
                );
                object.insert("description".into(), json!(description));
            }
            place(&mut properties, &steps, property);
            continue;
        }
        let mut property = shape_schema(&column.shape);
        if let Some(object) = property.as_object_mut() {
            let description = if schema.is_client_field(column) {
                format!(
                    "`{}`; missing or null: the column's default",
                    column.type_name
                )
            } else {
                format!(
                    "`{}`, filled by the service (a sent value is ignored)",
                    column.type_name
                )
            };
            object.insert("description".into(), json!(description));
            if !schema.is_client_field(column) {
                object.insert("readOnly".into(), json!(true));
            }
        }
        properties.insert(column.name.clone(), property);
    }
    let mut out = json!({
        "type": "object",
        "title": schema.table,
        "properties": properties,
        "additionalProperties": true,
    });
    if let Some(rest) = rest {
        out["description"] = json!(format!(
            "Fields no column and no path takes are kept in column `{rest}`."
        ));
    }
    out
}

/// Puts `property` where the path `steps` leads inside `properties`, making the objects and
/// arrays on the way.
fn place(properties: &mut serde_json::Map<String, Json>, steps: &[Step], property: Json) {
    let Some((Step::Key(key), below)) = steps.split_first() else {
        return;
    };
    let slot = properties
        .entry(key.clone())
        .or_insert_with(|| json!({"type": "object", "properties": {}}));
    let mut at = slot;
    let mut below = below;
    // Through array elements: `items[0].id` is an array of objects.
    while let Some((Step::Index(_), rest)) = below.split_first() {
        if at.get("items").is_none() {
            *at = json!({"type": "array", "items": {"type": "object", "properties": {}}});
        }
        at = &mut at["items"];
        below = rest;
    }
    if below.is_empty() {
        *at = property;
        return;
    }
    if at.get("properties").is_none() {
        *at = json!({"type": "object", "properties": {}});
    }
    if let Some(inner) = at["properties"].as_object_mut() {
        place(inner, below, property);
    }
}

fn shape_schema(shape: &Shape) -> Json {
    match shape {
        Shape::Nullable(inner) => {
            let mut inner = shape_schema(inner);
            if let Some(object) = inner.as_object_mut() {
                object.insert("nullable".into(), json!(true));
            }
            inner
        }
        Shape::LowCardinality(inner) => shape_schema(inner),
        Shape::Array(inner) => json!({"type": "array", "items": shape_schema(inner)}),
        Shape::Map(_, value) => {
            json!({"type": "object", "additionalProperties": shape_schema(value)})
        }
        Shape::Tuple(elements) if elements.iter().all(|(n, _)| n.is_some()) => {
            let properties: serde_json::Map<String, Json> = elements
                .iter()
                .map(|(n, s)| (n.clone().unwrap_or_default(), shape_schema(s)))
                .collect();
            json!({"type": "object", "properties": properties})
        }
        Shape::Tuple(elements) => json!({
            "type": "array",
            "items": elements.iter().map(|(_, s)| shape_schema(s)).collect::<Vec<_>>(),
            "minItems": elements.len(),
            "maxItems": elements.len(),
        }),
        Shape::Variant { members, .. } => json!({
            "oneOf": members.iter().map(shape_schema).collect::<Vec<_>>(),
            "nullable": true,
        }),
        Shape::Scalar(scalar) => scalar_schema(scalar),
    }
}

fn scalar_schema(scalar: &Scalar) -> Json {
    let name = type_name(scalar);
    match scalar {
        Scalar::UInt(bits) | Scalar::Int(bits) if *bits <= 32 => {
            let (min, max): (i64, i64) = match scalar {
                Scalar::UInt(b) => (0, (1i64 << b) - 1),
                _ => (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1),
            };
            json!({"type": "integer", "minimum": min, "maximum": max, "format": name})
        }
        Scalar::UInt(_) | Scalar::Int(_) | Scalar::Decimal { .. } => json!({
            "oneOf": [{"type": "number"}, {"type": "string"}],
            "format": name,
            "description": "a number, or a string of one (exact)",
        }),
        Scalar::Float32 | Scalar::Float64 => json!({"type": "number", "format": name}),
        Scalar::Bool => json!({"type": "boolean"}),
        Scalar::String => json!({"type": "string"}),
        Scalar::Json => json!({"type": "object"}),
        Scalar::Dynamic => json!({
            "description": "any JSON value, stored as the type the server infers for it",
        }),
        Scalar::FixedString(n) => json!({"type": "string", "maxLength": n}),
        Scalar::Uuid => json!({"type": "string", "format": "uuid"}),
        Scalar::Ipv4 => json!({"type": "string", "format": "ipv4"}),
        Scalar::Ipv6 => json!({"type": "string", "format": "ipv6"}),
        Scalar::Date | Scalar::Date32 => json!({
            "oneOf": [{"type": "string", "format": "date"}, {"type": "number"}],
            "format": name,
        }),
        Scalar::DateTime { zone } | Scalar::DateTime64 { zone, .. } => json!({
            "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
            "format": name,
            "description": format!(
                "'YYYY-MM-DD hh:mm:ss[.fff]' ({}), RFC 3339, or epoch seconds/milliseconds",
                zone.as_ref().map_or("UTC", |z| z.name())
            ),
        }),
        Scalar::Enum { values, .. } => {
            let names: Vec<&str> = values.iter().map(|(n, _)| n.as_str()).collect();
            json!({"type": "string", "enum": names})
        }
    }
}
