//! A read-only refresh costs what changed, not the whole log, and reads
//! exactly what a fresh open reads: across a roll, across many rolls, and
//! when another process replaced or rewrote a segment meanwhile.
//!
//! Costs are counted through the storage seam (bytes read or mapped, see
//! `common::counting`), never timed. The timing of a refresh of a peer
//! with a million events is printed by `benches/refresh.rs`.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::counting::{Counters, Counting};
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{Action, Durability, Event, Log, LogOptions, Record, Store, StoreOptions};
use serde_json::{json, Map, Value};

const DIR: &str = "/data/log";

/// Small segments, so that a log of a few hundred records has dozens.
fn options() -> LogOptions {
    LogOptions {
        segment_max_bytes: 128 << 10,
        record_max_bytes: 70_000,
        durability: Durability::Fsync,
        ..LogOptions::default()
    }
}

/// A payload as hosts send them: mostly a run of zeros (a histogram of
/// zero counts) with a little text, now and then near 64 KiB.
fn payload(i: u64) -> Vec<u8> {
    let len = match i % 11 {
        3 => 64 << 10,
        7 => 4000,
        _ => 300 + (i % 5) as usize * 100,
    };
    let mut bytes = vec![0u8; len];
    let text = format!("{{\"run\":\"run-{i}\",\"nested\":{{\"a\":{{\"b\":{i}}}}}}}");
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    bytes
}

fn append(log: &Log, from: u64, count: u64) {
    for i in from..from + count {
        log.append_batch_blocking(vec![
            Record::new(i as i64 * 1000, payload(i)),
            Record::new(i as i64 * 1000 + 1, payload(i + 1)),
        ])
        .expect("append");
    }
}

