//! A host loop that enforces a toy policy on every step of concurrent runs
//! and records the outcomes with enforcelog.
//!
//! ```text
//! cargo run --release --example step_enforcement -- [--dir DIR] [--seed N]
//! ```
//!
//! Ten runs (agents, jobs...) execute up to 50 steps each: eight as tokio
//! tasks, two on plain OS threads with no runtime. A step makes one to three
//! tool calls; the host evaluates the policy on every step:
//!
//! | rule               | when                                      | action  | recorded with        |
//! |--------------------|-------------------------------------------|---------|----------------------|
//! | `forbidden-tool`   | a call to `shell` or `delete_db`          | BLOCKED | `record` / batch     |
//! | `rate-limit`       | the same tool a third time in a row       | BLOCKED | `record_detached`    |
//! | `user-cancel`      | the user cancels (0.5% of steps)            | STOPPED | `record` / batch     |
//! | `budget-exceeded`  | the run's spend passes its budget         | KILLED  | `record` / batch     |
//! | `too-many-retries` | a fourth failed call in a row             | ABORTED | `record` / batch     |
//!
//! STOPPED, KILLED and ABORTED halt the run. A step with one outcome worth
//! keeping is recorded standalone (`record().await` in tasks,
//! `record_blocking` in threads); a step with several is recorded as one
//! caller-owned batch (`begin()`, `commit().await` / `commit_blocking()`), so
//! they become durable together; rate-limit blocks are low-value and go
//! through `record_detached`, which never fails nor blocks the step.
//!
//! Every decision comes from a pseudo-random stream seeded per run (from
//! `--seed`, else `ENFORCELOG_SEED`, else 7), so the outcomes and the counts
//! printed are the same on every run whatever the thread interleaving; only
//! the metrics (fsyncs, latencies) vary. After the runs, the store is closed
//! (which commits the detached events still queued), reopened read-only, and
//! the counts per tenant, rule and action are read back page by page with
//! `Query::all_tenants()` and compared with what the host decided. The exit
//! status is non-zero if they differ (beyond events the store reports as
//! dropped). The store lives in a temporary directory unless `--dir` names
//! one; an existing store is appended to and only the new events are counted.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use enforcelog::{Action, Event, EventBatch, Query, Store, StoreMetrics, StoreOptions};
use tracing_subscriber::EnvFilter;

type BoxError = Box<dyn Error + Send + Sync>;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
/// Runs driven by tokio tasks; runs after these use OS threads.
const ASYNC_RUNS: usize = 8;
const THREAD_RUNS: usize = 2;
const STEPS_MAX: u32 = 50;
/// Events per query page: small, so that the read-back paginates.
const PAGE_LIMIT: usize = 25;
const SEED_DEFAULT: u64 = 7;

/// Tools a step may call, with their weight out of 100.
const TOOLS: [(&str, u64); 6] = [
    ("search", 30),
    ("read_file", 25),
    ("http_get", 20),
    ("write_file", 17),
    ("shell", 5),
    ("delete_db", 3),
];
const FORBIDDEN_TOOLS: [&str; 2] = ["shell", "delete_db"];
/// Failed calls in a row a run may retry; one more aborts it.
const RETRIES_MAX: u32 = 3;
/// Calls of one tool in a row before the next is rate-limited.
const SAME_TOOL_MAX: u32 = 2;
/// Chance that an executed call fails, per 1000.
const CALL_FAILURE_PER_MILLE: u64 = 250;
/// Chance that the user cancels a run at a step, per 1000.
const CANCEL_PER_MILLE: u64 = 5;

const USAGE: &str = "usage: step_enforcement [--dir DIR] [--seed N]

  --dir DIR   store directory, created or appended to (default: a temporary one)
  --seed N    seed of the toy policy (default: $ENFORCELOG_SEED, else 7)";

#[derive(Debug)]
struct Args {
    dir: Option<PathBuf>,
    seed: u64,
}

