//! Single-bit flips in segment and index files, on the real file system.
//! Payloads hold runs of zeros, as real ones do (see also
//! `tests/corruption_not_torn.rs` for events that are mostly zeros).
//!
//! A flipped bit in a segment is damage, never a torn tail: `verify_dir`
//! reports it as corruption. In the last segment, which open scans, the log
//! reads past it (the damaged batch reads as a hole) and a writer goes on
//! recording; in a sealed segment, whose frames are checked when read (or
//! by open, when its index file is missing), the log reads past it the same
//! way: no reader fails and the writer records on. A flipped bit in an
//! index file only costs a rebuild: the index is derived data.
//!
//! Each test reuses one scratch directory and rewrites the damaged file for
//! every flip, so thousands of flips run in seconds.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test bit_flips`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::segment::{self, batch_starts, damage_range};
use common::Rng;
use enforcelog::format::{decode_batch, SEGMENT_HEADER_LEN};
use enforcelog::{
    verify_dir, Durability, Error, Log, LogOptions, LogRecord, ProblemKind, Record, VerifyReport,
};

/// A closed log whose files are kept in memory, to restore after damage.
struct Store {
    dir: tempfile::TempDir,
    /// Every file of the directory but the lock, by name.
    files: BTreeMap<String, Vec<u8>>,
    records: Vec<LogRecord>,
    seed: u64,
}

