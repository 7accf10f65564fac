//! Many writers at once, on the real file system with `Durability::Fsync`.
//!
//! 64 tokio tasks (`record().await`, on a multi-thread runtime), 8 OS threads
//! (`record_blocking`), OS threads and tasks committing caller-owned batches
//! (`commit_blocking`, `commit().await`) and OS threads firing
//! `record_detached` all record at the same time, released together. Then:
//! every acknowledged offset is distinct; after `close()` and a reopen (as
//! the writer, and read-only beside it) the log holds offsets `0..n` densely,
//! every acknowledged event at its offset with its exact fields, every
//! detached event that was counted as recorded exactly once; the metrics
//! count what was acknowledged; and concurrent callers shared fsyncs (group
//! commit: fewer fsyncs than records).
//!
//! Seeds: `ENFORCELOG_SEED` (u64) picks the events' actions, details and
//! batch sizes; the interleaving is the scheduler's. Assertion messages name
//! the seed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Instant;

use common::Rng;
use enforcelog::{Action, Durability, Entry, Event, LogOptions, Store, StoreOptions, StoredEvent};

const TASKS: u64 = 64;
const THREADS: u64 = 8;
const BATCH_THREADS: u64 = 2;
const BATCH_TASKS: u64 = 2;
const DETACHED_THREADS: u64 = 2;
const EVENTS_EACH: u64 = 200;
/// Largest caller-owned batch.
const BATCH_MAX: u64 = 8;
const DEFAULT_SEED: u64 = 0x0C0C_0C0C_2024;

fn seed() -> u64 {
    common::seed_or(DEFAULT_SEED)
}

/// The `i`-th event of writer `writer` (a name unique to it). Every field is
/// set so that every field can be compared on read; timestamps are not
/// monotonic across writers.
fn event(writer: &str, i: u64, rng: &mut Rng) -> Event {
    let action = *rng.pick(&Action::ALL);
    let mut ev = Event::new(
        format!("tenant-{}", rng.below(5)),
        format!("rule-{}", i % 11),
        action,
    )
    .with_run_id(format!("{writer}/{i}"))
    .at_us(1_700_000_000_000_000 + i64::try_from(rng.below(1 << 40)).expect("small"));
    if rng.below(4) != 0 {
        ev = ev.with_details(enforcelog::details!({
            "writer": writer,
            "i": i,
            "pad": "p".repeat(rng.below(200) as usize),
        }));
    }
    ev
}

fn assert_stored(stored: &StoredEvent, expected: &Event, seed: u64) {
    let at = stored.offset;
    assert_eq!(
        stored.tenant_id, expected.tenant_id,
        "offset {at}; seed {seed}"
    );
    assert_eq!(stored.rule_id, expected.rule_id, "offset {at}; seed {seed}");
    assert_eq!(stored.action, expected.action, "offset {at}; seed {seed}");
    assert_eq!(stored.run_id, expected.run_id, "offset {at}; seed {seed}");
    assert_eq!(stored.details, expected.details, "offset {at}; seed {seed}");
    assert_eq!(
        Some(stored.enforced_at_us),
        expected.enforced_at_us,
        "offset {at}; seed {seed}"
    );
}

/// Acknowledged events by offset; a second acknowledgement of an offset is
/// a failure.
#[derive(Default)]
struct Acked(Mutex<BTreeMap<u64, Event>>);

impl Acked {
    fn add(&self, offsets: Range<u64>, events: Vec<Event>, seed: u64) {
        assert_eq!(
            offsets.end - offsets.start,
            events.len() as u64,
            "seed {seed}"
        );
        let mut acked = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (offset, ev) in offsets.zip(events) {
            if let Some(earlier) = acked.insert(offset, ev) {
                panic!("offset {offset} acknowledged twice (first {earlier:?}); seed {seed}");
            }
        }
    }
}

