//! Property test of the trigger statistics against a brute-force model.
//!
//! Each case draws 1–6 tenants, 1–8 rules, a set of trigger windows and a few
//! as-of anchors `T`, then events whose timestamps sit exactly on the
//! boundaries that matter (`T - w`, `T - w ± 1 µs`, `T`, `T ± 1 µs` for every
//! configured window `w` and for 30 days), a few µs off them, anywhere in the
//! last 40 days, on a timestamp already used (duplicates in time), or far in
//! the past or future. The events are recorded in random batches, in random
//! order, into a store on [`SimStorage`], and `stats`, `stats_for_tenant`,
//! `stats_all` and the `ActionsPerDay` projection are compared with a
//! computation over the plain list of events for many as-of instants: the
//! anchors and their neighbours, instants far before every event (the
//! projection has folded that history and must fall back to replaying the
//! log), and instants after every event:
//!
//! 1. live, halfway through recording and at the end;
//! 2. after `close()` and a reopen from the checkpoint (which must cover
//!    every entry and match a rebuild);
//! 3. after more events were acknowledged under `Durability::Fsync` and the
//!    machine crashed before the next checkpoint was written (a power cut
//!    makes the checkpoint of `close` fail; in some cases the power is cut
//!    in the middle of the appends instead): the acknowledged events are in the log and counted, because
//!    the tail past the checkpoint is replayed;
//! 4. after `rebuild_projections()`.
//!
//! Some cases also make `record_detached` drop an (invalid) event, so a gap
//! marker is written: it must never count as a trigger.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test
//! projection_model`; `ENFORCELOG_PROJECTION_CASES=<n>` runs `n` cases
//! instead of 96.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use enforcelog::projection::{ActionsPerDay, Answer, KeyBlock, Projection, TriggerStats};
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::timestamp::{MAX_US, MIN_US};
use enforcelog::{
    Action, Durability, Entry, Event, EventKeys, LogOptions, RuleStats, Store, StoreOptions,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

const DIR: &str = "/store";
const SECOND_US: i64 = 1_000_000;
const HOUR_US: i64 = 3600 * SECOND_US;
const DAY_US: i64 = 24 * HOUR_US;
/// 2026-11-01T00:00:00Z, the main anchor.
const T0_US: i64 = 1_793_491_200 * SECOND_US;

/// Tenant and rule ids; a case uses a prefix of each. Their array order is
/// not their byte order, so the sorting of the listings is checked too.
const TENANTS: [&str; 6] = ["globex", "acme", "Acme", "ünicode", "a-b", "a"];
const RULES: [&str; 8] = ["r2", "z", "rule-ß", "R", "r10", "r", "rule/x", "r1"];

/// How many cases: the default, or `ENFORCELOG_PROJECTION_CASES`.
const DEFAULT_CASES: u32 = 96;

// ---------------------------------------------------------------------------
// Cases.

/// One event before its timestamp is resolved against the case's anchors.
#[derive(Debug, Clone)]
struct Spec {
    tenant: u8,
    rule: u8,
    action: u8,
    /// Which kind of timestamp (see [`resolve`]).
    kind: u8,
    /// Picks the anchor, the window and the duplicated event.
    pick: u16,
    /// Picks the boundary and the distance from it.
    delta: i64,
}

#[derive(Debug, Clone)]
struct Case {
    sim_seed: u64,
    tenants: usize,
    rules: usize,
    windows: usize,
    /// Further anchors, relative to [`T0_US`].
    anchors: Vec<i64>,
    far_future: bool,
    events: Vec<Spec>,
    /// Batch sizes, used in turn.
    batches: Vec<usize>,
    checkpoint_every_entries: u64,
    gap: bool,
    /// Events recorded after the reopen, before the crash.
    extra: Vec<Spec>,
    /// Cut the power after this many mutating calls once the extra events
    /// start; `None`: after every extra event was acknowledged.
    power_cut: Option<u64>,
    crash_mode: u8,
}

fn window_set(i: usize) -> Vec<Duration> {
    let hour = Duration::from_secs(3600);
    let day = 24 * hour;
    match i % 5 {
        0 => vec![30 * day],
        1 => vec![hour, day, 7 * day, 30 * day],
        // The primary (last) window is not the longest.
        2 => vec![30 * day, 7 * day, hour],
        3 => vec![Duration::from_micros(1), Duration::from_secs(1), hour],
        _ => vec![day],
    }
}

fn us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).expect("window fits in i64 µs")
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    (
        any::<u8>(),
        any::<u8>(),
        0u8..4,
        0u8..20,
        any::<u16>(),
        any::<i64>(),
    )
        .prop_map(|(tenant, rule, action, kind, pick, delta)| Spec {
            tenant,
            rule,
            action,
            kind,
            pick,
            delta,
        })
}

