//! Filling the active segment with zeros ahead of the writer, so that its
//! fsyncs flush no metadata (`LogOptions::preallocate_segments`).
//!
//! An `fdatasync` of a file that grew since the last one also commits the
//! file system's journal for the new size (and, on ext4, for the blocks
//! allocated under it): measured here, ~190 µs per 200-byte append against
//! ~110-130 µs for an overwrite of blocks already written. So the writer
//! keeps the file a little longer than what it wrote, with real zeros (an
//! extension by `set_len`, or `fallocate`, leaves holes or unwritten
//! extents, whose first write changes metadata all the same), and its
//! batches overwrite them in place.
//!
//! Invariants:
//! - only the writer thread fills, through its own handle, right after a
//!   group was made durable and before it is acknowledged: one ordered
//!   sequence of storage calls (a fault test's counts and a crash
//!   simulation replay from their seed), no second file descriptor whose
//!   fsync could consume a writeback error meant for the writer, and no
//!   fsync of its own (the writer's next one makes the zeros durable, with
//!   the new size, once per fill);
//! - the zeros never pass `segment_max_bytes`, nor
//!   `PREALLOCATE_AHEAD_BYTES` past the writer's end;
//! - a segment is cut back to its last batch (`set_len`, fsync) before it
//!   is sealed, and when the log is closed: sealed segments and closed logs
//!   are byte for byte what they are without filling. Only the active
//!   segment of a live or crashed writer ends in zeros, which recovery
//!   reads as the end (`recovery::Stop::ZeroTail`);
//! - a fill that fails is logged and counted, and only stops the filling
//!   of that segment: the writer goes on appending, growing the file as it
//!   would without filling. The zeros are not the log's data, so no
//!   failure of theirs can cost a record.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing::warn;

use crate::config::PREALLOCATE_AHEAD_BYTES;
use crate::storage::StorageFile;

/// The filling state of the active segment.
#[derive(Debug)]
pub(crate) struct Prefill {
    enabled: bool,
    /// The file holds bytes (batches, or zeros filled here) up to this
    /// position.
    filled_end: u64,
    /// A fill of this segment failed: no more tries until the next one.
    failed: bool,
}

/// What filling did, for `LogMetrics`.
#[derive(Debug, Default)]
pub(crate) struct PrefillMetrics {
    pub bytes: AtomicU64,
    pub failures: AtomicU64,
}

impl Prefill {
    /// The state for a segment whose file is `file_len` bytes long now.
    pub fn new(enabled: bool, file_len: u64) -> Self {
        Self {
            enabled,
            filled_end: file_len,
            failed: false,
        }
    }

    /// A new segment, `file_len` bytes long (its header).
    pub fn restart(&mut self, file_len: u64) {
        self.filled_end = file_len;
        self.failed = false;
    }

    /// Fills `file` with zeros up to `PREALLOCATE_AHEAD_BYTES` past
    /// `written_len` (never past `segment_max_bytes`), once less than half
    /// of that is left: one write call per fill.
    pub fn fill_ahead(
        &mut self,
        file: &dyn StorageFile,
        path: &Path,
        written_len: u64,
        segment_max_bytes: u64,
        metrics: &PrefillMetrics,
    ) {
        if !self.enabled || self.failed {
            return;
        }
        // The writer's own writes past the zeros grew the file.
        self.filled_end = self.filled_end.max(written_len);
        let target = written_len
            .saturating_add(PREALLOCATE_AHEAD_BYTES)
            .min(segment_max_bytes);
        if self.filled_end >= target || self.filled_end - written_len >= PREALLOCATE_AHEAD_BYTES / 2
        {
            return;
        }
        match file.write_zeros_at(self.filled_end, target - self.filled_end) {
            Ok(()) => {
                metrics
                    .bytes
                    .fetch_add(target - self.filled_end, Ordering::Relaxed);
                self.filled_end = target;
            }
            Err(e) => {
                self.failed = true;
                metrics.failures.fetch_add(1, Ordering::Relaxed);
                // Give back what the failed fill took: on a full disk the
                // space belongs to records and checkpoints, not to zeros.
                // The zeros hold no record, so a failed cut costs nothing
                // but the space.
                if let Err(cut) = file.set_len(self.filled_end) {
                    warn!(segment = %path.display(), error = %cut, "could not cut a failed zero fill back");
                }
                warn!(
                    segment = %path.display(),
                    at = self.filled_end,
                    error = %e,
                    "could not fill the active segment with zeros ahead of the writer; \
                     appending without (each fsync also commits the new file size)"
                );
            }
        }
    }
}

/// Cuts the zeros past `written_len` from `file` and makes the cut durable,
/// when there are any (the file is longer): before a segment is sealed,
/// and when the log is closed.
pub(crate) fn cut_zero_tail(file: &dyn StorageFile, written_len: u64) -> std::io::Result<bool> {
    if file.len()? <= written_len {
        return Ok(false);
    }
    file.set_len(written_len)?;
    file.sync_data()?;
    Ok(true)
}
