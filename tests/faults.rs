//! Injected I/O faults and refused calls.
//!
//! Faults go through [`SimStorage::inject`]: ENOSPC and EIO on writes,
//! fsyncs, file creation (a segment roll), renames and directory fsyncs, and
//! on the first open (version file, first segment). Each time the caller gets
//! an error, the writer is poisoned for good (it never retries a failed
//! fsync: later appends fail with `Error::Poisoned` even once the fault is
//! gone), and nothing acknowledged before the fault is lost: after clearing
//! the faults, with or without a crash, the log reopens with every
//! acknowledged record, verifies clean and takes new appends.
//!
//! Refused calls (invalid options, an empty batch, a record or batch too
//! large, a foreign directory, another format version, a read-only or closed
//! handle) fail with their own error and change nothing on disk.

mod common;

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::options::{extremes, Expect};
use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{Durability, Error, Log, LogOptions, Record};

const DIR: &str = "/log";
const FIRST_SEGMENT: &str = "/log/00000000000000000000.log";
const FIRST_INDEX: &str = "/log/00000000000000000000.idx";
const VERSION_CONTENTS: &[u8] = b"enforcelog-log 2\n";
/// Appends tried after arming a fault before giving up on it firing.
const APPENDS_MAX: u64 = 500;

fn options(segment_max_bytes: u64, durability: Durability) -> LogOptions {
    LogOptions {
        segment_max_bytes,
        record_max_bytes: 1024,
        durability,
        index_interval_bytes: 512,
        ..LogOptions::default()
    }
}

fn open(storage: &SimStorage, options: &LogOptions) -> enforcelog::Result<Log> {
    Log::open_with_storage(Arc::new(storage.clone()), DIR, options.clone())
}

fn record(n: u64) -> Record {
    let mut payload = format!("record {n} ").into_bytes();
    payload.resize(100 + (n % 7) as usize * 10, b'a' + (n % 26) as u8);
    Record::new(i64::try_from(n).expect("small") * 1_000, payload)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build a tokio runtime")
}

/// Records the log acknowledged, by offset.
#[derive(Debug, Default)]
struct Acked {
    records: BTreeMap<u64, Record>,
    /// Records of failed appends: may or may not be in the log.
    maybe: Vec<Record>,
    next: u64,
}

impl Acked {
    /// Everything the log holds now, taken as acknowledged.
    fn read(log: &Log) -> Acked {
        let records: BTreeMap<u64, Record> = log
            .read_from(0)
            .expect("read_from(0)")
            .map(|r| {
                let r = r.expect("read a record");
                (r.offset, Record::new(r.timestamp_us, r.payload))
            })
            .collect();
        Acked {
            next: records.len() as u64,
            records,
            maybe: Vec::new(),
        }
    }

    /// After a failed fsync that followed every append (nothing synced
    /// since the open), under `Interval` or `None`: each acknowledged record
    /// may be gone, as after a crash. Only a prefix of them may come back.
    fn unsynced_lost(mut self) -> Acked {
        self.maybe
            .extend(std::mem::take(&mut self.records).into_values());
        self.next = 0;
        self
    }

    /// Makes append call number `call`: odd calls send a batch of three
    /// records, even ones a single record.
    fn append(&mut self, log: &Log, call: u64) -> enforcelog::Result<()> {
        let batch: Vec<Record> = if call % 2 == 1 {
            (0..3).map(|i| record(self.next * 10 + i)).collect()
        } else {
            vec![record(self.next * 10)]
        };
        let result = if batch.len() == 1 {
            log.append_blocking(batch[0].clone()).map(|o| o..o + 1)
        } else {
            log.append_batch_blocking(batch.clone())
        };
        match result {
            Ok(range) => {
                assert_eq!(range, self.next..self.next + batch.len() as u64);
                for (offset, r) in range.zip(batch) {
                    self.records.insert(offset, r);
                }
                self.next = self.records.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.maybe.extend(batch);
                Err(e)
            }
        }
    }

