//! The recovery target: a log directory whose only segment holds the fuzz
//! bytes, opened for writing.
//!
//! The first byte picks how the rest becomes the segment file, so the fuzzer
//! can work past the checksums:
//!
//! - `0 mod 4`: the bytes as they are;
//! - `1 mod 4`: the bytes with the segment header and batch checksums fixed;
//! - `2, 3 mod 4`: a real segment header (of a log this process created)
//!   followed by the bytes, batch checksums fixed.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use enforcelog::format::{decode_batch, SegmentHeader, SEGMENT_HEADER_LEN};
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::{Durability, Log, LogOptions, Record};

use super::decoders::{fix_batches_from, fix_segment_checksums};

const DIR: &str = "/log";
const SEGMENT_NAME: &str = "00000000000000000000.log";

/// A record as read back: offset, timestamp, payload.
type Read = (u64, i64, Vec<u8>);

/// Opening must either refuse with an error that names the segment, or
/// yield the segment's leading run of valid batches (and, when it found
/// damage after them and sealed the segment, holes and records of batches
/// that verify after the damage), verify clean unless it sealed damage,
/// accept an append and keep it across a reopen.
pub fn check_recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let segment = match mode % 4 {
        0 => rest.to_vec(),
        1 => {
            let mut bytes = rest.to_vec();
            fix_segment_checksums(&mut bytes);
            bytes
        }
        _ => {
            let mut bytes = template().segment_header.clone();
            bytes.extend_from_slice(rest);
            fix_batches_from(&mut bytes, SEGMENT_HEADER_LEN);
            bytes
        }
    };
    open_and_check(&segment);
}

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        index_interval_bytes: 64,
        ..LogOptions::default()
    }
}

/// The files of a freshly created log directory with the fixed store id
/// (everything but its segment), and its segment header: whatever the
/// library writes there, the fuzz bytes are tried in that context.
struct Template {
    files: Vec<(PathBuf, Vec<u8>)>,
    segment_header: Vec<u8>,
}

fn template() -> &'static Template {
    static TEMPLATE: OnceLock<Template> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let storage = SimStorage::new(0);
        super::prepare_dir(&storage, DIR.as_ref());
        let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options())
            .expect("a fresh in-memory log opens");
        log.close().expect("a fresh in-memory log closes");
        drop(log);
        let mut files = Vec::new();
        let mut segment_header = Vec::new();
        let names = storage.list(DIR.as_ref()).expect("the log directory lists");
        for name in names {
            let path = PathBuf::from(DIR).join(&name);
            let Some(bytes) = storage.read_file(&path) else {
                continue; // a directory
            };
            if name == SEGMENT_NAME {
                segment_header = bytes[..SEGMENT_HEADER_LEN].to_vec();
            } else if !name.ends_with(".log") {
                files.push((path, bytes));
            }
        }
        assert_eq!(
            segment_header.len(),
            SEGMENT_HEADER_LEN,
            "no segment written"
        );
        Template {
            files,
            segment_header,
        }
    })
}

/// The records of the leading run of valid batches of `segment`, as an
/// independent reading of the format would find them; `None` when the
/// header itself does not decode.
fn valid_prefix(segment: &[u8]) -> Option<Vec<Read>> {
    let header = SegmentHeader::decode(segment).ok()?;
    let mut records = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut next = header.base_offset;
    while let Ok(batch) = decode_batch(&segment[pos..], Some(next)) {
        for frame in batch.frames() {
            records.push((frame.offset, frame.timestamp_us, frame.payload.to_vec()));
        }
        next = batch.header.next_offset();
        pos += batch.len();
    }
    Some(records)
}

/// The records of every batch that verifies on its own, at any position.
fn batches_anywhere(segment: &[u8]) -> Vec<Read> {
    let mut records = Vec::new();
    for pos in SEGMENT_HEADER_LEN.min(segment.len())..segment.len() {
        if let Ok(batch) = decode_batch(&segment[pos..], None) {
            for frame in batch.frames() {
                records.push((frame.offset, frame.timestamp_us, frame.payload.to_vec()));
            }
        }
    }
    records
}

