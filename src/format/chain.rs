//! The chain link of a batch of a chained log (log format 2).
//!
//! Every batch of a chained log (but the holes `repair` writes) has a link
//! in the log's hash chain:
//!
//! ```text
//! link(batch) = SHA-256(0x02 || link(previous batch) || first_offset (u64 LE)
//!                       || record_count (u32 LE) || leaf_0 || ... || leaf_n-1)
//! leaf_i      = SHA-256(0x00 || offset (u64 LE) || timestamp_us (i64 LE) || payload)
//! ```
//!
//! and stores, in its trailer, the link of the previous batch (`prev`) and
//! the first 8 bytes of its own (`link_tag`): so each batch can be checked
//! by itself (its records after its `prev` make its tag) and against the
//! batch before (its `prev` is that batch's link). `leaf_i` is the leaf
//! hash of the record in the log's Merkle tree
//! (`audit::merkle::record_leaf_hash`), so a pass that checks the chain
//! hashes each record once for both. The first batch of the log follows
//! [`GENESIS`] (32 zero bytes). The domain byte `0x02` keeps a link from
//! ever equalling a leaf (`0x00`) or an inner node (`0x01`) of the tree.
//!
//! A link is not a secret and proves nothing to someone who trusts no one:
//! whoever can rewrite a record can rewrite every later link. What it gives
//! is a linear pass (`verify`) that finds a record changed with its
//! checksum recomputed, a batch removed and the later offsets renumbered, or
//! a segment swapped for one with another history, unless every later link
//! was rewritten too. Heads an auditor keeps prove the rest (docs/AUDIT.md).

use sha2::{Digest, Sha256};

use crate::audit::merkle::{record_leaf_hash, Hash};

/// Length of a chain link in bytes.
pub const LINK_LEN: usize = 32;

/// The link the log's first batch chains to.
pub const GENESIS: Hash = [0u8; LINK_LEN];

/// Domain byte of a chain link (leaves use `0x00`, inner nodes `0x01`).
const LINK_DOMAIN: u8 = 0x02;

/// Computes a batch's link from the link before it and the batch's records
/// `(timestamp_us, payload)` in offset order from `first_offset`.
pub fn link<'a>(
    previous: &Hash,
    first_offset: u64,
    record_count: u32,
    records: impl IntoIterator<Item = (i64, &'a [u8])>,
) -> Hash {
    let mut h = start(previous, first_offset, record_count);
    let mut n = 0u32;
    for (i, (timestamp_us, payload)) in records.into_iter().enumerate() {
        h.update(record_leaf_hash(
            first_offset + i as u64,
            timestamp_us,
            payload,
        ));
        n += 1;
    }
    debug_assert_eq!(n, record_count, "a link covers every record of its batch");
    h.finalize().into()
}

/// The same link from the leaf hashes of the batch's records, in offset
/// order: for a pass that needs the leaves anyway (a tree head's).
pub fn link_of_leaves(previous: &Hash, first_offset: u64, leaves: &[Hash]) -> Hash {
    let count = u32::try_from(leaves.len()).unwrap_or(u32::MAX);
    let mut h = start(previous, first_offset, count);
    for leaf in leaves {
        h.update(leaf);
    }
    h.finalize().into()
}

fn start(previous: &Hash, first_offset: u64, record_count: u32) -> Sha256 {
    let mut h = Sha256::new();
    h.update([LINK_DOMAIN]);
    h.update(previous);
    h.update(first_offset.to_le_bytes());
    h.update(record_count.to_le_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_binds_its_predecessor_offsets_times_and_payloads() {
        let records = [(5i64, &b"a"[..]), (6, &b"bc"[..])];
        let base = link(&GENESIS, 10, 2, records);
        let mut other_prev = GENESIS;
        other_prev[31] = 1;
        assert_ne!(base, link(&other_prev, 10, 2, records));
        assert_ne!(base, link(&GENESIS, 11, 2, records));
        assert_ne!(
            base,
            link(&GENESIS, 10, 2, [(5, &b"a"[..]), (7, &b"bc"[..])])
        );
        assert_ne!(
            base,
            link(&GENESIS, 10, 2, [(5, &b"a"[..]), (6, &b"bd"[..])])
        );
        // Moving a byte from one record to the next is another history.
        assert_ne!(
            base,
            link(&GENESIS, 10, 2, [(5, &b"ab"[..]), (6, &b"c"[..])])
        );
        assert_eq!(base, link(&GENESIS, 10, 2, records));
        let leaves = [
            record_leaf_hash(10, 5, b"a"),
            record_leaf_hash(11, 6, b"bc"),
        ];
        assert_eq!(base, link_of_leaves(&GENESIS, 10, &leaves));
        assert_ne!(base, link_of_leaves(&GENESIS, 10, &leaves[..1]));
    }
}
