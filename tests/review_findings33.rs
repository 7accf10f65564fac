//! Review 33: the hash chain in the log's batches (issue 18, log format 2,
//! commit b61fc1d). Confirmed findings were failing tests marked `#[ignore]`;
//! refuted ones pass. All three are fixed: findings 1 and 2 by each
//! chained batch storing the link before it (a batch after a hole or
//! damage checks its own records), finding 3 by deciding a log without a
//! readable VERSION by its first batch.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enforcelog::format::batch::{decode_batch, encode_batch, encode_chained_batch};
use enforcelog::format::chain::GENESIS;
use enforcelog::format::SEGMENT_HEADER_LEN;
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::{Durability, Log, LogOptions, ProblemKind, Record, VerifyReport};

fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("tenant-{}|rule-{}|BLOCKED|", i % 5, i % 11).into_bytes();
    p.extend(std::iter::repeat_n(0u8, (i % 37) as usize));
    p.extend_from_slice(&i.to_le_bytes());
    p
}

fn options() -> LogOptions {
    LogOptions {
        segment_max_bytes: 16 << 10,
        record_max_bytes: 1 << 10,
        ..LogOptions::default()
    }
}

fn append(log: &Log, from: u64, to: u64) {
    let mut i = from;
    while i < to {
        let n = (1 + i % 5).min(to - i);
        let records = (i..i + n)
            .map(|j| Record::new(1_764_000_000_000_000 + j as i64, payload(j)))
            .collect();
        log.append_batch_blocking(records).unwrap();
        i += n;
    }
}

fn new_log(to: u64) -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    append(&log, 0, to);
    log.close().unwrap();
    let segments = segments(dir.path());
    (dir, segments)
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut s: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    s.sort();
    s
}

fn verify(dir: &Path) -> VerifyReport {
    enforcelog::verify_dir(dir).unwrap()
}

#[derive(Clone)]
struct Batch {
    first: u64,
    records: Vec<Record>,
    /// The stored chain trailer: the link before, this batch's link tag.
    link: Option<[u8; 40]>,
    /// Byte range in the segment.
    at: std::ops::Range<usize>,
}

fn batches(segment: &[u8]) -> Vec<Batch> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut out = Vec::new();
    while pos < segment.len() {
        let view = decode_batch(&segment[pos..], None).expect("a valid batch");
        out.push(Batch {
            first: view.header.first_offset,
            records: view
                .frames()
                .map(|f| Record::new(f.timestamp_us, f.payload.to_vec()))
                .collect(),
            link: view.prev().zip(view.link_tag()).map(|(prev, tag)| {
                let mut t = [0u8; 40];
                t[..32].copy_from_slice(&prev);
                t[32..].copy_from_slice(&tag);
                t
            }),
            at: pos..pos + view.len(),
        });
        pos += view.len();
    }
    out
}

/// Encodes one batch; a chained batch keeps `link` as its stored chain
/// trailer (checksum recomputed): the forger's "keep the old link".
fn encode_one(out: &mut Vec<u8>, b: &Batch) {
    match b.link {
        Some(stored) => {
            encode_chained_batch(out, b.first, &b.records, &GENESIS);
            let end = out.len();
            out[end - 48..end - 8].copy_from_slice(&stored);
            let crc = crc32fast::hash(&stored);
            out[end - 8..end - 4].copy_from_slice(&crc.to_le_bytes());
        }
        None => encode_batch(out, b.first, &b.records),
    }
}

fn encode(header: &[u8], batches: &[Batch]) -> Vec<u8> {
    let mut out = header[..SEGMENT_HEADER_LEN].to_vec();
    for b in batches {
        encode_one(&mut out, b);
    }
    out
}

/// A hole's payload, as `repair` writes it (schema 1, kind "lost").
fn lost_payload(first: u64, len: u64) -> Vec<u8> {
    rmp_serde::to_vec(&(1u8, 2u8, first, len)).unwrap()
}

/// Changes the first record of `b` (its checksums recomputed on encode).
fn forge(b: &mut Batch) {
    b.records[0].payload = b"tenant-0|rule-0|ALLOWED|forged".to_vec();
}

