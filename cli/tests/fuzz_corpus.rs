//! The fuzz targets' checks, run as a regular test: over the checked-in
//! seed corpus (`fuzz/corpus/<target>/`) and over a few thousand generated
//! inputs per target, so every `cargo test` exercises what the fuzzers
//! check (`fuzz/logic/`), without a fuzzer.
//!
//! Generated inputs mix raw bytes with *structured* ones: real encodings
//! (written through the public API into the in-memory storage) that are
//! then mutated by bit flips, byte changes, truncations, insertions,
//! removals and splices, so the checks get past the magic bytes and
//! checksums.
//!
//! - `ENFORCELOG_SEED=<u64>` replays a failing run (the seed is printed);
//! - `ENFORCELOG_FUZZ_SCALE=<n>` runs n times as many generated inputs;
//! - `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`
//!   regenerates the seed corpus (deterministically; regression files are
//!   left alone).

#[path = "../../tests/common/mod.rs"]
mod common;

#[path = "../../fuzz/logic/mod.rs"]
mod logic;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use enforcelog::format::index_file::{IndexEntry, SegmentIndex};
use enforcelog::format::{decode_batch, SEGMENT_HEADER_LEN};
use enforcelog::projection::checkpoint::Checkpoint;
use enforcelog::projection::{ActionsPerDay, Projection};
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::timestamp::format_us;
use enforcelog::{Action, Durability, Event, LogOptions, Store, StoreOptions};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestError, TestRunner};
use serde_json::Value;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz/corpus")
        .join(target)
}

fn check_of(target: &str) -> fn(&[u8]) {
    logic::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz target {target}"))
        .1
}

/// The text of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(a panic without a message)".into())
}

/// Runs `target`'s check over every file of its corpus directory.
fn run_corpus(target: &str) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let check = check_of(target);
    let mut failures = Vec::new();
    for file in &files {
        let bytes = std::fs::read(file).expect("a corpus file reads");
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| check(&bytes))) {
            failures.push(format!("{}: {}", file.display(), panic_text(&*p)));
        }
    }
    assert!(
        failures.is_empty(),
        "{target}: {} of {} corpus files fail:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// How many times the default number of generated inputs to run.
fn scale() -> u32 {
    common::env_or("ENFORCELOG_FUZZ_SCALE", 1)
}

/// Runs `target`'s check over `cases` inputs from `strategy`.
fn run_generated(target: &str, cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let seed = common::run_seed();
    let config = Config {
        cases: cases * scale(),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let check = check_of(target);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |bytes| {
        check(&bytes);
        Ok(())
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, bytes)) => {
            // Kept as a file, ready to become a named regression input.
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fuzz-failure-{target}-{seed}"));
            std::fs::write(&path, &bytes).expect("write the failing input");
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            panic!(
                "{target}: a generated input fails (replay with ENFORCELOG_SEED={seed}): \
                 {reason}\nminimal input ({} bytes, saved as {}; keep it as \
                 fuzz/corpus/{target}/regression-<what>): {hex}",
                bytes.len(),
                path.display()
            );
        }
        Err(e) => panic!("{target}: {e} (ENFORCELOG_SEED={seed})"),
    }
}

// ------------------------------------------------------------------ samples

/// Real files and payloads, written through the public API into the
/// in-memory storage: the valid encodings the structured inputs start from.
struct Samples {
    /// Segment files, in offset order (the first has base offset 0).
    segments: Vec<Vec<u8>>,
    /// The batches of every segment, each on its own.
    batches: Vec<Vec<u8>>,
    /// Index files of sealed segments.
    indexes: Vec<Vec<u8>>,
    /// Checkpoint files (trigger statistics and actions per day).
    checkpoints: Vec<Vec<u8>>,
    /// Record payloads (every event shape the store writes).
    payloads: Vec<Vec<u8>>,
}

fn sample_events() -> Vec<Event> {
    let base = 1_764_028_800_000_000;
    (0..90)
        .map(|i: i64| {
            let mut e = Event::new(
                ["acme", "globex", "ünïcødé-tenant"][i as usize % 3],
                format!("rule-{}", i % 5),
                Action::ALL[i as usize % 4],
            )
            .at_us(base + i * 7_000_000);
            if i % 2 == 0 {
                e = e.with_run_id(format!("run-{i}"));
            }
            if i % 3 == 0 {
                e = e.with_details(enforcelog::details!({
                    "step": i, "why": "budget", "ratio": 0.25 * i as f64,
                    "nested": {"list": [1, "two", null, true], "empty": {}},
                }));
            }
            e
        })
        .collect()
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(build_samples)
}

