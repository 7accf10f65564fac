//! The Merkle tree of a log (RFC 9162, section 2.1): leaf and node hashes,
//! tree roots, the running root of a growing log, inclusion and consistency
//! proofs and their verification.
//!
//! Hashes are SHA-256. A leaf's hash is `SHA-256(0x00 || data)`, an inner
//! node's `SHA-256(0x01 || left || right)`, and the root of `n` leaves is
//! defined recursively: the leaf hash for one leaf, `SHA-256("")` for none,
//! and otherwise the node hash of the roots of the first `k` leaves and of
//! the rest, where `k` is the largest power of two below `n`. The two
//! prefixes make a leaf unable to pose as a node (the second-preimage
//! attack on plain Merkle trees).
//!
//! Invariants: every function here is pure (no I/O); verification never
//! panics, whatever the proof, and checks every step: a proof is accepted
//! only when each of its hashes is used, the walk ends exactly at the root
//! of the claimed tree, and the sizes are consistent with the path's length
//! (a proof with a hash too many or too few is refused, not ignored).
//! Proofs are generated from any [`Subtrees`] source (a slice of leaf
//! hashes in tests; the log's stored subtree hashes in the store), so the
//! generation is tested once against the definition.

use std::ops::Range;

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The hash of a leaf holding `data`: `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// The hash of the leaf of a log record: `SHA-256(0x00 || offset (u64 LE)
/// || timestamp_us (i64 LE) || payload)`. The offset and the time are part
/// of the leaf, so a record renumbered or moved in time is another leaf.
pub fn record_leaf_hash(offset: u64, timestamp_us: i64, payload: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(offset.to_le_bytes());
    h.update(timestamp_us.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// The hash of an inner node: `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly below `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Where the roots of ranges of leaves come from.
pub trait Subtrees {
    /// Why a root cannot be had (an I/O error reading stored hashes).
    type Error;

    /// The number of leaves.
    fn size(&self) -> u64;

    /// The root of the leaves in `range` (non-empty, within `size`).
    fn root_of(&self, range: Range<u64>) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in order: every root computed from them, by the definition.
impl Subtrees for [Hash] {
    type Error = std::convert::Infallible;

    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn root_of(&self, range: Range<u64>) -> Result<Hash, Self::Error> {
        Ok(root(&self[range.start as usize..range.end as usize]))
    }
}

/// The root of `leaves` (leaf hashes), by the recursive definition.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The running root of a growing log: the roots of the perfect subtrees
/// its size decomposes into (one per set bit of the size, largest first),
/// so a leaf is added in `O(log n)` hashes and the root is had in as many,
/// without keeping the leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first.
    peaks: Vec<Hash>,
}

impl Frontier {
    /// The empty log's frontier.
    pub fn new() -> Self {
        Self::default()
    }

    /// A frontier from its parts; `None` unless there is one peak per set
    /// bit of `size`.
    pub fn from_parts(size: u64, peaks: Vec<Hash>) -> Option<Self> {
        (peaks.len() == size.count_ones() as usize).then_some(Self { size, peaks })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The roots of the perfect subtrees, largest first.
    pub fn peaks(&self) -> &[Hash] {
        &self.peaks
    }

    /// Adds one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = leaf;
        // Each trailing set bit of the old size is a peak of the same
        // height as `carry`: they join, and the carry moves up.
        let mut size = self.size;
        while size & 1 == 1 {
            let left = self.peaks.pop().expect("one peak per set bit of the size");
            carry = node_hash(&left, &carry);
            size >>= 1;
        }
        self.peaks.push(carry);
        self.size += 1;
        debug_assert_eq!(self.peaks.len(), self.size.count_ones() as usize);
    }

    /// The root of the leaves added so far.
    pub fn root(&self) -> Hash {
        let mut peaks = self.peaks.iter().rev();
        let Some(&last) = peaks.next() else {
            return empty_root();
        };
        peaks.fold(last, |right, left| node_hash(left, &right))
    }
}

/// The inclusion proof of leaf `index` in the first `size` leaves of
/// `tree` (the audit path, leaf side first). `index < size <= tree.size()`.
pub fn inclusion_proof<S: Subtrees + ?Sized>(
    tree: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(
        index < size && size <= tree.size(),
        "leaf {index} of {size}"
    );
    let mut path = Vec::new();
    path_into(tree, index, 0..size, &mut path)?;
    Ok(path)
}

fn path_into<S: Subtrees + ?Sized>(
    tree: &S,
    index: u64,
    range: Range<u64>,
    path: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = range.end - range.start;
    if n <= 1 {
        return Ok(());
    }
    let k = split_point(n);
    let middle = range.start + k;
    if index < k {
        path_into(tree, index, range.start..middle, path)?;
        path.push(tree.root_of(middle..range.end)?);
    } else {
        path_into(tree, index - k, middle..range.end, path)?;
        path.push(tree.root_of(range.start..middle)?);
    }
    Ok(())
}

/// The consistency proof between the first `old` and the first `new`
/// leaves of `tree`. `old <= new <= tree.size()`; empty when `old` is 0
/// or equals `new`.
pub fn consistency_proof<S: Subtrees + ?Sized>(
    tree: &S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    assert!(old <= new && new <= tree.size(), "{old} to {new}");
    let mut proof = Vec::new();
    if old > 0 && old < new {
        subproof_into(tree, old, 0..new, true, &mut proof)?;
    }
    Ok(proof)
}

fn subproof_into<S: Subtrees + ?Sized>(
    tree: &S,
    m: u64,
    range: Range<u64>,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> Result<(), S::Error> {
    let n = range.end - range.start;
    if m == n {
        if !whole {
            proof.push(tree.root_of(range)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    let middle = range.start + k;
    if m <= k {
        subproof_into(tree, m, range.start..middle, whole, proof)?;
        proof.push(tree.root_of(middle..range.end)?);
    } else {
        subproof_into(tree, m - k, middle..range.end, false, proof)?;
        proof.push(tree.root_of(range.start..middle)?);
    }
    Ok(())
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index is not inside the tree, or the sizes are out of order.
    #[error("sizes out of range: {0}")]
    Range(String),
    /// The proof has more or fewer hashes than the sizes call for.
    #[error("the proof has the wrong number of hashes")]
    Length,
    /// The hashes do not lead to the given root(s).
    #[error("the proof does not lead to the root")]
    Mismatch,
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves whose
/// root is `root`, with the audit path `proof` (RFC 9162, 2.1.3.2).
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} of a tree of {size}"
        )));
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Checks that the tree of `new` leaves with root `new_root` extends the
/// tree of `old` leaves with root `old_root` (its first `old` leaves are
/// those), with the consistency proof `proof` (RFC 9162, 2.1.4.2). Every
/// hash of the proof enters both the old and the new root, or the new one
/// alone, so none is left unchecked.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::Range(format!(
            "old size {old} above new size {new}"
        )));
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if old == 0 {
        // Every tree extends the empty one; its root is fixed.
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if *old_root == empty_root() {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    // When the old tree is a perfect subtree, the proof leaves out its
    // root: the verifier has it.
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof);
    let Some((&first, rest)) = path.split_first() else {
        return Err(ProofError::Length);
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for &c in rest {
        if s == 0 {
            return Err(ProofError::Length);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::Length);
    }
    if fr != *old_root || sr != *new_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The eight leaves of the published Certificate Transparency test
    /// data, and the roots of their first 1 to 8 (a check independent of
    /// this code).
    fn ct_leaves() -> Vec<Hash> {
        let data: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        data.iter().map(|d| leaf_hash(d)).collect()
    }

    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    #[test]
    fn roots_match_the_published_test_vectors() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves = ct_leaves();
        let mut frontier = Frontier::new();
        for (n, want) in CT_ROOTS.iter().enumerate() {
            frontier.push(leaves[n]);
            assert_eq!(hex(&root(&leaves[..=n])), *want, "root of {}", n + 1);
            assert_eq!(hex(&frontier.root()), *want, "frontier of {}", n + 1);
        }
    }

    #[test]
    fn split_point_is_the_largest_power_of_two_below() {
        for (n, k) in [
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 4),
            (8, 4),
            (9, 8),
            (1 << 40, 1 << 39),
        ] {
            assert_eq!(split_point(n), k, "{n}");
        }
        assert_eq!(split_point(u64::MAX), 1 << 63);
    }

    #[test]
    fn every_proof_of_small_trees_verifies_and_every_flipped_byte_is_refused() {
        let leaves: Vec<Hash> = (0u32..20).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for size in 1..=leaves.len() as u64 {
            let tree = &leaves[..size as usize];
            let r = root(tree);
            for index in 0..size {
                let proof = inclusion_proof(tree, index, size).unwrap();
                let leaf = leaves[index as usize];
                assert_eq!(verify_inclusion(index, size, &leaf, &proof, &r), Ok(()));
                for (i, byte) in (0..proof.len()).flat_map(|i| (0..32).map(move |b| (i, b))) {
                    let mut bad = proof.clone();
                    bad[i][byte] ^= 1;
                    assert!(verify_inclusion(index, size, &leaf, &bad, &r).is_err());
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert!(verify_inclusion(index, size, &leaf, &longer, &r).is_err());
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(index, size, &leaf, shorter, &r).is_err());
                }
                // Another leaf, or this leaf claimed at another index, is
                // refused. (The size is bound by the signed tree head, not
                // by the path: a root of 3 leaves is, to a path, also that
                // of 4 whose last subtree hashes to the third leaf.)
                let other = leaves[((index + 1) % size) as usize];
                if size > 1 {
                    // A leaf is its own root with an empty path only in a
                    // tree of one.
                    assert_eq!(
                        verify_inclusion(index, size, &leaf, &[], &leaf),
                        Err(ProofError::Length)
                    );
                    assert!(verify_inclusion(index, size, &other, &proof, &r).is_err());
                    let moved = (index + 1) % size;
                    assert!(verify_inclusion(moved, size, &leaf, &proof, &r).is_err());
                }
            }
            for old in 0..=size {
                let proof = consistency_proof(tree, old, size).unwrap();
                let old_root = root(&leaves[..old as usize]);
                assert_eq!(
                    verify_consistency(old, size, &old_root, &r, &proof),
                    Ok(()),
                    "{old} to {size}"
                );
                for (i, byte) in (0..proof.len()).flat_map(|i| (0..32).map(move |b| (i, b))) {
                    let mut bad = proof.clone();
                    bad[i][byte] ^= 0x80;
                    assert!(verify_consistency(old, size, &old_root, &r, &bad).is_err());
                }
                let mut other_old = old_root;
                other_old[0] ^= 1;
                assert!(verify_consistency(old, size, &other_old, &r, &proof).is_err());
            }
        }
    }

    #[test]
    fn a_frontier_rebuilt_from_its_parts_goes_on_the_same() {
        let mut a = Frontier::new();
        for i in 0u32..37 {
            a.push(leaf_hash(&i.to_le_bytes()));
        }
        let mut b = Frontier::from_parts(a.size(), a.peaks().to_vec()).unwrap();
        // 36 has two set bits, 37 three: the parts do not fit.
        assert!(Frontier::from_parts(a.size() - 1, a.peaks().to_vec()).is_none());
        for i in 37u32..80 {
            a.push(leaf_hash(&i.to_le_bytes()));
            b.push(leaf_hash(&i.to_le_bytes()));
            assert_eq!(a.root(), b.root());
        }
    }
}
