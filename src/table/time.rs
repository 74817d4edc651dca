//! Times as clients send them, read once for every table: the formats `/v1/events` has
//! always accepted for `client_time` and `sent_at` (`YYYY-MM-DD hh:mm:ss` in UTC, RFC 3339;
//! [`parse_time`]), and for `Date`, `Date32`, `DateTime` and `DateTime64` columns the same
//! with a fraction of a second, a bare date, and epoch seconds or milliseconds as numbers.

use time::format_description::BorrowedFormatItem;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use crate::format::ColumnZone;

const NANOS: i128 = 1_000_000_000;
/// An integer number at or above this many is taken as milliseconds: 10^11 seconds is the
/// year 5138, 10^11 milliseconds is 1973.
const MILLIS_FROM: i128 = 100_000_000_000;

const PLAIN_FRACTION: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second].[subsecond]");
const DATE: &[BorrowedFormatItem<'static>] = format_description!("[year]-[month]-[day]");

/// The last `Date` day and `DateTime` second a server shows as they were written. The types
/// hold more (`UInt16` days, `UInt32` seconds), but ClickHouse before 21.4 has a calendar
/// that ends on 2106-02-07: it shows a later day, and any second from that day, as
/// 1970-01-01. A value past the range is refused per field instead of being stored as a
/// date nobody sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimeRange {
    /// Days since 1970 of the last `Date`.
    pub last_day: u16,
    /// Seconds since 1970 of the last `DateTime`.
    pub last_second: u32,
}

impl TimeRange {
    /// What the types hold: `Date` to 2149-06-06, `DateTime` to 2106-02-07 06:28:15.
    pub const FULL: Self = Self {
        last_day: u16::MAX,
        last_second: u32::MAX,
    };
    /// ClickHouse before 21.4: `Date` to 2106-02-07, `DateTime` to 2106-02-06 23:59:59.
    pub const UNTIL_2106: Self = Self {
        last_day: 49_710,
        last_second: 49_710 * 86_400 - 1,
    };

    /// The error for a value of `scalar` past this range (or before 1970).
    pub(super) fn refusal(self, scalar: &crate::format::Scalar) -> super::Problem {
        let name = super::type_name(scalar);
        match (self == Self::FULL, scalar) {
            (true, _) => format!("out of range for {name}").into(),
            (false, crate::format::Scalar::Date) => format!(
                "out of range for {name} on this server, which shows a day after 2106-02-07 \
                 as 1970-01-01"
            )
            .into(),
            (false, _) => format!(
                "out of range for {name} on this server, which shows a time from 2106-02-07 \
                 as 1970-01-01"
            )
            .into(),
        }
    }

    /// `/v1/events`' words for a time past this range (or before 1970).
    pub(super) fn strict_refusal(self) -> &'static str {
        match self == Self::FULL {
            true => "outside 1970-01-01 .. 2106-02-07",
            false => "outside 1970-01-01 .. 2106-02-06 23:59:59 on this server",
        }
    }
}

impl Default for TimeRange {
    fn default() -> Self {
        Self::FULL
    }
}

/// What a time field may be given as, in words for errors.
pub const EXPECTED: &str = "expected 'YYYY-MM-DD hh:mm:ss[.fff]' (UTC), RFC 3339, 'YYYY-MM-DD' or epoch seconds/milliseconds";

/// Seconds since 1970 of a time string in the formats without a fraction (`YYYY-MM-DD
/// hh:mm:ss`, RFC 3339), read as [`from_text`] reads them; `None` for any other (which
/// [`from_text`] may still read).
pub fn plain_seconds(s: &str) -> Option<i64> {
    match parse_time(s) {
        // 20 bytes and less (`YYYY-MM-DD hh:mm:ss`, `...Z`) leave no room for a fraction.
        Ok(seconds) if s.len() <= 20 || !s.contains('.') => Some(seconds),
        _ => None,
    }
}

/// Nanoseconds since 1970 of a time string.
pub fn from_text(s: &str) -> Option<i128> {
    if let Ok(seconds) = parse_time(s) {
        // Fast path and leap-second rule shared with /v1/events; no fraction in these.
        if !s.contains('.') {
            return Some(i128::from(seconds) * NANOS);
        }
    }
    if let Ok(t) = PrimitiveDateTime::parse(s, PLAIN_FRACTION) {
        return Some(t.assume_utc().unix_timestamp_nanos());
    }
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    if let Ok(d) = Date::parse(s, DATE) {
        return Some(d.midnight().assume_utc().unix_timestamp_nanos());
    }
    None
}

