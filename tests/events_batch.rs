//! Caller-owned batches: `store.begin()`, `batch.record(..)`, `commit().await`
//! or `commit_blocking()`.
//!
//! - A commit is atomic for readers: a thread polling `next_offset` and
//!   `entries` while batches of varying size are committed only ever sees
//!   batch boundaries and whole batches, in the writer's store and in a
//!   read-only store opened beside it, across segment rolls.
//! - Dropping a batch records nothing; an empty commit is `EmptyBatch`; a
//!   refused event leaves the batch usable.
//! - Through the simulated storage: a crash before commit leaves none of the
//!   batch, a crash after commit keeps all of it, and a power cut during the
//!   commit leaves all of it or none (and all of it when the commit was
//!   acknowledged).
//! - `record_blocking` and `commit_blocking` called from inside a tokio
//!   runtime (current-thread and multi-thread) complete: the writer never
//!   needs the runtime.
//!
//! A simulated crash first cuts the power (so nothing the dying store does
//! reaches the disk), closes the store (joining its threads, so none of it
//! runs after the crash), then crashes the storage. Randomised tests derive
//! everything from `ENFORCELOG_SEED` (or a fixed default) and name the seed
//! on failure: `ENFORCELOG_SEED=<seed> cargo test --test events_batch`.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::Rng;
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::{
    Action, Durability, Entry, Error, Event, EventError, Field, LogOptions, Result, Store,
    StoreOptions, StoredEvent,
};

const DIR: &str = "/store";
const SEGMENT: &str = "/store/00000000000000000000.log";
const T0_US: i64 = 1_764_028_800_000_000;
const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::TearLastWrite,
    CrashMode::Reorder,
    CrashMode::TornSectors,
];
/// Longest a call from inside a runtime may take before it counts as a deadlock.
const DEADLOCK_AFTER: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Seeds and randomness.

fn base_seed() -> u64 {
    common::seed_or(0x00BA_7C4E_0004_0002)
}

// ---------------------------------------------------------------------------
// Helpers.

/// How a batch is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    Blocking,
    Async,
}

