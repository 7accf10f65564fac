//! `demo`: the command a newcomer runs first. P producers (half of them
//! tokio tasks using `record().await` and `begin()` + `commit().await`,
//! half OS threads using `record_blocking` and `commit_blocking`) record N
//! synthetic enforcement outcomes with durable group commit; then the demo
//! reports throughput and fsyncs, reopens the store read-only to time a
//! full replay, and shows the rules that fired most in the last 30 days.

use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use enforcelog::{now_us, Action, Durability, Event, RuleStats, Store, StoreMetrics};
use indicatif::ProgressBar;

use crate::clock::show_us;
use crate::failure::Failure;
use crate::output::{progress, Align, Out, Table};
use crate::store_dir::open_writer;
use crate::units::{per_second, thousands};
use crate::Global;

pub const ABOUT: &str =
    "Record synthetic outcomes concurrently, then show throughput, replay and stats";
pub const LONG_ABOUT: &str = "\
The first command to run. P concurrent producers record N synthetic
enforcement outcomes into the demo's own store, --dir (default
./enforcelog-demo; created if missing, appended to otherwise), never the
store of --data-dir or ENFORCELOG_DIR that the other commands use:
half are tokio tasks using record().await and begin() + commit().await, half
are OS threads using record_blocking() and commit_blocking(); about a quarter
of their writes are atomic batches of 2 to 32 events. Events are spread over
T tenants and R rules (a few rules fire far more often than the rest), with
enforced_at times over the last 40 days.

With the default --durability fsync every event is acknowledged only once it
is on disk; concurrent writers share each fdatasync (group commit). The demo
then prints the durable throughput, the fsyncs issued and events per fsync,
the append latency, the replay rate after reopening the store read-only (a
full pass over every entry), and the top rules by trigger count in the last 30 days with
last_triggered_at. A progress bar shows on stderr when it is a terminal.
The last line says where the demo store is and how to look at it.";

/// Where the demo writes unless `--dir` says otherwise.
pub const DEMO_DIR_DEFAULT: &str = "./enforcelog-demo";

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo's own store directory (never --data-dir: the demo must not
    /// add synthetic events to the store the other commands use).
    #[arg(long, value_name = "DIR", default_value = DEMO_DIR_DEFAULT)]
    dir: std::path::PathBuf,
    /// Events to record.
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    events: u64,
    /// Concurrent producers (half async tasks, half OS threads).
    #[arg(long, value_name = "P", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    producers: u32,
    /// Tenants the events are spread over.
    #[arg(long, value_name = "T", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    tenants: u32,
    /// Rules per tenant the events are spread over.
    #[arg(long, value_name = "R", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rules: u32,
    /// Rows in the table of top rules.
    #[arg(long, value_name = "K", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    top: u32,
    /// Seed of the synthetic data (the same seed gives the same events,
    /// relative to the current time).
    #[arg(long, value_name = "S", default_value_t = 42)]
    seed: u64,
}

pub fn run(global: &Global, args: &DemoArgs) -> Result<(), Failure> {
    let global = &Global {
        data_dir: args.dir.clone(),
        ..global.clone()
    };
    let mut out = Out::new();
    out.line(&intro(global, args))?;
    out.flush()?;
    let store = open_writer(global)?;
    // Beside another writer of the demo directory the demo writes a shard
    // of it; the replay times that shard's log, the statistics are the
    // directory's.
    let shard = store.shard();
    let start_offset = store.next_offset();
    let written = write_phase(&store, args)?;
    let closing = Instant::now();
    store.close()?;
    let close_secs = closing.elapsed().as_secs_f64();
    drop(store);
    let replay = replay_phase(global, shard)?;
    let top = top_rules(&replay.stats_store, args.top as usize)?;
    for line in report(global, &written, close_secs, start_offset, &replay) {
        out.line(&line)?;
    }
    out.line("")?;
    out.line(&format!(
        "top {} rules by trigger count in the last 30 days (as of {}):",
        top.len(),
        show_us(replay.as_of_us)
    ))?;
    top_table(&top).print(&mut out)?;
    out.line("")?;
    out.line(&format!(
        "the demo store is {}; look at it with: enforcelog --data-dir {} info (or stats, tail, \
         query --tenant tenant-000)",
        global.data_dir.display(),
        shell_word(&global.data_dir.display().to_string())
    ))?;
    out.flush()
}

