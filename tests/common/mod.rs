//! Helpers shared by the integration tests: the seed and the random stream
//! every randomised test derives its choices from.

// Each test crate compiles this module and uses only part of it.
#![allow(dead_code)]

/// `ENFORCELOG_SEED` when set (to replay a failure), else `default`.
pub fn seed_or(default: u64) -> u64 {
    match std::env::var("ENFORCELOG_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("ENFORCELOG_SEED={s:?} is not a u64")),
        Err(_) => default,
    }
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
