//! A storage wrapper that counts mutating calls, used to size the range of
//! power-cut points of a crash simulation and to tell whether a failure
//! came after the cut; it also counts checkpoint files put in place.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::{FileStamp, LockGuard, Mapped, OpenMode, Storage, StorageFile};

#[derive(Debug, Default)]
pub struct Counters {
    /// Creates, removes, renames, directory syncs, writes, `set_len`s and
    /// data syncs: what `SimStorage::power_cut_after` counts.
    pub ops: AtomicU64,
    /// Renames onto a `.ckpt` file.
    pub checkpoints_written: AtomicU64,
    /// Bytes read or mapped (a map counts the file's whole length).
    pub bytes_read: AtomicU64,
}

impl Counters {
    fn count(&self) {
        self.ops.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
pub struct Counting {
    pub inner: SimStorage,
    pub counters: Arc<Counters>,
}

#[derive(Debug)]
struct CountingFile {
    inner: Arc<dyn StorageFile>,
    counters: Arc<Counters>,
}

impl Storage for Counting {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        if matches!(mode, OpenMode::CreateNew | OpenMode::CreateTruncate) {
            self.counters.count();
        }
        Ok(Arc::new(CountingFile {
            inner: self.inner.open(path, mode)?,
            counters: self.counters.clone(),
        }))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.counters.count();
        self.inner.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.counters.count();
        self.inner.rename(from, to)?;
        if to.extension().is_some_and(|e| e == "ckpt") {
            self.counters
                .checkpoints_written
                .fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.counters.count();
        self.inner.sync_dir(dir)
    }

    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        self.inner.try_lock(path)
    }
}

impl StorageFile for CountingFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.counters
            .bytes_read
            .fetch_add(buf.len() as u64, Ordering::SeqCst);
        self.inner.read_exact_at(buf, pos)
    }

    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.counters.count();
        self.inner.write_all_at(buf, pos)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.counters.count();
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.counters.count();
        self.inner.sync_data()
    }

    fn map(&self) -> io::Result<Mapped> {
        let map = self.inner.map()?;
        self.counters
            .bytes_read
            .fetch_add(map.len() as u64, Ordering::SeqCst);
        Ok(map)
    }

    fn stamp(&self) -> io::Result<Option<FileStamp>> {
        self.inner.stamp()
    }
}
