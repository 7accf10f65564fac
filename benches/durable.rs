//! Durable appends side by side: the store under `Durability::Fsync`,
//! SQLite (WAL, `synchronous=FULL`) driven well and driven naively, and the
//! machine's own limit, in one run, with ratios.
//!
//! Every system is driven the same way: `P` producers (tokio tasks on a
//! multi-thread runtime), each with one call in flight, calling again as
//! soon as the previous call is acknowledged as durable. A call is one
//! event, or, in the *pipelined* configurations (`pipe PxB`), one batch of
//! `B` events. The events (about 200 bytes each once encoded) are built
//! before the run; a producer clones one from that pool and stamps it with
//! the current time, so its time goes to the system measured.
//!
//! For each configuration the four systems are open side by side, each on
//! a fresh directory, warmed up, then measured in turns: a few short
//! slices each, the order rotating every round, for a fixed time rather
//! than a fixed count (the naive SQLite is slow). The disk of a VM changes
//! speed from one second to the next (its syncs go through the host);
//! taking turns spreads those changes over all four instead of charging
//! them to whichever ran at the time. A producer starts no call after its
//! slice's end; the slice's time runs to the last acknowledgement.
//!
//! - `enforcelog`: `Store::record(event).await` (batches: `begin()`,
//!   `B` × `record`, `commit().await`), `Durability::Fsync`, default
//!   options. Group commit happens in the store's writer thread; the
//!   store's projection thread folds every event as it commits.
//! - `sqlite-batched`: what a competent user builds. One writer thread owns
//!   the connection; callers queue their rows with a oneshot reply; the
//!   writer drains everything queued into one transaction, commits, and
//!   replies to each caller.
//! - `sqlite-naive`: one transaction per call on a connection behind a
//!   mutex (`spawn_blocking`, autocommit for one row, one explicit
//!   transaction for a batch).
//! - `enforcelog-unchained`: the same store as a log of format 1 (its
//!   `VERSION` written before the first open), whose batches carry no
//!   chain link: `enforcelog` against it is what the chain costs (issue
//!   18's goal: at least 95% at 64 producers).
//! - `enforcelog-growing`: the same store with
//!   `LogOptions::preallocate_segments` off: every fsync of its growing
//!   segment also commits the file system's journal for the new size.
//! - `raw-limit`: the same batching as `sqlite-batched` (a writer thread
//!   draining a queue), but each group is the events' payload bytes
//!   concatenated, written with one `pwrite` at the end of a file and made
//!   durable with one `fdatasync`: no framing, no checksums, no index.
//!   The bytes are the store's own payloads (MessagePack, read back from a
//!   store written at start-up), so the raw loop writes what the store
//!   writes minus its framing. The file grows, as segments did before
//!   `preallocate_segments`.
//! - `raw-prezeroed`: the raw loop over a file filled with zeros (and
//!   fsynced) before the run, overwritten in place and wrapping at its end
//!   (64 MiB, a segment; 4 MiB in quick mode): no fsync changes the file's
//!   size, as under SQLite's WAL and the store's filled segments. The
//!   machine's fsync limit; the ratios to the raw limit use it.
//!
//! SQLite's table holds the same fields (tenant_id, rule_id, action,
//! run_id, details as JSON text, enforced_at in µs) and one index, on
//! (tenant_id, rule_id, enforced_at), which serves both queries the
//! projection answers: "how many in the window per (tenant, rule)" and
//! "latest enforced_at per (tenant, rule)".
//!
//! Figures: acknowledged events per second over the window; p50/p99 of the
//! latency of each call (from the call to its acknowledgement, per call:
//! a batch call is one sample); events per sync (the store: `fsyncs` from
//! `Store::metrics`; raw: `fdatasync` calls; SQLite: events per committed
//! transaction, each of which syncs the WAL once, plus the syncs of
//! checkpoints); and the process's CPU use over the window (user + system
//! time / wall time; 200% is both cores of a 2-core machine).
//!
//! Everything lives under `CARGO_TARGET_TMPDIR` (`target/tmp`, the
//! project's disk; `/tmp` may be a tmpfs where syncs cost nothing).
//!
//! `cargo bench --bench durable` runs the full comparison (under two
//! minutes: 2.4 s measured per system and configuration). Without
//! `--bench` (as `cargo test --all-targets` runs it) or with
//! `ENFORCELOG_BENCH_QUICK=1` it runs smaller loads for 15 ms each, as a
//! smoke test that also checks every acknowledged event is stored.
//! `ENFORCELOG_BENCH_WINDOW_MS` changes the measured window,
//! `ENFORCELOG_SEED` the events; `ENFORCELOG_BENCH_CONFIGS=64,8x64` and
//! `ENFORCELOG_BENCH_SYSTEMS=enforcelog,raw-prezeroed` run a selection (for
//! profiling). The figures of a full run are also written as JSON to
//! `target/bench-results/durable.json` (`durable-quick.json` in quick
//! mode).

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use enforcelog::{now_us, Action, Durability, Event, Log, LogOptions, Store, StoreOptions};
use rusqlite::{params, Connection};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};

#[path = "support/events.rs"]
mod events;
use events::enforcement_event;

