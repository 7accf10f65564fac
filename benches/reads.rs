//! The read side beside SQLite and beside the machine's own limit, in one
//! run: replay, cold open, queries and footprint (issue 7, items 2 to 5).
//!
//! A plain program (no criterion): each figure is measured by hand, checked
//! against a brute-force answer, and one summary table prints them all with
//! the ratios and goals. The figures are also written as JSON to
//! `target/bench-results/reads.json`, which `cargo run --example
//! bench_charts` draws.
//!
//! - `cargo bench --bench reads`: the full run, 1,000,000 events (about 40
//!   s on a 2-core VM). With `ENFORCELOG_BENCH_10M=1` it also builds a
//!   10,000,000-event store (about 2 GB on disk under `target/tmp`, about
//!   a minute more) for the replay and cold-open figures.
//! - Run without `--bench` (as `cargo test --all-targets` runs it), with
//!   `ENFORCELOG_BENCH_QUICK=1` or as `cargo bench --bench reads -- --quick`:
//!   a smoke run of 3,000 events with the same
//!   steps and checks, in about a second; its JSON goes to
//!   `target/bench-results/reads-quick.json` so it never overwrites a full
//!   run's figures.
//!
//! The data set (the same shape as `benches/replay.rs`, with ten times the
//! rules): events of 10,000 (tenant, rule) pairs (100 tenants with 100
//! rules each), four actions, a run id and a `details` object, about 180
//! bytes of payload, spread over 60 days ending at `END_US` and shuffled by
//! up to five minutes either way. It is written with `Durability::None`
//! under `CARGO_TARGET_TMPDIR` (the project's disk) and read back while in
//! the page cache, so the figures are CPU costs, not disk costs; "cold open"
//! means a new `Store` in this process, not an empty page cache.
//!
//! The three replay passes: (c) a bare read of the segment files through
//! `mmap` (summing the bytes: the floor of any reader), (b) the bare pass
//! (`Log::read_from`, checksums, payload decode, nothing folded) and (a) the
//! replay (b, plus `TriggerStats::apply`). SQLite gets the same rows, read
//! back from the log, in one transaction, WAL mode, with the indexes a user
//! would create for the three queries (`(tenant_id, rule_id, enforced_at,
//! action)`, `(tenant_id, enforced_at)` and `(run_id)`). Run ids repeat
//! (1–20 events per run, 64 runs in progress at once), so "all events of
//! one run" has real answers.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use enforcelog::{payload, Action, Entry, Log, Query, RuleStats, Store, StoredEvent, TriggerStats};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
#[path = "support/dataset.rs"]
mod dataset;
#[path = "support/events.rs"]
mod events;

use counting_alloc::counted;
use dataset::{
    build, check_stats, decode_pass, feed, files_with, fold_by_keys_pass, ms, normalized_if,
    normalized_replay, percentiles, place_checkpoint, read_pass, replay, replay_by_keys,
    replay_by_keys_pass, replay_pass, run_id, scan_pass, store_options, us, Checkpoint, DataSet,
    FoldTimes, Keys, Latency, Rng, DAY_US, END_US, SPAN_US, WINDOW_US,
};

const DEFAULT_SEED: u64 = 0x5eed_0007;
/// Stores larger than this are replayed and opened once, not three times.
const BIG_STORE_EVENTS: u64 = 2_000_000;

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    full: bool,
    /// Store sizes; queries, SQLite and footprint use the first one.
    sizes: Vec<u64>,
    tenants: u64,
    rules_per_tenant: u64,
    repeats: usize,
    stats_queries: usize,
    range_queries: usize,
    /// Memory: rules with one event each, and rules x in-window events.
    mem_rules: u64,
    mem_busy_rules: u64,
    mem_events_per_rule: u64,
}

impl Plan {
    fn new(full: bool, ten_million: bool) -> Plan {
        if full {
            let mut sizes = vec![1_000_000];
            if ten_million {
                sizes.push(10_000_000);
            }
            Plan {
                full,
                sizes,
                tenants: 100,
                rules_per_tenant: 100,
                repeats: 3,
                stats_queries: 100_000,
                range_queries: 200,
                mem_rules: 10_000,
                mem_busy_rules: 10,
                mem_events_per_rule: 100_000,
            }
        } else {
            Plan {
                full,
                sizes: vec![3_000],
                tenants: 10,
                rules_per_tenant: 10,
                repeats: 1,
                stats_queries: 2_000,
                range_queries: 20,
                mem_rules: 1_000,
                mem_busy_rules: 10,
                mem_events_per_rule: 2_000,
            }
        }
    }

    fn pairs(&self) -> u64 {
        self.keys().pairs()
    }

    /// The key shape of this run's data set (five-digit rule ids).
    fn keys(&self) -> Keys {
        Keys {
            tenants: self.tenants,
            rules_per_tenant: self.rules_per_tenant,
            rule_digits: 5,
        }
    }

    fn repeats_for(&self, events: u64) -> usize {
        if events > BIG_STORE_EVENTS {
            1
        } else {
            self.repeats
        }
    }

    fn mode(&self) -> &'static str {
        if self.full {
            "full"
        } else {
            "quick"
        }
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0")
}

// ---------------------------------------------------------------- replay

/// The best time of each pass over the whole log.
struct Passes {
    mmap_read: Duration,
    log_read: Duration,
    /// (b') `Log::scan`, frames + checksums in place, on 1 and 2 threads.
    scan_1: Duration,
    scan_2: Duration,
    decode: Duration,
    replay: Duration,
    /// (a') the store's catch-up path: scan + view + `apply_keys`, on 1
    /// and 2 threads (merged).
    replay_keys_1: Duration,
    replay_keys_2: Duration,
    /// Of the best 2-thread pass, its merge.
    replay_keys_2_merge: Duration,
    /// view + `apply_keys` alone, records read beforehand: the fold's CPU.
    fold_keys: FoldTimes,
    projection: TriggerStats,
    projection_heap_bytes: usize,
}

