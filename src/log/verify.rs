//! Checking a whole log directory and reporting every problem.
//!
//! Unlike open, which stops at the first problem, verification resumes after
//! each damaged region at the next batch that verifies, so one report lists
//! all of them. It never changes anything on disk.

use std::path::{Path, PathBuf};

use std::sync::Arc;

use super::chain::ChainCheck;
use super::dir;
use super::durable_end;
use super::identity;
use super::recovery::{self, scan, unfinished_creation, Stop};
use super::repair::next_valid;
use super::segment::IndexBuilder;
use crate::audit::merkle::{record_leaf_hash, Hash};
use crate::audit::tree::{BlockFold, LogTree};
use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::format::batch::{decode_batch, decode_header, decode_verified_batch};
use crate::format::chain::link_of_leaves;
use crate::format::chain::GENESIS;
use crate::format::index_file::SegmentIndex;
use crate::format::{SegmentHeader, LOG_FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::storage::{read_prefix, Mapped, OpenMode, Storage};

/// What kind of problem verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// Damaged data: bytes that cannot be what the writer wrote.
    Corruption,
    /// An unfinished write at the end of the last segment. The next writer
    /// open truncates it; nothing acknowledged is lost.
    TornTail,
    /// A missing or stale index file. Derived data: the next open rebuilds it.
    Index,
    /// Files missing or out of place: a gap between segments, a bad version file.
    Layout,
    /// A batch whose checksums match but whose chain link does not fit its
    /// records and the batch before it (log format 2): the batch was
    /// rewritten, not damaged. See `docs/AUDIT.md` for what this does and
    /// does not catch.
    Tampering,
}

/// One problem found by verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The file concerned.
    pub path: PathBuf,
    /// Byte position in that file.
    pub position: u64,
    /// What is wrong.
    pub reason: String,
}

/// The result of [`Log::verify`](crate::Log::verify) or [`verify_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Batches that verified.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// Of those records, how many are holes: offsets whose records damage
    /// destroyed and a repair replaced (information, not a problem: the
    /// log is consistent, and the loss is visible to every reader).
    pub lost: u64,
    /// The offset after the last record that verified.
    pub next_offset: u64,
    /// Every problem found: those of the files in file and position
    /// order, then the batches whose chain shows they were rewritten
    /// ([`ProblemKind::Tampering`]) in log order.
    pub problems: Vec<Problem>,
    /// The first offsets of the batches reported as tampering, in order.
    tampered_at: Vec<u64>,
}

impl VerifyReport {
    /// True when nothing at all is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// True when some data is damaged (not just a torn tail or an index).
    pub fn has_corruption(&self) -> bool {
        self.problems
            .iter()
            .any(|p| matches!(p.kind, ProblemKind::Corruption | ProblemKind::Layout))
    }

    /// True when a batch's chain shows it was rewritten.
    pub fn has_tampering(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.kind == ProblemKind::Tampering)
    }

    /// The first offset of the first batch reported as tampered with.
    pub fn first_tampered_offset(&self) -> Option<u64> {
        self.tampered_at.first().copied()
    }

    /// The first tampering found, as the error an operation that needs an
    /// untampered log (a tree head) fails with.
    pub fn tampering_error(&self) -> Option<Error> {
        let first = self
            .problems
            .iter()
            .find(|p| p.kind == ProblemKind::Tampering)?;
        Some(Error::Tampering {
            path: first.path.clone(),
            position: first.position,
            first_offset: self.tampered_at[0],
            reason: first.reason.clone(),
        })
    }
}

/// Verifies the log in `dir` without opening it (no lock, no change), on the
/// real file system: what an operator runs on a log that does not open.
pub fn verify_dir(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    Ok(verify(&crate::storage::FileStorage, dir.as_ref(), None, None, None)?.0)
}

