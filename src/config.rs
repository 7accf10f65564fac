//! Options for opening a log, with defaults and validation.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{BATCH_HEADER_LEN, CHAINED_TRAILER_LEN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge only after the records are written and fsynced: an
    /// acknowledged record survives a crash or power loss. Concurrent appends
    /// share one fsync (group commit).
    #[default]
    Fsync,
    /// Acknowledge after the write; fsync at most once per interval. A crash
    /// may lose what was acknowledged during the last interval.
    Interval(Duration),
    /// Never fsync except when a segment is sealed or the log is closed; the
    /// operating system decides. For bulk loads and tests.
    None,
}

/// Options for [`Log::open`](crate::Log::open).
///
/// ```
/// use enforcelog::{Durability, LogOptions};
/// let options = LogOptions {
///     durability: Durability::None,
///     ..LogOptions::default()
/// };
/// assert_eq!(options.segment_max_bytes, 64 << 20);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is sealed and a new one started when the next batch would
    /// make it longer than this. Default 64 MiB.
    pub segment_max_bytes: u64,
    /// Largest payload accepted for one record. Default 1 MiB.
    pub record_max_bytes: usize,
    /// When appends are acknowledged. Default [`Durability::Fsync`]. An
    /// `Interval` must be longer than zero; any longer one is accepted (a
    /// very long one means: sync only when a segment is sealed or on close).
    pub durability: Durability,
    /// Appends waiting for the writer, at most: 1 to
    /// [`QUEUE_CAPACITY_MAX`]. A full queue makes appends wait
    /// (back-pressure). Default 4096.
    pub queue_capacity: usize,
    /// Distance in bytes between entries of the sparse offset index, at
    /// least 1 (any larger value is accepted). Default 16 KiB.
    pub index_interval_bytes: u64,
    /// Under [`Durability::Fsync`], fill the active segment with zeros a
    /// little ahead of the writer, so that its fsyncs overwrite allocated
    /// blocks instead of growing the file (an `fdatasync` of a growing file
    /// also commits the file system's journal for the new size). A segment
    /// is cut back to its last batch when it is sealed and when the log is
    /// closed, so sealed segments and closed logs look as without it; after
    /// a crash the zeros past the last batch are read as the end of the log
    /// (see DURABILITY.md). Costs at most 2 MiB of disk per open log
    /// (`PREALLOCATE_AHEAD_BYTES`), and writes each byte twice (zeros, then
    /// data). Ignored under the other durability modes, which seldom
    /// fsync. Default `true`.
    pub preallocate_segments: bool,
}

impl Default for LogOptions {
    fn default() -> Self {
        Self {
            segment_max_bytes: 64 << 20,
            record_max_bytes: 1 << 20,
            durability: Durability::Fsync,
            queue_capacity: 4096,
            index_interval_bytes: 16 << 10,
            preallocate_segments: true,
        }
    }
}

/// The smallest accepted `segment_max_bytes`.
pub const SEGMENT_MAX_BYTES_MIN: u64 = 4096;

/// How far past the writer's end the active segment is filled with zeros,
/// at most, when [`LogOptions::preallocate_segments`] is set (never past
/// `segment_max_bytes`).
pub(crate) const PREALLOCATE_AHEAD_BYTES: u64 = 2 << 20;

/// The largest accepted `queue_capacity`: the queue is memory held by the
/// process (each waiting append keeps its records), so it has a bound.
pub const QUEUE_CAPACITY_MAX: usize = 1 << 20;

impl LogOptions {
    /// Checks every option; the log refuses to open with invalid options.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, reason: String| Err(Error::InvalidOptions { name, reason });
        if self.segment_max_bytes < SEGMENT_MAX_BYTES_MIN
            || self.segment_max_bytes > u64::from(u32::MAX)
        {
            return invalid(
                "segment_max_bytes",
                format!(
                    "{} is outside {SEGMENT_MAX_BYTES_MIN}..={}",
                    self.segment_max_bytes,
                    u32::MAX
                ),
            );
        }
        let fits = self
            .largest_record_batch()
            .is_some_and(|len| len <= self.largest_batch());
        if self.record_max_bytes == 0 || !fits {
            return invalid(
                "record_max_bytes",
                format!(
                    "{} must be at least 1 and a one-record batch of that size must fit in a segment ({} bytes)",
                    self.record_max_bytes, self.segment_max_bytes
                ),
            );
        }
        if self.queue_capacity == 0 || self.queue_capacity > QUEUE_CAPACITY_MAX {
            return invalid(
                "queue_capacity",
                format!(
                    "{} is outside 1..={QUEUE_CAPACITY_MAX}",
                    self.queue_capacity
                ),
            );
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes", "must be at least 1".into());
        }
        if let Durability::Interval(d) = self.durability {
            if d.is_zero() {
                return invalid(
                    "durability",
                    "an fsync interval must be longer than zero".into(),
                );
            }
        }
        Ok(())
    }

    /// The largest encoded batch a segment can hold.
    pub(crate) fn largest_batch(&self) -> usize {
        usize::try_from(self.segment_max_bytes).unwrap_or(usize::MAX) - SEGMENT_HEADER_LEN
    }

    /// The encoded size of a batch of one largest record; `None` when that
    /// does not even fit in a `usize`.
    fn largest_record_batch(&self) -> Option<usize> {
        // A chained batch's trailer is the longer one.
        (BATCH_HEADER_LEN + FRAME_HEADER_LEN + CHAINED_TRAILER_LEN)
            .checked_add(self.record_max_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogOptions::default().validate().unwrap();
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            LogOptions {
                segment_max_bytes: 10,
                ..Default::default()
            },
            LogOptions {
                record_max_bytes: 0,
                ..Default::default()
            },
            LogOptions {
                record_max_bytes: 64 << 20,
                ..Default::default()
            },
            LogOptions {
                queue_capacity: 0,
                ..Default::default()
            },
            LogOptions {
                index_interval_bytes: 0,
                ..Default::default()
            },
            LogOptions {
                durability: Durability::Interval(Duration::ZERO),
                ..Default::default()
            },
        ];
        for options in bad {
            assert!(
                matches!(options.validate(), Err(Error::InvalidOptions { .. })),
                "{options:?}"
            );
        }
    }
}
