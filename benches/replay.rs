//! Replay and projection figures: how fast the trigger statistics are built
//! from the log, how long a store takes to open and answer its first query
//! with and without a checkpoint, how long one `stats` query takes, and how
//! much memory the projection holds per rule and per event.
//!
//! A plain program (no criterion): each figure is measured by hand and one
//! summary block prints them all. `cargo bench --bench replay` runs the full
//! size (1,000,000 events; `ENFORCELOG_BENCH_EVENTS=N` changes that). Run
//! without `--bench` (as `cargo test --all-targets` runs it) it does a tiny
//! smoke run with the same steps and checks, in well under two seconds.
//!
//! The data set: events of 1,000 (tenant, rule) pairs (100 tenants with 10
//! rules each), four actions, a run id and a `details` object, about 200
//! bytes of payload each, spread over 60 days ending at a fixed instant
//! (`END_US`) and shuffled in time by up to five minutes either way, as
//! hosts with skewed clocks would send them. With a 30-day window, about
//! half the events are folded. It is written with `Durability::None` under
//! `CARGO_TARGET_TMPDIR` (`target/tmp`, the project's disk, not a tmpfs),
//! and read back while still in the page cache: the figures are CPU costs
//! of decoding and folding, not of the disk.
//!
//! Every query asks as of `END_US` (the watermark), where the projection is
//! exact; one fallback query asks as of 45 days earlier, which the store
//! answers from the log. Answers are checked against a brute-force count of
//! the events written, so the bench also fails when a figure would be wrong.
//!
//! Memory is measured with a counting global allocator: live bytes
//! requested from the system allocator (the allocator's own per-block
//! overhead is not included).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use enforcelog::projection::Projection;
use enforcelog::{
    payload, Action, Durability, Entry, Event, Log, LogOptions, RuleStats, Store, StoreOptions,
    StoredEvent, TriggerStats,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::counted;

const TENANTS: u64 = 100;
const RULES_PER_TENANT: u64 = 10;
const PAIRS: u64 = TENANTS * RULES_PER_TENANT;
const DAY_US: i64 = 24 * 3600 * 1_000_000;
/// The newest instant of the data set (2026-10-01T00:00:00Z): every query
/// asks as of it.
const END_US: i64 = 1_790_812_800_000_000;
/// How far back the data set reaches.
const SPAN_US: i64 = 60 * DAY_US;
/// Clock skew: each event moves by up to this much either way.
const JITTER_US: i64 = 5 * 60 * 1_000_000;
/// Events per committed batch while building the store.
const BUILD_BATCH: usize = 1_000;
/// Default seed of the event stream (`ENFORCELOG_SEED` overrides it).
const DEFAULT_SEED: u64 = 0x5eed_0005;

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    full: bool,
    events: u64,
    /// Timed repetitions of the replay passes and of each open.
    repeats: usize,
    stats_queries: usize,
    tenant_queries: usize,
    /// Memory run (ii): rules × in-window events per rule.
    mem_rules: u64,
    mem_events_per_rule: u64,
}

impl Plan {
    fn new(full: bool) -> Plan {
        if full {
            let events = std::env::var("ENFORCELOG_BENCH_EVENTS")
                .ok()
                .map(|v| {
                    v.replace('_', "")
                        .parse::<u64>()
                        .expect("ENFORCELOG_BENCH_EVENTS is a number")
                })
                .unwrap_or(1_000_000)
                .max(100);
            Plan {
                full,
                events,
                repeats: 3,
                stats_queries: 100_000,
                tenant_queries: 10_000,
                mem_rules: 10,
                mem_events_per_rule: 100_000,
            }
        } else {
            Plan {
                full,
                events: 3_000,
                repeats: 1,
                stats_queries: 2_000,
                tenant_queries: 200,
                mem_rules: 10,
                mem_events_per_rule: 2_000,
            }
        }
    }
}

/// SplitMix64: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("ENFORCELOG_SEED")
        .ok()
        .map(|v| v.parse().expect("ENFORCELOG_SEED is a u64"))
        .unwrap_or(DEFAULT_SEED)
}

