//! Projection checkpoints: what a store does with the checkpoint files it
//! finds when it opens.
//!
//! A checkpoint written by a clean close is restored on the next open; one
//! that is damaged (any single bit flipped, truncated), taken from another
//! store, covering entries the log no longer has, or written with other
//! trigger windows is ignored and the projection rebuilt from the log, so
//! the statistics stay exact. `verify_projections` names each such problem,
//! `rebuild_projections` restores exactness even after a checkpoint that
//! decodes but is wrong, a projection registered later catches up from the
//! log beside one restored from its checkpoint, and a read-only store loads
//! checkpoints but never writes them.
//!
//! Every test runs on [`SimStorage`]; events derive from `ENFORCELOG_SEED`
//! (or a fixed default), which failure messages name.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::Rng;
use enforcelog::projection::checkpoint::Checkpoint;
use enforcelog::projection::{ActionsPerDay, Projection, ProjectionCheck};
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{
    Action, Durability, Entry, Error, Event, LogOptions, RuleStats, Store, StoreOptions,
};

const DIR: &str = "/store";
const TRIGGER_CKPT: &str = "/store/projections/trigger_stats.ckpt";
const PER_DAY_CKPT: &str = "/store/projections/actions_per_day.ckpt";
const DEFAULT_SEED: u64 = 0x0C4E_C4B0_1A75_0005;
const HOUR_US: i64 = 3600 * 1_000_000;
const DAY_US: i64 = 24 * HOUR_US;
/// 2026-11-01T00:00:00Z.
const T0_US: i64 = 1_793_491_200_000_000;
const DAYS_30: Duration = Duration::from_secs(30 * 24 * 3600);

// ---------------------------------------------------------------------------
// Seeds and events.

fn seed() -> u64 {
    common::seed_or(DEFAULT_SEED)
}

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

/// `n` events of 3 tenants and 4 rules, out of order: most in the 25 days
/// before [`T0_US`], some exactly on window boundaries (`T0`, `T0 - 30d`,
/// `T0 - 30d + 1 µs`), every tenth about 100 days earlier, so that the
/// projection folds it.
fn make_events(seed: u64, n: usize) -> Vec<Ev> {
    let mut rng = Rng(seed ^ 0x2545_F491_4F6C_DD1D);
    (0..n)
        .map(|i| {
            let at_us = match rng.below(10) {
                0 => T0_US - 100 * DAY_US - rng.below(DAY_US as u64) as i64,
                1 => T0_US,
                2 if i % 2 == 0 => T0_US - 30 * DAY_US,
                2 => T0_US - 30 * DAY_US + 1,
                _ => T0_US - rng.below(25 * DAY_US as u64) as i64,
            };
            Ev {
                tenant: ["acme", "globex", "initech"][rng.below(3) as usize].to_string(),
                rule: ["budget", "no-prod", "rate", "r-ß"][rng.below(4) as usize].to_string(),
                action: Action::ALL[i % 4],
                at_us,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Stores.

fn options(windows: &[Duration], durability: Durability) -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            segment_max_bytes: 8192,
            index_interval_bytes: 512,
            record_max_bytes: 1024,
            durability,
            ..LogOptions::default()
        },
        trigger_windows: windows.to_vec(),
        // Only close, drop and `checkpoint()` write checkpoints.
        checkpoint_every_entries: u64::MAX,
        checkpoint_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    }
}

fn user_projections(per_day: bool) -> Vec<Box<dyn Projection>> {
    if per_day {
        vec![Box::new(ActionsPerDay::default())]
    } else {
        Vec::new()
    }
}

fn open(storage: &SimStorage, windows: &[Duration], per_day: bool) -> Store {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options(windows, Durability::Fsync))
        .projections(user_projections(per_day))
        .open()
        .expect("open store")
}

fn open_read_only(storage: &SimStorage, per_day: bool) -> Store {
    Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options(&[DAYS_30], Durability::Fsync))
        .projections(user_projections(per_day))
        .open_read_only()
        .expect("open read-only store")
}

fn record(store: &Store, events: &[Ev]) {
    for chunk in events.chunks(7) {
        let mut batch = store.begin();
        for e in chunk {
            batch.record(e.to_event()).expect("valid event");
        }
        batch.commit_blocking().expect("commit");
    }
}

