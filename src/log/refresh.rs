//! Refreshing a read-only view incrementally: what a reader in another
//! process (a peer shard, a read-only store) does every time the writer's
//! published durable end moves.
//!
//! A full reopen (`recovery::open_segments`) opens and checks every segment
//! and reads the whole last one, so a reader of a busy log with many
//! segments would re-read all of it every second. Here the segments the
//! view already holds are kept when they provably did not change:
//!
//! - a sealed segment is kept when it is still listed at the same base,
//!   still followed by the segment that starts at its end, and its file's
//!   stamp (identity, length, change time: `storage::FileStamp`) is the one
//!   its open checked. A writer never writes a sealed segment again; only
//!   `repair` changes one, and it renames a new file over it (another
//!   stamp) or moves it away (no longer listed);
//! - the last segment, when it is still the last and still the same file
//!   (same identity), is read only from where the view ended, up to the
//!   published durable end: the bytes below were verified and lie below a
//!   durable end seen before, which no writer cuts (a reopen after failure
//!   keeps what was published, a torn tail is cut only past what was made
//!   durable). Without a published durable end it is reopened whole;
//! - a segment the writer sealed since (the old last one) and every new
//!   segment are opened as a full open would.
//!
//! Whenever anything else is found (a segment gone, moved, replaced, a
//! durable end that went back, a batch that does not verify where the view
//! ended, a storage that cannot stamp files, any I/O error on the way) the
//! caller falls back to a full reopen, which decides as it always did: this
//! module never serves bytes a full reopen would not.
//!
//! It never changes anything on disk.

use std::path::Path;
use std::sync::Arc;

use super::dir;
use super::durable_end::{DurableEnd, ReadLimit};
use super::identity::StoreId;
use super::recovery::{open_last, open_sealed, Access, Owner};
use super::segment::{ActiveSegment, IndexBuilder, SealedSegment, Segments};
use crate::config::LogOptions;
use crate::format::batch::decode_batch;
use crate::format::index_file::IndexEntry;
use crate::storage::{OpenMode, Storage};

/// The view of the log in `dir` under the durable end `end`, built from
/// `previous` (the view as of the last refresh); `None` when it cannot be
/// proven equal to a full reopen's, which the caller then does.
pub(super) fn refresh_segments(
    storage: &dyn Storage,
    dir: &Path,
    options: &LogOptions,
    end: Option<DurableEnd>,
    store_id: Option<StoreId>,
    previous: &Segments,
) -> Option<Segments> {
    let listing = dir::list(storage, dir).ok()?;
    let bases = &listing.segments;
    let kept = previous.sealed.len();
    // The old last segment must still be listed, right after the kept ones.
    if bases.get(kept) != Some(&previous.active.base_offset) {
        return None;
    }
    let mut owner = Owner {
        store_id,
        tagged_seen: false,
    };
    let mut sealed = Vec::with_capacity(bases.len());
    for (i, segment) in previous.sealed.iter().enumerate() {
        let verified = still_verified(storage, segment, bases[i], bases[i + 1])?;
        owner.tagged_seen |= verified;
        sealed.push(segment.clone());
    }
    let last = *bases.last()?;
    if last == previous.active.base_offset {
        let active = extend_active(storage, options, end, &previous.active)?;
        return Some(Segments { sealed, active });
    }
    // The writer rolled: the old last segment and any newer but the last
    // one are sealed now, and opened as a full open opens them.
    for pair in bases[kept..].windows(2) {
        let (segment, _) = open_sealed(storage, dir, pair[0], pair[1], options, &mut owner).ok()?;
        if segment.next_offset != pair[1] {
            return None;
        }
        sealed.push(Arc::new(segment));
    }
    let store_tag = store_id.map_or(0, StoreId::tag);
    let access = Access::ReadOnly(end);
    let (active, _, damaged) =
        open_last(storage, dir, last, options, access, store_tag, &mut owner).ok()?;
    if damaged.is_some() {
        return None; // only a writer seals; never for a read-only open
    }
    Some(Segments { sealed, active })
}

/// Whether the kept sealed `segment` is still what its open verified, at
/// `base`, followed by the segment at `next_base`: `None` when not (or when
/// that cannot be told), else whether its header carries a store tag.
fn still_verified(
    storage: &dyn Storage,
    segment: &SealedSegment,
    base: u64,
    next_base: u64,
) -> Option<bool> {
    let verified = segment.verified?;
    if segment.base_offset != base || segment.next_offset != next_base {
        return None;
    }
    let file = storage.open(&segment.path, OpenMode::Read).ok()?;
    let stamp = file.stamp().ok()??;
    (stamp == verified.stamp).then_some(verified.tagged)
}

/// The last segment, still the last, read on from where `active` ended up
/// to what the durable end now allows; `None` when that is not a plain
/// extension of what was verified.
fn extend_active(
    storage: &dyn Storage,
    options: &LogOptions,
    end: Option<DurableEnd>,
    active: &ActiveSegment,
) -> Option<ActiveSegment> {
    // The view's own handle and the name must be the same file: a repair
    // renames a new one over it, an unfinished creation is created again
    // (and an empty or rebuilt view is held in memory: no stamp).
    let held = active.file.stamp().ok()??;
    let named = storage.open(&active.path, OpenMode::Read).ok()?;
    let now = named.stamp().ok()??;
    if held.file_id != now.file_id {
        return None;
    }
    let limit = match ReadLimit::for_last_segment(end, active.base_offset) {
        ReadLimit::Upto(len) => len,
        // No durable end (a store last written by a release before it, or
        // one `repair` is changing): the view may hold bytes that were never
        // durable, which a writer's open may cut and write again.
        ReadLimit::Unknown => return None,
    };
    if limit < active.committed_len {
        return None; // the end went back: a full open decides what is left
    }
    let mut extended = active.clone();
    if limit == active.committed_len {
        return Some(extended);
    }
    let from = active.committed_len;
    let mut bytes = vec![0u8; usize::try_from(limit - from).ok()?];
    named.read_exact_at(&mut bytes, from).ok()?;
    let mut index = IndexBuilder::new(
        options.index_interval_bytes,
        std::mem::take(&mut extended.index),
    );
    let mut pos = 0usize;
    while pos < bytes.len() {
        match decode_batch(&bytes[pos..], Some(extended.next_offset)) {
            Ok(view) => {
                let h = view.header;
                index.offer(IndexEntry {
                    first_offset: h.first_offset,
                    position: from + pos as u64,
                    min_timestamp_us: h.min_timestamp_us,
                    max_timestamp_us: h.max_timestamp_us,
                });
                pos += view.len();
                extended.next_offset = h.next_offset();
            }
            // Below a durable end every batch is whole and verifies; if
            // not, a full open classifies the damage.
            Err(_) => return None,
        }
    }
    extended.committed_len = from + pos as u64;
    extended.index = index.entries;
    extended.file = named;
    Some(extended)
}
