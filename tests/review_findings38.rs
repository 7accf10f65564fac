//! Review 38: adversarial review of 4dc34c1 (a kept tree remembers the
//! repairs its directory's quarantine showed before the pass that made it,
//! `Log::repairs_seen`, and is checked against them whenever used over
//! another view; over the same view it is trusted without a syscall). Each
//! test fails if the finding it is named after is real; confirmed ones are
//! `#[ignore]`d with the reason.

mod common;

use common::kept::{describe, small_segments, store_options, write_log};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::segment::{batch_offsets, leaves, segment_files};

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::{Action, Event, Store};

fn event(i: u64) -> Event {
    Event::new(
        format!("tenant-{}", i % 5),
        format!("rule-{}", i % 11),
        Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{}", i / 7))
    .with_details(enforcelog::details!({"step": i, "note": "review 38"}))
}

/// A writer store over `dir` makes a head (a full pass) and leaves TREE.
fn leave_tree(dir: &Path) -> Vec<u8> {
    let store = Store::open(dir, store_options()).unwrap();
    store.head().unwrap();
    store.close().unwrap();
    drop(store);
    std::fs::read(dir.join("TREE")).expect("the head left TREE")
}

/// Damages the second batch of segment `which` of the log in `dir` (a
/// flipped payload byte) and repairs it; returns the quarantine entry.
fn damage_and_repair(dir: &Path, which: usize) -> PathBuf {
    let segments = segment_files(dir);
    assert!(segments.len() > which, "rolled: {segments:?}");
    let bytes = std::fs::read(&segments[which]).unwrap();
    let (pos, _, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[which], pos + 150, 0x20);
    let report = enforcelog::log::repair_dir(dir).unwrap();
    assert!(!report.actions.is_empty(), "{report:?}");
    report.quarantine.expect("a quarantine entry")
}

fn quarantine_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("quarantine")) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The root `store` proves for the whole log of `all.len()` records,
/// asked at its last record (a block the repair did not touch).
fn proved_root(store: &Store, all: &[Hash]) -> Hash {
    let n = all.len() as u64;
    store.prove_inclusion(n - 1, n).expect("inclusion").root
}

// ------------------------- 1: repairs that leave `repairs_seen` the same

/// A read-only store that took its tree from TREE (or any tree whose full
/// pass it did not make itself) and is not refreshed: its view stays the
/// same across a repair, so the tree is trusted without looking at the
/// quarantine. Its sealed segments are opened from their index files and
/// mapped by name on first use, so a segment the repair replaced is read as
/// the repaired file by this same view: the view's reads show the hole,
/// its proofs the records before the repair.
#[test]
fn a_same_view_read_only_store_across_a_repair_proves_what_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    leave_tree(dir.path());
    let before = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    assert_eq!(reader.metrics().tree_passes, 0, "from TREE");
    // The writer is closed; the repair takes the lock. No refresh.
    damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    assert_ne!(merkle::root(&after), merkle::root(&before));
    // What this same view reads at the repaired batch now.
    let seg0 = std::fs::read(&segment_files(dir.path())[0]).unwrap();
    let first = batch_offsets(&seg0)[1].1;
    let read_here = reader
        .log()
        .read_from(first)
        .ok()
        .and_then(|mut it| it.next())
        .and_then(|r| r.ok())
        .map(|r| merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload));
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "same view after a repair: proved {} (this view reads record {first} as {}; \
         {} full passes)",
        describe(root, &before, &after),
        match read_here {
            Some(h) if h == after[first as usize] => "the repaired record",
            Some(h) if h == before[first as usize] => "the record before the repair",
            Some(_) => "something else",
            None => "an error",
        },
        reader.metrics().tree_passes,
    );
}

/// The same with a refresh: the replaced segment's stamp differs, the view
/// is built again, the quarantine is listed and the tree dropped.
#[test]
fn a_refreshed_read_only_store_across_a_repair_drops_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    leave_tree(dir.path());
    let before = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    reader.refresh().unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "{}",
        describe(root, &before, &after)
    );
}

