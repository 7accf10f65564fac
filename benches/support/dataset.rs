//! The data set the read benches share: a seeded stream of enforcement
//! events over (tenant, rule) pairs, written into a store in two parts so
//! that a stale and a fresh checkpoint can be kept beside it, the
//! brute-force answer every figure is checked against, and the passes over
//! the log both benches time. Shared by `benches/replay.rs` and
//! `benches/reads.rs` (included with `#[path]`, beside `events.rs`, whose
//! event shape it writes).
//!
//! Invariants: the stream depends only on the generator's seed and the
//! key shape ([`Keys`]), so each bench writes exactly the events it wrote
//! before this module existed (the benches differ in key shape and seed,
//! not in the event itself); the store is written with `Durability::None`
//! under `CARGO_TARGET_TMPDIR` and read back while in the page cache, so
//! the figures are CPU costs, not disk costs. Nothing here is timed except
//! what a `*_pass` function or [`time_open`] returns.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::events::enforcement_event_in_run;
use enforcelog::projection::{KeyBlock, Projection};
use enforcelog::{
    payload, Action, Durability, Entry, Event, Log, LogOptions, RuleStats, Store, StoreOptions,
    StoredEvent, TriggerStats,
};

pub const DAY_US: i64 = 24 * 3600 * 1_000_000;
/// The trigger-stats window the store answers with by default.
pub const WINDOW_US: i64 = 30 * DAY_US;
/// The newest instant of the data set (2026-10-01T00:00:00Z): every query
/// asks as of it.
pub const END_US: i64 = 1_790_812_800_000_000;
/// How far back the data set reaches.
pub const SPAN_US: i64 = 60 * DAY_US;
/// Clock skew: each event moves by up to this much either way, as hosts
/// with skewed clocks would send them.
const JITTER_US: i64 = 5 * 60 * 1_000_000;
/// Events per committed batch while building the store.
const BUILD_BATCH: usize = 1_000;

/// SplitMix64: a small, seeded, reproducible generator.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The run's seed: `ENFORCELOG_SEED`, or the bench's own default.
pub fn seed(default: u64) -> u64 {
    std::env::var("ENFORCELOG_SEED")
        .ok()
        .map(|v| v.parse().expect("ENFORCELOG_SEED is a u64"))
        .unwrap_or(default)
}

/// The shape of the keys: `tenants` × `rules_per_tenant` pairs, numbered;
/// `pair / rules_per_tenant` is the tenant. Rule ids are zero-padded to
/// `rule_digits` (the benches differ there, and the id's length is part of
/// every payload they measure).
#[derive(Debug, Clone, Copy)]
pub struct Keys {
    pub tenants: u64,
    pub rules_per_tenant: u64,
    pub rule_digits: usize,
}

impl Keys {
    pub fn pairs(self) -> u64 {
        self.tenants * self.rules_per_tenant
    }

    pub fn tenant(self, pair: u64) -> String {
        format!("tenant-{:03}", pair / self.rules_per_tenant)
    }

    pub fn rule(self, pair: u64) -> String {
        format!("rule-{pair:0width$}", width = self.rule_digits)
    }
}

/// What the brute-force checks need of one event.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub pair: u32,
    pub action: u8,
    pub at_us: i64,
    /// Its run (`run-{run:08}`).
    #[allow(dead_code, reason = "reads.rs asks for runs; replay.rs does not")]
    pub run: u32,
}

/// Runs in progress at once: each event continues one of them, so a run's
/// events interleave with other runs' as agents' do.
const RUNS_AT_ONCE: usize = 64;
/// The most events of one run.
const RUN_EVENTS_MAX: u64 = 20;

/// Run ids that repeat: 1–20 events per run (geometric, p = 0.2, cut at
/// 20), `RUNS_AT_ONCE` runs in progress at a time.
#[derive(Debug, Default)]
pub struct Runs {
    /// (run, events it still gets) per slot.
    slots: Vec<(u32, u64)>,
    next: u32,
}