/// (c): maps each segment file and sums its bytes, eight at a time.
fn mmap_pass(dir: &Path) -> (Duration, u64) {
    let started = Instant::now();
    let mut sum = 0u64;
    let mut bytes = 0u64;
    for path in files_with(dir, "log") {
        let file = std::fs::File::open(&path).expect("open segment");
        // SAFETY: the store is closed and this process owns its directory:
        // nothing writes to or truncates the file while it is mapped.
        let map = unsafe { memmap2::Mmap::map(&file) }.expect("map segment");
        let words = map.chunks_exact(8);
        let tail: u64 = words.remainder().iter().map(|&b| u64::from(b)).sum();
        sum = words.fold(sum.wrapping_add(tail), |s, w| {
            s.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")))
        });
        bytes += map.len() as u64;
    }
    black_box(sum);
    (started.elapsed(), bytes)
}

fn passes(plan: &Plan, ds: &DataSet, seed: u64) -> Passes {
    let log = Log::open_read_only(&ds.store).expect("open log");
    let mut best = Passes {
        mmap_read: Duration::MAX,
        log_read: Duration::MAX,
        scan_1: Duration::MAX,
        scan_2: Duration::MAX,
        decode: Duration::MAX,
        replay: Duration::MAX,
        replay_keys_1: Duration::MAX,
        replay_keys_2: Duration::MAX,
        replay_keys_2_merge: Duration::ZERO,
        fold_keys: FoldTimes {
            view: Duration::MAX,
            apply: Duration::ZERO,
            block: Duration::ZERO,
        },
        projection: TriggerStats::default(),
        projection_heap_bytes: 0,
    };
    for _ in 0..plan.repeats_for(ds.events) {
        best.mmap_read = best.mmap_read.min(mmap_pass(&ds.store).0);
        best.log_read = best.log_read.min(read_pass(&log));
        let records = log.next_offset();
        best.scan_1 = best.scan_1.min(scan_pass(&log, 1, records, seed));
        best.scan_2 = best.scan_2.min(scan_pass(&log, 2, records, seed));
        best.decode = best.decode.min(decode_pass(&log));
        best.replay = best.replay.min(replay_pass(&log));
        best.replay_keys_1 = best.replay_keys_1.min(replay_by_keys_pass(&log, 1).elapsed);
        let two = replay_by_keys_pass(&log, 2);
        if two.elapsed < best.replay_keys_2 {
            best.replay_keys_2 = two.elapsed;
            best.replay_keys_2_merge = two.merge;
        }
        best.fold_keys = best.fold_keys.best(fold_by_keys_pass(&log));
    }
    // Once more, untimed, counting what the projection keeps, and checked;
    // the folds by keys agree with it to the byte.
    let (projection, heap) = counted(|| replay(&log));
    let (in_order, normalized) = normalized_replay(&log);
    for threads in [1, 2] {
        let by_keys = replay_by_keys(&log, threads);
        let want = if threads == 1 { &in_order } else { &normalized };
        assert!(
            *want == normalized_if(by_keys, threads == 2),
            "replay by keys on {threads} threads differs from replay by decode, seed {seed}"
        );
    }
    assert_eq!(
        projection.rule_count(),
        ds.pairs_seen().len(),
        "seed {seed}"
    );
    let pairs = plan.pairs();
    for pair in (0..pairs).step_by((pairs / 5).max(1) as usize) {
        match projection.answer(
            &ds.keys.tenant(pair),
            &ds.keys.rule(pair),
            END_US,
            ds.events,
        ) {
            enforcelog::projection::Answer::Exact(stats) => {
                check_stats(&stats, &ds.written, pair, seed)
            }
            other => panic!("pair {pair}: {other:?}, seed {seed}"),
        }
    }
    best.projection = projection;
    best.projection_heap_bytes = heap.max(0) as usize;
    best
}

// ------------------------------------------------------------- cold open

/// Median time from `Store::open` to the first answered `stats`. Opens
/// from a checkpoint are cheap and repeated even on a big store; an open
/// without one is a full replay.
fn time_open(plan: &Plan, ds: &DataSet, which: Checkpoint, seed: u64) -> Duration {
    let repeats = match which {
        Checkpoint::Missing => plan.repeats_for(ds.events),
        Checkpoint::Fresh | Checkpoint::Stale => plan.repeats,
    };
    dataset::time_open(ds, which, repeats, 7919, seed)
}

struct ColdOpen {
    fresh: Duration,
    stale: Duration,
    none: Duration,
}

fn cold_open(plan: &Plan, ds: &DataSet, seed: u64) -> ColdOpen {
    let open = ColdOpen {
        fresh: time_open(plan, ds, Checkpoint::Fresh, seed),
        stale: time_open(plan, ds, Checkpoint::Stale, seed),
        none: time_open(plan, ds, Checkpoint::Missing, seed),
    };
    // Leave the store as built, for the queries and the footprint.
    place_checkpoint(ds, Checkpoint::Fresh);
    open
}

// --------------------------------------------------------------- queries

impl Latency {
    fn to_json(&self) -> Value {
        json!({
            "p50_us": self.p50.as_secs_f64() * 1e6,
            "p99_us": self.p99.as_secs_f64() * 1e6,
            "p999_us": self.p999.as_secs_f64() * 1e6,
            "max_us": self.max.as_secs_f64() * 1e6,
        })
    }
}

/// The keys and windows both engines are asked, in the same order.
struct Workload {
    stats_pairs: Vec<u64>,
    /// (pair whose tenant is asked, window start).
    ranges: Vec<(u64, i64)>,
    /// Which run is asked: the run of the event at this draw modulo the
    /// events written (so every run asked has events).
    run_picks: Vec<u64>,
}

fn workload(plan: &Plan, seed: u64) -> Workload {
    let mut rng = Rng(seed ^ 0x51a7);
    let stats_pairs = (0..plan.stats_queries)
        .map(|_| rng.below(plan.pairs()))
        .collect();
    let starts = (SPAN_US - DAY_US) as u64;
    let ranges = (0..plan.range_queries)
        .map(|_| {
            let pair = rng.below(plan.pairs());
            (pair, END_US - SPAN_US + rng.below(starts) as i64)
        })
        .collect();
    let run_picks = (0..plan.range_queries)
        .map(|_| rng.below(u64::MAX))
        .collect();
    Workload {
        stats_pairs,
        ranges,
        run_picks,
    }
}

