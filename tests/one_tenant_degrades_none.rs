//! One tenant must never degrade the others (issue 13, items 8 and 9).
//!
//! Item 8: an event stamped far in the future is refused by every write
//! path (and `record_detached` drops and counts it); and a store that
//! already holds one (written before the refusal existed, simulated with a
//! raw log) answers every other tenant's "as of now" statistics from the
//! projection, never by replaying the log: `StoreMetrics::stats_replays`
//! counts the replays.
//!
//! Item 9: a record that is not an event payload (appended around the
//! store with a raw `Log`, which the store no longer hands out) is skipped
//! and counted by the projections and by queries; every tenant's `stats`
//! and `query` stay exact.
//!
//! Payloads look real: details with runs of zeros, deep nesting, 64 KiB.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use enforcelog::storage::sim::SimStorage;
use enforcelog::{
    now_us, Action, Entry, Error, Event, EventError, Field, Log, LogOptions, Query, Record, Store,
    StoreOptions,
};
use serde_json::{json, Value};

use common::Rng;

const DIR: &str = "/isolation";
const HOUR_US: i64 = 3_600 * 1_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// 9999-12-31T00:00:00Z.
const YEAR_9999_US: i64 = 253_402_214_400_000_000;

fn options() -> StoreOptions {
    StoreOptions {
        detached_timeout: Duration::from_millis(500),
        recovery_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    }
}

fn open(storage: &SimStorage) -> Store {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options())
        .open()
        .expect("open the store")
}

/// Details as hosts send them: a histogram of mostly zeros, nesting, and
/// now and then one of 64 KiB.
fn details(rng: &mut Rng, n: u64) -> Value {
    let mut nested = json!({"leaf": n});
    for depth in 0..rng.below(12) {
        nested = json!({ "depth": depth, "inner": nested });
    }
    let histogram: Vec<u64> = (0..64).map(|i| u64::from(i % 17 == 0)).collect();
    let mut details = json!({"histogram": histogram, "nested": nested, "zeros": "\u{0}".repeat(8)});
    if n.is_multiple_of(7) {
        details["blob"] = json!("0".repeat(64 * 1024 - 512));
    }
    details
}

/// Events of three tenants over the last ten days.
fn events(rng: &mut Rng, now: i64, count: u64) -> Vec<Event> {
    let tenants = ["acme", "globex", "initech"];
    let rules = ["budget", "no-prod-writes"];
    (0..count)
        .map(|n| {
            Event::new(
                *rng.pick(&tenants),
                *rng.pick(&rules),
                *rng.pick(&Action::ALL),
            )
            .with_run_id(format!("run-{n}"))
            .with_details(common::object(details(rng, n)))
            .at_us(now - rng.range_i64(0..10 * DAY_US))
        })
        .collect()
}

/// Trigger count (30 days), total and newest time per (tenant, rule), by
/// brute force.
fn brute(events: &[Event], as_of_us: i64) -> BTreeMap<(String, String), (u64, u64, i64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let at = e.enforced_at_us.expect("timed");
        if at > as_of_us {
            continue;
        }
        let s = out
            .entry((e.tenant_id.clone(), e.rule_id.clone()))
            .or_insert((0, 0, i64::MIN));
        if at > as_of_us - 30 * DAY_US {
            s.0 += 1;
        }
        s.1 += 1;
        s.2 = s.2.max(at);
    }
    out
}

fn assert_stats_exact(store: &Store, events: &[Event], as_of_us: i64, seed: u64) {
    for ((tenant, rule), (count, total, last)) in brute(events, as_of_us) {
        let s = store
            .stats(&tenant, &rule, Some(as_of_us))
            .unwrap_or_else(|e| panic!("stats({tenant}, {rule}): {e}; seed {seed}"));
        assert_eq!(
            (s.trigger_count, s.total_count, s.last_triggered_at_us),
            (count, total, Some(last)),
            "stats({tenant}, {rule}); seed {seed}"
        );
    }
}

fn assert_queries_exact(store: &Store, events: &[Event], undecodable: u64, seed: u64) {
    let mut all_skipped = 0;
    for tenant in ["acme", "globex", "initech"] {
        let page = store
            .query(&Query::tenant(tenant).limit(100_000))
            .unwrap_or_else(|e| panic!("query({tenant}): {e}; seed {seed}"));
        let want: Vec<&Event> = events.iter().filter(|e| e.tenant_id == tenant).collect();
        assert_eq!(
            page.events.len(),
            want.len(),
            "query({tenant}); seed {seed}"
        );
        for (got, want) in page.events.iter().zip(want) {
            assert_eq!(got.run_id, want.run_id, "query({tenant}); seed {seed}");
            assert_eq!(Some(got.enforced_at_us), want.enforced_at_us, "seed {seed}");
        }
        assert_eq!(
            page.undecodable, undecodable,
            "query({tenant}); seed {seed}"
        );
        all_skipped += page.undecodable;
    }
    assert!(all_skipped == 0 || undecodable > 0, "seed {seed}");
}