fn tenant_of(pair: u64) -> String {
    format!("tenant-{:03}", pair / RULES_PER_TENANT)
}

fn rule_of(pair: u64) -> String {
    format!("rule-{:04}", pair)
}

/// What the brute-force check needs of one event.
#[derive(Debug, Clone, Copy)]
struct Written {
    pair: u16,
    action: u8,
    at_us: i64,
}

/// The `i`-th event of `n`: its pair, action and time, and the event.
fn make_event(rng: &mut Rng, i: u64, n: u64) -> (Written, Event) {
    let pair = rng.below(PAIRS);
    let action = rng.below(4) as u8;
    let along = i128::from(SPAN_US) * i128::from(i + 1) / i128::from(n);
    let jitter = rng.below(2 * JITTER_US as u64 + 1) as i64 - JITTER_US;
    let at_us = (END_US - SPAN_US + along as i64 + jitter).min(END_US);
    let event = Event::new(
        tenant_of(pair),
        rule_of(pair),
        Action::ALL[usize::from(action)],
    )
    .with_run_id(format!("run-{:08}", rng.below(100_000_000)))
    .with_details(enforcelog::details!({
        "tool": "shell-exec",
        "step": rng.below(500),
        "reason": "budget of 50000 tokens exceeded at this step",
        "host": format!("worker-{:02}.eu-west-1.internal", rng.below(64)),
        "policy_version": "2026-09-14.3",
    }))
    .at_us(at_us);
    let written = Written {
        pair: pair as u16,
        action,
        at_us,
    };
    (written, event)
}

fn store_options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// The bench directory and the files it keeps beside the store.
struct BenchDir {
    _root: tempfile::TempDir,
    store: PathBuf,
    fresh_checkpoint: PathBuf,
    stale_checkpoint: PathBuf,
}

impl BenchDir {
    fn checkpoint(&self) -> PathBuf {
        self.store.join("projections").join("trigger_stats.ckpt")
    }
}

/// What building the store produced.
struct Built {
    written: Vec<Written>,
    build_time: Duration,
    payload_bytes: u64,
    log_bytes: u64,
    stale_offset: u64,
}

fn append_events(
    store: &Store,
    rng: &mut Rng,
    range: std::ops::Range<u64>,
    n: u64,
    built: &mut Built,
) {
    let mut i = range.start;
    while i < range.end {
        let mut batch = store.begin();
        let end = (i + BUILD_BATCH as u64).min(range.end);
        for j in i..end {
            let (written, event) = make_event(rng, j, n);
            built.written.push(written);
            batch.record(event).expect("valid event");
        }
        batch.commit_blocking().expect("commit");
        i = end;
    }
}

impl Built {
    /// The pairs that have at least one event.
    fn pairs_seen(&self) -> std::collections::BTreeSet<u64> {
        self.written.iter().map(|w| u64::from(w.pair)).collect()
    }
}

/// Writes the store: 99% of the events, a close (checkpoint, saved as the
/// stale one), the last 1%, a close (saved as the fresh checkpoint).
fn build(plan: &Plan, seed: u64) -> (BenchDir, Built) {
    let root = tempfile::Builder::new()
        .prefix("enforcelog-replay-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create bench directory");
    let bench = BenchDir {
        store: root.path().join("store"),
        fresh_checkpoint: root.path().join("fresh.ckpt"),
        stale_checkpoint: root.path().join("stale.ckpt"),
        _root: root,
    };
    let n = plan.events;
    let stale_offset = n - n.div_ceil(100);
    let mut rng = Rng(seed);
    let mut built = Built {
        written: Vec::with_capacity(n as usize),
        build_time: Duration::ZERO,
        payload_bytes: 0,
        log_bytes: 0,
        stale_offset,
    };
    let started = Instant::now();
    let store = Store::open(&bench.store, store_options()).expect("open store");
    append_events(&store, &mut rng, 0..stale_offset, n, &mut built);
    store.close().expect("close");
    drop(store);
    std::fs::copy(bench.checkpoint(), &bench.stale_checkpoint).expect("save stale checkpoint");
    let store = Store::open(&bench.store, store_options()).expect("reopen store");
    append_events(&store, &mut rng, stale_offset..n, n, &mut built);
    store.close().expect("close");
    drop(store);
    built.build_time = started.elapsed();
    std::fs::copy(bench.checkpoint(), &bench.fresh_checkpoint).expect("save fresh checkpoint");
    built.log_bytes = std::fs::read_dir(&bench.store)
        .expect("list store")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let log = Log::open_read_only(&bench.store).expect("open log");
    assert_eq!(log.next_offset(), n, "seed {seed}");
    built.payload_bytes = log
        .read_from(0)
        .expect("read")
        .map(|r| r.expect("record").payload.len() as u64)
        .sum();
    (bench, built)
}

