//! Model-based test: random appends, batches, reopens and reads against an
//! in-memory model of the log (a `Vec` of records), first on the simulated
//! storage (many cases, fast) and then on the real file system.
//!
//! Segments are small (4–16 KiB) and the index interval tiny, so segment
//! rolls, reads of sealed segments through their memory map, and index seeks
//! all happen within a few dozen operations.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test model`.

mod common;

use std::sync::Arc;

use enforcelog::storage::sim::SimStorage;
use enforcelog::{Durability, Error, Log, LogOptions, Record};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// One record of the model: timestamp and payload.
type ModelRecord = (i64, Vec<u8>);

#[derive(Debug, Clone)]
enum Op {
    /// Append one record, through the async API or the blocking one.
    Append {
        record: ModelRecord,
        use_async: bool,
    },
    /// Append 1..8 records as one batch.
    AppendBatch(Vec<ModelRecord>),
    /// Drop the log and open it again.
    Reopen,
    /// Read from an offset in `0..=next_offset` to the end.
    ReadFrom(Index),
    /// Read from `next_offset + n` (n >= 1): out of range.
    ReadPastEnd(u64),
}

#[derive(Debug, Clone)]
struct Case {
    segment_max_bytes: u64,
    index_interval_bytes: u64,
    fsync: bool,
    sim_seed: u64,
    ops: Vec<Op>,
}

impl Case {
    fn options(&self) -> LogOptions {
        LogOptions {
            segment_max_bytes: self.segment_max_bytes,
            index_interval_bytes: self.index_interval_bytes,
            // The default (1 MiB) does not fit in a 4 KiB segment.
            record_max_bytes: 1024,
            durability: if self.fsync {
                Durability::Fsync
            } else {
                Durability::None
            },
            ..LogOptions::default()
        }
    }
}

fn record_strategy() -> impl Strategy<Value = ModelRecord> {
    (any::<i64>(), proptest::collection::vec(any::<u8>(), 0..300))
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (record_strategy(), any::<bool>())
            .prop_map(|(record, use_async)| Op::Append { record, use_async }),
        4 => proptest::collection::vec(record_strategy(), 1..8).prop_map(Op::AppendBatch),
        1 => Just(Op::Reopen),
        2 => any::<Index>().prop_map(Op::ReadFrom),
        1 => (1u64..5).prop_map(Op::ReadPastEnd),
    ]
}

fn case_strategy(max_ops: usize) -> impl Strategy<Value = Case> {
    (
        4096u64..=16384,
        64u64..=2048,
        any::<bool>(),
        any::<u64>(),
        proptest::collection::vec(op_strategy(), 1..max_ops),
    )
        .prop_map(
            |(segment_max_bytes, index_interval_bytes, fsync, sim_seed, ops)| Case {
                segment_max_bytes,
                index_interval_bytes,
                fsync,
                sim_seed,
                ops,
            },
        )
}

/// Runs `test` on `cases` random cases; on failure, panics with the seed.
fn run_cases(cases: u32, max_ops: usize, test: impl Fn(&Case) -> Result<(), TestCaseError>) {
    let seed = common::run_seed();
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 400,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&case_strategy(max_ops), |case| test(&case)) {
        panic!("model test failed (replay with ENFORCELOG_SEED={seed}): {e}");
    }
}

/// Turns a library result into a test-case result that names the step.
fn check<T>(result: enforcelog::Result<T>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|e| TestCaseError::fail(format!("{what}: {e}")))
}

/// Reads every record from `offset` on and compares with the model's suffix.
fn check_read(log: &Log, model: &[ModelRecord], offset: u64) -> Result<(), TestCaseError> {
    let reader = check(log.read_from(offset), "read_from")?;
    let mut got = Vec::new();
    for record in reader {
        got.push(check(record, "reading a record")?);
    }
    let start = usize::try_from(offset).expect("offset fits in usize");
    prop_assert_eq!(
        got.len(),
        model.len() - start,
        "read_from({}) returned the wrong number of records",
        offset
    );
    for (i, (record, (ts, payload))) in got.iter().zip(&model[start..]).enumerate() {
        let expected_offset = offset + i as u64;
        prop_assert_eq!(record.offset, expected_offset, "offsets are not dense");
        prop_assert_eq!(record.timestamp_us, *ts, "timestamp at {}", expected_offset);
        prop_assert_eq!(&record.payload, payload, "payload at {}", expected_offset);
    }
    Ok(())
}

