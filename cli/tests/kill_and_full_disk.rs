//! Real crashes and really full disks, against the built `enforcelog` binary
//! (issue 8).
//!
//! The crash simulation in `crash_sim.rs` crashes a store inside the test
//! process through the fault-injecting storage; this file does it to a real
//! process on a real file system:
//!
//! - `sigkill_at_random_moments_leaves_a_whole_batch_prefix` starts
//!   `enforcelog import` (and `enforcelog demo`) and sends SIGKILL at a seeded
//!   random moment of its life, many times, mostly into stores that already
//!   hold earlier imports, segments and checkpoints. After every kill the
//!   store must verify clean, open (CLI readers and the library writer), and
//!   hold exactly what was sent before plus a prefix of whole `--batch`
//!   batches of the killed import, in input order; statistics must equal a
//!   brute-force count over the dump. `ENFORCELOG_KILLS=n` asks for n kills
//!   (default 50), `ENFORCELOG_SEED` replays a run's choices (the kill
//!   moments themselves depend on the machine's timing).
//!   About half the runs pass the CLI's hidden `--segment-max-bytes` (64 KiB,
//!   or 1 MiB for the shape whose batches are 450 KB), so kills land across
//!   segment rolls of the killed process itself; the library writer this
//!   test opens between runs rolls too (16 KiB segments), so later kills
//!   meet multi-segment stores.
//! - The full-disk tests run the binary under a small `RLIMIT_FSIZE` (writes
//!   past it fail with EFBIG once SIGXFSZ is ignored) and, where mounting is
//!   permitted (root), on a tiny tmpfs (real ENOSPC), and skip with a printed
//!   reason where the mechanism is missing. The writer must stop with a
//!   clear error and exit code 4, and once space is back the store verifies,
//!   opens, holds a whole-batch prefix, and takes further imports; an import
//!   whose every batch committed must not report failure because the
//!   statistics checkpoint (derived data) did not fit; and the error must be
//!   the one plain line the CLI promises.
//!
//! Every event sent is self-describing: its run id names the store, the
//! import and the batch it belongs to, and its details carry its sequence
//! number, so a torn or reordered batch shows up as a field mismatch.

#![cfg(unix)]

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::disk::Mount;
use common::process::{self, Out, Watchdog};
use common::Rng;
use enforcelog::timestamp::{format_us, parse_us};
use enforcelog::{
    now_us, Action, Entry, Event, LogOptions, RuleStats, Store, StoreOptions, StoredEvent,
};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");
const DEFAULT_SEED: u64 = 0x0008_4B11_1ED5;
const DEFAULT_KILLS: u64 = 50;
const DAY_US: i64 = 86_400_000_000;
/// The statistics window the CLI and the library count by default.
const WINDOW_US: i64 = 30 * DAY_US;
const SIGKILL: i32 = 9;
const SIGXFSZ: i32 = 25;
/// Exit code of an I/O failure (a full disk among them).
const EXIT_IO: i32 = 4;

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

thread_local! {
    /// The binary this test thread runs: a private link to (or copy of) the
    /// one cargo built, taken once per test, so that a concurrent `cargo
    /// build` replacing it cannot pull it away in the middle of a campaign.
    /// The directory goes when the test's thread ends.
    static BINARY: (TempDir, PathBuf) = {
        let dir = tempfile::tempdir().expect("binary directory");
        let path = dir.path().join("enforcelog");
        if fs::hard_link(BIN, &path).is_err() {
            fs::copy(BIN, &path).expect("copy the enforcelog binary");
        }
        (dir, path)
    };
}

fn binary() -> PathBuf {
    BINARY.with(|(_, path)| path.clone())
}

/// `enforcelog --data-dir DIR` with a clean environment, stdin closed and
/// backtraces on (so a panic could not hide).
fn enforcelog(dir: &Path) -> Command {
    let mut cmd = process::command(binary());
    cmd.arg("--data-dir").arg(dir).stdin(Stdio::null());
    cmd
}

/// When a run is killed, for messages.
fn moment(delay: Option<Duration>) -> String {
    match delay {
        Some(d) => format!("killed after {d:?}"),
        None => "run through to measure its lifetime".into(),
    }
}

/// A run that is not killed on purpose may take 30 s at most.
const WATCHDOG: Watchdog = Watchdog {
    limit: Duration::from_secs(30),
    panic_signs: &["panicked", "stack backtrace", "internal error"],
};

impl Out {
    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(self.status.code(), Some(code), "{}", self.show());
        self
    }
}

/// Runs `cmd` to completion and checks that it neither panicked nor died
/// of a signal.
fn run(cmd: Command, ctx: &str) -> Out {
    let what = format!("{ctx}: {}", process::describe(&cmd));
    WATCHDOG.run(cmd, what, None)
}

// ---------------------------------------------------------------------------
// Self-describing events
// ---------------------------------------------------------------------------

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const RULES: [&str; 5] = ["budget", "prod-write", "rate", "tool", "exfil"];

/// One event as `dump` prints it (without "offset" and "kind"): the run id
/// names its store, import and batch; details carry its sequence number.
fn event_value(rng: &mut Rng, as_of_us: i64, run_id: String, seq: usize, pad: usize) -> Value {
    // Mostly inside the last 45 days; one in twenty after the as-of instant,
    // so the statistics' "at or before T" matters.
    let at_us = if rng.below(20) == 0 {
        as_of_us + 1 + rng.below(DAY_US as u64) as i64
    } else {
        as_of_us - rng.below(45 * DAY_US as u64) as i64
    };
    let mut details = json!({"seq": seq});
    if pad > 0 {
        details["pad"] = Value::String("p".repeat(pad));
    }
    json!({
        "tenant_id": rng.pick(&TENANTS),
        "rule_id": rng.pick(&RULES),
        "action_taken": rng.pick(&Action::ALL).as_str(),
        "run_id": run_id,
        "details": details,
        "enforced_at": format_us(at_us),
    })
}

/// `count` events cut into batches of `batch`; batch j of import `import`
/// into store `store` has run id `s<store>-i<import>-b<j>`.
fn import_events(
    rng: &mut Rng,
    as_of_us: i64,
    (store, import): (usize, usize),
    count: usize,
    batch: usize,
    pad: usize,
    first_seq: usize,
) -> Vec<Value> {
    (0..count)
        .map(|i| {
            let run_id = format!("s{store}-i{import}-b{}", i / batch);
            event_value(rng, as_of_us, run_id, first_seq + i, pad)
        })
        .collect()
}

