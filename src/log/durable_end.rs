//! The durable end: how far the writer has made the log durable, published
//! for readers in other processes.
//!
//! ```text
//! <dir>/DURABLE   32 bytes, little-endian
//!   0..4    magic "ELDE"
//!   4..12   base offset of the segment the end lies in
//!   12..20  byte length of that segment known durable
//!   20..28  next offset: the offset after the last durable record
//!   28..32  CRC-32 of bytes 0..28
//! ```
//!
//! Why: a reader that opens the log read-only (another process: `tail`,
//! `ship`, a CLI read) sees the page cache, not the disk. Every complete
//! batch it finds there was written, but not necessarily synced; a power
//! cut or a failed fsync can still take it away, and the next record would
//! then reuse its offset. A shipper that published it would have published
//! an event that never existed, under an id that a different event takes
//! later. So readers stop at the end the writer has declared durable.
//!
//! Invariants:
//! - the writer rewrites the file (one `pwrite` of 32 bytes) only *after*
//!   the fsync that made the bytes it names durable, and after a roll: the
//!   end on disk or in the page cache never names a byte that is not
//!   durable. It fsyncs the file only at a roll and at close, so after a
//!   power cut it may lag behind the durable end by what the active segment
//!   gained since its creation (nothing after a clean close); the next
//!   writer open rewrites it;
//! - a writer open never cuts a torn tail below it: bytes the last writer
//!   made durable that fail to verify are damage, not a tear;
//! - the file's name is made durable (created by an atomic, synced write)
//!   when a writer opens the store, before anything is appended: a store
//!   without the file was written only by a release that predates it, and
//!   readers then fall back to reading every complete batch;
//! - the file is only ever replaced whole (rename) or rewritten in place by
//!   one 32-byte `pwrite`, so a file that stays invalid across retried
//!   reads is damage: a read-only handle reports it as an error (its open
//!   fails, its refresh fails and keeps the view it had) rather than read
//!   it as "nothing durable" and silently leave out the last segment; a
//!   writer's open reads it as "nothing durable" and rewrites it;
//! - segments before the named one were fsynced before their successor was
//!   created, so they are durable whole; a segment after the named one holds
//!   nothing durable yet.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::warn;

use super::dir;
use crate::error::{Error, Result};
use crate::storage::{OpenMode, Storage, StorageFile};

/// The file's name in the log directory.
pub(crate) const DURABLE_FILE: &str = "DURABLE";
const MAGIC: [u8; 4] = *b"ELDE";
/// The encoded length.
pub(crate) const DURABLE_LEN: usize = 32;
/// Reads of a file that fails its checksum before giving up: a reader can
/// race the writer's `pwrite` and see half of each.
const READ_TRIES: u32 = 6;
/// The pause before the second retry; it doubles for each later one.
const RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// The end of the durable part of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurableEnd {
    pub segment_base: u64,
    pub segment_len: u64,
    pub next_offset: u64,
}

impl DurableEnd {
    pub fn encode(&self) -> [u8; DURABLE_LEN] {
        let mut bytes = [0u8; DURABLE_LEN];
        bytes[0..4].copy_from_slice(&MAGIC);
        bytes[4..12].copy_from_slice(&self.segment_base.to_le_bytes());
        bytes[12..20].copy_from_slice(&self.segment_len.to_le_bytes());
        bytes[20..28].copy_from_slice(&self.next_offset.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..28]);
        bytes[28..32].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<DurableEnd> {
        let bytes: &[u8; DURABLE_LEN] = bytes.try_into().ok()?;
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let crc = u32::from_le_bytes([bytes[28], bytes[29], bytes[30], bytes[31]]);
        if bytes[0..4] != MAGIC || crc != crc32fast::hash(&bytes[..28]) {
            return None;
        }
        Some(DurableEnd {
            segment_base: u64_at(4),
            segment_len: u64_at(12),
            next_offset: u64_at(20),
        })
    }
}

/// What a reader may read of the last segment, given the durable end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadLimit {
    /// No durable end is published (a store from an earlier release):
    /// every complete batch.
    Unknown,
    /// Up to this byte length of the last segment.
    Upto(u64),
}

impl ReadLimit {
    /// The limit for the last segment, based at `base`, under `end`.
    pub fn for_last_segment(end: Option<DurableEnd>, base: u64) -> ReadLimit {
        match end {
            None => ReadLimit::Unknown,
            Some(end) if end.segment_base == base => ReadLimit::Upto(end.segment_len),
            // The writer rolled past it: sealed, fsynced, durable whole.
            Some(end) if end.segment_base > base => ReadLimit::Unknown,
            // Created after the last published end: nothing durable in it.
            Some(_) => ReadLimit::Upto(0),
        }
    }
}

