//! The projections of a store: applying committed entries to them, waiting
//! for them to catch up, checkpointing and restoring them.
//!
//! Each projection has its own offset (entries below it are folded in), so
//! projections restored from checkpoints of different ages share one
//! follower: an entry is applied to a projection only if it is at or past
//! that projection's offset.
//!
//! An entry that does not decode (not a store payload) is passed to
//! [`Projection::skip_undecodable`] instead of `apply`, and the projection
//! moves past it: the host never stops at one.

use std::any::Any;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::checkpoint::Checkpoint;
use super::{valid_name, KeyBlock, Projection};
use crate::error::{Error, Result};
use crate::event::Entry;
use crate::event_view::{view, EntryView};
use crate::log::dir::write_file_atomically;
use crate::log::Log;
use crate::log::StoreId;
use crate::payload::{self, PayloadError};
use crate::storage::{create_dir_all_durably, read_all, OpenMode, Storage};

/// The subdirectory of the store holding checkpoints.
pub(crate) const CHECKPOINT_DIR: &str = "projections";
/// Entries applied per write-lock hold.
const CHUNK: usize = 1024;
/// Events of a keys-only projection folded per
/// [`Projection::apply_keys_block`] call.
const BLOCK: usize = 256;

struct Slot {
    projection: Box<dyn Projection>,
    offset: u64,
    /// The projection panicked while folding: its state is unknown (part
    /// of an entry or of a block may be in it). The next catch-up resets
    /// it and folds the log again from 0.
    unsure: bool,
}

impl Slot {
    /// The projection panicked while folding or merging: part of an entry,
    /// a block or a merge may be in it, so it reflects no offset for sure
    /// and claims none until the next catch-up rebuilds it.
    fn mark_unsure(&mut self) {
        self.unsure = true;
        self.offset = 0;
    }
}

/// How a projection's checkpoint compares with a rebuild from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionCheck {
    /// The projection's name.
    pub name: String,
    /// The offset the checkpoint covers, if there is a usable one.
    pub checkpoint_offset: Option<u64>,
    /// True when the checkpoint equals a fresh rebuild up to its offset (or
    /// when there is no checkpoint to compare).
    pub matches: bool,
    /// What is wrong, if anything.
    pub problem: Option<String>,
}

pub(crate) struct Host {
    slots: RwLock<Vec<Slot>>,
    /// The least offset of all projections: what every answer reflects.
    applied: Mutex<u64>,
    progress: Condvar,
    failure: Mutex<Option<String>>,
    checkpointed: Mutex<(u64, Instant)>,
    /// One catch-up at a time: two would read and decode the same entries.
    /// It holds the projections' key blocks (empty between catch-ups),
    /// kept so a catch-up of one event allocates none.
    catching_up: Mutex<Vec<KeyBlock>>,
    /// One checkpoint write at a time: two would share each temporary
    /// file, and the second rename would find it gone.
    checkpointing: Mutex<()>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("applied", &self.applied_offset())
            .finish_non_exhaustive()
    }
}

fn checkpoint_dir(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_DIR)
}

fn checkpoint_name(projection: &dyn Projection) -> String {
    format!("{}.ckpt", projection.name())
}