/// `text` as one shell word: as is when it is plain, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn intro(global: &Global, args: &DemoArgs) -> String {
    let tasks = args.producers.div_ceil(2);
    format!(
        "recording {} synthetic events into {} from {} producers ({} async tasks, {} threads), \
         {} tenants x {} rules, durability {}",
        thousands(args.events),
        global.data_dir.display(),
        args.producers,
        tasks,
        args.producers - tasks,
        args.tenants,
        args.rules,
        durability_name(global.durability)
    )
}

fn durability_name(durability: Durability) -> String {
    match durability {
        Durability::Fsync => "fsync".into(),
        Durability::Interval(d) => format!("interval:{d:?}"),
        Durability::None => "none".into(),
    }
}

/// What the write phase did.
struct Written {
    events: u64,
    seconds: f64,
    metrics: StoreMetrics,
    groups: u64,
    bytes: u64,
}

fn write_phase(store: &Store, args: &DemoArgs) -> Result<Written, Failure> {
    let names = Arc::new(Names::new(args.tenants, args.rules));
    let now = now_us();
    let bar = progress(args.events, "recording");
    let started = Instant::now();
    let plans: Vec<Plan> = (0..args.producers)
        .map(|i| Plan {
            count: share(args.events, args.producers, i),
            synth: Synth::new(args.seed, i, names.clone(), now),
            store: store.clone(),
            bar: bar.clone(),
        })
        .collect();
    run_producers(plans)?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    let log = store.log().metrics();
    Ok(Written {
        events: args.events,
        seconds,
        metrics: store.metrics(),
        groups: log.groups,
        bytes: log.bytes,
    })
}

/// Producer `i`'s share of `total` events.
fn share(total: u64, producers: u32, i: u32) -> u64 {
    let (p, i) = (u64::from(producers), u64::from(i));
    total / p + u64::from(i < total % p)
}

/// One producer's work.
struct Plan {
    count: u64,
    synth: Synth,
    store: Store,
    bar: ProgressBar,
}

/// Runs even-numbered plans as tokio tasks and odd-numbered ones as OS
/// threads, all at once; returns the first error.
fn run_producers(plans: Vec<Plan>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::other(format!("starting the async runtime: {e}")))?;
    let mut tasks = Vec::new();
    let mut threads = Vec::new();
    for (i, plan) in plans.into_iter().enumerate() {
        if i % 2 == 0 {
            tasks.push(plan);
        } else {
            threads.push(plan);
        }
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = threads
            .into_iter()
            .map(|plan| scope.spawn(move || produce_blocking(plan)))
            .collect();
        let async_result = runtime.block_on(async {
            let joins: Vec<_> = tasks
                .into_iter()
                .map(|plan| tokio::spawn(produce_async(plan)))
                .collect();
            let mut result = Ok(());
            for join in joins {
                let outcome = join
                    .await
                    .map_err(|e| Failure::other(format!("producer task failed: {e}")))
                    .and_then(|r| r.map_err(Failure::from));
                result = result.and(outcome);
            }
            result
        });
        let mut result = async_result;
        for handle in handles {
            let outcome = handle
                .join()
                .map_err(|_| Failure::other("producer thread panicked"))
                .and_then(|r| r.map_err(Failure::from));
            result = result.and(outcome);
        }
        result
    })
}

async fn produce_async(mut plan: Plan) -> enforcelog::Result<()> {
    let mut left = plan.count;
    while left > 0 {
        let k = plan.synth.batch_size(left);
        if k == 1 {
            plan.store.record(plan.synth.event()).await?;
        } else {
            let mut batch = plan.store.begin();
            for _ in 0..k {
                batch.record(plan.synth.event())?;
            }
            batch.commit().await?;
        }
        left -= k;
        plan.bar.inc(k);
    }
    Ok(())
}

