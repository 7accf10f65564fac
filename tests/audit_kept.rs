//! The tree a store keeps between proofs (`src/audit/kept.rs`): proofs from
//! it are those of the tree of the records by definition while the log
//! grows, rolls segments and is reopened; a log cut back and written again
//! under a kept tree, or rewritten by someone, never gets a proof from the
//! history it no longer holds.

mod common;

use common::segment::{batch_offsets, leaves};

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::format::batch::encode_chained_batch;
use enforcelog::format::decode_batch;
use enforcelog::{Action, Event, Log, LogOptions, Record, Store, StoreOptions};

fn event(i: u64) -> Event {
    // Real-looking: details with runs of zero counts, a run id.
    Event::new(
        format!("tenant-{}", i % 5),
        format!("rule-{}", i % 11),
        Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{}", i / 7))
    .with_details(enforcelog::details!({"step": i, "zeros": [0, 0, 0, 0, 0, 0]}))
}

/// Records `count` events in batches of `batch` (at least one).
fn record(store: &Store, from: u64, count: u64, batch: u64) {
    let mut at = from;
    while at < from + count {
        let end = (from + count).min(at + batch.max(1));
        let mut b = store.begin();
        for i in at..end {
            b.record(event(i)).expect("valid event");
        }
        b.commit_blocking().expect("commit");
        at = end;
    }
}

/// Every proof the store gives for the sizes around `n` is the proof of
/// the tree by definition.
fn check_proofs(store: &Store, all: &[Hash], rng: &mut u64) {
    let n = all.len() as u64;
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    for _ in 0..12 {
        let size = 1 + next() % n;
        let offset = next() % size;
        let p = store.prove_inclusion(offset, size).expect("inclusion");
        assert_eq!(
            p.root,
            merkle::root(&all[..size as usize]),
            "{offset} in {size}"
        );
        assert_eq!(p.leaf_hash, all[offset as usize]);
        assert_eq!(
            p.path,
            merkle::inclusion_proof(all, offset, size).unwrap(),
            "{offset} in {size}"
        );
        p.verify().expect("verifies");
        let old = next() % (size + 1);
        let c = store.prove_consistency(old, size).expect("consistency");
        assert_eq!(c.old_root, merkle::root(&all[..old as usize]));
        assert_eq!(c.new_root, merkle::root(&all[..size as usize]));
        assert_eq!(c.path, merkle::consistency_proof(all, old, size).unwrap());
        c.verify().expect("verifies");
    }
    // The last record, at the log's end (the kept tree's tail).
    let p = store.prove_inclusion(n - 1, n).expect("inclusion");
    assert_eq!(p.root, merkle::root(all));
}

#[test]
fn proofs_from_the_kept_tree_are_the_trees_by_definition_as_the_log_grows_and_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::default();
    // Small segments: the kept tree is extended across rolls.
    options.log.segment_max_bytes = 16 << 10;
    options.log.record_max_bytes = 2 << 10;
    let store = Store::open(dir.path(), options.clone()).unwrap();
    let mut rng = 0x5eed_0019u64;
    let mut written = 0;
    for (count, batch) in [
        (1, 1),
        (15, 15),
        (1, 1),
        (40, 3),
        (300, 64),
        (5, 1),
        (900, 200),
    ] {
        record(&store, written, count, batch);
        written += count;
        let all = leaves(dir.path());
        check_proofs(&store, &all, &mut rng);
        if written == 57 {
            // A head in the middle: it makes a full pass and keeps its tree.
            assert_eq!(store.head().unwrap().root, merkle::root(&all));
        }
    }
    // One pass for the first proof, one for the head; every other proof
    // came from the kept tree, extended by the batches in between.
    assert_eq!(store.metrics().tree_passes, 2);
    assert!(
        common::segment::segment_files(dir.path()).len() > 2,
        "the log rolled"
    );
    store.close().unwrap();
    drop(store);
    // Reopened: the tree the head left on disk, extended; no full pass.
    let store = Store::open(dir.path(), options).unwrap();
    record(&store, written, 77, 9);
    let all = leaves(dir.path());
    check_proofs(&store, &all, &mut rng);
    assert_eq!(store.metrics().tree_passes, 0);
    let reader = Store::open_read_only(dir.path()).unwrap();
    check_proofs(&reader, &all, &mut rng);
    assert_eq!(reader.metrics().tree_passes, 0);
}