/// Events per call in the pipelined configurations.
const PIPELINE_BATCH: usize = 64;
/// Distinct events the producers pick from.
const POOL_EVENTS: usize = 1_024;
const TENANTS: u64 = 100;
const RULES_PER_TENANT: u64 = 10;
const DEFAULT_SEED: u64 = 0x5eed_0007;
/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_S: f64 = 100.0;

/// One shape of load: `producers` tasks, each with one call of `batch`
/// events in flight.
#[derive(Debug, Clone, Copy)]
struct Config {
    producers: usize,
    batch: usize,
}

impl Config {
    fn label(self) -> String {
        if self.batch == 1 {
            format!("{} producers", self.producers)
        } else {
            format!("pipe {}x{}", self.producers, self.batch)
        }
    }

    fn in_flight(self) -> usize {
        self.producers * self.batch
    }
}

const CONFIGS: [Config; 7] = [
    Config {
        producers: 1,
        batch: 1,
    },
    Config {
        producers: 8,
        batch: 1,
    },
    Config {
        producers: 64,
        batch: 1,
    },
    Config {
        producers: 256,
        batch: 1,
    },
    Config {
        producers: 8,
        batch: PIPELINE_BATCH,
    },
    Config {
        producers: 64,
        batch: PIPELINE_BATCH,
    },
    Config {
        producers: 64,
        batch: 4 * PIPELINE_BATCH,
    },
];

/// The smoke run's smaller loads, one for each of `CONFIGS` (in the same
/// order: the goals read the third and the pipelined ones).
const QUICK_CONFIGS: [Config; 7] = [
    Config {
        producers: 1,
        batch: 1,
    },
    Config {
        producers: 4,
        batch: 1,
    },
    Config {
        producers: 16,
        batch: 1,
    },
    Config {
        producers: 32,
        batch: 1,
    },
    Config {
        producers: 2,
        batch: 16,
    },
    Config {
        producers: 8,
        batch: 16,
    },
    Config {
        producers: 8,
        batch: 64,
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Enforcelog,
    SqliteBatched,
    SqliteNaive,
    RawLimit,
    EnforcelogGrowing,
    RawPrezeroed,
    EnforcelogUnchained,
}

const SYSTEMS: [System; 7] = [
    System::Enforcelog,
    System::EnforcelogUnchained,
    System::EnforcelogGrowing,
    System::RawPrezeroed,
    System::SqliteBatched,
    System::SqliteNaive,
    System::RawLimit,
];

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Enforcelog => "enforcelog",
            System::SqliteBatched => "sqlite-batched",
            System::SqliteNaive => "sqlite-naive",
            System::RawLimit => "raw-limit",
            System::EnforcelogGrowing => "enforcelog-growing",
            System::RawPrezeroed => "raw-prezeroed",
            System::EnforcelogUnchained => "enforcelog-unchained",
        }
    }
}

/// Sizes of one run.
#[derive(Debug, Clone, Copy)]
struct Plan {
    full: bool,
    configs: &'static [Config],
    /// Untimed load on each system before its first timed slice.
    warmup: Duration,
    /// Timed load per system and configuration, in `rounds` slices.
    window: Duration,
    rounds: u32,
}

impl Plan {
    fn new(full: bool) -> Plan {
        let window_ms = std::env::var("ENFORCELOG_BENCH_WINDOW_MS").ok().map(|v| {
            v.parse::<u64>()
                .expect("ENFORCELOG_BENCH_WINDOW_MS is a number")
        });
        if full {
            Plan {
                full,
                configs: &CONFIGS,
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(window_ms.unwrap_or(2_400)),
                rounds: 4,
            }
        } else {
            Plan {
                full,
                configs: &QUICK_CONFIGS,
                warmup: Duration::ZERO,
                window: Duration::from_millis(window_ms.unwrap_or(15)),
                rounds: 1,
            }
        }
    }
}

fn seed() -> u64 {
    std::env::var("ENFORCELOG_SEED")
        .ok()
        .map(|v| v.parse().expect("ENFORCELOG_SEED is a u64"))
        .unwrap_or(DEFAULT_SEED)
}

/// SplitMix64 over a producer's own stream of events.
struct Gen(u64);

impl Gen {
    fn new(seed: u64, producer: usize) -> Gen {
        Gen(seed ^ (producer as u64).wrapping_mul(0xa076_1d64_78bd_642f))
    }

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

    /// An enforcement event of about 200 bytes once encoded, stamped when
    /// it is taken from the pool.
    fn event(&mut self) -> Event {
        let pair = self.below(TENANTS * RULES_PER_TENANT);
        let action = Action::ALL[self.below(4) as usize];
        enforcement_event(
            format!("tenant-{:03}", pair / RULES_PER_TENANT),
            format!("rule-{pair:04}"),
            action,
            |n| self.below(n),
        )
    }
}

/// What producers send, built once before the run: every call clones
/// items from here (and stamps events with the current time), so the
/// producers spend their time in the system measured, not in building
/// events. The same events feed every system.
struct Pool {
    events: Vec<Event>,
    /// The store's payload bytes for `events` (the raw loop writes these).
    payloads: Vec<Vec<u8>>,
}