fn build_samples() -> Samples {
    let storage = SimStorage::new(3);
    let options = StoreOptions {
        log: LogOptions {
            segment_max_bytes: 4096,
            index_interval_bytes: 512,
            record_max_bytes: 1024,
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    logic::prepare_dir(&storage, Path::new("/s"));
    let store = Store::builder("/s")
        .storage(Arc::new(storage.clone()))
        .options(options)
        .projections(vec![
            Box::new(ActionsPerDay::default()) as Box<dyn Projection>
        ])
        .open()
        .expect("a sample store opens");
    let events = sample_events();
    let mut rest = &events[..];
    let mut size = 1;
    while !rest.is_empty() {
        let n = size.min(rest.len());
        let mut batch = store.begin();
        for e in &rest[..n] {
            batch.record(e.clone()).expect("a sample event is valid");
        }
        batch.commit_blocking().expect("a sample batch commits");
        rest = &rest[n..];
        size = size % 4 + 1;
    }
    let payloads = store
        .log()
        .read_from(0)
        .expect("read from 0")
        .map(|r| r.expect("a sample record").payload)
        .collect();
    store.close().expect("the sample store closes");

    let read_dir = |dir: &str, ext: &str| -> Vec<Vec<u8>> {
        let mut names = storage.list(Path::new(dir)).expect("a sample directory");
        names.sort();
        names
            .iter()
            .filter(|n| n.ends_with(ext))
            .filter_map(|n| storage.read_file(Path::new(dir).join(n)))
            .collect()
    };
    let segments = read_dir("/s", ".log");
    let indexes = read_dir("/s", ".idx");
    let checkpoints = read_dir("/s/projections", ".ckpt");
    assert!(
        segments.len() >= 2,
        "the sample store did not roll: {} segments, {} indexes, {} checkpoints",
        segments.len(),
        indexes.len(),
        checkpoints.len()
    );
    assert!(!indexes.is_empty() && checkpoints.len() == 2);
    let batches = segments.iter().flat_map(|s| split_batches(s)).collect();
    Samples {
        segments,
        batches,
        indexes,
        checkpoints,
        payloads,
    }
}

/// The batches of a segment file, each as its own bytes.
fn split_batches(segment: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok(batch) = decode_batch(&segment[pos..], None) {
        out.push(batch.bytes().to_vec());
        pos += batch.len();
    }
    out
}

// ------------------------------------------------------------------ mutations

/// One change to a valid encoding.
#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    Truncate(Index),
    Insert(Index, Vec<u8>),
    Remove(Index, u8),
    /// Keep this input up to a point, then another sample from a point.
    Splice(Index, Index, Index),
    /// Repeat a range of the input in place.
    Repeat(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        2 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1u8..32).prop_map(|(i, n)| Mutation::Remove(i, n)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>())
            .prop_map(|(a, b, c)| Mutation::Splice(a, b, c)),
        1 => (any::<Index>(), 1u8..64).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, pool: &[Vec<u8>]) {
    let len = bytes.len();
    let at = |i: &Index| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::FlipBit(i, bit) if len > 0 => bytes[i.index(len)] ^= 1 << bit,
        Mutation::SetByte(i, v) if len > 0 => bytes[i.index(len)] = *v,
        Mutation::Truncate(i) => bytes.truncate(at(i)),
        Mutation::Insert(i, v) => {
            let p = at(i);
            bytes.splice(p..p, v.iter().copied());
        }
        Mutation::Remove(i, n) => {
            let p = at(i);
            bytes.drain(p..(p + usize::from(*n)).min(len));
        }
        Mutation::Splice(here, other, from) => {
            let other = &pool[other.index(pool.len())];
            bytes.truncate(at(here));
            if !other.is_empty() {
                bytes.extend_from_slice(&other[from.index(other.len())..]);
            }
        }
        Mutation::Repeat(i, n) => {
            let p = at(i);
            let copy = bytes[p..(p + usize::from(*n)).min(len)].to_vec();
            bytes.splice(p..p, copy);
        }
        _ => {}
    }
}

/// A sample of `pool` changed by up to four mutations.
fn mutated(pool: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    assert!(!pool.is_empty());
    let pool = Arc::new(pool);
    (any::<Index>(), prop::collection::vec(mutation(), 0..5)).prop_map(move |(i, ms)| {
        let mut bytes = pool[i.index(pool.len())].clone();
        for m in &ms {
            apply(&mut bytes, m, &pool);
        }
        bytes
    })
}

fn raw(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max_len)
}

/// One raw input for every three structured ones.
fn mixed(pool: Vec<Vec<u8>>, max_raw_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![1 => raw(max_raw_len), 3 => mutated(pool)]
}

// ------------------------------------------------------------------ pools

fn segment_header_pool() -> Vec<Vec<u8>> {
    let s = samples();
    let mut pool: Vec<Vec<u8>> = s
        .segments
        .iter()
        .map(|seg| seg[..SEGMENT_HEADER_LEN].to_vec())
        .collect();
    pool.push(s.segments[1][..100].to_vec());
    pool
}

fn batch_pool() -> Vec<Vec<u8>> {
    let mut pool = samples().batches.clone();
    pool.push(loose_bounds_batch());
    pool
}

/// A valid batch whose header timestamp bounds are wider than its frames
/// (the format allows it; the encoder never writes it).
fn loose_bounds_batch() -> Vec<u8> {
    let mut batch = samples().batches[2].clone();
    let min = i64::from_le_bytes(batch[20..28].try_into().expect("8 bytes"));
    batch[20..28].copy_from_slice(&(min - 1).to_le_bytes());
    // The header checksum: crc32 of header bytes 4..40, at 0..4.
    let crc = crc32fast::hash(&batch[4..40]);
    batch[..4].copy_from_slice(&crc.to_le_bytes());
    batch
}