/// Everything `log` reads, or the first error.
fn contents(log: &Log) -> Result<Vec<(u64, i64, Vec<u8>)>, String> {
    log.read_from(0)
        .map_err(|e| e.to_string())?
        .map(|r| {
            r.map(|r| (r.offset, r.timestamp_us, r.payload))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// What a read-only open made now reads.
fn fresh(sim: &SimStorage) -> Result<Vec<(u64, i64, Vec<u8>)>, String> {
    let log =
        Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).map_err(|e| e.to_string())?;
    contents(&log)
}

fn segment_names(sim: &SimStorage, dir: &str) -> Vec<String> {
    let mut names: Vec<String> = sim
        .list(Path::new(dir))
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// Bytes of every segment file in `dir` up to its last batch: the zeros a
/// writer fills its active segment with ahead of itself
/// (`preallocate_segments`) are not written data (a batch ends in a
/// non-zero marker byte, so trimming zeros never cuts one).
fn segment_bytes(sim: &SimStorage, dir: &str) -> u64 {
    segment_names(sim, dir)
        .iter()
        .map(|n| {
            sim.read_file(Path::new(dir).join(n)).map_or(0, |b| {
                b.iter().rposition(|&x| x != 0).map_or(0, |i| i as u64 + 1)
            })
        })
        .sum()
}

fn counting(sim: &SimStorage) -> (Arc<Counting>, Arc<Counters>) {
    let counters = Arc::new(Counters::default());
    let storage = Arc::new(Counting {
        inner: sim.clone(),
        counters: counters.clone(),
    });
    (storage, counters)
}

/// The bug: every refresh reopened every segment and read the whole last
/// one, so a reader of a busy log re-read it all each time the writer's
/// durable end moved. Now a refresh after one more batch reads that batch
/// (and the 32-byte durable end), nothing else.
#[test]
fn refresh_after_one_more_batch_reads_that_batch_not_every_segment() {
    let sim = SimStorage::new(11);
    let writer = Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer");
    append(&writer, 0, 400);
    let segments = segment_names(&sim, DIR).len();
    assert!(segments > 20, "setup: {segments} segments");
    let (storage, counters) = counting(&sim);
    let reader = Log::open_read_only_with_storage(storage, DIR).expect("reader");
    assert_eq!(contents(&reader), fresh(&sim), "setup");
    for round in 0..20u64 {
        let written_before = segment_bytes(&sim, DIR);
        append(&writer, 400 + round, 1);
        let written = segment_bytes(&sim, DIR) - written_before;
        counters.bytes_read.store(0, Ordering::SeqCst);
        reader.refresh().expect("refresh");
        let read = counters.bytes_read.load(Ordering::SeqCst);
        assert_eq!(reader.next_offset(), writer.next_offset());
        if segment_names(&sim, DIR).len() == segments {
            // The durable end (32 bytes) and the new batch.
            assert!(
                read <= written + 32,
                "round {round}: the refresh read {read} bytes for {written} new ones \
                 ({segments} segments)"
            );
        }
    }
    assert_eq!(contents(&reader), fresh(&sim));
}

/// The same through the shards' refresher: a store's refresh of another
/// shard and the catch-up of that shard's statistics read what the other
/// writer added (the catch-up reads from the index entry before it, at
/// most one index interval back), not the shard.
#[test]
fn peer_refresh_and_catch_up_read_what_the_other_shard_added_not_the_shard() {
    const ROOT: &str = "/data/store";
    let sim = SimStorage::new(12);
    let store_options = StoreOptions {
        log: LogOptions {
            segment_max_bytes: 128 << 10,
            record_max_bytes: 100 << 10,
            ..LogOptions::default()
        },
        shard_refresh_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    };
    let (storage, counters) = counting(&sim);
    let a = Store::builder(ROOT)
        .storage(storage)
        .options(store_options.clone())
        .open()
        .expect("a");
    let b = Store::builder(ROOT)
        .storage(Arc::new(sim.clone()))
        .options(store_options.clone())
        .open()
        .expect("b");
    assert_eq!((a.shard(), b.shard()), (0, 1));
    for i in 0..600 {
        b.record_blocking(event(i)).expect("b records");
    }
    let shard = format!("{ROOT}/shards/1");
    let setup = segment_names(&sim, &shard).len();
    assert!(setup > 8, "setup: {setup} segments");
    a.refresh().expect("refresh");
    let interval = store_options.log.index_interval_bytes;
    for i in 600..620 {
        let before = segment_bytes(&sim, &shard);
        let segments = segment_names(&sim, &shard).len();
        b.record_blocking(event(i)).expect("b records");
        let written = segment_bytes(&sim, &shard) - before;
        counters.bytes_read.store(0, Ordering::SeqCst);
        a.refresh().expect("refresh");
        let read = counters.bytes_read.load(Ordering::SeqCst);
        assert_eq!(
            tenant_total(&a, "tenant-b"),
            i + 1,
            "a sees every event of b"
        );
        if segment_names(&sim, &shard).len() == segments {
            assert!(
                read <= 2 * written + interval + 4096,
                "event {i}: a's refresh read {read} bytes for {written} new ones"
            );
        }
    }
}

fn event(i: u64) -> Event {
    let mut nested = json!({"leaf": i, "zeros": "\u{0}".repeat(48)});
    for depth in 0..8 {
        nested = json!({"level": depth, "inner": nested});
    }
    let mut details = Map::new();
    details.insert("request".into(), nested);
    if i % 9 == 4 {
        details.insert("blob".into(), Value::String("\u{0}z".repeat(8 * 1024)));
    }
    Event::new(
        "tenant-b",
        format!("rule-{}", i % 3),
        Action::ALL[(i % 4) as usize],
    )
    .at_us(1_790_812_800_000_000 - i as i64)
    .with_run_id(format!("run-b-{i}"))
    .with_details(details)
}

fn tenant_total(store: &Store, tenant: &str) -> u64 {
    store
        .stats_for_tenant(tenant, Some(1_800_000_000_000_000))
        .expect("stats")
        .iter()
        .map(|s| s.total_count)
        .sum()
}

#[test]
fn refresh_across_a_roll_reads_what_a_fresh_open_reads() {
    let sim = SimStorage::new(13);
    let writer = Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer");
    append(&writer, 0, 30);
    let reader = Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).expect("reader");
    assert_eq!(contents(&reader), fresh(&sim));
    let segments = segment_names(&sim, DIR).len();
    let mut i = 30;
    while segment_names(&sim, DIR).len() == segments {
        append(&writer, i, 1);
        i += 1;
    }
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), writer.next_offset());
    assert_eq!(contents(&reader), fresh(&sim));
}