/// Appends `records` with a raw log, as a tool (or an older build's
/// `Store::log()`) could, with no store open on the directory.
fn append_raw(storage: &SimStorage, records: Vec<Record>) {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, LogOptions::default())
        .expect("open the raw log");
    log.append_batch_blocking(records).expect("raw append");
    log.close().expect("close the raw log");
}

// ---------------------------------------------------------------------------
// Item 9.

/// Regression (issue 13, item 9): one raw record that is not an event
/// payload made `stats` fail with `ProjectionStalled` and `query` with
/// `BadPayload`, for every tenant. Both must skip it, count it, and stay
/// exact; so must a reopen from the checkpoint, and `verify_projections`.
#[test]
fn an_undecodable_record_is_skipped_and_counted_not_a_stall_for_every_tenant() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let storage = SimStorage::new(seed);
    let now = now_us();
    let mut all = events(&mut rng, now, 40);
    let store = open(&storage);
    for e in &all[..20] {
        store.record_blocking(e.clone()).expect("record");
    }
    store.close().expect("close");
    drop(store);

    // Not event payloads: zeros, a cut MessagePack array, an unknown
    // schema, and random bytes.
    let random_len = rng.below(200) as usize;
    let junk: Vec<Vec<u8>> = vec![
        vec![0u8; 300],
        vec![0x97, 0x01, 0x00, 0xa4, b'a'],
        vec![0x92, 0x09, 0x00],
        // 0xc1 is never used in MessagePack: random bytes after it
        // cannot happen to decode.
        [vec![0xc1], rng.bytes(random_len)].concat(),
    ];
    let undecodable = junk.len() as u64;
    append_raw(
        &storage,
        junk.into_iter()
            .map(|p| Record::new(now - HOUR_US, p))
            .collect(),
    );

    let store = open(&storage);
    for e in &all[20..] {
        store
            .record_blocking(e.clone())
            .expect("record after the junk");
    }
    assert_stats_exact(&store, &all, now, seed);
    assert_queries_exact(&store, &all, undecodable, seed);
    let m = store.metrics();
    assert_eq!(m.undecodable_entries, undecodable, "seed {seed}");
    assert_eq!(m.undecodable_read, 3 * undecodable, "seed {seed}");
    store.checkpoint().expect("checkpoint past the junk");
    store.close().expect("close");
    drop(store);

    // From the checkpoint: the count survives, the answers stay exact.
    let store = open(&storage);
    let extra = events(&mut rng, now, 5);
    for e in &extra {
        store.record_blocking(e.clone()).expect("record");
    }
    all.extend(extra);
    assert_stats_exact(&store, &all, now, seed);
    assert_eq!(store.undecodable_entries(), undecodable, "seed {seed}");
    for check in store.verify_projections().expect("verify projections") {
        assert!(check.matches, "{check:?}; seed {seed}");
        assert!(check.checkpoint_offset.is_some(), "{check:?}; seed {seed}");
    }
    // A rebuild from the log counts the same.
    store.rebuild_projections().expect("rebuild");
    assert_eq!(store.undecodable_entries(), undecodable, "seed {seed}");
    assert_stats_exact(&store, &all, now, seed);
    store.close().expect("close");
}

/// The store hands out no writer: its log view reads and verifies.
#[test]
fn the_store_log_view_reads_every_record_and_verifies() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let storage = SimStorage::new(seed);
    let store = open(&storage);
    let all = events(&mut rng, now_us(), 10);
    for e in &all {
        store.record_blocking(e.clone()).expect("record");
    }
    let view = store.log();
    assert_eq!(view.next_offset(), all.len() as u64);
    let read = view.read_from(0).expect("read").count();
    assert_eq!(read, all.len(), "seed {seed}");
    assert!(view.verify().expect("verify").is_clean(), "seed {seed}");
    store.close().expect("close");
}

// ---------------------------------------------------------------------------
// Item 8.

fn is_in_future(e: &Error) -> bool {
    matches!(e, Error::InvalidEvent(EventError::InFuture { .. }))
}

