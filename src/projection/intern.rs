//! Interned ids for the projections' per-event lookups: a fast hash of
//! borrowed bytes and an index from a pair of ids to a dense `u32`.
//!
//! The hash is Fx-style (multiply and rotate, 8 bytes at a time): a few ns
//! for an id, where SipHash costs several times that. Ids are user input,
//! so the hash is keyed: each table draws a random key (from std's
//! `RandomState`) when it is made, and the key is the hasher's starting
//! state. Ids crafted offline against the source to share one hash
//! therefore land in different chains (a review of issue 17 piled 20,000
//! crafted rule ids of one tenant into the chain of another tenant's
//! pair). Collisions make lookups slow, never wrong: every hit is
//! confirmed by comparing the ids' bytes. Keys live only in memory:
//! nothing hashed is written to disk, so snapshots do not depend on them.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// A fresh random key, from std's randomly keyed SipHash.
fn random_key() -> u64 {
    RandomState::new().hash_one(0x6b65_795f_6669_7831_u64)
}

/// An Fx-style hasher for byte strings, started from a table's key.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

/// Builds [`FxHasher`]s started from one random key: one per table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FxBuild {
    key: u64,
}

impl Default for FxBuild {
    fn default() -> Self {
        Self { key: random_key() }
    }
}

impl BuildHasher for FxBuild {
    type Hasher = FxHasher;

    fn build_hasher(&self) -> FxHasher {
        FxHasher { hash: self.key }
    }
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

/// No next entry in a chain.
const NONE: u32 = u32::MAX;

/// From the hash of a key to the dense ids `0, 1, 2, ...` of the keys with
/// that hash (a chain, newest first). The caller keeps the keys and
/// confirms each candidate.
#[derive(Debug, Default, Clone)]
pub(crate) struct HashChains {
    /// This table's key for [`HashChains::pair_hash`].
    build: FxBuild,
    heads: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    /// The next id with the same hash, per id.
    next: Vec<u32>,
}

impl HashChains {
    /// The hash of a (tenant, rule) pair, with this table's key.
    pub(crate) fn pair_hash(&self, tenant_id: &str, rule_id: &str) -> u64 {
        let mut h = self.build.build_hasher();
        h.write(tenant_id.as_bytes());
        h.write(rule_id.as_bytes());
        h.finish()
    }

    /// The length of the longest chain: how many keys one lookup may
    /// compare at most.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn longest_chain(&self) -> usize {
        self.heads
            .values()
            .map(|&head| {
                let mut n = 0;
                let mut at = head;
                while at != NONE {
                    n += 1;
                    at = self.next[at as usize];
                }
                n
            })
            .max()
            .unwrap_or(0)
    }

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
        let chains = HashChains::default();
        assert_ne!(chains.pair_hash("ab", "c"), chains.pair_hash("a", "bc"));
        assert_ne!(
            chains.pair_hash("abcdefgh", ""),
            chains.pair_hash("abcdefg", "h")
        );
    }

    #[test]
    fn each_table_draws_its_own_key() {
        // Two tables hash the same pair differently (a 2^-64 chance of a
        // false failure), and one table always the same way.
        let (a, b) = (HashChains::default(), HashChains::default());
        assert_ne!(a.pair_hash("acme", "r-1"), b.pair_hash("acme", "r-1"));
        assert_eq!(a.pair_hash("acme", "r-1"), a.pair_hash("acme", "r-1"));
        assert_eq!(
            a.clone().pair_hash("acme", "r-1"),
            a.pair_hash("acme", "r-1")
        );
    }

    #[test]
    fn longest_chain_counts_the_keys_of_one_hash() {
        let mut chains = HashChains::default();
        assert_eq!(chains.longest_chain(), 0);
        for h in [1, 2, 2, 3, 2] {
            chains.push(h);
        }
        assert_eq!(chains.longest_chain(), 3);
    }
}
