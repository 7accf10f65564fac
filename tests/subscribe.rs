//! Replay and subscriptions: a subscriber sees every offset from where it
//! started exactly once, in order, with the entry that was recorded there,
//! whether that entry was on disk when it subscribed, committed while it was
//! catching up, or committed after it had caught up.
//!
//! - A proptest interleaves appends (single records and caller-owned
//!   batches, inline, from a writer thread or from a tokio task) with a
//!   subscriber that starts at a random offset, through each of `try_next`,
//!   `next_blocking` and `next().await`.
//! - Lagging: with a small `subscriber_lag_warning`, a subscriber that falls
//!   too far behind is told once (`Delivery::Lagging`) and loses nothing; it
//!   is told again only after it came back within the threshold and fell
//!   behind again. A subscription keeps no queue of its own (it reads the
//!   log), so its memory is bounded by construction; nothing here measures
//!   memory.
//! - Subscribing past the end is refused; a subscriber follows the store
//!   across the supervisor's reopen of a failed log; after `close` a
//!   subscriber that has everything gets `Error::Closed`; `replay(0)` returns
//!   every committed entry, gap markers included.
//! - Two liveness checks: an async subscriber made while the log is down
//!   wakes once the supervisor has reopened it, and a subscriber that met
//!   damaged bytes keeps reporting the damage instead of falling silent.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test subscribe`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::Range;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::Rng;
use enforcelog::storage::sim::{FaultKind, FaultOp, SimStorage};
use enforcelog::{
    Action, Delivery, Durability, Entry, Error, Event, GapMarker, LogOptions, Store, StoreOptions,
    StoredEvent, Subscription,
};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

const DIR: &str = "/store";
const BASE_US: i64 = 1_764_000_000_000_000;
/// The default lag threshold: far more than any test here records.
const NO_LAG_WARNING: u64 = 1_000_000;
/// Longest a test waits for another thread (or the supervisor) before it
/// fails; a correct run needs a small fraction of it.
const WAIT_MAX: Duration = Duration::from_secs(20);
/// Proptest cases per delivery method.
const CASES: u32 = 128;

/// Small segments and a small index interval, so catching up crosses sealed
/// segments (memory-mapped) and the active one, and starts from index seeks.
fn options(lag_warning: u64, durability: Durability) -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            segment_max_bytes: 4096,
            record_max_bytes: 1024,
            index_interval_bytes: 256,
            durability,
            ..LogOptions::default()
        },
        recovery_interval: Duration::from_millis(10),
        subscriber_lag_warning: lag_warning,
        ..StoreOptions::default()
    }
}

fn open(storage: &SimStorage, options: StoreOptions) -> Store {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open()
        .expect("open the store")
}

/// The `i`-th event a test records. Timestamps are out of order but all
/// different (`1000 i - 2500 (i mod 7)` is injective), so an event is known
/// by its time.
fn event(i: u64) -> Event {
    let n = i64::try_from(i).expect("small");
    let action = Action::ALL[usize::try_from(i % 4).expect("small")];
    let mut event = Event::new(
        format!("tenant-{}", i % 3),
        format!("rule-{}", i % 5),
        action,
    )
    .at_us(BASE_US + n * 1_000 - (n % 7) * 2_500);
    if i.is_multiple_of(2) {
        event = event.with_run_id(format!("run-{i}"));
    }
    if i.is_multiple_of(3) {
        event = event.with_details(enforcelog::details!({"i": i, "note": "subscribe"}));
    }
    event
}

/// The entry the store must give back for `event` recorded at `offset`.
fn stored(offset: u64, event: &Event) -> Entry {
    Entry::Event(StoredEvent {
        offset,
        tenant_id: event.tenant_id.clone(),
        rule_id: event.rule_id.clone(),
        action: event.action,
        run_id: event.run_id.clone(),
        details: event.details.clone(),
        enforced_at_us: event.enforced_at_us.expect("test events carry their time"),
    })
}

/// Polls (bounded) until `done`; fails naming `what` after [`WAIT_MAX`].
fn wait_until(what: &str, seed: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {WAIT_MAX:?} (ENFORCELOG_SEED={seed})"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// The interleaving proptest.

/// How the subscriber takes its deliveries, and who writes meanwhile.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// `try_next`; the test thread writes inline between reads.
    TryNext,
    /// `next_blocking` on a thread of its own; a writer thread appends.
    Blocking,
    /// `next().await`; a tokio task appends through the async API.
    Async,
}

/// One write: a single record, or a caller-owned batch of `n` events.
#[derive(Debug, Clone, Copy)]
enum Write {
    One,
    Batch(u64),
}

impl Write {
    fn len(self) -> u64 {
        match self {
            Write::One => 1,
            Write::Batch(n) => n,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Write(Write),
    /// Up to this many `try_next` calls (only `Mode::TryNext` reads between
    /// writes; the other modes read all the time on their own).
    Read(usize),
}

#[derive(Debug, Clone)]
struct Case {
    /// Written before the subscription exists.
    before: Vec<Write>,
    /// Where it starts, in `0..=next_offset` at subscribe time.
    start: Index,
    /// Written while it catches up.
    during: Vec<Step>,
    /// Written after it caught up with `before` and `during`.
    after: Vec<Step>,
}

fn writes(steps: &[Step]) -> Vec<Write> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Write(w) => Some(*w),
            Step::Read(_) => None,
        })
        .collect()
}

