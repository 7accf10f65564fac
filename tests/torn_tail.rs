//! Torn tails on the real file system: every way the last batch of the last
//! segment can be left unfinished must be recognised as torn (not corrupt),
//! truncated away by a writer open, and left alone by a read-only open.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test torn_tail`.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use common::Rng;
use enforcelog::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use enforcelog::{verify_dir, Durability, Log, LogOptions, LogRecord, ProblemKind, Record};

const SEGMENT_NAME: &str = "00000000000000000000.log";

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    }
}

/// A closed log of one segment, and where its last batch lies.
struct Pristine {
    _dir: tempfile::TempDir,
    /// The segment file's bytes, the last batch included.
    segment: Vec<u8>,
    version: Vec<u8>,
    store_id: Vec<u8>,
    /// Records before the last batch.
    earlier: Vec<LogRecord>,
    /// Every record, the last batch included.
    all: Vec<LogRecord>,
    /// Segment length before the last batch was appended.
    before_len: usize,
    seed: u64,
}

/// Appends `batches` (record counts) and returns the records as read back.
fn append_batches(log: &Log, rng: &mut Rng, batches: &[usize]) -> Vec<LogRecord> {
    let mut appended = Vec::new();
    for &count in batches {
        let records: Vec<Record> = (0..count)
            .map(|_| {
                let len = usize::try_from(rng.next() % 60).expect("small");
                let ts = i64::try_from(rng.next() >> 2).expect("fits");
                Record::new(ts, rng.bytes(len))
            })
            .collect();
        let range = log
            .append_batch_blocking(records.clone())
            .expect("append a batch");
        for (offset, r) in range.zip(records) {
            appended.push(LogRecord {
                offset,
                timestamp_us: r.timestamp_us,
                payload: r.payload,
            });
        }
    }
    appended
}

/// Builds the pristine store: four earlier batches (some multi-record), then
/// a last batch of four records.
fn pristine() -> Pristine {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let log = Log::open(dir.path(), options()).expect("open");
    let earlier = append_batches(&log, &mut rng, &[1, 3, 1, 2]);
    log.close().expect("close");
    drop(log);
    let segment_path = dir.path().join(SEGMENT_NAME);
    let before_len = fs::read(&segment_path).expect("read segment").len();

    let log = Log::open(dir.path(), options()).expect("reopen");
    let last = append_batches(&log, &mut rng, &[4]);
    log.close().expect("close");
    drop(log);
    let segment = fs::read(&segment_path).expect("read segment");
    assert!(segment.len() > before_len, "the last batch added no bytes");
    let mut all = earlier.clone();
    all.extend(last);
    Pristine {
        segment,
        version: fs::read(dir.path().join("VERSION")).expect("read VERSION"),
        store_id: fs::read(dir.path().join("STORE_ID")).expect("read STORE_ID"),
        _dir: dir,
        earlier,
        all,
        before_len,
        seed,
    }
}

fn read_all(log: &Log) -> Vec<LogRecord> {
    log.read_from(0)
        .expect("read_from(0)")
        .collect::<Result<_, _>>()
        .expect("read every record")
}

/// Every file of `dir`, name to bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .expect("list directory")
        .map(|e| {
            let path = e.expect("directory entry").path();
            let bytes = fs::read(&path).expect("read file");
            (path, bytes)
        })
        .collect()
}

/// A scratch log directory that is reset to a given segment before each try.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(version: &[u8], store_id: &[u8]) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        fs::write(dir.path().join("VERSION"), version).expect("write VERSION");
        fs::write(dir.path().join("STORE_ID"), store_id).expect("write STORE_ID");
        Self { dir }
    }

    /// A scratch directory made by the library itself (VERSION file).
    fn made_by_open() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        Log::open(dir.path(), options())
            .and_then(|log| log.close())
            .expect("create an empty log");
        Self { dir }
    }

    /// Removes the durable end a writer open published (see `assert_torn`).
    fn forget_durable_end(&self) {
        let _ = fs::remove_file(self.dir.path().join("DURABLE"));
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn segment_path(&self) -> PathBuf {
        self.dir.path().join(SEGMENT_NAME)
    }

    fn segment_len(&self) -> usize {
        let len = fs::metadata(self.segment_path()).expect("stat").len();
        usize::try_from(len).expect("fits")
    }
}

