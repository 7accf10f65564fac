//! Review 37: adversarial review of the kept tree on disk (commit 4c6a8fb:
//! `TREE` in each log directory, `KeptTree::encode/decode/save/load`,
//! `Log::view_id`, repair removing `TREE`). Each test fails if the finding
//! it is named after is real; confirmed ones are `#[ignore]`d with the
//! reason.

mod common;

use common::kept::{event, payload, small_segments, write_log};

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::segment::{batch_offsets, leaves, segment_files};

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::{Durability, LogOptions, Record, Store, StoreOptions};

/// A writer store over `dir` makes a head (a full pass) and leaves TREE.
fn leave_tree(dir: &Path, options: LogOptions) -> Vec<u8> {
    let store = Store::open(
        dir,
        StoreOptions {
            log: options,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    store.head().unwrap();
    store.close().unwrap();
    drop(store);
    std::fs::read(dir.join("TREE")).expect("the head left TREE")
}

/// Every proof the store gives for sizes up to `all.len()` is the tree's by
/// definition (or an error: never a wrong proof).
fn assert_proofs_match(store: &Store, all: &[Hash], what: &str) {
    let n = all.len() as u64;
    let mut sizes: Vec<u64> = vec![1, 2, 15, 16, 17, 31, 32, 33, n / 2, n - 1, n];
    sizes.retain(|&s| s >= 1 && s <= n);
    for &size in &sizes {
        for offset in [0, size / 3, size - 1] {
            if let Ok(p) = store.prove_inclusion(offset, size) {
                assert_eq!(
                    p.root,
                    merkle::root(&all[..size as usize]),
                    "{what}: inclusion {offset} in {size}: root of a tree the log does not hold"
                );
                assert_eq!(p.leaf_hash, all[offset as usize], "{what}: leaf {offset}");
            }
        }
        for old in [0, 1, size / 2, size] {
            if let Ok(c) = store.prove_consistency(old, size) {
                assert_eq!(
                    c.new_root,
                    merkle::root(&all[..size as usize]),
                    "{what}: consistency {old}..{size}: new root"
                );
                assert_eq!(
                    c.old_root,
                    merkle::root(&all[..old as usize]),
                    "{what}: consistency {old}..{size}: old root"
                );
            }
        }
    }
}

/// A TREE file of the layout of docs/FORMAT.md with a valid CRC.
fn tree_file(tail: u32, blocks: u64, first: u64, end: u64, hashes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"ENFTREE1");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&tail.to_le_bytes());
    out.extend_from_slice(&blocks.to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&end.to_le_bytes());
    out.extend_from_slice(&[7u8; 64]);
    // Repair count, quarantine entries and the greatest entry: none, as in
    // a directory never repaired (fields added after this review).
    out.extend_from_slice(&[0u8; 24]);
    out.extend(std::iter::repeat_n(0x5au8, 32 * hashes));
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Bytes of a TREE file before its block roots (docs/FORMAT.md).
const TREE_HEADER: usize = 128;

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(&crc.to_le_bytes());
    body
}

// ---------------------------------- 1: a TREE that outlives a repair

/// docs/FORMAT.md: TREE is "checked by its checksum and against the log
/// before each use". A repair that does not remove it (a release before
/// 4c6a8fb, the Python binding or CLI of an older build on the same host,
/// an operator restoring segment files from a backup) leaves the seal
/// batch as it was, so the seal still matches and the next process proves
/// the tree of the records before the repair, with no error, while a head
/// gives the tree of the holes. The file's check cannot tell.
#[test]
fn a_tree_file_left_across_a_repair_is_not_proved_from() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    let good = leave_tree(dir.path(), options.clone());
    let before = leaves(dir.path());
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "rolled: {segments:?}");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (pos, first, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[0], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
    // What a repair that does not know TREE leaves.
    std::fs::write(dir.path().join("TREE"), &good).unwrap();
    let after = leaves(dir.path());
    assert_ne!(after[first as usize], before[first as usize], "a hole");
    let reader = Store::open_read_only(dir.path()).unwrap();
    let n = after.len() as u64;
    let p = reader.prove_inclusion(n - 1, n).expect("inclusion");
    let fresh = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(fresh.head().unwrap().root, merkle::root(&after));
    assert_eq!(
        p.root,
        merkle::root(&after),
        "proved from the pre-repair TREE (root {}), not the log as it is",
        if p.root == merkle::root(&before) {
            "of the records before the repair"
        } else {
            "unknown"
        }
    );
    assert_proofs_match(&reader, &after, "stale TREE after repair");
}

