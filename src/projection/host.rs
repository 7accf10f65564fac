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
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::checkpoint::Checkpoint;
use super::{valid_name, Projection};
use crate::error::{Error, Result};
use crate::event::Entry;
use crate::event_view::{view, EntryView};
use crate::log::dir::write_file_atomically;
use crate::log::Log;
use crate::log::StoreId;
use crate::record::LogRecord;
use crate::storage::{create_dir_all_durably, read_all, OpenMode, Storage};
use crate::store::decode_entry;

/// The subdirectory of the store holding checkpoints.
pub(crate) const CHECKPOINT_DIR: &str = "projections";
/// Entries applied per write-lock hold.
const CHUNK: usize = 1024;

struct Slot {
    projection: Box<dyn Projection>,
    offset: u64,
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
    catching_up: Mutex<()>,
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
            })
            .collect();
        Ok(Self {
            slots: RwLock::new(slots),
            applied: Mutex::new(0),
            progress: Condvar::new(),
            failure: Mutex::new(None),
            checkpointed: Mutex::new((0, Instant::now())),
            catching_up: Mutex::new(()),
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
        let _one_at_a_time = self.catching_up.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.catch_up_inner(log);
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

    fn catch_up_inner(&self, log: &Log) -> Result<u64> {
        let start = self.applied_offset();
        let end = log.next_offset();
        if start >= end {
            return Ok(start);
        }
        if self.read_slots().iter().all(|s| s.projection.keys_only()) {
            return self.catch_up_by_keys(log, start, end);
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        for record in log.read_from(start)? {
            let record = record?;
            if record.offset >= end {
                break;
            }
            chunk.push((record.offset, decode_or_skip(&record)));
            if chunk.len() == CHUNK {
                self.apply(&mut chunk);
            }
        }
        self.apply(&mut chunk);
        Ok(self.applied_offset())
    }

    /// `catch_up_inner` for projections that all fold events by their keys:
    /// each event is viewed in place ([`crate::event_view::view`]), not
    /// decoded; gap markers, lost and undecodable entries take the usual
    /// path. The same entries reach the same projections in the same order.
    fn catch_up_by_keys(&self, log: &Log, start: u64, end: u64) -> Result<u64> {
        let mut chunk = Vec::with_capacity(CHUNK);
        for record in log.read_from(start)? {
            let record = record?;
            if record.offset >= end {
                break;
            }
            chunk.push(record);
            if chunk.len() == CHUNK {
                self.apply_by_keys(&mut chunk);
            }
        }
        self.apply_by_keys(&mut chunk);
        Ok(self.applied_offset())
    }

    /// [`Host::apply`] for keys-only projections, record by record: an
    /// event goes to `apply_keys`, anything else is decoded (once) for
    /// `apply` or `skip_undecodable`.
    fn apply_by_keys(&self, chunk: &mut Vec<LogRecord>) {
        if chunk.is_empty() {
            return;
        }
        let mut slots = self.write_slots();
        for record in chunk.iter() {
            let viewed = view(record.offset, record.timestamp_us, &record.payload);
            let mut decoded: Option<Option<Entry>> = None;
            for slot in slots.iter_mut() {
                if record.offset != slot.offset {
                    continue;
                }
                match &viewed {
                    Ok(EntryView::Event(keys)) => slot.projection.apply_keys(keys),
                    Ok(EntryView::Other) | Err(_) => {
                        match decoded.get_or_insert_with(|| decode_or_skip(record)) {
                            Some(entry) => slot.projection.apply(record.offset, entry),
                            None => slot.projection.skip_undecodable(record.offset),
                        }
                    }
                }
                slot.offset += 1;
            }
        }
        self.set_applied(&slots);
        chunk.clear();
    }

    /// Applies a chunk of consecutive entries. Each projection takes exactly
    /// the entry at its own offset, then the next: an entry it already has
    /// is skipped, and a chunk that starts past its offset (another thread
    /// reset it meanwhile) is left for the next catch-up. So every
    /// projection sees every offset once, in order.
    fn apply(&self, chunk: &mut Vec<(u64, Option<Entry>)>) {
        if chunk.is_empty() {
            return;
        }
        let mut slots = self.write_slots();
        for slot in slots.iter_mut() {
            for (offset, entry) in chunk.iter() {
                if *offset == slot.offset {
                    match entry {
                        Some(entry) => slot.projection.apply(*offset, entry),
                        None => slot.projection.skip_undecodable(*offset),
                    }
                    slot.offset += 1;
                }
            }
        }
        self.set_applied(&slots);
        chunk.clear();
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
        for slot in slots.iter() {
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
                    for record in log.read_from(0)? {
                        let record = record?;
                        if record.offset >= offset {
                            break;
                        }
                        match decode_or_skip(&record) {
                            Some(entry) => rebuilt.apply(record.offset, &entry),
                            None => rebuilt.skip_undecodable(record.offset),
                        }
                    }
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

/// Decodes a record for the projections; `None` for a record that is not
/// a store payload (written around the store, by a raw log handle or an
/// older tool). Such a record is skipped and counted, never a reason to
/// stop: one foreign record must not stall every tenant's answers.
fn decode_or_skip(record: &LogRecord) -> Option<Entry> {
    match decode_entry(record) {
        Ok(entry) => Some(entry),
        Err(e) => {
            warn!(offset = record.offset, error = %e, "skipping an undecodable log entry");
            None
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
