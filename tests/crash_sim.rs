//! Simulated crashes at random points of a concurrent append workload.
//!
//! Each crash point builds a fresh [`SimStorage`], opens a log with small
//! segments (so rolls happen), cuts the power after `k` mutating storage
//! calls, runs appends and batch appends from 1–4 threads until they fail
//! or the workload ends, drops the log, crashes the storage (losing, tearing
//! or reordering unsynced writes) and reopens it. The reopen must succeed (a
//! crash never looks like corruption), and what it finds must be what the
//! writers were told:
//!
//! 1. under `Durability::Fsync`, every acknowledged batch is present at the
//!    offsets it was acknowledged with, byte for byte;
//! 2. offsets are dense from 0 to `next_offset`;
//! 3. every record present belongs to an attempted batch, and every batch
//!    present is whole, contiguous and in order;
//! 4. `verify` reports nothing after the reopen;
//! 5. the next append gets offset `next_offset`.
//!
//! Under `Durability::None` and `Interval`, acknowledged batches may be lost,
//! but only as a suffix of the commit order: a batch acknowledged at offset
//! `o` is either present at `o` or the log ends at or before `o`.
//!
//! `k` ranges over the whole workload: each crash point first runs the same
//! planned workload without a power cut through a counting storage wrapper to
//! learn how many mutating calls it makes.
//!
//! Under `Durability::Fsync`, half the points fill segments with zeros ahead
//! of the writer (`LogOptions::preallocate_segments`, the default; the
//! segments here are smaller than the fill window, so each is filled whole
//! after its first group and cut back when it is sealed): power cuts land
//! between the zero fill, the writes over it, and the cut at each roll.
//!
//! Crash point `i` uses seed `base + i`, where `base` is `ENFORCELOG_SEED` or
//! a fixed default; the crash mode is `seed % 4`, everything else derives
//! from the seed. A failure names its seed: `ENFORCELOG_SEED=<seed> cargo
//! test --test crash_sim <test name>` runs the failing point first. Points
//! with one writer thread replay exactly; with more, the thread interleaving
//! is up to the scheduler. `ENFORCELOG_CRASH_SCALE=n` runs n times as many
//! crash points.

mod common;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::counting::{Counters, Counting};
use common::Rng;
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::{Durability, Error, Log, LogOptions, Record};

const DIR: &str = "/log";
const DEFAULT_SEED: u64 = 0x00C0_FFEE_2025_0003;
/// Crash points under `Durability::Fsync`.
const FSYNC_CRASH_POINTS: u64 = 4200;
/// Crash points under `Durability::None` and `Durability::Interval`.
const LAX_CRASH_POINTS: u64 = 1400;

// ---------------------------------------------------------------------------
// Seeds and randomness.

fn base_seed() -> u64 {
    common::seed_or(DEFAULT_SEED)
}

// ---------------------------------------------------------------------------
// The workload: planned batches whose payloads say where they come from.

/// Payload prefix: thread (1) | seq (4) | index in batch (2) | batch len (2).
const TAG_LEN: usize = 9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BatchId {
    thread: u8,
    seq: u32,
}

#[derive(Debug, Clone)]
struct PlannedBatch {
    id: BatchId,
    /// Sent with `append_blocking` (one record) rather than as a batch.
    single: bool,
    records: Vec<Record>,
}

/// What follows a payload's tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filler {
    /// Bytes that differ per record.
    Random(usize),
    /// A MessagePack `{"histogram": [0, ...], "unit": "ms"}` of about this
    /// many bytes: mostly zeros, so that whole sectors of a record are zero
    /// and recovery cannot take zeros for unwritten space.
    ZeroHeavy(usize),
}

fn payload(id: BatchId, index: u16, len: u16, filler: Filler) -> Vec<u8> {
    let filler_len = match filler {
        Filler::Random(n) => n,
        Filler::ZeroHeavy(n) => return zero_heavy_payload(id, index, len, n),
    };
    let mut p = tag(id, index, len);
    // Filler that differs per record, so a misplaced byte range shows.
    let mut x = u64::from(id.seq) << 24 | u64::from(id.thread) << 16 | u64::from(index);
    for _ in 0..filler_len {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        p.push((x >> 56) as u8);
    }
    p
}

