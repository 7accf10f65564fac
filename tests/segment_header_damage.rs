//! A damaged segment header (issue 13, finding E).
//!
//! The 32-byte header only repeats what the file name and the segment's
//! batches already say (base offset) plus the store tag. One flipped bit in
//! it used to make `repair` move that segment and every intact segment
//! after it to the quarantine, and the log's next offset fell back: later
//! appends reused offsets (and `store_id:offset` ids) of acknowledged
//! events.
//!
//! What must hold for every bit of every segment header (sealed and
//! active), in a store with a store id and in one made before store ids:
//! - `Log::open` (writer and read-only) refuses with a corruption error that
//!   names the file and `repair`, and changes nothing on disk;
//! - `verify` reports the header and still checks every record after it;
//! - `repair --dry-run` changes nothing and says the header would be
//!   rewritten;
//! - `repair` writes the header again (the segment file is then exactly as
//!   written), moves nothing, loses nothing; every other segment is
//!   untouched;
//! - the reopened log holds every acknowledged record, and the next append
//!   takes the offset after the last one (no offset is given twice).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use enforcelog::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use enforcelog::log::{repair, repair_with, RepairAction, RepairOptions};
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::{verify_dir, Durability, Error, Log, LogOptions, ProblemKind, Record};

const DIR: &str = "/log";

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::Fsync,
        segment_max_bytes: 4096,
        record_max_bytes: 2048,
        index_interval_bytes: 512,
        ..LogOptions::default()
    }
}

/// A payload as a host writes it: a short tag, a long run of zero counts
/// (a histogram's empty buckets), a few non-zero bytes.
fn payload(tag: u8) -> Vec<u8> {
    let mut p = vec![0x81, 0xa9, tag];
    p.extend(std::iter::repeat_n(0u8, 700 + usize::from(tag) * 13));
    p.extend_from_slice(&[0x91, 0x01, 0x07, tag]);
    p
}

/// Every file under `dir` (recursively) and its bytes.
type Snapshot = BTreeMap<PathBuf, Vec<u8>>;

fn snapshot(storage: &SimStorage, dir: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for name in storage.list(&d).unwrap_or_default() {
            let path = d.join(name);
            match storage.read_file(&path) {
                Some(bytes) => {
                    out.insert(path, bytes);
                }
                None => todo.push(path),
            }
        }
    }
    out
}

fn restore(files: &Snapshot) -> SimStorage {
    let storage = SimStorage::new(5);
    storage.create_dir_all(Path::new(DIR)).unwrap();
    for (path, bytes) in files {
        storage.write_file(path, bytes);
    }
    storage
}

/// A log of several segments; with `legacy`, as a store made before store
/// ids left it (no STORE_ID file, untagged segment headers).
fn build(legacy: bool) -> (Snapshot, Vec<Vec<u8>>) {
    let storage = SimStorage::new(5);
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    let written: Vec<Vec<u8>> = (0..14u8).map(payload).collect();
    for p in &written {
        log.append_blocking(Record::new(1_700_000_000_000_000, p.clone()))
            .unwrap();
    }
    log.close().unwrap();
    drop(log);
    if legacy {
        storage.remove(&Path::new(DIR).join("STORE_ID")).unwrap();
        for name in segment_names(&storage) {
            let path = Path::new(DIR).join(&name);
            let mut bytes = storage.read_file(&path).unwrap();
            let header = SegmentHeader::decode(&bytes).unwrap();
            let untagged = SegmentHeader {
                store_tag: 0,
                base_offset: header.base_offset,
            };
            bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&untagged.encode());
            storage.write_file(&path, &bytes);
        }
    }
    let files = snapshot(&storage, Path::new(DIR));
    assert!(
        segment_names(&storage).len() >= 4,
        "{:?}",
        segment_names(&storage)
    );
    (files, written)
}

