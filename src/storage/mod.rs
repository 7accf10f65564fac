//! The I/O seam: every file operation of the log goes through [`Storage`]
//! and [`StorageFile`].
//!
//! Two implementations ship with the crate:
//! - [`FileStorage`], the real file system (`pread`/`pwrite`, `fdatasync`,
//!   `flock`, and read-only memory maps of sealed segments);
//! - `SimStorage` (feature `test-util`), an in-memory file system that remembers which bytes and
//!   directory entries were made durable, can fail any call on purpose
//!   (ENOSPC, EIO), and can simulate a crash that loses, tears or reorders
//!   writes that were never fsynced. Tests use it to check recovery.
//!
//! The traits are deliberately small: what the log needs and nothing more.

mod fs;
#[cfg(any(test, feature = "test-util"))]
pub mod sim;

use std::fmt::Debug;
use std::io;
use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

pub use fs::FileStorage;
#[cfg(any(test, feature = "test-util"))]
pub use sim::SimStorage;

/// How to open a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read an existing file.
    Read,
    /// Read and write an existing file.
    ReadWrite,
    /// Create a new file for reading and writing; fails if it exists.
    CreateNew,
    /// Create the file if missing, or truncate it; read and write.
    CreateTruncate,
}

/// A file system, as the log sees it.
pub trait Storage: Debug + Send + Sync + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Whether `path` exists (file or directory).
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// The names of the entries of `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens a file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the exclusive lock on `path` (created if missing), without
    /// waiting: `ErrorKind::WouldBlock` when someone else holds it, even
    /// another handle of this same process. Dropping the guard releases it.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// An open file.
#[expect(
    clippy::len_without_is_empty,
    reason = "a file's emptiness is never asked"
)]
pub trait StorageFile: Debug + Send + Sync {
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Fills `buf` from position `pos`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `buf` at position `pos`.
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Writes `len` zero bytes at position `pos`: how the log fills a
    /// segment ahead of its writer (`LogOptions::preallocate_segments`).
    /// Real zeros, written: an extension by `set_len` leaves a hole or
    /// unwritten extents, whose first write still changes metadata. A call
    /// of its own so that tests can fail it apart from the log's writes.
    fn write_zeros_at(&self, pos: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| io::Error::other("zero fill too long"))?;
        self.write_all_at(&vec![0u8; len], pos)
    }
    /// Truncates or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// A read-only view of the whole file as it is now. The log maps only
    /// sealed segments, which are never written again.
    fn map(&self) -> io::Result<Mapped>;
    /// What tells this file apart, without reading it, from another file
    /// later renamed over its name and from its own earlier contents (see
    /// [`FileStamp`]); `None` when the storage cannot tell, and then a
    /// read-only refresh reopens every segment instead of keeping the ones
    /// it verified.
    fn stamp(&self) -> io::Result<Option<FileStamp>> {
        Ok(None)
    }
}

/// A file's identity and version, as metadata gives them: two stamps of the
/// same name compare equal only if no rename replaced the file and nothing
/// wrote to it or changed its length in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    /// Which file: (device, inode) on a real file system. Another file
    /// renamed over the name has another one.
    pub file_id: (u64, u64),
    /// Length in bytes.
    pub len: u64,
    /// When the file last changed (its ctime in nanoseconds on a real file
    /// system, which every write, truncation and rename moves). The kernel's
    /// clock for it ticks every few milliseconds, so a write of the same
    /// length within the tick of the stamp can keep it: the log relies on
    /// `file_id` for what it changes itself (a repair renames a new file
    /// over a segment; nothing writes a sealed segment in place).
    pub changed: u64,
}

/// A held lock; released on drop.
pub trait LockGuard: Debug + Send + Sync {
    /// Records this process as the holder (its id, in the lock file), so
    /// that a refused second writer can be told who holds the lock. Called
    /// once a writer open has succeeded, so a refused open changes nothing;
    /// best effort, and nothing reads it back but tools.
    fn record_holder(&self) {}
}