impl Pool {
    fn event(&self, gen: &mut Gen) -> Event {
        let i = gen.below(self.events.len() as u64) as usize;
        self.events[i].clone().at_us(now_us())
    }

    fn payload(&self, gen: &mut Gen) -> Vec<u8> {
        self.payloads[gen.below(self.payloads.len() as u64) as usize].clone()
    }

    fn average_payload_bytes(&self) -> f64 {
        self.payloads.iter().map(Vec::len).sum::<usize>() as f64 / self.payloads.len().max(1) as f64
    }

    fn min_payload_bytes(&self) -> u64 {
        self.payloads.iter().map(Vec::len).min().unwrap_or(0) as u64
    }
}

/// What a producer hands to one of the systems, and how it waits.
trait Sink: Clone + Send + Sync + 'static {
    type Item: Send + 'static;
    /// Builds one item (outside the timed call).
    fn make(&self, pool: &Pool, gen: &mut Gen) -> Self::Item;
    /// Hands over `items` and waits until they are durable.
    fn submit(&self, items: Vec<Self::Item>) -> impl Future<Output = ()> + Send;
    /// Syncs (or commits) so far.
    fn syncs(&self) -> u64;
}

#[derive(Clone)]
struct EnforcelogSink(Store);

impl Sink for EnforcelogSink {
    type Item = Event;

    fn make(&self, pool: &Pool, gen: &mut Gen) -> Event {
        pool.event(gen)
    }

    async fn submit(&self, items: Vec<Event>) {
        if items.len() == 1 {
            let event = items.into_iter().next().expect("one event");
            self.0.record(event).await.expect("record");
        } else {
            let mut batch = self.0.begin();
            for event in items {
                batch.record(event).expect("valid event");
            }
            batch.commit().await.expect("commit");
        }
    }

    fn syncs(&self) -> u64 {
        self.0.metrics().fsyncs
    }
}

/// One SQLite row, as a user would bind it.
struct Row {
    tenant_id: String,
    rule_id: String,
    action: &'static str,
    run_id: Option<String>,
    details: String,
    enforced_at: i64,
}

/// A user of SQLite turns the event into a row (details as JSON text).
fn row_of(event: Event) -> Row {
    Row {
        details: event.details.as_ref().map_or_else(String::new, |d| {
            serde_json::to_string(d).unwrap_or_default()
        }),
        tenant_id: event.tenant_id,
        rule_id: event.rule_id,
        action: event.action.as_str(),
        run_id: event.run_id,
        enforced_at: event.enforced_at_us.expect("stamped"),
    }
}

const SQLITE_SCHEMA: &str = "
    CREATE TABLE enforcement_events (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        rule_id TEXT NOT NULL,
        action TEXT NOT NULL,
        run_id TEXT,
        details TEXT,
        enforced_at INTEGER NOT NULL
    );
    CREATE INDEX events_by_rule_time
        ON enforcement_events (tenant_id, rule_id, enforced_at);
";

const SQLITE_INSERT: &str = "INSERT INTO enforcement_events
    (tenant_id, rule_id, action, run_id, details, enforced_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

fn sqlite_open(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("open sqlite");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("journal_mode");
    assert_eq!(mode, "wal");
    conn.execute_batch("PRAGMA synchronous=FULL;")
        .expect("synchronous");
    conn.execute_batch(SQLITE_SCHEMA).expect("schema");
    conn
}

fn sqlite_insert(conn: &Connection, rows: &[Row]) {
    let mut insert = conn.prepare_cached(SQLITE_INSERT).expect("prepare");
    for row in rows {
        insert
            .execute(params![
                row.tenant_id,
                row.rule_id,
                row.action,
                row.run_id,
                row.details,
                row.enforced_at
            ])
            .expect("insert");
    }
}

/// One queued call of the batching writers, and its reply.
struct Request<T> {
    items: Vec<T>,
    done: oneshot::Sender<()>,
}

/// A writer thread that drains its queue, commits everything it took as
/// one group, then replies to each caller. The queue holds at most one
/// request per producer (each waits for its reply before sending again).
fn spawn_batcher<T: Send + 'static>(
    name: &str,
    mut commit: impl FnMut(&[Request<T>]) + Send + 'static,
) -> (mpsc::UnboundedSender<Request<T>>, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request<T>>();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut group = Vec::new();
            while let Some(first) = rx.blocking_recv() {
                group.push(first);
                while let Ok(next) = rx.try_recv() {
                    group.push(next);
                }
                commit(&group);
                for request in group.drain(..) {
                    let _ = request.done.send(());
                }
            }
        })
        .expect("spawn writer thread");
    (tx, thread)
}

async fn submit_to<T>(tx: &mpsc::UnboundedSender<Request<T>>, items: Vec<T>) {
    let (done, acknowledged) = oneshot::channel();
    if tx.send(Request { items, done }).is_err() {
        panic!("writer thread stopped");
    }
    acknowledged.await.expect("writer thread acknowledges");
}

#[derive(Clone)]
struct SqliteBatchedSink {
    tx: mpsc::UnboundedSender<Request<Row>>,
    commits: Arc<AtomicU64>,
}