// ---------------------------------------------------------------------
// 3. Tampering missed.
// ---------------------------------------------------------------------

/// Finding 1: a forger who replaces batch i by a hole (an unchained batch
/// of lost-entry records over the same offsets, as `repair` writes) may
/// then rewrite batch i+1 at will, keeping its stored link: the check takes
/// the first batch after a hole at its word and every later link still
/// fits. `verify` reports no problem at all (the hole is "information").
#[test]
fn f1_a_batch_replaced_by_a_forged_hole_lets_the_next_batch_be_rewritten_unseen() {
    let (dir, segs) = new_log(300);
    let path = &segs[0];
    let bytes = std::fs::read(path).unwrap();
    let mut b = batches(&bytes);
    let i = 3;
    let n = b[i].records.len() as u64;
    let ts = b[i].records[0].timestamp_us;
    b[i].records = (0..n)
        .map(|_| Record::new(ts, lost_payload(b[i].first, n)))
        .collect();
    b[i].link = None;
    forge(&mut b[i + 1]);
    std::fs::write(path, encode(&bytes, &b)).unwrap();
    let report = verify(dir.path());
    assert_eq!(report.lost, n, "{report:?}");
    assert!(
        report.has_tampering(),
        "batch {} was rewritten (its link no longer fits its records), yet verify \
         reports: {report:?}",
        b[i + 1].first
    );
}

/// Finding 2: one damaged byte (reported as corruption, which `repair`
/// turns into a hole) stops the chain check for the batch right after it
/// in the same segment; that batch can be rewritten, link kept, and verify
/// reports only the damage, never the rewrite. After `repair`, the log
/// verifies clean with the rewritten record in it.
#[test]
fn f2_damage_before_a_rewritten_batch_hides_the_rewrite_and_repair_launders_it() {
    let (dir, segs) = new_log(300);
    let path = &segs[0];
    let bytes = std::fs::read(path).unwrap();
    let mut b = batches(&bytes);
    let i = 3;
    forge(&mut b[i + 1]);
    let mut out = encode(&bytes, &b);
    // One byte of batch i's first payload.
    let at = b[i].at.start + 40 + 24 + 2;
    out[at] ^= 0x5a;
    out[at + 1] ^= 0x33;
    std::fs::write(path, out).unwrap();
    let report = verify(dir.path());
    assert!(report.has_corruption(), "{report:?}");
    let before = report.has_tampering();
    enforcelog::log::repair_dir(dir.path()).unwrap();
    let after = verify(dir.path());
    assert!(
        before && after.has_tampering(),
        "batch {} was rewritten; before repair: {report:?}; after repair: {after:?}",
        b[i + 1].first
    );
}

/// Finding 2, across segments: damage in the last batch of a sealed
/// segment stops the check up to the next segment's first batch, which is
/// rewritten with its link kept.
#[test]
fn f2b_damage_at_a_segments_end_hides_a_rewrite_of_the_next_segments_first_batch() {
    let (dir, segs) = new_log(400);
    assert!(segs.len() >= 3);
    let bytes0 = std::fs::read(&segs[0]).unwrap();
    let b0 = batches(&bytes0);
    let last = b0.last().unwrap().clone();
    let mut damaged = bytes0.clone();
    damaged[last.at.start + 40 + 24 + 1] ^= 0x40;
    std::fs::write(&segs[0], damaged).unwrap();
    let bytes1 = std::fs::read(&segs[1]).unwrap();
    let mut b1 = batches(&bytes1);
    forge(&mut b1[0]);
    std::fs::write(&segs[1], encode(&bytes1, &b1)).unwrap();
    let report = verify(dir.path());
    assert!(report.has_corruption(), "{report:?}");
    let before = report.has_tampering();
    enforcelog::log::repair_dir(dir.path()).unwrap();
    let after = verify(dir.path());
    assert!(
        before && after.has_tampering(),
        "batch {} was rewritten; before repair: {report:?}; after repair: {after:?}",
        b1[0].first
    );
}

