//! Parsing the values of flags and formatting numbers for people.
//!
//! One duration syntax for every flag that takes one (`--window`,
//! `--max-future-skew`, `--durability interval:...`, relative times):
//! one or more `<integer><unit>` parts, units from largest to smallest, each
//! at most once: `w` (7 days), `d`, `h`, `m`, `s`, `ms`, `us` (`1w`,
//! `1d12h`, `10ms`, `90s`). One time syntax for every flag that takes a
//! time (`--since`, `--until`, `--as-of`, `--at`): RFC 3339 with a zone, a
//! date alone (midnight UTC), `now`, or a duration meaning that long before
//! now.

use std::time::Duration;

use enforcelog::timestamp::{parse_us, MIN_US};
use enforcelog::{now_us, Durability};

/// The units of the duration syntax, largest first, in microseconds.
const UNITS: [(&str, u64); 7] = [
    ("w", 7 * 86_400_000_000),
    ("d", 86_400_000_000),
    ("h", 3_600_000_000),
    ("m", 60_000_000),
    ("s", 1_000_000),
    ("ms", 1_000),
    ("us", 1),
];

/// What every duration error ends with.
const DURATION_SYNTAX: &str =
    "expected a duration such as 1w, 1d12h, 30d, 90s or 10ms (units w d h m s ms us, largest first)";

/// Parses a duration in the one syntax every flag uses. Zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(format!("{text:?}: {DURATION_SYNTAX}"));
    }
    let mut total_us: u64 = 0;
    // Index into UNITS of the next unit allowed: each smaller than the last.
    let mut next_unit = 0;
    while !rest.is_empty() {
        let digits_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let digits = &rest[..digits_len];
        rest = &rest[digits_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic() && c != 'µ')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit = if unit == "µs" { "us" } else { unit };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: {DURATION_SYNTAX}"))?;
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("{text:?}: {DURATION_SYNTAX}"));
        };
        if index < next_unit {
            return Err(format!(
                "{text:?}: units must go from largest to smallest, each once"
            ));
        }
        next_unit = index + 1;
        total_us = n
            .checked_mul(UNITS[index].1)
            .and_then(|us| total_us.checked_add(us))
            .ok_or_else(|| format!("{text:?}: too long"))?;
    }
    if total_us == 0 {
        return Err(format!("{text:?}: must be longer than zero"));
    }
    Ok(Duration::from_micros(total_us))
}

/// A duration in the syntax [`parse_duration`] reads, largest units first,
/// weeks left as days (`30d`, `1d12h`, `1m30s`, `10ms`).
pub fn format_duration(duration: Duration) -> String {
    // One writer of the syntax: the library's, which the stats JSON uses.
    enforcelog::store::window_label(duration)
}

/// [`parse_duration`] within `min..=max` (both said in the error).
fn parse_duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < min || d > max {
        return Err(format!(
            "{text:?}: must be between {} and {}",
            format_duration(min),
            format_duration(max)
        ));
    }
    Ok(d)
}

/// Up to 100 years: longer windows only overflow time arithmetic.
const WINDOW_MAX: Duration = Duration::from_secs(100 * 366 * 86_400);

/// Parses a statistics window (`30d`, `1d12h`, `90s`): 1 second to 100 years.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    parse_duration_within(text, Duration::from_secs(1), WINDOW_MAX)
}

/// A window as the CLI prints it in the `window` field: `30d`, `1d12h`.
pub fn window_label(window: Duration) -> String {
    format_duration(window)
}

/// Parses `--max-future-skew`: a duration (up to 100 years) or `none` (no
/// limit, for an archive with far-future times).
pub fn parse_skew(text: &str) -> Result<Duration, String> {
    if text == "none" {
        return Ok(Duration::MAX);
    }
    parse_duration_within(text, Duration::from_micros(1), WINDOW_MAX)
}

/// Parses `--durability`: `fsync`, `none` or `interval:<duration>` (1 µs
/// to 1 hour).
pub fn parse_durability(text: &str) -> Result<Durability, String> {
    match text.to_ascii_lowercase().as_str() {
        "fsync" => Ok(Durability::Fsync),
        "none" => Ok(Durability::None),
        other => {
            let Some(span) = other.strip_prefix("interval:") else {
                return Err(format!(
                    "{text:?}: expected fsync, none or interval:<duration> (e.g. interval:10ms)"
                ));
            };
            let interval =
                parse_duration_within(span, Duration::from_micros(1), Duration::from_secs(3600))?;
            Ok(Durability::Interval(interval))
        }
    }
}

/// Parses a time (for `clap`): RFC 3339 with a zone, a date alone
/// (`2026-11-01` = midnight UTC), `now`, or a duration meaning that long
/// before now (`24h`, `1d12h`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_time_at(text, now_us())
}