/// Checks that the damaged segment in `scratch` is recognised as a torn
/// tail: offline verify says torn (not corrupt); a read-only open sees
/// `expected` and changes nothing; a writer open truncates the segment to
/// `valid_len`, keeps `expected`, verifies clean and appends after it.
fn assert_torn(scratch: &Scratch, expected: &[LogRecord], valid_len: usize, what: &str) {
    let offline = verify_dir(scratch.path()).expect("verify_dir");
    assert!(
        !offline.problems.is_empty()
            && offline
                .problems
                .iter()
                .all(|p| p.kind == ProblemKind::TornTail),
        "{what}: verify_dir should report only a torn tail: {offline:?}"
    );
    assert_read_only_sees(scratch, expected, what);
    let view = Log::open_read_only(scratch.path()).expect("read-only open");
    let report = view.verify().expect("verify through a read-only view");
    assert!(report.is_clean(), "{what}: read-only verify: {report:?}");
    drop(view);

    let log = Log::open(scratch.path(), options())
        .unwrap_or_else(|e| panic!("{what}: writer open failed: {e}"));
    assert_eq!(log.next_offset(), expected.len() as u64, "{what}");
    assert_eq!(read_all(&log), expected, "{what}: records after recovery");
    assert_eq!(scratch.segment_len(), valid_len, "{what}: not truncated");
    let report = log.verify().expect("verify");
    assert!(report.is_clean(), "{what}: {report:?}");
    let offset = log
        .append_blocking(Record::new(7, b"after the tear".to_vec()))
        .expect("append after recovery");
    assert_eq!(offset, expected.len() as u64, "{what}: append offset");
    log.close().expect("close");
    drop(log);
    let after = verify_dir(scratch.path()).expect("verify_dir");
    assert!(after.is_clean(), "{what}: after append: {after:?}");
    assert_eq!(after.records, expected.len() as u64 + 1, "{what}");
    // The writer published its durable end; the next case damages bytes it
    // covers, which a real tear never could (the writer open would rightly
    // call that corruption): start it from a store no writer has opened.
    scratch.forget_durable_end();
}

/// Checks that the segment in `scratch`, whose bytes from `valid_len` to
/// its end are all zeros, ends cleanly at `valid_len`: what a writer that
/// fills segments with zeros ahead of itself leaves when it stops
/// (`LogOptions::preallocate_segments`). No tool reports a problem, a
/// read-only open sees `expected` and changes nothing, a writer open keeps
/// the file as it is (no truncation) and appends right at `valid_len`, and
/// a close cuts the zeros left after that append.
fn assert_zero_tail(scratch: &Scratch, expected: &[LogRecord], valid_len: usize, what: &str) {
    let file_len = scratch.segment_len();
    let offline = verify_dir(scratch.path()).expect("verify_dir");
    assert!(offline.is_clean(), "{what}: verify_dir: {offline:?}");
    assert_eq!(offline.records, expected.len() as u64, "{what}");
    assert_read_only_sees(scratch, expected, what);
    let log = Log::open(scratch.path(), options())
        .unwrap_or_else(|e| panic!("{what}: writer open failed: {e}"));
    assert_eq!(log.next_offset(), expected.len() as u64, "{what}");
    assert_eq!(read_all(&log), expected, "{what}: records after recovery");
    assert_eq!(
        scratch.segment_len(),
        file_len,
        "{what}: the zeros were cut"
    );
    let offset = log
        .append_blocking(Record::new(7, b"over the zeros".to_vec()))
        .expect("append after recovery");
    assert_eq!(offset, expected.len() as u64, "{what}: append offset");
    let bytes = fs::read(scratch.segment_path()).expect("read");
    assert!(
        bytes[valid_len..].iter().any(|&b| b != 0),
        "{what}: the append did not land at byte {valid_len}"
    );
    log.close().expect("close");
    drop(log);
    let after = verify_dir(scratch.path()).expect("verify_dir");
    assert!(after.is_clean(), "{what}: after append: {after:?}");
    assert_eq!(after.records, expected.len() as u64 + 1, "{what}");
    let closed = fs::read(scratch.segment_path()).expect("read");
    assert_ne!(closed.last(), Some(&0), "{what}: closed with a zero tail");
    scratch.forget_durable_end();
}