/// A dry run changes nothing, so TREE stays and still describes the log.
#[test]
fn a_dry_run_repair_leaves_a_tree_file_that_still_matches() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    let good = leave_tree(dir.path(), options.clone());
    let segments = segment_files(dir.path());
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (pos, _, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[0], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir_with(
        dir.path(),
        enforcelog::log::RepairOptions { dry_run: true },
    )
    .unwrap();
    assert!(report.dry_run);
    assert_eq!(std::fs::read(dir.path().join("TREE")).unwrap(), good);
    // The real repair then removes it.
    enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(!dir.path().join("TREE").exists());
    let after = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_proofs_match(&reader, &after, "after repair");
}

// ------------------------- 1: a TREE copied from a log with the same start

/// Two logs with the same first 100 records (same offsets, timestamps,
/// batches), then different ones. A's TREE at 100 copied into B is B's
/// tree too (its seal's `prev` covers everything before it), extended by
/// B's own batches; A's TREE at 200 does not match B's seal.
#[test]
fn a_tree_file_copied_from_a_log_with_the_same_first_batches_proves_this_log() {
    let options = small_segments();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_log(a.path(), &options, b'a', 0, 100);
    write_log(b.path(), &options, b'a', 0, 100);
    let at_100 = leave_tree(a.path(), options.clone());
    write_log(a.path(), &options, b'a', 100, 200);
    let at_200 = leave_tree(a.path(), options.clone());
    write_log(b.path(), &options, b'b', 100, 200);
    let all_b = leaves(b.path());
    assert_ne!(all_b[150], leaves(a.path())[150]);
    for (what, file) in [("A at 100", &at_100), ("A at 200", &at_200)] {
        std::fs::write(b.path().join("TREE"), file).unwrap();
        let reader = Store::open_read_only(b.path()).unwrap();
        assert_proofs_match(&reader, &all_b, what);
        let p = reader.prove_inclusion(199, 200).unwrap();
        assert_eq!(p.root, merkle::root(&all_b), "{what}");
    }
}

// --------------------- 1: TREE over records a failed fsync loses, new process