/// Cuts the power (so no checkpoint can be written), drops `store` and
/// crashes, losing whatever was not fsynced.
fn power_cut_then_crash(storage: &SimStorage, store: Store) {
    storage.power_cut_after(0);
    assert!(
        store.checkpoint().is_err(),
        "a checkpoint despite the power cut"
    );
    // Dropping closes: its checkpoint fails too, with a warning.
    drop(store);
    storage.crash(CrashMode::LoseUnsynced);
}

/// A closed store holding `events`, with checkpoints from its close.
fn closed_store(storage: &SimStorage, events: &[Ev], per_day: bool) {
    let store = open(storage, &[DAYS_30], per_day);
    record(&store, events);
    store.close().expect("close");
}

/// Every file of the store directory and its bytes.
fn files(storage: &SimStorage) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(storage: &SimStorage, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for name in storage.list(dir).expect("list") {
            let path = dir.join(name);
            match storage.read_file(&path) {
                Some(bytes) => {
                    out.insert(path, bytes);
                }
                None => walk(storage, &path, out),
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(storage, Path::new(DIR), &mut out);
    out
}

// ---------------------------------------------------------------------------
// The brute force.

fn brute_stats(events: &[Ev], windows: &[Duration], as_of_us: i64, offset: u64) -> Vec<RuleStats> {
    let mut rules: BTreeMap<(String, String), RuleStats> = BTreeMap::new();
    let primary = windows.last().expect("a window").as_micros() as i64;
    for e in events.iter().filter(|e| e.at_us <= as_of_us) {
        let s = rules
            .entry((e.tenant.clone(), e.rule.clone()))
            .or_insert_with(|| RuleStats {
                tenant_id: e.tenant.clone(),
                rule_id: e.rule.clone(),
                as_of_us,
                trigger_count: 0,
                window_counts: windows.iter().map(|&w| (w, 0)).collect(),
                last_triggered_at_us: None,
                total_count: 0,
                by_action: [0; 4],
                offset,
                missing_at_least: 0,
                gap_in_window: false,
            });
        s.total_count += 1;
        s.last_triggered_at_us = s.last_triggered_at_us.max(Some(e.at_us));
        for (w, n) in &mut s.window_counts {
            if e.at_us > as_of_us - w.as_micros() as i64 {
                *n += 1;
            }
        }
        if e.at_us > as_of_us - primary {
            s.trigger_count += 1;
            let i = Action::ALL
                .iter()
                .position(|&a| a == e.action)
                .expect("action");
            s.by_action[i] += 1;
        }
    }
    rules.into_values().collect()
}

fn brute_per_day(events: &[Ev]) -> Vec<(i64, Action, u64)> {
    let mut counts: BTreeMap<(i64, Action), u64> = BTreeMap::new();
    for e in events {
        *counts
            .entry((e.at_us.div_euclid(DAY_US), e.action))
            .or_default() += 1;
    }
    counts.into_iter().map(|((d, a), n)| (d, a, n)).collect()
}

/// As-of instants: window boundaries, before and after every event, and
/// one whose window reaches into history the projection folded (answered
/// by replaying the log).
const AS_OF_US: [i64; 7] = [
    T0_US - 110 * DAY_US,
    T0_US - 95 * DAY_US,
    T0_US - 30 * DAY_US,
    T0_US - 20 * DAY_US,
    T0_US - 1,
    T0_US,
    T0_US + 31 * DAY_US,
];

/// The store's answers equal the brute force over `events`, as of every
/// instant of [`AS_OF_US`]; so does `ActionsPerDay` when registered.
fn assert_exact(store: &Store, events: &[Ev], windows: &[Duration], what: &str) {
    let seed = seed();
    let offset = store.next_offset();
    for as_of in AS_OF_US {
        let got = store.stats_all(Some(as_of)).expect("stats_all");
        let want = brute_stats(events, windows, as_of, offset);
        assert_eq!(got, want, "seed {seed}: {what}: stats_all as of {as_of}");
    }
    let per_day = store
        .with_projection::<ActionsPerDay, _>(|p, at| (p.iter().collect::<Vec<_>>(), at))
        .expect("with_projection");
    if let Some((rows, at)) = per_day {
        assert_eq!(at, offset, "seed {seed}: {what}: ActionsPerDay offset");
        assert_eq!(
            rows,
            brute_per_day(events),
            "seed {seed}: {what}: ActionsPerDay"
        );
    }
}

fn check_of<'a>(checks: &'a [ProjectionCheck], name: &str) -> &'a ProjectionCheck {
    checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check of {name}: {checks:?}"))
}