/// Bytes of a whole file: a memory map or an owned copy.
#[derive(Debug)]
pub enum Mapped {
    /// A read-only memory map.
    Map(memmap2::Mmap),
    /// An owned copy (empty files, and in-memory storage).
    Owned(Vec<u8>),
}

impl Deref for Mapped {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Mapped::Map(map) => map,
            Mapped::Owned(bytes) => bytes,
        }
    }
}

/// The whole file.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    read_prefix(file, u64::MAX)
}

/// The first `limit` bytes of a file, or all of it when it is shorter.
///
/// A writer may cut the zero tail of its live segment (when it seals it)
/// between the length this reads and the read itself; the read then runs
/// past the new end. Only a file that shrank is read again, at its new
/// length (a few times at most): any other failure is returned as it is.
pub(crate) fn read_prefix(file: &dyn StorageFile, limit: u64) -> io::Result<Vec<u8>> {
    const TRIES: usize = 8;
    for _ in 0..TRIES {
        let len = file.len()?.min(limit);
        let mut buf =
            vec![0u8; usize::try_from(len).map_err(|_| io::Error::other("file too large"))?];
        match file.read_exact_at(&mut buf, 0) {
            Ok(()) => return Ok(buf),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && file.len()? < len => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file kept shrinking while it was read",
    ))
}

/// Creates `dir` and any missing parents so that they survive a crash: each
/// directory created here is followed by an fsync of its parent, from the
/// top down, because a new directory's name is durable only once the
/// directory holding it is synced. Files later synced inside a directory
/// whose own name was lost would be lost with it.
pub(crate) fn create_dir_all_durably(storage: &dyn Storage, dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    for ancestor in dir.ancestors() {
        if ancestor.as_os_str().is_empty() || storage.exists(ancestor)? {
            break;
        }
        missing.push(ancestor);
    }
    if missing.is_empty() {
        return Ok(());
    }
    storage.create_dir_all(dir)?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        storage.sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A file whose writer cuts its zero tail to `cut_to` bytes right after
    /// the first time its length is read (as a writer sealing its segment
    /// may, between a reader's stat and its read).
    #[derive(Debug)]
    struct CutAfterStat {
        bytes: Mutex<Vec<u8>>,
        cut_to: usize,
        stats: Mutex<u32>,
    }

    impl StorageFile for CutAfterStat {
        fn len(&self) -> io::Result<u64> {
            let len = self.bytes.lock().unwrap().len() as u64;
            let mut stats = self.stats.lock().unwrap();
            *stats += 1;
            if *stats == 1 {
                self.bytes.lock().unwrap().truncate(self.cut_to);
            }
            Ok(len)
        }
        fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
            let bytes = self.bytes.lock().unwrap();
            let end = pos as usize + buf.len();
            if end > bytes.len() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short"));
            }
            buf.copy_from_slice(&bytes[pos as usize..end]);
            Ok(())
        }
        fn write_all_at(&self, _: &[u8], _: u64) -> io::Result<()> {
            unreachable!("read only")
        }
        fn set_len(&self, _: u64) -> io::Result<()> {
            unreachable!("read only")
        }
        fn sync_data(&self) -> io::Result<()> {
            unreachable!("read only")
        }
        fn map(&self) -> io::Result<Mapped> {
            Ok(Mapped::Owned(self.bytes.lock().unwrap().clone()))
        }
    }

    fn file(data: &[u8], cut_to: usize) -> CutAfterStat {
        CutAfterStat {
            bytes: Mutex::new(data.to_vec()),
            cut_to,
            stats: Mutex::new(0),
        }
    }

    #[test]
    fn a_file_cut_between_its_length_and_its_read_is_read_at_its_new_length() {
        let mut data = b"batch".repeat(10);
        data.extend_from_slice(&[0; 100]);
        let read = read_all(&file(&data, 50)).unwrap();
        assert_eq!(read, &data[..50]);
        // A limit below the cut never sees it.
        assert_eq!(read_prefix(&file(&data, 50), 20).unwrap(), &data[..20]);
        // A limit above it reads what is left.
        assert_eq!(read_prefix(&file(&data, 50), 80).unwrap(), &data[..50]);
    }
}