impl Store {
    /// Appends batches of `batch_sizes` records with payloads of
    /// `payload_lens` bytes, and closes the log.
    fn build(
        options: LogOptions,
        batch_sizes: &[usize],
        payload_lens: std::ops::RangeInclusive<usize>,
    ) -> Self {
        let seed = common::run_seed();
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let log = Log::open(dir.path(), options).expect("open");
        let mut records = Vec::new();
        for &count in batch_sizes {
            let batch: Vec<Record> = (0..count)
                .map(|_| {
                    let len = rng.in_range(payload_lens.clone());
                    let payload = with_zero_runs(&mut rng, len);
                    let ts = i64::try_from(rng.next() >> 1).expect("fits") - (1 << 62);
                    Record::new(ts, payload)
                })
                .collect();
            let range = log.append_batch_blocking(batch.clone()).expect("append");
            records.extend(range.zip(batch).map(|(offset, r)| LogRecord {
                offset,
                timestamp_us: r.timestamp_us,
                payload: r.payload,
            }));
        }
        log.close().expect("close");
        drop(log);
        let report = verify_dir(dir.path()).expect("verify_dir");
        assert!(report.is_clean(), "pristine store: {report:?}");
        let files = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .filter(|name| name != "LOCK")
            .map(|name| {
                let bytes = fs::read(dir.path().join(&name)).expect("read");
                (name, bytes)
            })
            .collect();
        Store {
            dir,
            files,
            records,
            seed,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Names of the files ending in `suffix`, in order.
    fn names(&self, suffix: &str) -> Vec<String> {
        self.files
            .keys()
            .filter(|n| n.ends_with(suffix))
            .cloned()
            .collect()
    }

    fn pristine(&self, name: &str) -> &[u8] {
        &self.files[name]
    }

    /// Flips bit `bit` of `name`, which must be pristine, in place (one
    /// byte written, which is much faster than rewriting the file); returns
    /// the damaged bytes.
    fn flip(&self, name: &str, bit: usize) -> Vec<u8> {
        let mut bytes = self.pristine(name).to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        self.write_byte(name, bit / 8, bytes[bit / 8]);
        bytes
    }

    /// Undoes [`Store::flip`], when the file was not replaced since.
    fn unflip(&self, name: &str, bit: usize) {
        self.write_byte(name, bit / 8, self.pristine(name)[bit / 8]);
    }

    fn write_byte(&self, name: &str, at: usize, byte: u8) {
        segment::write_byte(&self.file_path(name), at, byte);
    }

    /// Puts `name` back as it was, whatever happened to it.
    fn restore(&self, name: &str) {
        fs::write(self.file_path(name), self.pristine(name)).expect("restore a file");
    }

    /// Puts every file but `except` back as it was built (only those that
    /// changed), and removes every file that was not there: undoes a writer
    /// open's new segment, index and `DURABLE`.
    fn reset_except(&self, except: &str) {
        for (name, bytes) in self.files.iter().filter(|(n, _)| *n != except) {
            if fs::read(self.file_path(name)).ok().as_ref() != Some(bytes) {
                self.restore(name);
            }
        }
        for entry in fs::read_dir(self.path()).expect("list") {
            let file = entry
                .expect("entry")
                .file_name()
                .into_string()
                .expect("utf-8");
            if file != "LOCK" && !self.files.contains_key(&file) {
                fs::remove_file(self.file_path(&file)).expect("remove a new file");
            }
        }
    }

    /// Asserts every file is as it was built.
    fn assert_pristine(&self) {
        for (name, bytes) in &self.files {
            let now = fs::read(self.file_path(name)).expect("read");
            assert!(&now == bytes, "{name} changed (seed {})", self.seed);
        }
    }
}

/// `len` payload bytes as real ones look: every other payload is mostly
/// zeros (runs of 0x00 are ordinary data, as in an encoded histogram of zero
/// counts), with a few random bytes; the others are random.
fn with_zero_runs(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut payload = rng.bytes(len);
    if len > 0 && rng.next().is_multiple_of(2) {
        let start = rng.index(len);
        let run = rng.in_range(len / 2..=len);
        payload[start..(start + run).min(len)].fill(0);
        payload[..len / 4].fill(0);
    }
    payload
}

/// Asserts `report` names corruption in `path` within `range`.
fn assert_reports_corruption(
    report: &VerifyReport,
    path: &Path,
    range: &std::ops::RangeInclusive<u64>,
    what: &str,
) {
    let found = report.problems.iter().any(|p| {
        matches!(p.kind, ProblemKind::Corruption | ProblemKind::Layout)
            && p.path == path
            && range.contains(&p.position)
    });
    assert!(
        found,
        "{what}: verify_dir reports no corruption in {} at {range:?}: {report:?}",
        path.display()
    );
}

/// Asserts `result` is a corruption error naming `path` within `range`.
fn assert_corruption<T>(
    result: enforcelog::Result<T>,
    path: &Path,
    range: &std::ops::RangeInclusive<u64>,
    what: &str,
) {
    match result {
        Err(Error::Corruption {
            path: p, position, ..
        }) if p == path && range.contains(&position) => {}
        Err(e) => panic!(
            "{what}: expected corruption in {} at {range:?}, got: {e}",
            path.display()
        ),
        Ok(_) => panic!("{what}: the damage went unnoticed"),
    }
}

fn read_all(log: &Log) -> enforcelog::Result<Vec<LogRecord>> {
    log.read_from(0)?.collect()
}

/// The records of a log read past damage: every record of the pristine
/// log but those of the damaged batch (offsets `lost`) must come back
/// unchanged, at its offset; the damaged batch's offsets must be holes.
fn assert_read_past(
    records: &[LogRecord],
    pristine: &[LogRecord],
    lost: &std::ops::Range<u64>,
    what: &str,
) {
    assert!(
        records.len() >= pristine.len(),
        "{what}: {} records read",
        records.len()
    );
    for (offset, record) in records.iter().enumerate() {
        let offset = offset as u64;
        assert_eq!(record.offset, offset, "{what}");
        let hole = matches!(
            enforcelog::payload::decode(offset, record.timestamp_us, &record.payload),
            Ok(enforcelog::Entry::Lost(_))
        );
        if lost.contains(&offset) || offset >= pristine.len() as u64 {
            assert!(
                hole,
                "{what}: offset {offset} of the damaged batch is not a hole"
            );
        } else {
            assert_eq!(
                record, &pristine[offset as usize],
                "{what}: offset {offset}"
            );
        }
    }
}

/// Every bit flip in the active (only) segment is reported by `verify_dir`
/// as corruption. A flip in the segment header fails every open. Any other
/// does not stop the log (it used to stop recording until a repair): a
/// read-only open reads past it, and a writer open seals the segment as
/// found and appends to a new one; both read every record but those of the
/// damaged batch, which read as a hole. Neither changes the damaged file.
#[test]
fn every_bit_flip_in_the_active_segment_is_reported_and_read_past() {
    let options = LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    };
    let store = Store::build(options.clone(), &[1, 3, 2, 1, 3], 20..=40);
    let name = "00000000000000000000.log";
    let path = store.file_path(name);
    let len = store.pristine(name).len();
    assert!(
        (600..=1500).contains(&len),
        "segment of {len} bytes (seed {})",
        store.seed
    );
    let starts = batch_starts(store.pristine(name));
    for bit in 0..len * 8 {
        let damaged = store.flip(name, bit);
        let what = format!("bit {bit} (byte {}) flipped, seed {}", bit / 8, store.seed);
        let range = damage_range(&starts, bit / 8);
        let report = verify_dir(store.path()).expect("verify_dir");
        assert_reports_corruption(&report, &path, &range, &what);
        if bit / 8 < SEGMENT_HEADER_LEN {
            assert_corruption(
                Log::open(store.path(), options.clone()),
                &path,
                &range,
                &what,
            );
            assert_corruption(Log::open_read_only(store.path()), &path, &range, &what);
        } else {
            let start = *range.start() as usize;
            let batch = decode_batch(&store.pristine(name)[start..], None).expect("pristine");
            let lost = batch.header.first_offset..batch.header.next_offset();
            let log = Log::open_read_only(store.path()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_read_past(&read_all(&log).expect("read"), &store.records, &lost, &what);
            drop(log);
            // A writer open (on a sample: each one creates files).
            if bit % 13 == 0 {
                let log = Log::open(store.path(), options.clone())
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let next = log.next_offset();
                assert!(
                    next >= store.records.len() as u64,
                    "{what}: next offset {next}"
                );
                let new = log
                    .append_blocking(Record::new(7, b"after the damage".to_vec()))
                    .expect("append after damage");
                assert_eq!(new, next, "{what}");
                let records = read_all(&log).expect("read");
                assert_eq!(records.last().map(|r| r.offset), Some(new), "{what}");
                assert_read_past(&records[..records.len() - 1], &store.records, &lost, &what);
                log.close().expect("close");
                drop(log);
                // Undo the writer's other changes (new files, DURABLE).
                store.reset_except(name);
            }
        }
        let now = fs::read(&path).expect("read");
        assert!(
            now == damaged,
            "{what}: an open changed the damaged segment"
        );
        store.unflip(name, bit);
    }
    store.assert_pristine();
}

/// Bits to flip in a file of `len` bytes: every bit of the first 200 bytes,
/// then every 7th bit.
fn sampled_bits(len: usize) -> impl Iterator<Item = usize> {
    let dense = (200 * 8).min(len * 8);
    (0..dense).chain((dense..len * 8).step_by(7))
}

/// Opens the log (as a writer when `writer`) and reads every record; the
/// records handed out must be the right ones, and the reading must end in
/// an error. Returns that error, or the open's.
fn open_and_read_all(
    store: &Store,
    options: &LogOptions,
    writer: bool,
    what: &str,
) -> enforcelog::Result<()> {
    let log = if writer {
        Log::open(store.path(), options.clone())?
    } else {
        Log::open_read_only(store.path())?
    };
    let mut reader = log.read_from(0)?;
    let mut read = 0;
    let outcome = loop {
        match reader.next() {
            Some(Ok(record)) => {
                assert_eq!(record, store.records[read], "{what}: wrong record");
                read += 1;
            }
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
    };
    assert!(
        reader.next().is_none(),
        "{what}: reader went on after an error"
    );
    outcome
}

/// Every sampled bit flip in a sealed segment is reported by `verify_dir`
/// as corruption. A flip in the segment header fails every open. Any other
/// fails no reader and stops no writer (a reader used to fail at the damage,
/// failing every other record's reader behind it, and without the index
/// file every writer open was refused): the log reads every record but
/// those of the damaged batch, whose offsets read as a hole, whether the
/// segment's index file is there (the reader meets the damage) or missing
/// (open's scan finds it; index files are not fsynced, so a crash right
/// after a roll leaves none). A writer appends on. Nothing changes the
/// damaged file.
#[test]
fn bit_flips_in_sealed_segments_are_reported_and_read_past_with_or_without_an_index() {
    let options = LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        index_interval_bytes: 512,
        durability: Durability::None,
        ..LogOptions::default()
    };
    let sizes: Vec<usize> = (0..72).map(|i| 1 + i % 4).collect();
    let store = Store::build(options.clone(), &sizes, 0..=120);
    let segments = store.names(".log");
    assert!(
        segments.len() >= 4,
        "want 3+ sealed segments, have {} segments (seed {})",
        segments.len(),
        store.seed
    );
    // The first three sealed segments: the first, and two that start at a
    // later offset.
    let mut flips = 0;
    for name in &segments[..3] {
        let path = store.file_path(name);
        let index = name.replace(".log", ".idx");
        assert!(
            store.files.contains_key(&index),
            "{index} (seed {})",
            store.seed
        );
        let starts = batch_starts(store.pristine(name));
        for bit in sampled_bits(store.pristine(name).len()) {
            let damaged = store.flip(name, bit);
            flips += 1;
            // Writer and read-only opens, with and without the index, take
            // turns; a writer appends on a sample (each one creates files).
            let writer = bit % 2 == 0 && (bit / 2) % 7 == 0;
            let without_index = (bit / 2) % 2 == 1;
            let what = format!(
                "{name}: bit {bit} (byte {}) flipped, writer {writer}, without index \
                 {without_index}, seed {}",
                bit / 8,
                store.seed
            );
            let range = damage_range(&starts, bit / 8);
            let report = verify_dir(store.path()).expect("verify_dir");
            assert_reports_corruption(&report, &path, &range, &what);
            if without_index {
                fs::remove_file(store.file_path(&index)).expect("remove the index");
            }
            if bit / 8 < SEGMENT_HEADER_LEN {
                let outcome = open_and_read_all(&store, &options, writer, &what);
                assert_corruption(outcome, &path, &range, &what);
            } else {
                let start = *range.start() as usize;
                let batch = decode_batch(&store.pristine(name)[start..], None).expect("pristine");
                let lost = batch.header.first_offset..batch.header.next_offset();
                let log = if writer {
                    Log::open(store.path(), options.clone())
                } else {
                    Log::open_read_only(store.path())
                };
                let log = log.unwrap_or_else(|e| panic!("{what}: open: {e}"));
                let records = read_all(&log).unwrap_or_else(|e| panic!("{what}: read: {e}"));
                assert_read_past(&records, &store.records, &lost, &what);
                // A reader that starts inside the damaged segment, after a
                // reader already replaced it by its rebuild.
                let from = log
                    .read_from(batch.header.first_offset)
                    .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                    .unwrap_or_else(|e| panic!("{what}: read from the damage: {e}"));
                assert_eq!(
                    from[..],
                    records[batch.header.first_offset as usize..],
                    "{what}"
                );
                if writer {
                    let next = store.records.len() as u64;
                    let new = log
                        .append_blocking(Record::new(7, b"after the damage".to_vec()))
                        .unwrap_or_else(|e| panic!("{what}: append after damage: {e}"));
                    assert_eq!(new, next, "{what}");
                }
                log.close().expect("close");
                drop(log);
            }
            assert!(
                fs::read(&path).expect("read") == damaged,
                "{what}: an open changed the damaged segment"
            );
            store.unflip(name, bit);
            if writer || without_index {
                store.reset_except(name);
            }
        }
    }
    assert!(flips > 1000, "only {flips} flips");
    store.assert_pristine();
}

#[test]
fn any_bit_flip_in_an_index_file_costs_only_a_rebuild() {
    let options = LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        index_interval_bytes: 1024,
        durability: Durability::None,
        ..LogOptions::default()
    };
    let sizes: Vec<usize> = (0..72).map(|i| 1 + i % 4).collect();
    let store = Store::build(options.clone(), &sizes, 0..=120);
    let indexes = store.names(".idx");
    assert!(
        indexes.len() >= 3,
        "want 3+ index files, have {} (seed {})",
        indexes.len(),
        store.seed
    );
    let middle = store.records.len() / 2;
    for name in &indexes[..3] {
        let path = store.file_path(name);
        for bit in 0..store.pristine(name).len() * 8 {
            let damaged = store.flip(name, bit);
            let what = format!("{name}: bit {bit} flipped, seed {}", store.seed);
            let report = verify_dir(store.path()).expect("verify_dir");
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.kind == ProblemKind::Index && p.path == path),
                "{what}: verify_dir reports no index problem: {report:?}"
            );
            assert!(!report.has_corruption(), "{what}: {report:?}");

            // Writer and read-only opens take turns: both must read every
            // record; only the writer may rewrite the index.
            let writer = bit % 2 == 0;
            let log = if writer {
                Log::open(store.path(), options.clone())
            } else {
                Log::open_read_only(store.path())
            };
            let log = log.unwrap_or_else(|e| panic!("{what}: open: {e}"));
            assert_eq!(read_all(&log).expect("read"), store.records, "{what}");
            let from_middle = log
                .read_from(middle as u64)
                .and_then(|r| r.collect::<Result<Vec<_>, _>>())
                .expect("read from the middle");
            assert_eq!(from_middle, store.records[middle..], "{what}");
            log.close().expect("close");
            drop(log);
            if writer {
                let after = verify_dir(store.path()).expect("verify_dir");
                assert!(after.is_clean(), "{what}: index not rebuilt: {after:?}");
                store.restore(name);
            } else {
                assert!(
                    fs::read(&path).expect("read") == damaged,
                    "{what}: a read-only open rewrote the index"
                );
                store.unflip(name, bit);
            }
        }
    }
    store.assert_pristine();
}