/// Regression (issue 13, item 8): an event stamped in year 9999 was
/// accepted. Every write path refuses it now, naming the option; nothing
/// reaches the log; `record_detached` drops and counts it. An event within
/// the skew is accepted.
#[test]
fn a_far_future_event_is_refused_by_every_write_path() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let store = open(&storage);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let now = now_us();
    let skew_us = options().max_future_skew.as_micros() as i64;
    for at in [YEAR_9999_US, now + skew_us + HOUR_US, now + 400 * DAY_US] {
        let future = Event::new("acme", "budget", Action::Killed)
            .with_details(enforcelog::details!({"histogram": [0, 0, 0, 0]}))
            .at_us(at);
        let e = store
            .record_blocking(future.clone())
            .expect_err("record_blocking");
        assert!(is_in_future(&e), "{e:?}");
        assert!(e.to_string().contains("max_future_skew"), "{e}");
        let e = runtime
            .block_on(store.record(future.clone()))
            .expect_err("record");
        assert!(is_in_future(&e), "{e:?}");
        let mut batch = store.begin();
        let e = batch.record(future.clone()).expect_err("batch");
        assert!(matches!(e, EventError::InFuture { .. }), "{e:?}");
        assert_eq!(e.field(), Field::EnforcedAt);
        assert!(batch.is_empty(), "a refused event is not staged");
        store.record_detached(future);
    }
    assert_eq!(store.metrics().dropped, 3, "record_detached dropped each");
    // No event reached the log (the supervisor may have written the gap
    // marker for the three drops meanwhile).
    let events_in_log = store
        .entries(0)
        .expect("read")
        .filter(|e| matches!(e, Ok(Entry::Event(_))))
        .count();
    assert_eq!(events_in_log, 0, "nothing reached the log");

    // Within the skew: accepted.
    let soon = now + skew_us / 2;
    let offset = store
        .record_blocking(Event::new("acme", "budget", Action::Killed).at_us(soon))
        .expect("within the skew");
    let back = store.entries(offset).expect("read").next().expect("one");
    let Entry::Event(back) = back.expect("decodes") else {
        panic!("not an event")
    };
    assert_eq!(back.enforced_at_us, soon);
    store.close().expect("close");
}

/// `max_future_skew` takes any value without a panic: `Duration::MAX`
/// turns the check off (year 9999 accepted), zero refuses anything after
/// the store's clock.
#[test]
fn max_future_skew_of_any_size_is_safe_and_max_turns_the_check_off() {
    let storage = SimStorage::new(1);
    let open_with = |skew: Duration, dir: &str| {
        let options = StoreOptions {
            max_future_skew: skew,
            ..options()
        };
        Store::builder(dir)
            .storage(Arc::new(storage.clone()))
            .options(options)
            .open()
            .expect("open")
    };
    let store = open_with(Duration::MAX, "/skew-max");
    let offset = store
        .record_blocking(Event::new("acme", "budget", Action::Killed).at_us(YEAR_9999_US))
        .expect("no limit");
    assert_eq!(offset, 0);
    store.close().expect("close");
    let store = open_with(Duration::ZERO, "/skew-zero");
    let e = store
        .record_blocking(Event::new("acme", "budget", Action::Killed).at_us(now_us() + HOUR_US))
        .expect_err("after now");
    assert!(is_in_future(&e), "{e:?}");
    store
        .record_blocking(Event::new("acme", "budget", Action::Killed).at_us(now_us() - 1))
        .expect("before now");
    store.close().expect("close");
}

/// Regression (issue 13, item 8): one event of one tenant stamped in year
/// 9999, in a store written before the refusal, moved the one global fold
/// horizon, and every other tenant's "as of now" `stats` replayed the whole
/// log (35 ms instead of 0.5 µs), still after a reopen. The horizon is per
/// tenant now: the other tenants' answers come from the projection (no
/// replay counted) and are exact, live, from a checkpoint and after a
/// rebuild. The far-future tenant's own "as of now" answer still replays:
/// the counter can tell.
#[test]
fn a_far_future_event_in_an_old_store_keeps_other_tenants_on_the_fast_path() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let storage = SimStorage::new(seed);
    let now = now_us();
    let mut all = events(&mut rng, now, 30);
    // A tenant whose events span more than the window, so folding matters.
    let old: Vec<Event> = (0..20)
        .map(|n| {
            Event::new("acme", "budget", Action::Blocked)
                .with_details(common::object(details(&mut rng, n)))
                .at_us(now - (40 + n as i64) * DAY_US)
        })
        .collect();
    all.extend(old);
    let store = open(&storage);
    let offset = store
        .record_blocking(Event::new("umbrella", "rogue", Action::Stopped).at_us(now))
        .expect("record");
    let payload = store
        .log()
        .read_from(offset)
        .expect("read")
        .next()
        .expect("one")
        .expect("reads")
        .payload;
    for e in &all {
        store.record_blocking(e.clone()).expect("record");
    }
    store.close().expect("close");
    drop(store);
    // The same payload, stamped in year 9999 (the time is the record's).
    append_raw(&storage, vec![Record::new(YEAR_9999_US, payload)]);

    for phase in ["live", "from the checkpoint", "after a rebuild"] {
        let store = open(&storage);
        if phase == "after a rebuild" {
            store.rebuild_projections().expect("rebuild");
        }
        let before = store.metrics().stats_replays;
        assert_stats_exact(&store, &all, now, seed);
        for tenant in ["acme", "globex", "initech"] {
            let listed = store.stats_for_tenant(tenant, None).expect("as of now");
            assert!(!listed.is_empty(), "{tenant}; {phase}; seed {seed}");
        }
        assert_eq!(
            store.metrics().stats_replays,
            before,
            "{phase}: another tenant's event sent answers to the log; seed {seed}"
        );
        let rogue = store.stats("umbrella", "rogue", None).expect("stats");
        assert_eq!(rogue.total_count, 1, "{phase}; seed {seed}");
        assert_eq!(
            store.metrics().stats_replays,
            before + 1,
            "{phase}: the far-future tenant's own answer replays; seed {seed}"
        );
        store.close().expect("close");
    }
}