const COMMITS: [Commit; 2] = [Commit::Blocking, Commit::Async];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Stages `events` in a new batch and commits it the `how` way.
fn commit(store: &Store, events: &[Event], how: Commit) -> Result<Range<u64>> {
    let mut batch = store.begin();
    for event in events {
        batch
            .record(event.clone())
            .expect("a valid event is staged");
    }
    assert_eq!(batch.len(), events.len());
    match how {
        Commit::Blocking => batch.commit_blocking(),
        Commit::Async => runtime().block_on(batch.commit()),
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

fn open(storage: &SimStorage, options: StoreOptions) -> Store {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open()
        .expect("open store")
}

/// Event `index` of batch `batch`: the details say where it belongs.
fn event(batch: usize, index: usize, filler_bytes: usize) -> Event {
    let action = Action::ALL[(batch + index) % 4];
    let mut event = Event::new(format!("tenant-{}", batch % 3), "rule", action)
        .with_details(enforcelog::details!({"batch": batch, "index": index, "filler": "f".repeat(filler_bytes)}))
        .at_us(T0_US + (batch * 1000 + index) as i64);
    if index.is_multiple_of(2) {
        event = event.with_run_id(format!("run-{batch}"));
    }
    event
}

fn batch_events(batch: usize, size: usize, filler_bytes: usize) -> Vec<Event> {
    (0..size).map(|i| event(batch, i, filler_bytes)).collect()
}

/// The entry `event` becomes when stored at `offset`.
fn stored(offset: u64, event: &Event) -> Entry {
    Entry::Event(StoredEvent {
        offset,
        tenant_id: event.tenant_id.clone(),
        rule_id: event.rule_id.clone(),
        action: event.action,
        run_id: event.run_id.clone(),
        details: event.details.clone(),
        enforced_at_us: event.enforced_at_us.expect("test events have times"),
    })
}

fn stored_all(first_offset: u64, events: &[Event]) -> Vec<Entry> {
    (first_offset..)
        .zip(events)
        .map(|(o, e)| stored(o, e))
        .collect()
}

fn read_all(store: &Store) -> Vec<Entry> {
    store
        .entries(0)
        .expect("entries(0)")
        .collect::<Result<_>>()
        .expect("every entry decodes")
}

/// The process dies and the machine crashes: nothing more reaches the disk,
/// the store's threads are stopped, then unsynced writes are lost as `mode`
/// says.
fn crash(storage: &SimStorage, store: Store, mode: CrashMode) {
    storage.power_cut_after(0);
    let _ = store.close(); // it cannot write anything any more; errors expected
    drop(store);
    storage.crash(mode);
}

fn assert_verifies_clean(store: &Store, context: &str) {
    let report = store.log().verify().expect("verify");
    assert!(report.is_clean(), "{context}: {:?}", report.problems);
}

/// Runs `body` on its own thread and fails if it takes longer than
/// [`DEADLOCK_AFTER`].
fn within_deadline<T: Send + 'static>(what: &str, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(DEADLOCK_AFTER) {
        Ok(value) => {
            thread.join().expect("body thread");
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} did not complete within {DEADLOCK_AFTER:?}: deadlock")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: report its panic.
            match thread.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the body returned without sending"),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Visibility.

/// Sets its flag when dropped, panicking or not.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Reads what is new since `seen.len()` and checks that the whole of it is
/// made of whole batches, in order.
fn read_new(store: &Store, seen: &mut Vec<Entry>, expected: &[Entry], context: &str) {
    let new = store
        .entries(seen.len() as u64)
        .expect("entries")
        .collect::<Result<Vec<Entry>>>()
        .expect("decode");
    seen.extend(new);
    assert!(
        seen.len() <= expected.len(),
        "{context}: read {} entries, only {} were committed",
        seen.len(),
        expected.len()
    );
    assert_eq!(
        seen.as_slice(),
        &expected[..seen.len()],
        "{context}: entries differ"
    );
}

#[test]
fn commit_makes_the_whole_batch_visible_at_once() {
    let seed = base_seed();
    for how in COMMITS {
        let context = format!("seed {seed}, {how:?}");
        let mut rng = Rng::new(seed ^ how as u64);
        let sizes: Vec<usize> = (0..120)
            .map(|_| match rng.in_range(0..=3) {
                0 => 1,
                1 => rng.in_range(17..=30),
                _ => rng.in_range(2..=16),
            })
            .collect();
        let batches: Vec<Vec<Event>> = sizes
            .iter()
            .enumerate()
            .map(|(b, &n)| batch_events(b, n, 8))
            .collect();
        let expected: Vec<Entry> = stored_all(0, &batches.concat());
        let boundaries: BTreeSet<u64> = std::iter::once(0)
            .chain(sizes.iter().scan(0, |end, &n| {
                *end += n as u64;
                Some(*end)
            }))
            .collect();
        let total = *boundaries.last().expect("boundaries");

        let storage = SimStorage::new(seed);
        // Small segments: batches also land right after a roll.
        let mut options = options();
        options.log.segment_max_bytes = 4096;
        options.log.record_max_bytes = 1024;
        let store = open(&storage, options);
        let reader = Store::builder(DIR)
            .storage(Arc::new(storage.clone()))
            .open_read_only()
            .expect("read-only");
        let observations = AtomicUsize::new(0);
        let writer_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                // Set even if the writer panics, so the readers stop.
                let _done = SetOnDrop(&writer_done);
                let mut next = 0;
                for events in &batches {
                    let range = commit(&store, events, how).expect("commit");
                    assert_eq!(range, next..next + events.len() as u64, "{context}");
                    next = range.end;
                }
            });
            // The writer's own store.
            s.spawn(|| {
                let mut seen = Vec::new();
                loop {
                    let done = writer_done.load(Ordering::Acquire);
                    let next = store.next_offset();
                    assert!(
                        boundaries.contains(&next),
                        "{context}: next_offset {next} is inside a batch"
                    );
                    read_new(&store, &mut seen, &expected, &context);
                    assert!(
                        boundaries.contains(&(seen.len() as u64)),
                        "{context}: read {} entries, inside a batch",
                        seen.len()
                    );
                    observations.fetch_add(1, Ordering::Relaxed);
                    if done {
                        break;
                    }
                }
            });
            // A read-only store beside the writer.
            s.spawn(|| {
                let mut seen = Vec::new();
                loop {
                    let done = writer_done.load(Ordering::Acquire);
                    reader.refresh().expect("refresh");
                    let next = reader.next_offset();
                    assert!(
                        boundaries.contains(&next),
                        "{context}: read-only next_offset {next} is inside a batch"
                    );
                    read_new(&reader, &mut seen, &expected, &context);
                    assert!(
                        boundaries.contains(&(seen.len() as u64)),
                        "{context}: read-only store read {} entries, inside a batch",
                        seen.len()
                    );
                    if done {
                        break;
                    }
                }
            });
        });
        let observations = observations.load(Ordering::Relaxed);
        println!("{context}: {observations} observations by the writer's store");
        assert!(observations >= 1);
        assert_eq!(store.next_offset(), total, "{context}");
        assert_eq!(read_all(&store), expected, "{context}");
        reader.refresh().expect("refresh");
        assert_eq!(read_all(&reader), expected, "{context}");
        assert_eq!(store.metrics().recorded, total, "{context}");
        let segments = store.log().verify().expect("verify").segments;
        assert!(segments > 3, "{context}: only {segments} segments");
    }
}

