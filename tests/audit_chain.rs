//! The hash chain in the log's batches (log format 2, issue 18): every
//! rewrite the issue names is reported by `verify` as tampering, distinct
//! from corruption and from a torn tail; what the chain cannot see (a
//! rewrite with every later link recomputed) is documented in
//! docs/AUDIT.md and left to heads an auditor keeps.
//!
//! The rewrites here are made the way someone who can write the files
//! would: records re-encoded with valid checksums, through the format's own
//! encoder, so that no checksum can tell.

mod common;

use std::path::{Path, PathBuf};

use common::segment::segment_files;

use enforcelog::format::batch::{decode_batch, encode_batch, encode_chained_batch};
use enforcelog::format::chain::GENESIS;
use enforcelog::format::SEGMENT_HEADER_LEN;
use enforcelog::{Log, LogOptions, ProblemKind, Record, VerifyReport};

/// Payloads that look like events: text, then runs of zeros.
fn payload(i: u64) -> Vec<u8> {
    let mut p = format!("tenant-{}|rule-{}|BLOCKED|", i % 5, i % 11).into_bytes();
    p.extend(std::iter::repeat_n(0u8, (i % 37) as usize));
    p.extend_from_slice(&i.to_le_bytes());
    p
}

fn options() -> LogOptions {
    LogOptions {
        // Several segments from a few hundred records.
        segment_max_bytes: 16 << 10,
        record_max_bytes: 1 << 10,
        ..LogOptions::default()
    }
}

/// Appends records `from..to` in batches of 1 to 5.
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
    let segments = segment_files(dir.path());
    (dir, segments)
}

fn verify(dir: &Path) -> VerifyReport {
    enforcelog::verify_dir(dir).unwrap()
}

fn kinds(report: &VerifyReport) -> Vec<ProblemKind> {
    report.problems.iter().map(|p| p.kind).collect()
}

/// One decoded batch: its first offset, its records, its stored chain
/// trailer (the link before and its own link's tag), and its link.
#[derive(Clone)]
struct Batch {
    first: u64,
    records: Vec<Record>,
    trailer: Option<[u8; 40]>,
    link: Option<[u8; 32]>,
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
            trailer: view.prev().zip(view.link_tag()).map(|(prev, tag)| {
                let mut t = [0u8; 40];
                t[..32].copy_from_slice(&prev);
                t[32..].copy_from_slice(&tag);
                t
            }),
            link: view.compute_link(),
        });
        pos += view.len();
    }
    out
}

/// Encodes `batches` after the segment's header. `relink` from a link:
/// every batch chained again from it (what a careful forger does); `None`:
/// each batch keeps the chain trailer it carries.
fn encode(header: &[u8], batches: &[Batch], relink: Option<[u8; 32]>) -> Vec<u8> {
    let mut out = header[..SEGMENT_HEADER_LEN].to_vec();
    let mut link = relink;
    for b in batches {
        match (link, b.trailer) {
            (Some(prev), _) => {
                link = Some(encode_chained_batch(&mut out, b.first, &b.records, &prev))
            }
            (None, Some(stored)) => {
                let start = out.len();
                // Any trailer, then the stored one written over it (its
                // checksum recomputed): the forger's "keep the old link".
                encode_chained_batch(&mut out, b.first, &b.records, &GENESIS);
                let end = out.len();
                out[end - 48..end - 8].copy_from_slice(&stored);
                let crc = crc32fast::hash(&stored);
                out[end - 8..end - 4].copy_from_slice(&crc.to_le_bytes());
                assert!(decode_batch(&out[start..], Some(b.first)).is_ok());
            }
            (None, None) => encode_batch(&mut out, b.first, &b.records),
        }
    }
    out
}

/// The segment holding offset `offset` and the index of its batch there.
fn find(segments: &[PathBuf], offset: u64) -> (PathBuf, Vec<Batch>, usize) {
    for path in segments {
        let b = batches(&std::fs::read(path).unwrap());
        if let Some(i) = b
            .iter()
            .position(|x| (x.first..x.first + x.records.len() as u64).contains(&offset))
        {
            return (path.clone(), b, i);
        }
    }
    panic!("no batch holds offset {offset}");
}