    /// Checks a reopened log: every acknowledged record at its offset; any
    /// record past them from a failed append; dense offsets.
    fn check(&self, log: &Log, what: &str) {
        let records: Vec<_> = log
            .read_from(0)
            .unwrap_or_else(|e| panic!("{what}: read_from(0): {e}"))
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{what}: reading: {e}"));
        assert_eq!(records.len() as u64, log.next_offset(), "{what}");
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "{what}: offsets not dense");
            match self.records.get(&r.offset) {
                Some(want) => {
                    assert_eq!(r.payload, want.payload, "{what}: payload at {}", r.offset);
                    assert_eq!(r.timestamp_us, want.timestamp_us, "{what}: at {}", r.offset);
                }
                None => assert!(
                    self.maybe.iter().any(|m| m.payload == r.payload),
                    "{what}: record {} was never appended",
                    r.offset
                ),
            }
        }
        assert!(
            log.next_offset() >= self.next,
            "{what}: acknowledged records lost: next_offset {} < {}",
            log.next_offset(),
            self.next
        );
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{what}: {:?}", report.problems);
    }
}

fn assert_injected(e: &Error, kind: FaultKind, what: &str) {
    let wanted = match kind {
        FaultKind::NoSpace => "injected ENOSPC",
        FaultKind::Io => "injected EIO",
    };
    let text = e.to_string();
    assert!(
        matches!(e, Error::Poisoned { .. } | Error::Io { .. }) && text.contains(wanted),
        "{what}: expected Poisoned or Io naming {wanted:?}, got {e:?}"
    );
}

fn assert_poisoned(result: enforcelog::Result<impl std::fmt::Debug>, kind: FaultKind, what: &str) {
    match result {
        Err(e @ Error::Poisoned { .. }) => assert_injected(&e, kind, what),
        other => panic!("{what}: expected Error::Poisoned, got {other:?}"),
    }
}

/// Reopens after the faults are cleared, optionally after a crash, and
/// checks that nothing acknowledged is lost and the log works again: new
/// appends get the next offsets, and once closed they survive a crash too.
fn reopen_and_check(storage: &SimStorage, options: &LogOptions, acked: &Acked, what: &str) {
    let log = open(storage, options).unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    acked.check(&log, what);
    let mut after = Acked::read(&log);
    for call in 0..2 {
        let next = after.next;
        after
            .append(&log, call)
            .unwrap_or_else(|e| panic!("{what}: append after reopen at {next}: {e}"));
    }
    log.close()
        .unwrap_or_else(|e| panic!("{what}: close after reopen: {e}"));
    drop(log);
    storage.crash(CrashMode::LoseUnsynced);
    let log = open(storage, options)
        .unwrap_or_else(|e| panic!("{what}: open after the post-recovery crash failed: {e}"));
    after.check(
        &log,
        &format!("{what}, after a crash following recovery and close"),
    );
}

