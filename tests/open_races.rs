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