/// Reads the durable end of the log in `dir` for its writer (an open, a
/// reopen, `repair`): `None` when the file does not exist. A file that
/// stays invalid is reported and read as "nothing in the last segment is
/// known durable", which never lets a writer cut or reuse a byte; the
/// writer's open then publishes a valid end again.
pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Option<DurableEnd>> {
    match read(storage, dir)? {
        Read::Missing => Ok(None),
        Read::Valid(end) => Ok(Some(end)),
        Read::Invalid { path, .. } => {
            warn!(file = %path.display(), "the durable-end file is invalid; treating nothing of the last segment as durable until the writer rewrites it");
            // Names the first segment with nothing durable in it: whatever
            // the last segment is, none of it is taken as durable.
            Ok(Some(DurableEnd {
                segment_base: 0,
                segment_len: 0,
                next_offset: 0,
            }))
        }
    }
}

/// Reads the durable end of the log in `dir` for a read-only handle (an
/// open, a refresh): `None` when the file does not exist (a store last
/// written by a release before it). A file that stays invalid (damaged: the
/// writer only ever replaces it whole or rewrites its 32 bytes in place,
/// both of which a retried read gets past) is an error naming it, so that
/// a reader fails, and keeps what it showed, instead of leaving out the
/// last segment's records without a word.
pub(crate) fn load_for_reader(storage: &dyn Storage, dir: &Path) -> Result<Option<DurableEnd>> {
    match read(storage, dir)? {
        Read::Missing => Ok(None),
        Read::Valid(end) => Ok(Some(end)),
        Read::Invalid { path, len } => Err(Error::Corruption {
            path,
            position: 0,
            reason: format!(
                "the durable-end file is invalid ({len} bytes, {DURABLE_LEN} expected, magic or checksum wrong); \
                 its writer's next open rewrites it"
            ),
        }),
    }
}

/// What the durable-end file holds.
enum Read {
    Missing,
    Valid(DurableEnd),
    /// Still invalid after every retry; `len` is the file's length.
    Invalid {
        path: PathBuf,
        len: u64,
    },
}

fn read(storage: &dyn Storage, dir: &Path) -> Result<Read> {
    let path = dir.join(DURABLE_FILE);
    let file = match storage.open(&path, OpenMode::Read) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Read::Missing),
        Err(e) => return Err(Error::io("open", &path, e)),
    };
    let mut bytes = [0u8; DURABLE_LEN];
    let mut len = 0;
    for attempt in 0..READ_TRIES {
        len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len == DURABLE_LEN as u64 {
            file.read_exact_at(&mut bytes, 0)
                .map_err(|e| Error::io("read", &path, e))?;
            if let Some(end) = DurableEnd::decode(&bytes) {
                return Ok(Read::Valid(end));
            }
        }
        // A read racing the writer's `pwrite` can see part of each end;
        // the write takes microseconds, so a file still invalid after
        // growing pauses (about 30 ms in all) is not being written.
        if attempt == 0 {
            std::thread::yield_now();
        } else if attempt + 1 < READ_TRIES {
            std::thread::sleep(RETRY_PAUSE * (1 << (attempt - 1)));
        }
    }
    Ok(Read::Invalid { path, len })
}

/// Whether the durable end published now still says that the segment at
/// `base` holds at least `len` durable bytes. A reader that found the
/// segment shorter than an end it read a moment before asks this before
/// it calls the records lost: `repair` (holding the lock) withdraws the end
/// before it rewrites segments, and a writer's end only grows within a
/// segment.
pub(crate) fn still_names(storage: &dyn Storage, dir: &Path, base: u64, len: u64) -> bool {
    load(storage, dir)
        .ok()
        .flatten()
        .is_some_and(|end| end.segment_base == base && end.segment_len >= len)
}

/// Removes the durable end (for `repair`, which holds the lock and leaves
/// only durable bytes, before it changes segments whose lengths the end
/// names). The removal is made durable before anything else changes.
pub(crate) fn withdraw(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let path = dir.join(DURABLE_FILE);
    match storage.remove(&path) {
        Ok(()) => storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", &path, e)),
    }
}