/// Runs `test` on every case, and fails listing every case that failed.
fn for_each_case<C: std::fmt::Debug>(cases: impl IntoIterator<Item = C>, test: impl Fn(&C)) {
    let mut total = 0;
    let mut failures = Vec::new();
    for case in cases {
        total += 1;
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| test(&case))) {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("{case:?}: {message}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: FaultOp,
    kind: FaultKind,
    sticky: bool,
    crash: bool,
}

/// Appends until the armed fault fires; checks the writer stays poisoned
/// without ever syncing again, then reopens and checks.
fn poisoned_by(fault: Fault, segment_max_bytes: u64, warmup_calls: u64) -> Acked {
    let what = format!("{fault:?}");
    let storage = SimStorage::new(11);
    let options = options(segment_max_bytes, Durability::Fsync);
    let log = open(&storage, &options).expect("open");
    let mut acked = Acked::default();
    for call in 0..warmup_calls {
        acked.append(&log, call).expect("append before the fault");
    }
    storage.inject(fault.op, 0, fault.kind, fault.sticky);
    let failure = (warmup_calls..warmup_calls + APPENDS_MAX)
        .find_map(|call| acked.append(&log, call).err())
        .unwrap_or_else(|| panic!("{what}: the fault never fired"));
    assert_injected(&failure, fault.kind, &what);
    let syncs = storage.sync_count();

    // Poisoned for good, even for a fault that fired once and is gone.
    let clone = log.clone();
    assert_poisoned(log.append_blocking(record(1)), fault.kind, &what);
    assert_poisoned(
        clone.append_batch_blocking(vec![record(2)]),
        fault.kind,
        &what,
    );
    assert_poisoned(runtime().block_on(log.append(record(3))), fault.kind, &what);
    assert_poisoned(log.close(), fault.kind, &what);
    assert_eq!(
        storage.sync_count(),
        syncs,
        "{what}: a poisoned writer synced again"
    );
    assert_eq!(
        log.next_offset(),
        acked.next,
        "{what}: the failed append was published"
    );
    drop((log, clone));

    storage.clear_faults();
    if fault.crash {
        storage.crash(CrashMode::LoseUnsynced);
    }
    reopen_and_check(&storage, &options, &acked, &what);
    acked
}

fn every_fault(op: FaultOp) -> Vec<Fault> {
    let mut faults = Vec::new();
    for kind in [FaultKind::NoSpace, FaultKind::Io] {
        for sticky in [false, true] {
            for crash in [false, true] {
                faults.push(Fault {
                    op,
                    kind,
                    sticky,
                    crash,
                });
            }
        }
    }
    faults
}

#[test]
fn failed_write_poisons_the_writer_and_loses_nothing_acknowledged() {
    for_each_case(every_fault(FaultOp::Write), |&fault| {
        let acked = poisoned_by(fault, 1 << 20, 5);
        // The first write after arming fails.
        assert_eq!(acked.next, 9, "{fault:?}");
    });
}

#[test]
fn failed_fsync_poisons_the_writer_and_is_never_retried() {
    for_each_case(every_fault(FaultOp::SyncData), |&fault| {
        let acked = poisoned_by(fault, 1 << 20, 5);
        assert_eq!(acked.next, 9, "{fault:?}");
    });
}

#[test]
fn failed_segment_creation_at_a_roll_poisons_the_writer() {
    let faults = [FaultOp::Create, FaultOp::SyncDir]
        .into_iter()
        .flat_map(every_fault)
        .filter(|f| f.sticky);
    for_each_case(faults, |&fault| {
        let acked = poisoned_by(fault, 4096, 3);
        // The fault fired at the roll, after a segment's worth of appends.
        let bytes = acked
            .records
            .values()
            .map(|r| r.payload.len() + 24)
            .sum::<usize>();
        assert!(bytes > 3000, "{fault:?}: failed before a roll was due");
    });
}

#[test]
fn failed_index_write_at_a_roll_is_not_fatal_and_the_index_is_rebuilt() {
    let cases = [FaultOp::Rename, FaultOp::Create]
        .into_iter()
        .flat_map(|op| [(op, FaultKind::NoSpace), (op, FaultKind::Io)]);
    for_each_case(cases, |&(op, kind)| {
        let what = format!("{op:?} {kind:?}");
        let storage = SimStorage::new(5);
        let options = options(4096, Durability::Fsync);
        let log = open(&storage, &options).expect("open");
        let mut acked = Acked::default();
        // Fail only the first creation/rename after open: the roll's
        // index file is written before the next segment is created, and
        // it is derived data, so the writer carries on.
        storage.inject(op, 0, kind, false);
        for call in 0..60 {
            acked
                .append(&log, call)
                .unwrap_or_else(|e| panic!("{what}: append {call}: {e}"));
        }
        let indexes = index_files(&storage);
        assert!(
            indexes.len() >= 2,
            "{what}: the workload should roll several times: {indexes:?}"
        );
        assert!(
            !indexes.contains(&FIRST_INDEX.to_string()),
            "{what}: the failed index write left an index behind"
        );
        log.close().expect("close");
        drop(log);
        reopen_and_check(&storage, &options, &acked, &what);
        assert!(
            storage.read_file(FIRST_INDEX).is_some(),
            "{what}: the writer's reopen did not rebuild the index"
        );
    });
}

fn index_files(storage: &SimStorage) -> Vec<String> {
    storage
        .list(Path::new(DIR))
        .expect("list")
        .into_iter()
        .filter(|name| name.ends_with(".idx"))
        .map(|name| format!("{DIR}/{name}"))
        .collect()
}

#[test]
fn failed_first_open_leaves_a_directory_that_opens_later() {
    // Skip 0 hits the version file (for SyncDir: the store directory's
    // parent); skip 1 the first segment's creation.
    let cases = [
        (FaultOp::Create, 0),
        (FaultOp::Write, 0),
        (FaultOp::SyncData, 0),
        (FaultOp::Rename, 0),
        (FaultOp::SyncDir, 0),
        (FaultOp::Create, 1),
        (FaultOp::Write, 1),
        (FaultOp::SyncData, 1),
        (FaultOp::SyncDir, 1),
    ];
    let cases = cases.into_iter().flat_map(|(op, skip)| {
        [FaultKind::NoSpace, FaultKind::Io]
            .into_iter()
            .flat_map(move |kind| [(op, skip, kind, false), (op, skip, kind, true)])
    });
    for_each_case(cases, |&(op, skip, kind, crash)| {
        let what = format!("{op:?} skip {skip} {kind:?} crash {crash}");
        let storage = SimStorage::new(3);
        let options = options(1 << 20, Durability::Fsync);
        storage.inject(op, skip, kind, false);
        match open(&storage, &options) {
            Err(e @ Error::Io { .. }) => assert_injected(&e, kind, &what),
            other => panic!("{what}: expected Error::Io, got {other:?}"),
        }
        storage.clear_faults();
        if crash {
            storage.crash(CrashMode::LoseUnsynced);
        }
        let log = open(&storage, &options)
            .unwrap_or_else(|e| panic!("{what}: open after the fault: {e}"));
        assert_eq!(log.next_offset(), 0, "{what}");
        assert_eq!(
            storage.read_file("/log/VERSION").as_deref(),
            Some(VERSION_CONTENTS),
            "{what}"
        );
        reopen_after(log, &storage, &options, &what);
    });
}

/// Appends to a fresh log, closes it, and checks a reopen after a crash.
fn reopen_after(log: Log, storage: &SimStorage, options: &LogOptions, what: &str) {
    let mut acked = Acked::default();
    for call in 0..4 {
        acked.append(&log, call).expect("append");
    }
    assert!(log.verify().expect("verify").is_clean(), "{what}");
    drop(log);
    storage.crash(CrashMode::LoseUnsynced);
    reopen_and_check(storage, options, &acked, what);
}

#[test]
fn failed_fsync_at_close_is_reported_and_poisons() {
    for kind in [FaultKind::NoSpace, FaultKind::Io] {
        let what = format!("{kind:?}");
        let storage = SimStorage::new(8);
        let options = options(1 << 20, Durability::None);
        let log = open(&storage, &options).expect("open");
        let mut acked = Acked::default();
        for call in 0..6 {
            acked.append(&log, call).expect("append");
        }
        storage.inject(FaultOp::SyncData, 0, kind, false);
        match log.close() {
            Err(e) => assert_injected(&e, kind, &what),
            Ok(()) => panic!("{what}: close succeeded though its fsync failed"),
        }
        // Not `Closed`: the caller must learn that the data is not durable.
        assert_poisoned(log.append_blocking(record(1)), kind, &what);
        drop(log);
        // The failed fsync may have dropped every page written since the
        // open (Durability::None promised nothing before it): whatever is
        // read back must be a prefix, and what comes after must survive.
        let acked = acked.unsynced_lost();
        reopen_and_check(&storage, &options, &acked, &what);
    }
}

#[test]
fn failed_interval_fsync_poisons_the_writer() {
    for kind in [FaultKind::NoSpace, FaultKind::Io] {
        let what = format!("{kind:?}");
        let storage = SimStorage::new(9);
        let options = options(1 << 20, Durability::Interval(Duration::from_micros(200)));
        let log = open(&storage, &options).expect("open");
        let mut acked = Acked::default();
        storage.inject(FaultOp::SyncData, 0, kind, false);
        // The interval fsync comes due while appends keep coming; the first
        // append after it failed is refused.
        let failure = (0..100_000)
            .find_map(|call| acked.append(&log, call).err())
            .unwrap_or_else(|| panic!("{what}: the interval fsync never ran"));
        assert_injected(&failure, kind, &what);
        assert_poisoned(log.append_blocking(record(1)), kind, &what);
        drop(log);
        // Nothing was ever synced: the failed fsync may have dropped it all.
        let acked = acked.unsynced_lost();
        reopen_and_check(&storage, &options, &acked, &what);
    }
}

// ---------------------------------------------------------------------------
// Refused calls change nothing.

/// Every file of `dir` (recursively) with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let name = path
                .strip_prefix(dir)
                .expect("below dir")
                .display()
                .to_string();
            if path.is_dir() {
                files.insert(format!("{name}/"), Vec::new());
                stack.push(path);
            } else {
                files.insert(name, std::fs::read(&path).expect("read file"));
            }
        }
    }
    files
}

