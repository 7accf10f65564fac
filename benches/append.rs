//! Durable append throughput: how many ~200-byte records per second the log
//! acknowledges under `Durability::Fsync`, and how many records share each
//! `fdatasync` (group commit), as the number of concurrent writers grows.
//!
//! Every writer keeps exactly one append in flight (`append().await` in a
//! loop, or `append_blocking` on an OS thread), so the figures show what
//! group commit buys: one writer pays one fsync per record; many writers
//! share each fsync. The pipelined-batch configuration (`append_batch` of 64
//! records) is a reference point for callers that can batch.
//!
//! The log lives in a temporary directory under `CARGO_TARGET_TMPDIR`
//! (`target/tmp`), on the same disk as the project, not in `/tmp`: `/tmp` is
//! a tmpfs on many machines, where `fdatasync` costs nothing and the figures
//! would mean nothing. (On the machine these benches were first run on, both
//! `target/tmp` and `/tmp` are on the root ext4 file system of `/dev/vda`.)
//! The summary prints the file system actually used.
//!
//! Criterion measures each configuration with `iter_custom`: one iteration
//! is one append call (one record, or one batch of 64), and a sample of `n`
//! iterations spreads `n` appends over the writers. After criterion, a
//! separate fixed-size run per configuration prints one plain `summary:`
//! line with the records per second and the records per `fdatasync` taken
//! from [`Log::metrics`]. In quick check mode (`-- --test`, or under
//! `cargo test --benches`) that run is tiny.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use enforcelog::{Durability, Log, LogOptions, Record};
use tempfile::TempDir;
use tokio::runtime::Runtime;

/// Payload length of every record, in bytes.
const PAYLOAD_BYTES: usize = 200;

/// Records per call in the pipelined-batch configuration.
const BATCH_LEN: usize = 64;

/// Records per summary run in quick check mode.
const CHECK_RECORDS: u64 = 256;

/// How the writers run.
#[derive(Debug, Clone, Copy)]
enum Writers {
    /// Tokio tasks on a multi-thread runtime, each awaiting its append.
    Tasks,
    /// OS threads, each blocked in `append_blocking`.
    Threads,
}

/// One measured configuration.
#[derive(Debug, Clone, Copy)]
struct Config {
    writers_kind: Writers,
    writers: usize,
    /// Records per append call: 1, or `BATCH_LEN` for pipelined batches.
    batch_len: usize,
    /// Records appended by the fixed-size summary run.
    summary_records: u64,
}

impl Config {
    fn label(&self) -> &'static str {
        match (self.writers_kind, self.batch_len) {
            (Writers::Tasks, 1) => "tokio_tasks",
            (Writers::Threads, 1) => "os_threads",
            (Writers::Tasks, _) => "tokio_tasks_batch64",
            (Writers::Threads, _) => "os_threads_batch64",
        }
    }
}

/// The summary sizes are set so that each run takes about a second or two
/// at the rates measured on a 2-core VM (see the README).
const CONFIGS: [Config; 6] = [
    Config {
        writers_kind: Writers::Tasks,
        writers: 1,
        batch_len: 1,
        summary_records: 5_000,
    },
    Config {
        writers_kind: Writers::Tasks,
        writers: 8,
        batch_len: 1,
        summary_records: 40_000,
    },
    Config {
        writers_kind: Writers::Tasks,
        writers: 64,
        batch_len: 1,
        summary_records: 200_000,
    },
    Config {
        writers_kind: Writers::Threads,
        writers: 8,
        batch_len: 1,
        summary_records: 40_000,
    },
    Config {
        writers_kind: Writers::Threads,
        writers: 64,
        batch_len: 1,
        summary_records: 200_000,
    },
    Config {
        writers_kind: Writers::Tasks,
        writers: 8,
        batch_len: BATCH_LEN,
        summary_records: 500_000,
    },
];

/// A synthetic enforcement outcome, padded to exactly `PAYLOAD_BYTES`.
fn payload(writer: usize, seq: u64) -> Vec<u8> {
    const ACTIONS: [&str; 4] = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"];
    let action = ACTIONS[(seq % 4) as usize];
    let mut text = format!(
        r#"{{"tenant":"tenant-{:04}","rule":"rule-{:04}","action":"{action}","writer":{writer},"seq":{seq},"note":""#,
        seq % 97,
        seq % 1009,
    );
    let closing = r#""}"#;
    let pad = PAYLOAD_BYTES.saturating_sub(text.len() + closing.len());
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(closing);
    let mut bytes = text.into_bytes();
    bytes.truncate(PAYLOAD_BYTES);
    bytes
}

