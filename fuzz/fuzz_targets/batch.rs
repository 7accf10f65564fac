//! Batch decoding: never panics; an accepted batch has dense offsets and re-
//! encodes to its bytes (timestamp bounds aside).
//!
//! The logic lives in `fuzz/logic/`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(dead_code, reason = "each target calls one check of the shared module")]
#[path = "../logic/mod.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::check_batch(data));