fn assert_refused(store: &Store, name: &str, what: &str) -> String {
    let checks = store.verify_projections().expect("verify_projections");
    let c = check_of(&checks, name);
    assert!(
        !c.matches && c.checkpoint_offset.is_none(),
        "seed {}: {what}: {c:?}",
        seed()
    );
    c.problem
        .clone()
        .unwrap_or_else(|| panic!("seed {}: {what}: no problem named: {c:?}", seed()))
}

fn assert_all_match(store: &Store, offset: Option<u64>, what: &str) {
    for c in store.verify_projections().expect("verify_projections") {
        assert!(
            c.matches && c.problem.is_none() && c.checkpoint_offset == offset,
            "seed {}: {what}: {c:?} (want offset {offset:?})",
            seed()
        );
    }
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn clean_close_checkpoints_every_projection_and_reopen_restores_it() {
    let storage = SimStorage::new(1);
    let events = make_events(seed(), 150);
    closed_store(&storage, &events, true);

    let store = open(&storage, &[DAYS_30], true);
    let last = store
        .log()
        .read_from(149)
        .expect("read")
        .next()
        .expect("record 149")
        .expect("record 149");
    for path in [TRIGGER_CKPT, PER_DAY_CKPT] {
        let bytes = storage.read_file(path).expect("a checkpoint after close");
        let c = Checkpoint::decode(&bytes).expect("a valid checkpoint");
        assert_eq!(c.offset, 150, "{path}");
        let projection_version = if path == TRIGGER_CKPT { 3 } else { 1 };
        assert_eq!(c.snapshot_version, projection_version, "{path}");
        assert_eq!(
            (c.anchor_crc, c.anchor_ts),
            (crc32fast::hash(&last.payload), last.timestamp_us),
            "{path}: anchored on the last record"
        );
    }
    assert_all_match(&store, Some(150), "reopened after close");
    assert_exact(&store, &events, &[DAYS_30], "reopened after close");

    assert_eq!(store.rebuild_projections().expect("rebuild"), 150);
    assert_exact(&store, &events, &[DAYS_30], "rebuilt");

    // The tail past the checkpoint is replayed.
    let more = make_events(seed() ^ 1, 40);
    record(&store, &more);
    let all: Vec<Ev> = events.iter().chain(&more).cloned().collect();
    assert_exact(&store, &all, &[DAYS_30], "more events");
    store.close().expect("close");
    let store = open(&storage, &[DAYS_30], true);
    assert_all_match(&store, Some(190), "second reopen");
    assert_exact(&store, &all, &[DAYS_30], "second reopen");
}

/// A checkpoint that decodes and is anchored on the right record is used as
/// it is (so the statistics are those of its snapshot); `verify_projections`
/// finds that it differs from a rebuild, and `rebuild_projections` makes
/// the statistics exact again.
#[test]
fn a_wrong_but_valid_checkpoint_is_caught_by_verify_and_fixed_by_rebuild() {
    let events = make_events(seed(), 120);
    let storage = SimStorage::new(2);
    closed_store(&storage, &events, true);
    let other = SimStorage::new(3);
    closed_store(&other, &events[..60], true);

    // Its own anchor and offset, the other store's snapshot.
    for path in [TRIGGER_CKPT, PER_DAY_CKPT] {
        let mine = Checkpoint::decode(&storage.read_file(path).unwrap()).unwrap();
        let theirs = Checkpoint::decode(&other.read_file(path).unwrap()).unwrap();
        let forged = Checkpoint {
            snapshot: theirs.snapshot,
            ..mine
        };
        storage.write_file(path, &forged.encode());
    }

    let store = open(&storage, &[DAYS_30], true);
    // The restored (wrong) state answers: proof that the checkpoint is used.
    let got = store.stats_all(Some(T0_US)).unwrap();
    assert_eq!(got, brute_stats(&events[..60], &[DAYS_30], T0_US, 120));
    let per_day = store
        .with_projection::<ActionsPerDay, _>(|p, _| p.iter().collect::<Vec<_>>())
        .unwrap()
        .unwrap();
    assert_eq!(per_day, brute_per_day(&events[..60]));

    let checks = store.verify_projections().unwrap();
    for name in ["trigger_stats", "actions_per_day"] {
        let c = check_of(&checks, name);
        assert!(
            !c.matches && c.checkpoint_offset == Some(120) && c.problem.is_some(),
            "{c:?}"
        );
    }

    assert_eq!(store.rebuild_projections().unwrap(), 120);
    assert_exact(&store, &events, &[DAYS_30], "rebuilt");
    store.checkpoint().unwrap();
    assert_all_match(&store, Some(120), "checkpointed after the rebuild");
    store.close().unwrap();
}

/// How [`assert_damage_ignored`] looks at a damaged checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    /// `verify_projections` of a store already open (it reads the file anew
    /// and judges it as an open would).
    Verify,
    /// Also a read-only store opened on it (no lock, writes nothing).
    ReadOnly,
    /// Also a writer opened on it, whose close writes the good checkpoint
    /// again.
    Writer,
}