/// Brute-force statistics of one pair as of `as_of_us` with the default
/// 30-day window: (window count, last, total, by action).
fn brute_force(written: &[Written], pair: u64, as_of_us: i64) -> (u64, Option<i64>, u64, [u64; 4]) {
    let mut count = 0;
    let mut last = None::<i64>;
    let mut total = 0;
    let mut by_action = [0u64; 4];
    for w in written.iter().filter(|w| u64::from(w.pair) == pair) {
        if w.at_us > as_of_us {
            continue;
        }
        total += 1;
        last = Some(last.map_or(w.at_us, |l| l.max(w.at_us)));
        if w.at_us > as_of_us - 30 * DAY_US {
            count += 1;
            by_action[usize::from(w.action)] += 1;
        }
    }
    (count, last, total, by_action)
}

fn check_stats(stats: &RuleStats, written: &[Written], pair: u64, seed: u64) {
    let (count, last, total, by_action) = brute_force(written, pair, stats.as_of_us);
    assert_eq!(
        (
            stats.trigger_count,
            stats.last_triggered_at_us,
            stats.total_count,
            stats.by_action
        ),
        (count, last, total, by_action),
        "pair {pair} as of {}, seed {seed}",
        stats.as_of_us
    );
}

/// The three passes over the log, each the best of `repeats`: read only,
/// read and decode, read, decode and apply. Then the projection of one more
/// (untimed) replay, with the heap bytes it holds.
struct Passes {
    read: Duration,
    decode: Duration,
    replay: Duration,
    projection: TriggerStats,
    projection_heap_bytes: usize,
}

fn read_pass(log: &Log) -> Duration {
    let started = Instant::now();
    let mut bytes = 0usize;
    for record in log.read_from(0).expect("read") {
        bytes += black_box(record.expect("record")).payload.len();
    }
    black_box(bytes);
    started.elapsed()
}

fn decode_pass(log: &Log) -> Duration {
    let started = Instant::now();
    for record in log.read_from(0).expect("read") {
        let r = record.expect("record");
        let entry = payload::decode(r.offset, r.timestamp_us, &r.payload).expect("payload");
        black_box(entry);
    }
    started.elapsed()
}

fn replay(log: &Log) -> TriggerStats {
    let mut projection = TriggerStats::default();
    for record in log.read_from(0).expect("read") {
        let r = record.expect("record");
        let entry = payload::decode(r.offset, r.timestamp_us, &r.payload).expect("payload");
        projection.apply(r.offset, &entry);
    }
    projection
}

fn replay_pass(log: &Log) -> Duration {
    let started = Instant::now();
    let projection = replay(log);
    let elapsed = started.elapsed();
    black_box(projection);
    elapsed
}

fn passes(plan: &Plan, dir: &Path) -> Passes {
    let log = Log::open_read_only(dir).expect("open log");
    let mut best = Passes {
        read: Duration::MAX,
        decode: Duration::MAX,
        replay: Duration::MAX,
        projection: TriggerStats::default(),
        projection_heap_bytes: 0,
    };
    for _ in 0..plan.repeats {
        best.read = best.read.min(read_pass(&log));
        best.decode = best.decode.min(decode_pass(&log));
        best.replay = best.replay.min(replay_pass(&log));
    }
    // Once more, untimed, counting what the projection keeps.
    let (projection, heap) = counted(|| replay(&log));
    best.projection = projection;
    best.projection_heap_bytes = heap.max(0) as usize;
    best
}