fn tag(id: BatchId, index: u16, len: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(TAG_LEN);
    p.push(id.thread);
    p.extend_from_slice(&id.seq.to_le_bytes());
    p.extend_from_slice(&index.to_le_bytes());
    p.extend_from_slice(&len.to_le_bytes());
    p
}

/// The tag, then a histogram of `zeros`-ish zero counts. The count's low
/// byte has three bits set: a sector whose only non-zero byte had one bit
/// set could not be told from a flipped bit (recovery calls it corruption,
/// see `log::recovery`), and that is not what this test is about.
fn zero_heavy_payload(id: BatchId, index: u16, len: u16, zeros: usize) -> Vec<u8> {
    let count = u16::try_from(zeros).expect("small") | 0x07;
    let mut p = tag(id, index, len);
    p.extend_from_slice(b"\x82\xa9histogram\xdc");
    p.extend_from_slice(&count.to_be_bytes());
    p.resize(p.len() + usize::from(count), 0);
    p.extend_from_slice(b"\xa4unit\xa2ms");
    p
}

fn parse_tag(payload: &[u8]) -> Option<(BatchId, u16, u16)> {
    let tag = payload.get(..TAG_LEN)?;
    let id = BatchId {
        thread: tag[0],
        seq: u32::from_le_bytes(tag[1..5].try_into().ok()?),
    };
    let index = u16::from_le_bytes(tag[5..7].try_into().ok()?);
    let len = u16::from_le_bytes(tag[7..9].try_into().ok()?);
    Some((id, index, len))
}

fn timestamp(id: BatchId, index: u16) -> i64 {
    i64::from(id.thread) << 48 | i64::from(id.seq) << 16 | i64::from(index)
}

/// The batches each thread will send, in order.
fn plan(rng: &mut Rng, threads: u8) -> Vec<Vec<PlannedBatch>> {
    let total_calls = rng.range(40..90);
    let per_thread = total_calls / u64::from(threads) + 1;
    (0..threads)
        .map(|thread| {
            (0..per_thread)
                .map(|seq| {
                    let id = BatchId {
                        thread,
                        seq: u32::try_from(seq).expect("few batches"),
                    };
                    let single = rng.range(0..10) < 6;
                    let len = if single { 1 } else { rng.range(2..7) as u16 };
                    // A third of the batches carry zero-heavy records.
                    let zero_heavy = rng.range(0..3) == 0;
                    let records = (0..len)
                        .map(|index| {
                            // Zero-heavy batches must still fit the
                            // smallest segment (4 KiB).
                            let most = (3400 / u64::from(len)).min(900);
                            let filler = if zero_heavy {
                                Filler::ZeroHeavy(rng.range(100..most) as usize)
                            } else {
                                Filler::Random(rng.range(0..160) as usize)
                            };
                            Record::new(timestamp(id, index), payload(id, index, len, filler))
                        })
                        .collect();
                    PlannedBatch {
                        id,
                        single,
                        records,
                    }
                })
                .collect()
        })
        .collect()
}

/// One append call as its caller saw it.
#[derive(Debug, Clone)]
struct Attempt {
    batch: PlannedBatch,
    /// `Some(offsets)` when acknowledged; `None` when the call failed, so the
    /// batch may or may not be in the log.
    acked: Option<Range<u64>>,
}

/// Runs each thread's plan until its first error; returns what was attempted.
fn run_workload(log: &Log, plans: &[Vec<PlannedBatch>]) -> Result<Vec<Attempt>, String> {
    let per_thread: Vec<Result<Vec<Attempt>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| scope.spawn(move || run_thread(log, plan)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a writer thread panicked"))
            .collect()
    });
    let mut attempts = Vec::new();
    for thread in per_thread {
        attempts.extend(thread?);
    }
    Ok(attempts)
}