/// Puts `bad` in place of the checkpoint `good` of projection `name` and
/// checks that it is refused and, when a store opens on it, ignored: the
/// projection is rebuilt and the statistics are exact.
#[expect(clippy::too_many_arguments, reason = "one call per damage kind")]
fn assert_damage_ignored(
    storage: &SimStorage,
    probe: &Store,
    (path, name): (&str, &str),
    good: &[u8],
    bad: &[u8],
    events: &[Ev],
    look: Look,
    what: &str,
) {
    storage.write_file(path, bad);
    assert_refused(probe, name, what);
    if look == Look::Verify {
        return;
    }
    let store = open_read_only(storage, true);
    assert_exact(&store, events, &[DAYS_30], what);
    assert_refused(&store, name, what);
    store.close().expect("close");
    assert_eq!(storage.read_file(path).as_deref(), Some(bad), "{what}");
    if look == Look::Writer {
        let store = open(storage, &[DAYS_30], true);
        assert_exact(&store, events, &[DAYS_30], what);
        assert_refused(&store, name, what);
        store.close().expect("close");
        assert_eq!(storage.read_file(path).as_deref(), Some(good), "{what}");
    }
}

const CHECKPOINTS: [(&str, &str); 2] = [
    (TRIGGER_CKPT, "trigger_stats"),
    (PER_DAY_CKPT, "actions_per_day"),
];

/// How to look at damage number `i` of `n`: every one through verify, a
/// spread sample (first and last included) through stores opened on it.
fn look(i: usize, n: usize) -> Look {
    let step = n.div_ceil(12).max(1);
    if i.is_multiple_of(4 * step) || i == n - 1 {
        Look::Writer
    } else if i.is_multiple_of(step) {
        Look::ReadOnly
    } else {
        Look::Verify
    }
}

#[test]
fn every_single_bit_flip_of_a_checkpoint_is_refused_and_rebuilt() {
    let storage = SimStorage::new(4);
    let events = make_events(seed(), 6);
    closed_store(&storage, &events, true);
    let probe = open_read_only(&storage, true);
    for checkpoint in CHECKPOINTS {
        let good = storage.read_file(checkpoint.0).unwrap();
        let bits = good.len() * 8;
        for bit in 0..bits {
            let mut bad = good.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let what = format!("{}, bit {bit} of {bits} flipped", checkpoint.1);
            let look = look(bit, bits);
            assert_damage_ignored(
                &storage, &probe, checkpoint, &good, &bad, &events, look, &what,
            );
        }
        storage.write_file(checkpoint.0, &good);
    }
    assert_all_match(&probe, Some(6), "undamaged again");
}

