//! A fault model as unkind as Linux, and what the log must do under it.
//!
//! On Linux a failed `fsync` may have thrown its dirty pages away: they stay
//! readable from the page cache, a later `fsync` reports success without
//! writing them, and a power cut loses them. And a new directory's name is
//! durable only once its parent directory is synced. `SimStorage` models
//! both; these tests pin the model itself, then the defects it found:
//!
//! - a writer poisoned by a failed fsync left the failed group in its file;
//!   the next open (in this process or another, no crash in between) read
//!   it back as committed, and records appended after it sat behind a hole
//!   once the power went;
//! - under `Durability::Interval`, the supervisor's reopen took records that
//!   were written but never synced as acknowledged, with the same result;
//! - a new store's directory was never made durable in its parent.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::storage::{OpenMode, Storage};
use enforcelog::{Action, Durability, Error, Event, Log, LogOptions, Record, Store, StoreOptions};

/// A payload that looks like a real one: mostly zeros, as MessagePack of a
/// histogram of zero counts is.
fn zero_heavy(n: u64) -> Vec<u8> {
    let mut payload = vec![0u8; 300];
    payload[..8].copy_from_slice(&n.to_le_bytes());
    payload
}

fn payloads(log: &Log) -> Vec<Vec<u8>> {
    log.read_from(0)
        .expect("read_from(0)")
        .map(|r| r.expect("read a record").payload)
        .collect()
}

#[test]
fn sim_a_failed_fsync_drops_its_pages_for_good() {
    let storage = SimStorage::new(1);
    storage.create_dir_all(Path::new("/d")).expect("mkdir");
    storage.sync_dir(Path::new("/")).expect("sync /");
    let file = storage
        .open(Path::new("/d/f"), OpenMode::CreateNew)
        .expect("create");
    storage.sync_dir(Path::new("/d")).expect("sync /d");
    file.write_all_at(b"kept", 0).expect("write");
    file.sync_data().expect("sync");
    file.write_all_at(b"lost", 4).expect("write");
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    assert!(file.sync_data().is_err(), "the injected fsync fault fires");
    // Still readable from the page cache...
    assert_eq!(storage.read_file("/d/f").as_deref(), Some(&b"keptlost"[..]));
    // ...and a later fsync succeeds without writing it.
    file.write_all_at(b"more", 8).expect("write");
    file.sync_data().expect("a later fsync succeeds");
    storage.crash(CrashMode::LoseUnsynced);
    assert_eq!(
        storage.read_file("/d/f").as_deref(),
        Some(&b"kept\0\0\0\0more"[..]),
        "the dropped pages read as a hole after the power cut"
    );
}

#[test]
fn sim_a_new_directory_needs_its_parent_synced() {
    let storage = SimStorage::new(2);
    storage.create_dir_all(Path::new("/a/b")).expect("mkdir");
    let file = storage
        .open(Path::new("/a/b/f"), OpenMode::CreateNew)
        .expect("create");
    file.write_all_at(b"data", 0).expect("write");
    file.sync_data().expect("sync");
    storage.sync_dir(Path::new("/a/b")).expect("sync /a/b");
    storage.crash(CrashMode::LoseUnsynced);
    assert!(
        !storage.exists(Path::new("/a")).expect("exists"),
        "/a was never synced into /: it and everything below it are gone"
    );

    storage.create_dir_all(Path::new("/a/b")).expect("mkdir");
    storage.sync_dir(Path::new("/")).expect("sync /");
    storage.sync_dir(Path::new("/a")).expect("sync /a");
    storage.crash(CrashMode::LoseUnsynced);
    assert!(storage.exists(Path::new("/a/b")).expect("exists"));
}

#[test]
fn a_new_store_directory_survives_a_power_cut() {
    let storage = SimStorage::new(3);
    let log = Log::open_with_storage(
        Arc::new(storage.clone()),
        "/srv/data/store",
        LogOptions::default(),
    )
    .expect("open");
    log.append_blocking(Record::new(1, zero_heavy(1)))
        .expect("acknowledged");
    storage.crash(CrashMode::LoseUnsynced);
    let log = Log::open_with_storage(
        Arc::new(storage.clone()),
        "/srv/data/store",
        LogOptions::default(),
    )
    .expect("reopen");
    assert_eq!(payloads(&log), vec![zero_heavy(1)]);
}