/// Writer `i`'s share of `total` calls spread over `writers`.
fn share(total: u64, writers: usize, i: usize) -> u64 {
    let writers = writers as u64;
    let i = i as u64;
    total / writers + u64::from(i < total % writers)
}

fn records_for(writer: usize, call: u64, batch_len: usize) -> Vec<Record> {
    let first = call * batch_len as u64;
    (first..first + batch_len as u64)
        .map(|seq| Record::now(payload(writer, seq)))
        .collect()
}

/// Makes `calls` append calls spread over the writers, each writer with one
/// call in flight; returns the wall time from the first call to the last
/// acknowledgement.
fn run(config: Config, log: &Log, runtime: &Runtime, calls: u64) -> Duration {
    let started = Instant::now();
    match config.writers_kind {
        Writers::Tasks => runtime.block_on(async {
            let tasks: Vec<_> = (0..config.writers)
                .map(|w| {
                    let log = log.clone();
                    let n = share(calls, config.writers, w);
                    tokio::spawn(async move {
                        for call in 0..n {
                            let batch = records_for(w, call, config.batch_len);
                            log.append_batch(batch).await.expect("durable append");
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.expect("writer task");
            }
        }),
        Writers::Threads => std::thread::scope(|scope| {
            for w in 0..config.writers {
                let n = share(calls, config.writers, w);
                scope.spawn(move || {
                    for call in 0..n {
                        let batch = records_for(w, call, config.batch_len);
                        log.append_batch_blocking(batch).expect("durable append");
                    }
                });
            }
        }),
    }
    started.elapsed()
}

fn bench_root() -> &'static Path {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
}

fn open_fresh() -> (TempDir, Log) {
    let dir = tempfile::Builder::new()
        .prefix("enforcelog-bench-")
        .tempdir_in(bench_root())
        .expect("create bench directory");
    let options = LogOptions {
        durability: Durability::Fsync,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).expect("open log");
    (dir, log)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn bench_appends(c: &mut Criterion, runtime: &Runtime) {
    let mut group = c.benchmark_group("append_fsync_200B");
    // Each iteration waits for at least one fdatasync: few, long samples.
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    for config in CONFIGS {
        let (_dir, log) = open_fresh();
        group.throughput(Throughput::Elements(config.batch_len as u64));
        group.bench_function(BenchmarkId::new(config.label(), config.writers), |b| {
            b.iter_custom(|calls| run(config, &log, runtime, calls))
        });
        log.close().expect("close log");
    }
    group.finish();
}

/// One fixed-size run on a fresh log, reported as a plain summary line. The
/// last figure, wall time per `fdatasync`, is the writer's commit cycle: it
/// shows whether a slow run had slow fsyncs or small groups.
fn summarise(config: Config, runtime: &Runtime, records: u64) {
    let (_dir, log) = open_fresh();
    let calls = records.div_ceil(config.batch_len as u64);
    let elapsed = run(config, &log, runtime, calls);
    let metrics = log.metrics();
    log.close().expect("close log");
    assert_eq!(metrics.records, calls * config.batch_len as u64);
    let seconds = elapsed.as_secs_f64();
    let per_fsync = metrics.records as f64 / metrics.fsyncs.max(1) as f64;
    println!(
        "summary: {:<20} writers={:<3} batch={:<3} records={:<7} seconds={:.3} records/s={:.0} fsyncs={} records/fdatasync={:.1} us/fdatasync_cycle={:.0}",
        config.label(),
        config.writers,
        config.batch_len,
        metrics.records,
        seconds,
        metrics.records as f64 / seconds,
        metrics.fsyncs,
        per_fsync,
        seconds * 1e6 / metrics.fsyncs.max(1) as f64,
    );
}

/// The file system type and source of the mount holding `path`, from
/// `/proc/self/mounts` (Linux); `None` elsewhere.
fn file_system_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let source = fields.next()?;
            let target = fields.next()?;
            let fs_type = fields.next()?;
            path.starts_with(target).then(|| {
                (
                    target.len(),
                    format!("{fs_type} on {source} mounted at {target}"),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, description)| description)
}

/// Quick check mode, as criterion decides it: `--test`, or no `--bench`
/// (how `cargo test --benches` runs this binary).
fn is_quick_check(args: &[String]) -> bool {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--test") || !has("--bench")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = runtime();
    let mut criterion = Criterion::default().configure_from_args();
    bench_appends(&mut criterion, &runtime);
    criterion.final_summary();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = is_quick_check(&args);
    let root = bench_root();
    println!(
        "summary: directory {} ({}), {} cores",
        root.display(),
        file_system_of(root).unwrap_or_else(|| "file system unknown".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for config in CONFIGS {
        let records = if quick {
            CHECK_RECORDS
        } else {
            config.summary_records
        };
        summarise(config, &runtime, records);
    }
}