impl Runs {
    /// The run of the next event, from one uniform draw below 1e8.
    fn next_run(&mut self, draw: u64) -> u32 {
        if self.slots.is_empty() {
            self.slots = vec![(0, 0); RUNS_AT_ONCE];
        }
        let slot = &mut self.slots[(draw % RUNS_AT_ONCE as u64) as usize];
        if slot.1 == 0 {
            let u = ((draw / RUNS_AT_ONCE as u64) as f64 + 0.5) / (1e8 / RUNS_AT_ONCE as f64);
            let len = 1 + (u.ln() / 0.8f64.ln()).floor().max(0.0) as u64;
            *slot = (self.next, len.min(RUN_EVENTS_MAX));
            self.next += 1;
        }
        slot.1 -= 1;
        slot.0
    }
}

/// A run's id.
pub fn run_id(run: u32) -> String {
    format!("run-{run:08}")
}

/// The `i`-th event of `n`: a random pair and action, its run, a
/// `details` object (about 180 to 200 bytes of payload in all), at its
/// place along the 60 days plus jitter.
fn make_event(rng: &mut Rng, runs: &mut Runs, keys: Keys, i: u64, n: u64) -> (Written, Event) {
    let pair = rng.below(keys.pairs());
    let action = rng.below(4) as u8;
    let along = i128::from(SPAN_US) * i128::from(i + 1) / i128::from(n);
    let jitter = rng.below(2 * JITTER_US as u64 + 1) as i64 - JITTER_US;
    let at_us = (END_US - SPAN_US + along as i64 + jitter).min(END_US);
    // The draw that once made a random run id per event (so every other
    // field keeps its value): now which run goes on, and how long a new one is.
    let run = runs.next_run(rng.below(100_000_000));
    let event = enforcement_event_in_run(
        keys.tenant(pair),
        keys.rule(pair),
        Action::ALL[usize::from(action)],
        run_id(run),
        |n| rng.below(n),
    )
    .at_us(at_us);
    let written = Written {
        pair: pair as u32,
        action,
        at_us,
        run,
    };
    (written, event)
}

pub fn store_options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// One store on disk, with its two saved checkpoints and what was written.
pub struct DataSet {
    /// The bench directory: the store and whatever a bench keeps beside it
    /// (removed when the data set is dropped).
    #[allow(
        dead_code,
        reason = "reads.rs keeps its SQLite file here; replay.rs only holds it"
    )]
    pub root: tempfile::TempDir,
    pub store: PathBuf,
    pub fresh_checkpoint: PathBuf,
    pub stale_checkpoint: PathBuf,
    pub keys: Keys,
    pub events: u64,
    /// Where the stale checkpoint stands: 1% of the events behind.
    pub stale_offset: u64,
    pub written: Vec<Written>,
    runs: Runs,
    /// Writing the events and closing twice (the stale checkpoint's copy
    /// included, the fresh one's not).
    pub build_time: Duration,
}

impl DataSet {
    /// Where the store keeps its trigger-stats checkpoint.
    pub fn checkpoint(&self) -> PathBuf {
        self.store.join("projections").join("trigger_stats.ckpt")
    }

    /// The pairs that have at least one event.
    pub fn pairs_seen(&self) -> BTreeSet<u64> {
        self.written.iter().map(|w| u64::from(w.pair)).collect()
    }

    fn append_events(&mut self, store: &Store, rng: &mut Rng, end: u64) {
        let mut i = self.written.len() as u64;
        while i < end {
            let mut batch = store.begin();
            let stop = (i + BUILD_BATCH as u64).min(end);
            for j in i..stop {
                let (written, event) = make_event(rng, &mut self.runs, self.keys, j, self.events);
                self.written.push(written);
                batch.record(event).expect("valid event");
            }
            batch.commit_blocking().expect("commit");
            i = stop;
        }
    }
}

