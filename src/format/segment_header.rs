//! The fixed 32-byte header at the start of every segment file.
//!
//! ```text
//! offset size field
//!      0    8 magic           b"ENFLOGSG"
//!      8    2 format_version  u16, FORMAT_VERSION
//!     10    2 header_len      u16, always 32
//!     12    4 store_tag       u32, low 32 bits of the store id (0: written
//!                             before store ids existed)
//!     16    8 base_offset     u64, offset of the segment's first record
//!     24    4 reserved        zero
//!     28    4 crc32           of bytes 0..28
//! ```

use super::{u32_at, u64_at, FORMAT_VERSION};

/// Size of the segment header in bytes.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"ENFLOGSG";

const VERSION_AT: usize = 8;
const HEADER_LEN_AT: usize = 10;
const STORE_TAG_AT: usize = 12;
const BASE_OFFSET_AT: usize = 16;
const CRC_AT: usize = 28;

/// The store tag field of a segment header's bytes, read whether or not the
/// header verifies (repair keeps the tag of a damaged header when it is one
/// the segment may carry); `None` when `bytes` is too short to hold it.
pub fn raw_store_tag(bytes: &[u8]) -> Option<u32> {
    (bytes.len() >= STORE_TAG_AT + 4).then(|| u32_at(bytes, STORE_TAG_AT))
}

/// The decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The store the segment belongs to: the low 32 bits of its store id,
    /// or zero for a segment written before store ids existed.
    pub store_tag: u32,
    /// Offset of the first record stored in the segment.
    pub base_offset: u64,
}

/// Why a segment header could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentHeaderError {
    /// Fewer than [`SEGMENT_HEADER_LEN`] bytes.
    Truncated,
    /// All bytes zero: the header was never written.
    Unwritten,
    /// The magic bytes are wrong: this is not a segment file.
    BadMagic,
    /// The checksum does not match.
    BadChecksum,
    /// A version this build does not read.
    UnsupportedVersion(u16),
    /// A header length this build does not know, or a non-zero reserved byte.
    BadLayout,
}

impl SegmentHeaderError {
    /// A short human-readable reason.
    pub fn reason(&self) -> String {
        match self {
            Self::Truncated => "segment header is truncated".into(),
            Self::Unwritten => "segment header was never written (zero bytes)".into(),
            Self::BadMagic => "not a segment file (bad magic)".into(),
            Self::BadChecksum => "segment header checksum mismatch".into(),
            Self::UnsupportedVersion(v) => format!("unsupported segment format version {v}"),
            Self::BadLayout => "segment header has an unknown layout".into(),
        }
    }
}

impl SegmentHeader {
    /// Encodes the header into its 32 bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut buf = [0u8; SEGMENT_HEADER_LEN];
        buf[..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[VERSION_AT..VERSION_AT + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[HEADER_LEN_AT..HEADER_LEN_AT + 2]
            .copy_from_slice(&(SEGMENT_HEADER_LEN as u16).to_le_bytes());
        buf[STORE_TAG_AT..STORE_TAG_AT + 4].copy_from_slice(&self.store_tag.to_le_bytes());
        buf[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&self.base_offset.to_le_bytes());
        let crc = crc32fast::hash(&buf[..CRC_AT]);
        buf[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes a header from the start of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, SegmentHeaderError> {
        if buf.len() < SEGMENT_HEADER_LEN {
            return Err(SegmentHeaderError::Truncated);
        }
        let buf = &buf[..SEGMENT_HEADER_LEN];
        if buf.iter().all(|&b| b == 0) {
            return Err(SegmentHeaderError::Unwritten);
        }
        if buf[..8] != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        if crc32fast::hash(&buf[..CRC_AT]) != u32_at(buf, CRC_AT) {
            return Err(SegmentHeaderError::BadChecksum);
        }
        let version = u16::from_le_bytes([buf[VERSION_AT], buf[VERSION_AT + 1]]);
        if version != FORMAT_VERSION {
            return Err(SegmentHeaderError::UnsupportedVersion(version));
        }
        let header_len = u16::from_le_bytes([buf[HEADER_LEN_AT], buf[HEADER_LEN_AT + 1]]);
        let reserved_zero = buf[24..28].iter().all(|&b| b == 0);
        if usize::from(header_len) != SEGMENT_HEADER_LEN || !reserved_zero {
            return Err(SegmentHeaderError::BadLayout);
        }
        Ok(SegmentHeader {
            store_tag: u32_at(buf, STORE_TAG_AT),
            base_offset: u64_at(buf, BASE_OFFSET_AT),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let header = SegmentHeader {
            store_tag: 0x0102_0304,
            base_offset: 42,
        };
        assert_eq!(SegmentHeader::decode(&header.encode()), Ok(header));
    }

    #[test]
    fn every_bit_flip_is_rejected() {
        let bytes = SegmentHeader {
            store_tag: 9,
            base_offset: 7,
        }
        .encode();
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut flipped = bytes;
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                SegmentHeader::decode(&flipped).is_err(),
                "bit {bit} accepted"
            );
        }
    }

    #[test]
    fn short_and_zero_headers_are_told_apart() {
        assert_eq!(
            SegmentHeader::decode(&[0u8; 10]),
            Err(SegmentHeaderError::Truncated)
        );
        assert_eq!(
            SegmentHeader::decode(&[0u8; 32]),
            Err(SegmentHeaderError::Unwritten)
        );
    }
}