fn write_jsonl(path: &Path, events: &[Value]) {
    let mut text = String::new();
    for e in events {
        text.push_str(&e.to_string());
        text.push('\n');
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The library's view of an event, in the dump's shape.
fn stored_value(e: &StoredEvent) -> Value {
    let mut map = Map::new();
    map.insert("tenant_id".into(), e.tenant_id.clone().into());
    map.insert("rule_id".into(), e.rule_id.clone().into());
    map.insert("action_taken".into(), e.action.as_str().into());
    if let Some(run_id) = &e.run_id {
        map.insert("run_id".into(), run_id.clone().into());
    }
    if let Some(details) = &e.details {
        map.insert("details".into(), Value::Object(details.clone()));
    }
    map.insert("enforced_at".into(), format_us(e.enforced_at_us).into());
    Value::Object(map)
}

fn event_of(v: &Value) -> Event {
    let action: Action = v["action_taken"].as_str().unwrap().parse().unwrap();
    Event::new(
        v["tenant_id"].as_str().unwrap(),
        v["rule_id"].as_str().unwrap(),
        action,
    )
    .with_run_id(v["run_id"].as_str().unwrap())
    .with_details(common::object(v["details"].clone()))
    .at_us(parse_us(v["enforced_at"].as_str().unwrap()).unwrap())
}

/// The first index where `got` and `want` differ, shown.
fn first_difference(got: &[Value], want: &[Value]) -> String {
    match got.iter().zip(want).position(|(g, w)| g != w) {
        Some(i) => format!(
            "first difference at index {i}:\n  got  {}\n  want {}",
            got[i], want[i]
        ),
        None => format!("lengths differ: got {}, want {}", got.len(), want.len()),
    }
}

// ---------------------------------------------------------------------------
// Statistics, brute force
// ---------------------------------------------------------------------------

/// What `stats` says about one (tenant, rule).
#[derive(Debug, PartialEq, Eq, Default)]
struct Counted {
    window: u64,
    total: u64,
    last_us: Option<i64>,
    /// Window counts by action, zeros left out.
    by_action: BTreeMap<String, u64>,
}

type StatsMap = BTreeMap<(String, String), Counted>;

/// The statistics as of `as_of_us`, counted event by event over a dump:
/// window (T - 30 d, T], total and last at or before T.
fn brute_stats(events: &[Value], as_of_us: i64) -> StatsMap {
    let mut map = StatsMap::new();
    for e in events {
        let at = parse_us(e["enforced_at"].as_str().expect("enforced_at")).expect("time");
        if at > as_of_us {
            continue;
        }
        let key = (
            e["tenant_id"].as_str().unwrap().to_string(),
            e["rule_id"].as_str().unwrap().to_string(),
        );
        let c = map.entry(key).or_default();
        c.total += 1;
        c.last_us = c.last_us.max(Some(at));
        if at > as_of_us - WINDOW_US {
            c.window += 1;
            let action = e["action_taken"].as_str().unwrap().to_string();
            *c.by_action.entry(action).or_default() += 1;
        }
    }
    map
}

fn library_stats(rules: &[RuleStats]) -> StatsMap {
    rules
        .iter()
        .map(|r| {
            let by_action = Action::ALL
                .iter()
                .map(|a| (a.as_str().to_string(), r.count_for(*a)))
                .filter(|(_, n)| *n > 0)
                .collect();
            let counted = Counted {
                window: r.trigger_count,
                total: r.total_count,
                last_us: r.last_triggered_at_us,
                by_action,
            };
            ((r.tenant_id.clone(), r.rule_id.clone()), counted)
        })
        .collect()
}

/// `enforcelog stats --format json --as-of T`, checked against a brute-force
/// count over `events`.
fn check_cli_stats(dir: &Path, events: &[Value], as_of_us: i64, ctx: &str) {
    let mut cmd = enforcelog(dir);
    cmd.args(["stats", "--format", "json", "--as-of"])
        .arg(format_us(as_of_us));
    let out = run(cmd, ctx);
    out.expect(0);
    let report: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("stats is not JSON ({e}): {}", out.show()));
    let rules = report["rules"].as_array().expect("rules array");
    let got: StatsMap = rules
        .iter()
        .map(|r| {
            let last_us = r["last_triggered_at"]
                .as_str()
                .map(|t| parse_us(t).unwrap());
            assert_eq!(r["window"], "30d", "{r}");
            let by_action = r["by_action"]
                .as_object()
                .expect("by_action")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .filter(|(_, n)| *n > 0)
                .collect();
            let counted = Counted {
                window: r["trigger_count"].as_u64().unwrap(),
                total: r["total_count"].as_u64().unwrap(),
                last_us,
                by_action,
            };
            let key = (
                r["tenant_id"].as_str().unwrap().to_string(),
                r["rule_id"].as_str().unwrap().to_string(),
            );
            (key, counted)
        })
        .collect();
    assert_eq!(
        got,
        brute_stats(events, as_of_us),
        "{ctx}: `stats` differs from a count over the dump"
    );
}

// ---------------------------------------------------------------------------
// Checks after a crash
// ---------------------------------------------------------------------------

/// What a clean `verify` reported.
#[derive(Debug, Default)]
struct Verified {
    next_offset: u64,
    torn_tails: u64,
    index_warnings: u64,
    checkpoint_warnings: u64,
}

/// `enforcelog verify` must exit 0 with its one-line summary; warnings
/// (stderr) may only be of the kinds a crash can leave and the next open
/// rebuilds: a torn tail, a stale index, an unusable checkpoint.
fn verify_clean(dir: &Path, ctx: &str) -> Verified {
    let out = run(
        {
            let mut cmd = enforcelog(dir);
            cmd.arg("verify");
            cmd
        },
        ctx,
    );
    out.expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("ok: "),
        "verify should print one summary line: {}",
        out.show()
    );
    let next_offset = lines[0]
        .rsplit("next offset ")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no next offset in the summary: {}", out.show()));
    let mut v = Verified {
        next_offset,
        ..Verified::default()
    };
    for line in out.stderr.lines().filter(|l| !l.trim().is_empty()) {
        if line.contains("(torn tail:") {
            v.torn_tails += 1;
        } else if line.contains("(derived data:") {
            v.index_warnings += 1;
        } else if line.contains("(ignored; rebuilt from the log on the next open)") {
            v.checkpoint_warnings += 1;
        } else {
            panic!("unexpected line from verify: {line:?}\n{}", out.show());
        }
    }
    v
}

/// What the CLI readers see of a store after a crash.
struct Observed {
    /// False when the kill came before the store was created: `verify` and
    /// `dump` then say there is no store (exit 2).
    exists: bool,
    verified: Verified,
    events: Vec<Value>,
}

/// `verify` clean and `dump` in agreement with it, or both saying that
/// there is no store yet.
fn observe(dir: &Path, ctx: &str) -> Observed {
    let out = run(
        {
            let mut cmd = enforcelog(dir);
            cmd.arg("verify");
            cmd
        },
        ctx,
    );
    if out.status.code() == Some(2) && out.stderr.contains("error: no store at ") {
        let mut cmd = enforcelog(dir);
        cmd.arg("dump");
        run(cmd, ctx).expect(2);
        return Observed {
            exists: false,
            verified: Verified::default(),
            events: Vec::new(),
        };
    }
    let verified = verify_clean(dir, ctx);
    let events = dump(dir, ctx);
    // `verify` counts every whole batch in the files; `dump`, a reader,
    // stops at the durable end the killed writer last published. Between
    // them lies at most what the killed process wrote after its last fsync
    // (never acknowledged), which the next writer open adopts.
    assert!(
        events.len() as u64 <= verified.next_offset,
        "{ctx}: the dump ({}) reads past verify's next offset {}",
        events.len(),
        verified.next_offset
    );
    // A restart, as a host would make one: the writer open adopts that tail
    // (or cuts a torn one) and publishes the end; every later read, in this
    // process or another, then agrees with verify.
    // On a full disk the open may be refused (a fresh store writes its id
    // first): then the reads stand as they are.
    match enforcelog::Log::open(dir, LogOptions::default()) {
        Ok(log) => {
            log.close()
                .unwrap_or_else(|e| panic!("{ctx}: close after the kill: {e}"));
        }
        Err(enforcelog::Error::Io { .. }) => {
            return Observed {
                exists: true,
                verified,
                events,
            }
        }
        Err(e) => panic!("{ctx}: writer open after the kill: {e}"),
    }
    let adopted = dump(dir, ctx);
    assert!(
        adopted.len() >= events.len() && adopted[..events.len()] == events[..],
        "{ctx}: the writer open changed what readers had seen"
    );
    let events = adopted;
    Observed {
        exists: true,
        verified,
        events,
    }
}