struct LogQueries {
    stats: Latency,
    range: Latency,
    /// (stats of every 1,000th key, events of each range query): what
    /// SQLite must answer too.
    stats_sample: Vec<(u64, RuleStats)>,
    range_counts: Vec<usize>,
    /// All events of one run (`Query::all_tenants().run_id(..)`).
    run: Latency,
    /// (run asked, events returned).
    run_counts: Vec<(u32, usize)>,
    /// The first query that reads every sealed segment: it builds their key
    /// indexes (they are built lazily, off the open path).
    keys_build: Duration,
    /// Bytes of the key index files it wrote.
    keys_bytes: u64,
}

fn log_queries(ds: &DataSet, work: &Workload, seed: u64) -> LogQueries {
    let store = Store::open(&ds.store, store_options()).expect("open store");
    let keys: Vec<(String, String)> = work
        .stats_pairs
        .iter()
        .map(|&p| (ds.keys.tenant(p), ds.keys.rule(p)))
        .collect();
    for (i, (t, r)) in keys.iter().enumerate().step_by(997) {
        let stats = store.stats(t, r, Some(END_US)).expect("stats");
        check_stats(&stats, &ds.written, work.stats_pairs[i], seed);
    }
    let mut times = Vec::with_capacity(keys.len());
    let mut stats_sample = Vec::new();
    for (i, (t, r)) in keys.iter().enumerate() {
        let started = Instant::now();
        let stats = store.stats(t, r, Some(END_US)).expect("stats");
        times.push(started.elapsed());
        if i % 1000 == 0 {
            stats_sample.push((work.stats_pairs[i], stats));
        } else {
            black_box(stats);
        }
    }
    let stats = percentiles(times);
    // A tenant nobody has: every sealed segment is looked at, none read.
    let started = Instant::now();
    let page = store
        .query(&Query::tenant("key-index-warm-up"))
        .expect("query");
    let keys_build = started.elapsed();
    assert!(page.events.is_empty());
    let keys_bytes = store_disk(&ds.store).keys;
    let mut times = Vec::with_capacity(work.ranges.len());
    let mut range_counts = Vec::with_capacity(work.ranges.len());
    for &(pair, start) in &work.ranges {
        let query = Query::tenant(ds.keys.tenant(pair))
            .since_us(start)
            .until_us(start + DAY_US)
            .limit(100_000);
        let started = Instant::now();
        let page = store.query(&query).expect("query");
        times.push(started.elapsed());
        assert_eq!(page.next_offset, None, "one page, seed {seed}");
        range_counts.push(page.events.len());
    }
    let range = percentiles(times);
    let mut times = Vec::with_capacity(work.run_picks.len());
    let mut run_counts = Vec::with_capacity(work.run_picks.len());
    for &pick in &work.run_picks {
        let run = ds.written[(pick % ds.written.len() as u64) as usize].run;
        let query = Query::all_tenants().run_id(run_id(run)).limit(100_000);
        let started = Instant::now();
        let page = store.query(&query).expect("query");
        times.push(started.elapsed());
        let want = ds.written.iter().filter(|w| w.run == run).count();
        assert_eq!(page.events.len(), want, "run {run}, seed {seed}");
        assert_eq!(page.next_offset, None, "one page, seed {seed}");
        run_counts.push((run, page.events.len()));
    }
    store.close().expect("close");
    LogQueries {
        stats,
        range,
        stats_sample,
        range_counts,
        run: percentiles(times),
        run_counts,
        keys_build,
        keys_bytes,
    }
}

// ---------------------------------------------------------------- SQLite

const SQLITE_SCHEMA: &str = "
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,  -- the enforcelog offset
        tenant_id   TEXT NOT NULL,
        rule_id     TEXT NOT NULL,
        action      INTEGER NOT NULL,     -- 0..3, Action::ALL order
        run_id      TEXT,
        details     TEXT,                 -- the JSON object
        enforced_at INTEGER NOT NULL      -- µs since the epoch
    );
    CREATE INDEX events_rule_time ON events (tenant_id, rule_id, enforced_at, action);
    CREATE INDEX events_tenant_time ON events (tenant_id, enforced_at);
    CREATE INDEX events_run ON events (run_id);
";

const SQL_COUNT: &str = "SELECT COUNT(*) FROM events \
     WHERE tenant_id = ?1 AND rule_id = ?2 AND enforced_at > ?3 AND enforced_at <= ?4";
const SQL_MAX: &str = "SELECT MAX(enforced_at) FROM events \
     WHERE tenant_id = ?1 AND rule_id = ?2 AND enforced_at <= ?3";
/// Everything `stats` answers, in one statement.
const SQL_STATS: &str = "SELECT \
       COUNT(*) FILTER (WHERE enforced_at > ?3), \
       COUNT(*) FILTER (WHERE enforced_at > ?3 AND action = 0), \
       COUNT(*) FILTER (WHERE enforced_at > ?3 AND action = 1), \
       COUNT(*) FILTER (WHERE enforced_at > ?3 AND action = 2), \
       COUNT(*) FILTER (WHERE enforced_at > ?3 AND action = 3), \
       MAX(enforced_at), COUNT(*) \
     FROM events WHERE tenant_id = ?1 AND rule_id = ?2 AND enforced_at <= ?4";
const SQL_RANGE: &str = "SELECT id, tenant_id, rule_id, action, run_id, details, enforced_at \
     FROM events WHERE tenant_id = ?1 AND enforced_at >= ?2 AND enforced_at < ?3";
const SQL_RUN: &str = "SELECT id, tenant_id, rule_id, action, run_id, details, enforced_at \
     FROM events WHERE run_id = ?1";

struct Sqlite {
    conn: Connection,
    path: PathBuf,
    build_time: Duration,
}