impl Host {
    pub fn new(projections: Vec<Box<dyn Projection>>) -> Result<Self> {
        let mut names = std::collections::BTreeSet::new();
        for p in &projections {
            if !valid_name(p.name()) || !names.insert(p.name().to_string()) {
                return Err(Error::InvalidOptions {
                    name: "projections",
                    reason: format!(
                        "projection name {:?} is not 1..=64 of a-z 0-9 _ - or is used twice",
                        p.name()
                    ),
                });
            }
        }
        let slots = projections
            .into_iter()
            .map(|projection| Slot {
                projection,
                offset: 0,
                unsure: false,
            })
            .collect();
        Ok(Self {
            slots: RwLock::new(slots),
            applied: Mutex::new(0),
            progress: Condvar::new(),
            failure: Mutex::new(None),
            checkpointed: Mutex::new((0, Instant::now())),
            catching_up: Mutex::new(Vec::new()),
            checkpointing: Mutex::new(()),
        })
    }

    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Slot>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_slots(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Slot>> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The offset every projection has reached.
    pub fn applied_offset(&self) -> u64 {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_applied(&self, slots: &[Slot]) {
        let least = slots.iter().map(|s| s.offset).min().unwrap_or(u64::MAX);
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) = least;
        self.progress.notify_all();
    }

    /// A catch-up ended in a projection's panic (the projection is then
    /// marked for a rebuild, see [`Hold`]): queries that wait for the
    /// projections fail at once with `message` until a catch-up succeeds,
    /// instead of waiting for progress that may not come.
    pub fn note_panic(&self, message: &str) {
        *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
            "a projection panicked while folding ({message}); it is rebuilt from the log at \
             the next catch-up"
        ));
        self.progress.notify_all();
    }

    /// Why the follower is stuck, if it is.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads each projection's checkpoint if it is valid for `log`; a
    /// missing, stale, corrupt or mismatched one is ignored (with a
    /// warning) and the projection is rebuilt from the log.
    pub fn load_checkpoints(&self, storage: &dyn Storage, dir: &Path, log: &Log) {
        let mut slots = self.write_slots();
        for slot in slots.iter_mut() {
            let path = checkpoint_dir(dir).join(checkpoint_name(&*slot.projection));
            match load_one(storage, &path, &mut *slot.projection, log) {
                Ok(Some(offset)) => {
                    info!(
                        projection = slot.projection.name(),
                        offset, "restored projection from its checkpoint"
                    );
                    slot.offset = offset;
                }
                Ok(None) => {
                    info!(
                        projection = slot.projection.name(),
                        "no checkpoint; building the projection from the log"
                    );
                }
                Err(reason) => {
                    warn!(
                        projection = slot.projection.name(),
                        checkpoint = %path.display(),
                        reason = %reason,
                        "ignoring the checkpoint; rebuilding the projection from the log"
                    );
                    slot.projection.reset();
                    slot.offset = 0;
                }
            }
        }
        self.set_applied(&slots);
        let applied = self.applied_offset();
        *self.checkpointed.lock().unwrap_or_else(|e| e.into_inner()) = (applied, Instant::now());
    }

    /// Applies every committed entry not yet applied. Returns the offset
    /// reached.
    pub fn catch_up(&self, log: &Log) -> Result<u64> {
        let mut blocks = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.catch_up_inner(log, &mut blocks);
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => *failure = None,
            Err(e) => {
                if failure.is_none() {
                    warn!(error = %e, "projections cannot advance");
                }
                *failure = Some(e.to_string());
            }
        }
        drop(failure);
        self.progress.notify_all();
        result
    }

    fn catch_up_inner(&self, log: &Log, blocks: &mut Vec<KeyBlock>) -> Result<u64> {
        self.reset_unsure();
        let start = self.applied_offset();
        let end = log.next_offset();
        if start >= end {
            return Ok(start);
        }
        if let Some(split) = self.parallel_split(log, start, end) {
            self.replay_in_parallel(log, start, split, end);
            // A projection that panicked in its merge is rebuilt, not
            // folded over again from where it claims to be.
            self.reset_unsure();
        }
        // Sequentially from wherever the projections are now: everything,
        // or what the parallel replay left (nothing, unless it could not
        // merge or met an error, which this pass then meets and reports).
        let start = self.applied_offset();
        if start >= end {
            return Ok(start);
        }
        // The write lock is held for at most CHUNK records at a time, so
        // queries wait no longer than before, and the projections are fed
        // the frames where they lie: no copy, no owned entry per record.
        let mut hold = Hold {
            host: self,
            slots: None,
            blocks,
            feeding: None,
        };
        let mut held = 0;
        let scanned = log.scan(start, i64::MIN..=i64::MAX, |frame| {
            if frame.offset >= end {
                return ControlFlow::Break(());
            }
            hold.feed(frame.offset, frame.timestamp_us, frame.payload);
            held += 1;
            if held == CHUNK {
                hold.release();
                held = 0;
            }
            ControlFlow::Continue(())
        });
        hold.release();
        drop(hold);
        scanned?;
        Ok(self.applied_offset())
    }

    /// Resets every projection that panicked while folding, to be folded
    /// again from 0.
    fn reset_unsure(&self) {
        if !self.read_slots().iter().any(|s| s.unsure) {
            return;
        }
        let mut slots = self.write_slots();
        for slot in slots.iter_mut().filter(|s| s.unsure) {
            warn!(
                projection = slot.projection.name(),
                "the projection panicked while folding; rebuilding it from the log"
            );
            slot.projection.reset();
            slot.offset = 0;
            slot.unsure = false;
        }
        self.set_applied(&slots);
    }

    /// Where to split a catch-up from `start` to `end` for two threads: at
    /// the segment base nearest the middle, when the catch-up starts at
    /// least one sealed segment behind the active one, every projection
    /// stands at `start` and every one can merge. `None`: replay in order.
    fn parallel_split(&self, log: &Log, start: u64, end: u64) -> Option<u64> {
        let bases = log.segment_bases();
        let active_base = *bases.last()?;
        if start >= active_base {
            return None;
        }
        let slots = self.read_slots();
        let mergeable = slots.iter().all(|slot| {
            let mut probe = slot.projection.fresh();
            slot.offset == start && probe.merge_later(slot.projection.fresh()).is_ok()
        });
        if slots.is_empty() || !mergeable {
            return None;
        }
        let middle = start + (end - start) / 2;
        bases
            .into_iter()
            .filter(|&base| base > start && base < end)
            .min_by_key(|&base| base.abs_diff(middle))
    }

    /// Folds `start..split` and `split..end` into fresh copies of every
    /// projection on two threads, then merges them into the projections in
    /// offset order. Leaves the projections as they were when a half fails
    /// (an error, a damage it cannot read past) or will not merge: the
    /// sequential pass then takes it from there.
    fn replay_in_parallel(&self, log: &Log, start: u64, split: u64, end: u64) {
        let copies = || -> Vec<Box<dyn Projection>> {
            self.read_slots()
                .iter()
                .map(|slot| slot.projection.fresh())
                .collect()
        };
        let (older, newer) = (copies(), copies());
        let (older, newer) = std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("enforcelog-replay".into())
                .spawn_scoped(scope, || fold(log, start, split, older));
            let newer = fold(log, split, end, newer);
            let older = match thread {
                Ok(thread) => thread.join().unwrap_or(None),
                Err(e) => {
                    warn!(error = %e, "cannot start a replay thread; replaying in order");
                    None
                }
            };
            (older, newer)
        });
        let (Some(older), Some(newer)) = (older, newer) else {
            return;
        };
        let mut slots = self.write_slots();
        let mut merged = 0;
        for ((slot, mut older), newer) in slots.iter_mut().zip(older).zip(newer) {
            // Reset meanwhile: left for the sequential pass.
            if slot.offset != start {
                continue;
            }
            // `merge_later` leaves its receiver unchanged when it fails,
            // so a failure at either step leaves the slot as it was. A
            // panic in the first leaves it so too (only the copies were
            // touched); one in the second may have merged part of the
            // later half into the registered projection, which is then
            // rebuilt rather than folded over again.
            let halves = catch_unwind(AssertUnwindSafe(|| older.merge_later(newer)));
            let outcome = match halves {
                Ok(Ok(())) => catch_unwind(AssertUnwindSafe(|| slot.projection.merge_later(older))),
                Ok(Err(_)) | Err(_) => Ok(Err(older)),
            };
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    warn!(
                        projection = slot.projection.name(),
                        "cannot merge the halves of a replay; replaying in order"
                    );
                    continue;
                }
                Err(_) => {
                    warn!(
                        projection = slot.projection.name(),
                        "the projection panicked while merging the halves of a replay; rebuilding it"
                    );
                    slot.mark_unsure();
                    continue;
                }
            }
            slot.offset = end;
            merged += 1;
        }
        self.set_applied(&slots);
        drop(slots);
        info!(
            from = start,
            to = end,
            split,
            merged,
            "replayed the projections on two threads"
        );
    }

    /// Waits until every projection reached `offset`, at most `timeout`.
    /// Returns the offset reached.
    pub fn wait_for(&self, offset: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        while *applied < offset && self.failure().is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            applied = self
                .progress
                .wait_timeout(applied, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *applied
    }

    /// Runs `f` on the registered projection of type `P`, with the offset
    /// it reflects.
    pub fn with<P: Projection, R>(&self, f: impl FnOnce(&P, u64) -> R) -> Option<R> {
        let slots = self.read_slots();
        let (p, offset) = slots.iter().find_map(|slot| {
            let any: &dyn Any = slot.projection.as_ref();
            any.downcast_ref::<P>().map(|p| (p, slot.offset))
        })?;
        Some(f(p, offset))
    }

    /// Whether a checkpoint is due.
    pub fn checkpoint_due(&self, every_entries: u64, every: Duration) -> bool {
        let (offset, at) = *self.checkpointed.lock().unwrap_or_else(|e| e.into_inner());
        let applied = self.applied_offset();
        applied > offset && (applied - offset >= every_entries || at.elapsed() >= every)
    }

    /// Writes every projection's checkpoint atomically (temporary file,
    /// fsync, rename, directory fsync).
    pub fn checkpoint(&self, storage: &dyn Storage, dir: &Path, log: &Log) -> Result<()> {
        let _one_at_a_time = self.checkpointing.lock().unwrap_or_else(|e| e.into_inner());
        let cdir = checkpoint_dir(dir);
        if !storage
            .exists(&cdir)
            .map_err(|e| Error::io("stat", &cdir, e))?
        {
            create_dir_all_durably(storage, &cdir)
                .map_err(|e| Error::io("create directory", &cdir, e))?;
        }
        let slots = self.read_slots();
        // A projection that panicked holds a state no offset describes
        // until it is rebuilt: its last good checkpoint stays.
        for slot in slots.iter().filter(|slot| !slot.unsure) {
            let (anchor_crc, anchor_ts) = anchor(log, slot.offset)?;
            let checkpoint = Checkpoint {
                snapshot_version: slot.projection.version(),
                offset: slot.offset,
                anchor_crc,
                anchor_ts,
                store_id: log.store_id().map_or(0, StoreId::as_u128),
                snapshot: slot.projection.snapshot(),
            };
            let name = checkpoint_name(&*slot.projection);
            write_file_atomically(storage, &cdir, &name, &checkpoint.encode(), true)?;
        }
        let applied = slots.iter().map(|s| s.offset).min().unwrap_or(0);
        drop(slots);
        *self.checkpointed.lock().unwrap_or_else(|e| e.into_inner()) = (applied, Instant::now());
        info!(offset = applied, "checkpointed projections");
        Ok(())
    }

    /// Whether some projection has applied entries at or past `next_offset`:
    /// after a failed fsync cut records it had counted (under `Interval`),
    /// the reopened log ends before what it applied.
    pub fn ahead_of(&self, next_offset: u64) -> bool {
        self.read_slots().iter().any(|s| s.offset > next_offset)
    }

    /// Forgets every projection's state; the follower rebuilds them.
    pub fn reset_all(&self) {
        let mut slots = self.write_slots();
        for slot in slots.iter_mut() {
            slot.projection.reset();
            slot.offset = 0;
            slot.unsure = false;
        }
        self.set_applied(&slots);
    }

    /// Compares each projection's checkpoint with a fresh rebuild from the
    /// log up to the checkpoint's offset.
    pub fn verify(
        &self,
        storage: &dyn Storage,
        dir: &Path,
        log: &Log,
    ) -> Result<Vec<ProjectionCheck>> {
        let fresh: Vec<Box<dyn Projection>> = self
            .read_slots()
            .iter()
            .map(|s| s.projection.fresh())
            .collect();
        let mut checks = Vec::new();
        for mut restored in fresh {
            let name = restored.name().to_string();
            let path = checkpoint_dir(dir).join(checkpoint_name(&*restored));
            let mut check = ProjectionCheck {
                name,
                checkpoint_offset: None,
                matches: true,
                problem: None,
            };
            match load_one(storage, &path, &mut *restored, log) {
                Ok(None) => {}
                Err(reason) => {
                    check.matches = false;
                    check.problem = Some(reason);
                }
                Ok(Some(offset)) => {
                    check.checkpoint_offset = Some(offset);
                    let mut rebuilt = restored.fresh();
                    let mut block = KeyBlock::with_capacity(BLOCK);
                    log.scan(0, i64::MIN..=i64::MAX, |frame| {
                        if frame.offset >= offset {
                            return ControlFlow::Break(());
                        }
                        Fed::new(frame.offset, frame.timestamp_us, frame.payload)
                            .feed(&mut *rebuilt, &mut block);
                        ControlFlow::Continue(())
                    })?;
                    block.fold_into(&mut *rebuilt);
                    // A checkpoint of merged folds (replay on several
                    // threads) is laid out as the normalized in-order fold.
                    rebuilt.normalize();
                    restored.normalize();
                    if rebuilt.snapshot() != restored.snapshot() {
                        check.matches = false;
                        check.problem =
                            Some("checkpoint differs from a rebuild from the log".into());
                    }
                }
            }
            checks.push(check);
        }
        Ok(checks)
    }
}

