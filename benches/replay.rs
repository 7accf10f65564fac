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
use std::path::Path;
use std::time::{Duration, Instant};

use enforcelog::projection::Projection;
use enforcelog::{Log, Store, TriggerStats};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/dataset.rs"]
mod dataset;
#[path = "support/events.rs"]
mod events;

use counting_alloc::counted;
use dataset::{
    build, check_stats, decode_pass, feed, median, ms, normalized_if, normalized_replay,
    percentiles, place_checkpoint, read_pass, replay, replay_by_keys_pass, replay_pass, scan_pass,
    store_options, us, Checkpoint, DataSet, Keys, Latency, Rng, DAY_US, END_US,
};

const TENANTS: u64 = 100;
const RULES_PER_TENANT: u64 = 10;
const PAIRS: u64 = TENANTS * RULES_PER_TENANT;
/// The data set's keys: four-digit rule ids.
const KEYS: Keys = Keys {
    tenants: TENANTS,
    rules_per_tenant: RULES_PER_TENANT,
    rule_digits: 4,
};
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

/// Bytes of the data set: its payloads and its segment files.
struct Sizes {
    payload_bytes: u64,
    log_bytes: u64,
}

fn sizes(ds: &DataSet) -> Sizes {
    let log_bytes = std::fs::read_dir(&ds.store)
        .expect("list store")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum();
    let log = Log::open_read_only(&ds.store).expect("open log");
    let payload_bytes = log
        .read_from(0)
        .expect("read")
        .map(|r| r.expect("record").payload.len() as u64)
        .sum();
    Sizes {
        payload_bytes,
        log_bytes,
    }
}

/// The three passes over the log, each the best of `repeats`: read only,
/// read and decode, read, decode and apply. Then the projection of one more
/// (untimed) replay, with the heap bytes it holds.
struct Passes {
    read: Duration,
    /// (b') `Log::scan`, frames + checksums in place, on 1 and 2 threads.
    scan_1: Duration,
    scan_2: Duration,
    decode: Duration,
    replay: Duration,
    replay_by_keys_1: Duration,
    replay_by_keys_2: Duration,
    /// Of the best 2-thread pass, its merge.
    replay_by_keys_2_merge: Duration,
    fold_by_keys: dataset::FoldTimes,
    projection: TriggerStats,
    projection_heap_bytes: usize,
}

fn passes(plan: &Plan, dir: &Path) -> Passes {
    let log = Log::open_read_only(dir).expect("open log");
    let mut best = Passes {
        read: Duration::MAX,
        scan_1: Duration::MAX,
        scan_2: Duration::MAX,
        decode: Duration::MAX,
        replay: Duration::MAX,
        replay_by_keys_1: Duration::MAX,
        replay_by_keys_2: Duration::MAX,
        replay_by_keys_2_merge: Duration::ZERO,
        fold_by_keys: dataset::FoldTimes {
            view: Duration::MAX,
            apply: Duration::ZERO,
            block: Duration::ZERO,
        },
        projection: TriggerStats::default(),
        projection_heap_bytes: 0,
    };
    for _ in 0..plan.repeats {
        best.read = best.read.min(read_pass(&log));
        let records = log.next_offset();
        best.scan_1 = best.scan_1.min(scan_pass(&log, 1, records, 0));
        best.scan_2 = best.scan_2.min(scan_pass(&log, 2, records, 0));
        best.decode = best.decode.min(decode_pass(&log));
        best.replay = best.replay.min(replay_pass(&log));
        best.replay_by_keys_1 = best
            .replay_by_keys_1
            .min(replay_by_keys_pass(&log, 1).elapsed);
        let two = replay_by_keys_pass(&log, 2);
        if two.elapsed < best.replay_by_keys_2 {
            best.replay_by_keys_2 = two.elapsed;
            best.replay_by_keys_2_merge = two.merge;
        }
        best.fold_by_keys = best.fold_by_keys.best(dataset::fold_by_keys_pass(&log));
    }
    // The folds agree to the byte.
    let (in_order, normalized) = normalized_replay(&log);
    for threads in [1, 2] {
        let by_keys = dataset::replay_by_keys(&log, threads);
        let want = if threads == 1 { &in_order } else { &normalized };
        assert!(
            *want == normalized_if(by_keys, threads == 2),
            "replay by keys on {threads} threads and by decode differ"
        );
    }
    // Once more, untimed, counting what the projection keeps.
    let (projection, heap) = counted(|| replay(&log));
    best.projection = projection;
    best.projection_heap_bytes = heap.max(0) as usize;
    best
}