#[test]
fn truncated_or_extended_checkpoint_is_refused_and_rebuilt() {
    let storage = SimStorage::new(5);
    let events = make_events(seed(), 30);
    closed_store(&storage, &events, true);
    let probe = open_read_only(&storage, true);
    for checkpoint in CHECKPOINTS {
        let good = storage.read_file(checkpoint.0).unwrap();
        let mut damaged: Vec<Vec<u8>> = (0..good.len()).map(|n| good[..n].to_vec()).collect();
        damaged.push([good.as_slice(), &[0]].concat());
        damaged.push([good.as_slice(), &good].concat());
        for (i, bad) in damaged.iter().enumerate() {
            let what = format!(
                "{}: {} bytes instead of {}",
                checkpoint.1,
                bad.len(),
                good.len()
            );
            let look = look(i, damaged.len());
            assert_damage_ignored(
                &storage, &probe, checkpoint, &good, bad, &events, look, &what,
            );
        }
        storage.write_file(checkpoint.0, &good);
    }
    assert_all_match(&probe, Some(30), "undamaged again");
}

/// Dropping the last handle does what `close` does: it checkpoints the
/// projections and releases the directory, so the store opens again at once.
#[test]
fn dropping_the_store_checkpoints_and_releases_the_directory() {
    let storage = SimStorage::new(15);
    let events = make_events(seed(), 25);
    let store = open(&storage, &[DAYS_30], true);
    record(&store, &events);
    drop(store);
    for (path, _) in CHECKPOINTS {
        let bytes = storage.read_file(path).expect("a checkpoint after drop");
        assert_eq!(Checkpoint::decode(&bytes).unwrap().offset, 25, "{path}");
    }
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options(&[DAYS_30], Durability::Fsync))
        .projections(user_projections(true))
        .open()
        .expect("open again right after the drop");
    assert_all_match(&store, Some(25), "reopened after drop");
    assert_exact(&store, &events, &[DAYS_30], "reopened after drop");
    store.close().unwrap();
}

/// A checkpoint copied from another store is refused by its store id; one
/// forged to carry this store's id is still refused by its anchor.
#[test]
fn checkpoint_of_another_store_is_refused_by_its_store_id_then_its_anchor() {
    let mine = make_events(seed(), 80);
    let theirs = make_events(seed() ^ 0xFF, 80);
    assert_ne!(mine.last(), theirs.last());
    let storage = SimStorage::new(6);
    closed_store(&storage, &mine, true);
    let other = SimStorage::new(7);
    closed_store(&other, &theirs, true);
    let my_id = Checkpoint::decode(&storage.read_file(TRIGGER_CKPT).unwrap())
        .unwrap()
        .store_id;
    for (forge, expected) in [(false, "another store"), (true, "anchor")] {
        for path in [TRIGGER_CKPT, PER_DAY_CKPT] {
            let mut copied = Checkpoint::decode(&other.read_file(path).unwrap()).unwrap();
            assert_ne!(copied.store_id, my_id, "two stores got the same id");
            if forge {
                copied.store_id = my_id;
            }
            storage.write_file(path, &copied.encode());
        }
        let store = open(&storage, &[DAYS_30], true);
        assert_exact(&store, &mine, &[DAYS_30], "foreign checkpoints");
        for name in ["trigger_stats", "actions_per_day"] {
            let problem = assert_refused(&store, name, "foreign checkpoint");
            assert!(problem.contains(expected), "{name}: {problem}");
        }
        store.close().unwrap();
        let store = open(&storage, &[DAYS_30], true);
        assert_all_match(&store, Some(80), "own checkpoints again");
        store.close().unwrap();
    }
}

#[test]
fn checkpoint_of_a_longer_store_is_refused() {
    let events = make_events(seed(), 90);
    let storage = SimStorage::new(8);
    closed_store(&storage, &events[..70], true);
    let longer = SimStorage::new(9);
    closed_store(&longer, &events, true);
    for path in [TRIGGER_CKPT, PER_DAY_CKPT] {
        storage.write_file(path, &longer.read_file(path).unwrap());
    }
    let store = open(&storage, &[DAYS_30], true);
    assert_exact(&store, &events[..70], &[DAYS_30], "checkpoint past the end");
    for name in ["trigger_stats", "actions_per_day"] {
        assert_refused(&store, name, "checkpoint past the end");
    }
}

