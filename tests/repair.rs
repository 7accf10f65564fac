//! `repair`: keeps every batch that verifies, before and after the damage;
//! replaces each damaged range by a hole that readers, `verify` and `stats`
//! report with its size; never deletes (the damaged bytes are durable in
//! the quarantine before anything changes, whatever point a power cut hits);
//! never shrinks a segment a reader may have mapped; refuses while locked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use enforcelog::log::{repair, repair_with, RepairAction, RepairOptions, RepairReport};
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{Durability, Entry, Error, Log, LogOptions, Record};

const DIR: &str = "/log";

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        index_interval_bytes: 128,
        ..LogOptions::default()
    }
}

/// A 100-byte payload: a short tag, then mostly zeros, as a details map of
/// histogram counters is once encoded.
fn payload(b: u8, i: u8) -> Vec<u8> {
    let mut p = vec![0u8; 100];
    p[0] = b;
    p[1] = i;
    p[50] = b ^ i;
    p
}

/// 120 records of 100 bytes in batches of 3: several segments.
fn build(storage: &SimStorage) -> Vec<Vec<u8>> {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    let mut all = Vec::new();
    for b in 0..40u8 {
        let batch: Vec<Record> = (0..3u8)
            .map(|i| Record::new(i64::from(b), payload(b, i)))
            .collect();
        all.extend(batch.iter().map(|r| r.payload.clone()));
        log.append_batch_blocking(batch).unwrap();
    }
    log.close().unwrap();
    all
}

fn segments(storage: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// Every record, after checking the log verifies clean.
fn read_all(storage: &SimStorage) -> Vec<Record> {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    log.read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            Record::new(r.timestamp_us, r.payload)
        })
        .collect()
}

fn is_hole(record: &Record, offset: u64) -> bool {
    matches!(
        enforcelog::payload::decode(offset, record.timestamp_us, &record.payload),
        Ok(Entry::Lost(_))
    )
}

fn flip(storage: &SimStorage, path: &str, at: usize) -> Vec<u8> {
    let mut bytes = storage.read_file(path).unwrap();
    bytes[at] ^= 0x10;
    storage.write_file(path, &bytes);
    bytes
}

fn rewritten(report: &RepairReport) -> Vec<&enforcelog::log::DamagedRange> {
    report
        .actions
        .iter()
        .flat_map(|a| match a {
            RepairAction::Rewritten { damaged, .. } => damaged.iter().collect(),
            RepairAction::HeaderRewritten { .. } | RepairAction::Moved { .. } => Vec::new(),
        })
        .collect()
}

/// The issue's scenario, scaled down and widened to every 7th byte of the
/// first sealed segment: one changed byte used to cost the rest of that
/// segment and every later segment.
#[test]
fn repair_of_one_bad_byte_in_a_sealed_segment_keeps_every_batch_that_verifies() {
    let len = {
        let storage = SimStorage::new(3);
        build(&storage);
        storage
            .read_file(format!("{DIR}/{}", segments(&storage)[0]))
            .unwrap()
            .len()
    };
    for at in (32..len).step_by(7) {
        let storage = SimStorage::new(3);
        let written = build(&storage);
        let names = segments(&storage);
        assert!(names.len() >= 3, "{names:?}");
        let victim = format!("{DIR}/{}", names[0]);
        let damaged = flip(&storage, &victim, at);

        let report = repair(&storage, Path::new(DIR)).unwrap();
        assert!(
            report
                .actions
                .iter()
                .all(|a| matches!(a, RepairAction::Rewritten { .. })),
            "byte {at}: only the damaged segment changes: {report:?}"
        );
        // One batch of 3 records was damaged: exactly its offsets are lost.
        assert_eq!(report.lost, 3, "byte {at}: {report:?}");
        assert_eq!(report.next_offset, written.len() as u64);
        let ranges = rewritten(&report);
        assert_eq!(ranges.len(), 1, "byte {at}: {report:?}");
        let range = ranges[0];
        let saved = storage.read_file(&range.saved_as).unwrap();
        let start = range.position as usize;
        assert_eq!(&saved[..], &damaged[start..start + range.bytes as usize]);
        assert!((start..start + saved.len()).contains(&at));

        let kept = read_all(&storage);
        assert_eq!(kept.len(), written.len(), "byte {at}: offsets stay dense");
        let mut holes = 0;
        for (offset, record) in kept.iter().enumerate() {
            if is_hole(record, offset as u64) {
                holes += 1;
                assert!((range.first_offset..range.first_offset + 3).contains(&(offset as u64)));
            } else {
                assert_eq!(
                    record.payload, written[offset],
                    "byte {at}, offset {offset}"
                );
            }
        }
        assert_eq!(holes, 3, "byte {at}");
        let log = Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR).unwrap();
        let verified = log.verify().unwrap();
        assert!(verified.is_clean() && verified.lost == 3, "{verified:?}");
        drop(log);

        // A second repair has nothing to do: a hole is not damage.
        let again = repair(&storage, Path::new(DIR)).unwrap();
        assert!(
            again.actions.is_empty() && again.quarantine.is_none(),
            "{again:?}"
        );
    }
}

