//! What a store pays to see one more batch of another shard: the refresh of
//! a peer (its log's refresh and the catch-up of its statistics) whose
//! writer holds 1,000,000 events, after that writer committed one event.
//!
//! A plain program (no criterion). Shard 1's writer records the events in
//! batches of 1,000 (each batch fsynced, so its durable end moves), then
//! the store on shard 0 opens (reading shard 1 once) and, for each round,
//! shard 1 records one more event and the store refreshes: the table prints
//! the refresh time (median, 90th percentile) beside a full read-only open
//! of shard 1, which is what every refresh cost before it became
//! incremental (the reopen of every segment and a read of the whole last
//! one). Each round checks that the store counts every event.
//!
//! - `cargo bench --bench refresh`: 1,000,000 events (under a minute to
//!   write on a 2-core VM), 50 rounds.
//! - Without `--bench` (as `cargo test --all-targets` runs it): 20,000
//!   events, 10 rounds, the same steps and checks.
//!
//! The store lives under `CARGO_TARGET_TMPDIR` and is removed at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use enforcelog::{Event, Log, LogOptions, Store, StoreOptions};

#[path = "support/events.rs"]
mod events;
use events::numbered_event;

const BATCH: u64 = 1_000;
const T0_US: i64 = 1_790_812_800_000_000;

fn event(i: u64) -> Event {
    numbered_event(i, T0_US)
}

fn total(store: &Store) -> u64 {
    (0..50)
        .map(|t| {
            store
                .stats_for_tenant(&format!("tenant-{t}"), Some(T0_US + 1))
                .expect("stats")
                .iter()
                .map(|s| s.total_count)
                .sum::<u64>()
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (events, rounds) = if full { (1_000_000, 50) } else { (20_000, 10) };
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-refresh");
    let _ = std::fs::remove_dir_all(&root);
    let options = StoreOptions {
        log: LogOptions::default(),
        // Only the refreshes measured here.
        shard_refresh_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    };
    let reader = Store::open(&root, options.clone()).expect("shard 0");
    let writer = Store::open(&root, options.clone()).expect("shard 1");
    assert_eq!((reader.shard(), writer.shard()), (0, 1));
    let started = Instant::now();
    for from in (0..events).step_by(BATCH as usize) {
        let mut batch = writer.begin();
        for i in from..(from + BATCH).min(events) {
            batch.record(event(i)).expect("valid event");
        }
        batch.commit_blocking().expect("commit");
    }
    let written = started.elapsed();
    let started = Instant::now();
    reader.refresh().expect("first refresh");
    let first = started.elapsed();
    assert_eq!(
        total(&reader),
        events,
        "the first refresh counts every event"
    );
    let shard = root.join("shards/1");
    let segments = std::fs::read_dir(&shard)
        .expect("shard 1")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".log"))
        })
        .count();
    let mut refreshes = Vec::with_capacity(rounds);
    let mut reopens = Vec::with_capacity(rounds);
    for round in 0..rounds as u64 {
        writer
            .record_blocking(event(events + round))
            .expect("one more");
        let started = Instant::now();
        reader.refresh().expect("refresh");
        refreshes.push(started.elapsed());
        assert_eq!(total(&reader), events + round + 1, "round {round}");
        let started = Instant::now();
        let log = Log::open_read_only(&shard).expect("full open");
        reopens.push(started.elapsed());
        assert_eq!(log.next_offset(), events + round + 1);
    }
    refreshes.sort();
    reopens.sort();
    println!(
        "{events} events in shard 1 ({segments} segments), written in {:.1} s; the first \
         refresh (open and fold from the checkpoint or replay) took {:.1} ms",
        written.as_secs_f64(),
        first.as_secs_f64() * 1e3
    );
    println!("| after one more event | median | p90 |");
    println!("|-|-:|-:|");
    for (name, times) in [
        ("store refresh (peer log refresh + catch-up)", &refreshes),
        (
            "full read-only open of the shard (the old refresh)",
            &reopens,
        ),
    ] {
        println!(
            "| {name} | {:.1} µs | {:.1} µs |",
            percentile(times, 50).as_secs_f64() * 1e6,
            percentile(times, 90).as_secs_f64() * 1e6
        );
    }
    drop((reader, writer));
    let _ = std::fs::remove_dir_all(&root);
}
