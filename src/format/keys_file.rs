//! The key index kept beside each sealed segment (`keys/<base>.keys`): which
//! frames of the segment hold which tenant's and which run's events, so a
//! query reads only those frames.
//!
//! The file is derived data, like the sparse `.idx`: it is rebuilt from
//! the segment whenever it is missing or fails any check below, and it is
//! never trusted over the segment. A reader verifies every frame a posting
//! names (bounds, frame checksum, offset, and that the decoded tenant or
//! run is the one asked for), so a hash collision or a wrong file costs
//! reads, never a wrong answer (see `store::keys`).
//!
//! ```text
//! header  offset size field
//!              0    8 magic               b"ENFLOGKY"
//!              8    2 keys_version        u16, KEYS_VERSION
//!             10    2 reserved            zero
//!             12    4 tenant_count        u32, entries of the tenant directory
//!             16    8 base_offset         u64, the segment's base offset
//!             24    8 next_offset         u64, the offset after its last record
//!             32    8 segment_len         u64, the segment file length it describes
//!             40    4 tenant_posting_count u32 (= events in the segment)
//!             44    4 run_posting_count   u32 (= events with a run id)
//!             48    4 other_count         u32 (= records that are not events)
//!             52    4 store_tag           u32, the segment header's store tag
//!             56    4 last_batch_at       u32, byte position of the segment's
//!                                         last batch (it ends at segment_len)
//!             60    4 segment_digest      u32, see `segment_digest`
//!
//! tenant directory entry (tenant_count times, from byte 64), sorted by hash
//!              0    8 tenant_hash         u64, key_hash(tenant_id)
//!              8    4 first               u32, index of its first tenant posting
//!             12    4 count               u32, its tenant postings (>= 1)
//!
//! tenant posting (12 bytes), per tenant sorted by (timestamp_us, position)
//!              0    8 timestamp_us        i64, the frame's timestamp
//!              8    4 position            u32, the frame's byte position in the segment
//!
//! run posting (12 bytes), sorted by (run_hash, position)
//!              0    8 run_hash            u64, key_hash(run_id)
//!              8    4 position            u32
//!
//! other (12 bytes): gap markers, lost entries and payloads that do not
//! decode, sorted by position
//!              0    8 timestamp_us        i64
//!              8    4 position            u32
//!
//! footer  offset size field
//!              0    4 crc32               of every byte before it
//! ```
//!
//! `key_hash` is 64-bit FNV-1a over the id's UTF-8 bytes. Directory entries
//! are contiguous: entry `i` starts where entry `i - 1` ended, and the last
//! ends at `tenant_posting_count`.
//!
//! `segment_digest` is the crc32 of the segment's first
//! `SEGMENT_HEADER_LEN + BATCH_HEADER_LEN + FRAME_HEADER_LEN` bytes (its
//! header, its first batch's header and first frame's header, checksums and
//! timestamps included) followed by the `BATCH_HEADER_LEN` bytes at
//! `last_batch_at`. With `store_tag` and the three offsets it binds the
//! file to one segment of one store: a file of another store, or of an
//! earlier segment under the same base, does not match and is rebuilt
//! (`store::keys`). It costs two small reads to check.

use std::ops::Range;

