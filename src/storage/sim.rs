//! An in-memory file system that fails and crashes on purpose.
//!
//! [`SimStorage`] keeps, for every file, the bytes a reader sees now and the
//! bytes that were made durable by the last `sync_data`, plus the list of
//! writes since. Directory entries (creations, renames, removals, and the
//! creation of a directory itself) become durable only when their parent
//! directory is synced: a crash takes away a file whose directory's own
//! entry was never made durable, however often the file was synced.
//!
//! The model is as unkind as Linux: a `sync_data` that fails may have thrown
//! its pending writes away (the kernel marks the pages clean after a failed
//! writeback). Here it always does: readers keep seeing the bytes (they are
//! still in the page cache), but no later `sync_data` makes them durable, so
//! a crash loses them (a later successful `sync_data` does make the file's
//! current size durable, as `fdatasync` does: the lost pages read as zeros). Code that goes on after a failed fsync as if the
//! bytes were safe is caught by the next crash.
//!
//! [`SimStorage::crash`] throws away what was not durable, in one of the ways
//! a real machine can:
//!
//! - [`CrashMode::LoseUnsynced`]: every write since the last fsync is gone;
//! - [`CrashMode::TearLastWrite`]: the unsynced writes reached the disk in
//!   order, but the last one only up to a random byte (up to a sector
//!   boundary where it overwrote bytes the file held: a disk writes a
//!   sector whole or not at all);
//! - [`CrashMode::Reorder`]: each unsynced write independently reached the
//!   disk or not;
//! - [`CrashMode::TornSectors`]: the last unsynced write reached the disk
//!   sector by sector, some sectors and not others.
//!
//! Faults are armed with [`SimStorage::inject`] (an error on the n-th call of
//! a kind), or [`SimStorage::power_cut_after`] (every mutating call after the
//! n-th fails, as if the machine had stopped). All randomness comes from the
//! seed given to [`SimStorage::new`], so any failure replays from its seed.
//!
//! Handles opened before a crash fail every call afterwards, like a process
//! that did not survive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{FileStamp, LockGuard, Mapped, OpenMode, Storage, StorageFile};

/// How a simulated crash treats writes that were never fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// All unsynced writes are lost.
    LoseUnsynced,
    /// Unsynced writes survive in order, the last one cut at a random byte
    /// (at a sector boundary where it overwrote bytes the file held).
    TearLastWrite,
    /// Each unsynced write survives or not, independently.
    Reorder,
    /// Unsynced writes survive in order, but of the last one only some
    /// 512-byte sectors reached the disk; the file still has its new length
    /// and the lost sectors read as zeros.
    TornSectors,
}

/// The kind of call a fault is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `write_all_at`.
    Write,
    /// `write_zeros_at` (filling a segment ahead of the writer).
    WriteZeros,
    /// `sync_data`.
    SyncData,
    /// Opening with `CreateNew` or `CreateTruncate`.
    Create,
    /// `rename`.
    Rename,
    /// `sync_dir`.
    SyncDir,
}

/// The error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// No space left on device (ENOSPC).
    NoSpace,
    /// Input/output error (EIO).
    Io,
}