/// Verifies `dir`. With `committed = Some((base, len))`, the segment at
/// `base` is checked only up to `len` (what a live writer has committed);
/// with `must_hold = Some(d)` (a live handle: the durable length its
/// writer published for that segment), a segment file shorter than `d` is
/// reported: acknowledged, durable records are missing from it. Without a
/// handle (`committed = None`), the same check is made against the durable
/// end published in the directory (`DURABLE`), for the segment it names.
///
/// With `fold_to = Some(n)`, the same pass also hashes the first `n`
/// records into their Merkle tree (the leaves the chain check computes
/// anyway): returned when the records it saw run from offset 0 without a
/// gap (a tree head's caller still checks its size and the report).
pub(crate) fn verify(
    storage: &dyn Storage,
    dir: &Path,
    committed: Option<(u64, u64)>,
    must_hold: Option<u64>,
    fold_to: Option<u64>,
) -> Result<(VerifyReport, Option<LogTree>)> {
    // Offline, what the last writer published as durable (an invalid or
    // missing file: nothing to check against). Read before the listing, as
    // a read-only open does: a writer creates a segment before it names it,
    // so the listing then holds every segment this end names.
    let published = match committed {
        None => durable_end::load(storage, dir).ok().flatten(),
        Some(_) => None,
    };
    let listing = dir::list(storage, dir)?;
    let mut report = VerifyReport::default();
    let problem = |report: &mut VerifyReport, kind, path: &Path, position, reason: String| {
        report.problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            position,
            reason,
        })
    };
    if !listing.has_version {
        problem(
            &mut report,
            ProblemKind::Layout,
            &dir.join(dir::VERSION_FILE),
            0,
            "missing version file".into(),
        );
    }
    // A log whose version cannot be read is checked as its first batch
    // says (chained or not), in `Pieces::check`: a chained log must not
    // escape the check by losing its VERSION file, nor a format 1 log be
    // read as tampered throughout (review 33 finding 3).
    let mut version = None;
    if listing.has_version {
        match dir::check_version(storage, dir) {
            Ok(v) => version = Some(v),
            Err(e) => problem(
                &mut report,
                ProblemKind::Layout,
                &dir.join(dir::VERSION_FILE),
                0,
                e.to_string(),
            ),
        }
    }
    let mut chain = Pieces {
        chained: version.map(|v| v >= 2),
        state: Start::Genesis,
        segments: Vec::new(),
        pieces: Vec::new(),
    };
    let store_id = match identity::load(storage, dir) {
        Ok(id) => id,
        Err(e) => {
            let path = dir.join(identity::STORE_ID_FILE);
            problem(&mut report, ProblemKind::Layout, &path, 0, e.to_string());
            None
        }
    };
    let mut tagged_seen = false;
    // Under a live handle, segments past the committed one are in flight.
    let segments: Vec<u64> = match committed {
        Some((active, _)) => listing
            .segments
            .into_iter()
            .filter(|&b| b <= active)
            .collect(),
        None => listing.segments,
    };
    let count = segments.len();
    for (i, &base) in segments.iter().enumerate() {
        let path = dir::segment_path(dir, base);
        if base != report.next_offset {
            let reason = format!(
                "segment starts at offset {base}, the previous one ends at {}",
                report.next_offset
            );
            problem(&mut report, ProblemKind::Layout, &path, 0, reason);
            chain.state = Start::Unknown;
        }
        report.segments += 1;
        let last = i + 1 == count;
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open", &path, e))?;
        // Only sealed segments are mapped: the last one may be truncated by
        // a writer's recovery while we read it.
        let held = Arc::new(if last {
            // Under a live handle, only the committed prefix: the writer
            // may cut the zero tail past it (sealing the segment) while
            // this reads, and a read of the whole file would then run past
            // its new end.
            let limit = match committed {
                Some((active, len)) if active == base => len,
                _ => u64::MAX,
            };
            Held::Owned(read_prefix(&*file, limit).map_err(|e| Error::io("read", &path, e))?)
        } else {
            Held::Mapped(file.map().map_err(|e| Error::io("map", &path, e))?)
        });
        chain.segments.push((path.clone(), held.clone()));
        let whole: &[u8] = &held;
        let bytes = match committed {
            Some((active, len)) if active == base => &whole[..whole.len().min(len as usize)],
            _ => whole,
        };
        // The segment may not end before the length its writer published
        // as durable: the records past its end were acknowledged and
        // synced (a cut at a batch boundary scans clean, so nothing else
        // would see it).
        let durable_len = match committed {
            Some((active, _)) if active == base => must_hold,
            Some(_) => None,
            None => published
                .filter(|end| end.segment_base == base)
                .map(|end| end.segment_len),
        };
        if let Some(durable_len) = durable_len {
            let cut = recovery::refuse_a_cut_below_the_durable_end(
                storage,
                dir,
                &path,
                base,
                bytes.len(),
                durable_len,
            );
            report_corruption(&mut report, cut);
        }
        if last && unfinished_creation(bytes, base) {
            if committed.is_none() {
                let reason = "segment creation did not finish".to_string();
                problem(&mut report, ProblemKind::TornTail, &path, 0, reason);
            }
            continue;
        }
        match SegmentHeader::decode(bytes) {
            Ok(h) if h.base_offset == base => {
                if let Some(reason) = identity::foreign_reason(h.store_tag, store_id, tagged_seen) {
                    problem(&mut report, ProblemKind::Layout, &path, 12, reason);
                }
                tagged_seen |= h.store_tag != 0;
            }
            Ok(h) => {
                let reason = format!(
                    "segment header names base offset {}, the file name {base}",
                    h.base_offset
                );
                problem(&mut report, ProblemKind::Corruption, &path, 16, reason);
            }
            Err(e) => problem(&mut report, ProblemKind::Corruption, &path, 0, e.reason()),
        }
        // A committed prefix ends at a batch boundary: nothing in it may tear.
        let may_tear = last && committed.is_none();
        let rebuilt = verify_segment(bytes, base, &path, may_tear, &mut chain, &mut report);
        if !last {
            check_index(storage, dir, base, bytes, &rebuilt, &mut report);
        }
    }
    // Offline, the segment the durable end names must still be there.
    if committed.is_none() {
        let missing = recovery::refuse_a_missing_durable_segment(
            storage,
            dir,
            segments.last().copied(),
            published,
        );
        report_corruption(&mut report, missing);
    }
    let fold = chain.check(&mut report, fold_to);
    Ok((report, fold_to.and_then(|_| fold.into_tree())))
}

