//! Timestamps: microseconds since the Unix epoch (UTC), and their RFC 3339
//! text form.
//!
//! Text in must be RFC 3339 with a zone (`Z` or `±hh:mm`); up to nine
//! fractional digits are accepted and truncated to microseconds. Text out is
//! always UTC with exactly six fractional digits and `Z`, e.g.
//! `2026-11-25T10:00:00.000000Z`, so that it sorts as it compares.
//!
//! The range is years 0001 to 9999 (what four-digit RFC 3339 years can
//! say): [`MIN_US`]..=[`MAX_US`].

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// `0001-01-01T00:00:00.000000Z` in microseconds since the Unix epoch.
pub const MIN_US: i64 = -62_135_596_800_000_000;
/// `9999-12-31T23:59:59.999999Z` in microseconds since the Unix epoch.
pub const MAX_US: i64 = 253_402_300_799_999_999;

/// Why text is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not RFC 3339 with a zone.
    #[error("{0:?} is not an RFC 3339 time with a zone (e.g. 2026-11-25T10:00:00Z)")]
    Syntax(String),
    /// Outside years 0001..=9999.
    #[error("{0} is outside years 0001..=9999")]
    OutOfRange(String),
}

/// Whether `us` lies in the supported range.
pub fn in_range(us: i64) -> bool {
    (MIN_US..=MAX_US).contains(&us)
}

/// Parses RFC 3339 text into microseconds since the Unix epoch.
///
/// ```
/// use enforcelog::timestamp::{format_us, parse_us};
/// let us = parse_us("2026-11-25T11:00:00.5+01:00").unwrap();
/// assert_eq!(format_us(us), "2026-11-25T10:00:00.500000Z");
/// assert!(parse_us("2026-11-25T10:00:00").is_err()); // no zone
/// ```
pub fn parse_us(text: &str) -> Result<i64, TimestampError> {
    let parsed = OffsetDateTime::parse(text.trim(), &Rfc3339)
        .map_err(|_| TimestampError::Syntax(text.to_string()))?;
    let us = parsed.unix_timestamp_nanos().div_euclid(1_000);
    i64::try_from(us)
        .ok()
        .filter(|&us| in_range(us))
        .ok_or_else(|| TimestampError::OutOfRange(text.to_string()))
}

/// Formats microseconds since the Unix epoch as UTC RFC 3339 with six
/// fractional digits and `Z`. Values outside the range are clamped to it.
pub fn format_us(us: i64) -> String {
    let us = us.clamp(MIN_US, MAX_US);
    let format =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{us}us"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_roundtrip() {
        assert_eq!(format_us(MIN_US), "0001-01-01T00:00:00.000000Z");
        assert_eq!(format_us(MAX_US), "9999-12-31T23:59:59.999999Z");
        assert_eq!(parse_us("0001-01-01T00:00:00Z"), Ok(MIN_US));
        assert_eq!(parse_us("9999-12-31T23:59:59.999999Z"), Ok(MAX_US));
        assert_eq!(format_us(-1), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn roundtrip_of_many_values() {
        for us in [
            0,
            1,
            -1,
            1_764_028_800_000_000,
            999_999,
            -1_000_001,
            MAX_US,
            MIN_US,
        ] {
            assert_eq!(parse_us(&format_us(us)), Ok(us), "{us}");
        }
    }

    #[test]
    fn text_without_zone_or_garbage_is_refused() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T10:00:00",
            "yesterday",
            "2026-13-01T00:00:00Z",
        ] {
            assert!(
                matches!(parse_us(bad), Err(TimestampError::Syntax(_))),
                "{bad}"
            );
        }
    }
}
