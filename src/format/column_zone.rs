//! The time zone of a `DateTime('zone')` / `DateTime64(p, 'zone')` column: times written
//! without an offset are that zone's wall-clock time, as ClickHouse itself reads them.

use std::fmt;

/// A type names a zone no database here knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0}")]
pub struct UnknownZone(pub String);

/// A column's time zone other than UTC, looked up once when the type is read (in the
/// system's zone database, or the copy built into the binary when it has none).
#[derive(Clone, PartialEq, Eq)]
pub struct ColumnZone {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl fmt::Debug for ColumnZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ColumnZone({})", self.name)
    }
}

impl ColumnZone {
    /// The zone of a type's quoted zone argument (`'Europe/Berlin'`): `Ok(None)` for UTC
    /// (nothing to convert), an error for a zone no database here knows.
    pub fn parse(argument: &str) -> Result<Option<Self>, UnknownZone> {
        let name = argument.trim().trim_matches('\'');
        if matches!(name, "UTC" | "Etc/UTC" | "") {
            return Ok(None);
        }
        let zone = jiff::tz::TimeZone::get(name).map_err(|_| UnknownZone(name.to_string()))?;
        Ok(Some(Self {
            name: name.to_string(),
            zone,
        }))
    }

    /// The zone's name, as the type spells it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Nanoseconds since 1970 of a wall-clock time in this zone, given as the nanoseconds
    /// it would be in UTC. A time skipped by a clock change reads as after it, a repeated
    /// one as its first occurrence (ClickHouse's and most libraries' choice).
    pub fn local_to_utc(&self, wall_as_utc: i128) -> Option<i128> {
        let civil = jiff::tz::TimeZone::UTC
            .to_datetime(jiff::Timestamp::from_nanosecond(wall_as_utc).ok()?);
        Some(self.zone.to_timestamp(civil).ok()?.as_nanosecond())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn berlin_wall_clock_is_one_or_two_hours_ahead_of_utc_and_utc_needs_nothing() {
        let berlin = ColumnZone::parse("'Europe/Berlin'").unwrap().unwrap();
        let hour = 3_600 * 1_000_000_000i128;
        // 2020-12-01 12:00 (winter, +01:00) and 2020-07-01 12:00 (summer, +02:00).
        let winter = 1_606_824_000 * 1_000_000_000i128;
        let summer = 1_593_604_800 * 1_000_000_000i128;
        assert_eq!(berlin.local_to_utc(winter), Some(winter - hour));
        assert_eq!(berlin.local_to_utc(summer), Some(summer - 2 * hour));
        assert_eq!(ColumnZone::parse("'UTC'"), Ok(None));
        assert_eq!(
            ColumnZone::parse("'Nowhere/Atlantis'"),
            Err(UnknownZone("Nowhere/Atlantis".into()))
        );
    }
}