/// `enforcelog dump`: every entry an event, offsets dense from 0. Returns
/// the events without "offset" and "kind".
fn dump(dir: &Path, ctx: &str) -> Vec<Value> {
    let out = run(
        {
            let mut cmd = enforcelog(dir);
            cmd.arg("dump");
            cmd
        },
        ctx,
    );
    out.expect(0);
    out.stdout
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let mut v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{ctx}: dump line {i} is not JSON ({e}): {line}"));
            let map = v.as_object_mut().expect("dump line is an object");
            assert_eq!(map.remove("offset"), Some(json!(i)), "{ctx}: offsets dense");
            assert_eq!(
                map.remove("kind"),
                Some(json!("enforcement")),
                "{ctx}: line {i}"
            );
            v
        })
        .collect()
}

/// Opens the store as a writer in this process (which cuts a torn tail),
/// checks its entries and statistics against `events`, appends `append`
/// (each inner list one atomic batch) and closes it.
fn check_library(dir: &Path, events: &[Value], as_of_us: i64, append: &[Vec<Value>], ctx: &str) {
    let mut log = LogOptions::default();
    if !append.is_empty() {
        // Small segments: the next append rolls to a new segment.
        log.segment_max_bytes = 16 << 10;
        log.record_max_bytes = 4 << 10;
    }
    let options = StoreOptions {
        log,
        // Generated times reach days past now: not what this checks.
        max_future_skew: std::time::Duration::MAX,
        ..StoreOptions::default()
    };
    let store =
        Store::open(dir, options).unwrap_or_else(|e| panic!("{ctx}: Store::open failed: {e}"));
    check_open_store(&store, events, as_of_us, ctx);
    for batch in append {
        let mut b = store.begin();
        for v in batch {
            b.record(event_of(v)).expect("record into batch");
        }
        b.commit_blocking()
            .unwrap_or_else(|e| panic!("{ctx}: library append: {e}"));
    }
    store
        .close()
        .unwrap_or_else(|e| panic!("{ctx}: close: {e}"));
}

/// Opens the store read-only in this process (nothing on disk changes) and
/// checks its entries and statistics against `events`.
fn check_library_read_only(dir: &Path, events: &[Value], as_of_us: i64, ctx: &str) {
    let store = Store::open_read_only(dir)
        .unwrap_or_else(|e| panic!("{ctx}: Store::open_read_only failed: {e}"));
    check_open_store(&store, events, as_of_us, ctx);
}

/// The library's entries and statistics of an open store against `events`.
fn check_open_store(store: &Store, events: &[Value], as_of_us: i64, ctx: &str) {
    assert_eq!(
        store.next_offset(),
        events.len() as u64,
        "{ctx}: next offset"
    );
    let mut seen = 0usize;
    for (i, entry) in store.entries(0).expect("entries").enumerate() {
        let entry = entry.unwrap_or_else(|e| panic!("{ctx}: reading entry {i}: {e}"));
        let Entry::Event(stored) = entry else {
            panic!("{ctx}: entry {i} is a gap marker: {entry:?}");
        };
        assert_eq!(stored.offset, i as u64, "{ctx}");
        assert_eq!(
            stored_value(&stored),
            events[i],
            "{ctx}: entry {i} (library)"
        );
        seen += 1;
    }
    assert_eq!(seen, events.len(), "{ctx}: entries through the library");
    let rules = store
        .stats_all(Some(as_of_us))
        .unwrap_or_else(|e| panic!("{ctx}: stats_all: {e}"));
    assert_eq!(
        library_stats(&rules),
        brute_stats(events, as_of_us),
        "{ctx}: library statistics differ from a count over the entries"
    );
}

/// After a writer open and close the store must verify without even a
/// warning: the open cut any torn tail, the close wrote every checkpoint.
fn verify_spotless(dir: &Path, ctx: &str) {
    let v = verify_clean(dir, ctx);
    assert!(
        v.torn_tails + v.index_warnings + v.checkpoint_warnings == 0,
        "{ctx}: warnings from verify after a writer open and close: {v:?}"
    );
}

/// `dump` must be `prior`, then a prefix of `sent` made of whole batches of
/// `batch` events (or all of `sent`). Returns how many of `sent` are there.
fn check_whole_batch_prefix(
    dump: &[Value],
    prior: &[Value],
    sent: &[Value],
    batch: usize,
    ctx: &str,
) -> usize {
    assert!(
        dump.len() >= prior.len(),
        "{ctx}: {} events in the store, fewer than the {} committed before this run",
        dump.len(),
        prior.len()
    );
    assert!(
        dump[..prior.len()] == *prior,
        "{ctx}: earlier events changed; {}",
        first_difference(&dump[..prior.len()], prior)
    );
    let new = &dump[prior.len()..];
    assert!(
        new.len() <= sent.len(),
        "{ctx}: {} new events, but only {} were sent",
        new.len(),
        sent.len()
    );
    assert!(
        *new == sent[..new.len()],
        "{ctx}: the new events are not the input in order; {}",
        first_difference(new, &sent[..new.len()])
    );
    assert!(
        new.len() == sent.len() || new.len().is_multiple_of(batch),
        "{ctx}: {} of {} events: not a whole number of batches of {batch} (torn batch {}: {})",
        new.len(),
        sent.len(),
        new.len() / batch,
        new.last().map_or(String::new(), Value::to_string)
    );
    new.len()
}

// ---------------------------------------------------------------------------
// Killing at random moments
// ---------------------------------------------------------------------------

/// One shape of import: its batch size, size, durability and event padding.
struct ImportShape {
    batch: usize,
    events: usize,
    durability: &'static str,
    pad: usize,
}

/// Each lives roughly 30 to 100 ms uninterrupted on an idle machine with
/// an SSD; the first use of each measures it.
#[rustfmt::skip]
const SHAPES: [ImportShape; 7] = [
    ImportShape { batch: 1, events: 150, durability: "fsync", pad: 0 },
    ImportShape { batch: 3, events: 450, durability: "fsync", pad: 0 },
    ImportShape { batch: 16, events: 2400, durability: "fsync", pad: 0 },
    ImportShape { batch: 100, events: 5000, durability: "fsync", pad: 40 },
    // Batches of about 450 KB: one write each.
    ImportShape { batch: 1000, events: 6000, durability: "fsync", pad: 400 },
    ImportShape { batch: 7, events: 6000, durability: "none", pad: 0 },
    ImportShape { batch: 50, events: 6000, durability: "interval:2ms", pad: 0 },
];

