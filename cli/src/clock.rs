//! How times are printed: UTC by default (`2026-11-25T10:00:00.000000Z`),
//! or in the local zone when `--local` is given or `TZ` is set
//! (`2026-11-25T11:00:00.000000+01:00`), for people: tables, `tail`'s text
//! lines, `info`. JSON and JSON Lines always print UTC, so that a script's
//! output does not depend on where it runs.
//!
//! The local zone comes from the tz database without a C library call:
//! `TZ` names a zone (`Europe/Paris`, read from /usr/share/zoneinfo), a
//! file (`/path` or `:/path`) or UTC; unset, /etc/localtime. The offset of
//! an instant is the one of the last transition at or before it; an instant
//! after the file's last transition (2037 in the usual "fat" files) keeps
//! that transition's offset. A zone that cannot be read prints UTC, with one
//! warning on stderr.

use std::path::PathBuf;
use std::sync::OnceLock;

use enforcelog::timestamp::format_us;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

use crate::output::note;

/// The zone human output uses, chosen once per run.
static ZONE: OnceLock<Zone> = OnceLock::new();

/// A time zone: a fixed offset, or a table of transitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    /// UTC, printed with `Z`.
    Utc,
    /// Offsets in seconds east of UTC: `before` applies before the first
    /// transition; each `(at_s, offset_s)` from `at_s` on.
    Table {
        before_s: i32,
        transitions: Vec<(i64, i32)>,
    },
}

impl Zone {
    /// The offset east of UTC at `us`, in seconds.
    fn offset_s_at(&self, us: i64) -> i32 {
        match self {
            Zone::Utc => 0,
            Zone::Table {
                before_s,
                transitions,
            } => {
                let at_s = us.div_euclid(1_000_000);
                let i = transitions.partition_point(|(t, _)| *t <= at_s);
                if i == 0 {
                    *before_s
                } else {
                    transitions[i - 1].1
                }
            }
        }
    }
}

/// Chooses the zone of this run: local with `--local` or `TZ` set, else UTC.
pub fn init(local: bool) {
    let tz = std::env::var("TZ").ok().filter(|t| !t.trim().is_empty());
    let zone = if local || tz.is_some() {
        match local_zone(tz.as_deref()) {
            Ok(zone) => zone,
            Err(why) => {
                note(&format!(
                    "warning: times are printed in UTC: the local time zone {why}"
                ));
                Zone::Utc
            }
        }
    } else {
        Zone::Utc
    };
    let _ = ZONE.set(zone);
}

/// `us` for people: in the zone of this run.
pub fn show_us(us: i64) -> String {
    show_us_in(ZONE.get().unwrap_or(&Zone::Utc), us)
}

/// `us` in `zone`: RFC 3339 with 6 fractional digits, `Z` for UTC.
pub fn show_us_in(zone: &Zone, us: i64) -> String {
    let offset_s = zone.offset_s_at(us);
    if *zone == Zone::Utc {
        return format_us(us);
    }
    let shifted = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000)
        .ok()
        .zip(UtcOffset::from_whole_seconds(offset_s).ok())
        .map(|(t, offset)| t.to_offset(offset));
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6][offset_hour sign:mandatory]:[offset_minute]"
    );
    // An instant whose local date leaves years 1..=9999 prints in UTC.
    shifted
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format_us(us))
}

/// The zone `TZ` names, or /etc/localtime.
fn local_zone(tz: Option<&str>) -> Result<Zone, String> {
    let path = match tz.map(|t| t.strip_prefix(':').unwrap_or(t)) {
        None => PathBuf::from("/etc/localtime"),
        Some("UTC" | "UTC0" | "GMT" | "GMT0" | "Etc/UTC" | "Z") => return Ok(Zone::Utc),
        Some(name) if name.starts_with('/') => PathBuf::from(name),
        Some(name) if name.split('/').any(|part| part == ".." || part.is_empty()) => {
            return Err(format!("TZ={name:?} is not a zone name"));
        }
        Some(name) => PathBuf::from("/usr/share/zoneinfo").join(name),
    };
    let bytes =
        std::fs::read(&path).map_err(|e| format!("cannot be read from {}: {e}", path.display()))?;
    parse_tzif(&bytes).ok_or_else(|| format!("in {} is not a TZif file", path.display()))
}

