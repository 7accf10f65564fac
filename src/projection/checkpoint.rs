//! Checkpoint files: a projection's snapshot and the log offset it covers.
//!
//! ```text
//! offset size field
//!      0    8 magic             b"ENFLOGCP"
//!      8    2 format_version    u16, CHECKPOINT_VERSION
//!     10    2 reserved          zero
//!     12    4 snapshot_version  u32, the projection's own version
//!     16    8 offset            u64, entries below it are folded in
//!     24    4 anchor_crc        u32, crc32 of the payload of the record at offset - 1 (0 at offset 0)
//!     28    8 anchor_ts         i64, timestamp of that record (0 at offset 0)
//!     36   16 store_id          u128, the store's id (0: none known)
//!     52    8 snapshot_len      u64
//!     60    n snapshot
//!   60+n    4 crc32             of every byte before it
//! ```
//!
//! The store id and the anchor tie a checkpoint to the log it was taken
//! from: a checkpoint is used only if it names this store and the record
//! before its offset is still the one it saw.

use crate::format::{i64_at, u32_at, u64_at};

/// The checkpoint file format version.
pub const CHECKPOINT_VERSION: u16 = 2;
const MAGIC: [u8; 8] = *b"ENFLOGCP";
const HEADER_LEN: usize = 60;

/// A decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The projection's snapshot version.
    pub snapshot_version: u32,
    /// Entries below this offset are folded into the snapshot.
    pub offset: u64,
    /// crc32 of the payload of the record at `offset - 1`.
    pub anchor_crc: u32,
    /// Timestamp of the record at `offset - 1`.
    pub anchor_ts: i64,
    /// The id of the store it was taken from ([`crate::StoreId::as_u128`]),
    /// or 0 when the store had none.
    pub store_id: u128,
    /// The projection's snapshot bytes.
    pub snapshot: Vec<u8>,
}

impl Checkpoint {
    /// Encodes the checkpoint file.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.snapshot.len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.snapshot_version.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.anchor_crc.to_le_bytes());
        out.extend_from_slice(&self.anchor_ts.to_le_bytes());
        out.extend_from_slice(&self.store_id.to_le_bytes());
        out.extend_from_slice(&(self.snapshot.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.snapshot);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes a checkpoint file; the error says why it is unusable.
    pub fn decode(buf: &[u8]) -> Result<Self, String> {
        if buf.len() < HEADER_LEN + 4 {
            return Err("checkpoint is truncated".into());
        }
        if buf[..8] != MAGIC {
            return Err("not a checkpoint file (bad magic)".into());
        }
        let body = &buf[..buf.len() - 4];
        if crc32fast::hash(body) != u32_at(buf, buf.len() - 4) {
            return Err("checkpoint checksum mismatch".into());
        }
        let version = u16::from_le_bytes([buf[8], buf[9]]);
        if version != CHECKPOINT_VERSION {
            return Err(format!(
                "checkpoint format version {version} is not {CHECKPOINT_VERSION}"
            ));
        }
        if buf[10..12] != [0, 0] {
            return Err("checkpoint has non-zero reserved bytes (an unknown layout)".into());
        }
        let len = u64_at(buf, 52);
        if len != (body.len() - HEADER_LEN) as u64 {
            return Err("checkpoint length does not match its file".into());
        }
        Ok(Checkpoint {
            snapshot_version: u32_at(buf, 12),
            offset: u64_at(buf, 16),
            anchor_crc: u32_at(buf, 24),
            anchor_ts: i64_at(buf, 28),
            store_id: u128::from(u64_at(buf, 36)) | u128::from(u64_at(buf, 44)) << 64,
            snapshot: body[HEADER_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example in docs/PROJECTIONS.md.
    #[test]
    fn documented_example_is_what_encode_writes() {
        let c = Checkpoint {
            snapshot_version: 1,
            offset: 1,
            anchor_crc: 0xc9a7_23e8,
            anchor_ts: 1_790_812_800_000_000,
            store_id: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            snapshot: vec![0x91, 0x93, 0xcd, 0x50, 0xf7, 0x03, 0x01],
        };
        let bytes = c.encode();
        assert_eq!(bytes.len(), 71);
        assert_eq!(bytes[67..], 0x5003_2898u32.to_le_bytes());
    }

    #[test]
    fn roundtrip_and_every_bit_flip_refused() {
        let c = Checkpoint {
            snapshot_version: 3,
            offset: 99,
            anchor_crc: 7,
            anchor_ts: -5,
            store_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            snapshot: b"state".to_vec(),
        };
        let bytes = c.encode();
        assert_eq!(Checkpoint::decode(&bytes), Ok(c));
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(Checkpoint::decode(&b).is_err(), "bit {bit}");
        }
        for cut in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
    }
}