/// Damage that runs to the end of a sealed segment: the next segment's
/// base offset gives the hole's size.
#[test]
fn damage_at_the_end_of_a_sealed_segment_is_sized_by_the_next_segment() {
    let storage = SimStorage::new(6);
    let written = build(&storage);
    let names = segments(&storage);
    let victim = format!("{DIR}/{}", names[1]);
    let len = storage.read_file(&victim).unwrap().len();
    flip(&storage, &victim, len - 2); // the last batch's trailer
    let report = repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(report.lost, 3, "{report:?}");
    let kept = read_all(&storage);
    assert_eq!(kept.len(), written.len());
    let holes = (0..kept.len())
        .filter(|&o| is_hole(&kept[o], o as u64))
        .count();
    assert_eq!(holes, 3);
}

#[test]
fn a_dry_run_changes_nothing_and_says_what_would_move() {
    let storage = SimStorage::new(7);
    build(&storage);
    let names = segments(&storage);
    let victim = format!("{DIR}/{}", names[0]);
    let len = storage.read_file(&victim).unwrap().len();
    flip(&storage, &victim, len / 2);
    let files = |s: &SimStorage| -> Vec<(String, Option<Vec<u8>>)> {
        let mut names = s.list(Path::new(DIR)).unwrap();
        names.sort();
        names
            .into_iter()
            .map(|n| (n.clone(), s.read_file(format!("{DIR}/{n}"))))
            .collect()
    };
    let before = files(&storage);
    let dry = repair_with(&storage, Path::new(DIR), RepairOptions { dry_run: true }).unwrap();
    assert!(dry.dry_run && dry.lost == 3, "{dry:?}");
    assert_eq!(files(&storage), before, "a dry run changes nothing");
    let real = repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(
        (real.lost, real.next_offset, rewritten(&real).len()),
        (dry.lost, dry.next_offset, rewritten(&dry).len())
    );
}

/// Every file of the log directory and the quarantine, by path.
fn all_files(storage: &SimStorage) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from(DIR)];
    while let Some(dir) = dirs.pop() {
        for name in storage.list(&dir).unwrap_or_default() {
            let path = dir.join(&name);
            match storage.read_file(&path) {
                Some(bytes) => out.push((path, bytes)),
                None => dirs.push(path),
            }
        }
    }
    out
}

