//! Review 36: adversarial review of the kept Merkle tree (commit 7d647ab:
//! `src/audit/kept.rs`, `TreeView` block re-reads, `log::batches` walk,
//! `Store::with_tree`). Each test fails if the finding it is named after is
//! real; confirmed ones are `#[ignore]`d with the reason.

mod common;

use common::kept::{event, payload};

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::segment::{batch_offsets, leaves, segment_files};

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::storage::sim::{FaultKind, FaultOp, SimStorage};
use enforcelog::{Durability, Log, LogOptions, Record, Store, StoreOptions};

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
                    "{what}: inclusion {offset} in {size}: root of a tree the log no longer holds"
                );
                assert_eq!(p.leaf_hash, all[offset as usize], "{what}: leaf {offset}");
            }
        }
        for old in [0, 1, size / 2, size] {
            if old > size {
                continue;
            }
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

// ------------------------------------------------------------ 1: repair

/// docs/AUDIT.md: "a read-only view refreshed after a `repair`" no longer
/// shows the seal, and the kept tree is dropped. A repair rewrites only
/// the damaged (sealed) segment; the seal batch, in the last segment, is
/// untouched, and the batch after a hole keeps the `prev` it had. So the
/// seal still matches after the refresh, and every proof that does not
/// read the repaired block again comes from the tree of the records before
/// the repair, while the log now holds holes there.
#[test]
fn a_read_only_store_refreshed_after_a_repair_proves_the_log_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_max_bytes: 8 << 10,
        record_max_bytes: 2 << 10,
        ..LogOptions::default()
    };
    let writer = Log::open(dir.path(), options.clone()).unwrap();
    for chunk in 0..20u64 {
        writer
            .append_batch_blocking(
                (chunk * 10..chunk * 10 + 10)
                    .map(|i| Record::new(i as i64, payload(b'a', i, 200)))
                    .collect(),
            )
            .unwrap();
    }
    writer.close().unwrap();
    drop(writer);
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 3, "precondition: rolled: {segments:?}");

    let reader = Store::open_read_only(dir.path()).unwrap();
    let before = leaves(dir.path());
    let head = reader.head().unwrap();
    assert_eq!(head.root, merkle::root(&before));

    // Damage: one payload byte of the second batch of the first segment.
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (pos, first, _next) = batch_offsets(&bytes)[1];
    assert_eq!(first, 10);
    common::segment::flip(&segments[0], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
    reader.refresh().unwrap();
    let after = leaves(dir.path());
    assert_eq!(after.len(), before.len());
    assert_ne!(after[12], before[12], "precondition: a hole at 12");
    assert_eq!(after[150], before[150]);

    // The new head (a full pass) is the tree of the holes...
    let fresh = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(fresh.head().unwrap().root, merkle::root(&after));
    // ... and so must every proof of the store that kept the old tree be.
    let n = after.len() as u64;
    let p = reader.prove_inclusion(n - 1, n).expect("inclusion");
    assert_eq!(
        p.root,
        merkle::root(&after),
        "the proof's root is the pre-repair tree's (head {}), not the log's now",
        hex(&head.root)
    );
    assert_proofs_match(&reader, &after, "after repair");
}

fn hex(h: &Hash) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------- 1: writer reopen after failed fsync

/// Under `Durability::Interval` a proof's full pass covers the committed
/// (not yet durable) records and keeps their tree; a failed fsync loses
/// them and the supervisor's reopen gives their offsets again. The proofs
/// after it must be of the records the log holds now.
#[test]
fn a_kept_tree_over_records_a_failed_fsync_loses_is_dropped_after_the_reopen() {
    let storage = SimStorage::new(36);
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
        .options(options)
        .open()
        .expect("open the store");
    // Durable base: 20 records, synced by a head (which keeps the tree).
    for n in 0..20 {
        store.record_blocking(event(n)).unwrap();
    }
    store.head().expect("head");
    // Lost: committed, not synced; a proof keeps a tree over them.
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    for n in 0..5 {
        store.record_blocking(event(1000 + n)).unwrap();
    }
    let p = store
        .prove_inclusion(22, 25)
        .expect("proof over the unsynced records");
    p.verify().unwrap();
    let kept_root = p.root;
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
    let all: Vec<Hash> = store
        .log()
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    assert!(all.len() >= 25, "{}", all.len());
    assert_ne!(
        merkle::root(&all[..25]),
        kept_root,
        "precondition: offsets 20..25 were given again to other records"
    );
    assert_proofs_match(&store, &all, "after the reopen");
    store.close().unwrap();
}

// ------------------------- 1: cut at a batch boundary, same boundaries

