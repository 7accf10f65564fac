//! Records: what callers append, and what readers get back.
//!
//! The log stores opaque payload bytes with a timestamp; it assigns each
//! record its offset when the record is committed. What the payload means
//! (an enforcement event, say) is decided by the layers above.

use std::time::{SystemTime, UNIX_EPOCH};

/// A record to append: a timestamp and opaque payload bytes.
///
/// ```
/// use enforcelog::Record;
/// let record = Record::new(1_764_000_000_000_000, b"hello".to_vec());
/// assert_eq!(record.payload, b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Microseconds since the Unix epoch, UTC.
    pub timestamp_us: i64,
    /// The bytes to store. At most `LogOptions::record_max_bytes` long.
    pub payload: Vec<u8>,
}

impl Record {
    /// A record with the given timestamp and payload.
    pub fn new(timestamp_us: i64, payload: impl Into<Vec<u8>>) -> Self {
        Self {
            timestamp_us,
            payload: payload.into(),
        }
    }

    /// A record stamped with the current system time.
    pub fn now(payload: impl Into<Vec<u8>>) -> Self {
        Self::new(now_us(), payload)
    }
}

/// A committed record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The record's offset: its dense, zero-based position in the log.
    pub offset: u64,
    /// Microseconds since the Unix epoch, UTC, as given at append.
    pub timestamp_us: i64,
    /// The payload bytes, as given at append.
    pub payload: Vec<u8>,
}

/// The current system time in microseconds since the Unix epoch.
///
/// A clock before 1970 reads as negative microseconds; one beyond the range
/// of `i64` microseconds (year 294247) saturates.
pub fn now_us() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_micros()).map_or(i64::MIN, |us| -us),
    }
}
