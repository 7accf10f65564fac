//! Settling a log no writer holds: making what its last writer left on
//! disk visible to readers in other processes.
//!
//! Readers stop at the end the writer published in `DURABLE` (see
//! `durable_end`), which the writer fsyncs only at a roll and at close. A
//! writer killed after an fsync but before it published, or a power cut
//! that kept the synced records and an older `DURABLE`, leaves records on
//! disk that no reader sees until a writer opens the log again; with
//! shards that may never happen (writers claim the lowest free shard, and
//! fewer may come back). Settling is that open, made by another writer
//! process on the dead writer's behalf: take the lock, run the writer's
//! recovery (which syncs what it keeps, cuts only a torn tail past the
//! durable end, and publishes its end durably), close.
//!
//! Invariants:
//! - never while a writer holds the log: the lock is tried first, without
//!   waiting, and a held lock means a live writer, which publishes by
//!   itself;
//! - a log whose published end covers its last segment's bytes is left
//!   alone: a cleanly closed log, or an idle live one, costs a listing, a
//!   32-byte read and a stat; so is one whose bytes past that end start
//!   with zeros (a live writer's zero filling ahead of itself: no batch was
//!   written there), for one more read of at most 40 bytes;
//! - a directory that is not a whole store yet (no `VERSION`, no segment:
//!   its creator holds it, or died before writing anything) is left alone.

use std::path::Path;
use std::sync::Arc;

use super::{dir, durable_end, Log};
use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::format::BATCH_HEADER_LEN;
use crate::storage::{OpenMode, Storage};

/// Whether the log in `dir` holds bytes past its published durable end
/// (or has no readable end): what a settle would make visible.
fn looks_unsettled(storage: &dyn Storage, dir: &Path) -> Result<bool> {
    let listing = dir::list(storage, dir)?;
    let Some(&last) = listing.segments.last() else {
        return Ok(false);
    };
    if !listing.has_version {
        return Ok(false);
    }
    let end = match durable_end::load(storage, dir) {
        Ok(Some(end)) => end,
        // No end (a release before it), or one that cannot be read: a
        // writer's open writes a good one.
        Ok(None) | Err(_) => return Ok(true),
    };
    if end.segment_base != last {
        // A segment was created after the end was last published.
        return Ok(true);
    }
    let path = dir::segment_path(dir, last);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    if len <= end.segment_len {
        return Ok(len != end.segment_len);
    }
    // Past the end: with `preallocate_segments`, a live writer's zeros
    // ahead of itself. A batch never reads as zeros (its header holds
    // marker bytes), so when the bytes where the next batch would start
    // are zeros, no batch was written after the published end: nothing a
    // settle would make visible (past a lost piece there, only the
    // damage handling of the shard's next writer does), and the lock of a
    // live, idle writer is not tried on every refresh.
    let mut head = vec![0u8; BATCH_HEADER_LEN.min((len - end.segment_len) as usize)];
    file.read_exact_at(&mut head, end.segment_len)
        .map_err(|e| Error::io("read", &path, e))?;
    Ok(head.iter().any(|&b| b != 0))
}

impl Log {
    /// Settles the log in `dir` if no writer holds it and its published
    /// end leaves bytes out (see the module docs); `true` if it did.
    pub(crate) fn settle_if_abandoned(
        storage: &Arc<dyn Storage>,
        dir: &Path,
        options: &LogOptions,
    ) -> Result<bool> {
        if !looks_unsettled(&**storage, dir)? {
            return Ok(false);
        }
        let lock = match dir::lock(&**storage, dir) {
            Ok(lock) => lock,
            Err(Error::Locked { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let mut held = Some(lock);
        let log = Log::open_writer(storage.clone(), dir, options.clone(), None, &mut held)?;
        log.close()?;
        Ok(true)
    }
}
