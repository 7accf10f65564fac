//! Holes: how the log records offsets whose records were destroyed.
//!
//! Offsets are dense, so a damaged stretch of a segment cannot just be cut
//! out while the valid batches after it stay. Instead the damaged bytes are
//! replaced by a *hole*: one or more ordinary, valid batches that cover
//! exactly the lost offsets, every record of which carries the same
//! lost-entry payload (`[1, 2, hole_first_offset, hole_len]`, see
//! `crate::payload`). Readers need nothing special: a hole reads like any
//! other records, the store decodes each as [`Entry::Lost`](crate::Entry),
//! and `verify` counts them as information, not damage.
//!
//! Invariant: a hole batch's records all name the same hole, and every
//! offset of that hole is covered by exactly one of them.

use crate::format::batch::encode_batch;
use crate::payload;
use crate::record::Record;

/// Records per hole batch, at most: keeps each batch far below the `u32`
/// length limit and a reader's memory per batch small, however large the
/// hole.
const RECORDS_PER_HOLE_BATCH: u64 = 4096;

/// Appends to `out` the batches of a hole covering `len` offsets from
/// `first`, all stamped `timestamp_us`. Nothing for an empty hole.
pub(crate) fn encode_hole(out: &mut Vec<u8>, first: u64, len: u64, timestamp_us: i64) {
    let payload = payload::encode_lost(first, len);
    let mut at = first;
    let end = first.saturating_add(len);
    while at < end {
        let count = (end - at).min(RECORDS_PER_HOLE_BATCH);
        let records: Vec<Record> = (0..count)
            .map(|_| Record::new(timestamp_us, payload.clone()))
            .collect();
        encode_batch(out, at, &records);
        at += count;
    }
}

/// The hole (first offset, length) a record belongs to, if it is a hole
/// record.
pub(crate) fn hole_of(payload: &[u8]) -> Option<(u64, u64)> {
    payload::decode_lost(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::decode_batch;

    #[test]
    fn a_hole_covers_exactly_its_offsets_in_valid_batches() {
        for len in [1u64, 2, RECORDS_PER_HOLE_BATCH, RECORDS_PER_HOLE_BATCH + 1] {
            let mut out = Vec::new();
            encode_hole(&mut out, 1000, len, 7);
            let (mut pos, mut next) = (0usize, 1000u64);
            while pos < out.len() {
                let view = decode_batch(&out[pos..], Some(next)).unwrap();
                for frame in view.frames() {
                    assert_eq!(hole_of(frame.payload), Some((1000, len)));
                }
                next = view.header.next_offset();
                pos += view.len();
            }
            assert_eq!(next, 1000 + len);
        }
        let mut out = Vec::new();
        encode_hole(&mut out, 5, 0, 0);
        assert!(out.is_empty());
    }
}