#[test]
fn dropping_a_batch_records_nothing() {
    let storage = SimStorage::new(base_seed());
    let store = open(&storage, options());
    let prefix = batch_events(0, 3, 4);
    commit(&store, &prefix, Commit::Blocking).expect("prefix");
    let segment = storage.read_file(SEGMENT).expect("segment");
    let bytes_written = store.log().metrics().bytes;

    let mut batch = store.begin();
    for event in batch_events(1, 5, 4) {
        batch.record(event).expect("stage");
    }
    assert_eq!(batch.len(), 5);
    // Staged events are not visible before the commit.
    assert_eq!(store.next_offset(), 3);
    assert_eq!(read_all(&store), stored_all(0, &prefix));
    drop(batch);

    assert_eq!(store.next_offset(), 3);
    assert_eq!(read_all(&store), stored_all(0, &prefix));
    assert_eq!(store.log().metrics().bytes, bytes_written);
    assert_eq!(storage.read_file(SEGMENT).expect("segment"), segment);
    assert_eq!(store.metrics().recorded, 3);

    // The next commit takes the next offset: nothing was reserved.
    let after = batch_events(2, 2, 4);
    assert_eq!(commit(&store, &after, Commit::Async).expect("commit"), 3..5);
    assert_eq!(
        read_all(&store),
        [stored_all(0, &prefix), stored_all(3, &after)].concat()
    );
}

#[test]
fn an_empty_batch_commit_is_refused() {
    let storage = SimStorage::new(base_seed());
    let store = open(&storage, options());
    let segment = storage.read_file(SEGMENT).expect("segment");
    let rt = runtime();
    let batch = store.begin();
    assert!(batch.is_empty());
    assert!(matches!(batch.commit_blocking(), Err(Error::EmptyBatch)));
    assert!(matches!(
        rt.block_on(store.begin().commit()),
        Err(Error::EmptyBatch)
    ));
    // Empty because its only event was refused.
    let mut batch = store.begin();
    batch
        .record(Event::new("", "rule", Action::Killed))
        .expect_err("empty tenant");
    assert!(matches!(
        rt.block_on(batch.commit()),
        Err(Error::EmptyBatch)
    ));
    assert_eq!(store.next_offset(), 0);
    assert_eq!(store.log().metrics().bytes, 0);
    assert_eq!(storage.read_file(SEGMENT).expect("segment"), segment);
}

#[test]
fn a_refused_event_leaves_the_batch_usable() {
    for how in COMMITS {
        let storage = SimStorage::new(base_seed());
        let store = open(&storage, options());
        let first = event(0, 0, 4);
        let last = event(0, 1, 4);
        let mut batch = store.begin();
        batch.record(first.clone()).expect("stage first");
        assert_eq!(
            batch.record(event(0, 9, 4).with_run_id("bad\nrun")),
            Err(EventError::ControlCharacter {
                field: Field::RunId,
                at: 3,
                code: 0x0a
            })
        );
        let too_large = "x".repeat(enforcelog::event::DETAILS_MAX_BYTES);
        assert!(matches!(
            batch.record(event(0, 9, 4).with_details(enforcelog::details!({"k": too_large}))),
            Err(EventError::DetailsTooLarge { .. })
        ));
        assert_eq!(batch.len(), 1, "{how:?}");
        batch.record(last.clone()).expect("stage last");
        let range = match how {
            Commit::Blocking => batch.commit_blocking(),
            Commit::Async => runtime().block_on(batch.commit()),
        }
        .expect("commit");
        assert_eq!(range, 0..2, "{how:?}");
        assert_eq!(read_all(&store), stored_all(0, &[first, last]), "{how:?}");
    }
}

// ---------------------------------------------------------------------------
// Crashes.

