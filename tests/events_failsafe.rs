//! `record_detached` is fail-safe.
//!
//! Three ways writing can fail: a poisoned writer (an fsync failed), a full
//! queue (a slow disk behind a one-slot queue) and a full disk (ENOSPC on
//! writes). In each, every `record_detached` call returns within
//! `StoreOptions::detached_timeout` plus scheduling slack, never fails the
//! caller, is counted in `metrics().dropped` and warned about with its
//! tenant, rule, action and reason. While writing still fails, the store
//! claims no gap marker; once it works again the supervisor reopens the log
//! if needed and appends gap markers whose `dropped` counts add up to exactly
//! the number of dropped events, and every acknowledged event is readable.
//!
//! One more property: each detached call is accounted for exactly once, in
//! the log or in a gap marker, also when the writer wrote the event and then
//! failed its fsync (`detached_event_whose_fsync_failed_...`).
//!
//! `record`, `record_blocking` and `commit_blocking` on a poisoned store give
//! the caller `Error::Poisoned` (those events are the caller's to handle, not
//! drops), and after recovery they work again.
//!
//! The supervisor's progress is observed, not waited for with sleeps: through
//! `metrics()` (bounded polling) and through the `tracing` output, captured
//! by a global subscriber and filtered by each test's own directory and
//! tenant. Seeds: `ENFORCELOG_SEED` (u64) replays a run; every assertion
//! message names the seed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::capture::{captured, log_lines};
use common::Rng;
use enforcelog::storage::sim::{FaultKind, FaultOp, SimStorage};
use enforcelog::{
    now_us, Action, Durability, Entry, Error, Event, GapMarker, LogOptions, Store, StoreMetrics,
    StoreOptions, StoredEvent,
};

/// The bound `record_detached` promises.
const DETACHED_TIMEOUT: Duration = Duration::from_millis(50);
/// What the scheduler may add on a loaded machine before the call is seen to
/// return; the property checked is "bounded", not a precise latency.
const SCHEDULING_SLACK: Duration = Duration::from_millis(100);
/// Longest wait for the supervisor to do something it was asked to.
const PROGRESS_LIMIT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(5);
const DEFAULT_SEED: u64 = 0x00E4_F0C3_5AFE;

// ---------------------------------------------------------------------------
// Seeds and randomness.

fn seed() -> u64 {
    common::seed_or(DEFAULT_SEED)
}

// ---------------------------------------------------------------------------
// Helpers (captured `tracing` output: `common::capture`).

fn open_store(storage: &SimStorage, dir: &str, log: LogOptions) -> Store {
    let options = StoreOptions {
        log,
        detached_timeout: DETACHED_TIMEOUT,
        recovery_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    };
    Store::builder(dir)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open()
        .expect("open the store")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime")
}

/// A fully specified event, so that every field can be compared on read.
fn event(tenant: &str, n: u64, rng: &mut Rng) -> Event {
    Event::new(tenant, format!("rule-{}", n % 5), *rng.pick(&Action::ALL))
        .with_run_id(format!("run-{n}"))
        .with_details(enforcelog::details!({ "n": n, "note": "x".repeat(rng.below(40) as usize) }))
        .at_us(1_700_000_000_000_000 + i64::try_from(n).expect("small") * 1_000)
}

fn assert_stored(stored: &StoredEvent, expected: &Event, seed: u64) {
    assert_eq!(stored.tenant_id, expected.tenant_id, "seed {seed}");
    assert_eq!(stored.rule_id, expected.rule_id, "seed {seed}");
    assert_eq!(stored.action, expected.action, "seed {seed}");
    assert_eq!(stored.run_id, expected.run_id, "seed {seed}");
    assert_eq!(stored.details, expected.details, "seed {seed}");
    assert_eq!(
        Some(stored.enforced_at_us),
        expected.enforced_at_us,
        "seed {seed}"
    );
}

