//! Whether a flipped bit explains why a batch fails to verify.
//!
//! Recovery must tell a torn write (sectors that never reached the disk read
//! as zeros) from damage to bytes that were written in full. Zeros alone
//! cannot tell them apart: payloads are opaque and often zero-heavy. What a
//! tear cannot do is leave a batch that one flipped bit would make whole
//! again: the lost sector's old content is unknown to the tear, so the
//! checksum of a torn frame is off by a value that looks random, while a
//! flipped bit leaves a checksum off by that one bit's syndrome.
//!
//! [`flipped_bit`] finds such a bit: one bit anywhere in the batch, or up to
//! two bits of one marker byte (two bits are enough to zero the marker bytes
//! that have two bits set). It reports the byte to change and the bytes the
//! changed batch vouches for; callers decide what that means.
//!
//! A CRC-32 is linear: `crc(a ^ e) == crc(a) ^ crc0(e)` for messages of one
//! length, where `crc0` is the register pass with neither initial value nor
//! final xor. So a frame whose stored checksum is right but one of its bytes
//! is off by `p` fails by exactly `crc0` of a message that is zero but for
//! `p` at that byte; the search walks every byte once from the end, keeping
//! those eight single-bit values up to date. No candidate is believed until
//! the whole batch, patched, verifies.

use super::batch::LINK_TAG_LEN;
use super::batch::{
    decode_batch, decode_header, BatchError, BATCH_HEADER_LEN, BATCH_MARKER, BATCH_TRAILER_LEN,
    CHAINED_TRAILER_LEN, CHAIN_MARKER, FRAME_HEADER_LEN,
};
use super::chain::LINK_LEN;
use super::u32_at;

/// Where the header marker lies in a batch header.
const HEADER_MARKER_AT: usize = super::batch::H_MARKER;
/// Where a frame's `payload_len` lies in its header.
const FRAME_LEN_AT: usize = 4;

/// A change of one bit (or two bits of one marker byte) that makes a batch
/// verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlippedBit {
    /// The byte to change, relative to the start of the batch.
    pub at: usize,
    /// The length of the batch once changed: the bytes it vouches for.
    pub batch_len: usize,
}

/// The change of one bit (or two bits of one marker byte) that makes the
/// batch at the start of `buf` verify with first offset `expected`; `None`
/// when there is none, or the batch verifies or runs past the end of `buf`
/// as it is.
pub fn flipped_bit(buf: &[u8], expected: u64) -> Option<FlippedBit> {
    let (at, header) = match decode_batch(buf, Some(expected)) {
        Ok(_) | Err(BatchError::Incomplete) => return None,
        Err(BatchError::Invalid { at, header, .. }) => (at, header),
    };
    let Some(header) = header else {
        return in_header(buf, expected);
    };
    if header.first_offset != expected {
        // The header verifies: its first offset is what was written.
        return None;
    }
    let len = header.batch_len as usize;
    let batch = &buf[..len];
    let found = |at| FlippedBit { at, batch_len: len };
    if at == len - BATCH_TRAILER_LEN {
        // Either marker may be the one written: the patch must verify.
        for want in [&BATCH_MARKER, &CHAIN_MARKER] {
            if let Some(i) = in_marker(&batch[at..], want) {
                let mut patched = batch.to_vec();
                patched[at + i] = want[i];
                if verifies(&patched, expected) {
                    return Some(found(at + i));
                }
            }
        }
    }
    if at + CHAINED_TRAILER_LEN == len {
        if let Some(i) = in_link(batch, at, expected) {
            return Some(found(i));
        }
    }
    in_frame(batch, at, expected).map(found)
}

/// The bit patterns tried at byte `i` of a batch: each single bit, and for a
/// marker byte also each pair of bits.
fn patterns(marker: bool) -> impl Iterator<Item = u8> {
    let singles = (0..8).map(|b| 1u8 << b);
    let pairs = (0..8)
        .flat_map(|a| (a + 1..8).map(move |b| (1u8 << a) | (1u8 << b)))
        .filter(move |_| marker);
    singles.chain(pairs)
}

/// True when `patched` verifies as a batch with first offset `expected`.
fn verifies(patched: &[u8], expected: u64) -> bool {
    decode_batch(patched, Some(expected)).is_ok_and(|v| v.len() == patched.len())
}