fn write_strategy() -> impl Strategy<Value = Write> {
    prop_oneof![
        3 => Just(Write::One),
        2 => (1u64..=20).prop_map(Write::Batch),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => write_strategy().prop_map(Step::Write),
        2 => (1usize..=15).prop_map(Step::Read),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(write_strategy(), 0..14),
        any::<Index>(),
        proptest::collection::vec(step_strategy(), 0..24),
        proptest::collection::vec(step_strategy(), 0..16),
    )
        .prop_map(|(before, start, during, after)| Case {
            before,
            start,
            during,
            after,
        })
}

/// Records `write` as events `next..`, which must land at offsets `next..`
/// (this is the only writer).
fn write_blocking(store: &Store, write: Write, next: &mut u64) -> Result<(), String> {
    let first = *next;
    let got = match write {
        Write::One => store.record_blocking(event(first)).map(|o| o..o + 1),
        Write::Batch(n) => {
            let mut batch = store.begin();
            for i in first..first + n {
                batch
                    .record(event(i))
                    .map_err(|e| format!("staging event {i}: {e}"))?;
            }
            batch.commit_blocking()
        }
    };
    check_written(got, write, next)
}

/// [`write_blocking`] through `record().await` and `commit().await`.
async fn write_async(store: &Store, write: Write, next: &mut u64) -> Result<(), String> {
    let first = *next;
    let got = match write {
        Write::One => store.record(event(first)).await.map(|o| o..o + 1),
        Write::Batch(n) => {
            let mut batch = store.begin();
            for i in first..first + n {
                batch
                    .record(event(i))
                    .map_err(|e| format!("staging event {i}: {e}"))?;
            }
            batch.commit().await
        }
    };
    check_written(got, write, next)
}

fn check_written(
    got: enforcelog::Result<Range<u64>>,
    write: Write,
    next: &mut u64,
) -> Result<(), String> {
    let want = *next..*next + write.len();
    let got = got.map_err(|e| format!("recording {write:?} at offset {}: {e}", *next))?;
    if got != want {
        return Err(format!("{write:?} was given offsets {got:?}, not {want:?}"));
    }
    *next = want.end;
    Ok(())
}

/// What the subscriber has been given so far: every delivery must be the
/// entry at the next offset.
struct Seen {
    next: u64,
}

impl Seen {
    fn accept(&mut self, delivery: Delivery) -> Result<(), String> {
        let want = stored(self.next, &event(self.next));
        match delivery {
            Delivery::Entry(entry) if entry == want => {
                self.next += 1;
                Ok(())
            }
            Delivery::Entry(entry) => Err(format!(
                "expected the entry at offset {}: {want:?}\n got: {entry:?}",
                self.next
            )),
            Delivery::Lagging { behind } => Err(format!(
                "Lagging {{ behind: {behind} }} at offset {} with the default threshold",
                self.next
            )),
        }
    }
}

/// Up to `n` `try_next` calls. With no other writer, `None` must mean the
/// subscriber is at the end of the log.
fn poll(sub: &mut Subscription, store: &Store, n: usize, seen: &mut Seen) -> Result<(), String> {
    for _ in 0..n {
        match sub.try_next() {
            Ok(Some(delivery)) => seen.accept(delivery)?,
            Ok(None) => {
                let end = store.next_offset();
                if sub.position() != end || seen.next != end {
                    return Err(format!(
                        "try_next gave None at position {} (seen up to {}) with the log at {end}",
                        sub.position(),
                        seen.next
                    ));
                }
                return Ok(());
            }
            Err(e) => return Err(format!("try_next at offset {}: {e}", seen.next)),
        }
        if sub.position() != seen.next {
            return Err(format!(
                "position() is {} after delivering up to {}",
                sub.position(),
                seen.next
            ));
        }
    }
    Ok(())
}

/// Reads until `try_next` says there is nothing more, and checks that this
/// is the end of what was written.
fn drain(sub: &mut Subscription, store: &Store, seen: &mut Seen, end: u64) -> Result<(), String> {
    // One call per entry, plus the final `None`.
    let calls = usize::try_from(end - seen.next).expect("small") + 1;
    poll(sub, store, calls, seen)?;
    if seen.next != end || sub.lag() != 0 {
        return Err(format!(
            "after draining, seen up to {} (lag {}), written up to {end}",
            seen.next,
            sub.lag()
        ));
    }
    Ok(())
}