/// Parses the command line by hand; `Ok(None)` means help was asked for.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let seed = match std::env::var("ENFORCELOG_SEED") {
        Ok(text) => parse_seed(&text)?,
        Err(_) => SEED_DEFAULT,
    };
    let mut parsed = Args { dir: None, seed };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--dir" => parsed.dir = Some(PathBuf::from(value()?)),
            "--seed" => parsed.seed = parse_seed(&value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Some(parsed))
}

fn parse_seed(text: &str) -> Result<u64, String> {
    text.trim()
        .parse()
        .map_err(|e| format!("seed {text:?}: not a u64: {e}"))
}

/// SplitMix64: a small, seeded, reproducible stream.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        self.next_u64() % n
    }

    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn tool(&mut self) -> &'static str {
        let mut pick = self.below(100);
        for (tool, weight) in TOOLS {
            if pick < weight {
                return tool;
            }
            pick -= weight;
        }
        unreachable!("tool weights add up to 100")
    }
}

/// What the policy decided on one step.
#[derive(Default)]
struct StepOutcomes {
    /// Outcomes an audit must keep: recorded and waited for.
    kept: Vec<Event>,
    /// Low-value outcomes: recorded fire-and-forget.
    low_value: Vec<Event>,
}

/// How the kept outcomes of a step are written.
enum Write {
    Nothing,
    /// One event, committed on its own.
    Standalone(Event),
    /// Several events, committed together as one caller-owned batch.
    Batch(Vec<Event>),
}

