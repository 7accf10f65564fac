//! An active segment cut below the durable end its writer published
//! (`DURABLE`): the records there were acknowledged and synced, so a file
//! that ends before it lost them. Something other than enforcelog did it
//! (an operator's `truncate`, a restore from a copy taken mid-write, a
//! file system that lost a tail after a crash). Every opener must say so:
//! a writer's `verify` (review 27), a reader's `verify`, an offline
//! `verify_dir`, and a read-only open, which must not read what is left as
//! the whole log. A writer's open must not hand the lost offsets out again.
//!
//! The cut is made at a batch boundary (it then scans clean, which is what
//! made it invisible) and in the middle of a batch (a tail that would
//! otherwise be called torn), on payloads with zero runs.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use enforcelog::{verify_dir, Log, LogOptions, ProblemKind, Record};

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("{{\"run\":\"run-{i:04}\",\"zeros\":[0,0,0,0]}}").into_bytes();
    p.extend_from_slice(&[0u8; 300]);
    p.extend_from_slice(format!("end-{i}").as_bytes());
    p
}

fn active_segment(dir: &Path) -> PathBuf {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    all.sort();
    all.pop().expect("a segment")
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Where to cut the active segment of a log of six records written in two
/// batches of three: at the boundary between them, or inside the second.
#[derive(Debug, Clone, Copy)]
enum Cut {
    AtBoundary,
    InsideLastBatch,
}

/// A closed log of six records in two writes (two opens), and the byte
/// offset to cut its active segment at.
fn closed_log(dir: &Path, how: Cut) -> u64 {
    let write = |range: std::ops::Range<u64>| {
        let log = Log::open(dir, LogOptions::default()).unwrap();
        let records: Vec<Record> = range.map(|i| Record::new(1, payload(i))).collect();
        log.append_batch_blocking(records).unwrap();
        log.close().unwrap();
        std::fs::metadata(active_segment(dir)).unwrap().len()
    };
    let boundary = write(0..3);
    let end = write(3..6);
    assert!(end > boundary);
    match how {
        Cut::AtBoundary => boundary,
        Cut::InsideLastBatch => (boundary + end) / 2,
    }
}

fn missing_records_reported(report: &enforcelog::VerifyReport) -> bool {
    report.problems.iter().any(|p| {
        p.kind == ProblemKind::Corruption && p.reason.contains("acknowledged records are missing")
    })
}

#[test]
fn an_offline_verify_reports_records_cut_below_the_durable_end() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        assert!(
            verify_dir(&dir).unwrap().is_clean(),
            "{how:?}: clean before the cut"
        );
        cut(&active_segment(&dir), at);
        let report = verify_dir(&dir).unwrap();
        assert!(
            missing_records_reported(&report),
            "{how:?}: acknowledged records cut off, offline verify says {report:?}"
        );
    }
}

#[test]
fn a_read_only_open_refuses_a_segment_cut_below_the_durable_end() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        assert_eq!(Log::open_read_only(&dir).unwrap().next_offset(), 6);
        cut(&active_segment(&dir), at);
        match Log::open_read_only(&dir) {
            Err(e) => assert!(
                e.to_string().contains("acknowledged records are missing"),
                "{how:?}: {e}"
            ),
            Ok(reader) => panic!(
                "{how:?}: a reader shows {} of the 6 acknowledged records, and no error",
                reader.next_offset()
            ),
        }
    }
}

#[test]
fn a_readers_verify_reports_records_cut_below_the_durable_end() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        let reader = Log::open_read_only(&dir).unwrap();
        assert!(reader.verify().unwrap().is_clean());
        cut(&active_segment(&dir), at);
        let report = reader.verify().unwrap();
        assert!(
            missing_records_reported(&report),
            "{how:?}: a reader's verify says {report:?}"
        );
    }
}