/// The quarantine's pair is not monotonic: an operator who reviews what a
/// repair quarantined and removes that entry (or the whole `quarantine/`
/// directory: the CLI lists it, nothing says it must stay) puts the pair
/// back to what it was before the repair. A tree kept before the repair,
/// used over a rebuilt view (a refresh), then matches, its seal too.
#[test]
fn a_repair_whose_quarantine_entry_is_removed_after_it_is_still_seen() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    let before = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    // No TREE: the reader's own full pass, kept with (0, 0).
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    assert_eq!(reader.metrics().tree_passes, 1);
    damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    // Reviewed, then cleaned up.
    std::fs::remove_dir_all(dir.path().join("quarantine")).unwrap();
    reader.refresh().unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "rebuilt view, quarantine removed after the repair: proved {} ({} full passes)",
        describe(root, &before, &after),
        reader.metrics().tree_passes
    );
}

/// The same through TREE: a file left across a repair (an older release's
/// repair, a restored backup: review 37 finding 1) whose entry is pruned
/// afterwards, the other entries left (keep the last few).
#[test]
fn a_tree_file_left_across_a_pruned_repair_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    // An earlier repair, long reviewed: its entry stays.
    damage_and_repair(dir.path(), 2);
    let before = leaves(dir.path());
    let good = leave_tree(dir.path());
    assert_eq!(quarantine_entries(dir.path()).len(), 1);
    let entry = damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    std::fs::remove_dir_all(&entry).unwrap();
    std::fs::write(dir.path().join("TREE"), &good).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "proved {}",
        describe(root, &before, &after)
    );
}

/// Refuted: an entry removed by hand before the next repair, or the whole
/// quarantine removed and made again by it: the new entry's name (a later
/// time) differs from the greatest before.
#[test]
fn a_quarantine_removed_then_made_again_by_a_repair_is_seen() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    damage_and_repair(dir.path(), 2);
    let before = leaves(dir.path());
    let good = leave_tree(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    // Cleaned up, then a second repair makes the directory again.
    std::fs::remove_dir_all(dir.path().join("quarantine")).unwrap();
    damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    assert_eq!(quarantine_entries(dir.path()).len(), 1, "(1, later)");
    reader.refresh().unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "{}",
        describe(root, &before, &after)
    );
    std::fs::write(dir.path().join("TREE"), &good).unwrap();
    let other = Store::open_read_only(dir.path()).unwrap();
    let root = proved_root(&other, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "TREE: {}",
        describe(root, &before, &after)
    );
}

/// Refuted: names that are not numbers (an operator's notes, a file) count;
/// a repair beside them changes the count.
#[test]
fn entries_that_are_not_numbers_do_not_hide_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    let q = dir.path().join("quarantine");
    std::fs::create_dir_all(q.join("notes")).unwrap();
    std::fs::write(q.join("README"), b"reviewed").unwrap();
    std::fs::write(q.join("+18446744073709551615"), b"").unwrap();
    let before = leaves(dir.path());
    let good = leave_tree(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    damage_and_repair(dir.path(), 0);
    let after = leaves(dir.path());
    reader.refresh().unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "{}",
        describe(root, &before, &after)
    );
    std::fs::write(dir.path().join("TREE"), &good).unwrap();
    let other = Store::open_read_only(dir.path()).unwrap();
    let root = proved_root(&other, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "TREE: {}",
        describe(root, &before, &after)
    );
}

/// Refuted: a repair of another shard's directory (its own quarantine,
/// shards/<n>/quarantine) is seen by the tree a store keeps of that shard.
#[test]
fn a_repair_of_another_shards_directory_drops_the_tree_kept_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), store_options()).expect("shard 0");
    let b = Store::open(dir.path(), store_options()).expect("shard 1");
    assert_eq!((a.shard(), b.shard()), (0, 1));
    for chunk in 0..20u64 {
        let mut batch = b.begin();
        for i in chunk * 10..chunk * 10 + 10 {
            batch.record(event(i)).unwrap();
        }
        batch.commit_blocking().unwrap();
    }
    a.record_blocking(event(0)).unwrap();
    b.flush_blocking().unwrap();
    b.close().unwrap();
    drop(b);
    let shard1 = dir.path().join("shards").join("1");
    let before = leaves(&shard1);
    let n = before.len() as u64;
    for _ in 0..3 {
        let p = a.prove_inclusion_in_shard(1, n - 1, n).unwrap();
        assert_eq!(p.root, merkle::root(&before));
    }
    let passes = a.metrics().tree_passes;
    assert!(passes <= 1, "{passes}");
    damage_and_repair(&shard1, 0);
    let after = leaves(&shard1);
    assert!(dir.path().join("shards/1/quarantine").exists());
    let p = a.prove_inclusion_in_shard(1, n - 1, n).unwrap();
    assert_eq!(
        p.root,
        merkle::root(&after),
        "{}",
        describe(p.root, &before, &after)
    );
    a.close().unwrap();
}