/// Calls `record_detached` once and checks that it returned within bounds.
fn detached_within_bound(store: &Store, event: Event, seed: u64) -> Duration {
    let started = Instant::now();
    store.record_detached(event);
    let elapsed = started.elapsed();
    assert!(
        elapsed < DETACHED_TIMEOUT + SCHEDULING_SLACK,
        "record_detached took {elapsed:?}, bound {DETACHED_TIMEOUT:?} (+{SCHEDULING_SLACK:?} slack); seed {seed}"
    );
    elapsed
}

/// Polls `done` until it holds; panics after [`PROGRESS_LIMIT`].
fn wait_until(store: &Store, seed: u64, what: &str, done: impl Fn(&StoreMetrics) -> bool) {
    let started = Instant::now();
    loop {
        let metrics = store.metrics();
        if done(&metrics) {
            return;
        }
        assert!(
            started.elapsed() < PROGRESS_LIMIT,
            "gave up waiting for {what} after {PROGRESS_LIMIT:?}; metrics {metrics:?}; seed {seed}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// Polls until at least `count` captured lines contain every one of `parts`.
fn wait_for_lines(parts: &[&str], count: usize, seed: u64) {
    let started = Instant::now();
    while log_lines(parts).len() < count {
        assert!(
            started.elapsed() < PROGRESS_LIMIT,
            "gave up waiting for {count} log lines with {parts:?}; seed {seed}"
        );
        std::thread::sleep(POLL_EVERY);
    }
}

/// Every entry of the store, in log order, with dense offsets.
fn read_all(store: &Store, seed: u64) -> Vec<Entry> {
    let entries: Vec<Entry> = store
        .entries(0)
        .expect("read from offset 0")
        .collect::<enforcelog::Result<_>>()
        .unwrap_or_else(|e| panic!("read the store back: {e}; seed {seed}"));
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.offset(), i as u64, "offsets are dense; seed {seed}");
    }
    entries
}

fn gaps(entries: &[Entry]) -> Vec<GapMarker> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Gap(g) => Some(g.clone()),
            Entry::Event(_) | Entry::Lost(_) => None,
        })
        .collect()
}

fn events(entries: &[Entry]) -> Vec<StoredEvent> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Event(ev) => Some(ev.clone()),
            Entry::Gap(_) | Entry::Lost(_) => None,
        })
        .collect()
}

/// Every acknowledged event is at its offset with its exact fields.
fn assert_acknowledged(entries: &[Entry], acked: &BTreeMap<u64, Event>, seed: u64) {
    for (&offset, expected) in acked {
        match entries.get(offset as usize) {
            Some(Entry::Event(stored)) => {
                assert_eq!(stored.offset, offset, "seed {seed}");
                assert_stored(stored, expected, seed);
            }
            other => panic!("acknowledged offset {offset} holds {other:?}; seed {seed}"),
        }
    }
}

/// Gap markers are stamped within the test's wall-clock window, and each
/// covers at least one drop in time order.
fn assert_gap_times(markers: &[GapMarker], from_us: i64, to_us: i64, seed: u64) {
    for g in markers {
        assert!(g.dropped >= 1, "empty gap marker {g:?}; seed {seed}");
        assert!(
            from_us <= g.first_dropped_at_us
                && g.first_dropped_at_us <= g.last_dropped_at_us
                && g.last_dropped_at_us <= to_us,
            "gap marker {g:?} outside [{from_us}, {to_us}]; seed {seed}"
        );
    }
}

