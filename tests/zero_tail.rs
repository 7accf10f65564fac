//! Segments filled with zeros ahead of the writer
//! (`LogOptions::preallocate_segments`): the active segment of a live or
//! crashed writer ends in zeros, which every open reads as the end; sealed
//! segments and closed logs are byte for byte what they are without
//! filling; a valid batch after zeros is still judged as before (the
//! zero-run defect stays closed); a fill that fails costs nothing but the
//! fill.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test zero_tail`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::capture::log_lines;
use common::Rng;
use enforcelog::format::{
    decode_batch, encode_batch, encode_chained_batch, SegmentHeader, SEGMENT_HEADER_LEN,
};
use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::storage::Storage;
use enforcelog::{verify_dir, Durability, Log, LogOptions, LogRecord, Record};

const DIR: &str = "/zero-tail";
const SEGMENT_NAME: &str = "00000000000000000000.log";
/// How far ahead the writer fills, at most (`PREALLOCATE_AHEAD_BYTES`).
const AHEAD_BYTES: u64 = 2 << 20;
const HEADER: u64 = SEGMENT_HEADER_LEN as u64;

fn options(preallocate_segments: bool) -> LogOptions {
    LogOptions {
        preallocate_segments,
        // Segments as small as 16 KiB in some tests.
        record_max_bytes: 10 << 10,
        ..LogOptions::default()
    }
}

/// Records equal, without printing them all when not.
fn assert_same(found: &[LogRecord], expected: &[LogRecord], what: &str) {
    let differs = found
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .or((found.len() != expected.len()).then_some(found.len().min(expected.len())));
    assert!(
        differs.is_none(),
        "{what}: {} records found, {} expected, first difference at index {differs:?}",
        found.len(),
        expected.len()
    );
}

/// A payload that looks like an event's: runs of zeros, and now and then
/// a large one.
fn payload(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.chance(10) {
        rng.in_range(4000..=9000)
    } else {
        rng.in_range(60..=400)
    };
    let mut bytes = vec![0u8; len];
    for _ in 0..4 {
        let at = rng.index(len);
        let run = (len - at).min(16);
        bytes[at..at + run].copy_from_slice(&rng.non_zero_bytes(run));
    }
    bytes
}

fn append_some(log: &Log, rng: &mut Rng, batches: usize) -> Vec<LogRecord> {
    let mut out = Vec::new();
    for _ in 0..batches {
        let count = rng.in_range(1..=3);
        let records: Vec<Record> = (0..count)
            .map(|_| Record::new(i64::try_from(rng.next() >> 4).expect("fits"), payload(rng)))
            .collect();
        let range = log
            .append_batch_blocking(records.clone())
            .expect("append a batch");
        out.extend(range.zip(records).map(|(offset, r)| LogRecord {
            offset,
            timestamp_us: r.timestamp_us,
            payload: r.payload,
        }));
    }
    out
}

