//! Import-line parsing: never panics; an accepted event is valid and survives
//! being written back as a line.
//!
//! The logic lives in `fuzz/logic/`, shared with `tests/fuzz_corpus.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[expect(dead_code, reason = "each target calls one check of the shared module")]
#[path = "../logic/mod.rs"]
mod logic;

fuzz_target!(|data: &[u8]| logic::check_import_line(data));