fn action_code(action: Action) -> i64 {
    Action::ALL
        .iter()
        .position(|&a| a == action)
        .expect("known") as i64
}

/// The same rows, read back from the log, in one transaction.
fn sqlite_build(ds: &DataSet) -> Sqlite {
    let path = ds.root.path().join("events.sqlite");
    let mut conn = Connection::open(&path).expect("open sqlite");
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .expect("WAL");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("synchronous");
    conn.execute_batch(SQLITE_SCHEMA).expect("schema");
    let log = Log::open_read_only(&ds.store).expect("open log");
    let started = Instant::now();
    let tx = conn.transaction().expect("begin");
    {
        let mut insert = tx
            .prepare("INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .expect("prepare");
        for record in log.read_from(0).expect("read") {
            let r = record.expect("record");
            let Entry::Event(e) =
                payload::decode(r.offset, r.timestamp_us, &r.payload).expect("payload")
            else {
                panic!("the bench writes no gap markers");
            };
            let details = e.details.map(|d| Value::Object(d).to_string());
            insert
                .execute(params![
                    e.offset as i64,
                    e.tenant_id,
                    e.rule_id,
                    action_code(e.action),
                    e.run_id,
                    details,
                    e.enforced_at_us
                ])
                .expect("insert");
        }
    }
    tx.commit().expect("commit");
    let build_time = started.elapsed();
    Sqlite {
        conn,
        path,
        build_time,
    }
}

/// Fails the bench unless SQLite plans `sql` with `index`.
fn check_plan(conn: &Connection, sql: &str, index: &str, args: usize) -> String {
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut stmt = conn.prepare(&explain).expect("explain");
    let nulls: Vec<Option<i64>> = vec![None; args];
    let plan: Vec<String> = stmt
        .query_map(rusqlite::params_from_iter(nulls), |row| row.get(3))
        .expect("plan")
        .map(|r| r.expect("row"))
        .collect();
    let plan = plan.join("; ");
    assert!(plan.contains(index), "{sql}: {plan}");
    plan
}

struct SqliteQueries {
    count: Latency,
    max: Latency,
    stats: Latency,
    range: Latency,
    run: Latency,
    plans: Vec<String>,
}

fn timed<R>(times: &mut Vec<Duration>, f: impl FnOnce() -> R) -> R {
    let started = Instant::now();
    let result = f();
    times.push(started.elapsed());
    result
}

fn sqlite_stats_queries(
    db: &Sqlite,
    ds: &DataSet,
    work: &Workload,
    seen: &LogQueries,
    seed: u64,
) -> [Latency; 3] {
    let mut count = db.conn.prepare(SQL_COUNT).expect("prepare");
    let mut max = db.conn.prepare(SQL_MAX).expect("prepare");
    let mut stats = db.conn.prepare(SQL_STATS).expect("prepare");
    let lo = END_US - WINDOW_US;
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut sample = seen.stats_sample.iter();
    for (i, &pair) in work.stats_pairs.iter().enumerate() {
        let (t, r) = (ds.keys.tenant(pair), ds.keys.rule(pair));
        let n: i64 = timed(&mut times[0], || {
            count.query_row(params![t, r, lo, END_US], |row| row.get(0))
        })
        .expect("count");
        let last: Option<i64> = timed(&mut times[1], || {
            max.query_row(params![t, r, END_US], |row| row.get(0))
        })
        .expect("max");
        let all: [i64; 7] = timed(&mut times[2], || {
            stats.query_row(params![t, r, lo, END_US], |row| {
                let mut all = [0i64; 7];
                for (k, v) in all.iter_mut().enumerate() {
                    *v = row.get::<_, Option<i64>>(k)?.unwrap_or(0);
                }
                Ok(all)
            })
        })
        .expect("stats");
        if i % 1000 == 0 {
            let (p, want) = sample.next().expect("sampled");
            assert_eq!(*p, pair, "seed {seed}");
            let by_action = want.by_action.map(|c| c as i64);
            assert_eq!(
                (n, last, all[0], [all[1], all[2], all[3], all[4]], all[6]),
                (
                    want.trigger_count as i64,
                    want.last_triggered_at_us,
                    want.trigger_count as i64,
                    by_action,
                    want.total_count as i64
                ),
                "SQLite and enforcelog disagree on pair {pair}, seed {seed}"
            );
        }
    }
    times.map(percentiles)
}

/// A row of `SQL_RANGE` or `SQL_RUN` as the value `Store::query` returns.
fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let details: Option<String> = row.get(5)?;
    Ok(StoredEvent {
        offset: row.get::<_, i64>(0)? as u64,
        tenant_id: row.get(1)?,
        rule_id: row.get(2)?,
        action: Action::ALL[row.get::<_, usize>(3)?],
        run_id: row.get(4)?,
        details: details.map(|d| serde_json::from_str(&d).expect("JSON")),
        enforced_at_us: row.get(6)?,
    })
}

fn sqlite_run_queries(db: &Sqlite, seen: &LogQueries) -> Latency {
    let mut by_run = db.conn.prepare(SQL_RUN).expect("prepare");
    let mut times = Vec::with_capacity(seen.run_counts.len());
    for &(run, want) in &seen.run_counts {
        let run = run_id(run);
        let events: Vec<StoredEvent> = timed(&mut times, || {
            by_run
                .query_map(params![run], stored_event)
                .expect("run")
                .collect::<Result<_, _>>()
                .expect("rows")
        });
        assert_eq!(events.len(), want, "{run}");
    }
    percentiles(times)
}