#[test]
fn refresh_across_many_rolls_reads_what_a_fresh_open_reads() {
    let sim = SimStorage::new(14);
    let writer = Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer");
    append(&writer, 0, 10);
    let reader = Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).expect("reader");
    let before = segment_names(&sim, DIR).len();
    append(&writer, 10, 300);
    assert!(segment_names(&sim, DIR).len() > before + 10, "setup");
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), writer.next_offset());
    assert_eq!(contents(&reader), fresh(&sim));
}

/// Damage in a sealed segment the reader already read, then `repair` by
/// another process (a new file renamed over it, holes for the damage): the
/// refresh reads the repaired log, not what it read before.
#[test]
fn a_sealed_segment_replaced_by_repair_is_read_again_not_served_stale() {
    let sim = SimStorage::new(15);
    let writer = Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer");
    append(&writer, 0, 120);
    writer.close().expect("close");
    drop(writer);
    let reader = Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).expect("reader");
    let before = contents(&reader).expect("read");
    let victim = Path::new(DIR).join(&segment_names(&sim, DIR)[3]);
    flip_a_payload_bit(&sim, &victim);
    enforcelog::log::repair(&sim, Path::new(DIR)).expect("repair");
    reader.refresh().expect("refresh");
    let after = contents(&reader);
    assert_eq!(after, fresh(&sim));
    assert_ne!(
        after,
        Ok(before),
        "the repair made a hole the reader must see"
    );
}

/// A sealed segment written in place (same name, same length, another
/// byte) after the reader mapped it: the refresh reopens it and reads
/// what a fresh open reads (the damage, read past as a hole), never the
/// bytes it mapped before.
#[test]
fn a_sealed_segment_rewritten_in_place_is_reopened_not_served_stale() {
    let sim = SimStorage::new(16);
    let writer = Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer");
    append(&writer, 0, 120);
    let reader = Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).expect("reader");
    let before = contents(&reader).expect("read");
    let victim = Path::new(DIR).join(&segment_names(&sim, DIR)[2]);
    flip_a_payload_bit(&sim, &victim);
    append(&writer, 120, 1);
    reader.refresh().expect("refresh");
    let after = contents(&reader);
    assert_eq!(after, fresh(&sim));
    assert_ne!(after.map(|r| r[..before.len()].to_vec()), Ok(before));
}

/// Flips one bit in the payload of the segment's first record (past the
/// text, in its run of zeros).
fn flip_a_payload_bit(sim: &SimStorage, path: &Path) {
    let mut bytes = sim.read_file(path).expect("segment");
    let at = 200;
    assert!(bytes.len() > at);
    bytes[at] ^= 0x10;
    sim.write_file(path, &bytes);
}

