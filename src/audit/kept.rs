//! A log's Merkle tree kept between proofs, so that a proof costs a few
//! reads and `O(log n)` hashes instead of a pass over the whole log.
//!
//! A kept tree is made only from a full pass (`store::audit`: the one a
//! head makes, which checks every checksum and the whole chain) and is
//! *sealed* by the log's batch that ends where the tree ends: that batch's
//! first offset and the `prev` and link tag it stores. Before each use the
//! seal is read again from the log. The `prev` a chained batch stores is
//! the link of the batch before, which covers every record before it (log
//! format 2, `format::chain`), and its tag covers its own records; so a log
//! that was cut back and written again below the seal (a writer reopened
//! after a failed fsync, a read-only view refreshed after a `repair`) no
//! longer shows the seal, and the kept tree is dropped. A tree is extended
//! only by batches that chain on from the seal, each checked by itself (its
//! records make its tag) and against the one before (its `prev` is that
//! one's link), as `verify` checks them; the last becomes the new seal.
//!
//! What the seal does not see: records below it changed while the batch
//! it names stayed as it was. Only someone who writes the files does that
//! (accidents change checksums, which the full pass checks), and the kept
//! tree then still holds the history the full pass checked. Every proof
//! reads one block of records again and checks it against the root kept
//! for it, so a proof never vouches for a record that changed; a head
//! always makes a full pass. Holes (`repair`'s lost-entry batches) carry
//! no link: a log whose last batch below a size is one is not kept there.
//!
//! Invariants: `tree.size() == seal.end`; the seal's batch is chained and
//! its link, computed from its records when it was taken, has the stored
//! tag as prefix.

use std::ops::ControlFlow;

use super::merkle::{record_leaf_hash, Hash};
use super::tree::LogTree;
use crate::error::Result;
use crate::format::batch::{BatchView, LINK_TAG_LEN};
use crate::format::chain::link_of_leaves;
use crate::log::{BatchAt, Log, Walk};

/// The last batch a kept tree covers, as the log stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal {
    /// Its first offset.
    first_offset: u64,
    /// The offset after its last record: the tree's size.
    end: u64,
    /// The link of the batch before, as it stores it.
    prev: Hash,
    /// Its link, computed from its records after `prev`.
    link: Hash,
}

impl Seal {
    /// The seal of the batch of `log` that ends at `end`, if one does and
    /// it is chained and makes the tag it stores.
    pub fn read(log: &Log, end: u64) -> Result<Option<Seal>> {
        if end == 0 || !log.is_chained() {
            return Ok(None);
        }
        let mut seal = None;
        log.walk_batches(end - 1, |batch| {
            if batch.header.next_offset() != end {
                return Ok(ControlFlow::Break(()));
            }
            let Some(view) = batch.verified()? else {
                return Ok(ControlFlow::Break(()));
            };
            if let (Some(prev), Some(tag)) = (view.prev(), view.link_tag()) {
                let link = view.link_after(&prev);
                if link[..LINK_TAG_LEN] == tag {
                    seal = Some(Seal {
                        first_offset: view.header.first_offset,
                        end,
                        prev,
                        link,
                    });
                }
            }
            Ok(ControlFlow::Break(()))
        })?;
        Ok(seal)
    }

    /// Whether `batch` is the batch this seal was taken from, as its header
    /// and trailer say (its frames are not read: see the module docs).
    fn matches(&self, batch: &mut BatchAt<'_>) -> Result<bool> {
        if batch.header.first_offset != self.first_offset || batch.header.next_offset() != self.end
        {
            return Ok(false);
        }
        Ok(batch
            .chain_trailer()?
            .is_some_and(|(prev, tag)| prev == self.prev && tag == self.link[..LINK_TAG_LEN]))
    }
}

/// A tree kept between proofs, with the seal it was taken at.
#[derive(Debug, Clone)]
pub(crate) struct KeptTree {
    tree: LogTree,
    seal: Seal,
}

impl KeptTree {
    /// Keeps `tree`, made by a full pass over the log's first `seal.end`
    /// records after `seal` was read; `None` when the log no longer shows
    /// the seal (it changed during the pass).
    pub fn new(log: &Log, tree: LogTree, seal: Seal) -> Result<Option<KeptTree>> {
        debug_assert_eq!(tree.size(), seal.end);
        if tree.size() != seal.end {
            return Ok(None);
        }
        let mut kept = KeptTree { tree, seal };
        Ok(kept.checked(log, 0)?.is_some().then_some(kept))
    }

    /// The tree, checked against `log` (the seal read again) and extended
    /// to cover at least `size` records by the batches that chain on from
    /// the seal; `None` when the log no longer shows the seal or the
    /// batches after it do not chain on (the caller drops the tree and
    /// makes a full pass, which says what is wrong).
    pub fn checked(&mut self, log: &Log, size: u64) -> Result<Option<&LogTree>> {
        let seal = self.seal;
        let mut sealed = false;
        let mut failed = false;
        let mut leaves = Vec::new();
        let walk = log.walk_batches(seal.first_offset, |batch| {
            if !sealed {
                sealed = seal.matches(batch)?;
                failed = !sealed;
            } else {
                match batch.verified()? {
                    Some(view) if self.take(&view, &mut leaves) => {}
                    _ => failed = true,
                }
            }
            Ok(if failed || self.tree.size() >= size {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if failed || !sealed || matches!(walk, Walk::Damaged | Walk::Undecodable) {
            return Ok(None);
        }
        Ok((self.tree.size() >= size).then_some(&self.tree))
    }

    /// Takes in the batch after the seal when it chains on from it (see the
    /// module docs); it becomes the seal.
    fn take(&mut self, batch: &BatchView<'_>, leaves: &mut Vec<Hash>) -> bool {
        let (Some(prev), Some(tag)) = (batch.prev(), batch.link_tag()) else {
            return false;
        };
        let first_offset = batch.header.first_offset;
        if prev != self.seal.link || first_offset != self.seal.end {
            return false;
        }
        leaves.clear();
        leaves.extend(
            batch
                .frames()
                .map(|f| record_leaf_hash(f.offset, f.timestamp_us, f.payload)),
        );
        let link = link_of_leaves(&prev, first_offset, leaves);
        if link[..LINK_TAG_LEN] != tag {
            return false;
        }
        for leaf in leaves.drain(..) {
            self.tree.push_leaf(leaf);
        }
        self.seal = Seal {
            first_offset,
            end: batch.header.next_offset(),
            prev,
            link,
        };
        debug_assert_eq!(self.tree.size(), self.seal.end);
        true
    }
}