use super::{i64_at, u32_at, u64_at, BATCH_HEADER_LEN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// The first eight bytes of every key index file.
pub const KEYS_MAGIC: [u8; 8] = *b"ENFLOGKY";
/// The version of the key index format this build writes and reads.
pub const KEYS_VERSION: u16 = 2;
/// Size of the key index header in bytes.
pub const KEYS_HEADER_LEN: usize = 64;
/// Size of one tenant directory entry in bytes.
pub const TENANT_ENTRY_LEN: usize = 16;
/// Size of one posting (tenant, run or other) in bytes.
pub const POSTING_LEN: usize = 12;
/// Size of the footer in bytes.
pub const KEYS_FOOTER_LEN: usize = 4;

/// The hash a key index files ids under: 64-bit FNV-1a. Stable across
/// builds and platforms (it is part of the format).
pub fn key_hash(id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id.as_bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The segment a key index file describes: what binds the file to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentBinding {
    /// The segment's base offset.
    pub base_offset: u64,
    /// The offset after the segment's last record.
    pub next_offset: u64,
    /// The segment file length.
    pub segment_len: u64,
    /// The store tag of the segment's header.
    pub store_tag: u32,
    /// Byte position of the segment's last batch.
    pub last_batch_at: u32,
    /// [`segment_digest`] of the segment's bytes.
    pub segment_digest: u32,
}

impl SegmentBinding {
    /// The binding of the segment `bytes` (its file, `segment_len` long)
    /// whose last batch starts at `last_batch_at`; `None` if the bytes are
    /// too short or no batch there ends at the segment's end.
    pub fn of(
        bytes: &[u8],
        base_offset: u64,
        next_offset: u64,
        segment_len: u64,
        last_batch_at: u32,
    ) -> Option<Self> {
        let len = usize::try_from(segment_len).ok()?;
        let bytes = bytes.get(..len)?;
        let last = last_batch_at as usize;
        let last_header = bytes.get(last..last.checked_add(BATCH_HEADER_LEN)?)?;
        // The batch's length field (see `format::batch`) ends the segment.
        if last < SEGMENT_HEADER_LEN || last + u32_at(last_header, 4) as usize != len {
            return None;
        }
        let head = bytes.get(..SEGMENT_HEADER_LEN + BATCH_HEADER_LEN + FRAME_HEADER_LEN)?;
        Some(SegmentBinding {
            base_offset,
            next_offset,
            segment_len,
            store_tag: u32_at(bytes, 12),
            last_batch_at,
            segment_digest: segment_digest(head, last_header),
        })
    }
}

/// The crc32 of the segment's head (header, first batch header, first
/// frame header) followed by its last batch's header.
pub fn segment_digest(head: &[u8], last_batch_header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(head);
    h.update(last_batch_header);
    h.finalize()
}

/// One tenant's slice of the tenant postings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantEntry {
    /// `key_hash` of the tenant id.
    pub tenant_hash: u64,
    /// Index of its first posting in `tenant_postings`.
    pub first: u32,
    /// How many postings it has.
    pub count: u32,
}

/// A frame named by its timestamp and byte position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimedPosting {
    /// The frame's timestamp (µs since the epoch).
    pub timestamp_us: i64,
    /// The frame's byte position in its segment file.
    pub position: u32,
}

/// A frame named by a run id's hash and its byte position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RunPosting {
    /// `key_hash` of the run id.
    pub run_hash: u64,
    /// The frame's byte position in its segment file.
    pub position: u32,
}

/// A decoded key index file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeysFile {
    /// The segment it describes.
    pub segment: SegmentBinding,
    /// Sorted by hash, contiguous over `tenant_postings`.
    pub tenants: Vec<TenantEntry>,
    /// Every event's frame, grouped by tenant as `tenants` says.
    pub tenant_postings: Vec<TimedPosting>,
    /// Every event with a run id, sorted by (hash, position).
    pub run_postings: Vec<RunPosting>,
    /// Every record that is not an event, by position.
    pub others: Vec<TimedPosting>,
}

