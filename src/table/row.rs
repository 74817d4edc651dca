//! One event's row: each column's value encoded in column order from what the pass kept
//! for it ([`Slot`]), the usual values straight into their bytes ([`Direct`], integers that
//! fit), anything else through [`encode`], whose rules and messages are the reference;
//! server-filled columns stamped once per request ([`Stamp`]).

use std::borrow::Cow;
use std::fmt;
use std::io::Write;
use std::net::Ipv6Addr;

use super::encode::encode_raw;
use super::pass::{Composite, Slot};
use super::paths::{RestItem, put_rest};
use super::rules::Refused;
use super::settings::AgentPart;
use super::{Fill, Missing, Problem, RequestFacts, TableColumn, TableSchema, Value, encode, time};
use crate::format::{Scalar, Shape};
use crate::table::event::MAX_DEVICE_QUEUE_SECS;

/// A column type whose usual value is encoded straight from the pass's [`Slot`], without
/// going through [`Value`] and [`encode`]: the events table's types, which most tables
/// share. Any other value (a number in a `String` column, a time in another format, a
/// value out of range) goes through [`encode`], whose rules and messages are the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Direct {
    /// `Nullable(T)`: a 0 flag byte before the value.
    pub(super) nullable: bool,
    pub(super) kind: DirectKind,
    /// The last second a `DateTime` takes on the server (see [`time::TimeRange`]).
    pub(super) last_second: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DirectKind {
    /// `String` from a string.
    String,
    /// `DateTime` (UTC) from `YYYY-MM-DD hh:mm:ss` or RFC 3339 without a fraction.
    DateTime,
    /// `UUID` from a string.
    Uuid,
    /// Anything else: [`encode`].
    None,
}

impl Direct {
    pub(super) fn of(shape: &Shape) -> Self {
        let (nullable, inner) = match shape.plain() {
            Shape::Nullable(inner) => (true, inner.plain()),
            other => (false, other),
        };
        let kind = match inner {
            Shape::Scalar(Scalar::String) => DirectKind::String,
            Shape::Scalar(Scalar::DateTime { zone: None }) => DirectKind::DateTime,
            Shape::Scalar(Scalar::Uuid) => DirectKind::Uuid,
            _ => DirectKind::None,
        };
        Self {
            nullable,
            kind,
            last_second: u32::MAX,
        }
    }

    /// Encodes `s` when it is this kind's usual value; `false` leaves `buf` as it was.
    fn put_str(self, s: &str, buf: &mut Vec<u8>) -> bool {
        let flag = |buf: &mut Vec<u8>| {
            if self.nullable {
                buf.push(0);
            }
        };
        match self.kind {
            DirectKind::String => {
                flag(buf);
                crate::format::put_leb128(buf, s.len());
                buf.extend_from_slice(s.as_bytes());
            }
            DirectKind::DateTime => {
                return time::plain_seconds(s).is_some_and(|t| self.put_seconds(t, buf));
            }
            DirectKind::Uuid => match uuid::Uuid::try_parse(s) {
                Ok(id) => {
                    flag(buf);
                    let (high, low) = id.as_u64_pair();
                    buf.extend_from_slice(&high.to_le_bytes());
                    buf.extend_from_slice(&low.to_le_bytes());
                }
                Err(_) => return false,
            },
            DirectKind::None => return false,
        }
        true
    }

    /// A `DateTime`'s seconds, when in its range; `false` leaves `buf` as it was.
    fn put_seconds(self, seconds: i64, buf: &mut Vec<u8>) -> bool {
        let Some(seconds) = u32::try_from(seconds)
            .ok()
            .filter(|&s| s <= self.last_second)
        else {
            return false;
        };
        if self.nullable {
            buf.push(0);
        }
        buf.extend_from_slice(&seconds.to_le_bytes());
        true
    }
}