fn read_all(log: &Log) -> Vec<LogRecord> {
    log.read_from(0)
        .expect("read_from(0)")
        .collect::<Result<_, _>>()
        .expect("read every record")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

#[test]
fn a_live_segment_is_filled_with_zeros_ahead_of_the_writer() {
    let mut rng = Rng(common::run_seed());
    for (preallocate, durability) in [
        (true, Durability::Fsync),
        (false, Durability::Fsync),
        // Seldom fsyncs: nothing to gain, nothing filled.
        (true, Durability::None),
    ] {
        let what = format!("preallocate {preallocate}, {durability:?}");
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = Log::open(
            dir.path(),
            LogOptions {
                durability,
                ..options(preallocate)
            },
        )
        .expect("open");
        append_some(&log, &mut rng, 20);
        let data_end = HEADER + log.metrics().bytes;
        let segment = dir.path().join(SEGMENT_NAME);
        let len = file_len(&segment);
        if preallocate && durability == Durability::Fsync {
            assert!(
                len > data_end,
                "{what}: not filled ahead ({len} <= {data_end})"
            );
            assert!(
                len <= data_end + AHEAD_BYTES,
                "{what}: filled too far: {len}"
            );
            let bytes = fs::read(&segment).expect("read");
            assert!(
                bytes[usize::try_from(data_end).expect("fits")..]
                    .iter()
                    .all(|&b| b == 0),
                "{what}: the fill is not zeros"
            );
            let filled = log.metrics().prefilled_bytes;
            assert!(filled > 0 && filled <= len - HEADER, "{what}: {filled}");
        } else {
            assert_eq!(len, data_end, "{what}");
            assert_eq!(log.metrics().prefilled_bytes, 0, "{what}");
        }
        log.close().expect("close");
        assert_eq!(file_len(&segment), data_end, "{what}: closed with zeros");
    }
}

/// Every file of a closed log directory whose bytes are the log's (segments
/// and their indexes), by name; a segment's store tag (header bytes 12..16,
/// and the header's checksum with it) is left out: two stores differ there.
fn log_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log" || e == "idx"))
        .map(|p| {
            let mut bytes = fs::read(&p).expect("read");
            if p.extension().is_some_and(|e| e == "log") {
                bytes.drain(..SEGMENT_HEADER_LEN);
            }
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, bytes)
        })
        .collect()
}

#[test]
fn a_cleanly_closed_store_has_no_zero_tail() {
    // The same appends, one per group, with and without filling: every
    // sealed segment, its index, and the closed last segment are the same
    // bytes.
    let seed = common::run_seed();
    let mut dirs = Vec::new();
    for preallocate in [false, true] {
        let mut rng = Rng(seed);
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = Log::open(
            dir.path(),
            LogOptions {
                segment_max_bytes: 24 << 10,
                ..options(preallocate)
            },
        )
        .expect("open");
        let mut filled_while_open = 0;
        for _ in 0..12 {
            append_some(&log, &mut rng, 10);
            let last = fs::read_dir(dir.path())
                .expect("list")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .max()
                .expect("a segment");
            let bytes = fs::read(&last).expect("read");
            if bytes.last() == Some(&0) {
                filled_while_open += 1;
            }
        }
        assert!(log.metrics().records > 0);
        let segments = fs::read_dir(dir.path())
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .path()
                    .extension()
                    .is_some_and(|e| e == "log")
            })
            .count();
        assert!(segments > 3, "too few rolls: {segments}");
        if preallocate {
            assert!(filled_while_open > 0, "the open segment was never filled");
        } else {
            assert_eq!(filled_while_open, 0);
        }
        log.close().expect("close");
        let report = verify_dir(dir.path()).expect("verify");
        assert!(report.is_clean(), "preallocate {preallocate}: {report:?}");
        dirs.push(dir);
    }
    let without = log_files(dirs[0].path());
    let with = log_files(dirs[1].path());
    assert_eq!(
        without.keys().collect::<Vec<_>>(),
        with.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &without {
        assert!(
            with[name] == *bytes,
            "{name} differs: {} bytes with filling, {} without (seed {seed})",
            with[name].len(),
            bytes.len()
        );
    }
}

fn sim_log(storage: &SimStorage, options: LogOptions) -> enforcelog::Result<Log> {
    Log::open_with_storage(Arc::new(storage.clone()), DIR, options)
}

fn sim_segment(storage: &SimStorage, base: u64) -> Vec<u8> {
    storage
        .read_file(PathBuf::from(DIR).join(format!("{base:020}.log")))
        .expect("the segment exists")
}

