//! Opening a new or odd log directory: first openers racing each other, and
//! a version file that is far too long.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

use common::counting::{Counters, Counting};
use enforcelog::storage::sim::SimStorage;
use enforcelog::{Error, Log, LogOptions, Record};

/// Many threads open the same new directory at once. Before, each wrote
/// `VERSION` (through `VERSION.tmp` and a rename) before taking the lock, so
/// two first openers raced on the temporary file and one failed with an I/O
/// error about it. Now exactly one opener wins, every other one is told
/// `Locked`, and the directory is a valid log afterwards.
#[test]
fn first_openers_racing_on_a_new_dir_get_one_writer_and_locked() {
    const OPENERS: usize = 8;
    let root = tempfile::tempdir().unwrap();
    for round in 0..60 {
        let dir = root.path().join(format!("new-{round}"));
        let barrier = Arc::new(Barrier::new(OPENERS));
        let threads: Vec<_> = (0..OPENERS)
            .map(|_| {
                let dir = dir.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let options = LogOptions {
                        durability: enforcelog::Durability::None,
                        ..LogOptions::default()
                    };
                    // Hold the log until every opener has tried.
                    let result = Log::open(&dir, options);
                    barrier.wait();
                    result.map(|log| log.close())
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let mut writers = 0;
        for result in results {
            match result {
                Ok(closed) => {
                    closed.unwrap();
                    writers += 1;
                }
                Err(Error::Locked { .. }) => {}
                Err(e) => panic!("round {round}: an opener failed: {e}"),
            }
        }
        assert_eq!(writers, 1, "round {round}");
        let log = Log::open(&dir, LogOptions::default()).unwrap();
        log.append_blocking(Record::new(1, vec![0; 64])).unwrap();
        log.close().unwrap();
        assert!(Log::open_read_only(&dir).unwrap().next_offset() == 1);
    }
}

/// A version file of a megabyte is refused after reading at most 65 bytes
/// of it (before, the whole file was read and then its length checked),
/// and nothing on disk changes.
#[test]
fn oversized_version_file_is_refused_after_reading_at_most_65_bytes() {
    let sim = SimStorage::new(5);
    {
        let log =
            Log::open_with_storage(Arc::new(sim.clone()), "/log", LogOptions::default()).unwrap();
        log.close().unwrap();
    }
    let mut version = sim.read_file("/log/VERSION").unwrap();
    version.resize(1 << 20, b'x');
    sim.write_file("/log/VERSION", &version);
    for read_only in [false, true] {
        let counters = Arc::new(Counters::default());
        let storage = Arc::new(Counting {
            inner: sim.clone(),
            counters: counters.clone(),
        });
        let result = if read_only {
            Log::open_read_only_with_storage(storage, "/log").map(|_| ())
        } else {
            Log::open_with_storage(storage, "/log", LogOptions::default()).map(|_| ())
        };
        assert!(
            matches!(result, Err(Error::UnsupportedVersion { .. })),
            "read_only {read_only}: {result:?}"
        );
        let read = counters.bytes_read.load(Ordering::SeqCst);
        assert!(read <= 65, "read_only {read_only}: read {read} bytes");
        assert_eq!(
            counters.ops.load(Ordering::SeqCst),
            0,
            "read_only {read_only}"
        );
        assert_eq!(sim.read_file("/log/VERSION").unwrap(), version);
    }
}

/// A reader that opened a store while it was being created (its `VERSION`
/// written, its `STORE_ID` and first segment not yet: another process's
/// shard, claimed a moment earlier) kept "no id" for good, so every later
/// refresh refused the segment the writer then made: "segment carries store
/// tag ... but the directory has no STORE_ID file". Found by four Python
/// worker processes claiming shards of one directory while each read the
/// others. A segment that is listed proves its id was durable first, so the
/// reader now reads the id again; a directory that really lacks it is still
/// refused.
#[test]
fn a_reader_that_opened_a_store_being_created_reads_it_once_the_writer_has_written() {
    let root = tempfile::tempdir().unwrap();
    let made = root.path().join("made");
    let log = Log::open(&made, LogOptions::default()).unwrap();
    log.append_blocking(Record::new(1_000, b"first".to_vec()))
        .unwrap();
    log.close().unwrap();

    // The state a reader can meet: VERSION only.
    let dir = root.path().join("being-created");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(made.join("VERSION"), dir.join("VERSION")).unwrap();
    let reader = Log::open_read_only(&dir).expect("a store with only its VERSION opens empty");
    assert_eq!(reader.next_offset(), 0);
    assert_eq!(reader.store_id(), None);

    // The writer goes on: its id, then its first segment.
    for entry in std::fs::read_dir(&made).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "STORE_ID" || name.to_string_lossy().ends_with(".log") {
            std::fs::copy(entry.path(), dir.join(&name)).unwrap();
        }
    }
    reader
        .refresh()
        .expect("the id is read again once a segment is there");
    assert_eq!(
        reader.store_id(),
        Log::open_read_only(&made).unwrap().store_id()
    );
    let records: Vec<_> = reader.read_from(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(&records[0].payload[..], b"first");

    // A tagged segment in a directory that has no id is still refused.
    std::fs::remove_file(dir.join("STORE_ID")).unwrap();
    assert!(matches!(
        Log::open_read_only(&dir),
        Err(Error::Corruption { .. })
    ));
}