fn anchor_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        (-400 * DAY_US..=-60 * DAY_US),
        (-40 * DAY_US..=-20 * DAY_US),
        (-DAY_US..=DAY_US),
        (-3i64..=3).prop_map(|s| s * HOUR_US),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        (any::<u64>(), 1usize..=6, 1usize..=8, 0usize..5),
        (
            proptest::collection::vec(anchor_strategy(), 0..=3),
            proptest::bool::weighted(0.25),
        ),
        proptest::collection::vec(spec_strategy(), 1..200),
        proptest::collection::vec(1usize..=24, 1..6),
        prop_oneof![Just(1u64), Just(7), Just(64), Just(u64::MAX)],
        proptest::bool::weighted(0.3),
        proptest::collection::vec(spec_strategy(), 1..60),
        proptest::option::weighted(0.5, 0u64..120),
        0u8..4,
    )
        .prop_map(
            |(
                (sim_seed, tenants, rules, windows),
                (anchors, far_future),
                events,
                batches,
                checkpoint_every_entries,
                gap,
                extra,
                power_cut,
                crash_mode,
            )| Case {
                sim_seed,
                tenants,
                rules,
                windows,
                anchors,
                far_future,
                events,
                batches,
                checkpoint_every_entries,
                gap,
                extra,
                power_cut,
                crash_mode,
            },
        )
}

// ---------------------------------------------------------------------------
// The model.

/// An event as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Ev {
    tenant: String,
    rule: String,
    action: Action,
    at_us: i64,
}

impl Ev {
    fn to_event(&self) -> Event {
        Event::new(self.tenant.as_str(), self.rule.as_str(), self.action).at_us(self.at_us)
    }
}

/// Everything derived from a case that the checks need.
struct Model {
    tenants: Vec<&'static str>,
    rules: Vec<&'static str>,
    windows: Vec<Duration>,
    anchors_us: Vec<i64>,
    /// Window lengths boundaries are placed at: the configured ones and 30d.
    boundary_windows_us: Vec<i64>,
    far_future: bool,
}

impl Model {
    fn new(case: &Case) -> Self {
        let windows = window_set(case.windows);
        let mut boundary_windows_us: Vec<i64> = windows.iter().map(|&w| us(w)).collect();
        boundary_windows_us.push(30 * DAY_US);
        let mut anchors_us = vec![T0_US];
        anchors_us.extend(case.anchors.iter().map(|a| T0_US + a));
        Self {
            tenants: TENANTS[..case.tenants].to_vec(),
            rules: RULES[..case.rules].to_vec(),
            windows,
            anchors_us,
            boundary_windows_us,
            far_future: case.far_future,
        }
    }

    /// The timestamp of `spec`; `prior` are the timestamps drawn before it.
    fn resolve(&self, spec: &Spec, prior: &[i64]) -> i64 {
        self.resolve_unclamped(spec, prior).clamp(MIN_US, MAX_US)
    }

    fn resolve_unclamped(&self, spec: &Spec, prior: &[i64]) -> i64 {
        let pick = usize::from(spec.pick);
        let t = self.anchors_us[pick % self.anchors_us.len()];
        let w = self.boundary_windows_us[(pick / 7) % self.boundary_windows_us.len()];
        let boundary = match spec.delta.rem_euclid(6) {
            0 => t - w - 1,
            1 => t - w,
            2 => t - w + 1,
            3 => t - 1,
            4 => t,
            _ => t + 1,
        };
        // The newest timestamp so far: live streams mostly creep forward.
        let newest = prior.iter().copied().max().unwrap_or(t);
        match spec.kind {
            0..=8 => boundary,
            // A few µs off a boundary.
            9 | 10 => boundary + (spec.delta >> 8).rem_euclid(201) - 100,
            // Anywhere in the 40 days before the anchor, or 5 days after.
            11 | 12 => t - 40 * DAY_US + spec.delta.rem_euclid(45 * DAY_US),
            // Up to 2 hours after the newest event.
            13 => newest.saturating_add(spec.delta.rem_euclid(2 * HOUR_US)),
            // Near the fold horizon of the newest event.
            14 => newest.saturating_sub(w) + spec.delta.rem_euclid(201) - 100,
            // A timestamp already used.
            15 | 16 if !prior.is_empty() => prior[pick % prior.len()],
            15 | 16 => t,
            17 if spec.delta % 2 == 0 => MIN_US + spec.delta.rem_euclid(1000),
            17 => t - 3650 * DAY_US,
            _ if !self.far_future => boundary,
            _ if spec.delta % 2 == 0 => MAX_US - spec.delta.rem_euclid(1000),
            _ => t + 3650 * DAY_US,
        }
    }