/// The failed group must not come back in the next open: it was never
/// acknowledged, and it is not on disk.
#[test]
fn failed_fsync_then_reopen_without_a_crash_keeps_later_records_reachable() {
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::Reorder,
        CrashMode::TearLastWrite,
        CrashMode::TornSectors,
    ] {
        let storage = SimStorage::new(4);
        let open = || {
            Log::open_with_storage(Arc::new(storage.clone()), "/log", LogOptions::default())
                .expect("open")
        };
        let log = open();
        let mut acked = Vec::new();
        for n in 0..3 {
            log.append_blocking(Record::new(1, zero_heavy(n)))
                .expect("acknowledged");
            acked.push(zero_heavy(n));
        }
        storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
        let failed = log.append_blocking(Record::new(1, zero_heavy(100)));
        assert!(matches!(failed, Err(Error::Poisoned { .. })), "{failed:?}");
        drop(log);

        // The process exits; another opens the store. No crash yet.
        let log = open();
        assert_eq!(
            log.next_offset(),
            3,
            "{mode:?}: the failed record is not read back"
        );
        for n in 3..6 {
            log.append_blocking(Record::new(1, zero_heavy(n)))
                .expect("acknowledged");
            acked.push(zero_heavy(n));
        }
        drop(log);
        storage.crash(mode);

        let log = open();
        assert_eq!(payloads(&log), acked, "{mode:?}: every acknowledged record");
        assert!(log.verify().expect("verify").is_clean(), "{mode:?}");
    }
}

fn event(n: u64) -> Event {
    Event::new(format!("tenant-{}", n % 3), "rule", Action::Blocked).with_run_id(format!("run-{n}"))
}

fn count(store: &Store) -> u64 {
    store.entries(0).expect("entries").count() as u64
}

/// Under `Interval`, records written but never synced are not acknowledged
/// durably; after a failed fsync the supervisor's reopen must not take them
/// as committed, or everything recorded after them sits behind a hole.
#[test]
fn interval_supervisor_does_not_keep_records_a_failed_fsync_dropped() {
    let storage = SimStorage::new(5);
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::Interval(Duration::from_millis(20)),
            ..LogOptions::default()
        },
        recovery_interval: Duration::from_millis(10),
        ..StoreOptions::default()
    };
    let open = || {
        Store::builder("/store")
            .storage(Arc::new(storage.clone()))
            .options(options.clone())
            .open()
            .expect("open the store")
    };
    let store = open();
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    for n in 0..2 {
        store
            .record_blocking(event(n))
            .expect("acknowledged after the write");
    }
    // The interval timer's fsync fails; the supervisor reopens the log.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = 0;
    while later < 3 {
        assert!(Instant::now() < deadline, "the store never recovered");
        if store.record_blocking(event(10 + later)).is_ok() {
            later += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let recorded = count(&store);
    store.close().expect("close syncs");
    drop(store);
    storage.crash(CrashMode::LoseUnsynced);

    let store = open();
    assert_eq!(
        count(&store),
        recorded,
        "every record acknowledged after the reopen"
    );
    assert!(
        recorded >= 3,
        "the three records after the recovery are there: {recorded}"
    );
    assert!(store.log().verify().expect("verify").is_clean());
}

/// A read-only reader (another process: `ship`, `tail`, a CLI read) sees
/// the page cache. It must stop at the end the writer made durable, or it
/// hands out a record that a failed fsync or a power cut then takes away,
/// whose offset (and `store_id:offset` id) the next record reuses.
#[test]
fn read_only_readers_never_see_what_a_failed_fsync_dropped() {
    let storage = SimStorage::new(6);
    let open = || {
        Log::open_with_storage(Arc::new(storage.clone()), "/log", LogOptions::default())
            .expect("open")
    };
    let writer = open();
    for n in 0..3 {
        writer
            .append_blocking(Record::new(1, zero_heavy(n)))
            .expect("acknowledged");
    }
    let reader =
        Log::open_read_only_with_storage(Arc::new(storage.clone()), "/log").expect("read-only");
    assert_eq!(reader.next_offset(), 3);

    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    let failed = writer.append_blocking(Record::new(1, zero_heavy(100)));
    assert!(matches!(failed, Err(Error::Poisoned { .. })), "{failed:?}");
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), 3, "the failed record is not shown");
    drop(writer);

    let writer = open();
    writer
        .append_blocking(Record::new(1, zero_heavy(3)))
        .expect("acknowledged");
    reader.refresh().expect("refresh");
    let seen = payloads(&reader);
    assert_eq!(seen.len(), 4);
    assert_eq!(
        seen[3],
        zero_heavy(3),
        "offset 3 is the record acknowledged there"
    );
}