/// A power cut at every step of a repair (a rewrite and a header rewrite), then
/// a crash that loses what was not durable: every byte the repair removed
/// from the log is still in the log or durable in the quarantine; and a
/// second repair then finishes the job.
#[test]
fn a_power_cut_at_any_step_of_repair_loses_no_removed_byte() {
    for mode in [CrashMode::LoseUnsynced, CrashMode::Reorder] {
        let mut step = 0u64;
        loop {
            let storage = SimStorage::new(11 + step);
            let written = build(&storage);
            let names = segments(&storage);
            let first = format!("{DIR}/{}", names[0]);
            let len = storage.read_file(&first).unwrap().len();
            let damaged = flip(&storage, &first, len / 2);
            // A bad header: written again, the old one saved.
            let moved_name = names[names.len() - 2].clone();
            let moved = flip(&storage, &format!("{DIR}/{moved_name}"), 3);
            let old_header = &moved[..32];
            let plan =
                repair_with(&storage, Path::new(DIR), RepairOptions { dry_run: true }).unwrap();
            let range = rewritten(&plan)[0].clone();
            let lost_bytes =
                &damaged[range.position as usize..(range.position + range.bytes) as usize];

            storage.power_cut_after(step);
            let finished = repair(&storage, Path::new(DIR)).is_ok();
            storage.crash(mode);
            let files = all_files(&storage);
            let holds = |pred: &dyn Fn(&Path, &[u8]) -> bool| files.iter().any(|(p, b)| pred(p, b));
            // The damaged range: in the segment as it was, or saved whole.
            let in_log = storage.read_file(&first).is_some_and(|b| b == damaged);
            let saved =
                holds(&|p, b| p.starts_with(format!("{DIR}/quarantine")) && b == lost_bytes);
            assert!(
                in_log || saved,
                "{mode:?} step {step}: damaged bytes gone: {files:?}"
            );
            // The damaged header: in the log as it was, or saved whole.
            assert!(
                holds(&|p, b| p.file_name().is_some_and(|n| *n == *moved_name) && b == moved)
                    || holds(&|p, b| p.starts_with(format!("{DIR}/quarantine"))
                        && p.to_string_lossy().ends_with(".header")
                        && b == old_header),
                "{mode:?} step {step}: damaged header gone"
            );
            // A repair after the crash leaves the log as one without it would.
            let again = repair(&storage, Path::new(DIR)).unwrap();
            let kept = read_all(&storage);
            assert_eq!(kept.len(), written.len(), "{mode:?} step {step}: {again:?}");
            for (offset, record) in kept.iter().enumerate() {
                assert!(
                    is_hole(record, offset as u64) || record.payload == written[offset],
                    "{mode:?} step {step}: offset {offset}"
                );
            }
            if finished {
                break;
            }
            step += 1;
        }
        assert!(step > 5, "{mode:?}: the repair took {step} steps");
    }
}

/// A reader with a sealed segment mapped survives a repair of that segment:
/// the segment is replaced by a new file, never cut in place (cutting it
/// made the next read through the map die with SIGBUS).
#[cfg(unix)]
#[test]
fn repair_replaces_a_mapped_segment_instead_of_truncating_it() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Log::open(&dir, options()).unwrap();
    for b in 0..40u8 {
        let batch: Vec<Record> = (0..3u8)
            .map(|i| Record::new(i64::from(b), payload(b, i)))
            .collect();
        log.append_batch_blocking(batch).unwrap();
    }
    log.close().unwrap();
    let segment = dir.join(format!("{:020}.log", 0));
    let reader = Log::open_read_only(&dir).unwrap();
    // Maps the first sealed segment.
    let before: Vec<_> = reader.read_from(0).unwrap().take(3).collect();
    assert_eq!(before.len(), 3);
    let meta = std::fs::metadata(&segment).unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&segment, &bytes).unwrap();

    let report = enforcelog::log::repair_dir(&dir).unwrap();
    assert_eq!(report.lost, 3, "{report:?}");
    let after = std::fs::metadata(&segment).unwrap();
    assert_ne!(
        after.ino(),
        meta.ino(),
        "the segment must be replaced, not cut"
    );
    // The old handle reads its old (mapped) bytes to their end: no SIGBUS.
    let old: Vec<_> = reader.read_from(0).unwrap().collect();
    assert!(old.iter().filter(|r| r.is_ok()).count() >= 3);
    let fresh = Log::open_read_only(&dir).unwrap();
    assert_eq!(fresh.read_from(0).unwrap().count(), 120);
}

#[test]
fn a_clean_log_is_left_alone_and_a_locked_one_refused() {
    let storage = SimStorage::new(4);
    let written = build(&storage);
    let before: Vec<_> = segments(&storage)
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    let report = repair(&storage, Path::new(DIR)).unwrap();
    assert!(report.actions.is_empty());
    assert_eq!(report.next_offset, written.len() as u64);
    let after: Vec<_> = segments(&storage)
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    assert_eq!(before, after);

    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    assert!(matches!(
        repair(&storage, Path::new(DIR)),
        Err(Error::Locked { .. })
    ));
    drop(log);
}

