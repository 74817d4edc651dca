//! The plain scan: the pass's reading of a body without serde, for tables without
//! settings. It walks the bytes itself (strings eight bytes at a time, integers digit by
//! digit, each key first compared in place with the name the previous event had at its
//! position) and hands each field to the same [`Pass`] steps, so the rows and problems are
//! those of the serde reading by construction.
//!
//! It reads only what it can read exactly as serde_json does, and gives way on anything
//! else, the body then read by serde_json as before: a number with a fraction or exponent
//! where a column reads it, an integer past 64 bits, `-0`, a control character in a
//! string, an element that is not an object, anything not JSON. Strings with escapes,
//! composite values and the raw text some columns keep are handed to serde_json itself,
//! on just that value.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::{Composite, Events, Pass, Slot, Values, same_bytes};
use crate::table::event::ndjson_lines;

/// The scan met something it does not read exactly as serde_json does.
pub(super) struct GiveWay;

/// Reads the body's events into `pass`; `None` when it gives way (`pass` is then spent).
pub(super) fn events<'de>(pass: &mut Pass<'_, 'de>, events: Events<'de>) -> Option<()> {
    match events {
        Events::Array(text) => Scan::new(text).array(pass).ok(),
        Events::Object(text) => Scan::new(text).whole_object(pass).ok(),
        Events::Lines(text) => {
            for line in ndjson_lines(text) {
                if pass.index == pass.max {
                    return None;
                }
                match line.starts_with('{') {
                    true => Scan::new(line).whole_object(pass).ok()?,
                    false => pass.not_an_object_line(),
                }
            }
            Some(())
        }
        Events::None => None,
    }
}

/// A position in one JSON text.
struct Scan<'de> {
    text: &'de str,
    at: usize,
}

