//! Tree heads and proofs of a store's log (issue 18; docs/AUDIT.md): the
//! head of this store's log now, an inclusion proof of one record, a
//! consistency proof between two sizes.
//!
//! A head computes the tree from the records, in the pass that checks
//! every checksum and the whole chain (`Log::verify_folding`), and keeps
//! it (`audit::kept`). A proof uses the kept tree when the log still ends
//! the way it did where the tree ends (the seal read again), extended by
//! the batches committed since, each checked as `verify` would; it then
//! reads one block of records again (`audit::tree::BLOCK_LEAVES`) and
//! hashes `O(log n)` nodes. Without a kept tree (in memory, or in the
//! file a writer leaves in its log directory), or when the log no longer
//! shows its seal, a proof makes the full pass and keeps its tree. A tree
//! is kept per shard: 2 x 32 bytes per block of records in memory (about
//! 4 MB per million records), 32 bytes per block on disk.
//!
//! Invariants: a head covers only durable records (a writer syncs first),
//! never a record the reader stands in for (damage read past: no head), and
//! one log, which it names (store id and shard): a directory of several
//! shards has one tree per shard, and one head per shard.

use std::ops::ControlFlow;

use crate::audit::head::{LogName, TreeHead};
use crate::audit::kept::{KeptTree, Seal};
use crate::audit::merkle::{self, Subtrees};
use crate::audit::proof::{ConsistencyProof, InclusionProof};
use crate::audit::tree::{LogTree, TreeView};
use crate::error::{Error, Result};
use crate::log::Log;
use crate::store::Store;