/// The projections' write lock, held for a chunk of a catch-up, and the
/// events waiting in each keys-only projection's block.
///
/// Invariant: a slot's offset counts the events in its block, so the scan
/// hands each slot exactly the record at its next offset. The blocks are
/// folded before the lock is let go ([`Hold::release`]); if a projection
/// panics meanwhile, `drop` (which calls no projection) takes the events
/// no projection was given back out of the offsets, and marks the
/// projection that was being fed `unsure`. No event is then lost to the
/// other projections, or counted by the one that panicked without being
/// folded again (it is rebuilt).
struct Hold<'h> {
    host: &'h Host,
    slots: Option<std::sync::RwLockWriteGuard<'h, Vec<Slot>>>,
    blocks: &'h mut Vec<KeyBlock>,
    /// The slot being fed or folded: the one that panicked, when unwinding.
    feeding: Option<usize>,
}

impl Hold<'_> {
    /// Feeds one record to every slot whose next offset it is.
    fn feed(&mut self, offset: u64, timestamp_us: i64, payload: &[u8]) {
        let host = self.host;
        let slots = self.slots.get_or_insert_with(|| host.write_slots());
        // Registrations happen between holds: one block per slot now.
        self.blocks
            .resize_with(slots.len(), || KeyBlock::with_capacity(BLOCK));
        let mut record = Fed::new(offset, timestamp_us, payload);
        for (i, (slot, block)) in slots.iter_mut().zip(self.blocks.iter_mut()).enumerate() {
            // Each projection takes exactly the entry at its own offset,
            // then the next: an entry it already has is skipped, and a
            // record past its offset (another thread reset it meanwhile)
            // is left for the next catch-up. So every projection sees
            // every offset once, in order.
            if offset == slot.offset {
                self.feeding = Some(i);
                slot.offset += 1;
                record.feed(&mut *slot.projection, block);
            }
        }
        self.feeding = None;
    }

    /// Folds every block and lets go of the lock, publishing the offsets.
    fn release(&mut self) {
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        for (i, (slot, block)) in slots.iter_mut().zip(self.blocks.iter_mut()).enumerate() {
            self.feeding = Some(i);
            block.fold_into(&mut *slot.projection);
        }
        self.feeding = None;
        if let Some(slots) = self.slots.take() {
            self.host.set_applied(&slots);
        }
    }
}