fn run_try_next(case: &Case) -> Result<(), String> {
    let store = open(
        &SimStorage::new(0),
        options(NO_LAG_WARNING, Durability::None),
    );
    let mut next = 0;
    for &w in &case.before {
        write_blocking(&store, w, &mut next)?;
    }
    let start = case.start.index(usize::try_from(next).expect("small") + 1) as u64;
    let mut sub = store
        .subscribe(start)
        .map_err(|e| format!("subscribe({start}) with {next} entries: {e}"))?;
    if sub.position() != start || sub.lag() != next - start {
        return Err(format!(
            "a new subscription at {start} has position {} and lag {}",
            sub.position(),
            sub.lag()
        ));
    }
    let mut seen = Seen { next: start };
    for phase in [&case.during, &case.after] {
        for &step in phase {
            match step {
                Step::Write(w) => write_blocking(&store, w, &mut next)?,
                Step::Read(n) => poll(&mut sub, &store, n, &mut seen)?,
            }
        }
        drain(&mut sub, &store, &mut seen, next)?;
    }
    Ok(())
}

fn run_blocking(case: &Case) -> Result<(), String> {
    let store = open(
        &SimStorage::new(0),
        options(NO_LAG_WARNING, Durability::None),
    );
    let mut next = 0;
    for &w in &case.before {
        write_blocking(&store, w, &mut next)?;
    }
    let start = case.start.index(usize::try_from(next).expect("small") + 1) as u64;
    let mut sub = store
        .subscribe(start)
        .map_err(|e| format!("subscribe({start}) with {next} entries: {e}"))?;
    let (during, after) = (writes(&case.during), writes(&case.after));
    let caught_up_at = next + during.iter().map(|w| w.len()).sum::<u64>();
    let end = caught_up_at + after.iter().map(|w| w.len()).sum::<u64>();

    let (caught_up, caught_up_rx) = mpsc::channel::<()>();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || -> Result<(), String> {
            for w in during {
                write_blocking(&store, w, &mut next)?;
            }
            caught_up_rx
                .recv_timeout(WAIT_MAX)
                .map_err(|e| format!("waiting for the subscriber to catch up: {e}"))?;
            for w in after {
                write_blocking(&store, w, &mut next)?;
            }
            Ok(())
        })
    };
    let (done, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut read = || -> Result<(), String> {
            let mut seen = Seen { next: start };
            let mut take = |seen: &mut Seen, until: u64| -> Result<(), String> {
                while seen.next < until {
                    let delivery = sub
                        .next_blocking()
                        .map_err(|e| format!("next_blocking at offset {}: {e}", seen.next))?;
                    seen.accept(delivery)?;
                }
                Ok(())
            };
            take(&mut seen, caught_up_at)?;
            // The writer may already be gone after a failure of its own.
            let _ = caught_up.send(());
            take(&mut seen, end)?;
            match sub.try_next() {
                Ok(None) => Ok(()),
                other => Err(format!("after the last entry, try_next gave {other:?}")),
            }
        };
        let _ = done.send(read());
    });
    let read = done_rx.recv_timeout(WAIT_MAX).unwrap_or_else(|_| {
        Err(format!(
            "the blocking subscriber did not get offsets {start}..{end} within {WAIT_MAX:?}"
        ))
    });
    let wrote = writer
        .join()
        .unwrap_or_else(|_| Err("the writer thread panicked".into()));
    wrote.and(read)
}

fn run_async(case: &Case) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("build a tokio runtime: {e}"))?;
    runtime.block_on(async {
        let store = open(
            &SimStorage::new(0),
            options(NO_LAG_WARNING, Durability::None),
        );
        let mut next = 0;
        for &w in &case.before {
            write_async(&store, w, &mut next).await?;
        }
        let start = case.start.index(usize::try_from(next).expect("small") + 1) as u64;
        let mut sub = store
            .subscribe(start)
            .map_err(|e| format!("subscribe({start}) with {next} entries: {e}"))?;
        let (during, after) = (writes(&case.during), writes(&case.after));
        let caught_up_at = next + during.iter().map(|w| w.len()).sum::<u64>();
        let end = caught_up_at + after.iter().map(|w| w.len()).sum::<u64>();

        let (caught_up, caught_up_rx) = tokio::sync::oneshot::channel::<()>();
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                for w in during {
                    write_async(&store, w, &mut next).await?;
                }
                caught_up_rx
                    .await
                    .map_err(|_| "the subscriber stopped before catching up".to_string())?;
                for w in after {
                    write_async(&store, w, &mut next).await?;
                }
                Ok::<(), String>(())
            })
        };
        let read = async {
            let mut seen = Seen { next: start };
            while seen.next < caught_up_at {
                let delivery = sub
                    .next()
                    .await
                    .map_err(|e| format!("next() at offset {}: {e}", seen.next))?;
                seen.accept(delivery)?;
            }
            let _ = caught_up.send(());
            while seen.next < end {
                let delivery = sub
                    .next()
                    .await
                    .map_err(|e| format!("next() at offset {}: {e}", seen.next))?;
                seen.accept(delivery)?;
            }
            match sub.try_next() {
                Ok(None) => Ok(()),
                other => Err(format!("after the last entry, try_next gave {other:?}")),
            }
        };
        let read = tokio::time::timeout(WAIT_MAX, read)
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the async subscriber did not get offsets {start}..{end} within {WAIT_MAX:?}"
                ))
            });
        let wrote = match tokio::time::timeout(WAIT_MAX, writer).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(format!("the writer task failed: {e}")),
            Err(_) => Err("the writer task did not finish".into()),
        };
        wrote.and(read)
    })
}

