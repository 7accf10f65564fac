//! The borrowing event view: never panics, and agrees with the full
//! payload decode on every input (event keys, other entries, errors); the
//! decode's one-walk path agrees with its general decoder.
//!
//! The logic lives in `fuzz/logic/`, shared with `cli/tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(dead_code, reason = "each target calls one check of the shared module")]
#[path = "../logic/mod.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::check_event_view(data));