/// One shape of demo run.
struct DemoShape {
    events: u64,
    producers: u32,
    durability: &'static str,
}

#[rustfmt::skip]
const DEMOS: [DemoShape; 2] = [
    DemoShape { events: 3000, producers: 4, durability: "fsync" },
    DemoShape { events: 6000, producers: 8, durability: "none" },
];

/// How a run ended.
enum Ending {
    Killed,
    Finished,
}

/// Starts `cmd` (output to files, shown if it fails) and, with a delay,
/// sends SIGKILL that long after the start. Returns how it ended and how
/// long it lived.
fn run_and_kill(
    mut cmd: Command,
    delay: Option<Duration>,
    scratch: &Path,
    ctx: &str,
) -> (Ending, Duration) {
    let what = format!("{ctx}: {}", process::describe(&cmd));
    let out_path = scratch.join("run.stdout");
    let err_path = scratch.join("run.stderr");
    cmd.stdout(File::create(&out_path).expect("stdout file"))
        .stderr(File::create(&err_path).expect("stderr file"));
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: spawn: {e}"));
    let status = match delay {
        Some(delay) => {
            // The random moment of the kill: this sleep is the experiment,
            // not synchronisation.
            thread::sleep(delay);
            // SIGKILL (a zombie that already finished ignores it).
            let _ = child.kill();
            child.wait().expect("wait")
        }
        None => WATCHDOG.wait(&mut child, &what),
    };
    let lived = started.elapsed();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.signal() == Some(SIGKILL) && delay.is_some() {
        return (Ending::Killed, lived);
    }
    assert_eq!(
        status.code(),
        Some(0),
        "{what}: ended on its own, and not with success\n--- stderr:\n{}",
        process::clip(&stderr)
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("internal error"),
        "{what}: {stderr}"
    );
    (Ending::Finished, lived)
}

/// A store the imports go into, and everything it must hold.
struct ImportStore {
    id: usize,
    dir: PathBuf,
    expected: Vec<Value>,
    runs: usize,
    runs_max: usize,
    library_batches: usize,
}

/// A store the demo writes into; its content is what the last check saw.
struct DemoStore {
    id: usize,
    dir: PathBuf,
    content: Vec<Value>,
    runs: usize,
    runs_max: usize,
}

#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    kills: u64,
    import_kills: u64,
    import_mid_append: u64,
    import_killed_before_any: u64,
    import_killed_after_all: u64,
    demo_kills: u64,
    demo_mid_append: u64,
    finished: u64,
    events_recovered: u64,
    torn_tails: u64,
    index_warnings: u64,
    checkpoint_warnings: u64,
    library_opens: u64,
    library_read_only_opens: u64,
    library_batches: u64,
    segments_max: usize,
    import_stores: usize,
    demo_stores: usize,
    /// Runs given `--segment-max-bytes`, so that the process rolls.
    small_segment_runs: u64,
}

/// Everything the kill loop carries from one run to the next.
struct Campaign {
    seed: u64,
    rng: Rng,
    tmp: TempDir,
    as_of_us: i64,
    /// Lifetime of one uninterrupted run, per import shape and per demo shape.
    import_lifetimes: Vec<Option<Duration>>,
    demo_lifetimes: Vec<Option<Duration>>,
    imports: Option<ImportStore>,
    demos: Option<DemoStore>,
    tally: Tally,
}

impl Campaign {
    /// A delay uniform over the process's measured lifetime, or `None` (run
    /// it through, and measure it) the first time a shape is used.
    fn delay(&mut self, lifetime: Option<Duration>) -> Option<Duration> {
        lifetime.map(|t| Duration::from_micros(self.rng.below(t.as_micros().max(1) as u64)))
    }

    fn import_store(&mut self) -> &mut ImportStore {
        let full = self.imports.as_ref().is_none_or(|s| s.runs >= s.runs_max);
        if full {
            if let Some(old) = self.imports.take() {
                let _ = fs::remove_dir_all(&old.dir);
            }
            let id = self.tally.import_stores;
            self.tally.import_stores += 1;
            self.imports = Some(ImportStore {
                id,
                dir: self.tmp.path().join(format!("imports-{id}")),
                expected: Vec::new(),
                runs: 0,
                runs_max: 3 + self.rng.below(6) as usize,
                library_batches: 0,
            });
        }
        self.imports.as_mut().expect("an import store")
    }

    fn demo_store(&mut self) -> &mut DemoStore {
        let full = self.demos.as_ref().is_none_or(|s| s.runs >= s.runs_max);
        if full {
            if let Some(old) = self.demos.take() {
                let _ = fs::remove_dir_all(&old.dir);
            }
            let id = self.tally.demo_stores;
            self.tally.demo_stores += 1;
            self.demos = Some(DemoStore {
                id,
                dir: self.tmp.path().join(format!("demo-{id}")),
                content: Vec::new(),
                runs: 0,
                runs_max: 2 + self.rng.below(4) as usize,
            });
        }
        self.demos.as_mut().expect("a demo store")
    }

    fn count_warnings(&mut self, v: &Verified) {
        self.tally.torn_tails += v.torn_tails;
        self.tally.index_warnings += v.index_warnings;
        self.tally.checkpoint_warnings += v.checkpoint_warnings;
    }

    /// One import into the current import store, killed at a random moment
    /// (or run through, the first time its shape is used), then checked.
    fn import_round(&mut self) {
        let shape_index = self.rng.below(SHAPES.len() as u64) as usize;
        let shape = &SHAPES[shape_index];
        let lifetime = self.import_lifetimes[shape_index];
        let delay = self.delay(lifetime);
        let as_of_us = self.as_of_us;
        let (seed, run_no) = (self.seed, self.tally.runs);
        let mut rng = Rng(self.rng.next());
        let store = self.import_store();
        let import = store.runs;
        store.runs += 1;
        let sent = import_events(
            &mut rng,
            as_of_us,
            (store.id, import),
            shape.events,
            shape.batch,
            shape.pad,
            store.expected.len(),
        );
        let ctx = format!(
            "seed {seed}, run {run_no}: store imports-{} import {import} (--batch {} of {} events, \
             --durability {}), {}",
            store.id, shape.batch, shape.events, shape.durability, moment(delay)
        );
        let (dir, input) = (store.dir.clone(), self.tmp.path().join("input.jsonl"));
        write_jsonl(&input, &sent);
        let mut cmd = enforcelog(&dir);
        if self.rng.chance(50) {
            // Small segments: the killed import rolls while it runs.
            let bytes: u64 = if shape.batch * (shape.pad + 500) > 32 << 10 {
                1 << 20
            } else {
                64 << 10
            };
            cmd.args(["--segment-max-bytes", &bytes.to_string()]);
            self.tally.small_segment_runs += 1;
        }
        // Generated times reach days past now: not what these runs test.
        cmd.args([
            "--durability",
            shape.durability,
            "import",
            "--max-future-skew",
            "none",
            "--batch",
        ])
        .arg(shape.batch.to_string())
        .arg(&input);
        let (ending, lived) = run_and_kill(cmd, delay, self.tmp.path(), &ctx);
        if lifetime.is_none() {
            self.import_lifetimes[shape_index] = Some(lived);
        }

        let observed = observe(&dir, &ctx);
        self.count_warnings(&observed.verified);
        let events = observed.events;
        let store = self.imports.as_ref().expect("store");
        let landed = check_whole_batch_prefix(&events, &store.expected, &sent, shape.batch, &ctx);
        match ending {
            Ending::Finished => {
                assert_eq!(
                    landed,
                    sent.len(),
                    "{ctx}: a finished import must be complete"
                );
                self.tally.finished += 1;
            }
            Ending::Killed => {
                self.tally.kills += 1;
                self.tally.import_kills += 1;
                self.tally.events_recovered += landed as u64;
                match landed {
                    0 => self.tally.import_killed_before_any += 1,
                    n if n == sent.len() => self.tally.import_killed_after_all += 1,
                    _ => self.tally.import_mid_append += 1,
                }
            }
        }
        if observed.exists {
            check_cli_stats(&dir, &events, as_of_us, &ctx);
        }
        self.library_round(events, observed.exists, &ctx);
    }