fn run_interleavings(mode: Mode) {
    let seed = common::run_seed();
    let config = Config {
        cases: CASES,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&case_strategy(), |case| {
        let outcome = match mode {
            Mode::TryNext => run_try_next(&case),
            Mode::Blocking => run_blocking(&case),
            Mode::Async => run_async(&case),
        };
        outcome.map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{mode:?} subscriber failed (replay with ENFORCELOG_SEED={seed}): {e}");
    }
}

#[test]
fn try_next_sees_every_offset_once_in_order_across_catch_up_and_live() {
    run_interleavings(Mode::TryNext);
}

#[test]
fn next_blocking_sees_every_offset_once_in_order_beside_a_writer_thread() {
    run_interleavings(Mode::Blocking);
}

#[test]
fn async_next_sees_every_offset_once_in_order_beside_a_writer_task() {
    run_interleavings(Mode::Async);
}

// ---------------------------------------------------------------------------
// Lagging.

/// Expects the next `try_next` to deliver the entry at `offset`.
fn expect_entry(sub: &mut Subscription, offset: u64, seed: u64) {
    match sub.try_next() {
        Ok(Some(Delivery::Entry(entry))) => assert_eq!(
            entry,
            stored(offset, &event(offset)),
            "entry at offset {offset} (ENFORCELOG_SEED={seed})"
        ),
        other => {
            panic!("expected the entry at offset {offset}, got {other:?} (ENFORCELOG_SEED={seed})")
        }
    }
}

/// Records events `events` at the same offsets, in batches of up to 20
/// (a larger one would not fit in the tests' small segments).
fn record_range(store: &Store, events: Range<u64>) {
    let mut first = events.start;
    while first < events.end {
        let end = (first + 20).min(events.end);
        let mut batch = store.begin();
        for i in first..end {
            batch.record(event(i)).expect("a valid event");
        }
        assert_eq!(batch.commit_blocking().expect("commit"), first..end);
        first = end;
    }
}

#[test]
fn a_lagging_subscriber_is_told_once_per_fall_and_loses_nothing() {
    let seed = common::run_seed();
    let store = open(&SimStorage::new(seed), options(10, Durability::None));
    record_range(&store, 0..25);
    let mut sub = store.subscribe(0).expect("subscribe");
    assert_eq!(sub.lag(), 25);

    // 25 behind > 10: told once, then every entry.
    assert_eq!(
        sub.try_next().expect("try_next"),
        Some(Delivery::Lagging { behind: 25 })
    );
    assert_eq!(sub.position(), 0, "telling the lag delivers no entry");
    for offset in 0..5 {
        expect_entry(&mut sub, offset, seed);
    }
    // Still behind (20, then 50): no second warning for the same fall.
    record_range(&store, 25..55);
    assert_eq!(sub.lag(), 50);
    for offset in 5..55 {
        expect_entry(&mut sub, offset, seed);
    }
    assert_eq!(sub.try_next().expect("try_next"), None);

    // Exactly at the threshold is not lagging.
    record_range(&store, 55..65);
    for offset in 55..65 {
        expect_entry(&mut sub, offset, seed);
    }
    assert_eq!(sub.try_next().expect("try_next"), None);

    // Falls behind again (11 > 10): told again.
    for i in 65..76 {
        assert_eq!(store.record_blocking(event(i)).expect("record"), i);
    }
    assert_eq!(
        sub.try_next().expect("try_next"),
        Some(Delivery::Lagging { behind: 11 })
    );
    expect_entry(&mut sub, 65, seed); // 11 behind when asked: still the same fall
    expect_entry(&mut sub, 66, seed); // 10 behind: back within the threshold
    record_range(&store, 76..81);
    // 14 behind after having been within the threshold: a new fall.
    assert_eq!(
        sub.try_next().expect("try_next"),
        Some(Delivery::Lagging { behind: 14 })
    );
    for offset in 67..81 {
        expect_entry(&mut sub, offset, seed);
    }
    assert_eq!(sub.try_next().expect("try_next"), None);
    assert_eq!(sub.lag(), 0);
}

/// Random appends and reads against the rule: told when more than the
/// threshold behind, once per fall; a fall ends when a look finds it within
/// the threshold.
#[test]
fn lag_warnings_follow_the_threshold_under_random_appends_and_reads() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    const THRESHOLD: u64 = 10;
    let store = open(&SimStorage::new(seed), options(THRESHOLD, Durability::None));
    let mut sub = store.subscribe(0).expect("subscribe");
    let (mut written, mut read, mut lagging, mut warnings) = (0u64, 0u64, false, 0u64);
    for round in 0..300 {
        let most = if rng.next().is_multiple_of(4) { 25 } else { 6 };
        let n = rng.range(0..most);
        if n > 0 {
            record_range(&store, written..written + n);
            written += n;
        }
        for _ in 0..rng.range(0..12) {
            let behind = written - read;
            let got = sub.try_next().expect("try_next");
            let want = if behind > THRESHOLD && !lagging {
                lagging = true;
                Some(Delivery::Lagging { behind })
            } else {
                if behind <= THRESHOLD {
                    lagging = false;
                }
                (behind > 0).then(|| Delivery::Entry(stored(read, &event(read))))
            };
            assert_eq!(
                got, want,
                "round {round}: {written} written, {read} read (ENFORCELOG_SEED={seed})"
            );
            match got {
                Some(Delivery::Entry(_)) => read += 1,
                Some(Delivery::Lagging { .. }) => warnings += 1,
                None => {}
            }
        }
    }
    assert!(
        warnings > 0,
        "the random run never fell behind (ENFORCELOG_SEED={seed})"
    );
}