/// Reports what an open would refuse as corruption (the checks an open and
/// `verify` share, `recovery::refuse_*`), as a problem of the report.
fn report_corruption(report: &mut VerifyReport, refused: Result<()>) {
    if let Err(Error::Corruption {
        path,
        position,
        reason,
    }) = refused
    {
        report.problems.push(Problem {
            kind: ProblemKind::Corruption,
            path,
            position,
            reason,
        });
    }
}

/// Scans one segment's batches, resuming after damage; returns its index.
fn verify_segment(
    bytes: &[u8],
    base: u64,
    path: &Path,
    last: bool,
    chain: &mut Pieces,
    report: &mut VerifyReport,
) -> SegmentIndex {
    let interval = LogOptions::default().index_interval_bytes;
    let mut index = IndexBuilder::new(interval, Vec::new());
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut expected = report.next_offset.max(base);
    let mut clean = true;
    loop {
        let s = scan(bytes, pos, expected, index, last);
        report.batches += s.batches;
        report.records += s.records;
        report.lost += s.lost;
        expected = s.next_offset;
        index = s.index;
        chain.piece(pos, s.end);
        let (kind, position, reason) = match s.stop {
            Stop::Clean | Stop::ZeroTail { .. } => break,
            Stop::Torn { position, reason } => (ProblemKind::TornTail, position, reason),
            Stop::Corrupt { position, reason } => (ProblemKind::Corruption, position, reason),
        };
        clean = false;
        report.problems.push(Problem {
            kind,
            path: path.to_path_buf(),
            position,
            reason,
        });
        if kind == ProblemKind::TornTail {
            // What follows a torn tail was never acknowledged (the rules in
            // `recovery` only call a tail torn when that holds): the next
            // writer open cuts it, so it is not part of the log.
            break;
        }
        // Resume at the next batch that verifies on its own and belongs
        // after what came before (a stale copy of earlier batches does not).
        chain.state = Start::Unknown;
        match next_valid(bytes, s.end as usize + 1, expected) {
            Some((at, first_offset)) => {
                pos = at as u64;
                expected = first_offset;
            }
            None => break,
        }
    }
    if !clean {
        // Up to the next segment's first batch (see `log::chain`).
        chain.state = Start::Unknown;
    }
    report.next_offset = expected;
    SegmentIndex {
        base_offset: base,
        next_offset: if clean { expected } else { u64::MAX },
        segment_len: bytes.len() as u64,
        entries: index.entries,
    }
}

/// A segment's bytes, kept until its chain is checked.
enum Held {
    Mapped(Mapped),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Held {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Held::Mapped(map) => map,
            Held::Owned(bytes) => bytes,
        }
    }
}

