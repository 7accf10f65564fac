//! Damage to acknowledged events is corruption, never a torn tail (issue 13,
//! item 1).
//!
//! Payloads are opaque and real ones are often mostly zeros: an event whose
//! details hold `{"histogram": [0, 0, ...]}` is mostly 0x00 bytes once
//! encoded. Recovery used to read any zeros in a failing batch as space that
//! was never written, so one flipped bit in such an event made open cut the
//! active segment there (dropping every later acknowledged event with only a
//! warning) and `verify` call it a torn tail and exit 0. Two flipped bits of
//! a marker byte did the same.
//!
//! Each test builds one closed store of zero-heavy events and flips bits of
//! its only segment, one flip at a time: every bit through `Log::open` and
//! `verify_dir`, a seeded sample through `Store::open`, and a smaller seeded
//! sample through the CLI. Each flip must be refused as corruption naming
//! the segment and a position in the damaged batch (or, where open does not
//! read the damaged bytes, leave every acknowledged record intact), and a
//! refused open must leave the file byte for byte as it was.
//!
//! Replay with `ENFORCELOG_SEED=<seed> cargo test --test corruption_not_torn`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use common::process::{self, Watchdog};
use common::segment;
use common::Rng;
use enforcelog::format::decode_batch;
use enforcelog::{
    verify_dir, Action, Durability, Entry, Error, Event, Log, LogOptions, LogRecord, ProblemKind,
    Store, StoreOptions,
};
use serde_json::{json, Value};

const SEGMENT: &str = "00000000000000000000.log";
const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");
const WATCHDOG: Watchdog = Watchdog {
    limit: Duration::from_secs(60),
    panic_signs: &["panicked", "stack backtrace"],
};

/// Taken by every test here: the CLI test forks children, and a child
/// forked while another test holds the log's lock file open holds that
/// `flock` too until it execs, which would make a parallel open see the
/// log as locked.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Details as a real host writes them: a histogram of counts, mostly zero,
/// with a few non-zero counts (some of them one bit), so that the encoded
/// event holds whole zero sectors and lone small bytes.
fn histogram_details(rng: &mut Rng, buckets: usize) -> Value {
    let mut counts = vec![0u64; buckets];
    // The non-zero counts sit among the first buckets (a latency histogram
    // is non-zero at its low end), so long runs of zero counts follow.
    for _ in 0..rng.index(4) {
        let i = rng.index(buckets.min(120));
        counts[i] = [1, 2, 3, 64, 300, 70_000][rng.index(6)];
    }
    json!({"histogram": counts, "unit": "ms", "nested": {"zeros": [0, 0, 0, 0]}})
}

/// A closed store of zero-heavy events in one segment, and its records.
struct Pristine {
    dir: tempfile::TempDir,
    segment: Vec<u8>,
    records: Vec<LogRecord>,
    seed: u64,
}

fn log_options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    }
}

fn store_options() -> StoreOptions {
    StoreOptions {
        log: log_options(),
        ..StoreOptions::default()
    }
}

