//! `Log::read_time_range` against a brute-force filter, and proof that it
//! skips index spans outside the range without reading them.
//!
//! The proptest appends batches with timestamps in no particular order
//! (grid values with many equal, clusters per batch, the extremes of `i64`)
//! into small segments with a small index interval, and compares every
//! time-range read (random start offset, random ranges, empty ranges, one
//! timestamp, everything, nothing) with a plain filter of the appended
//! records — on the live writer, after reopening (sealed indexes loaded from
//! their `.idx` files) and on a read-only view.
//!
//! There is no counter of bytes read, so the skip is made observable with
//! damage: a record is bit-flipped inside a sealed segment, the log is
//! reopened (a valid `.idx` means open does not check the segment's frames),
//! and a time-range read whose range misses every index span covering the
//! damage must not meet it (`LogMetrics::damaged_segments` stays 0), while
//! `read_from(0)` meets it and reads past it: the damaged batch reads as a
//! hole of lost entries, every other record as written.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test time_range`.

mod common;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enforcelog::format::index_file::SegmentIndex;
use enforcelog::format::{BATCH_HEADER_LEN, FRAME_HEADER_LEN};
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::{Durability, Error, Log, LogOptions, LogRecord, Record};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// Grid timestamps lie at `BASE_US + k * TICK_US`, `k` in `0..TICKS`.
const BASE_US: i64 = 1_764_000_000_000_000;
const TICK_US: i64 = 1_000;
const TICKS: i64 = 30;

/// One appended record of the model: timestamp and payload.
type ModelRecord = (i64, Vec<u8>);

/// The timestamps of one batch.
#[derive(Debug, Clone)]
enum Stamps {
    /// Each timestamp drawn on its own (grid, off-grid, extremes, anything).
    Scattered(Vec<i64>),
    /// Close to one centre, in random order: batches that are monotonic-ish.
    Clustered { centre_us: i64, jitter_us: Vec<i64> },
}

/// Which time range a read asks for.
#[derive(Debug, Clone)]
enum RangeSpec {
    /// `a..=b` from grid-ish bounds; empty when `a > b`.
    Bounds(i64, i64),
    /// Exactly the timestamp of one appended record.
    OneStamp(Index),
    /// `i64::MIN..=i64::MAX`.
    Everything,
    /// Just the grid: `BASE_US..=BASE_US + TICKS * TICK_US`.
    Grid,
    /// Between two grid points (odd microseconds no grid stamp has).
    Between(i64),
}

#[derive(Debug, Clone)]
enum Op {
    /// Append one batch of records.
    Append {
        stamps: Stamps,
        payload_bytes: usize,
    },
    /// Read a time range from an offset in `0..=next_offset`.
    Read { start: Index, range: RangeSpec },
    /// Drop the log and open it again.
    Reopen,
}

#[derive(Debug, Clone)]
struct Case {
    segment_max_bytes: u64,
    index_interval_bytes: u64,
    sim_seed: u64,
    ops: Vec<Op>,
    /// Reads run once more at the end, on the reopened log and a read-only view.
    final_reads: Vec<(Index, RangeSpec)>,
}

impl Case {
    fn options(&self) -> LogOptions {
        LogOptions {
            segment_max_bytes: self.segment_max_bytes,
            index_interval_bytes: self.index_interval_bytes,
            // The default (1 MiB) does not fit in a 4 KiB segment.
            record_max_bytes: 1024,
            durability: Durability::None,
            ..LogOptions::default()
        }
    }
}

fn grid_strategy() -> impl Strategy<Value = i64> {
    (0..TICKS).prop_map(|t| BASE_US + t * TICK_US)
}

fn stamp_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        12 => grid_strategy(),
        3 => (0..TICKS * TICK_US).prop_map(|us| BASE_US + us),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => Just(0i64),
        1 => any::<i64>(),
    ]
}