/// The stretches of batches that verified, in log order, each with what the
/// chain check knows before it: collected while the segments are scanned,
/// checked afterwards on every core ([`Pieces::check`]).
struct Pieces {
    /// `None`: the log's version is unknown; its first batch decides.
    chained: Option<bool>,
    /// What the check knows before the next piece.
    state: Start,
    segments: Vec<(PathBuf, Arc<Held>)>,
    pieces: Vec<Piece>,
}

/// What the chain check knows before a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The log's first batch: it follows the genesis link.
    Genesis,
    /// The piece follows the one before without a break: its first batch
    /// follows that piece's last.
    Follows,
    /// After damage or a gap: its first batch is checked by itself only.
    Unknown,
}

struct Piece {
    /// Index into `Pieces::segments`.
    segment: usize,
    from: usize,
    to: usize,
    start: Start,
}

/// What checking a run of pieces found.
struct Checked {
    /// Tampering: first offsets and problems, in log order.
    found: Vec<(u64, Problem)>,
    /// The leaves folded (below `fold_to`).
    fold: BlockFold,
    /// The link the run's last batch makes, if known.
    last: Option<Hash>,
    /// When the run follows another without a break: the `prev` its first
    /// batch stores, to be checked against that run's `last`; with the
    /// problem to report if it is not.
    first: Option<(Hash, u64, Problem)>,
}

/// Pieces smaller than this, in all, are checked on one thread.
const PARALLEL_MIN_BYTES: usize = 4 << 20;

impl Pieces {
    /// Adds the batches of `bytes[from..to]` of the segment last pushed,
    /// which verified.
    fn piece(&mut self, from: u64, to: u64) {
        let (from, to) = (from as usize, to as usize);
        if to <= from {
            return;
        }
        self.pieces.push(Piece {
            segment: self.segments.len() - 1,
            from,
            to,
            start: self.state,
        });
        self.state = Start::Follows;
    }