fn sqlite_range_queries(db: &Sqlite, ds: &DataSet, work: &Workload, seen: &LogQueries) -> Latency {
    let mut range = db.conn.prepare(SQL_RANGE).expect("prepare");
    let mut times = Vec::with_capacity(work.ranges.len());
    for (&(pair, start), &want) in work.ranges.iter().zip(&seen.range_counts) {
        let tenant = ds.keys.tenant(pair);
        // Rows become the same values `Store::query` returns.
        let events: Vec<StoredEvent> = timed(&mut times, || {
            range
                .query_map(params![tenant, start, start + DAY_US], |row| {
                    let details: Option<String> = row.get(5)?;
                    Ok(StoredEvent {
                        offset: row.get::<_, i64>(0)? as u64,
                        tenant_id: row.get(1)?,
                        rule_id: row.get(2)?,
                        action: Action::ALL[row.get::<_, usize>(3)?],
                        run_id: row.get(4)?,
                        details: details.map(|d| serde_json::from_str(&d).expect("JSON")),
                        enforced_at_us: row.get(6)?,
                    })
                })
                .expect("range")
                .collect::<Result<_, _>>()
                .expect("rows")
        });
        assert_eq!(events.len(), want, "{tenant} from {start}");
    }
    percentiles(times)
}

fn sqlite_queries(
    db: &Sqlite,
    ds: &DataSet,
    work: &Workload,
    seen: &LogQueries,
    seed: u64,
) -> SqliteQueries {
    let plans = vec![
        check_plan(&db.conn, SQL_COUNT, "events_rule_time", 4),
        check_plan(&db.conn, SQL_MAX, "events_rule_time", 3),
        check_plan(&db.conn, SQL_STATS, "events_rule_time", 4),
        check_plan(&db.conn, SQL_RANGE, "events_tenant_time", 3),
        check_plan(&db.conn, SQL_RUN, "events_run", 1),
    ];
    let [count, max, stats] = sqlite_stats_queries(db, ds, work, seen, seed);
    SqliteQueries {
        count,
        max,
        stats,
        range: sqlite_range_queries(db, ds, work, seen),
        run: sqlite_run_queries(db, seen),
        plans,
    }
}

// ------------------------------------------------------------- footprint

/// Bytes on disk of a store, by kind of file.
#[derive(Debug, Default)]
struct Disk {
    log: u64,
    idx: u64,
    checkpoint: u64,
    /// Key index files (`keys/*.keys`).
    keys: u64,
    other: u64,
}

impl Disk {
    fn total(&self) -> u64 {
        self.log + self.idx + self.checkpoint + self.keys + self.other
    }
}

fn store_disk(dir: &Path) -> Disk {
    let mut disk = Disk::default();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("list") {
            let path = entry.expect("entry").path();
            let meta = std::fs::metadata(&path).expect("metadata");
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let slot = match path.extension().and_then(|x| x.to_str()) {
                Some("log") => &mut disk.log,
                Some("idx") => &mut disk.idx,
                Some("ckpt") => &mut disk.checkpoint,
                Some("keys") => &mut disk.keys,
                _ => &mut disk.other,
            };
            *slot += meta.len();
        }
    }
    disk
}

/// SQLite's database and WAL file sizes after a truncating checkpoint.
fn sqlite_disk(db: &Sqlite) -> (u64, u64) {
    db.conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
            row.get::<_, i64>(0)
        })
        .expect("checkpoint");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = db.path.clone().into_os_string();
    wal.push("-wal");
    (size(&db.path), size(Path::new(&wal)))
}

struct Memory {
    per_rule: f64,
    per_event: f64,
}

fn heap_of(keys: Keys, rules: u64, per_rule: u64) -> usize {
    let (projection, heap) = counted(|| {
        let mut projection = TriggerStats::default();
        feed(&mut projection, keys, rules, per_rule);
        projection
    });
    assert_eq!(projection.recent_event_count() as u64, rules * per_rule);
    heap.max(0) as usize
}

fn memory(plan: &Plan) -> Memory {
    let keys = plan.keys();
    let per_rule = heap_of(keys, plan.mem_rules, 1) as f64 / plan.mem_rules as f64;
    let (rules, n) = (plan.mem_busy_rules, plan.mem_events_per_rule);
    let heap = heap_of(keys, rules, n) as f64;
    Memory {
        per_rule,
        per_event: (heap - rules as f64 * per_rule) / (rules * n) as f64,
    }
}

// ----------------------------------------------------------------- report

/// Everything measured on one store size.
struct SizeReport {
    events: u64,
    pairs_seen: usize,
    build_time: Duration,
    segment_bytes: u64,
    passes: Passes,
    open: ColdOpen,
    stale_behind: u64,
    disk: Disk,
}

impl SizeReport {
    fn replay_over_decode(&self) -> f64 {
        self.passes.decode.as_secs_f64() / self.passes.replay.as_secs_f64()
    }

    fn replay_over_mmap(&self) -> f64 {
        self.passes.mmap_read.as_secs_f64() / self.passes.replay.as_secs_f64()
    }

    fn fresh_over_replay(&self) -> f64 {
        self.open.fresh.as_secs_f64() / self.passes.replay.as_secs_f64()
    }