fn stamps_strategy() -> impl Strategy<Value = Stamps> {
    prop_oneof![
        1 => proptest::collection::vec(stamp_strategy(), 1..10).prop_map(Stamps::Scattered),
        1 => (grid_strategy(), proptest::collection::vec(-3i64..=3, 1..10))
            .prop_map(|(centre_us, jitter_us)| Stamps::Clustered { centre_us, jitter_us }),
    ]
}

fn bound_strategy() -> impl Strategy<Value = i64> {
    prop_oneof![
        8 => (-2..TICKS + 2).prop_map(|t| BASE_US + t * TICK_US),
        4 => (-2..TICKS + 2, -4i64..=4).prop_map(|(t, d)| BASE_US + t * TICK_US + d),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
        1 => any::<i64>(),
    ]
}

fn range_strategy() -> impl Strategy<Value = RangeSpec> {
    prop_oneof![
        6 => (bound_strategy(), bound_strategy()).prop_map(|(a, b)| RangeSpec::Bounds(a, b)),
        3 => any::<Index>().prop_map(RangeSpec::OneStamp),
        1 => Just(RangeSpec::Everything),
        1 => Just(RangeSpec::Grid),
        1 => (-2..TICKS + 2).prop_map(RangeSpec::Between),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (stamps_strategy(), 0usize..120)
            .prop_map(|(stamps, payload_bytes)| Op::Append { stamps, payload_bytes }),
        4 => (any::<Index>(), range_strategy()).prop_map(|(start, range)| Op::Read { start, range }),
        1 => Just(Op::Reopen),
    ]
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        4096u64..=16384,
        prop_oneof![1 => Just(1u64), 4 => 1u64..=2048],
        any::<u64>(),
        proptest::collection::vec(op_strategy(), 1..150),
        proptest::collection::vec((any::<Index>(), range_strategy()), 1..12),
    )
        .prop_map(
            |(segment_max_bytes, index_interval_bytes, sim_seed, ops, final_reads)| Case {
                segment_max_bytes,
                index_interval_bytes,
                sim_seed,
                ops,
                final_reads,
            },
        )
}

