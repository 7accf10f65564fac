//! The sparse offset index kept beside each sealed segment (`<base>.idx`).
//!
//! The index is derived data: it is rebuilt from the segment whenever it is
//! missing or fails any check below, so it is never trusted over the segment.
//!
//! ```text
//! header  offset size field
//!              0    8 magic            b"ENFLOGIX"
//!              8    2 format_version   u16, FORMAT_VERSION
//!             10    2 reserved         zero
//!             12    4 entry_count      u32
//!             16    8 base_offset      u64, the segment's base offset
//!             24    8 next_offset      u64, the offset after the segment's last record
//!             32    8 segment_len      u64, the segment file length it describes
//!
//! entry   offset size field            (entry_count times, from byte 40)
//!              0    8 first_offset     u64, first offset of the batch
//!              8    8 position         u64, byte position of the batch in the segment
//!             16    8 min_timestamp_us i64, least timestamp of the batches it covers
//!             24    8 max_timestamp_us i64, greatest timestamp of the batches it covers
//!
//! An entry covers the batches from its own up to the next entry's (or the
//! segment's end); entries are at least `index_interval_bytes` apart.
//!
//! footer  offset size field
//!              0    4 crc32            of every byte before it
//! ```

use super::{i64_at, u32_at, u64_at, FORMAT_VERSION};

/// The first eight bytes of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"ENFLOGIX";
/// Size of the index header in bytes.
pub const INDEX_HEADER_LEN: usize = 40;
/// Size of one index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 32;

/// One entry: where a batch starts, and the timestamp bounds of the batches
/// it covers (its own up to the next entry's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the batch's first record.
    pub first_offset: u64,
    /// Byte position of the batch in its segment file.
    pub position: u64,
    /// Least record timestamp in the batches covered.
    pub min_timestamp_us: i64,
    /// Greatest record timestamp in the batches covered.
    pub max_timestamp_us: i64,
}

/// A decoded index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// The segment's base offset.
    pub base_offset: u64,
    /// The offset after the segment's last record.
    pub next_offset: u64,
    /// The segment file length the index describes.
    pub segment_len: u64,
    /// Entries in increasing offset and position order.
    pub entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    /// Encodes the index file.
    pub fn encode(&self) -> Vec<u8> {
        let count = u32::try_from(self.entries.len()).unwrap_or(u32::MAX);
        let mut out =
            Vec::with_capacity(INDEX_HEADER_LEN + self.entries.len() * INDEX_ENTRY_LEN + 4);
        out.extend_from_slice(&INDEX_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.base_offset.to_le_bytes());
        out.extend_from_slice(&self.next_offset.to_le_bytes());
        out.extend_from_slice(&self.segment_len.to_le_bytes());
        for e in self.entries.iter().take(count as usize) {
            out.extend_from_slice(&e.first_offset.to_le_bytes());
            out.extend_from_slice(&e.position.to_le_bytes());
            out.extend_from_slice(&e.min_timestamp_us.to_le_bytes());
            out.extend_from_slice(&e.max_timestamp_us.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes an index file; `None` when any check fails (the caller then
    /// rebuilds the index from the segment).
    pub fn decode(buf: &[u8]) -> Option<Self> {
        if buf.len() < INDEX_HEADER_LEN + 4 || buf[..8] != INDEX_MAGIC {
            return None;
        }
        let body = &buf[..buf.len() - 4];
        if crc32fast::hash(body) != u32_at(buf, buf.len() - 4) {
            return None;
        }
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        if version != FORMAT_VERSION || buf[10..12] != [0, 0] {
            return None;
        }
        let count = u32_at(buf, 12) as usize;
        if body.len() != INDEX_HEADER_LEN + count.checked_mul(INDEX_ENTRY_LEN)? {
            return None;
        }
        let entries: Vec<IndexEntry> = (0..count)
            .map(|i| {
                let at = INDEX_HEADER_LEN + i * INDEX_ENTRY_LEN;
                IndexEntry {
                    first_offset: u64_at(buf, at),
                    position: u64_at(buf, at + 8),
                    min_timestamp_us: i64_at(buf, at + 16),
                    max_timestamp_us: i64_at(buf, at + 24),
                }
            })
            .collect();
        let index = SegmentIndex {
            base_offset: u64_at(buf, 16),
            next_offset: u64_at(buf, 24),
            segment_len: u64_at(buf, 32),
            entries,
        };
        index.is_consistent().then_some(index)
    }

    /// Entries strictly increasing, inside the segment's offsets and length.
    fn is_consistent(&self) -> bool {
        let in_range = self.entries.iter().all(|e| {
            e.first_offset >= self.base_offset
                && e.first_offset < self.next_offset
                && e.position < self.segment_len
                && e.min_timestamp_us <= e.max_timestamp_us
        });
        let increasing = self
            .entries
            .windows(2)
            .all(|w| w[0].first_offset < w[1].first_offset && w[0].position < w[1].position);
        let starts_at_base = match self.entries.first() {
            Some(e) => e.first_offset == self.base_offset,
            None => self.next_offset == self.base_offset,
        };
        self.base_offset <= self.next_offset && in_range && increasing && starts_at_base
    }
}

/// The entry to start from when looking for `offset`: the last entry whose
/// first offset is at most `offset`.
pub fn seek(entries: &[IndexEntry], offset: u64) -> Option<&IndexEntry> {
    let after = entries.partition_point(|e| e.first_offset <= offset);
    after.checked_sub(1).map(|i| &entries[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            base_offset: 100,
            next_offset: 130,
            segment_len: 9000,
            entries: vec![
                IndexEntry {
                    first_offset: 100,
                    position: 32,
                    min_timestamp_us: 1,
                    max_timestamp_us: 5,
                },
                IndexEntry {
                    first_offset: 120,
                    position: 4000,
                    min_timestamp_us: -3,
                    max_timestamp_us: 9,
                },
            ],
        }
    }

    #[test]
    fn roundtrip_and_seek() {
        let index = sample();
        assert_eq!(SegmentIndex::decode(&index.encode()), Some(index.clone()));
        assert_eq!(seek(&index.entries, 99), None);
        assert_eq!(seek(&index.entries, 100).unwrap().position, 32);
        assert_eq!(seek(&index.entries, 119).unwrap().position, 32);
        assert_eq!(seek(&index.entries, 125).unwrap().position, 4000);
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(SegmentIndex::decode(&flipped), None, "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert_eq!(SegmentIndex::decode(&bytes[..cut]), None, "cut {cut}");
        }
    }
}