/// Writes `events` events drawn from `rng` into a new store under a
/// directory named `prefix…`: 99% of them, a close (its checkpoint saved as
/// the stale one), the last 1%, a close (saved as the fresh one). `seed` is
/// only named in a failure.
pub fn build(prefix: &str, keys: Keys, events: u64, mut rng: Rng, seed: u64) -> DataSet {
    let root = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create bench directory");
    let mut ds = DataSet {
        store: root.path().join("store"),
        fresh_checkpoint: root.path().join("fresh.ckpt"),
        stale_checkpoint: root.path().join("stale.ckpt"),
        root,
        keys,
        events,
        stale_offset: events - events.div_ceil(100),
        written: Vec::with_capacity(events as usize),
        runs: Runs::default(),
        build_time: Duration::ZERO,
    };
    let started = Instant::now();
    for end in [ds.stale_offset, events] {
        let store = Store::open(&ds.store, store_options()).expect("open store");
        ds.append_events(&store, &mut rng, end);
        store.close().expect("close");
        drop(store);
        if end == events {
            ds.build_time = started.elapsed();
            std::fs::copy(ds.checkpoint(), &ds.fresh_checkpoint).expect("save fresh checkpoint");
        } else {
            std::fs::copy(ds.checkpoint(), &ds.stale_checkpoint).expect("save stale checkpoint");
        }
    }
    assert_eq!(
        Log::open_read_only(&ds.store).expect("log").next_offset(),
        events,
        "seed {seed}"
    );
    ds
}

/// Brute-force statistics of one pair as of `as_of_us` with the default
/// 30-day window: (window count, last, total, by action).
fn brute_force(written: &[Written], pair: u64, as_of_us: i64) -> (u64, Option<i64>, u64, [u64; 4]) {
    let mut window = 0;
    let mut last = None::<i64>;
    let mut total = 0;
    let mut by_action = [0u64; 4];
    for w in written.iter().filter(|w| u64::from(w.pair) == pair) {
        if w.at_us > as_of_us {
            continue;
        }
        total += 1;
        last = Some(last.map_or(w.at_us, |l| l.max(w.at_us)));
        if w.at_us > as_of_us - WINDOW_US {
            window += 1;
            by_action[usize::from(w.action)] += 1;
        }
    }
    (window, last, total, by_action)
}

/// Fails the bench unless `stats` is the brute-force answer for `pair`.
pub fn check_stats(stats: &RuleStats, written: &[Written], pair: u64, seed: u64) {
    assert_eq!(
        (
            stats.trigger_count,
            stats.last_triggered_at_us,
            stats.total_count,
            stats.by_action
        ),
        brute_force(written, pair, stats.as_of_us),
        "pair {pair} as of {}, seed {seed}",
        stats.as_of_us
    );
}

// ------------------------------------------------------- passes over the log

/// The files in `dir` with this extension, sorted.
pub fn files_with(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list store")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    files
}

/// Frames and checksums only: every payload read, none decoded.
pub fn read_pass(log: &Log) -> Duration {
    let started = Instant::now();
    let mut bytes = 0usize;
    for record in log.read_from(0).expect("read") {
        bytes += black_box(record.expect("record")).payload.len();
    }
    black_box(bytes);
    started.elapsed()
}