fn sqlite_batched(path: &Path) -> (SqliteBatchedSink, JoinHandle<()>) {
    let mut conn = sqlite_open(path);
    let commits = Arc::new(AtomicU64::new(0));
    let counter = commits.clone();
    let (tx, thread) = spawn_batcher("sqlite-writer", move |group: &[Request<Row>]| {
        let txn = conn.transaction().expect("begin");
        for request in group {
            sqlite_insert(&txn, &request.items);
        }
        txn.commit().expect("commit");
        counter.fetch_add(1, Ordering::Relaxed);
    });
    (SqliteBatchedSink { tx, commits }, thread)
}

impl Sink for SqliteBatchedSink {
    type Item = Row;

    fn make(&self, pool: &Pool, gen: &mut Gen) -> Row {
        row_of(pool.event(gen))
    }

    async fn submit(&self, items: Vec<Row>) {
        submit_to(&self.tx, items).await;
    }

    fn syncs(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct SqliteNaiveSink {
    conn: Arc<Mutex<Connection>>,
    commits: Arc<AtomicU64>,
}

impl Sink for SqliteNaiveSink {
    type Item = Row;

    fn make(&self, pool: &Pool, gen: &mut Gen) -> Row {
        row_of(pool.event(gen))
    }

    async fn submit(&self, items: Vec<Row>) {
        let sink = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = sink.conn.lock().expect("connection lock");
            if items.len() == 1 {
                sqlite_insert(&conn, &items); // autocommit: its own transaction
            } else {
                let txn = conn.transaction().expect("begin");
                sqlite_insert(&txn, &items);
                txn.commit().expect("commit");
            }
            sink.commits.fetch_add(1, Ordering::Relaxed);
        })
        .await
        .expect("sqlite call");
    }

    fn syncs(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct RawSink {
    tx: mpsc::UnboundedSender<Request<Vec<u8>>>,
    syncs: Arc<AtomicU64>,
    /// Payload bytes written and synced.
    written: Arc<AtomicU64>,
}

/// The raw loop: appending to a growing file (`prezeroed_bytes` `None`),
/// or overwriting a file of that many zeros, fsynced before the run, in
/// place, from its start again when a group would pass its end.
fn raw_limit(path: &Path, prezeroed_bytes: Option<u64>) -> (RawSink, JoinHandle<()>) {
    let file = File::create(path).expect("create raw file");
    if let Some(len) = prezeroed_bytes {
        let chunk = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = chunk.len().min(usize::try_from(len - at).expect("fits"));
            file.write_all_at(&chunk[..n], at).expect("fill with zeros");
            at += n as u64;
        }
        file.sync_all().expect("fsync the zeros");
    }
    let syncs = Arc::new(AtomicU64::new(0));
    let written = Arc::new(AtomicU64::new(0));
    let (counter, bytes) = (syncs.clone(), written.clone());
    let mut buf = Vec::with_capacity(1 << 20);
    let mut position = 0u64;
    let (tx, thread) = spawn_batcher("raw-writer", move |group: &[Request<Vec<u8>>]| {
        buf.clear();
        for request in group {
            for item in &request.items {
                buf.extend_from_slice(item);
            }
        }
        if prezeroed_bytes.is_some_and(|len| position + buf.len() as u64 > len) {
            position = 0;
        }
        file.write_all_at(&buf, position).expect("pwrite");
        file.sync_data().expect("fdatasync");
        position += buf.len() as u64;
        counter.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    });
    (RawSink { tx, syncs, written }, thread)
}

impl Sink for RawSink {
    type Item = Vec<u8>;

    fn make(&self, pool: &Pool, gen: &mut Gen) -> Vec<u8> {
        pool.payload(gen)
    }

    async fn submit(&self, items: Vec<Vec<u8>>) {
        submit_to(&self.tx, items).await;
    }

    fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

/// What the producers of one timed run did.
struct Run {
    events: u64,
    calls: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

/// The load of one configuration, and what it runs on.
#[derive(Clone, Copy)]
struct Load<'a> {
    runtime: &'a Runtime,
    pool: &'a Arc<Pool>,
    config: Config,
}

/// Runs `config.producers` tasks until `duration` has passed; each starts
/// no call after that. The elapsed time ends at the last acknowledgement.
fn drive<S: Sink>(load: Load<'_>, sink: &S, duration: Duration, seed: u64) -> Run {
    let config = load.config;
    load.runtime.block_on(async {
        let started = Instant::now();
        let deadline = started + duration;
        let tasks: Vec<_> = (0..config.producers)
            .map(|p| {
                let sink = sink.clone();
                let pool = load.pool.clone();
                let mut gen = Gen::new(seed, p);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut last = started;
                    while Instant::now() < deadline {
                        let items: Vec<S::Item> = (0..config.batch)
                            .map(|_| sink.make(&pool, &mut gen))
                            .collect();
                        let call = Instant::now();
                        sink.submit(items).await;
                        last = Instant::now();
                        latencies.push(last - call);
                    }
                    (latencies, last)
                })
            })
            .collect();
        let mut run = Run {
            events: 0,
            calls: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::new(),
        };
        for task in tasks {
            let (latencies, last) = task.await.expect("producer task");
            run.calls += latencies.len() as u64;
            run.latencies.extend(latencies);
            run.elapsed = run.elapsed.max(last - started);
        }
        run.events = run.calls * config.batch as u64;
        run
    })
}