fn index_pool() -> Vec<Vec<u8>> {
    let mut pool = samples().indexes.clone();
    let empty = SegmentIndex {
        base_offset: 9,
        next_offset: 9,
        segment_len: 32,
        entries: Vec::new(),
    };
    pool.push(empty.encode());
    let entry = |first_offset, position, min, max| IndexEntry {
        first_offset,
        position,
        min_timestamp_us: min,
        max_timestamp_us: max,
    };
    let crafted = SegmentIndex {
        base_offset: 100,
        next_offset: 140,
        segment_len: 9000,
        entries: vec![
            entry(100, 32, -5, 5),
            entry(110, 900, i64::MIN, i64::MAX),
            entry(139, 8999, 7, 7),
        ],
    };
    pool.push(crafted.encode());
    pool
}

fn checkpoint_pool() -> Vec<Vec<u8>> {
    let mut pool = samples().checkpoints.clone();
    let mut empty = Checkpoint::decode(&pool[0]).expect("a sample checkpoint decodes");
    empty.snapshot.clear();
    pool.push(empty.encode());
    pool
}

fn recovery_pool() -> Vec<Vec<u8>> {
    let s = samples();
    let first = &s.segments[0];
    let mut pool = Vec::new();
    for mode in 0..3u8 {
        let body = if mode == 2 {
            &first[SEGMENT_HEADER_LEN..]
        } else {
            &first[..]
        };
        let mut input = vec![mode];
        input.extend_from_slice(body);
        pool.push(input);
    }
    pool
}

// ------------------------------------------------------------------ payloads

/// A tiny MessagePack writer, to build payloads the store would never
/// write: other schemas, kinds and action codes, bad ids, odd details.
#[derive(Default)]
struct Msgpack(Vec<u8>);

impl Msgpack {
    fn array(mut self, n: usize) -> Self {
        if n < 16 {
            self.0.push(0x90 | n as u8);
        } else {
            self.0.push(0xdc);
            self.0.extend_from_slice(&(n as u16).to_be_bytes());
        }
        self
    }
    fn map(mut self, n: usize) -> Self {
        assert!(n < 16);
        self.0.push(0x80 | n as u8);
        self
    }
    fn uint(mut self, v: u64) -> Self {
        if v < 128 {
            self.0.push(v as u8);
        } else {
            self.0.push(0xcf);
            self.0.extend_from_slice(&v.to_be_bytes());
        }
        self
    }
    fn int(mut self, v: i64) -> Self {
        self.0.push(0xd3);
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn nil(mut self) -> Self {
        self.0.push(0xc0);
        self
    }
    fn float(mut self, v: f64) -> Self {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_bits().to_be_bytes());
        self
    }
    fn raw_str(mut self, bytes: &[u8]) -> Self {
        let n = bytes.len();
        if n < 32 {
            self.0.push(0xa0 | n as u8);
        } else if n < 256 {
            self.0.extend_from_slice(&[0xd9, n as u8]);
        } else {
            self.0.push(0xdb);
            self.0.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(self, s: &str) -> Self {
        self.raw_str(s.as_bytes())
    }
    /// An event payload header: `[schema, kind, tenant, rule, action, ...]`.
    fn event(self, schema: u64, tenant: &[u8], rule: &[u8], action: u64) -> Self {
        self.array(7)
            .uint(schema)
            .uint(0)
            .raw_str(tenant)
            .raw_str(rule)
            .uint(action)
    }
}

/// Hand-made payloads: the edges of what `payload::decode` must refuse or
/// accept.
fn crafted_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let ok = |m: Msgpack| m.0;
    vec![
        (
            "gap-marker",
            ok(Msgpack::default()
                .array(5)
                .uint(1)
                .uint(1)
                .uint(12)
                .int(-5)
                .int(9)),
        ),
        (
            "gap-marker-extremes",
            ok(Msgpack::default()
                .array(5)
                .uint(1)
                .uint(1)
                .uint(u64::MAX)
                .int(i64::MIN)
                .int(i64::MAX)),
        ),
        (
            "event-details-floats",
            ok(Msgpack::default()
                .event(1, b"t", b"r", 3)
                .nil()
                .map(3)
                .str("nan")
                .float(f64::NAN)
                .str("inf")
                .float(f64::INFINITY)
                .str("tiny")
                .float(5e-324)),
        ),
        (
            "event-details-int-key",
            ok(Msgpack::default()
                .event(1, b"t", b"r", 0)
                .nil()
                .map(1)
                .uint(5)
                .nil()),
        ),
        (
            "event-details-array",
            ok(Msgpack::default()
                .event(1, b"t", b"r", 1)
                .nil()
                .array(1)
                .uint(1)),
        ),
        (
            "event-array16",
            ok(Msgpack::default()
                .array(17)
                .uint(1)
                .uint(0)
                .str("t")
                .str("r")
                .uint(0)
                .nil()
                .nil()),
        ),
        (
            "schema-2",
            ok(Msgpack::default().event(2, b"t", b"r", 0).nil().nil()),
        ),
        (
            "kind-7",
            ok(Msgpack::default().array(3).uint(1).uint(7).nil()),
        ),
        (
            "action-code-9",
            ok(Msgpack::default().event(1, b"t", b"r", 9).nil().nil()),
        ),
        (
            "empty-tenant",
            ok(Msgpack::default().event(1, b"", b"r", 0).nil().nil()),
        ),
        (
            "tenant-129-bytes",
            ok(Msgpack::default()
                .event(1, &[b'a'; 129], b"r", 0)
                .nil()
                .nil()),
        ),
        (
            "control-char-in-rule",
            ok(Msgpack::default().event(1, b"t", b"r\x07", 0).nil().nil()),
        ),
        (
            "bidi-override-in-run",
            ok(Msgpack::default()
                .event(1, b"t", b"r", 0)
                .str("run\u{202e}")
                .nil()),
        ),
        (
            "invalid-utf8-tenant",
            ok(Msgpack::default().event(1, b"t\xff", b"r", 0).nil().nil()),
        ),
        (
            "nested-details",
            ok({
                let mut m = Msgpack::default()
                    .event(1, b"t", b"r", 2)
                    .nil()
                    .map(1)
                    .str("a");
                for _ in 0..40 {
                    m = m.array(1);
                }
                m.nil()
            }),
        ),
    ]
}

/// A valid event payload whose details are larger than DETAILS_MAX_BYTES.
fn oversized_details_payload() -> Vec<u8> {
    Msgpack::default()
        .event(1, b"t", b"r", 3)
        .nil()
        .map(1)
        .str("blob")
        .str(&"x".repeat(70_000))
        .0
}

fn payload_pool() -> Vec<Vec<u8>> {
    let mut pool = samples().payloads.clone();
    pool.extend(crafted_payloads().into_iter().map(|(_, p)| p));
    pool
}

// ------------------------------------------------------------------ import lines

fn id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9._-]{1,16}",
        1 => ".{0,6}",
        1 => Just("a".repeat(128)),
        1 => Just("a".repeat(129)),
        1 => Just("é".repeat(64)),
        1 => Just("x\u{202e}y".to_string()),
        1 => Just("line\u{2028}sep".to_string()),
        1 => Just(String::new()),
    ]
}