/// A header that does not decode and a damaged first batch: the header is
/// written again, the batch becomes a hole, and no segment moves (the
/// whole-header sweeps are in `tests/segment_header_damage.rs`).
#[test]
fn a_damaged_segment_header_and_first_batch_leave_a_hole_and_move_nothing() {
    let storage = SimStorage::new(5);
    let written = build(&storage);
    let names = segments(&storage);
    let victim = format!("{DIR}/{}", names[2]);
    let later: Vec<_> = names[3..]
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    flip(&storage, &victim, 3);
    flip(&storage, &victim, 32 + 40);
    let report = repair(&storage, Path::new(DIR)).unwrap();
    assert!(
        matches!(
            report.actions.as_slice(),
            [
                RepairAction::HeaderRewritten { .. },
                RepairAction::Rewritten { .. }
            ]
        ),
        "{report:?}"
    );
    assert_eq!(report.moved_records, 0, "{report:?}");
    assert_eq!(report.next_offset, written.len() as u64, "{report:?}");
    let after: Vec<_> = names[3..]
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    assert_eq!(later, after, "a later segment changed");
    let kept = read_all(&storage);
    assert_eq!(kept.len(), written.len());
    let lost = (0..kept.len())
        .filter(|&o| is_hole(&kept[o], o as u64))
        .count() as u64;
    assert_eq!(lost, report.lost);
    assert!(lost > 0, "{report:?}");
    for (offset, record) in kept.iter().enumerate() {
        assert!(is_hole(record, offset as u64) || record.payload == written[offset]);
    }
}

/// A repair deletes the key index of the segment it rewrites (it describes
/// frames that are now a hole) and keeps the others; the next tenant query
/// counts the hole's lost entries as the scan does, and builds the index
/// again from the repaired segment.
#[test]
fn repair_deletes_the_key_index_of_a_segment_it_rewrites() {
    use enforcelog::{Action, Event, Query, Store, StoreOptions};
    let storage = SimStorage::new(3);
    let open = || {
        Store::builder("/s")
            .storage(Arc::new(storage.clone()))
            .options(StoreOptions {
                log: options(),
                ..StoreOptions::default()
            })
            .open()
            .unwrap()
    };
    let store = open();
    for i in 0..120u32 {
        let event = Event::new(["acme", "globex"][(i % 2) as usize], "r", Action::Blocked)
            .at_us(1_764_000_000_000_000 + i64::from(i))
            .with_run_id(format!("run-{}", i % 5))
            .with_details(enforcelog::details!({ "step": i, "pad": "0000000000000000" }));
        store.record_blocking(event).unwrap();
    }
    store.query(&Query::tenant("acme")).unwrap();
    store.close().unwrap();
    drop(store);
    let keys = |base: u64| format!("/s/keys/{base:020}.keys");
    let first = format!("/s/{:020}.log", 0);
    assert!(storage.read_file(keys(0)).is_some(), "written by the query");
    let kept_before: Vec<String> = storage
        .list(Path::new("/s/keys"))
        .unwrap()
        .into_iter()
        .filter(|n| n != &format!("{:020}.keys", 0))
        .collect();
    assert!(!kept_before.is_empty());
    let len = storage.read_file(&first).unwrap().len();
    flip(&storage, &first, len / 2);
    let report = repair(&storage, Path::new("/s")).unwrap();
    assert!(report.lost > 0, "{report:?}");
    assert_eq!(storage.read_file(keys(0)), None, "deleted with the rewrite");
    for name in &kept_before {
        assert!(
            storage.read_file(format!("/s/keys/{name}")).is_some(),
            "{name} kept"
        );
    }

    let store = open();
    for query in [
        Query::tenant("acme"),
        Query::tenant("globex"),
        Query::all_tenants().run_id("run-2"),
    ] {
        let query = query.limit(100_000);
        store.use_key_indexes(false);
        let scanned = store.query(&query).unwrap();
        store.use_key_indexes(true);
        let indexed = store.query(&query).unwrap();
        assert_eq!(indexed, scanned, "{query:?}");
        assert_eq!(indexed.lost, report.lost, "{query:?}");
    }
    assert!(
        storage.read_file(keys(0)).is_some(),
        "built again from the repaired segment"
    );
    store.close().unwrap();
}