#[test]
fn a_crash_before_commit_leaves_none_of_the_batch() {
    let seed = base_seed();
    for (i, mode) in CRASH_MODES.into_iter().enumerate() {
        let context = format!("seed {seed}, {mode:?}");
        let storage = SimStorage::new(seed.wrapping_add(i as u64));
        let store = open(&storage, options());
        let prefix = batch_events(0, 4, 16);
        commit(&store, &prefix, Commit::Blocking).expect("prefix");
        let single = event(1, 0, 16);
        assert_eq!(store.record_blocking(single.clone()).expect("single"), 4);

        let mut batch = store.begin();
        for event in batch_events(2, 10, 16) {
            batch.record(event).expect("stage");
        }
        crash(&storage, store, mode);
        drop(batch); // the process is gone, and what it staged with it

        let store = open(&storage, options());
        let kept = [prefix.clone(), vec![single.clone()]].concat();
        assert_eq!(store.next_offset(), 5, "{context}");
        assert_eq!(read_all(&store), stored_all(0, &kept), "{context}");
        assert_verifies_clean(&store, &context);
        let after = batch_events(3, 2, 16);
        assert_eq!(
            commit(&store, &after, Commit::Blocking).expect("commit after reopen"),
            5..7,
            "{context}"
        );
    }
}

#[test]
fn a_crash_after_commit_keeps_the_whole_batch() {
    let seed = base_seed();
    for how in COMMITS {
        for (i, mode) in CRASH_MODES.into_iter().enumerate() {
            let context = format!("seed {seed}, {how:?}, {mode:?}");
            let storage = SimStorage::new(seed.wrapping_add(i as u64));
            let store = open(&storage, options());
            let prefix = batch_events(0, 3, 16);
            commit(&store, &prefix, how).expect("prefix");
            let events = batch_events(1, 10, 16);
            assert_eq!(commit(&store, &events, how).expect("commit"), 3..13);
            crash(&storage, store, mode);

            let store = open(&storage, options());
            assert_eq!(
                read_all(&store),
                [stored_all(0, &prefix), stored_all(3, &events)].concat(),
                "{context}"
            );
            assert_verifies_clean(&store, &context);
        }
    }
}

/// Outcomes of [`power_cut_case`], counted to show both happened.
#[derive(Default)]
struct Outcomes {
    acknowledged: AtomicU64,
    refused_and_absent: AtomicU64,
    refused_but_present: AtomicU64,
}

/// Commits a prefix, cuts the power after `k` more mutating storage calls,
/// commits one batch, crashes, and checks the batch is all there or not at
/// all.
fn power_cut_case(seed: u64, outcomes: &Outcomes) {
    let mut rng = Rng::new(seed);
    let k = rng.in_range(0..=7) as u64;
    let mode = CRASH_MODES[rng.in_range(0..=3)];
    let how = COMMITS[rng.in_range(0..=1)];
    let context = format!("seed {seed} (k {k}, {mode:?}, {how:?})");
    let mut options = options();
    // Small segments, so that the batch under test often rolls to a new one.
    options.log.segment_max_bytes = 4096;
    options.log.record_max_bytes = 1024;
    let storage = SimStorage::new(seed);
    let store = open(&storage, options.clone());

    let mut prefix = Vec::new();
    for b in 0..rng.in_range(0..=4) {
        let events = batch_events(b, rng.in_range(1..=8), rng.in_range(0..=200));
        commit(&store, &events, Commit::Blocking).expect("prefix");
        prefix.extend(events);
    }
    let events = batch_events(100, rng.in_range(1..=12), rng.in_range(0..=120));
    let first = prefix.len() as u64;

    storage.power_cut_after(k);
    let result = commit(&store, &events, how);
    crash(&storage, store, mode);

    let store = open(&storage, options);
    let found = read_all(&store);
    let before = stored_all(0, &prefix);
    let with_batch = [before.clone(), stored_all(first, &events)].concat();
    match &result {
        Ok(range) => {
            assert_eq!(*range, first..first + events.len() as u64, "{context}");
            assert_eq!(found, with_batch, "{context}: acknowledged batch");
            outcomes.acknowledged.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) if found == before => {
            outcomes.refused_and_absent.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) if found == with_batch => {
            outcomes.refused_but_present.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => panic!(
            "{context}: commit failed ({e}) and left {} entries after a prefix of {} and a \
             batch of {}: part of the batch survived",
            found.len(),
            prefix.len(),
            events.len()
        ),
    }
    assert_verifies_clean(&store, &context);
    let next = found.len() as u64;
    assert_eq!(
        commit(&store, &batch_events(200, 2, 0), Commit::Blocking).expect("commit after reopen"),
        next..next + 2,
        "{context}"
    );
}

#[test]
fn a_power_cut_during_commit_leaves_all_or_nothing() {
    const CASES: u64 = 120;
    const WORKERS: usize = 4;
    let base = base_seed();
    let outcomes = Outcomes::default();
    let next_case = AtomicU64::new(0);
    // Each case waits ~0.1 s for the store's threads to stop; run a few at
    // once (they share nothing).
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let case = next_case.fetch_add(1, Ordering::Relaxed);
                if case >= CASES {
                    return;
                }
                power_cut_case(base.wrapping_add(case), &outcomes);
            });
        }
    });
    let acknowledged = outcomes.acknowledged.load(Ordering::Relaxed);
    let absent = outcomes.refused_and_absent.load(Ordering::Relaxed);
    let present = outcomes.refused_but_present.load(Ordering::Relaxed);
    println!(
        "base seed {base}: acknowledged {acknowledged}, refused and absent {absent}, \
         refused but present {present}"
    );
    assert_eq!(acknowledged + absent + present, CASES);
    assert!(
        acknowledged > 0 && absent > 0,
        "base seed {base}: acknowledged {acknowledged}, refused and absent {absent}, \
         refused but present {present}: the power cuts missed the commit"
    );
}