/// Under `Durability::Interval` a writer's proof makes a full pass over
/// committed, unsynced records and writes TREE over them; the fsync fails,
/// the store reopens and gives those offsets to other records. Another
/// process (a read-only store on the same storage) and a crash + reopen
/// must prove the records as they are.
#[test]
fn a_tree_file_over_records_a_failed_fsync_loses_is_passed_over() {
    let storage = SimStorage::new(37);
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::Interval(Duration::from_secs(3600)),
            ..LogOptions::default()
        },
        recovery_interval: Duration::from_millis(10),
        ..StoreOptions::default()
    };
    let store = Store::builder("/store")
        .storage(Arc::new(storage.clone()))
        .options(options.clone())
        .open()
        .expect("open");
    for n in 0..20 {
        store.record_blocking(event(n)).unwrap();
    }
    store.head().expect("head");
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    for n in 0..5 {
        store.record_blocking(event(1000 + n)).unwrap();
    }
    // Drop the writer's kept tree? It has one from the head; a proof past
    // it extends it. Make a TREE over the unsynced records: a new store
    // handle is not possible (the lock), so check what the file says.
    let p = store.prove_inclusion(22, 25).expect("proof");
    let lost_root = p.root;
    assert!(store.flush_blocking().is_err(), "the injected fsync fails");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut later = 0;
    while later < 8 {
        assert!(Instant::now() < deadline, "the store never recovered");
        if store.record_blocking(event(2000 + later)).is_ok() {
            later += 1;
        } else {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    store.flush_blocking().unwrap();
    // A head after the reopen writes TREE over the records as they are now.
    let reader = Store::builder("/store")
        .storage(Arc::new(storage.clone()))
        .open_read_only()
        .unwrap();
    let all: Vec<Hash> = reader
        .log()
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    assert!(all.len() >= 28, "{}", all.len());
    assert_ne!(merkle::root(&all[..25]), lost_root, "precondition");
    assert_proofs_match(&reader, &all, "other process after the reopen");
    store.close().unwrap();
    drop(store);
    drop(reader);
    // And after a crash (TREE never synced: gone, torn or old).
    storage.crash(CrashMode::LoseUnsynced);
    let reader = Store::builder("/store")
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open_read_only()
        .unwrap();
    let all: Vec<Hash> = reader
        .log()
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    if !all.is_empty() {
        assert_proofs_match(&reader, &all, "after a crash");
    }
}

// ---------------------------------------- 2: heads never from the file

/// A planted TREE whose seal matches the log but whose roots are forged
/// (CRC recomputed): a head makes its full pass and gives the true root;
/// a record tampered with below the seal (frame CRC fixed) gets no proof
/// of its old bytes from a process that starts from the file, and the
/// head names the tampering.
#[test]
fn heads_never_come_from_the_file_and_tampering_is_not_hidden_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    let good = leave_tree(dir.path(), options.clone());
    let all = leaves(dir.path());
    let mut forged = good[..good.len() - 4].to_vec();
    for b in forged[TREE_HEADER..].iter_mut() {
        *b ^= 0xff;
    }
    std::fs::write(dir.path().join("TREE"), with_crc(forged)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let h = reader.head().unwrap();
    assert_eq!(h.root, merkle::root(&all));
    assert_eq!(reader.metrics().tree_passes, 1);
    drop(reader);

    // Tamper with record 40 (a complete block), frame CRC fixed.
    std::fs::write(dir.path().join("TREE"), &good).unwrap();
    let target = Record::new(40, payload(b'a', 40, 200));
    let segs = segment_files(dir.path());
    let mut done = false;
    for seg in segs {
        let mut bytes = std::fs::read(&seg).unwrap();
        let Some(at) = bytes
            .windows(target.payload.len())
            .position(|w| w == target.payload.as_slice())
        else {
            continue;
        };
        let frame = at - 24;
        bytes[at + 50] ^= 0x01;
        let crc = crc32fast::hash(&bytes[frame + 4..at + target.payload.len()]);
        bytes[frame..frame + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
        done = true;
        break;
    }
    assert!(done);
    let now = leaves(dir.path());
    assert_ne!(now[40], all[40], "precondition: edited");
    let reader = Store::open_read_only(dir.path()).unwrap();
    if let Ok(p) = reader.prove_inclusion(40, 200) {
        assert_eq!(p.leaf_hash, now[40], "a proof of the old bytes");
    }
    assert!(reader.head().is_err(), "a head over a tampered log");
}

// ------------------------ 3: read-only stores never write TREE or TREE.tmp

fn tree_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("TREE"))
        .collect();
    names.sort();
    names
}

