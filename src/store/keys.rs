//! Key indexes of sealed segments (`<log dir>/keys/<base>.keys`, format in
//! `format::keys_file`): which frames hold which tenant's and which run's
//! events, so a query reads those frames instead of the whole time range.
//!
//! Trust model: a key file is derived data, never trusted over the
//! segment. It is used only if it checks whole (checksum, order, bounds)
//! and names the segment it describes by (base offset, next offset, file
//! length, the segment header's store tag, and a digest of the segment's
//! head and last batch header: `format::keys_file`); otherwise it is absent, and built again from the segment's
//! verified batches. Every frame a posting names is verified before use
//! (see [`Hit`] and `store::query`): inside the segment, frame checksum,
//! offset in the segment's range, and the decoded tenant or run hashes as
//! posted. A hit that fails makes the query drop the file and read that
//! segment by scan. So a hash collision or a wrong file costs reads, never a
//! wrong answer; what no check can catch is a file that is consistent,
//! bound to the right segment and still leaves a frame out (a file of
//! another store or another segment of the same shape is not bound to it),
//! the same trust the sparse `.idx` gets (see DESIGN.md).
//!
//! Crash safety: a file is written only for a sealed segment (never written
//! again), through a temporary file, fsync and rename, so a crash leaves the
//! old name absent or whole; a torn temporary file is ignored (`.tmp`), and
//! a torn file under the final name fails its checksum. A repair deletes
//! the file of every segment it rewrites or moves away.
//!
//! Cost: files are built lazily, by the first query that needs one, never
//! on the way from open to the first `stats`. Only a writer store writes
//! them, for its own shard; other logs' files are read, or built and kept
//! in memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::event_view::{view, EntryView};
use crate::format::batch::decode_batch;
use crate::format::keys_file::{key_hash, KeysFile, KeysLayout, SegmentBinding, TimedPosting};
use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::log::dir::write_file_atomically;
use crate::log::{ActiveBytes, SealedBytes};
use crate::storage::{Mapped, OpenMode, Storage};

/// The directory of the key files, inside a log directory. The log lists it
/// as a foreign name and tolerates it (the directory has a `VERSION`), as it
/// does `projections/`, so a release without key indexes opens the store.
pub(crate) const KEYS_DIR: &str = "keys";

/// The key file's name for the segment at `base_offset`.
pub(crate) fn keys_name(base_offset: u64) -> String {
    format!("{base_offset:020}.keys")
}

/// `dir/keys/<base>.keys`.
pub(crate) fn keys_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(KEYS_DIR).join(keys_name(base_offset))
}

/// Run postings per fence entry.
const RUN_FENCE_STRIDE: usize = 64;

/// A checked key file and the bytes it was checked on.
#[derive(Debug)]
pub(crate) struct Loaded {
    bytes: Mapped,
    layout: KeysLayout,
    /// The run hash of every [`RUN_FENCE_STRIDE`]th run posting: a run's
    /// lookup searches this (small, in cache) and then one stretch of the
    /// file, instead of halving the whole file (a cache miss per step).
    run_fence: Vec<u64>,
}

impl Loaded {
    fn new(bytes: Mapped, layout: KeysLayout) -> Self {
        let run_fence = (0..layout.run_count())
            .step_by(RUN_FENCE_STRIDE)
            .map(|i| layout.run_hash_at(&bytes, i))
            .collect();
        Loaded {
            bytes,
            layout,
            run_fence,
        }
    }

    /// True when the file is bound to `segment`: the same offsets and
    /// length, and the same store tag and digest of its bytes (see
    /// `format::keys_file`), so a same-shaped file of another store or of
    /// an earlier segment under this base is not used.
    fn describes(&self, segment: &SealedBytes) -> bool {
        let bound = self.layout.segment;
        if bound.base_offset != segment.base_offset()
            || bound.next_offset != segment.next_offset()
            || bound.segment_len != segment.len()
        {
            return false;
        }
        let Ok(map) = segment.bytes() else {
            return false;
        };
        SegmentBinding::of(
            &map,
            segment.base_offset(),
            segment.next_offset(),
            segment.len(),
            bound.last_batch_at,
        ) == Some(bound)
    }

    /// Positions of the tenant's events with a frame timestamp in `time_us`.
    pub fn tenant(&self, tenant_id: &str, time_us: &std::ops::RangeInclusive<i64>) -> Vec<u32> {
        self.layout
            .tenant(&self.bytes, key_hash(tenant_id), time_us)
            .into_iter()
            .map(|p| p.position)
            .collect()
    }

