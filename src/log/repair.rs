//! Repairing a damaged log: the only code that changes a log that does not
//! verify. It never deletes: whatever cannot be trusted is first copied to
//! a quarantine directory inside the log directory, durably.
//!
//! What is kept: every batch that verifies, before and after the damage.
//! Offsets stay dense, so each damaged byte range inside a segment is
//! replaced by a *hole* (see `hole`): valid batches that cover exactly the
//! offsets the range held, which readers and statistics report as lost.
//! The lost count is the gap between the offset expected at the damage and
//! the first offset of the next batch that verifies (or, with nothing valid
//! after it in the segment, the next segment's base offset).
//!
//! A segment header that damage made unreadable (bad magic or checksum, or
//! all zeros: a flipped bit, a lost sector) is written again: it only
//! repeats the base offset the file name gives and the store's tag (the tag
//! the neighbouring segments and `STORE_ID` agree on). The segment's batches are then read from that base like any other
//! segment's: every batch that verifies stays, the rest becomes a hole, and
//! the old header's bytes go to the quarantine. So a damaged header costs no
//! record that verifies, and no segment after it moves.
//!
//! A segment whose content cannot be trusted although its name puts it in
//! its place (another store's tag, a header naming another base offset or
//! an unknown version or layout, a truncated header, a sealed segment
//! without a record) is replaced by a hole of every offset it held (up to
//! the next segment's base; for the last segment, at least to the durable
//! end and as many records as its bytes could hold), its bytes saved in the
//! quarantine: the log's next offset never goes back, and no later segment
//! moves. Only segments after a gap (a segment starting past or before
//! where the previous one ends) are moved out whole.
//!
//! Invariants, for a crash (power cut) at any point:
//! - a segment is never shrunk or written in place (read-only handles may
//!   have it mapped: shrinking it would kill them with SIGBUS). Its new
//!   content is written to a temporary file, fsynced, and renamed over it;
//! - every byte a repair removes from the log is durable in the quarantine,
//!   file and directory entries included, before anything is renamed or
//!   moved: after a crash each such byte is in the log or in the quarantine.
//!
//! The quarantine, `quarantine/<microseconds since the epoch>/`, holds the
//! damaged byte ranges as `<segment name>.bytes-<from>-<to>` (the raw bytes
//! of positions from..to of that segment), whole segment and index files
//! moved out under their own names, and a text `MANIFEST` with one line per
//! item (see docs/FORMAT.md).

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::dir;
use super::durable_end;
use super::hole::encode_hole;
use super::identity;
use super::recovery::{scan, unfinished_creation, write_index, Stop};
use super::segment::IndexBuilder;
use crate::error::{Error, Result};
use crate::format::batch::{decode_batch, decode_header, FRAME_HEADER_LEN};
use crate::format::index_file::SegmentIndex;
use crate::format::segment_header::raw_store_tag;
use crate::format::{SegmentHeader, SegmentHeaderError, SEGMENT_HEADER_LEN};
use crate::record::now_us;
use crate::storage::{read_all, read_prefix, FileStorage, OpenMode, Storage};

/// The quarantine directory's name inside the log directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The manifest's name inside one repair's quarantine directory.
pub const MANIFEST_FILE: &str = "MANIFEST";

/// A damaged byte range of a segment, replaced by a hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRange {
    /// Byte position of the range in the segment as it was.
    pub position: u64,
    /// Its length in bytes (all moved to the quarantine).
    pub bytes: u64,
    /// The first offset the damage destroyed.
    pub first_offset: u64,
    /// How many offsets it destroyed (the hole's length; may be 0 when the
    /// damaged bytes held no record, e.g. garbage between two batches).
    pub lost: u64,
    /// Why the bytes do not verify.
    pub reason: String,
    /// Where the bytes are saved.
    pub saved_as: PathBuf,
}

/// One change a repair made (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// A segment was rewritten (a new file renamed over it): every batch
    /// that verifies kept, each damaged range replaced by a hole.
    Rewritten {
        /// The segment file.
        segment: PathBuf,
        /// The damaged ranges, in position order.
        damaged: Vec<DamagedRange>,
    },
    /// A segment's header was written again from its file name (which
    /// gives its base offset) and the store's tag (a new file renamed over
    /// it); the old header's bytes are saved in the quarantine. Either the
    /// header did not decode (damage), and the batches are read from that
    /// base, or the segment's content could not be trusted at all (another
    /// store's, another base offset, no record), and all of it became a
    /// hole. Any hole is reported by a [`RepairAction::Rewritten`] of the
    /// same segment.
    HeaderRewritten {
        /// The segment file.
        segment: PathBuf,
        /// Why the header was written again.
        reason: String,
        /// Where the old header's bytes are saved.
        saved_as: PathBuf,
    },
    /// A whole file was moved to quarantine.
    Moved {
        /// Where it was.
        from: PathBuf,
        /// Where it is now.
        to: PathBuf,
    },
}

/// What a repair did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// Changes made, in order; empty when nothing needed repair.
    pub actions: Vec<RepairAction>,
    /// The quarantine directory used (or, in a dry run, that would be).
    pub quarantine: Option<PathBuf>,
    /// The offset after the last record kept.
    pub next_offset: u64,
    /// Why the first damaged file could not be trusted.
    pub reason: Option<String>,
    /// Offsets turned into holes (records lost to the damage).
    pub lost: u64,
    /// Records in segments moved out whole (still in the quarantine, no
    /// longer in the log); counted from their batches that verify.
    pub moved_records: u64,
    /// True when nothing was changed: the report says what would be.
    pub dry_run: bool,
}

