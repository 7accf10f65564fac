//! Recovery over arbitrary segment bytes: open refuses naming the segment, or
//! keeps exactly the valid batches, verifies clean and accepts appends.
//!
//! The logic lives in `fuzz/logic/`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(dead_code, reason = "each target calls one check of the shared module")]
#[path = "../logic/mod.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::check_recovery(data));