/// A batch of 1..=BATCH_MAX events, staged and returned.
fn stage(
    store: &Store,
    writer: &str,
    next: &mut u64,
    rng: &mut Rng,
) -> (enforcelog::EventBatch, Vec<Event>) {
    let size = (1 + rng.below(BATCH_MAX)).min(EVENTS_EACH - *next);
    let mut batch = store.begin();
    let events: Vec<Event> = (0..size).map(|k| event(writer, *next + k, rng)).collect();
    for ev in &events {
        batch.record(ev.clone()).expect("stage a valid event");
    }
    *next += size;
    (batch, events)
}

/// Runs every writer at once; returns the acknowledged events and the
/// detached events sent, by run id.
fn write_concurrently(store: &Store, seed: u64) -> (BTreeMap<u64, Event>, HashMap<String, Event>) {
    let acked = Arc::new(Acked::default());
    let detached = Mutex::new(HashMap::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let (go, ready) = tokio::sync::watch::channel(false);
    let threads = THREADS + BATCH_THREADS + DETACHED_THREADS;
    let barrier = Barrier::new(threads as usize + 1);

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (store, acked, mut ready) = (store.clone(), acked.clone(), ready.clone());
        tasks.push(runtime.spawn(async move {
            let writer = format!("task-{t}");
            let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x1000_0001));
            ready.wait_for(|go| *go).await.expect("the starter lives");
            for i in 0..EVENTS_EACH {
                let ev = event(&writer, i, &mut rng);
                let offset = store.record(ev.clone()).await.expect("record");
                acked.add(offset..offset + 1, vec![ev], seed);
            }
        }));
    }
    for t in 0..BATCH_TASKS {
        let (store, acked, mut ready) = (store.clone(), acked.clone(), ready.clone());
        tasks.push(runtime.spawn(async move {
            let writer = format!("batch-task-{t}");
            let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x2000_0003));
            ready.wait_for(|go| *go).await.expect("the starter lives");
            let mut next = 0;
            while next < EVENTS_EACH {
                let (batch, events) = stage(&store, &writer, &mut next, &mut rng);
                let offsets = batch.commit().await.expect("commit");
                acked.add(offsets, events, seed);
            }
        }));
    }

    std::thread::scope(|scope| {
        for t in 0..THREADS {
            let (acked, barrier) = (&acked, &barrier);
            scope.spawn(move || {
                let writer = format!("thread-{t}");
                let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x3000_0005));
                barrier.wait();
                for i in 0..EVENTS_EACH {
                    let ev = event(&writer, i, &mut rng);
                    let offset = store.record_blocking(ev.clone()).expect("record_blocking");
                    acked.add(offset..offset + 1, vec![ev], seed);
                }
            });
        }
        for t in 0..BATCH_THREADS {
            let (acked, barrier) = (&acked, &barrier);
            scope.spawn(move || {
                let writer = format!("batch-thread-{t}");
                let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x4000_0007));
                barrier.wait();
                let mut next = 0;
                while next < EVENTS_EACH {
                    let (batch, events) = stage(store, &writer, &mut next, &mut rng);
                    let offsets = batch.commit_blocking().expect("commit_blocking");
                    acked.add(offsets, events, seed);
                }
            });
        }
        for t in 0..DETACHED_THREADS {
            let (detached, barrier) = (&detached, &barrier);
            scope.spawn(move || {
                let writer = format!("detached-{t}");
                let mut rng = Rng::new(seed ^ (t + 1).wrapping_mul(0x5000_000B));
                barrier.wait();
                for i in 0..EVENTS_EACH {
                    let ev = event(&writer, i, &mut rng);
                    let run = ev.run_id.clone().expect("run id");
                    detached
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(run, ev.clone());
                    store.record_detached(ev);
                }
            });
        }
        go.send(true).expect("tasks are waiting");
        barrier.wait();
    });
    runtime.block_on(async {
        for task in tasks {
            task.await.expect("writer task");
        }
    });
    let acked = Arc::try_unwrap(acked)
        .unwrap_or_else(|_| panic!("writers are done"))
        .0
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let detached = detached.into_inner().unwrap_or_else(|e| e.into_inner());
    (acked, detached)
}