/// Under `Durability::None` a checkpoint (always fsynced) can cover log
/// records a crash then loses. The next open must not trust it; and once new,
/// different events have been made durable past its offset, the anchor must
/// refuse it.
#[test]
fn checkpoint_covering_records_lost_in_a_crash_is_refused() {
    let seed = seed();
    let first = make_events(seed, 20);
    let lost = make_events(seed ^ 2, 30);
    let later = make_events(seed ^ 3, 45);
    let storage = SimStorage::new(10);
    closed_store(&storage, &first, true);

    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options(&[DAYS_30], Durability::None))
        .projections(user_projections(true))
        .open()
        .unwrap();
    record(&store, &lost);
    store.checkpoint().unwrap();
    assert_eq!(
        Checkpoint::decode(&storage.read_file(TRIGGER_CKPT).unwrap())
            .unwrap()
            .offset,
        50
    );
    power_cut_then_crash(&storage, store);

    let store = open(&storage, &[DAYS_30], true);
    let survived = store.next_offset();
    assert!(
        survived < 50,
        "seed {seed}: the crash lost nothing ({survived} records)"
    );
    let present: Vec<Ev> = store
        .entries(0)
        .unwrap()
        .map(|e| match e.unwrap() {
            Entry::Event(e) => Ev {
                tenant: e.tenant_id,
                rule: e.rule_id,
                action: e.action,
                at_us: e.enforced_at_us,
            },
            Entry::Gap(g) => panic!("unexpected gap marker {g:?}"),
            Entry::Lost(l) => panic!("unexpected lost entry {l:?}"),
        })
        .collect();
    let recorded: Vec<Ev> = first.iter().chain(&lost).cloned().collect();
    assert_eq!(present[..], recorded[..present.len()]);
    assert_exact(&store, &present, &[DAYS_30], "after losing records");
    for name in ["trigger_stats", "actions_per_day"] {
        assert_refused(&store, name, "checkpoint past the end");
    }

    // New events, durable, past the old checkpoint's offset; then a crash
    // before any new checkpoint.
    record(&store, &later);
    assert!(store.next_offset() > 50);
    power_cut_then_crash(&storage, store);
    let store = open(&storage, &[DAYS_30], true);
    let all: Vec<Ev> = present.iter().chain(&later).cloned().collect();
    assert_eq!(store.next_offset(), all.len() as u64);
    assert_exact(
        &store,
        &all,
        &[DAYS_30],
        "after new events past the old offset",
    );
    for name in ["trigger_stats", "actions_per_day"] {
        let problem = assert_refused(&store, name, "stale checkpoint inside the log");
        assert!(problem.contains("anchor"), "{name}: {problem}");
    }
}

#[test]
fn checkpoint_with_other_trigger_windows_is_refused_and_rebuilt() {
    let events = make_events(seed(), 100);
    let storage = SimStorage::new(11);
    closed_store(&storage, &events, true);
    let windows = [
        Duration::from_secs(3600),
        Duration::from_secs(24 * 3600),
        Duration::from_secs(7 * 24 * 3600),
        DAYS_30,
    ];
    let store = open(&storage, &windows, true);
    assert_exact(&store, &events, &windows, "other windows");
    let problem = assert_refused(&store, "trigger_stats", "other windows");
    assert!(problem.contains("windows"), "{problem}");
    let per_day = check_of(&store.verify_projections().unwrap(), "actions_per_day").clone();
    assert!(
        per_day.matches && per_day.checkpoint_offset == Some(100),
        "{per_day:?}"
    );
    store.close().unwrap();

    let store = open(&storage, &windows, true);
    assert_all_match(&store, Some(100), "checkpoint with the new windows");
    assert_exact(&store, &events, &windows, "checkpoint with the new windows");
    store.close().unwrap();

    let store = open(&storage, &[DAYS_30], true);
    assert_exact(&store, &events, &[DAYS_30], "back to 30 days");
    assert_refused(&store, "trigger_stats", "back to 30 days");
}