/// Turns a library result into a test-case result that names the step.
fn check<T>(result: enforcelog::Result<T>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

fn stamps(spec: &Stamps) -> Vec<i64> {
    match spec {
        Stamps::Scattered(stamps) => stamps.clone(),
        Stamps::Clustered {
            centre_us,
            jitter_us,
        } => jitter_us.iter().map(|j| centre_us + j).collect(),
    }
}

fn time_range(spec: &RangeSpec, model: &[ModelRecord]) -> RangeInclusive<i64> {
    match spec {
        RangeSpec::Bounds(a, b) => *a..=*b,
        RangeSpec::OneStamp(i) if !model.is_empty() => {
            let at = model[i.index(model.len())].0;
            at..=at
        }
        RangeSpec::OneStamp(_) => BASE_US..=BASE_US,
        RangeSpec::Everything => i64::MIN..=i64::MAX,
        RangeSpec::Grid => BASE_US..=BASE_US + TICKS * TICK_US,
        RangeSpec::Between(t) => {
            let at = BASE_US + t * TICK_US;
            at + 1..=at + TICK_US - 1
        }
    }
}

/// Compares `read_time_range(start, range)` with a filter of the model.
fn check_read(
    log: &Log,
    model: &[ModelRecord],
    start: u64,
    range: RangeInclusive<i64>,
    view: &str,
) -> Result<(), TestCaseError> {
    let reader = check(log.read_time_range(start, range.clone()), "read_time_range")?;
    let mut got = Vec::new();
    for record in reader {
        got.push(check(record, "reading a record")?);
    }
    let want: Vec<LogRecord> = model
        .iter()
        .enumerate()
        .skip(usize::try_from(start).expect("offset fits in usize"))
        .filter(|(_, (ts, _))| range.contains(ts))
        .map(|(offset, (ts, payload))| LogRecord {
            offset: offset as u64,
            timestamp_us: *ts,
            payload: payload.clone(),
        })
        .collect();
    prop_assert_eq!(
        got.len(),
        want.len(),
        "{}: read_time_range({}, {:?}) returned the wrong number of records",
        view,
        start,
        range
    );
    for (got, want) in got.iter().zip(&want) {
        prop_assert_eq!(
            (got.offset, got.timestamp_us, &got.payload),
            (want.offset, want.timestamp_us, &want.payload),
            "{}: read_time_range({}, {:?})",
            view,
            start,
            range
        );
    }
    Ok(())
}

/// Reads one spec'd range from an offset picked in `0..=len`.
fn check_spec(
    log: &Log,
    model: &[ModelRecord],
    start: &Index,
    range: &RangeSpec,
    view: &str,
) -> Result<(), TestCaseError> {
    let start = start.index(model.len() + 1) as u64;
    check_read(log, model, start, time_range(range, model), view)
}

fn run_case(case: &Case) -> Result<(), TestCaseError> {
    let storage = SimStorage::new(case.sim_seed);
    let open = || Log::open_with_storage(Arc::new(storage.clone()), "/log", case.options());
    let mut log = check(open(), "open")?;
    let mut model: Vec<ModelRecord> = Vec::new();
    for (step, op) in case.ops.iter().enumerate() {
        match op {
            Op::Append {
                stamps: spec,
                payload_bytes,
            } => {
                let first = model.len() as u64;
                let batch: Vec<ModelRecord> = stamps(spec)
                    .into_iter()
                    .enumerate()
                    .map(|(i, ts)| {
                        let tag = (first + i as u64).to_le_bytes();
                        (
                            ts,
                            tag.iter().copied().cycle().take(*payload_bytes).collect(),
                        )
                    })
                    .collect();
                let records = batch
                    .iter()
                    .map(|(ts, payload)| Record::new(*ts, payload.clone()))
                    .collect();
                let range = check(log.append_batch_blocking(records), "append_batch")?;
                prop_assert_eq!(range, first..first + batch.len() as u64, "step {}", step);
                model.extend(batch);
            }
            Op::Read { start, range } => check_spec(&log, &model, start, range, "live")?,
            Op::Reopen => {
                drop(log);
                log = check(open(), "reopen")?;
            }
        }
    }
    // Fixed ranges from the middle, and the ends of the log.
    let len = model.len() as u64;
    // An inverted range holds nothing.
    let inverted = RangeInclusive::new(i64::MAX, i64::MIN);
    for start in [0, len / 3, len / 2, len] {
        check_read(&log, &model, start, i64::MIN..=i64::MAX, "live")?;
        check_read(&log, &model, start, inverted.clone(), "live")?;
        check_read(&log, &model, start, BASE_US - 10..=BASE_US - 1, "live")?;
    }
    match log.read_time_range(len + 1, i64::MIN..=i64::MAX) {
        Err(Error::OffsetOutOfRange {
            requested,
            next_offset,
        }) => prop_assert_eq!((requested, next_offset), (len + 1, len)),
        other => {
            return Err(TestCaseError::fail(format!(
                "read_time_range past the end: {other:?}"
            )))
        }
    }
    drop(log);
    let log = check(open(), "final reopen")?;
    let view = check(
        Log::open_read_only_with_storage(Arc::new(storage.clone()), "/log"),
        "read-only open",
    )?;
    for (start, range) in &case.final_reads {
        check_spec(&log, &model, start, range, "reopened")?;
        check_spec(&view, &model, start, range, "read-only")?;
    }
    check(log.close(), "close")?;
    Ok(())
}

#[test]
fn time_range_reads_match_a_brute_force_filter() {
    let seed = common::run_seed();
    let config = Config {
        cases: 1024,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 400,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&case_strategy(), |case| run_case(&case)) {
        panic!("time-range test failed (replay with ENFORCELOG_SEED={seed}): {e}");
    }
}

// ---- Pruning, made observable with damage ----

const DIR: &str = "/log";
/// Records per batch, and batches: 20,000 records.
const BATCH_RECORDS: u64 = 50;
const BATCHES: u64 = 400;
const PAYLOAD_BYTES: usize = 16;
/// Batch `k` has timestamps in `k * BATCH_SPAN_US + 0..BATCH_SPAN_US / 2`.
const BATCH_SPAN_US: i64 = 1_000_000;

fn pruning_options() -> LogOptions {
    LogOptions {
        segment_max_bytes: 64 << 10,
        // Every batch starts an index entry of its own.
        index_interval_bytes: 1,
        record_max_bytes: 1024,
        durability: Durability::None,
        ..LogOptions::default()
    }
}

/// The timestamps of batch `k`: clustered by batch, in no order within it.
fn batch_stamps(k: u64, seed: u64) -> Vec<i64> {
    let mut state = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..BATCH_RECORDS)
        .map(|_| {
            // xorshift64*: deterministic from the seed.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
            k as i64 * BATCH_SPAN_US + (r % (BATCH_SPAN_US as u64 / 2)) as i64
        })
        .collect()
}