/// (b'): every frame visited in place by `Log::scan` (checksums verified,
/// no copy, no decode), the log split at its middle offset over `threads`
/// threads (1 or 2). Checks that each of the log's `records` was visited
/// once.
pub fn scan_pass(log: &Log, threads: u64, records: u64, seed: u64) -> Duration {
    let end = log.next_offset();
    let started = Instant::now();
    let part = |from: u64, to: u64| -> (u64, u64) {
        let (mut frames, mut bytes) = (0u64, 0u64);
        log.scan(from, i64::MIN..=i64::MAX, |frame| {
            if frame.offset >= to {
                return ControlFlow::Break(());
            }
            frames += 1;
            bytes += black_box(frame.payload).len() as u64;
            ControlFlow::Continue(())
        })
        .expect("scan");
        (frames, bytes)
    };
    let middle = end / 2;
    let (frames, bytes) = if threads == 1 {
        part(0, end)
    } else {
        std::thread::scope(|scope| {
            let older = scope.spawn(|| part(0, middle));
            let newer = part(middle, end);
            let older = older.join().expect("scan thread");
            (older.0 + newer.0, older.1 + newer.1)
        })
    };
    let elapsed = started.elapsed();
    black_box(bytes);
    assert_eq!(frames, records, "scan on {threads} threads, seed {seed}");
    elapsed
}

/// The bare pass: read and decode every payload, fold nothing.
pub fn decode_pass(log: &Log) -> Duration {
    let started = Instant::now();
    for record in log.read_from(0).expect("read") {
        let r = record.expect("record");
        black_box(payload::decode(r.offset, r.timestamp_us, &r.payload).expect("payload"));
    }
    started.elapsed()
}

/// The whole log folded into a new projection.
pub fn replay(log: &Log) -> TriggerStats {
    let mut projection = TriggerStats::default();
    for record in log.read_from(0).expect("read") {
        let r = record.expect("record");
        let entry = payload::decode(r.offset, r.timestamp_us, &r.payload).expect("payload");
        projection.apply(r.offset, &entry);
    }
    projection
}

/// The whole log folded by keys (issue 17), the way the store's catch-up
/// folds a keys-only projection: frames visited in place by `Log::scan`,
/// each event viewed (`event_view::view`, no decode, no allocation) and
/// folded with `apply_keys`. On 2 threads the log is split at its middle
/// offset (the store splits at the segment base nearest it), each half folded into a fresh projection and
/// the later merged into the earlier (`merge_later`): the same numbers as
/// an in-order fold, and the same state once both are normalized.
#[allow(
    dead_code,
    reason = "a pass of benches/replay.rs; benches/reads.rs includes this module too"
)]
pub fn replay_by_keys(log: &Log, threads: u64) -> TriggerStats {
    replay_by_keys_timed(log, threads).0
}

/// [`replay_by_keys`], with the time its merge took (zero on 1 thread).
pub fn replay_by_keys_timed(log: &Log, threads: u64) -> (TriggerStats, Duration) {
    let end = log.next_offset();
    let fold = |from: u64, to: u64| -> TriggerStats {
        let mut projection = TriggerStats::default();
        let mut block = KeyBlock::with_capacity(BLOCK);
        log.scan(from, i64::MIN..=i64::MAX, |frame| {
            if frame.offset >= to {
                return ControlFlow::Break(());
            }
            match enforcelog::event_view::view(frame.offset, frame.timestamp_us, frame.payload)
                .expect("payload")
            {
                enforcelog::EntryView::Event(keys) => {
                    block.push(&keys);
                    if block.is_full() {
                        block.fold_into(&mut projection);
                    }
                }
                enforcelog::EntryView::Other => {
                    block.fold_into(&mut projection);
                    let entry = payload::decode(frame.offset, frame.timestamp_us, frame.payload)
                        .expect("payload");
                    projection.apply(frame.offset, &entry);
                }
            }
            ControlFlow::Continue(())
        })
        .expect("scan");
        block.fold_into(&mut projection);
        projection
    };
    let split = end / 2;
    match threads {
        2 if split > 0 => std::thread::scope(|scope| {
            let older = scope.spawn(|| fold(0, split));
            let newer = fold(split, end);
            let mut older = older.join().expect("replay thread");
            let merging = Instant::now();
            if older.merge_later(Box::new(newer)).is_err() {
                panic!("TriggerStats merges");
            }
            (older, merging.elapsed())
        }),
        _ => (fold(0, end), Duration::ZERO),
    }
}

