//! The log's hash chain (log format 2): where a writer picks it up, and how
//! `verify` checks it.
//!
//! Each batch of a chained log carries the link of the chain through it
//! (`format::chain`). The writer keeps the last link and chains every batch
//! it writes to it; an open finds it in the log's last batch
//! ([`tail_link`]). `verify` recomputes every link from the records and the
//! link before, and reports a batch whose stored link differs as tampering
//! ([`ChainCheck`]): its checksums match, so no accident explains it.
//!
//! Where the chain is not checked, and why:
//!
//! - **After a hole.** `repair` replaces destroyed batches by holes
//!   (unchained batches of lost-entry records: they carry no history) and
//!   keeps every batch that verifies as it was, link included. That link
//!   was made over the destroyed records, so it cannot be recomputed: the
//!   first chained batch after a hole is taken at its stored link, and the
//!   check goes on from there. The loss itself is visible to every reader.
//! - **After damage**, for the same reason: the first batch that verifies
//!   after damage in a segment, and the next segment's first batch (a
//!   writer that sealed a damaged segment may not have found its last
//!   link), are taken at their stored links.
//!
//! A batch taken at its stored link is not checked at all: whoever fakes a
//! hole or damages the batch before can rewrite it without recomputing a
//! link (review 33 findings 1 and 2). `verify` lists those batches
//! (`VerifyReport::chain_unchecked`); only a head kept from before vouches
//! for them. Storing each batch's previous link beside its own would let
//! such a batch be checked by itself and by the next one: the planned fix
//! (docs/AUDIT.md).
//!
//! Invariant (a writer's): the link a writer holds is the stored link of
//! the log's last batch, or [`GENESIS`] when the log is empty or its last
//! batch is unchained (a hole, or a log of format 1).

use crate::audit::merkle::Hash;
use crate::error::Result;
use crate::format::batch::{decode_batch, BatchView, CHAINED_TRAILER_LEN, CHAIN_MARKER};
use crate::format::chain::GENESIS;
use crate::format::SEGMENT_HEADER_LEN;
use crate::storage::Storage;

use super::hole::hole_of;
use super::segment::Segments;

/// The link the log's next batch chains to: the stored link of its last
/// batch, or [`GENESIS`] when it has none (empty log, a hole or an
/// unchained batch last, or a last segment whose batches do not decode).
///
/// The walk starts at the segment's last index entry (derived data: when
/// the walk from there fails, it starts again from the first batch).
pub(crate) fn tail_link(storage: &dyn Storage, segments: &Segments) -> Result<Hash> {
    let active = &segments.active;
    let header = SEGMENT_HEADER_LEN as u64;
    if active.committed_len > header {
        let read = |from: u64| -> Result<Vec<u8>> {
            let len = usize::try_from(active.committed_len - from).unwrap_or(usize::MAX);
            let mut bytes = vec![0u8; len];
            active
                .file
                .read_exact_at(&mut bytes, from)
                .map_err(|e| crate::Error::io("read", &active.path, e))?;
            Ok(bytes)
        };
        let from = active
            .index
            .last()
            .map_or(header, |e| e.position)
            .clamp(header, active.committed_len);
        if let Some(link) = last_link(&read(from)?) {
            return Ok(link);
        }
        return Ok(last_link(&read(header)?).unwrap_or(GENESIS));
    }
    let Some(sealed) = segments.sealed.last() else {
        return Ok(GENESIS);
    };
    let map = sealed.bytes(storage)?;
    let len = usize::try_from(sealed.len)
        .unwrap_or(usize::MAX)
        .min(map.len());
    let from = sealed
        .index
        .last()
        .map_or(SEGMENT_HEADER_LEN, |e| e.position as usize)
        .clamp(SEGMENT_HEADER_LEN.min(len), len);
    Ok(last_link(&map[from..len])
        .or_else(|| last_link(&map[SEGMENT_HEADER_LEN.min(len)..len]))
        .unwrap_or(GENESIS))
}

/// The link of the last batch of `bytes` (whole batches from its start;
/// [`GENESIS`] when that batch is unchained), or `None` when the walk
/// fails or finds no batch.
fn last_link(bytes: &[u8]) -> Option<Hash> {
    let mut pos = 0;
    let mut link = None;
    while pos < bytes.len() {
        let view = decode_batch(&bytes[pos..], None).ok()?;
        link = Some(view.link().unwrap_or(GENESIS));
        pos += view.len();
    }
    link
}

/// What a check knows after the batch that ends at `end` of `bytes` (a
/// batch that verified): its stored link when it is chained, nothing when
/// it is not. The same as [`ChainCheck::batch`] leaves.
pub(crate) fn after(bytes: &[u8], end: usize) -> Option<Hash> {
    if end < CHAINED_TRAILER_LEN || bytes[end - 4..end] != CHAIN_MARKER {
        return None;
    }
    let mut link = [0u8; 32];
    link.copy_from_slice(&bytes[end - CHAINED_TRAILER_LEN..end - 8]);
    Some(link)
}

/// A batch whose stored chain does not fit its records: tampering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broken {
    /// The batch's first offset.
    pub first_offset: u64,
    /// What does not fit.
    pub reason: String,
}

/// Checks a chained log's batches in log order (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct ChainCheck {
    /// Whether the log is chained (format 2). In a log of format 1 no batch
    /// may carry a link: one that does means its `VERSION` was changed.
    chained: bool,
    /// The link the next batch must chain to; `None` when unknown (after a
    /// hole or damage): the next chained batch is taken at its word.
    previous: Option<Hash>,
    /// The first offsets of the chained batches taken at their word: the
    /// chain does not vouch for their records (review 33 findings 1, 2).
    pub unchecked: Vec<u64>,
}

impl ChainCheck {
    /// A check that goes on where another stopped: `previous` is what
    /// [`after`] says of the batch before (the check's state depends only
    /// on stored bytes, never on a link it computed, so a log's batches can
    /// be checked in pieces, on several threads).
    pub fn resume(chained: bool, previous: Option<Hash>) -> Self {
        Self {
            chained,
            previous,
            unchecked: Vec::new(),
        }
    }

    /// Checks the next batch of the log (one that verified); `compute`
    /// gives the link of the batch's records after a given link (from the
    /// leaf hashes the caller has, or [`BatchView::compute_link`]).
    pub fn batch_with(
        &mut self,
        view: &BatchView<'_>,
        compute: impl FnOnce(&Hash) -> Hash,
    ) -> Option<Broken> {
        let broken = |reason: &str| Broken {
            first_offset: view.header.first_offset,
            reason: reason.to_string(),
        };
        if !self.chained {
            return view.link().map(|_| {
                broken(
                    "a chained batch in a log of format 1: chained batches belong to format 2 \
                     logs, so the log's VERSION file was changed",
                )
            });
        }
        let Some(stored) = view.link() else {
            self.previous = None;
            let hole = view.frames().all(|f| hole_of(f.payload).is_some());
            return (!hole).then(|| {
                broken(
                    "a batch without a chain link in a chained log (format 2 links every \
                     batch but the holes repair writes)",
                )
            });
        };
        if self.previous.is_none() {
            self.unchecked.push(view.header.first_offset);
        }
        let result = match self.previous {
            Some(previous) if compute(&previous) != stored => Some(broken(
                "the batch's chain link does not match its records and the link before it: \
                 its checksums match, so it was rewritten (a record changed, or batches \
                 removed, renumbered or swapped), not damaged",
            )),
            _ => None,
        };
        self.previous = Some(stored);
        result
    }
}