// --------------------------------- 3: a full pass per proof in ordinary use

/// A `quarantine` that cannot be listed (here a file where the directory
/// would be; an unreadable directory does the same for a reader of another
/// user) makes `repairs_seen` `None`, and `fresh_tree` then keeps nothing:
/// every proof, even of a writer over its own view (where the pair is never
/// looked at again), is a full pass. Before 4dc34c1 the tree was kept.
#[test]
fn an_unlistable_quarantine_does_not_make_every_proof_a_full_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), store_options()).unwrap();
    std::fs::write(dir.path().join("quarantine"), b"not a directory").unwrap();
    for i in 0..100 {
        store.record_blocking(event(i)).unwrap();
    }
    store.flush_blocking().unwrap();
    for _ in 0..5 {
        store.prove_inclusion(99, 100).unwrap().verify().unwrap();
    }
    let passes = store.metrics().tree_passes;
    store.close().unwrap();
    assert!(passes <= 1, "{passes} full passes for 5 proofs");
}

/// Refuted: a read-only store refreshed in a loop while a writer appends
/// (incremental refreshes: the same view) and proofs of several other
/// shards asked in turn make no full pass per proof.
#[test]
fn refresh_loops_and_many_shards_do_not_make_a_full_pass_per_proof() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), store_options()).unwrap();
    for i in 0..50 {
        store.record_blocking(event(i)).unwrap();
    }
    store.flush_blocking().unwrap();
    store.head().unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    for round in 0..20u64 {
        for i in 0..10 {
            store.record_blocking(event(1000 + round * 10 + i)).unwrap();
        }
        store.flush_blocking().unwrap();
        reader.refresh().unwrap();
        let n = reader.log().next_offset();
        reader.prove_inclusion(n / 2, n).unwrap().verify().unwrap();
        reader
            .prove_consistency(n / 3, n)
            .unwrap()
            .verify()
            .unwrap();
    }
    let passes = reader.metrics().tree_passes;
    assert!(
        passes <= 1,
        "reader: {passes} full passes over 20 refreshes"
    );
    store.close().unwrap();

    let root = tempfile::tempdir().unwrap();
    let shards: Vec<Store> = (0..5)
        .map(|_| Store::open(root.path(), store_options()).unwrap())
        .collect();
    for (s, store) in shards.iter().enumerate() {
        for i in 0..30 {
            store.record_blocking(event(s as u64 * 100 + i)).unwrap();
        }
        store.flush_blocking().unwrap();
    }
    for _ in 0..4 {
        for shard in 1..5u32 {
            shards[0]
                .prove_inclusion_in_shard(shard, 5, 30)
                .unwrap()
                .verify()
                .unwrap();
        }
    }
    let passes = shards[0].metrics().tree_passes;
    for store in shards {
        store.close().unwrap();
    }
    assert!(
        passes <= 4,
        "{passes} full passes for 16 proofs of 4 shards"
    );
}

// ------------------------------------------- 4: odd quarantine contents