/// Refuted: the rewrites in places tests/audit_chain.rs does not try (the
/// first batch of the log, the first batch of a later segment, a chained
/// batch after a genuine hole's successor) are all reported as tampering.
#[test]
fn r3_rewrites_at_the_log_start_and_segment_starts_are_tampering() {
    // First batch of the log.
    let (dir, segs) = new_log(300);
    let bytes = std::fs::read(&segs[0]).unwrap();
    let mut b = batches(&bytes);
    forge(&mut b[0]);
    std::fs::write(&segs[0], encode(&bytes, &b)).unwrap();
    let report = verify(dir.path());
    assert_eq!(report.first_tampered_offset(), Some(0), "{report:?}");
    assert!(!report.has_corruption(), "{report:?}");

    // First batch of the second segment.
    let (dir, segs) = new_log(300);
    let bytes = std::fs::read(&segs[1]).unwrap();
    let mut b = batches(&bytes);
    forge(&mut b[0]);
    std::fs::write(&segs[1], encode(&bytes, &b)).unwrap();
    let report = verify(dir.path());
    assert_eq!(
        report.first_tampered_offset(),
        Some(b[0].first),
        "{report:?}"
    );

    // Last batch of the log, link kept.
    let (dir, segs) = new_log(300);
    let path = segs.last().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let mut b = batches(&bytes);
    let k = b.len() - 1;
    forge(&mut b[k]);
    std::fs::write(path, encode(&bytes, &b)).unwrap();
    let report = verify(dir.path());
    assert_eq!(
        report.first_tampered_offset(),
        Some(b[k].first),
        "{report:?}"
    );

    // Second batch after a genuine hole (repair of damage): checked.
    let (dir, segs) = new_log(300);
    let bytes = std::fs::read(&segs[0]).unwrap();
    let b = batches(&bytes);
    let mut damaged = bytes.clone();
    damaged[b[3].at.start + 40 + 24 + 1] ^= 0x40;
    std::fs::write(&segs[0], damaged).unwrap();
    enforcelog::log::repair_dir(dir.path()).unwrap();
    assert!(verify(dir.path()).is_clean());
    let bytes = std::fs::read(&segs[0]).unwrap();
    let mut b2 = batches(&bytes);
    let k = b2.iter().position(|x| x.first == b[5].first).unwrap();
    forge(&mut b2[k]);
    std::fs::write(&segs[0], encode(&bytes, &b2)).unwrap();
    let report = verify(dir.path());
    assert_eq!(
        report.first_tampered_offset(),
        Some(b[5].first),
        "{report:?}"
    );
}

// ---------------------------------------------------------------------
// 1. False tampering on a healthy store.
// ---------------------------------------------------------------------

/// Refuted: repair of damage in a sealed segment and in the last segment,
/// then appends across reopens and rolls: verify finds no tampering.
#[test]
fn r1_repairs_then_appends_never_read_as_tampering() {
    for (seg, idx) in [(0usize, 2usize), (usize::MAX, 1), (usize::MAX, usize::MAX)] {
        let (dir, segs) = new_log(400);
        let seg = if seg == usize::MAX {
            segs.len() - 1
        } else {
            seg
        };
        let bytes = std::fs::read(&segs[seg]).unwrap();
        let b = batches(&bytes);
        let idx = if idx == usize::MAX { b.len() - 1 } else { idx };
        let mut damaged = bytes.clone();
        damaged[b[idx].at.start + 40 + 24 + 1] ^= 0x40;
        std::fs::write(&segs[seg], damaged).unwrap();
        // A writer first (it may seal the damaged segment and go on).
        let log = Log::open(dir.path(), options()).unwrap();
        let next = log.next_offset();
        append(&log, next, next + 50);
        log.close().unwrap();
        let report = verify(dir.path());
        assert!(!report.has_tampering(), "seg {seg} idx {idx}: {report:?}");
        enforcelog::log::repair_dir(dir.path()).unwrap();
        for _ in 0..3 {
            let log = Log::open(dir.path(), options()).unwrap();
            let next = log.next_offset();
            append(&log, next, next + 120);
            log.close().unwrap();
        }
        let report = verify(dir.path());
        assert!(!report.has_tampering(), "seg {seg} idx {idx}: {report:?}");
        assert!(report.is_clean(), "seg {seg} idx {idx}: {report:?}");
    }
}