/// A log's last batch cut and written again with other records (what a
/// writer reopened after a failed fsync does with the offsets it gives
/// again) while a read-only store keeps the tree of the old one: its next
/// proofs are of the new records. A kept tree that did not check the
/// batch it ends with would answer from the old tail.
#[test]
fn a_log_cut_back_and_written_again_under_a_kept_tree_is_proved_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions::default();
    let payload = |tag: u8, i: u64| {
        let mut p = vec![0u8; 300];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p[8] = tag;
        p
    };
    let writer = Log::open(dir.path(), options.clone()).unwrap();
    // 40 records: blocks 0..16 and 16..32, then 32..40 in the last batch.
    writer
        .append_batch_blocking(
            (0..32)
                .map(|i| Record::new(i, payload(b'a', i as u64)))
                .collect(),
        )
        .unwrap();
    writer
        .append_batch_blocking(
            (32..40)
                .map(|i| Record::new(i, payload(b'a', i as u64)))
                .collect(),
        )
        .unwrap();
    writer.close().unwrap();
    drop(writer);
    std::fs::remove_file(dir.path().join("DURABLE")).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let before = leaves(dir.path());
    let p = reader.prove_inclusion(0, 40).unwrap();
    assert_eq!(p.root, merkle::root(&before));

    // The last batch written again, chained as its writer would.
    let segment = dir.path().join(format!("{:020}.log", 0));
    let bytes = std::fs::read(&segment).unwrap();
    let (pos, first, next) = *batch_offsets(&bytes).last().unwrap();
    assert_eq!((first, next), (32, 40));
    let prev = decode_batch(&bytes[pos..], None).unwrap().prev().unwrap();
    let mut batch = Vec::new();
    let records: Vec<Record> = (32..40)
        .map(|i| Record::new(i, payload(b'b', i as u64)))
        .collect();
    encode_chained_batch(&mut batch, 32, &records, &prev);
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.set_len(pos as u64).unwrap();
        file.write_all_at(&batch, pos as u64).unwrap();
        file.sync_all().unwrap();
    }
    let writer = Log::open(dir.path(), options).unwrap();
    writer
        .append_blocking(Record::new(40, payload(b'a', 40)))
        .unwrap();
    writer.close().unwrap();
    reader.refresh().unwrap();
    let after = leaves(dir.path());
    assert_eq!(after.len(), 41);
    assert_ne!(after[35], before[35], "record 35 was written again");
    // Sizes the kept tree covers first: no extension to catch the change.
    for (offset, size) in [(0, 40), (20, 38), (0, 41), (40, 41)] {
        let p = reader.prove_inclusion(offset, size).unwrap();
        assert_eq!(
            p.root,
            merkle::root(&after[..size as usize]),
            "{offset} in {size}"
        );
        p.verify().unwrap();
    }
    let c = reader.prove_consistency(33, 41).unwrap();
    assert_eq!(c.old_root, merkle::root(&after[..33]));
    c.verify().unwrap();
    // The first proof, then one after the cut: the kept tree was dropped
    // once, and the new one kept.
    assert_eq!(reader.metrics().tree_passes, 2);
}

