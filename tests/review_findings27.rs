//! Review 27: the fixes of review 26 in the library (src/storage/mod.rs
//! `read_prefix`, src/log/verify.rs under a live handle). Each test fails if
//! the finding it is named after is real; confirmed ones are `#[ignore]`d
//! with the reason.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use enforcelog::{Log, LogOptions, Record};

fn payload(i: u64) -> Vec<u8> {
    // Opaque payloads: zero runs, invisible characters, nested JSON.
    let mut p = format!(
        "{{\"run\":\"run-{i:04}\",\"nested\":{{\"a\":{{\"b\":[0,0,0]}}}},\"note\":\"\u{200b}\u{feff}\"}}"
    )
    .into_bytes();
    p.extend_from_slice(&[0u8; 512]);
    p
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    all.sort();
    all
}

/// Acknowledged batches of the active segment cut off at a batch boundary
/// (the file made shorter than its committed length by something other
/// than the writer) while a writer holds the log: `verify` under the live
/// handle reads the committed prefix with `read_prefix`, which returns
/// whatever the file holds when it is shorter, and the scan of a prefix
/// that ends at a batch boundary finds nothing wrong. The report is clean
/// and counts fewer records than the log acknowledged.
#[test]
fn a_live_verify_reports_acknowledged_batches_cut_from_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, LogOptions::default()).unwrap();
    for i in 0..3 {
        log.append_blocking(Record::new(1, payload(i))).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let active = segments(&dir).pop().unwrap();
    let boundary = std::fs::metadata(&active).unwrap().len();

    let log = Log::open(&dir, LogOptions::default()).unwrap();
    for i in 3..6 {
        log.append_blocking(Record::new(1, payload(i))).unwrap();
    }
    assert_eq!(
        segments(&dir).pop().unwrap(),
        active,
        "still the active segment"
    );
    let before = log.verify().unwrap();
    assert!(before.is_clean(), "{before:?}");
    assert_eq!(before.records, 6);
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(boundary)
        .unwrap();
    let report = log.verify().unwrap();
    assert!(
        !report.is_clean() || report.records == 6,
        "three acknowledged records are gone and verify says clean: {report:?} (log next offset {})",
        log.next_offset()
    );
}

/// The same cut seen by a reader in another process: a read-only open of a
/// log whose active segment is shorter than the durable end its writer
/// published (`DURABLE`) reads what is left (`open_last` truncates the
/// bytes to the durable length, which does nothing to a shorter file) and
/// shows fewer records than the writer acknowledged, with no error.
/// Confirmed, fixed since: a read-only open refuses such a segment
/// (`tests/durable_cut.rs` widens this to every opener and to cuts inside
/// a batch).
#[test]
fn a_reader_refuses_an_active_segment_shorter_than_the_published_durable_end() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, LogOptions::default()).unwrap();
    for i in 0..3 {
        log.append_blocking(Record::new(1, payload(i))).unwrap();
    }
    log.close().unwrap();
    drop(log);
    let active = segments(&dir).pop().unwrap();
    let boundary = std::fs::metadata(&active).unwrap().len();

    let log = Log::open(&dir, LogOptions::default()).unwrap();
    for i in 3..6 {
        log.append_blocking(Record::new(1, payload(i))).unwrap();
    }
    assert_eq!(Log::open_read_only(&dir).unwrap().next_offset(), 6);
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(boundary)
        .unwrap();
    match Log::open_read_only(&dir) {
        Err(_) => {}
        Ok(reader) => assert_eq!(
            reader.next_offset(),
            6,
            "a reader shows {} of the 6 records the writer made durable, and no error",
            reader.next_offset()
        ),
    }
    drop(log);
}

mod short_read {
    use std::io;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use enforcelog::storage::{
        FileStamp, FileStorage, LockGuard, Mapped, OpenMode, Storage, StorageFile,
    };

    /// The file system, except that the first long read of a segment comes
    /// back short (UnexpectedEof) while the file keeps its length: a
    /// failing disk or a bug below, not a writer sealing its segment.
    #[derive(Debug)]
    pub struct ShortOnce(pub AtomicBool);

    #[derive(Debug)]
    struct File(Arc<dyn StorageFile>, bool);

    impl StorageFile for File {
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
            if self.1 && buf.len() > 4096 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
            }
            self.0.read_exact_at(buf, pos)
        }
        fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
            self.0.write_all_at(buf, pos)
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn map(&self) -> io::Result<Mapped> {
            self.0.map()
        }
        fn stamp(&self) -> io::Result<Option<FileStamp>> {
            self.0.stamp()
        }
    }

    impl Storage for ShortOnce {
        fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
            FileStorage.create_dir_all(dir)
        }
        fn exists(&self, path: &Path) -> io::Result<bool> {
            FileStorage.exists(path)
        }
        fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
            FileStorage.list(dir)
        }
        fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
            let file = FileStorage.open(path, mode)?;
            let short = path.extension().is_some_and(|e| e == "log")
                && self.0.swap(false, Ordering::SeqCst);
            Ok(Arc::new(File(file, short)))
        }
        fn remove(&self, path: &Path) -> io::Result<()> {
            FileStorage.remove(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            FileStorage.rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            FileStorage.sync_dir(dir)
        }
        fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
            FileStorage.try_lock(path)
        }
    }
}

/// Refutes: `read_prefix` taking a short read of a file that did NOT
/// shrink for a torn or shorter segment. A reader whose read of the active
/// segment comes back short while the file keeps its length fails with an
/// I/O error; it does not open a log with fewer records.
#[test]
fn a_short_read_of_a_segment_that_did_not_shrink_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, LogOptions::default()).unwrap();
    for i in 0..12 {
        log.append_blocking(Record::new(1, payload(i))).unwrap();
    }
    let storage = Arc::new(short_read::ShortOnce(AtomicBool::new(true)));
    match Log::open_read_only_with_storage(storage.clone(), &dir) {
        Err(e) => assert!(e.to_string().contains("short read"), "{e}"),
        Ok(reader) => panic!(
            "a short read opened a reader of {} records of 12",
            reader.next_offset()
        ),
    }
    assert!(!storage.0.load(Ordering::SeqCst), "the short read happened");
    drop(log);
}
