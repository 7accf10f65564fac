//! Helpers shared by the integration tests: the seed and the random stream
//! every randomised test derives its choices from, a storage wrapper that
//! counts mutating calls ([`counting`]), running the `enforcelog` binary
//! ([`process`]), what is on disk ([`disk`]), the bytes of a log directory
//! ([`segment`]) and what the library logs ([`capture`]). `cli.rs` beside
//! it (a store driven through the binary) is not a module here: only the
//! `enforcelog-cli` tests include it, by path.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

pub mod capture;
pub mod counting;
pub mod disk;
pub mod events;
pub mod kept;
pub mod options;
pub mod process;
pub mod segment;

use std::ops::{Range, RangeInclusive};
use std::str::FromStr;

/// The variable `name` parsed when set, else `default`.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not a {}", std::any::type_name::<T>())),
        Err(_) => default,
    }
}

/// `ENFORCELOG_SEED` when set (to replay a failure), else `default`.
pub fn seed_or(default: u64) -> u64 {
    env_or("ENFORCELOG_SEED", default)
}

/// `ENFORCELOG_SEED` when set, else a fresh seed, so that each run tries new
/// cases (and prints its seed when one fails).
pub fn run_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    seed_or(u64::from(nanos) ^ u64::from(std::process::id()).rotate_left(32))
}

/// One step of splitmix64 over `state`: small, fast, and good enough to pick
/// test parameters.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The splitmix64 stream from state `.0`. Every draw is one [`splitmix64`]
/// step reduced modulo the span, so a seed printed by an old failure still
/// replays the same choices.
pub struct Rng(pub u64);

impl Rng {
    /// The stream from `seed ^ 0x5851_F42D_4C95_7F2D` (the salt of the files
    /// that use `new`; the others start from their seed or their own salt).
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5851_F42D_4C95_7F2D)
    }

    pub fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    /// In `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `0..len` (`len > 0`), as an index.
    pub fn index(&mut self, len: usize) -> usize {
        (self.next() % len as u64) as usize
    }

    /// In `range` (not empty).
    pub fn range(&mut self, range: Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }

    /// In `range` (not empty).
    pub fn range_i64(&mut self, range: Range<i64>) -> i64 {
        range.start + (self.next() % (range.end - range.start) as u64) as i64
    }

    /// In `range`, both ends included.
    pub fn in_range(&mut self, range: RangeInclusive<usize>) -> usize {
        let span = (range.end() - range.start() + 1) as u64;
        range.start() + (self.next() % span) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0..100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0..items.len() as u64) as usize]
    }

    /// `len` bytes, each the low byte of one draw.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[0]).collect()
    }

    /// Like [`Rng::bytes`], with each zero byte made 1.
    pub fn non_zero_bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len)
            .map(|_| self.next().to_le_bytes()[0].max(1))
            .collect()
    }
}

/// The object inside `value`, for tests that build `details` as a
/// `serde_json::Value` (e.g. nested to a computed depth).
pub fn object(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("details must be an object, not {other}"),
    }
}
