//! Batches of record frames: the unit that is appended, made durable and
//! recovered atomically.
//!
//! ```text
//! batch   = header (40) | frame * record_count | trailer (4, or 48 chained)
//!
//! header  offset size field
//!              0    4 header_crc        crc32 of header bytes 4..40
//!              4    4 batch_len         u32, whole batch in bytes
//!              8    4 record_count      u32, >= 1
//!             12    8 first_offset      u64, offset of the first frame
//!             20    8 min_timestamp_us  i64, least frame timestamp
//!             28    8 max_timestamp_us  i64, greatest frame timestamp
//!             36    4 header_marker     b"EBAT"
//!
//! frame   offset size field
//!              0    4 frame_crc         crc32 of frame bytes 4..24+payload_len
//!              4    4 payload_len       u32
//!              8    8 offset            u64, first_offset + index in batch
//!             16    8 timestamp_us      i64, microseconds since the Unix epoch
//!             24    n payload
//!
//! trailer offset size field                (unchained: log format 1, holes)
//!              0    4 batch_marker      b"EEND"
//!
//! trailer offset size field                (chained: log format 2)
//!              0   32 prev              the link of the batch before (`format::chain`)
//!             32    8 link_tag          the first 8 bytes of this batch's link
//!             40    4 trailer_crc       crc32 of prev and link_tag
//!             44    4 chain_marker      b"ECHD"
//! ```
//!
//! A batch says which trailer it has: its frames end either 4 bytes before
//! `batch_len` (then the trailer must be `"EEND"`) or 48 bytes before it
//! (then the trailer's checksum must match and it must end in `"ECHD"`).
//! The markers differ in two bytes (four bits), so no flipped bit turns one
//! kind into the other; they end in the same byte, `D` (two bits set), so
//! a zeroed last byte is what two flipped bits leave in either kind (see
//! `log::recovery`). Which kind a log must hold is the log's business
//! (`log::verify`), not the decoder's.
//!
//! Invariants of a valid batch: the header checksum matches; `record_count >= 1`;
//! the frames are contiguous, each checksum matches, offsets are dense from
//! `first_offset`, every timestamp lies in `[min, max]`; the trailer follows the
//! last frame and ends exactly at `batch_len`.
//!
//! The two markers let a reader see that a batch was written to its end
//! (unwritten space reads as zero). They do not prove it alone: two flipped
//! bits zero `B`, `A` or `D`, and payloads may be mostly zeros, so recovery
//! first asks whether a flipped bit explains a failure (`format::flips`; see
//! `log::recovery`).

use super::chain::{self, LINK_LEN};
use super::{i64_at, marker_fully_written, u32_at, u64_at};
use crate::audit::merkle::Hash;
use crate::record::Record;

/// Size of a batch header in bytes.
pub const BATCH_HEADER_LEN: usize = 40;
/// Size of a frame header (everything but the payload) in bytes.
pub const FRAME_HEADER_LEN: usize = 24;
/// Size of the trailer of an unchained batch in bytes.
pub const BATCH_TRAILER_LEN: usize = 4;
/// Size of the trailer of a chained batch in bytes: the link before, the
/// link's tag, their checksum, the marker.
pub const CHAINED_TRAILER_LEN: usize = LINK_LEN + LINK_TAG_LEN + 4 + 4;
/// Bytes of a chained batch's own link stored in its trailer.
pub const LINK_TAG_LEN: usize = 8;

/// Marker closing every batch header. Each byte has at least two bits set.
pub const HEADER_MARKER: [u8; 4] = *b"EBAT";
/// Marker closing an unchained batch. Each byte has at least two bits set.
pub const BATCH_MARKER: [u8; 4] = *b"EEND";
/// Marker closing a chained batch. Each byte has at least two bits set; it
/// differs from [`BATCH_MARKER`] in two bytes and shares its last byte.
pub const CHAIN_MARKER: [u8; 4] = *b"ECHD";

