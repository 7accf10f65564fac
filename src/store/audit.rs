//! Tree heads and proofs of a store's log (issue 18; docs/AUDIT.md): the
//! head of this store's log now, an inclusion proof of one record, a
//! consistency proof between two sizes.
//!
//! Each call computes the tree from the records (`audit::tree`: one pass
//! of SHA-256 over every record up to the size asked, then at most two
//! blocks of 256 read again for a proof). Nothing is cached between calls:
//! a cached tree would have to follow every way the log can change under a
//! store (a writer's reopen after a failed fsync that gives offsets again,
//! a read-only refresh after a `repair`), and a stale one would speak for
//! records the log no longer holds. Persisted, verified block roots are the
//! planned way to make heads cheap (docs/AUDIT.md).
//!
//! Invariants: a head covers only durable records (a writer syncs first),
//! never a record the reader stands in for (damage read past: no head), and
//! one log: a directory of several shards has one tree per shard, and a
//! head of it is refused rather than given for a part.

use std::ops::ControlFlow;

use crate::audit::head::TreeHead;
use crate::audit::merkle::{self, Subtrees};
use crate::audit::proof::{ConsistencyProof, InclusionProof};
use crate::audit::tree::LogTree;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::store::Store;

impl Store {
    /// The tree head of this store's log now: its durable records (a
    /// writer syncs first; blocks the thread), the root of their Merkle
    /// tree, and the time it was taken.
    ///
    /// Fails with [`Error::Corruption`] when a record cannot be read (damage:
    /// see `enforcelog verify`), and with [`Error::InvalidOptions`] for a
    /// directory of several shards (one tree each: not supported yet).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use enforcelog::{Action, Event, Store};
    /// let store = Store::open(dir.path(), Default::default())?;
    /// store.record_blocking(Event::new("acme", "budget", Action::Killed))?;
    /// let head = store.head()?;
    /// assert_eq!(head.size, 1);
    /// let proof = store.prove_inclusion(0, head.size)?;
    /// assert_eq!(proof.root, head.root);
    /// proof.verify()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn head(&self) -> Result<TreeHead> {
        let log = self.audited_log()?;
        let size = if self.inner.read_only() {
            // A reader sees the published durable end only.
            log.next_offset()
        } else {
            log.sync_blocking()?
        };
        let tree = tree_of(&log, size)?;
        let root = tree.view(&log).root_of_prefix(size)?;
        Ok(TreeHead {
            size,
            root,
            time: crate::timestamp::format_us(crate::record::now_us()),
        })
    }

    /// The inclusion proof of the record at `offset` in the tree of the
    /// first `tree_size` records. Fails with [`Error::OffsetOutOfRange`]
    /// unless `offset < tree_size <= ` the log's committed size.
    pub fn prove_inclusion(&self, offset: u64, tree_size: u64) -> Result<InclusionProof> {
        let log = self.audited_log()?;
        let next = log.next_offset();
        if tree_size > next || offset >= tree_size {
            return Err(Error::OffsetOutOfRange {
                requested: if tree_size > next { tree_size } else { offset },
                next_offset: next.min(tree_size),
            });
        }
        let tree = tree_of(&log, tree_size)?;
        let view = tree.view(&log);
        let path = merkle::inclusion_proof(&view, offset, tree_size)?;
        Ok(InclusionProof {
            leaf_index: offset,
            tree_size,
            leaf_hash: view.root_of(offset..offset + 1)?,
            path,
            root: view.root_of_prefix(tree_size)?,
        })
    }

    /// The consistency proof between the trees of the first `old_size` and
    /// the first `new_size` records. Fails with [`Error::OffsetOutOfRange`]
    /// when `new_size` is past the log's committed size, and with
    /// [`Error::InvalidOptions`] when `old_size > new_size`.
    pub fn prove_consistency(&self, old_size: u64, new_size: u64) -> Result<ConsistencyProof> {
        let log = self.audited_log()?;
        let next = log.next_offset();
        if new_size > next {
            return Err(Error::OffsetOutOfRange {
                requested: new_size,
                next_offset: next,
            });
        }
        if old_size > new_size {
            return Err(Error::InvalidOptions {
                name: "old_size",
                reason: format!("{old_size} is above new_size {new_size}"),
            });
        }
        let tree = tree_of(&log, new_size)?;
        let view = tree.view(&log);
        Ok(ConsistencyProof {
            old_size,
            new_size,
            old_root: view.root_of_prefix(old_size)?,
            new_root: view.root_of_prefix(new_size)?,
            path: merkle::consistency_proof(&view, old_size, new_size)?,
        })
    }

    /// This store's log, when its directory has one tree (one shard).
    fn audited_log(&self) -> Result<Log> {
        let shards = Store::shard_dirs(&self.inner.root)?.len();
        if shards > 1 {
            return Err(Error::InvalidOptions {
                name: "head",
                reason: format!(
                    "{} has {shards} shards, each with a tree of its own: tree heads of a \
                     sharded directory are not supported yet",
                    self.inner.root.display()
                ),
            });
        }
        Ok(self.inner.log())
    }
}

/// The tree of the first `size` records of `log`, refusing a log whose
/// records there are in part stand-ins for damage a read went past.
fn tree_of(log: &Log, size: u64) -> Result<LogTree> {
    let mut tree = LogTree::new();
    tree.extend(log, size)?;
    let damaged = log.damaged_segments_below(size);
    if damaged.is_empty() {
        // Damage a read stands in for without a rebuilt segment (the last
        // segment of a read-only view, say): found by `verify`, which reads
        // every byte (a second pass; persisted block roots will spare it).
        let report = log.verify()?;
        if let Some(p) = report.problems.iter().find(|p| {
            matches!(
                p.kind,
                crate::log::ProblemKind::Corruption | crate::log::ProblemKind::Layout
            )
        }) {
            return Err(Error::Corruption {
                path: p.path.clone(),
                position: p.position,
                reason: format!(
                    "{}: a tree head needs every record; see `enforcelog verify` and `repair`",
                    p.reason
                ),
            });
        }
    }
    for (path, base, next) in damaged {
        if let Some(offset) = first_stand_in(log, base..next.min(size))? {
            return Err(Error::Corruption {
                path,
                position: 0,
                reason: format!(
                    "the record at offset {offset} is damaged (its segment, at offset {base}, is                      read past its damage): a tree head needs every record; see `enforcelog \
                     verify` and `repair`"
                ),
            });
        }
    }
    Ok(tree)
}

/// The first offset in `offsets` whose record is a lost-entry stand-in.
fn first_stand_in(log: &Log, offsets: std::ops::Range<u64>) -> Result<Option<u64>> {
    let mut found = None;
    log.scan(offsets.start, i64::MIN..=i64::MAX, |frame| {
        if frame.offset >= offsets.end {
            return ControlFlow::Break(());
        }
        let entry = crate::payload::decode(frame.offset, frame.timestamp_us, frame.payload);
        if let Ok(crate::event::Entry::Lost(_)) = entry {
            found = Some(frame.offset);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    })?;
    Ok(found)
}
