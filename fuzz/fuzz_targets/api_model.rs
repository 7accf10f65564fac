//! The store's API against an in-memory model, over the fault-injecting
//! storage: appends, batches, reopens, crashes, faults, queries, reads,
//! statistics.
//!
//! The logic lives in `fuzz/logic/`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(dead_code, reason = "each target calls one check of the shared module")]
#[path = "../logic/mod.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::check_api_model(data));