const H_CRC: usize = 0;
const H_LEN: usize = 4;
const H_COUNT: usize = 8;
const H_FIRST_OFFSET: usize = 12;
const H_MIN_TS: usize = 20;
const H_MAX_TS: usize = 28;
/// Where the header marker lies in a batch header.
pub(crate) const H_MARKER: usize = 36;

const F_CRC: usize = 0;
const F_LEN: usize = 4;
const F_OFFSET: usize = 8;
const F_TS: usize = 16;

/// The smallest possible batch: one frame with an empty payload.
const MIN_BATCH_LEN: usize = BATCH_HEADER_LEN + FRAME_HEADER_LEN + BATCH_TRAILER_LEN;

/// A decoded, checksum-verified batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Whole batch length in bytes, header and trailer included.
    pub batch_len: u32,
    /// Number of frames in the batch.
    pub record_count: u32,
    /// Offset of the first frame.
    pub first_offset: u64,
    /// Least timestamp of any frame.
    pub min_timestamp_us: i64,
    /// Greatest timestamp of any frame.
    pub max_timestamp_us: i64,
}

impl BatchHeader {
    /// The offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.first_offset + u64::from(self.record_count)
    }
}

/// A batch whose every byte has been verified.
#[derive(Debug, Clone, Copy)]
pub struct BatchView<'a> {
    /// The verified header.
    pub header: BatchHeader,
    bytes: &'a [u8],
}

/// One record frame inside a verified batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameView<'a> {
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp, microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// The record's payload bytes.
    pub payload: &'a [u8],
}

/// What is wrong with the bytes where a batch was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// The bytes end before the batch does: a write that did not finish, or a
    /// reader that looked at a batch still being written.
    Incomplete,
    /// Bytes that cannot be a valid batch.
    Invalid {
        /// Position, relative to the start of the batch, of the first element
        /// that failed (0 for the header).
        at: usize,
        /// What failed.
        reason: &'static str,
        /// The header, when it was itself valid.
        header: Option<BatchHeader>,
    },
}

impl<'a> BatchView<'a> {
    /// The batch's bytes, header to trailer.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Length of the batch in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: a valid batch holds at least one frame.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether the batch is chained (log format 2).
    pub fn is_chained(&self) -> bool {
        self.bytes[self.bytes.len() - 4..] == CHAIN_MARKER
    }

    /// The link of the batch before, as a chained batch stores it (its
    /// checksum verified); `None` for an unchained batch.
    pub fn prev(&self) -> Option<Hash> {
        let start = self.trailer_start()?;
        let mut prev = [0u8; LINK_LEN];
        prev.copy_from_slice(&self.bytes[start..start + LINK_LEN]);
        Some(prev)
    }

    /// The first [`LINK_TAG_LEN`] bytes of its own link a chained batch
    /// stores; `None` for an unchained batch.
    pub fn link_tag(&self) -> Option<[u8; LINK_TAG_LEN]> {
        let start = self.trailer_start()? + LINK_LEN;
        let mut tag = [0u8; LINK_TAG_LEN];
        tag.copy_from_slice(&self.bytes[start..start + LINK_TAG_LEN]);
        Some(tag)
    }

    /// The link of a chained batch's records after the link it stores as
    /// `prev`: the chain value the next batch must store as its `prev`.
    /// `None` for an unchained batch.
    pub fn compute_link(&self) -> Option<Hash> {
        self.prev().map(|prev| self.link_after(&prev))
    }

    /// The link the batch's records make after `previous`.
    pub fn link_after(&self, previous: &Hash) -> Hash {
        chain::link(
            previous,
            self.header.first_offset,
            self.header.record_count,
            self.frames().map(|f| (f.timestamp_us, f.payload)),
        )
    }

    fn trailer_start(&self) -> Option<usize> {
        self.is_chained()
            .then(|| self.bytes.len() - CHAINED_TRAILER_LEN)
    }