impl<'de> Scan<'de> {
    fn new(text: &'de str) -> Self {
        Scan { text, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    /// JSON's whitespace, as serde_json skips it.
    fn whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    /// `byte` next (after whitespace), taken.
    fn expect(&mut self, byte: u8) -> Result<(), GiveWay> {
        self.whitespace();
        match self.peek() == Some(byte) {
            true => {
                self.at += 1;
                Ok(())
            }
            false => Err(GiveWay),
        }
    }

    /// Nothing but whitespace left.
    fn end(&mut self) -> Result<(), GiveWay> {
        self.whitespace();
        match self.at == self.text.len() {
            true => Ok(()),
            false => Err(GiveWay),
        }
    }

    /// A JSON array of event objects, the whole text.
    fn array(&mut self, pass: &mut Pass<'_, 'de>) -> Result<(), GiveWay> {
        self.expect(b'[')?;
        self.whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return self.end();
        }
        loop {
            self.whitespace();
            self.object(pass)?;
            if pass.index > pass.max {
                return Err(GiveWay);
            }
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return self.end();
                }
                _ => return Err(GiveWay),
            }
        }
    }

    /// One event object, the whole text.
    fn whole_object(&mut self, pass: &mut Pass<'_, 'de>) -> Result<(), GiveWay> {
        self.whitespace();
        self.object(pass)?;
        self.end()
    }

    /// One event object, from its `{`.
    fn object(&mut self, pass: &mut Pass<'_, 'de>) -> Result<(), GiveWay> {
        if self.peek() != Some(b'{') {
            return Err(GiveWay);
        }
        self.at += 1;
        pass.begin();
        self.whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            pass.end();
            return Ok(());
        }
        let mut position = 0;
        loop {
            self.whitespace();
            if self.peek() != Some(b'"') {
                return Err(GiveWay);
            }
            // The key the previous event had here, compared in place: the usual case.
            if let Some(i) = self.guessed_key(pass, position) {
                self.expect(b':')?;
                self.whitespace();
                pass.take(i, self)?;
            } else {
                let key = self.string::<true>()?;
                self.expect(b':')?;
                self.whitespace();
                match pass.column_of(position, &key) {
                    (Some(i), _) => pass.take(i, self)?,
                    _ => {
                        self.skip()?;
                        pass.unknown(&key);
                    }
                }
            }
            position += 1;
            self.whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    pass.end();
                    return Ok(());
                }
                _ => return Err(GiveWay),
            }
        }
    }

    /// The column whose name the key at the opening quote spells exactly (then taken), if
    /// it is the one the previous event had at `position`: the same column the key's
    /// reading and lookup would give, without reading it.
    #[inline(always)]
    fn guessed_key(&mut self, pass: &Pass<'_, 'de>, position: usize) -> Option<usize> {
        let (i, name) = pass.guessed_name(position)?;
        let after = self.at + 1 + name.len();
        let bytes = self.text.as_bytes();
        let spelled = same_bytes(bytes.get(self.at + 1..after)?, name.as_bytes());
        (spelled && bytes.get(after) == Some(&b'"')).then(|| {
            self.at = after + 1;
            i
        })
    }

    /// A string, from its opening quote: borrowed when it has no escapes; with escapes,
    /// read by serde_json (`KEEP`: decoded, else only checked, as serde_json checks a
    /// string it skips). Inlined: returned through memory, the borrowed string cost a
    /// store-forwarding stall per field.
    #[inline(always)]
    fn string<const KEEP: bool>(&mut self) -> Result<Cow<'de, str>, GiveWay> {
        let bytes = self.text.as_bytes();
        let start = self.at + 1;
        let end = plain_run(bytes, start);
        match bytes.get(end) {
            Some(b'"') => {
                self.at = end + 1;
                // SAFETY: `start` follows a `"` and `end` is at one: both are ASCII bytes of
                // `text`, so both offsets are on character boundaries within it.
                Ok(Cow::Borrowed(unsafe {
                    self.text.get_unchecked(start..end)
                }))
            }
            _ => self.escaped::<KEEP>(end),
        }
    }

    /// The rest of a string that is not plain at `end`: with escapes, the closing quote
    /// found (each escape's next byte is not one) and the literal read by serde_json.
    #[inline(never)]
    fn escaped<const KEEP: bool>(&mut self, mut end: usize) -> Result<Cow<'de, str>, GiveWay> {
        let bytes = self.text.as_bytes();
        while bytes.get(end) == Some(&b'\\') {
            end = plain_run(bytes, end + 2);
        }
        if bytes.get(end) != Some(&b'"') {
            return Err(GiveWay);
        }
        let literal = &self.text[self.at..=end];
        self.at = end + 1;
        match KEEP {
            true => serde_json::from_str::<String>(literal).map(Cow::Owned),
            false => serde_json::from_str::<IgnoredAny>(literal).map(|_| Cow::Borrowed("")),
        }
        .map_err(|_| GiveWay)
    }

    /// A plain integer as serde_json gives it: non-negative as `u64`, negative as `i64`.
    fn integer(&mut self) -> Result<Slot<'de>, GiveWay> {
        let bytes = self.text.as_bytes();
        let negative = bytes[self.at] == b'-';
        let mut at = self.at + usize::from(negative);
        let mut n: u64 = match bytes.get(at) {
            Some(&d @ b'0'..=b'9') => u64::from(d - b'0'),
            _ => return Err(GiveWay),
        };
        at += 1;
        if n != 0 {
            while let Some(&d @ b'0'..=b'9') = bytes.get(at) {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or(GiveWay)?;
                at += 1;
            }
        }
        // A fraction, an exponent (serde_json's float) or a leading zero (its error).
        if let Some(b'.' | b'e' | b'E' | b'0'..=b'9') = bytes.get(at) {
            return Err(GiveWay);
        }
        self.at = at;
        match negative {
            false => Ok(Slot::UInt(n)),
            // `-0` and numbers below `i64::MIN` are floats to serde_json.
            true => match (n as i64).wrapping_neg() {
                v if v < 0 => Ok(Slot::Int(v)),
                _ => Err(GiveWay),
            },
        }
    }

    /// A number's grammar, as serde_json checks a number it skips.
    fn number(&mut self) -> Result<(), GiveWay> {
        let bytes = self.text.as_bytes();
        let digits = |mut at: usize| {
            while let Some(b'0'..=b'9') = bytes.get(at) {
                at += 1;
            }
            at
        };
        let mut at = self.at + usize::from(bytes[self.at] == b'-');
        at = match bytes.get(at) {
            Some(b'0') if !matches!(bytes.get(at + 1), Some(b'0'..=b'9')) => at + 1,
            Some(b'1'..=b'9') => digits(at + 1),
            _ => return Err(GiveWay),
        };
        if bytes.get(at) == Some(&b'.') {
            let after = digits(at + 1);
            if after == at + 1 {
                return Err(GiveWay);
            }
            at = after;
        }
        if let Some(b'e' | b'E') = bytes.get(at) {
            at += 1;
            if let Some(b'+' | b'-') = bytes.get(at) {
                at += 1;
            }
            let after = digits(at);
            if after == at {
                return Err(GiveWay);
            }
            at = after;
        }
        self.at = at;
        Ok(())
    }

    /// `true`, `false` or `null`, spelled out.
    fn literal(&mut self, word: &str) -> Result<(), GiveWay> {
        match self.text.as_bytes()[self.at..].starts_with(word.as_bytes()) {
            true => {
                self.at += word.len();
                Ok(())
            }
            false => Err(GiveWay),
        }
    }

    /// The next value read by serde_json (composites and raw text). serde_json skips a
    /// value (`IgnoredAny`, the raw text) without its nesting limit, whatever encloses it,
    /// so reading the value alone accepts what reading the whole body would.
    fn by_serde<T: Deserialize<'de>>(&mut self) -> Result<T, GiveWay> {
        let rest = &self.text[self.at..];
        let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<T>();
        let value = stream.next().ok_or(GiveWay)?.map_err(|_| GiveWay)?;
        self.at += stream.byte_offset();
        Ok(value)
    }
}