impl Drop for Hold<'_> {
    /// Still holding the lock here means a panic is unwinding (`release`
    /// let it go otherwise).
    fn drop(&mut self) {
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        for (i, (slot, block)) in slots.iter_mut().zip(self.blocks.iter_mut()).enumerate() {
            slot.offset -= block.len() as u64;
            block.clear();
            if self.feeding == Some(i) {
                // Its offset was counted before it was fed.
                slot.mark_unsure();
            }
        }
        self.host.set_applied(slots);
    }
}

/// Folds `from..to` into `projections` (fresh copies); `None` when the log
/// could not be read whole there (the caller replays in order and meets
/// the error itself).
fn fold(
    log: &Log,
    from: u64,
    to: u64,
    mut projections: Vec<Box<dyn Projection>>,
) -> Option<Vec<Box<dyn Projection>>> {
    let mut reached = from;
    let mut blocks: Vec<KeyBlock> = projections
        .iter()
        .map(|_| KeyBlock::with_capacity(BLOCK))
        .collect();
    let scanned = log.scan(from, i64::MIN..=i64::MAX, |frame| {
        if frame.offset >= to {
            return ControlFlow::Break(());
        }
        let mut record = Fed::new(frame.offset, frame.timestamp_us, frame.payload);
        for (projection, block) in projections.iter_mut().zip(blocks.iter_mut()) {
            record.feed(&mut **projection, block);
        }
        reached = frame.offset + 1;
        ControlFlow::Continue(())
    });
    for (projection, block) in projections.iter_mut().zip(blocks.iter_mut()) {
        block.fold_into(&mut **projection);
    }
    (scanned.is_ok() && reached == to).then_some(projections)
}