fn assert_tampering_at(report: &VerifyReport, first_offset: u64) {
    assert!(report.has_tampering(), "{report:?}");
    assert!(!report.has_corruption(), "{report:?}");
    assert_eq!(
        report.first_tampered_offset(),
        Some(first_offset),
        "{report:?}"
    );
    // Besides, at most an index that no longer describes its segment
    // (derived data, rebuilt on open).
    assert!(
        kinds(report)
            .iter()
            .all(|k| matches!(k, ProblemKind::Tampering | ProblemKind::Index)),
        "{report:?}"
    );
}

#[test]
fn a_log_written_across_reopens_and_rolls_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..4u64 {
        let log = Log::open(dir.path(), options()).unwrap();
        append(&log, round * 150, (round + 1) * 150);
        log.close().unwrap();
    }
    assert!(segment_files(dir.path()).len() > 3);
    let report = verify(dir.path());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.records, 600);
    // Every batch carries a link, the first chained to the genesis link.
    let first = batches(&std::fs::read(&segment_files(dir.path())[0]).unwrap());
    assert!(first.iter().all(|b| b.link.is_some()));
    let version = std::fs::read_to_string(dir.path().join("VERSION")).unwrap();
    assert_eq!(version, "enforcelog-log 2\n");
}

#[test]
fn a_record_rewritten_with_its_checksum_is_tampering_at_its_batch() {
    let (dir, segs) = new_log(400);
    let (path, mut b, i) = find(&segs, 217);
    let header = std::fs::read(&path).unwrap();
    let k = (217 - b[i].first) as usize;
    let mut p = b[i].records[k].payload.clone();
    p[7] ^= 1; // tenant-2 <-> tenant-3
    b[i].records[k] = Record::new(b[i].records[k].timestamp_us, p);
    // Stored links kept: the batch's own link gives it away.
    std::fs::write(&path, encode(&header, &b, None)).unwrap();
    let report = verify(dir.path());
    assert_tampering_at(&report, b[i].first);
    assert_eq!(report.problems.len(), 1, "{report:?}");
}

#[test]
fn a_rewritten_record_whose_own_link_is_recomputed_is_caught_at_the_next_batch() {
    let (dir, segs) = new_log(400);
    let (path, mut b, i) = find(&segs, 100);
    assert!(i + 1 < b.len(), "the batch after it is in the same segment");
    let header = std::fs::read(&path).unwrap();
    b[i].records[0] = Record::new(
        b[i].records[0].timestamp_us + 1,
        b[i].records[0].payload.clone(),
    );
    // The forger recomputes the edited batch's link from its true
    // predecessor, and no other.
    let prev = if i == 0 { None } else { b[i - 1].link };
    let prev = prev.expect("a predecessor in the segment");
    let mut out = encode(&header, &b[..i], None);
    let link = encode_chained_batch(&mut out, b[i].first, &b[i].records, &prev);
    let rest = encode(&header, &b[i + 1..], None);
    out.extend_from_slice(&rest[SEGMENT_HEADER_LEN..]);
    assert_ne!(Some(link), b[i].link);
    std::fs::write(&path, out).unwrap();
    assert_tampering_at(&verify(dir.path()), b[i + 1].first);
}

#[test]
fn a_batch_removed_and_the_later_offsets_renumbered_is_tampering() {
    let (dir, segs) = new_log(500);
    // Remove one batch from the middle of the last segment and number
    // every later record down; every checksum valid, links kept.
    let last = segs.last().unwrap();
    let bytes = std::fs::read(last).unwrap();
    let mut b = batches(&bytes);
    assert!(b.len() > 4);
    let gone = b.remove(2);
    let shift = gone.records.len() as u64;
    for x in &mut b[2..] {
        x.first -= shift;
    }
    std::fs::write(last, encode(&bytes, &b, None)).unwrap();
    // The published durable end says the segment was longer: caught too.
    let report = verify(dir.path());
    assert!(
        report.has_corruption() && report.has_tampering(),
        "{report:?}"
    );
    // A forger who also removes it leaves only the chain to tell.
    std::fs::remove_file(dir.path().join("DURABLE")).unwrap();
    let report = verify(dir.path());
    assert_tampering_at(&report, b[2].first);
}

