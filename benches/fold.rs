//! The projection's CPU per event, isolated from the log: the payloads of
//! the reads bench's data set (1M events by default, 10,000 (tenant, rule)
//! pairs hit in random order, 60 days) are read once into one buffer in
//! memory, laid out one after another as in a segment, and then timed:
//!
//! - `view`: `event_view::view` of every payload (keys read in place);
//! - `apply_keys`: the folds of those keys into `TriggerStats`, one call
//!   per event;
//! - `apply_keys_block`: the same keys in blocks of 256, as the store's
//!   projection host hands them out;
//! - `host path`: view + copy into a `KeyBlock` + fold when full, per
//!   payload, as the host folds a catch-up (the figure the goal "≤ 100 ns of
//!   projection CPU per event" of issue 17 is about).
//!
//! Each is the best of five passes. The folds are checked to end in the
//! same snapshot, and that snapshot against a fold of decoded events.
//! `cargo bench --bench fold`; `ENFORCELOG_BENCH_EVENTS=N` changes the
//! size. Without `--bench` (as `cargo test --all-targets` runs it) it does
//! a smoke run of 3,000 events. Meant for `perf record`: nothing else runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use enforcelog::event_view::view;
use enforcelog::projection::{KeyBlock, Projection};
use enforcelog::{EntryView, EventKeys, Log, TriggerStats};

#[path = "support/dataset.rs"]
#[allow(
    dead_code,
    reason = "the fold bench uses the data set's writer and replay only"
)]
mod dataset;
#[path = "support/events.rs"]
mod events;

use dataset::{build, replay, Keys, Rng, BLOCK};

const KEYS: Keys = Keys {
    tenants: 100,
    rules_per_tenant: 100,
    rule_digits: 5,
};
const DEFAULT_SEED: u64 = 0x5eed_0007;
const REPEATS: usize = 5;

/// The payloads, one after another, and where each lies.
struct Payloads {
    bytes: Vec<u8>,
    records: Vec<(u64, i64, usize, usize)>,
}

impl Payloads {
    fn read(log: &Log) -> Payloads {
        let mut out = Payloads {
            bytes: Vec::new(),
            records: Vec::new(),
        };
        for record in log.read_from(0).expect("read") {
            let record = record.expect("record");
            let start = out.bytes.len();
            out.bytes.extend_from_slice(&record.payload);
            out.records
                .push((record.offset, record.timestamp_us, start, out.bytes.len()));
        }
        out
    }

    fn iter(&self) -> impl Iterator<Item = (u64, i64, &[u8])> {
        self.records
            .iter()
            .map(|&(offset, at, start, end)| (offset, at, &self.bytes[start..end]))
    }

    fn keys(&self) -> Vec<EventKeys<'_>> {
        self.iter()
            .map(|(offset, at, payload)| match view(offset, at, payload) {
                Ok(EntryView::Event(keys)) => keys,
                other => panic!("the data set holds events only: {other:?}"),
            })
            .collect()
    }
}

fn best(mut pass: impl FnMut() -> Duration) -> Duration {
    (0..REPEATS).map(|_| pass()).min().expect("passes")
}

fn timed<T>(f: impl FnOnce() -> T) -> (Duration, T) {
    let started = Instant::now();
    let out = f();
    (started.elapsed(), out)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let full = args.iter().any(|a| a == "--bench");
    let events = if full {
        std::env::var("ENFORCELOG_BENCH_EVENTS")
            .ok()
            .map(|v| v.replace('_', "").parse::<u64>().expect("a number"))
            .unwrap_or(1_000_000)
            .max(100)
    } else {
        3_000
    };
    let seed = dataset::seed(DEFAULT_SEED);
    let ds = build("enforcelog-fold-", KEYS, events, Rng(seed), seed);
    let log = Log::open_read_only(&ds.store).expect("open log");
    let payloads = Payloads::read(&log);
    let keys = payloads.keys();
    let n = keys.len() as u64;
    assert_eq!(n, events, "seed {seed}");

    let view_time = best(|| {
        timed(|| {
            let mut viewed = 0u64;
            for (offset, at, payload) in payloads.iter() {
                if let Ok(EntryView::Event(k)) = view(offset, at, payload) {
                    viewed += k.enforced_at_us as u64 & 1;
                }
            }
            black_box(viewed)
        })
        .0
    });
    let mut folds = Vec::new();
    let one_by_one = best(|| {
        let (time, p) = timed(|| {
            let mut p = TriggerStats::default();
            for k in &keys {
                p.apply_keys(k);
            }
            p
        });
        folds.push(p.snapshot());
        time
    });
    let in_blocks = best(|| {
        let (time, p) = timed(|| {
            let mut p = TriggerStats::default();
            for block in keys.chunks(BLOCK) {
                p.apply_keys_block(block);
            }
            p
        });
        folds.push(p.snapshot());
        time
    });
    let host_path = best(|| {
        let (time, p) = timed(|| {
            let mut p = TriggerStats::default();
            let mut block = KeyBlock::with_capacity(BLOCK);
            for (offset, at, payload) in payloads.iter() {
                if let Ok(EntryView::Event(k)) = view(offset, at, payload) {
                    block.push(&k);
                    if block.is_full() {
                        block.fold_into(&mut p);
                    }
                }
            }
            block.fold_into(&mut p);
            p
        });
        folds.push(p.snapshot());
        time
    });
    let decoded = replay(&log).snapshot();
    assert!(
        folds.iter().all(|s| *s == decoded),
        "every fold ends in the snapshot of a fold of decoded events (seed {seed})"
    );

    let ns = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "fold bench: {n} events, {} (tenant, rule) pairs, {} mode, seed {seed}, best of {REPEATS}",
        KEYS.pairs(),
        if full { "full" } else { "smoke" }
    );
    println!(
        "  view                    {:>6.1} ns per event",
        ns(view_time)
    );
    println!(
        "  apply_keys, one by one  {:>6.1} ns per event",
        ns(one_by_one)
    );
    println!(
        "  apply_keys_block ({BLOCK})  {:>6.1} ns per event  ({:.2}x one by one)",
        ns(in_blocks),
        one_by_one.as_secs_f64() / in_blocks.as_secs_f64()
    );
    println!(
        "  host path (view + KeyBlock + fold) {:>6.1} ns per event  (goal <= 100 ns: {})",
        ns(host_path),
        if ns(host_path) <= 100.0 {
            "met"
        } else {
            "missed"
        }
    );
}