/// The writer's side: the open file it rewrites after each fsync.
pub(crate) struct Publisher {
    path: PathBuf,
    file: Arc<dyn StorageFile>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Publishes `end` and keeps the file open for the writer's later
    /// updates. Called by a writer open, after recovery made everything it
    /// kept durable and synced the directory (which made an existing
    /// file's name durable). A file that already holds `end` is left as it
    /// is (a reopen after a clean close, or on a full disk, writes nothing);
    /// one of the right size is rewritten in place; any other is replaced
    /// atomically, name synced.
    pub fn create(storage: &dyn Storage, dir: &Path, end: DurableEnd) -> Result<Publisher> {
        let path = dir.join(DURABLE_FILE);
        let existing = match storage.open(&path, OpenMode::ReadWrite) {
            Ok(file) => Some(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        if let Some(file) = existing {
            if file.len().ok() == Some(DURABLE_LEN as u64) {
                let publisher = Publisher { path, file };
                if publisher.read() != Some(end) {
                    publisher.publish(end)?;
                }
                return Ok(publisher);
            }
        }
        dir::write_file_atomically(storage, dir, DURABLE_FILE, &end.encode(), true)?;
        let file = storage
            .open(&path, OpenMode::ReadWrite)
            .map_err(|e| Error::io("open", &path, e))?;
        Ok(Publisher { path, file })
    }

    fn read(&self) -> Option<DurableEnd> {
        let mut bytes = [0u8; DURABLE_LEN];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        DurableEnd::decode(&bytes)
    }

    /// Makes the last published end durable (at a roll and at close, so
    /// that after a power cut readers lag the disk by at most the active
    /// segment, and not at all after a clean close). A failure is only
    /// logged: the end on disk then lags, which hides records but never
    /// shows one that is not durable.
    pub fn sync(&self) {
        if let Err(e) = self.file.sync_data() {
            warn!(file = %self.path.display(), error = %e, "could not fsync the durable-end file");
        }
    }

    /// Publishes a new durable end (no fsync: see the module docs).
    pub fn publish(&self, end: DurableEnd) -> Result<()> {
        self.file
            .write_all_at(&end.encode(), 0)
            .map_err(|e| Error::io("write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_roundtrip_and_every_flipped_bit_is_refused() {
        let end = DurableEnd {
            segment_base: 1 << 40,
            segment_len: 12_345,
            next_offset: (1 << 40) + 99,
        };
        let bytes = end.encode();
        assert_eq!(DurableEnd::decode(&bytes), Some(end));
        for bit in 0..DURABLE_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(DurableEnd::decode(&damaged), None, "bit {bit}");
        }
        assert_eq!(DurableEnd::decode(&bytes[..31]), None);
    }

    /// A reader racing the writer's in-place rewrites never takes one for
    /// damage (an error) nor reads an end older than one it read before.
    #[test]
    fn a_file_being_rewritten_is_never_read_as_damage_nor_going_back() {
        use crate::storage::FileStorage;
        let dir = tempfile::tempdir().unwrap();
        let at = |n: u64| DurableEnd {
            segment_base: 0,
            segment_len: 64 + n * 100,
            next_offset: n,
        };
        let publisher = Publisher::create(&FileStorage, dir.path(), at(0)).unwrap();
        let writer = std::thread::spawn(move || {
            for n in 1..=20_000 {
                publisher.publish(at(n)).unwrap();
            }
        });
        let mut last = 0;
        while !writer.is_finished() {
            let end = load_for_reader(&FileStorage, dir.path()).unwrap().unwrap();
            assert_eq!(end, at(end.next_offset));
            assert!(end.next_offset >= last, "{} after {last}", end.next_offset);
            last = end.next_offset;
        }
        writer.join().unwrap();
        let end = load_for_reader(&FileStorage, dir.path()).unwrap();
        assert_eq!(end, Some(at(20_000)));
    }

    #[test]
    fn read_limits_follow_the_segment_named() {
        let end = Some(DurableEnd {
            segment_base: 100,
            segment_len: 500,
            next_offset: 140,
        });
        assert_eq!(ReadLimit::for_last_segment(None, 100), ReadLimit::Unknown);
        assert_eq!(ReadLimit::for_last_segment(end, 100), ReadLimit::Upto(500));
        assert_eq!(ReadLimit::for_last_segment(end, 50), ReadLimit::Unknown);
        assert_eq!(ReadLimit::for_last_segment(end, 140), ReadLimit::Upto(0));
    }
}
