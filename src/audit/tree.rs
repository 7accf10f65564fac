//! The Merkle tree of one log, computed from its records: the roots of its
//! complete blocks of [`BLOCK_LEAVES`] leaves and of every complete, aligned
//! run of `2^k` blocks above them kept in memory, the leaf hashes of the
//! last, incomplete block, and any other block's leaves read again from the
//! log when a proof needs them.
//!
//! Leaf `i` is the record at offset `i` ([`merkle::record_leaf_hash`]).
//! Every subtree a proof or a root asks for (a node of the tree of some
//! size, RFC 9162) is either a power of two of at least a block, aligned to
//! its size, so one kept root, or lies inside one block: nothing else is
//! ever needed, and the root of any size is `O(log n)` node hashes of
//! them.
//!
//! Invariants: the tree covers offsets `0..size` exactly; a log whose
//! records are not all readable in offset order has no tree, and says
//! where (the hash of a log with a hole would not be the log's). A tree is
//! kept between questions only behind the checks of `audit::kept`. A block
//! read again must hash to the root it was computed with, or the read is
//! an error.

use std::ops::{ControlFlow, Range};

use super::merkle::{self, Hash, Subtrees};
use crate::error::{Error, Result};
use crate::log::Log;

/// Leaves per block (a power of two): the leaves a proof reads again from
/// the log and hashes, so small (16 records are a few microseconds of
/// SHA-256), while the roots kept above them cost 2 x 32 bytes per block.
pub const BLOCK_LEAVES: u64 = 16;

/// The tree of the first `size` records of a log.
#[derive(Debug, Clone, Default)]
pub struct LogTree {
    /// `levels[0]`: the roots of the complete blocks, in order;
    /// `levels[k]`: the roots of the complete, aligned runs of `2^k`
    /// blocks (each the node hash of two of `levels[k - 1]`), so the root
    /// of any perfect subtree of at least a block is one lookup.
    levels: Vec<Vec<Hash>>,
    /// Leaf hashes of the incomplete last block.
    tail: Vec<Hash>,
}

impl LogTree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves covered.
    pub fn size(&self) -> u64 {
        self.blocks().len() as u64 * BLOCK_LEAVES + self.tail.len() as u64
    }

    /// The roots of the complete blocks.
    pub(crate) fn blocks(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The leaf hashes of the incomplete last block.
    pub(crate) fn tail(&self) -> &[Hash] {
        &self.tail
    }

    /// A tree of complete blocks, given by their roots, then `tail`.
    pub(crate) fn from_blocks(blocks: Vec<Hash>, tail: Vec<Hash>) -> Self {
        debug_assert!((tail.len() as u64) < BLOCK_LEAVES);
        let mut levels = vec![blocks];
        while levels[levels.len() - 1].len() >= 2 {
            let above = parents(&levels[levels.len() - 1]);
            levels.push(above);
        }
        Self { levels, tail }
    }

    /// Adds the root of the next complete block (the tail must be empty).
    fn push_block(&mut self, root: Hash) {
        debug_assert!(self.tail.is_empty());
        let mut level = 0;
        let mut node = root;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(node);
            let n = nodes.len();
            if n % 2 == 1 {
                return;
            }
            node = merkle::node_hash(&nodes[n - 2], &nodes[n - 1]);
            level += 1;
        }
    }

    /// Adds the leaf of the record at offset [`size`](Self::size).
    pub fn push_leaf(&mut self, leaf: Hash) {
        self.tail.push(leaf);
        if self.tail.len() as u64 == BLOCK_LEAVES {
            let root = merkle::root(&self.tail);
            self.tail.clear();
            self.push_block(root);
        }
    }

    /// Extends the tree with the records of `log` from its size up to `to`.
    /// A long extension hashes its older and newer halves (split at a block
    /// boundary) on two threads: blocks are independent until their roots
    /// are combined.
    pub fn extend(&mut self, log: &Log, to: u64) -> Result<()> {
        let from = self.size();
        if to <= from {
            return Ok(());
        }
        // Built aside: a failed pass leaves the tree as it was.
        let (complete, tail) = match split_point(from, to) {
            None => hash_blocks(log, from..to, self.tail.clone())?,
            Some(middle) => {
                let (older, newer) = std::thread::scope(|scope| {
                    let newer = scope.spawn(|| hash_blocks(log, middle..to, Vec::new()));
                    let older = hash_blocks(log, from..middle, self.tail.clone());
                    let newer = newer
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    (older, newer)
                });
                let (mut complete, older_tail) = older?;
                debug_assert!(older_tail.is_empty(), "the split is at a block boundary");
                let (newer_complete, tail) = newer?;
                complete.extend(newer_complete);
                (complete, tail)
            }
        };
        self.tail.clear();
        for root in complete {
            self.push_block(root);
        }
        self.tail = tail;
        debug_assert_eq!(self.size(), to);
        Ok(())
    }

    /// A source of subtree roots for the first `size` leaves, reading
    /// blocks again from `log` where needed.
    pub fn view<'a>(&'a self, log: &'a Log) -> TreeView<'a> {
        TreeView {
            tree: self,
            log,
            last_block: std::cell::RefCell::new(None),
        }
    }
}

