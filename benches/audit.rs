//! What the audit trail costs today (issue 18): a tree head, proofs and
//! their checks over a store of 1,000,000 events, beside the passes they
//! are bounded by.
//!
//! A plain program (no criterion). It writes the read benches' data set
//! (`support/dataset.rs`, 1,000 pairs) with `Durability::None`, then times,
//! in one run, on the same files (in the page cache):
//!
//! - `Log::verify`, the pass `enforcelog verify` makes: the CRC of every
//!   frame and (a log of format 2) every chain link, leaves hashed on two
//!   threads;
//! - the floor of any head computed from the records: every frame visited
//!   in place (`Log::scan`) and its leaf hashed (SHA-256), nothing else;
//! - `Store::head`: one pass over the log's bytes that checks the CRCs
//!   and the chain and folds the leaves it hashes for the chain into the
//!   tree (two threads), then the node hashes above the blocks;
//! - `Store::head_with_consistency`, what `enforcelog audit` costs: the
//!   head and the consistency proof from an old size, from one tree;
//! - the first proof in a store that keeps no tree yet: the full pass;
//!   and the same once a writer's head left its tree on disk (`TREE`);
//! - `Store::prove_inclusion` and `Store::prove_consistency` from the tree
//!   the head kept (docs/AUDIT.md, "Proofs from a kept tree"): median and
//!   99th percentile over random offsets and old sizes;
//! - checking a proof (`InclusionProof::verify`, `ConsistencyProof::verify`),
//!   which is what an auditor pays: O(log n) hashes;
//! - proof sizes (hashes, JSON bytes) from 1,000 to 1,000,000 records.
//!
//! Every proof is checked against the head before it is timed, and the
//! bench fails if one does not verify.
//!
//! - `cargo bench --bench audit`: 1,000,000 events.
//! - Without `--bench` (as `cargo test --all-targets` runs it): 20,000
//!   events, the same steps and checks.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use enforcelog::audit::merkle::record_leaf_hash;
use enforcelog::{Log, Store};

#[path = "support/dataset.rs"]
#[allow(dead_code, reason = "the audit bench uses the data set's writer only")]
mod dataset;
#[path = "support/events.rs"]
mod events;

use dataset::{build, Keys, Rng};

const KEYS: Keys = Keys {
    tenants: 100,
    rules_per_tenant: 10,
    rule_digits: 4,
};
const DEFAULT_SEED: u64 = 0x5eed_0018;

/// The log's bytes on disk: every segment file.
fn log_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read the store") {
        let entry = entry.expect("entry");
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".log") {
            total += entry.metadata().expect("metadata").len();
        }
    }
    total
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn timed<T>(repeats: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut samples = Vec::with_capacity(repeats);
    let mut last = None;
    for _ in 0..repeats {
        let started = Instant::now();
        last = Some(black_box(f()));
        samples.push(started.elapsed());
    }
    (median(samples), last.expect("at least one repeat"))
}

fn gb_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / time.as_secs_f64() / 1e9
}