/// The figures of one system under one configuration.
#[derive(Debug, Clone)]
struct Figures {
    system: System,
    config: Config,
    events: u64,
    calls: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    syncs: u64,
    cpu_s: f64,
}

impl Figures {
    fn events_per_s(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn events_per_sync(&self) -> f64 {
        self.events as f64 / self.syncs.max(1) as f64
    }

    fn cpu_percent(&self) -> f64 {
        self.cpu_s / self.elapsed.as_secs_f64().max(1e-9) * 100.0
    }
}

/// User + system CPU time of this process so far, in seconds.
fn cpu_time_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from the pid; 3 is the first
    // after the name.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / TICKS_PER_S
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn store_options(preallocate_segments: bool) -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::Fsync,
            preallocate_segments,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// One system, open for one configuration, with its directory.
enum Opened {
    Enforcelog(EnforcelogSink),
    SqliteBatched(SqliteBatchedSink, JoinHandle<()>),
    SqliteNaive(SqliteNaiveSink),
    RawLimit(RawSink, JoinHandle<()>),
}

/// What one system did over all its slices of one configuration.
#[derive(Default)]
struct Tally {
    /// Events acknowledged in the timed slices.
    events: u64,
    calls: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    syncs: u64,
    cpu_s: f64,
    /// Events acknowledged in all slices, warm-up included.
    total: u64,
}

impl Opened {
    fn open(system: System, dir: &Path, full: bool) -> Opened {
        match system {
            System::Enforcelog | System::EnforcelogGrowing | System::EnforcelogUnchained => {
                let preallocate = system != System::EnforcelogGrowing;
                let store = dir.join("store");
                if system == System::EnforcelogUnchained {
                    // A log of format 1: batches without chain links, so
                    // the difference is what hashing the chain costs.
                    std::fs::create_dir_all(&store).expect("create the store directory");
                    std::fs::write(store.join("VERSION"), "enforcelog-log 1\n")
                        .expect("write VERSION");
                }
                Opened::Enforcelog(EnforcelogSink(
                    Store::open(store, store_options(preallocate)).expect("open store"),
                ))
            }
            System::SqliteBatched => {
                let (sink, thread) = sqlite_batched(&dir.join("events.db"));
                Opened::SqliteBatched(sink, thread)
            }
            System::SqliteNaive => Opened::SqliteNaive(SqliteNaiveSink {
                conn: Arc::new(Mutex::new(sqlite_open(&dir.join("events.db")))),
                commits: Arc::new(AtomicU64::new(0)),
            }),
            System::RawLimit => {
                let (sink, thread) = raw_limit(&dir.join("raw.bin"), None);
                Opened::RawLimit(sink, thread)
            }
            System::RawPrezeroed => {
                let len = if full { 64 << 20 } else { 4 << 20 };
                let (sink, thread) = raw_limit(&dir.join("raw.bin"), Some(len));
                Opened::RawLimit(sink, thread)
            }
        }
    }

    /// Drives the system for `duration`; adds to `tally` when `timed`.
    fn slice(&self, load: Load<'_>, duration: Duration, seed: u64, tally: &mut Tally, timed: bool) {
        match self {
            Opened::Enforcelog(sink) => slice(load, sink, duration, seed, tally, timed),
            Opened::SqliteBatched(sink, _) => slice(load, sink, duration, seed, tally, timed),
            Opened::SqliteNaive(sink) => slice(load, sink, duration, seed, tally, timed),
            Opened::RawLimit(sink, _) => slice(load, sink, duration, seed, tally, timed),
        }
    }