/// Leaf hashes folded into blocks as they come, from any offset on: what
/// a pass over a stretch of the log (one thread's share of `verify`)
/// contributes to a [`LogTree`]. Stretches that follow each other
/// [`join`](Self::join) into one; a fold from offset 0 is a tree.
#[derive(Debug, Clone)]
pub(crate) struct BlockFold {
    /// The offset of the first leaf, once one came.
    first: Option<u64>,
    /// The offset the next leaf must have.
    next: u64,
    /// Leaves before the first block boundary (empty when `first` is one).
    head: Vec<Hash>,
    /// Roots of the complete blocks after `head`.
    blocks: Vec<Hash>,
    /// Leaves of the incomplete block at the end.
    tail: Vec<Hash>,
    /// A leaf came out of order: no tree can be made of this fold.
    broken: bool,
}

impl BlockFold {
    pub fn new() -> Self {
        Self {
            first: None,
            next: 0,
            head: Vec::new(),
            blocks: Vec::new(),
            tail: Vec::new(),
            broken: false,
        }
    }

    /// Whether the next leaf lies at or past the first block boundary at
    /// or after the first leaf: leaves go to `tail` (and whole blocks)
    /// from there, to `head` before.
    fn aligned(&self) -> bool {
        self.first
            .is_some_and(|first| self.next >= first.next_multiple_of(BLOCK_LEAVES))
    }

    /// Adds the leaf of the record at `offset`, which must follow the last.
    pub fn push(&mut self, offset: u64, leaf: Hash) {
        if self.first.is_none() {
            self.first = Some(offset);
            self.next = offset;
        }
        if offset != self.next {
            self.broken = true;
            return;
        }
        if self.aligned() {
            self.tail.push(leaf);
            if self.tail.len() as u64 == BLOCK_LEAVES {
                self.blocks.push(merkle::root(&self.tail));
                self.tail.clear();
            }
        } else {
            self.head.push(leaf);
        }
        self.next += 1;
    }

    /// This fold followed by `later`, which starts where this one ends
    /// (or holds nothing).
    pub fn join(mut self, later: BlockFold) -> BlockFold {
        let Some(later_first) = later.first else {
            return self;
        };
        if self.first.is_none() {
            return later;
        }
        if self.broken || later.broken || later_first != self.next {
            self.broken = true;
            return self;
        }
        let later_aligned = later.aligned();
        if !self.aligned() {
            // `self` lies inside the one block `later` goes on with.
            debug_assert!(self.blocks.is_empty() && self.tail.is_empty());
            self.head.extend(later.head);
            self.blocks = later.blocks;
            self.tail = later.tail;
        } else {
            let mut joined = std::mem::take(&mut self.tail);
            joined.extend(later.head);
            if later_aligned {
                // `self`'s last leaves and `later`'s first: one block.
                if !joined.is_empty() {
                    debug_assert_eq!(joined.len() as u64, BLOCK_LEAVES);
                    self.blocks.push(merkle::root(&joined));
                }
                self.blocks.extend(later.blocks);
                self.tail = later.tail;
            } else {
                // `later` lies inside the block `self`'s tail began.
                debug_assert!(later.blocks.is_empty() && later.tail.is_empty());
                self.tail = joined;
            }
        }
        self.next = later.next;
        self
    }

