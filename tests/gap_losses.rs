//! Gap markers say who lost what (issue 13, item 12).
//!
//! A gap marker used to carry only a count, so after an outage a rule's
//! `trigger_count_30d` was silently short. Now each marker names, for at
//! most `GAP_LOSSES_MAX` (tenant, rule) pairs, how many events each lost
//! and when they were enforced, sums the rest as unattributed, and `stats`
//! reports per rule how many events its window is missing at least and
//! whether a gap overlaps it. The per-drop warnings are rate-limited.
//!
//! Drops are forced deterministically: a sticky fsync fault poisons the
//! writer, so `record_detached` refuses (and counts) every event before it
//! returns; clearing the fault lets the supervisor reopen the log and write
//! the marker.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::capture::{captured, log_lines};
use common::Rng;
use enforcelog::storage::sim::{FaultKind, FaultOp, SimStorage};
use enforcelog::{now_us, Action, Entry, Event, GapMarker, Store, StoreOptions, GAP_LOSSES_MAX};
use serde_json::json;

const DAY_US: i64 = 24 * 3_600 * 1_000_000;
const PROGRESS_LIMIT: Duration = Duration::from_secs(30);

fn open(storage: &SimStorage, dir: &str) -> Store {
    let options = StoreOptions {
        detached_timeout: Duration::from_millis(500),
        recovery_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    };
    Store::builder(dir)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open()
        .expect("open the store")
}

fn event(tenant: &str, rule: &str, at_us: i64, n: u64) -> Event {
    Event::new(tenant, rule, Action::ALL[(n % 4) as usize])
        .with_run_id(format!("run-{n}"))
        .with_details(enforcelog::details!({"histogram": [0, 0, 0, n, 0, 0], "deep": {"a": {"b": {"c": [0]}}}}))
        .at_us(at_us)
}

