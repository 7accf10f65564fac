//! Review 39: adversarial review of 5fe2a12 (`repair` keeps a durable
//! count in REPAIRS, raised before any change; a kept tree remembers
//! (count, quarantine entries, greatest entry) and is dropped when they
//! differ). Each test fails if the finding it is named after is real;
//! confirmed ones are `#[ignore]`d with the reason.

mod common;

use common::kept::{describe, payload, small_segments, store_options};

use std::path::Path;
use std::sync::Arc;

use common::segment::{batch_offsets, leaves, segment_files};

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::log::{repair, repair_with, RepairOptions};
use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{Durability, Log, LogOptions, Record, Store};

// ------------------------------------------------------------ helpers

const DIR: &str = "/log";

fn sim_options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        index_interval_bytes: 128,
        ..LogOptions::default()
    }
}

fn sim_payload(b: u8, i: u8) -> Vec<u8> {
    let mut p = vec![0u8; 100];
    p[0] = b;
    p[1] = i;
    p[50] = b ^ i;
    p
}

/// 120 records in batches of 3 over several segments.
fn build(storage: &SimStorage) {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, sim_options()).unwrap();
    for b in 0..40u8 {
        let batch: Vec<Record> = (0..3u8)
            .map(|i| Record::new(i64::from(b), sim_payload(b, i)))
            .collect();
        log.append_batch_blocking(batch).unwrap();
    }
    log.close().unwrap();
}