impl KeysFile {
    /// Builds the file's content from one entry per record of the segment:
    /// `(tenant hash, run hash)` for an event, `None` for anything else.
    pub fn from_records(
        segment: SegmentBinding,
        records: impl IntoIterator<Item = (TimedPosting, Option<(u64, Option<u64>)>)>,
    ) -> Self {
        let mut events: Vec<(u64, TimedPosting)> = Vec::new();
        let mut run_postings = Vec::new();
        let mut others = Vec::new();
        for (posting, keys) in records {
            match keys {
                Some((tenant_hash, run_hash)) => {
                    events.push((tenant_hash, posting));
                    if let Some(run_hash) = run_hash {
                        run_postings.push(RunPosting {
                            run_hash,
                            position: posting.position,
                        });
                    }
                }
                None => others.push(posting),
            }
        }
        events.sort_unstable();
        run_postings.sort_unstable();
        others.sort_unstable_by_key(|p| p.position);
        let mut tenants: Vec<TenantEntry> = Vec::new();
        for (i, (hash, _)) in events.iter().enumerate() {
            match tenants.last_mut() {
                Some(last) if last.tenant_hash == *hash => last.count += 1,
                _ => tenants.push(TenantEntry {
                    tenant_hash: *hash,
                    first: u32::try_from(i).unwrap_or(u32::MAX),
                    count: 1,
                }),
            }
        }
        KeysFile {
            segment,
            tenants,
            tenant_postings: events.into_iter().map(|(_, p)| p).collect(),
            run_postings,
            others,
        }
    }

    /// The postings of the tenant whose id hashes to `tenant_hash`.
    pub fn tenant(&self, tenant_hash: u64) -> &[TimedPosting] {
        let Ok(i) = self
            .tenants
            .binary_search_by_key(&tenant_hash, |t| t.tenant_hash)
        else {
            return &[];
        };
        let t = self.tenants[i];
        let first = t.first as usize;
        self.tenant_postings
            .get(first..first + t.count as usize)
            .unwrap_or(&[])
    }

