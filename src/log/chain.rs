//! The log's hash chain (log format 2): where a writer picks it up, and how
//! `verify` checks it.
//!
//! Each chained batch stores the link of the batch before it (`prev`) and
//! the first bytes of its own link (`link_tag`, see `format::chain`). The
//! writer keeps the last link and chains every batch it writes to it; an
//! open computes it from the log's last batch ([`tail_link`]). `verify`
//! checks every chained batch twice ([`ChainCheck`]):
//!
//! - **by itself**: its records, after the `prev` it stores, make the link
//!   whose tag it stores. A record changed with its checksum recomputed
//!   fails here, wherever the batch is;
//! - **against the batch before**: the `prev` it stores is the link the
//!   batch before makes (the genesis link for the log's first batch). A
//!   batch rewritten with its tag recomputed fails here, at the next batch;
//!   so do a batch removed, batches renumbered, a segment swapped.
//!
//! The second check is not made across a hole or damage: `repair` replaces
//! destroyed batches by holes (unchained batches of lost-entry records:
//! they carry no history) and keeps every batch that verifies as it was,
//! and the link those batches stored as `prev` was made over records that
//! are gone. So the batch after a hole or damage (in the same segment, or
//! the next segment's first) is checked by itself only, and the batch
//! before it is checked by nothing after it: a rewrite there with its tag
//! recomputed is seen only by a head kept from before (docs/AUDIT.md).
//! Review 33 found that storing only each batch's own link left the batch
//! after a hole unchecked altogether (findings 1 and 2).
//!
//! Invariant (a writer's): the link a writer holds is the link of the log's
//! last batch, or [`GENESIS`] when the log is empty or its last batch is
//! unchained (a hole, or a log of format 1).

use crate::audit::merkle::Hash;
use crate::error::Result;
use crate::format::batch::{decode_batch, BatchView};
use crate::format::chain::GENESIS;
use crate::format::SEGMENT_HEADER_LEN;
use crate::storage::Storage;

use super::hole::hole_of;
use super::segment::Segments;

/// The link the log's next batch chains to: the link of its last batch
/// (computed from its records and the `prev` it stores), or [`GENESIS`]
/// when it has none (empty log, a hole or an unchained batch last, or a
/// last segment whose batches do not decode).
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
    let mut last = None;
    while pos < bytes.len() {
        let view = decode_batch(&bytes[pos..], None).ok()?;
        pos += view.len();
        last = Some(view);
    }
    last.map(|view| view.compute_link().unwrap_or(GENESIS))
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
    /// The link the next batch must store as its `prev`; `None` when
    /// unknown (after a hole, damage, or where a check of a later piece of
    /// the log starts: see [`ChainCheck::first_prev`]).
    previous: Option<Hash>,
    /// The first chained batch's stored `prev` and first offset, when the
    /// check started without knowing the link before it: checked by the
    /// caller against the link the piece before ends with.
    first_prev: Option<(Hash, u64)>,
    /// No batch seen yet.
    fresh: bool,
}

impl ChainCheck {
    /// A check that does not know the link before its first batch yet
    /// ([`expect`](Self::expect) gives it).
    pub fn new(chained: bool) -> Self {
        Self {
            chained,
            previous: None,
            first_prev: None,
            fresh: true,
        }
    }

    /// Forgets the link before: the next batch is checked by itself only.
    pub fn forget(&mut self) {
        self.previous = None;
    }

    /// Starts checking against `previous` from here (a piece of the log
    /// that follows the one before without a break).
    pub fn expect(&mut self, previous: Option<Hash>) {
        self.previous = previous;
    }

    /// The link the last batch checked makes (what the next batch must
    /// store as `prev`), if known.
    pub fn last(&self) -> Option<Hash> {
        self.previous
    }

    /// The stored `prev` of the first batch, when it was chained and the
    /// check did not know the link before it.
    pub fn first_prev(&self) -> Option<(Hash, u64)> {
        self.first_prev
    }

    /// Checks the next batch of the log (one that verified); `compute`
    /// gives the link of the batch's records after a given link (from the
    /// leaf hashes the caller has, or [`BatchView::link_after`]).
    pub fn batch_with(
        &mut self,
        view: &BatchView<'_>,
        compute: impl FnOnce(&Hash) -> Hash,
    ) -> Option<Broken> {
        let fresh = std::mem::replace(&mut self.fresh, false);
        let broken = |reason: &str| Broken {
            first_offset: view.header.first_offset,
            reason: reason.to_string(),
        };
        if !self.chained {
            return view.is_chained().then(|| {
                broken(
                    "a chained batch in a log of format 1: chained batches belong to format 2 \
                     logs, so the log's VERSION file was changed",
                )
            });
        }
        let (Some(prev), Some(tag)) = (view.prev(), view.link_tag()) else {
            self.previous = None;
            let hole = view.frames().all(|f| hole_of(f.payload).is_some());
            return (!hole).then(|| {
                broken(
                    "a batch without a chain link in a chained log (format 2 links every \
                     batch but the holes repair writes)",
                )
            });
        };
        let link = compute(&prev);
        if link[..tag.len()] != tag {
            // Its own records and link do not agree: what the next batch
            // stores as `prev` is not this link either, and is not
            // reported twice.
            self.previous = None;
            return Some(broken(
                "the batch's records do not make the link it stores: its checksums match, so \
                 it was rewritten (a record changed), not damaged",
            ));
        }
        let result = match self.previous {
            Some(expected) if expected != prev => Some(broken(
                "the batch does not follow the batch before it (the link it stores as the one \
                 before is another): batches were removed, renumbered, swapped or rewritten",
            )),
            None if fresh => {
                self.first_prev = Some((prev, view.header.first_offset));
                None
            }
            _ => None,
        };
        self.previous = Some(link);
        result
    }
}