    /// The tree of the leaves folded, when they run from offset 0 without
    /// a gap.
    pub fn into_tree(self) -> Option<LogTree> {
        let from_zero = self.first.is_none_or(|first| first == 0);
        (from_zero && !self.broken).then(|| LogTree::from_blocks(self.blocks, self.tail))
    }
}

/// A [`LogTree`] and the log it reads blocks from.
pub struct TreeView<'a> {
    tree: &'a LogTree,
    log: &'a Log,
    /// The last block read again, and its leaves: a proof asks for several
    /// nodes inside the same block (its path's lowest, the leaf itself).
    last_block: std::cell::RefCell<Option<(u64, Vec<Hash>)>>,
}

impl TreeView<'_> {
    /// The root of the first `size` leaves (`size <= ` the tree's size).
    pub fn root_of_prefix(&self, size: u64) -> Result<Hash> {
        if size == 0 {
            return Ok(merkle::empty_root());
        }
        self.root_of(0..size)
    }

    /// The root of leaves `at..at + n` of block `block` (complete or the
    /// tail).
    fn root_in_block(&self, block: u64, at: usize, n: usize) -> Result<Hash> {
        let mut last = self.last_block.borrow_mut();
        if !matches!(&*last, Some((b, _)) if *b == block) {
            *last = Some((block, self.block_leaves(block)?));
        }
        let leaves = &last.as_ref().expect("just read").1;
        Ok(merkle::root(&leaves[at..at + n]))
    }

    /// The leaf hashes of block `block`, complete or the tail, read again
    /// from the log and checked against what the tree kept of it (its root,
    /// or the tail's leaves).
    fn block_leaves(&self, block: u64) -> Result<Vec<Hash>> {
        let blocks = self.tree.blocks();
        let tail = block == blocks.len() as u64;
        let len = if tail {
            self.tree.tail.len() as u64
        } else {
            BLOCK_LEAVES
        };
        let start = block * BLOCK_LEAVES;
        let offsets = start..start + len;
        let mut leaves = Vec::with_capacity(BLOCK_LEAVES as usize);
        // The batches that hold the block, read whole (a few kilobytes);
        // anything else (damage read past, say) goes through a record scan.
        // The leaves are checked against the block's root below: the frame
        // checksums are not needed.
        self.log.walk_batches(start, |batch| {
            let Some(view) = batch.unchecked()? else {
                return Ok(ControlFlow::Break(()));
            };
            for frame in view.frames() {
                if offsets.contains(&frame.offset) {
                    leaves.push(merkle::record_leaf_hash(
                        frame.offset,
                        frame.timestamp_us,
                        frame.payload,
                    ));
                }
            }
            Ok(if view.header.next_offset() >= offsets.end {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            })
        })?;
        if leaves.len() as u64 != len {
            leaves.clear();
            read_leaves(self.log, offsets.clone(), |leaf| leaves.push(leaf))?;
        }
        // The block's root (the tail's leaves) was taken from these very
        // records: if they no longer hash to it, the log changed under the
        // tree.
        let changed = if tail {
            leaves != self.tree.tail
        } else {
            merkle::root(&leaves) != blocks[block as usize]
        };
        if changed {
            return Err(Error::Corruption {
                path: self.log.dir().to_path_buf(),
                position: 0,
                reason: format!(
                    "the records at offsets {}..{} changed since the tree was computed \
                     (see `enforcelog verify`)",
                    offsets.start, offsets.end
                ),
            });
        }
        Ok(leaves)
    }
}

