//! Durable events/s with several writing *processes*: does the device serve
//! concurrent `fdatasync`s of different files as well as one process's group
//! commit? The measurement behind the choice of shards (docs/DESIGN.md,
//! "Many processes, one directory").
//!
//! For N in 1, 2, 4, 8 the bench starts N child processes (this binary,
//! re-executed with `ENFORCELOG_SHARDS_CHILD` set), each opening a store and
//! running `P` producer threads (8 by default) that call
//! `Store::record_blocking` (`Durability::Fsync`) back to back. Beside each,
//! one process runs N × P producers on one store: the same total load
//! through one group commit. Every child waits for a common start instant
//! given by the parent and counts the acknowledgements that fall inside the
//! common window, so start-up and shutdown are not measured; the figure is
//! the sum of the children's counts over the window.
//!
//! Where the stores live (`ENFORCELOG_BENCH_LAYOUT`):
//! - `shared` (default): every child opens the **same** directory, so the
//!   first holds the root store and the others claim shards: the layout
//!   users get;
//! - `separate`: each child its own directory (the device question alone).
//!
//! Everything lives under `CARGO_TARGET_TMPDIR` (the project's disk; `/tmp`
//! may be a tmpfs where syncs cost nothing). `cargo bench --bench shards`
//! runs the full table (2 s per configuration, `ENFORCELOG_BENCH_WINDOW_MS`
//! changes it); without `--bench` (as `cargo test --all-targets` runs it)
//! it runs 1 and 2 processes for 100 ms as a smoke test, and checks that
//! every acknowledged event is in the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use enforcelog::{Store, StoreOptions};

#[path = "support/events.rs"]
mod events;
use events::producer_event;