    fn to_json(&self) -> Value {
        let n = self.events as f64;
        let p = &self.passes;
        let per_s = |d: Duration| n / d.as_secs_f64();
        json!({
            "events": self.events,
            "rules": self.pairs_seen,
            "build_s": self.build_time.as_secs_f64(),
            "segment_bytes": self.segment_bytes,
            "replay": {
                "mmap_read_s": p.mmap_read.as_secs_f64(),
                "log_read_s": p.log_read.as_secs_f64(),
                "decode_s": p.decode.as_secs_f64(),
                "replay_s": p.replay.as_secs_f64(),
                "mmap_read_events_per_s": per_s(p.mmap_read),
                "log_read_events_per_s": per_s(p.log_read),
                "scan_1_thread_s": p.scan_1.as_secs_f64(),
                "scan_2_threads_s": p.scan_2.as_secs_f64(),
                "scan_1_thread_events_per_s": per_s(p.scan_1),
                "scan_2_threads_events_per_s": per_s(p.scan_2),
                "decode_events_per_s": per_s(p.decode),
                "replay_events_per_s": per_s(p.replay),
                "replay_keys_1_thread_s": p.replay_keys_1.as_secs_f64(),
                "replay_keys_2_threads_s": p.replay_keys_2.as_secs_f64(),
                "replay_keys_2_threads_merge_s": p.replay_keys_2_merge.as_secs_f64(),
                "replay_keys_1_thread_events_per_s": per_s(p.replay_keys_1),
                "replay_keys_2_threads_events_per_s": per_s(p.replay_keys_2),
                "fold_keys_ns_per_event": p.fold_keys.ns_per_event(self.events).0,
                "fold_keys_view_ns_per_event": p.fold_keys.ns_per_event(self.events).1,
                "fold_keys_block_ns_per_event": p.fold_keys.ns_per_event(self.events).2,
                "fold_keys_one_by_one_ns_per_event": p.fold_keys.ns_per_event(self.events).3,
                "replay_over_decode": self.replay_over_decode(),
                "replay_over_mmap": self.replay_over_mmap(),
            },
            "cold_open": {
                "fresh_s": self.open.fresh.as_secs_f64(),
                "stale_s": self.open.stale.as_secs_f64(),
                "none_s": self.open.none.as_secs_f64(),
                "stale_behind_events": self.stale_behind,
                "fresh_over_replay": self.fresh_over_replay(),
            },
            "projection": {
                "heap_bytes": p.projection_heap_bytes,
                "rules": p.projection.rule_count(),
                "recent_events": p.projection.recent_event_count(),
            },
            "disk": {
                "log_bytes": self.disk.log,
                "idx_bytes": self.disk.idx,
                "checkpoint_bytes": self.disk.checkpoint,
                "keys_bytes": self.disk.keys,
                "other_bytes": self.disk.other,
                "bytes_per_event": self.disk.total() as f64 / n,
            },
        })
    }
}

struct QueryReport {
    events: u64,
    rules: usize,
    log: LogQueries,
    sqlite: SqliteQueries,
    sqlite_build: Duration,
    sqlite_db: u64,
    sqlite_wal: u64,
    range_avg_events: f64,
    run_avg_events: f64,
}

struct Goal {
    name: String,
    target: String,
    measured: String,
    met: bool,
}

fn goals(sizes: &[SizeReport], q: &QueryReport) -> Vec<Goal> {
    let mut goals = Vec::new();
    for s in sizes {
        goals.push(Goal {
            name: format!(
                "replay >= 70% of the bare checksum+decode pass ({} events)",
                s.events
            ),
            target: ">= 70%".into(),
            measured: format!("{:.0}%", s.replay_over_decode() * 100.0),
            met: s.replay_over_decode() >= 0.70,
        });
    }
    for s in sizes {
        let n = s.events as f64;
        let p = &s.passes;
        let per_s = |d: Duration| n / d.as_secs_f64();
        let (one, two) = (per_s(p.replay_keys_1), per_s(p.replay_keys_2));
        goals.push(Goal {
            name: format!(
                "full replay into TriggerStats >= 10M events/s (scan + view + apply_keys, \
                 the better of 1 and 2 threads; {} events)",
                s.events
            ),
            target: ">= 10 M/s".into(),
            measured: format!(
                "{}/s (1 thread {}/s, 2 threads {}/s)",
                rate(one.max(two)),
                rate(one),
                rate(two)
            ),
            met: one.max(two) >= 10e6,
        });
        let (one, two) = (per_s(p.scan_1), per_s(p.scan_2));
        goals.push(Goal {
            name: format!(
                "frames + CRC, no decode >= 40M events/s (Log::scan, the better of 1 and 2 \
                 threads; {} events)",
                s.events
            ),
            target: ">= 40 M/s".into(),
            measured: format!(
                "{}/s (1 thread {}/s, 2 threads {}/s; Log::read_from, 1 thread, {}/s)",
                rate(one.max(two)),
                rate(one),
                rate(two),
                rate(per_s(p.log_read))
            ),
            met: one.max(two) >= 40e6,
        });
        let (fold_ns, view_ns, block_ns, apply_ns) = p.fold_keys.ns_per_event(s.events);
        goals.push(Goal {
            name: format!(
                "projection CPU per event (view + apply_keys) <= 100 ns ({} events)",
                s.events
            ),
            target: "<= 100 ns".into(),
            measured: format!(
                "{fold_ns:.0} ns (view {view_ns:.0}, apply_keys_block {block_ns:.0}; \
                 apply_keys one by one {apply_ns:.0})"
            ),
            met: fold_ns <= 100.0,
        });
        if s.events >= 10_000_000 {
            goals.push(Goal {
                name: format!(
                    "open without checkpoint -> first stats <= 2 s ({} events)",
                    s.events
                ),
                target: "<= 2 s".into(),
                measured: ms(s.open.none),
                met: s.open.none <= Duration::from_secs(2),
            });
        }
    }
    goals.push(Goal {
        name: format!("stats p50 < 1 µs ({} events, {} rules)", q.events, q.rules),
        target: "< 1 µs".into(),
        measured: format!("{:.2} µs", q.log.stats.p50.as_secs_f64() * 1e6),
        met: q.log.stats.p50 < Duration::from_micros(1),
    });
    for (what, log, sqlite) in [
        ("one tenant, one day", &q.log.range, &q.sqlite.range),
        ("all events of one run_id", &q.log.run, &q.sqlite.run),
    ] {
        goals.push(Goal {
            name: format!("query p50, {what} <= SQLite's ({} events)", q.events),
            target: "<= 1.00x".into(),
            measured: format!("{:.2}x", log.p50.as_secs_f64() / sqlite.p50.as_secs_f64()),
            met: log.p50 <= sqlite.p50,
        });
    }
    for s in sizes {
        goals.push(Goal {
            name: format!(
                "cold open, fresh checkpoint < 5% of a full replay ({} events)",
                s.events
            ),
            target: "< 5%".into(),
            measured: format!("{:.2}%", s.fresh_over_replay() * 100.0),
            met: s.fresh_over_replay() < 0.05,
        });
    }
    goals
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M", per_s / 1e6)
    } else {
        format!("{:.0} k", per_s / 1e3)
    }
}

fn lat(l: &Latency) -> String {
    format!(
        "p50 {:>10}  p99 {:>10}  p99.9 {:>10}",
        us(l.p50),
        us(l.p99),
        us(l.p999)
    )
}