fn segment_names(storage: &SimStorage) -> Vec<String> {
    let mut names: Vec<String> = storage
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// The files a refused open or a dry run must leave as they were (the
/// LOCK file is the lock's, not the log's).
fn log_files(files: &Snapshot) -> Snapshot {
    files
        .iter()
        .filter(|(p, _)| !p.ends_with("LOCK"))
        .map(|(p, b)| (p.clone(), b.clone()))
        .collect()
}

fn assert_refused_naming_repair(result: Result<Log, Error>, victim: &Path, what: &str) {
    match result {
        Err(Error::Corruption { path, reason, .. }) => {
            assert_eq!(path, victim, "{what}: names the damaged segment");
            assert!(reason.contains("repair"), "{what}: names repair: {reason}");
        }
        Err(other) => panic!("{what}: refused with an unclear error: {other}"),
        Ok(_) => panic!("{what}: accepted a segment whose header does not decode"),
    }
}

fn sweep(legacy: bool) {
    let (pristine, written) = build(legacy);
    let names = segment_names(&restore(&pristine));
    let total = written.len() as u64;
    for (i, name) in names.iter().enumerate() {
        let victim = Path::new(DIR).join(name);
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let at = format!("legacy={legacy} segment {i} ({name}) bit {bit}");
            let mut damaged = pristine.clone();
            damaged.get_mut(&victim).unwrap()[bit / 8] ^= 1 << (bit % 8);
            let storage = restore(&damaged);
            let shared: Arc<dyn Storage> = Arc::new(storage.clone());

            // Plain opens refuse, name repair, and change nothing.
            assert_refused_naming_repair(
                Log::open_with_storage(shared.clone(), DIR, options()),
                &victim,
                &format!("{at}: writer open"),
            );
            assert_refused_naming_repair(
                Log::open_read_only_with_storage(shared.clone(), DIR),
                &victim,
                &format!("{at}: read-only open"),
            );
            assert!(
                log_files(&snapshot(&storage, Path::new(DIR))) == log_files(&damaged),
                "{at}: a refused open changed the directory"
            );

            // A dry run says what it would do and changes nothing.
            let dry =
                repair_with(&storage, Path::new(DIR), RepairOptions { dry_run: true }).unwrap();
            assert!(dry.dry_run, "{at}");
            assert!(
                log_files(&snapshot(&storage, Path::new(DIR))) == log_files(&damaged),
                "{at}: a dry run changed the directory"
            );

            let report = repair(&storage, Path::new(DIR)).unwrap();
            for r in [&dry, &report] {
                assert!(
                    matches!(
                        r.actions.as_slice(),
                        [RepairAction::HeaderRewritten { segment, .. }] if *segment == victim
                    ),
                    "{at}: only the header is rewritten: {:?}",
                    r.actions
                );
                assert_eq!((r.lost, r.moved_records), (0, 0), "{at}: {r:?}");
                assert_eq!(r.next_offset, total, "{at}: {r:?}");
            }
            // Every segment file is exactly as written: the damaged one's
            // header rebuilt bit for bit, every other one untouched.
            let after = snapshot(&storage, Path::new(DIR));
            for (path, bytes) in &pristine {
                let is_segment = path.extension().is_some_and(|e| e == "log");
                let other_index = path.extension().is_some_and(|e| e == "idx")
                    && path.file_stem() != victim.file_stem();
                if is_segment || other_index {
                    assert!(
                        after.get(path) == Some(bytes),
                        "{at}: {} is not as written after the repair",
                        path.display()
                    );
                }
            }

            // Reopened: every acknowledged record, no offset given twice.
            let log = Log::open_with_storage(shared.clone(), DIR, options())
                .unwrap_or_else(|e| panic!("{at}: reopen after repair: {e}"));
            assert!(log.verify().unwrap().is_clean(), "{at}");
            assert_eq!(log.next_offset(), total, "{at}");
            let read: Vec<Vec<u8>> = log
                .read_from(0)
                .unwrap()
                .map(|r| r.unwrap().payload)
                .collect();
            assert!(read == written, "{at}: the records read back differ");
            let next = log
                .append_blocking(Record::new(1, b"after the repair".to_vec()))
                .unwrap();
            assert_eq!(next, total, "{at}: an offset was given twice");
            log.close().unwrap();
        }
    }
}

#[test]
fn every_bit_of_every_segment_header_is_rewritten_in_place_by_repair() {
    sweep(false);
}

#[test]
fn every_bit_of_every_segment_header_is_rewritten_in_place_in_a_store_made_before_store_ids() {
    sweep(true);
}

/// `verify` on a real directory: a flipped header bit is reported as
/// corruption of that file, and every record after it is still checked
/// (none counted lost, the next offset is the log's).
#[test]
fn verify_reports_every_flipped_header_bit_and_checks_every_record_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    for tag in 0..14u8 {
        log.append_blocking(Record::new(1_700_000_000_000_000, payload(tag)))
            .unwrap();
    }
    let total = log.next_offset();
    log.close().unwrap();
    drop(log);
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "{names:?}");
    let clean = verify_dir(dir.path()).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    for path in &names {
        let pristine = std::fs::read(path).unwrap();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut bytes = pristine.clone();
            bytes[bit / 8] ^= 1 << (bit % 8);
            std::fs::write(path, &bytes).unwrap();
            let report = verify_dir(dir.path()).unwrap();
            assert!(
                report
                    .problems
                    .iter()
                    .any(|p| p.kind == ProblemKind::Corruption
                        && p.path == *path
                        && p.position == 0),
                "{}: bit {bit} not reported: {report:?}",
                path.display()
            );
            assert_eq!(report.problems.len(), 1, "{report:?}");
            assert_eq!(
                (report.records, report.lost, report.next_offset),
                (clean.records, 0, total),
                "{}: bit {bit}",
                path.display()
            );
        }
        std::fs::write(path, &pristine).unwrap();
    }
}