    /// Positions of the run's events.
    pub fn run(&self, run_id: &str) -> Vec<u32> {
        let hash = key_hash(run_id);
        // Postings are sorted by hash, so the first of `hash` lies after
        // the last fence entry below it and at or before the next entry.
        let k = self.run_fence.partition_point(|&h| h < hash);
        let within = k.saturating_sub(1) * RUN_FENCE_STRIDE..k * RUN_FENCE_STRIDE + 1;
        let found = self.layout.run_between(&self.bytes, hash, within);
        debug_assert_eq!(found, self.layout.run(&self.bytes, hash));
        found
    }

    /// Positions of the records that are not events, with a frame
    /// timestamp in `time_us`.
    pub fn others(&self, time_us: &std::ops::RangeInclusive<i64>) -> Vec<u32> {
        self.layout
            .others(&self.bytes, time_us)
            .into_iter()
            .map(|p| p.position)
            .collect()
    }
}

/// The key files a store has loaded or built, by (log directory, base).
#[derive(Debug, Default)]
pub(crate) struct KeyIndex {
    loaded: Mutex<HashMap<(PathBuf, u64), Arc<Loaded>>>,
    /// The active segment's postings, by log directory.
    active: Mutex<HashMap<PathBuf, ActiveKeys>>,
    /// Held while a file is built and written: two queries that need the
    /// same file build it once, and never write the same temporary file at
    /// once.
    building: Mutex<()>,
}

impl KeyIndex {
    /// The key file of `segment` of the log in `dir`: cached, read from
    /// disk, or built from the segment (and written, with `write`). `None`
    /// when the segment cannot be indexed (it does not verify whole: the
    /// scan reads it, and reads past its damage).
    pub fn get(
        &self,
        storage: &dyn Storage,
        dir: &Path,
        segment: &SealedBytes,
        write: bool,
    ) -> Option<Arc<Loaded>> {
        let key = (dir.to_path_buf(), segment.base_offset());
        if let Some(found) = self.cached(&key, segment) {
            return Some(found);
        }
        let _building = self.building.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = self.cached(&key, segment) {
            return Some(found);
        }
        let loaded = match read(storage, dir, segment) {
            Some(found) => found,
            None => {
                let bytes = build(segment)?;
                if write {
                    write_keys(storage, dir, segment.base_offset(), &bytes);
                }
                let layout = KeysLayout::check(&bytes)?;
                Loaded::new(Mapped::Owned(bytes), layout)
            }
        };
        let loaded = Arc::new(loaded);
        self.lock().insert(key, loaded.clone());
        Some(loaded)
    }

    /// The active segment's postings for `lookup` (extended to what is
    /// committed now), and the offset they cover the segment up to: from
    /// there on a query scans.
    pub fn active_hits(
        &self,
        dir: &Path,
        active: &ActiveBytes,
        lookup: Lookup,
        time_us: &std::ops::RangeInclusive<i64>,
    ) -> (Vec<(ActivePosting, Option<u64>)>, u64) {
        let mut all = self.active.lock().unwrap_or_else(|e| e.into_inner());
        let keys = all
            .entry(dir.to_path_buf())
            .or_insert_with(|| ActiveKeys::new(active.base_offset));
        if !keys.still_describes(active) {
            *keys = ActiveKeys::new(active.base_offset);
        }
        keys.extend(active);
        (keys.hits(lookup, time_us), keys.covered_offset)
    }

    /// Forgets the active segment's postings of the log in `dir`: a hit in
    /// them failed verification.
    pub fn drop_active(&self, dir: &Path) {
        let mut all = self.active.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(dir);
    }