/// The log written by the pruning tests, with what it holds.
struct Written {
    storage: SimStorage,
    model: Vec<ModelRecord>,
    /// The decoded `.idx` files of the sealed segments, in offset order.
    sealed: Vec<SegmentIndex>,
}

fn write_clustered_log(seed: u64) -> Written {
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, pruning_options())
        .expect("open the log");
    let mut model = Vec::new();
    for k in 0..BATCHES {
        let batch: Vec<ModelRecord> = batch_stamps(k, seed)
            .into_iter()
            .map(|ts| (ts, vec![(k % 251) as u8; PAYLOAD_BYTES]))
            .collect();
        let records = batch
            .iter()
            .map(|(ts, payload)| Record::new(*ts, payload.clone()))
            .collect();
        log.append_batch_blocking(records).expect("append a batch");
        model.extend(batch);
    }
    log.close().expect("close");
    drop(log);
    let mut names = storage
        .list(Path::new(DIR))
        .expect("list the log directory");
    names.sort();
    let sealed: Vec<SegmentIndex> = names
        .iter()
        .filter(|n| n.ends_with(".idx"))
        .map(|n| {
            let bytes = storage
                .read_file(Path::new(DIR).join(n))
                .expect("read an index file");
            SegmentIndex::decode(&bytes).expect("a valid index file")
        })
        .collect();
    assert!(
        sealed.len() >= 6,
        "seed {seed}: expected at least 6 sealed segments, got {}",
        sealed.len()
    );
    for index in &sealed {
        let batches = (index.next_offset - index.base_offset) / BATCH_RECORDS;
        assert_eq!(
            index.entries.len() as u64,
            batches,
            "seed {seed}: one index entry per batch in segment {}",
            index.base_offset
        );
    }
    Written {
        storage,
        model,
        sealed,
    }
}

fn segment_path(base_offset: u64) -> PathBuf {
    Path::new(DIR).join(format!("{base_offset:020}.log"))
}

/// Flips one payload bit of the second record of the batch at `entry` in
/// segment `index`; returns the damaged byte's position.
fn damage_batch(storage: &SimStorage, index: &SegmentIndex, entry: usize) -> u64 {
    let path = segment_path(index.base_offset);
    let mut bytes = storage.read_file(&path).expect("read the segment");
    let frame_len = FRAME_HEADER_LEN + PAYLOAD_BYTES;
    let position = index.entries[entry].position as usize
        + BATCH_HEADER_LEN
        + frame_len
        + FRAME_HEADER_LEN
        + 3;
    bytes[position] ^= 0x10;
    storage.write_file(&path, &bytes);
    position as u64
}

/// Time range of batch `k` (all its records, nothing of its neighbours).
fn batch_window(k: u64) -> RangeInclusive<i64> {
    let start = k as i64 * BATCH_SPAN_US;
    start..=start + BATCH_SPAN_US - 1
}

/// Reads everything from `start` in `range`; the first error ends it.
fn read_range(log: &Log, start: u64, range: RangeInclusive<i64>) -> Result<Vec<LogRecord>, Error> {
    log.read_time_range(start, range)?.collect()
}