    /// Checks every piece's chain, the log split in two halves checked at
    /// once where there are two cores; adds what is broken to `report`, in
    /// log order.
    fn check(mut self, report: &mut VerifyReport, fold_to: Option<u64>) -> BlockFold {
        if self.chained.is_none() {
            let first = self.pieces.first().map(|p| {
                let bytes = &self.segments[p.segment].1;
                decode_batch(&bytes[p.from..], None).is_ok_and(|view| view.is_chained())
            });
            self.chained = Some(first.unwrap_or(LOG_FORMAT_VERSION >= 2));
        }
        let total: usize = self.pieces.iter().map(|p| p.to - p.from).sum();
        let two_cores = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
        let mut split = self.pieces.len();
        if two_cores && total >= PARALLEL_MIN_BYTES {
            split = self.split_in_half(total);
        }
        let (older, newer) = self.pieces.split_at(split);
        let (mut done, later) = std::thread::scope(|scope| {
            let later =
                (!newer.is_empty()).then(|| scope.spawn(|| self.check_pieces(newer, fold_to)));
            let done = self.check_pieces(older, fold_to);
            let later = later.map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            });
            (done, later)
        });
        if let Some(later) = later {
            // Where the halves meet: the second's first batch must follow
            // the first's last.
            if let (Some(last), Some((prev, first_offset, problem))) = (done.last, later.first) {
                if last != prev {
                    done.found.push((first_offset, problem));
                }
            }
            done.found.extend(later.found);
            done.fold = done.fold.join(later.fold);
        }
        for (first_offset, problem) in done.found {
            report.tampered_at.push(first_offset);
            report.problems.push(problem);
        }
        done.fold
    }

    /// Cuts the piece that holds the middle byte of the pieces at a batch
    /// boundary near it; returns the index of the first piece of the
    /// second half.
    fn split_in_half(&mut self, total: usize) -> usize {
        let mut seen = 0;
        for i in 0..self.pieces.len() {
            let len = self.pieces[i].to - self.pieces[i].from;
            if seen + len < total / 2 {
                seen += len;
                continue;
            }
            let piece = &self.pieces[i];
            let bytes = &self.segments[piece.segment].1;
            let target = piece.from + (total / 2 - seen);
            // Batch headers only, from the piece's start: they verified.
            let mut at = piece.from;
            while at < target {
                match decode_header(&bytes[at..]) {
                    Ok(h) if at + h.batch_len as usize <= piece.to => at += h.batch_len as usize,
                    _ => break,
                }
            }
            if at <= piece.from || at >= piece.to {
                return i + 1;
            }
            let second = Piece {
                segment: piece.segment,
                from: at,
                to: piece.to,
                start: Start::Follows,
            };
            self.pieces[i].to = at;
            self.pieces.insert(i + 1, second);
            return i + 1;
        }
        self.pieces.len()
    }

    /// Checks `pieces` in order; folds the leaves of the records below
    /// `fold_to` (all of them: the check's leaves serve the fold).
    fn check_pieces(&self, pieces: &[Piece], fold_to: Option<u64>) -> Checked {
        let mut found = Vec::new();
        let mut fold = BlockFold::new();
        let mut first = None;
        let mut leaves: Vec<Hash> = Vec::new();
        let chained = self.chained.unwrap_or(true);
        let mut check = ChainCheck::new(chained);
        let problem = |path: &PathBuf, pos: usize, first_offset: u64, reason: &str| Problem {
            kind: ProblemKind::Tampering,
            path: path.clone(),
            position: pos as u64,
            reason: format!("batch at offset {first_offset}: {reason}"),
        };
        for (n, piece) in pieces.iter().enumerate() {
            let (path, bytes) = &self.segments[piece.segment];
            match piece.start {
                Start::Genesis => check.expect(Some(GENESIS)),
                Start::Unknown => check.forget(),
                Start::Follows => {}
            }
            let mut pos = piece.from;
            while pos < piece.to {
                // The scan verified these bytes whole: their frame checksums
                // are not computed twice.
                let Ok(view) = decode_verified_batch(&bytes[pos..], None) else {
                    debug_assert!(false, "a batch the scan verified does not decode");
                    break;
                };
                let first_offset = view.header.first_offset;
                let folding = fold_to.is_some_and(|to| first_offset < to);
                leaves.clear();
                if folding {
                    leaves.extend(
                        view.frames()
                            .map(|f| record_leaf_hash(f.offset, f.timestamp_us, f.payload)),
                    );
                    for (offset, leaf) in (first_offset..).zip(&leaves) {
                        if fold_to.is_some_and(|to| offset < to) {
                            fold.push(offset, *leaf);
                        }
                    }
                }
                let broken = check.batch_with(&view, |previous| {
                    if folding {
                        link_of_leaves(previous, first_offset, &leaves)
                    } else {
                        view.link_after(previous)
                    }
                });
                if n == 0 && piece.start == Start::Follows && first.is_none() {
                    first = check.first_prev().map(|(prev, offset)| {
                        let reason = "the batch does not follow the batch before it (the link it \
                                      stores as the one before is another): batches were \
                                      removed, renumbered, swapped or rewritten";
                        (prev, offset, problem(path, pos, offset, reason))
                    });
                }
                if let Some(broken) = broken {
                    found.push((
                        broken.first_offset,
                        problem(path, pos, broken.first_offset, &broken.reason),
                    ));
                }
                pos += view.len();
            }
        }
        Checked {
            found,
            fold,
            last: check.last(),
            first,
        }
    }
}

fn check_index(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    bytes: &[u8],
    rebuilt: &SegmentIndex,
    report: &mut VerifyReport,
) {
    let path = dir::index_path(dir, base);
    let stored = storage
        .open(&path, OpenMode::Read)
        .ok()
        .and_then(|f| crate::storage::read_all(&*f).ok())
        .and_then(|b| SegmentIndex::decode(&b));
    let segment_len = bytes.len() as u64;
    let batch_at = |position: u64, first_offset: u64| {
        usize::try_from(position)
            .ok()
            .and_then(|p| bytes.get(p..))
            .is_some_and(|rest| decode_batch(rest, Some(first_offset)).is_ok())
    };
    let reason = match stored {
        None => "index file is missing or does not verify",
        Some(i) if i.segment_len != segment_len || i.base_offset != base => {
            "index describes another segment"
        }
        Some(i) if rebuilt.next_offset != u64::MAX && i.next_offset != rebuilt.next_offset => {
            "index disagrees with the segment's records"
        }
        Some(i)
            if !i
                .entries
                .iter()
                .all(|e| batch_at(e.position, e.first_offset)) =>
        {
            "index points where no batch starts"
        }
        Some(_) => return,
    };
    report.problems.push(Problem {
        kind: ProblemKind::Index,
        path,
        position: 0,
        reason: reason.into(),
    });
}