/// A read-only open sees exactly `expected` and changes no file.
fn assert_read_only_sees(scratch: &Scratch, expected: &[LogRecord], what: &str) {
    let before = snapshot(scratch.path());
    let view = Log::open_read_only(scratch.path())
        .unwrap_or_else(|e| panic!("{what}: read-only open failed: {e}"));
    assert_eq!(view.next_offset(), expected.len() as u64, "{what}");
    assert_eq!(read_all(&view), expected, "{what}: read-only records");
    drop(view);
    assert!(
        snapshot(scratch.path()) == before,
        "{what}: the read-only open changed the directory"
    );
}

#[test]
fn every_truncation_of_the_last_batch_is_a_torn_tail() {
    let p = pristine();
    let scratch = Scratch::new(&p.version, &p.store_id);
    let path = scratch.segment_path();
    for cut in p.before_len..p.segment.len() {
        fs::write(&path, &p.segment).expect("copy the pristine segment");
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(cut as u64))
            .expect("truncate");
        let what = format!("cut at {cut} (seed {})", p.seed);
        if cut == p.before_len {
            // Cut exactly between batches: nothing is torn at all.
            let offline = verify_dir(scratch.path()).expect("verify_dir");
            assert!(offline.is_clean(), "{what}: {offline:?}");
            assert_read_only_sees(&scratch, &p.earlier, &what);
            let log = Log::open(scratch.path(), options()).expect("open");
            assert_eq!(read_all(&log), p.earlier, "{what}");
            assert_eq!(scratch.segment_len(), p.before_len, "{what}");
            continue;
        }
        if p.segment[p.before_len..cut].iter().all(|&b| b == 0) {
            // Only zeros of the last batch remain (its header CRC may begin
            // with a zero byte: seed 23051795916034): a zero tail, as a
            // writer that fills segments ahead of itself leaves.
            assert_zero_tail(&scratch, &p.earlier, p.before_len, &what);
            continue;
        }
        assert_torn(&scratch, &p.earlier, p.before_len, &what);
    }
}

#[test]
fn every_zero_filled_end_of_the_last_batch_is_a_torn_tail() {
    let p = pristine();
    let scratch = Scratch::new(&p.version, &p.store_id);
    let len = p.segment.len();
    for cut in p.before_len..len {
        let mut bytes = p.segment.clone();
        bytes[cut..].fill(0);
        fs::write(scratch.segment_path(), &bytes).expect("write the segment");
        let what = format!("zeros from {cut} (seed {})", p.seed);
        if cut == len - 1 && !cut.is_multiple_of(SECTOR_BYTES) {
            // Only the trailer's last byte, `D` (two bits set), reads zero,
            // and no sector starts there: that is what two flipped bits
            // leave, not a lost sector (see `a_zeroed_last_byte_...`).
            continue;
        }
        if p.segment[p.before_len..cut].iter().all(|&b| b == 0) {
            // Nothing of the last write reached the disk, or only bytes
            // that were zeros anyway (its header CRC may begin with a zero
            // byte: seed 23051795916034): zeros from a batch boundary to
            // the end are the end of the log, whatever was meant to be
            // there.
            assert_zero_tail(&scratch, &p.earlier, p.before_len, &what);
            continue;
        }
        assert_torn(&scratch, &p.earlier, p.before_len, &what);
    }
}

/// Sector size the recovery rules assume (a sector is written whole or not).
const SECTOR_BYTES: usize = 512;

#[test]
fn a_zeroed_last_byte_inside_a_sector_is_corruption_not_a_torn_tail() {
    let p = pristine();
    let scratch = Scratch::new(&p.version, &p.store_id);
    let len = p.segment.len();
    let mut bytes = p.segment.clone();
    bytes[len - 1] = 0;
    fs::write(scratch.segment_path(), &bytes).expect("write the segment");
    let what = format!("last byte zeroed (seed {})", p.seed);
    if (len - 1).is_multiple_of(SECTOR_BYTES) {
        // A sector starts at the last byte: losing it leaves the same bytes.
        assert_torn(&scratch, &p.earlier, p.before_len, &what);
        return;
    }
    let offline = verify_dir(scratch.path()).expect("verify_dir");
    assert!(offline.has_corruption(), "{what}: {offline:?}");
    assert!(
        offline
            .problems
            .iter()
            .all(|p| p.kind != ProblemKind::TornTail),
        "{what}: {offline:?}"
    );
    // Corruption in the active segment: a writer open either refuses or
    // (issue 13, item 7) seals the segment as found and records on in a new
    // one. Never a cut.
    match Log::open(scratch.path(), options()) {
        Err(error) => assert!(
            matches!(error, enforcelog::Error::Corruption { .. }),
            "{what}: {error}"
        ),
        Ok(log) => {
            assert!(
                log.next_offset() > p.earlier.len() as u64,
                "{what}: the damaged segment was cut"
            );
            log.close().expect("close");
        }
    }
    assert!(
        fs::read(scratch.segment_path()).expect("read") == bytes,
        "{what}: the open changed the damaged segment"
    );
}