/// Checks the warnings about the dropped events of the store in `dir`:
/// rate-limited (issue 13, item 12), so the first drop after a quiet
/// interval is named (tenant, rule, action, reason) and later ones are
/// summed into summary lines (`dropped=N`). Every named or summed drop is
/// one of `dropped`, and there are far fewer lines than drops.
fn assert_drop_warnings(dir: &str, sent: &[Event], dropped: u64, reasons: &[&str], seed: u64) {
    let dir_field = format!("dir={dir} ");
    let named = log_lines(&["WARN", "enforcement event not recorded", &dir_field]);
    let summaries = log_lines(&["WARN", "more enforcement events not recorded", &dir_field]);
    let summed: u64 = summaries.iter().map(|l| field_u64(l, "dropped")).sum();
    assert!(!named.is_empty(), "no drop named; seed {seed}");
    assert!(
        named.len() as u64 + summed <= dropped,
        "{} named and {summed} summed of {dropped} drops: {named:#?}; seed {seed}",
        named.len()
    );
    // One named line and one summary per interval at most (each test runs
    // for far less than an interval, unless the machine stalls).
    let lines = (named.len() + summaries.len()) as u64;
    assert!(
        dropped < 4 || lines < dropped,
        "{lines} warning lines for {dropped} drops: not rate-limited; seed {seed}"
    );
    let known: HashSet<(String, &str)> = sent
        .iter()
        .map(|e| (e.rule_id.clone(), e.action.as_str()))
        .collect();
    for line in &named {
        assert!(
            known.iter().any(|(rule, action)| {
                line.contains(&format!("rule={rule} "))
                    && line.contains(&format!("action={action} "))
            }),
            "warning names no rule/action that was sent: {line}; seed {seed}"
        );
        assert!(
            line.contains("reason=") && reasons.iter().any(|r| line.contains(r)),
            "warning gives none of the reasons {reasons:?}: {line}; seed {seed}"
        );
    }
}

/// The value of `name=<u64>` in a log line.
fn field_u64(line: &str, name: &str) -> u64 {
    let key = format!("{name}=");
    let start = line
        .find(&key)
        .map(|i| i + key.len())
        .unwrap_or_else(|| panic!("no {key} in {line}"));
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{key} is not a number in {line}"))
}

fn assert_poisoned<T: std::fmt::Debug>(result: enforcelog::Result<T>, what: &str, seed: u64) {
    assert!(
        matches!(result, Err(Error::Poisoned { .. })),
        "{what} on a poisoned store gave {result:?}; seed {seed}"
    );
}

/// Records `count` events with `record_blocking`; returns them by offset.
fn record_some(store: &Store, tenant: &str, count: u64, rng: &mut Rng) -> BTreeMap<u64, Event> {
    let mut acked = BTreeMap::new();
    for n in 0..count {
        let ev = event(tenant, n, rng);
        let offset = store.record_blocking(ev.clone()).expect("record");
        assert!(acked.insert(offset, ev).is_none());
    }
    acked
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn poisoned_writer_drops_detached_events_then_writes_an_exact_gap_marker() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/failsafe-poisoned";
    const TENANT: &str = "tenant-poisoned";
    let storage = SimStorage::new(seed);
    let store = open_store(&storage, DIR, LogOptions::default());
    let rt = runtime();
    let started_us = now_us();

    let mut acked = record_some(&store, "acked", 3 + rng.below(5), &mut rng);

    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    let failed = event("failed", 1_000, &mut rng);
    assert_poisoned(
        store.record_blocking(failed.clone()),
        "record_blocking",
        seed,
    );
    // The supervisor tries to reopen at once; the reopen fsyncs and fails
    // while the fault lasts, so the store stays poisoned for every caller.
    assert_poisoned(
        rt.block_on(store.record(event("refused", 1, &mut rng))),
        "record",
        seed,
    );
    let mut batch = store.begin();
    batch.record(event("refused", 2, &mut rng)).expect("stage");
    assert_poisoned(batch.commit_blocking(), "commit_blocking", seed);
    let refused_by_caller = store.metrics();
    assert_eq!(
        refused_by_caller.dropped, 0,
        "caller errors are not drops; seed {seed}"
    );

    let calls = 20 + rng.below(20);
    let sent: Vec<Event> = (0..calls).map(|n| event(TENANT, n, &mut rng)).collect();
    for ev in &sent {
        detached_within_bound(&store, ev.clone(), seed);
    }
    // A poisoned log refuses before queueing, so every drop is counted
    // before the call returns.
    let m = store.metrics();
    assert_eq!(m.dropped, calls, "seed {seed}");
    assert_eq!(m.dropped_pending_gap, calls, "seed {seed}");
    assert_eq!(m.recorded, acked.len() as u64, "seed {seed}");
    assert_drop_warnings(DIR, &sent, calls, &["injected EIO"], seed);

    // Two failed reopen attempts prove the supervisor ran while the fault
    // lasted; it must not have claimed a marker.
    let dir_field = format!("dir={DIR}");
    wait_for_lines(&["could not reopen the log yet", &dir_field], 2, seed);
    let m = store.metrics();
    assert_eq!(m.gap_markers, 0, "no marker while fsync fails; seed {seed}");
    assert_eq!(m.recoveries, 0, "seed {seed}");
    assert_eq!(m.dropped_pending_gap, calls, "seed {seed}");
    assert!(store.log().is_poisoned(), "seed {seed}");

    storage.clear_faults();
    wait_until(&store, seed, "recovery and a gap marker", |m| {
        m.recoveries >= 1 && m.gap_markers >= 1 && m.dropped_pending_gap == 0
    });
    let entries = read_all(&store, seed);
    let markers = gaps(&entries);
    assert_eq!(
        markers.iter().map(|g| g.dropped).sum::<u64>(),
        calls,
        "gap markers {markers:?}; seed {seed}"
    );
    assert_eq!(
        markers.len() as u64,
        store.metrics().gap_markers,
        "seed {seed}"
    );
    assert_gap_times(&markers, started_us, now_us(), seed);
    assert_acknowledged(&entries, &acked, seed);
    // Nothing dropped or refused is in the log. The event whose fsync failed
    // had an unknown outcome: its bytes were written before the fsync
    // failed, so the recovered log may hold it, but only intact.
    for stored in events(&entries) {
        if acked.contains_key(&stored.offset) {
            continue;
        }
        assert_eq!(
            stored.tenant_id, "failed",
            "unexpected {stored:?}; seed {seed}"
        );
        assert_stored(&stored, &failed, seed);
    }

    // Writing works again, for every write mode.
    let after = event("after", 1, &mut rng);
    let offset = store
        .record_blocking(after.clone())
        .expect("record after recovery");
    acked.insert(offset, after);
    let after = event("after", 2, &mut rng);
    let offset = rt
        .block_on(store.record(after.clone()))
        .expect("record after recovery");
    acked.insert(offset, after);
    assert_acknowledged(&read_all(&store, seed), &acked, seed);
    assert_eq!(store.metrics().dropped, calls, "seed {seed}");
    store.close().expect("close");
}

