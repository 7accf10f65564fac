//! Interned ids for the projections' per-event lookups: a fast hash of
//! borrowed bytes and an index from a pair of ids to a dense `u32`.
//!
//! The hash is Fx-style (multiply and rotate, 8 bytes at a time): a few ns
//! for an id, where SipHash costs several times that. It is not keyed, so
//! ids chosen to collide make lookups of those ids slow (a longer chain),
//! never wrong: every hit is confirmed by comparing the ids' bytes.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// An Fx-style hasher for byte strings.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
        // The length tells "ab" + "" from "a" + "b".
        self.add(bytes.len() as u64);
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn finish(&self) -> u64 {
        // The multiply leaves the best-mixed bits at the top; the table
        // indexes by the low bits.
        self.hash.rotate_left(26)
    }
}

/// Builds [`FxHasher`]s, for maps keyed by ids.
pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;

/// A hasher for keys that are already hashes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of a (tenant, rule) pair.
pub(crate) fn pair_hash(tenant_id: &str, rule_id: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(tenant_id.as_bytes());
    h.write(rule_id.as_bytes());
    h.finish()
}

/// No next entry in a chain.
const NONE: u32 = u32::MAX;

/// From the hash of a key to the dense ids `0, 1, 2, ...` of the keys with
/// that hash (a chain, newest first). The caller keeps the keys and
/// confirms each candidate.
#[derive(Debug, Default, Clone)]
pub(crate) struct HashChains {
    heads: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// The next id with the same hash, per id.
    next: Vec<u32>,
}

impl HashChains {
    /// The first id whose key `is_key` confirms, among those with `hash`.
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut at = *self.heads.get(&hash)?;
        while at != NONE {
            if is_key(at) {
                return Some(at);
            }
            at = self.next[at as usize];
        }
        None
    }

    /// Adds the next id (the number of ids added so far) under `hash`.
    pub(crate) fn push(&mut self, hash: u64) -> u32 {
        let id = u32::try_from(self.next.len()).expect("fewer than 2^32 - 1 interned keys");
        assert!(id != NONE, "fewer than 2^32 - 1 interned keys");
        let previous = self.heads.insert(hash, id).unwrap_or(NONE);
        self.next.push(previous);
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_find_every_key_even_when_all_hashes_collide() {
        let keys = ["a", "b", "c", "d"];
        let mut chains = HashChains::default();
        for _ in keys {
            chains.push(7);
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(chains.find(7, |id| keys[id as usize] == *k), Some(i as u32));
        }
        assert_eq!(chains.find(7, |_| false), None);
        assert_eq!(chains.find(8, |_| true), None);
    }

    #[test]
    fn pair_hash_tells_where_the_ids_split() {
        assert_ne!(pair_hash("ab", "c"), pair_hash("a", "bc"));
        assert_ne!(pair_hash("abcdefgh", ""), pair_hash("abcdefg", "h"));
    }
}
