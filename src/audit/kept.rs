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
//! it names stayed as it was. `repair` does that (it rewrites damaged
//! batches as holes, in segments before the seal's), so a kept tree also
//! remembers the repairs the directory showed before the pass that made
//! it (its repair count and its quarantine's entries: a repair raises the
//! one and makes one of the other, durably, before it changes a file) and
//! is dropped when they differ. They are looked at again at every use,
//! except by a writer over its own handle, which holds the lock `repair`
//! needs ([`KeptTree::usable_over`]). `repair` also removes the file.
//! Otherwise only someone who writes the files changes records below the
//! seal (accidents change checksums, which the full pass checks), and the
//! kept tree then still holds the history the full pass checked. Every
//! proof reads one block of records again and checks it against the root
//! kept for it, so a record changed since the tree was made never gets a
//! proof of its old bytes; a head always makes a full pass. Holes
//! (`repair`'s lost-entry batches) carry no link: a log whose last batch
//! below a size is one is not kept there.
//!
//! A writer store also keeps the tree it made in a file of its log
//! directory ([`TREE_FILE`], derived data like the index files), so that
//! another process (a read-only store, a Python worker) starts from it
//! instead of a full pass. The file is checked like the tree in memory: its
//! checksum, then its seal against the log before every use; a file that
//! fails is passed over (and written again by the writer's next full pass).
//! What no check of the file sees is a block root forged by someone who
//! writes the files (with the records under it, or not): proofs from it
//! then name a root no honest head holds, and fail against the head an
//! auditor kept; a proof vouches for the tree, not for the chain
//! (docs/AUDIT.md, review 37 finding 3).
//!
//! Invariants: `tree.size() == seal.end`; the seal's batch is chained and
//! its link, computed from its records when it was taken, has the stored
//! tag as prefix.

use std::ops::ControlFlow;

use super::merkle::{record_leaf_hash, Hash};
use super::tree::{LogTree, BLOCK_LEAVES};
use crate::error::Result;
use crate::format::batch::{BatchView, LINK_TAG_LEN};
use crate::format::chain::link_of_leaves;
use crate::log::{BatchAt, Log, Repairs, Walk};
use crate::storage::OpenMode;

/// The file a writer keeps its tree in, in its log directory.
pub(crate) const TREE_FILE: &str = "TREE";

/// The first bytes of a [`TREE_FILE`]: its kind and layout version.
const TREE_MAGIC: [u8; 8] = *b"ENFTREE1";

/// Bytes of a [`TREE_FILE`] before the block roots: magic, leaves per
/// block (u32), tail leaves (u32), block count (u64), the seal's first
/// offset and end (u64 each), its `prev` and link, the repairs seen
/// (three u64: `Log::repairs_seen`).
const TREE_HEADER_LEN: usize = 8 + 4 + 4 + 8 + 8 + 8 + 32 + 32 + 8 + 8 + 8;

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
    /// The view of the log it was last checked against (`Log::view_id`).
    view: (u64, u64),
    /// The repairs the directory showed before the pass that made it
    /// (`Log::repairs_seen`); `None` when its quarantine could not be
    /// listed (the tree then serves the view it was made over only).
    repairs: Option<Repairs>,
}

impl KeptTree {
    /// Keeps `tree`, made by a full pass over the log's first `seal.end`
    /// records after `seal` was read; `None` when the log no longer shows
    /// the seal (it changed during the pass).
    /// `repairs` is what `Log::repairs_seen` gave before the pass.
    pub fn new(
        log: &Log,
        tree: LogTree,
        seal: Seal,
        repairs: Option<Repairs>,
    ) -> Result<Option<KeptTree>> {
        debug_assert_eq!(tree.size(), seal.end);
        if tree.size() != seal.end {
            return Ok(None);
        }
        let mut kept = KeptTree {
            tree,
            seal,
            view: log.view_id(),
            repairs,
        };
        // The repairs read before the pass, compared now: a repair that ran
        // during it drops the tree.
        let fits = kept.usable_over(log) && kept.checked(log, 0)?.is_some();
        Ok(fits.then_some(kept))
    }

    /// The tree, once [`usable_over`](Self::usable_over) said it may serve
    /// `log`: checked against it (the seal read again) and extended
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