fn sim_segments(storage: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// Damages the middle of the first segment.
fn sim_damage(storage: &SimStorage) {
    let victim = format!("{DIR}/{}", sim_segments(storage)[0]);
    let mut bytes = storage.read_file(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    storage.write_file(&victim, &bytes);
}

/// Every file below the log directory, by path, sorted.
fn all_files(storage: &SimStorage) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![std::path::PathBuf::from(DIR)];
    while let Some(dir) = dirs.pop() {
        for name in storage.list(&dir).unwrap_or_default() {
            let path = dir.join(&name);
            match storage.read_file(&path) {
                Some(bytes) => out.push((path.to_string_lossy().into_owned(), bytes)),
                None => dirs.push(path),
            }
        }
    }
    out.sort();
    out
}

fn without(files: &[(String, Vec<u8>)], names: &[&str]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .filter(|(p, _)| !names.iter().any(|n| p.ends_with(n)) && !p.ends_with("LOCK"))
        .cloned()
        .collect()
}

fn count_of(storage: &SimStorage) -> Option<String> {
    storage
        .read_file(format!("{DIR}/REPAIRS"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn verifies_clean(storage: &SimStorage) {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, sim_options()).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    log.close().unwrap();
}

fn write_log(dir: &Path, from: u64, to: u64) {
    let writer = Log::open(dir, small_segments()).unwrap();
    for chunk in from / 10..to / 10 {
        writer
            .append_batch_blocking(
                (chunk * 10..chunk * 10 + 10)
                    .map(|i| Record::new(i as i64, payload(b'a', i, 200)))
                    .collect(),
            )
            .unwrap();
    }
    writer.close().unwrap();
}

/// Damages the second batch of segment `which` and repairs it.
fn damage_and_repair(dir: &Path, which: usize) {
    let segments = segment_files(dir);
    assert!(segments.len() > which, "rolled: {segments:?}");
    let bytes = std::fs::read(&segments[which]).unwrap();
    let (pos, _, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[which], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
}

fn proved_root(store: &Store, n: u64) -> Hash {
    store.prove_inclusion(n - 1, n).expect("inclusion").root
}

// ------------------------------------- 1: the count breaking repair or open

/// A REPAIRS write that fails (ENOSPC / EIO at each of its steps: create,
/// write, fsync, rename, directory fsync) fails the repair before any
/// segment, index or quarantine changes; a retry then finishes it and the
/// log verifies clean.
#[test]
fn a_failing_count_write_changes_nothing_and_a_retry_repairs() {
    for (op, kind) in [
        (FaultOp::Create, FaultKind::NoSpace),
        (FaultOp::Write, FaultKind::NoSpace),
        (FaultOp::SyncData, FaultKind::Io),
        (FaultOp::Rename, FaultKind::Io),
        (FaultOp::SyncDir, FaultKind::Io),
    ] {
        let storage = SimStorage::new(21);
        build(&storage);
        sim_damage(&storage);
        let before = all_files(&storage);
        storage.inject(op, 0, kind, false);
        let failed = repair(&storage, Path::new(DIR));
        storage.clear_faults();
        assert!(failed.is_err(), "{op:?}: {failed:?}");
        let after = all_files(&storage);
        assert_eq!(
            without(&after, &["REPAIRS", "REPAIRS.tmp"]),
            without(&before, &[]),
            "{op:?}: only the count may have changed"
        );
        // Open, read-only open and verify over a REPAIRS.tmp left behind.
        Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR)
            .map(drop)
            .unwrap_or_else(|e| panic!("{op:?}: read-only open: {e}"));
        let again = repair(&storage, Path::new(DIR)).unwrap();
        assert!(!again.actions.is_empty(), "{op:?}: {again:?}");
        verifies_clean(&storage);
        let count = count_of(&storage).expect("a count");
        assert!(count == "1\n" || count == "2\n", "{op:?}: {count:?}");
    }
}

/// A power cut at every step of a repair, then a crash: the log opens,
/// a second repair finishes the job, and the count read afterwards is a
/// count (never garbage, so kept trees stay usable).
#[test]
fn a_power_cut_between_count_and_quarantine_leaves_an_openable_log() {
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::Reorder,
        CrashMode::TornSectors,
    ] {
        for step in 0..12u64 {
            let storage = SimStorage::new(31 + step);
            build(&storage);
            sim_damage(&storage);
            storage.power_cut_after(step);
            let _ = repair(&storage, Path::new(DIR));
            storage.crash(mode);
            Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR)
                .map(drop)
                .unwrap_or_else(|e| panic!("{mode:?} {step}: {e}"));
            repair(&storage, Path::new(DIR)).unwrap();
            verifies_clean(&storage);
            let count = count_of(&storage).expect("a count");
            assert!(
                count
                    .strip_suffix('\n')
                    .is_some_and(|d| d.parse::<u64>().is_ok_and(|c| (1..=2).contains(&c))),
                "{mode:?} step {step}: {count:?}"
            );
        }
    }
}

/// A dry run, and a repair with nothing to do, leave no REPAIRS.
#[test]
fn a_dry_run_or_a_repair_with_nothing_to_do_raises_no_count() {
    let storage = SimStorage::new(41);
    build(&storage);
    repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(count_of(&storage), None, "nothing to do");
    sim_damage(&storage);
    let dry = repair_with(&storage, Path::new(DIR), RepairOptions { dry_run: true }).unwrap();
    assert!(dry.dry_run && !dry.actions.is_empty());
    assert_eq!(count_of(&storage), None, "dry run");
    repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(count_of(&storage).as_deref(), Some("1\n"));
    repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(
        count_of(&storage).as_deref(),
        Some("1\n"),
        "second, nothing to do"
    );
}

/// Open, read-only open, verify and a Store over a directory holding
/// REPAIRS and REPAIRS.tmp (garbage in both).
#[test]
fn a_log_with_repairs_and_a_tmp_opens_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, 200);
    std::fs::write(dir.path().join("REPAIRS"), b"not a count").unwrap();
    std::fs::write(dir.path().join("REPAIRS.tmp"), b"half").unwrap();
    let ro = Log::open_read_only(dir.path()).unwrap();
    assert!(ro.verify().unwrap().is_clean());
    drop(ro);
    let w = Log::open(dir.path(), small_segments()).unwrap();
    assert!(w.verify().unwrap().is_clean());
    w.close().unwrap();
    let s = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&s, 200), merkle::root(&leaves(dir.path())));
}

/// A directory without VERSION but with REPAIRS (and a quarantine): repair
/// refuses it untouched (no count raised).
#[test]
fn repair_of_a_directory_without_version_is_refused_untouched() {
    let storage = SimStorage::new(51);
    build(&storage);
    sim_damage(&storage);
    storage.write_file(format!("{DIR}/REPAIRS"), b"3\n");
    storage.remove(&Path::new(DIR).join("VERSION")).unwrap();
    let before = all_files(&storage);
    assert!(repair(&storage, Path::new(DIR)).is_err());
    assert_eq!(without(&all_files(&storage), &[]), without(&before, &[]));
}

/// A directory whose only file is someone else's `REPAIRS` (not a count)
/// is not adopted as a log: `open` refuses a non-empty directory without
/// VERSION as foreign.
#[test]
fn a_directory_holding_only_a_foreign_repairs_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("REPAIRS"), b"things to fix at home\n").unwrap();
    let opened = Log::open(dir.path(), small_segments());
    assert!(
        opened.is_err(),
        "adopted; now holds {:?}",
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
}