fn print_sizes(sizes: &[SizeReport]) {
    for s in sizes {
        let n = s.events as f64;
        let p = &s.passes;
        let line = |name: &str, d: Duration, what: &str| {
            println!(
                "    {name:<22} {:>10}  {:>10} events/s  {what}",
                ms(d),
                rate(n / d.as_secs_f64())
            );
        };
        println!(
            "  replay, {} events ({} rules, {:.1} MiB of segments, built in {:.1} s)",
            s.events,
            s.pairs_seen,
            s.segment_bytes as f64 / (1 << 20) as f64,
            s.build_time.as_secs_f64()
        );
        line("(c) mmap read", p.mmap_read, "bytes summed, no framing");
        line("    log read", p.log_read, "frames + checksums");
        line(
            "(b') scan, 1 thread",
            p.scan_1,
            "frames + checksums in place",
        );
        line(
            "(b') scan, 2 threads",
            p.scan_2,
            "frames + checksums in place",
        );
        line("(b) bare pass", p.decode, "checksums + payload decode");
        line("(a) replay", p.replay, "(b) + TriggerStats::apply");
        line(
            "(a') replay by keys",
            p.replay_keys_1,
            "scan + view + apply_keys, 1 thread",
        );
        line(
            "(a') by keys, 2 thr",
            p.replay_keys_2,
            &format!(
                "the same on 2 threads + merge (of which merge {:.1} ms)",
                p.replay_keys_2_merge.as_secs_f64() * 1e3
            ),
        );
        let (fold_ns, view_ns, block_ns, apply_ns) = p.fold_keys.ns_per_event(s.events);
        println!(
            "    view + apply_keys_block alone: {fold_ns:.0} ns per event (view {view_ns:.0}, \
             block {block_ns:.0}; apply_keys one by one {apply_ns:.0}; the read excluded)"
        );
        println!(
            "    replay / bare pass = {:.0}%   replay / mmap read = {:.1}%",
            s.replay_over_decode() * 100.0,
            s.replay_over_mmap() * 100.0
        );
        println!(
            "  cold open -> first stats, {} events: fresh checkpoint {}, stale ({} behind) {}, none {}; \
             fresh = {:.2}% of replay (a)",
            s.events,
            ms(s.open.fresh),
            s.stale_behind,
            ms(s.open.stale),
            ms(s.open.none),
            s.fresh_over_replay() * 100.0
        );
    }
}

fn print_queries(q: &QueryReport) {
    let ratio = |a: &Latency, b: &Latency| b.p50.as_secs_f64() / a.p50.as_secs_f64();
    println!(
        "  queries, {} events, {} rules (last column: SQLite p50 / enforcelog p50)",
        q.events, q.rules
    );
    println!("    enforcelog stats(t, r)      {}", lat(&q.log.stats));
    println!(
        "    SQLite COUNT(*) window      {}  {:.1}x",
        lat(&q.sqlite.count),
        ratio(&q.log.stats, &q.sqlite.count)
    );
    println!(
        "    SQLite MAX(enforced_at)     {}  {:.1}x",
        lat(&q.sqlite.max),
        ratio(&q.log.stats, &q.sqlite.max)
    );
    println!(
        "    SQLite all of stats, 1 stmt {}  {:.1}x",
        lat(&q.sqlite.stats),
        ratio(&q.log.stats, &q.sqlite.stats)
    );
    println!(
        "    enforcelog query, 1 tenant, 1 day  {}   ({:.0} events returned on average)",
        lat(&q.log.range),
        q.range_avg_events
    );
    println!(
        "    SQLite same range, 1 tenant        {}   {:.2}x",
        lat(&q.sqlite.range),
        ratio(&q.log.range, &q.sqlite.range)
    );
    println!(
        "    enforcelog query, 1 run_id         {}   ({:.1} events returned on average)",
        lat(&q.log.run),
        q.run_avg_events
    );
    println!(
        "    SQLite same run (index on run_id)  {}   {:.2}x",
        lat(&q.sqlite.run),
        ratio(&q.log.run, &q.sqlite.run)
    );
    println!(
        "    key indexes: built by the first query in {}, {:.1} B/event on disk",
        ms(q.log.keys_build),
        q.log.keys_bytes as f64 / q.events as f64
    );
}

fn print_footprint(sizes: &[SizeReport], q: &QueryReport, mem: &Memory) {
    for s in sizes {
        println!(
            "  disk, {} events: enforcelog {:.1} B/event (segments {:.1}, indexes {:.2}, checkpoint {:.2}, other {:.3})",
            s.events,
            s.disk.total() as f64 / s.events as f64,
            s.disk.log as f64 / s.events as f64,
            s.disk.idx as f64 / s.events as f64,
            s.disk.checkpoint as f64 / s.events as f64,
            s.disk.other as f64 / s.events as f64,
        );
    }
    let first = &sizes[0];
    let sqlite = (q.sqlite_db + q.sqlite_wal) as f64 / q.events as f64;
    println!(
        "        SQLite {sqlite:.1} B/event (db {} B + wal {} B after checkpoint; built in {:.1} s): \
         enforcelog / SQLite = {:.2}",
        q.sqlite_db,
        q.sqlite_wal,
        q.sqlite_build.as_secs_f64(),
        first.disk.total() as f64 / first.events as f64 / sqlite
    );
    println!(
        "  projection memory: {:.0} B per rule, {:.2} B per in-window event; the {}-event store's \
         projection: {:.2} MiB for {} rules and {} in-window events",
        mem.per_rule,
        mem.per_event,
        first.events,
        first.passes.projection_heap_bytes as f64 / (1 << 20) as f64,
        first.passes.projection.rule_count(),
        first.passes.projection.recent_event_count()
    );
}

/// What the figures were measured on.
fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "directory": env!("CARGO_TARGET_TMPDIR"),
    })
}