// ---------------------------------------------------------------------------
// Blocking calls inside a runtime.

#[test]
fn record_blocking_inside_a_current_thread_runtime_completes() {
    let offsets = within_deadline("record_blocking on a current-thread runtime", || {
        let storage = SimStorage::new(base_seed());
        let store = open(&storage, options());
        runtime().block_on(async move {
            // Tasks waiting for their turn on this very thread while it blocks.
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move { store.record(event(1, i, 4)).await })
                })
                .collect();
            let mut offsets = vec![store
                .record_blocking(event(0, 0, 4))
                .expect("record_blocking")];
            let batch = batch_events(2, 3, 4);
            let range = commit_staged(&store, &batch)
                .commit_blocking()
                .expect("commit");
            offsets.extend(range);
            for task in tasks {
                offsets.push(task.await.expect("task").expect("record"));
            }
            // And once more after the tasks ran.
            offsets.push(
                store
                    .record_blocking(event(3, 0, 4))
                    .expect("record_blocking"),
            );
            assert_eq!(read_all(&store).len(), offsets.len());
            offsets
        })
    });
    assert_eq!(&offsets[..4], &[0, 1, 2, 3], "blocking calls came first");
    let unique: BTreeSet<u64> = offsets.iter().copied().collect();
    assert_eq!(unique, (0..13).collect());
}

fn commit_staged(store: &Store, events: &[Event]) -> enforcelog::store::EventBatch {
    let mut batch = store.begin();
    for event in events {
        batch.record(event.clone()).expect("stage");
    }
    batch
}

#[test]
fn record_blocking_inside_a_multi_thread_runtime_completes() {
    const TASKS: usize = 16;
    const PER_TASK: usize = 8;
    let (offsets, entries) = within_deadline("record_blocking on a multi-thread runtime", || {
        let storage = SimStorage::new(base_seed());
        let store = open(&storage, options());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let offsets = rt.block_on(async {
            // More tasks than worker threads, all blocking them at times.
            let tasks: Vec<_> = (0..TASKS)
                .map(|t| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let mut offsets = Vec::new();
                        for i in 0..PER_TASK {
                            let event = event(t, i, 4);
                            let offset = match i % 3 {
                                0 => store.record_blocking(event),
                                1 => store.record(event).await,
                                _ => commit_staged(&store, &[event])
                                    .commit_blocking()
                                    .map(|r| r.start),
                            };
                            offsets.push(offset.expect("record"));
                            tokio::task::yield_now().await;
                        }
                        offsets
                    })
                })
                .collect();
            let mut offsets = Vec::new();
            for task in tasks {
                offsets.extend(task.await.expect("task"));
            }
            offsets
        });
        (offsets, read_all(&store))
    });
    let unique: BTreeSet<u64> = offsets.iter().copied().collect();
    assert_eq!(unique, (0..(TASKS * PER_TASK) as u64).collect());
    assert_eq!(entries.len(), TASKS * PER_TASK);
}