fn read_all(log: &Log) -> Vec<Read> {
    log.read_from(0)
        .expect("offset 0 of a recovered log is readable")
        .map(|r| {
            let r = r.expect("a recovered log reads back");
            (r.offset, r.timestamp_us, r.payload)
        })
        .collect()
}

fn open_and_check(segment: &[u8]) {
    let storage = SimStorage::new(0);
    for (path, bytes) in &template().files {
        storage.write_file(path, bytes);
    }
    let segment_path = PathBuf::from(DIR).join(SEGMENT_NAME);
    storage.write_file(&segment_path, segment);
    let log = match Log::open_with_storage(Arc::new(storage.clone()), DIR, options()) {
        Ok(log) => log,
        Err(e) => {
            // Corruption (and a foreign store tag) name the file.
            assert!(
                e.to_string().contains(SEGMENT_NAME),
                "open failed without naming the segment: {e:?}"
            );
            return;
        }
    };

    let records = read_all(&log);
    let next = log.next_offset();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.0, i as u64, "offsets are not dense from 0");
    }
    assert_eq!(
        records.len() as u64,
        next,
        "next_offset disagrees with the records"
    );
    // Damage after the leading run is read past: every later record is a
    // hole or a record of a batch that verifies somewhere in the segment.
    let sealed = storage
        .read_file(PathBuf::from(DIR).join(format!("{SEGMENT_NAME}.damaged")))
        .is_some();
    match valid_prefix(segment) {
        Some(prefix) => {
            assert!(
                records.len() >= prefix.len() && records[..prefix.len()] == prefix[..],
                "recovery kept {} records, the segment's valid batches hold {}",
                records.len(),
                prefix.len()
            );
            assert!(
                sealed || records.len() == prefix.len(),
                "records past the valid run"
            );
            let anywhere = batches_anywhere(segment);
            for r in &records[prefix.len()..] {
                let hole = matches!(
                    enforcelog::payload::decode(r.0, r.1, &r.2),
                    Ok(enforcelog::Entry::Lost(_))
                );
                assert!(hole || anywhere.contains(r), "a record was invented: {r:?}");
            }
        }
        None => assert!(records.is_empty(), "records recovered behind a bad header"),
    }
    // The fuzz bytes are not a history this log's writer chained: their
    // links may not fit (tampering, as verify should say). Anything else
    // is recovery's doing.
    let report = log.verify().expect("verify runs on a recovered log");
    let tampering = |report: &enforcelog::VerifyReport| -> Vec<u64> {
        assert!(
            sealed
                || report
                    .problems
                    .iter()
                    .all(|p| p.kind == enforcelog::ProblemKind::Tampering),
            "a recovered log does not verify: {report:?}"
        );
        report
            .problems
            .iter()
            .filter(|p| p.kind == enforcelog::ProblemKind::Tampering)
            .map(|p| p.position)
            .collect()
    };
    let tampered = tampering(&report);

    let appended: Read = (next, 5, b"after recovery".to_vec());
    let offset = log
        .append_blocking(Record::new(appended.1, appended.2.clone()))
        .expect("a recovered log accepts appends");
    assert_eq!(offset, next);
    log.close().expect("a recovered log closes");
    drop(log);

    let log = Log::open_with_storage(Arc::new(storage), DIR, options())
        .expect("a log recovered once reopens");
    let mut expected = records;
    expected.push(appended);
    assert!(
        read_all(&log) == expected,
        "the reopen lost or changed records"
    );
    // The append chains to whatever came before: no new tampering.
    let after = log.verify().expect("verify runs");
    assert!(
        sealed || tampering(&after) == tampered,
        "the append after recovery broke the chain: {after:?}"
    );
    log.close().expect("the reopened log closes");
}