/// The log cut back at a batch boundary below the seal and written again
/// with the same batch boundaries but other records: every `prev` from
/// the cut on differs, so the seal no longer matches.
#[test]
fn a_log_rewritten_with_the_same_batch_boundaries_is_proved_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default();
    let write = |tag: u8, from: u64| {
        let writer = Log::open(dir.path(), options.clone()).unwrap();
        for chunk in from / 10..6u64 {
            writer
                .append_batch_blocking(
                    (chunk * 10..chunk * 10 + 10)
                        .map(|i| Record::new(i as i64, payload(tag, i, 120)))
                        .collect(),
                )
                .unwrap();
        }
        writer.close().unwrap();
    };
    write(b'a', 0);
    std::fs::remove_file(dir.path().join("DURABLE")).ok();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let before = leaves(dir.path());
    reader.prove_inclusion(59, 60).unwrap();
    // Cut at 30 (a batch boundary), written again: same boundaries.
    let segment = dir.path().join(format!("{:020}.log", 0));
    let bytes = std::fs::read(&segment).unwrap();
    let (pos, first, _) = batch_offsets(&bytes)[3];
    assert_eq!(first, 30);
    {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(pos as u64).unwrap();
        file.sync_all().unwrap();
    }
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") || p.ends_with("DURABLE") {
            std::fs::remove_file(p).ok();
        }
    }
    write(b'b', 30);
    reader.refresh().unwrap();
    let after = leaves(dir.path());
    assert_eq!(after.len(), 60);
    assert_ne!(after[45], before[45]);
    assert_proofs_match(&reader, &after, "rewritten from 30");
}

// ------------------------------------------- 2: edited records, CRC fixed

/// Finds record `offset`'s frame in the segment files and changes one
/// payload byte, CRC recomputed (tag not): returns the segment.
fn edit_record(dir: &std::path::Path, offset: u64, target: &Record) -> std::path::PathBuf {
    use std::os::unix::fs::FileExt;
    let _ = offset;
    for segment in segment_files(dir) {
        let mut bytes = std::fs::read(&segment).unwrap();
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
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.write_all_at(&bytes[frame..at + target.payload.len()], frame as u64)
            .unwrap();
        file.sync_all().unwrap();
        return segment;
    }
    panic!("record not found");
}

/// A record in a complete block of a sealed segment, and one in the tail
/// (active segment), edited with the frame CRC recomputed under a store
/// keeping its tree: the proof of that record is an error or of its new
/// bytes, never of the old ones.
#[test]
fn an_edited_record_in_a_sealed_block_or_the_tail_never_gets_a_proof_of_its_old_bytes() {
    for (victim, size_after) in [(5u64, 300u64), (297, 300), (150, 299)] {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            segment_max_bytes: 8 << 10,
            record_max_bytes: 2 << 10,
            ..LogOptions::default()
        };
        let writer = Log::open(dir.path(), options.clone()).unwrap();
        for chunk in 0..30u64 {
            writer
                .append_batch_blocking(
                    (chunk * 10..chunk * 10 + 10)
                        .map(|i| Record::new(i as i64, payload(b'a', i, 200)))
                        .collect(),
                )
                .unwrap();
        }
        writer.close().unwrap();
        drop(writer);
        let store = Store::open_read_only(dir.path()).unwrap();
        let head = store.head().unwrap();
        assert_eq!(head.size, 300);
        let log = Log::open_read_only(dir.path()).unwrap();
        let target = log.read_from(victim).unwrap().next().unwrap().unwrap();
        let target = Record::new(target.timestamp_us, target.payload.clone());
        let old_leaf = merkle::record_leaf_hash(victim, target.timestamp_us, &target.payload);
        edit_record(dir.path(), victim, &target);
        store.refresh().unwrap();
        match store.prove_inclusion(victim, size_after) {
            Err(_) => {}
            Ok(p) => assert_ne!(
                p.leaf_hash, old_leaf,
                "record {victim}: a proof of its old bytes"
            ),
        }
        // And a proof of a neighbour in the same block.
        let neighbour = if victim % 16 == 0 {
            victim + 1
        } else {
            victim - 1
        };
        if let Ok(p) = store.prove_inclusion(neighbour, size_after) {
            // Its path covers the victim's old leaf: the block was read again.
            let now = leaves_lenient(dir.path());
            if let Some(now) = now {
                assert_eq!(
                    p.root,
                    merkle::root(&now[..size_after as usize]),
                    "record {victim}: a neighbour's proof over the old leaf"
                );
            }
        }
    }
}

fn leaves_lenient(dir: &std::path::Path) -> Option<Vec<Hash>> {
    let log = Log::open_read_only(dir).ok()?;
    let mut out = Vec::new();
    for r in log.read_from(0).ok()? {
        let r = r.ok()?;
        out.push(merkle::record_leaf_hash(
            r.offset,
            r.timestamp_us,
            &r.payload,
        ));
    }
    Some(out)
}

// ----------------------------------------------- 3: edges, threads