/// Tries every one- and marker-two-bit change of the header.
fn in_header(buf: &[u8], expected: u64) -> Option<FlippedBit> {
    if buf.len() < BATCH_HEADER_LEN {
        return None;
    }
    let mut header = [0u8; BATCH_HEADER_LEN];
    header.copy_from_slice(&buf[..BATCH_HEADER_LEN]);
    for i in 0..BATCH_HEADER_LEN {
        let marker = i >= HEADER_MARKER_AT;
        for p in patterns(marker) {
            header[i] ^= p;
            let fixed = decode_header(&header);
            header[i] ^= p;
            let Ok(h) = fixed else { continue };
            let len = h.batch_len as usize;
            if h.first_offset != expected || buf.len() < len {
                continue;
            }
            let mut patched = buf[..len].to_vec();
            patched[i] ^= p;
            if verifies(&patched, expected) {
                return Some(FlippedBit {
                    at: i,
                    batch_len: len,
                });
            }
        }
    }
    None
}

/// The byte of a chained batch's trailer before its marker (from `at`:
/// the link before, the link tag, their checksum) whose one flipped bit
/// makes the batch verify.
fn in_link(batch: &[u8], at: usize, expected: u64) -> Option<usize> {
    const CHECKED: usize = LINK_LEN + LINK_TAG_LEN;
    let mut trailer = [0u8; CHECKED + 4];
    trailer.copy_from_slice(&batch[at..at + CHECKED + 4]);
    for i in 0..trailer.len() {
        for p in patterns(false) {
            trailer[i] ^= p;
            let sound = crc32fast::hash(&trailer[..CHECKED]) == u32_at(&trailer, CHECKED);
            trailer[i] ^= p;
            if sound {
                let mut patched = batch.to_vec();
                patched[at + i] ^= p;
                return verifies(&patched, expected).then_some(at + i);
            }
        }
    }
    None
}

/// The byte of `marker` that one or two flipped bits turn into `want`.
fn in_marker(marker: &[u8], want: &[u8]) -> Option<usize> {
    let differing: Vec<usize> = (0..want.len()).filter(|&i| marker[i] != want[i]).collect();
    match differing.as_slice() {
        [i] if (marker[*i] ^ want[*i]).count_ones() <= 2 => Some(*i),
        _ => None,
    }
}

/// Looks for the flipped bit in the frame at `at` of the verified-header
/// batch `batch`: in its checksummed bytes, its checksum, or its length.
fn in_frame(batch: &[u8], at: usize, expected: u64) -> Option<usize> {
    let frames_end = batch.len() - BATCH_TRAILER_LEN;
    if at < BATCH_HEADER_LEN || at + FRAME_HEADER_LEN > frames_end {
        return None;
    }
    let stored_crc = u32_at(batch, at);
    let check = |i: usize, p: u8| {
        let mut patched = batch.to_vec();
        patched[i] ^= p;
        verifies(&patched, expected)
    };
    let payload_len = u32_at(batch, at + FRAME_LEN_AT) as usize;
    if let Some(end) = (at + FRAME_HEADER_LEN)
        .checked_add(payload_len)
        .filter(|&end| end <= frames_end)
    {
        let syndrome = crc32fast::hash(&batch[at + 4..end]) ^ stored_crc;
        if syndrome.count_ones() == 1 {
            // The stored checksum itself took the flip.
            let i = at + syndrome.trailing_zeros() as usize / 8;
            let p = (syndrome >> (8 * (i - at))) as u8;
            if check(i, p) {
                return Some(i);
            }
        }
        if let Some((k, p)) = single_bit_error(syndrome, end - (at + 4)) {
            let i = at + 4 + k;
            if check(i, p) {
                return Some(i);
            }
        }
    }
    // A flipped length bit moves the end the checksum covers.
    for i in at + FRAME_LEN_AT..at + FRAME_LEN_AT + 4 {
        for p in patterns(false) {
            let mut len_bytes = [0u8; 4];
            len_bytes.copy_from_slice(&batch[at + FRAME_LEN_AT..at + FRAME_LEN_AT + 4]);
            len_bytes[i - at - FRAME_LEN_AT] ^= p;
            let fixed_len = u32::from_le_bytes(len_bytes) as usize;
            let Some(end) = (at + FRAME_HEADER_LEN)
                .checked_add(fixed_len)
                .filter(|&end| end <= frames_end)
            else {
                continue;
            };
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&len_bytes);
            hasher.update(&batch[at + 8..end]);
            if hasher.finalize() == stored_crc && check(i, p) {
                return Some(i);
            }
        }
    }
    None
}

