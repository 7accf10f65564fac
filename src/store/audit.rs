//! Tree heads and proofs of a store's log (issue 18; docs/AUDIT.md): the
//! head of this store's shard now, an inclusion proof of one record, a
//! consistency proof between two sizes.
//!
//! The tree is computed from the records (`audit::tree`) and kept in the
//! store, extended as the log grows: the first head reads the whole log
//! once (SHA-256 of every record), later ones only what was committed
//! since. A proof reads at most two blocks of 256 records again. One tree
//! per shard: a directory of several shards has one head per shard.

use crate::audit::head::TreeHead;
use crate::audit::merkle::{self, Subtrees};
use crate::audit::proof::{ConsistencyProof, InclusionProof};
use crate::audit::tree::LogTree;
use crate::error::{Error, Result};
use crate::store::Store;

impl Store {
    /// The tree head of this store's shard now: its committed records,
    /// the root of their Merkle tree, and the time it was taken.
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
        let log = self.inner.log();
        let size = log.next_offset();
        let mut tree = self.tree()?;
        tree.extend(&log, size)?;
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
        let log = self.inner.log();
        let next = log.next_offset();
        if tree_size > next || offset >= tree_size {
            return Err(Error::OffsetOutOfRange {
                requested: if tree_size > next { tree_size } else { offset },
                next_offset: next.min(tree_size),
            });
        }
        let mut tree = self.tree()?;
        tree.extend(&log, tree_size)?;
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
        let log = self.inner.log();
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
        let mut tree = self.tree()?;
        tree.extend(&log, new_size)?;
        let view = tree.view(&log);
        Ok(ConsistencyProof {
            old_size,
            new_size,
            old_root: view.root_of_prefix(old_size)?,
            new_root: view.root_of_prefix(new_size)?,
            path: merkle::consistency_proof(&view, old_size, new_size)?,
        })
    }

    fn tree(&self) -> Result<std::sync::MutexGuard<'_, LogTree>> {
        Ok(self.inner.tree.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