/// [`replay_by_keys`], timed without dropping the projection.
#[allow(
    dead_code,
    reason = "a pass of benches/replay.rs; benches/reads.rs includes this module too"
)]
pub fn replay_by_keys_pass(log: &Log, threads: u64) -> KeysPass {
    let started = Instant::now();
    let (projection, merge) = replay_by_keys_timed(log, threads);
    let elapsed = started.elapsed();
    black_box(projection);
    KeysPass { elapsed, merge }
}

/// What one [`replay_by_keys_pass`] took, and of that its merge.
#[derive(Debug, Clone, Copy)]
pub struct KeysPass {
    pub elapsed: Duration,
    pub merge: Duration,
}

/// The CPU of [`replay_by_keys`] without the read, in parts: records are
/// read in chunks of 65,536 (untimed), then the view of each record of the
/// chunk is timed (its keys collected), then `apply_keys` of those keys
/// one by one, then (into another projection) `apply_keys_block` of them
/// in blocks of [`BLOCK`]. The projection thread's cost per event once
/// frames are handed out without copies, and where it goes.
#[allow(
    dead_code,
    reason = "a pass of benches/replay.rs; benches/reads.rs includes this module too"
)]
pub fn fold_by_keys_pass(log: &Log) -> FoldTimes {
    let mut projection = TriggerStats::default();
    let mut one_by_one = TriggerStats::default();
    let mut times = FoldTimes::default();
    let mut chunk = Vec::with_capacity(1 << 16);
    let mut records = log.read_from(0).expect("read");
    loop {
        chunk.clear();
        chunk.extend(records.by_ref().take(1 << 16).map(|r| r.expect("record")));
        if chunk.is_empty() {
            break;
        }
        let mut keys = Vec::with_capacity(chunk.len());
        let started = Instant::now();
        for r in &chunk {
            match enforcelog::event_view::view(r.offset, r.timestamp_us, &r.payload) {
                Ok(enforcelog::EntryView::Event(k)) => keys.push(k),
                _ => panic!("the data set holds events only"),
            }
        }
        let viewed = Instant::now();
        for k in &keys {
            one_by_one.apply_keys(k);
        }
        let applied = Instant::now();
        for block in keys.chunks(BLOCK) {
            projection.apply_keys_block(block);
        }
        times.block += applied.elapsed();
        times.apply += applied - viewed;
        times.view += viewed - started;
    }
    assert!(
        one_by_one.snapshot() == projection.snapshot(),
        "apply_keys_block folds as apply_keys does"
    );
    black_box(projection);
    times
}

/// Events per `apply_keys_block` call, as the store's projection host
/// hands them out.
pub const BLOCK: usize = 256;

/// The two parts of [`fold_by_keys_pass`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FoldTimes {
    /// `event_view::view` of every record.
    pub view: Duration,
    /// `apply_keys` of every event's keys, one by one.
    pub apply: Duration,
    /// `apply_keys_block` of the same keys, in blocks of [`BLOCK`].
    pub block: Duration,
}

#[allow(
    dead_code,
    reason = "a pass of benches/replay.rs; benches/reads.rs includes this module too"
)]
impl FoldTimes {
    /// The projection's CPU: the view, and the fold in blocks (the host's
    /// way).
    pub fn total(self) -> Duration {
        self.view + self.block
    }

    /// The faster of two runs (by their total).
    pub fn best(self, other: FoldTimes) -> FoldTimes {
        if other.total() < self.total() {
            other
        } else {
            self
        }
    }

    /// Nanoseconds per event of (total, view, block, one by one).
    pub fn ns_per_event(self, events: u64) -> (f64, f64, f64, f64) {
        let ns = |d: Duration| d.as_secs_f64() * 1e9 / events as f64;
        (
            ns(self.total()),
            ns(self.view),
            ns(self.block),
            ns(self.apply),
        )
    }
}