fn expect_exact(
    log: &Log,
    model: &[ModelRecord],
    start: u64,
    range: RangeInclusive<i64>,
    seed: u64,
    what: &str,
) {
    let got = read_range(log, start, range.clone()).unwrap_or_else(|e| {
        panic!("seed {seed}: {what}: read_time_range({start}, {range:?}) failed: {e}")
    });
    let want: Vec<(u64, i64)> = model
        .iter()
        .enumerate()
        .skip(start as usize)
        .filter(|(_, (ts, _))| range.contains(ts))
        .map(|(offset, (ts, _))| (offset as u64, *ts))
        .collect();
    let got: Vec<(u64, i64)> = got.iter().map(|r| (r.offset, r.timestamp_us)).collect();
    assert!(
        !want.is_empty(),
        "seed {seed}: {what}: the window must hold records"
    );
    assert_eq!(
        got, want,
        "seed {seed}: {what}: read_time_range({start}, {range:?})"
    );
}

/// No reader of `log` met damage (every damaged segment is found when a
/// reader first meets it, and then read through a rebuild).
fn expect_unread(log: &Log, what: &str) {
    assert_eq!(
        log.metrics().damaged_segments,
        0,
        "{what}: a read met the damage, so it read a span it should have skipped"
    );
}

fn is_hole(record: &LogRecord) -> bool {
    matches!(
        enforcelog::payload::decode(record.offset, record.timestamp_us, &record.payload),
        Ok(enforcelog::Entry::Lost(_))
    )
}

/// Every record of the model, at its offset, but those at `lost`, which
/// must read as a hole.
fn expect_read_past(
    result: Result<Vec<LogRecord>, Error>,
    model: &[ModelRecord],
    lost: &std::ops::Range<u64>,
    what: &str,
) {
    let records = result.unwrap_or_else(|e| panic!("{what}: read fails at the damage: {e}"));
    assert_eq!(records.len(), model.len(), "{what}");
    for (offset, record) in records.iter().enumerate() {
        let offset = offset as u64;
        assert_eq!(record.offset, offset, "{what}");
        if lost.contains(&offset) {
            assert!(is_hole(record), "{what}: offset {offset} is not a hole");
        } else {
            let (ts, payload) = &model[offset as usize];
            assert_eq!(
                (record.timestamp_us, &record.payload),
                (*ts, payload),
                "{what}: offset {offset}"
            );
        }
    }
}

/// Where a sealed segment was damaged: in the middle batch of the segment.
struct Damage {
    /// The damaged byte's position in the segment file.
    position: u64,
    /// Batch numbers (`offset / BATCH_RECORDS`) held by the damaged segment.
    segment_batches: std::ops::Range<u64>,
    /// The damaged batch's number.
    batch: u64,
}

fn damage_middle_of(written: &Written, segment: usize) -> Damage {
    let index = &written.sealed[segment];
    let entry = index.entries.len() / 2;
    assert!(
        entry >= 2 && entry + 2 < index.entries.len(),
        "a middle batch"
    );
    let position = damage_batch(&written.storage, index, entry);
    Damage {
        position,
        segment_batches: index.base_offset / BATCH_RECORDS..index.next_offset / BATCH_RECORDS,
        batch: index.entries[entry].first_offset / BATCH_RECORDS,
    }
}

fn reopen(written: &Written, seed: u64) -> Log {
    Log::open_with_storage(Arc::new(written.storage.clone()), DIR, pruning_options())
        .unwrap_or_else(|e| panic!("seed {seed}: reopening after damage to a sealed segment: {e}"))
}

