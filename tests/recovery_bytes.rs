//! Recovery over arbitrary and damaged segment bytes: open either refuses
//! with a clear error, or yields a log whose every record is one that was
//! written, at its own offset, or a hole where damage destroyed records
//! (damage in the last segment is read past, not a reason to stop).
//!
//! This is the plain-test twin of the `recovery` fuzz target in `fuzz/`.

use std::sync::Arc;

use enforcelog::storage::sim::SimStorage;
use enforcelog::{Durability, Entry, Error, Log, LogOptions, Record};
use proptest::prelude::*;

const SEGMENT: &str = "/log/00000000000000000000.log";

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        index_interval_bytes: 64,
        ..LogOptions::default()
    }
}

/// Writes `batches` into a fresh store and returns the storage, the segment
/// bytes and the records in offset order.
const STORE_ID: &[u8] = b"0123456789abcdef0123456789abcdef\n";

fn build(batches: &[Vec<Vec<u8>>]) -> (SimStorage, Vec<u8>, Vec<Vec<u8>>) {
    let storage = SimStorage::new(1);
    // A fixed store id, so that `open_and_check` can place the segment in a
    // directory it belongs to.
    storage.write_file("/log/STORE_ID", STORE_ID);
    let log = Log::open_with_storage(Arc::new(storage.clone()), "/log", options()).unwrap();
    let mut written = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let records = batch
            .iter()
            .map(|p| Record::new(i as i64, p.clone()))
            .collect();
        log.append_batch_blocking(records).unwrap();
        written.extend(batch.iter().cloned());
    }
    log.close().unwrap();
    let bytes = storage.read_file(SEGMENT).unwrap();
    (storage, bytes, written)
}

/// Opens `bytes` as the only segment; on success checks that what reads
/// back is, at each offset, the record written there (when `written` is
/// given) or a hole: damage is read past, its offsets lost, never invented.
/// The log verifies clean unless the open found damage and sealed it.
fn open_and_check(bytes: &[u8], written: Option<&[Vec<u8>]>) -> Result<u64, Error> {
    let storage = SimStorage::new(2);
    storage.write_file("/log/VERSION", b"enforcelog-log 2\n");
    storage.write_file("/log/STORE_ID", STORE_ID);
    storage.write_file(SEGMENT, bytes);
    let log = Log::open_with_storage(Arc::new(storage.clone()), "/log", options())?;
    let next = log.next_offset();
    let mut count = 0u64;
    for record in log.read_from(0)? {
        let record = record.expect("a log that opened reads back");
        assert_eq!(record.offset, count);
        let hole = matches!(
            enforcelog::payload::decode(count, record.timestamp_us, &record.payload),
            Ok(Entry::Lost(_))
        );
        if let (Some(written), false) = (written, hole) {
            assert_eq!(Some(&record.payload), written.get(count as usize));
        }
        count += 1;
    }
    assert_eq!(count, next);
    let sealed = storage.read_file(format!("{SEGMENT}.damaged")).is_some();
    assert!(sealed || log.verify().unwrap().is_clean());
    Ok(next)
}

fn batches() -> impl Strategy<Value = Vec<Vec<Vec<u8>>>> {
    prop::collection::vec(
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
        1..6,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic_or_invent_records(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        match open_and_check(&bytes, None) {
            Ok(_) | Err(Error::Corruption { .. }) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn damaged_segment_is_refused_or_reads_written_records_and_holes(
        batches in batches(),
        at in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let (_, mut bytes, written) = build(&batches);
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        } else {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        match open_and_check(&bytes, Some(&written)) {
            Ok(_) => {}
            Err(Error::Corruption { path, .. }) => prop_assert_eq!(path.to_str(), Some(SEGMENT)),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

#[test]
fn intact_segment_reads_everything() {
    let batches = vec![vec![b"a".to_vec()], vec![b"bb".to_vec(), Vec::new()]];
    let (_, bytes, written) = build(&batches);
    assert_eq!(open_and_check(&bytes, Some(&written)).unwrap(), 3);
}