/// [`replay`], timed without dropping the projection.
pub fn replay_pass(log: &Log) -> Duration {
    let started = Instant::now();
    let projection = replay(log);
    let elapsed = started.elapsed();
    black_box(projection);
    elapsed
}

/// Feeds `projection` `rules` × `per_rule` events, all inside the 30-day
/// window as of `END_US`: what the memory figures are measured on.
pub fn feed(projection: &mut TriggerStats, keys: Keys, rules: u64, per_rule: u64) {
    let step = (WINDOW_US - 1) / per_rule as i64;
    let mut offset = 0;
    for pair in 0..rules {
        for j in 0..per_rule {
            let event = StoredEvent {
                offset,
                tenant_id: keys.tenant(pair),
                rule_id: keys.rule(pair),
                action: Action::ALL[(j % 4) as usize],
                run_id: None,
                details: None,
                enforced_at_us: END_US - WINDOW_US + 1 + j as i64 * step,
            };
            projection.apply(offset, &Entry::Event(event));
            offset += 1;
        }
    }
}

// ----------------------------------------------------------------- opening

/// Which checkpoint the store finds when it opens.
#[derive(Debug, Clone, Copy)]
pub enum Checkpoint {
    Fresh,
    Stale,
    Missing,
}

pub fn place_checkpoint(ds: &DataSet, which: Checkpoint) {
    let target = ds.checkpoint();
    match which {
        Checkpoint::Fresh => {
            std::fs::copy(&ds.fresh_checkpoint, &target).expect("place checkpoint");
        }
        Checkpoint::Stale => {
            std::fs::copy(&ds.stale_checkpoint, &target).expect("place checkpoint");
        }
        Checkpoint::Missing => {
            for path in files_with(target.parent().expect("dir"), "ckpt") {
                std::fs::remove_file(path).expect("delete checkpoint");
            }
        }
    }
}

/// Median time from `Store::open` to the first answered `stats`, over
/// `repeats` opens; round `r` asks of pair `r * pair_stride`, and each
/// answer is checked.
pub fn time_open(
    ds: &DataSet,
    which: Checkpoint,
    repeats: usize,
    pair_stride: u64,
    seed: u64,
) -> Duration {
    let mut times = Vec::new();
    for round in 0..repeats {
        place_checkpoint(ds, which);
        let pair = (round as u64 * pair_stride) % ds.keys.pairs();
        let started = Instant::now();
        let store = Store::open(&ds.store, store_options()).expect("open store");
        let stats = store
            .stats(&ds.keys.tenant(pair), &ds.keys.rule(pair), Some(END_US))
            .expect("stats");
        times.push(started.elapsed());
        assert_eq!(stats.offset, ds.events, "{which:?}, seed {seed}");
        check_stats(&stats, &ds.written, pair, seed);
        store.close().expect("close");
    }
    median(&mut times)
}

// ---------------------------------------------------------------- figures

pub fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Percentiles of a set of latencies.
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
}

pub fn percentiles(mut times: Vec<Duration>) -> Latency {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}

pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

pub fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

/// The snapshot of [`replay`] as folded in order, and once normalized
/// (what a merged replay by keys must equal).
#[allow(
    dead_code,
    reason = "a check of benches/replay.rs and benches/reads.rs, not of every includer"
)]
pub fn normalized_replay(log: &Log) -> (Vec<u8>, Vec<u8>) {
    let mut projection = replay(log);
    let in_order = projection.snapshot();
    projection.normalize();
    (in_order, projection.snapshot())
}

/// The snapshot of `projection`, normalized first when `normalize`.
#[allow(
    dead_code,
    reason = "a check of benches/replay.rs and benches/reads.rs, not of every includer"
)]
pub fn normalized_if(mut projection: TriggerStats, normalize: bool) -> Vec<u8> {
    if normalize {
        projection.normalize();
    }
    projection.snapshot()
}