/// The reflected CRC-32 polynomial `crc32fast` uses (IEEE 802.3).
const POLY: u32 = 0xEDB8_8320;

/// The register after one byte `b` from a zero register.
fn crc0_byte(b: u8) -> u32 {
    (0..8).fold(u32::from(b), |c, _| {
        if c & 1 == 1 {
            POLY ^ (c >> 1)
        } else {
            c >> 1
        }
    })
}

/// The register after one more zero byte.
fn zero_step(c: u32) -> u32 {
    crc0_byte((c & 0xFF) as u8) ^ (c >> 8)
}

/// The byte `k < len` and single-bit pattern whose error in a `len`-byte
/// message changes its CRC-32 by `syndrome`, if any.
fn single_bit_error(syndrome: u32, len: usize) -> Option<(usize, u8)> {
    if syndrome == 0 {
        return None;
    }
    // `effect[b]`: what bit `b` of byte `k` does to the checksum, for the
    // current `k`, walking from the last byte to the first.
    let mut effect: [u32; 8] = std::array::from_fn(|b| crc0_byte(1 << b));
    for k in (0..len).rev() {
        if let Some(b) = effect.iter().position(|&e| e == syndrome) {
            return Some((k, 1 << b));
        }
        for e in &mut effect {
            *e = zero_step(*e);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::batch::{encode_batch, BATCH_TRAILER_LEN};
    use crate::record::Record;

    fn zero_heavy_batch(first: u64) -> Vec<u8> {
        let records: Vec<Record> = (0..3)
            .map(|i| {
                let mut payload = vec![0u8; 700 + i * 40];
                payload[3] = 0x81;
                payload[600] = 0x5A;
                Record::new(1_000 + i as i64, payload)
            })
            .collect();
        let mut out = Vec::new();
        encode_batch(&mut out, first, &records);
        out
    }

    #[test]
    fn crc_is_linear_as_the_search_assumes() {
        let a: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for (k, bit) in [(0usize, 0u8), (17, 5), (299, 7), (150, 2)] {
            let mut b = a.clone();
            b[k] ^= 1 << bit;
            let syndrome = crc32fast::hash(&a) ^ crc32fast::hash(&b);
            assert_eq!(single_bit_error(syndrome, a.len()), Some((k, 1 << bit)));
        }
    }

    #[test]
    fn every_single_bit_flip_is_found_where_it_is() {
        let bytes = zero_heavy_batch(9);
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                flipped_bit(&flipped, 9).map(|f| f.at),
                Some(bit / 8),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn two_bits_of_a_marker_byte_are_found() {
        let bytes = zero_heavy_batch(2);
        let n = bytes.len();
        for i in (36..40).chain(n - BATCH_TRAILER_LEN..n) {
            let mut damaged = bytes.clone();
            let low = damaged[i] & damaged[i].wrapping_neg();
            let rest = damaged[i] ^ low;
            let high = rest & rest.wrapping_neg();
            damaged[i] ^= low | high;
            assert_eq!(flipped_bit(&damaged, 2).map(|f| f.at), Some(i), "byte {i}");
        }
    }

    #[test]
    fn any_bytes_are_answered_without_panic() {
        let bytes = zero_heavy_batch(4);
        let mut state = 0x1234_5678_9abc_def0u64;
        for cut in (0..bytes.len()).step_by(13) {
            let _ = flipped_bit(&bytes[..cut], 4);
            let mut garbled = bytes.clone();
            for _ in 0..3 {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                let i = (state >> 33) as usize % garbled.len();
                garbled[i] = (state >> 17) as u8;
            }
            let _ = flipped_bit(&garbled, 4);
            let _ = flipped_bit(&garbled[cut..], 4);
        }
    }

    #[test]
    fn a_lost_sector_is_not_a_flipped_bit() {
        let bytes = zero_heavy_batch(0);
        for start in (0..bytes.len()).step_by(97) {
            let mut torn = bytes.clone();
            let end = (start + 512).min(torn.len());
            torn[start..end].fill(0);
            if torn != bytes {
                assert_eq!(flipped_bit(&torn, 0), None, "zeros from {start}");
            }
        }
    }
}