impl Pristine {
    fn build() -> Self {
        let seed = common::run_seed();
        let mut rng = Rng::new(seed);
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = Store::open(dir.path(), store_options()).expect("open the store");
        let small = |rng: &mut Rng| 16 + rng.index(48);
        // Batches of one to three events; two of them big enough to hold
        // aligned all-zero sectors, the last one among them.
        let plan = [
            (1, 40),
            (2, 1200),
            (1, small(&mut rng)),
            (3, small(&mut rng)),
            (1, 2000),
        ];
        for (batch_len, buckets) in plan {
            let mut batch = store.begin();
            for k in 0..batch_len {
                let event = Event::new(format!("tenant-{k}"), "rule-hist", Action::Blocked)
                    .with_run_id(format!("run-{}", rng.index(1000)))
                    .with_details(common::object(histogram_details(&mut rng, buckets)))
                    .at_us(1_764_028_800_000_000 + rng.index(1 << 30) as i64);
                batch.record(event).expect("a valid event");
            }
            batch.commit_blocking().expect("commit a batch");
        }
        store.close().expect("close");
        drop(store);
        let log = Log::open_read_only(dir.path()).expect("read-only open");
        let records = log
            .read_from(0)
            .and_then(|r| r.collect::<Result<Vec<_>, _>>())
            .expect("read the pristine store");
        drop(log);
        let segment = fs::read(dir.path().join(SEGMENT)).expect("read the segment");
        let zero_sectors = (0..segment.len() / 512)
            .filter(|s| segment[s * 512..(s + 1) * 512].iter().all(|&b| b == 0))
            .count();
        assert!(
            zero_sectors >= 2,
            "the store should hold whole zero sectors inside events (seed {seed})"
        );
        assert!(verify_dir(dir.path()).expect("verify").is_clean());
        Pristine {
            dir,
            segment,
            records,
            seed,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn segment_path(&self) -> PathBuf {
        self.dir.path().join(SEGMENT)
    }

    /// Applies `mask` to byte `at` of the segment, in place.
    fn damage(&self, at: usize, mask: u8) -> Vec<u8> {
        let mut bytes = self.segment.clone();
        bytes[at] ^= mask;
        self.write_byte(at, bytes[at]);
        bytes
    }

    fn undo(&self, at: usize) {
        self.write_byte(at, self.segment[at]);
    }

    fn write_byte(&self, at: usize, byte: u8) {
        segment::write_byte(&self.segment_path(), at, byte);
    }

    /// Where the batches start.
    fn batch_starts(&self) -> Vec<usize> {
        segment::batch_starts(&self.segment)
    }

    /// The positions a report of damage at `byte` may name: the segment
    /// header, or the damaged batch from its start to the damaged byte.
    fn damage_range(&self, byte: usize) -> RangeInclusive<u64> {
        segment::damage_range(&self.batch_starts(), byte)
    }

    /// The byte positions of the batch markers (header and trailer).
    fn marker_bytes(&self) -> Vec<usize> {
        let mut at = Vec::new();
        for start in self.batch_starts() {
            let view = decode_batch(&self.segment[start..], None).expect("a pristine batch");
            at.extend(start + 36..start + 40);
            at.extend(start + view.len() - 4..start + view.len());
        }
        at
    }
}

/// Asserts the damage at byte `at` is handled as corruption through
/// `verify_dir`, a writer open and a read-only open, and that nothing on
/// disk changed.
fn assert_log_sees_corruption(p: &Pristine, at: usize, damaged: &[u8], what: &str) {
    let range = p.damage_range(at);
    let path = p.segment_path();
    let report = verify_dir(p.path()).expect("verify_dir");
    assert!(
        report.problems.iter().any(|pr| {
            matches!(pr.kind, ProblemKind::Corruption | ProblemKind::Layout)
                && pr.path == path
                && range.contains(&pr.position)
        }),
        "{what}: verify_dir reports no corruption at {range:?}: {report:?}"
    );
    assert!(
        report
            .problems
            .iter()
            .all(|pr| pr.kind != ProblemKind::TornTail),
        "{what}: verify_dir calls damage a torn tail: {report:?}"
    );
    for writer in [true, false] {
        // A writer open of a damaged last segment records on (issue 13,
        // item 7): it leaves the segment as found, marks it damaged and
        // starts a new one. It runs on a copy, so that the next flip starts
        // from the pristine directory.
        let copy = tempfile::tempdir().expect("tempdir");
        let (dir, seg) = if writer {
            copy_dir(p.path(), copy.path());
            (copy.path().to_path_buf(), copy.path().join(SEGMENT))
        } else {
            (p.path().to_path_buf(), path.clone())
        };
        let opened = if writer {
            Log::open(&dir, log_options())
        } else {
            Log::open_read_only(&dir)
        };
        match opened {
            Err(Error::Corruption {
                path: named,
                position,
                ..
            }) if named == seg && range.contains(&position) => {}
            Err(e) => panic!("{what}: expected corruption at {range:?}, got: {e}"),
            Ok(log) => {
                let records = log
                    .read_from(0)
                    .and_then(|r| r.collect::<Result<Vec<_>, _>>());
                log.close().expect("close");
                match records {
                    Ok(records) => assert_intact_or_lost(&records, &p.records, what),
                    Err(Error::Corruption { .. }) => {}
                    Err(e) => panic!("{what}: reading after open: {e}"),
                }
            }
        }
        let now = fs::read(&seg).expect("read the segment");
        assert!(
            now == damaged,
            "{what}: an open changed the damaged segment"
        );
    }
}

/// Every acknowledged record is read back as written, or, where the damage
/// destroyed it, as a lost entry at its own offset: never dropped, never
/// changed. Past them, only lost entries: a hole at the end of a damaged
/// last segment covers every offset its bytes could have held, so that no
/// offset is ever handed out twice.
fn assert_intact_or_lost(records: &[LogRecord], acked: &[LogRecord], what: &str) {
    assert!(
        records.len() >= acked.len(),
        "{what}: open lost records ({} of {})",
        records.len(),
        acked.len()
    );
    for (i, read) in records.iter().enumerate() {
        let lost = matches!(
            enforcelog::payload::decode(read.offset, read.timestamp_us, &read.payload),
            Ok(Entry::Lost(_))
        );
        let intact = acked.get(i).is_some_and(|want| read == want);
        assert!(
            intact || (lost && read.offset == i as u64),
            "{what}: record {i} changed or invented"
        );
    }
}

/// Copies the files of a log directory (it has no subdirectories here).
fn copy_dir(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

#[test]
fn every_bit_flip_in_zero_heavy_events_is_corruption_not_a_torn_tail() {
    let _serial = serial();
    let p = Pristine::build();
    for bit in 0..p.segment.len() * 8 {
        let at = bit / 8;
        let damaged = p.damage(at, 1 << (bit % 8));
        let what = format!("bit {bit} (byte {at}) flipped, seed {}", p.seed);
        assert_log_sees_corruption(&p, at, &damaged, &what);
        p.undo(at);
    }
    assert!(fs::read(p.segment_path()).expect("read") == p.segment);
}

#[test]
fn two_bit_flips_of_a_marker_byte_are_corruption_not_a_torn_tail() {
    let _serial = serial();
    let p = Pristine::build();
    let mut zeroed = 0;
    for at in p.marker_bytes() {
        let byte = p.segment[at];
        for a in 0..8 {
            for b in a + 1..8 {
                let mask = (1u8 << a) | (1u8 << b);
                let damaged = p.damage(at, mask);
                zeroed += usize::from(damaged[at] == 0);
                let what = format!(
                    "bits {a} and {b} of marker byte {at} ({byte:#04x}) flipped, seed {}",
                    p.seed
                );
                assert_log_sees_corruption(&p, at, &damaged, &what);
                p.undo(at);
            }
        }
    }
    assert!(zeroed > 0, "no two-bit flip zeroed a marker byte");
}

/// `count` distinct bits of `len` bytes, from `rng`.
fn sample_bits(rng: &mut Rng, len: usize, count: usize) -> Vec<usize> {
    let mut bits: Vec<usize> = (0..count).map(|_| rng.index(len * 8)).collect();
    bits.sort_unstable();
    bits.dedup();
    bits
}

#[test]
fn store_open_refuses_a_flipped_bit_in_zero_heavy_events() {
    let _serial = serial();
    let p = Pristine::build();
    let mut rng = Rng(p.seed ^ 0x5354_4F52_4531);
    let (mut refused, mut sealed) = (0, 0);
    for bit in sample_bits(&mut rng, p.segment.len(), 1500) {
        let at = bit / 8;
        let damaged = p.damage(at, 1 << (bit % 8));
        let what = format!("bit {bit} (byte {at}) flipped, seed {}", p.seed);
        // A writer open of a damaged last segment may seal it and record on
        // (issue 13, item 7), adding files: it runs on a copy, so that the
        // next flip starts from the pristine directory.
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(p.path(), copy.path());
        let segment = copy.path().join(SEGMENT);
        match Store::open(copy.path(), store_options()) {
            Err(Error::Corruption { path, position, .. }) => {
                assert_eq!(path, segment, "{what}");
                assert!(p.damage_range(at).contains(&position), "{what}: {position}");
                refused += 1;
            }
            Err(e) => panic!("{what}: expected corruption, got: {e}"),
            Ok(store) => {
                let entries: Vec<Entry> = store
                    .entries(0)
                    .and_then(|e| e.collect())
                    .unwrap_or_else(|e| panic!("{what}: read after open: {e}"));
                // Damaged events come back as lost entries in their place.
                assert!(entries.len() >= p.records.len(), "{what}: events lost");
                if entries.iter().any(|e| matches!(e, Entry::Lost(_))) {
                    sealed += 1;
                }
                drop(store);
            }
        }
        let now = fs::read(&segment).expect("read");
        assert!(now == damaged, "{what}: the store changed the segment");
        p.undo(at);
    }
    assert!(
        refused + sealed > 0,
        "no flip was refused or sealed as damage (seed {})",
        p.seed
    );
}

fn run(args: &[&str], dir: &Path) -> process::Out {
    let mut cmd = process::command(BIN);
    cmd.arg("--data-dir")
        .arg(dir)
        .args(["--durability", "none"])
        .args(args);
    let what = process::describe(&cmd);
    WATCHDOG.run(cmd, what, None)
}

#[test]
fn cli_verify_and_record_refuse_a_flipped_bit_in_zero_heavy_events() {
    let _serial = serial();
    let p = Pristine::build();
    let mut rng = Rng(p.seed ^ 0x434C_4921);
    let bits = sample_bits(&mut rng, p.segment.len(), 24);
    eprintln!(
        "flipping {} sampled bits, seed {} (ENFORCELOG_SEED replays)",
        bits.len(),
        p.seed
    );
    for bit in bits {
        let at = bit / 8;
        let damaged = p.damage(at, 1 << (bit % 8));
        let what = format!("bit {bit} (byte {at}) flipped, seed {}", p.seed);
        let verify = run(&["verify"], p.path());
        assert_eq!(verify.code(), Some(1), "{what}: verify: {}", verify.show());
        // Exit 1 is the CLI's "corruption found"; a torn tail would be a
        // warning ("torn tail: ...") and exit 0.
        let text = format!("{}{}", verify.stdout, verify.stderr);
        assert!(
            verify.stdout.contains(&format!("{SEGMENT}: byte "))
                && text.contains("problem(s) found")
                && !text.contains("torn tail"),
            "{what}: verify does not report corruption in the segment: {}",
            verify.show()
        );
        // Recording goes on past the damage (issue 13, item 7), on a copy so
        // that the next flip starts from the pristine directory; the
        // damaged segment is left as found.
        let copy = tempfile::tempdir().expect("tempdir");
        copy_dir(p.path(), copy.path());
        let record = run(
            &["record", "--tenant", "t", "--rule", "r", "--action", "kill"],
            copy.path(),
        );
        // A damaged segment header cannot be sealed as found (its base is
        // unknown): that open still refuses, naming the corruption.
        let refused = record.code() == Some(1) && record.stderr.contains("corruption");
        assert!(
            record.code() == Some(0) || refused,
            "{what}: record: {}",
            record.show()
        );
        let now = fs::read(copy.path().join(SEGMENT)).expect("read");
        assert!(now == damaged, "{what}: record changed the damaged segment");
        let verify = run(&["verify"], copy.path());
        assert_eq!(
            verify.code(),
            Some(1),
            "{what}: verify after record: {}",
            verify.show()
        );
        p.undo(at);
    }
}