/// Refuted: a huge quarantine with odd names (non-numbers, numbers too large
/// for u64, signs, leading zeros, files beside directories, a non-UTF-8
/// name) neither panics nor hangs, and the tree is still reused.
#[test]
fn odd_and_huge_quarantines_neither_panic_nor_hang() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    let q = dir.path().join("quarantine");
    std::fs::create_dir_all(&q).unwrap();
    for i in 0..20_000u64 {
        let name = match i % 5 {
            0 => format!("{i}"),
            1 => format!("{i:020}"),
            2 => format!("x{i}"),
            3 => format!("+{i}"),
            _ => format!("{}{i}", u64::MAX),
        };
        if i % 2 == 0 {
            std::fs::write(q.join(name), b"").unwrap();
        } else {
            std::fs::create_dir(q.join(name)).unwrap();
        }
    }
    {
        use std::os::unix::ffi::OsStrExt;
        std::fs::write(q.join(std::ffi::OsStr::from_bytes(b"\xff\xfe-bad")), b"").unwrap();
    }
    std::fs::write(q.join("-1"), b"").unwrap();
    let all = leaves(dir.path());
    let started = Instant::now();
    leave_tree(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    for _ in 0..20 {
        reader.refresh().unwrap();
        assert_eq!(proved_root(&reader, &all), merkle::root(&all));
    }
    assert_eq!(reader.metrics().tree_passes, 0, "from TREE");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(60), "{took:?}");
}

// ------------------ 2: same-view changes by enforcelog itself (a racing repair)

/// The file system, with the repair held at its first segment rename: its
/// quarantine entry is made, TREE removed, the durable end withdrawn, no
/// segment replaced yet.
#[derive(Debug)]
struct Gated {
    inner: enforcelog::storage::FileStorage,
    reached: std::sync::mpsc::Sender<()>,
    go: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    held: std::sync::atomic::AtomicBool,
}

impl enforcelog::storage::Storage for Gated {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn open(
        &self,
        path: &Path,
        mode: enforcelog::storage::OpenMode,
    ) -> std::io::Result<std::sync::Arc<dyn enforcelog::storage::StorageFile>> {
        self.inner.open(path, mode)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        if to.extension().is_some_and(|e| e == "log")
            && !self.held.swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            self.reached.send(()).unwrap();
            self.go.lock().unwrap().recv().unwrap();
        }
        self.inner.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn try_lock(&self, path: &Path) -> std::io::Result<Box<dyn enforcelog::storage::LockGuard>> {
        self.inner.try_lock(path)
    }
}

/// Refuted: a read-only store refreshed and asked for proofs while a repair
/// is between its quarantine entry and its segment renames makes its full
/// pass over the old (damaged) files, which fails, so no tree is kept with
/// the new entry over the records before the repair; after the repair a
/// refresh and a proof give the repaired log's tree.
#[test]
fn a_repair_racing_a_read_only_refresh_leaves_no_stale_tree() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &small_segments(), b'a', 0, 200);
    leave_tree(dir.path());
    let before = leaves(dir.path());
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(proved_root(&reader, &before), merkle::root(&before));
    let segments = segment_files(dir.path());
    let bytes = std::fs::read(&segments[0]).unwrap();
    let (pos, _, _) = batch_offsets(&bytes)[1];
    common::segment::flip(&segments[0], pos + 150, 0x20);
    let (reached_tx, reached) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let gated = Gated {
        inner: enforcelog::storage::FileStorage,
        reached: reached_tx,
        go: std::sync::Mutex::new(go_rx),
        held: std::sync::atomic::AtomicBool::new(false),
    };
    let path = dir.path().to_path_buf();
    let repair = std::thread::spawn(move || enforcelog::log::repair(&gated, &path).unwrap());
    reached.recv_timeout(Duration::from_secs(60)).unwrap();
    // Mid-repair: the reader refreshes and asks, as a busy reader would.
    let _ = reader.refresh();
    let n = before.len() as u64;
    let mid = reader.prove_inclusion(n - 1, n);
    let _ = reader.head();
    go.send(()).unwrap();
    let report = repair.join().unwrap();
    assert!(!report.actions.is_empty());
    let after = leaves(dir.path());
    reader.refresh().unwrap();
    let root = proved_root(&reader, &after);
    assert_eq!(
        root,
        merkle::root(&after),
        "after a repair raced: {} (mid-repair proof: {:?})",
        describe(root, &before, &after),
        mid.map(|p| describe(p.root, &before, &after))
    );
}