impl TableSchema {
    /// Encodes one event's columns into `buf`; problems are pushed, per field.
    pub(super) fn encode_row(
        &self,
        slots: &[Slot<'_>],
        rest: &[RestItem<'_>],
        facts: &RequestFacts,
        stamp: &Stamp,
        buf: &mut Vec<u8>,
        problems: &mut Vec<(Cow<'static, str>, Problem)>,
    ) {
        // `client_time` as read for its own column, for `client_time_corrected`.
        // `client_time` in whole seconds as read for its own column.
        let mut client_seconds: Option<i64> = None;
        // Where each column's value starts, for the `Nested` check (its tables only).
        let mut starts: Vec<Option<usize>> = Vec::new();
        for (i, (column, slot)) in self.columns.iter().zip(slots).enumerate() {
            let nullable = column.direct.nullable;
            if !self.nested.is_empty() {
                let flag = usize::from(self.server_defaults);
                starts.push(Some(buf.len() + flag));
            }
            if self.server_defaults {
                let absent = match slot {
                    Slot::Absent => true,
                    Slot::Null => !nullable,
                    Slot::Raw(raw) => raw.get() == "null" && !nullable,
                    _ => false,
                };
                if column.fill == Fill::Client && column.has_default && absent {
                    buf.push(1);
                    if let Some(start) = starts.last_mut() {
                        *start = None; // the server's default: not checked here
                    }
                    continue;
                }
                buf.push(0);
            }
            match column.fill {
                Fill::ServerTime => buf.extend_from_slice(&stamp.server_time),
                Fill::ClientIp => buf.extend_from_slice(&stamp.ip),
                Fill::Rest(kind) => put_rest(rest, kind, nullable, buf),
                Fill::Agent(part) => buf.extend_from_slice(stamp.agent(part)),
                // The usual case, in whole seconds: no 128-bit arithmetic per event.
                Fill::Corrected
                    if column.direct.kind == DirectKind::DateTime && client_seconds.is_some() =>
                {
                    let client = client_seconds.unwrap_or_default();
                    let seconds = corrected_seconds(client, facts.sent_at, stamp.server_seconds);
                    let seconds = seconds.clamp(0, i64::from(self.range.last_second));
                    column.direct.put_seconds(seconds, buf);
                }
                Fill::Corrected => match self.corrected(
                    slots,
                    facts,
                    client_seconds.map(|s| i128::from(s) * 1_000_000_000),
                ) {
                    Some(nanos) => {
                        let last = i128::from(self.range.last_second) * 1_000_000_000;
                        put_time(&column.shape, nanos.clamp(0, last), buf)
                    }
                    None => column.put_missing(facts, buf),
                },
                // A strictly read column (see `rules`): one check and write.
                Fill::Client if column.strict.is_some() => {
                    let Some(strict) = column.strict else {
                        continue;
                    };
                    match strict.put(slot, self.range, buf) {
                        Ok(Some(seconds)) if Some(i) == self.client_time => {
                            client_seconds = Some(i64::from(seconds));
                        }
                        Ok(_) => {}
                        Err(Refused::Absent) if column.required => {
                            problems.push((column.field.clone().into(), "missing".into()));
                        }
                        Err(Refused::Absent) => column.put_missing(facts, buf),
                        Err(Refused::Wrong(e)) => problems.push((column.field.clone().into(), e)),
                    }
                }
                Fill::Client => {
                    // The usual values straight into their columns (see `Direct`).
                    if let Slot::Str(s) = slot {
                        if Some(i) == self.client_time && column.direct.kind == DirectKind::DateTime
                        {
                            if let Some(seconds) = time::plain_seconds(s)
                                && column.direct.put_seconds(seconds, buf)
                            {
                                client_seconds = Some(seconds);
                                continue;
                            }
                        } else if column.direct.put_str(s, buf) {
                            continue;
                        }
                    }
                    if let Slot::UInt(_) | Slot::Int(_) = slot {
                        let start = buf.len();
                        if put_integer(&column.shape, slot, buf) {
                            continue;
                        }
                        buf.truncate(start);
                    }
                    // A `Variant` or `Dynamic` value is read from its text, `null` included.
                    if let Slot::Raw(raw) = slot
                        && column.shape.takes_null()
                    {
                        if let Err(e) = encode_raw(&column.shape, raw, self.range, buf) {
                            problems.push((column.field.clone().into(), e));
                        }
                        continue;
                    }
                    let mut digits = Digits::default();
                    let value = match slot_value(slot, &mut digits) {
                        None | Some(Ok(Value::Null)) if column.required => {
                            problems.push((column.field.clone().into(), "missing".into()));
                            continue;
                        }
                        None => {
                            column.put_missing(facts, buf);
                            continue;
                        }
                        Some(Ok(Value::Null)) if !nullable => {
                            column.put_missing(facts, buf);
                            continue;
                        }
                        Some(Ok(value)) => value,
                        Some(Err(e)) => {
                            problems.push((column.field.clone().into(), e.into()));
                            continue;
                        }
                    };
                    if let Err(e) = encode(&column.shape, &value, self.range, buf) {
                        problems.push((column.field.clone().into(), e));
                    }
                }
            }
        }
        if !self.nested.is_empty() && problems.is_empty() {
            self.check_nested(&starts, buf, problems);
        }
    }

    /// Refuses a row whose arrays in one `Nested` structure differ in length (ClickHouse
    /// would refuse the whole insert for it): a problem on each array whose length is not
    /// the first one's. `starts`: where each column's value begins in `buf`.
    #[cold]
    fn check_nested(
        &self,
        starts: &[Option<usize>],
        buf: &[u8],
        problems: &mut Vec<(Cow<'static, str>, Problem)>,
    ) {
        for group in &self.nested {
            let lengths: Vec<(usize, u64)> = group
                .iter()
                .filter_map(|&i| Some((i, array_length(&buf[(*starts.get(i)?)?..])?)))
                .collect();
            let Some(&(first, expected)) = lengths.first() else {
                continue;
            };
            for &(i, length) in &lengths[1..] {
                if length != expected {
                    problems.push((
                        self.columns[i].field.clone().into(),
                        format!(
                            "has {length} elements but {} has {expected}: the arrays of one \
                             Nested structure must be of one length",
                            self.columns[first].name
                        )
                        .into(),
                    ));
                }
            }
        }
    }

    /// `client_time` corrected by the request's `sent_at`: `server_time - (sent_at -
    /// client_time)` when plausible, else `client_time` itself (the `/v1/events` rule).
    /// The server-filled columns' bytes for one request (the same for all its events).
    pub(super) fn stamp(&self, facts: &RequestFacts) -> Stamp {
        let mut stamp = Stamp {
            server_seconds: i64::try_from(time::seconds(facts.server_time_nanos)).unwrap_or(0),
            ..Stamp::default()
        };
        for column in &self.columns {
            match column.fill {
                Fill::ServerTime => put_time(
                    &column.shape,
                    facts.server_time_nanos,
                    &mut stamp.server_time,
                ),
                Fill::ClientIp => put_ip(&column.shape, facts.ip, &mut stamp.ip),
                Fill::Agent(part) => stamp.put_agent(part, column, facts.user_agent),
                _ => {}
            }
        }
        stamp
    }

    /// `known`: `client_time` already read (the same reading). Out of line: the usual
    /// case is [`corrected_seconds`], and inlined, this one's 128-bit division was hoisted
    /// into every row's encoding.
    #[cold]
    #[inline(never)]
    fn corrected(
        &self,
        slots: &[Slot<'_>],
        facts: &RequestFacts,
        known: Option<i128>,
    ) -> Option<i128> {
        let column = self.client_time?;
        let mut digits = Digits::default();
        let client = match known {
            Some(nanos) => nanos,
            None => match slot_value(&slots[column], &mut digits)?.ok()? {
                Value::Str(s) => time::from_text_in(&s, zone_of(&self.columns[column].shape))?,
                Value::Number(n) => time::from_number(n)?,
                _ => return None,
            },
        };
        let Some(sent_at) = facts.sent_at else {
            return Some(client);
        };
        let client_seconds = time::seconds(client) as i64;
        let waited = sent_at - client_seconds;
        if !(0..=MAX_DEVICE_QUEUE_SECS).contains(&waited) {
            return Some(client);
        }
        let server_seconds = time::seconds(facts.server_time_nanos);
        Some((server_seconds - i128::from(waited)) * 1_000_000_000)
    }
}

/// The server-filled columns' RowBinary values for one request.
#[derive(Debug, Default)]
pub(super) struct Stamp {
    server_time: Vec<u8>,
    ip: Vec<u8>,
    /// The request's time in whole seconds.
    server_seconds: i64,
    /// The `User-Agent` columns' values, back to back, each at `agent_at[part]`.
    agent: Vec<u8>,
    agent_at: [(usize, usize); 4],
}

impl Stamp {
    fn agent(&self, part: AgentPart) -> &[u8] {
        let (start, end) = self.agent_at[part as usize];
        &self.agent[start..end]
    }

    /// `column`'s value from the request's `User-Agent` (`None`: the request had none):
    /// the header or what it says, `NULL` in a `Nullable` column where that is nothing.
    fn put_agent(&mut self, part: AgentPart, column: &TableColumn, header: Option<&str>) {
        let header = header.map(super::user_agent::bounded).unwrap_or_default();
        let described;
        let text = match part {
            AgentPart::Header => header,
            _ if header.is_empty() => "",
            _ => {
                described = super::user_agent::describe(header);
                match part {
                    AgentPart::Browser => &described.browser,
                    AgentPart::Os => &described.os,
                    _ => &described.device,
                }
            }
        };
        let value = match text.is_empty() {
            true if matches!(column.shape.plain(), Shape::Nullable(_)) => Value::Null,
            _ => Value::Str(Cow::Borrowed(text)),
        };
        let start = self.agent.len();
        if encode(
            &column.shape,
            &value,
            time::TimeRange::FULL,
            &mut self.agent,
        )
        .is_err()
        {
            // A text column takes any text: checked when the settings were applied.
            self.agent.truncate(start);
        }
        self.agent_at[part as usize] = (start, self.agent.len());
    }
}

/// [`TableSchema::corrected`] in whole seconds: `server - (sent_at - client)` when the
/// client says when it sent the request and that is plausible, else `client`.
fn corrected_seconds(client: i64, sent_at: Option<i64>, server: i64) -> i64 {
    match sent_at {
        Some(sent_at) if (0..=MAX_DEVICE_QUEUE_SECS).contains(&(sent_at - client)) => {
            server - (sent_at - client)
        }
        _ => client,
    }
}

/// Room for an integer's decimal text (`-9223372036854775808` is 20 bytes).
#[derive(Default)]
struct Digits([u8; 24]);

/// A slot as the encoder reads it (`None`: absent); an integer is given as its decimal
/// text, written into `digits`, which is the JSON text it came from.
fn slot_value<'v>(slot: &'v Slot<'_>, digits: &'v mut Digits) -> Option<Result<Value<'v>, String>> {
    Some(Ok(match slot {
        Slot::Absent => return None,
        Slot::Null => Value::Null,
        Slot::Bool(b) => Value::Bool(*b),
        Slot::UInt(n) => Value::Number(digits.write(n)),
        Slot::Int(n) => Value::Number(digits.write(n)),
        Slot::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
        Slot::Composite(Composite::Array) => Value::Array(Vec::new()),
        Slot::Composite(Composite::Object) => Value::Object(Vec::new()),
        Slot::Raw(raw) => return Some(Value::read(raw)),
        // Only a strictly read column keeps a float this way, and it never comes here.
        Slot::Float => return Some(Err("expected an integer".into())),
    }))
}

impl Digits {
    /// `n`'s decimal text.
    fn write(&mut self, n: &dyn fmt::Display) -> &str {
        let mut cursor = std::io::Cursor::new(&mut self.0[..]);
        // 24 bytes hold any i64 or u64: the write cannot fall short.
        let _ = write!(cursor, "{n}");
        let len = cursor.position() as usize;
        std::str::from_utf8(&self.0[..len]).unwrap_or("0")
    }
}

/// An integer into an `Int`/`UInt` column of up to 64 bits when it fits (wrappers looked
/// through); `false` leaves it to [`encode`], whose rules and messages are the reference.
fn put_integer(shape: &Shape, slot: &Slot<'_>, buf: &mut Vec<u8>) -> bool {
    let value = match slot {
        Slot::UInt(n) => i128::from(*n),
        Slot::Int(n) => i128::from(*n),
        _ => return false,
    };
    match shape {
        Shape::Nullable(inner) => {
            buf.push(0);
            put_integer(inner, slot, buf)
        }
        Shape::LowCardinality(inner) => put_integer(inner, slot, buf),
        Shape::Scalar(Scalar::UInt(bits)) if *bits <= 64 && value >= 0 && value < 1i128 << bits => {
            buf.extend_from_slice(&value.to_le_bytes()[..usize::from(*bits) / 8]);
            true
        }
        Shape::Scalar(Scalar::Int(bits))
            if *bits <= 64 && (-(1i128 << (bits - 1))..1i128 << (bits - 1)).contains(&value) =>
        {
            buf.extend_from_slice(&value.to_le_bytes()[..usize::from(*bits) / 8]);
            true
        }
        _ => false,
    }
}

impl TableColumn {
    fn put_missing(&self, facts: &RequestFacts, buf: &mut Vec<u8>) {
        match &self.missing {
            Missing::Bytes(bytes) => buf.extend_from_slice(bytes),
            Missing::Now => put_time(&self.shape, facts.server_time_nanos, buf),
        }
    }
}

/// The zone of a `DateTime('zone')`/`DateTime64(p, 'zone')` column (wrappers looked
/// through), in which its times without an offset are read.
fn zone_of(shape: &Shape) -> Option<&crate::format::ColumnZone> {
    match shape {
        Shape::Nullable(inner) | Shape::LowCardinality(inner) => zone_of(inner),
        Shape::Scalar(Scalar::DateTime { zone } | Scalar::DateTime64 { zone, .. }) => zone.as_ref(),
        _ => None,
    }
}

/// A time into a `DateTime`/`DateTime64` column (wrappers looked through).
fn put_time(shape: &Shape, nanos: i128, buf: &mut Vec<u8>) {
    match shape {
        Shape::Nullable(inner) => {
            buf.push(0);
            put_time(inner, nanos, buf)
        }
        Shape::LowCardinality(inner) => put_time(inner, nanos, buf),
        Shape::Scalar(Scalar::DateTime64 { precision, .. }) => {
            let ticks = i64::try_from(time::ticks(nanos, *precision)).unwrap_or(i64::MAX);
            buf.extend_from_slice(&ticks.to_le_bytes());
        }
        _ => {
            let seconds = u32::try_from(time::seconds(nanos)).unwrap_or(u32::MAX);
            buf.extend_from_slice(&seconds.to_le_bytes());
        }
    }
}

/// The client's address into an `IPv6`, `FixedString(16)`, `IPv4` or `String` column.
fn put_ip(shape: &Shape, ip: Ipv6Addr, buf: &mut Vec<u8>) {
    match shape {
        Shape::Nullable(inner) => {
            buf.push(0);
            put_ip(inner, ip, buf)
        }
        Shape::LowCardinality(inner) => put_ip(inner, ip, buf),
        Shape::Scalar(Scalar::Ipv4) => {
            // An IPv6 client has no IPv4 address: 0.0.0.0.
            let v4 = ip.to_ipv4_mapped().map_or(0, u32::from);
            buf.extend_from_slice(&v4.to_le_bytes());
        }
        Shape::Scalar(Scalar::String) => {
            let text = ip.to_canonical().to_string();
            crate::format::put_leb128(buf, text.len());
            buf.extend_from_slice(text.as_bytes());
        }
        _ => buf.extend_from_slice(&ip.octets()),
    }
}

/// The element count a RowBinary `Array` value starts with (an unsigned LEB128).
fn array_length(bytes: &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}