    /// The batch's frames in offset order.
    pub fn frames(&self) -> Frames<'a> {
        Frames {
            bytes: self.bytes,
            pos: BATCH_HEADER_LEN,
            remaining: self.header.record_count,
        }
    }
}

/// Iterator over the frames of a verified batch.
#[derive(Debug, Clone)]
pub struct Frames<'a> {
    bytes: &'a [u8],
    pos: usize,
    remaining: u32,
}

impl<'a> Iterator for Frames<'a> {
    type Item = FrameView<'a>;

    fn next(&mut self) -> Option<FrameView<'a>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The batch was verified by `decode_batch`, so every bound holds.
        let frame = read_frame_unchecked(self.bytes, self.pos);
        self.pos += FRAME_HEADER_LEN + frame.payload.len();
        Some(frame)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Frames<'_> {}

fn read_frame_unchecked(bytes: &[u8], pos: usize) -> FrameView<'_> {
    let len = u32_at(bytes, pos + F_LEN) as usize;
    FrameView {
        offset: u64_at(bytes, pos + F_OFFSET),
        timestamp_us: i64_at(bytes, pos + F_TS),
        payload: &bytes[pos + FRAME_HEADER_LEN..pos + FRAME_HEADER_LEN + len],
    }
}

/// Encoded length of an unchained batch holding payloads of the given
/// lengths.
pub fn encoded_batch_len(payload_lens: impl Iterator<Item = usize>) -> usize {
    BATCH_HEADER_LEN
        + payload_lens
            .map(|len| FRAME_HEADER_LEN + len)
            .sum::<usize>()
        + BATCH_TRAILER_LEN
}

/// Encoded length of a chained batch holding payloads of the given lengths.
pub fn encoded_chained_batch_len(payload_lens: impl Iterator<Item = usize>) -> usize {
    encoded_batch_len(payload_lens) - BATCH_TRAILER_LEN + CHAINED_TRAILER_LEN
}

/// Appends the encoding of `records`, numbered from `first_offset`, to `out`,
/// as an unchained batch (log format 1, and the holes `repair` writes).
///
/// The caller has checked that `records` is not empty and that the batch fits
/// in a `u32` length (`log` refuses larger batches before they are queued).
pub fn encode_batch(out: &mut Vec<u8>, first_offset: u64, records: &[Record]) {
    let start = out.len();
    let batch_len = encoded_batch_len(records.iter().map(|r| r.payload.len()));
    encode_body(out, first_offset, records, batch_len);
    out.extend_from_slice(&BATCH_MARKER);
    debug_assert_eq!(out.len() - start, batch_len);
}

/// Appends the encoding of `records`, numbered from `first_offset`, to `out`,
/// as a chained batch after a batch whose link is `previous` (stored in its
/// trailer, with the tag of its own link); returns its link.
///
/// The same preconditions as [`encode_batch`].
pub fn encode_chained_batch(
    out: &mut Vec<u8>,
    first_offset: u64,
    records: &[Record],
    previous: &Hash,
) -> Hash {
    let start = out.len();
    let batch_len = encoded_chained_batch_len(records.iter().map(|r| r.payload.len()));
    encode_body(out, first_offset, records, batch_len);
    let record_count = records.len() as u32; // bounded by the batch length
    let link = chain::link(
        previous,
        first_offset,
        record_count,
        records
            .iter()
            .map(|r| (r.timestamp_us, r.payload.as_slice())),
    );
    let trailer = out.len();
    out.extend_from_slice(previous);
    out.extend_from_slice(&link[..LINK_TAG_LEN]);
    let crc = crc32fast::hash(&out[trailer..]);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&CHAIN_MARKER);
    debug_assert_eq!(out.len() - start, batch_len);
    link
}