/// Refuted: stale, wrong or missing index files (tail_link starts at the
/// last index entry) do not make the next writer chain wrongly.
#[test]
fn r1_stale_or_wrong_index_files_do_not_break_the_chain() {
    for variant in 0..4 {
        let (dir, segs) = new_log(400);
        let idx: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "idx"))
            .collect();
        let mut sorted = idx.clone();
        sorted.sort();
        for (k, p) in sorted.iter().enumerate() {
            match variant {
                0 => std::fs::remove_file(p).unwrap(),
                1 => std::fs::write(p, vec![0xA5; 333]).unwrap(),
                2 => {
                    // Another segment's index.
                    let other = &sorted[(k + 1) % sorted.len()];
                    std::fs::copy(other, p).unwrap();
                }
                _ => {
                    let mut bytes = std::fs::read(p).unwrap();
                    let len = bytes.len();
                    bytes.truncate(len / 2);
                    std::fs::write(p, bytes).unwrap();
                }
            }
        }
        let _ = &segs;
        let log = Log::open(dir.path(), options()).unwrap();
        let next = log.next_offset();
        append(&log, next, next + 200);
        log.close().unwrap();
        let report = verify(dir.path());
        assert!(!report.has_tampering(), "variant {variant}: {report:?}");
    }
}

fn sim_options(durability: Durability, seed: u64) -> LogOptions {
    LogOptions {
        segment_max_bytes: 4096 + (seed % 5) * 1024,
        preallocate_segments: seed.is_multiple_of(2),
        record_max_bytes: 1024,
        durability,
        index_interval_bytes: 256,
        ..LogOptions::default()
    }
}

/// Refuted: crashes in every mode and durability, a reopen, appends, a
/// second crash, a reopen and appends again: never tampering.
#[test]
fn r1_crashes_reopens_and_appends_never_read_as_tampering() {
    let modes = [
        CrashMode::LoseUnsynced,
        CrashMode::TearLastWrite,
        CrashMode::Reorder,
        CrashMode::TornSectors,
    ];
    for seed in 0..160u64 {
        let durability = match seed % 3 {
            0 => Durability::Fsync,
            1 => Durability::None,
            _ => Durability::Interval(Duration::from_micros(200 + seed * 7)),
        };
        let options = sim_options(durability, seed);
        let storage = SimStorage::new(seed);
        let dir = "/sim/log";
        let mut next = 0u64;
        for round in 0..3u64 {
            let log = match Log::open_with_storage(Arc::new(storage.clone()), dir, options.clone())
            {
                Ok(log) => log,
                Err(e) => panic!("seed {seed} round {round}: open: {e}"),
            };
            next = next.max(log.next_offset()).min(log.next_offset());
            let report = log.verify().unwrap();
            assert!(
                !report.has_tampering(),
                "seed {seed} round {round}: {report:?}"
            );
            storage.power_cut_after(20 + (seed * 13 + round * 7) % 60);
            let mut i = log.next_offset();
            for k in 0..40u64 {
                let n = 1 + (seed + k) % 4;
                let records: Vec<Record> = (i..i + n)
                    .map(|j| {
                        let mut p = payload(j);
                        if (seed + j) % 3 == 0 {
                            p.extend(std::iter::repeat_n(0u8, 300));
                        }
                        Record::new(1_764_000_000_000_000 + j as i64, p)
                    })
                    .collect();
                if log.append_batch_blocking(records).is_err() {
                    break;
                }
                i += n;
            }
            drop(log);
            storage.crash(modes[((seed + round) % 4) as usize]);
        }
        let log = Log::open_with_storage(Arc::new(storage.clone()), dir, options.clone()).unwrap();
        let n = log.next_offset();
        append(&log, n, n + 30);
        let report = log.verify().unwrap();
        assert!(!report.has_tampering(), "seed {seed} final: {report:?}");
        let _ = next;
    }
}