fn produce_blocking(mut plan: Plan) -> enforcelog::Result<()> {
    let mut left = plan.count;
    while left > 0 {
        let k = plan.synth.batch_size(left);
        if k == 1 {
            plan.store.record_blocking(plan.synth.event())?;
        } else {
            let mut batch = plan.store.begin();
            for _ in 0..k {
                batch.record(plan.synth.event())?;
            }
            batch.commit_blocking()?;
        }
        left -= k;
        plan.bar.inc(k);
    }
    Ok(())
}

/// The replay after reopening.
struct Replayed {
    /// The directory's statistics (every shard).
    stats_store: Store,
    /// The shard the demo wrote and replayed, and its directory.
    shard: u32,
    shard_dir: std::path::PathBuf,
    open_secs: f64,
    entries: u64,
    replay_secs: f64,
    log_bytes: u64,
    as_of_us: i64,
}

fn replay_phase(global: &Global, shard: u32) -> Result<Replayed, Failure> {
    let shard_dir = Store::shard_dirs(&global.data_dir)?
        .into_iter()
        .find(|(n, _)| *n == shard)
        .map(|(_, dir)| dir)
        .ok_or_else(|| Failure::other(format!("the demo's shard {shard} is gone")))?;
    let opening = Instant::now();
    let store = Store::open_read_only(&shard_dir)?;
    let open_secs = opening.elapsed().as_secs_f64();
    let replaying = Instant::now();
    let mut entries = 0u64;
    for entry in store.entries(0)? {
        entry?;
        entries += 1;
    }
    let replay_secs = replaying.elapsed().as_secs_f64();
    let stats_store = if shard == 0 {
        store
    } else {
        Store::open_read_only(&global.data_dir)?
    };
    Ok(Replayed {
        stats_store,
        shard,
        log_bytes: segment_bytes(&shard_dir),
        shard_dir,
        open_secs,
        entries,
        replay_secs,
        as_of_us: now_us(),
    })
}

/// Bytes in the store's segment files.
fn segment_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn report(
    global: &Global,
    w: &Written,
    close_secs: f64,
    start_offset: u64,
    r: &Replayed,
) -> Vec<String> {
    let m = &w.metrics;
    let per_fsync = if m.fsyncs == 0 {
        "no fsync (durability none)".to_string()
    } else {
        format!("{:.1} events per fsync", w.events as f64 / m.fsyncs as f64)
    };
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let acknowledged = match global.durability {
        Durability::Fsync => "durable (fsync before each acknowledgement)",
        _ => "acknowledged, not each fsynced",
    };
    vec![
        format!(
            "recorded       {} events in {:.2} s: {} events/s {acknowledged}",
            thousands(w.events),
            w.seconds,
            per_second(w.events, w.seconds),
        ),
        format!(
            "fsyncs         {} for {} group commits (one write each): {per_fsync}",
            thousands(m.fsyncs),
            thousands(w.groups)
        ),
        format!(
            "append latency p50 {} us, p99 {} us, max {} us; {:.1} MiB written",
            thousands(m.append_p50_us),
            thousands(m.append_p99_us),
            thousands(m.append_max_us),
            mib(w.bytes)
        ),
        format!("closed         in {close_secs:.2} s (statistics checkpointed)"),
        format!(
            "replay         reopened read-only in {:.2} s, read all {} entries ({:.1} MiB) \
             in {:.2} s: {} entries/s",
            r.open_secs,
            thousands(r.entries),
            mib(r.log_bytes),
            r.replay_secs,
            per_second(r.entries, r.replay_secs)
        ),
        format!(
            "store          {}{} holds offsets 0..{} (this run: {}..{})",
            global.data_dir.display(),
            if r.shard == 0 {
                String::new()
            } else {
                format!(
                    ", shard {} ({}; another writer held the store)",
                    r.shard,
                    r.shard_dir.display()
                )
            },
            thousands(r.entries),
            thousands(start_offset),
            thousands(start_offset + w.events)
        ),
    ]
}