#[test]
fn zeros_after_the_last_batch_of_a_prepared_segment_are_the_end_not_a_tear() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    for mode in [
        CrashMode::LoseUnsynced,
        CrashMode::TearLastWrite,
        CrashMode::Reorder,
        CrashMode::TornSectors,
    ] {
        let what = format!("{mode:?} (seed {seed})");
        let storage = SimStorage::new(seed);
        let log = sim_log(&storage, options(true)).expect("open");
        let acked = append_some(&log, &mut rng, 25);
        let data_end = HEADER + log.metrics().bytes;
        // Every acknowledged batch was fsynced: the crash takes nothing.
        storage.crash(mode);
        drop(log);
        let crashed = sim_segment(&storage, 0);
        let data_end_usize = usize::try_from(data_end).expect("fits");
        assert!(crashed.len() > data_end_usize, "{what}: no zeros to read");
        assert!(crashed[data_end_usize..].iter().all(|&b| b == 0), "{what}");

        // A reader stops at the durable end the writer published, which a
        // crash may take back (until a writer opens the log again): a
        // prefix, never an error.
        let view = Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR)
            .expect("read-only open");
        let seen = read_all(&view);
        assert_same(&seen, &acked[..seen.len().min(acked.len())], &what);
        assert!(view.verify().expect("verify").is_clean(), "{what}");
        drop(view);

        let torn_warnings = log_lines(&["WARN", "torn tail"]).len();
        let log = sim_log(&storage, options(true)).expect("reopen");
        assert_eq!(
            log_lines(&["WARN", "torn tail"]).len(),
            torn_warnings,
            "{what}: zeros read as a tear"
        );
        assert_same(&read_all(&log), &acked, &what);
        assert_eq!(sim_segment(&storage, 0).len(), crashed.len(), "{what}: cut");
        let report = log.verify().expect("verify");
        assert!(report.is_clean(), "{what}: {report:?}");
        let offset = log
            .append_blocking(Record::new(9, b"right after".to_vec()))
            .expect("append over the zeros");
        assert_eq!(offset, acked.len() as u64, "{what}");
        let after = sim_segment(&storage, 0);
        // Chained to the last batch before the zeros (log format 2).
        let previous = last_link(&after[..data_end_usize]);
        let mut expected = Vec::new();
        encode_chained_batch(
            &mut expected,
            offset,
            &[Record::new(9, b"right after".to_vec())],
            &previous,
        );
        assert_eq!(
            after[data_end_usize..data_end_usize + expected.len()],
            expected[..],
            "{what}: the append did not land right after the last batch"
        );
        log.close().expect("close");
        assert_eq!(
            sim_segment(&storage, 0).len(),
            data_end_usize + expected.len(),
            "{what}: closed with zeros"
        );
    }
}

/// The chain link the last batch of `segment` makes (whole batches after
/// the header), or the genesis link when it holds none.
fn last_link(segment: &[u8]) -> [u8; 32] {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut link = enforcelog::format::chain::GENESIS;
    while pos < segment.len() {
        let view = decode_batch(&segment[pos..], None).expect("a whole batch");
        link = view.compute_link().expect("a chained batch");
        pos += view.len();
    }
    link
}

/// A segment of `first` (one batch at offset 0), then `gap` zeros, then a
/// batch that verifies at offset 1, then `tail` zeros.
fn zeros_between(gap: usize, tail: usize) -> (Vec<u8>, usize) {
    let mut bytes = SegmentHeader {
        store_tag: 0,
        base_offset: 0,
    }
    .encode()
    .to_vec();
    let mut payload = vec![0u8; 3000];
    payload[..32].fill(0xC3);
    encode_batch(&mut bytes, 0, &[Record::new(1, payload)]);
    let first_end = bytes.len();
    bytes.resize(first_end + gap, 0);
    encode_batch(&mut bytes, 1, &[Record::new(2, vec![0x5A; 200])]);
    bytes.resize(bytes.len() + tail, 0);
    (bytes, first_end)
}