/// Refuted: a read-only verify while a writer appends and rolls segments
/// never reports tampering.
#[test]
fn r1_verify_during_appends_and_rolls_never_reads_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let opts = LogOptions {
        segment_max_bytes: 4096,
        record_max_bytes: 1 << 10,
        durability: Durability::None,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), opts).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let path = dir.path().to_path_buf();
    let s2 = stop.clone();
    let checker = std::thread::spawn(move || {
        let mut runs = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let report = enforcelog::verify_dir(&path).unwrap();
            assert!(!report.has_tampering(), "{report:?}");
            runs += 1;
        }
        runs
    });
    append(&log, 0, 3000);
    let r = log.verify().unwrap();
    assert!(!r.has_tampering(), "{r:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs = checker.join().unwrap();
    assert!(runs > 0);
    log.close().unwrap();
}

// ---------------------------------------------------------------------
// 2. Torn or flipped chained trailers.
// ---------------------------------------------------------------------

/// Refuted: every single bit of the last (chained) batch of the log
/// flipped, and each sector-sized loss (512 zero bytes) across it: verify
/// reports corruption or a torn tail, never tampering; a writer reopens,
/// appends, and still no tampering (a sample of positions).
#[test]
fn r2_flipped_or_zeroed_bits_of_a_chained_batch_are_never_tampering() {
    let (dir, segs) = new_log(300);
    let path = segs.last().unwrap().clone();
    let pristine = std::fs::read(&path).unwrap();
    let b = batches(&pristine);
    // The last batch and the one before (a sealed-like middle position).
    for target in [b.len() - 1, b.len() / 2] {
        let range = b[target].at.clone();
        for bit in 0..range.len() * 8 {
            let mut bytes = pristine.clone();
            bytes[range.start + bit / 8] ^= 1 << (bit % 8);
            std::fs::write(&path, &bytes).unwrap();
            let report = verify(dir.path());
            assert!(
                !report.has_tampering(),
                "batch {target} bit {bit}: {report:?}"
            );
            if bit % 97 == 0 {
                // A copy of the directory, reopened by a writer.
                let copy = tempfile::tempdir().unwrap();
                for e in std::fs::read_dir(dir.path()).unwrap() {
                    let e = e.unwrap();
                    if e.file_type().unwrap().is_file() && e.file_name() != "LOCK" {
                        std::fs::copy(e.path(), copy.path().join(e.file_name())).unwrap();
                    }
                }
                let log = Log::open(copy.path(), options()).unwrap();
                let n = log.next_offset();
                append(&log, n, n + 7);
                log.close().unwrap();
                let report = verify(copy.path());
                assert!(
                    !report.has_tampering(),
                    "batch {target} bit {bit} after reopen: {report:?}"
                );
            }
        }
        for start in (range.start..range.end).step_by(37) {
            let mut bytes = pristine.clone();
            let end = (start + 512).min(bytes.len());
            bytes[start..end].fill(0);
            std::fs::write(&path, &bytes).unwrap();
            let report = verify(dir.path());
            assert!(!report.has_tampering(), "zeros at {start}: {report:?}");
        }
    }
}

// ---------------------------------------------------------------------
// 5. Hostile bytes.
// ---------------------------------------------------------------------

/// Refuted: decode_batch and flipped_bit on mutated chained batches (the
/// trailer rewritten with hostile bytes, lengths changed) never panic.
#[test]
fn r5_hostile_chained_trailers_do_not_panic() {
    let mut good = Vec::new();
    let records: Vec<Record> = (0..3).map(|i| Record::new(i, payload(i as u64))).collect();
    encode_chained_batch(&mut good, 7, &records, &GENESIS);
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20000 {
        let mut bytes = good.clone();
        let kind = rnd() % 4;
        match kind {
            0 => {
                let at = bytes.len() - 1 - (rnd() as usize % 48);
                bytes[at] = rnd() as u8;
            }
            1 => {
                let cut = rnd() as usize % bytes.len();
                bytes.truncate(cut);
            }
            2 => {
                let len = bytes.len();
                bytes[len - 4..].copy_from_slice(if rnd() % 2 == 0 { b"EEND" } else { b"ECHD" });
                let at = rnd() as usize % len;
                bytes[at] ^= 1 << (rnd() % 8);
            }
            _ => {
                bytes.extend(std::iter::repeat_n(rnd() as u8, rnd() as usize % 64));
            }
        }
        let _ = decode_batch(&bytes, None).map(|v| (v.compute_link(), v.link_after(&GENESIS)));
        let _ = decode_batch(&bytes, Some(7));
        let _ = enforcelog::format::flips::flipped_bit(&bytes, 7);
    }
}