fn top_rules(store: &Store, k: usize) -> Result<Vec<RuleStats>, Failure> {
    let mut rules = store.stats_all(None)?;
    rules.sort_by(|a, b| {
        b.trigger_count
            .cmp(&a.trigger_count)
            .then_with(|| a.tenant_id.cmp(&b.tenant_id))
            .then_with(|| a.rule_id.cmp(&b.rule_id))
    });
    rules.truncate(k);
    Ok(rules)
}

fn top_table(rules: &[RuleStats]) -> Table {
    let mut table = Table::new(&[
        ("TENANT", Align::Left),
        ("RULE", Align::Left),
        ("TRIGGER_COUNT_30D", Align::Right),
        ("LAST_TRIGGERED_AT", Align::Left),
        ("TOTAL_COUNT", Align::Right),
    ]);
    for r in rules {
        table.push(vec![
            r.tenant_id.clone(),
            r.rule_id.clone(),
            thousands(r.trigger_count),
            r.last_triggered_at_us.map_or_else(|| "-".into(), show_us),
            thousands(r.total_count),
        ]);
    }
    table
}

/// Tenant and rule names, made once.
struct Names {
    tenants: Vec<String>,
    rules: Vec<String>,
}

impl Names {
    fn new(tenants: u32, rules: u32) -> Self {
        Self {
            tenants: (0..tenants).map(|i| format!("tenant-{i:03}")).collect(),
            rules: (0..rules).map(|i| format!("rule-{i:03}")).collect(),
        }
    }
}

const REASONS: [&str; 6] = [
    "budget exceeded",
    "write to production",
    "rate limit",
    "forbidden tool",
    "data exfiltration",
    "loop detected",
];

/// Forty days in microseconds: the span of synthetic timestamps.
const SPAN_US: u64 = 40 * 24 * 3600 * 1_000_000;

/// A producer's synthetic events, from a seeded generator.
struct Synth {
    rng: SplitMix64,
    names: Arc<Names>,
    now_us: i64,
}

impl Synth {
    fn new(seed: u64, producer: u32, names: Arc<Names>, now_us: i64) -> Self {
        Self {
            rng: SplitMix64(seed ^ (u64::from(producer) << 32 | 0x9E37)),
            names,
            now_us,
        }
    }

    /// 1 (a standalone write) three times in four, else a batch of 2..=32.
    fn batch_size(&mut self, left: u64) -> u64 {
        let r = self.rng.next();
        let k = if r.is_multiple_of(4) {
            2 + (r >> 8) % 31
        } else {
            1
        };
        k.min(left)
    }

    fn event(&mut self) -> Event {
        let tenant = self.skewed(self.names.tenants.len(), 2);
        let rule = self.skewed(self.names.rules.len(), 2);
        let action = match self.rng.next() % 20 {
            0..=7 => Action::Blocked,
            8..=12 => Action::Stopped,
            13..=16 => Action::Killed,
            _ => Action::Aborted,
        };
        let age_us = self.rng.next() % SPAN_US;
        let at = self.now_us - age_us as i64;
        let mut event = Event::new(
            self.names.tenants[tenant].clone(),
            self.names.rules[rule].clone(),
            action,
        )
        .with_run_id(format!("run-{:06}", self.rng.next() % 1_000_000))
        .at_us(at);
        let r = self.rng.next();
        if r.is_multiple_of(4) {
            let reason = REASONS[(r >> 8) as usize % REASONS.len()];
            event = event
                .with_details(enforcelog::details!({"step": (r >> 16) % 100, "reason": reason}));
        }
        event
    }

    /// An index below `n`, low indexes more likely (`power` 1: uniform).
    fn skewed(&mut self, n: usize, power: i32) -> usize {
        let u = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((u.powi(power) * n as f64) as usize).min(n - 1)
    }
}

/// A small, fast, seeded generator (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