/// A REPAIRS that does not read (hand-edited, a torn copy) stops the
/// writer from saving TREE; a repair with nothing to do does not mend it,
/// so every later process makes the full pass again, silently.
#[test]
fn an_unreadable_count_does_not_disable_the_kept_tree_for_good() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, 200);
    std::fs::write(dir.path().join("REPAIRS"), b"7").unwrap(); // no newline
    let report = enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(report.actions.is_empty());
    let store = Store::open(dir.path(), store_options()).unwrap();
    store.head().unwrap();
    store.close().unwrap();
    drop(store);
    assert!(
        dir.path().join("TREE").exists(),
        "no TREE after a head; REPAIRS still {:?}",
        std::fs::read(dir.path().join("REPAIRS")).unwrap()
    );
}

// ---------------------------------------- 2: a repair unseen by a kept tree

/// A read-only store keeps its own pass; `edit` runs between the pass and
/// a refresh (and does at least one repair); the refreshed store must
/// prove the log as it is.
fn kept_then(edit: impl FnOnce(&Path)) {
    kept_over(|_| {}, edit);
}

/// [`kept_then`] with `setup` run before the reader's pass.
fn kept_over(setup: impl FnOnce(&Path), edit: impl FnOnce(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, 200);
    setup(dir.path());
    let before = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, 200), merkle::root(&before));
    edit(dir.path());
    let after = leaves(dir.path());
    assert_ne!(merkle::root(&after), merkle::root(&before));
    reader.refresh().unwrap();
    let root = proved_root(&reader, 200);
    assert_eq!(
        root,
        merkle::root(&after),
        "proved {} ({} full passes)",
        describe(root, &before, &after),
        reader.metrics().tree_passes
    );
}

/// REPAIRS garbage, then a repair (the count becomes the repair's time),
/// then the quarantine removed.
#[test]
fn a_garbage_count_then_a_repair_is_seen() {
    kept_then(|dir| {
        std::fs::write(dir.join("REPAIRS"), b"garbage").unwrap();
        damage_and_repair(dir, 0);
        std::fs::remove_dir_all(dir.join("quarantine")).unwrap();
    });
}

/// A tree kept over an earlier garbage-replaced count (the time of that
/// repair), then REPAIRS garbage again and a repair: a new time.
#[test]
fn two_garbage_replacements_differ() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), 0, 200);
    std::fs::write(dir.path().join("REPAIRS"), b"x").unwrap();
    damage_and_repair(dir.path(), 0);
    let first = std::fs::read(dir.path().join("REPAIRS")).unwrap();
    std::fs::write(dir.path().join("REPAIRS"), b"x").unwrap();
    damage_and_repair(dir.path(), 1);
    let second = std::fs::read(dir.path().join("REPAIRS")).unwrap();
    assert_ne!(first, second);
}

/// A count at u64::MAX (hand-written) saturated: a repair left it as it
/// was, and with its quarantine entry removed the tree saw nothing.
#[test]
fn a_saturated_count_still_shows_a_repair() {
    kept_over(
        |dir| std::fs::write(dir.join("REPAIRS"), format!("{}\n", u64::MAX)).unwrap(),
        |dir| {
            damage_and_repair(dir, 0);
            // Fixed: a count that cannot be raised is replaced by the time.
            assert_ne!(
                std::fs::read(dir.join("REPAIRS")).unwrap(),
                format!("{}\n", u64::MAX).into_bytes()
            );
            std::fs::remove_dir_all(dir.join("quarantine")).unwrap();
        },
    );
}

/// Two repairs, their quarantine entries pruned, REPAIRS restored from a
/// backup taken before them: (count, entries, greatest) as before.
#[test]
#[ignore = "review 39 finding 4 (documented limit, docs/AUDIT.md: REPAIRS is the log's, not something to clean up or restore): REPAIRS restored from a backup plus pruned quarantine entries bring the triple back; a kept tree then proves the records before two repairs"]
fn two_repairs_pruned_and_a_restored_count_are_seen() {
    kept_then(|dir| {
        let backup = std::fs::read(dir.join("REPAIRS")).ok();
        damage_and_repair(dir, 0);
        damage_and_repair(dir, 1);
        std::fs::remove_dir_all(dir.join("quarantine")).unwrap();
        match backup {
            Some(b) => std::fs::write(dir.join("REPAIRS"), b).unwrap(),
            None => std::fs::remove_file(dir.join("REPAIRS")).unwrap(),
        }
    });
}