/// Every frame visited in place and its leaf hashed: the floor of a head.
fn leaf_pass(log: &Log) -> u64 {
    let mut leaves = 0u64;
    let mut fold = [0u8; 32];
    log.scan(0, i64::MIN..=i64::MAX, |frame| {
        let leaf = record_leaf_hash(frame.offset, frame.timestamp_us, frame.payload);
        fold[0] ^= leaf[0];
        leaves += 1;
        ControlFlow::Continue(())
    })
    .expect("scan");
    black_box(fold);
    leaves
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let events: u64 = if full { 1_000_000 } else { 20_000 };
    let repeats = if full { 5 } else { 2 };
    let seed = dataset::seed(DEFAULT_SEED);
    println!(
        "audit bench: {events} events, {} mode, seed {seed}",
        if full { "full" } else { "test" }
    );
    let ds = build("bench-audit", KEYS, events, Rng(seed), seed);
    let bytes = log_bytes(&ds.store);
    assert!(bytes > 0, "the log's segments are in the store's directory");
    let store = Store::open_read_only(&ds.store).expect("open the store");
    let log = Log::open_read_only(&ds.store).expect("open the log");
    println!(
        "log: {:.1} MB in segments, {:.0} bytes per event",
        bytes as f64 / 1e6,
        bytes as f64 / events as f64
    );

    let (verify, report) = timed(repeats, || log.verify().expect("verify"));
    assert!(report.is_clean(), "the bench's store verifies: {report:?}");
    let (floor, leaves) = timed(repeats, || leaf_pass(&log));
    assert_eq!(leaves, events, "seed {seed}");
    let (head_time, head) = timed(repeats, || store.head().expect("head"));
    assert_eq!(head.size, events);
    let (audit_time, (now, audit_proof)) = timed(repeats, || {
        store
            .head_with_consistency(0, Some(events / 3))
            .expect("audit")
    });
    assert_eq!(now.root, head.root, "seed {seed}");
    let audit_proof = audit_proof.expect("a proof");
    assert_eq!(audit_proof.new_root, head.root);
    audit_proof.verify().expect("the audit's proof verifies");

    // Proofs against the head, each checked before it counts. The first
    // in a store without a kept tree makes the full pass; the head above
    // kept its tree for the rest.
    let fresh = Store::open_read_only(&ds.store).expect("open the store again");
    let started = Instant::now();
    let first = fresh.prove_inclusion(events / 2, head.size).expect("prove");
    let first_proof = started.elapsed();
    assert_eq!(first.root, head.root, "seed {seed}");
    first.verify().expect("the first proof verifies");
    drop(fresh);
    // A writer's head leaves its tree in the directory (TREE): the first
    // proof of the next process starts from it.
    let writer = Store::open(&ds.store, dataset::store_options()).expect("open a writer");
    assert_eq!(writer.head().expect("head").root, head.root);
    writer.close().expect("close the writer");
    drop(writer);
    let fresh = Store::open_read_only(&ds.store).expect("open the store again");
    let started = Instant::now();
    let first = fresh.prove_inclusion(events / 2, head.size).expect("prove");
    let first_from_file = started.elapsed();
    assert_eq!(first.root, head.root, "seed {seed}");
    first.verify().expect("the first proof verifies");
    assert_eq!(fresh.metrics().tree_passes, 0, "started from the file");
    drop(fresh);
    let passes = store.metrics().tree_passes;
    let proofs = if full { 2_000 } else { 200 };
    let mut rng = Rng(seed ^ 0xA0D1);
    let mut inclusion_times = Vec::with_capacity(proofs);
    let mut inclusion = None;
    for _ in 0..proofs {
        let offset = rng.below(events);
        let started = Instant::now();
        let proof = store.prove_inclusion(offset, head.size).expect("prove");
        inclusion_times.push(started.elapsed());
        assert_eq!(proof.root, head.root, "seed {seed}");
        proof.verify().expect("the inclusion proof verifies");
        inclusion = Some(proof);
    }
    let inclusion = inclusion.expect("a proof");
    let mut consistency_times = Vec::with_capacity(proofs);
    let mut consistency = None;
    for _ in 0..proofs {
        let old_size = 1 + rng.below(events);
        let started = Instant::now();
        let proof = store
            .prove_consistency(old_size, head.size)
            .expect("prove consistency");
        consistency_times.push(started.elapsed());
        assert_eq!(proof.new_root, head.root, "seed {seed}");
        proof.verify().expect("the consistency proof verifies");
        consistency = Some(proof);
    }
    let consistency = consistency.expect("a proof");
    assert_eq!(
        store.metrics().tree_passes,
        passes,
        "every proof came from the kept tree"
    );
    let quantile = |samples: &mut Vec<Duration>, q: f64| -> f64 {
        samples.sort();
        samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6
    };
    let inclusion_us = (
        quantile(&mut inclusion_times, 0.5),
        quantile(&mut inclusion_times, 0.99),
    );
    let consistency_us = (
        quantile(&mut consistency_times, 0.5),
        quantile(&mut consistency_times, 0.99),
    );

    let checks = if full { 100_000 } else { 1_000 };
    let (check_inclusion, ()) = timed(3, || {
        for _ in 0..checks {
            black_box(&inclusion).verify().expect("verifies");
        }
    });
    let (check_consistency, ()) = timed(3, || {
        for _ in 0..checks {
            black_box(&consistency).verify().expect("verifies");
        }
    });
    let per_check = |d: Duration| d.as_secs_f64() * 1e6 / checks as f64;

    println!();
    println!("pass over the whole log                     time    GB/s   events/s");
    let row = |name: &str, t: Duration| {
        println!(
            "{name:<40} {:>8.1} ms {:>6.2} {:>8.2} M",
            t.as_secs_f64() * 1e3,
            gb_per_s(bytes, t),
            events as f64 / t.as_secs_f64() / 1e6
        );
    };
    row("verify (CRC of every frame, chain links)", verify);
    row("leaf hashes only (floor of a head)", floor);
    row("head", head_time);
    row("audit (head + consistency proof)", audit_time);
    row("first proof in a store (full pass)", first_proof);
    println!(
        "first proof in a store, from the writer's TREE file: {:.2} ms",
        first_from_file.as_secs_f64() * 1e3
    );
    println!();
    println!("proofs from the kept tree ({proofs} each, random):  median      p99");
    println!(
        "  prove_inclusion                         {:>8.1} µs {:>6.1} µs",
        inclusion_us.0, inclusion_us.1
    );
    println!(
        "  prove_consistency                       {:>8.1} µs {:>6.1} µs",
        consistency_us.0, consistency_us.1
    );
    println!();
    println!(
        "checking a proof (what an auditor pays): inclusion {:.2} µs ({} hashes), consistency {:.2} µs ({} hashes)",
        per_check(check_inclusion),
        inclusion.path.len(),
        per_check(check_consistency),
        consistency.path.len()
    );
    println!();
    println!(
        "proof sizes     records   inclusion hashes  JSON bytes   consistency hashes  JSON bytes"
    );
    let mut size = 1_000u64;
    while size <= events {
        let proof = store.prove_inclusion(size / 3, size).expect("prove");
        proof.verify().expect("verifies");
        let cons = store
            .prove_consistency(size / 2 + 1, size)
            .expect("prove consistency");
        cons.verify().expect("verifies");
        println!(
            "            {size:>11} {:>18} {:>11} {:>20} {:>11}",
            proof.path.len(),
            proof.to_json().len(),
            cons.path.len(),
            cons.to_json().len()
        );
        size *= 10;
    }
    println!();
    println!("issue 18 goals (this run):");
    println!(
        "  verify ≥ 1 GB/s: {:.2} GB/s ({})",
        gb_per_s(bytes, verify),
        if gb_per_s(bytes, verify) >= 1.0 {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "  audit ≥ 1 GB/s: {:.2} GB/s ({})",
        gb_per_s(bytes, audit_time),
        if gb_per_s(bytes, audit_time) >= 1.0 {
            "met"
        } else {
            "missed"
        }
    );
    let prove_us = inclusion_us.0.max(consistency_us.0);
    println!(
        "  proof time ≤ 50 µs: producing {prove_us:.1} µs median from the kept tree ({}), \
         {:.0} ms for the first in a store; checking {:.2} µs",
        if prove_us <= 50.0 { "met" } else { "missed" },
        first_proof.as_secs_f64() * 1e3,
        per_check(check_inclusion)
    );
    println!(
        "  durable appends with the chain on: see `cargo bench --bench durable` (enforcelog vs enforcelog-unchained)"
    );
}