/// Reads a TZif file (RFC 8536): the 64-bit block of version 2 and later,
/// else the 32-bit block. Never panics on any bytes.
pub fn parse_tzif(bytes: &[u8]) -> Option<Zone> {
    let first = Header::read(bytes)?;
    if first.version >= b'2' {
        let second_at = 44usize.checked_add(first.block_len(4)?)?;
        let second = Header::read(bytes.get(second_at..)?)?;
        second.zone(bytes.get(second_at + 44..)?, 8)
    } else {
        first.zone(bytes.get(44..)?, 4)
    }
}

/// The counts of a TZif header.
struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    fn read(bytes: &[u8]) -> Option<Header> {
        if bytes.get(..4)? != b"TZif" {
            return None;
        }
        let count = |i: usize| -> Option<usize> {
            let at = 20 + 4 * i;
            let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
            usize::try_from(u32::from_be_bytes(raw)).ok()
        };
        Some(Header {
            version: *bytes.get(4)?,
            isutcnt: count(0)?,
            isstdcnt: count(1)?,
            leapcnt: count(2)?,
            timecnt: count(3)?,
            typecnt: count(4)?,
            charcnt: count(5)?,
        })
    }

    /// Bytes of the data block with `time_size`-byte times.
    fn block_len(&self, time_size: usize) -> Option<usize> {
        let parts = [
            self.timecnt.checked_mul(time_size + 1)?,
            self.typecnt.checked_mul(6)?,
            self.charcnt,
            self.leapcnt.checked_mul(time_size + 4)?,
            self.isstdcnt,
            self.isutcnt,
        ];
        parts.iter().try_fold(0usize, |a, b| a.checked_add(*b))
    }

    fn zone(&self, data: &[u8], time_size: usize) -> Option<Zone> {
        if self.typecnt == 0 || data.len() < self.block_len(time_size)? {
            return None;
        }
        let times = &data[..self.timecnt * time_size];
        let indexes = &data[times.len()..times.len() + self.timecnt];
        let types_at = times.len() + indexes.len();
        let offset_of = |t: usize| -> Option<i32> {
            let at = types_at + 6 * t;
            Some(i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
        };
        let mut transitions = Vec::with_capacity(self.timecnt);
        for (i, &t) in indexes.iter().enumerate() {
            let raw = &times[i * time_size..(i + 1) * time_size];
            let at_s = if time_size == 8 {
                i64::from_be_bytes(raw.try_into().ok()?)
            } else {
                i64::from(i32::from_be_bytes(raw.try_into().ok()?))
            };
            if usize::from(t) >= self.typecnt {
                return None;
            }
            transitions.push((at_s, offset_of(usize::from(t))?));
        }
        if !transitions.windows(2).all(|w| w[0].0 < w[1].0) {
            return None;
        }
        let before_s = offset_of(0)?;
        if transitions.is_empty() && before_s == 0 {
            return Some(Zone::Utc);
        }
        Some(Zone::Table {
            before_s,
            transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 1 TZif file: UTC+1 before 1000 s, UTC+2 from then on.
    fn two_offsets() -> Vec<u8> {
        let mut b = b"TZif".to_vec();
        b.push(0);
        b.extend([0u8; 15]);
        for count in [0u32, 0, 0, 1, 2, 4] {
            b.extend(count.to_be_bytes());
        }
        b.extend(1000i32.to_be_bytes());
        b.push(1);
        b.extend(3600i32.to_be_bytes());
        b.extend([0, 0]);
        b.extend(7200i32.to_be_bytes());
        b.extend([1, 0]);
        b.extend(b"AB\0\0");
        b
    }

    #[test]
    fn tzif_offsets_apply_from_their_transition() {
        let zone = parse_tzif(&two_offsets()).expect("a valid file");
        assert_eq!(show_us_in(&zone, 0), "1970-01-01T01:00:00.000000+01:00");
        assert_eq!(
            show_us_in(&zone, 1_000_000_000),
            "1970-01-01T02:16:40.000000+02:00"
        );
        assert_eq!(show_us_in(&Zone::Utc, 0), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn tzif_reader_refuses_every_cut_and_never_panics() {
        let good = two_offsets();
        for len in 0..good.len() {
            assert_eq!(parse_tzif(&good[..len]), None, "cut at {len}");
        }
        let mut bad_index = good.clone();
        bad_index[48] = 9;
        assert_eq!(parse_tzif(&bad_index), None);
    }
}
