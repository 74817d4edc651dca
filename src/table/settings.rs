//! A table's own reading of its events, declared per table (`[[tables]]` in `CONFIG_FILE`):
//! columns filled from nested fields (`paths`), a column that keeps every field nothing else
//! took (`rest`), the request's `User-Agent` and what it says (`user_agent`, `browser`,
//! `os`, `device`), and the server-filled columns' names. Checked against the table's
//! columns when its definition is read: a setting naming a column the table lacks, or one
//! whose type cannot hold it, is a [`SettingError`] naming table, setting and column.

use std::fmt;

use super::pass::Read;
use super::paths::{Node, Step};
use super::{Fill, TableColumn};
use crate::format::{Scalar, Shape};

/// Deepest path: fields nested deeper are a client's data, not a schema.
pub const MAX_PATH_STEPS: usize = 16;

/// One table's settings. The default changes nothing: top-level fields fill their columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableSettings {
    /// `SERVER_TIME_COLUMN` for this table (`None`: the variable's).
    pub server_time_column: Option<String>,
    /// `CLIENT_IP_COLUMN` for this table (`None`: the variable's).
    pub client_ip_column: Option<String>,
    /// `(column, path)`: the column is filled from the field at the path (`context.page.url`,
    /// `items[0].id`), and no longer from a top-level field of its own name.
    pub paths: Vec<(String, String)>,
    /// The column that keeps every field no column and no path took.
    pub rest: Option<String>,
    /// The column that keeps the request's `User-Agent` header.
    pub user_agent: Option<String>,
    /// The column for the browser the `User-Agent` names (`Chrome`).
    pub browser: Option<String>,
    /// The column for its operating system (`Windows 10`, `iOS`).
    pub os: Option<String>,
    /// The column for its kind of device (`pc`, `smartphone`, `crawler`).
    pub device: Option<String>,
    /// Columns added for top-level fields that have none.
    pub add_columns: Option<AddColumns>,
}

/// `add_columns`: a top-level field without a column, whose name matches `pattern`, gets
/// one (the sink adds it), while the table has fewer than `max` columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddColumns {
    /// The most columns the table may have, the added ones included.
    pub max: usize,
    /// What a field's name must match (a regular expression).
    pub pattern: String,
}

/// [`AddColumns`] as the reading uses it: the pattern compiled.
#[derive(Debug, Clone)]
pub(super) struct Adding {
    pub max: usize,
    pub pattern: regex::Regex,
}

impl PartialEq for Adding {
    fn eq(&self, other: &Self) -> bool {
        self.max == other.max && self.pattern.as_str() == other.pattern.as_str()
    }
}

impl Eq for Adding {}

/// A setting the table's columns cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}: setting {setting}: {problem}")]
pub struct SettingError {
    /// The table.
    pub table: String,
    /// The setting (`paths.page_url`, `rest`, `browser`).
    pub setting: String,
    /// What is wrong, naming the column.
    pub problem: String,
}

/// Which part of the request's `User-Agent` a column keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPart {
    /// The header itself (bounded).
    Header = 0,
    /// The browser's name.
    Browser = 1,
    /// The operating system.
    Os = 2,
    /// The kind of device.
    Device = 3,
}

/// How the rest column holds the fields it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestKind {
    /// JSON text of an object in a `String` column, or in a `JSON` column (sent as text).
    Text,
    /// `Map(String, String)`: nested objects flattened to dotted keys, values as their JSON
    /// text (strings without quotes).
    Map,
}

/// What the settings make of a table's reading, built once per column list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shaping {
    /// The top-level fields paths start from, each with the tree of its paths.
    pub roots: Vec<(String, Node)>,
    /// The rest column and how it holds the fields.
    pub rest: Option<(usize, RestKind)>,
    /// Columns added for fields without one.
    pub add: Option<Adding>,
}

impl Shaping {
    /// The paths from top-level field `key`, if any start there.
    pub fn root(&self, key: &str) -> Option<&Node> {
        self.root_index(key).map(|r| &self.roots[r].1)
    }