const CHILD_ENV: &str = "ENFORCELOG_SHARDS_CHILD";
/// Producers per process (`ENFORCELOG_BENCH_PRODUCERS` changes it).
const PRODUCERS: usize = 8;

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let window_ms: u64 = std::env::var("ENFORCELOG_BENCH_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 2_000 } else { 100 });
    let producers: usize = std::env::var("ENFORCELOG_BENCH_PRODUCERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PRODUCERS);
    let separate = std::env::var("ENFORCELOG_BENCH_LAYOUT").as_deref() == Ok("separate");
    let counts: Vec<usize> = match std::env::var("ENFORCELOG_BENCH_PROCESSES") {
        Ok(list) => list.split(',').filter_map(|n| n.parse().ok()).collect(),
        Err(_) if full => vec![1, 2, 4, 8],
        Err(_) => vec![1, 2],
    };
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-shards");
    let _ = std::fs::remove_dir_all(&root);
    println!(
        "durable events/s, {producers} producers per process, {} layout, window {window_ms} ms",
        if separate { "separate" } else { "shared" }
    );
    println!("| processes | N processes: events/s | fsyncs/s | 1 process, same producers: events/s | fsyncs/s | ratio |");
    println!("|-:|-:|-:|-:|-:|-:|");
    for &n in &counts {
        let dir = root.join(format!("n{n}"));
        let many = run(&dir, n, producers, window_ms, separate);
        let one = run(
            &root.join(format!("one{n}")),
            1,
            n * producers,
            window_ms,
            false,
        );
        println!(
            "| {n} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            many.0,
            many.1,
            one.0,
            one.1,
            many.0 / one.0.max(1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs `processes` children of `producers` threads each; returns the
/// aggregate acknowledged events per second over the common window, and
/// the fsyncs per second of group commit over each child's whole run
/// (warm-up included: an approximation of the window's rate).
fn run(
    dir: &Path,
    processes: usize,
    producers: usize,
    window_ms: u64,
    separate: bool,
) -> (f64, f64) {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64;
    // Room for every child to start and open (and warm up) first.
    let start_ms = now_ms + 500 + 50 * processes as u64;
    let children: Vec<_> = (0..processes)
        .map(|i| {
            let store = if separate {
                dir.join(format!("p{i}"))
            } else {
                dir.to_path_buf()
            };
            let spec = format!("{}|{producers}|{start_ms}|{window_ms}", store.display());
            Command::new(std::env::current_exe().expect("own path"))
                .env(CHILD_ENV, spec)
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn a child")
        })
        .collect();
    let mut total = 0u64;
    let mut acknowledged = 0u64;
    let mut fsyncs_per_s = 0.0;
    for child in children {
        let out = child.wait_with_output().expect("child output");
        assert!(out.status.success(), "a child failed: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text
            .split_whitespace()
            .map(|f| f.parse::<u64>().expect("count"));
        total += fields.next().expect("window count");
        acknowledged += fields.next().expect("acknowledged count");
        let fsyncs = fields.next().expect("fsyncs");
        let run_ms = fields.next().expect("run time").max(1);
        fsyncs_per_s += fsyncs as f64 / (run_ms as f64 / 1000.0);
    }
    // Every acknowledged event is in the directory (all shards).
    let store = if separate {
        None
    } else {
        Some(Store::open_read_only(dir).expect("open the directory read-only"))
    };
    if let Some(store) = store {
        store.refresh().expect("refresh");
        let stats = store.stats_all(None).expect("stats");
        let stored: u64 = stats.iter().map(|s| s.total_count).sum();
        assert_eq!(
            stored, acknowledged,
            "every acknowledged event is stored once"
        );
        drop(store);
        if processes > 1 {
            stats_latency(dir, &stats[0].tenant_id, &stats[0].rule_id, processes);
        }
    }
    (total as f64 / (window_ms as f64 / 1000.0), fsyncs_per_s)
}

/// Times `Store::stats` of one rule on a writer of the directory whose
/// other `processes - 1` shards hold events: p50 and p99 of single calls.
fn stats_latency(dir: &Path, tenant: &str, rule: &str, processes: usize) {
    let store = Store::open(dir, StoreOptions::default()).expect("open a writer");
    let mut samples_ns: Vec<u64> = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let started = std::time::Instant::now();
        let stats = store.stats(tenant, rule, None).expect("stats");
        samples_ns.push(started.elapsed().as_nanos() as u64);
        std::hint::black_box(stats);
    }
    samples_ns.sort_unstable();
    let q = |f: f64| samples_ns[((samples_ns.len() - 1) as f64 * f) as usize] as f64 / 1000.0;
    println!(
        "stats() with {processes} shards holding events: p50 {:.2} µs, p99 {:.2} µs",
        q(0.5),
        q(0.99)
    );
}

/// A child: opens the store, runs the producers from the start instant,
/// prints the acknowledgements inside the window and the total.
fn child(spec: &str) {
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, producers, start_ms, window_ms] = parts[..] else {
        panic!("bad child spec {spec:?}");
    };
    let producers: usize = producers.parse().expect("producers");
    let start_ms: u64 = start_ms.parse().expect("start");
    let window_ms: u64 = window_ms.parse().expect("window");
    let store = Store::open(dir, StoreOptions::default()).expect("open the store");
    let opened = std::time::Instant::now();
    let in_window = Arc::new(AtomicU64::new(0));
    let acknowledged = Arc::new(AtomicU64::new(0));
    let epoch_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis() as u64
    };
    let threads: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            let in_window = in_window.clone();
            let acknowledged = acknowledged.clone();
            std::thread::spawn(move || {
                let tenant = format!("tenant-{}", p % 4);
                let rule = format!("rule-{}", std::process::id() % 7);
                // Warm up until the start, then measure the window, then
                // run a little longer so the last group is not a lone one.
                loop {
                    let now = epoch_ms();
                    if now >= start_ms + window_ms + 100 {
                        break;
                    }
                    let event = producer_event(&tenant, &rule, p);
                    store.record_blocking(event).expect("record");
                    acknowledged.fetch_add(1, Ordering::Relaxed);
                    let done = epoch_ms();
                    if done >= start_ms && done < start_ms + window_ms {
                        in_window.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer");
    }
    let run_ms = opened.elapsed().as_millis();
    let fsyncs = store.metrics().fsyncs;
    store.close().expect("close");
    println!(
        "{} {} {fsyncs} {run_ms}",
        in_window.load(Ordering::Relaxed),
        acknowledged.load(Ordering::Relaxed)
    );
}