/// [`from_text`] for a column in `zone`: a time written without an offset (`YYYY-MM-DD
/// hh:mm:ss[.fff]`, a bare date) is that zone's wall-clock time, as ClickHouse reads it;
/// one with an offset or `Z` is that instant whatever the zone.
pub fn from_text_in(s: &str, zone: Option<&ColumnZone>) -> Option<i128> {
    let nanos = from_text(s)?;
    match zone {
        // After the date (`YYYY-MM-DD`), only an offset has `Z`, `+` or `-`.
        Some(zone)
            if !s
                .get(10..)
                .is_some_and(|t| t.contains(['Z', 'z', '+', '-'])) =>
        {
            zone.local_to_utc(nanos)
        }
        _ => Some(nanos),
    }
}

/// Nanoseconds since 1970 of an epoch number's text: seconds (a fraction allowed), or
/// milliseconds when it is an integer of [`MILLIS_FROM`] or more.
pub fn from_number(text: &str) -> Option<i128> {
    let text = text.trim();
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if text.contains(['e', 'E']) {
        let seconds: f64 = text.parse().ok()?;
        return seconds
            .is_finite()
            .then_some((seconds * 1e9) as i128)
            .filter(|n| n.unsigned_abs() < 1 << 100);
    }
    let whole: i128 = int.parse().ok().filter(|_| int.len() <= 30)?;
    if frac.is_empty() && whole.abs() >= MILLIS_FROM {
        return Some(whole * 1_000_000);
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i128 = 0;
    for (i, c) in frac.bytes().take(9).enumerate() {
        nanos += i128::from(c - b'0') * 10i128.pow(8 - i as u32);
    }
    let sign = if int.starts_with('-') { -1 } else { 1 };
    Some(whole * NANOS + sign * nanos)
}

/// Whole seconds of a time in nanoseconds (rounded down). Through `i64` when it fits, as
/// every plausible time does: an `i128` division is a library call, several per event.
pub fn seconds(nanos: i128) -> i128 {
    div_floor(nanos, NANOS)
}

/// `n.div_euclid(d)` for a positive `d`, through `i64` when both fit.
fn div_floor(n: i128, d: i128) -> i128 {
    match (i64::try_from(n), i64::try_from(d)) {
        (Ok(n), Ok(d)) => i128::from(n.div_euclid(d)),
        _ => n.div_euclid(d),
    }
}

/// Days since 1970 of nanoseconds since 1970 (rounded down).
pub fn days(nanos: i128) -> i128 {
    div_floor(nanos, 86_400 * NANOS)
}

/// Ticks of 10^-`precision` seconds (rounded down, as ClickHouse truncates).
pub fn ticks(nanos: i128, precision: u8) -> i128 {
    div_floor(nanos, 10i128.pow(9 - u32::from(precision.min(9))))
}

/// `YYYY-MM-DD hh:mm:ss`, the original service's format, taken as UTC.
const PLAIN_TIME: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// A time as clients send them (`YYYY-MM-DD hh:mm:ss` UTC, or RFC 3339), in seconds since
/// 1970. Also used for `sent_at`.
///
/// A leap second (`23:59:60`) is accepted in both formats and stored as `23:59:59`, the
/// last whole second before it: it is a valid UTC time, and the column cannot hold it.
pub fn parse_time(s: &str) -> Result<i64, &'static str> {
    if let Some(t) = parse_plain_time(s.as_bytes()) {
        return Ok(t);
    }
    if let Some(date) = s.strip_suffix(" 23:59:60")
        && let Some(t) = parse_plain_time(format!("{date} 23:59:59").as_bytes())
    {
        return Ok(t);
    }
    PrimitiveDateTime::parse(s, PLAIN_TIME)
        .map(PrimitiveDateTime::assume_utc)
        .or_else(|_| OffsetDateTime::parse(s, &Rfc3339))
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| "expected 'YYYY-MM-DD hh:mm:ss' (UTC) or RFC 3339")
}

