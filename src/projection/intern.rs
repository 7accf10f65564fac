//! Interned ids for the projections' per-event lookups: a fast hash of
//! borrowed bytes and an index from a pair of ids to a dense `u32`.
//!
//! The hashes are multiply-based: Fx-style (multiply and rotate, 8 bytes
//! at a time) for the tenant map, and a folded 128-bit multiply (16 bytes
//! at a time, see `absorb`) for the pair index, which every event asks: a
//! few ns for an id, where SipHash costs several times that. Ids are user
//! input, so the hashes are keyed: each table draws a random key (from
//! std's `RandomState`) when it is made, and the key is the hasher's
//! starting state. Ids crafted offline against the source to share one hash
//! therefore land in different chains (a review of issue 17 piled 20,000
//! crafted rule ids of one tenant into the chain of another tenant's
//! pair). Collisions make lookups slow, never wrong: every hit is
//! confirmed by comparing the ids' bytes. Keys live only in memory:
//! nothing hashed is written to disk, so snapshots do not depend on them.

use std::collections::hash_map::RandomState;
#[cfg(any(test, feature = "test-util"))]
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

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

/// The 128-bit product of `a` and `b`, its halves folded together: every
/// bit of either input moves many bits of the result.
#[inline(always)]
fn fold_mul(a: u64, b: u64) -> u64 {
    let product = u128::from(a) * u128::from(b);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The little-endian `u64` at `at` of `bytes`.
#[inline(always)]
fn r64(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The little-endian `u32` at `at` of `bytes`, widened.
#[inline(always)]
fn r32(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&bytes[at..at + 4]);
    u64::from(u32::from_le_bytes(w))
}

/// Folds `bytes` into the hash state `h`, 16 bytes per multiply (the pair
/// index's hash: an id of up to 16 bytes costs two, one of them for the
/// length). The length goes in first, through its own multiply: mixed
/// into a word of the bytes instead, a difference in the length could
/// cancel a difference in the bytes (the test `similar_pairs_hash_apart`
/// found "aaaaaaaaabaaa" and "aaaaaaaaaaaaaa" sharing a hash that way).
/// The last 1 to 16 bytes are read as two words that may overlap.
#[inline]
fn absorb(h: u64, bytes: &[u8]) -> u64 {
    const P0: u64 = 0xa076_1d64_78bd_642f;
    const P1: u64 = 0xe703_7ed1_a0b4_28db;
    const P2: u64 = 0x8ebc_6af0_9c88_c6e3;
    const P3: u64 = 0x5899_65cc_7537_4cc3;
    let mut h = fold_mul(h ^ P2, bytes.len() as u64 ^ P3);
    let mut rest = bytes;
    while rest.len() > 16 {
        h = fold_mul(r64(rest, 0) ^ h ^ P0, r64(rest, 8) ^ P1);
        rest = &rest[16..];
    }
    let n = rest.len();
    let (a, b) = match n {
        9..=16 => (r64(rest, 0), r64(rest, n - 8)),
        4..=8 => (r32(rest, 0), r32(rest, n - 4)),
        1..=3 => (
            u64::from(rest[0]) | u64::from(rest[n / 2]) << 8,
            u64::from(rest[n - 1]),
        ),
        _ => (0, 0),
    };
    fold_mul(a ^ h ^ P0, b ^ P1)
}

/// An empty slot of a [`HashIndex`].
const EMPTY: u32 = u32::MAX;

/// One slot of a [`HashIndex`]: a key's full hash and its id.
#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u64,
    id: u32,
}

const VACANT: Slot = Slot { hash: 0, id: EMPTY };

/// From the hash of a key to the dense ids `0, 1, 2, ...` of the keys
/// with that hash. The caller keeps the keys and confirms each candidate.
///
/// Open addressing with linear probing over 16-byte slots that hold the
/// full 64-bit hash, so a probe compares hashes in place and asks the
/// caller to confirm only a candidate whose hash is equal: one cache line
/// per lookup, at an address known from the hash alone, which
/// [`HashIndex::prefetch`] can load ahead of the lookup.
///
/// Invariants: `slots.len()` is a power of two (or zero) and at least
/// twice the number of ids; the ids under one hash lie, in the order they
/// were added, along the probe sequence from `hash & mask` before its first
/// vacant slot.
#[derive(Debug, Default, Clone)]
pub(crate) struct HashIndex {
    /// This table's key for [`HashIndex::pair_hash`].
    build: FxBuild,
    slots: Vec<Slot>,
    /// Ids added so far.
    len: u32,
    /// Tests: every pair hashes alike, so every lookup meets candidates
    /// that are not its pair.
    #[cfg(test)]
    pub(crate) collide_all: bool,
}

impl HashIndex {
    /// The hash of a (tenant, rule) pair, with this table's key.
    #[inline]
    pub(crate) fn pair_hash(&self, tenant_id: &str, rule_id: &str) -> u64 {
        #[cfg(test)]
        if self.collide_all {
            return 42;
        }
        let h = absorb(self.build.key, tenant_id.as_bytes());
        absorb(h, rule_id.as_bytes())
    }