    /// Two times in three, opens the import store in this process (a writer
    /// open: it cuts a torn tail), checks it, sometimes appends a batch or
    /// two that force a segment roll, and verifies that nothing is left to
    /// warn about. The third time the next import meets the store exactly
    /// as the kill left it.
    fn library_round(&mut self, events: Vec<Value>, exists: bool, ctx: &str) {
        let open = self.rng.below(3) != 0;
        let append_batches = if open && self.rng.below(3) == 0 {
            1 + self.rng.below(2) as usize
        } else {
            0
        };
        let as_of_us = self.as_of_us;
        let mut rng = Rng(self.rng.next());
        let store = self.imports.as_mut().expect("store");
        store.expected = events;
        if !open {
            if exists {
                check_library_read_only(&store.dir, &store.expected, as_of_us, ctx);
                self.tally.library_read_only_opens += 1;
            }
            return;
        }
        let mut append = Vec::new();
        for _ in 0..append_batches {
            let k = store.library_batches;
            store.library_batches += 1;
            let n = 1 + rng.below(40) as usize;
            let first_seq = store.expected.len() + append.iter().map(Vec::len).sum::<usize>();
            append.push(
                (0..n)
                    .map(|i| {
                        let run_id = format!("s{}-lib{k}", store.id);
                        event_value(&mut rng, as_of_us, run_id, first_seq + i, 0)
                    })
                    .collect::<Vec<_>>(),
            );
        }
        check_library(&store.dir, &store.expected, as_of_us, &append, ctx);
        for batch in append {
            store.expected.extend(batch);
            self.tally.library_batches += 1;
        }
        self.tally.library_opens += 1;
        let segments = segment_count(&store.dir);
        self.tally.segments_max = self.tally.segments_max.max(segments);
        verify_spotless(&store.dir, ctx);
        let dir = store.dir.clone();
        let got = dump(&dir, ctx);
        let store = self.imports.as_ref().expect("store");
        assert!(
            got == store.expected,
            "{ctx}: after the library open and appends; {}",
            first_difference(&got, &store.expected)
        );
    }

    /// One demo run into the current demo store, killed at a random moment
    /// (or run through the first time its shape is used), then checked:
    /// verify clean, dense offsets, what was there before unchanged, at
    /// most the run's events added, statistics equal to a brute-force
    /// count, and a library open that agrees.
    fn demo_round(&mut self) {
        let shape_index = self.rng.below(DEMOS.len() as u64) as usize;
        let shape = &DEMOS[shape_index];
        let lifetime = self.demo_lifetimes[shape_index];
        let delay = self.delay(lifetime);
        let demo_seed = self.rng.next();
        let (seed, run_no) = (self.seed, self.tally.runs);
        let store = self.demo_store();
        store.runs += 1;
        let ctx = format!(
            "seed {seed}, run {run_no}: store demo-{} demo run {} ({} events, {} producers, \
             --durability {}), {}",
            store.id,
            store.runs,
            shape.events,
            shape.producers,
            shape.durability,
            moment(delay)
        );
        let dir = store.dir.clone();
        let mut cmd = enforcelog(&dir);
        if self.rng.chance(50) {
            cmd.args(["--segment-max-bytes", &(64u64 << 10).to_string()]);
            self.tally.small_segment_runs += 1;
        }
        cmd.args([
            "--durability",
            shape.durability,
            "demo",
            "--tenants",
            "3",
            "--rules",
            "5",
        ])
        .arg("--dir")
        .arg(&dir)
        .args(["--events", &shape.events.to_string()])
        .args(["--producers", &shape.producers.to_string()])
        .args(["--seed", &demo_seed.to_string()]);
        let (ending, lived) = run_and_kill(cmd, delay, self.tmp.path(), &ctx);
        if lifetime.is_none() {
            self.demo_lifetimes[shape_index] = Some(lived);
        }

        let observed = observe(&dir, &ctx);
        self.count_warnings(&observed.verified);
        let events = observed.events;
        let store = self.demos.as_ref().expect("store");
        let prior = store.content.len();
        assert!(
            events.len() >= prior && events[..prior] == store.content[..],
            "{ctx}: what the store held before this run changed ({} events now, {prior} before)",
            events.len()
        );
        let added = (events.len() - prior) as u64;
        assert!(
            added <= shape.events,
            "{ctx}: {added} events added by a demo of {}",
            shape.events
        );
        match ending {
            Ending::Finished => {
                assert_eq!(
                    added, shape.events,
                    "{ctx}: a finished demo records every event"
                );
                self.tally.finished += 1;
            }
            Ending::Killed => {
                self.tally.kills += 1;
                self.tally.demo_kills += 1;
                self.tally.events_recovered += added;
                if added > 0 && added < shape.events {
                    self.tally.demo_mid_append += 1;
                }
            }
        }
        let as_of_us = now_us();
        if observed.exists {
            check_cli_stats(&dir, &events, as_of_us, &ctx);
        }
        if self.rng.below(2) == 0 {
            check_library(&dir, &events, as_of_us, &[], &ctx);
            self.tally.library_opens += 1;
            verify_spotless(&dir, &ctx);
        } else if observed.exists {
            check_library_read_only(&dir, &events, as_of_us, &ctx);
            self.tally.library_read_only_opens += 1;
        }
        self.demos.as_mut().expect("store").content = events;
    }
}

