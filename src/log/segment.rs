//! Segments as the log holds them in memory: sealed ones (immutable, read
//! through a memory map) and the one active segment (written by the writer,
//! read with `pread` up to its committed length).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::dir;
use crate::error::{Error, Result};
use crate::format::index_file::IndexEntry;
use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::storage::{FileStamp, Mapped, OpenMode, Storage, StorageFile};

/// A sealed segment: complete, fsynced, never written again.
#[derive(Debug)]
pub(crate) struct SealedSegment {
    pub base_offset: u64,
    /// The offset after its last record (the next segment's base offset).
    pub next_offset: u64,
    pub len: u64,
    pub path: PathBuf,
    pub index: Vec<IndexEntry>,
    map: Mutex<Option<Arc<Mapped>>>,
    /// Whether it is read through an in-memory rebuild of a damaged file
    /// (see [`SealedSegment::with_content`]): such bytes verify whole, so a
    /// reader that still meets damage in them must not rebuild again.
    rebuilt: bool,
    /// What an open checked of its file, for a read-only refresh to keep
    /// it without reading it again; `None` for segments a writer made and
    /// for storages that cannot stamp files.
    pub verified: Option<Verified>,
}

/// What an open of a sealed segment checked, as of its file's stamp: a
/// file with the same stamp under the same name still holds what was
/// verified (a repair renames a new file over it; a writer never writes a
/// sealed segment again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verified {
    pub stamp: FileStamp,
    /// Whether its header carries a store tag (a later untagged segment
    /// is then foreign).
    pub tagged: bool,
}

impl SealedSegment {
    pub fn new(
        base_offset: u64,
        next_offset: u64,
        len: u64,
        path: PathBuf,
        index: Vec<IndexEntry>,
    ) -> Self {
        debug_assert!(
            base_offset < next_offset,
            "a sealed segment holds at least one record"
        );
        Self {
            base_offset,
            next_offset,
            len,
            path,
            index,
            map: Mutex::new(None),
            rebuilt: false,
            verified: None,
        }
    }

    /// A sealed segment read from `content` instead of its file: the
    /// in-memory rebuild of a segment sealed with damage in it, each
    /// damaged range a hole (see `recovery::seal_damaged`). The file stays
    /// as it was found, for `repair`.
    pub fn with_content(
        base_offset: u64,
        next_offset: u64,
        path: PathBuf,
        index: Vec<IndexEntry>,
        content: Vec<u8>,
    ) -> Self {
        let mut segment = Self::new(base_offset, next_offset, content.len() as u64, path, index);
        segment.rebuilt = true;
        *segment.map.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Arc::new(Mapped::Owned(content)));
        segment
    }

    /// True when it is read through the rebuild of a damaged file.
    pub fn is_rebuilt(&self) -> bool {
        self.rebuilt
    }

    /// The segment's bytes, mapped on first use and kept while the log lives.
    pub fn bytes(&self, storage: &dyn Storage) -> Result<Arc<Mapped>> {
        let mut slot = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = slot.as_ref() {
            return Ok(map.clone());
        }
        let file = storage
            .open(&self.path, OpenMode::Read)
            .map_err(|e| Error::io("open", &self.path, e))?;
        let map = file.map().map_err(|e| Error::io("map", &self.path, e))?;
        if (map.len() as u64) < self.len {
            return Err(Error::corruption(
                &self.path,
                map.len() as u64,
                format!("sealed segment shrank from {} bytes", self.len),
            ));
        }
        let map = Arc::new(map);
        *slot = Some(map.clone());
        Ok(map)
    }
}

/// The segment being appended to, as readers may see it.
#[derive(Debug, Clone)]
pub(crate) struct ActiveSegment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: Arc<dyn StorageFile>,
    /// Bytes of whole, committed batches (header included).
    pub committed_len: u64,
    /// The offset after the last committed record.
    pub next_offset: u64,
    pub index: Vec<IndexEntry>,
}

impl ActiveSegment {
    /// Creates a segment: create, write the header, fsync the file, fsync the
    /// directory.
    pub(crate) fn create(
        storage: &dyn Storage,
        dir: &Path,
        base: u64,
        store_tag: u32,
    ) -> Result<ActiveSegment> {
        let path = dir::segment_path(dir, base);
        let file = storage
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        let header = SegmentHeader {
            store_tag,
            base_offset: base,
        };
        let made_durable = file
            .write_all_at(&header.encode(), 0)
            .map_err(|e| Error::io("write", &path, e))
            .and_then(|()| file.sync_data().map_err(|e| Error::io("fsync", &path, e)))
            .and_then(|()| {
                storage
                    .sync_dir(dir)
                    .map_err(|e| Error::io("fsync directory", dir, e))
            });
        if let Err(e) = made_durable {
            // A failed fsync may have dropped the header while the page cache
            // still shows it: left in place, the next open (with no crash in
            // between) would take the file for a good empty segment and append
            // to it, and a power cut would then leave records behind a zeroed
            // header. The file holds nothing yet: take it away.
            drop(file);
            if let Err(remove) = storage.remove(&path) {
                warn!(segment = %path.display(), error = %remove, "could not remove a segment whose creation failed");
            }
            return Err(e);
        }
        info!(segment = %path.display(), base_offset = base, "created segment");
        Ok(ActiveSegment {
            base_offset: base,
            path,
            file,
            committed_len: SEGMENT_HEADER_LEN as u64,
            next_offset: base,
            index: Vec::new(),
        })
    }
}

/// Every segment of the log, as committed so far.
#[derive(Debug)]
pub(crate) struct Segments {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub active: ActiveSegment,
}

impl Segments {
    /// The offset the next committed record will get.
    pub fn next_offset(&self) -> u64 {
        self.active.next_offset
    }

    /// The sealed segment holding `offset`, if any.
    pub fn sealed_for(&self, offset: u64) -> Option<&Arc<SealedSegment>> {
        let after = self.sealed.partition_point(|s| s.base_offset <= offset);
        let segment = self.sealed.get(after.checked_sub(1)?)?;
        (offset < segment.next_offset).then_some(segment)
    }
}

/// Builds a sparse index: an entry for the first batch of a segment and for
/// every batch starting at least `interval` bytes after the previous entry.
/// An entry's timestamp bounds cover every batch up to the next entry, so a
/// time-range reader can skip whole stretches of a segment.
#[derive(Debug, Clone)]
pub(crate) struct IndexBuilder {
    interval: u64,
    pub entries: Vec<IndexEntry>,
}

impl IndexBuilder {
    pub fn new(interval: u64, entries: Vec<IndexEntry>) -> Self {
        Self { interval, entries }
    }

    /// Offers a batch: starts a new entry when one is due, otherwise widens
    /// the last entry's timestamp bounds to cover it.
    pub fn offer(&mut self, batch: IndexEntry) {
        match self.entries.last_mut() {
            Some(last) if batch.position < last.position.saturating_add(self.interval) => {
                debug_assert!(last.first_offset < batch.first_offset);
                last.min_timestamp_us = last.min_timestamp_us.min(batch.min_timestamp_us);
                last.max_timestamp_us = last.max_timestamp_us.max(batch.max_timestamp_us);
            }
            _ => self.entries.push(batch),
        }
    }
}