#[test]
fn a_sealed_segment_swapped_for_a_relinked_copy_of_another_history_is_tampering() {
    let (dir, segs) = new_log(600);
    assert!(segs.len() >= 3);
    // The forger rewrites every record of the second segment and links
    // the copy properly from the first segment's last link: the segment
    // verifies alone; the third segment's first batch does not follow it.
    let first = batches(&std::fs::read(&segs[0]).unwrap());
    let prev = first.last().unwrap().link.unwrap();
    let bytes = std::fs::read(&segs[1]).unwrap();
    let mut b = batches(&bytes);
    for x in &mut b {
        for r in &mut x.records {
            let mut p = r.payload.clone();
            p[7] = b'9';
            *r = Record::new(r.timestamp_us, p);
        }
    }
    std::fs::write(&segs[1], encode(&bytes, &b, Some(prev))).unwrap();
    let third = batches(&std::fs::read(&segs[2]).unwrap());
    assert_tampering_at(&verify(dir.path()), third[0].first);

    // Linked from the genesis instead (a copy made alone): caught at once.
    std::fs::write(&segs[1], encode(&bytes, &b, Some(GENESIS))).unwrap();
    assert_tampering_at(&verify(dir.path()), b[0].first);
}

#[test]
fn a_batch_stripped_of_its_link_is_tampering() {
    let (dir, segs) = new_log(300);
    let (path, mut b, i) = find(&segs, 50);
    let bytes = std::fs::read(&path).unwrap();
    // Unchained re-encoding of one batch, every other link kept.
    let mut out = encode(&bytes, &b[..i], None);
    b[i].trailer = None;
    let rest = encode(&bytes, &b[i..], None);
    out.extend_from_slice(&rest[SEGMENT_HEADER_LEN..]);
    std::fs::write(&path, out).unwrap();
    let report = verify(dir.path());
    assert_tampering_at(&report, b[i].first);
}

#[test]
fn a_chained_log_whose_version_file_says_1_is_tampering() {
    let (dir, _) = new_log(100);
    std::fs::write(dir.path().join("VERSION"), "enforcelog-log 1\n").unwrap();
    let report = verify(dir.path());
    assert_tampering_at(&report, 0);
    assert!(report.problems.len() > 1, "every chained batch is reported");
}

#[test]
fn a_log_of_format_1_is_read_written_and_verified_without_links() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("VERSION"), "enforcelog-log 1\n").unwrap();
    for round in 0..2u64 {
        let log = Log::open(dir.path(), options()).unwrap();
        append(&log, round * 200, (round + 1) * 200);
        log.close().unwrap();
    }
    let version = std::fs::read_to_string(dir.path().join("VERSION")).unwrap();
    assert_eq!(
        version, "enforcelog-log 1\n",
        "a format 1 log stays format 1"
    );
    for path in segment_files(dir.path()) {
        assert!(batches(&std::fs::read(path).unwrap())
            .iter()
            .all(|b| b.trailer.is_none()));
    }
    let report = verify(dir.path());
    assert!(report.is_clean(), "{report:?}");
    let log = Log::open_read_only(dir.path()).unwrap();
    let read: Vec<Vec<u8>> = log
        .read_from(0)
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect();
    assert_eq!(read, (0..400).map(payload).collect::<Vec<_>>());
}

#[test]
fn a_writer_continues_the_chain_from_a_sealed_segment_when_the_last_holds_only_its_header() {
    let (dir, segs) = new_log(300);
    // A crash right after a roll: the next segment exists with its header
    // and nothing else.
    let last = segs.last().unwrap();
    let next_base = {
        let b = batches(&std::fs::read(last).unwrap());
        let x = b.last().unwrap();
        x.first + x.records.len() as u64
    };
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
    let log = Log::open(dir.path(), options()).unwrap();
    append(&log, 300, 320);
    log.close().unwrap();
    let report = verify(dir.path());
    assert!(report.is_clean(), "{report:?}");
}