    /// Stops the system and checks that all `total` acknowledged events
    /// are there.
    fn close(self, dir: &Path, total: u64, min_payload_bytes: u64) {
        match self {
            Opened::Enforcelog(EnforcelogSink(store)) => {
                assert_eq!(store.next_offset(), total, "enforcelog events");
                store.close().expect("close store");
            }
            Opened::SqliteBatched(sink, thread) => {
                drop(sink);
                thread.join().expect("sqlite writer");
                check_sqlite(&dir.join("events.db"), total);
            }
            Opened::SqliteNaive(sink) => {
                drop(sink);
                check_sqlite(&dir.join("events.db"), total);
            }
            Opened::RawLimit(sink, thread) => {
                let written = sink.written.clone();
                drop(sink);
                thread.join().expect("raw writer");
                assert!(std::fs::metadata(dir.join("raw.bin")).is_ok(), "raw file");
                let written = written.load(Ordering::Relaxed);
                assert!(written >= total * min_payload_bytes, "raw bytes");
            }
        }
    }
}

fn slice<S: Sink>(
    load: Load<'_>,
    sink: &S,
    duration: Duration,
    seed: u64,
    tally: &mut Tally,
    timed: bool,
) {
    let syncs_before = sink.syncs();
    let cpu_before = cpu_time_s();
    let run = drive(load, sink, duration, seed);
    tally.total += run.events;
    if timed {
        tally.cpu_s += cpu_time_s() - cpu_before;
        tally.syncs += sink.syncs() - syncs_before;
        tally.events += run.events;
        tally.calls += run.calls;
        tally.elapsed += run.elapsed;
        tally.latencies.extend(run.latencies);
    }
}

/// Measures every system under one configuration. All four are open at
/// once, each on a fresh directory, and take turns in short slices (the
/// order rotating each round), so that a change in the disk's speed
/// during the run (this is a VM: its syncs go through the host) falls on
/// all of them alike rather than on whichever ran at that moment.
fn measure_config(
    runtime: &Runtime,
    plan: &Plan,
    config: Config,
    systems: &[System],
    pool: &Arc<Pool>,
    seed: u64,
) -> Vec<Figures> {
    let dirs: Vec<tempfile::TempDir> = systems
        .iter()
        .map(|_| {
            tempfile::Builder::new()
                .prefix("enforcelog-durable-")
                .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
                .expect("create bench directory")
        })
        .collect();
    let opened: Vec<Opened> = systems
        .iter()
        .zip(&dirs)
        .map(|(&system, dir)| Opened::open(system, dir.path(), plan.full))
        .collect();
    let mut tallies: Vec<Tally> = systems.iter().map(|_| Tally::default()).collect();
    let seed = seed ^ ((config.in_flight() as u64) << 20) ^ config.producers as u64;
    let load = Load {
        runtime,
        pool,
        config,
    };
    if !plan.warmup.is_zero() {
        for (system, tally) in opened.iter().zip(&mut tallies) {
            system.slice(load, plan.warmup, seed ^ 0x3a3a, tally, false);
        }
    }
    let slice_len = plan.window / plan.rounds;
    for round in 0..plan.rounds as usize {
        for k in 0..opened.len() {
            let i = (k + round) % opened.len();
            let seed = seed ^ ((round as u64) << 40);
            opened[i].slice(load, slice_len, seed, &mut tallies[i], true);
        }
    }
    let min_payload_bytes = pool.min_payload_bytes();
    let mut figures = Vec::new();
    for (((system, opened), dir), mut tally) in systems.iter().zip(opened).zip(&dirs).zip(tallies) {
        opened.close(dir.path(), tally.total, min_payload_bytes);
        tally.latencies.sort_unstable();
        figures.push(Figures {
            system: *system,
            config,
            events: tally.events,
            calls: tally.calls,
            elapsed: tally.elapsed,
            p50: percentile(&tally.latencies, 0.5),
            p99: percentile(&tally.latencies, 0.99),
            syncs: tally.syncs,
            cpu_s: tally.cpu_s,
        });
    }
    figures
}

fn check_sqlite(path: &Path, total: u64) {
    let conn = Connection::open(path).expect("reopen sqlite");
    let rows: u64 = conn
        .query_row("SELECT COUNT(*) FROM enforcement_events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rows, total, "sqlite rows");
}

/// Builds the events, and the payload bytes the store writes for them.
fn pool(seed: u64) -> Pool {
    let dir = tempfile::Builder::new()
        .prefix("enforcelog-durable-pool-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create pool directory");
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    let mut gen = Gen::new(seed, usize::MAX);
    let events: Vec<Event> = (0..POOL_EVENTS).map(|_| gen.event()).collect();
    let store = Store::open(dir.path(), options).expect("open pool store");
    let mut batch = store.begin();
    for event in &events {
        batch
            .record(event.clone().at_us(now_us()))
            .expect("valid event");
    }
    batch.commit_blocking().expect("commit pool");
    store.close().expect("close pool store");
    drop(store);
    let log = Log::open_read_only(dir.path()).expect("open pool log");
    let payloads = log
        .read_from(0)
        .expect("read pool")
        .map(|r| r.expect("pool record").payload)
        .collect();
    Pool { events, payloads }
}

/// Machine facts printed beside the table.
fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "kernel": kernel,
        "directory": env!("CARGO_TARGET_TMPDIR"),
        "file_system": file_system_of(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap_or_else(|| "unknown".into()),
    })
}