fn real_options() -> LogOptions {
    LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        durability: Durability::Fsync,
        ..LogOptions::default()
    }
}

#[test]
fn refused_appends_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), real_options()).expect("open");
    let mut acked = Acked::default();
    for call in 0..40 {
        acked.append(&log, call).expect("append");
    }
    assert!(
        dir.path().join("00000000000000000000.idx").exists(),
        "the setup should have rolled a segment"
    );
    let before = snapshot(dir.path());
    let metrics = log.metrics();
    let next = log.next_offset();
    let rt = runtime();

    assert!(matches!(
        log.append_batch_blocking(Vec::new()),
        Err(Error::EmptyBatch)
    ));
    assert!(matches!(
        rt.block_on(log.append_batch(Vec::new())),
        Err(Error::EmptyBatch)
    ));
    let too_large = Record::new(1, vec![7u8; 1025]);
    match log.append_blocking(too_large.clone()) {
        Err(Error::RecordTooLarge {
            size_bytes: 1025,
            max_bytes: 1024,
        }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // One bad record refuses the whole batch, whatever its position.
    match rt.block_on(log.append_batch(vec![record(1), too_large, record(2)])) {
        Err(Error::RecordTooLarge { .. }) => {}
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    // Each record fits, the batch does not fit in an empty segment.
    let big: Vec<Record> = (0..5).map(|i| Record::new(i, vec![1u8; 1000])).collect();
    match log.append_batch_blocking(big) {
        Err(Error::BatchTooLarge {
            size_bytes,
            max_bytes,
        }) => {
            assert!(
                size_bytes > max_bytes && max_bytes < 4096,
                "{size_bytes} {max_bytes}"
            );
        }
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }

    assert_eq!(
        snapshot(dir.path()),
        before,
        "a refused call changed the disk"
    );
    assert_eq!(log.metrics(), metrics);
    assert_eq!(log.next_offset(), next);
    // Nothing was consumed: the next append gets the next offset.
    assert_eq!(log.append_blocking(record(9)).expect("append"), next);
}

/// Log options out of range: values just past a limit, and every log
/// option the extremes table (`common::options`) says is refused.
fn invalid_options() -> Vec<(&'static str, LogOptions)> {
    let extremes = extremes()
        .into_iter()
        .filter(|e| e.of_log && e.expect == Expect::Refused)
        .map(|e| (e.field, e.options.log));
    let mut invalid = just_past_a_limit();
    invalid.extend(extremes);
    invalid
}

fn just_past_a_limit() -> Vec<(&'static str, LogOptions)> {
    let base = real_options();
    vec![
        (
            "segment_max_bytes",
            LogOptions {
                segment_max_bytes: 4095,
                ..base.clone()
            },
        ),
        (
            "segment_max_bytes",
            LogOptions {
                segment_max_bytes: u64::from(u32::MAX) + 1,
                ..base.clone()
            },
        ),
        (
            "record_max_bytes",
            LogOptions {
                record_max_bytes: 0,
                ..base.clone()
            },
        ),
        (
            "record_max_bytes",
            LogOptions {
                record_max_bytes: 4096,
                ..base.clone()
            },
        ),
        (
            "queue_capacity",
            LogOptions {
                queue_capacity: 0,
                ..base.clone()
            },
        ),
        (
            "index_interval_bytes",
            LogOptions {
                index_interval_bytes: 0,
                ..base.clone()
            },
        ),
        (
            "durability",
            LogOptions {
                durability: Durability::Interval(Duration::ZERO),
                ..base
            },
        ),
    ]
}

#[test]
fn invalid_options_are_refused_and_create_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("existing");
    let log = Log::open(&existing, real_options()).expect("open");
    log.append_blocking(record(0)).expect("append");
    log.close().expect("close");
    drop(log);
    let before = snapshot(dir.path());
    for (name, options) in invalid_options() {
        for path in [dir.path().join("fresh"), existing.clone()] {
            match Log::open(&path, options.clone()) {
                Err(Error::InvalidOptions { name: got, .. }) => {
                    assert_eq!(got, name, "{options:?}");
                }
                other => panic!("{options:?}: expected InvalidOptions, got {other:?}"),
            }
        }
        assert_eq!(snapshot(dir.path()), before, "{options:?} changed the disk");
    }
    // The same on the simulated storage: nothing is created.
    let storage = SimStorage::new(1);
    for (_, options) in invalid_options() {
        assert!(matches!(
            open(&storage, &options),
            Err(Error::InvalidOptions { .. })
        ));
        assert_eq!(storage.read_file("/log/VERSION"), None);
    }
}

#[test]
fn a_foreign_directory_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("notes.txt"), b"not a log").expect("write");
    let before = snapshot(dir.path());
    assert!(matches!(
        Log::open(dir.path(), real_options()),
        Err(Error::NotALogDirectory { .. })
    ));
    assert!(matches!(
        Log::open_read_only(dir.path()),
        Err(Error::NotALogDirectory { .. })
    ));
    assert_eq!(
        snapshot(dir.path()),
        before,
        "the refused open changed the directory"
    );

    // Segments without a version file are not adopted either.
    let orphan = tempfile::tempdir().expect("tempdir");
    std::fs::write(orphan.path().join("00000000000000000000.log"), b"x").expect("write");
    let before = snapshot(orphan.path());
    assert!(matches!(
        Log::open(orphan.path(), real_options()),
        Err(Error::NotALogDirectory { .. })
    ));
    assert_eq!(snapshot(orphan.path()), before);

    // A read-only open never creates the directory.
    let missing = dir.path().join("missing");
    assert!(matches!(
        Log::open_read_only(&missing),
        Err(Error::NotALogDirectory { .. })
    ));
    assert!(!missing.exists());
}