#[test]
fn a_valid_batch_after_zeros_in_a_prepared_segment_is_still_corruption() {
    // The zero-run case of the first review: zeros where acknowledged
    // records were, a valid batch further on than one write reaches. In a
    // segment filled with zeros ahead of the writer, zeros also follow that
    // batch: still corruption, and no open cuts anything.
    for tail in [0, 4096, AHEAD_BYTES as usize] {
        let (bytes, _) = zeros_between(9 << 20, tail);
        let dir = tempfile::tempdir().expect("temporary directory");
        Log::open(dir.path(), options(false))
            .and_then(|log| log.close())
            .expect("create the store");
        let segment = dir.path().join(SEGMENT_NAME);
        fs::write(&segment, &bytes).expect("write the segment");
        // An untagged segment, as a store made before store ids wrote.
        let _ = fs::remove_file(dir.path().join("DURABLE"));
        let _ = fs::remove_file(dir.path().join("STORE_ID"));
        let report = verify_dir(dir.path()).expect("verify");
        assert!(report.has_corruption(), "tail {tail}: {report:?}");
        match Log::open(dir.path(), options(true)) {
            Err(e) => assert!(
                matches!(e, enforcelog::Error::Corruption { .. }),
                "tail {tail}: {e}"
            ),
            Ok(log) => {
                // Sealed as found (but for the zeros after its data),
                // recording goes on in a new segment.
                assert!(log.next_offset() > 1, "tail {tail}: cut");
                log.close().expect("close");
            }
        }
        // Its data as found: only the zeros after the data are cut (issue
        // 17, review 23: a sealed segment holds no zero tail).
        assert!(
            fs::read(&segment).expect("read") == bytes[..bytes.len() - tail],
            "tail {tail}: the open changed the damaged segment"
        );
    }
}

#[test]
fn torn_bytes_in_a_prepared_tail_are_cut_before_a_shorter_append() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    for mode in [CrashMode::TearLastWrite, CrashMode::TornSectors] {
        let what = format!("{mode:?} (seed {seed})");
        let storage = SimStorage::new(seed ^ 0x7EA4);
        let log = sim_log(&storage, options(true)).expect("open");
        let acked = append_some(&log, &mut rng, 8);
        let data_end = usize::try_from(HEADER + log.metrics().bytes).expect("fits");
        // The long batch's write lands in the zeros, its fsync fails.
        storage.power_cut_after(1);
        let long: Vec<Record> = (0..4).map(|i| Record::new(i, vec![0xEE; 6000])).collect();
        assert!(log.append_batch_blocking(long).is_err(), "{what}");
        storage.crash(mode);
        drop(log);

        let log = sim_log(&storage, options(true)).expect("reopen");
        assert_same(&read_all(&log), &acked, &what);
        let bytes = sim_segment(&storage, 0);
        assert!(
            bytes[data_end..].iter().all(|&b| b == 0),
            "{what}: bytes of the torn write are left past the end"
        );
        let short = Record::new(3, b"short".to_vec());
        let offset = log.append_blocking(short.clone()).expect("short append");
        storage.crash(CrashMode::LoseUnsynced);
        drop(log);

        let log = sim_log(&storage, options(true)).expect("reopen again");
        let mut expected = acked.clone();
        expected.push(LogRecord {
            offset,
            timestamp_us: 3,
            payload: short.payload,
        });
        assert_same(&read_all(&log), &expected, &what);
        assert!(log.verify().expect("verify").is_clean(), "{what}");
        log.close().expect("close");
    }
}

#[test]
fn a_failed_zero_fill_leaves_appends_working() {
    let seed = common::run_seed();
    for kind in [FaultKind::NoSpace, FaultKind::Io] {
        let what = format!("{kind:?} (seed {seed})");
        let mut rng = Rng(seed);
        let storage = SimStorage::new(seed);
        let log = sim_log(
            &storage,
            LogOptions {
                segment_max_bytes: 16 << 10,
                ..options(true)
            },
        )
        .expect("open");
        let warnings = log_lines(&["WARN", "could not fill the active segment"]).len();
        storage.inject(FaultOp::WriteZeros, 0, kind, true);
        let acked = append_some(&log, &mut rng, 40);
        let metrics = log.metrics();
        assert!(!log.is_poisoned(), "{what}");
        assert_eq!(metrics.prefilled_bytes, 0, "{what}");
        // Tried once per segment, then not again until the next one.
        let segments = storage
            .list(Path::new(DIR))
            .expect("list")
            .into_iter()
            .filter(|n| n.ends_with(".log"))
            .count() as u64;
        assert!(segments > 1, "{what}: no roll");
        assert!(
            (1..=segments).contains(&metrics.prefill_failures),
            "{what}: {} failures in {segments} segments",
            metrics.prefill_failures
        );
        assert!(
            log_lines(&["WARN", "could not fill the active segment"]).len() > warnings,
            "{what}: not logged"
        );
        storage.clear_faults();
        assert_same(&read_all(&log), &acked, &what);
        storage.crash(CrashMode::LoseUnsynced);
        drop(log);
        let log = sim_log(&storage, options(true)).expect("reopen");
        assert_same(&read_all(&log), &acked, &what);
        assert!(log.verify().expect("verify").is_clean(), "{what}");
    }
}