fn run_thread(log: &Log, plan: &[PlannedBatch]) -> Result<Vec<Attempt>, String> {
    let mut attempts = Vec::new();
    for batch in plan {
        let result = if batch.single {
            let record = batch.records[0].clone();
            log.append_blocking(record).map(|o| o..o + 1)
        } else {
            log.append_batch_blocking(batch.records.clone())
        };
        match result {
            Ok(range) => {
                if range.end - range.start != batch.records.len() as u64 {
                    return Err(format!(
                        "batch {:?} of {} records was acknowledged with offsets {range:?}",
                        batch.id,
                        batch.records.len()
                    ));
                }
                attempts.push(Attempt {
                    batch: batch.clone(),
                    acked: Some(range),
                });
            }
            Err(Error::Poisoned { .. } | Error::Io { .. }) => {
                attempts.push(Attempt {
                    batch: batch.clone(),
                    acked: None,
                });
                break;
            }
            Err(e) => {
                return Err(format!(
                    "append of {:?} failed with an unexpected error: {e}",
                    batch.id
                ))
            }
        }
    }
    Ok(attempts)
}

/// Mutating storage calls the workload makes from open to drop, without
/// faults (with several threads, one sample of a schedule-dependent number).
fn count_workload_ops(
    seed: u64,
    options: &LogOptions,
    plans: &[Vec<PlannedBatch>],
) -> Result<u64, String> {
    let counters = Arc::new(Counters::default());
    let storage = Counting {
        inner: SimStorage::new(seed),
        counters: counters.clone(),
    };
    let log = Log::open_with_storage(Arc::new(storage), DIR, options.clone())
        .map_err(|e| format!("calibration open failed: {e}"))?;
    let before = counters.ops.load(Ordering::Relaxed);
    let attempts = run_workload(&log, plans)?;
    if let Some(a) = attempts.iter().find(|a| a.acked.is_none()) {
        return Err(format!(
            "calibration run without faults failed at {:?}",
            a.batch.id
        ));
    }
    drop(log);
    Ok(counters.ops.load(Ordering::Relaxed) - before)
}

// ---------------------------------------------------------------------------
// One crash point.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lax {
    None,
    Interval,
}

/// What a crash point did; printed when it fails.
#[derive(Debug)]
#[expect(dead_code, reason = "read only through Debug, in failure messages")]
struct Config {
    seed: u64,
    durability: Durability,
    mode: CrashMode,
    threads: u8,
    segment_max_bytes: u64,
    preallocate_segments: bool,
    ops_total: u64,
    power_cut_after: u64,
}

#[derive(Debug, Default)]
struct Stats {
    points: u64,
    cut_during_workload: u64,
    acked_records: u64,
    recovered_records: u64,
    maybe_batches_recovered: u64,
    acked_batches_lost: u64,
}

fn options(
    config_durability: Durability,
    segment_max_bytes: u64,
    preallocate_segments: bool,
) -> LogOptions {
    LogOptions {
        segment_max_bytes,
        preallocate_segments,
        record_max_bytes: 1024,
        durability: config_durability,
        index_interval_bytes: 256,
        ..LogOptions::default()
    }
}

fn mode_for(seed: u64) -> CrashMode {
    match seed % 4 {
        0 => CrashMode::LoseUnsynced,
        1 => CrashMode::TearLastWrite,
        2 => CrashMode::Reorder,
        _ => CrashMode::TornSectors,
    }
}

/// Runs one crash point; `Err` describes what went wrong.
fn crash_point(seed: u64, lax: Option<Lax>, stats: &mut Stats) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let durability = match lax {
        None => Durability::Fsync,
        Some(Lax::None) => Durability::None,
        Some(Lax::Interval) => Durability::Interval(Duration::from_micros(rng.range(50..2000))),
    };
    let threads = rng.range(1..5) as u8;
    let segment_max_bytes = rng.range(4096..8193);
    // On and off in turn, whatever the crash mode (`seed % 4`).
    let preallocate_segments = (seed / 4).is_multiple_of(2);
    let options = options(durability, segment_max_bytes, preallocate_segments);
    let plans = plan(&mut rng, threads);
    let ops_total = count_workload_ops(seed, &options, &plans)?;
    let power_cut_after = rng.range(0..ops_total + ops_total / 10 + 3);
    let config = Config {
        seed,
        durability,
        mode: mode_for(seed),
        threads,
        segment_max_bytes,
        preallocate_segments,
        ops_total,
        power_cut_after,
    };
    run_crash_point(&config, &options, &plans, stats).map_err(|e| format!("{e}\n  {config:?}"))
}