/// A projection registered later has no checkpoint (or an older one) while
/// the trigger statistics have a newer one: the follower brings each from
/// its own offset, and both are exact.
#[test]
fn projections_with_checkpoints_of_different_ages_are_both_exact() {
    let seed = seed();
    let a = make_events(seed, 40);
    let b = make_events(seed ^ 4, 50);
    let c = make_events(seed ^ 5, 30);
    let storage = SimStorage::new(12);
    closed_store(&storage, &a, false);
    assert!(storage.read_file(PER_DAY_CKPT).is_none());

    // ActionsPerDay registered later: no checkpoint.
    let store = open(&storage, &[DAYS_30], true);
    let checks = store.verify_projections().unwrap();
    let trigger = check_of(&checks, "trigger_stats");
    assert!(
        trigger.matches && trigger.checkpoint_offset == Some(40),
        "{trigger:?}"
    );
    let per_day = check_of(&checks, "actions_per_day");
    assert!(
        per_day.matches && per_day.checkpoint_offset.is_none(),
        "{per_day:?}"
    );
    assert_exact(&store, &a, &[DAYS_30], "registered later");
    record(&store, &b);
    let ab: Vec<Ev> = a.iter().chain(&b).cloned().collect();
    assert_exact(&store, &ab, &[DAYS_30], "registered later, live");
    store.close().unwrap();
    assert_eq!(
        Checkpoint::decode(&storage.read_file(PER_DAY_CKPT).unwrap())
            .unwrap()
            .offset,
        90
    );

    // Without it again: its checkpoint stays at 90, the trigger one moves on.
    let store = open(&storage, &[DAYS_30], false);
    record(&store, &c);
    store.close().unwrap();
    let abc: Vec<Ev> = ab.iter().chain(&c).cloned().collect();

    let store = open(&storage, &[DAYS_30], true);
    let checks = store.verify_projections().unwrap();
    let trigger = check_of(&checks, "trigger_stats");
    assert!(
        trigger.matches && trigger.checkpoint_offset == Some(120),
        "{trigger:?}"
    );
    let per_day = check_of(&checks, "actions_per_day");
    assert!(
        per_day.matches && per_day.checkpoint_offset == Some(90),
        "{per_day:?}"
    );
    assert_exact(&store, &abc, &[DAYS_30], "checkpoints of different ages");
    store.close().unwrap();
    assert_all_match(
        &open(&storage, &[DAYS_30], true),
        Some(120),
        "both checkpointed",
    );
}

#[test]
fn read_only_store_loads_checkpoints_and_never_writes_them() {
    let events = make_events(seed(), 100);
    let storage = SimStorage::new(13);
    closed_store(&storage, &events, true);
    let before = files(&storage);
    assert!(before.contains_key(Path::new(TRIGGER_CKPT)));

    let store = open_read_only(&storage, true);
    assert_all_match(&store, Some(100), "read-only");
    assert_exact(&store, &events, &[DAYS_30], "read-only");
    assert!(matches!(store.checkpoint(), Err(Error::ReadOnly)));
    store.rebuild_projections().unwrap();
    assert_exact(&store, &events, &[DAYS_30], "read-only, rebuilt");
    store.close().unwrap();
    drop(store);
    assert_eq!(files(&storage), before, "a read-only store wrote");

    // It loads them: a valid but wrong snapshot is what it answers from.
    let other = SimStorage::new(14);
    closed_store(&other, &events[..50], false);
    let mine = Checkpoint::decode(&storage.read_file(TRIGGER_CKPT).unwrap()).unwrap();
    let theirs = Checkpoint::decode(&other.read_file(TRIGGER_CKPT).unwrap()).unwrap();
    let forged = Checkpoint {
        snapshot: theirs.snapshot,
        ..mine
    };
    storage.write_file(TRIGGER_CKPT, &forged.encode());
    let before = files(&storage);
    let store = open_read_only(&storage, true);
    assert_eq!(
        store.stats_all(Some(T0_US)).unwrap(),
        brute_stats(&events[..50], &[DAYS_30], T0_US, 100)
    );
    store.rebuild_projections().unwrap();
    assert_exact(&store, &events, &[DAYS_30], "read-only, rebuilt");
    drop(store);
    assert_eq!(files(&storage), before, "a read-only store wrote");

    // Beside a writer: refresh sees its events; still writes nothing.
    storage.write_file(TRIGGER_CKPT, &mine.encode());
    let writer = open(&storage, &[DAYS_30], true);
    let reader = open_read_only(&storage, true);
    let more = make_events(seed() ^ 6, 35);
    record(&writer, &more);
    let before = files(&storage);
    reader.refresh().unwrap();
    let all: Vec<Ev> = events.iter().chain(&more).cloned().collect();
    assert_exact(&reader, &all, &[DAYS_30], "read-only beside a writer");
    drop(reader);
    assert_eq!(files(&storage), before, "a read-only store wrote");
    writer.close().unwrap();

    // A damaged checkpoint is ignored and left as it is.
    let mut bad = storage.read_file(TRIGGER_CKPT).unwrap();
    bad[20] ^= 0x10;
    storage.write_file(TRIGGER_CKPT, &bad);
    let before = files(&storage);
    let store = open_read_only(&storage, true);
    assert_exact(&store, &all, &[DAYS_30], "read-only, damaged checkpoint");
    assert_refused(&store, "trigger_stats", "read-only, damaged checkpoint");
    drop(store);
    assert_eq!(files(&storage), before, "a read-only store wrote");
}