/// A segment whose content cannot be trusted although its name puts it in
/// its place: every segment after it stays, its offsets become a hole (its
/// bytes in the quarantine), and the next offset never goes back.
#[test]
fn an_untrustworthy_segment_becomes_a_hole_and_no_later_segment_moves() {
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("another store's tag", |b| {
            let h = SegmentHeader::decode(b).unwrap();
            let foreign = SegmentHeader {
                store_tag: h.store_tag ^ 0x5a5a_0001,
                base_offset: h.base_offset,
            };
            b[..SEGMENT_HEADER_LEN].copy_from_slice(&foreign.encode());
        }),
        ("another base offset", |b| {
            let h = SegmentHeader::decode(b).unwrap();
            let moved = SegmentHeader {
                store_tag: h.store_tag,
                base_offset: h.base_offset + 1,
            };
            b[..SEGMENT_HEADER_LEN].copy_from_slice(&moved.encode());
        }),
        ("no record", |b| b.truncate(SEGMENT_HEADER_LEN)),
        ("a truncated header", |b| b.truncate(10)),
    ];
    let (pristine, written) = build(false);
    let names = segment_names(&restore(&pristine));
    let total = written.len() as u64;
    for (what, damage) in damages {
        for (i, name) in names.iter().enumerate() {
            let at = format!("{what}, segment {i} ({name})");
            let last = i + 1 == names.len();
            if last && (what == "no record" || what == "a truncated header") {
                // The active segment may hold no record; and one cut
                // inside its header reads as a creation that did not
                // finish (recreated by the next open), a case of its own.
                continue;
            }
            let victim = Path::new(DIR).join(name);
            let mut damaged = pristine.clone();
            damage(damaged.get_mut(&victim).unwrap());
            let storage = restore(&damaged);
            let shared: Arc<dyn Storage> = Arc::new(storage.clone());
            let report = repair(&storage, Path::new(DIR))
                .unwrap_or_else(|e| panic!("{at}: repair failed: {e}"));
            assert!(
                matches!(
                    report.actions.as_slice(),
                    [
                        RepairAction::HeaderRewritten { .. },
                        RepairAction::Rewritten { .. }
                    ]
                ),
                "{at}: {:?}",
                report.actions
            );
            assert_eq!(report.moved_records, 0, "{at}: {report:?}");
            let after = snapshot(&storage, Path::new(DIR));
            for (path, bytes) in &pristine {
                if path.extension().is_some_and(|e| e == "log") && *path != victim {
                    assert!(
                        after.get(path) == Some(bytes),
                        "{at}: {} changed",
                        path.display()
                    );
                }
            }
            let log = Log::open_with_storage(shared.clone(), DIR, options())
                .unwrap_or_else(|e| panic!("{at}: reopen after repair: {e}"));
            assert!(log.verify().unwrap().is_clean(), "{at}");
            let end = log.next_offset();
            if last {
                assert!(end >= total, "{at}: the next offset went back to {end}");
            } else {
                assert_eq!(end, total, "{at}");
            }
            let base: u64 = name.trim_end_matches(".log").parse().unwrap();
            let next_base: u64 = names
                .get(i + 1)
                .map_or(end, |n| n.trim_end_matches(".log").parse().unwrap());
            for (offset, record) in log.read_from(0).unwrap().enumerate() {
                let record = record.unwrap();
                let offset = offset as u64;
                let lost = matches!(
                    enforcelog::payload::decode(offset, record.timestamp_us, &record.payload),
                    Ok(enforcelog::Entry::Lost(_))
                );
                if (base..next_base).contains(&offset) {
                    assert!(lost, "{at}: offset {offset} is not in the hole");
                } else {
                    assert!(
                        !lost && record.payload == written[offset as usize],
                        "{at}: offset {offset} is not as written"
                    );
                }
            }
            let next = log
                .append_blocking(Record::new(1, b"after the repair".to_vec()))
                .unwrap();
            assert!(next >= total, "{at}: offset {next} given twice");
            log.close().unwrap();
        }
    }
}