#[test]
fn read_only_stores_never_write_the_tree_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 100);
    let reader = Store::open_read_only(dir.path()).unwrap();
    reader.head().unwrap();
    reader.prove_inclusion(5, 100).unwrap();
    reader.prove_consistency(10, 100).unwrap();
    reader.heads().unwrap();
    assert!(
        tree_names(dir.path()).is_empty(),
        "{:?}",
        tree_names(dir.path())
    );
    drop(reader);
    // Beside a writer that left one: the reader leaves it alone.
    let good = leave_tree(dir.path(), options.clone());
    let store = Store::open(
        dir.path(),
        StoreOptions {
            log: options,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for n in 0..40 {
        store.record_blocking(event(n)).unwrap();
    }
    store.flush_blocking().unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    reader.refresh().unwrap();
    reader.head().unwrap();
    let n = reader.log().next_offset();
    reader.prove_inclusion(n - 1, n).unwrap();
    assert_eq!(std::fs::read(dir.path().join("TREE")).unwrap(), good);
    assert_eq!(tree_names(dir.path()), vec!["TREE".to_string()]);
    store.close().unwrap();
}

// ------------------------ 3: a failed TREE write (sim ENOSPC/EIO)

/// The TREE write fails (ENOSPC on its write, EIO on its rename): the head
/// still answers, the writer goes on recording, and the TREE.tmp left
/// behind troubles neither a reopen, a verify, a repair nor proofs.
#[test]
fn a_failed_tree_write_fails_nothing_and_its_tmp_confuses_nothing() {
    for (op, kind) in [
        (FaultOp::Write, FaultKind::NoSpace),
        (FaultOp::Rename, FaultKind::Io),
        (FaultOp::Create, FaultKind::NoSpace),
    ] {
        let storage = SimStorage::new(3700);
        let store = Store::builder("/s")
            .storage(Arc::new(storage.clone()))
            .open()
            .expect("open");
        for n in 0..50 {
            store.record_blocking(event(n)).unwrap();
        }
        store.flush_blocking().unwrap();
        store.head().unwrap(); // syncs whatever is left first
        for n in 50..60 {
            store.record_blocking(event(n)).unwrap();
        }
        store.flush_blocking().unwrap();
        // Nothing left to sync: the next write/rename/create is TREE's.
        storage.inject(op, 0, kind, false);
        let h = store
            .head()
            .unwrap_or_else(|e| panic!("{op:?}: head failed: {e}"));
        assert_eq!(h.size, 60);
        // The fault hit TREE's write: the file still holds the tree at 50.
        let tree = storage
            .read_file("/s/TREE")
            .expect("TREE of the first head");
        assert_eq!(
            u64::from_le_bytes(tree[32..40].try_into().unwrap()),
            50,
            "{op:?}: the fault did not hit TREE's write"
        );
        for n in 60..70 {
            store
                .record_blocking(event(n))
                .unwrap_or_else(|e| panic!("{op:?}: writer poisoned: {e}"));
        }
        store.flush_blocking().unwrap();
        store.prove_inclusion(65, 70).unwrap().verify().unwrap();
        store.close().unwrap();
        drop(store);
        storage.clear_faults();
        if op == FaultOp::Write {
            // Force a leftover TREE.tmp of garbage too.
            storage.write_file("/s/TREE.tmp", &[0xab; 77]);
        }
        let report = enforcelog::log::repair(&storage, Path::new("/s")).unwrap();
        assert!(report.actions.is_empty(), "{op:?}: {report:?}");
        let store = Store::builder("/s")
            .storage(Arc::new(storage.clone()))
            .open()
            .unwrap_or_else(|e| panic!("{op:?}: reopen: {e}"));
        assert_eq!(store.log().next_offset(), 70);
        let v = store.log().verify().unwrap();
        assert!(v.is_clean(), "{op:?}: {v:?}");
        store.prove_inclusion(3, 70).unwrap().verify().unwrap();
        assert_eq!(store.head().unwrap().size, 70);
        store.close().unwrap();
    }
}

// ----------------------------------------- 4: hostile TREE contents

#[test]
fn hostile_tree_files_never_panic_hang_or_prove_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    let good = leave_tree(dir.path(), options.clone());
    let all = leaves(dir.path());
    // The real seal, reused in forged files.
    let seal_first = u64::from_le_bytes(good[24..32].try_into().unwrap());
    let seal_end = u64::from_le_bytes(good[32..40].try_into().unwrap());
    assert_eq!(seal_end, 200);
    let with_seal = |mut f: Vec<u8>, first: u64, end: u64| -> Vec<u8> {
        f.truncate(f.len() - 4);
        f[24..32].copy_from_slice(&first.to_le_bytes());
        f[32..40].copy_from_slice(&end.to_le_bytes());
        f[40..104].copy_from_slice(&good[40..104]);
        with_crc(f)
    };
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("huge counts", tree_file(15, u64::MAX / 16, 0, u64::MAX, 0)),
        ("overflowing count", tree_file(15, u64::MAX, 0, 15, 0)),
        (
            "count * 32 overflows",
            tree_file(0, 1 << 60, 0, u64::MAX - 3, 0),
        ),
        ("seal far beyond", tree_file(0, 1000, 15_990, 16_000, 1000)),
        ("zero blocks, tail 15", tree_file(15, 0, 10, 15, 15)),
        ("zero blocks, tail 0", tree_file(0, 0, 0, 0, 0)),
        ("tail 16", tree_file(16, 0, 0, 16, 16)),
        ("first == end", tree_file(8, 12, 200, 200, 20)),
        (
            "real seal, zero roots",
            with_seal(tree_file(8, 12, 0, 200, 20), seal_first, seal_end),
        ),
        (
            "real seal first, end past",
            with_seal(tree_file(8, 13, 0, 216, 21), seal_first, 216),
        ),
        ("header only", with_crc(good[..TREE_HEADER].to_vec())),
        ("short", with_crc(good[..50].to_vec())),
    ];
    for (what, bytes) in files {
        std::fs::write(dir.path().join("TREE"), &bytes).unwrap();
        let started = Instant::now();
        let reader = Store::open_read_only(dir.path()).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_proofs_match(&reader, &all, what);
            assert_eq!(reader.head().unwrap().root, merkle::root(&all), "{what}");
        }));
        assert!(r.is_ok(), "{what}: panicked");
        assert!(started.elapsed() < Duration::from_secs(20), "{what}: slow");
    }
}