/// Which checkpoint the store finds when it opens.
#[derive(Debug, Clone, Copy)]
enum Checkpoint {
    Fresh,
    Stale,
    Missing,
}

fn place_checkpoint(bench: &BenchDir, which: Checkpoint) {
    let target = bench.checkpoint();
    match which {
        Checkpoint::Fresh => {
            std::fs::copy(&bench.fresh_checkpoint, &target).expect("place checkpoint");
        }
        Checkpoint::Stale => {
            std::fs::copy(&bench.stale_checkpoint, &target).expect("place checkpoint");
        }
        Checkpoint::Missing => {
            for entry in std::fs::read_dir(target.parent().expect("dir")).expect("list") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|x| x == "ckpt") {
                    std::fs::remove_file(path).expect("delete checkpoint");
                }
            }
        }
    }
}

/// Median time of `Store::open` + the first `stats` answer.
fn time_open(
    plan: &Plan,
    bench: &BenchDir,
    built: &Built,
    which: Checkpoint,
    seed: u64,
) -> Duration {
    let mut times = Vec::new();
    for round in 0..plan.repeats {
        place_checkpoint(bench, which);
        let pair = (round as u64 * 7) % PAIRS;
        let started = Instant::now();
        let store = Store::open(&bench.store, store_options()).expect("open store");
        let stats = store
            .stats(&tenant_of(pair), &rule_of(pair), Some(END_US))
            .expect("stats");
        times.push(started.elapsed());
        assert_eq!(stats.offset, plan.events, "{which:?}, seed {seed}");
        check_stats(&stats, &built.written, pair, seed);
        store.close().expect("close");
    }
    median(&mut times)
}