/// A last write of zero-heavy records that loses any set of its sectors
/// (as `CrashMode::TornSectors` does) is still a torn tail, although whole
/// zero sectors are ordinary data inside its records.
#[test]
fn lost_sectors_of_a_zero_heavy_last_write_are_a_torn_tail() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let log = Log::open(dir.path(), options()).expect("open");
    let earlier = append_batches(&log, &mut rng, &[2, 1]);
    log.close().expect("close");
    drop(log);
    let segment_path = dir.path().join(SEGMENT_NAME);
    let before_len = fs::read(&segment_path).expect("read").len();
    let log = Log::open(dir.path(), options()).expect("reopen");
    // One batch, one write: zero-heavy payloads whose non-zero bytes come
    // in runs of several high-weight bytes (a lost sector whose only
    // content was one byte with one bit set could not be told from a
    // flipped bit; recovery calls that corruption, see its module docs).
    let records: Vec<Record> = (0..3)
        .map(|i| {
            let mut payload = vec![0u8; 700 + 300 * i];
            for at in [0, 350 + 10 * i] {
                payload[at..at + 8].copy_from_slice(&rng.next().to_le_bytes());
                payload[at] |= 0xF0;
                payload[at + 7] |= 0x0F;
            }
            Record::new(i64::try_from(i).expect("small") + 5, payload)
        })
        .collect();
    log.append_batch_blocking(records).expect("append");
    log.close().expect("close");
    drop(log);
    let segment = fs::read(&segment_path).expect("read");
    let version = fs::read(dir.path().join("VERSION")).expect("read VERSION");
    let store_id = fs::read(dir.path().join("STORE_ID")).expect("read STORE_ID");
    let scratch = Scratch::new(&version, &store_id);
    // The write's pieces: its part of each 512-byte sector.
    let mut pieces = Vec::new();
    let mut start = before_len;
    while start < segment.len() {
        let end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(segment.len());
        pieces.push(start..end);
        start = end;
    }
    let tries = 300.min((1u64 << pieces.len()) - 1);
    for _ in 0..tries {
        let lost = rng.next() & ((1u64 << pieces.len()) - 1);
        let mut bytes = segment.clone();
        for (i, piece) in pieces.iter().enumerate() {
            if lost >> i & 1 == 1 {
                bytes[piece.clone()].fill(0);
            }
        }
        if bytes == segment {
            continue;
        }
        fs::write(scratch.segment_path(), &bytes).expect("write the segment");
        let what = format!("lost pieces {lost:#b} of {pieces:?} (seed {seed})");
        if bytes[before_len..].iter().all(|&b| b == 0) {
            // What survived of the write held only zeros: as if none did.
            assert_zero_tail(&scratch, &earlier, before_len, &what);
            continue;
        }
        assert_torn(&scratch, &earlier, before_len, &what);
    }
}

#[test]
fn a_garbage_tail_after_the_last_batch_is_torn() {
    let p = pristine();
    let mut rng = Rng(p.seed ^ 0x6761_7262_6167_6521);
    let scratch = Scratch::new(&p.version, &p.store_id);
    for len in [1, 3, 23, 24, 25, 39, 40, 41, 64, 100, 333, 1000] {
        let mut bytes = p.segment.clone();
        bytes.extend(rng.non_zero_bytes(len));
        fs::write(scratch.segment_path(), &bytes).expect("write the segment");
        let what = format!("{len} garbage bytes (seed {})", p.seed);
        assert_torn(&scratch, &p.all, p.segment.len(), &what);
    }
}

