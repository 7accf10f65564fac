//! Repairing a damaged log: the only code that changes a log that does not
//! open. It never deletes: whatever cannot be trusted is moved to a
//! quarantine directory inside the log directory, and every valid record
//! before the first damage is kept.
//!
//! Offsets must stay dense, so everything after the first damage goes, even
//! records that still verify: their segment file (or the damaged segment's
//! tail bytes) moves to `quarantine/<microseconds since the epoch>/`.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::dir;
use super::identity;
use super::recovery::{scan, unfinished_creation, Stop};
use super::segment::IndexBuilder;
use crate::error::{Error, Result};
use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::record::now_us;
use crate::storage::{read_all, FileStorage, OpenMode, Storage};

/// The quarantine directory's name inside the log directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// One change a repair made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairAction {
    /// A segment was cut at `at`; the bytes after it were saved first.
    Truncated {
        /// The segment file.
        segment: PathBuf,
        /// Its new length: the end of its last valid batch.
        at: u64,
        /// Bytes moved out.
        bytes_moved: u64,
        /// Where they were saved.
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
    /// The quarantine directory used, if anything was moved.
    pub quarantine: Option<PathBuf>,
    /// The offset after the last record kept.
    pub next_offset: u64,
    /// Why the first damaged file could not be trusted.
    pub reason: Option<String>,
}

/// Repairs the log in `dir` on the real file system. Refuses with
/// [`Error::Locked`] while a writer holds the log.
pub fn repair_dir(dir: impl AsRef<Path>) -> Result<RepairReport> {
    repair(&FileStorage, dir.as_ref())
}

/// Where the first damage is.
struct Damage {
    /// Index of the first segment to move out whole.
    move_from: usize,
    /// A cut inside the segment before it: (segment index, valid end).
    cut: Option<(usize, u64)>,
    reason: String,
}

/// Repairs the log in `dir` through `storage`.
pub fn repair(storage: &dyn Storage, dir: &Path) -> Result<RepairReport> {
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
    let mut report = RepairReport::default();
    let Some(damage) = find_damage(storage, dir, &segments, &mut report.next_offset)? else {
        return Ok(report);
    };
    report.reason = Some(damage.reason.clone());
    let quarantine = dir.join(QUARANTINE_DIR).join(format!("{}", now_us()));
    storage
        .create_dir_all(&quarantine)
        .map_err(|e| Error::io("create directory", &quarantine, e))?;
    if let Some((i, at)) = damage.cut {
        report
            .actions
            .push(cut_segment(storage, dir, segments[i], at, &quarantine)?);
    }
    for &base in &segments[damage.move_from..] {
        for path in [dir::segment_path(dir, base), dir::index_path(dir, base)] {
            if !storage
                .exists(&path)
                .map_err(|e| Error::io("stat", &path, e))?
            {
                continue;
            }
            let to = quarantine.join(path.file_name().unwrap_or_default());
            storage
                .rename(&path, &to)
                .map_err(|e| Error::io("rename", &path, e))?;
            report.actions.push(RepairAction::Moved { from: path, to });
        }
    }
    for d in [&quarantine, &dir.join(QUARANTINE_DIR), &dir.to_path_buf()] {
        storage
            .sync_dir(d)
            .map_err(|e| Error::io("fsync directory", d, e))?;
    }
    warn!(dir = %dir.display(), quarantine = %quarantine.display(), reason = %damage.reason, "repaired the log");
    report.quarantine = Some(quarantine);
    Ok(report)
}

/// Scans the segments in order and finds the first damage; `next_offset`
/// ends as the offset after the last record kept.
fn find_damage(
    storage: &dyn Storage,
    dir: &Path,
    segments: &[u64],
    next_offset: &mut u64,
) -> Result<Option<Damage>> {
    let count = segments.len();
    let store_id = identity::load(storage, dir)?;
    let mut tagged_seen = false;
    for (i, &base) in segments.iter().enumerate() {
        let path = dir::segment_path(dir, base);
        let last = i + 1 == count;
        let whole = |reason: String| {
            Ok(Some(Damage {
                move_from: i,
                cut: None,
                reason,
            }))
        };
        if base != *next_offset {
            return whole(format!(
                "{}: starts at offset {base}, the previous segment ends at {next_offset}",
                path.display()
            ));
        }
        let file = storage
            .open(&path, OpenMode::Read)
            .map_err(|e| Error::io("open", &path, e))?;
        let bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
        if last && unfinished_creation(&bytes, base) {
            return Ok(None); // open creates it again
        }
        match SegmentHeader::decode(&bytes) {
            Ok(h) if h.base_offset == base => {
                if let Some(reason) = identity::foreign_reason(h.store_tag, store_id, tagged_seen) {
                    return whole(format!("{}: {reason}", path.display()));
                }
                tagged_seen |= h.store_tag != 0;
            }
            Ok(_) => {
                return whole(format!(
                    "{}: header names another base offset",
                    path.display()
                ))
            }
            Err(e) => return whole(format!("{}: {}", path.display(), e.reason())),
        }
        let s = scan(
            &bytes,
            SEGMENT_HEADER_LEN as u64,
            base,
            IndexBuilder::new(u64::MAX, Vec::new()),
            last,
        );
        *next_offset = s.next_offset;
        match s.stop {
            Stop::Clean if !last && s.records == 0 => {
                return whole(format!(
                    "{}: sealed segment holds no record",
                    path.display()
                ));
            }
            Stop::Clean | Stop::Torn { .. } => {} // a torn tail is cut by the next open
            Stop::Corrupt { position, reason } => {
                return Ok(Some(Damage {
                    move_from: i + 1,
                    cut: Some((i, s.end)),
                    reason: format!("{}: byte {position}: {reason}", path.display()),
                }));
            }
        }
    }
    Ok(None)
}

/// Saves the bytes of segment `base` after `at` into the quarantine, then
/// cuts the segment there and drops its (now stale) index.
fn cut_segment(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    at: u64,
    quarantine: &Path,
) -> Result<RepairAction> {
    let path = dir::segment_path(dir, base);
    let file = storage
        .open(&path, OpenMode::ReadWrite)
        .map_err(|e| Error::io("open", &path, e))?;
    let bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
    let tail = &bytes[usize::try_from(at).unwrap_or(bytes.len()).min(bytes.len())..];
    let saved_as = quarantine.join(format!("{}.from-byte-{at}", dir::segment_name(base)));
    let saved = storage
        .open(&saved_as, OpenMode::CreateNew)
        .map_err(|e| Error::io("create", &saved_as, e))?;
    saved
        .write_all_at(tail, 0)
        .map_err(|e| Error::io("write", &saved_as, e))?;
    saved
        .sync_data()
        .map_err(|e| Error::io("fsync", &saved_as, e))?;
    file.set_len(at)
        .map_err(|e| Error::io("truncate", &path, e))?;
    file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
    let index = dir::index_path(dir, base);
    if storage
        .exists(&index)
        .map_err(|e| Error::io("stat", &index, e))?
    {
        let to = quarantine.join(dir::index_name(base));
        storage
            .rename(&index, &to)
            .map_err(|e| Error::io("rename", &index, e))?;
    }
    Ok(RepairAction::Truncated {
        segment: path,
        at,
        bytes_moved: tail.len() as u64,
        saved_as,
    })
}