/// A subscriber behind a writer thread that outpaces it: every entry, in
/// order; each warning names a real lag above the threshold, and two
/// warnings are never back to back.
#[test]
fn a_slow_blocking_subscriber_gets_every_entry_and_sound_warnings() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    const THRESHOLD: u64 = 10;
    const TOTAL: u64 = 600;
    let store = open(&SimStorage::new(seed), options(THRESHOLD, Durability::None));
    record_range(&store, 0..100);
    let mut sub = store.subscribe(0).expect("subscribe");
    let sizes: Vec<u64> = (0..TOTAL).map(|_| rng.range(1..30)).collect();
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut next = 100;
            for size in sizes {
                let end = (next + size).min(TOTAL);
                if next == end {
                    break;
                }
                record_range(&store, next..end);
                next = end;
            }
        })
    };
    let first = sub.next_blocking().expect("next_blocking");
    assert!(
        matches!(first, Delivery::Lagging { behind } if behind >= 100),
        "100 entries behind a threshold of 10, the first delivery was {first:?} (ENFORCELOG_SEED={seed})"
    );
    let (mut read, mut last_was_warning) = (0u64, true);
    while read < TOTAL {
        match sub.next_blocking().expect("next_blocking") {
            Delivery::Entry(entry) => {
                assert_eq!(entry, stored(read, &event(read)), "ENFORCELOG_SEED={seed}");
                read += 1;
                last_was_warning = false;
            }
            Delivery::Lagging { behind } => {
                assert!(
                    !last_was_warning,
                    "two warnings in a row at offset {read} (ENFORCELOG_SEED={seed})"
                );
                assert!(
                    behind > THRESHOLD && behind <= TOTAL - read,
                    "Lagging {{ behind: {behind} }} at offset {read} (ENFORCELOG_SEED={seed})"
                );
                last_was_warning = true;
            }
        }
    }
    writer.join().expect("the writer thread");
    assert_eq!(sub.try_next().expect("try_next"), None);
}

// ---------------------------------------------------------------------------
// Offsets, reopen, close, replay.

#[test]
fn subscribing_past_the_end_is_refused() {
    let store = open(
        &SimStorage::new(1),
        options(NO_LAG_WARNING, Durability::None),
    );
    let refused = |offset: u64, end: u64| match store.subscribe(offset) {
        Err(Error::OffsetOutOfRange {
            requested,
            next_offset,
        }) => assert_eq!((requested, next_offset), (offset, end)),
        other => panic!("subscribe({offset}) with the log at {end}: {other:?}"),
    };
    refused(1, 0);
    refused(u64::MAX, 0);
    let mut at_end = store
        .subscribe(0)
        .expect("subscribe at the end of an empty log");
    assert_eq!(at_end.try_next().expect("try_next"), None);

    record_range(&store, 0..3);
    refused(4, 3);
    refused(u64::MAX, 3);
    assert!(matches!(
        store.replay(4).map(|_| ()),
        Err(Error::OffsetOutOfRange {
            requested: 4,
            next_offset: 3
        })
    ));
    let mut at_end = store.subscribe(3).expect("subscribe at the end");
    assert_eq!(at_end.try_next().expect("try_next"), None);
    assert_eq!(at_end.lag(), 0);
    // The one made on the empty log still sees everything from 0.
    let mut early = store.subscribe(0).expect("subscribe");
    for offset in 0..3 {
        expect_entry(&mut early, offset, 1);
    }
}

/// The tenant of the event that tells the subscriber thread to stop.
const LAST_TENANT: &str = "last";