/// `YYYY-MM-DD hh:mm:ss` read digit by digit: the format nearly every event uses, several
/// times faster than the general parser, which still handles everything else (and decides
/// what is an error). The calendar is checked here as the general parser checks it (months
/// 1–12, the month's days with leap years, hours below 24, minutes and seconds below 60),
/// and the day counted with Howard Hinnant's `days_from_civil`.
fn parse_plain_time(b: &[u8]) -> Option<i64> {
    let &[
        y1,
        y2,
        y3,
        y4,
        b'-',
        m1,
        m2,
        b'-',
        d1,
        d2,
        b' ',
        h1,
        h2,
        b':',
        i1,
        i2,
        b':',
        s1,
        s2,
    ] = b
    else {
        return None;
    };
    let digit = |c: u8| c.is_ascii_digit().then(|| i64::from(c - b'0'));
    let two = |a: u8, b: u8| Some(digit(a)? * 10 + digit(b)?);
    let year = two(y1, y2)? * 100 + two(y3, y4)?;
    let (month, day) = (two(m1, m2)?, two(d1, d2)?);
    let (hour, minute, second) = (two(h1, h2)?, two(i1, i2)?, two(s1, s2)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if !(1..=month_days).contains(&day) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar (Howard Hinnant's
/// `days_from_civil`), for years 0 to 9999.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_numbers_give_the_same_instant() {
        let t = 1_606_867_140 * NANOS;
        for s in [
            "2020-12-01 23:59:00",
            "2020-12-01T23:59:00Z",
            "2020-12-02T00:59:00+01:00",
        ] {
            assert_eq!(from_text(s), Some(t), "{s}");
        }
        assert_eq!(from_text("2020-12-01 23:59:00.25"), Some(t + NANOS / 4));
        assert_eq!(
            from_text("2020-12-01T23:59:00.123456789Z"),
            Some(t + 123_456_789)
        );
        assert_eq!(from_text("2020-12-01"), Some(1_606_780_800 * NANOS));
        assert_eq!(from_text("yesterday"), None);
        assert_eq!(from_number("1606867140"), Some(t));
        assert_eq!(from_number("1606867140000"), Some(t));
        assert_eq!(from_number("1606867140.5"), Some(t + NANOS / 2));
        assert_eq!(from_number("-1.5"), Some(-NANOS - NANOS / 2));
        assert_eq!(ticks(t + 123_456_789, 3), 1_606_867_140_123);
        assert_eq!(days(-1), -1);
    }

    // The formats `/v1/events` has always accepted.

    use time::macros::datetime;

    #[test]
    fn a_leap_second_is_the_second_before_it_in_both_formats() {
        let expected = datetime!(2016-12-31 23:59:59 UTC).unix_timestamp();
        assert_eq!(parse_time("2016-12-31 23:59:60"), Ok(expected));
        assert_eq!(parse_time("2016-12-31T23:59:60Z"), Ok(expected));
        assert!(parse_time("2016-12-31 23:58:60").is_err());
    }

    #[test]
    fn the_fast_time_path_agrees_with_the_general_parser() {
        for s in [
            "2020-12-01 23:59:00",
            "1970-01-01 00:00:00",
            "2024-02-29 12:34:56",
            "2023-02-29 00:00:00",
            "2020-13-01 00:00:00",
            "2020-12-01 24:00:00",
            "2020-12-01 23:60:00",
            "2020-12-01 23:59:60",
            "2020-12-0a 23:59:00",
            "+020-12-01 23:59:00",
            "0000-01-01 00:00:00",
            "0000-02-29 00:00:00",
            "1900-02-29 00:00:00",
            "2000-02-29 23:59:59",
            "2100-02-29 00:00:00",
            "9999-12-31 23:59:59",
            "2020-00-10 00:00:00",
            "2020-04-31 00:00:00",
            "2020-04-00 00:00:00",
        ] {
            let general = PrimitiveDateTime::parse(s, PLAIN_TIME)
                .ok()
                .map(|t| t.assume_utc().unix_timestamp());
            assert_eq!(parse_plain_time(s.as_bytes()), general, "{s}");
        }
        // Every day of four centuries (leap rules included) and every second of a day.
        let day = |days: i64| time::Date::from_julian_day(2_440_588 + days as i32);
        for days in (-719_528..2_932_897)
            .step_by(7)
            .chain(-719_528..-719_528 + 146_097)
        {
            let date = day(days).expect("a date in range");
            let s = format!("{date} 12:34:56");
            assert_eq!(
                parse_plain_time(s.as_bytes()),
                Some(days * 86_400 + 45_296),
                "{s}"
            );
        }
        // The last days of every month of every year: which exist is the leap rule's answer.
        for year in 0..=9999 {
            for (month, day) in (1..=12).flat_map(|m| (28..=32).map(move |d| (m, d))) {
                let s = format!("{year:04}-{month:02}-{day:02} 00:00:00");
                let general = PrimitiveDateTime::parse(&s, PLAIN_TIME)
                    .ok()
                    .map(|t| t.assume_utc().unix_timestamp());
                assert_eq!(parse_plain_time(s.as_bytes()), general, "{s}");
            }
        }
        for second in 0..86_400 {
            let s = format!(
                "2024-02-29 {:02}:{:02}:{:02}",
                second / 3600,
                second / 60 % 60,
                second % 60
            );
            assert_eq!(
                parse_plain_time(s.as_bytes()),
                Some(1_709_164_800 + second),
                "{s}"
            );
        }
    }
}