/// Time to open the log alone (recovery of the active segment, no
/// projections): the floor under every store open.
fn time_log_open(plan: &Plan, dir: &Path) -> Duration {
    let mut times = Vec::new();
    for _ in 0..plan.repeats {
        let started = Instant::now();
        let log = Log::open(dir, store_options().log).expect("open log");
        times.push(started.elapsed());
        log.close().expect("close");
    }
    median(&mut times)
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Percentiles of a set of latencies.
struct Latency {
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

fn percentiles(mut times: Vec<Duration>) -> Latency {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Latency {
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    }
}

struct Queries {
    stats: Latency,
    tenant: Latency,
    fallback: Duration,
    rebuild: Duration,
}

fn queries(plan: &Plan, bench: &BenchDir, built: &Built, seed: u64) -> Queries {
    place_checkpoint(bench, Checkpoint::Fresh);
    let store = Store::open(&bench.store, store_options()).expect("open store");
    let mut rng = Rng(seed ^ 0x51a7);
    let keys: Vec<(String, String)> = (0..PAIRS).map(|p| (tenant_of(p), rule_of(p))).collect();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t:03}")).collect();
    let pairs_seen = built.pairs_seen();
    // Warm up, and check a sample of answers.
    for pair in (0..PAIRS).step_by(97) {
        let (t, r) = &keys[pair as usize];
        let stats = store.stats(t, r, Some(END_US)).expect("stats");
        check_stats(&stats, &built.written, pair, seed);
    }
    let mut times = Vec::with_capacity(plan.stats_queries);
    for _ in 0..plan.stats_queries {
        let (t, r) = &keys[rng.below(PAIRS) as usize];
        let started = Instant::now();
        let stats = store.stats(t, r, Some(END_US)).expect("stats");
        times.push(started.elapsed());
        black_box(stats);
    }
    let stats_latency = percentiles(times);
    let mut times = Vec::with_capacity(plan.tenant_queries);
    for _ in 0..plan.tenant_queries {
        let tenant = &tenants[rng.below(TENANTS) as usize];
        let started = Instant::now();
        let rules = store.stats_for_tenant(tenant, Some(END_US)).expect("stats");
        times.push(started.elapsed());
        let want = pairs_seen
            .iter()
            .filter(|&&p| tenant_of(p) == *tenant)
            .count();
        assert_eq!(rules.len(), want, "{tenant}, seed {seed}");
    }
    let tenant = percentiles(times);
    // A window reaching into folded history: answered from the log.
    let old = END_US - 45 * DAY_US;
    let started = Instant::now();
    let stats = store
        .stats(&keys[3].0, &keys[3].1, Some(old))
        .expect("stats");
    let fallback = started.elapsed();
    check_stats(&stats, &built.written, 3, seed);
    let started = Instant::now();
    let reached = store.rebuild_projections().expect("rebuild");
    let rebuild = started.elapsed();
    assert_eq!(reached, plan.events, "seed {seed}");
    store.close().expect("close");
    Queries {
        stats: stats_latency,
        tenant,
        fallback,
        rebuild,
    }
}

/// Heap bytes of a projection fed `rules` × `per_rule` events, all inside
/// the 30-day window; also its snapshot length.
fn heap_of(rules: u64, per_rule: u64) -> (usize, usize, TriggerStats) {
    let (projection, heap) = counted(|| {
        let mut projection = TriggerStats::default();
        feed(&mut projection, rules, per_rule);
        projection
    });
    let snapshot = projection.snapshot().len();
    (heap.max(0) as usize, snapshot, projection)
}

fn feed(projection: &mut TriggerStats, rules: u64, per_rule: u64) {
    let window = 30 * DAY_US;
    let step = (window - 1) / per_rule as i64;
    let mut offset = 0;
    for pair in 0..rules {
        for j in 0..per_rule {
            let event = StoredEvent {
                offset,
                tenant_id: tenant_of(pair),
                rule_id: rule_of(pair),
                action: Action::ALL[(j % 4) as usize],
                run_id: None,
                details: None,
                enforced_at_us: END_US - window + 1 + j as i64 * step,
            };
            projection.apply(offset, &Entry::Event(event));
            offset += 1;
        }
    }
}

struct Memory {
    per_rule: f64,
    per_event: f64,
    snapshot_per_rule: f64,
    snapshot_per_event: f64,
}

fn memory(plan: &Plan, seed: u64) -> Memory {
    let (rule_heap, rule_snapshot, p) = heap_of(PAIRS, 1);
    assert_eq!(p.rule_count() as u64, PAIRS, "seed {seed}");
    drop(p);
    let rules = plan.mem_rules;
    let per_rule = plan.mem_events_per_rule;
    let (heap, snapshot, p) = heap_of(rules, per_rule);
    assert_eq!(
        p.recent_event_count() as u64,
        rules * per_rule,
        "seed {seed}"
    );
    drop(p);
    let events = (rules * per_rule) as f64;
    let per_rule_bytes = rule_heap as f64 / PAIRS as f64;
    let snapshot_per_rule = rule_snapshot as f64 / PAIRS as f64;
    Memory {
        per_rule: per_rule_bytes,
        per_event: (heap as f64 - rules as f64 * per_rule_bytes) / events,
        snapshot_per_rule,
        snapshot_per_event: (snapshot as f64 - rules as f64 * snapshot_per_rule) / events,
    }
}

fn rate(events: u64, time: Duration) -> String {
    let per_s = events as f64 / time.as_secs_f64();
    if per_s >= 1e6 {
        format!("{:.2} M events/s", per_s / 1e6)
    } else {
        format!("{:.0} k events/s", per_s / 1e3)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let plan = Plan::new(args.iter().any(|a| a == "--bench"));
    let seed = seed();
    let started = Instant::now();
    println!(
        "replay bench: {} events, {} mode, seed {seed} (ENFORCELOG_SEED to replay)",
        plan.events,
        if plan.full { "full" } else { "smoke" }
    );

    let (bench, built) = build(&plan, seed);
    let n = plan.events;
    let passes = passes(&plan, &bench.store);
    let projection = &passes.projection;
    assert_eq!(
        projection.rule_count(),
        built.pairs_seen().len(),
        "seed {seed}"
    );
    for pair in (0..PAIRS).step_by(13) {
        match projection.answer(&tenant_of(pair), &rule_of(pair), END_US, n) {
            enforcelog::projection::Answer::Exact(stats) => {
                check_stats(&stats, &built.written, pair, seed)
            }
            other => panic!("pair {pair}: {other:?}, seed {seed}"),
        }
    }
    let log_open = time_log_open(&plan, &bench.store);
    let open_fresh = time_open(&plan, &bench, &built, Checkpoint::Fresh, seed);
    let open_stale = time_open(&plan, &bench, &built, Checkpoint::Stale, seed);
    let open_none = time_open(&plan, &bench, &built, Checkpoint::Missing, seed);
    let queries = queries(&plan, &bench, &built, seed);
    let checkpoint_bytes = std::fs::metadata(&bench.fresh_checkpoint).map_or(0, |m| m.len());
    let memory = memory(&plan, seed);

    let recent = projection.recent_event_count();
    let ratio = passes.decode.as_secs_f64() / passes.replay.as_secs_f64();
    println!();
    println!(
        "summary (replay bench, {} mode, seed {seed})",
        if plan.full { "full" } else { "smoke" }
    );
    println!(
        "  data set            {n} events, {PAIRS} (tenant, rule) pairs over {TENANTS} tenants, \
         avg payload {:.0} B ({:.0} B per event in the log), log {:.1} MiB, built in {:.1} s",
        built.payload_bytes as f64 / n as f64,
        built.log_bytes as f64 / n as f64,
        built.log_bytes as f64 / (1 << 20) as f64,
        built.build_time.as_secs_f64()
    );
    println!(
        "  (c) bare read       {:>10}  {}  (checksums only)",
        ms(passes.read),
        rate(n, passes.read)
    );
    println!(
        "  (b) read + decode   {:>10}  {}  (checksums + payload decode)",
        ms(passes.decode),
        rate(n, passes.decode)
    );
    println!(
        "  (a) full replay     {:>10}  {}  (decode + TriggerStats::apply)",
        ms(passes.replay),
        rate(n, passes.replay)
    );
    println!(
        "      replay / bare (b) = {:.0}%   replay / read (c) = {:.0}%   (goal: replay >= 70% of bare)",
        ratio * 100.0,
        passes.read.as_secs_f64() / passes.replay.as_secs_f64() * 100.0
    );
    println!(
        "      store.rebuild_projections() {}  {}",
        ms(queries.rebuild),
        rate(n, queries.rebuild)
    );
    println!(
        "  open + first stats  fresh checkpoint {}, stale (1% = {} events behind) {}, no checkpoint {}; \
         Log::open alone {}",
        ms(open_fresh),
        n - built.stale_offset,
        ms(open_stale),
        ms(open_none),
        ms(log_open)
    );
    println!(
        "  stats(t, r)         p50 {}  p99 {}  p99.9 {}  max {}  ({} queries, random keys)",
        us(queries.stats.p50),
        us(queries.stats.p99),
        us(queries.stats.p999),
        us(queries.stats.max),
        plan.stats_queries
    );
    println!(
        "  stats_for_tenant    p50 {}  p99 {}  p99.9 {}  max {}  ({} queries, {RULES_PER_TENANT} rules each)",
        us(queries.tenant.p50),
        us(queries.tenant.p99),
        us(queries.tenant.p999),
        us(queries.tenant.max),
        plan.tenant_queries
    );
    println!(
        "  fallback query      {} (as of 45 days before the end: window reaches folded history, answered from the log)",
        ms(queries.fallback)
    );
    println!(
        "  memory              {:.0} B per rule (1,000 rules x 1 event), {:.2} B per in-window event \
         ({} rules x {} events)",
        memory.per_rule, memory.per_event, plan.mem_rules, plan.mem_events_per_rule
    );
    println!(
        "                      replayed projection: {:.2} MiB heap for {} rules and {recent} in-window events; \
         checkpoint {:.2} MiB",
        passes.projection_heap_bytes as f64 / (1 << 20) as f64,
        projection.rule_count(),
        checkpoint_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  snapshot size       {:.0} B per rule, {:.2} B per in-window event",
        memory.snapshot_per_rule, memory.snapshot_per_event
    );
    println!(
        "  bench time          {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