#[test]
fn a_blocking_subscriber_follows_the_store_across_a_log_reopen() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    let storage = SimStorage::new(seed);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::Fsync));
    // Event number by offset, for what the store acknowledged.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    // Event numbers of failed records: in the log or not.
    let mut maybe: Vec<u64> = Vec::new();
    let mut i = 0u64;
    let mut record = |store: &Store, rng: &mut Rng| -> Result<(), Vec<u64>> {
        let n = rng.range(1..6);
        let numbers: Vec<u64> = (i..i + n).collect();
        i += n;
        let result = if n == 1 {
            store.record_blocking(event(numbers[0])).map(|o| o..o + 1)
        } else {
            let mut batch = store.begin();
            for &k in &numbers {
                batch.record(event(k)).expect("a valid event");
            }
            batch.commit_blocking()
        };
        match result {
            Ok(offsets) => {
                assert_eq!(offsets.end - offsets.start, n);
                acked.extend(offsets.zip(numbers));
                Ok(())
            }
            Err(_) => Err(numbers),
        }
    };
    for _ in 0..8 {
        record(&store, &mut rng).expect("record before the fault");
    }
    let before = store.next_offset();

    let mut sub = store.subscribe(0).expect("subscribe");
    let (deliveries, delivered) = mpsc::channel::<Result<Delivery, String>>();
    let subscriber = std::thread::spawn(move || loop {
        let delivery = sub.next_blocking().map_err(|e| e.to_string());
        let last =
            matches!(&delivery, Ok(Delivery::Entry(Entry::Event(e))) if e.tenant_id == LAST_TENANT);
        let failed = delivery.is_err();
        if deliveries.send(delivery).is_err() || last || failed {
            return;
        }
    });
    let mut got: Vec<Delivery> = Vec::new();
    let take = |got: &mut Vec<Delivery>| {
        let delivery = delivered
            .recv_timeout(WAIT_MAX)
            .unwrap_or_else(|_| panic!("no delivery within {WAIT_MAX:?} (ENFORCELOG_SEED={seed})"));
        got.push(
            delivery.unwrap_or_else(|e| panic!("next_blocking: {e} (ENFORCELOG_SEED={seed})")),
        );
    };
    // Caught up: the subscriber now waits for live entries.
    while (got.len() as u64) < before {
        take(&mut got);
    }

    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    let failed = record(&store, &mut rng).expect_err("a record whose fsync fails");
    maybe.extend(failed);
    if rng.next().is_multiple_of(2) {
        // The log stays poisoned, even for a write after the fault.
        maybe.extend(record(&store, &mut rng).expect_err("a record on a poisoned log"));
    }
    storage.clear_faults();
    wait_until("the supervisor's reopen", seed, || {
        store.metrics().recoveries >= 1
    });
    for _ in 0..8 {
        record(&store, &mut rng).expect("record after the reopen");
    }
    let last = Event::new(LAST_TENANT, "end", Action::Stopped).at_us(BASE_US - 1);
    let last_offset = store
        .record_blocking(last.clone())
        .expect("the last record");

    loop {
        take(&mut got);
        if matches!(got.last(), Some(Delivery::Entry(Entry::Event(e))) if e.tenant_id == LAST_TENANT)
        {
            break;
        }
    }
    subscriber.join().expect("the subscriber thread");

    // Exactly the log, in order, each offset once.
    let replayed: Vec<Entry> = store
        .replay(0)
        .expect("replay")
        .collect::<enforcelog::Result<_>>()
        .expect("replay every entry");
    let entries: Vec<Entry> = got
        .into_iter()
        .map(|d| match d {
            Delivery::Entry(entry) => entry,
            Delivery::Lagging { behind } => {
                panic!("Lagging {{ behind: {behind} }} with the default threshold")
            }
        })
        .collect();
    assert_eq!(
        entries.len() as u64,
        last_offset + 1,
        "ENFORCELOG_SEED={seed}"
    );
    for (k, entry) in entries.iter().enumerate() {
        assert_eq!(entry.offset(), k as u64, "ENFORCELOG_SEED={seed}");
    }
    assert_eq!(
        entries, replayed,
        "delivered vs replay(0) (ENFORCELOG_SEED={seed})"
    );
    assert_eq!(entries[last_offset as usize], stored(last_offset, &last));

    // Every acknowledged event at its offset; anything else is a failed
    // record that reached the file before its fsync failed; none twice.
    for (&offset, &number) in &acked {
        assert_eq!(
            entries[offset as usize],
            stored(offset, &event(number)),
            "acknowledged event {number} (ENFORCELOG_SEED={seed})"
        );
    }
    let mut numbers_seen = BTreeSet::new();
    for entry in &entries[..last_offset as usize] {
        let Entry::Event(e) = entry else {
            panic!("unexpected gap marker {entry:?} (ENFORCELOG_SEED={seed})");
        };
        let number = (0..i)
            .find(|&k| event(k).enforced_at_us == Some(e.enforced_at_us))
            .unwrap_or_else(|| panic!("an entry nobody recorded: {e:?}"));
        assert!(
            acked.get(&e.offset) == Some(&number) || maybe.contains(&number),
            "event {number} at offset {} was neither acknowledged there nor failed (ENFORCELOG_SEED={seed})",
            e.offset
        );
        assert_eq!(entry, &stored(e.offset, &event(number)));
        assert!(
            numbers_seen.insert(number),
            "event {number} delivered twice"
        );
    }
}