/// The file system type and device of the mount holding `path`.
fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (source, target, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(target)
                .then(|| (target.len(), format!("{fs_type} on {source} ({target})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rate(per_s: f64) -> String {
    if per_s >= 1e6 {
        format!("{:.2} M/s", per_s / 1e6)
    } else {
        format!("{:.1} k/s", per_s / 1e3)
    }
}

fn find(all: &[Figures], system: System, config: Config) -> &Figures {
    all.iter()
        .find(|f| {
            f.system == system
                && f.config.producers == config.producers
                && f.config.batch == config.batch
        })
        .expect("measured")
}

fn ratio(all: &[Figures], config: Config, other: System) -> f64 {
    find(all, System::Enforcelog, config).events_per_s()
        / find(all, other, config).events_per_s().max(1e-9)
}

fn print_table(configs: &[Config], all: &[Figures]) {
    println!(
        "{:<17} {:<18} {:>11} {:>10} {:>10} {:>10} {:>6}",
        "configuration", "system", "events/s", "p50", "p99", "ev/sync", "cpu"
    );
    let mut previous = String::new();
    for f in all {
        let label = f.config.label();
        println!(
            "{:<17} {:<18} {:>11} {:>10} {:>10} {:>10.1} {:>5.0}%",
            if label == previous { "" } else { &label },
            f.system.name(),
            rate(f.events_per_s()),
            ms(f.p50),
            ms(f.p99),
            f.events_per_sync(),
            f.cpu_percent(),
        );
        previous = label;
    }
    // The chain's cost, whenever both were run (a selection will do).
    let has = |system, c: Config| {
        all.iter().any(|f| {
            f.system == system && f.config.producers == c.producers && f.config.batch == c.batch
        })
    };
    let both = |c: Config| has(System::Enforcelog, c) && has(System::EnforcelogUnchained, c);
    if configs.iter().all(|&c| both(c)) {
        println!();
        for &config in configs {
            println!(
                "chain links: {:<17} enforcelog is {:.1}% of enforcelog-unchained",
                config.label(),
                ratio(all, config, System::EnforcelogUnchained) * 100.0
            );
        }
    }
    if all.len() != configs.len() * SYSTEMS.len() {
        return;
    }
    println!();
    println!(
        "{:<17} {:>26} {:>24} {:>25} {:>21} {:>28} {:>30}",
        "events/s ratio",
        "enforcelog/sqlite-batched",
        "enforcelog/sqlite-naive",
        "enforcelog/raw-prezeroed",
        "enforcelog/raw-limit",
        "enforcelog/enforcelog-growing",
        "enforcelog/enforcelog-unchained"
    );
    for &config in configs {
        println!(
            "{:<17} {:>25.2}x {:>23.2}x {:>24.0}% {:>20.0}% {:>27.2}x {:>29.0}%",
            config.label(),
            ratio(all, config, System::SqliteBatched),
            ratio(all, config, System::SqliteNaive),
            ratio(all, config, System::RawPrezeroed) * 100.0,
            ratio(all, config, System::RawLimit) * 100.0,
            ratio(all, config, System::EnforcelogGrowing),
            ratio(all, config, System::EnforcelogUnchained) * 100.0,
        );
    }
}

/// The goals (issue 7's, issue 17's and issue 18's), measured against this run.
fn goals(configs: &[Config], all: &[Figures]) -> Value {
    let at64 = configs[2];
    let at = at64.label();
    let vs_sqlite = ratio(all, at64, System::SqliteBatched);
    // The machine's limit is the pre-zeroed one: no sync changes a size.
    let vs_raw = ratio(all, at64, System::RawPrezeroed);
    let vs_raw_growing = ratio(all, at64, System::RawLimit);
    let pipelined = configs
        .iter()
        .filter(|c| c.batch > 1)
        .map(|&c| find(all, System::Enforcelog, c).events_per_s())
        .fold(0.0, f64::max);
    let (at1, at8) = (configs[0], configs[1]);
    let at1_vs_sqlite = ratio(all, at1, System::SqliteBatched);
    let at8_vs_sqlite = ratio(all, at8, System::SqliteBatched);
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    println!();
    println!(
        "goal: {at} >= 4x sqlite-batched: {vs_sqlite:.2}x ({})",
        verdict(vs_sqlite >= 4.0)
    );
    println!(
        "goal: {at} >= 90% of raw-prezeroed: {:.0}% ({}; of the growing raw-limit {:.0}%)",
        vs_raw * 100.0,
        verdict(vs_raw >= 0.9),
        vs_raw_growing * 100.0
    );
    for (config, r) in [(at1, at1_vs_sqlite), (at8, at8_vs_sqlite)] {
        println!(
            "goal: {} >= 1.2x sqlite-batched: {r:.2}x ({})",
            config.label(),
            verdict(r >= 1.2)
        );
    }
    println!(
        "goal: pipelined >= 1M events/s: {} (best pipelined configuration; {})",
        rate(pipelined),
        verdict(pipelined >= 1e6)
    );
    // Issue 18: the chain's links cost at most 5% at 64 producers.
    let vs_unchained = ratio(all, at64, System::EnforcelogUnchained);
    println!(
        "goal: {at} with chain links >= 95% of without: {:.0}% ({})",
        vs_unchained * 100.0,
        verdict(vs_unchained >= 0.95)
    );
    json!({
        "at_64_vs_unchained": vs_unchained,
        "configuration": at,
        "at_64_vs_sqlite_batched": vs_sqlite,
        "at_64_vs_raw_prezeroed": vs_raw,
        "at_64_vs_raw_limit": vs_raw_growing,
        "at_1_vs_sqlite_batched": at1_vs_sqlite,
        "at_8_vs_sqlite_batched": at8_vs_sqlite,
        "pipelined_best_events_per_s": pipelined,
    })
}

fn write_json(plan: &Plan, seed: u64, pool: &Pool, all: &[Figures], goals: Value) {
    let results: Vec<Value> = all
        .iter()
        .map(|f| {
            json!({
                "configuration": f.config.label(),
                "producers": f.config.producers,
                "batch": f.config.batch,
                "system": f.system.name(),
                "events": f.events,
                "calls": f.calls,
                "seconds": f.elapsed.as_secs_f64(),
                "events_per_s": f.events_per_s(),
                "p50_us": f.p50.as_secs_f64() * 1e6,
                "p99_us": f.p99.as_secs_f64() * 1e6,
                "syncs": f.syncs,
                "events_per_sync": f.events_per_sync(),
                "cpu_percent": f.cpu_percent(),
            })
        })
        .collect();
    let ratios: Vec<Value> = plan
        .configs
        .iter()
        .map(|&c| {
            json!({
                "configuration": c.label(),
                "producers": c.producers,
                "batch": c.batch,
                "vs_sqlite_batched": ratio(all, c, System::SqliteBatched),
                "vs_sqlite_naive": ratio(all, c, System::SqliteNaive),
                "vs_raw_prezeroed": ratio(all, c, System::RawPrezeroed),
                "vs_raw_limit": ratio(all, c, System::RawLimit),
                "vs_enforcelog_growing": ratio(all, c, System::EnforcelogGrowing),
            })
        })
        .collect();
    let doc = json!({
        "bench": "durable",
        "mode": if plan.full { "full" } else { "quick" },
        "seed": seed,
        "machine": machine(),
        "warmup_s": plan.warmup.as_secs_f64(),
        "window_s": plan.window.as_secs_f64(),
        "rounds": plan.rounds,
        "payload_bytes_avg": pool.average_payload_bytes(),
        "results": results,
        "ratios": ratios,
        "goals": goals,
    });
    let dir = results_dir();
    std::fs::create_dir_all(&dir).expect("create bench-results");
    let name = if plan.full {
        "durable.json"
    } else {
        "durable-quick.json"
    };
    let path = dir.join(name);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&doc).expect("json") + "\n",
    )
    .expect("write results");
    println!("figures written to {}", path.display());
}

/// The configurations and systems to run: all, unless
/// `ENFORCELOG_BENCH_CONFIGS` (e.g. `64,8x64`) or `ENFORCELOG_BENCH_SYSTEMS`
/// (e.g. `enforcelog,raw-limit`) pick some, for profiling one of them.
fn selection(plan: &Plan) -> (Vec<Config>, Vec<System>) {
    let picked = |name: &str| -> Option<Vec<String>> {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
    };
    let configs = match picked("ENFORCELOG_BENCH_CONFIGS") {
        None => plan.configs.to_vec(),
        Some(names) => plan
            .configs
            .iter()
            .copied()
            .filter(|c| {
                let name = if c.batch == 1 {
                    c.producers.to_string()
                } else {
                    format!("{}x{}", c.producers, c.batch)
                };
                names.contains(&name)
            })
            .collect(),
    };
    let systems = match picked("ENFORCELOG_BENCH_SYSTEMS") {
        None => SYSTEMS.to_vec(),
        Some(names) => SYSTEMS
            .into_iter()
            .filter(|s| names.iter().any(|n| n == s.name()))
            .collect(),
    };
    (configs, systems)
}

/// `target/bench-results`, beside `target/tmp`.
fn results_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("bench-results")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick_env =
        std::env::var("ENFORCELOG_BENCH_QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
    let plan = Plan::new(args.iter().any(|a| a == "--bench") && !quick_env);
    let seed = seed();
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let pool = Arc::new(pool(seed));
    let machine = machine();
    println!(
        "durable bench: {} mode, warm-up {} + window {} per configuration, seed {seed} (ENFORCELOG_SEED to replay)",
        if plan.full { "full" } else { "quick" },
        ms(plan.warmup),
        ms(plan.window),
    );
    println!(
        "machine: {} ({} cores), kernel {}, {}",
        machine["cpu"].as_str().unwrap_or(""),
        machine["cores"],
        machine["kernel"].as_str().unwrap_or(""),
        machine["file_system"].as_str().unwrap_or(""),
    );
    println!(
        "events: enforcelog payload {:.0} B avg (MessagePack; the raw loop writes these bytes)",
        pool.average_payload_bytes()
    );
    let (configs, systems) = selection(&plan);
    let mut all = Vec::new();
    for config in configs {
        for figures in measure_config(&runtime, &plan, config, &systems, &pool, seed) {
            println!(
                "  {:<17} {:<18} {:>11}  p50 {}  p99 {}  {:.1} ev/sync",
                config.label(),
                figures.system.name(),
                rate(figures.events_per_s()),
                ms(figures.p50),
                ms(figures.p99),
                figures.events_per_sync(),
            );
            all.push(figures);
        }
    }
    println!();
    println!("summary (durable appends, Durability::Fsync vs SQLite WAL synchronous=FULL vs pwrite+fdatasync)");
    print_table(plan.configs, &all);
    if all.len() == plan.configs.len() * SYSTEMS.len() {
        let goals = goals(plan.configs, &all);
        write_json(&plan, seed, &pool, &all, goals);
    } else {
        println!("(a selection: goals not evaluated, no JSON written)");
    }
    println!("bench time {:.1} s", started.elapsed().as_secs_f64());
}