#[test]
fn proofs_at_edges_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(store.prove_consistency(0, 0).is_ok() || store.prove_consistency(0, 0).is_err());
    assert!(store.prove_inclusion(0, 0).is_err());
    for n in 0..37 {
        store.record_blocking(event(n)).unwrap();
    }
    store.head().unwrap();
    let passes = store.metrics().tree_passes;
    for (o, s) in [
        (0, u64::MAX),
        (u64::MAX, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (36, 37),
        (0, 38),
    ] {
        let _ = store.prove_inclusion(o, s);
    }
    for (o, s) in [
        (0, u64::MAX),
        (u64::MAX, u64::MAX),
        (u64::MAX, 0),
        (0, 0),
        (37, 37),
        (38, 37),
    ] {
        let _ = store.prove_consistency(o, s);
    }
    let c = store.prove_consistency(0, 0).unwrap();
    c.verify().unwrap();
    let all: Vec<Hash> = store
        .log()
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    // Sizes mid-block and mid-batch.
    assert_proofs_match(&store, &all, "edges");
    assert_eq!(
        store.metrics().tree_passes,
        passes,
        "all from the head's tree"
    );
    store.close().unwrap();
}

/// Proofs while another thread commits: each proof is of the records the
/// log holds (which never change here), none panics or hangs, and the kept
/// tree is extended rather than remade.
#[test]
fn proofs_while_another_thread_commits_match_and_make_few_passes() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::default();
    options.log.segment_max_bytes = 16 << 10;
    options.log.record_max_bytes = 2 << 10;
    let store = Arc::new(Store::open(dir.path(), options).unwrap());
    for n in 0..20 {
        store.record_blocking(event(n)).unwrap();
    }
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for n in 20..1500u64 {
                if n % 7 == 0 {
                    let mut b = store.begin();
                    for k in 0..5 {
                        b.record(event(n * 10 + k)).unwrap();
                    }
                    b.commit_blocking().unwrap();
                } else {
                    store.record_blocking(event(n)).unwrap();
                }
            }
        })
    };
    let mut proofs = Vec::new();
    let started = Instant::now();
    while !writer.is_finished() {
        let n = store.log().next_offset();
        if n < 2 {
            continue;
        }
        let p = store.prove_inclusion(n / 2, n).expect("inclusion");
        let c = store.prove_consistency(n / 3, n).expect("consistency");
        proofs.push((p, c));
        assert!(started.elapsed() < Duration::from_secs(120), "hang");
    }
    writer.join().unwrap();
    let all: Vec<Hash> = store
        .log()
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    for (p, c) in &proofs {
        assert_eq!(p.root, merkle::root(&all[..p.tree_size as usize]));
        assert_eq!(p.leaf_hash, all[p.leaf_index as usize]);
        assert_eq!(c.new_root, merkle::root(&all[..c.new_size as usize]));
        p.verify().unwrap();
        c.verify().unwrap();
    }
    let passes = store.metrics().tree_passes;
    assert!(proofs.len() > 10, "{}", proofs.len());
    assert!(
        passes <= 2,
        "{passes} full passes for {} proofs while a writer committed",
        proofs.len()
    );
}

// ------------------------------------------------------------- 4: cost

/// A writer committing between proofs (Durability::Interval), and a
/// read-only store refreshed between proofs: the kept tree is extended,
/// not remade.
#[test]
fn committing_between_proofs_does_not_make_a_full_pass_each_time() {
    for durability in [
        Durability::Fsync,
        Durability::None,
        Durability::Interval(Duration::from_millis(2)),
        Durability::Interval(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::default();
        options.log.durability = durability;
        options.log.segment_max_bytes = 16 << 10;
        options.log.record_max_bytes = 2 << 10;
        let store = Store::open(dir.path(), options).unwrap();
        for n in 0..10 {
            store.record_blocking(event(n)).unwrap();
        }
        store.flush_blocking().unwrap();
        let reader = Store::open_read_only(dir.path()).unwrap();
        for round in 0..40u64 {
            for n in 0..(round % 5 + 1) {
                store.record_blocking(event(100 * round + n)).unwrap();
            }
            let n = store.log().next_offset();
            store.prove_inclusion(n - 1, n).unwrap().verify().unwrap();
            if round % 3 == 0 {
                store.flush_blocking().unwrap();
                reader.refresh().unwrap();
                let m = reader.log().next_offset();
                reader.prove_inclusion(m - 1, m).unwrap().verify().unwrap();
            }
        }
        assert_eq!(
            store.metrics().tree_passes,
            1,
            "{durability:?}: the writer remade its tree"
        );
        // The reader starts from the tree the writer left on disk (TREE,
        // added after this review), so it makes no full pass at all.
        assert_eq!(
            reader.metrics().tree_passes,
            0,
            "{durability:?}: the reader remade its tree"
        );
        store.close().unwrap();
    }
}

/// A proof right after a roll, and proofs in a read-only store that is
/// never refreshed: no full pass each time.
#[test]
fn proofs_right_after_rolls_are_extended_not_remade() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::default();
    options.log.segment_max_bytes = 4 << 10;
    options.log.record_max_bytes = 1 << 10;
    let store = Store::open(dir.path(), options).unwrap();
    store.record_blocking(event(0)).unwrap();
    let mut rolls = 0;
    let mut segments = segment_files(dir.path()).len();
    for n in 1..400 {
        store.record_blocking(event(n)).unwrap();
        let now = segment_files(dir.path()).len();
        if now != segments {
            rolls += 1;
            segments = now;
            let size = store.log().next_offset();
            let p = store.prove_inclusion(size - 1, size).unwrap();
            p.verify().unwrap();
            store.prove_consistency(1, size).unwrap().verify().unwrap();
        }
    }
    assert!(rolls > 3, "{rolls}");
    assert_eq!(store.metrics().tree_passes, 1);
    let reader = Store::open_read_only(dir.path()).unwrap();
    for _ in 0..20 {
        let m = reader.log().next_offset();
        reader.prove_inclusion(0, m).unwrap();
    }
    // From the writer's TREE file (added after this review).
    assert_eq!(reader.metrics().tree_passes, 0);
    store.close().unwrap();
}