/// Without a published end (a store last written by a release before
/// `DURABLE`, or during `repair`, which withdraws it first), nothing says
/// the records were durable: the cut is read as the end of the log (at a
/// boundary) or as a torn tail, as before, and no reader fails.
#[test]
fn without_a_published_durable_end_a_cut_is_not_called_a_loss() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        cut(&active_segment(&dir), at);
        std::fs::remove_file(dir.join("DURABLE")).unwrap();
        let report = verify_dir(&dir).unwrap();
        assert!(!missing_records_reported(&report), "{how:?}: {report:?}");
        assert_eq!(
            Log::open_read_only(&dir).unwrap().next_offset(),
            3,
            "{how:?}"
        );
    }
}

/// A writer that opens the cut log must not append at offsets it had
/// acknowledged: a record under an offset that once named another event
/// breaks every reader that saw the first (and the shipper's message ids).
#[test]
fn a_writer_open_does_not_hand_out_cut_offsets_again() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        cut(&active_segment(&dir), at);
        match Log::open(&dir, LogOptions::default()) {
            Err(e) => assert!(
                matches!(e, enforcelog::Error::Corruption { .. }),
                "{how:?}: {e}"
            ),
            Ok(log) => {
                let next = log.append_blocking(Record::new(2, payload(99))).unwrap();
                assert!(
                    next >= 6,
                    "{how:?}: the writer reused offset {next}, which named an acknowledged record"
                );
            }
        }
    }
}

/// `repair` of a log whose writer open was refused for a cut below the
/// durable end: afterwards the log opens, and the next record still does
/// not take an offset that named an acknowledged record.
#[test]
fn after_repair_the_cut_offsets_stay_retired() {
    for how in [Cut::AtBoundary, Cut::InsideLastBatch] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let at = closed_log(&dir, how);
        cut(&active_segment(&dir), at);
        assert!(Log::open(&dir, LogOptions::default()).is_err(), "{how:?}");
        let repaired = enforcelog::log::repair_dir(&dir).unwrap();
        let log = Log::open(&dir, LogOptions::default()).unwrap();
        let next = log.append_blocking(Record::new(2, payload(99))).unwrap();
        assert!(
            next >= 6,
            "{how:?}: after {repaired:?} the writer reused offset {next}, which named an acknowledged record"
        );
    }
}

/// The segment `DURABLE` names removed whole (review 31 finding 3): every
/// opener says so, and `repair` retires its offsets after the last segment
/// left, so the next record does not take one of them.
#[test]
fn a_removed_segment_the_durable_end_names_is_reported_and_repair_retires_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let options = LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        ..LogOptions::default()
    };
    let log = Log::open(&dir, options.clone()).unwrap();
    let mut acknowledged = 0;
    while segment_count(&dir) < 3 {
        log.append_blocking(Record::new(1, payload(acknowledged)))
            .unwrap();
        acknowledged += 1;
    }
    log.append_blocking(Record::new(1, payload(acknowledged)))
        .unwrap();
    acknowledged += 1;
    log.close().unwrap();
    drop(log);
    std::fs::remove_file(active_segment(&dir)).unwrap();
    let report = verify_dir(&dir).unwrap();
    assert!(missing_records_reported(&report), "{report:?}");
    let refused = |e: enforcelog::Error| e.to_string().contains("acknowledged records are missing");
    assert!(Log::open_read_only(&dir).err().is_some_and(refused));
    assert!(Log::open(&dir, options.clone()).err().is_some_and(refused));
    enforcelog::log::repair_dir(&dir).unwrap();
    let log = Log::open(&dir, options).unwrap();
    let next = log.append_blocking(Record::new(2, payload(999))).unwrap();
    assert!(
        next >= acknowledged,
        "offset {next} handed out again ({acknowledged} acknowledged)"
    );
    log.close().unwrap();
    assert!(verify_dir(&dir)
        .unwrap()
        .problems
        .iter()
        .all(|p| p.kind != ProblemKind::Corruption));
}