#[test]
fn a_read_only_view_refreshes_over_a_zero_tail() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = Log::open(
        dir.path(),
        LogOptions {
            segment_max_bytes: 32 << 10,
            ..options(true)
        },
    )
    .expect("open");
    let mut acked = append_some(&log, &mut rng, 3);
    let view = Log::open_read_only(dir.path()).expect("read-only open");
    assert_same(&read_all(&view), &acked, "view");
    for _ in 0..10 {
        acked.extend(append_some(&log, &mut rng, 4));
        view.refresh().expect("refresh");
        assert_same(&read_all(&view), &acked, &format!("seed {seed}"));
    }
    // The view's last segment ends in zeros while the writer lives.
    let last = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .max()
        .expect("a segment");
    assert_eq!(fs::read(&last).expect("read").last(), Some(&0));
    log.close().expect("close");
    view.refresh().expect("refresh after close");
    assert_same(&read_all(&view), &acked, "view");
}

/// How the tools judge the log in the simulated `DIR`: a read-only open's
/// error, or its `verify` (each problem's kind and position) and its next
/// offset.
fn judged(storage: &SimStorage) -> (String, u64) {
    match Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR) {
        Err(e) => (format!("open refused: {e}"), 0),
        Ok(view) => {
            let report = view.verify().expect("verify");
            let problems: Vec<String> = report
                .problems
                .iter()
                .map(|p| format!("{:?} at {}", p.kind, p.position))
                .collect();
            (format!("problems {problems:?}"), view.next_offset())
        }
    }
}

#[test]
fn every_flipped_bit_before_a_zero_tail_is_judged_as_without_it() {
    // A store of zero-heavy events; then every bit of its last two batches
    // flipped, with and without zeros after the last batch: the zeros must
    // change no verdict (a flip never makes a sector all zeros that runs
    // past a batch, since the trailer's last byte, `D`, stays non-zero).
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    let storage = SimStorage::new(seed);
    let log = sim_log(&storage, options(false)).expect("open");
    append_some(&log, &mut rng, 6);
    let before_last_two = usize::try_from(HEADER + log.metrics().bytes).expect("fits");
    append_some(&log, &mut rng, 2);
    log.close().expect("close");
    drop(log);
    let durable = PathBuf::from(DIR).join("DURABLE");
    storage.remove(&durable).expect("remove DURABLE");
    let segment = PathBuf::from(DIR).join(SEGMENT_NAME);
    let pristine = storage.read_file(&segment).expect("segment");
    let mut differences = Vec::new();
    for bit in before_last_two * 8..pristine.len() * 8 {
        let mut bytes = pristine.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        storage.write_file(&segment, &bytes);
        let without = judged(&storage);
        bytes.resize(bytes.len() + 4096 + rng.index(4096), 0);
        storage.write_file(&segment, &bytes);
        let with = judged(&storage);
        // Damage that runs to the end of the segment is a hole sized by
        // the most records the bytes to the end could hold, zeros
        // included: never fewer offsets (none is given twice), maybe more.
        if with.0 != without.0 || with.1 < without.1 {
            differences.push(format!("bit {bit}: {without:?} / with zeros: {with:?}"));
        }
    }
    assert!(
        differences.is_empty(),
        "seed {seed}: {} of {} flips judged otherwise before zeros, e.g. {:?}",
        differences.len(),
        (pristine.len() - before_last_two) * 8,
        &differences[..differences.len().min(3)]
    );
}