    /// The postings of the run whose id hashes to `run_hash`.
    pub fn run(&self, run_hash: u64) -> &[RunPosting] {
        let from = self.run_postings.partition_point(|p| p.run_hash < run_hash);
        let to = self
            .run_postings
            .partition_point(|p| p.run_hash <= run_hash);
        &self.run_postings[from..to]
    }

    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut out = Vec::with_capacity(
            KEYS_HEADER_LEN
                + self.tenants.len() * TENANT_ENTRY_LEN
                + (self.tenant_postings.len() + self.run_postings.len() + self.others.len())
                    * POSTING_LEN
                + KEYS_FOOTER_LEN,
        );
        out.extend_from_slice(&KEYS_MAGIC);
        out.extend_from_slice(&KEYS_VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&count(self.tenants.len()).to_le_bytes());
        out.extend_from_slice(&self.segment.base_offset.to_le_bytes());
        out.extend_from_slice(&self.segment.next_offset.to_le_bytes());
        out.extend_from_slice(&self.segment.segment_len.to_le_bytes());
        out.extend_from_slice(&count(self.tenant_postings.len()).to_le_bytes());
        out.extend_from_slice(&count(self.run_postings.len()).to_le_bytes());
        out.extend_from_slice(&count(self.others.len()).to_le_bytes());
        out.extend_from_slice(&self.segment.store_tag.to_le_bytes());
        out.extend_from_slice(&self.segment.last_batch_at.to_le_bytes());
        out.extend_from_slice(&self.segment.segment_digest.to_le_bytes());
        for t in &self.tenants {
            out.extend_from_slice(&t.tenant_hash.to_le_bytes());
            out.extend_from_slice(&t.first.to_le_bytes());
            out.extend_from_slice(&t.count.to_le_bytes());
        }
        for p in &self.tenant_postings {
            out.extend_from_slice(&p.timestamp_us.to_le_bytes());
            out.extend_from_slice(&p.position.to_le_bytes());
        }
        for p in &self.run_postings {
            out.extend_from_slice(&p.run_hash.to_le_bytes());
            out.extend_from_slice(&p.position.to_le_bytes());
        }
        for p in &self.others {
            out.extend_from_slice(&p.timestamp_us.to_le_bytes());
            out.extend_from_slice(&p.position.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a key index file; `None` for anything that is not a whole,
    /// consistent file of this version.
    pub fn decode(buf: &[u8]) -> Option<Self> {
        let body_len = buf.len().checked_sub(KEYS_FOOTER_LEN)?;
        if body_len < KEYS_HEADER_LEN {
            return None;
        }
        let body = &buf[..body_len];
        if crc32fast::hash(body) != u32_at(buf, body_len) || body[..8] != KEYS_MAGIC {
            return None;
        }
        let version = u16::from_le_bytes([body[8], body[9]]);
        if version != KEYS_VERSION || body[10..12] != [0, 0] {
            return None;
        }
        let tenant_count = u32_at(body, 12) as usize;
        let tenant_postings = u32_at(body, 40) as usize;
        let run_postings = u32_at(body, 44) as usize;
        let others = u32_at(body, 48) as usize;
        let postings = tenant_postings
            .checked_add(run_postings)?
            .checked_add(others)?;
        let expected = KEYS_HEADER_LEN
            .checked_add(tenant_count.checked_mul(TENANT_ENTRY_LEN)?)?
            .checked_add(postings.checked_mul(POSTING_LEN)?)?;
        if body_len != expected {
            return None;
        }
        let mut at = KEYS_HEADER_LEN;
        let tenants = (0..tenant_count)
            .map(|i| {
                let e = at + i * TENANT_ENTRY_LEN;
                TenantEntry {
                    tenant_hash: u64_at(body, e),
                    first: u32_at(body, e + 8),
                    count: u32_at(body, e + 12),
                }
            })
            .collect();
        at += tenant_count * TENANT_ENTRY_LEN;
        let timed = |from: usize, n: usize| -> Vec<TimedPosting> {
            (0..n)
                .map(|i| {
                    let p = from + i * POSTING_LEN;
                    TimedPosting {
                        timestamp_us: i64_at(body, p),
                        position: u32_at(body, p + 8),
                    }
                })
                .collect()
        };
        let tenant_list = timed(at, tenant_postings);
        at += tenant_postings * POSTING_LEN;
        let run_list = (0..run_postings)
            .map(|i| {
                let p = at + i * POSTING_LEN;
                RunPosting {
                    run_hash: u64_at(body, p),
                    position: u32_at(body, p + 8),
                }
            })
            .collect();
        at += run_postings * POSTING_LEN;
        let other_list = timed(at, others);
        let file = KeysFile {
            segment: SegmentBinding {
                base_offset: u64_at(body, 16),
                next_offset: u64_at(body, 24),
                segment_len: u64_at(body, 32),
                store_tag: u32_at(body, 52),
                last_batch_at: u32_at(body, 56),
                segment_digest: u32_at(body, 60),
            },
            tenants,
            tenant_postings: tenant_list,
            run_postings: run_list,
            others: other_list,
        };
        file.is_consistent().then_some(file)
    }

    /// The order and bounds the format promises; a file that breaks any
    /// is treated as absent.
    fn is_consistent(&self) -> bool {
        let in_segment = |position: u32| {
            u64::from(position) >= SEGMENT_HEADER_LEN as u64
                && u64::from(position) < self.segment.segment_len
        };
        let mut next_first = 0u64;
        for (i, t) in self.tenants.iter().enumerate() {
            if t.count == 0
                || u64::from(t.first) != next_first
                || (i > 0 && self.tenants[i - 1].tenant_hash >= t.tenant_hash)
            {
                return false;
            }
            next_first += u64::from(t.count);
        }
        let grouped = next_first == self.tenant_postings.len() as u64
            && self.tenants.iter().all(|t| {
                let first = t.first as usize;
                self.tenant_postings[first..first + t.count as usize]
                    .windows(2)
                    .all(|w| w[0] < w[1])
            });
        let last = u64::from(self.segment.last_batch_at);
        self.segment.base_offset < self.segment.next_offset
            && last >= SEGMENT_HEADER_LEN as u64
            && last + (BATCH_HEADER_LEN as u64) < self.segment.segment_len
            && grouped
            && self.tenant_postings.iter().all(|p| in_segment(p.position))
            && self.run_postings.windows(2).all(|w| w[0] < w[1])
            && self.run_postings.iter().all(|p| in_segment(p.position))
            && self
                .others
                .windows(2)
                .all(|w| w[0].position < w[1].position)
            && self.others.iter().all(|p| in_segment(p.position))
    }
}

/// Where the parts of a checked key index file lie, so lookups read its
/// bytes in place (a mapped file) instead of a decoded copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeysLayout {
    /// The segment it describes.
    pub segment: SegmentBinding,
    tenant_count: usize,
    tenant_postings: usize,
    run_postings: usize,
    others: usize,
}

impl KeysLayout {
    /// Checks `buf` whole (checksum, bounds, order: see
    /// [`KeysFile::decode`]); the layout of the file, or `None`.
    pub fn check(buf: &[u8]) -> Option<Self> {
        let file = KeysFile::decode(buf)?;
        Some(KeysLayout {
            segment: file.segment,
            tenant_count: file.tenants.len(),
            tenant_postings: file.tenant_postings.len(),
            run_postings: file.run_postings.len(),
            others: file.others.len(),
        })
    }