fn run_crash_point(
    config: &Config,
    options: &LogOptions,
    plans: &[Vec<PlannedBatch>],
    stats: &mut Stats,
) -> Result<(), String> {
    let storage = SimStorage::new(config.seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options.clone())
        .map_err(|e| format!("first open failed: {e}"))?;
    storage.power_cut_after(config.power_cut_after);
    let attempts = run_workload(&log, plans)?;
    drop(log);
    storage.crash(config.mode);

    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options.clone())
        .map_err(|e| format!("reopen after the crash failed: {e}"))?;
    let found = check_recovered(&log, &attempts, config.durability == Durability::Fsync)?;
    let report = log.verify().map_err(|e| format!("verify failed: {e}"))?;
    if !report.is_clean() {
        return Err(format!("verify after the reopen: {:?}", report.problems));
    }
    let next = log.next_offset();
    let extra = Record::new(7, b"after recovery".to_vec());
    let offset = log
        .append_blocking(extra.clone())
        .map_err(|e| format!("append after recovery failed: {e}"))?;
    if offset != next {
        return Err(format!(
            "append after recovery got offset {offset}, next_offset was {next}"
        ));
    }
    let back = log
        .read_from(offset)
        .map_err(|e| format!("read_from({offset}): {e}"))?
        .next()
        .ok_or("the record appended after recovery does not read back")?
        .map_err(|e| format!("reading the record appended after recovery: {e}"))?;
    if back.payload != extra.payload {
        return Err("the record appended after recovery reads back wrong".into());
    }

    stats.points += 1;
    if attempts.iter().any(|a| a.acked.is_none()) {
        stats.cut_during_workload += 1;
    }
    stats.acked_records += attempts
        .iter()
        .filter_map(|a| a.acked.as_ref())
        .map(|r| r.end - r.start)
        .sum::<u64>();
    stats.recovered_records += next;
    stats.maybe_batches_recovered += found.maybe_present;
    stats.acked_batches_lost += found.acked_lost;
    Ok(())
}

struct Found {
    maybe_present: u64,
    acked_lost: u64,
}