/// Runs one case against the log opened by `open`, then checks the end state.
fn run_model(
    case: &Case,
    open: &dyn Fn() -> enforcelog::Result<Log>,
) -> Result<Vec<ModelRecord>, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("build a tokio runtime");
    let mut model: Vec<ModelRecord> = Vec::new();
    let mut log = check(open(), "first open")?;
    prop_assert_eq!(log.next_offset(), 0);
    for (step, op) in case.ops.iter().enumerate() {
        let len = model.len() as u64;
        match op {
            Op::Append { record, use_async } => {
                let new = Record::new(record.0, record.1.clone());
                let offset = if *use_async {
                    check(runtime.block_on(log.append(new)), "append")?
                } else {
                    check(log.append_blocking(new), "append_blocking")?
                };
                prop_assert_eq!(offset, len, "step {}: append offset", step);
                model.push(record.clone());
            }
            Op::AppendBatch(records) => {
                let batch = records
                    .iter()
                    .map(|(ts, payload)| Record::new(*ts, payload.clone()))
                    .collect();
                let range = check(log.append_batch_blocking(batch), "append_batch")?;
                prop_assert_eq!(
                    range,
                    len..len + records.len() as u64,
                    "step {}: batch offsets",
                    step
                );
                model.extend(records.iter().cloned());
            }
            Op::Reopen => {
                let before = log.next_offset();
                drop(log);
                log = check(open(), "reopen")?;
                prop_assert_eq!(log.next_offset(), before, "step {}: reopen", step);
            }
            Op::ReadFrom(index) => {
                let offset = index.index(model.len() + 1) as u64;
                check_read(&log, &model, offset)?;
            }
            Op::ReadPastEnd(extra) => match log.read_from(len + extra) {
                Err(Error::OffsetOutOfRange {
                    requested,
                    next_offset,
                }) => {
                    prop_assert_eq!((requested, next_offset), (len + extra, len));
                }
                Err(e) => return Err(TestCaseError::fail(format!("read past end: {e}"))),
                Ok(_) => return Err(TestCaseError::fail("read past end succeeded")),
            },
        }
        prop_assert_eq!(log.next_offset(), model.len() as u64, "step {}", step);
    }
    check_read(&log, &model, 0)?;
    let report = check(log.verify(), "verify")?;
    prop_assert!(report.is_clean(), "verify found problems: {:?}", report);
    prop_assert_eq!(report.records, model.len() as u64);
    prop_assert_eq!(report.next_offset, model.len() as u64);
    check(log.close(), "close")?;
    Ok(model)
}

#[test]
fn log_matches_model_on_sim_storage() {
    run_cases(512, 200, |case| {
        let storage = SimStorage::new(case.sim_seed);
        let options = case.options();
        let open = || Log::open_with_storage(Arc::new(storage.clone()), "/log", options.clone());
        let model = run_model(case, &open)?;
        // A read-only view of the closed log sees the same records.
        let view = check(
            Log::open_read_only_with_storage(Arc::new(storage.clone()), "/log"),
            "read-only open",
        )?;
        prop_assert_eq!(view.next_offset(), model.len() as u64);
        check_read(&view, &model, 0)?;
        Ok(())
    });
}

#[test]
fn log_matches_model_on_the_file_system() {
    run_cases(24, 150, |case| {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let options = case.options();
        let open = || Log::open(dir.path(), options.clone());
        let model = run_model(case, &open)?;
        let report = check(enforcelog::verify_dir(dir.path()), "verify_dir")?;
        prop_assert!(report.is_clean(), "verify_dir found problems: {:?}", report);
        prop_assert_eq!(report.next_offset, model.len() as u64);
        let view = check(Log::open_read_only(dir.path()), "read-only open")?;
        check_read(&view, &model, 0)?;
        Ok(())
    });
}