fn action_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("KILLED".to_string()),
        Just("stop".to_string()),
        Just("Aborted".to_string()),
        Just("BLOCK".to_string()),
        Just("halt".to_string()),
        "[a-zA-Z]{0,8}",
    ]
}

fn rfc3339_text() -> impl Strategy<Value = String> {
    let year = prop_oneof![
        Just(0),
        Just(1),
        Just(1970),
        Just(2026),
        Just(9999),
        Just(10000)
    ];
    let zone = prop_oneof![
        Just("Z".to_string()),
        Just("+00:00".to_string()),
        Just("-00:00".to_string()),
        Just("+23:59".to_string()),
        Just("-12:30".to_string()),
        Just(String::new()),
    ];
    let frac = prop_oneof![Just(String::new()), "\\.[0-9]{1,12}"];
    (
        year,
        0u32..14,
        0u32..33,
        0u32..25,
        0u32..61,
        0u32..62,
        frac,
        zone,
    )
        .prop_map(|(y, mo, d, h, mi, s, frac, zone)| {
            format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}")
        })
}

fn time_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (enforcelog::timestamp::MIN_US..=enforcelog::timestamp::MAX_US).prop_map(format_us),
        rfc3339_text(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Numbers as text with many digits: the JSON parser must read them the
/// same way each time they go through an import line.
fn number_text() -> impl Strategy<Value = String> {
    (
        "-?[1-9][0-9]{0,24}",
        prop::option::of("[0-9]{1,20}"),
        prop::option::of(-330i32..310),
    )
        .prop_map(|(int, frac, exp)| {
            let mut s = int;
            if let Some(f) = frac {
                s = format!("{s}.{f}");
            }
            if let Some(e) = exp {
                s = format!("{s}e{e}");
            }
            s
        })
}

/// An import line as JSON text.
fn import_line() -> impl Strategy<Value = Vec<u8>> {
    let fields = (
        prop::option::weighted(0.95, id_text()),
        prop::option::weighted(0.95, id_text()),
        prop::option::weighted(0.95, action_text()),
        prop::option::of(prop::option::of(id_text())),
        prop::option::of(json_value()),
        prop::option::of(prop::option::of(time_text())),
        prop::option::weighted(
            0.1,
            prop_oneof![Just("enforcement"), Just("gap"), Just("x")],
        ),
        prop::option::of(number_text()),
    );
    fields.prop_map(|(tenant, rule, action, run, details, at, kind, number)| {
        let nullable = |v: Option<String>| v.map_or(Value::Null, Value::from);
        let fields = [
            ("tenant_id", tenant.map(Value::from)),
            ("rule_id", rule.map(Value::from)),
            ("action_taken", action.map(Value::from)),
            ("run_id", run.map(nullable)),
            ("details", details),
            ("enforced_at", at.map(nullable)),
            ("kind", kind.map(Value::from)),
        ];
        let line: serde_json::Map<String, Value> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect();
        let mut text = Value::Object(line).to_string();
        if let Some(number) = number {
            // Raw number text inside details: `{"details":{"n":<text>},...`.
            let field = format!("\"details\":{{\"n\":{number}}},");
            text = match text.strip_prefix('{') {
                Some(rest) if !text.contains("\"details\"") => format!("{{{field}{rest}"),
                _ => text,
            };
            text = text.replace(",}", "}");
        }
        text.into_bytes()
    })
}

/// Fragments that make JSON interesting when spliced in.
const JSON_FRAGMENTS: [&str; 12] = [
    r#"\ud800"#,
    r#"\u0000"#,
    "\u{202e}",
    "\u{2028}",
    "1e400",
    "-0.0",
    "null",
    "{}",
    "[",
    "}",
    r#""tenant_id":"dup","#,
    "\"\\\"",
];

fn import_line_input() -> impl Strategy<Value = Vec<u8>> {
    let pool: Vec<Vec<u8>> = import_line_seeds().into_iter().map(|(_, l)| l).collect();
    let fragment = (any::<Index>(), any::<Index>()).prop_map(|(f, at)| (f, at));
    prop_oneof![
        3 => import_line(),
        2 => (import_line(), fragment).prop_map(|(mut line, (f, at))| {
            let fragment = JSON_FRAGMENTS[f.index(JSON_FRAGMENTS.len())].as_bytes();
            let p = at.index(line.len() + 1);
            line.splice(p..p, fragment.iter().copied());
            line
        }),
        2 => mutated(pool),
        1 => raw(200),
    ]
}

fn import_line_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let lines: [(&str, &[u8]); 16] = [
        ("valid-minimal", br#"{"tenant_id":"acme","rule_id":"r1","action_taken":"KILLED"}"#),
        (
            "valid-all-fields",
            br#"{"tenant_id":"acme","rule_id":"no-prod-writes","action_taken":"block","run_id":"run-42","details":{"step":7,"why":"budget","nested":{"a":[1,2.5,null,true]}},"enforced_at":"2026-11-25T11:00:00.5+01:00"}"#,
        ),
        (
            "dump-line",
            br#"{"offset":3,"kind":"enforcement","tenant_id":"t","rule_id":"r","action_taken":"STOPPED","run_id":null,"details":null,"enforced_at":"2026-01-02T03:04:05.000000Z"}"#,
        ),
        ("gap-line", br#"{"offset":4,"kind":"gap","dropped":2,"first_dropped_at":"x"}"#),
        ("blank", b" \t "),
        ("unknown-field", br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","tenant":"x"}"#),
        (
            "duplicate-field",
            br#"{"tenant_id":"t","tenant_id":"u","rule_id":"r","action_taken":"kill"}"#,
        ),
        (
            "invalid-utf8-tenant",
            b"{\"tenant_id\":\"t\xff\",\"rule_id\":\"r\",\"action_taken\":\"kill\"}",
        ),
        (
            "bad-timestamp",
            br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","enforced_at":"2026-11-01T00:00:00"}"#,
        ),
        (
            "timestamp-edges",
            br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","enforced_at":"9999-12-31T23:59:59.9999999Z"}"#,
        ),
        ("details-array", br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","details":[1]}"#),
        ("truncated-json", br#"{"tenant_id":"t","rule_id":"#),
        ("trailing-garbage", br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill"} x"#),
        (
            "float-details",
            br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","details":{"a":0.1,"b":1.7976931348623157e308,"c":5e-324,"d":-0.0,"e":123456789012345678901234567890}}"#,
        ),
        (
            "escapes",
            br#"{"tenant_id":"t\u00e9","rule_id":"r\"q","action_taken":"kill","details":{"\u0000":"\ud83d\ude00","lone":"\ud800"}}"#,
        ),
        ("control-char-in-rule", br#"{"tenant_id":"t","rule_id":"r\u0007","action_taken":"kill"}"#),
    ];
    lines
        .iter()
        .map(|(name, line)| (*name, line.to_vec()))
        .collect()
}

// ------------------------------------------------------------------ api model programs

/// A step of an API model program, as the bytes `check_api_model` reads
/// (see `fuzz/logic/api_model.rs`, `Harness::step`).
#[derive(Debug, Clone, Copy)]
enum Op {
    /// (tenant/rule/action selector, extras, time)
    Record(u8, u8, u8),
    Batch(u8),
    Dropped(u8),
    Reopen,
    Crash(u8),
    /// (fault op 0..5, skip 0..4, kind 0..2)
    Inject(u8, u8, u8),
    Query(u8),
    ReadFrom(u8),
    Stats(u8, u8, u8),
    Checkpoint,
}

fn program(seed: u8, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![seed];
    for (i, op) in ops.iter().enumerate() {
        let event = |i: usize| {
            [
                (i * 7 % 36) as u8,
                (i * 5 % 256) as u8,
                (i * 13 % 256) as u8,
            ]
        };
        match *op {
            Op::Record(a, b, c) => out.extend([0, a, b, c]),
            Op::Batch(n) | Op::Dropped(n) => {
                out.extend([if matches!(op, Op::Batch(_)) { 3 } else { 5 }, n - 1]);
                for k in 0..usize::from(n) {
                    out.extend(event(i * 4 + k));
                }
            }
            Op::Reopen => out.push(6),
            Op::Crash(mode) => out.extend([7, mode]),
            Op::Inject(op, skip, kind) => out.extend([8, op, skip, kind]),
            Op::Query(filters) => out.extend([9, filters, 1, 2, 3, 0, 20, 200, 0, 9, 2]),
            Op::ReadFrom(offset) => out.extend([10, offset]),
            Op::Stats(time, tenant, rule) => out.extend([11, time, tenant, rule]),
            Op::Checkpoint => out.push(12),
        }
    }
    out
}

fn api_model_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::*;
    let appends: Vec<Op> = (0..12u8).map(|i| Record(i * 3, i * 17, i * 21)).collect();
    let mut rolls = vec![Batch(4); 10];
    rolls.extend([Record(1, 0xfd, 9), Reopen, ReadFrom(0), Stats(255, 0, 3)]);
    let faults = |op: u8| {
        vec![
            Record(0, 4, 10),
            Inject(op, 0, 0),
            Record(1, 0xfc, 11),
            Batch(3),
            Inject(op, 1, 1),
            Batch(2),
            Record(2, 5, 12),
            Checkpoint,
            Query(0xff),
        ]
    };
    let mut seeds = vec![
        (
            "appends-queries-stats",
            program(
                0,
                &[
                    appends.clone(),
                    vec![
                        Query(0),
                        Query(0x81),
                        Query(0xfe),
                        Stats(40, 0, 0),
                        Stats(255, 1, 3),
                    ],
                ]
                .concat(),
            ),
        ),
        ("batches-roll-segments", program(1, &rolls)),
        (
            "dropped-batch",
            program(
                2,
                &[
                    Record(0, 0, 1),
                    Dropped(3),
                    Batch(2),
                    Dropped(1),
                    ReadFrom(1),
                ],
            ),
        ),
        ("fault-write", program(3, &faults(0))),
        ("fault-fsync", program(4, &faults(1))),
        (
            "fault-create-during-roll",
            program(
                5,
                &[vec![Batch(4); 6], faults(2), vec![Batch(4); 6]].concat(),
            ),
        ),
        (
            "fault-rename-checkpoint",
            program(
                6,
                &[
                    Record(0, 4, 1),
                    Inject(3, 0, 1),
                    Checkpoint,
                    Record(1, 4, 2),
                    Reopen,
                    Stats(255, 0, 3),
                ],
            ),
        ),
        (
            "fault-sync-dir",
            program(
                7,
                &[vec![Batch(4); 5], faults(4), vec![Batch(4); 5]].concat(),
            ),
        ),
        (
            "checkpoint-then-more",
            program(
                8,
                &[
                    appends.clone(),
                    vec![Checkpoint],
                    appends.clone(),
                    vec![Reopen, Stats(200, 2, 3)],
                ]
                .concat(),
            ),
        ),
        (
            "query-paging",
            program(
                9,
                &[appends.clone(), vec![Query(0x80), Query(0xc1), Query(0xb0)]].concat(),
            ),
        ),
    ];
    for mode in 0..4u8 {
        let name = [
            "crash-lose-unsynced",
            "crash-tear-last-write",
            "crash-reorder",
            "crash-torn-sectors",
        ][usize::from(mode)];
        let ops = [
            appends.clone(),
            vec![
                Batch(3),
                Checkpoint,
                Batch(2),
                Crash(mode),
                ReadFrom(0),
                Stats(255, 0, 3),
            ],
        ]
        .concat();
        seeds.push((name, program(10 + mode, &ops)));
    }
    seeds
}

// ------------------------------------------------------------------ seeds

/// Named seed files: (file name, bytes).
type Seeds = Vec<(String, Vec<u8>)>;

/// Every seed, by target. Deterministic.
fn seed_corpus() -> Vec<(&'static str, Seeds)> {
    let s = samples();
    let named = |v: Vec<(&str, Vec<u8>)>| -> Seeds {
        v.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
    };
    let flip = |bytes: &[u8], at: usize| {
        let mut b = bytes.to_vec();
        b[at] ^= 0x10;
        b
    };
    let with_crc_at = |bytes: &[u8], body: std::ops::Range<usize>, at: usize| {
        let mut b = bytes.to_vec();
        let crc = crc32fast::hash(&b[body]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        b
    };

    let header = &s.segments[0][..SEGMENT_HEADER_LEN];
    let set = |bytes: &[u8], at: usize, value: &[u8]| {
        let mut b = bytes.to_vec();
        b[at..at + value.len()].copy_from_slice(value);
        b
    };
    let segment_header = named(vec![
        ("valid-base-0", header.to_vec()),
        (
            "valid-later-segment",
            s.segments[1][..SEGMENT_HEADER_LEN].to_vec(),
        ),
        ("header-then-batch", s.segments[1][..100].to_vec()),
        ("zeros-unwritten", vec![0; SEGMENT_HEADER_LEN]),
        ("truncated-20", header[..20].to_vec()),
        ("bad-magic", flip(header, 0)),
        ("bad-checksum", flip(header, 29)),
        (
            "version-2",
            with_crc_at(&set(header, 8, &[2, 0]), 0..28, 28),
        ),
        (
            "reserved-nonzero",
            with_crc_at(&set(header, 12, &[1]), 0..28, 28),
        ),
    ]);

    let one = s
        .batches
        .iter()
        .find(|b| b[8] == 1)
        .expect("a one-frame batch");
    let three = s
        .batches
        .iter()
        .find(|b| b[8] == 3)
        .expect("a three-frame batch");
    let batch = named(vec![
        ("valid-1-frame", one.clone()),
        ("valid-3-frames", three.clone()),
        (
            "valid-4-frames",
            s.batches.iter().find(|b| b[8] == 4).expect("4").clone(),
        ),
        ("two-batches", [one.clone(), three.clone()].concat()),
        ("loose-timestamp-bounds", loose_bounds_batch()),
        ("truncated-header", three[..30].to_vec()),
        ("truncated-frame", three[..three.len() - 20].to_vec()),
        ("flipped-payload-bit", flip(three, 80)),
        ("bad-trailer", flip(three, three.len() - 1)),
        ("zero-trailer", set(three, three.len() - 4, &[0, 0, 0, 0])),
    ]);

    let idx = &s.indexes[0];
    let pool = index_pool();
    let index_file = named(vec![
        ("valid-sealed-segment", idx.clone()),
        ("valid-no-entries", pool[pool.len() - 2].clone()),
        ("valid-extreme-timestamps", pool[pool.len() - 1].clone()),
        ("truncated", idx[..idx.len() - 5].to_vec()),
        ("flipped-bit", flip(idx, 20)),
        ("unsorted-entries", {
            let mut index = SegmentIndex::decode(&pool[pool.len() - 1]).expect("crafted decodes");
            index.entries.swap(1, 2);
            index.encode()
        }),
    ]);

    let recovery_in = |mode: u8, segment: &[u8]| [vec![mode], segment.to_vec()].concat();
    // The first segments cut after a few batches: small seeds run fast.
    let prefix = |segment: &[u8], batches: usize| {
        let len: usize = split_batches(segment)
            .iter()
            .take(batches)
            .map(Vec::len)
            .sum();
        segment[..SEGMENT_HEADER_LEN + len].to_vec()
    };
    let seg = &prefix(&s.segments[0], 8);
    let first_batch_end = SEGMENT_HEADER_LEN + split_batches(seg)[0].len();
    let recovery = named(vec![
        ("m0-valid-segment", recovery_in(0, seg)),
        ("m0-header-only", recovery_in(0, &seg[..SEGMENT_HEADER_LEN])),
        ("m0-short-header", recovery_in(0, &seg[..10])),
        ("m0-torn-tail", recovery_in(0, &seg[..seg.len() - 7])),
        (
            "m0-zero-tail",
            recovery_in(0, &[seg.clone(), vec![0; 100]].concat()),
        ),
        (
            "m0-garbage-tail",
            recovery_in(0, &[seg.clone(), vec![0xa5; 100]].concat()),
        ),
        (
            "m0-corrupt-middle",
            recovery_in(0, &flip(seg, first_batch_end - 10)),
        ),
        (
            "m0-later-segment",
            recovery_in(0, &prefix(&s.segments[1], 3)),
        ),
        (
            "m1-flipped-payload",
            recovery_in(1, &flip(seg, first_batch_end - 10)),
        ),
        ("m2-batches", recovery_in(2, &seg[SEGMENT_HEADER_LEN..])),
        (
            "m2-batches-torn",
            recovery_in(2, &seg[SEGMENT_HEADER_LEN..seg.len() - 3]),
        ),
    ]);

    let mut event_payload: Seeds = Vec::new();
    for (i, p) in s.payloads.iter().take(6).enumerate() {
        event_payload.push((format!("store-written-{i}"), p.clone()));
    }
    event_payload.extend(named(crafted_payloads()));
    event_payload.push((
        "truncated".into(),
        s.payloads[0][..s.payloads[0].len() / 2].to_vec(),
    ));

    let ckpt = &s.checkpoints[0];
    let cpool = checkpoint_pool();
    let body = 0..ckpt.len() - 4;
    let checkpoint = named(vec![
        ("actions-per-day", s.checkpoints[0].clone()),
        ("trigger-stats", s.checkpoints[1].clone()),
        ("empty-snapshot", cpool[cpool.len() - 1].clone()),
        ("truncated", ckpt[..40].to_vec()),
        ("flipped-bit", flip(ckpt, 20)),
        (
            "version-3",
            with_crc_at(&set(ckpt, 8, &[3, 0]), body, ckpt.len() - 4),
        ),
    ]);

    vec![
        ("segment_header", segment_header),
        ("batch", batch),
        ("index_file", index_file),
        ("recovery", recovery),
        ("event_view", event_payload.clone()),
        ("event_payload", event_payload),
        ("checkpoint", checkpoint),
        ("import_line", named(import_line_seeds())),
        ("api_model", named(api_model_seeds())),
    ]
}

/// Regenerates `fuzz/corpus/<target>/` (seed files only; regression files
/// stay): `cargo test --test fuzz_corpus -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the checked-in seed corpus; run on purpose"]
fn write_seed_corpus() {
    for (target, seeds) in seed_corpus() {
        let dir = corpus_dir(target);
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
        for entry in std::fs::read_dir(&dir).expect("list the corpus directory") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.is_some_and(|n| !n.starts_with("regression-")) {
                std::fs::remove_file(&path).expect("remove an old seed");
            }
        }
        for (name, bytes) in seeds {
            assert!(
                bytes.len() <= 8 << 10,
                "{target}/{name} is {} bytes",
                bytes.len()
            );
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
    }
}

// ------------------------------------------------------------------ tests

macro_rules! corpus_tests {
    ($($test:ident => $target:literal,)*) => {
        $(
            #[test]
            fn $test() {
                run_corpus($target);
            }
        )*
    };
}

corpus_tests! {
    corpus_segment_header => "segment_header",
    corpus_batch => "batch",
    corpus_index_file => "index_file",
    corpus_recovery => "recovery",
    corpus_event_payload => "event_payload",
    corpus_event_view => "event_view",
    corpus_checkpoint => "checkpoint",
    corpus_import_line => "import_line",
    corpus_api_model => "api_model",
}

#[test]
fn generated_segment_header() {
    run_generated("segment_header", 4000, mixed(segment_header_pool(), 48));
}

#[test]
fn generated_batch() {
    run_generated("batch", 4000, mixed(batch_pool(), 200));
}

#[test]
fn generated_index_file() {
    run_generated("index_file", 4000, mixed(index_pool(), 200));
}

#[test]
fn generated_recovery() {
    run_generated("recovery", 3000, mixed(recovery_pool(), 300));
}

#[test]
fn generated_event_payload() {
    run_generated("event_payload", 3000, mixed(payload_pool(), 64));
}

#[test]
fn generated_event_view() {
    run_generated("event_view", 3000, mixed(payload_pool(), 64));
}

#[test]
fn generated_checkpoint() {
    run_generated("checkpoint", 4000, mixed(checkpoint_pool(), 120));
}

#[test]
fn generated_import_line() {
    run_generated("import_line", 4000, import_line_input());
}

#[test]
fn generated_api_model() {
    let pool: Vec<Vec<u8>> = api_model_seeds().into_iter().map(|(_, p)| p).collect();
    run_generated("api_model", 1500, mixed(pool, 256));
}

/// Every target has its fuzz binary, which calls its check.
#[test]
fn every_target_is_a_fuzz_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("fuzz");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (target, _) in logic::TARGETS {
        let path = format!("fuzz_targets/{target}.rs");
        assert!(
            manifest.contains(&format!("name = \"{target}\"")),
            "{target} not in fuzz/Cargo.toml"
        );
        assert!(
            manifest.contains(&format!("path = \"{path}\"")),
            "{path} not in fuzz/Cargo.toml"
        );
        let source = std::fs::read_to_string(root.join(&path)).expect("a fuzz target source");
        assert!(
            source.contains(&format!("logic::check_{target}(")),
            "{path} does not call its check"
        );
    }
}

// ------------------------------------------------------------------ regressions
//
// Inputs the fuzzers or the generated inputs found; each is also a file of
// the corpus (except the payload, too large for one), kept by name.

fn regression(target: &str, name: &str) {
    let path = corpus_dir(target).join(format!("regression-{name}"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    check_of(target)(&bytes);
}

/// `Checkpoint::decode` accepts non-zero bytes in the reserved field
/// (bytes 10..12, "zero" in the layout), which `encode` then writes as
/// zeros: the file does not round-trip.
#[test]
fn regression_checkpoint_reserved_bytes_ignored() {
    regression("checkpoint", "reserved-bytes-ignored");
}

/// serde_json's default float parser reads `7.000121001004e+68` one unit in
/// the last place away from the double it prints that way, so a `details`
/// number changes when an imported event is written out (as `dump` does)
/// and imported again.
#[test]
fn regression_import_line_float_changes_on_reimport() {
    regression("import_line", "float-changes-on-reimport");
}

/// `details` nested deeper than DETAILS_MAX_DEPTH (a map holding 64 nested
/// arrays: 65 levels), found by the `event_payload` fuzzer in 48 s: builds
/// before the depth limit wrote such events, so they decode as written,
/// while `Event::validate` refuses to record one now.
#[test]
fn regression_event_payload_details_nested_65_deep() {
    regression("event_payload", "details-nested-65-deep");
    let path = corpus_dir("event_payload").join("regression-details-nested-65-deep");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let entry = enforcelog::payload::decode(0, 0, &bytes).expect("read as written");
    assert!(matches!(entry, enforcelog::Entry::Event(_)));
}

/// `details` larger than DETAILS_MAX_BYTES (70 kB of JSON here) was
/// accepted by `payload::decode`; no build ever wrote one, so it is refused.
#[test]
fn regression_event_payload_details_over_64k_refused() {
    logic::check_event_payload(&oversized_details_payload());
    let refused = enforcelog::payload::decode(0, 0, &oversized_details_payload());
    assert!(
        refused.as_ref().is_err_and(|e| e.0.contains("more than")),
        "{refused:?}"
    );
}

/// The smallest programs: nothing at all, and a reopen, a crash and a read
/// on an empty store.
#[test]
fn api_model_runs_short_programs() {
    logic::check_api_model(&[]);
    logic::check_api_model(&[0, 6, 7, 3, 10, 0]);
}