/// SIGKILL at random moments of imports (batch sizes 1 to 1000, every
/// durability mode, into fresh stores and stores with earlier imports,
/// library-rolled segments and checkpoints) and of demos (concurrent
/// producers). After each kill: `verify` clean, the store opens through
/// the CLI and the library, and holds exactly the earlier content plus a
/// prefix of whole batches of the killed import, in order; statistics
/// equal a brute-force count.
#[test]
fn sigkill_at_random_moments_leaves_a_whole_batch_prefix() {
    let seed = common::seed_or(DEFAULT_SEED);
    let wanted = common::env_or("ENFORCELOG_KILLS", DEFAULT_KILLS);
    eprintln!("seed {seed} (replay: ENFORCELOG_SEED={seed}), {wanted} kills wanted");
    let started = Instant::now();
    let mut campaign = Campaign {
        seed,
        rng: Rng(seed),
        tmp: tempfile::tempdir().expect("tempdir"),
        as_of_us: now_us(),
        import_lifetimes: vec![None; SHAPES.len()],
        demo_lifetimes: vec![None; DEMOS.len()],
        imports: None,
        demos: None,
        tally: Tally::default(),
    };
    while campaign.tally.kills < wanted {
        assert!(
            campaign.tally.runs < 2 * wanted + 40,
            "seed {seed}: {} runs gave only {} kills: the processes end before the kill",
            campaign.tally.runs,
            campaign.tally.kills
        );
        if campaign.rng.below(5) == 0 {
            campaign.demo_round();
        } else {
            campaign.import_round();
        }
        campaign.tally.runs += 1;
    }
    let t = &campaign.tally;
    eprintln!(
        "{} kills in {} runs ({} finished first) in {:.1} s: imports killed {} (mid-append {}, \
         before the first batch {}, after the last {}), demos killed {} (mid-append {}); \
         {} events recovered from killed runs; verify warnings: {} torn tails, {} index, {} \
         checkpoint; library opens: {} writer, {} read-only; {} library batches (up to {} \
         segments in a store); {} import stores, {} demo stores; {} runs with small segments",
        t.kills,
        t.runs,
        t.finished,
        started.elapsed().as_secs_f64(),
        t.import_kills,
        t.import_mid_append,
        t.import_killed_before_any,
        t.import_killed_after_all,
        t.demo_kills,
        t.demo_mid_append,
        t.events_recovered,
        t.torn_tails,
        t.index_warnings,
        t.checkpoint_warnings,
        t.library_opens,
        t.library_read_only_opens,
        t.library_batches,
        t.segments_max,
        t.import_stores,
        t.demo_stores,
        t.small_segment_runs
    );
    eprintln!(
        "lifetimes measured: imports {:?}, demos {:?}",
        campaign.import_lifetimes, campaign.demo_lifetimes
    );
    assert!(
        t.import_mid_append + t.demo_mid_append > 0,
        "seed {seed}: no kill landed while appending: the delays miss the write phase"
    );
}

// ---------------------------------------------------------------------------
// A really full disk
// ---------------------------------------------------------------------------