/// Checks the whole log as `store` sees it; returns how many detached events
/// it holds.
fn check_log(
    store: &Store,
    acked: &BTreeMap<u64, Event>,
    detached: &HashMap<String, Event>,
    seed: u64,
) -> u64 {
    let mut detached_seen = HashMap::new();
    let mut count = 0u64;
    for (i, entry) in store.entries(0).expect("read from 0").enumerate() {
        let entry = entry.unwrap_or_else(|e| panic!("entry {i}: {e}; seed {seed}"));
        assert_eq!(entry.offset(), i as u64, "offsets are dense; seed {seed}");
        count += 1;
        let Entry::Event(stored) = entry else {
            panic!("gap marker {entry:?}, but nothing failed; seed {seed}");
        };
        if let Some(expected) = acked.get(&stored.offset) {
            assert_stored(&stored, expected, seed);
            continue;
        }
        let run = stored.run_id.clone().unwrap_or_default();
        let expected = detached
            .get(&run)
            .unwrap_or_else(|| panic!("unacknowledged event {stored:?}; seed {seed}"));
        assert_stored(&stored, expected, seed);
        if let Some(first) = detached_seen.insert(run, stored.offset) {
            panic!("{stored:?} also at offset {first}; seed {seed}");
        }
    }
    assert_eq!(count, store.next_offset(), "seed {seed}");
    assert_eq!(
        count,
        acked.len() as u64 + detached_seen.len() as u64,
        "every offset is acknowledged or detached; seed {seed}"
    );
    detached_seen.len() as u64
}

#[test]
fn concurrent_writers_in_every_mode_get_distinct_offsets_readable_after_reopen() {
    let seed = seed();
    let dir = tempfile::tempdir().expect("temp dir");
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), options.clone()).expect("open");
    let started = Instant::now();
    let (acked, detached) = write_concurrently(&store, seed);
    // `close` drains the queue: every detached event has its outcome after.
    store.close().expect("close");
    let elapsed = started.elapsed();

    let expected_acked = (TASKS + THREADS + BATCH_THREADS + BATCH_TASKS) * EVENTS_EACH;
    assert_eq!(acked.len() as u64, expected_acked, "seed {seed}");
    assert_eq!(
        detached.len() as u64,
        DETACHED_THREADS * EVENTS_EACH,
        "seed {seed}"
    );
    let m = store.metrics();
    // Nothing failed and the queue (4096 slots) never filled: every detached
    // event was recorded.
    assert_eq!(m.dropped, 0, "{m:?}; seed {seed}");
    assert_eq!(m.gap_markers, 0, "{m:?}; seed {seed}");
    assert_eq!(
        m.recorded,
        acked.len() as u64 + detached.len() as u64,
        "{m:?}; seed {seed}"
    );
    assert!(m.fsyncs >= 1, "{m:?}; seed {seed}");
    let per_fsync = m.recorded as f64 / m.fsyncs as f64;
    assert!(
        per_fsync > 1.0,
        "concurrent callers share fsyncs: {} records, {} fsyncs; seed {seed}",
        m.recorded,
        m.fsyncs
    );
    assert!(m.append_max_us >= m.append_p50_us, "{m:?}; seed {seed}");
    eprintln!(
        "{} records in {elapsed:?}, {} fsyncs ({per_fsync:.1} records per fsync), p50 {} us, p99 {} us",
        m.recorded, m.fsyncs, m.append_p50_us, m.append_p99_us
    );
    drop(store);

    let writer = Store::open(dir.path(), options).expect("reopen as the writer");
    let held = check_log(&writer, &acked, &detached, seed);
    assert_eq!(held, detached.len() as u64, "seed {seed}");
    let reader = Store::open_read_only(dir.path()).expect("open read-only beside the writer");
    let held = check_log(&reader, &acked, &detached, seed);
    assert_eq!(held, detached.len() as u64, "seed {seed}");
    // The reopened writer continues after the last offset.
    let next = writer.next_offset();
    let offset = writer
        .record_blocking(Event::new("tenant-0", "after-reopen", Action::Blocked))
        .expect("record after reopen");
    assert_eq!(offset, next, "seed {seed}");
    reader.refresh().expect("refresh");
    assert_eq!(reader.next_offset(), next + 1, "seed {seed}");
    writer.close().expect("close the writer");
}