impl Subtrees for TreeView<'_> {
    type Error = Error;

    fn size(&self) -> u64 {
        self.tree.size()
    }

    fn root_of(&self, range: Range<u64>) -> Result<Hash> {
        let (start, end) = (range.start, range.end);
        debug_assert!(start < end && end <= self.tree.size());
        let n = end - start;
        if n >= BLOCK_LEAVES && n.is_power_of_two() && start % n == 0 {
            // A perfect run of `2^level` blocks, aligned: kept.
            let level = (n / BLOCK_LEAVES).trailing_zeros() as usize;
            return Ok(self.tree.levels[level][(start / n) as usize]);
        }
        let block = start / BLOCK_LEAVES;
        if (end - 1) / BLOCK_LEAVES == block {
            let at = (start - block * BLOCK_LEAVES) as usize;
            return self.root_in_block(block, at, n as usize);
        }
        // Neither: split as the tree does (only a root of a whole size
        // asks this; proofs ask for nodes).
        let k = 1u64 << (63 - (n - 1).leading_zeros());
        let left = self.root_of(start..start + k)?;
        let right = self.root_of(start + k..end)?;
        Ok(merkle::node_hash(&left, &right))
    }
}

/// Levels of fewer nodes than this are hashed on one thread.
const PARALLEL_NODES: usize = 16 * 1024;

/// The nodes above `below`, one per pair (a last node without a pair has
/// none yet); a long level on two threads.
fn parents(below: &[Hash]) -> Vec<Hash> {
    let hash = |nodes: &[Hash]| -> Vec<Hash> {
        nodes
            .chunks_exact(2)
            .map(|pair| merkle::node_hash(&pair[0], &pair[1]))
            .collect()
    };
    if below.len() < PARALLEL_NODES || !two_cores() {
        return hash(below);
    }
    let (older, newer) = below.split_at(below.len() / 4 * 2);
    std::thread::scope(|scope| {
        let newer = scope.spawn(|| hash(newer));
        let mut above = hash(older);
        above.extend(
            newer
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        );
        above
    })
}

fn two_cores() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
}

/// Extensions shorter than this are hashed on one thread.
const PARALLEL_MIN: u64 = 64 * 1024;

/// Where to split the extension `from..to` over two threads: a block
/// boundary near the middle, or `None` for one thread.
fn split_point(from: u64, to: u64) -> Option<u64> {
    if !two_cores() || to - from < PARALLEL_MIN {
        return None;
    }
    let middle = (from + (to - from) / 2) / BLOCK_LEAVES * BLOCK_LEAVES;
    (middle > from).then_some(middle)
}

/// The roots of the blocks completed by hashing the records of `offsets`
/// after the leaves of `tail` (the incomplete block they continue), and the
/// leaves of the block left incomplete.
fn hash_blocks(
    log: &Log,
    offsets: Range<u64>,
    mut tail: Vec<Hash>,
) -> Result<(Vec<Hash>, Vec<Hash>)> {
    let mut complete = Vec::new();
    read_leaves(log, offsets, |leaf| {
        tail.push(leaf);
        if tail.len() as u64 == BLOCK_LEAVES {
            complete.push(merkle::root(&tail));
            tail.clear();
        }
    })?;
    Ok((complete, tail))
}