/// Median time of `Store::open` + the first `stats` answer.
fn time_open(plan: &Plan, ds: &DataSet, which: Checkpoint, seed: u64) -> Duration {
    dataset::time_open(ds, which, plan.repeats, 7, seed)
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
struct Queries {
    stats: Latency,
    tenant: Latency,
    fallback: Duration,
    rebuild: Duration,
}

fn queries(plan: &Plan, ds: &DataSet, seed: u64) -> Queries {
    place_checkpoint(ds, Checkpoint::Fresh);
    let store = Store::open(&ds.store, store_options()).expect("open store");
    let mut rng = Rng(seed ^ 0x51a7);
    let keys: Vec<(String, String)> = (0..PAIRS).map(|p| (KEYS.tenant(p), KEYS.rule(p))).collect();
    let tenants: Vec<String> = (0..TENANTS).map(|t| format!("tenant-{t:03}")).collect();
    let pairs_seen = ds.pairs_seen();
    // Warm up, and check a sample of answers.
    for pair in (0..PAIRS).step_by(97) {
        let (t, r) = &keys[pair as usize];
        let stats = store.stats(t, r, Some(END_US)).expect("stats");
        check_stats(&stats, &ds.written, pair, seed);
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
            .filter(|&&p| KEYS.tenant(p) == *tenant)
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
    check_stats(&stats, &ds.written, 3, seed);
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
        feed(&mut projection, KEYS, rules, per_rule);
        projection
    });
    let snapshot = projection.snapshot().len();
    (heap.max(0) as usize, snapshot, projection)
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let plan = Plan::new(args.iter().any(|a| a == "--bench"));
    let seed = dataset::seed(DEFAULT_SEED);
    let started = Instant::now();
    println!(
        "replay bench: {} events, {} mode, seed {seed} (ENFORCELOG_SEED to replay)",
        plan.events,
        if plan.full { "full" } else { "smoke" }
    );

    let ds = build("enforcelog-replay-", KEYS, plan.events, Rng(seed), seed);
    let sizes = sizes(&ds);
    let n = plan.events;
    let passes = passes(&plan, &ds.store);
    let projection = &passes.projection;
    assert_eq!(
        projection.rule_count(),
        ds.pairs_seen().len(),
        "seed {seed}"
    );
    for pair in (0..PAIRS).step_by(13) {
        match projection.answer(&KEYS.tenant(pair), &KEYS.rule(pair), END_US, n) {
            enforcelog::projection::Answer::Exact(stats) => {
                check_stats(&stats, &ds.written, pair, seed)
            }
            other => panic!("pair {pair}: {other:?}, seed {seed}"),
        }
    }
    let log_open = time_log_open(&plan, &ds.store);
    let open_fresh = time_open(&plan, &ds, Checkpoint::Fresh, seed);
    let open_stale = time_open(&plan, &ds, Checkpoint::Stale, seed);
    let open_none = time_open(&plan, &ds, Checkpoint::Missing, seed);
    let queries = queries(&plan, &ds, seed);
    let checkpoint_bytes = std::fs::metadata(&ds.fresh_checkpoint).map_or(0, |m| m.len());
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
        sizes.payload_bytes as f64 / n as f64,
        sizes.log_bytes as f64 / n as f64,
        sizes.log_bytes as f64 / (1 << 20) as f64,
        ds.build_time.as_secs_f64()
    );
    let pass = |name: &str, time: Duration, what: &str| {
        println!("  {name:<19} {:>10}  {}  ({what})", ms(time), rate(n, time));
    };
    pass("(c) bare read", passes.read, "checksums only");
    pass(
        "(b') scan, 1 thread",
        passes.scan_1,
        "checksums, frames in place",
    );
    pass(
        "(b') scan, 2 thr",
        passes.scan_2,
        "checksums, frames in place",
    );
    pass(
        "(b) read + decode",
        passes.decode,
        "checksums + payload decode",
    );
    pass(
        "(a) full replay",
        passes.replay,
        "decode + TriggerStats::apply",
    );
    pass(
        "(a') replay by keys",
        passes.replay_by_keys_1,
        "scan + view + TriggerStats::apply_keys, 1 thread",
    );
    pass(
        "(a') by keys, 2 thr",
        passes.replay_by_keys_2,
        &format!(
            "the same on 2 threads, then merge_later: {:.1} ms",
            passes.replay_by_keys_2_merge.as_secs_f64() * 1e3
        ),
    );
    let (fold_ns, view_ns, block_ns, apply_ns) = passes.fold_by_keys.ns_per_event(n);
    println!(
        "      of which view + fold {}  {}  ({fold_ns:.0} ns per event: view {view_ns:.0}, \
         apply_keys_block {block_ns:.0}; apply_keys one by one {apply_ns:.0}; the read excluded)",
        ms(passes.fold_by_keys.total()),
        rate(n, passes.fold_by_keys.total()),
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
        n - ds.stale_offset,
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
