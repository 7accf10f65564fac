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

/// Reads a whole file into memory.
pub(crate) fn read_all(file: &dyn StorageFile) -> io::Result<Vec<u8>> {
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
}

/// The first `limit` bytes of a file, or all of it when it is shorter.
pub(crate) fn read_prefix(file: &dyn StorageFile, limit: u64) -> io::Result<Vec<u8>> {
    let len =
        usize::try_from(file.len()?.min(limit)).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, 0)?;
    Ok(buf)
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