/// The header and frames of a batch of `batch_len` bytes; the trailer is
/// the caller's.
fn encode_body(out: &mut Vec<u8>, first_offset: u64, records: &[Record], batch_len: usize) {
    debug_assert!(!records.is_empty(), "a batch holds at least one record");
    let batch_len_u32 = u32::try_from(batch_len).expect("batch length checked before encoding");
    let record_count =
        u32::try_from(records.len()).expect("record count bounded by the batch length");
    let min_ts = records.iter().map(|r| r.timestamp_us).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp_us).max().unwrap_or(0);

    let start = out.len();
    out.reserve(batch_len);
    out.extend_from_slice(&[0u8; 4]); // header crc, filled in below
    out.extend_from_slice(&batch_len_u32.to_le_bytes());
    out.extend_from_slice(&record_count.to_le_bytes());
    out.extend_from_slice(&first_offset.to_le_bytes());
    out.extend_from_slice(&min_ts.to_le_bytes());
    out.extend_from_slice(&max_ts.to_le_bytes());
    out.extend_from_slice(&HEADER_MARKER);
    let header_crc = crc32fast::hash(&out[start + 4..start + BATCH_HEADER_LEN]);
    out[start..start + 4].copy_from_slice(&header_crc.to_le_bytes());

    for (i, record) in records.iter().enumerate() {
        let frame_start = out.len();
        let payload_len =
            u32::try_from(record.payload.len()).expect("payload length bounded by the batch");
        out.extend_from_slice(&[0u8; 4]); // frame crc, filled in below
        out.extend_from_slice(&payload_len.to_le_bytes());
        out.extend_from_slice(&(first_offset + i as u64).to_le_bytes());
        out.extend_from_slice(&record.timestamp_us.to_le_bytes());
        out.extend_from_slice(&record.payload);
        let frame_crc = crc32fast::hash(&out[frame_start + 4..]);
        out[frame_start..frame_start + 4].copy_from_slice(&frame_crc.to_le_bytes());
    }
}

/// Decodes and verifies the header at the start of `buf`.
pub fn decode_header(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    if buf.len() < BATCH_HEADER_LEN {
        return Err(BatchError::Incomplete);
    }
    let invalid = |reason| BatchError::Invalid {
        at: 0,
        reason,
        header: None,
    };
    if buf[H_MARKER..H_MARKER + 4] != HEADER_MARKER {
        return Err(invalid("batch header marker mismatch"));
    }
    if crc32fast::hash(&buf[4..BATCH_HEADER_LEN]) != u32_at(buf, H_CRC) {
        return Err(invalid("batch header checksum mismatch"));
    }
    let header = BatchHeader {
        batch_len: u32_at(buf, H_LEN),
        record_count: u32_at(buf, H_COUNT),
        first_offset: u64_at(buf, H_FIRST_OFFSET),
        min_timestamp_us: i64_at(buf, H_MIN_TS),
        max_timestamp_us: i64_at(buf, H_MAX_TS),
    };
    let len = header.batch_len as usize;
    let count = header.record_count as usize;
    let frames_fit = count
        .checked_mul(FRAME_HEADER_LEN)
        .is_some_and(|frames| frames + BATCH_HEADER_LEN + BATCH_TRAILER_LEN <= len);
    if count == 0 || len < MIN_BATCH_LEN || !frames_fit {
        return Err(invalid("batch header describes an impossible batch"));
    }
    if header.min_timestamp_us > header.max_timestamp_us {
        return Err(invalid("batch header timestamp bounds are reversed"));
    }
    if header.first_offset.checked_add(count as u64).is_none() {
        return Err(invalid("batch header offsets overflow"));
    }
    Ok(header)
}

/// Whether `buf` starts with bytes where a batch header's marker is: the
/// cheap test a scan for the next header makes before decoding one.
pub fn has_header_marker(buf: &[u8]) -> bool {
    buf.get(H_MARKER..H_MARKER + 4) == Some(&HEADER_MARKER[..])
}

/// Decodes and fully verifies the batch at the start of `buf`.
///
/// `expected_first_offset`, when given, must equal the batch's first offset:
/// that is how a batch read at the wrong position, or a stale batch from an
/// older file, is caught.
pub fn decode_batch(
    buf: &[u8],
    expected_first_offset: Option<u64>,
) -> Result<BatchView<'_>, BatchError> {
    verify_batch::<true>(buf, expected_first_offset, |_| {})
}