    /// Forgets the key file of the segment at `base` of the log in `dir`
    /// and, with `write`, deletes it: a hit in it failed verification.
    pub fn drop_file(&self, storage: &dyn Storage, dir: &Path, base: u64, write: bool) {
        self.lock().remove(&(dir.to_path_buf(), base));
        if write {
            let path = keys_path(dir, base);
            if let Err(e) = storage.remove(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    warn!(file = %path.display(), error = %e, "could not delete a key index that failed a check");
                }
            }
        }
    }

    fn cached(&self, key: &(PathBuf, u64), segment: &SealedBytes) -> Option<Arc<Loaded>> {
        let mut loaded = self.lock();
        match loaded.get(key) {
            Some(found) if found.describes(segment) => Some(found.clone()),
            Some(_) => {
                // Another segment under the same base (a read-only refresh
                // after a repair, say): built again from it.
                loaded.remove(key);
                None
            }
            None => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, u64), Arc<Loaded>>> {
        self.loaded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The key file on disk, if it checks and describes `segment`.
fn read(storage: &dyn Storage, dir: &Path, segment: &SealedBytes) -> Option<Loaded> {
    let path = keys_path(dir, segment.base_offset());
    let file = storage.open(&path, OpenMode::Read).ok()?;
    let bytes = file.map().ok()?;
    let layout = KeysLayout::check(&bytes)?;
    let loaded = Loaded::new(bytes, layout);
    loaded.describes(segment).then_some(loaded)
}

/// The encoded key file of `segment`, from its batches, each verified
/// whole; `None` if one does not verify (or the bytes end early).
pub(crate) fn build(segment: &SealedBytes) -> Option<Vec<u8>> {
    let map = segment.bytes().ok()?;
    let len = usize::try_from(segment.len()).ok()?;
    let bytes = map.get(..len)?;
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = segment.base_offset();
    let mut last_batch_at = pos;
    while pos < len {
        last_batch_at = pos;
        let batch = decode_batch(&bytes[pos..], Some(expected)).ok()?;
        let mut at = pos + crate::format::BATCH_HEADER_LEN;
        for frame in batch.frames() {
            let posting = TimedPosting {
                timestamp_us: frame.timestamp_us,
                position: u32::try_from(at).ok()?,
            };
            let keys = match view(frame.offset, frame.timestamp_us, frame.payload) {
                Ok(EntryView::Event(k)) => Some((key_hash(k.tenant_id), k.run_id.map(key_hash))),
                _ => None,
            };
            records.push((posting, keys));
            at += FRAME_HEADER_LEN + frame.payload.len();
        }
        expected = batch.header.next_offset();
        pos += batch.len();
    }
    if expected != segment.next_offset() {
        return None;
    }
    let binding = SegmentBinding::of(
        bytes,
        segment.base_offset(),
        segment.next_offset(),
        segment.len(),
        u32::try_from(last_batch_at).ok()?,
    )?;
    let file = KeysFile::from_records(binding, records);
    Some(file.encode())
}

/// Writes a key file atomically; a failure is logged (the file is derived
/// data: queries use the copy in memory, the next writer builds it again).
fn write_keys(storage: &dyn Storage, dir: &Path, base: u64, bytes: &[u8]) {
    let keys_dir = dir.join(KEYS_DIR);
    let written = storage
        .create_dir_all(&keys_dir)
        .map_err(|e| crate::error::Error::io("create directory", &keys_dir, e))
        .and_then(|()| write_file_atomically(storage, &keys_dir, &keys_name(base), bytes, true));
    if let Err(e) = written {
        warn!(dir = %keys_dir.display(), error = %e, "could not write a key index; queries build it again");
    }
}

/// One frame a posting named, verified: `None` unless `bytes` holds at
/// `pos` a whole frame whose checksum matches and whose offset lies in
/// `offsets`.
pub(crate) fn check_frame(
    bytes: &[u8],
    pos: usize,
    offsets: std::ops::Range<u64>,
) -> Option<crate::format::FrameView<'_>> {
    let header = bytes.get(pos..pos.checked_add(FRAME_HEADER_LEN)?)?;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&header[at..at + 8]);
        w
    };
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let payload_len = u32_at(4) as usize;
    let end = pos
        .checked_add(FRAME_HEADER_LEN)?
        .checked_add(payload_len)?;
    let frame = bytes.get(pos..end)?;
    if crc32fast::hash(&frame[4..]) != u32_at(0) {
        return None;
    }
    let offset = u64::from_le_bytes(word(8));
    let timestamp_us = i64::from_le_bytes(word(16));
    offsets
        .contains(&offset)
        .then_some(crate::format::FrameView {
            offset,
            timestamp_us,
            payload: &frame[FRAME_HEADER_LEN..],
        })
}

/// A frame of the active segment, as its in-memory key index names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ActivePosting {
    pub position: u32,
    pub timestamp_us: i64,
    /// The whole frame's length, header included.
    pub len: u32,
}