    fn tenant_postings_at(&self) -> usize {
        KEYS_HEADER_LEN + self.tenant_count * TENANT_ENTRY_LEN
    }

    fn run_postings_at(&self) -> usize {
        self.tenant_postings_at() + self.tenant_postings * POSTING_LEN
    }

    fn others_at(&self) -> usize {
        self.run_postings_at() + self.run_postings * POSTING_LEN
    }

    fn timed(buf: &[u8], at: usize) -> TimedPosting {
        TimedPosting {
            timestamp_us: i64_at(buf, at),
            position: u32_at(buf, at + 8),
        }
    }

    /// The postings of the tenant whose id hashes to `tenant_hash`, with a
    /// timestamp in `time_us`, by (timestamp, position). `buf` is the file
    /// this layout was checked on.
    pub fn tenant(
        &self,
        buf: &[u8],
        tenant_hash: u64,
        time_us: &std::ops::RangeInclusive<i64>,
    ) -> Vec<TimedPosting> {
        let hash_at = |i: usize| u64_at(buf, KEYS_HEADER_LEN + i * TENANT_ENTRY_LEN);
        let (mut lo, mut hi) = (0, self.tenant_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if hash_at(mid) < tenant_hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == self.tenant_count || hash_at(lo) != tenant_hash {
            return Vec::new();
        }
        let entry = KEYS_HEADER_LEN + lo * TENANT_ENTRY_LEN;
        let first = u32_at(buf, entry + 8) as usize;
        let count = u32_at(buf, entry + 12) as usize;
        let at = |i: usize| self.tenant_postings_at() + (first + i) * POSTING_LEN;
        // Sorted by time within the tenant: the first at or after the start.
        let (mut lo, mut hi) = (0, count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if i64_at(buf, at(mid)) < *time_us.start() {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..count)
            .map(|i| Self::timed(buf, at(i)))
            .take_while(|p| p.timestamp_us <= *time_us.end())
            .collect()
    }

    /// The positions of the run whose id hashes to `run_hash`, ascending.
    pub fn run(&self, buf: &[u8], run_hash: u64) -> Vec<u32> {
        self.run_between(buf, run_hash, 0..self.run_postings)
    }

    /// Number of run postings (sorted by run hash).
    pub fn run_count(&self) -> usize {
        self.run_postings
    }

    /// The run hash of run posting `i` (`i < run_count()`).
    pub fn run_hash_at(&self, buf: &[u8], i: usize) -> u64 {
        u64_at(buf, self.run_postings_at() + i * POSTING_LEN)
    }

    /// [`KeysLayout::run`], given that the first posting of `run_hash` (or
    /// the place it would be) lies in `within` (a fence's narrowing).
    pub fn run_between(&self, buf: &[u8], run_hash: u64, within: Range<usize>) -> Vec<u32> {
        let at = |i: usize| self.run_postings_at() + i * POSTING_LEN;
        let (mut lo, mut hi) = (within.start, within.end.min(self.run_postings));
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if u64_at(buf, at(mid)) < run_hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..self.run_postings)
            .take_while(|&i| u64_at(buf, at(i)) == run_hash)
            .map(|i| u32_at(buf, at(i) + 8))
            .collect()
    }

    /// The records that are not events, with a timestamp in `time_us`, by
    /// position.
    pub fn others(&self, buf: &[u8], time_us: &std::ops::RangeInclusive<i64>) -> Vec<TimedPosting> {
        (0..self.others)
            .map(|i| Self::timed(buf, self.others_at() + i * POSTING_LEN))
            .filter(|p| time_us.contains(&p.timestamp_us))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> KeysFile {
        let posting = |ts, position| TimedPosting {
            timestamp_us: ts,
            position,
        };
        KeysFile::from_records(
            SegmentBinding {
                base_offset: 100,
                next_offset: 105,
                segment_len: 9000,
                store_tag: 0x1234_5678,
                last_batch_at: 8000,
                segment_digest: 0x9abc_def0,
            },
            [
                (
                    posting(5, 32),
                    Some((key_hash("acme"), Some(key_hash("r1")))),
                ),
                (posting(3, 300), Some((key_hash("zeta"), None))),
                (posting(9, 600), None),
                (
                    posting(1, 900),
                    Some((key_hash("acme"), Some(key_hash("r1")))),
                ),
                (
                    posting(-4, 1200),
                    Some((key_hash("acme"), Some(key_hash("r2")))),
                ),
            ],
        )
    }

    #[test]
    fn roundtrip_and_lookups() {
        let keys = sample();
        assert_eq!(KeysFile::decode(&keys.encode()), Some(keys.clone()));
        let acme: Vec<u32> = keys
            .tenant(key_hash("acme"))
            .iter()
            .map(|p| p.position)
            .collect();
        assert_eq!(acme, [1200, 900, 32], "by time, then position");
        assert_eq!(keys.tenant(key_hash("zeta")).len(), 1);
        assert!(keys.tenant(key_hash("nobody")).is_empty());
        let r1: Vec<u32> = keys
            .run(key_hash("r1"))
            .iter()
            .map(|p| p.position)
            .collect();
        assert_eq!(r1, [32, 900]);
        assert_eq!(keys.others.len(), 1);
        let bytes = keys.encode();
        let layout = KeysLayout::check(&bytes).unwrap();
        let all = i64::MIN..=i64::MAX;
        assert_eq!(
            layout.tenant(&bytes, key_hash("acme"), &all),
            keys.tenant(key_hash("acme"))
        );
        let some: Vec<u32> = layout
            .tenant(&bytes, key_hash("acme"), &(0..=4))
            .iter()
            .map(|p| p.position)
            .collect();
        assert_eq!(some, [900]);
        assert!(layout.tenant(&bytes, key_hash("nobody"), &all).is_empty());
        assert_eq!(layout.run(&bytes, key_hash("r1")), r1);
        assert_eq!(layout.run(&bytes, key_hash("r2")), [1200]);
        assert!(layout.run(&bytes, key_hash("r3")).is_empty());
        assert_eq!(layout.others(&bytes, &all), keys.others);
        assert!(layout.others(&bytes, &(0..=8)).is_empty());
        assert_eq!(
            keys.encode().len(),
            KEYS_HEADER_LEN + 2 * TENANT_ENTRY_LEN + (4 + 3 + 1) * POSTING_LEN + KEYS_FOOTER_LEN
        );
    }

    #[test]
    fn key_hash_is_fnv1a_64() {
        // Published FNV-1a test vectors.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(key_hash("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn every_bit_flip_and_truncation_is_refused() {
        let bytes = sample().encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(KeysFile::decode(&flipped), None, "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert_eq!(KeysFile::decode(&bytes[..cut]), None, "cut {cut}");
        }
    }

    /// A segment's bytes: header, then batches of one frame each (only
    /// the fields the binding reads need be right).
    fn segment(store_tag: u32, batches: &[(u64, u8)]) -> (Vec<u8>, u32) {
        let mut bytes = vec![0u8; SEGMENT_HEADER_LEN];
        bytes[12..16].copy_from_slice(&store_tag.to_le_bytes());
        let mut last = 0;
        for &(offset, fill) in batches {
            last = bytes.len() as u32;
            let len = BATCH_HEADER_LEN + FRAME_HEADER_LEN + 8 + 4;
            let mut batch = vec![fill; len];
            batch[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            batch[12..20].copy_from_slice(&offset.to_le_bytes());
            bytes.extend_from_slice(&batch);
        }
        (bytes, last)
    }

    #[test]
    fn the_binding_names_one_segment_of_one_store() {
        let (bytes, last) = segment(7, &[(10, 1), (11, 2), (12, 3)]);
        let len = bytes.len() as u64;
        let binding = SegmentBinding::of(&bytes, 10, 13, len, last).expect("binds");
        assert_eq!(binding.store_tag, 7);
        assert_eq!(binding.last_batch_at, last);
        // The same shape, another store or other content: another binding.
        let (other_store, _) = segment(8, &[(10, 1), (11, 2), (12, 3)]);
        let (other_first, _) = segment(7, &[(10, 9), (11, 2), (12, 3)]);
        let (other_last, _) = segment(7, &[(10, 1), (11, 2), (12, 9)]);
        for other in [&other_store, &other_first, &other_last] {
            assert_ne!(SegmentBinding::of(other, 10, 13, len, last), Some(binding));
        }
        // A last batch position that is not one, or bytes that end early.
        assert_eq!(SegmentBinding::of(&bytes, 10, 13, len, last - 1), None);
        assert_eq!(SegmentBinding::of(&bytes, 10, 13, len, 20), None);
        assert_eq!(SegmentBinding::of(&bytes, 10, 13, len, last + 1), None);
        assert_eq!(
            SegmentBinding::of(&bytes[..len as usize - 1], 10, 13, len, last),
            None
        );
        // Every bit of the bound fields matters: a file with any one
        // flipped (checksum made good again) names another segment.
        let file = KeysFile::from_records(binding, [] as [(TimedPosting, _); 0]);
        let encoded = file.encode();
        assert_eq!(KeysFile::decode(&encoded), Some(file.clone()));
        for bit in 16 * 8..KEYS_HEADER_LEN * 8 {
            if (40 * 8..52 * 8).contains(&bit) {
                continue; // the posting counts, not the binding
            }
            let mut flipped = encoded[..encoded.len() - KEYS_FOOTER_LEN].to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            let crc = crc32fast::hash(&flipped);
            flipped.extend_from_slice(&crc.to_le_bytes());
            if let Some(decoded) = KeysFile::decode(&flipped) {
                // What `store::keys` checks: the binding of the segment's
                // own offsets and bytes, at the file's last batch position.
                let b = decoded.segment;
                assert_ne!(
                    SegmentBinding::of(&bytes, 10, 13, len, b.last_batch_at),
                    Some(b),
                    "bit {bit}: still binds"
                );
            }
        }
    }

    #[test]
    fn inconsistent_content_with_a_good_checksum_is_refused() {
        let mut keys = sample();
        keys.tenant_postings.swap(0, 1);
        assert_eq!(KeysFile::decode(&keys.encode()), None, "unsorted postings");
        let mut keys = sample();
        keys.tenants[0].count += 1;
        assert_eq!(KeysFile::decode(&keys.encode()), None, "directory overruns");
        let mut keys = sample();
        keys.others[0].position = 9000;
        assert_eq!(KeysFile::decode(&keys.encode()), None, "past the segment");
        let mut keys = sample();
        keys.segment.last_batch_at = 8960;
        assert_eq!(
            KeysFile::decode(&keys.encode()),
            None,
            "last batch past the segment"
        );
        let mut keys = sample();
        keys.segment.last_batch_at = 31;
        assert_eq!(
            KeysFile::decode(&keys.encode()),
            None,
            "last batch in the header"
        );
    }
}