// ---------------------------------------------------------------------
// Format 1 and VERSION.
// ---------------------------------------------------------------------

/// Finding 3: a format 1 log (never chained) whose VERSION file is lost is
/// checked as format 2, and every one of its batches is reported as
/// tampering: an operator is told the whole history was rewritten when a
/// single small file is missing. (The loss itself is already a Layout
/// problem.)
#[test]
fn f3_a_format_1_log_that_lost_its_version_file_is_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("VERSION"), "enforcelog-log 1\n").unwrap();
    let log = Log::open(dir.path(), options()).unwrap();
    append(&log, 0, 100);
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("VERSION")).unwrap();
    let report = verify(dir.path());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == ProblemKind::Layout),
        "{report:?}"
    );
    assert!(
        !report.has_tampering(),
        "{} batches reported as tampering: {:?}",
        report
            .problems
            .iter()
            .filter(|p| p.kind == ProblemKind::Tampering)
            .count(),
        report.problems.first()
    );
}

// ---------------------------------------------------------------------
// 4. Heads.
// ---------------------------------------------------------------------

fn event(i: u64) -> enforcelog::Event {
    enforcelog::Event::new(
        format!("tenant-{}", i % 7),
        format!("rule-{}", i % 13),
        enforcelog::Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{}", i / 10))
}

fn record_events(store: &enforcelog::Store, from: u64, to: u64) {
    let mut at = from;
    while at < to {
        let mut batch = store.begin();
        for i in at..to.min(at + 10) {
            batch.record(event(i)).expect("valid event");
        }
        batch.commit_blocking().expect("commit");
        at = to.min(at + 10);
    }
}

/// Finding 1 at the store: after a forged hole, `Store::head` signed the
/// history with the batch after the hole rewritten (an event's bytes
/// replaced, checksums fixed, link kept), since the chain check accepted
/// it. Fixed: each batch stores the link before it and checks itself.
#[test]
fn f1b_store_head_signs_a_history_rewritten_behind_a_forged_hole() {
    use enforcelog::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    record_events(&store, 0, 200);
    store.close().unwrap();
    let path = segments(dir.path())[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    let mut b = batches(&bytes);
    assert!(b.len() > 4, "{}", b.len());
    let i = 2;
    let n = b[i].records.len() as u64;
    let ts = b[i].records[0].timestamp_us;
    b[i].records = (0..n)
        .map(|_| Record::new(ts, lost_payload(b[i].first, n)))
        .collect();
    b[i].link = None;
    // The next batch's first event replaced by another batch's event.
    b[i + 1].records[0].payload = b[0].records[0].payload.clone();
    // The segment keeps at least its length (DURABLE names it): the
    // rewritten event padded by what the hole saves.
    let short = bytes.len() - encode(&bytes, &b).len();
    b[i + 1].records[0]
        .payload
        .extend(std::iter::repeat_n(0u8, short));
    let forged = encode(&bytes, &b);
    assert_eq!(forged.len(), bytes.len());
    std::fs::write(&path, forged).unwrap();
    // Fixed: the batch after the hole checks its own records against the
    // link before it stores.
    let report = verify(dir.path());
    assert_eq!(
        report.first_tampered_offset(),
        Some(b[i + 1].first),
        "{report:?}"
    );
    let store = Store::open_read_only(dir.path()).unwrap();
    let head = store.head();
    assert!(
        matches!(head, Err(enforcelog::Error::Tampering { .. })),
        "a head over a rewritten history: {head:?}"
    );
}

/// Refuted: a plain rewrite (no hole) in the first batch of the log: the
/// store's head is refused with Error::Tampering naming offset 0.
#[test]
fn r4_store_head_is_refused_naming_the_first_batch() {
    use enforcelog::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    record_events(&store, 0, 200);
    store.close().unwrap();
    let path = segments(dir.path())[0].clone();
    let bytes = std::fs::read(&path).unwrap();
    let mut b = batches(&bytes);
    b[0].records[0].payload = b[1].records[0].payload.clone();
    std::fs::write(&path, encode(&bytes, &b)).unwrap();
    let store = Store::open_read_only(dir.path()).unwrap();
    match store.head() {
        Err(enforcelog::Error::Tampering { first_offset, .. }) => assert_eq!(first_offset, 0),
        other => panic!("{other:?}"),
    }
}

/// Refuted: injected write, fsync, fill, create, rename and directory sync
/// failures (the writer poisoned, its unsynced pages perhaps dropped), a
/// reopen with no crash, appends, a crash, a reopen, appends: never
/// tampering.
#[test]
fn r1_failed_writes_and_fsyncs_then_reopens_never_read_as_tampering() {
    use enforcelog::storage::sim::{FaultKind, FaultOp};
    let ops = [
        FaultOp::Write,
        FaultOp::SyncData,
        FaultOp::WriteZeros,
        FaultOp::Create,
        FaultOp::Rename,
        FaultOp::SyncDir,
    ];
    let modes = [
        CrashMode::LoseUnsynced,
        CrashMode::TearLastWrite,
        CrashMode::Reorder,
        CrashMode::TornSectors,
    ];
    for seed in 0..240u64 {
        let durability = match seed % 3 {
            0 => Durability::Fsync,
            1 => Durability::None,
            _ => Durability::Interval(Duration::from_micros(300)),
        };
        let options = sim_options(durability, seed);
        let storage = SimStorage::new(seed);
        let dir = "/sim/log";
        let write = |log: &Log, k0: u64| {
            let mut i = log.next_offset();
            for k in 0..30u64 {
                let n = 1 + (seed + k + k0) % 4;
                let records: Vec<Record> = (i..i + n)
                    .map(|j| Record::new(1_764_000_000_000_000 + j as i64, payload(j)))
                    .collect();
                if log.append_batch_blocking(records).is_err() {
                    return;
                }
                i += n;
            }
        };
        let log = Log::open_with_storage(Arc::new(storage.clone()), dir, options.clone()).unwrap();
        write(&log, 0);
        let op = ops[(seed % 6) as usize];
        let kind = if seed % 5 == 0 {
            FaultKind::NoSpace
        } else {
            FaultKind::Io
        };
        storage.inject(op, (seed / 6) % 12, kind, seed % 7 == 0);
        write(&log, 1);
        write(&log, 2);
        drop(log);
        storage.clear_faults();
        // A reopen in the same "process" (no crash).
        if let Ok(log) = Log::open_with_storage(Arc::new(storage.clone()), dir, options.clone()) {
            write(&log, 3);
            let report = log.verify().unwrap();
            assert!(!report.has_tampering(), "seed {seed} reopen: {report:?}");
            drop(log);
        }
        storage.crash(modes[(seed % 4) as usize]);
        let log = Log::open_with_storage(Arc::new(storage.clone()), dir, options.clone()).unwrap();
        write(&log, 4);
        let report = log.verify().unwrap();
        assert!(!report.has_tampering(), "seed {seed} final: {report:?}");
    }
}

/// Refuted: shards of one directory written in turn, with small segments
/// (rolls) and reopens, while read-only views verify and take heads: no
/// tampering, and heads of every shard are given.
#[test]
fn r1_shards_with_rolls_reopens_and_concurrent_heads_never_read_as_tampering() {
    use enforcelog::{Store, StoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::default();
    options.log.segment_max_bytes = 8 << 10;
    options.log.record_max_bytes = 2 << 10;
    for round in 0..3u64 {
        let a = Store::open(dir.path(), options.clone()).unwrap();
        let b = Store::open(dir.path(), options.clone()).unwrap();
        let path = dir.path().to_path_buf();
        let checker = std::thread::spawn(move || {
            for _ in 0..20 {
                let view = Store::open_read_only(&path).unwrap();
                for report in verify_all(&path) {
                    assert!(!report.has_tampering(), "{report:?}");
                }
                if let Ok(heads) = view.heads() {
                    assert!(!heads.is_empty());
                }
            }
        });
        for k in 0..5 {
            record_events(&a, round * 1000 + k * 40, round * 1000 + k * 40 + 40);
            record_events(&b, round * 1000 + k * 20, round * 1000 + k * 20 + 20);
        }
        checker.join().unwrap();
        for s in [&a, &b] {
            s.heads().unwrap();
        }
        let reports = verify_all(dir.path());
        assert!(reports.len() >= 2, "{}", reports.len());
        for report in reports {
            assert!(!report.has_tampering(), "round {round}: {report:?}");
        }
        a.close().unwrap();
        b.close().unwrap();
    }
}

/// Verifies every log directory (one holding a VERSION file) under `dir`.
fn verify_all(dir: &Path) -> Vec<VerifyReport> {
    let mut out = Vec::new();
    if dir.join("VERSION").exists() {
        out.push(enforcelog::verify_dir(dir).unwrap());
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(verify_all(&e.path()));
        }
    }
    out
}

/// Refuted: a damaged segment header (sealed and last), a foreign header,
/// and a missing middle segment (a gap: later segments moved out whole),
/// each repaired, then appends across reopens: never tampering.
#[test]
fn r1_header_damage_and_gaps_repaired_then_appended_never_read_as_tampering() {
    for variant in 0..5 {
        let (dir, segs) = new_log(500);
        assert!(segs.len() >= 4);
        match variant {
            0 | 1 => {
                let p = if variant == 0 {
                    &segs[1]
                } else {
                    segs.last().unwrap()
                };
                let mut bytes = std::fs::read(p).unwrap();
                bytes[10] ^= 0x21;
                std::fs::write(p, bytes).unwrap();
            }
            2 => {
                let p = &segs[1];
                let mut bytes = std::fs::read(p).unwrap();
                // A header naming another base offset.
                bytes[16] ^= 0x01;
                std::fs::write(p, bytes).unwrap();
            }
            3 => {
                std::fs::remove_file(&segs[2]).unwrap();
                let _ = std::fs::remove_file(segs[2].with_extension("idx"));
            }
            _ => {
                // A sealed segment cut to its header.
                let bytes = std::fs::read(&segs[1]).unwrap();
                std::fs::write(&segs[1], &bytes[..SEGMENT_HEADER_LEN]).unwrap();
            }
        }
        let before = verify(dir.path());
        assert!(!before.has_tampering(), "variant {variant}: {before:?}");
        enforcelog::log::repair_dir(dir.path()).unwrap();
        for _ in 0..2 {
            let log = Log::open(dir.path(), options()).unwrap();
            let next = log.next_offset();
            append(&log, next, next + 150);
            log.close().unwrap();
        }
        let report = verify(dir.path());
        assert!(!report.has_tampering(), "variant {variant}: {report:?}");
        assert!(report.is_clean(), "variant {variant}: {report:?}");
    }
}

/// Refuted: a crash right after a roll (the last segment holds only its
/// header) with the last sealed segment's index stale (another segment's,
/// garbage, or half of it): the writer still picks up the right link.
#[test]
fn r1_header_only_last_segment_with_a_stale_index_keeps_the_chain() {
    for variant in 0..3 {
        let (dir, segs) = new_log(300);
        let last = segs.last().unwrap();
        let b = batches(&std::fs::read(last).unwrap());
        let x = b.last().unwrap();
        let next_base = x.first + x.records.len() as u64;
        let header = std::fs::read(last).unwrap()[..SEGMENT_HEADER_LEN].to_vec();
        let fresh = enforcelog::format::SegmentHeader::decode(&header).unwrap();
        let empty = enforcelog::format::SegmentHeader {
            base_offset: next_base,
            ..fresh
        };
        std::fs::write(
            dir.path().join(format!("{next_base:020}.log")),
            empty.encode(),
        )
        .unwrap();
        let idx = last.with_extension("idx");
        match variant {
            0 => {
                std::fs::copy(segs[0].with_extension("idx"), &idx).unwrap();
            }
            1 => std::fs::write(&idx, vec![0x5Au8; 200]).unwrap(),
            _ => {
                if let Ok(bytes) = std::fs::read(&idx) {
                    std::fs::write(&idx, &bytes[..bytes.len() / 2]).unwrap();
                }
            }
        }
        let log = Log::open(dir.path(), options()).unwrap();
        append(&log, next_base, next_base + 20);
        log.close().unwrap();
        let report = verify(dir.path());
        assert!(!report.has_tampering(), "variant {variant}: {report:?}");
    }
}