/// Checks the records of the reopened log against the attempts.
fn check_recovered(log: &Log, attempts: &[Attempt], fsync: bool) -> Result<Found, String> {
    let next = log.next_offset();
    let records = log
        .read_from(0)
        .map_err(|e| format!("read_from(0): {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("reading the recovered log: {e}"))?;
    if records.len() as u64 != next {
        return Err(format!(
            "read {} records but next_offset is {next}",
            records.len()
        ));
    }
    if let Some((i, r)) = records
        .iter()
        .enumerate()
        .find(|(i, r)| r.offset != *i as u64)
    {
        return Err(format!("record #{i} has offset {}: not dense", r.offset));
    }

    let by_id: HashMap<BatchId, &Attempt> = attempts.iter().map(|a| (a.batch.id, a)).collect();
    // Where each batch present starts.
    let mut present: HashMap<BatchId, u64> = HashMap::new();
    let mut i = 0usize;
    while i < records.len() {
        let first = &records[i];
        let (id, index, _) = parse_tag(&first.payload)
            .ok_or_else(|| format!("record {} has no tag: {:?}", first.offset, first.payload))?;
        let attempt = by_id
            .get(&id)
            .ok_or_else(|| format!("record {} is from {id:?}, never attempted", first.offset))?;
        if index != 0 {
            return Err(format!(
                "record {} is #{index} of {id:?}, but the batch does not start there",
                first.offset
            ));
        }
        let expected = &attempt.batch.records;
        if i + expected.len() > records.len() {
            return Err(format!(
                "only part of {id:?} ({} records) is present at {}..{next}",
                expected.len(),
                first.offset
            ));
        }
        for (k, (got, want)) in records[i..].iter().zip(expected).enumerate() {
            if got.payload != want.payload || got.timestamp_us != want.timestamp_us {
                return Err(format!(
                    "record {} should be #{k} of {id:?} (payload {:?}, timestamp {}) but is \
                     payload {:?}, timestamp {}",
                    got.offset, want.payload, want.timestamp_us, got.payload, got.timestamp_us
                ));
            }
        }
        if present.insert(id, first.offset).is_some() {
            return Err(format!("{id:?} is present twice"));
        }
        i += expected.len();
    }

    let mut found = Found {
        maybe_present: 0,
        acked_lost: 0,
    };
    for attempt in attempts {
        let id = attempt.batch.id;
        match (&attempt.acked, present.get(&id)) {
            (Some(range), Some(&at)) if at != range.start => {
                return Err(format!(
                    "{id:?} was acknowledged at {range:?} but is present at {at}"
                ));
            }
            (Some(range), None) if fsync => {
                return Err(format!(
                    "{id:?} was acknowledged at {range:?} under Durability::Fsync and is lost \
                     (next_offset {next})"
                ));
            }
            (Some(range), None) if range.start < next => {
                return Err(format!(
                    "{id:?} was acknowledged at {range:?} and is lost, yet the log holds \
                     records up to {next}: not a prefix of the commit order"
                ));
            }
            (Some(_), None) => found.acked_lost += 1,
            (None, Some(_)) => found.maybe_present += 1,
            (Some(_), Some(_)) | (None, None) => {}
        }
    }
    // Each thread sent its batches one after another, so what survives of
    // a thread is a prefix of what it sent.
    let mut seqs: HashMap<u8, Vec<u32>> = HashMap::new();
    for id in present.keys() {
        seqs.entry(id.thread).or_default().push(id.seq);
    }
    for (thread, mut seqs) in seqs {
        seqs.sort_unstable();
        if let Some((k, seq)) = seqs.iter().enumerate().find(|(k, seq)| **seq != *k as u32) {
            return Err(format!(
                "thread {thread}: batch seq {seq} is present but seq {k} is not"
            ));
        }
    }
    Ok(found)
}

// ---------------------------------------------------------------------------
// The tests.

/// `ENFORCELOG_CRASH_SCALE=n` runs n times the default number of crash
/// points (for long runs on demand).
fn scaled(count: u64) -> u64 {
    count * common::env_or("ENFORCELOG_CRASH_SCALE", 1u64).max(1)
}

fn run_crash_points(test: &str, count: u64, lax: &[Lax]) -> Stats {
    let base = base_seed();
    let started = Instant::now();
    let mut stats = Stats::default();
    for i in 0..count {
        let seed = base.wrapping_add(i);
        let mode = if lax.is_empty() {
            None
        } else {
            // From the seed, not `i`, so a replayed seed gets the same mode.
            Some(lax[(seed / 3 % lax.len() as u64) as usize])
        };
        if let Err(e) = crash_point(seed, mode, &mut stats) {
            panic!(
                "crash point with seed {seed} failed: {e}\n  replay: ENFORCELOG_SEED={seed} \
                 cargo test --test crash_sim {test}"
            );
        }
    }
    eprintln!(
        "{test}: {} crash points from seed {base} in {:?}: {stats:?}",
        count,
        started.elapsed()
    );
    stats
}

#[test]
fn fsync_acknowledged_records_survive_every_crash_point() {
    let points = scaled(FSYNC_CRASH_POINTS);
    let stats = run_crash_points(
        "fsync_acknowledged_records_survive_every_crash_point",
        points,
        &[],
    );
    assert_eq!(stats.points, points);
    assert_eq!(stats.acked_batches_lost, 0);
    // The power-cut range must exercise both cuts inside the workload and
    // workloads that finish; otherwise this test checks less than it says.
    assert!(
        stats.cut_during_workload > points / 2,
        "too few power cuts hit the workload: {stats:?}"
    );
    assert!(
        stats.cut_during_workload < points,
        "no workload finished before its power cut: {stats:?}"
    );
    assert!(stats.recovered_records >= stats.acked_records, "{stats:?}");
}

#[test]
fn lax_durability_loses_only_a_suffix_and_never_half_a_batch() {
    let points = scaled(LAX_CRASH_POINTS);
    let stats = run_crash_points(
        "lax_durability_loses_only_a_suffix_and_never_half_a_batch",
        points,
        &[Lax::None, Lax::Interval],
    );
    assert_eq!(stats.points, points);
    assert!(
        stats.cut_during_workload > points / 2,
        "too few power cuts hit the workload: {stats:?}"
    );
    // Without fsync before acknowledging, crashes do lose acknowledged
    // batches; if none ever is, the crash modes are not biting.
    assert!(
        stats.acked_batches_lost > 0,
        "no acknowledged batch was ever lost: {stats:?}"
    );
}