    /// Resolves `specs`, after the events already in `events`.
    fn resolve_all(&self, specs: &[Spec], events: &[Ev]) -> Vec<Ev> {
        let mut prior: Vec<i64> = events.iter().map(|e| e.at_us).collect();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            let at_us = self.resolve(spec, &prior);
            prior.push(at_us);
            out.push(Ev {
                tenant: self.tenants[usize::from(spec.tenant) % self.tenants.len()].to_string(),
                rule: self.rules[usize::from(spec.rule) % self.rules.len()].to_string(),
                action: Action::ALL[usize::from(spec.action) % 4],
                at_us,
            });
        }
        out
    }

    /// The as-of instants to check for these events.
    fn as_of_instants(&self, events: &[Ev]) -> Vec<i64> {
        let primary = us(*self.windows.last().expect("a window"));
        let mut out = vec![i64::MIN, MIN_US, MAX_US, i64::MAX];
        for &t in &self.anchors_us {
            out.extend([t - 1, t, t + 1, t + primary]);
        }
        out.push(T0_US - 200 * DAY_US);
        if let (Some(lo), Some(hi)) = (
            events.iter().map(|e| e.at_us).min(),
            events.iter().map(|e| e.at_us).max(),
        ) {
            out.extend([lo - 1, lo, hi, hi + 1]);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

fn action_index(action: Action) -> usize {
    Action::ALL
        .iter()
        .position(|&a| a == action)
        .expect("a known action")
}

/// The statistics of one rule, by brute force over every event.
fn brute_stats(
    events: &[Ev],
    tenant: &str,
    rule: &str,
    as_of_us: i64,
    windows: &[Duration],
    offset: u64,
    unattributed: &[(i64, i64)],
) -> RuleStats {
    let t = i128::from(as_of_us);
    let mut window_counts: Vec<(Duration, u64)> = windows.iter().map(|&w| (w, 0)).collect();
    let mut by_action = [0u64; 4];
    let mut last = None;
    let mut total = 0;
    let primary = i128::try_from(windows.last().expect("a window").as_micros()).expect("fits");
    for e in events
        .iter()
        .filter(|e| e.tenant == tenant && e.rule == rule)
    {
        if e.at_us > as_of_us {
            continue;
        }
        total += 1;
        last = last.max(Some(e.at_us));
        let at = i128::from(e.at_us);
        for (w, count) in &mut window_counts {
            if at > t - i128::try_from(w.as_micros()).expect("fits") {
                *count += 1;
            }
        }
        if at > t - primary {
            by_action[action_index(e.action)] += 1;
        }
    }
    RuleStats {
        tenant_id: tenant.to_string(),
        rule_id: rule.to_string(),
        as_of_us,
        trigger_count: window_counts.last().map_or(0, |(_, n)| *n),
        window_counts,
        last_triggered_at_us: last,
        total_count: total,
        by_action,
        offset,
        // The model's drops have invalid ids, so no loss is attributed.
        missing_at_least: 0,
        gap_in_window: unattributed
            .iter()
            .any(|&(first, last)| i128::from(first) <= t && i128::from(last) > t - primary),
    }
}

/// The `enforced_at` spans of the losses the store's gap markers attribute
/// to no rule.
fn unattributed_spans(store: &Store) -> Result<Vec<(i64, i64)>, TestCaseError> {
    let mut spans = Vec::new();
    for entry in check(store.entries(0), "entries")? {
        if let Entry::Gap(g) = check(entry, "entry")? {
            prop_assert!(g.losses.is_empty(), "a loss attributed: {:?}", g);
            spans.extend(g.unattributed.map(|s| (s.first_at_us, s.last_at_us)));
        }
    }
    Ok(spans)
}

/// Events per (UTC day, action), by brute force.
fn brute_per_day(events: &[Ev]) -> Vec<(i64, Action, u64)> {
    let mut counts: BTreeMap<(i64, Action), u64> = BTreeMap::new();
    for e in events {
        *counts
            .entry((e.at_us.div_euclid(DAY_US), e.action))
            .or_default() += 1;
    }
    counts.into_iter().map(|((d, a), n)| (d, a, n)).collect()
}

// ---------------------------------------------------------------------------
// Running a case.

/// How often each answer path was checked, over all cases.
static EXACT_ANSWERS: AtomicU64 = AtomicU64::new(0);
static REPLAYED_ANSWERS: AtomicU64 = AtomicU64::new(0);

fn check<T>(result: enforcelog::Result<T>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

fn options(model: &Model, checkpoint_every_entries: u64) -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            // Small segments and a dense index: the replay path reads many
            // segments and skips spans by their timestamps.
            segment_max_bytes: 4096,
            index_interval_bytes: 256,
            record_max_bytes: 1024,
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        trigger_windows: model.windows.clone(),
        // The model's times reach years ahead (and the range's ends); the
        // future-skew refusal is tested in one_tenant_degrades_none.rs.
        max_future_skew: Duration::MAX,
        checkpoint_every_entries,
        checkpoint_interval: if checkpoint_every_entries == u64::MAX {
            Duration::from_secs(24 * 3600)
        } else {
            Duration::from_millis(1)
        },
        detached_timeout: Duration::from_millis(200),
        recovery_interval: Duration::from_millis(5),
        ..StoreOptions::default()
    }
}

fn open(storage: &SimStorage, options: StoreOptions) -> enforcelog::Result<Store> {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .projections(vec![
            Box::new(ActionsPerDay::default()) as Box<dyn Projection>
        ])
        .open()
}

/// Records `events` in batches of the case's sizes; stops at the first
/// failure. Returns how many were acknowledged and the size of the batch
/// that failed (0 if none did).
fn record(store: &Store, events: &[Ev], batches: &[usize]) -> (usize, usize) {
    let mut done = 0;
    for &size in batches.iter().cycle() {
        if done == events.len() {
            break;
        }
        let chunk = &events[done..(done + size).min(events.len())];
        let result = if chunk.len() == 1 && size % 2 == 1 {
            store.record_blocking(chunk[0].to_event()).map(|_| ())
        } else {
            let mut batch = store.begin();
            for e in chunk {
                batch.record(e.to_event()).expect("valid event");
            }
            batch.commit_blocking().map(|_| ())
        };
        if result.is_err() {
            return (done, chunk.len());
        }
        done += chunk.len();
    }
    (done, 0)
}

/// The events in the log, in offset order, and the number of gap markers.
fn logged(store: &Store) -> Result<(Vec<Ev>, u64), TestCaseError> {
    let mut events = Vec::new();
    let mut gaps = 0;
    for entry in check(store.entries(0), "entries")? {
        match check(entry, "read entry")? {
            Entry::Event(e) => events.push(Ev {
                tenant: e.tenant_id,
                rule: e.rule_id,
                action: e.action,
                at_us: e.enforced_at_us,
            }),
            Entry::Gap(_) => gaps += 1,
            Entry::Lost(l) => panic!("nothing was damaged: {l:?}"),
        }
    }
    Ok((events, gaps))
}

/// Compares every query with the brute force, as of every instant.
fn check_stats(
    store: &Store,
    model: &Model,
    events: &[Ev],
    gaps: u64,
    phase: &str,
) -> Result<(), TestCaseError> {
    let offset = store.next_offset();
    let spans = unattributed_spans(store)?;
    for &t in &model.as_of_instants(events) {
        let mut all = Vec::new();
        for &tenant in &model.tenants {
            let mut listed = Vec::new();
            for &rule in &model.rules {
                let want = brute_stats(events, tenant, rule, t, &model.windows, offset, &spans);
                let replay = check(
                    store.with_projection::<TriggerStats, _>(|p, at| {
                        matches!(p.answer(tenant, rule, t, at), Answer::NeedsReplay)
                    }),
                    "with_projection",
                )?
                .expect("trigger stats are registered");
                let counter = if replay {
                    &REPLAYED_ANSWERS
                } else {
                    &EXACT_ANSWERS
                };
                counter.fetch_add(1, Ordering::Relaxed);
                let got = check(store.stats(tenant, rule, Some(t)), "stats")?;
                prop_assert_eq!(
                    &got,
                    &want,
                    "{}: stats({:?}, {:?}) as of {} (replayed: {})",
                    phase,
                    tenant,
                    rule,
                    t,
                    replay
                );
                if want.total_count > 0 {
                    listed.push(want);
                }
            }
            listed.sort_by(|a, b| a.rule_id.cmp(&b.rule_id));
            let got = check(store.stats_for_tenant(tenant, Some(t)), "stats_for_tenant")?;
            prop_assert_eq!(
                &got,
                &listed,
                "{}: stats_for_tenant({:?}) as of {}",
                phase,
                tenant,
                t
            );
            all.extend(listed);
        }
        all.sort_by(|a, b| (&a.tenant_id, &a.rule_id).cmp(&(&b.tenant_id, &b.rule_id)));
        let got = check(store.stats_all(Some(t)), "stats_all")?;
        prop_assert_eq!(&got, &all, "{}: stats_all as of {}", phase, t);
        let nobody = check(
            store.stats_for_tenant("nobody", Some(t)),
            "stats_for_tenant",
        )?;
        prop_assert!(nobody.is_empty(), "{}: an unknown tenant has rules", phase);
    }

    // As of now: the answer says which instant it used.
    let (tenant, rule) = (model.tenants[0], model.rules[0]);
    let now = check(store.stats(tenant, rule, None), "stats as of now")?;
    let want = brute_stats(
        events,
        tenant,
        rule,
        now.as_of_us,
        &model.windows,
        offset,
        &spans,
    );
    prop_assert_eq!(now, want, "{}: stats as of now", phase);

    let per_day = check(
        store.with_projection::<ActionsPerDay, _>(|p, at| (p.iter().collect::<Vec<_>>(), at)),
        "with_projection",
    )?
    .expect("ActionsPerDay is registered");
    prop_assert_eq!(per_day.1, offset, "{}: ActionsPerDay offset", phase);
    prop_assert_eq!(per_day.0, brute_per_day(events), "{}: ActionsPerDay", phase);
    let seen_gaps = check(
        store.with_projection::<TriggerStats, _>(|p, _| p.gaps()),
        "with_projection",
    )?
    .expect("trigger stats are registered");
    prop_assert_eq!(seen_gaps, (gaps, gaps), "{}: gap markers", phase);
    Ok(())
}

/// Makes `record_detached` drop an invalid event and waits for the gap
/// marker the supervisor writes for it.
fn write_gap_marker(store: &Store) -> Result<(), TestCaseError> {
    let before = store.metrics().gap_markers;
    store.record_detached(Event::new("", "rule", Action::Blocked));
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.metrics().gap_markers == before {
        prop_assert!(Instant::now() < deadline, "no gap marker after 10 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let model = Model::new(case);
    let storage = SimStorage::new(case.sim_seed);
    let events = model.resolve_all(&case.events, &[]);

    // 1. Live.
    let store = check(
        open(&storage, options(&model, case.checkpoint_every_entries)),
        "open",
    )?;
    let half = events.len() / 2;
    prop_assert_eq!(record(&store, &events[..half], &case.batches).0, half);
    check_stats(&store, &model, &events[..half], 0, "live, halfway")?;
    prop_assert_eq!(
        record(&store, &events[half..], &case.batches).0,
        events.len() - half
    );
    let gaps = u64::from(case.gap);
    if case.gap {
        write_gap_marker(&store)?;
    }
    prop_assert_eq!(logged(&store)?, (events.clone(), gaps));
    check_stats(&store, &model, &events, gaps, "live")?;
    check(store.close(), "close")?;
    drop(store);

    // 2. Reopened from the checkpoint written by close.
    let n1 = events.len() as u64 + gaps;
    let store = check(open(&storage, options(&model, u64::MAX)), "reopen")?;
    let checks = check(store.verify_projections(), "verify_projections")?;
    prop_assert_eq!(checks.len(), 2);
    for c in &checks {
        prop_assert!(
            c.matches && c.checkpoint_offset == Some(n1) && c.problem.is_none(),
            "after close: {:?}",
            c
        );
    }
    check_stats(&store, &model, &events, gaps, "reopened")?;

    // 3. More events acknowledged, then a crash before the next checkpoint.
    let extra = model.resolve_all(&case.extra, &events);
    if let Some(ops) = case.power_cut {
        storage.power_cut_after(ops);
    }
    let (acked, failed) = record(&store, &extra, &case.batches);
    if case.power_cut.is_none() {
        prop_assert_eq!(acked, extra.len());
        storage.power_cut_after(0);
    }
    // A checkpoint now fails: the power is cut.
    prop_assert!(
        case.power_cut.is_some() || store.checkpoint().is_err(),
        "a checkpoint was written despite the power cut"
    );
    // `close` (not a drop: the drop of the last handle may finish on a
    // background thread, after the crash) tries the final checkpoint too;
    // that failure only warns, and the log part may fail or not.
    let _ = store.close();
    drop(store);
    let mode = [
        CrashMode::LoseUnsynced,
        CrashMode::TearLastWrite,
        CrashMode::Reorder,
        CrashMode::TornSectors,
    ][usize::from(case.crash_mode)];
    storage.crash(mode);
    let store = check(
        open(&storage, options(&model, u64::MAX)),
        "open after crash",
    )?;
    let (present, present_gaps) = logged(&store)?;
    prop_assert_eq!(present_gaps, gaps);
    prop_assert_eq!(&present[..events.len()], &events[..]);
    let kept = present.len() - events.len();
    prop_assert!(
        kept == acked || kept == acked + failed,
        "{} extra events survived; {} were acknowledged, then a batch of {} failed",
        kept,
        acked,
        failed
    );
    prop_assert_eq!(&present[events.len()..], &extra[..kept]);
    let n2 = present.len() as u64 + gaps;
    for c in check(store.verify_projections(), "verify_projections")? {
        let offset = c.checkpoint_offset.unwrap_or(0);
        prop_assert!(
            c.matches && (n1..=n2).contains(&offset),
            "after the crash: {:?}",
            c
        );
        if case.power_cut.is_none() {
            prop_assert_eq!(c.checkpoint_offset, Some(n1), "{:?}", c);
        }
    }
    check_stats(&store, &model, &present, gaps, "after the crash")?;

    // 4. Rebuilt from the log.
    let rebuilt = check(store.rebuild_projections(), "rebuild_projections")?;
    prop_assert_eq!(rebuilt, n2);
    check_stats(&store, &model, &present, gaps, "rebuilt")?;
    check(store.close(), "close")?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Tests.

fn case_count() -> u32 {
    std::env::var("ENFORCELOG_PROJECTION_CASES")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

#[test]
fn stats_match_brute_force_live_after_reopen_after_crash_and_rebuild() {
    let seed = common::run_seed();
    let config = Config {
        cases: case_count(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&case_strategy(), |case| run_case(&case)) {
        panic!("projection model failed (replay with ENFORCELOG_SEED={seed}): {e}");
    }
    // The cases reached both ways of answering.
    let exact = EXACT_ANSWERS.load(Ordering::Relaxed);
    let replayed = REPLAYED_ANSWERS.load(Ordering::Relaxed);
    eprintln!("seed {seed}: {exact} answers from the projection, {replayed} from a replay");
    assert!(
        exact > 0 && replayed > 0,
        "seed {seed}: {exact} answers from the projection, {replayed} from a replay"
    );
}

/// A rule's event that arrives below the fold horizon (folded at once) can
/// be newer than one of its events still held unfolded, when the horizon
/// moved less than a sweep step since the last sweep. `last_triggered_at`
/// must still be the newest of them.
#[test]
fn last_triggered_at_sees_an_event_folded_on_arrival() {
    let storage = SimStorage::new(5);
    let model = Model::new(&Case {
        sim_seed: 5,
        tenants: 1,
        rules: 2,
        windows: 0,
        anchors: Vec::new(),
        far_future: false,
        events: Vec::new(),
        batches: vec![1],
        checkpoint_every_entries: u64::MAX,
        gap: false,
        extra: Vec::new(),
        power_cut: None,
        crash_mode: 0,
    });
    let store = open(&storage, options(&model, u64::MAX)).unwrap();
    let t = T0_US;
    let w = 30 * DAY_US;
    let (tenant, x, y) = (model.tenants[0], model.rules[0], model.rules[1]);
    let ev = |rule: &str, at_us: i64| Ev {
        tenant: tenant.to_string(),
        rule: rule.to_string(),
        action: Action::Blocked,
        at_us,
    };
    let events = vec![
        ev(y, t),          // watermark t, sweep: horizon t - 30d
        ev(x, t - w + 10), // above the horizon: held
        ev(y, t + 20),     // watermark t + 20, no sweep yet
        ev(x, t - w + 15), // below the new horizon: folded on arrival
    ];
    for e in &events {
        store.record_blocking(e.to_event()).unwrap();
    }
    let offset = store.next_offset();
    for as_of in [t + 20, t + 21, t + w] {
        for rule in [x, y] {
            assert_eq!(
                store.stats(tenant, rule, Some(as_of)).unwrap(),
                brute_stats(&events, tenant, rule, as_of, &model.windows, offset, &[]),
                "stats({tenant:?}, {rule:?}) as of {as_of}"
            );
        }
    }
    store.close().unwrap();
}

/// Gap markers (from events `record_detached` could not record) are counted
/// apart and never as triggers, live, after a reopen and after a rebuild.
#[test]
fn gap_markers_never_count_as_triggers() {
    let storage = SimStorage::new(9);
    let model = Model::new(&Case {
        sim_seed: 9,
        tenants: 2,
        rules: 2,
        windows: 1,
        anchors: Vec::new(),
        far_future: false,
        events: Vec::new(),
        batches: vec![1],
        checkpoint_every_entries: u64::MAX,
        gap: true,
        extra: Vec::new(),
        power_cut: None,
        crash_mode: 0,
    });
    let store = open(&storage, options(&model, u64::MAX)).unwrap();
    let mut events = Vec::new();
    for i in 0..6i64 {
        let e = Ev {
            tenant: model.tenants[(i % 2) as usize].to_string(),
            rule: model.rules[(i / 3) as usize].to_string(),
            action: Action::ALL[(i % 4) as usize],
            at_us: T0_US - i * HOUR_US,
        };
        store.record_blocking(e.to_event()).unwrap();
        events.push(e);
        write_gap_marker(&store).unwrap();
    }
    assert_eq!(logged(&store).unwrap(), (events.clone(), 6));
    check_stats(&store, &model, &events, 6, "live").unwrap();
    store.close().unwrap();
    drop(store);
    let store = open(&storage, options(&model, u64::MAX)).unwrap();
    check_stats(&store, &model, &events, 6, "reopened").unwrap();
    store.rebuild_projections().unwrap();
    check_stats(&store, &model, &events, 6, "rebuilt").unwrap();
}

// ---------------------------------------------------------------------------
// Folding by keys and merging folds (issue 17).

/// One log entry of a fold case.
#[derive(Debug, Clone)]
enum LogEntry {
    /// tenant, rule, action, enforced_at
    Event(usize, usize, u8, i64),
    /// A gap marker naming (tenant, rule) losses and unattributed drops.
    Gap(Vec<(usize, usize, u64, i64, i64)>, Option<(u64, i64, i64)>),
    Lost,
    Undecodable,
}

/// Timestamps that make folds interesting: a tenant's events spread over
/// months (so its horizon moves and sweeps happen), on the horizon of
/// another event (± 1 µs), duplicates, and far in the future.
fn fold_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => (0i64..120).prop_map(|d| T0_US - d * DAY_US / 2),
        2 => (-2i64..=2, 0i64..90).prop_map(|(e, d)| T0_US - d * DAY_US - 30 * DAY_US + e),
        1 => Just(T0_US),
        1 => (0i64..4).prop_map(|i| MAX_US - i),
        1 => (0i64..4).prop_map(|i| MIN_US + i),
        1 => (1i64..1000).prop_map(|y| T0_US + y * 365 * DAY_US),
    ]
}

fn log_entry() -> impl Strategy<Value = LogEntry> {
    let event = (0usize..4, 0usize..5, 0u8..4, fold_time())
        .prop_map(|(t, r, a, at)| LogEntry::Event(t, r, a, at));
    let loss = (0usize..4, 0usize..5, 1u64..5, fold_time(), 0i64..DAY_US)
        .prop_map(|(t, r, n, at, len)| (t, r, n, at, at.saturating_add(len)));
    let gap = (
        proptest::collection::vec(loss, 0..3),
        proptest::option::of((1u64..9, fold_time()).prop_map(|(n, at)| (n, at, at))),
    )
        .prop_map(|(l, u)| LogEntry::Gap(l, u));
    prop_oneof![
        30 => event,
        2 => gap,
        1 => Just(LogEntry::Lost),
        1 => Just(LogEntry::Undecodable),
    ]
}

/// The payload the store writes for an event (schema 1, no run, details).
fn event_payload(tenant: &str, rule: &str, action: u8) -> Vec<u8> {
    let mut details = serde_json::Map::new();
    details.insert("step".into(), serde_json::Value::from(3));
    rmp_serde::to_vec(&(1u8, 0u8, tenant, rule, action, Some("run-1"), Some(details)))
        .expect("encodes")
}

fn stored_entry(offset: u64, e: &LogEntry) -> Option<Entry> {
    use enforcelog::{GapLoss, GapMarker, LossSpan, LostEntry, StoredEvent};
    let span = |(count, first_at_us, last_at_us): (u64, i64, i64)| LossSpan {
        count,
        first_at_us,
        last_at_us,
    };
    match e {
        LogEntry::Event(t, r, a, at) => Some(Entry::Event(StoredEvent {
            offset,
            tenant_id: TENANTS[*t].into(),
            rule_id: RULES[*r].into(),
            action: Action::ALL[usize::from(*a)],
            run_id: Some("run-1".into()),
            details: None,
            enforced_at_us: *at,
        })),
        LogEntry::Gap(losses, unattributed) => Some(Entry::Gap(GapMarker {
            offset,
            dropped: losses.iter().map(|l| l.2).sum::<u64>() + unattributed.map_or(0, |u| u.0),
            first_dropped_at_us: T0_US,
            last_dropped_at_us: T0_US,
            losses: losses
                .iter()
                .map(|&(t, r, n, a, b)| GapLoss {
                    tenant_id: TENANTS[t].into(),
                    rule_id: RULES[r].into(),
                    span: span((n, a, b)),
                })
                .collect(),
            unattributed: unattributed.map(span),
        })),
        LogEntry::Lost => Some(Entry::Lost(LostEntry {
            offset,
            hole_first_offset: offset,
            hole_len: 1,
        })),
        LogEntry::Undecodable => None,
    }
}

/// The projections a fold case runs: the trigger statistics with one and
/// with three windows, and the actions per day.
fn fold_projections() -> Vec<Box<dyn Projection>> {
    vec![
        Box::new(TriggerStats::default()),
        Box::new(TriggerStats::with_windows(vec![
            Duration::from_secs(3600),
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(2 * 86_400),
        ])),
        Box::new(ActionsPerDay::default()),
    ]
}

/// Folds `entries` (offsets from `first`) into `p` in order; events by
/// their keys, viewed in place from the payload, when `by_keys`.
fn fold(p: &mut dyn Projection, first: u64, entries: &[LogEntry], by_keys: bool) {
    fold_in_blocks(p, first, entries, by_keys.then_some(1));
}

/// [`fold`], events by their keys when `block` is given: gathered in a
/// [`KeyBlock`] of that capacity (folded by `apply_keys_block` when full
/// and before any other entry), or one by one by `apply_keys` for 1.
fn fold_in_blocks(p: &mut dyn Projection, first: u64, entries: &[LogEntry], block: Option<usize>) {
    let mut waiting = KeyBlock::with_capacity(block.unwrap_or(1));
    for (i, e) in entries.iter().enumerate() {
        let offset = first + i as u64;
        match (e, stored_entry(offset, e)) {
            (LogEntry::Event(t, r, a, at), Some(_)) if block.is_some() => {
                let bytes = event_payload(TENANTS[*t], RULES[*r], *a);
                let keys = match enforcelog::event_view::view(offset, *at, &bytes) {
                    Ok(enforcelog::EntryView::Event(keys)) => keys,
                    other => panic!("an event payload viewed as {other:?}"),
                };
                if block == Some(1) {
                    p.apply_keys(&keys);
                } else {
                    waiting.push(&keys);
                    if waiting.is_full() {
                        waiting.fold_into(p);
                    }
                }
            }
            (_, Some(entry)) => {
                waiting.fold_into(p);
                p.apply(offset, &entry);
            }
            (_, None) => {
                waiting.fold_into(p);
                p.skip_undecodable(offset);
            }
        }
    }
    waiting.fold_into(p);
}

fn fold_runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(common::run_seed()),
        failure_persistence: None,
        max_shrink_iters: 200,
        ..Config::default()
    })
}

/// `apply_keys` of the viewed keys leaves the same state as `apply` of the
/// decoded event: the same snapshot bytes, so the host may fold either way.
#[test]
fn folding_by_keys_writes_the_same_snapshot_as_folding_decoded_events() {
    let entries = proptest::collection::vec(log_entry(), 0..200);
    fold_runner(200)
        .run(&entries, |entries| {
            for (mut by_entry, mut by_keys) in
                fold_projections().into_iter().zip(fold_projections())
            {
                prop_assert!(by_keys.keys_only());
                fold(&mut *by_entry, 0, &entries, false);
                fold(&mut *by_keys, 0, &entries, true);
                prop_assert!(
                    by_entry.snapshot() == by_keys.snapshot(),
                    "{}: snapshots differ",
                    by_entry.name()
                );
            }
            Ok(())
        })
        .unwrap();
}

/// `apply_keys_block` (which `TriggerStats` folds with look-ahead: its
/// lookups of a group run before the group is folded, new pairs added on
/// the way) leaves the same state as `apply_keys` of each event: blocks of
/// every size from 2 (smaller than the look-ahead) to 70 (several groups),
/// cut by gap markers, lost and undecodable entries.
#[test]
fn folding_in_blocks_writes_the_same_snapshot_as_folding_one_by_one() {
    let case = (proptest::collection::vec(log_entry(), 0..300), 2usize..=70);
    fold_runner(200)
        .run(&case, |(entries, block)| {
            for (mut one_by_one, mut in_blocks) in
                fold_projections().into_iter().zip(fold_projections())
            {
                fold_in_blocks(&mut *one_by_one, 0, &entries, Some(1));
                fold_in_blocks(&mut *in_blocks, 0, &entries, Some(block));
                prop_assert!(
                    one_by_one.snapshot() == in_blocks.snapshot(),
                    "{}: snapshots differ (blocks of {block})",
                    one_by_one.name()
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The same with many pairs, most of them new when their block is folded
/// (the index grows inside a block, a new pair comes back later in the
/// same group), ids on both sides of the 22 bytes a key keeps in place,
/// and answers checked as well as snapshots.
#[test]
fn folding_in_blocks_adds_new_pairs_as_folding_one_by_one_does() {
    let event = (0u16..30, 0u16..400, 0u8..4, fold_time());
    let case = (proptest::collection::vec(event, 0..600), 2usize..=90);
    fold_runner(100)
        .run(&case, |(events, block)| {
            let ids: Vec<(String, String)> = events
                .iter()
                .map(|&(t, r, _, _)| {
                    let pad = if r % 3 == 0 {
                        "-with-a-longer-rule-id"
                    } else {
                        ""
                    };
                    (format!("tenant-{t}"), format!("r{r}{pad}"))
                })
                .collect();
            let keys: Vec<EventKeys<'_>> = events
                .iter()
                .zip(&ids)
                .enumerate()
                .map(|(i, (&(_, _, a, at), (t, r)))| EventKeys {
                    tenant_id: t,
                    rule_id: r,
                    action: Action::ALL[usize::from(a)],
                    run_id: None,
                    enforced_at_us: at,
                    offset: i as u64,
                })
                .collect();
            let mut one_by_one = TriggerStats::default();
            let mut in_blocks = TriggerStats::default();
            for k in &keys {
                one_by_one.apply_keys(k);
            }
            for chunk in keys.chunks(block) {
                in_blocks.apply_keys_block(chunk);
            }
            prop_assert!(one_by_one.snapshot() == in_blocks.snapshot());
            prop_assert_eq!(one_by_one.rule_count(), in_blocks.rule_count());
            for (t, r) in ids.iter().step_by(7) {
                prop_assert_eq!(
                    one_by_one.answer(t, r, T0_US, keys.len() as u64),
                    in_blocks.answer(t, r, T0_US, keys.len() as u64)
                );
            }
            Ok(())
        })
        .unwrap();
}

/// The as-of instants a merged and an in-order fold are compared at: the
/// anchor, each tenant's watermark and around the horizons.
fn merge_instants(p: &TriggerStats) -> Vec<i64> {
    let mut out = vec![T0_US, T0_US - 30 * DAY_US, MIN_US, MAX_US, i64::MAX];
    for t in TENANTS {
        if let Some(w) = p.tenant_watermark_us(t) {
            for d in [0, 1, -1, -DAY_US, -30 * DAY_US, -30 * DAY_US + 1] {
                out.push(w.saturating_add(d));
            }
        }
    }
    out
}

/// Merging the folds of consecutive ranges (split anywhere, 1 to 4 parts)
/// gives the in-order fold of the whole: the same snapshot once both are
/// normalized, every answer of the normalized in-order fold, an exact
/// answer only where the in-order fold has the same one, and the exact
/// answer at and after every tenant's watermark.
#[test]
fn merging_folds_of_consecutive_ranges_equals_folding_the_whole() {
    let case = (
        proptest::collection::vec(log_entry(), 0..160),
        proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
    );
    fold_runner(300)
        .run(&case, |(entries, cuts)| {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(entries.len() + 1)).collect();
            cuts.push(0);
            cuts.push(entries.len());
            cuts.sort_unstable();
            for (mut whole, template) in fold_projections().into_iter().zip(fold_projections()) {
                fold(&mut *whole, 0, &entries, true);
                let mut merged = template.fresh();
                for part in cuts.windows(2) {
                    let mut p = template.fresh();
                    fold(&mut *p, part[0] as u64, &entries[part[0]..part[1]], true);
                    if merged.merge_later(p).is_err() {
                        return Err(TestCaseError::fail(format!("{}: refused", whole.name())));
                    }
                }
                let (whole_raw, merged_raw) = (whole.snapshot(), merged.snapshot());
                whole.normalize();
                let merged_before = merged.snapshot();
                merged.normalize();
                prop_assert!(
                    whole.snapshot() == merged.snapshot(),
                    "{}: normalized snapshots differ",
                    whole.name()
                );
                // A merge already leaves the normalized state.
                prop_assert!(
                    merged_before == merged.snapshot(),
                    "merge left an unswept state"
                );
                let as_trigger = |p: &dyn Projection| {
                    (p as &dyn std::any::Any)
                        .downcast_ref::<TriggerStats>()
                        .cloned()
                };
                let Some(w) = as_trigger(&*whole) else {
                    continue;
                };
                let mut raw = w.clone();
                raw.restore(&whole_raw).unwrap();
                let mut m = w.clone();
                m.restore(&merged_raw).unwrap();
                for (tenant, rule) in raw.all_rules() {
                    for at in merge_instants(&raw) {
                        let (a, b) = (
                            raw.answer(tenant, rule, at, 1),
                            m.answer(tenant, rule, at, 1),
                        );
                        // The merged state folds at least what the
                        // in-order fold has: it may send more answers to
                        // the log, never fewer, never other numbers.
                        if let Answer::Exact(_) = &b {
                            prop_assert_eq!(&a, &b);
                        }
                        // And it answers as the normalized in-order fold.
                        prop_assert_eq!(&w.answer(tenant, rule, at, 1), &b);
                        if raw.tenant_watermark_us(tenant).is_some_and(|wm| at >= wm) {
                            prop_assert!(
                                matches!(b, Answer::Exact(_)),
                                "merged needs a replay at {}",
                                at
                            );
                        }
                    }
                }
            }
            Ok(())
        })
        .unwrap();
}

/// A merge refuses a projection of another kind or other windows, and
/// hands it back untouched.
#[test]
fn merge_refuses_another_kind_or_other_windows() {
    let mut stats = TriggerStats::default();
    let back = stats
        .merge_later(Box::new(ActionsPerDay::default()))
        .expect_err("another kind");
    assert_eq!(back.name(), "actions_per_day");
    let other = TriggerStats::with_windows(vec![Duration::from_secs(60)]);
    let back = stats
        .merge_later(Box::new(other))
        .expect_err("other windows");
    assert_eq!(back.name(), "trigger_stats");
    let mut per_day = ActionsPerDay::default();
    assert!(per_day
        .merge_later(Box::new(TriggerStats::default()))
        .is_err());
}