// ----------------------- 4: concurrent heads and proofs in one writer

#[test]
fn concurrent_heads_in_one_writer_leave_an_intact_tree_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).unwrap());
    for n in 0..100 {
        store.record_blocking(event(n)).unwrap();
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..30u64 {
                    if t == 0 {
                        store.record_blocking(event(1000 + i)).unwrap();
                    }
                    let h = store.head().unwrap();
                    let p = store.prove_inclusion(h.size - 1, h.size).unwrap();
                    assert_eq!(p.root, h.root);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    store.flush_blocking().unwrap();
    store.head().unwrap();
    let all = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_proofs_match(&reader, &all, "after concurrent heads");
    assert_eq!(reader.metrics().tree_passes, 0, "TREE intact and current");
    assert!(!dir.path().join("TREE.tmp").exists());
    Arc::try_unwrap(store).ok().unwrap().close().unwrap();
}

// ------------------------------ 5: the view rule and common cases

/// Writer after rolls, a read-only store refreshed incrementally (rolls
/// included), `Store::refresh` with nothing new: no full pass.
#[test]
fn the_view_rule_keeps_trees_across_rolls_and_plain_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        log: small_segments(),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).unwrap();
    for n in 0..50 {
        store.record_blocking(event(n)).unwrap();
    }
    store.head().unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    reader.prove_inclusion(10, 50).unwrap();
    let before_segments = segment_files(dir.path()).len();
    for round in 0..5u64 {
        for n in 0..40 {
            store.record_blocking(event(100 * round + n)).unwrap();
        }
        store.flush_blocking().unwrap();
        let m = store.log().next_offset();
        store.prove_inclusion(m - 1, m).unwrap();
        reader.refresh().unwrap();
        reader.refresh().unwrap(); // nothing new
        let r = reader.log().next_offset();
        reader.prove_inclusion(r - 1, r).unwrap();
        reader.prove_inclusion(3, r).unwrap();
    }
    assert!(
        segment_files(dir.path()).len() > before_segments + 2,
        "precondition: rolled"
    );
    assert_eq!(store.metrics().tree_passes, 1, "writer: the head only");
    assert_eq!(reader.metrics().tree_passes, 0, "reader: from the file");
    store.flush_blocking().unwrap();
    reader.refresh().unwrap();
    let all = leaves(dir.path());
    assert_eq!(reader.log().next_offset(), all.len() as u64);
    assert_proofs_match(&reader, &all, "reader after rolls");
    assert_proofs_match(&store, &all, "writer after rolls");
    assert_eq!(reader.metrics().tree_passes, 0);
    store.close().unwrap();
}

