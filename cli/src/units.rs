//! Parsing the values of flags (durations, windows, durability, times) and
//! formatting numbers for people.

use std::time::Duration;

use enforcelog::timestamp::parse_us;
use enforcelog::Durability;

/// Parses `--durability`: `fsync`, `none` or `interval:<duration>`.
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
            let interval = parse_short_duration(span)?;
            Ok(Durability::Interval(interval))
        }
    }
}

/// Parses a short duration: `500us`, `10ms` or `2s`, at least 1 µs.
fn parse_short_duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = split_number(text);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 10ms, 500us or 1s"))?;
    let d = match unit {
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return Err(format!("{text:?}: the unit must be us, ms or s")),
    };
    if d.is_zero() || d > Duration::from_secs(3600) {
        return Err(format!("{text:?}: must be between 1us and 1 hour"));
    }
    Ok(d)
}

/// Parses a statistics window: `30d`, `24h`, `15m` or `90s`.
pub fn parse_window(text: &str) -> Result<Duration, String> {
    let (digits, unit) = split_number(text);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a window such as 30d, 24h, 15m or 90s"))?;
    let seconds_per_unit = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => return Err(format!("{text:?}: the unit must be d, h, m or s")),
    };
    // Up to 100 years: longer windows only overflow time arithmetic.
    match n.checked_mul(seconds_per_unit) {
        Some(s) if s > 0 && s <= 100 * 366 * 86_400 => Ok(Duration::from_secs(s)),
        _ => Err(format!("{text:?}: must be between 1s and 100 years")),
    }
}

/// A window as the store labels it in JSON keys: `30d`, `24h`, `15m`, `90s`.
pub fn window_label(window: Duration) -> String {
    let s = window.as_secs();
    if s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s.is_multiple_of(3_600) {
        format!("{}h", s / 3_600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn split_number(text: &str) -> (&str, &str) {
    let text = text.trim();
    let at = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text.split_at(at)
}

/// Parses an RFC 3339 time with a zone (for `clap`).
pub fn parse_time(text: &str) -> Result<i64, String> {
    parse_us(text).map_err(|e| e.to_string())
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
        for bad in [
            "",
            "interval",
            "interval:",
            "interval:0ms",
            "interval:5",
            "sync",
        ] {
            assert!(parse_durability(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_roundtrip_through_labels() {
        for text in ["30d", "7d", "24h", "36h", "15m", "90s"] {
            let label = window_label(parse_window(text).unwrap());
            assert_eq!(parse_window(&label), parse_window(text), "{text}");
        }
        assert_eq!(window_label(parse_window("48h").unwrap()), "2d");
        for bad in ["", "0d", "d", "30", "30x", "-1d", "99999999999999d"] {
            assert!(parse_window(bad).is_err(), "{bad}");
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