/// The audit trail accounts for each detached call exactly once: an event
/// is either in the log or counted by a gap marker, never both. Here the
/// writer has already written the event when its fsync fails; the failure
/// reaches `record_detached`'s callback, and the supervisor then reopens the
/// log from the same (in-memory or page-cache) bytes.
#[test]
fn detached_event_whose_fsync_failed_is_not_both_in_the_log_and_in_a_gap() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/failsafe-fsync-once";
    const TENANT: &str = "tenant-fsync-once";
    let storage = SimStorage::new(seed);
    let store = open_store(&storage, DIR, LogOptions::default());
    let acked = record_some(&store, "acked", 1 + rng.below(5), &mut rng);

    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, false);
    let sent = event(TENANT, 0, &mut rng);
    detached_within_bound(&store, sent.clone(), seed);
    wait_until(
        &store,
        seed,
        "the outcome, a recovery, no pending gap",
        |m| {
            m.recorded + m.dropped == acked.len() as u64 + 1
                && m.recoveries >= 1
                && m.dropped_pending_gap == 0
        },
    );

    let entries = read_all(&store, seed);
    assert_acknowledged(&entries, &acked, seed);
    let in_log: Vec<StoredEvent> = events(&entries)
        .into_iter()
        .filter(|e| e.tenant_id == TENANT)
        .collect();
    for stored in &in_log {
        assert_stored(stored, &sent, seed);
    }
    let gap_sum: u64 = gaps(&entries).iter().map(|g| g.dropped).sum();
    let m = store.metrics();
    assert_eq!(
        in_log.len() as u64 + gap_sum,
        1,
        "the event is in the log {} time(s) and gap markers count {gap_sum} drop(s); \
         {m:?}; seed {seed}",
        in_log.len()
    );
    assert_eq!(m.dropped, gap_sum, "{m:?}; seed {seed}");
    store.close().expect("close");
}