/// One record on its way to the projections: decoded at most once (and
/// only if a projection needs the whole entry), its keys viewed at most
/// once. A record that is not a store payload (written around the store,
/// by a raw log handle or an older tool) is passed to
/// [`Projection::skip_undecodable`], never a reason to stop: one foreign
/// record must not stall every tenant's answers.
struct Fed<'a> {
    offset: u64,
    timestamp_us: i64,
    payload: &'a [u8],
    entry: Option<Option<Entry>>,
    keys: Option<Option<EntryView<'a>>>,
}

impl<'a> Fed<'a> {
    fn new(offset: u64, timestamp_us: i64, payload: &'a [u8]) -> Self {
        Self {
            offset,
            timestamp_us,
            payload,
            entry: None,
            keys: None,
        }
    }

    /// Logged once per record, by whichever of decode and view failed first.
    fn undecodable(&self, error: &PayloadError) {
        warn!(offset = self.offset, error = %error, "skipping an undecodable log entry");
    }

    /// The whole entry; `None` when the payload does not decode.
    fn entry(&mut self) -> Option<&Entry> {
        if self.entry.is_none() {
            let decoded = payload::decode(self.offset, self.timestamp_us, self.payload);
            if let Err(e) = &decoded {
                if self.keys.is_none() {
                    self.undecodable(e);
                }
            }
            self.entry = Some(decoded.ok());
        }
        self.entry.as_ref().and_then(Option::as_ref)
    }