    /// The index of top-level field `key` among the paths' first fields.
    pub fn root_index(&self, key: &str) -> Option<usize> {
        (self.roots.iter()).position(|(k, _)| super::pass::same_key(k, key))
    }
}

impl TableSettings {
    /// Whether the settings change how events are read (paths, a rest column, the
    /// `User-Agent`), beyond the server-filled columns' names.
    pub fn shapes_events(&self) -> bool {
        !self.paths.is_empty()
            || self.rest.is_some()
            || self.user_agent.is_some()
            || self.browser.is_some()
            || self.os.is_some()
            || self.device.is_some()
            || self.add_columns.is_some()
    }

    /// The columns filled from the `User-Agent`, by setting name.
    fn agent_columns(&self) -> [(&'static str, Option<&String>, AgentPart); 4] {
        [
            ("user_agent", self.user_agent.as_ref(), AgentPart::Header),
            ("browser", self.browser.as_ref(), AgentPart::Browser),
            ("os", self.os.as_ref(), AgentPart::Os),
            ("device", self.device.as_ref(), AgentPart::Device),
        ]
    }

    /// Applies the settings to `columns` (their fills and readings), returning the reading
    /// plan. `reads`: how each column's value is read; a column filled another way than by
    /// its top-level field is marked [`Read::Elsewhere`].
    pub(super) fn apply(
        &self,
        table: &str,
        columns: &mut [TableColumn],
        reads: &mut [Read],
    ) -> Result<Option<Shaping>, SettingError> {
        if !self.shapes_events() {
            return Ok(None);
        }
        let error = |setting: &str, problem: String| SettingError {
            table: table.to_string(),
            setting: setting.to_string(),
            problem,
        };
        let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
        let find = |setting: &str, column: &str| {
            names
                .iter()
                .position(|name| name == column)
                .ok_or_else(|| error(setting, format!("the table has no column {column}")))
        };
        // Each column is filled one way.
        let mut claimed: Vec<(usize, String)> = Vec::new();
        let mut claim = |setting: &str, i: usize| match claimed.iter().find(|(c, _)| *c == i) {
            Some((_, other)) => Err(error(
                setting,
                format!("column {} is already filled by {other}", names[i]),
            )),
            None => {
                claimed.push((i, setting.to_string()));
                Ok(())
            }
        };
        let mut roots: Vec<(String, Node)> = Vec::new();
        for (column, path) in &self.paths {
            let setting = format!("paths.{column}");
            let i = find(&setting, column)?;
            claim(&setting, i)?;
            if columns[i].fill != Fill::Client {
                return Err(error(
                    &setting,
                    format!("column {column} is filled by the service"),
                ));
            }
            let steps = parse_path(path).map_err(|why| error(&setting, why))?;
            let Some((Step::Key(first), below)) = steps.split_first() else {
                return Err(error(
                    &setting,
                    format!("path {path:?} starts with an index"),
                ));
            };
            if let Some(j) = columns.iter().position(|c| c.name == *first)
                && self.paths.iter().all(|(c, _)| c != first)
                && self.rest.as_deref() != Some(first.as_str())
                && self
                    .agent_columns()
                    .iter()
                    .all(|(_, c, _)| c.map(String::as_str) != Some(first))
                && columns[j].fill == Fill::Client
            {
                return Err(error(
                    &setting,
                    format!(
                        "path {path:?} starts at field {first}, which fills column {first}: \
                         a field either fills its column or is read into"
                    ),
                ));
            }
            let read = match reads[i] {
                Read::Ignore | Read::Elsewhere => Read::Typed,
                read => read,
            };
            let root = match roots.iter_mut().position(|(k, _)| k == first) {
                Some(r) => &mut roots[r].1,
                None => {
                    roots.push((first.clone(), Node::default()));
                    &mut roots.last_mut().expect("just pushed").1
                }
            };
            root.insert(below, i, read, column, path)
                .map_err(|why| error(&setting, why))?;
            reads[i] = Read::Elsewhere;
            columns[i].field = path.clone();
        }
        let rest = match &self.rest {
            None => None,
            Some(column) => {
                let i = find("rest", column)?;
                claim("rest", i)?;
                let kind = match columns[i].shape.plain() {
                    Shape::Scalar(Scalar::String | Scalar::Json) => RestKind::Text,
                    Shape::Nullable(inner)
                        if matches!(inner.plain(), Shape::Scalar(Scalar::String)) =>
                    {
                        RestKind::Text
                    }
                    Shape::Map(key, value)
                        if matches!(key.plain(), Shape::Scalar(Scalar::String))
                            && matches!(value.plain(), Shape::Scalar(Scalar::String)) =>
                    {
                        RestKind::Map
                    }
                    _ => {
                        return Err(error(
                            "rest",
                            format!(
                                "column {column} is {}: the rest is kept in a String (JSON \
                                 text), a Map(String, String) or a JSON column",
                                columns[i].type_name
                            ),
                        ));
                    }
                };
                columns[i].fill = Fill::Rest(kind);
                reads[i] = Read::Elsewhere;
                Some((i, kind))
            }
        };
        for (setting, column, part) in self.agent_columns() {
            let Some(column) = column else { continue };
            let i = find(setting, column)?;
            claim(setting, i)?;
            let text = match columns[i].shape.plain() {
                Shape::Nullable(inner) => inner.plain(),
                other => other,
            };
            if !matches!(text, Shape::Scalar(Scalar::String)) {
                return Err(error(
                    setting,
                    format!(
                        "column {column} is {}: it takes text (String, LowCardinality(String) \
                         or Nullable(String))",
                        columns[i].type_name
                    ),
                ));
            }
            columns[i].fill = Fill::Agent(part);
            reads[i] = Read::Elsewhere;
        }
        let add = match &self.add_columns {
            None => None,
            Some(AddColumns { max, pattern }) => {
                let pattern = regex::Regex::new(pattern)
                    .map_err(|e| error("add_columns.pattern", e.to_string()))?;
                if *max == 0 {
                    return Err(error("add_columns.max", "is at least 1".into()));
                }
                Some(Adding { max: *max, pattern })
            }
        };
        Ok(Some(Shaping { roots, rest, add }))
    }
}

/// The steps of a path: `context.page.url`, `items[0].id`, `matrix[1][2]`.
pub(super) fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let bad = || {
        format!(
            "path {path:?}: field names joined by dots, each maybe followed by [index] \
             (context.page.url, items[0].id)"
        )
    };
    let mut steps = Vec::new();
    for part in path.split('.') {
        let (name, mut indexes) = match part.find('[') {
            Some(at) => (&part[..at], &part[at..]),
            None => (part, ""),
        };
        if name.is_empty() || name.contains(']') {
            return Err(bad());
        }
        steps.push(Step::Key(name.to_string()));
        while !indexes.is_empty() {
            let close = indexes.find(']').ok_or_else(bad)?;
            let index: usize = indexes[1..close].parse().map_err(|_| bad())?;
            steps.push(Step::Index(index));
            indexes = &indexes[close + 1..];
            if !indexes.is_empty() && !indexes.starts_with('[') {
                return Err(bad());
            }
        }
    }
    if steps.len() > MAX_PATH_STEPS {
        return Err(format!(
            "path {path:?} is deeper than {MAX_PATH_STEPS} steps"
        ));
    }
    Ok(steps)
}

impl fmt::Display for AgentPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentPart::Header => "user_agent",
            AgentPart::Browser => "browser",
            AgentPart::Os => "os",
            AgentPart::Device => "device",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_read_as_steps() {
        assert_eq!(
            parse_path("items[0].id").unwrap(),
            vec![
                Step::Key("items".into()),
                Step::Index(0),
                Step::Key("id".into())
            ]
        );
        assert_eq!(
            parse_path("m[1][2]").unwrap(),
            vec![Step::Key("m".into()), Step::Index(1), Step::Index(2)]
        );
        for bad in ["", "a..b", "a[x]", "a[1]b", "[0]", "a]"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
