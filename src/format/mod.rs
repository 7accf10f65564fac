//! The on-disk format, as bytes only: no I/O happens here.
//!
//! Everything in this module is specified byte by byte in `docs/FORMAT.md`; the
//! constants below are the offsets and sizes drawn there. All integers are
//! little-endian and fixed-width.
//!
//! Decoders never panic and never trust a length read from the bytes: they
//! return what the bytes are (a valid item, the end, an incomplete tail, or
//! bytes that cannot be right) and leave the decision of what that *means* to
//! the caller (`log::recovery`, `log::reader`, `log::verify`).

pub mod batch;
pub mod chain;
pub mod flips;
pub mod index_file;
pub mod keys_file;
pub mod segment_header;

pub use batch::{
    decode_batch, encode_batch, encode_chained_batch, encoded_batch_len, encoded_chained_batch_len,
    BatchError, BatchHeader, BatchView, FrameView, BATCH_HEADER_LEN, BATCH_TRAILER_LEN,
    CHAINED_TRAILER_LEN, FRAME_HEADER_LEN, LINK_TAG_LEN,
};
pub use segment_header::{SegmentHeader, SegmentHeaderError, SEGMENT_HEADER_LEN};

/// The version of the segment header and index file layouts, written in
/// both. Unchanged by the chain: a batch says itself which trailer it has.
pub const FORMAT_VERSION: u16 = 1;

/// The log format version new logs get, in their `VERSION` file: 2, whose
/// batches carry chain links ([`chain`]). Logs of version 1 (no links) are
/// still opened, read and written, as version 1.
pub const LOG_FORMAT_VERSION: u16 = 2;

/// The oldest log format version this build opens.
pub const OLDEST_LOG_FORMAT_VERSION: u16 = 1;

/// Reads a little-endian `u32` at `pos`. The caller has checked the bounds.
#[inline]
pub(crate) fn u32_at(buf: &[u8], pos: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[pos..pos + 4]);
    u32::from_le_bytes(bytes)
}

/// Reads a little-endian `u64` at `pos`. The caller has checked the bounds.
#[inline]
pub(crate) fn u64_at(buf: &[u8], pos: usize) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[pos..pos + 8]);
    u64::from_le_bytes(bytes)
}

/// Reads a little-endian `i64` at `pos`. The caller has checked the bounds.
#[inline]
pub(crate) fn i64_at(buf: &[u8], pos: usize) -> i64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&buf[pos..pos + 8]);
    i64::from_le_bytes(bytes)
}

/// True when every byte of `marker` is non-zero.
///
/// The format ends its batch header and its batch with marker bytes that each
/// have at least two bits set, so a single flipped bit never turns a marker
/// byte into zero, while space that was never written reads as zero. Recovery
/// uses this to tell a write that never finished from a record that rotted.
#[inline]
pub(crate) fn marker_fully_written(marker: &[u8]) -> bool {
    marker.iter().all(|&b| b != 0)
}