/// Another shard's log is opened for each question (`Store::audited`), so
/// a tree kept over it names a handle that is gone by the next question
/// and is always dropped. Before 4c6a8fb such proofs were kept across
/// questions (review 36 test `another_shards_kept_tree_is_used_across_proofs`
/// allowed at most 3 passes for 5+ proofs); now, when the shard's writer
/// has not left a TREE (it never made a head, or is closed since), every
/// proof asked of another shard makes a full pass. (The review 36 test
/// was changed to make shard 1's head first, which hides this.)
#[test]
fn proofs_of_another_shard_without_a_tree_file_are_not_a_full_pass_each() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), StoreOptions::default()).expect("shard 0");
    let b = Store::open(dir.path(), StoreOptions::default()).expect("shard 1");
    assert_eq!((a.shard(), b.shard()), (0, 1));
    for n in 0..40 {
        a.record_blocking(event(n)).unwrap();
        b.record_blocking(event(1000 + n)).unwrap();
    }
    a.flush_blocking().unwrap();
    b.flush_blocking().unwrap();
    for _ in 0..6 {
        let p = a.prove_inclusion_in_shard(1, 39, 40).unwrap();
        p.verify().unwrap();
    }
    let passes = a.metrics().tree_passes;
    a.close().unwrap();
    b.close().unwrap();
    assert!(passes <= 1, "{passes} full passes for 6 proofs of shard 1");
}

// ------------------------------- 1: a repair cut by a power failure

/// A repair cut at every step by a power failure (sim storage), then a
/// crash: whatever the log holds after it, a process that opens it proves
/// the records as they are (TREE gone, or the log not yet changed).
#[test]
fn a_repair_cut_at_any_step_leaves_no_tree_file_over_changed_records() {
    let seg0 = "/s/00000000000000000000.log";
    let mut completed = false;
    for cut in 0..200u64 {
        let storage = SimStorage::new(3737 + cut);
        let store = Store::builder("/s")
            .storage(Arc::new(storage.clone()))
            .options(StoreOptions {
                log: small_segments(),
                ..StoreOptions::default()
            })
            .open()
            .expect("open");
        for chunk in 0..12u64 {
            let mut b = store.begin();
            for i in chunk * 10..chunk * 10 + 10 {
                b.record(event(i)).unwrap();
            }
            b.commit_blocking().unwrap();
        }
        store.head().unwrap();
        store.close().unwrap();
        drop(store);
        // TREE is not synced: make it durable, as a file system that wrote
        // it back before the repair would have.
        let tree = storage.read_file("/s/TREE").expect("the head's TREE");
        storage.crash(CrashMode::LoseUnsynced);
        storage.write_file("/s/TREE", &tree);
        let original: Vec<Hash> = {
            let r = Store::builder("/s")
                .storage(Arc::new(storage.clone()))
                .open_read_only()
                .unwrap();
            r.log()
                .read_from(0)
                .unwrap()
                .map(|r| {
                    let r = r.unwrap();
                    merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
                })
                .collect()
        };
        let mut bytes = storage.read_file(seg0).expect("first segment");
        let (pos, _, next) = batch_offsets(&bytes)[1];
        assert!(next > 0);
        bytes[pos + 120] ^= 0x20;
        storage.write_file(seg0, &bytes);
        storage.power_cut_after(cut);
        let repaired = enforcelog::log::repair(&storage, Path::new("/s"));
        storage.crash(CrashMode::LoseUnsynced);
        let reader = Store::builder("/s")
            .storage(Arc::new(storage.clone()))
            .open_read_only()
            .unwrap_or_else(|e| panic!("cut {cut}: open: {e}"));
        let all: Vec<Hash> = reader
            .log()
            .read_from(0)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
            })
            .collect();
        assert!(all.len() >= 100, "cut {cut}: {}", all.len());
        // Only the proofs' roots matter here: a damaged log may refuse.
        // While the repair has changed nothing (the segment still holds the
        // damaged bytes), a proof from TREE names the tree of the records
        // as written (the damage is below the seal, which the file's check
        // does not read; the honest head before it has that root).
        let unchanged = storage.read_file(seg0).as_deref() == Some(&bytes[..]);
        let n = all.len() as u64;
        for offset in [n - 1, 90] {
            if let Ok(p) = reader.prove_inclusion(offset, n) {
                let ok = p.root == merkle::root(&all)
                    || (unchanged && p.root == merkle::root(&original[..n as usize]));
                assert!(
                    ok,
                    "cut {cut}: a tree of neither the log now nor as written"
                );
                assert!(
                    unchanged || storage.read_file("/s/TREE").is_none(),
                    "cut {cut}: TREE outlived a change to the records"
                );
            }
        }
        if repaired.is_ok() && storage.read_file("/s/TREE").is_none() {
            completed = true;
            break;
        }
    }
    assert!(completed, "the repair never completed within the cuts");
}