/// Key postings of the committed part of a log's active segment, kept in
/// memory (an active segment has no key file: it is still written) and
/// extended by each query from where the last one stopped.
#[derive(Debug, Default)]
struct ActiveKeys {
    base_offset: u64,
    /// The offset after the last record indexed (`covered_until`): queries
    /// read past it by scan.
    covered_offset: u64,
    /// The position after the last batch indexed.
    covered_position: u64,
    /// The header of the last batch indexed: a read-only view whose active
    /// segment was cut back (an unacknowledged group dropped) and written
    /// again is noticed by it, and indexed again.
    last_batch: Option<(u64, Vec<u8>)>,
    tenants: HashMap<u64, Vec<ActivePosting>>,
    runs: HashMap<u64, Vec<ActivePosting>>,
    others: Vec<ActivePosting>,
}

/// Which key a query looks up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lookup {
    Tenant(u64),
    Run(u64),
}

impl ActiveKeys {
    fn new(base_offset: u64) -> Self {
        ActiveKeys {
            base_offset,
            covered_offset: base_offset,
            covered_position: SEGMENT_HEADER_LEN as u64,
            ..ActiveKeys::default()
        }
    }

    /// Whether what it indexed is still what the segment holds.
    fn still_describes(&self, active: &ActiveBytes) -> bool {
        if self.base_offset != active.base_offset
            || self.covered_position > active.committed_len
            || self.covered_offset > active.next_offset
        {
            return false;
        }
        let Some((position, header)) = &self.last_batch else {
            return true;
        };
        let mut now = vec![0u8; header.len()];
        active.file.read_exact_at(&mut now, *position).is_ok() && now == *header
    }

    /// Indexes the batches committed since the last call. Stops at a batch
    /// that does not verify: the scan reads from there, and reports it.
    fn extend(&mut self, active: &ActiveBytes) {
        let start = self.covered_position;
        let Some(len) = active.committed_len.checked_sub(start) else {
            return;
        };
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        if len == 0 {
            return;
        }
        let mut bytes = vec![0u8; len];
        if active.file.read_exact_at(&mut bytes, start).is_err() {
            return;
        }
        let mut pos = 0;
        while pos < len {
            let Ok(batch) = decode_batch(&bytes[pos..], Some(self.covered_offset)) else {
                return;
            };
            let mut at = pos + crate::format::BATCH_HEADER_LEN;
            let mut postings = Vec::with_capacity(batch.header.record_count as usize);
            for frame in batch.frames() {
                let frame_len = FRAME_HEADER_LEN + frame.payload.len();
                let (Ok(position), Ok(frame_len_u32)) =
                    (u32::try_from(start + at as u64), u32::try_from(frame_len))
                else {
                    return;
                };
                let posting = ActivePosting {
                    position,
                    timestamp_us: frame.timestamp_us,
                    len: frame_len_u32,
                };
                let keys = match view(frame.offset, frame.timestamp_us, frame.payload) {
                    Ok(EntryView::Event(k)) => {
                        Some((key_hash(k.tenant_id), k.run_id.map(key_hash)))
                    }
                    _ => None,
                };
                postings.push((posting, keys));
                at += frame_len;
            }
            for (posting, keys) in postings {
                match keys {
                    Some((tenant, run)) => {
                        self.tenants.entry(tenant).or_default().push(posting);
                        if let Some(run) = run {
                            self.runs.entry(run).or_default().push(posting);
                        }
                    }
                    None => self.others.push(posting),
                }
            }
            let header = bytes[pos..pos + crate::format::BATCH_HEADER_LEN].to_vec();
            self.last_batch = Some((start + pos as u64, header));
            pos += batch.len();
            self.covered_position = start + pos as u64;
            self.covered_offset = batch.header.next_offset();
        }
    }

    /// The postings for `lookup` (each with the key hash it was posted
    /// under) and the records that are not events, with a timestamp in
    /// `time_us` where the postings are chosen by time, by position.
    fn hits(
        &self,
        lookup: Lookup,
        time_us: &std::ops::RangeInclusive<i64>,
    ) -> Vec<(ActivePosting, Option<u64>)> {
        let mut hits: Vec<(ActivePosting, Option<u64>)> = match lookup {
            Lookup::Tenant(hash) => self
                .tenants
                .get(&hash)
                .map(|p| {
                    p.iter()
                        .filter(|p| time_us.contains(&p.timestamp_us))
                        .map(|p| (*p, Some(hash)))
                        .collect()
                })
                .unwrap_or_default(),
            Lookup::Run(hash) => self
                .runs
                .get(&hash)
                .map(|p| p.iter().map(|p| (*p, Some(hash))).collect())
                .unwrap_or_default(),
        };
        hits.extend(
            self.others
                .iter()
                .filter(|p| time_us.contains(&p.timestamp_us))
                .map(|p| (*p, None)),
        );
        hits.sort_unstable();
        hits
    }
}