/// How to repair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairOptions {
    /// Only report what would change; change nothing.
    pub dry_run: bool,
}

/// Repairs the log in `dir` on the real file system. Refuses with
/// [`Error::Locked`] while a writer holds the log.
pub fn repair_dir(dir: impl AsRef<Path>) -> Result<RepairReport> {
    repair(&FileStorage, dir.as_ref())
}

/// [`repair_dir`] with options (a dry run).
pub fn repair_dir_with(dir: impl AsRef<Path>, options: RepairOptions) -> Result<RepairReport> {
    repair_with(&FileStorage, dir.as_ref(), options)
}

/// Repairs the log in `dir` through `storage`.
pub fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
    repair_with(storage, dir, RepairOptions::default())
}

/// A piece of a segment to rebuild.
#[derive(Debug, Clone)]
enum Piece {
    /// Bytes kept as they are: valid batches (or a torn tail, left for the
    /// next writer open to cut).
    Keep(Range<usize>),
    /// A damaged range and the hole that replaces it.
    Hole {
        bytes: Range<usize>,
        first_offset: u64,
        lost: u64,
        timestamp_us: i64,
        reason: String,
    },
}

/// The rebuild of one segment.
struct Rewrite {
    base: u64,
    /// A header to write instead of the segment's own (which does not
    /// decode, or names what the segment cannot be), and why.
    header: Option<([u8; SEGMENT_HEADER_LEN], String)>,
    /// The next segment's base offset, for a sealed segment.
    next_base: Option<u64>,
    bytes: Vec<u8>,
    pieces: Vec<Piece>,
}

impl Rewrite {
    fn has_holes(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Hole { .. }))
    }
}

/// What a repair is going to do.
#[derive(Default)]
struct Plan {
    rewrites: Vec<Rewrite>,
    /// Index of the first segment to move out whole.
    move_from: Option<usize>,
    reason: Option<String>,
    next_offset: u64,
    moved_records: u64,
}

/// Repairs the log in `dir` through `storage`, with options.
pub fn repair_with(
    storage: &dyn Storage,
    dir: &Path,
    options: RepairOptions,
) -> Result<RepairReport> {
    let _lock = dir::lock(storage, dir)?;
    let listing = dir::list(storage, dir)?;
    if !listing.has_version {
        return Err(Error::NotALogDirectory {
            path: dir.to_path_buf(),
            reason: "it has no VERSION file".into(),
        });
    }
    dir::check_version(storage, dir)?;
    let segments = listing.segments;
    let plan = plan(storage, dir, &segments)?;
    let mut report = RepairReport {
        next_offset: plan.next_offset,
        reason: plan.reason.clone(),
        moved_records: plan.moved_records,
        dry_run: options.dry_run,
        ..RepairReport::default()
    };
    if plan.rewrites.is_empty() && plan.move_from.is_none() {
        return Ok(report);
    }
    let quarantine = dir.join(QUARANTINE_DIR).join(format!("{}", now_us()));
    let moves: Vec<(PathBuf, PathBuf)> = plan
        .move_from
        .map(|from| whole_moves(storage, dir, &segments[from..], &quarantine))
        .transpose()?
        .unwrap_or_default();
    for rewrite in &plan.rewrites {
        let segment = dir::segment_path(dir, rewrite.base);
        if let Some((_, reason)) = &rewrite.header {
            report.actions.push(RepairAction::HeaderRewritten {
                segment: segment.clone(),
                reason: reason.clone(),
                saved_as: quarantine.join(saved_header_name(rewrite.base)),
            });
        }
        let damaged = damaged_ranges(rewrite, &quarantine);
        if damaged.is_empty() {
            continue;
        }
        report.lost += damaged.iter().map(|d| d.lost).sum::<u64>();
        report
            .actions
            .push(RepairAction::Rewritten { segment, damaged });
    }
    for (from, to) in &moves {
        report.actions.push(RepairAction::Moved {
            from: from.clone(),
            to: to.clone(),
        });
    }
    report.quarantine = Some(quarantine.clone());
    if options.dry_run {
        return Ok(report);
    }
    count_repair(storage, dir)?;
    save_to_quarantine(storage, dir, &plan, &report, &quarantine)?;
    // A header written again changes no record; a hole does.
    if plan.rewrites.iter().any(|r| r.has_holes()) {
        move_checkpoints(storage, dir, &quarantine)?;
    }
    let changed: Vec<u64> = plan
        .rewrites
        .iter()
        .map(|r| r.base)
        .chain(
            plan.move_from
                .map_or(&[][..], |from| &segments[from..])
                .iter()
                .copied(),
        )
        .collect();
    remove_key_files(storage, dir, &changed)?;
    // The Merkle tree a writer kept (`audit::kept`) covers the records about
    // to change; its seal, a batch past them, would not show it. Its
    // removal is made durable with the renames below (one directory).
    let tree = dir.join(crate::audit::kept::TREE_FILE);
    match storage.remove(&tree) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove", &tree, e)),
    }
    // The published durable end names byte lengths of the segments about
    // to change; no writer runs (the lock is ours) and everything repair
    // leaves is durable, so readers go without a limit until the next
    // writer open publishes a new end.
    durable_end::withdraw(storage, dir)?;
    for rewrite in &plan.rewrites {
        replace_segment(storage, dir, rewrite, &quarantine)?;
    }
    for (from, to) in &moves {
        storage
            .rename(from, to)
            .map_err(|e| Error::io("rename", from, e))?;
    }
    // The quarantine's entries first: a moved file is then durable in the
    // quarantine before its old name goes.
    for d in [&quarantine, &dir.to_path_buf()] {
        sync_dir(storage, d)?;
    }
    warn!(
        dir = %dir.display(),
        quarantine = %quarantine.display(),
        lost = report.lost,
        reason = report.reason.as_deref().unwrap_or(""),
        "repaired the log"
    );
    Ok(report)
}