/// The class: any interleaving of appends (rolls included), refreshes,
/// writer reopens, crashes, damage to sealed segments and repairs leaves a refreshed reader reading exactly
/// what a fresh open reads. Replay a failure with ENFORCELOG_SEED.
#[test]
fn refreshed_reader_reads_what_a_fresh_open_reads_whatever_happened_between() {
    let seed = common::run_seed();
    let mut rng = common::Rng::new(seed);
    let sim = SimStorage::new(seed);
    let mut writer =
        Some(Log::open_with_storage(Arc::new(sim.clone()), DIR, options()).expect("writer"));
    let reader = Log::open_read_only_with_storage(Arc::new(sim.clone()), DIR).expect("reader");
    let mut next = 0;
    for step in 0..300 {
        match rng.below(20) {
            0 => {
                if let Some(w) = writer.take() {
                    w.close().expect("close");
                }
            }
            1 => {
                writer = None;
                sim.crash(CrashMode::LoseUnsynced);
            }
            2 => {
                // Damage to a sealed segment (rewritten in place), repaired
                // (a new file renamed over it) when no writer holds the log.
                // (A sealed segment can be short: a crash or a repair may
                // have cut it; only one with a first payload is damaged.)
                let names = segment_names(&sim, DIR);
                let sealed: Vec<_> = names[..names.len().saturating_sub(1)]
                    .iter()
                    .map(|name| Path::new(DIR).join(name))
                    .filter(|path| sim.read_file(path).is_some_and(|b| b.len() > 200))
                    .collect();
                if !sealed.is_empty() {
                    let victim = &sealed[rng.index(sealed.len())];
                    flip_a_payload_bit(&sim, victim);
                    if writer.is_none() {
                        enforcelog::log::repair(&sim, Path::new(DIR)).expect("repair");
                    }
                }
            }
            3..=9 => {
                if writer.is_none() {
                    writer = Some(
                        Log::open_with_storage(Arc::new(sim.clone()), DIR, options())
                            .expect("reopen"),
                    );
                }
                let count = 1 + rng.below(12);
                append(writer.as_ref().unwrap(), next, count);
                next += count;
            }
            _ => {
                reader.refresh().expect("refresh");
                assert_eq!(
                    contents(&reader),
                    fresh(&sim),
                    "seed {seed} step {step}: the refreshed reader differs from a fresh open"
                );
            }
        }
    }
}

/// What the refresh relies on, for both storages: a file's stamp stays the
/// same while nothing changes it, and changes when it is written, cut, or
/// replaced by a rename (a repair's way).
#[test]
fn file_stamps_change_when_a_file_is_written_cut_or_renamed_over() {
    use enforcelog::storage::{FileStorage, OpenMode};
    let tmp = tempfile::tempdir().expect("tempdir");
    let file_storage: Arc<dyn Storage> = Arc::new(FileStorage);
    let sim_storage: Arc<dyn Storage> = Arc::new(SimStorage::new(18));
    let file_dir = tmp.path().to_path_buf();
    let sim_dir = Path::new("/data/stamps").to_path_buf();
    sim_storage.create_dir_all(&sim_dir).expect("sim dir");
    for (storage, dir) in [(file_storage, file_dir), (sim_storage, sim_dir)] {
        let path = dir.join("00000000000000000000.log");
        let stamp = |s: &dyn Storage| {
            s.open(&path, OpenMode::Read)
                .expect("open")
                .stamp()
                .expect("stamp")
                .expect("this storage stamps files")
        };
        let file = storage.open(&path, OpenMode::CreateNew).expect("create");
        file.write_all_at(&payload(3), 0).expect("write");
        let first = stamp(&*storage);
        assert_eq!(stamp(&*storage), first, "{dir:?}: nothing changed");
        // Enough time for a coarse ctime to move.
        std::thread::sleep(Duration::from_millis(20));
        file.write_all_at(&[1], 7).expect("write in place");
        let written = stamp(&*storage);
        assert_ne!(written, first, "{dir:?}: written in place, same length");
        assert_eq!(written.len, first.len);
        std::thread::sleep(Duration::from_millis(20));
        file.set_len(first.len - 1).expect("cut");
        let cut = stamp(&*storage);
        assert_ne!(cut, written, "{dir:?}: cut");
        let other = dir.join("tmp");
        let replacement = storage.open(&other, OpenMode::CreateNew).expect("create");
        replacement
            .write_all_at(&payload(3)[..cut.len as usize], 0)
            .expect("write");
        storage.rename(&other, &path).expect("rename over");
        let renamed = stamp(&*storage);
        assert_ne!(renamed.file_id, cut.file_id, "{dir:?}: another file");
    }
}