/// Under `Interval`, a record is acknowledged once written; readers in
/// other processes see it once it is synced. Here on the real file system.
#[test]
fn read_only_readers_see_interval_records_once_synced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = LogOptions {
        durability: Durability::Interval(Duration::from_secs(3600)),
        ..LogOptions::default()
    };
    let writer = Log::open(dir.path(), options.clone()).expect("open");
    for n in 0..5 {
        writer
            .append_blocking(Record::new(1, zero_heavy(n)))
            .expect("acknowledged after the write");
    }
    assert_eq!(
        writer.next_offset(),
        5,
        "the writer's own handle reads its writes"
    );
    let reader = Log::open_read_only(dir.path()).expect("read-only");
    assert_eq!(reader.next_offset(), 0, "nothing is synced yet");
    writer.close().expect("close syncs");
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), 5);

    // Rolls publish the new segment's start: records in sealed segments are
    // durable, those written since the roll are not shown until synced.
    let small = LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        ..options
    };
    let writer = Log::open(dir.path(), small).expect("reopen");
    for n in 5..40 {
        writer
            .append_blocking(Record::new(1, zero_heavy(n)))
            .expect("acknowledged");
    }
    reader.refresh().expect("refresh");
    let shown = reader.next_offset();
    assert!(shown > 5 && shown < 40, "sealed segments only: {shown}");
    assert_eq!(payloads(&reader).len() as u64, shown);
    writer.close().expect("close");
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), 40);
}

/// The campaign for this class: at seeded points, a write or an fsync fails
/// (under `Fsync` or `Interval`, across segment rolls); the process exits
/// and another opens the store, with or without a power cut in between;
/// it appends and closes; then the power goes, in each crash mode. After
/// the reopen: every record acknowledged under `Fsync`, and every record of
/// the last session (whose close synced it), is at its offset; anything
/// else present came from a failed append or from an `Interval` session's
/// unsynced tail; offsets are dense and the log verifies clean.
///
/// `ENFORCELOG_SEED` replays a point first; `ENFORCELOG_CRASH_SCALE=n` runs
/// n times as many.
#[test]
fn failed_io_then_reopen_then_power_cut_keeps_what_was_acknowledged() {
    let base = common::seed_or(0x00f5_f00d);
    let points = 300 * common::env_or("ENFORCELOG_CRASH_SCALE", 1u64);
    for i in 0..points {
        let seed = base.wrapping_add(i);
        if let Err(e) = failed_io_point(seed) {
            panic!(
                "seed {seed}: {e}\nreplay: ENFORCELOG_SEED={seed} cargo test --test failed_fsync"
            );
        }
    }
}

/// One append of 1–3 records with zero-heavy payloads carrying `id`s.
fn append_some(
    log: &Log,
    rng: &mut common::Rng,
    next_id: &mut u64,
) -> (Vec<Vec<u8>>, enforcelog::Result<std::ops::Range<u64>>) {
    let batch: Vec<Vec<u8>> = (0..rng.range(1..4))
        .map(|_| {
            *next_id += 1;
            let mut payload = zero_heavy(*next_id);
            payload.truncate(rng.in_range(16..=300));
            payload
        })
        .collect();
    let records = batch.iter().map(|p| Record::new(1, p.clone())).collect();
    let result = log.append_batch_blocking(records);
    (batch, result)
}