#[test]
fn a_long_log_checked_on_two_threads_reports_every_rewrite_in_log_order() {
    // More than the 4 MiB `verify` checks on one thread: the chain is
    // checked in two halves at once, each from what the bytes before it
    // say; cut between segments, or inside the one segment.
    long_log_rewrites(1 << 20, 6);
    long_log_rewrites(64 << 20, 1);
}

fn long_log_rewrites(segment_max_bytes: u64, min_segments: usize) {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_max_bytes,
        record_max_bytes: 1 << 10,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    let mut i = 0u64;
    while i < 100_000 {
        let records = (i..i + 50)
            .map(|j| Record::new(1_764_000_000_000_000 + j as i64, payload(j)))
            .collect();
        log.append_batch_blocking(records).unwrap();
        i += 50;
    }
    log.close().unwrap();
    let segs = segment_files(dir.path());
    assert!(segs.len() >= min_segments, "{} segments", segs.len());
    assert!(verify(dir.path()).is_clean());
    // One rewrite early, one late, each in a batch's middle record.
    let mut firsts = Vec::new();
    for offset in [1_025u64, 97_025] {
        let (path, mut b, i) = find(&segs, offset);
        let header = std::fs::read(&path).unwrap();
        let k = (offset - b[i].first) as usize;
        let mut p = b[i].records[k].payload.clone();
        p[0] ^= 0x20;
        b[i].records[k] = Record::new(b[i].records[k].timestamp_us, p);
        std::fs::write(&path, encode(&header, &b, None)).unwrap();
        firsts.push(b[i].first);
    }
    std::fs::remove_file(dir.path().join("DURABLE")).ok();
    let report = verify(dir.path());
    let tampered: Vec<u64> = report
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Tampering)
        .map(|p| {
            p.reason
                .split_whitespace()
                .nth(3)
                .unwrap()
                .trim_end_matches(':')
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(tampered, firsts, "{report:?}");
    assert_eq!(report.first_tampered_offset(), Some(firsts[0]));
    assert!(!report.has_corruption(), "{report:?}");
}

#[test]
fn a_rewrite_where_the_parallel_check_cuts_the_log_is_caught_at_the_next_batch() {
    // One segment of more than 4 MiB: `verify` cuts it near its middle
    // byte and checks the halves on two threads. A batch rewritten with
    // its link tag recomputed is caught by the next batch's `prev`; when
    // that next batch is the second half's first, only the check where the
    // halves meet sees it. Every batch around the middle is tried.
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        record_max_bytes: 1 << 10,
        ..LogOptions::default()
    };
    let log = Log::open(dir.path(), options).unwrap();
    let mut i = 0u64;
    while i < 100_000 {
        let records = (i..i + 50)
            .map(|j| Record::new(1_764_000_000_000_000 + j as i64, payload(j)))
            .collect();
        log.append_batch_blocking(records).unwrap();
        i += 50;
    }
    log.close().unwrap();
    std::fs::remove_file(dir.path().join("DURABLE")).ok();
    let segs = segment_files(dir.path());
    assert_eq!(segs.len(), 1);
    let path = &segs[0];
    let original = std::fs::read(path).unwrap();
    let b = batches(&original);
    let middle = b.len() / 2;
    for k in middle - 40..middle + 40 {
        let mut forged = b.clone();
        let mut p = forged[k].records[0].payload.clone();
        p[0] ^= 0x20;
        forged[k].records[0] = Record::new(forged[k].records[0].timestamp_us, p);
        // Chained again from its true `prev`: its own check passes.
        let prev = b[k - 1].link.unwrap();
        let mut out = encode(&original, &forged[..k], None);
        encode_chained_batch(&mut out, forged[k].first, &forged[k].records, &prev);
        let rest = encode(&original, &forged[k + 1..], None);
        out.extend_from_slice(&rest[SEGMENT_HEADER_LEN..]);
        assert_eq!(out.len(), original.len());
        std::fs::write(path, &out).unwrap();
        let report = verify(dir.path());
        assert_eq!(
            report.first_tampered_offset(),
            Some(b[k + 1].first),
            "batch {k} rewritten: {report:?}"
        );
    }
    std::fs::write(path, &original).unwrap();
    assert!(verify(dir.path()).is_clean());
}