/// Hands `f` the leaf hash of every record of `log` in `offsets`, in
/// order; fails where a record is missing (damage the read skipped).
fn read_leaves(log: &Log, offsets: Range<u64>, mut f: impl FnMut(Hash)) -> Result<()> {
    let mut expected = offsets.start;
    log.scan(offsets.start, i64::MIN..=i64::MAX, |frame| {
        if frame.offset >= offsets.end || frame.offset != expected {
            return ControlFlow::Break(());
        }
        f(merkle::record_leaf_hash(
            frame.offset,
            frame.timestamp_us,
            frame.payload,
        ));
        expected += 1;
        ControlFlow::Continue(())
    })?;
    if expected != offsets.end {
        return Err(Error::Corruption {
            path: log.dir().to_path_buf(),
            position: 0,
            reason: format!(
                "the record at offset {expected} cannot be read (damage a read skips, or a \
                 log shorter than {}): a tree head needs every record; see `enforcelog verify`",
                offsets.end
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u64) -> Hash {
        merkle::record_leaf_hash(i, i as i64, &i.to_le_bytes())
    }

    fn expected(n: u64) -> (Vec<Hash>, Vec<Hash>) {
        let leaves: Vec<Hash> = (0..n).map(leaf).collect();
        let blocks = leaves
            .chunks_exact(BLOCK_LEAVES as usize)
            .map(merkle::root)
            .collect();
        let tail = leaves[(n / BLOCK_LEAVES * BLOCK_LEAVES) as usize..].to_vec();
        (blocks, tail)
    }

    #[test]
    fn pieces_folded_and_joined_are_the_blocks_of_the_whole() {
        let b = BLOCK_LEAVES;
        for n in [0, 1, b - 1, b, b + 1, 3 * b - 7, 4 * b, 5 * b + 3] {
            let cuts_list: Vec<Vec<u64>> = vec![
                vec![],
                vec![1],
                vec![b],
                vec![b - 1, b + 1],
                vec![n / 2],
                vec![3, 7, b + 5, 2 * b, 2 * b + 1, 3 * b - 8],
                (1..n).step_by(37).collect(),
            ];
            for cuts in cuts_list {
                let mut bounds = vec![0];
                bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < n));
                bounds.push(n);
                bounds.dedup();
                let mut joined = BlockFold::new();
                for w in bounds.windows(2) {
                    let mut piece = BlockFold::new();
                    for i in w[0]..w[1] {
                        piece.push(i, leaf(i));
                    }
                    joined = joined.join(piece);
                }
                let tree = joined.into_tree().expect("a fold from 0 without a gap");
                let (blocks, tail) = expected(n);
                assert_eq!(tree.blocks(), blocks, "n {n} cuts {cuts:?}");
                assert_eq!(tree.tail, tail, "n {n} cuts {cuts:?}");
                assert_eq!(tree.size(), n);
            }
        }
    }

    #[test]
    fn every_kept_run_of_blocks_is_the_root_of_its_leaves_whichever_way_the_tree_grew() {
        let b = BLOCK_LEAVES;
        for n in [0, 1, b, 2 * b + 3, 7 * b, 8 * b, 13 * b + 5, 64 * b + 1] {
            let leaves: Vec<Hash> = (0..n).map(leaf).collect();
            let mut pushed = LogTree::new();
            for &l in &leaves {
                pushed.push_leaf(l);
            }
            let mut fold = BlockFold::new();
            for (i, &l) in leaves.iter().enumerate() {
                fold.push(i as u64, l);
            }
            let folded = fold.into_tree().expect("from zero");
            for tree in [&pushed, &folded] {
                assert_eq!(tree.size(), n);
                for (k, level) in tree.levels.iter().enumerate() {
                    let run = (b << k) as usize;
                    assert_eq!(level.len(), leaves.len() / run, "n {n} level {k}");
                    for (i, node) in level.iter().enumerate() {
                        assert_eq!(
                            *node,
                            merkle::root(&leaves[i * run..(i + 1) * run]),
                            "n {n} level {k} node {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_gap_or_a_fold_not_from_zero_is_no_tree() {
        let mut fold = BlockFold::new();
        fold.push(0, leaf(0));
        fold.push(2, leaf(2));
        assert!(fold.into_tree().is_none());
        let mut later = BlockFold::new();
        later.push(5, leaf(5));
        assert!(later.clone().into_tree().is_none());
        let mut first = BlockFold::new();
        first.push(0, leaf(0));
        assert!(
            first.join(later).into_tree().is_none(),
            "offsets 1..5 missing"
        );
    }
}
