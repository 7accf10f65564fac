//! `Log::scan` (frames visited in place) against the readers that copy:
//! for every start offset and random time ranges, a scan visits exactly
//! the records `read_time_range` returns (`read_from` for the full range),
//! with the same bytes, and returns the offset `LogReader::next_offset`
//! reaches; each visited frame's `(segment_base, position)` locates it in
//! its segment file. Checked on the live writer (sealed segments and the
//! active one), after reopening, and on a read-only view; while records
//! commit and segments roll during the scan; through a damaged sealed
//! segment (read past as a hole, exactly as `read_from` does, and the
//! same `damaged_segments` count); when a sealed file is gone (the same
//! error after the same records); and from an offset past the end.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test scan`.

mod common;

use std::ops::{ControlFlow, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::Rng;
use enforcelog::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::{Durability, Log, LogOptions, Record};

const DIR: &str = "/log";
const BASE_US: i64 = 1_764_000_000_000_000;

/// A record as both readers report it.
type Seen = (u64, i64, Vec<u8>);

fn options() -> LogOptions {
    LogOptions {
        segment_max_bytes: 4096,
        index_interval_bytes: 256,
        record_max_bytes: 1024,
        durability: Durability::None,
        ..LogOptions::default()
    }
}

/// A payload as events look: a few non-zero bytes around a run of zeros
/// (what recovery and a reader must never mistake for unwritten space).
fn payload(rng: &mut Rng, offset_hint: u64) -> Vec<u8> {
    let zeros = rng.range(0..300) as usize;
    let mut bytes = vec![0x97, 0x92, 0x01, 0x00];
    bytes.extend(offset_hint.to_le_bytes());
    bytes.extend(vec![0u8; zeros]);
    let tail = rng.range(0..40) as usize;
    bytes.extend(rng.non_zero_bytes(tail));
    bytes
}

/// Appends `batches` batches of 1..=6 records with timestamps in no order
/// (a coarse grid, so ranges hit equal stamps, plus rare extremes); returns
/// what it appended, as (timestamp, payload), in offset order.
fn append_random(log: &Log, rng: &mut Rng, batches: usize) -> Vec<(i64, Vec<u8>)> {
    let mut appended = Vec::new();
    for _ in 0..batches {
        let n = rng.range(1..7);
        let records: Vec<Record> = (0..n)
            .map(|i| {
                let ts = match rng.range(0..20) {
                    0 => i64::MIN,
                    1 => i64::MAX,
                    _ => BASE_US + rng.range_i64(0..40) * 1_000,
                };
                Record::new(ts, payload(rng, log.next_offset() + i))
            })
            .collect();
        appended.extend(records.iter().map(|r| (r.timestamp_us, r.payload.clone())));
        log.append_batch_blocking(records).expect("append a batch");
    }
    appended
}

/// A random time range: everything, nothing, one grid stamp, a span, a
/// reversed (empty) one, or one reaching an extreme.
fn random_range(rng: &mut Rng) -> RangeInclusive<i64> {
    let at = |rng: &mut Rng| BASE_US + rng.range_i64(-2..42) * 1_000 + rng.range_i64(-1..2);
    match rng.range(0..7) {
        0 => i64::MIN..=i64::MAX,
        1 => {
            let t = at(rng);
            t..=t
        }
        2 => i64::MIN..=at(rng),
        3 => at(rng)..=i64::MAX,
        4 => {
            let (a, b) = (at(rng), at(rng));
            a.max(b)..=a.min(b)
        }
        _ => {
            let (a, b) = (at(rng), at(rng));
            a.min(b)..=a.max(b)
        }
    }
}

/// What `read_time_range` returns from `start`, the error that ended it
/// (as text), and its `next_offset` after the last record.
fn read(log: &Log, start: u64, range: RangeInclusive<i64>) -> (Vec<Seen>, Option<String>, u64) {
    let full = *range.start() == i64::MIN && *range.end() == i64::MAX;
    let mut reader = if full {
        log.read_from(start)
    } else {
        log.read_time_range(start, range)
    }
    .expect("start a reader");
    let mut seen = Vec::new();
    let mut error = None;
    for record in reader.by_ref() {
        match record {
            Ok(r) => seen.push((r.offset, r.timestamp_us, r.payload)),
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    (seen, error, reader.next_offset())
}

/// What `scan` visits from `start`, its error (as text), and the offset it
/// returns; checks each frame's position against the segment files, when
/// `storage` is given (a segment read past damage is read through its
/// in-memory rebuild, whose positions are not the file's).
fn scan(
    log: &Log,
    storage: Option<&SimStorage>,
    start: u64,
    range: RangeInclusive<i64>,
) -> (Vec<Seen>, Option<String>, Option<u64>) {
    let mut seen = Vec::new();
    let mut frames = Vec::new();
    let result = log.scan(start, range, |frame| {
        seen.push((frame.offset, frame.timestamp_us, frame.payload.to_vec()));
        frames.push((frame.segment_base, frame.position));
        ControlFlow::Continue(())
    });
    let checked = storage.map_or(0, |_| seen.len());
    for ((offset, ts, payload), (base, position)) in seen.iter().zip(&frames).take(checked) {
        let storage = storage.expect("checked only with a storage");
        let file = storage
            .read_file(segment_path(*base))
            .expect("the visited frame's segment file exists");
        let at = *position as usize;
        assert!(at >= SEGMENT_HEADER_LEN, "offset {offset}: position {at}");
        let frame = &file[at..at + FRAME_HEADER_LEN + payload.len()];
        assert_eq!(
            u64::from_le_bytes(frame[8..16].try_into().unwrap()),
            *offset,
            "the frame at (segment {base}, position {at}) is offset {offset}'s"
        );
        assert_eq!(i64::from_le_bytes(frame[16..24].try_into().unwrap()), *ts);
        assert_eq!(&frame[FRAME_HEADER_LEN..], payload.as_slice());
    }
    match result {
        Ok(next) => (seen, None, Some(next)),
        Err(e) => (seen, Some(e.to_string()), None),
    }
}

/// `got` and `want` hold the same records: offsets and timestamps shown
/// when they differ, payloads compared without printing them.
fn assert_same(got: &[Seen], want: &[Seen], what: &str) {
    let keys = |v: &[Seen]| v.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>();
    assert_eq!(keys(got), keys(want), "{what}: (offset, timestamp) of each");
    for (g, w) in got.iter().zip(want) {
        assert!(g.2 == w.2, "{what}: the payload of offset {}", g.0);
    }
}

fn segment_path(base: u64) -> PathBuf {
    Path::new(DIR).join(format!("{base:020}.log"))
}

/// Scan ≡ read ≡ a plain filter of what was appended, for every start
/// offset and a few random ranges each.
fn expect_same_everywhere(
    log: &Log,
    storage: &SimStorage,
    model: &[(i64, Vec<u8>)],
    rng: &mut Rng,
    what: &str,
) {
    let next = log.next_offset();
    assert_eq!(next, model.len() as u64, "{what}");
    for start in 0..=next {
        for _ in 0..4 {
            let range = random_range(rng);
            let (want, want_error, want_next) = read(log, start, range.clone());
            let (got, got_error, got_next) = scan(log, Some(storage), start, range.clone());
            let case = format!("{what}: scan({start}, {range:?})");
            let filtered: Vec<Seen> = model
                .iter()
                .enumerate()
                .skip(start as usize)
                .filter(|(_, (ts, _))| range.contains(ts))
                .map(|(offset, (ts, payload))| (offset as u64, *ts, payload.clone()))
                .collect();
            assert_same(
                &want,
                &filtered,
                &format!("{case}: read against the filter"),
            );
            assert_eq!(got_error, want_error, "{case}");
            assert_same(&got, &want, &case);
            assert_eq!(got_next, Some(want_next), "{case}: the next offset");
        }
    }
}

fn segment_count(storage: &SimStorage) -> usize {
    storage
        .list(Path::new(DIR))
        .expect("list the log directory")
        .iter()
        .filter(|n| n.ends_with(".log"))
        .count()
}

#[test]
fn scan_visits_what_read_from_and_read_time_range_return_from_every_offset() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    let model = append_random(&log, &mut rng, 60);
    assert!(
        segment_count(&storage) >= 3,
        "seed {seed}: sealed segments and an active one"
    );
    expect_same_everywhere(
        &log,
        &storage,
        &model,
        &mut rng,
        &format!("seed {seed}: live"),
    );
    log.close().expect("close");
    drop(log);

    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("reopen");
    expect_same_everywhere(
        &log,
        &storage,
        &model,
        &mut rng,
        &format!("seed {seed}: reopened"),
    );
    drop(log);
    let view = Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR).expect("view");
    expect_same_everywhere(
        &view,
        &storage,
        &model,
        &mut rng,
        &format!("seed {seed}: read-only"),
    );
}

#[test]
fn a_scan_past_the_end_fails_as_read_from_does() {
    let storage = SimStorage::new(3);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    append_random(&log, &mut Rng::new(3), 4);
    let next = log.next_offset();
    let want = log
        .read_from(next + 1)
        .expect_err("past the end")
        .to_string();
    let got = log
        .scan(next + 1, i64::MIN..=i64::MAX, |_| ControlFlow::Continue(()))
        .expect_err("past the end")
        .to_string();
    assert_eq!(got, want);
    // At the end: nothing to visit, and the end is where it stopped.
    let mut visited = 0;
    let at = log
        .scan(next, i64::MIN..=i64::MAX, |_| {
            visited += 1;
            ControlFlow::Continue(())
        })
        .expect("scan at the end");
    assert_eq!((visited, at), (0, next));
}

/// A visitor that stops gets the offset after the record it stopped at,
/// and a scan from there visits the rest: stopping and resuming by the
/// returned offset misses and repeats nothing.
#[test]
fn a_scan_stopped_and_resumed_at_its_returned_offset_visits_every_record_once() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    append_random(&log, &mut rng, 40);
    for _ in 0..20 {
        let range = random_range(&mut rng);
        let (want, _, _) = read(&log, 0, range.clone());
        let mut got = Vec::new();
        let mut at = 0;
        loop {
            let budget = rng.range(1..30);
            let mut taken = 0;
            let next = log
                .scan(at, range.clone(), |frame| {
                    got.push(frame.offset);
                    taken += 1;
                    if taken == budget {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("scan");
            if taken < budget {
                assert_eq!(
                    next,
                    log.next_offset(),
                    "seed {seed}: a full scan ends at the end"
                );
                break;
            }
            assert_eq!(Some(&(next - 1)), got.last(), "seed {seed}: {range:?}");
            at = next;
        }
        let want: Vec<u64> = want.iter().map(|r| r.0).collect();
        assert_eq!(got, want, "seed {seed}: {range:?}");
    }
}

/// Records committed while a scan runs, segments rolling under it (the
/// active segment it is reading becomes sealed), are visited as
/// `read_from` returns them when it runs the same way.
#[test]
fn a_scan_sees_records_committed_and_segments_rolled_while_it_runs() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    let mut rng = Rng::new(seed);
    let mut model = append_random(&log, &mut rng, 5);
    let segments_before = segment_count(&storage);

    // The scan appends a batch at every third record it visits, until 120
    // batches more are in: it keeps finding new records and new segments.
    let mut writes = Rng::new(seed ^ 1);
    let mut appended = 0;
    let mut visited = Vec::new();
    let end = log
        .scan(0, i64::MIN..=i64::MAX, |frame| {
            visited.push((frame.offset, frame.timestamp_us, frame.payload.to_vec()));
            if appended < 120 && frame.offset % 3 == 0 {
                model.extend(append_random(&log, &mut writes, 1));
                appended += 1;
            }
            ControlFlow::Continue(())
        })
        .expect("scan");
    assert_eq!(
        appended, 120,
        "seed {seed}: the scan kept up with the writes"
    );
    assert!(
        segment_count(&storage) >= segments_before + 5,
        "seed {seed}: segments rolled during the scan"
    );
    assert_eq!(end, log.next_offset(), "seed {seed}");
    let (all, error, _) = read(&log, 0, i64::MIN..=i64::MAX);
    assert_eq!(error, None);
    assert_same(
        &visited,
        &all,
        &format!("seed {seed}: the scan saw every record once"),
    );
    let appended: Vec<Seen> = model
        .into_iter()
        .enumerate()
        .map(|(offset, (ts, payload))| (offset as u64, ts, payload))
        .collect();
    assert_same(&visited, &appended, &format!("seed {seed}: as appended"));
}

/// A log of several sealed segments, closed, with one payload bit flipped
/// in the middle of a middle sealed segment (its `.idx` is intact, so an
/// open does not check its frames: the first reader meets the damage).
fn damaged_log(seed: u64) -> SimStorage {
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    append_random(&log, &mut Rng::new(seed), 80);
    log.close().expect("close");
    drop(log);
    let mut names: Vec<String> = storage
        .list(Path::new(DIR))
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "seed {seed}: enough segments");
    let path = Path::new(DIR).join(&names[names.len() / 2]);
    let mut bytes = storage.read_file(&path).expect("read the segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    storage.write_file(&path, &bytes);
    storage
}

/// Damage in a sealed segment is read past by a scan exactly as by
/// `read_from`: the same records around it, the same hole, the same
/// count of damaged segments, from any start and for any range.
#[test]
fn a_scan_reads_past_damage_in_a_sealed_segment_as_read_from_does() {
    let seed = common::run_seed();
    let storage = damaged_log(seed);
    let mut rng = Rng::new(seed ^ 2);
    let open = || Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    let next = open().next_offset();
    for case in 0..24 {
        let start = if case < 4 { 0 } else { rng.range(0..next + 1) };
        let range = if case % 4 == 0 {
            i64::MIN..=i64::MAX
        } else {
            random_range(&mut rng)
        };
        // A fresh open each (one writer at a time): the first reader to
        // meet the damage is the one that reads past it.
        let (want, want_damaged) = {
            let log = open();
            let read = read(&log, start, range.clone());
            (read, log.metrics().damaged_segments)
        };
        let (got, got_damaged) = {
            let log = open();
            let scanned = scan(&log, None, start, range.clone());
            (scanned, log.metrics().damaged_segments)
        };
        let what = format!("seed {seed}: scan({start}, {range:?})");
        assert_eq!(got.1, want.1, "{what}: the error");
        assert_same(&got.0, &want.0, &format!("{what}: the records"));
        assert_eq!(got.2, Some(want.2), "{what}: the next offset");
        assert_eq!(got_damaged, want_damaged, "{what}: damaged segments found");
        if case == 0 {
            assert_eq!(want_damaged, 1, "{what}: the damage is met");
            assert!(
                want.0.len() as u64 == next,
                "{what}: every offset is read, the damaged batch as a hole"
            );
        }
    }
}

/// A sealed segment file gone under an open log: the scan visits the
/// records before it and then fails with `read_from`'s error.
#[test]
fn a_scan_fails_where_read_from_fails_after_the_same_records() {
    let seed = common::run_seed();
    let storage = SimStorage::new(seed);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
    append_random(&log, &mut Rng::new(seed), 60);
    log.close().expect("close");
    drop(log);
    let mut names: Vec<String> = storage
        .list(Path::new(DIR))
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    let gone = Path::new(DIR).join(&names[1]);
    let open = || {
        let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).expect("open");
        // Sealed segments are mapped on first read: remove the file after
        // the open checked it, before anything reads it.
        storage.remove(&gone).ok();
        log
    };
    let original = storage.read_file(&gone).expect("the segment");
    let want = read(&open(), 0, i64::MIN..=i64::MAX);
    storage.write_file(&gone, &original);
    let got = scan(&open(), None, 0, i64::MIN..=i64::MAX);
    assert!(
        want.1.is_some(),
        "seed {seed}: read_from fails at the gone file"
    );
    assert_eq!(got.1, want.1, "seed {seed}: the error");
    assert_same(
        &got.0,
        &want.0,
        &format!("seed {seed}: the records before it"),
    );
}