/// Checkpoints asked for from several threads at once (and by the follower)
/// are written one at a time: each succeeds, and the files they leave are
/// the store's. Two writers at once shared one temporary file, and the
/// later rename failed with "not found".
#[test]
fn concurrent_checkpoint_calls_all_succeed() {
    for round in 0..20 {
        let events = make_events(seed() ^ round, 120);
        let storage = SimStorage::new(12 + round);
        let store = open(&storage, &[DAYS_30], true);
        std::thread::scope(|scope| {
            for chunk in events.chunks(30) {
                let store = &store;
                scope.spawn(move || {
                    for part in chunk.chunks(3) {
                        record(store, part);
                        store.checkpoint().expect("a concurrent checkpoint");
                    }
                });
            }
        });
        store.close().unwrap();
        let store = open(&storage, &[DAYS_30], true);
        assert_all_match(&store, Some(120), "after concurrent checkpoints");
        assert_exact(&store, &events, &[DAYS_30], "after concurrent checkpoints");
    }
}

/// A failing disk while a checkpoint is written (ENOSPC or EIO on the
/// temporary file's creation, write or fsync, on the rename, or on the
/// directory fsync): the caller gets an I/O error naming the step, the log
/// is not poisoned (recording goes on), the checkpoint file on disk is the
/// old one or the complete new one, and after the fault clears, a reopen
/// (with or without a crash in between) answers exactly.
#[test]
fn a_failing_disk_during_a_checkpoint_costs_only_that_checkpoint() {
    use enforcelog::storage::sim::{FaultKind, FaultOp};
    let ops = [
        (FaultOp::Create, "create"),
        (FaultOp::Write, "write"),
        (FaultOp::SyncData, "fsync"),
        (FaultOp::Rename, "rename"),
        (FaultOp::SyncDir, "fsync directory"),
    ];
    let mut case = 0;
    for (op, step) in ops {
        for kind in [FaultKind::NoSpace, FaultKind::Io] {
            for crash in [false, true] {
                case += 1;
                let what = format!("{op:?} {kind:?} crash={crash}");
                let events = make_events(seed() ^ case, 90);
                let (first, rest) = events.split_at(40);
                let (during, after) = rest.split_at(25);
                let storage = SimStorage::new(100 + case);
                closed_store(&storage, first, true);
                let before: Vec<Vec<u8>> = [TRIGGER_CKPT, PER_DAY_CKPT]
                    .iter()
                    .map(|p| storage.read_file(p).expect("checkpoint after close"))
                    .collect();

                let store = open(&storage, &[DAYS_30], true);
                record(&store, during);
                storage.inject(op, 0, kind, false);
                let err = store.checkpoint().expect_err(&what);
                assert!(
                    matches!(&err, Error::Io { op, .. } if *op == step),
                    "{what}: {err:?}"
                );
                storage.clear_faults();
                // Recording goes on: a checkpoint is not the log.
                record(&store, after);
                for (path, old) in [TRIGGER_CKPT, PER_DAY_CKPT].iter().zip(&before) {
                    let now = storage.read_file(path).expect("a checkpoint file");
                    let offset = Checkpoint::decode(&now).expect("whole").offset;
                    assert!(
                        now == *old || offset == 65,
                        "{what}: {path} is neither the old checkpoint nor the new one (offset {offset})"
                    );
                }
                if crash {
                    // Power lost before any later checkpoint: the handle's
                    // own checkpoint on drop fails against the dead storage.
                    storage.crash(CrashMode::LoseUnsynced);
                    drop(store);
                } else {
                    store.close().expect("close after the fault cleared");
                }
                let store = open(&storage, &[DAYS_30], true);
                assert_exact(&store, &events, &[DAYS_30], &what);
                store.close().unwrap();
            }
        }
    }
}