/// [`decode_batch`] without the frame checksums, for bytes that verified
/// whole a moment before (a second pass over a segment `verify` scanned,
/// which needs the frames and the link again): every bound and marker is
/// still checked, so bytes that changed since give an error, never a panic
/// nor a frame outside the batch; only a changed payload byte goes unseen.
pub(crate) fn decode_verified_batch(
    buf: &[u8],
    expected_first_offset: Option<u64>,
) -> Result<BatchView<'_>, BatchError> {
    verify_batch::<false>(buf, expected_first_offset, |_| {})
}

/// The `prev` and link tag a chained batch stores, read from its trailer
/// alone: the trailer's checksum and marker are checked, the frames are
/// not. `trailer` is the batch's last [`CHAINED_TRAILER_LEN`] bytes;
/// `None` when they are not a chained trailer.
pub(crate) fn decode_chain_trailer(trailer: &[u8]) -> Option<(Hash, [u8; LINK_TAG_LEN])> {
    if trailer.len() != CHAINED_TRAILER_LEN || trailer[CHAINED_TRAILER_LEN - 4..] != CHAIN_MARKER {
        return None;
    }
    let linked = &trailer[..LINK_LEN + LINK_TAG_LEN];
    if crc32fast::hash(linked) != u32_at(trailer, LINK_LEN + LINK_TAG_LEN) {
        return None;
    }
    let mut prev = [0u8; LINK_LEN];
    prev.copy_from_slice(&trailer[..LINK_LEN]);
    let mut tag = [0u8; LINK_TAG_LEN];
    tag.copy_from_slice(&trailer[LINK_LEN..LINK_LEN + LINK_TAG_LEN]);
    Some((prev, tag))
}

/// Where one frame of a verified batch lies, relative to the batch start:
/// what [`verify_frames`] records in the one pass that checks the frames,
/// so a reader hands them out without walking the bytes again. Holds no
/// borrow, so one buffer of them is reused for every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameAt {
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp, microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// Position of the frame (its checksum field) from the batch start.
    pub position: u32,
    /// Length of the payload in bytes.
    pub payload_len: u32,
}

impl FrameAt {
    /// The frame within `batch`, the bytes it was verified in.
    pub fn view<'a>(&self, batch: &BatchView<'a>) -> FrameView<'a> {
        let start = self.position as usize + FRAME_HEADER_LEN;
        FrameView {
            offset: self.offset,
            timestamp_us: self.timestamp_us,
            payload: &batch.bytes[start..start + self.payload_len as usize],
        }
    }
}

/// Like [`decode_batch`], and records in `frames` (cleared first) where each
/// frame lies, in the same pass that checks it: one walk over the bytes
/// instead of a verify and then a second walk to find the frames. On an
/// error `frames` holds only frames that verified, and the caller must hand
/// out none of them: a batch is valid whole or not at all.
pub fn verify_frames<'a>(
    buf: &'a [u8],
    expected_first_offset: Option<u64>,
    frames: &mut Vec<FrameAt>,
) -> Result<BatchView<'a>, BatchError> {
    frames.clear();
    verify_batch::<true>(buf, expected_first_offset, |frame| frames.push(frame))
}

