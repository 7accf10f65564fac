//! The bytes of a log directory, for the tests that damage them on purpose:
//! where each batch of a segment file stands, one byte rewritten or one
//! bit flipped in place (through the real file, as a disk would), the
//! segment files of a directory, zero-heavy records (the payloads whose
//! damage recovery must not mistake for a torn tail), a segment's chain
//! computed again as a forger would, and the Merkle leaves of a log's
//! records by definition.
//!
//! Nothing here goes through the storage seam: these helpers stand in for
//! the disk itself, under a log that is closed.

use std::fs;
use std::ops::RangeInclusive;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use enforcelog::format::{decode_batch, SEGMENT_HEADER_LEN};
use enforcelog::{Log, Record};

/// Positions (start, len) of every batch of a pristine segment file.
pub fn batches(segment: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < segment.len() {
        let view = decode_batch(&segment[pos..], None).expect("a pristine batch verifies");
        out.push((pos, view.len()));
        pos += view.len();
    }
    out
}

/// Every batch of a pristine segment file as (position, first offset, next
/// offset).
pub fn batch_offsets(segment: &[u8]) -> Vec<(usize, u64, u64)> {
    batches(segment)
        .into_iter()
        .map(|(pos, _)| {
            let header = decode_batch(&segment[pos..], None).expect("a batch").header;
            (pos, header.first_offset, header.next_offset())
        })
        .collect()
}

/// The leaf hashes of the records of the log in `dir`, by definition:
/// every record `Log::read_from` gives, in offset order from 0.
pub fn leaves(dir: &Path) -> Vec<enforcelog::audit::merkle::Hash> {
    let log = Log::open_read_only(dir).expect("open the log");
    log.read_from(0)
        .expect("read the log")
        .enumerate()
        .map(|(i, r)| {
            let r = r.expect("a record");
            assert_eq!(r.offset, i as u64, "records from offset 0 without a gap");
            enforcelog::audit::merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect()
}

/// Byte positions where the batches of a pristine segment file start.
pub fn batch_starts(segment: &[u8]) -> Vec<usize> {
    batches(segment)
        .into_iter()
        .map(|(start, _)| start)
        .collect()
}

/// The positions a report of damage at `byte` may name, given where the
/// batches start: the segment header for a header byte, else anywhere from
/// the start of the damaged batch up to the damaged byte itself.
pub fn damage_range(starts: &[usize], byte: usize) -> RangeInclusive<u64> {
    if byte < SEGMENT_HEADER_LEN {
        return 0..=(SEGMENT_HEADER_LEN as u64 - 1);
    }
    let start = starts
        .iter()
        .rev()
        .find(|&&s| s <= byte)
        .expect("a batch holds the byte");
    (*start as u64)..=(byte as u64)
}

/// Writes `byte` at `at` in the file, in place (no fsync: the tests that
/// use it read the file back in this process).
pub fn write_byte(path: &Path, at: usize, byte: u8) {
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&[byte], at as u64))
        .expect("write one byte");
}

/// Flips the bits of `mask` in byte `byte` of the file, in place, and syncs
/// the file.
pub fn flip(path: &Path, byte: usize, mask: u8) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open the file to damage");
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, byte as u64)
        .expect("read the byte to flip");
    b[0] ^= mask;
    file.write_all_at(&b, byte as u64).expect("write it back");
    file.sync_all().expect("sync the damage");
}

/// Segment files of a log directory, sorted by base offset.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<_> = fs::read_dir(dir)
        .expect("list the log directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segments.sort();
    segments
}

/// A payload as a host writes it: a short tag, then a long run of zero
/// counts (a histogram), then a few non-zero bytes.
pub fn zero_heavy_payload(tag: u8, zeros: usize) -> Vec<u8> {
    let mut p = vec![0x81, 0xa9, tag];
    p.extend(std::iter::repeat_n(0u8, zeros));
    p.extend_from_slice(&[0x91, 0x01, 0x07, tag]);
    p
}

/// Appends `count` records one at a time (each waits for its reply), record
/// `i` at timestamp `i` with a [`zero_heavy_payload`] tagged `i`.
pub fn append_zero_heavy(log: &Log, count: u8, zeros: usize) {
    for i in 0..count {
        log.append_blocking(Record::new(i64::from(i), zero_heavy_payload(i, zeros)))
            .expect("append a zero-heavy record");
    }
}

/// The segment (the log's first) with every batch's chain link computed
/// again from the genesis link: what a forger who can write the files
/// does after changing a record.
pub fn relinked(segment: &[u8]) -> Vec<u8> {
    use enforcelog::format::batch::encode_chained_batch;
    let mut out = segment[..SEGMENT_HEADER_LEN].to_vec();
    let mut link = enforcelog::format::chain::GENESIS;
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < segment.len() {
        let view = decode_batch(&segment[pos..], None).expect("a batch");
        let records: Vec<enforcelog::Record> = view
            .frames()
            .map(|f| enforcelog::Record::new(f.timestamp_us, f.payload.to_vec()))
            .collect();
        link = encode_chained_batch(&mut out, view.header.first_offset, &records, &link);
        pos += view.len();
    }
    out
}