/// A record rewritten with its checksums and its batch's tag recomputed
/// after a tree was kept: a proof that reads its block fails with the
/// tampering the full pass finds, a head refuses, and a proof of another
/// block still proves the history the tree was checked with (what an
/// auditor's older head holds).
#[test]
fn a_record_rewritten_under_a_kept_tree_is_never_proved_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogOptions::default()).unwrap();
    let payload = |i: u64| {
        let mut p = vec![0u8; 200];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p
    };
    for chunk in 0..8u64 {
        log.append_batch_blocking(
            (chunk * 10..chunk * 10 + 10)
                .map(|i| Record::new(i as i64, payload(i)))
                .collect(),
        )
        .unwrap();
    }
    log.close().unwrap();
    drop(log);
    let store = Store::open_read_only(dir.path()).unwrap();
    let head = store.head().unwrap();
    assert_eq!(head.size, 80);
    let before = leaves(dir.path());

    // Record 25 (block 16..32, batch 20..30) changed, its batch made again
    // with the same `prev`: checksums and tag fit, the next batch's `prev`
    // does not.
    let segment = dir.path().join(format!("{:020}.log", 0));
    let bytes = std::fs::read(&segment).unwrap();
    let (pos, first, next) = batch_offsets(&bytes)[2];
    assert_eq!((first, next), (20, 30));
    let view = decode_batch(&bytes[pos..], None).unwrap();
    let prev = view.prev().unwrap();
    let mut records: Vec<Record> = view
        .frames()
        .map(|f| Record::new(f.timestamp_us, f.payload.to_vec()))
        .collect();
    records[5].payload[100] ^= 1;
    let mut batch = Vec::new();
    encode_chained_batch(&mut batch, 20, &records, &prev);
    assert_eq!(batch.len(), view.len());
    let mut forged = bytes.clone();
    forged[pos..pos + batch.len()].copy_from_slice(&batch);
    std::fs::write(&segment, &forged).unwrap();

    // Another block: from the kept tree, the history it was checked with.
    let p = store.prove_inclusion(70, 80).unwrap();
    assert_eq!(p.root, head.root);
    assert_eq!(p.leaf_hash, before[70]);
    assert_eq!(store.metrics().tree_passes, 1, "the head's pass only");
    // The rewritten record's block: read again, it does not fit; the full
    // pass names the tampering.
    let err = store.prove_inclusion(25, 80).unwrap_err();
    assert!(
        matches!(
            err,
            enforcelog::Error::Tampering {
                first_offset: 30,
                ..
            }
        ),
        "the proof of the rewritten record fails as tampering: {err}"
    );
    assert!(matches!(
        store.head().unwrap_err(),
        enforcelog::Error::Tampering { .. }
    ));
    // Once a pass found it, no tree is kept: every proof fails the same.
    assert!(matches!(
        store.prove_inclusion(70, 80).unwrap_err(),
        enforcelog::Error::Tampering { .. }
    ));
}