/// Regression for a subscription made while the log is down (its writer
/// failed and stopped, and the supervisor cannot reopen it yet): the async
/// `next()` must wake up once the supervisor has reopened the log.
#[test]
fn an_async_subscriber_made_while_the_log_is_down_wakes_after_the_reopen() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::Fsync));
    for i in 0..3 {
        assert_eq!(store.record_blocking(event(i)).expect("record"), i);
    }
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    assert!(store.record_blocking(event(3)).is_err(), "the fsync fails");
    // The supervisor's first reopen attempt stops the failed writer, then
    // fails (opening fsyncs, and the fault lasts). Closing the failed handle
    // here does that same first step now, so the subscription below is made
    // on a log whose writer has certainly stopped.
    store.log().stop_failed_writer();
    assert!(store.log().is_poisoned(), "no reopen while fsync fails");
    let mut sub = store.subscribe(0).expect("subscribe while the log is down");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        for offset in 0..3 {
            let delivery = tokio::time::timeout(WAIT_MAX, sub.next())
                .await
                .expect("committed entries are delivered at once")
                .expect("next()");
            assert_eq!(delivery, Delivery::Entry(stored(offset, &event(offset))));
        }
        let mut waiting = Box::pin(sub.next());
        // One poll: nothing to deliver while the log is down, so it waits.
        let first_poll = std::future::poll_fn(|cx| Poll::Ready(waiting.as_mut().poll(cx))).await;
        assert!(
            first_poll.is_pending(),
            "delivered {first_poll:?} while the log is down"
        );

        storage.clear_faults();
        wait_until("the supervisor's reopen", seed, || {
            store.metrics().recoveries >= 1
        });
        let offset = store
            .record(event(4))
            .await
            .expect("record after the reopen");
        let delivery = tokio::time::timeout(Duration::from_secs(5), &mut waiting)
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "next().await still waits 5 s after the log was reopened and entry {offset} \
                     committed (ENFORCELOG_SEED={seed})"
                )
            })
            .expect("next()");
        // Offset 3 is event 3 if its bytes reached the file before its fsync
        // failed (the reopen keeps them), else event 4.
        let number = if offset == 4 { 3 } else { 4 };
        assert_eq!(delivery, Delivery::Entry(stored(3, &event(number))));
    });
}

/// A subscriber that meets damaged bytes in a sealed segment reads past
/// them (issue 13, finding H; it used to stop there with `Corruption`,
/// holding back every later entry of every tenant): the damaged batch is
/// delivered as lost entries (`Entry::Lost`), every other entry as
/// recorded, up to the end of the log.
#[test]
fn a_subscriber_that_meets_damage_in_a_sealed_segment_reads_past_it() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::None));
    record_range(&store, 0..200);
    store.close().expect("close");
    drop(store);
    // Damage a sealed segment while the store is closed (an open store may
    // keep it mapped), then open again: opening trusts sealed segments.
    let path = format!("{DIR}/{:020}.log", 0);
    let mut bytes = storage.read_file(&path).expect("the first segment");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    storage.write_file(&path, &bytes);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::None));

    let mut sub = store.subscribe(0).expect("subscribe");
    let mut lost = 0;
    for offset in 0..200 {
        match sub.try_next() {
            Ok(Some(Delivery::Entry(Entry::Lost(l)))) => {
                assert_eq!(l.offset, offset, "seed {seed}");
                lost += 1;
            }
            Ok(Some(Delivery::Entry(entry))) => {
                assert_eq!(entry, stored(offset, &event(offset)), "seed {seed}");
            }
            other => panic!("seed {seed}: at offset {offset}: {other:?}"),
        }
    }
    assert!(
        lost > 0,
        "seed {seed}: the damaged batch reads as lost entries"
    );
    assert!(
        matches!(sub.try_next(), Ok(None)),
        "seed {seed}: at the end of the log"
    );
    assert_eq!(sub.position(), 200);
}