/// Moves the projection checkpoints into the quarantine, before any hole is
/// written: a checkpoint counted the records a hole replaces, so it would
/// disagree with a rebuild from the repaired log. They are derived data;
/// the next open rebuilds them from the log, counting the holes as lost.
/// (A repair that only moves segments out needs no such step: a checkpoint
/// past the new end of the log is refused on open.)
fn move_checkpoints(storage: &dyn Storage, dir: &Path, quarantine: &Path) -> Result<()> {
    let checkpoints = dir.join(crate::projection::CHECKPOINT_DIR);
    if !storage
        .exists(&checkpoints)
        .map_err(|e| Error::io("stat", &checkpoints, e))?
    {
        return Ok(());
    }
    let names = storage
        .list(&checkpoints)
        .map_err(|e| Error::io("list", &checkpoints, e))?;
    for name in names {
        let from = checkpoints.join(&name);
        let to = quarantine.join(format!("{}-{name}", crate::projection::CHECKPOINT_DIR));
        storage
            .rename(&from, &to)
            .map_err(|e| Error::io("rename", &from, e))?;
    }
    sync_dir(storage, quarantine)?;
    sync_dir(storage, &checkpoints)
}

/// Deletes the key index of every segment repair is about to rewrite or
/// move away (before it does): it describes bytes that are going. It is
/// derived data, built again from the repaired segment when a query needs
/// it; deleting first means a crash in between leaves no file that
/// describes a segment no longer there.
fn remove_key_files(storage: &dyn Storage, dir: &Path, bases: &[u64]) -> Result<()> {
    let mut removed = false;
    for &base in bases {
        let path = crate::store::keys::keys_path(dir, base);
        if storage
            .exists(&path)
            .map_err(|e| Error::io("stat", &path, e))?
        {
            storage
                .remove(&path)
                .map_err(|e| Error::io("remove", &path, e))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(storage, &dir.join(crate::store::keys::KEYS_DIR))?;
    }
    Ok(())
}

fn sync_dir(storage: &dyn Storage, dir: &Path) -> Result<()> {
    storage
        .sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// The files of segments moved out whole, and where they go.
fn whole_moves(
    storage: &dyn Storage,
    dir: &Path,
    bases: &[u64],
    quarantine: &Path,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    let mut moves = Vec::new();
    for &base in bases {
        for path in [dir::segment_path(dir, base), dir::index_path(dir, base)] {
            if storage
                .exists(&path)
                .map_err(|e| Error::io("stat", &path, e))?
            {
                let to = quarantine.join(path.file_name().unwrap_or_default());
                moves.push((path, to));
            }
        }
    }
    Ok(moves)
}

fn damaged_ranges(rewrite: &Rewrite, quarantine: &Path) -> Vec<DamagedRange> {
    rewrite
        .pieces
        .iter()
        .filter_map(|piece| match piece {
            Piece::Keep(_) => None,
            Piece::Hole {
                bytes,
                first_offset,
                lost,
                reason,
                ..
            } => Some(DamagedRange {
                position: bytes.start as u64,
                bytes: bytes.len() as u64,
                first_offset: *first_offset,
                lost: *lost,
                reason: reason.clone(),
                saved_as: quarantine.join(saved_name(rewrite.base, bytes)),
            }),
        })
        .collect()
}

/// The name of the marker a writer leaves beside a segment it sealed with
/// damage in it (see `recovery::seal_damaged`): `<segment name>.damaged`.
pub(crate) fn damage_marker_name(base: u64) -> String {
    format!("{}.damaged", dir::segment_name(base))
}

/// The quarantine name of a segment's old header, rewritten by a repair.
fn saved_header_name(base: u64) -> String {
    format!("{}.header", dir::segment_name(base))
}

fn saved_name(base: u64, bytes: &Range<usize>) -> String {
    format!(
        "{}.bytes-{}-{}",
        dir::segment_name(base),
        bytes.start,
        bytes.end
    )
}

/// Writes every damaged range and the manifest into the quarantine and
/// makes them durable, names included, up to the log directory.
fn save_to_quarantine(
    storage: &dyn Storage,
    dir: &Path,
    plan: &Plan,
    report: &RepairReport,
    quarantine: &Path,
) -> Result<()> {
    storage
        .create_dir_all(quarantine)
        .map_err(|e| Error::io("create directory", quarantine, e))?;
    let write = |path: &Path, bytes: &[u8]| -> Result<()> {
        let file = storage
            .open(path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", path, e))?;
        file.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write", path, e))?;
        file.sync_data().map_err(|e| Error::io("fsync", path, e))
    };
    for rewrite in &plan.rewrites {
        if rewrite.header.is_some() {
            let path = quarantine.join(saved_header_name(rewrite.base));
            let head = rewrite.bytes.len().min(SEGMENT_HEADER_LEN);
            write(&path, &rewrite.bytes[..head])?;
        }
        for piece in &rewrite.pieces {
            if let Piece::Hole { bytes, .. } = piece {
                let path = quarantine.join(saved_name(rewrite.base, bytes));
                write(&path, &rewrite.bytes[bytes.clone()])?;
            }
        }
    }
    write(&quarantine.join(MANIFEST_FILE), manifest(report).as_bytes())?;
    let top = dir.join(QUARANTINE_DIR);
    for d in [quarantine, &top, dir] {
        sync_dir(storage, d)?;
    }
    Ok(())
}

/// The file that counts the repairs that changed the directory.
pub(crate) const REPAIRS_FILE: &str = "REPAIRS";

/// What the log directory `dir` shows of the repairs run on it: the count
/// in [`REPAIRS_FILE`] (0 without one), how many entries its quarantine
/// holds, and the greatest of their names (each a repair's time in
/// microseconds). Every repair that changes anything raises the count and
/// makes its quarantine entry, both durably, before it changes a file, so
/// anything kept over the records (`audit::kept`) that remembers these
/// sees any repair run since, finished or not: the count when quarantine
/// entries were removed by hand since (review 38 finding 2), the entries
/// for a repair of a release that kept no count. `None` when either cannot
/// be read.
pub(crate) fn repairs_seen(storage: &dyn Storage, dir: &Path) -> Option<Repairs> {
    let count = repairs_seen_count(storage, dir)?;
    let (entries, greatest) = match storage.list(&dir.join(QUARANTINE_DIR)) {
        Ok(names) => (
            names.len() as u64,
            names
                .iter()
                .filter_map(|n| n.parse::<u64>().ok())
                .max()
                .unwrap_or(0),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
        Err(_) => return None,
    };
    Some((count, entries, greatest))
}

/// The repairs a directory showed: see [`repairs_seen`].
pub(crate) type Repairs = (u64, u64, u64);

/// A [`REPAIRS_FILE`]'s count: decimal digits and a newline.
fn parse_count(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes.strip_suffix(b"\n")?)
        .ok()
        .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))?
        .parse()
        .ok()
}

/// Raises the directory's repair count, durably (before a repair changes
/// anything). A count that does not read, or cannot be raised, is replaced
/// by the repair's time in microseconds: a number no count kept before can
/// equal in practice.
fn count_repair(storage: &dyn Storage, dir: &Path) -> Result<()> {
    // A count at its greatest cannot be raised: the time stands in for it
    // too (review 39 finding 3).
    let count = match repairs_seen_count(storage, dir) {
        Some(count) if count < u64::MAX => count + 1,
        _ => u64::try_from(now_us()).unwrap_or(0),
    };
    write_count(storage, dir, count)
}

/// Writes `count` as the directory's repair count, durably.
fn write_count(storage: &dyn Storage, dir: &Path, count: u64) -> Result<()> {
    let text = format!("{count}\n");
    dir::write_file_atomically(storage, dir, REPAIRS_FILE, text.as_bytes(), true)
}

/// Replaces a repair count that does not read by the time in
/// microseconds, durably; nothing when it reads. For a writer, which holds
/// the lock no repair runs without: a tree it keeps can then name the
/// repairs again, for other processes (review 39 finding 2: an unreadable
/// count kept every `TREE` from being written until the next repair).
pub(crate) fn renew_unreadable_count(storage: &dyn Storage, dir: &Path) -> Result<()> {
    if repairs_seen_count(storage, dir).is_some() {
        return Ok(());
    }
    warn!(dir = %dir.display(), "the REPAIRS count does not read; replaced by the time");
    write_count(storage, dir, u64::try_from(now_us()).unwrap_or(0))
}

/// The count in the directory's [`REPAIRS_FILE`] (0 without one); `None`
/// when it does not read.
fn repairs_seen_count(storage: &dyn Storage, dir: &Path) -> Option<u64> {
    match storage.open(&dir.join(REPAIRS_FILE), OpenMode::Read) {
        Ok(file) => parse_count(&read_prefix(&*file, 32).ok()?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
        Err(_) => None,
    }
}

/// The manifest: one line per item, tab-separated.
///
/// ```text
/// damaged <file name>  <segment> <position> <bytes> <first_offset> <lost> <reason>
/// header  <file name>  <segment> <reason>
/// moved   <file name>
/// ```
fn manifest(report: &RepairReport) -> String {
    let mut text = String::from("# enforcelog quarantine manifest 1\n");
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for action in &report.actions {
        match action {
            RepairAction::Rewritten { segment, damaged } => {
                for d in damaged {
                    let reason = d.reason.replace(['\t', '\n'], " ");
                    let _ = writeln!(
                        text,
                        "damaged\t{}\t{}\t{}\t{}\t{}\t{}\t{reason}",
                        name(&d.saved_as),
                        name(segment),
                        d.position,
                        d.bytes,
                        d.first_offset,
                        d.lost
                    );
                }
            }
            RepairAction::HeaderRewritten {
                segment,
                reason,
                saved_as,
            } => {
                let reason = reason.replace(['\t', '\n'], " ");
                let _ = writeln!(
                    text,
                    "header\t{}\t{}\t{reason}",
                    name(saved_as),
                    name(segment)
                );
            }
            RepairAction::Moved { to, .. } => {
                let _ = writeln!(text, "moved\t{}", name(to));
            }
        }
    }
    text
}

/// Writes the segment's new content to a temporary file, fsyncs it, and
/// renames it over the segment; the old index (now stale) goes to the
/// quarantine first. The old file is never written: a reader that has it
/// mapped keeps reading the old bytes.
fn replace_segment(
    storage: &dyn Storage,
    dir: &Path,
    rewrite: &Rewrite,
    quarantine: &Path,
) -> Result<()> {
    let path = dir::segment_path(dir, rewrite.base);
    let index = dir::index_path(dir, rewrite.base);
    if storage
        .exists(&index)
        .map_err(|e| Error::io("stat", &index, e))?
    {
        let to = quarantine.join(dir::index_name(rewrite.base));
        storage
            .rename(&index, &to)
            .map_err(|e| Error::io("rename", &index, e))?;
    }
    let marker = dir.join(damage_marker_name(rewrite.base));
    if storage
        .exists(&marker)
        .map_err(|e| Error::io("stat", &marker, e))?
    {
        let to = quarantine.join(damage_marker_name(rewrite.base));
        storage
            .rename(&marker, &to)
            .map_err(|e| Error::io("rename", &marker, e))?;
    }
    let content = rebuild(rewrite);
    let tmp = dir.join(format!("{}.repair.tmp", dir::segment_name(rewrite.base)));
    let file = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(&content, 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    file.sync_data().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(file);
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(storage, dir)?;
    if let Some(next_base) = rewrite.next_base {
        // A sealed segment's index (derived data, not fsynced), so that
        // the next open need not rebuild it.
        let interval = crate::config::LogOptions::default().index_interval_bytes;
        let s = scan(
            &content,
            SEGMENT_HEADER_LEN as u64,
            rewrite.base,
            IndexBuilder::new(interval, Vec::new()),
            false,
        );
        if s.stop == Stop::Clean && s.next_offset == next_base {
            let index = SegmentIndex {
                base_offset: rewrite.base,
                next_offset: s.next_offset,
                segment_len: content.len() as u64,
                entries: s.index.entries,
            };
            write_index(storage, dir, &index);
        }
    }
    Ok(())
}

/// The segment's new bytes: its header, the kept pieces, and the holes.
fn rebuild(rewrite: &Rewrite) -> Vec<u8> {
    let mut out = match &rewrite.header {
        Some((header, _)) => header.to_vec(),
        None => rewrite.bytes[..SEGMENT_HEADER_LEN].to_vec(),
    };
    for piece in &rewrite.pieces {
        match piece {
            Piece::Keep(range) => out.extend_from_slice(&rewrite.bytes[range.clone()]),
            Piece::Hole {
                first_offset,
                lost,
                timestamp_us,
                ..
            } => encode_hole(&mut out, *first_offset, *lost, *timestamp_us),
        }
    }
    out
}

/// A segment's bytes as a repair would leave them (each damaged range a
/// hole), for an open that must read past damage without changing the
/// disk; and the offset after its last record, holes included. `next_base`
/// is the next segment's base offset (`None` for the last segment).
pub(crate) fn rebuilt_segment(bytes: &[u8], base: u64, next_base: Option<u64>) -> (Vec<u8>, u64) {
    let (pieces, next, _) = plan_segment(bytes, base, next_base.is_none(), next_base, None);
    let content = rebuild(&Rewrite {
        base,
        header: None,
        next_base,
        bytes: bytes.to_vec(),
        pieces,
    });
    (content, next)
}

/// Where the data of a damaged last segment ends: after its last non-zero
/// byte, never below `durable_len` (the bytes its writer made durable) nor
/// into the segment header, nor inside a damaged batch whose header
/// verifies (its `batch_len` is trusted, as by [`resync`]: a zeroed
/// trailer byte is damage in it). The zeros after that hold no record: a
/// batch ends in its non-zero trailer (`"EEND"`), so when every byte from a
/// batch boundary to the end of the file is zero (FORMAT.md rule 0) that
/// boundary is exactly this point; and where damage runs into them, zeros
/// past the durable end are space a writer filled ahead of itself
/// (`LogOptions::preallocate_segments`) or a write that never landed, which
/// a torn tail would cut as well. So a damaged segment is sealed, read and
/// repaired without them, exactly as if the writer had not filled it: no
/// zero run left in a sealed segment (where `verify` would report it as
/// damage), and no hole sized by zeros.
pub(crate) fn damaged_data_end(bytes: &[u8], base: u64, durable_len: u64) -> usize {
    let mut data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let (pieces, _, _) = plan_segment(bytes, base, true, None, None);
    if let Some(Piece::Hole {
        bytes: range,
        first_offset,
        ..
    }) = pieces.last()
    {
        if let Ok(h) = decode_header(&bytes[range.start..]) {
            let end = range.start.saturating_add(h.batch_len as usize);
            if h.first_offset == *first_offset && end <= bytes.len() {
                data_end = data_end.max(end);
            }
        }
    }
    let durable = usize::try_from(durable_len).unwrap_or(usize::MAX);
    data_end
        .max(durable)
        .max(SEGMENT_HEADER_LEN)
        .min(bytes.len())
}

/// Scans every segment and plans the repair.
fn plan(storage: &dyn Storage, dir: &Path, segments: &[u64]) -> Result<Plan> {
    let count = segments.len();
    let store_id = identity::load(storage, dir)?;
    let mut tagged_seen = false;
    let mut plan = Plan::default();
    for (i, &base) in segments.iter().enumerate() {
        let mut header = None;
        let path = dir::segment_path(dir, base);
        let last = i + 1 == count;
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open", &path, e))?;
        let mut bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
        // Where the last segment's writer published its durable end: the
        // offset after the last record it made durable there.
        let mut durable_next = None;
        if last {
            // The zeros after the data of the last segment hold no record
            // (as a writer open that meets damage there cuts them): no
            // hole is sized by them.
            let (durable_len, next) = match durable_end::load(storage, dir)? {
                Some(end) if end.segment_base == base => (end.segment_len, Some(end.next_offset)),
                // The segment the end names is gone: its durable offsets
                // are retired after this one's last record.
                Some(end)
                    if end.segment_base > base && end.segment_len > SEGMENT_HEADER_LEN as u64 =>
                {
                    (0, Some(end.next_offset))
                }
                _ => (0, None),
            };
            durable_next = next;
            bytes.truncate(damaged_data_end(&bytes, base, durable_len));
        }
        let out_of_place = if base != plan.next_offset {
            Some(format!(
                "starts at offset {base}, the previous segment ends at {}",
                plan.next_offset
            ))
        } else if last && unfinished_creation(&bytes, base) {
            return Ok(plan); // open creates it again
        } else {
            match SegmentHeader::decode(&bytes) {
                Ok(h) if h.base_offset != base => Some("header names another base offset".into()),
                Ok(h) => {
                    let foreign = identity::foreign_reason(h.store_tag, store_id, tagged_seen);
                    tagged_seen |= h.store_tag != 0;
                    foreign
                }
                Err(
                    e @ (SegmentHeaderError::BadMagic
                    | SegmentHeaderError::BadChecksum
                    | SegmentHeaderError::Unwritten),
                ) => {
                    // Damage (a flipped bit, a lost sector), not a header
                    // written on purpose: one whose checksum matches but
                    // whose version or layout is unknown is not guessed at.
                    // The header is redundant: the file name gives the base
                    // offset, and the batches are read from it as in any
                    // segment (each checked by its own checksum and
                    // offset; whatever does not verify becomes a hole).
                    // Moving the segment out would drop every record in it
                    // and make every later segment out of place, for one
                    // bad byte of 32.
                    let next_tag = match segments.get(i + 1) {
                        Some(&next) => header_tag(storage, dir, next),
                        None => None,
                    };
                    let store_tag = rewritten_tag(&bytes, store_id, tagged_seen, next_tag);
                    tagged_seen |= store_tag != 0;
                    let fixed = SegmentHeader {
                        store_tag,
                        base_offset: base,
                    };
                    header = Some((fixed.encode(), e.reason()));
                    None
                }
                Err(e) => Some(e.reason()),
            }
        };
        let pieces = match out_of_place {
            Some(reason) => Err(reason),
            None => {
                let next_base = segments.get(i + 1).copied();
                let (pieces, next, records) =
                    plan_segment(&bytes, base, last, next_base, durable_next);
                if !last && records == 0 && pieces.iter().all(|p| matches!(p, Piece::Keep(_))) {
                    Err("sealed segment holds no record".into())
                } else {
                    plan.next_offset = next;
                    Ok(pieces)
                }
            }
        };
        match pieces {
            Err(reason) if base == plan.next_offset => {
                // In its place by name, but its content cannot be trusted
                // (another store's, another base offset or format, no
                // record). Moving it out with every later segment would
                // drop intact records and give their offsets again; so it
                // is replaced by a hole of the offsets it held, the whole
                // file saved in the quarantine.
                let next_base = segments.get(i + 1).copied();
                let lost = match next_base {
                    Some(next) => next.saturating_sub(base),
                    None => lost_in_last_segment(storage, dir, base, &bytes)?,
                };
                let next_tag = match next_base {
                    Some(next) => header_tag(storage, dir, next),
                    None => None,
                };
                let store_tag = rewritten_tag(&bytes, store_id, tagged_seen, next_tag);
                tagged_seen |= store_tag != 0;
                let header = SegmentHeader {
                    store_tag,
                    base_offset: base,
                };
                let head = bytes.len().min(SEGMENT_HEADER_LEN);
                plan.reason
                    .get_or_insert_with(|| format!("{}: {reason}", path.display()));
                plan.rewrites.push(Rewrite {
                    base,
                    header: Some((header.encode(), reason.clone())),
                    next_base,
                    pieces: vec![Piece::Hole {
                        bytes: head..bytes.len(),
                        first_offset: base,
                        lost,
                        timestamp_us: 0,
                        reason,
                    }],
                    bytes,
                });
                plan.next_offset = base.saturating_add(lost);
            }
            Err(reason) => {
                plan.reason
                    .get_or_insert_with(|| format!("{}: {reason}", path.display()));
                plan.move_from = Some(i);
                plan.moved_records = count_moved(storage, dir, &segments[i..]);
                return Ok(plan);
            }
            Ok(pieces) => {
                if let Some((_, reason)) = &header {
                    plan.reason
                        .get_or_insert_with(|| format!("{}: {reason}", path.display()));
                }
                if let Some(Piece::Hole {
                    bytes: b, reason, ..
                }) = pieces.iter().find(|p| matches!(p, Piece::Hole { .. }))
                {
                    plan.reason.get_or_insert_with(|| {
                        format!("{}: byte {}: {reason}", path.display(), b.start)
                    });
                }
                let rewrite = Rewrite {
                    base,
                    header,
                    next_base: segments.get(i + 1).copied(),
                    bytes,
                    pieces,
                };
                if rewrite.header.is_some() || rewrite.has_holes() {
                    plan.rewrites.push(rewrite);
                }
            }
        }
    }
    Ok(plan)
}

/// How many offsets a last segment that cannot be trusted may have held:
/// at least up to the durable end the writer published, and as many
/// records as its bytes could hold (one per frame header that fits, at
/// least one), so that no offset a record might have had is given again.
fn lost_in_last_segment(storage: &dyn Storage, dir: &Path, base: u64, bytes: &[u8]) -> Result<u64> {
    let durable = durable_end::load(storage, dir)?
        .filter(|end| end.segment_base == base)
        .map_or(0, |end| end.next_offset.saturating_sub(base));
    let could_hold =
        (bytes.len().saturating_sub(SEGMENT_HEADER_LEN) / FRAME_HEADER_LEN).max(1) as u64;
    Ok(durable.max(could_hold))
}

/// The store tag of the segment at `base`, when its header decodes.
fn header_tag(storage: &dyn Storage, dir: &Path, base: u64) -> Option<u32> {
    let path = dir::segment_path(dir, base);
    let file = storage.open(&path, OpenMode::Read).ok()?;
    let mut head = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut head, 0).ok()?;
    SegmentHeader::decode(&head).ok().map(|h| h.store_tag)
}

/// The store tag to write into a segment whose header does not decode.
///
/// Only two tags can belong to the segment: zero (written before store ids
/// existed, only before any tagged segment) and the store id's tag. The
/// damaged header's own tag bytes are kept when they are one of those
/// (the damage lies elsewhere); otherwise the neighbours decide: after a
/// tagged segment it is tagged, before an untagged one untagged.
fn rewritten_tag(
    bytes: &[u8],
    store_id: Option<identity::StoreId>,
    tagged_seen: bool,
    next_tag: Option<u32>,
) -> u32 {
    let Some(id) = store_id else {
        return 0;
    };
    // Zero is also what a zeroed header reads as: it is kept only where an
    // untagged segment may stand, i.e. not before a tagged one.
    let raw = raw_store_tag(bytes)
        .filter(|&t| t != 0 || next_tag.is_none_or(|next| next == 0))
        .filter(|&t| identity::foreign_reason(t, store_id, tagged_seen).is_none());
    if let Some(raw) = raw {
        return raw;
    }
    if !tagged_seen && next_tag == Some(0) {
        0
    } else {
        id.tag()
    }
}

/// Records that verify in segments about to be moved out whole (for the
/// report; a segment that cannot be read counts as none).
fn count_moved(storage: &dyn Storage, dir: &Path, bases: &[u64]) -> u64 {
    bases
        .iter()
        .filter_map(|&base| {
            let path = dir::segment_path(dir, base);
            let bytes = read_all(&*storage.open(&path, OpenMode::Read).ok()?).ok()?;
            let mut pos = SEGMENT_HEADER_LEN;
            let mut records = 0u64;
            while let Some((at, _)) = next_valid(&bytes, pos, 0) {
                let view = decode_batch(&bytes[at..], None).ok()?;
                records += u64::from(view.header.record_count);
                pos = at + view.len();
            }
            Some(records)
        })
        .sum()
}

/// Splits a segment into kept and damaged pieces. Returns the pieces, the
/// offset after the segment's last record (holes included) and the number
/// of records kept.
fn plan_segment(
    bytes: &[u8],
    base: u64,
    last: bool,
    next_base: Option<u64>,
    durable_next: Option<u64>,
) -> (Vec<Piece>, u64, u64) {
    let mut pieces = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    let mut expected = base;
    let mut records = 0u64;
    let mut last_timestamp_us: Option<i64> = None;
    loop {
        let s = scan(
            bytes,
            pos as u64,
            expected,
            IndexBuilder::new(u64::MAX, Vec::new()),
            last,
        );
        let end = usize::try_from(s.end).unwrap_or(bytes.len());
        if end > pos {
            pieces.push(Piece::Keep(pos..end));
        }
        if let Some(entry) = s.index.entries.last() {
            last_timestamp_us = Some(entry.max_timestamp_us);
        }
        records += s.records;
        expected = s.next_offset;
        pos = end;
        // The last segment ends (cleanly, in zeros or torn) before the
        // records its writer made durable: they are lost, and their offsets
        // are retired by a hole in place of whatever is left, so that no
        // new record takes one of them.
        if let Some(durable_next) = durable_next.filter(|&d| {
            d > expected
                && matches!(
                    s.stop,
                    Stop::Clean | Stop::ZeroTail { .. } | Stop::Torn { .. }
                )
        }) {
            pieces.push(Piece::Hole {
                bytes: pos..bytes.len(),
                first_offset: expected,
                lost: durable_next - expected,
                timestamp_us: last_timestamp_us.unwrap_or(0),
                reason: format!(
                    "the segment ends before offset {durable_next}, up to which its writer made \
                     it durable: acknowledged records are missing"
                ),
            });
            expected = durable_next;
            break;
        }
        let reason = match s.stop {
            // Zeros filled ahead of the writer: not part of the log.
            Stop::Clean | Stop::ZeroTail { .. } => break,
            Stop::Torn { .. } => {
                // Left as found: the next writer open cuts it.
                pieces.push(Piece::Keep(pos..bytes.len()));
                break;
            }
            Stop::Corrupt { reason, .. } => reason,
        };
        let (resume, lost) = match resync(bytes, pos, expected, last, next_base) {
            Some((at, first)) => (at, first - expected),
            None => (
                bytes.len(),
                lost_to_the_end(bytes, pos, expected, next_base),
            ),
        };
        let timestamp_us = last_timestamp_us
            .or_else(|| {
                decode_header(&bytes[resume..])
                    .ok()
                    .map(|h| h.min_timestamp_us)
            })
            .unwrap_or(0);
        pieces.push(Piece::Hole {
            bytes: pos..resume,
            first_offset: expected,
            lost,
            timestamp_us,
            reason,
        });
        expected += lost;
        pos = resume;
        if pos >= bytes.len() {
            break;
        }
    }
    (pieces, expected, records)
}

/// How many offsets damage that runs to the end of a segment destroyed.
///
/// A sealed segment ends where the next one starts. The last segment has
/// no such bound: the damaged batch's own header gives it when that header
/// verifies; otherwise the most records the damaged bytes could have held
/// (one per frame header that fits) is taken, so that no offset a record
/// might have had is ever given to a new record.
fn lost_to_the_end(bytes: &[u8], pos: usize, expected: u64, next_base: Option<u64>) -> u64 {
    if let Some(next) = next_base {
        return next.saturating_sub(expected);
    }
    match decode_header(&bytes[pos..]) {
        Ok(h) if h.first_offset == expected => u64::from(h.record_count),
        _ => ((bytes.len() - pos) / FRAME_HEADER_LEN).max(1) as u64,
    }
}

/// Where reading resumes after damage found at `pos`, where the batch for
/// `expected` should start: (position, first offset there), or `None` when
/// nothing after the damage can be trusted.
///
/// Payloads are opaque bytes, so a host's `details` may hold a whole valid
/// batch: the first position where *some* batch verifies is not proof of
/// anything. So:
/// - when the damaged batch's own header verifies and names `expected`,
///   its length is trusted: reading resumes right after it (the damage is
///   in its frames), and nothing inside it is ever read as a batch;
/// - otherwise a candidate must name an offset the damaged bytes could
///   have held (at most one record per frame header that fits, and not past
///   the next segment's base), and the batches from it must chain, each
///   verifying at the offset the one before ends, up to the end of the
///   segment (or, in the last segment, to a torn tail), ending at the next
///   segment's base. A batch forged inside a payload does not chain into
///   the real batches after it.
fn resync(
    bytes: &[u8],
    pos: usize,
    expected: u64,
    last: bool,
    next_base: Option<u64>,
) -> Option<(usize, u64)> {
    if let Ok(h) = decode_header(&bytes[pos..]) {
        let end = pos.checked_add(h.batch_len as usize)?;
        if h.first_offset == expected && end <= bytes.len() && end > pos {
            return (end < bytes.len()).then(|| (end, h.next_offset()));
        }
    }
    let mut from = pos + 1;
    while let Some((at, first)) = next_valid(bytes, from, expected) {
        from = at + 1;
        let room = ((at - pos) / FRAME_HEADER_LEN).max(1) as u64;
        if first - expected > room || next_base.is_some_and(|next| first > next) {
            continue;
        }
        let chain = scan(
            bytes,
            at as u64,
            first,
            IndexBuilder::new(u64::MAX, Vec::new()),
            last,
        );
        let chains = match chain.stop {
            Stop::Clean | Stop::ZeroTail { .. } => {
                next_base.is_none_or(|next| chain.next_offset == next)
            }
            Stop::Torn { .. } => last,
            // More damage further on: the chain still proves itself if it
            // runs into a batch whose own header names the offset it ends at.
            Stop::Corrupt { .. } => {
                chain.batches > 0
                    && decode_header(&bytes[chain.end as usize..])
                        .is_ok_and(|h| h.first_offset == chain.next_offset)
            }
        };
        if chains {
            return Some((at, first));
        }
    }
    None
}

/// The first position from `from` on where a whole batch verifies on its
/// own and starts at or after offset `min_offset`: (position, its first
/// offset).
pub(crate) fn next_valid(bytes: &[u8], from: usize, min_offset: u64) -> Option<(usize, u64)> {
    (from..bytes.len()).find_map(|at| {
        decode_batch(&bytes[at..], None)
            .ok()
            .filter(|v| v.header.first_offset >= min_offset)
            .map(|v| (at, v.header.first_offset))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sim::SimStorage;

    #[test]
    fn a_repair_count_reads_only_as_digits_and_a_newline() {
        assert_eq!(parse_count(b"0\n"), Some(0));
        assert_eq!(parse_count(b"42\n"), Some(42));
        for bad in [
            &b""[..],
            b"\n",
            b"42",
            b"+4\n",
            b"-1\n",
            b"4 2\n",
            b"99999999999999999999999\n",
        ] {
            assert_eq!(parse_count(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_repair_raises_the_count_and_a_bad_count_is_replaced_by_a_larger_number() {
        let storage = SimStorage::new(7);
        let dir = Path::new("/d");
        storage.create_dir_all(dir).unwrap();
        assert_eq!(repairs_seen(&storage, dir), Some((0, 0, 0)));
        count_repair(&storage, dir).unwrap();
        count_repair(&storage, dir).unwrap();
        assert_eq!(repairs_seen(&storage, dir), Some((2, 0, 0)));
        dir::write_file_atomically(&storage, dir, REPAIRS_FILE, b"garbage", false).unwrap();
        assert_eq!(
            repairs_seen(&storage, dir),
            None,
            "a count that does not read"
        );
        count_repair(&storage, dir).unwrap();
        let (count, _, _) = repairs_seen(&storage, dir).expect("a count again");
        assert!(
            count > 1_000_000_000_000_000,
            "the repair's time in µs: {count}"
        );
    }
}
