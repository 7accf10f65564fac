//! What each fuzz target checks, as plain functions over bytes.
//!
//! `check_<target>(data)` takes arbitrary bytes and panics only when it finds
//! a bug. The same functions run in two places:
//!
//! - the `cargo fuzz` targets in `fuzz/fuzz_targets/<target>.rs`, one per
//!   function, for long coverage-guided runs;
//! - `tests/fuzz_corpus.rs`, a regular integration test, over the checked-in
//!   seed corpus `fuzz/corpus/<target>/` and a few thousand generated inputs,
//!   so that every `cargo test` exercises them without a fuzzer.
//!
//! The module uses only enforcelog's public API (plus `crc32fast` and
//! `serde_json`, which the library itself depends on), so it compiles both
//! inside the fuzz crate and inside the main package's tests. Each check is
//! deterministic: the same bytes give the same verdict, so any failure
//! replays from the input alone.
//!
//! Checksums stop a fuzzer at the first few bytes of every format. The
//! decoder checks therefore run twice: on the bytes as given, and on a copy
//! whose checksums were recomputed (`fix_*`), so mutations reach the fields
//! behind the checksums too.

mod api_model;
mod decoders;
mod import_line;
mod recovery;

pub use api_model::check_api_model;
pub use decoders::{
    check_batch, check_checkpoint, check_event_payload, check_event_view, check_index_file,
    check_segment_header,
};
pub use import_line::check_import_line;
pub use recovery::check_recovery;

use std::path::Path;
use std::sync::{Arc, OnceLock};

use enforcelog::storage::sim::SimStorage;
use enforcelog::{Log, LogOptions};

/// A target's name (its fuzz binary and corpus directory) and its check.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target, in the order of `fuzz/Cargo.toml`.
pub const TARGETS: [Target; 9] = [
    ("segment_header", check_segment_header),
    ("batch", check_batch),
    ("index_file", check_index_file),
    ("recovery", check_recovery),
    ("event_payload", check_event_payload),
    ("event_view", check_event_view),
    ("checkpoint", check_checkpoint),
    ("import_line", check_import_line),
    ("api_model", check_api_model),
];

/// The store id of every directory the checks and the seed generator
/// create (`prepare_dir`): a fresh store would pick a random one, and the
/// segment headers carry its tag, so inputs would mean different things in
/// different processes.
pub const STORE_ID: &str = "0123456789abcdef0123456789abcdef";

/// Makes `dir` a log directory whose store id is [`STORE_ID`]: writes its
/// `VERSION` file (as a fresh log writes it) and its `STORE_ID` file, which
/// the first open then adopts.
pub fn prepare_dir(storage: &SimStorage, dir: &Path) {
    static VERSION: OnceLock<Vec<u8>> = OnceLock::new();
    let version = VERSION.get_or_init(|| {
        let scratch = SimStorage::new(0);
        let log = Log::open_with_storage(Arc::new(scratch.clone()), "/v", LogOptions::default())
            .expect("a fresh in-memory log opens");
        log.close().expect("a fresh in-memory log closes");
        scratch
            .read_file("/v/VERSION")
            .expect("a fresh log writes VERSION")
    });
    storage.write_file(dir.join("VERSION"), version);
    storage.write_file(dir.join("STORE_ID"), format!("{STORE_ID}\n").as_bytes());
}

/// Reads fuzz bytes as a stream of small choices; past the end every
/// choice is 0, so any byte string is a complete program.
#[derive(Debug)]
pub struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Choices<'a> {
    /// A stream over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Whether every byte was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// A number in `0..n` (`n >= 1`).
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n
    }
}