    /// The keys; `None` when the payload does not decode (`view` fails
    /// exactly when `decode` does).
    fn keys(&mut self) -> Option<EntryView<'a>> {
        if self.keys.is_none() {
            let viewed = view(self.offset, self.timestamp_us, self.payload);
            if let Err(e) = &viewed {
                if self.entry.is_none() {
                    self.undecodable(e);
                }
            }
            self.keys = Some(viewed.ok());
        }
        self.keys.flatten()
    }

    /// Folds the record into `projection`: by its keys when it wants only
    /// those, whole otherwise (and for gap and lost entries). An event's
    /// keys wait in `block` (the projection's own), folded when it is
    /// full; any other record first folds what waits there, so the
    /// projection sees every record in order. The caller folds what is
    /// left in `block` when it is done.
    fn feed(&mut self, projection: &mut dyn Projection, block: &mut KeyBlock) {
        let offset = self.offset;
        if projection.keys_only() {
            if let Some(EntryView::Event(keys)) = self.keys() {
                block.push(&keys);
                if block.is_full() {
                    block.fold_into(projection);
                }
                return;
            }
            block.fold_into(projection);
            if self.keys().is_none() {
                return projection.skip_undecodable(offset);
            }
        }
        match self.entry() {
            Some(entry) => projection.apply(offset, entry),
            None => projection.skip_undecodable(offset),
        }
    }
}

/// crc32 of the payload and timestamp of the record at `offset - 1`.
fn anchor(log: &Log, offset: u64) -> Result<(u32, i64)> {
    if offset == 0 {
        return Ok((0, 0));
    }
    match log.read_from(offset - 1)?.next() {
        Some(record) => {
            let record = record?;
            Ok((crc32fast::hash(&record.payload), record.timestamp_us))
        }
        None => Err(Error::OffsetOutOfRange {
            requested: offset - 1,
            next_offset: log.next_offset(),
        }),
    }
}