    /// Whether no `repair` can have changed records below the seal since
    /// the tree was made (the seal does not show it: review 36 finding 1,
    /// review 37 finding 1). Over a writer's own handle it was made or last
    /// checked over, nothing can have: the writer holds the lock `repair`
    /// needs. Anywhere else (a read-only handle, whose unrefreshed view
    /// still maps a segment a repair replaced when it first reads it,
    /// review 38 finding 1; another process's file; another shard opened
    /// per question; a view a refresh built again) the directory's
    /// quarantine must show the same repairs as before the pass that made
    /// the tree, which costs a listing of it per use.
    pub fn usable_over(&mut self, log: &Log) -> bool {
        let view = log.view_id();
        if self.view == view && log.is_writer() {
            return true;
        }
        if self.repairs.is_none() || log.repairs_seen() != self.repairs {
            return false;
        }
        self.view = view;
        true
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

    /// The tree as a [`TREE_FILE`] holds it (little-endian):
    ///
    /// ```text
    /// magic "ENFTREE1" | leaves per block (u32) | tail leaves (u32)
    /// | blocks (u64) | seal first offset (u64) | seal end (u64)
    /// | seal prev (32) | seal link (32) | repair count (u64)
    /// | quarantine entries (u64) | greatest quarantine entry (u64)
    /// | block roots (32 each)
    /// | tail leaf hashes (32 each) | CRC-32 of everything before (u32)
    /// ```
    ///
    /// The nodes above the blocks are not stored: a load computes them.
    pub fn encode(&self) -> Vec<u8> {
        let blocks = self.tree.blocks();
        let tail = self.tree.tail();
        let mut out = Vec::with_capacity(TREE_HEADER_LEN + 32 * (blocks.len() + tail.len()) + 4);
        out.extend_from_slice(&TREE_MAGIC);
        out.extend_from_slice(&(BLOCK_LEAVES as u32).to_le_bytes());
        out.extend_from_slice(&(tail.len() as u32).to_le_bytes());
        out.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.seal.first_offset.to_le_bytes());
        out.extend_from_slice(&self.seal.end.to_le_bytes());
        out.extend_from_slice(&self.seal.prev);
        out.extend_from_slice(&self.seal.link);
        // A tree made without knowing the repairs is not worth a file: no
        // other view may use it (`save` writes none).
        let (count, entries, greatest) = self.repairs.unwrap_or((u64::MAX, u64::MAX, u64::MAX));
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&entries.to_le_bytes());
        out.extend_from_slice(&greatest.to_le_bytes());
        for hash in blocks.iter().chain(tail) {
            out.extend_from_slice(hash);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The tree a [`TREE_FILE`]'s bytes hold, not yet checked against any
    /// log; `None` for bytes that are not one whole, intact file of this
    /// layout.
    pub fn decode(bytes: &[u8]) -> Option<KeptTree> {
        let body_len = bytes.len().checked_sub(4)?;
        let (body, crc) = bytes.split_at(body_len);
        if body.len() < TREE_HEADER_LEN
            || body[..8] != TREE_MAGIC
            || crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?)
        {
            return None;
        }
        let u32_at = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        let hash_at = |at: usize| -> Hash { body[at..at + 32].try_into().expect("32 bytes") };
        let tail_len = u64::from(u32_at(12));
        let block_count = u64_at(16);
        if u64::from(u32_at(8)) != BLOCK_LEAVES || tail_len >= BLOCK_LEAVES {
            return None;
        }
        let hashes = block_count.checked_add(tail_len)?;
        if (body.len() - TREE_HEADER_LEN) as u64 != hashes.checked_mul(32)? {
            return None;
        }
        let seal = Seal {
            first_offset: u64_at(24),
            end: u64_at(32),
            prev: hash_at(40),
            link: hash_at(72),
        };
        let size = block_count
            .checked_mul(BLOCK_LEAVES)?
            .checked_add(tail_len)?;
        if seal.end != size || seal.first_offset >= seal.end {
            return None;
        }
        let mut roots = body[TREE_HEADER_LEN..]
            .chunks_exact(32)
            .map(|c| -> Hash { c.try_into().expect("32 bytes") });
        let blocks: Vec<Hash> = roots.by_ref().take(block_count as usize).collect();
        let tail: Vec<Hash> = roots.collect();
        Some(KeptTree {
            tree: LogTree::from_blocks(blocks, tail),
            seal,
            // No view of this process: checked by `repairs` first.
            view: (u64::MAX, u64::MAX),
            repairs: Some((u64_at(104), u64_at(112), u64_at(120))),
        })
    }

    /// Writes the tree to `log`'s [`TREE_FILE`] (atomically, not synced:
    /// derived data, checked when read). A failure is logged, not returned:
    /// the next process makes a full pass instead.
    pub fn save(&self, log: &Log) {
        if self.repairs.is_none() {
            // Review 39 finding 2: say why no other process will find it.
            tracing::warn!(dir = %log.dir().display(), "the directory's REPAIRS file or quarantine does not read: the kept tree is not written for other processes (the next repair that changes the log replaces the count)");
            return;
        }
        let written = crate::log::dir::write_file_atomically(
            log.storage(),
            log.dir(),
            TREE_FILE,
            &self.encode(),
            false,
        );
        if let Err(e) = written {
            tracing::warn!(dir = %log.dir().display(), error = %e, "could not write the kept tree; the next process computes it again");
        }
    }

    /// The tree `log`'s [`TREE_FILE`] holds, when there is an intact one no
    /// larger than a tree of the log's records can be (it is checked
    /// against the log before each use, [`checked`](Self::checked)).
    pub fn load(log: &Log) -> Option<KeptTree> {
        let path = log.dir().join(TREE_FILE);
        let file = log.storage().open(&path, OpenMode::Read).ok()?;
        // A tree of the log's records has a root per block: a longer file
        // is not read (a planted huge file costs no memory).
        let most =
            TREE_HEADER_LEN as u64 + 4 + 32 * (log.next_offset() / BLOCK_LEAVES + BLOCK_LEAVES);
        if file.len().ok()? > most {
            return None;
        }
        let bytes = crate::storage::read_all(&*file).ok()?;
        let kept = Self::decode(&bytes);
        if kept.is_none() {
            tracing::warn!(path = %path.display(), "the kept tree file is damaged or of another layout; passed over");
        }
        kept
    }
}
