//! The real file system. The crate's only `unsafe` code lives here.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::{FileStamp, LockGuard, Mapped, OpenMode, Storage, StorageFile};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct FileStorage;

#[derive(Debug)]
struct OsFile(File);

#[derive(Debug)]
struct OsLock(File);

impl LockGuard for OsLock {
    fn record_holder(&self) {
        // Informational and never trusted (only the flock says whether a
        // writer lives): a failure to write it leaves the holder unnamed.
        let pid = format!("{}\n", std::process::id());
        let _ = self
            .0
            .set_len(0)
            .and_then(|()| FileExt::write_all_at(&self.0, pid.as_bytes(), 0));
    }
}

impl Storage for FileStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let mut options = OpenOptions::new();
        match mode {
            OpenMode::Read => options.read(true),
            OpenMode::ReadWrite => options.read(true).write(true),
            OpenMode::CreateNew => options.read(true).write(true).create_new(true),
            OpenMode::CreateTruncate => options.read(true).write(true).create(true).truncate(true),
        };
        Ok(Arc::new(OsFile(options.open(path)?)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // `flock` locks belong to the open file description, so a second
        // open of the same file in this process conflicts too.
        match file.try_lock() {
            Ok(()) => Ok(Box::new(OsLock(file))),
            Err(TryLockError::WouldBlock) => Err(io::ErrorKind::WouldBlock.into()),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

impl StorageFile for OsFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn stamp(&self) -> io::Result<Option<FileStamp>> {
        use std::os::unix::fs::MetadataExt;
        let m = self.0.metadata()?;
        // Nanoseconds since the epoch fit a u64 until 2554; a ctime before
        // the epoch (a clock set back) only has to differ, not to order.
        let changed = (m.ctime() as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(m.ctime_nsec() as u64);
        Ok(Some(FileStamp {
            file_id: (m.dev(), m.ino()),
            len: m.len(),
            changed,
        }))
    }

    // Memory maps cannot be made safe by the type system: see SAFETY below.
    #[allow(unsafe_code)]
    fn map(&self) -> io::Result<Mapped> {
        if self.len()? == 0 {
            // Mapping an empty file fails on some systems; nothing to map.
            return Ok(Mapped::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and the log maps only sealed segments,
        // which no enforcelog writer ever writes or truncates again. Another
        // program changing the file under the map is outside the contract
        // (as for any memory-mapped store); every byte read through the map
        // is still checksum-verified before use.
        let map = unsafe { memmap2::Mmap::map(&self.0)? };
        Ok(Mapped::Map(map))
    }
}