fn wait_for_marker(store: &Store, seed: u64) {
    let started = Instant::now();
    loop {
        let m = store.metrics();
        if m.gap_markers >= 1 && m.dropped_pending_gap == 0 {
            return;
        }
        assert!(
            started.elapsed() < PROGRESS_LIMIT,
            "no gap marker: {m:?}; seed {seed}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Poisons the writer: a sticky fsync fault, then one append that fails.
fn poison(store: &Store, storage: &SimStorage) {
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    let refused = store.record_blocking(event("acme", "probe", now_us(), 0));
    assert!(refused.is_err(), "the fsync fault fails the append");
}

fn markers(store: &Store) -> Vec<GapMarker> {
    store
        .entries(0)
        .expect("read")
        .filter_map(|e| match e.expect("decodes") {
            Entry::Gap(g) => Some(g),
            Entry::Event(_) | Entry::Lost(_) => None,
        })
        .collect()
}

/// Regression (issue 13, item 12): after an outage the gap marker only
/// counted the drops, and `stats` of a rule that lost events answered as
/// if nothing were missing. Now the rule's stats say how many it is missing
/// at least, exactly for pairs the marker names; a rule that lost nothing
/// says nothing is missing, but that a gap (of unattributed drops) overlaps
/// its window; and a rule whose window lies before the outage is untouched.
#[test]
fn stats_of_a_rule_that_lost_events_in_an_outage_say_how_many_are_missing() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    captured();
    const DIR: &str = "/gap-losses";
    let storage = SimStorage::new(seed);
    let store = open(&storage, DIR);
    let now = now_us();
    // Recorded before the outage: one rule recent, one long ago.
    for n in 0..5 {
        store
            .record_blocking(event("acme", "budget", now - DAY_US, n))
            .expect("record");
        store
            .record_blocking(event("hooli", "ancient", now - 90 * DAY_US, n))
            .expect("record");
    }

    poison(&store, &storage);
    let mut lost: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let pairs = [("acme", "budget"), ("acme", "rate"), ("globex", "budget")];
    let drops = 50 + rng.below(150);
    for n in 0..drops {
        let (tenant, rule) = *rng.pick(&pairs);
        store.record_detached(event(tenant, rule, now - rng.range_i64(0..DAY_US), n));
        *lost.entry((tenant, rule)).or_default() += 1;
    }
    // An invalid event: dropped, not attributable to a rule.
    store.record_detached(Event::new("", "budget", Action::Blocked));
    let dropped = drops + 1;
    assert_eq!(store.metrics().dropped, dropped, "seed {seed}");

    storage.clear_faults();
    wait_for_marker(&store, seed);
    let markers = markers(&store);
    let attributed: u64 = markers
        .iter()
        .flat_map(|m| &m.losses)
        .map(|l| l.span.count)
        .sum();
    let unattributed: u64 = markers
        .iter()
        .filter_map(|m| m.unattributed)
        .map(|s| s.count)
        .sum();
    assert_eq!(attributed + unattributed, dropped, "seed {seed}");
    assert_eq!(unattributed, 1, "seed {seed}");

    for ((tenant, rule), lost) in &lost {
        let s = store.stats(tenant, rule, None).expect("stats");
        assert!(s.gap_in_window, "{tenant}/{rule}; seed {seed}");
        assert_eq!(
            s.missing_at_least, *lost,
            "{tenant}/{rule} lost {lost}; seed {seed}"
        );
        let json = s.to_json();
        assert_eq!(json["missing_at_least"], json!(lost), "{json}");
        assert_eq!(json["gap_in_window"], json!(true), "{json}");
        assert_eq!(json["window"], json!("30d"), "{json}");
    }
    // Lost nothing, but the window holds the unattributed drop.
    let quiet = store.stats("initech", "budget", None).expect("stats");
    assert_eq!(quiet.missing_at_least, 0, "seed {seed}");
    assert!(quiet.gap_in_window, "seed {seed}");
    assert_eq!(quiet.to_json()["missing_at_least"], json!(0));
    // A window that ends before the outage: no gap in it.
    let before = store
        .stats("hooli", "ancient", Some(now - 80 * DAY_US))
        .expect("stats");
    assert_eq!(before.total_count, 5, "seed {seed}");
    assert!(!before.gap_in_window, "seed {seed}");
    assert_eq!(before.missing_at_least, 0, "seed {seed}");
    assert_eq!(
        before.to_json()["gap_in_window"],
        json!(false),
        "seed {seed}"
    );

    // The same after a reopen (from the checkpoint) and as of a past
    // instant answered from the log.
    store.close().expect("close");
    drop(store);
    let store = open(&storage, DIR);
    for ((tenant, rule), lost) in &lost {
        let s = store.stats(tenant, rule, None).expect("stats");
        assert_eq!(s.missing_at_least, *lost, "reopened; seed {seed}");
    }
    let past = store
        .stats("acme", "budget", Some(now - 60 * DAY_US))
        .expect("stats");
    assert!(!past.gap_in_window, "seed {seed}");
    store.close().expect("close");

    // Rate-limited warnings: at least one names a drop; the named and the
    // summed (flushed at close) add up to every drop, in a few lines.
    let dir_field = format!("dir={DIR} ");
    let named = log_lines(&["WARN", "enforcement event not recorded", &dir_field]);
    let summaries = log_lines(&["WARN", "more enforcement events not recorded", &dir_field]);
    let summed: u64 = summaries.iter().map(|l| dropped_field(l)).sum();
    assert!(!named.is_empty(), "seed {seed}");
    assert_eq!(named.len() as u64 + summed, dropped, "seed {seed}");
    let lines = named.len() + summaries.len();
    assert!(
        (lines as u64) < dropped / 4,
        "{lines} warning lines for {dropped} drops; seed {seed}"
    );
}

fn dropped_field(line: &str) -> u64 {
    let start = line.find("dropped=").expect("a dropped= field") + "dropped=".len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a number")
}

/// A gap marker stays bounded: past `GAP_LOSSES_MAX` pairs, the losses are
/// summed as unattributed, and those pairs' stats say a gap overlaps
/// without claiming a count.
#[test]
fn a_gap_marker_names_at_most_the_limit_of_pairs_and_sums_the_rest() {
    let seed = common::run_seed();
    captured();
    const DIR: &str = "/gap-many-pairs";
    let storage = SimStorage::new(seed);
    let store = open(&storage, DIR);
    poison(&store, &storage);
    let now = now_us();
    let pairs = GAP_LOSSES_MAX as u64 + 9;
    for n in 0..pairs {
        for k in 0..2 {
            store.record_detached(event("acme", &format!("rule-{n:03}"), now - k, n));
        }
    }
    storage.clear_faults();
    wait_for_marker(&store, seed);
    let markers = markers(&store);
    assert_eq!(markers.len(), 1, "seed {seed}");
    let m = &markers[0];
    assert_eq!(m.losses.len(), GAP_LOSSES_MAX, "seed {seed}");
    assert!(m.losses.iter().all(|l| l.span.count == 2), "seed {seed}");
    assert_eq!(m.unattributed.map(|s| s.count), Some(18), "seed {seed}");
    assert_eq!(m.dropped, 2 * pairs, "seed {seed}");
    let named = &m.losses[0];
    let s = store
        .stats(&named.tenant_id, &named.rule_id, None)
        .expect("stats");
    assert_eq!(s.missing_at_least, 2, "seed {seed}");
    let last = format!("rule-{:03}", pairs - 1);
    let s = store.stats("acme", &last, None).expect("stats");
    assert!(s.gap_in_window, "seed {seed}");
    store.close().expect("close");
}