impl From<Vec<Event>> for Write {
    fn from(mut events: Vec<Event>) -> Self {
        match events.len() {
            0 => Write::Nothing,
            1 => Write::Standalone(events.swap_remove(0)),
            _ => Write::Batch(events),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Halted(Action),
    Completed,
}

/// Counts by (tenant, rule), one per action in `Action::ALL` order.
type Counts = BTreeMap<(String, String), [u64; 4]>;

fn action_index(action: Action) -> usize {
    Action::ALL
        .iter()
        .position(|a| *a == action)
        .unwrap_or_default()
}

/// One run under the toy policy: its state and what the host decided.
struct Run {
    tenant: &'static str,
    run_id: String,
    rng: Rng,
    budget: u64,
    spent: u64,
    failures_in_a_row: u32,
    last_tool: Option<&'static str>,
    same_tool_calls: u32,
    step: u32,
    end: Option<End>,
    /// Every outcome the policy produced, by tenant, rule and action.
    decided: Counts,
}

impl Run {
    fn new(seed: u64, index: usize) -> Self {
        let mut rng = Rng(seed ^ (index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
        let budget = 300 + rng.below(600);
        Self {
            tenant: TENANTS[index % TENANTS.len()],
            run_id: format!("run-{index:02}"),
            rng,
            budget,
            spent: 0,
            failures_in_a_row: 0,
            last_tool: None,
            same_tool_calls: 0,
            step: 0,
            end: None,
            decided: Counts::new(),
        }
    }

    fn event(&mut self, rule: &str, action: Action, tool: Option<&str>) -> Event {
        let counts = self
            .decided
            .entry((self.tenant.to_string(), rule.to_string()))
            .or_default();
        counts[action_index(action)] += 1;
        Event::new(self.tenant, rule, action)
            .with_run_id(self.run_id.as_str())
            .with_details(enforcelog::details!({
                "step": self.step,
                "tool": tool,
                "spent": self.spent,
                "budget": self.budget,
            }))
    }

    /// Executes and evaluates the next step; `None` once the run has ended.
    fn next_step(&mut self) -> Option<StepOutcomes> {
        if self.end.is_some() {
            return None;
        }
        if self.step == STEPS_MAX {
            self.end = Some(End::Completed);
            return None;
        }
        self.step += 1;
        let mut outcomes = StepOutcomes::default();
        let calls = 1 + self.rng.below(3);
        for _ in 0..calls {
            self.call(&mut outcomes);
        }
        self.check_run(&mut outcomes);
        Some(outcomes)
    }

    /// One tool call: blocked, rate-limited, or executed (cost, failure).
    fn call(&mut self, outcomes: &mut StepOutcomes) {
        let tool = self.rng.tool();
        if self.last_tool == Some(tool) {
            self.same_tool_calls += 1;
        } else {
            self.last_tool = Some(tool);
            self.same_tool_calls = 1;
        }
        if FORBIDDEN_TOOLS.contains(&tool) {
            let event = self.event("forbidden-tool", Action::Blocked, Some(tool));
            outcomes.kept.push(event);
        } else if self.same_tool_calls > SAME_TOOL_MAX {
            let event = self.event("rate-limit", Action::Blocked, Some(tool));
            outcomes.low_value.push(event);
        } else {
            self.spent += 1 + self.rng.below(15);
            if self.rng.chance(CALL_FAILURE_PER_MILLE) {
                self.failures_in_a_row += 1;
            } else {
                self.failures_in_a_row = 0;
            }
        }
    }

    /// The run-level rules; every one that fires is recorded, the first
    /// decides how the run ends.
    fn check_run(&mut self, outcomes: &mut StepOutcomes) {
        let cancelled = self.rng.chance(CANCEL_PER_MILLE);
        let rules = [
            ("user-cancel", Action::Stopped, cancelled),
            ("budget-exceeded", Action::Killed, self.spent > self.budget),
            (
                "too-many-retries",
                Action::Aborted,
                self.failures_in_a_row > RETRIES_MAX,
            ),
        ];
        for (rule, action, fired) in rules {
            if fired {
                let event = self.event(rule, action, None);
                outcomes.kept.push(event);
                self.end.get_or_insert(End::Halted(action));
            }
        }
    }
}

/// What a run reports to the host's summary.
struct RunReport {
    end: End,
    decided: Counts,
    standalone: u64,
    batches: u64,
    detached: u64,
    failures: Vec<String>,
}

impl RunReport {
    fn new() -> Self {
        Self {
            end: End::Completed,
            decided: Counts::new(),
            standalone: 0,
            batches: 0,
            detached: 0,
            failures: Vec::new(),
        }
    }

    fn finish(mut self, run: Run) -> Self {
        self.end = run.end.unwrap_or(End::Completed);
        self.decided = run.decided;
        self
    }
}

/// Stages events in a new caller-owned batch; nothing is written yet.
fn stage(store: &Store, events: Vec<Event>) -> Result<EventBatch, enforcelog::Error> {
    let mut batch = store.begin();
    for event in events {
        batch.record(event)?;
    }
    Ok(batch)
}

/// Drives a run from async code: `record().await`, `commit().await`.
async fn run_async(store: Store, index: usize, seed: u64) -> RunReport {
    let mut run = Run::new(seed, index);
    let mut report = RunReport::new();
    while let Some(step) = run.next_step() {
        for event in step.low_value {
            store.record_detached(event);
            report.detached += 1;
        }
        let result = match Write::from(step.kept) {
            Write::Nothing => continue,
            Write::Standalone(event) => {
                report.standalone += 1;
                store.record(event).await.map(|_| ())
            }
            Write::Batch(events) => {
                report.batches += 1;
                match stage(&store, events) {
                    Ok(batch) => batch.commit().await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
        };
        if let Err(e) = result {
            report
                .failures
                .push(format!("{} step {}: {e}", run.run_id, run.step));
        }
    }
    report.finish(run)
}

/// Drives a run from a plain thread: `record_blocking`, `commit_blocking`.
fn run_blocking(store: &Store, index: usize, seed: u64) -> RunReport {
    let mut run = Run::new(seed, index);
    let mut report = RunReport::new();
    while let Some(step) = run.next_step() {
        for event in step.low_value {
            store.record_detached(event);
            report.detached += 1;
        }
        let result = match Write::from(step.kept) {
            Write::Nothing => continue,
            Write::Standalone(event) => {
                report.standalone += 1;
                store.record_blocking(event).map(|_| ())
            }
            Write::Batch(events) => {
                report.batches += 1;
                stage(store, events).and_then(|batch| batch.commit_blocking().map(|_| ()))
            }
        };
        if let Err(e) = result {
            report
                .failures
                .push(format!("{} step {}: {e}", run.run_id, run.step));
        }
    }
    report.finish(run)
}

/// Runs every run concurrently: tasks on a tokio runtime, and OS threads
/// that use the blocking API with no runtime at all.
fn run_all(store: &Store, seed: u64) -> Result<Vec<RunReport>, BoxError> {
    let threads = (ASYNC_RUNS..ASYNC_RUNS + THREAD_RUNS)
        .map(|index| {
            let store = store.clone();
            std::thread::Builder::new()
                .name(format!("run-{index:02}"))
                .spawn(move || run_blocking(&store, index, seed))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut reports = runtime.block_on(async {
        let tasks: Vec<_> = (0..ASYNC_RUNS)
            .map(|index| tokio::spawn(run_async(store.clone(), index, seed)))
            .collect();
        let mut reports = Vec::with_capacity(ASYNC_RUNS + THREAD_RUNS);
        for task in tasks {
            reports.push(task.await?);
        }
        Ok::<_, BoxError>(reports)
    })?;
    for thread in threads {
        reports.push(thread.join().map_err(|_| "a run thread panicked")?);
    }
    Ok(reports)
}

/// What the store holds from `start` on, read back with paginated
/// all-tenant queries.
struct ReadBack {
    counts: Counts,
    events: u64,
    pages: u64,
    gap_markers: u64,
    dropped_in_gaps: u64,
}

fn read_back(store: &Store, start: u64) -> Result<ReadBack, BoxError> {
    let mut read = ReadBack {
        counts: Counts::new(),
        events: 0,
        pages: 0,
        gap_markers: 0,
        dropped_in_gaps: 0,
    };
    let query = Query::all_tenants().limit(PAGE_LIMIT).include_gaps(true);
    let mut from = Some(start);
    while let Some(offset) = from {
        let page = store.query(&query.clone().from_offset(offset))?;
        read.pages += 1;
        for event in &page.events {
            let key = (event.tenant_id.clone(), event.rule_id.clone());
            read.counts.entry(key).or_default()[action_index(event.action)] += 1;
            read.events += 1;
        }
        for gap in &page.gaps {
            read.gap_markers += 1;
            read.dropped_in_gaps += gap.dropped;
        }
        from = page.next_offset;
    }
    Ok(read)
}

/// Counts each tenant's events with a single-tenant query: tenant
/// isolation means they add up to that tenant's rows of the table.
fn check_tenants(store: &Store, start: u64, counts: &Counts) -> Result<(), BoxError> {
    for tenant in TENANTS {
        let query = Query::tenant(tenant).limit(PAGE_LIMIT);
        let mut seen = 0u64;
        let mut from = Some(start);
        while let Some(offset) = from {
            let page = store.query(&query.clone().from_offset(offset))?;
            if let Some(other) = page.events.iter().find(|e| e.tenant_id != tenant) {
                return Err(format!("query for {tenant} returned {other:?}").into());
            }
            seen += page.events.len() as u64;
            from = page.next_offset;
        }
        let expected: u64 = counts
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .flat_map(|(_, by_action)| by_action)
            .sum();
        if seen != expected {
            return Err(format!(
                "{tenant}: its own query found {seen} events, the table {expected}"
            )
            .into());
        }
    }
    Ok(())
}

fn merge(into: &mut Counts, from: &Counts) {
    for (key, by_action) in from {
        let counts = into.entry(key.clone()).or_default();
        for (total, n) in counts.iter_mut().zip(by_action) {
            *total += n;
        }
    }
}

fn print_table(counts: &Counts) {
    print!("  {:<9} {:<18}", "tenant", "rule");
    for action in Action::ALL {
        print!(" {:>8}", action.as_str());
    }
    println!();
    for ((tenant, rule), by_action) in counts {
        print!("  {tenant:<9} {rule:<18}");
        for n in by_action {
            print!(" {n:>8}");
        }
        println!();
    }
}

fn print_runs(reports: &[RunReport]) {
    let mut ends: BTreeMap<End, u64> = BTreeMap::new();
    for report in reports {
        *ends.entry(report.end).or_default() += 1;
    }
    let ends: Vec<String> = ends
        .iter()
        .map(|(end, n)| match end {
            End::Halted(action) => format!("{n} {action}"),
            End::Completed => format!("{n} completed all {STEPS_MAX} steps"),
        })
        .collect();
    let sum = |f: fn(&RunReport) -> u64| reports.iter().map(f).sum::<u64>();
    println!(
        "runs:     {} ({ASYNC_RUNS} tokio tasks, {THREAD_RUNS} OS threads): {}",
        reports.len(),
        ends.join(", ")
    );
    println!(
        "writes:   {} standalone, {} caller-owned batches (steps with several outcomes), {} detached",
        sum(|r| r.standalone),
        sum(|r| r.batches),
        sum(|r| r.detached),
    );
}

fn print_metrics(metrics: &StoreMetrics) {
    println!(
        "metrics:  recorded {}, dropped {} ({} not yet in a gap marker), gap markers {}, fsyncs {}, recoveries {}",
        metrics.recorded,
        metrics.dropped,
        metrics.dropped_pending_gap,
        metrics.gap_markers,
        metrics.fsyncs,
        metrics.recoveries,
    );
    println!(
        "latency:  append p50 {} µs, p99 {} µs, max {} µs (queue to durable acknowledgement)",
        metrics.append_p50_us, metrics.append_p99_us, metrics.append_max_us,
    );
}

/// Compares what the store holds with what the host decided. Only the
/// detached rule may come up short, and only by what the store counted as
/// dropped.
fn compare(decided: &Counts, read: &ReadBack, dropped: u64) -> Result<(), BoxError> {
    let mut short = 0u64;
    let keys: std::collections::BTreeSet<_> = decided.keys().chain(read.counts.keys()).collect();
    for key in keys {
        let want = decided.get(key).copied().unwrap_or_default();
        let got = read.counts.get(key).copied().unwrap_or_default();
        for (action, (w, g)) in Action::ALL.iter().zip(want.iter().zip(&got)) {
            let detached = key.1 == "rate-limit";
            if g > w || (g < w && !detached) {
                return Err(format!(
                    "{} {} {action}: the host decided {w}, the store holds {g}",
                    key.0, key.1
                )
                .into());
            }
            short += w - g;
        }
    }
    if short != dropped {
        return Err(
            format!("{short} detached events are missing, but {dropped} were dropped").into(),
        );
    }
    Ok(())
}

fn run(args: &Args) -> Result<(), BoxError> {
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("store"));
    let store = Store::open(&dir, StoreOptions::default())?;
    let start = store.next_offset();
    println!(
        "store:    {} (from offset {start}), seed {}",
        dir.display(),
        args.seed
    );

    let started = Instant::now();
    let reports = run_all(&store, args.seed)?;
    // Closing commits the detached events still queued, then syncs.
    store.close()?;
    let metrics = store.metrics();
    let seconds = started.elapsed().as_secs_f64();
    print_runs(&reports);
    println!("time:     {seconds:.2} s");
    for report in &reports {
        for failure in &report.failures {
            println!("  failed to record: {failure}");
        }
    }

    // A reader beside (here: after) the writer sees every committed event.
    let reader = Store::open_read_only(&dir)?;
    let read = read_back(&reader, start)?;
    println!(
        "read:     {} events in {} pages of at most {PAGE_LIMIT} (Query::all_tenants), {} gap markers covering {} dropped events",
        read.events, read.pages, read.gap_markers, read.dropped_in_gaps,
    );
    print_table(&read.counts);
    print_metrics(&metrics);

    let mut decided = Counts::new();
    for report in &reports {
        merge(&mut decided, &report.decided);
    }
    check_tenants(&reader, start, &read.counts)?;
    compare(&decided, &read, metrics.dropped)?;
    if reports.iter().any(|r| !r.failures.is_empty()) {
        return Err("some outcomes could not be recorded".into());
    }
    println!("check:    the store holds exactly what the policy decided");
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("step_enforcement: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("step_enforcement: error: {e}");
            ExitCode::FAILURE
        }
    }
}