#[test]
fn full_queue_drops_past_the_bound_and_counts_every_drop() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/failsafe-queue";
    const TENANT: &str = "tenant-queue";
    const THREADS: u64 = 4;
    let storage = SimStorage::new(seed);
    let log = LogOptions {
        queue_capacity: 1,
        durability: Durability::Fsync,
        ..LogOptions::default()
    };
    let store = open_store(&storage, DIR, log);
    let started_us = now_us();
    // Longer than the bound plus slack: a call that waited for the disk
    // instead of giving up would fail the bound check.
    storage.set_sync_delay(Duration::from_millis(300));

    let per_thread = 8 + rng.below(8);
    let sent: Vec<Vec<Event>> = (0..THREADS)
        .map(|t| {
            (0..per_thread)
                .map(|i| event(TENANT, t * 1_000 + i, &mut rng))
                .collect()
        })
        .collect();
    std::thread::scope(|scope| {
        for events in &sent {
            let store = &store;
            scope.spawn(move || {
                for ev in events {
                    detached_within_bound(store, ev.clone(), seed);
                }
            });
        }
    });
    let calls = THREADS * per_thread;
    let m = store.metrics();
    assert!(
        m.dropped > 0,
        "a one-slot queue behind a slow disk drops; {m:?}; seed {seed}"
    );
    assert!(
        m.dropped < calls,
        "some calls got a slot; {m:?}; seed {seed}"
    );

    storage.set_sync_delay(Duration::ZERO);
    wait_until(&store, seed, "every outcome and its gap marker", |m| {
        m.recorded + m.dropped == calls && m.dropped_pending_gap == 0 && m.gap_markers >= 1
    });
    let m = store.metrics();
    let sent: Vec<Event> = sent.into_iter().flatten().collect();
    assert_drop_warnings(DIR, &sent, m.dropped, &["queue is full"], seed);

    let entries = read_all(&store, seed);
    let markers = gaps(&entries);
    assert_eq!(
        markers.iter().map(|g| g.dropped).sum::<u64>(),
        m.dropped,
        "gap markers {markers:?}; seed {seed}"
    );
    assert_eq!(markers.len() as u64, m.gap_markers, "seed {seed}");
    assert_gap_times(&markers, started_us, now_us(), seed);
    // Every event not dropped is present, once, intact.
    let by_run: BTreeMap<&str, &Event> = sent
        .iter()
        .map(|e| (e.run_id.as_deref().expect("run id"), e))
        .collect();
    let stored = events(&entries);
    let mut seen = HashSet::new();
    for ev in &stored {
        let run = ev.run_id.as_deref().expect("run id");
        assert!(
            seen.insert(run.to_owned()),
            "{run} recorded twice; seed {seed}"
        );
        let expected = by_run
            .get(run)
            .unwrap_or_else(|| panic!("unknown event {ev:?}; seed {seed}"));
        assert_stored(ev, expected, seed);
    }
    assert_eq!(stored.len() as u64, m.recorded, "seed {seed}");
    assert_eq!(stored.len() as u64 + m.dropped, calls, "seed {seed}");
    store.close().expect("close");
}