/// [`parse_time`] with `now_us` as now.
pub fn parse_time_at(text: &str, now_us: i64) -> Result<i64, String> {
    let trimmed = text.trim();
    if trimmed == "now" {
        return Ok(now_us);
    }
    if is_date(trimmed) {
        return parse_us(&format!("{trimmed}T00:00:00Z")).map_err(|e| e.to_string());
    }
    if trimmed.starts_with(|c: char| c.is_ascii_digit()) && !trimmed.contains([':', '-']) {
        let ago = parse_duration(trimmed)?;
        let ago_us = i64::try_from(ago.as_micros()).unwrap_or(i64::MAX);
        let at = now_us.saturating_sub(ago_us);
        if at < MIN_US {
            return Err(format!("{text:?}: reaches before year 0001"));
        }
        return Ok(at);
    }
    parse_us(trimmed).map_err(|e| {
        format!(
            "{e} (a time is RFC 3339 with a zone, a date such as 2026-11-01, now, or a duration \
             before now such as 24h)"
        )
    })
}

/// `YYYY-MM-DD`.
fn is_date(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// The earliest time `record` and `import` accept by default: events
/// stamped before it are refused unless `--not-before` says otherwise (a
/// typo such as 0226 for 2026, or a clock that never got set, is far more
/// likely than an enforcement in the last century).
pub const NOT_BEFORE_DEFAULT: &str = "2000-01-01";

/// Parses `--not-before`: a time, or `none` (no lower bound).
pub fn parse_not_before(text: &str) -> Result<i64, String> {
    if text == "none" {
        return Ok(MIN_US);
    }
    parse_time(text)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate per second, rounded, with thousands separators.
pub fn per_second(count: u64, seconds: f64) -> String {
    if seconds <= 0.0 {
        return "-".into();
    }
    thousands((count as f64 / seconds).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_forms() {
        assert_eq!(parse_durability("fsync"), Ok(Durability::Fsync));
        assert_eq!(parse_durability("NONE"), Ok(Durability::None));
        assert_eq!(
            parse_durability("interval:10ms"),
            Ok(Durability::Interval(Duration::from_millis(10)))
        );
        assert_eq!(
            parse_durability("interval:1s500ms"),
            Ok(Durability::Interval(Duration::from_millis(1500)))
        );
        for bad in [
            "",
            "interval",
            "interval:",
            "interval:0ms",
            "interval:5",
            "interval:2h",
            "sync",
        ] {
            assert!(parse_durability(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_duration_syntax_with_compound_forms() {
        let cases: [(&str, u64); 9] = [
            ("1w", 7 * 86_400_000_000),
            ("1d12h", 36 * 3_600_000_000),
            ("36h", 36 * 3_600_000_000),
            ("10ms", 10_000),
            ("90s", 90_000_000),
            ("1m30s", 90_000_000),
            ("500us", 500),
            ("500µs", 500),
            ("2w3d4h5m6s7ms8us", 1_483_506_007_008),
        ];
        for (text, us) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_micros(us)),
                "{text}"
            );
        }
        for bad in [
            "",
            "0s",
            "d",
            "30",
            "30x",
            "-1d",
            "1h1d",
            "1h1h",
            "1.5h",
            "1 h",
            "h1",
            "99999999999999999999w",
            "3000000000000w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_roundtrip_through_their_text() {
        for text in [
            "30d", "7d", "1d12h", "15m", "1m30s", "10ms", "1s500ms", "1us",
        ] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(window_label(parse_window("48h").unwrap()), "2d");
        assert_eq!(window_label(parse_window("1w").unwrap()), "7d");
        assert_eq!(window_label(parse_window("36h").unwrap()), "1d12h");
        for bad in ["0d", "500ms", "99999d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = parse_us("2026-11-25T10:00:00Z").unwrap();
        let at = |text: &str| parse_time_at(text, now);
        assert_eq!(at("2026-11-25T11:00:00+01:00"), Ok(now));
        assert_eq!(
            at("2026-11-01"),
            parse_us("2026-11-01T00:00:00Z").map_err(|e| e.to_string())
        );
        assert_eq!(at("now"), Ok(now));
        assert_eq!(
            at("24h"),
            parse_us("2026-11-24T10:00:00Z").map_err(|e| e.to_string())
        );
        assert_eq!(
            at("1d12h"),
            parse_us("2026-11-23T22:00:00Z").map_err(|e| e.to_string())
        );
        for bad in [
            "2026-11-25T10:00:00",
            "2026-13-01",
            "2026-11-1",
            "yesterday",
            "",
            "0s",
            "3000000w",
        ] {
            assert!(at(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