#[test]
fn another_format_version_is_refused_untouched() {
    for contents in [
        &b"enforcelog-log 3\n"[..],
        b"enforcelog-log 0\n",
        b"enforcelog-log 2",
        b"enforcelog-log 1",
        b"garbage",
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("VERSION"), contents).expect("write");
        let before = snapshot(dir.path());
        match Log::open(dir.path(), real_options()) {
            Err(Error::UnsupportedVersion {
                found, supported, ..
            }) => {
                assert_eq!(supported, 2);
                assert_eq!(found.as_bytes(), contents.trim_ascii());
            }
            other => panic!("{contents:?}: expected UnsupportedVersion, got {other:?}"),
        }
        assert!(matches!(
            Log::open_read_only(dir.path()),
            Err(Error::UnsupportedVersion { .. })
        ));
        assert_eq!(snapshot(dir.path()), before, "{contents:?}");
    }
}

#[test]
fn appends_through_a_read_only_handle_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), real_options()).expect("open");
    log.append_blocking(record(0)).expect("append");
    log.close().expect("close");
    let before = snapshot(dir.path());
    let ro = Log::open_read_only(dir.path()).expect("open read-only");
    assert!(matches!(
        ro.append_blocking(record(1)),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        ro.append_batch_blocking(vec![record(1)]),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(
        runtime().block_on(ro.append(record(1))),
        Err(Error::ReadOnly)
    ));
    assert_eq!(ro.next_offset(), 1);
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn appends_after_close_are_refused() {
    let storage = SimStorage::new(4);
    let options = options(4096, Durability::Fsync);
    let log = open(&storage, &options).expect("open");
    let clone = log.clone();
    log.append_blocking(record(0)).expect("append");
    log.close().expect("close");
    assert!(matches!(log.append_blocking(record(1)), Err(Error::Closed)));
    assert!(matches!(
        clone.append_batch_blocking(vec![record(1)]),
        Err(Error::Closed)
    ));
    assert!(matches!(
        runtime().block_on(clone.append(record(1))),
        Err(Error::Closed)
    ));
    log.close().expect("a second close is harmless");
    // Reads keep working, and the lock is free for the next writer.
    assert_eq!(log.read_from(0).expect("read").count(), 1);
    let next = open(&storage, &options).expect("open after close");
    assert_eq!(next.append_blocking(record(2)).expect("append"), 1);
}

/// The first open created the segment file and fsynced it, but fsyncing the
/// directory failed, so the file's name is not durable. The failed creation
/// removes the file (its header may be one a failed fsync dropped); a writer
/// that reopens without a machine crash creates it again, and must make the
/// name durable before acknowledging anything, or a later power loss drops
/// the whole segment with every acknowledged record in it.
#[test]
fn segment_adopted_after_a_failed_directory_fsync_survives_a_crash() {
    let storage = SimStorage::new(12);
    let options = options(1 << 20, Durability::Fsync);
    // Directory fsyncs at first open: the store directory's parent's, the
    // version file's, the store id file's, then the segment's.
    storage.inject(FaultOp::SyncDir, 3, FaultKind::Io, false);
    assert!(matches!(open(&storage, &options), Err(Error::Io { .. })));
    assert!(
        storage.read_file(FIRST_SEGMENT).is_none(),
        "a segment whose creation failed is taken away, not adopted"
    );
    let log = open(&storage, &options).expect("reopen without a crash");
    let offset = log
        .append_blocking(Record::new(1, b"acknowledged".to_vec()))
        .expect("append");
    assert_eq!(offset, 0);
    log.close().expect("close");
    drop(log);
    storage.crash(CrashMode::LoseUnsynced);
    let log = open(&storage, &options).expect("open after the crash");
    assert_eq!(
        log.next_offset(),
        1,
        "a record acknowledged under Durability::Fsync was lost: the segment's directory \
         entry was never fsynced"
    );
}