/// Bytes per block of `sh`'s `ulimit -f` (512 for dash, 1024 for bash),
/// read back from the limit a child actually gets; `Err` says why the
/// mechanism is unavailable.
fn fsize_block_bytes() -> Result<u64, String> {
    const BLOCKS: u64 = 8;
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -f {BLOCKS} && exec cat /proc/self/limits"))
        .output()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ulimit -f` or /proc/self/limits unavailable: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let limits = String::from_utf8_lossy(&out.stdout);
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max file size"))
        .ok_or("no \"Max file size\" in /proc/self/limits")?;
    let soft: u64 = line
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("cannot read the limit from {line:?}"))?;
    Ok(soft / BLOCKS)
}

/// `enforcelog --data-dir DIR` under `ulimit -f BLOCKS`, with SIGXFSZ
/// ignored (an ignored signal stays ignored across exec) so that a write
/// past the limit fails with EFBIG instead of killing the process.
fn fsize_limited(dir: &Path, blocks: u64) -> Command {
    let mut cmd = process::command("sh");
    cmd.arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {blocks} || exit 97; exec \"$0\" \"$@\""
        ))
        .arg(binary())
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null());
    cmd
}

/// A run that hit the full disk: exit code 4, an `error:` line naming the
/// OS error `os_error`, no panic, not killed by a signal (SIGXFSZ among
/// them). Returns the error line.
#[track_caller]
fn expect_disk_full(out: &Out, os_error: &str) -> String {
    assert_ne!(out.status.signal(), Some(SIGXFSZ), "{}", out.show());
    out.expect(EXIT_IO);
    out.stderr
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains(os_error))
        .unwrap_or_else(|| panic!("no `error:` line naming {os_error:?}: {}", out.show()))
        .to_string()
}

/// How many segments `dir` holds.
fn segment_count(dir: &Path) -> usize {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                .count()
        })
        .unwrap_or(0)
}

/// The largest `.log` file in `dir`.
fn largest_segment_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .expect("list the store")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| e.metadata().expect("metadata").len())
        .max()
        .unwrap_or(0)
}

/// Checks a store after a failed (disk-full) import of `sent` on top of
/// `prior`, with space back: verify clean, a whole-batch prefix, statistics,
/// a library writer open, and nothing left to warn about afterwards.
/// Returns the store's events.
fn check_after_full_disk(
    dir: &Path,
    prior: &[Value],
    sent: &[Value],
    batch: usize,
    as_of_us: i64,
    ctx: &str,
) -> Vec<Value> {
    let observed = observe(dir, ctx);
    let landed = check_whole_batch_prefix(&observed.events, prior, sent, batch, ctx);
    assert!(
        landed < sent.len(),
        "{ctx}: the import failed, yet all {landed} events landed"
    );
    if observed.exists {
        check_cli_stats(dir, &observed.events, as_of_us, ctx);
    }
    check_library(dir, &observed.events, as_of_us, &[], ctx);
    verify_spotless(dir, ctx);
    eprintln!(
        "{ctx}: {landed} of {} events landed ({} whole batches of {batch}); verify after the \
         failure: {:?}",
        sent.len(),
        landed / batch,
        observed.verified
    );
    observed.events
}

/// Imports `sent` with no limit and checks the store holds `prior` + `sent`.
fn import_in_full(dir: &Path, input: &Path, prior: &[Value], sent: &[Value], ctx: &str) {
    let mut cmd = enforcelog(dir);
    cmd.args(["import", "--max-future-skew", "none", "--batch", "100"])
        .arg(input);
    run(cmd, ctx).expect(0);
    let events = observe(dir, ctx).events;
    let landed = check_whole_batch_prefix(&events, prior, sent, 100, ctx);
    assert_eq!(landed, sent.len(), "{ctx}: the import after the full disk");
}

/// Under a small RLIMIT_FSIZE the segment cannot grow past the limit: the
/// import (or demo) stops with exit code 4 and one `error:` line naming
/// EFBIG; without the limit the store verifies, opens, holds a whole-batch
/// prefix, and takes a further import. A second limited import into the
/// same store fails the same way without damage.
#[test]
fn a_full_disk_stops_the_writer_cleanly_and_the_store_reopens() {
    let seed = common::seed_or(DEFAULT_SEED);
    let block = match fsize_block_bytes() {
        Ok(block) => block,
        Err(why) => {
            eprintln!("skipped: RLIMIT_FSIZE through sh is unavailable: {why}");
            return;
        }
    };
    eprintln!(
        "seed {seed} (replay: ENFORCELOG_SEED={seed}); sh's `ulimit -f` block: {block} bytes"
    );
    let mut rng = Rng(seed ^ 0x000F_512E);
    let tmp = tempfile::tempdir().expect("tempdir");
    let input = tmp.path().join("input.jsonl");
    let as_of_us = now_us();
    for round in 0..3 {
        let dir = tmp.path().join(format!("store-{round}"));
        let first_blocks = (24 * 1024 + rng.below(200 * 1024)) / block;
        let batch = *rng.pick(&[1usize, 7, 64, 500]);
        let mut prior: Vec<Value> = Vec::new();
        // The second attempt runs under a limit twice as high: the disk got
        // some room back, and fills up again with the store already there.
        for attempt in 0..2 {
            let blocks = first_blocks * (attempt as u64 + 1);
            let limit_bytes = blocks * block;
            // About 70 bytes per event in a segment: well over the limit.
            let count = (limit_bytes / 25) as usize;
            let ctx = format!(
                "seed {seed}: round {round}, limited import {attempt} (limit {limit_bytes} bytes, \
                 --batch {batch}, {count} events)"
            );
            let sent = import_events(
                &mut rng,
                as_of_us,
                (round, attempt),
                count,
                batch,
                0,
                prior.len(),
            );
            write_jsonl(&input, &sent);
            let mut cmd = fsize_limited(&dir, blocks);
            cmd.args([
                "import",
                "--max-future-skew",
                "none",
                "--batch",
                &batch.to_string(),
            ])
            .arg(&input);
            let out = run(cmd, &ctx);
            let error = expect_disk_full(&out, "(os error 27)");
            eprintln!("{ctx}: exit {:?}, {error:?}", out.status.code());
            let segment = largest_segment_bytes(&dir);
            assert!(
                segment <= limit_bytes,
                "{ctx}: a segment of {segment} bytes, past the limit"
            );
            prior = check_after_full_disk(&dir, &prior, &sent, batch, as_of_us, &ctx);
        }
        let ctx = format!("seed {seed}: round {round}, the import without a limit");
        let sent = import_events(&mut rng, as_of_us, (round, 2), 500, 100, 0, prior.len());
        write_jsonl(&input, &sent);
        import_in_full(&dir, &input, &prior, &sent, &ctx);
    }

    // The demo's concurrent producers meet the limit too.
    let dir = tmp.path().join("demo");
    let blocks = (64 * 1024) / block;
    let ctx = format!("seed {seed}: demo under a {} byte limit", blocks * block);
    let mut cmd = fsize_limited(&dir, blocks);
    cmd.args([
        "demo",
        "--events",
        "20000",
        "--producers",
        "8",
        "--tenants",
        "3",
    ])
    .args(["--rules", "5", "--seed", &seed.to_string()])
    .arg("--dir")
    .arg(&dir);
    let out = run(cmd, &ctx);
    let error = expect_disk_full(&out, "(os error 27)");
    eprintln!("{ctx}: exit {:?}, {error:?}", out.status.code());
    let observed = observe(&dir, &ctx);
    let recorded = observed.events.len();
    assert!(recorded < 20_000, "{ctx}: every event fit: {recorded}");
    let as_of_us = now_us();
    check_cli_stats(&dir, &observed.events, as_of_us, &ctx);
    check_library(&dir, &observed.events, as_of_us, &[], &ctx);
    verify_spotless(&dir, &ctx);
    let sent = import_events(&mut rng, as_of_us, (9, 0), 300, 100, 0, 0);
    write_jsonl(&input, &sent);
    import_in_full(&dir, &input, &observed.events, &sent, &ctx);
    eprintln!("{ctx}: {recorded} events recorded before the failure");
}

/// The contract of `--help`: "Errors are one line on stderr; -v adds
/// detail, -vv the store's own log". A full disk must not add the store's
/// own log line (with terminal colour codes, into a pipe) to it.
#[test]
fn a_full_disk_error_is_one_plain_line_on_stderr() {
    let block = match fsize_block_bytes() {
        Ok(block) => block,
        Err(why) => {
            eprintln!("skipped: RLIMIT_FSIZE through sh is unavailable: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let input = tmp.path().join("input.jsonl");
    let mut rng = Rng(common::seed_or(DEFAULT_SEED));
    let sent = import_events(&mut rng, now_us(), (0, 0), 2000, 10, 0, 0);
    write_jsonl(&input, &sent);
    let mut cmd = fsize_limited(&dir, 16 * 1024 / block);
    cmd.args(["import", "--max-future-skew", "none", "--batch", "10"])
        .arg(&input);
    let out = run(cmd, "import under a 16 KiB limit");
    expect_disk_full(&out, "(os error 27)");
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        !out.stderr.contains('\u{1b}'),
        "terminal escape codes on stderr (a pipe): {:?}",
        out.stderr
    );
    assert_eq!(
        lines.len(),
        1,
        "an error is one line on stderr: {:?}",
        out.stderr
    );
}

/// The names of the files under `dir` (recursively, relative), sorted; none
/// if it does not exist.
fn file_names(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, names: &mut Vec<String>) {
        for entry in fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
        {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, names);
            } else if let Ok(relative) = path.strip_prefix(root) {
                names.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut names = Vec::new();
    walk(dir, dir, &mut names);
    names.sort();
    names
}

/// Fills the file system holding `path` with one file, then gives back
/// `free_bytes` of it. Returns the filler's size.
fn fill_leaving(path: &Path, free_bytes: u64) -> u64 {
    use std::io::Write;
    let mut file = File::create(path).expect("create the filler");
    let chunk = vec![0u8; 4096];
    let mut len = 0u64;
    while file.write_all(&chunk).is_ok() {
        len += chunk.len() as u64;
    }
    // A failed write_all may have written part of the chunk.
    let len_now = file.metadata().expect("filler metadata").len();
    assert!(len_now >= len);
    let keep = len_now.saturating_sub(free_bytes);
    file.set_len(keep).expect("shrink the filler");
    keep
}

/// A 2 MiB tmpfs gives a real ENOSPC. An import that outgrows the space
/// left stops with exit code 4 and one `error:` line naming ENOSPC; while
/// the disk is still full the store verifies and dumps a whole-batch prefix;
/// once space is freed it opens, and takes further imports. Then stores
/// created from nothing on a nearly full disk (the first files run out of
/// room) must fail cleanly and be usable once space is back.
#[test]
fn a_full_tmpfs_stops_the_writer_cleanly_and_the_store_reopens() {
    let seed = common::seed_or(DEFAULT_SEED);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    let _tmpfs = match Mount::tmpfs(&mnt, "2m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: no tmpfs to fill: {why}");
            return;
        }
    };
    eprintln!(
        "seed {seed} (replay: ENFORCELOG_SEED={seed}); tmpfs of 2 MiB at {}",
        mnt.display()
    );
    let mut rng = Rng(seed ^ 0x00E4_059C);
    // Inputs live off the tmpfs; only the store and the filler are on it.
    let input = tmp.path().join("input.jsonl");
    let as_of_us = now_us();
    let filler = mnt.join("filler");

    // An import larger than the space left.
    let dir = mnt.join("store");
    let free = 64 * 1024 + rng.below(600 * 1024);
    let batch = *rng.pick(&[1usize, 10, 64, 250]);
    let ctx = format!("seed {seed}: import into {free} free bytes, --batch {batch}");
    let filled = fill_leaving(&filler, free);
    let sent = import_events(&mut rng, as_of_us, (0, 0), 8000, batch, 200, 0);
    write_jsonl(&input, &sent);
    let mut cmd = enforcelog(&dir);
    cmd.args([
        "import",
        "--max-future-skew",
        "none",
        "--batch",
        &batch.to_string(),
    ])
    .arg(&input);
    let out = run(cmd, &ctx);
    let error = expect_disk_full(&out, "(os error 28)");
    eprintln!(
        "{ctx}: filler {filled} bytes; exit {:?}, {error:?}",
        out.status.code()
    );
    // Still full: the readers work, and see a whole-batch prefix.
    let observed = observe(&dir, &ctx);
    check_whole_batch_prefix(&observed.events, &[], &sent, batch, &ctx);
    fs::remove_file(&filler).expect("free the space");
    let prior = check_after_full_disk(&dir, &[], &sent, batch, as_of_us, &ctx);
    let more = import_events(&mut rng, as_of_us, (0, 1), 1000, 100, 0, prior.len());
    write_jsonl(&input, &more);
    import_in_full(&dir, &input, &prior, &more, &ctx);

    // Fresh stores on a nearly full disk: the store's own first files
    // (VERSION, STORE_ID, the first segment, a checkpoint) run out of room.
    fs::remove_dir_all(&dir).expect("remove the first store");
    let mut failures = 0;
    for (i, free) in [0u64, 4096, 8192, 12288, 16384, 24576, 32768, 65536]
        .into_iter()
        .enumerate()
    {
        let dir = mnt.join(format!("fresh-{i}"));
        let ctx = format!("seed {seed}: a fresh store with {free} bytes free");
        fill_leaving(&filler, free);
        let sent = import_events(&mut rng, as_of_us, (1, i), 400, 10, 100, 0);
        write_jsonl(&input, &sent);
        let mut cmd = enforcelog(&dir);
        cmd.args(["import", "--max-future-skew", "none", "--batch", "10"])
            .arg(&input);
        let out = run(cmd, &ctx);
        if out.status.code() == Some(0) {
            fs::remove_file(&filler).expect("free the space");
            let events = observe(&dir, &ctx).events;
            check_whole_batch_prefix(&events, &[], &sent, 10, &ctx);
            assert_eq!(events.len(), sent.len(), "{ctx}: the import succeeded");
            eprintln!("{ctx}: fit");
        } else {
            let error = expect_disk_full(&out, "(os error 28)");
            failures += 1;
            let leftovers = file_names(&dir);
            let observed = observe(&dir, &ctx);
            check_whole_batch_prefix(&observed.events, &[], &sent, 10, &ctx);
            fs::remove_file(&filler).expect("free the space");
            let prior = check_after_full_disk(&dir, &[], &sent, 10, as_of_us, &ctx);
            eprintln!(
                "{ctx}: exit {:?}, {error:?}; a store after it: {}; its files: {leftovers:?}",
                out.status.code(),
                observed.exists
            );
            let more = import_events(&mut rng, as_of_us, (1, 100 + i), 200, 100, 0, prior.len());
            write_jsonl(&input, &more);
            import_in_full(&dir, &input, &prior, &more, &ctx);
        }
        fs::remove_dir_all(&dir).expect("remove the store");
    }
    assert!(failures > 0, "seed {seed}: no fresh store ran out of space");
}

/// Bytes allocated to the files under `dir` (recursively) whose names do not
/// end in `.ckpt`, and to those that do.
fn allocated_bytes(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut data, mut checkpoints) = (0, 0);
    for name in file_names(dir) {
        let bytes = fs::metadata(dir.join(&name)).expect("metadata").blocks() * 512;
        if name.ends_with(".ckpt") {
            checkpoints += bytes;
        } else {
            data += bytes;
        }
    }
    (data, checkpoints)
}

/// When the log takes every batch of an import but the disk has no room
/// left for the statistics checkpoint written on close (derived data, rebuilt
/// from the log on the next open), the import has succeeded: every event is
/// committed, and an exit code of failure would have the operator import
/// them all again.
#[test]
fn a_checkpoint_that_does_not_fit_does_not_fail_a_committed_import() {
    let seed = common::seed_or(DEFAULT_SEED);
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("mnt");
    let _tmpfs = match Mount::tmpfs(&mnt, "1m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("skipped: no tmpfs to fill: {why}");
            return;
        }
    };
    let mut rng = Rng(seed ^ 0x00C4_EC00);
    let as_of_us = now_us();
    let input = tmp.path().join("input.jsonl");
    let sent = import_events(&mut rng, as_of_us, (0, 0), 400, 10, 0, 0);
    write_jsonl(&input, &sent);
    let import = |dir: &Path| {
        let mut cmd = enforcelog(dir);
        cmd.args(["import", "--max-future-skew", "none", "--batch", "10"])
            .arg(&input);
        cmd
    };

    // What the import allocates, with room to spare.
    let probe = mnt.join("probe");
    run(import(&probe), "probe import").expect(0);
    let (data, checkpoint) = allocated_bytes(&probe);
    assert!(
        checkpoint > 0,
        "the import wrote no checkpoint: {:?}",
        file_names(&probe)
    );
    fs::remove_dir_all(&probe).expect("remove the probe");
    eprintln!(
        "seed {seed}: the import allocates {data} bytes of log and {checkpoint} of checkpoint"
    );

    let filler = mnt.join("filler");
    let mut failed_after_commit = Vec::new();
    let mut observations = Vec::new();
    let mut free = data.saturating_sub(8192);
    while free <= data + checkpoint + 4096 {
        let dir = mnt.join(format!("store-{free}"));
        let ctx = format!("seed {seed}: import with {free} bytes free");
        fill_leaving(&filler, free);
        let out = run(import(&dir), &ctx);
        let leftovers = file_names(&dir);
        fs::remove_file(&filler).expect("free the space");
        let events = observe(&dir, &ctx).events;
        let landed = check_whole_batch_prefix(&events, &[], &sent, 10, &ctx);
        let error = out.stderr.lines().find(|l| l.starts_with("error: "));
        observations.push(format!(
            "{free} bytes free: exit {:?}, {landed} of {} events committed, {error:?}, files \
             {leftovers:?}",
            out.status.code(),
            sent.len()
        ));
        if out.status.code() != Some(0) {
            expect_disk_full(&out, "(os error 28)");
            if landed == sent.len() {
                failed_after_commit.push(observations.last().cloned().unwrap_or_default());
            }
        } else {
            assert_eq!(landed, sent.len(), "{ctx}: exit 0, yet events are missing");
        }
        check_library(&dir, &events, as_of_us, &[], &ctx);
        verify_spotless(&dir, &ctx);
        fs::remove_dir_all(&dir).expect("remove the store");
        free += 4096;
    }
    for line in &observations {
        eprintln!("  {line}");
    }
    assert!(
        failed_after_commit.is_empty(),
        "seed {seed}: imports that committed every event yet exited with a failure:\n{}",
        failed_after_commit.join("\n")
    );
}