/// The file a writer keeps its tree in (`TREE`, derived data): another
/// process's store starts from it without a full pass and extends it; a
/// damaged, cut, foreign or planted-huge file is passed over for a full
/// pass; a block root forged with the file's checksum recomputed gives
/// either an error-free proof of the true records (the block read again
/// fails, a full pass follows) or a proof whose root no head holds.
#[test]
fn the_tree_a_writer_keeps_on_disk_serves_other_processes_and_a_bad_file_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let tree_file = dir.path().join("TREE");
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    record(&store, 0, 500, 37);
    assert!(!tree_file.exists(), "no full pass yet");
    assert_eq!(store.head().unwrap().size, 500);
    assert!(tree_file.exists(), "the head's pass is kept on disk");
    store.close().unwrap();
    drop(store);
    let all = leaves(dir.path());
    let mut rng = 0x7ee5u64;

    // Another process: no full pass, the proofs of the definition.
    let reader = Store::open_read_only(dir.path()).unwrap();
    check_proofs(&reader, &all, &mut rng);
    assert_eq!(reader.metrics().tree_passes, 0, "started from the file");
    drop(reader);

    // Records written since the file: taken in from the log, no full pass.
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    record(&store, 500, 120, 50);
    let grown = leaves(dir.path());
    check_proofs(&store, &grown, &mut rng);
    assert_eq!(store.metrics().tree_passes, 0);
    store.close().unwrap();
    drop(store);

    let good = std::fs::read(&tree_file).unwrap();
    let passes_with = |bytes: &[u8]| -> u64 {
        std::fs::write(&tree_file, bytes).unwrap();
        let reader = Store::open_read_only(dir.path()).unwrap();
        check_proofs(&reader, &grown, &mut 0x51u64);
        reader.metrics().tree_passes
    };
    assert_eq!(passes_with(&good), 0);
    // Damaged (one bit), cut, empty, or another layout: passed over.
    for at in [0, 9, 13, 20, 30, 50, 100, good.len() / 2, good.len() - 1] {
        let mut bad = good.clone();
        bad[at] ^= 0x10;
        assert_eq!(passes_with(&bad), 1, "a flipped bit at {at}");
    }
    assert_eq!(passes_with(&good[..good.len() - 7]), 1);
    assert_eq!(passes_with(&[]), 1);
    // A planted huge file is not read.
    let huge = vec![0u8; 64 << 20];
    assert_eq!(passes_with(&huge), 1);
    // Another log's file: its seal is not this log's.
    let other = tempfile::tempdir().unwrap();
    let store = Store::open(other.path(), StoreOptions::default()).unwrap();
    record(&store, 0, 640, 64);
    store.head().unwrap();
    store.close().unwrap();
    let foreign = std::fs::read(other.path().join("TREE")).unwrap();
    assert_eq!(passes_with(&foreign), 1, "another log's tree");

    // A forged block root, the file's checksum recomputed (what someone
    // who writes the files can do). Block 2 holds offsets 32..48.
    let forge = |block: usize| -> Vec<u8> {
        let mut forged = good[..good.len() - 4].to_vec();
        forged[128 + 32 * block] ^= 0x01; // after the 128-byte header
        let crc = crc32fast::hash(&forged);
        forged.extend_from_slice(&crc.to_le_bytes());
        forged
    };
    std::fs::write(&tree_file, forge(2)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    // A proof that reads the forged block: its records do not hash to the
    // forged root, so a full pass answers, with the true tree.
    let p = reader.prove_inclusion(40, 620).unwrap();
    assert_eq!(p.root, merkle::root(&grown));
    assert_eq!(reader.metrics().tree_passes, 1);
    drop(reader);
    std::fs::write(&tree_file, forge(2)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    // A proof that does not read it names a root no head holds: the
    // auditor's check against the head it kept refuses it.
    let p = reader.prove_inclusion(600, 620).unwrap();
    assert_eq!(p.verify(), Ok(()), "consistent with the root it names");
    assert_ne!(p.root, merkle::root(&grown));
}

/// `repair` rewrites damaged batches below the seal as holes and leaves
/// the seal's batch as it was: the kept tree's file must not outlive it
/// (review 36 finding 1, the file's side: the next process would load the
/// tree of the records before the repair).
#[test]
fn repair_removes_the_kept_tree_file_and_the_next_process_proves_the_holes() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::default();
    options.log.segment_max_bytes = 8 << 10;
    options.log.record_max_bytes = 2 << 10;
    let store = Store::open(dir.path(), options).unwrap();
    record(&store, 0, 200, 10);
    store.head().unwrap();
    store.close().unwrap();
    drop(store);
    let tree_file = dir.path().join("TREE");
    assert!(tree_file.exists());
    let before = leaves(dir.path());
    let segments = common::segment::segment_files(dir.path());
    assert!(segments.len() >= 2, "rolled: {segments:?}");
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (pos, first, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[0], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
    let after = leaves(dir.path());
    assert_ne!(after[first as usize], before[first as usize], "a hole");
    let reader = Store::open_read_only(dir.path()).unwrap();
    check_proofs(&reader, &after, &mut 0x4e9au64);
    assert_eq!(reader.metrics().tree_passes, 1);
    assert!(!tree_file.exists(), "repair removed the kept tree");
}