/// The one verification of a batch both [`decode_batch`] and
/// [`verify_frames`] run; `on_frame` sees each frame once it verified.
#[inline]
fn verify_batch<const FRAME_CRCS: bool>(
    buf: &[u8],
    expected_first_offset: Option<u64>,
    mut on_frame: impl FnMut(FrameAt),
) -> Result<BatchView<'_>, BatchError> {
    let header = decode_header(buf)?;
    let len = header.batch_len as usize;
    if let Some(expected) = expected_first_offset {
        if header.first_offset != expected {
            return Err(BatchError::Invalid {
                at: 0,
                reason: "batch first offset is not the expected offset",
                header: Some(header),
            });
        }
    }
    if buf.len() < len {
        return Err(BatchError::Incomplete);
    }
    let bytes = &buf[..len];
    let frames_end = len - BATCH_TRAILER_LEN;
    let invalid = |at, reason| BatchError::Invalid {
        at,
        reason,
        header: Some(header),
    };

    let mut pos = BATCH_HEADER_LEN;
    for i in 0..u64::from(header.record_count) {
        if pos + FRAME_HEADER_LEN > frames_end {
            return Err(invalid(pos, "frame header runs past the batch"));
        }
        let payload_len = u32_at(bytes, pos + F_LEN) as usize;
        let frame_end = pos + FRAME_HEADER_LEN + payload_len;
        if payload_len > frames_end || frame_end > frames_end {
            return Err(invalid(pos, "frame payload runs past the batch"));
        }
        if FRAME_CRCS && crc32fast::hash(&bytes[pos + 4..frame_end]) != u32_at(bytes, pos + F_CRC) {
            return Err(invalid(pos, "frame checksum mismatch"));
        }
        let offset = u64_at(bytes, pos + F_OFFSET);
        if offset != header.first_offset + i {
            return Err(invalid(pos, "frame offset out of sequence"));
        }
        let ts = i64_at(bytes, pos + F_TS);
        if ts < header.min_timestamp_us || ts > header.max_timestamp_us {
            return Err(invalid(pos, "frame timestamp outside the batch bounds"));
        }
        // Both fit in a u32: the frame lies inside the batch, whose length
        // is a u32 header field.
        on_frame(FrameAt {
            offset,
            timestamp_us: ts,
            position: pos as u32,
            payload_len: payload_len as u32,
        });
        pos = frame_end;
    }
    // Where the frames end says which trailer follows (see the module docs).
    if pos == frames_end {
        if bytes[frames_end..] != BATCH_MARKER {
            return Err(invalid(frames_end, "batch trailer marker mismatch"));
        }
    } else if pos + CHAINED_TRAILER_LEN == len {
        let linked = &bytes[pos..pos + LINK_LEN + LINK_TAG_LEN];
        if crc32fast::hash(linked) != u32_at(bytes, pos + LINK_LEN + LINK_TAG_LEN) {
            return Err(invalid(pos, "chain trailer checksum mismatch"));
        }
        if bytes[frames_end..] != CHAIN_MARKER {
            return Err(invalid(frames_end, "batch trailer marker mismatch"));
        }
    } else {
        return Err(invalid(pos, "frames do not end where the trailer begins"));
    }
    Ok(BatchView { header, bytes })
}

/// True when the batch at the start of `buf` was written to its end: its
/// header marker, and (when the header is valid) its trailer marker, have no
/// zero byte. Space that was never written reads as zero; a single flipped
/// bit never zeroes a marker byte, but two can, so recovery does not decide
/// on this alone.
pub fn written_to_the_end(buf: &[u8]) -> bool {
    if buf.len() < BATCH_HEADER_LEN || !marker_fully_written(&buf[H_MARKER..H_MARKER + 4]) {
        return false;
    }
    match decode_header(buf) {
        Ok(header) => {
            let len = header.batch_len as usize;
            buf.len() >= len && marker_fully_written(&buf[len - BATCH_TRAILER_LEN..len])
        }
        // An unverifiable header whose marker is fully written: the bytes were
        // written; what they say cannot be trusted.
        Err(_) => true,
    }
}

/// Finds the first position at or after `from` where a verifiable batch header
/// or frame with an offset of at least `min_offset` begins.
///
/// Used to tell a torn tail from corruption in the middle of the log: valid
/// data after a failure proves the failure's bytes were written before it,
/// unless both lie in the one write a crash tore (see `log::recovery`). A
/// position only counts when its checksum matches and its offset can follow
/// `min_offset` in the bytes left, so random or stale bytes (what a crash
/// may expose) and zeros pass for data only by a 32-bit checksum accident.
pub fn find_valid_after(buf: &[u8], from: usize, min_offset: u64) -> Option<usize> {
    let last = buf.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=last).find(|&pos| {
        let rest = &buf[pos..];
        let header_ok = rest.len() >= BATCH_HEADER_LEN
            && rest[H_MARKER..H_MARKER + 4] == HEADER_MARKER
            && decode_header(rest).is_ok_and(|h| h.first_offset >= min_offset);
        header_ok || frame_at_is_valid(rest, min_offset)
    })
}