    /// The most ids that share one hash: how many keys one lookup may
    /// compare at most.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn longest_chain(&self) -> usize {
        let mut per_hash: HashMap<u64, usize> = HashMap::new();
        for slot in self.slots.iter().filter(|s| s.id != EMPTY) {
            *per_hash.entry(slot.hash).or_default() += 1;
        }
        per_hash.into_values().max().unwrap_or(0)
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Asks the CPU to load the slot where a lookup of `hash` starts, so
    /// that the lookup, issued a little later, finds it in cache.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            prefetch(slot);
        }
    }

    /// The first id whose key `is_key` confirms, among those with `hash`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, mut is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        loop {
            let slot = *self.slots.get(at)?;
            if slot.id == EMPTY {
                return None;
            }
            if slot.hash == hash && is_key(slot.id) {
                return Some(slot.id);
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds the next id (the number of ids added so far) under `hash`.
    pub(crate) fn push(&mut self, hash: u64) -> u32 {
        let id = self.len;
        assert!(id != EMPTY, "fewer than 2^32 - 1 interned keys");
        if (id as usize + 1) * 2 > self.slots.len() {
            self.grow();
        }
        self.place(Slot { hash, id });
        self.len += 1;
        id
    }

    /// Puts `slot` in the first vacant slot of its probe sequence.
    fn place(&mut self, slot: Slot) {
        let mask = self.mask();
        let mut at = slot.hash as usize & mask;
        while self.slots[at].id != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }

    /// Doubles the slots (16 at first) and places every id again, in id
    /// order, so the ids under one hash keep their order.
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(16);
        let mut old = std::mem::replace(&mut self.slots, vec![VACANT; capacity]);
        old.retain(|s| s.id != EMPTY);
        old.sort_unstable_by_key(|s| s.id);
        for slot in old {
            self.place(slot);
        }
    }
}

/// Asks the CPU to bring the cache line holding `value` closer. A hint:
/// it changes no state a program can observe, and costs a few cycles.
#[inline(always)]
#[allow(unsafe_code, reason = "a CPU hint with no safe wrapper in std")]
pub(crate) fn prefetch<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is
    // part of the x86_64 baseline the target is compiled for). A prefetch
    // never faults and never reads into the program: any address is
    // allowed, even a dangling one, and nothing is dereferenced.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(value.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_found_even_when_all_hashes_collide() {
        let keys = ["a", "b", "c", "d"];
        let mut chains = HashIndex::default();
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
        let chains = HashIndex::default();
        assert_ne!(chains.pair_hash("ab", "c"), chains.pair_hash("a", "bc"));
        assert_ne!(
            chains.pair_hash("abcdefgh", ""),
            chains.pair_hash("abcdefg", "h")
        );
    }

    #[test]
    fn similar_pairs_hash_apart() {
        // Every string of up to 6 letters over {a, b, NUL}, and longer
        // runs of one letter with one other letter at each place (across
        // the 4, 8 and 16-byte reads and the 16-byte steps), as rule ids
        // of tenants whose ids prefix one another: ids that differ in one
        // byte, in their length only, or only in where the pair splits.
        let mut ids = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..6 {
            last = last
                .iter()
                .flat_map(|s| ["a", "b", "\0"].map(|c| format!("{s}{c}")))
                .collect();
            ids.extend(last.iter().cloned());
        }
        for len in 7..=40 {
            ids.push("a".repeat(len));
            for at in 0..len {
                let mut id = "a".repeat(len).into_bytes();
                id[at] = b'b';
                ids.push(String::from_utf8(id).unwrap());
            }
        }
        let index = HashIndex::default();
        let mut seen = HashMap::new();
        for tenant in ["", "a", "aa", "acme", "tenant-042", "tenant-0420000000"] {
            for rule in &ids {
                let hash = index.pair_hash(tenant, rule);
                if let Some(other) = seen.insert(hash, (tenant, rule.clone())) {
                    panic!("{other:?} and {:?} share a hash", (tenant, rule));
                }
            }
        }
        assert!(seen.len() > 10_000);
    }

    #[test]
    fn each_table_draws_its_own_key() {
        // Two tables hash the same pair differently (a 2^-64 chance of a
        // false failure), and one table always the same way.
        let (a, b) = (HashIndex::default(), HashIndex::default());
        assert_ne!(a.pair_hash("acme", "r-1"), b.pair_hash("acme", "r-1"));
        assert_eq!(a.pair_hash("acme", "r-1"), a.pair_hash("acme", "r-1"));
        assert_eq!(
            a.clone().pair_hash("acme", "r-1"),
            a.pair_hash("acme", "r-1")
        );
    }

    #[test]
    fn ids_stay_found_through_growth_clusters_and_shared_hashes() {
        // Hashes that share their low bits (one probe cluster), hashes
        // shared by several ids, and random ones; every id found by its
        // own hash after every growth, nothing found for an absent hash.
        let mut rng = 0x5eed_u64;
        let mut next = || {
            rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let z = (rng ^ (rng >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z ^ (z >> 31)
        };
        let mut index = HashIndex::default();
        let mut hashes = Vec::new();
        for i in 0..5_000u64 {
            let hash = match i % 4 {
                0 => i << 20,
                1 => hashes.get(i as usize / 2).copied().unwrap_or(7),
                _ => next(),
            };
            assert_eq!(index.push(hash) as usize, hashes.len());
            hashes.push(hash);
            if i % 97 == 0 || i == 4_999 {
                for (id, &h) in hashes.iter().enumerate() {
                    assert_eq!(index.find(h, |c| c as usize == id), Some(id as u32));
                }
            }
        }
        assert!(index.slots.len() >= 2 * hashes.len());
        let absent = (0..).map(|_| next()).find(|h| !hashes.contains(h)).unwrap();
        assert_eq!(index.find(absent, |_| true), None);
    }

    #[test]
    fn longest_chain_counts_the_keys_of_one_hash() {
        let mut chains = HashIndex::default();
        assert_eq!(chains.longest_chain(), 0);
        for h in [1, 2, 2, 3, 2] {
            chains.push(h);
        }
        assert_eq!(chains.longest_chain(), 3);
    }
}