fn failed_io_point(seed: u64) -> Result<(), String> {
    let mut rng = common::Rng::new(seed);
    let storage = SimStorage::new(seed);
    let fsync = rng.chance(60);
    let options = LogOptions {
        segment_max_bytes: rng.range(4096..16_384),
        record_max_bytes: 1024,
        durability: if fsync {
            Durability::Fsync
        } else {
            Durability::Interval(Duration::from_micros(rng.range(1..2_000)))
        },
        index_interval_bytes: 512,
        ..LogOptions::default()
    };
    let open = || {
        Log::open_with_storage(Arc::new(storage.clone()), "/log", options.clone())
            .map_err(|e| format!("open: {e}"))
    };
    // Acknowledged records by offset; `sure` when they must survive.
    let mut acked = std::collections::BTreeMap::<u64, (Vec<u8>, bool)>::new();
    let mut failed: Vec<Vec<u8>> = Vec::new();
    let mut next_id = 0;

    let log = open()?;
    for _ in 0..rng.range(2..30) {
        let (batch, result) = append_some(&log, &mut rng, &mut next_id);
        let range = result.map_err(|e| format!("append before the fault: {e}"))?;
        for (offset, payload) in range.zip(batch) {
            acked.insert(offset, (payload, fsync));
        }
    }
    let op = if rng.chance(70) {
        FaultOp::SyncData
    } else {
        FaultOp::Write
    };
    let kind = if rng.chance(50) {
        FaultKind::Io
    } else {
        FaultKind::NoSpace
    };
    storage.inject(op, rng.below(4), kind, false);
    for _ in 0..200 {
        let (batch, result) = append_some(&log, &mut rng, &mut next_id);
        match result {
            Ok(range) => {
                for (offset, payload) in range.zip(batch) {
                    acked.insert(offset, (payload, fsync));
                }
            }
            Err(_) => {
                failed.extend(batch);
                break;
            }
        }
    }
    drop(log); // the process exits
    storage.clear_faults();
    if rng.chance(30) {
        storage.crash(*rng.pick(&MODES));
    }

    let log = open()?;
    let resumed = log.next_offset();
    // Whatever the first session left may go (Interval, failed fsync): only
    // offsets below the resumed end can still hold its records.
    acked.retain(|&offset, (_, sure)| offset < resumed || *sure);
    for _ in 0..rng.range(1..20) {
        let (batch, result) = append_some(&log, &mut rng, &mut next_id);
        let range = result.map_err(|e| format!("append after the reopen: {e}"))?;
        for (offset, payload) in range.zip(batch) {
            if let Some((old, true)) = acked.insert(offset, (payload, true)) {
                return Err(format!(
                    "offset {offset} of an acknowledged record {old:?} was reused"
                ));
            }
        }
    }
    log.close().map_err(|e| format!("close: {e}"))?;
    drop(log);
    let mode = *rng.pick(&MODES);
    storage.crash(mode);

    let log = open().map_err(|e| format!("after {mode:?}: {e}"))?;
    let present: Vec<Vec<u8>> = log
        .read_from(0)
        .map_err(|e| e.to_string())?
        .map(|r| r.map(|r| r.payload).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    for (&offset, (payload, sure)) in &acked {
        match present.get(offset as usize) {
            Some(p) if p == payload => {}
            _ if !sure => {}
            other => {
                return Err(format!(
                    "after {mode:?}: acknowledged record at {offset} is {:?}",
                    other.map(|p| &p[..8.min(p.len())])
                ))
            }
        }
    }
    for (offset, p) in present.iter().enumerate() {
        let known = acked.get(&(offset as u64)).is_some_and(|(a, _)| a == p)
            || failed.contains(p)
            || !fsync;
        if !known {
            return Err(format!(
                "after {mode:?}: record at {offset} was never acknowledged"
            ));
        }
    }
    let report = log.verify().map_err(|e| e.to_string())?;
    if !report.is_clean() {
        return Err(format!("after {mode:?}: {:?}", report.problems));
    }
    Ok(())
}

const MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::TearLastWrite,
    CrashMode::Reorder,
    CrashMode::TornSectors,
];
