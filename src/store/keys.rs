//! Key indexes of sealed segments (`<log dir>/keys/<base>.keys`, format in
//! `format::keys_file`): which frames hold which tenant's and which run's
//! events, so a query reads those frames instead of the whole time range.
//!
//! Trust model: a key file is derived data, never trusted over the
//! segment. It is used only if it checks whole (checksum, order, bounds)
//! and names the segment it describes by (base offset, next offset, file
//! length); otherwise it is absent, and built again from the segment's
//! verified batches. Every frame a posting names is verified before use
//! (see [`Hit`] and `store::query`): inside the segment, frame checksum,
//! offset in the segment's range, and the decoded tenant or run hashes as
//! posted. A hit that fails makes the query drop the file and read that
//! segment by scan. So a hash collision or a wrong file costs reads, never a
//! wrong answer; what no check can catch is a file that is consistent,
//! bound to the right (base, next, length) and still leaves a frame out,
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

use crate::event::Entry;
use crate::format::batch::decode_batch;
use crate::format::keys_file::{key_hash, KeysFile, KeysLayout, TimedPosting};
use crate::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::log::dir::write_file_atomically;
use crate::log::SealedBytes;
use crate::payload;
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

/// A checked key file and the bytes it was checked on.
#[derive(Debug)]
pub(crate) struct Loaded {
    bytes: Mapped,
    layout: KeysLayout,
}

impl Loaded {
    fn describes(&self, segment: &SealedBytes) -> bool {
        self.layout.base_offset == segment.base_offset()
            && self.layout.next_offset == segment.next_offset()
            && self.layout.segment_len == segment.len()
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
        self.layout.run(&self.bytes, key_hash(run_id))
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
                Loaded {
                    bytes: Mapped::Owned(bytes),
                    layout,
                }
            }
        };
        let loaded = Arc::new(loaded);
        self.lock().insert(key, loaded.clone());
        Some(loaded)
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
    let loaded = Loaded { bytes, layout };
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
    while pos < len {
        let batch = decode_batch(&bytes[pos..], Some(expected)).ok()?;
        let mut at = pos + crate::format::BATCH_HEADER_LEN;
        for frame in batch.frames() {
            let posting = TimedPosting {
                timestamp_us: frame.timestamp_us,
                position: u32::try_from(at).ok()?,
            };
            // One-line swap point for `event_view::view` (no allocation).
            let keys = match payload::decode(frame.offset, frame.timestamp_us, frame.payload) {
                Ok(Entry::Event(e)) => {
                    Some((key_hash(&e.tenant_id), e.run_id.as_deref().map(key_hash)))
                }
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
    let file = KeysFile::from_records(
        segment.base_offset(),
        segment.next_offset(),
        segment.len(),
        records,
    );
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

/// One frame a posting named, verified: `None` if the posting does not
/// name a whole, checksummed frame of `segment` whose offset lies in it.
pub(crate) fn frame_at<'a>(
    bytes: &'a [u8],
    segment: &SealedBytes,
    position: u32,
) -> Option<crate::format::FrameView<'a>> {
    let pos = position as usize;
    let len = usize::try_from(segment.len()).ok()?.min(bytes.len());
    let header = bytes.get(pos..(pos + FRAME_HEADER_LEN).min(len))?;
    if header.len() != FRAME_HEADER_LEN {
        return None;
    }
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let payload_len = u32_at(4) as usize;
    let end = pos
        .checked_add(FRAME_HEADER_LEN)?
        .checked_add(payload_len)?;
    if end > len || crc32fast::hash(&bytes[pos + 4..end]) != u32_at(0) {
        return None;
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&header[8..16]);
    let offset = u64::from_le_bytes(word);
    word.copy_from_slice(&header[16..24]);
    let timestamp_us = i64::from_le_bytes(word);
    (segment.base_offset()..segment.next_offset())
        .contains(&offset)
        .then_some(crate::format::FrameView {
            offset,
            timestamp_us,
            payload: &bytes[pos + FRAME_HEADER_LEN..end],
        })
}
