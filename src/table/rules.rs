//! Per-column rules a table's schema may carry beyond its column types: a field that must
//! be given (`missing` instead of the default), and the strict reading `/v1/events` has
//! always had for its own table: only a JSON value of the column's own kind, a non-empty
//! and bounded text, in the words its clients already handle (`expected a string`, `not a
//! UUID`, `must not be negative`, ...). The events table is the generic path with these
//! rules ([`events`]); a table of `INGEST_TABLES` has none.

use std::borrow::Cow;

use super::Problem;
use super::pass::Slot;
use super::time::TimeRange;
use crate::format::{Scalar, Shape, put_leb128};
use crate::table::event::parse_time;

/// Longest `device_os`, `session` or `event`, in bytes. These are identifiers and names;
/// anything longer is a client bug, and short values keep the sort key compact.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest `param_str`, in bytes: room for a URL or a small JSON blob, not for a payload.
pub const MAX_PARAM_STR_BYTES: usize = 8 * 1024;

/// What a column demands of its field beyond its type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// A missing (or `null`) field rejects the event (`missing`) instead of taking the
    /// column's default.
    pub required: bool,
    /// Only a value of the column's own JSON kind, checked as `/v1/events` checks it (see
    /// [`Strict`]): for `String`, `UUID`, `UInt32` and `DateTime` columns.
    pub strict: bool,
    /// A strict text must hold something other than whitespace.
    pub non_empty: bool,
    /// A strict text's longest length in bytes.
    pub max_bytes: Option<usize>,
}

/// The events table's rules: every field but the two free parameters is required, names
/// are non-empty and short, and every field is read strictly.
pub fn events() -> Vec<(&'static str, Rule)> {
    let required = Rule {
        required: true,
        strict: true,
        ..Rule::default()
    };
    let name = Rule {
        non_empty: true,
        max_bytes: Some(MAX_NAME_BYTES),
        ..required
    };
    vec![
        ("client_time", required),
        ("device_id", required),
        ("device_os", name),
        ("session", name),
        ("sequence", required),
        ("event", name),
        (
            "param_int",
            Rule {
                strict: true,
                ..Rule::default()
            },
        ),
        (
            "param_str",
            Rule {
                strict: true,
                max_bytes: Some(MAX_PARAM_STR_BYTES),
                ..Rule::default()
            },
        ),
    ]
}

/// A strictly read column's check and encoding, decided once per schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strict {
    /// `String`/`LowCardinality(String)` from a string only.
    Text {
        non_empty: bool,
        max_bytes: Option<usize>,
    },
    /// `UUID` from a string only.
    Uuid,
    /// `UInt32` from a non-negative integer only.
    U32,
    /// `DateTime` from `YYYY-MM-DD hh:mm:ss` (UTC) or RFC 3339 only.
    Time,
}

/// Why a strict value was not written.
pub(super) enum Refused {
    /// Absent or `null`: the column's default, or `missing` when required.
    Absent,
    /// The value is wrong.
    Wrong(Problem),
}

impl Strict {
    /// The strict reading of a column of `shape` under `rule`, if it has one.
    pub(super) fn of(rule: &Rule, shape: &Shape) -> Option<Self> {
        if !rule.strict {
            return None;
        }
        Some(match shape.plain() {
            Shape::Scalar(Scalar::String) => Strict::Text {
                non_empty: rule.non_empty,
                max_bytes: rule.max_bytes,
            },
            Shape::Scalar(Scalar::Uuid) => Strict::Uuid,
            Shape::Scalar(Scalar::UInt(32)) => Strict::U32,
            Shape::Scalar(Scalar::DateTime { .. }) => Strict::Time,
            _ => return None,
        })
    }

    /// Appends `slot`'s RowBinary value; for a time, returns its seconds (for
    /// `client_time_corrected`). Nothing is appended when it is refused.
    pub(super) fn put(
        self,
        slot: &Slot<'_>,
        range: TimeRange,
        buf: &mut Vec<u8>,
    ) -> Result<Option<u32>, Refused> {
        let wrong = |p: &'static str| Err(Refused::Wrong(Cow::Borrowed(p)));
        match (self, slot) {
            (_, Slot::Absent | Slot::Null) => Err(Refused::Absent),
            (
                Strict::Text {
                    non_empty,
                    max_bytes,
                },
                Slot::Str(s),
            ) => {
                if non_empty && is_blank(s) {
                    return wrong("must not be empty");
                }
                if let Some(max) = max_bytes
                    && s.len() > max
                {
                    return Err(Refused::Wrong(format!("longer than {max} bytes").into()));
                }
                put_leb128(buf, s.len());
                buf.extend_from_slice(s.as_bytes());
                Ok(None)
            }
            (Strict::Uuid, Slot::Str(s)) => match uuid::Uuid::try_parse(s) {
                Ok(id) => {
                    let (high, low) = id.as_u64_pair();
                    buf.extend_from_slice(&high.to_le_bytes());
                    buf.extend_from_slice(&low.to_le_bytes());
                    Ok(None)
                }
                Err(_) => wrong("not a UUID"),
            },
            (Strict::Time, Slot::Str(s)) => {
                let seconds = parse_time(s).map_err(|e| Refused::Wrong(Cow::Borrowed(e)))?;
                // ClickHouse `DateTime` is an unsigned 32-bit count of seconds: 1970 to 2106,
                // and a little less on old servers.
                let seconds = u32::try_from(seconds)
                    .ok()
                    .filter(|&s| s <= range.last_second)
                    .ok_or(Refused::Wrong(Cow::Borrowed(range.strict_refusal())))?;
                buf.extend_from_slice(&seconds.to_le_bytes());
                Ok(Some(seconds))
            }
            (Strict::Text { .. } | Strict::Uuid | Strict::Time, _) => wrong("expected a string"),
            (Strict::U32, Slot::UInt(n)) => match u32::try_from(*n) {
                Ok(n) => {
                    buf.extend_from_slice(&n.to_le_bytes());
                    Ok(None)
                }
                Err(_) => wrong("larger than 4294967295"),
            },
            (Strict::U32, Slot::Int(_)) => wrong("must not be negative"),
            (Strict::U32, _) => wrong("expected an unsigned 32-bit integer"),
        }
    }
}

/// Whether `s` is empty or only whitespace (`str::trim`'s Unicode whitespace). A name that
/// starts with a visible ASCII character, as nearly all do, is answered without trimming.
fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(&b) if b.is_ascii_graphic() => false,
        _ => s.trim().is_empty(),
    }
}