/// Restores `projection` from the checkpoint at `path`: `Ok(Some(offset))`
/// when used, `Ok(None)` when there is none, `Err(reason)` when unusable.
fn load_one(
    storage: &dyn Storage,
    path: &Path,
    projection: &mut dyn Projection,
    log: &Log,
) -> Result<Option<u64>, String> {
    match storage.exists(path) {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) => return Err(format!("cannot stat: {e}")),
    }
    let bytes = storage
        .open(path, OpenMode::Read)
        .and_then(|f| read_all(&*f))
        .map_err(|e| format!("cannot read: {e}"))?;
    let checkpoint = Checkpoint::decode(&bytes)?;
    if checkpoint.snapshot_version != projection.version() {
        return Err(format!(
            "snapshot version {} is not {}",
            checkpoint.snapshot_version,
            projection.version()
        ));
    }
    let ours = log.store_id().map_or(0, StoreId::as_u128);
    if checkpoint.store_id != ours {
        return Err(format!(
            "was taken from another store (store id {:032x}, this store's is {ours:032x})",
            checkpoint.store_id
        ));
    }
    let next = log.next_offset();
    if checkpoint.offset > next {
        return Err(format!(
            "covers offset {} but the log ends at {next}",
            checkpoint.offset
        ));
    }
    let (crc, ts) = anchor(log, checkpoint.offset).map_err(|e| e.to_string())?;
    if (crc, ts) != (checkpoint.anchor_crc, checkpoint.anchor_ts) {
        return Err("was taken from another log (its anchor record differs)".into());
    }
    projection.restore(&checkpoint.snapshot)?;
    Ok(Some(checkpoint.offset))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::config::{Durability, LogOptions};
    use crate::event::{Action, Event};
    use crate::record::Record;
    use crate::storage::sim::SimStorage;

    /// Every entry it is handed, in the order it was handed: equal
    /// snapshots mean the same entries in the same order. Merges (when
    /// `merges`) by appending the later half, and counts its merges.
    #[derive(Default)]
    struct Trail {
        merges: bool,
        keys: bool,
        seen: Vec<String>,
        merged: usize,
    }

    impl Projection for Trail {
        fn name(&self) -> &str {
            "trail"
        }
        fn apply(&mut self, offset: u64, entry: &Entry) {
            let text = match entry {
                Entry::Event(e) => format!(
                    "{offset} event {} {} {:?} {:?} {}",
                    e.tenant_id, e.rule_id, e.action, e.run_id, e.enforced_at_us
                ),
                Entry::Gap(g) => format!("{offset} gap {}", g.dropped),
                Entry::Lost(l) => format!("{offset} lost {}", l.offset),
            };
            self.seen.push(text);
        }
        fn keys_only(&self) -> bool {
            self.keys
        }
        fn apply_keys(&mut self, k: &EventKeys<'_>) {
            self.seen.push(format!(
                "{} event {} {} {:?} {:?} {}",
                k.offset, k.tenant_id, k.rule_id, k.action, k.run_id, k.enforced_at_us
            ));
        }
        fn skip_undecodable(&mut self, offset: u64) {
            self.seen.push(format!("{offset} undecodable"));
        }
        fn snapshot(&self) -> Vec<u8> {
            self.seen.join("\n").into_bytes()
        }
        fn restore(&mut self, _bytes: &[u8]) -> Result<(), String> {
            Err("not restored in these tests".into())
        }
        fn reset(&mut self) {
            self.seen.clear();
        }
        fn fresh(&self) -> Box<dyn Projection> {
            Box::new(Trail {
                merges: self.merges,
                keys: self.keys,
                ..Trail::default()
            })
        }
        fn merge_later(&mut self, later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
            if !self.merges {
                return Err(later);
            }
            let later: Box<dyn Any> = later;
            let later = later
                .downcast::<Trail>()
                .expect("merged with its own kind only");
            self.seen.extend(later.seen);
            self.merged += 1;
            Ok(())
        }
    }

    use crate::event_view::EventKeys;

    const DIR: &str = "/log";

    fn options() -> LogOptions {
        LogOptions {
            segment_max_bytes: 4096,
            record_max_bytes: 2048,
            durability: Durability::None,
            ..LogOptions::default()
        }
    }

    /// A log of events (runs of zero bytes in their details), gap markers
    /// and payloads that are no store payload, over several segments; with
    /// `damage`, one sealed segment has a flipped bit (read as lost entries).
    fn random_log(seed: u64, damage: bool) -> SimStorage {
        let storage = SimStorage::new(seed);
        let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z ^ (z >> 31)
        };
        for i in 0..(200 + next() % 200) {
            let ts = 1_764_000_000_000_000 + (next() % 100_000) as i64;
            let payload = match next() % 10 {
                0 => crate::payload::encode_gap_v1(next() % 9 + 1, ts, ts + 5),
                1 => vec![0xc1; (next() % 40) as usize],
                _ => {
                    let mut event = Event::new(
                        format!("tenant-{}", next() % 5),
                        format!("rule-{}", next() % 7),
                        [Action::Blocked, Action::Stopped, Action::Killed][(next() % 3) as usize],
                    );
                    if next() % 2 == 0 {
                        event = event.with_run_id(format!("run-{}", i / 3));
                    }
                    let details = serde_json::json!({"zeros": vec![0u8; (next() % 200) as usize]});
                    if let serde_json::Value::Object(map) = details {
                        event = event.with_details(map);
                    }
                    crate::payload::encode_event(&event)
                }
            };
            log.append_blocking(Record::new(ts, payload)).unwrap();
        }
        log.close().unwrap();
        drop(log);
        if damage {
            let mut names: Vec<String> = storage
                .list(Path::new(DIR))
                .unwrap()
                .into_iter()
                .filter(|n| n.ends_with(".log"))
                .collect();
            names.sort();
            let path = Path::new(DIR).join(&names[names.len() / 2]);
            let mut bytes = storage.read_file(&path).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x04;
            storage.write_file(&path, &bytes);
        }
        storage
    }

    /// Catches a host of `Trail`s up from a fresh open of the log; returns
    /// their snapshots and merge counts.
    fn replay(storage: &SimStorage, trails: Vec<Trail>) -> Vec<(Vec<u8>, usize)> {
        let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
        let names = ["a", "b", "c"];
        let projections = trails
            .into_iter()
            .zip(names)
            .map(|(t, name)| Box::new(Named(name, t)) as Box<dyn Projection>)
            .collect();
        let host = Host::new(projections).unwrap();
        assert_eq!(host.catch_up(&log).unwrap(), log.next_offset());
        let slots = host.read_slots();
        slots
            .iter()
            .map(|slot| {
                let any: &dyn Any = slot.projection.as_ref();
                let named = any.downcast_ref::<Named>().unwrap();
                (named.snapshot(), named.1.merged)
            })
            .collect()
    }

    /// A `Trail` under its own name (a host's names are unique).
    struct Named(&'static str, Trail);

    impl Projection for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn apply(&mut self, offset: u64, entry: &Entry) {
            self.1.apply(offset, entry);
        }
        fn keys_only(&self) -> bool {
            self.1.keys_only()
        }
        fn apply_keys(&mut self, keys: &EventKeys<'_>) {
            self.1.apply_keys(keys);
        }
        fn skip_undecodable(&mut self, offset: u64) {
            self.1.skip_undecodable(offset);
        }
        fn snapshot(&self) -> Vec<u8> {
            self.1.snapshot()
        }
        fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
            self.1.restore(bytes)
        }
        fn reset(&mut self) {
            self.1.reset();
        }
        fn fresh(&self) -> Box<dyn Projection> {
            let any: Box<dyn Any> = self.1.fresh();
            Box::new(Named(self.0, *any.downcast::<Trail>().unwrap()))
        }
        fn merge_later(&mut self, later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
            if !self.1.merges {
                return Err(later);
            }
            let later: Box<dyn Any> = later;
            let later = later.downcast::<Named>().expect("its own kind");
            self.1
                .merge_later(Box::new(later.1))
                .map_err(|_| unreachable!())
        }
    }

    fn trail(merges: bool, keys: bool) -> Trail {
        Trail {
            merges,
            keys,
            ..Trail::default()
        }
    }

    /// Replay on two threads and a merge gives the snapshot bytes of a
    /// replay in order, for logs of events, gap markers, undecodable
    /// payloads and (with damage) lost entries, with projections that
    /// take whole entries or keys only; and one projection that cannot
    /// merge sends the whole catch-up down the sequential path.
    #[test]
    fn a_parallel_replay_equals_a_replay_in_order() {
        for seed in 0..12u64 {
            let storage = random_log(seed, seed % 2 == 1);
            let sequential = replay(&storage, vec![trail(false, false), trail(false, true)]);
            let parallel = replay(&storage, vec![trail(true, false), trail(true, true)]);
            assert_eq!(
                sequential[0].0, sequential[1].0,
                "seed {seed}: keys = whole"
            );
            for (p, s) in parallel.iter().zip(&sequential) {
                let (p_text, s_text) =
                    (String::from_utf8_lossy(&p.0), String::from_utf8_lossy(&s.0));
                let first_difference = p_text.lines().zip(s_text.lines()).find(|(a, b)| a != b);
                assert!(
                    p.0 == s.0,
                    "seed {seed}: the parallel replay differs; first at {first_difference:?}"
                );
                assert_eq!(p.1, 1, "seed {seed}: replayed on two threads and merged");
                assert_eq!(s.1, 0, "seed {seed}");
            }
            let text = String::from_utf8_lossy(&sequential[0].0).into_owned();
            for kind in [" event ", " gap ", " undecodable"] {
                assert!(text.contains(kind), "seed {seed}: the log holds{kind}");
            }
            if seed % 2 == 1 {
                assert!(text.contains(" lost "), "seed {seed}: the damage is a hole");
            }
            let mixed = replay(&storage, vec![trail(true, false), trail(false, false)]);
            assert_eq!(mixed[0], (sequential[0].0.clone(), 0), "seed {seed}: mixed");
        }
    }
}