#[test]
fn after_close_a_subscriber_gets_the_rest_then_closed() {
    let store = open(
        &SimStorage::new(2),
        options(NO_LAG_WARNING, Durability::None),
    );
    record_range(&store, 0..5);
    let mut sub = store.subscribe(0).expect("subscribe");
    expect_entry(&mut sub, 0, 2);
    store.close().expect("close");
    // What was committed before the close is still delivered...
    for offset in 1..5 {
        let delivery = sub.next_blocking().expect("next_blocking after close");
        assert_eq!(delivery, Delivery::Entry(stored(offset, &event(offset))));
    }
    // ... then the end is reported, every time it is asked.
    for _ in 0..2 {
        match sub.next_blocking() {
            Err(Error::Closed) => {}
            other => panic!("next_blocking at the end of a closed store: {other:?}"),
        }
    }
    assert_eq!(sub.try_next().expect("try_next"), None);

    // A subscription made after the close: the same.
    let mut late = store.subscribe(3).expect("subscribe after close");
    for offset in 3..5 {
        let delivery = late.next_blocking().expect("next_blocking");
        assert_eq!(delivery, Delivery::Entry(stored(offset, &event(offset))));
    }
    assert!(matches!(late.next_blocking(), Err(Error::Closed)));
    assert!(matches!(
        store.subscribe(6).map(|_| ()),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn a_waiting_blocking_subscriber_gets_closed_when_the_store_closes() {
    let store = open(
        &SimStorage::new(3),
        options(NO_LAG_WARNING, Durability::Fsync),
    );
    record_range(&store, 0..4);
    let mut sub = store.subscribe(0).expect("subscribe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || loop {
        let delivery = sub.next_blocking();
        let end = delivery.is_err();
        if tx.send(delivery).is_err() || end {
            return;
        }
    });
    for offset in 0..4 {
        let delivery = rx.recv_timeout(WAIT_MAX).expect("a delivery");
        assert_eq!(
            delivery.expect("next_blocking"),
            Delivery::Entry(stored(offset, &event(offset)))
        );
    }
    // The subscriber has everything and waits for more.
    store.close().expect("close");
    match rx.recv_timeout(WAIT_MAX) {
        Ok(Err(Error::Closed)) => {}
        Ok(other) => panic!("a waiting subscriber got {other:?} when the store closed"),
        Err(_) => panic!("a waiting subscriber was not woken within {WAIT_MAX:?} by close"),
    }
}

#[test]
fn a_waiting_async_subscriber_gets_closed_when_the_store_closes() {
    let store = open(&SimStorage::new(4), options(10, Durability::None));
    record_range(&store, 0..30);
    let mut sub = store.subscribe(0).expect("subscribe");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let (caught_up, caught_up_rx) = tokio::sync::oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            let first = sub.next().await.expect("next()");
            assert_eq!(first, Delivery::Lagging { behind: 30 });
            for offset in 0..30 {
                let delivery = sub.next().await.expect("next()");
                assert_eq!(delivery, Delivery::Entry(stored(offset, &event(offset))));
            }
            let _ = caught_up.send(());
            sub.next().await
        });
        // The subscriber has everything; it waits for more (or is about to).
        tokio::time::timeout(WAIT_MAX, caught_up_rx)
            .await
            .expect("the subscriber catches up")
            .expect("the subscriber task runs");
        store.close().expect("close");
        match tokio::time::timeout(WAIT_MAX, reader).await {
            Ok(Ok(Err(Error::Closed))) => {}
            Ok(Ok(other)) => panic!("the async subscriber ended with {other:?}"),
            Ok(Err(e)) => panic!("the async subscriber panicked: {e}"),
            Err(_) => panic!("the async subscriber was not woken within {WAIT_MAX:?} by close"),
        }
    });
}

#[test]
fn replay_returns_every_committed_entry_in_order_with_gap_markers() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::Fsync));
    let mut want: Vec<Entry> = Vec::new();
    record_range(&store, 0..40);
    want.extend((0..40).map(|i| stored(i, &event(i))));
    // An event the store refuses, recorded fail-safe: counted as dropped and
    // written as a gap marker by the supervisor.
    store.record_detached(Event::new("", "rule", Action::Blocked));
    wait_until("the gap marker", seed, || store.metrics().gap_markers >= 1);
    let Some(Ok(Entry::Gap(gap))) = store.replay(40).expect("replay").next() else {
        panic!("no gap marker at offset 40 (ENFORCELOG_SEED={seed})");
    };
    // One event dropped: first and last drop are the same instant.
    let at = gap.first_dropped_at_us;
    assert_eq!(
        gap,
        GapMarker {
            offset: 40,
            dropped: 1,
            first_dropped_at_us: at,
            last_dropped_at_us: at,
            losses: Vec::new(),
            // The event's tenant is invalid: its loss is not attributed.
            unattributed: gap.unattributed,
        }
    );
    assert_eq!(gap.unattributed.map(|s| s.count), Some(1));
    want.push(Entry::Gap(gap));
    for i in 41..60 {
        assert_eq!(store.record_blocking(event(i)).expect("record"), i);
        want.push(stored(i, &event(i)));
    }

    let all: Vec<Entry> = store
        .replay(0)
        .expect("replay(0)")
        .collect::<enforcelog::Result<_>>()
        .expect("every entry");
    assert_eq!(all, want, "ENFORCELOG_SEED={seed}");
    let tail: Vec<Entry> = store
        .replay(35)
        .expect("replay(35)")
        .collect::<enforcelog::Result<_>>()
        .expect("every entry");
    assert_eq!(tail, want[35..]);
    assert_eq!(store.replay(60).expect("replay(60)").count(), 0);
    // The same after a reopen: replay reads the log, not memory.
    store.close().expect("close");
    drop(store);
    let store = open(&storage, options(NO_LAG_WARNING, Durability::Fsync));
    let reopened: Vec<Entry> = store
        .replay(0)
        .expect("replay(0)")
        .collect::<enforcelog::Result<_>>()
        .expect("every entry");
    assert_eq!(reopened, want, "after a reopen (ENFORCELOG_SEED={seed})");
}