fn frame_at_is_valid(rest: &[u8], min_offset: u64) -> bool {
    let offset = u64_at(rest, F_OFFSET);
    // An offset can exceed `min_offset` by at most one per frame header that fits.
    let plausible_span = (rest.len() / FRAME_HEADER_LEN) as u64;
    if offset < min_offset || offset - min_offset > plausible_span {
        return false;
    }
    let payload_len = u32_at(rest, F_LEN) as usize;
    let Some(end) = FRAME_HEADER_LEN.checked_add(payload_len) else {
        return false;
    };
    end <= rest.len() && crc32fast::hash(&rest[4..end]) == u32_at(rest, F_CRC)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record::new(1_000 + i as i64, vec![i as u8; i * 3]))
            .collect()
    }

    fn encoded(first: u64, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        encode_batch(&mut out, first, &records(n));
        out
    }

    #[test]
    fn roundtrip() {
        let bytes = encoded(10, 4);
        let view = decode_batch(&bytes, Some(10)).unwrap();
        assert_eq!(view.len(), bytes.len());
        let frames: Vec<_> = view.frames().collect();
        assert_eq!(frames.len(), 4);
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(f.offset, 10 + i as u64);
            assert_eq!(f.timestamp_us, 1_000 + i as i64);
            assert_eq!(f.payload, vec![i as u8; i * 3].as_slice());
        }
    }

    #[test]
    fn every_truncation_is_incomplete_or_invalid_never_valid() {
        let bytes = encoded(0, 3);
        for cut in 0..bytes.len() {
            let result = decode_batch(&bytes[..cut], Some(0));
            assert!(result.is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn every_bit_flip_is_caught_and_leaves_markers_nonzero() {
        let bytes = encoded(5, 3);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_batch(&flipped, Some(5)).is_err(),
                "bit {bit} accepted"
            );
            assert!(written_to_the_end(&flipped), "bit {bit} zeroed a marker");
        }
    }

    #[test]
    fn verify_frames_finds_the_frames_decode_batch_walks() {
        let mut frames = Vec::new();
        for n in 1..6 {
            let bytes = encoded(7, n);
            let view = verify_frames(&bytes, Some(7), &mut frames).unwrap();
            let walked: Vec<_> = decode_batch(&bytes, Some(7)).unwrap().frames().collect();
            let found: Vec<_> = frames.iter().map(|f| f.view(&view)).collect();
            assert_eq!(found, walked);
        }
        // Every bit flip fails the one-pass check too.
        let bytes = encoded(5, 3);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_frames(&flipped, Some(5), &mut frames).is_err());
        }
    }

    #[test]
    fn wrong_position_is_caught() {
        let bytes = encoded(5, 1);
        assert!(matches!(
            decode_batch(&bytes, Some(6)),
            Err(BatchError::Invalid { .. })
        ));
    }

    #[test]
    fn zeros_are_not_written() {
        assert!(!written_to_the_end(&[0u8; 100]));
        let mut bytes = encoded(0, 2);
        let n = bytes.len();
        bytes[n - 2] = 0;
        assert!(!written_to_the_end(&bytes));
    }

    #[test]
    fn find_valid_after_skips_garbage() {
        let mut buf = vec![0xAB; 37];
        let batch_at = buf.len();
        buf.extend(encoded(3, 2));
        assert_eq!(find_valid_after(&buf, 0, 3), Some(batch_at));
        assert_eq!(find_valid_after(&buf, 0, 100), None);
    }
}