impl FaultKind {
    fn error(self) -> io::Error {
        match self {
            FaultKind::NoSpace => io::Error::new(io::ErrorKind::StorageFull, "injected ENOSPC"),
            FaultKind::Io => io::Error::other("injected EIO"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FaultOp,
    skip: u64,
    kind: FaultKind,
    sticky: bool,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default, Clone)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
    /// The file system's change count when this file last changed (its
    /// `FileStamp::changed`).
    changed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    File(u64),
}

#[derive(Debug)]
struct State {
    files: HashMap<u64, FileData>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    locks: HashSet<PathBuf>,
    next_id: u64,
    generation: u64,
    rng: u64,
    faults: Vec<Fault>,
    power_left: Option<u64>,
    syncs: u64,
    sync_delay: Duration,
    /// Counts changes to files, for `FileStamp::changed`.
    changes: u64,
}

/// The in-memory, fault-injecting file system. Cheap to clone: clones share
/// the same files.
///
/// ```
/// use enforcelog::storage::sim::{CrashMode, SimStorage};
/// use enforcelog::{Log, LogOptions, Record};
/// use std::sync::Arc;
///
/// let storage = SimStorage::new(7);
/// let log = Log::open_with_storage(Arc::new(storage.clone()), "/log", LogOptions::default())?;
/// log.append_blocking(Record::new(1, b"kept".to_vec()))?;
/// drop(log);
/// storage.crash(CrashMode::LoseUnsynced);
/// let log = Log::open_with_storage(Arc::new(storage), "/log", LogOptions::default())?;
/// assert_eq!(log.next_offset(), 1);
/// # Ok::<(), enforcelog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

impl SimStorage {
    /// An empty file system whose random choices derive from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Entry::Dir);
        Self {
            state: Arc::new(Mutex::new(State {
                files: HashMap::new(),
                durable_names: names.clone(),
                names,
                locks: HashSet::new(),
                next_id: 1,
                generation: 0,
                rng: seed ^ 0x9E37_79B9_7F4A_7C15,
                faults: Vec::new(),
                power_left: None,
                syncs: 0,
                sync_delay: Duration::ZERO,
                changes: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the `skip + 1`-th next call of kind `op` fail with `kind`; with
    /// `sticky`, every later call of that kind fails too.
    pub fn inject(&self, op: FaultOp, skip: u64, kind: FaultKind, sticky: bool) {
        self.lock().faults.push(Fault {
            op,
            skip,
            kind,
            sticky,
        });
    }

    /// After `ops` more mutating calls (writes, syncs, creations, renames,
    /// removals, truncations), every mutating call fails with EIO.
    pub fn power_cut_after(&self, ops: u64) {
        self.lock().power_left = Some(ops);
    }

    /// Removes every armed fault and power cut.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.faults.clear();
        state.power_left = None;
    }

    /// Makes every `sync_data` take at least `delay` (a slow disk). The
    /// delay is spent without holding the storage's lock.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// Number of successful `sync_data` calls so far.
    pub fn sync_count(&self) -> u64 {
        self.lock().syncs
    }

    /// Simulates a crash and a reboot: loses what was not durable according
    /// to `mode`, drops every lock, disarms every fault, and invalidates
    /// every open handle.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.lock();
        let state = &mut *state;
        // A name survives only if every directory above it does.
        let durable = &state.durable_names;
        let reachable = |path: &Path| {
            path.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .all(|a| matches!(durable.get(a), Some(Entry::Dir)))
        };
        state.names = durable
            .iter()
            .filter(|(path, _)| reachable(path))
            .map(|(path, entry)| (path.clone(), *entry))
            .collect();
        state.durable_names = state.names.clone();
        let live: HashSet<u64> = state
            .names
            .values()
            .filter_map(|e| match e {
                Entry::File(id) => Some(*id),
                Entry::Dir => None,
            })
            .collect();
        state.files.retain(|id, _| live.contains(id));
        let mut ids: Vec<u64> = state.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let mut rng = state.rng;
            if let Some(file) = state.files.get_mut(&id) {
                settle(file, mode, &mut rng);
            }
            state.rng = rng;
        }
        state.locks.clear();
        state.faults.clear();
        state.power_left = None;
        state.generation += 1;
    }

    /// The bytes of a file as a reader sees them now.
    pub fn read_file(&self, path: impl AsRef<Path>) -> Option<Vec<u8>> {
        let state = self.lock();
        match state.names.get(path.as_ref()) {
            Some(Entry::File(id)) => state.files.get(id).map(|f| f.current.clone()),
            _ => None,
        }
    }

    /// Replaces a file's bytes, durably (for tests that damage files).
    pub fn write_file(&self, path: impl AsRef<Path>, bytes: &[u8]) {
        if let Some(parent) = path.as_ref().parent() {
            // Only fails when a parent is a file; the insert below then
            // makes a file nobody can list, as a real file system would refuse.
            let _ = self.create_dir_all(parent);
        }
        let mut state = self.lock();
        for dir in path.as_ref().ancestors().skip(1) {
            if matches!(state.names.get(dir), Some(Entry::Dir)) {
                state.durable_names.insert(dir.to_path_buf(), Entry::Dir);
            }
        }
        let id = match state.names.get(path.as_ref()) {
            Some(Entry::File(id)) => *id,
            _ => {
                let id = state.next_id;
                state.next_id += 1;
                state
                    .names
                    .insert(path.as_ref().to_path_buf(), Entry::File(id));
                state
                    .durable_names
                    .insert(path.as_ref().to_path_buf(), Entry::File(id));
                id
            }
        };
        state.changes += 1;
        let changed = state.changes;
        state.files.insert(
            id,
            FileData {
                current: bytes.to_vec(),
                durable: bytes.to_vec(),
                pending: Vec::new(),
                changed,
            },
        );
    }
}

fn next_random(rng: &mut u64) -> u64 {
    // splitmix64
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn settle(file: &mut FileData, mode: CrashMode, rng: &mut u64) {
    let pending = std::mem::take(&mut file.pending);
    let mut bytes = std::mem::take(&mut file.durable);
    let last_write = pending
        .iter()
        .rposition(|p| matches!(p, Pending::Write { .. }));
    for (i, op) in pending.into_iter().enumerate() {
        match op {
            Pending::SetLen(len) => bytes.resize(usize::try_from(len).unwrap_or(usize::MAX), 0),
            Pending::Write { pos, data } => {
                if mode == CrashMode::TornSectors && Some(i) == last_write {
                    apply_some_sectors(&mut bytes, pos, &data, rng);
                    continue;
                }
                let keep = match mode {
                    CrashMode::LoseUnsynced => 0,
                    CrashMode::TearLastWrite if Some(i) == last_write => torn_keep(
                        bytes.len(),
                        pos,
                        (next_random(rng) % (data.len() as u64 + 1)) as usize,
                    ),
                    CrashMode::TearLastWrite | CrashMode::TornSectors => data.len(),
                    CrashMode::Reorder if next_random(rng).is_multiple_of(2) => data.len(),
                    CrashMode::Reorder => 0,
                };
                if keep > 0 {
                    apply_write(&mut bytes, pos, &data[..keep]);
                }
            }
        }
    }
    file.current = bytes.clone();
    file.durable = bytes;
}

/// How much of a write cut after `keep` bytes reaches the disk, in a file
/// `file_len` bytes long before it. Past the file's end any byte goes (the
/// file's new size decides what reads back). Where the write overwrites
/// bytes the file already held (a log segment filled with zeros ahead of
/// its writer), a 512-byte sector is written whole or not at all, so the
/// cut falls back to a sector boundary, and never before the write.
fn torn_keep(file_len: usize, pos: u64, keep: usize) -> usize {
    const SECTOR: usize = 512;
    let pos = usize::try_from(pos).unwrap_or(usize::MAX);
    let end = pos.saturating_add(keep);
    if end >= file_len {
        return keep;
    }
    (end / SECTOR * SECTOR).max(pos) - pos
}

/// Applies each file-aligned 512-byte sector of a write with probability 1/2;
/// the file takes the write's full length either way.
fn apply_some_sectors(bytes: &mut Vec<u8>, pos: u64, data: &[u8], rng: &mut u64) {
    const SECTOR: u64 = 512;
    let end = pos + data.len() as u64;
    if (bytes.len() as u64) < end {
        bytes.resize(usize::try_from(end).unwrap_or(usize::MAX), 0);
    }
    let mut start = pos;
    while start < end {
        let sector_end = ((start / SECTOR) + 1) * SECTOR;
        let stop = sector_end.min(end);
        if next_random(rng).is_multiple_of(2) {
            let from = (start - pos) as usize;
            apply_write(bytes, start, &data[from..from + (stop - start) as usize]);
        }
        start = stop;
    }
}

/// Applies one pending operation whole (a successful sync).
fn apply_pending(bytes: &mut Vec<u8>, op: Pending) {
    match op {
        Pending::SetLen(len) => bytes.resize(usize::try_from(len).unwrap_or(usize::MAX), 0),
        Pending::Write { pos, data } => apply_write(bytes, pos, &data),
    }
}

fn apply_write(bytes: &mut Vec<u8>, pos: u64, data: &[u8]) {
    let pos = usize::try_from(pos).unwrap_or(usize::MAX);
    let end = pos.saturating_add(data.len());
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[pos..end].copy_from_slice(data);
}

fn parent_of(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

impl State {
    /// Charges one mutating call against the power budget and the faults.
    fn charge(&mut self, op: Option<FaultOp>) -> io::Result<()> {
        if let Some(left) = self.power_left.as_mut() {
            if *left == 0 {
                return Err(io::Error::other("simulated power cut"));
            }
            *left -= 1;
        }
        let Some(op) = op else { return Ok(()) };
        let Some(i) = self.faults.iter().position(|f| f.op == op) else {
            return Ok(());
        };
        let fault = &mut self.faults[i];
        if fault.skip > 0 {
            fault.skip -= 1;
            return Ok(());
        }
        let kind = fault.kind;
        if !fault.sticky {
            self.faults.remove(i);
        }
        Err(kind.error())
    }

    fn file_id(&self, path: &Path) -> io::Result<u64> {
        match self.names.get(path) {
            Some(Entry::File(id)) => Ok(*id),
            Some(Entry::Dir) => Err(io::Error::other("is a directory")),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn require_dir(&self, path: &Path) -> io::Result<()> {
        match self.names.get(path) {
            Some(Entry::Dir) => Ok(()),
            Some(Entry::File(_)) => Err(io::Error::other("not a directory")),
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }
}

#[derive(Debug)]
struct SimFile {
    storage: SimStorage,
    id: u64,
    generation: u64,
    writable: bool,
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.storage.lock();
        if state.generation != self.generation {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        Ok(state)
    }

    fn with_data<T>(
        &self,
        charge: Option<Option<FaultOp>>,
        f: impl FnOnce(&mut FileData) -> T,
    ) -> io::Result<T> {
        let mut state = self.state()?;
        if let Some(op) = charge {
            if !self.writable {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "read-only handle",
                ));
            }
            state.charge(op)?;
            state.changes += 1;
        }
        let changes = state.changes;
        let data = state
            .files
            .get_mut(&self.id)
            .ok_or_else(|| io::Error::other("file vanished"))?;
        if charge.is_some() {
            data.changed = changes;
        }
        Ok(f(data))
    }
}

impl StorageFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        self.with_data(None, |d| d.current.len() as u64)
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with_data(None, |d| {
            let pos = usize::try_from(pos).unwrap_or(usize::MAX);
            match d.current.get(pos..pos.saturating_add(buf.len())) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    Ok(())
                }
                None => Err(io::ErrorKind::UnexpectedEof.into()),
            }
        })?
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.with_data(Some(Some(FaultOp::Write)), |d| {
            apply_write(&mut d.current, pos, buf);
            d.pending.push(Pending::Write {
                pos,
                data: buf.to_vec(),
            });
        })
    }

    fn write_zeros_at(&self, pos: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("zero fill too long"))?;
        self.with_data(Some(Some(FaultOp::WriteZeros)), |d| {
            let zeros = vec![0u8; len];
            apply_write(&mut d.current, pos, &zeros);
            d.pending.push(Pending::Write { pos, data: zeros });
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with_data(Some(None), |d| {
            d.current
                .resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            d.pending.push(Pending::SetLen(len));
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        let delay = self.state()?.sync_delay;
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let mut state = self.state()?;
        if let Err(e) = state.charge(Some(FaultOp::SyncData)) {
            // A failed writeback: the pages are marked clean and their
            // bytes never reach the disk (see the module docs). A power cut
            // (the machine stopped) leaves them pending for `crash` instead.
            if state.power_left != Some(0) {
                if let Some(d) = state.files.get_mut(&self.id) {
                    d.pending.clear();
                }
            }
            return Err(e);
        }
        state.syncs += 1;
        if let Some(d) = state.files.get_mut(&self.id) {
            for op in std::mem::take(&mut d.pending) {
                apply_pending(&mut d.durable, op);
            }
            // `fdatasync` makes the file's current size durable too (it is
            // needed to read the data back): a truncation or extension a
            // failed fsync dropped takes effect now; pages it dropped stay
            // lost (read as zeros).
            let len = d.current.len();
            d.durable.resize(len, 0);
        }
        Ok(())
    }

    fn map(&self) -> io::Result<Mapped> {
        self.with_data(None, |d| Mapped::Owned(d.current.clone()))
    }

    fn stamp(&self) -> io::Result<Option<FileStamp>> {
        let (id, generation) = (self.id, self.generation);
        self.with_data(None, |d| {
            Some(FileStamp {
                // A crash makes every file another one (handles from
                // before it fail).
                file_id: (generation, id),
                len: d.current.len() as u64,
                changed: d.changed,
            })
        })
    }
}

#[derive(Debug)]
struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    generation: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut state = self.storage.lock();
        if state.generation == self.generation {
            state.locks.remove(&self.path);
        }
    }
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        for ancestor in dir.ancestors() {
            if ancestor.as_os_str().is_empty() {
                continue;
            }
            match state.names.get(ancestor) {
                Some(Entry::File(_)) => return Err(io::Error::other("not a directory")),
                Some(Entry::Dir) => {}
                None => {
                    // Durable only once its parent is synced, like a file.
                    state.names.insert(ancestor.to_path_buf(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.lock().names.contains_key(path))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.require_dir(dir)?;
        Ok(state
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect())
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut state = self.lock();
        state.require_dir(&parent_of(path))?;
        let id = match mode {
            OpenMode::Read | OpenMode::ReadWrite => state.file_id(path)?,
            OpenMode::CreateNew | OpenMode::CreateTruncate => {
                if mode == OpenMode::CreateNew && state.names.contains_key(path) {
                    return Err(io::ErrorKind::AlreadyExists.into());
                }
                state.charge(Some(FaultOp::Create))?;
                match state.names.get(path) {
                    Some(Entry::File(id)) => {
                        let id = *id;
                        state.changes += 1;
                        let changed = state.changes;
                        let data = state.files.entry(id).or_default();
                        data.changed = changed;
                        data.current.clear();
                        data.pending.push(Pending::SetLen(0));
                        id
                    }
                    Some(Entry::Dir) => return Err(io::Error::other("is a directory")),
                    None => {
                        let id = state.next_id;
                        state.next_id += 1;
                        state.files.insert(id, FileData::default());
                        state.names.insert(path.to_path_buf(), Entry::File(id));
                        id
                    }
                }
            }
        };
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            id,
            generation: state.generation,
            writable: mode != OpenMode::Read,
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.file_id(path)?;
        state.charge(None)?;
        state.names.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        let id = state.file_id(from)?;
        state.require_dir(&parent_of(to))?;
        state.charge(Some(FaultOp::Rename))?;
        state.names.remove(from);
        state.names.insert(to.to_path_buf(), Entry::File(id));
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.require_dir(dir)?;
        state.charge(Some(FaultOp::SyncDir))?;
        let state = &mut *state;
        state
            .durable_names
            .retain(|p, _| p.parent() != Some(dir) || state.names.contains_key(p));
        for (path, entry) in &state.names {
            if path.parent() == Some(dir) {
                state.durable_names.insert(path.clone(), *entry);
            }
        }
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut state = self.lock();
        state.require_dir(&parent_of(path))?;
        if !state.locks.insert(path.to_path_buf()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(Box::new(SimLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            generation: state.generation,
        }))
    }
}