fn report_json(
    plan: &Plan,
    seed: u64,
    sizes: &[SizeReport],
    q: &QueryReport,
    mem: &Memory,
    goals: &[Goal],
) -> Value {
    json!({
        "bench": "reads",
        "mode": plan.mode(),
        "seed": seed,
        "machine": machine(),
        "sizes": sizes.iter().map(SizeReport::to_json).collect::<Vec<_>>(),
        "queries": {
            "events": q.events,
            "rules": q.rules,
            "stats_queries": plan.stats_queries,
            "range_queries": plan.range_queries,
            "range_window_s": DAY_US / 1_000_000,
            "range_avg_events": q.range_avg_events,
            "enforcelog_stats": q.log.stats.to_json(),
            "enforcelog_range": q.log.range.to_json(),
            "sqlite_count": q.sqlite.count.to_json(),
            "sqlite_max": q.sqlite.max.to_json(),
            "sqlite_stats": q.sqlite.stats.to_json(),
            "sqlite_range": q.sqlite.range.to_json(),
            "run_queries": q.log.run_counts.len(),
            "run_avg_events": q.run_avg_events,
            "enforcelog_run": q.log.run.to_json(),
            "sqlite_run": q.sqlite.run.to_json(),
            "key_index_build_s": q.log.keys_build.as_secs_f64(),
            "key_index_bytes": q.log.keys_bytes,
            "key_index_bytes_per_event": q.log.keys_bytes as f64 / q.events as f64,
            "sqlite_plans": q.sqlite.plans,
        },
        "sqlite": {
            "events": q.events,
            "build_s": q.sqlite_build.as_secs_f64(),
            "db_bytes": q.sqlite_db,
            "wal_bytes": q.sqlite_wal,
            "bytes_per_event": (q.sqlite_db + q.sqlite_wal) as f64 / q.events as f64,
        },
        "memory": {
            "per_rule_bytes": mem.per_rule,
            "per_in_window_event_bytes": mem.per_event,
            "rules": plan.mem_rules,
            "busy_rules": plan.mem_busy_rules,
            "events_per_busy_rule": plan.mem_events_per_rule,
        },
        "goals": goals.iter().map(|g| json!({
            "goal": g.name, "target": g.target, "measured": g.measured, "met": g.met,
        })).collect::<Vec<_>>(),
    })
}

fn write_json(plan: &Plan, report: &Value) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("bench-results");
    std::fs::create_dir_all(&target).expect("create bench-results");
    // A smoke run never overwrites a full run's figures.
    let path = target.join(if plan.full {
        "reads.json"
    } else {
        "reads-quick.json"
    });
    let text = serde_json::to_string_pretty(report).expect("JSON");
    std::fs::write(&path, text + "\n").expect("write JSON");
    path
}

/// Builds one store and measures replay and cold open on it; the first
/// size also runs the queries beside SQLite.
fn measure_size(
    plan: &Plan,
    events: u64,
    seed: u64,
    work: Option<&Workload>,
) -> (SizeReport, Option<QueryReport>) {
    println!("  building {events} events...");
    let ds = build(
        "enforcelog-reads-",
        plan.keys(),
        events,
        Rng(seed ^ events),
        seed,
    );
    let segment_bytes = mmap_pass(&ds.store).1;
    println!("  replay passes...");
    let passes = passes(plan, &ds, seed);
    println!("  cold opens...");
    let open = cold_open(plan, &ds, seed);
    let disk = store_disk(&ds.store);
    let queries = work.map(|work| {
        println!("  queries...");
        let log = log_queries(&ds, work, seed);
        println!("  SQLite: inserting {events} rows...");
        let db = sqlite_build(&ds);
        let sqlite = sqlite_queries(&db, &ds, work, &log, seed);
        let (sqlite_db, sqlite_wal) = sqlite_disk(&db);
        let returned: usize = log.range_counts.iter().sum();
        QueryReport {
            events,
            rules: ds.pairs_seen().len(),
            range_avg_events: returned as f64 / log.range_counts.len() as f64,
            run_avg_events: log.run_counts.iter().map(|c| c.1).sum::<usize>() as f64
                / log.run_counts.len().max(1) as f64,
            log,
            sqlite,
            sqlite_build: db.build_time,
            sqlite_db,
            sqlite_wal,
        }
    });
    let report = SizeReport {
        events,
        pairs_seen: ds.pairs_seen().len(),
        build_time: ds.build_time,
        segment_bytes,
        passes,
        open,
        stale_behind: events - ds.stale_offset,
        disk,
    };
    (report, queries)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench")
        && !args.iter().any(|a| a == "--quick")
        && !env_flag("ENFORCELOG_BENCH_QUICK");
    let plan = Plan::new(full, env_flag("ENFORCELOG_BENCH_10M"));
    let seed = dataset::seed(DEFAULT_SEED);
    let started = Instant::now();
    println!(
        "reads bench: {:?} events, {} mode, seed {seed} (ENFORCELOG_SEED to replay{})",
        plan.sizes,
        plan.mode(),
        if plan.full && plan.sizes.len() == 1 {
            "; ENFORCELOG_BENCH_10M=1 adds 10M events"
        } else {
            ""
        }
    );
    let work = workload(&plan, seed);
    let mut sizes = Vec::new();
    let mut queries = None;
    for (i, &events) in plan.sizes.iter().enumerate() {
        let (size, q) = measure_size(&plan, events, seed, (i == 0).then_some(&work));
        sizes.push(size);
        queries = queries.or(q);
    }
    let queries = queries.expect("the first size runs the queries");
    let memory = memory(&plan);
    let goals = goals(&sizes, &queries);

    println!();
    println!("summary (reads bench, {} mode, seed {seed})", plan.mode());
    print_sizes(&sizes);
    print_queries(&queries);
    print_footprint(&sizes, &queries, &memory);
    println!("  goals");
    for g in &goals {
        println!(
            "    [{}] {}: {} (target {})",
            if g.met { "met " } else { "MISS" },
            g.name,
            g.measured,
            g.target
        );
    }
    let report = report_json(&plan, seed, &sizes, &queries, &memory, &goals);
    let path = write_json(&plan, &report);
    println!("  figures written to {}", path.display());
    println!("  bench time {:.1} s", started.elapsed().as_secs_f64());
}