/// Format 1 logs have no seal: documented as a full pass per proof.
/// Sharded stores: another shard's log is opened for each question; its
/// kept tree must still be used.
#[test]
fn another_shards_kept_tree_is_used_across_proofs() {
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
    // Shard 1's writer keeps its tree on disk (TREE, added after this
    // review): another shard's log is opened for each question, so its
    // proofs start from that file, not from a tree kept in `a`'s memory
    // over another handle (see review 36 finding 1).
    b.shard_head(1).unwrap();
    for _ in 0..5 {
        let p = a.prove_inclusion_in_shard(1, 39, 40).unwrap();
        p.verify().unwrap();
    }
    assert_eq!(a.metrics().tree_passes, 0, "shard 1's file");
    let heads = a.heads().unwrap();
    assert_eq!(heads.len(), 2);
    let p = a.prove_inclusion_in_shard(1, 3, 40).unwrap();
    assert_eq!(p.root, heads[1].root);
    b.record_blocking(event(5000)).unwrap();
    b.flush_blocking().unwrap();
    let p = a.prove_inclusion_in_shard(1, 40, 41).unwrap();
    p.verify().unwrap();
    let h = b.shard_head(1).unwrap();
    assert_eq!(p.root, h.root);
    // The two heads' passes; the proofs came from shard 1's file, extended.
    assert_eq!(a.metrics().tree_passes, 2);
    a.close().unwrap();
    b.close().unwrap();
}

/// A format 1 log (no links, so no seal): every proof makes a full pass
/// (documented), and every proof is the tree's by definition as it grows.
#[test]
fn a_format_1_log_is_proved_as_it_is_with_a_pass_per_proof() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("VERSION"), "enforcelog-log 1\n").unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    for n in 0..50 {
        store.record_blocking(event(n)).unwrap();
    }
    let all = leaves(dir.path());
    let before = store.metrics().tree_passes;
    assert_proofs_match(&store, &all, "format 1");
    let passes = store.metrics().tree_passes - before;
    assert!(passes > 10, "a full pass per proof: {passes}");
    store.close().unwrap();
}

/// The seal batch itself (the log's last) damaged and made a hole by
/// `repair`: a read-only store refreshed after it proves the holes.
#[test]
fn the_seal_batch_made_a_hole_by_repair_drops_the_kept_tree() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_max_bytes: 8 << 10,
        record_max_bytes: 2 << 10,
        ..LogOptions::default()
    };
    let writer = Log::open(dir.path(), options.clone()).unwrap();
    for chunk in 0..20u64 {
        writer
            .append_batch_blocking(
                (chunk * 10..chunk * 10 + 10)
                    .map(|i| Record::new(i as i64, payload(b'a', i, 200)))
                    .collect(),
            )
            .unwrap();
    }
    writer.close().unwrap();
    drop(writer);
    let reader = Store::open_read_only(dir.path()).unwrap();
    let before = leaves(dir.path());
    reader.head().unwrap();
    let last = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    let (pos, first, next) = *batch_offsets(&bytes).last().unwrap();
    assert_eq!((first, next), (190, 200));
    common::segment::flip(&last, pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
    reader.refresh().unwrap();
    let after = leaves_lenient(dir.path()).expect("the repaired log reads");
    assert_eq!(after.len(), 200, "the hole keeps the offsets");
    assert_ne!(after[195], before[195], "precondition: a hole at 195");
    assert_proofs_match(&reader, &after, "seal made a hole");
}