impl Store {
    /// The tree head of this store's log now: its durable records (a
    /// writer syncs first; blocks the thread), the root of their Merkle
    /// tree, the time it was taken, and the log's name (its store id and
    /// shard).
    ///
    /// Fails with [`Error::Corruption`] when a record cannot be read (damage:
    /// see `enforcelog verify`), and with [`Error::InvalidOptions`] for a
    /// directory of several shards: the store reads them all, and a head of
    /// one would not speak for what it shows. Ask for each shard's with
    /// [`Store::heads`] or [`Store::shard_head`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use enforcelog::{Action, Event, Store};
    /// let store = Store::open(dir.path(), Default::default())?;
    /// store.record_blocking(Event::new("acme", "budget", Action::Killed))?;
    /// let head = store.head()?;
    /// assert_eq!(head.size, 1);
    /// assert_eq!(head.log.map(|l| l.store_id), store.store_id());
    /// let proof = store.prove_inclusion(0, head.size)?;
    /// assert_eq!(proof.root, head.root);
    /// proof.verify()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn head(&self) -> Result<TreeHead> {
        self.shard_head(self.one_log()?)
    }

    /// The head of every shard of the store's directory, in shard order
    /// (one head for a directory of one log).
    pub fn heads(&self) -> Result<Vec<TreeHead>> {
        Store::shard_dirs(&self.inner.root)?
            .into_iter()
            .map(|(shard, _)| self.shard_head(shard))
            .collect()
    }

    /// The head of shard `shard` of the store's directory: this store's
    /// own log (synced first by a writer), or another shard's published
    /// durable end. Fails with [`Error::InvalidOptions`] when the directory
    /// has no such shard.
    pub fn shard_head(&self, shard: u32) -> Result<TreeHead> {
        Ok(self.head_with_consistency(shard, None)?.0)
    }

    /// Shard `shard`'s head now and, when `old_size` is given, the
    /// consistency proof from the tree of its first `old_size` records to
    /// that head, from one computation of the tree (what an audit needs:
    /// [`Store::shard_head`] then [`Store::prove_consistency_in_shard`]
    /// would compute it twice). Fails with [`Error::OffsetOutOfRange`] when
    /// `old_size` is past the head.
    pub fn head_with_consistency(
        &self,
        shard: u32,
        old_size: Option<u64>,
    ) -> Result<(TreeHead, Option<ConsistencyProof>)> {
        let audited = self.audited(shard)?;
        let log = &audited.log;
        let size = self.size_now(&audited)?;
        if let Some(old) = old_size.filter(|&old| old > size) {
            return Err(Error::OffsetOutOfRange {
                requested: old,
                next_offset: size,
            });
        }
        let tree = self.fresh_tree(shard, log, size)?;
        let view = tree.view(log);
        let root = view.root_of_prefix(size)?;
        let proof = match old_size {
            None => None,
            Some(old_size) => Some(ConsistencyProof {
                old_size,
                new_size: size,
                old_root: view.root_of_prefix(old_size)?,
                new_root: root,
                path: merkle::consistency_proof(&view, old_size, size)?,
            }),
        };
        let head = TreeHead {
            log: log.store_id().map(|store_id| LogName { store_id, shard }),
            size,
            root,
            time: crate::timestamp::format_us(crate::record::now_us()),
        };
        Ok((head, proof))
    }

    /// How many records a head of this store's log would cover now (a
    /// writer syncs first; blocks the thread), without computing its tree:
    /// the size to ask a proof of the whole log for. Fails like
    /// [`Store::head`] for a directory of several shards
    /// ([`Store::shard_head_size`] names one).
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use enforcelog::{Action, Event, Store};
    /// let store = Store::open(dir.path(), Default::default())?;
    /// store.record_blocking(Event::new("acme", "budget", Action::Blocked))?;
    /// let size = store.head_size()?;
    /// assert_eq!(size, 1);
    /// store.prove_inclusion(0, size)?.verify()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn head_size(&self) -> Result<u64> {
        self.shard_head_size(self.one_log()?)
    }

    /// [`Store::head_size`] of shard `shard`.
    pub fn shard_head_size(&self, shard: u32) -> Result<u64> {
        self.size_now(&self.audited(shard)?)
    }

    /// The size a head of `audited` covers now.
    fn size_now(&self, audited: &Audited) -> Result<u64> {
        if audited.own && !self.inner.read_only() {
            audited.log.sync_blocking()
        } else {
            // A reader sees the published durable end only.
            Ok(audited.log.next_offset())
        }
    }

    /// The inclusion proof of the record at `offset` in the tree of the
    /// first `tree_size` records of this store's log. Fails with
    /// [`Error::OffsetOutOfRange`] unless `offset < tree_size <= ` the log's
    /// committed size, and like [`Store::head`] for a directory of several
    /// shards ([`Store::prove_inclusion_in_shard`] names one).
    ///
    /// Answered from the tree the store keeps since its last head or proof
    /// (or from the `TREE` file a writer's head left), extended by the
    /// batches committed since, in tens of microseconds; the first proof of
    /// a store without one makes the full pass a head makes
    /// ([`StoreMetrics::tree_passes`](crate::StoreMetrics::tree_passes)
    /// counts them). A proof vouches for the tree, not for the chain: ask
    /// for a head to have the whole log checked (docs/AUDIT.md, "Proofs
    /// from a kept tree").
    pub fn prove_inclusion(&self, offset: u64, tree_size: u64) -> Result<InclusionProof> {
        self.prove_inclusion_in_shard(self.one_log()?, offset, tree_size)
    }

    /// [`Store::prove_inclusion`] in the log of shard `shard`.
    pub fn prove_inclusion_in_shard(
        &self,
        shard: u32,
        offset: u64,
        tree_size: u64,
    ) -> Result<InclusionProof> {
        let log = self.audited(shard)?.log;
        let next = log.next_offset();
        if tree_size > next || offset >= tree_size {
            return Err(Error::OffsetOutOfRange {
                requested: if tree_size > next { tree_size } else { offset },
                next_offset: next.min(tree_size),
            });
        }
        self.with_tree(shard, &log, tree_size, |view| {
            let path = merkle::inclusion_proof(view, offset, tree_size)?;
            Ok(InclusionProof {
                leaf_index: offset,
                tree_size,
                leaf_hash: view.root_of(offset..offset + 1)?,
                path,
                root: view.root_of_prefix(tree_size)?,
            })
        })
    }

    /// The consistency proof between the trees of the first `old_size` and
    /// the first `new_size` records of this store's log. Fails with
    /// [`Error::OffsetOutOfRange`] when `new_size` is past the log's
    /// committed size, and with [`Error::InvalidOptions`] when `old_size >
    /// new_size` or the directory has several shards
    /// ([`Store::prove_consistency_in_shard`] names one).
    pub fn prove_consistency(&self, old_size: u64, new_size: u64) -> Result<ConsistencyProof> {
        self.prove_consistency_in_shard(self.one_log()?, old_size, new_size)
    }

    /// [`Store::prove_consistency`] in the log of shard `shard`.
    pub fn prove_consistency_in_shard(
        &self,
        shard: u32,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof> {
        let log = self.audited(shard)?.log;
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
        self.with_tree(shard, &log, new_size, |view| {
            Ok(ConsistencyProof {
                old_size,
                new_size,
                old_root: view.root_of_prefix(old_size)?,
                new_root: view.root_of_prefix(new_size)?,
                path: merkle::consistency_proof(view, old_size, new_size)?,
            })
        })
    }

    /// The tree of the first `size` records of shard `shard`'s `log` from a
    /// full pass (checksums, chain: see [`tree_of`]), kept for later proofs
    /// when a chained batch ends at `size`.
    fn fresh_tree(&self, shard: u32, log: &Log, size: u64) -> Result<LogTree> {
        let mut trees = self.inner.trees.lock().unwrap_or_else(|e| e.into_inner());
        trees.remove(&shard);
        // Read before the pass: a log that changes during it no longer
        // shows the seal after it, and the tree is not kept.
        let seal = Seal::read(log, size)?;
        let mut repairs = log.repairs_seen();
        if repairs.is_none() && shard == self.shard() && !self.inner.read_only() {
            // An unreadable count: the writer renews it (no repair can run
            // while it holds the lock), so its tree can be kept on disk.
            if let Err(e) = log.renew_repair_count() {
                tracing::warn!(dir = %log.dir().display(), error = %e, "could not renew the repair count");
            }
            repairs = log.repairs_seen();
        }
        self.inner
            .counters
            .tree_passes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tree = tree_of(log, size)?;
        if let Some(seal) = seal {
            if let Some(kept) = KeptTree::new(log, tree.clone(), seal, repairs)? {
                // A writer leaves it for other processes (`audit::kept`).
                if shard == self.shard() && !self.inner.read_only() {
                    kept.save(log);
                }
                trees.insert(shard, kept);
            }
        }
        Ok(tree)
    }

    /// `f` over a tree of at least `size` records of shard `shard`'s `log`:
    /// the kept one when it still fits the log (see the module docs), else
    /// one from a full pass over the committed log, kept for next time.
    /// Anything that goes wrong with the kept tree (the log changed under
    /// it) drops it and is asked again of the full pass, which says what is
    /// wrong.
    fn with_tree<T>(
        &self,
        shard: u32,
        log: &Log,
        size: u64,
        f: impl Fn(&TreeView<'_>) -> Result<T>,
    ) -> Result<T> {
        {
            let mut trees = self.inner.trees.lock().unwrap_or_else(|e| e.into_inner());
            // Taken out, put back only when it answers.
            let mut kept = trees.remove(&shard);
            if !kept.as_mut().is_some_and(|kept| kept.usable_over(log)) {
                // None kept, or a repair ran since: the tree a writer kept on
                // disk (removed by a repair, or written since) instead.
                kept = KeptTree::load(log);
                if !kept.as_mut().is_some_and(|kept| kept.usable_over(log)) {
                    kept = None;
                }
            }
            if let Some(mut kept) = kept {
                let answer = match kept.checked(log, size) {
                    Ok(Some(tree)) => f(&tree.view(log)).ok(),
                    _ => None,
                };
                if let Some(answer) = answer {
                    trees.insert(shard, kept);
                    return Ok(answer);
                }
            }
        }
        // The whole committed log, so later proofs find it kept; only the
        // first `size` records when the rest cannot make a tree (damage
        // read past above `size`, say).
        let end = log.next_offset().max(size);
        let tree = match self.fresh_tree(shard, log, end) {
            Ok(tree) => tree,
            Err(_) if end > size => self.fresh_tree(shard, log, size)?,
            Err(e) => return Err(e),
        };
        f(&tree.view(log))
    }

    /// The store's shard, when its directory has one log.
    fn one_log(&self) -> Result<u32> {
        let shards = Store::shard_dirs(&self.inner.root)?.len();
        if shards > 1 {
            return Err(Error::InvalidOptions {
                name: "shard",
                reason: format!(
                    "{} has {shards} shards, each with a tree of its own: ask for one shard's \
                     head or proof (`shard_head`, `prove_inclusion_in_shard`, \
                     `prove_consistency_in_shard`) or every shard's head (`heads`)",
                    self.inner.root.display()
                ),
            });
        }
        Ok(self.shard())
    }

    /// The log of shard `shard`: the store's own, or another shard's opened
    /// read-only for this one question (a view of its published durable
    /// end, dropped after).
    fn audited(&self, shard: u32) -> Result<Audited> {
        if shard == self.shard() {
            return Ok(Audited {
                log: self.inner.log(),
                own: true,
            });
        }
        let shards = Store::shard_dirs(&self.inner.root)?;
        let Some((_, dir)) = shards.iter().find(|(n, _)| *n == shard) else {
            let listed: Vec<String> = shards.iter().map(|(n, _)| n.to_string()).collect();
            return Err(Error::InvalidOptions {
                name: "shard",
                reason: format!(
                    "{} has no shard {shard} (its shards: {})",
                    self.inner.root.display(),
                    listed.join(", ")
                ),
            });
        };
        Ok(Audited {
            log: Log::open_read_only(dir)?,
            own: false,
        })
    }
}

/// A log a head or proof is asked of.
struct Audited {
    log: Log,
    /// The store's own log (a writer's, which a head syncs first).
    own: bool,
}

/// The tree of the first `size` records of `log`, refusing a log whose
/// records there are in part stand-ins for damage a read went past.
fn tree_of(log: &Log, size: u64) -> Result<LogTree> {
    // One pass over every byte: the checksums (damage a read would stand
    // in for), the chain, and the leaves of the tree, which the chain
    // check hashes anyway.
    let (report, folded) = log.verify_folding(Some(size))?;
    // A head would vouch for a rewritten history: refused, naming where.
    // Anywhere in the log: the rewrite may lie in the batch before the
    // first link that does not fit.
    if let Some(e) = report.tampering_error() {
        return Err(e);
    }
    let damaged = log.damaged_segments_below(size);
    if damaged.is_empty() {
        // Damage a read stands in for without a rebuilt segment (the last
        // segment of a read-only view, say).
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
    let tree = match folded {
        Some(tree) if tree.size() == size => tree,
        // The files did not give every record below `size` in order (a
        // segment read past its damage, checked below; a view that moved
        // on): the tree of the records as the log reads them.
        _ => {
            let mut tree = LogTree::new();
            tree.extend(log, size)?;
            tree
        }
    };
    for (path, base, next) in damaged {
        if let Some(offset) = first_stand_in(log, base..next.min(size))? {
            return Err(Error::Corruption {
                path,
                position: 0,
                reason: format!(
                    "the record at offset {offset} is damaged (its segment, at offset {base}, is \
                     read past its damage): a tree head needs every record; see `enforcelog \
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