#[test]
fn time_range_reads_skip_damaged_spans_outside_the_range() {
    let seed = common::run_seed();
    let written = write_clustered_log(seed);
    let segment = written.sealed.len() / 2;
    let damage = damage_middle_of(&written, segment);
    let log = reopen(&written, seed);
    let model = &written.model;
    let what = |s: &str| format!("seed {seed}: {s}");

    // Ranges whose index spans exclude the damaged batch never read it.
    let first = damage.segment_batches.start;
    let last = damage.segment_batches.end - 1;
    expect_exact(
        &log,
        model,
        0,
        batch_window(first - 2),
        seed,
        "window in an earlier segment, from 0",
    );
    expect_exact(
        &log,
        model,
        0,
        batch_window(damage.batch + 1),
        seed,
        "window on the next batch, from 0",
    );
    expect_exact(
        &log,
        model,
        0,
        batch_window(last),
        seed,
        "window on the segment's last batch, from 0",
    );
    expect_exact(
        &log,
        model,
        0,
        batch_window(last + 1),
        seed,
        "window in the next segment, from 0",
    );
    let after = *batch_window(damage.batch + 1).start()..=i64::MAX;
    expect_exact(
        &log,
        model,
        0,
        after,
        seed,
        "everything after the damaged batch",
    );
    let mid = first * BATCH_RECORDS + 7;
    expect_exact(
        &log,
        model,
        mid,
        batch_window(damage.batch + 2),
        seed,
        "from the segment's middle",
    );
    expect_exact(
        &log,
        model,
        mid,
        batch_window(BATCHES - 1),
        seed,
        "from the segment's middle to the last batch",
    );
    // Reading from inside the damaged batch with a range that misses it.
    let inside = damage.batch * BATCH_RECORDS + 10;
    expect_exact(
        &log,
        model,
        inside,
        batch_window(damage.batch + 1),
        seed,
        "from inside the damaged batch",
    );
    expect_unread(&log, &what("every window that misses the damage"));

    // The damage is there: a plain read and a time-range read whose range
    // covers it meet it and read past it, the damaged batch as a hole.
    let lost = damage.batch * BATCH_RECORDS..(damage.batch + 1) * BATCH_RECORDS;
    let everything = read_range(&log, 0, i64::MIN..=i64::MAX);
    expect_read_past(
        everything,
        model,
        &lost,
        &what("read_time_range(0, everything)"),
    );
    assert_eq!(
        log.metrics().damaged_segments,
        1,
        "{}",
        what(&format!("the damage at byte {} counted", damage.position))
    );
    let plain: Result<Vec<LogRecord>, Error> = log.read_from(0).expect("read_from").collect();
    expect_read_past(plain, model, &lost, &what("read_from(0)"));
    assert!(
        log.verify().expect("verify").has_corruption(),
        "{}",
        what("verify sees the damage")
    );
    log.close().expect("close");
    drop(log);
    // A new open meets it again, through a window on the damaged batch.
    let fresh = reopen(&written, seed);
    let window = read_range(&fresh, 0, batch_window(damage.batch))
        .unwrap_or_else(|e| panic!("{}: {e}", what("window on the damaged batch")));
    assert!(
        window
            .iter()
            .all(|r| lost.contains(&r.offset) && is_hole(r)),
        "{}: {window:?}",
        what("window on the damaged batch: only its hole")
    );
    assert_eq!(
        fresh.metrics().damaged_segments,
        1,
        "{}",
        what("met by a window")
    );
}

/// The documentation of `Log::read_time_range` promises that every span
/// whose bounds miss the range is skipped without being read, so the cost is
/// proportional to the spans that overlap. A span *after* an overlapping one
/// in the same segment must be skipped too.
#[test]
fn spans_after_the_range_in_the_same_segment_are_not_read() {
    let seed = common::run_seed();
    let written = write_clustered_log(seed);
    let segment = written.sealed.len() / 2;
    let damage = damage_middle_of(&written, segment);
    let log = reopen(&written, seed);
    let model = &written.model;
    let first = damage.segment_batches.start;

    expect_exact(
        &log,
        model,
        0,
        batch_window(damage.batch - 1),
        seed,
        "window on the batch before the damaged one",
    );
    expect_exact(
        &log,
        model,
        0,
        batch_window(first),
        seed,
        "window on the segment's first batch",
    );
    expect_unread(&log, &format!("seed {seed}: windows before the damage"));
}