/// A record rewritten below the seal (frame CRC fixed, chain not: what
/// `verify`/`audit`/a head name as tampering) and TREE rewritten with that
/// block's root made from the new records (its CRC fixed). docs/AUDIT.md
/// says a forged root "that a proof reads fails over to a full pass"; with
/// the records changed to match, the block read again agrees, and a new
/// process gives an error-free inclusion proof of the rewritten record and
/// a consistency proof from an earlier head below it, which the chain
/// check of a full pass (every proof of a new process before 4c6a8fb)
/// refused as tampering.
#[test]
#[ignore = "review 37 finding 3 (documented in docs/AUDIT.md, Proofs from a kept tree): a record rewritten below the seal plus TREE's block root rewritten to match gives new processes error-free proofs of the rewritten record; the chain check that refused it is skipped. Heads, the CLI's prove and audit, and an auditor's head still refuse it"]
fn a_tree_file_rewritten_with_a_tampered_record_does_not_hide_the_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    let good = leave_tree(dir.path(), options.clone());
    let before = leaves(dir.path());
    let target = Record::new(40, payload(b'a', 40, 200));
    let mut done = false;
    for seg in segment_files(dir.path()) {
        let mut bytes = std::fs::read(&seg).unwrap();
        let Some(at) = bytes
            .windows(target.payload.len())
            .position(|w| w == target.payload.as_slice())
        else {
            continue;
        };
        let frame = at - 24;
        bytes[at + 50] ^= 0x01;
        let crc = crc32fast::hash(&bytes[frame + 4..at + target.payload.len()]);
        bytes[frame..frame + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
        done = true;
        break;
    }
    assert!(done);
    let now = leaves(dir.path());
    assert_ne!(now[40], before[40], "precondition: rewritten");
    // Block 2 (offsets 32..48) root from the records as they are now.
    let mut forged = good[..good.len() - 4].to_vec();
    let root2 = merkle::root(&now[32..48]);
    forged[TREE_HEADER + 64..TREE_HEADER + 96].copy_from_slice(&root2);
    std::fs::write(dir.path().join("TREE"), with_crc(forged)).unwrap();

    let reader = Store::open_read_only(dir.path()).unwrap();
    let p = reader.prove_inclusion(40, 200);
    let c = reader.prove_consistency(32, 200);
    let head = reader.head();
    assert!(
        matches!(head, Err(enforcelog::Error::Tampering { .. })),
        "precondition: a head names the tampering: {head:?}"
    );
    if let (Ok(p), Ok(c)) = (&p, &c) {
        let chain_ok = p.verify().is_ok()
            && c.verify().is_ok()
            && c.old_root == merkle::root(&before[..32])
            && c.new_root == p.root
            && p.leaf_hash == now[40];
        assert!(
            !chain_ok,
            "an auditor holding the honest head at 32 accepts a proof of the rewritten record 40 \
             (no error; the same log's head says Tampering)"
        );
    }
}

/// A read-only store over a directory without a `DURABLE` file (a store
/// last written by a release before it) rebuilds its view at every
/// refresh (`ReadLimit::Unknown`), which now drops its kept tree: with no
/// TREE either, is each refresh + proof a full pass?
#[test]
fn refreshes_without_a_durable_file_keep_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let options = small_segments();
    write_log(dir.path(), &options, b'a', 0, 200);
    std::fs::remove_file(dir.path().join("DURABLE")).ok();
    assert!(!dir.path().join("TREE").exists());
    let reader = Store::open_read_only(dir.path()).unwrap();
    for _ in 0..5 {
        reader.refresh().unwrap();
        reader.prove_inclusion(150, 200).unwrap();
    }
    let passes = reader.metrics().tree_passes;
    assert!(
        passes <= 1,
        "{passes} full passes for 5 refreshes with nothing new"
    );
}