impl<'de> Values<'de> for Scan<'de> {
    type Error = GiveWay;

    fn skip(&mut self) -> Result<(), GiveWay> {
        match self.peek() {
            Some(b'"') => self.string::<false>().map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'[' | b'{') => self.by_serde::<IgnoredAny>().map(drop),
            _ => Err(GiveWay),
        }
    }

    fn raw(&mut self) -> Result<&'de RawValue, GiveWay> {
        self.by_serde()
    }

    /// As `Scalar` keeps it; serde_json gives only negative integers as `i64`, so a strict
    /// column's reading is the same.
    fn scalar<const S: bool>(&mut self) -> Result<Slot<'de>, GiveWay> {
        match self.peek() {
            Some(b'"') => self.string::<true>().map(Slot::Str),
            Some(b'-' | b'0'..=b'9') => self.integer(),
            Some(b't') => self.literal("true").map(|()| Slot::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Slot::Bool(false)),
            Some(b'n') => self.literal("null").map(|()| Slot::Null),
            Some(b'[') => self
                .by_serde::<IgnoredAny>()
                .map(|_| Slot::Composite(Composite::Array)),
            Some(b'{') => self
                .by_serde::<IgnoredAny>()
                .map(|_| Slot::Composite(Composite::Object)),
            _ => Err(GiveWay),
        }
    }
}

/// Where the plain run of a string's bytes from `at` ends: the first `"`, `\` or control
/// character, eight bytes at a time (each test finds zero bytes, as in `memchr`'s
/// fallback; a borrow can mark a byte only above a true match, so the lowest mark is one).
#[inline(always)]
fn plain_run(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
        let word = u64::from_le_bytes(*chunk);
        let quote = word ^ (ONES * u64::from(b'"'));
        let slash = word ^ (ONES * u64::from(b'\\'));
        let marks = ((quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGH;
        if marks != 0 {
            return at + (marks.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&b) = bytes.get(at) {
        if matches!(b, b'"' | b'\\' | 0..0x20) {
            break;
        }
        at += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_runs_end_at_quotes_backslashes_and_control_characters() {
        for (text, end) in [
            ("abc\"", 3),
            ("abcdefghijkl\"", 12),
            ("abcdefgh\\n", 8),
            ("abcdefghi\u{1}", 9),
            ("ab\u{1f}cdefghijk\"", 2),
            ("é€😀 ok ~\u{7f}\"", "é€😀 ok ~\u{7f}".len()),
            ("no end at all", 13),
            ("", 0),
        ] {
            assert_eq!(plain_run(text.as_bytes(), 0), end, "{text:?}");
        }
        // Every position of the mark within a word, and past the first word.
        for len in 0..20 {
            let text = format!("{}\"", "x".repeat(len));
            assert_eq!(plain_run(text.as_bytes(), 0), len);
        }
    }
}