#[test]
fn no_space_drops_detached_events_and_claims_no_marker_until_space_returns() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/failsafe-enospc";
    const TENANT: &str = "tenant-enospc";
    let storage = SimStorage::new(seed);
    let store = open_store(&storage, DIR, LogOptions::default());
    let rt = runtime();
    let started_us = now_us();

    let mut acked = record_some(&store, "acked", 3 + rng.below(5), &mut rng);

    storage.inject(FaultOp::Write, 0, FaultKind::NoSpace, true);
    assert_poisoned(
        store.record_blocking(event("failed", 1_000, &mut rng)),
        "record_blocking",
        seed,
    );

    let calls = 20 + rng.below(20);
    let sent: Vec<Event> = (0..calls).map(|n| event(TENANT, n, &mut rng)).collect();
    for ev in &sent {
        detached_within_bound(&store, ev.clone(), seed);
    }
    // Reopening needs no write, so the supervisor may reopen while the disk
    // is full; then a detached event is queued and fails on the writer
    // thread, after its call returned. Wait for every outcome.
    wait_until(&store, seed, "every detached outcome", |m| {
        m.dropped == calls
    });
    // Two reopens after every drop is pending mean the marker attempt that
    // follows the first of them is over (the supervisor tries a marker
    // after each reopen, and a failed one poisons the log again): it
    // failed, and the store must not claim it. Counted from here, not from
    // the start: the reopens may all have happened while the detached
    // calls were still being made, before any marker was due.
    let reopens = store.metrics().recoveries;
    wait_until(&store, seed, "two reopen attempts", |m| {
        m.recoveries >= reopens + 2
    });
    let m = store.metrics();
    assert_eq!(
        m.gap_markers, 0,
        "no marker while the disk is full; {m:?}; seed {seed}"
    );
    assert_eq!(m.dropped_pending_gap, calls, "seed {seed}");
    assert_eq!(m.recorded, acked.len() as u64, "seed {seed}");
    assert!(
        gaps(&read_all(&store, seed)).is_empty(),
        "no marker in the log while the disk is full; seed {seed}"
    );
    // An event queued just as the supervisor closed the failed log is
    // refused as closed; every other drop names the full disk.
    assert_drop_warnings(
        DIR,
        &sent,
        calls,
        &["injected ENOSPC", "the log is closed"],
        seed,
    );
    let marker_failures = log_lines(&["could not write a gap marker yet"]);
    assert!(!marker_failures.is_empty(), "seed {seed}");

    storage.clear_faults();
    wait_until(&store, seed, "a gap marker", |m| {
        m.gap_markers >= 1 && m.dropped_pending_gap == 0
    });
    let entries = read_all(&store, seed);
    let markers = gaps(&entries);
    assert_eq!(
        markers.iter().map(|g| g.dropped).sum::<u64>(),
        calls,
        "gap markers {markers:?}; seed {seed}"
    );
    assert_eq!(
        markers.len() as u64,
        store.metrics().gap_markers,
        "seed {seed}"
    );
    assert_gap_times(&markers, started_us, now_us(), seed);
    assert_acknowledged(&entries, &acked, seed);
    // A write that failed with ENOSPC left nothing behind.
    assert_eq!(events(&entries).len(), acked.len(), "seed {seed}");

    let after = event("after", 1, &mut rng);
    let offset = rt
        .block_on(store.record(after.clone()))
        .expect("record after recovery");
    acked.insert(offset, after);
    let mut batch = store.begin();
    let staged: Vec<Event> = (2..5).map(|n| event("after", n, &mut rng)).collect();
    for ev in &staged {
        batch.record(ev.clone()).expect("stage");
    }
    let range = batch.commit_blocking().expect("commit after recovery");
    for (offset, ev) in range.zip(staged) {
        acked.insert(offset, ev);
    }
    assert_acknowledged(&read_all(&store, seed), &acked, seed);
    store.close().expect("close");
}

/// A disk that keeps failing is not hammered: each failed reopen doubles
/// the supervisor's wait (up to 64 × `recovery_interval`), and once the
/// fault clears the store recovers by itself.
#[test]
fn failed_reopens_back_off_and_recover_once_the_disk_works() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/failsafe-backoff";
    let storage = SimStorage::new(seed);
    let store = open_store(&storage, DIR, LogOptions::default());
    let acked = record_some(&store, "acked", 3, &mut rng);
    // Every fsync fails, so every reopen (which fsyncs first) fails too.
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    assert_poisoned(
        store.record_blocking(event("failed", 1, &mut rng)),
        "record_blocking",
        seed,
    );
    let watched = Duration::from_millis(1200);
    std::thread::sleep(watched);
    let attempts = log_lines(&["could not reopen the log yet", DIR]).len();
    // At a fixed 20 ms that is ~60 attempts; doubling from 20 ms, 6.
    assert!(
        (1..=10).contains(&attempts),
        "{attempts} reopen attempts in {watched:?}; seed {seed}"
    );
    storage.clear_faults();
    wait_until(&store, seed, "a reopen once the disk works", |m| {
        m.recoveries >= 1
    });
    let offset = store
        .record_blocking(event("after", 2, &mut rng))
        .expect("record after recovery");
    assert_eq!(offset, acked.len() as u64, "seed {seed}");
    store.close().expect("close");
}