/// The only segment holds `header_bytes` and nothing else, as left by a
/// crash while it was being created: a writer open makes it again.
fn assert_recreated(scratch: &Scratch, header_bytes: &[u8], what: &str) {
    fs::write(scratch.segment_path(), header_bytes).expect("write the segment");
    assert_read_only_sees(scratch, &[], what);
    let log = Log::open(scratch.path(), options())
        .unwrap_or_else(|e| panic!("{what}: writer open failed: {e}"));
    assert_eq!(log.next_offset(), 0, "{what}");
    assert_eq!(
        fs::read(scratch.segment_path()).expect("read segment"),
        SegmentHeader {
            store_tag: log.store_id().expect("a writer has a store id").tag(),
            base_offset: 0,
        }
        .encode(),
        "{what}: the segment was not created again"
    );
    assert!(log.verify().expect("verify").is_clean(), "{what}");
    let offset = log
        .append_blocking(Record::new(1, b"first".to_vec()))
        .expect("append");
    assert_eq!(offset, 0, "{what}");
    log.close().expect("close");
    drop(log);
    let reopened = Log::open_read_only(scratch.path()).expect("read-only open");
    let records = read_all(&reopened);
    assert_eq!(records.len(), 1, "{what}");
    assert_eq!(records[0].payload, b"first", "{what}");
    drop(reopened);
    // The close published a durable end covering "first"; the next case
    // is a segment whose creation did not finish, which no durable end
    // covers (a cut of a covered one is a loss: tests/durable_cut.rs).
    scratch.forget_durable_end();
}

#[test]
fn a_segment_header_cut_short_is_created_again() {
    let header = SegmentHeader {
        store_tag: 0,
        base_offset: 0,
    }
    .encode();
    let scratch = Scratch::made_by_open();
    for cut in 0..SEGMENT_HEADER_LEN {
        assert_recreated(&scratch, &header[..cut], &format!("header cut at {cut}"));
    }
}

#[test]
fn a_segment_header_written_partly_then_zeros_is_created_again() {
    let header = SegmentHeader {
        store_tag: 0,
        base_offset: 0,
    }
    .encode();
    let scratch = Scratch::made_by_open();
    let damaged = |written: usize| {
        let mut bytes = header;
        bytes[written..].fill(0);
        bytes
    };
    // First list every case a writer open refuses, to report them all.
    let refused: Vec<String> = (0..SEGMENT_HEADER_LEN)
        .filter_map(|written| {
            fs::write(scratch.segment_path(), damaged(written)).expect("write the segment");
            let error = Log::open(scratch.path(), options()).err()?;
            Some(format!("written up to {written}: {error}"))
        })
        .collect();
    assert!(
        refused.is_empty(),
        "a segment holding only a partly written header (then zeros) is refused:\n{}",
        refused.join("\n")
    );
    for written in 0..SEGMENT_HEADER_LEN {
        let what = format!("header written up to {written}, then zeros");
        assert_recreated(&scratch, &damaged(written), &what);
    }
}

#[test]
fn verify_calls_an_unfinished_segment_header_torn_not_corrupt() {
    let header = SegmentHeader {
        store_tag: 0,
        base_offset: 0,
    }
    .encode();
    let scratch = Scratch::made_by_open();
    let mut wrong = Vec::new();
    for cut in 0..SEGMENT_HEADER_LEN {
        fs::write(scratch.segment_path(), &header[..cut]).expect("write the segment");
        let offline = verify_dir(scratch.path()).expect("verify_dir");
        if offline.has_corruption() {
            wrong.push(format!("cut at {cut}, verify_dir: {:?}", offline.problems));
        }
        let view = Log::open_read_only(scratch.path()).expect("read-only open");
        assert_eq!(view.next_offset(), 0, "cut at {cut}");
        let live = view.verify().expect("verify through a read-only view");
        if live.has_corruption() {
            wrong.push(format!(
                "cut at {cut}, read-only Log::verify: {:?}",
                live.problems
            ));
        }
    }
    // A writer open recreates such a segment (see the test above) and a
    // read-only open treats it as empty: it is an unfinished creation.
    assert!(
        wrong.is_empty(),
        "an unfinished segment header is reported as corruption:\n{}",
        wrong.join("\n")
    );
}
