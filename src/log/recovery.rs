//! Opening a log: finding the segments, checking them, and repairing a torn
//! tail.
//!
//! Only the last segment can end in a torn write: the writer fsyncs a segment
//! before it creates the next one. So sealed segments must be whole (their
//! headers are checked here, their frames when they are read and by
//! `verify`), and the last segment is scanned batch by batch from its start.
//!
//! At the first batch of the last segment that does not verify (at `pos`),
//! the bytes decide between a *torn tail* (truncated, with a warning) and
//! *corruption* (open fails, naming the file and byte position, and changes
//! nothing). Zeros alone prove nothing: payloads are opaque and often mostly
//! zeros (an event whose details hold a histogram of zero counts), so a
//! rule that reads zeros as "never written" cuts acknowledged records.
//!
//! First of all, zeros from `pos` to the end of the file are the end of the
//! log (`Stop::ZeroTail`): the writer fills the active segment with zeros
//! ahead of itself (`prepare`), and a crash leaves them. A batch never
//! reads as zeros (its header holds marker bytes), so nothing written is
//! cut this way; if anything non-zero follows `pos`, the rules below
//! decide exactly as they would without the zeros.
//!
//! What a crash can leave is narrow. Under `Durability::Fsync` only the
//! last write was in flight: one group of batches, written with one call
//! starting at a batch boundary, at most `GROUP_MAX_BYTES` plus its last
//! batch. A disk writes a 512-byte sector whole or not at all, so the
//! write's lost sectors read as zeros: whole aligned blocks, clipped where
//! the write begins and where the file ends; or the file ends early. Under
//! `Interval` and `None` several writes wait for one fsync, and any of them
//! may be lost whole while a later one survives. Damage to written data is
//! anything else, most often a flipped bit. The rules, in order:
//!
//! 1. the file ends inside the batch: **torn** (a flipped bit cannot make a
//!    length that a checksum covers point past the end);
//! 2. changing one bit anywhere in the batch, or two bits of one marker
//!    byte, makes it verify (`format::flips`): **corruption**. A lost sector
//!    replaces content the tear knows nothing about, so it leaves a checksum
//!    off by a random-looking value, not by one bit's syndrome. Unless that
//!    byte lies in zeros a flip cannot explain: an all-zero sector that runs
//!    past the end of the batch (a flip leaves the next batch's header as
//!    written), or an edge piece (below);
//! 3. no lost sector explains the failure: no all-zero sector piece touches
//!    the failing element (its header, frame, or trailer), the file does not
//!    end in zeros reaching back to it, and it is not a whole lost write
//!    (zeros from `pos` up to a batch that verifies): **corruption** if the
//!    header verified (the batch was written) or valid data follows, else a
//!    garbage tail (stale blocks a crash exposed), **torn**;
//! 4. a lost sector explains it and nothing valid follows: **torn**;
//! 5. a lost sector explains it and valid data follows (a batch header or
//!    frame whose checksum matches, with the expected offset or a later
//!    one, see `find_valid_after`): **torn** only if everything from `pos`
//!    to the end of the file can be one group write, since only the sectors
//!    of the write in flight reach the disk out of order; otherwise
//!    **corruption**.
//!
//! Why dropping a torn tail never loses an acknowledged record: the writer
//! acknowledges a group only after writing it in one call and fsyncing the
//! file (under `Durability::Fsync`), so every byte before the last write was
//! durable when it was acknowledged, and the bytes a crash can lose or leave
//! behind zeros all belong to that write, which nobody was told about. Rule
//! 5 keeps valid batches after a hole only inside that write's reach.
//!
//! Where bytes cannot tell, and what is chosen (deterministic, by position):
//!
//! - *Edge pieces.* A lost piece at an edge of the write can be one byte: a
//!   write that starts one to three bytes before a sector boundary and loses
//!   them (part of the header checksum), or a file that ends one byte into a
//!   lost sector (the trailer's last byte, `D`, has two bits set). A bit
//!   flip there can leave the very same bytes. Edge losses happen in every
//!   crash that tears a write; two flipped bits at exactly that byte do not:
//!   rule 2 yields to a lost piece at an edge (`in_edge_piece`), and it is
//!   **torn**.
//! - *A sector whose only non-zero content was one byte with one bit set*
//!   (a lone count of 1 in a zero histogram), lost whole, leaves the bytes a
//!   flip of that bit leaves. Rule 2 calls it **corruption**: a crash that
//!   lands there makes open refuse instead of cutting (nothing is lost;
//!   `repair` resolves it), which is the side to err on.
//! - *Lax durability.* When a lost write is followed by more than one
//!   group's worth of later writes, rule 5 calls it corruption although the
//!   contract allowed losing it; again open refuses rather than cuts.
//!
//! Telling every tear from every flip needs a record of where acknowledged
//! data ends that a crash cannot forge (for example a commit record per
//! group, written and fsynced after it): a format change, not made here.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use super::dir;
use super::durable_end::{DurableEnd, ReadLimit};
use super::hole::hole_of;
use super::identity::{foreign_reason, StoreId};
use super::repair::{damage_marker_name, damaged_data_end, rebuilt_segment};
use super::segment::{ActiveSegment, IndexBuilder, SealedSegment, Segments, Verified};
use super::writer::GROUP_MAX_BYTES;
use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::format::batch::{
    decode_batch, decode_header, find_valid_after, has_header_marker, BatchError,
};
use crate::format::flips::flipped_bit;
use crate::format::index_file::{IndexEntry, SegmentIndex};
use crate::format::BATCH_HEADER_LEN;
use crate::format::{SegmentHeader, SEGMENT_HEADER_LEN};
use crate::storage::{read_all, OpenMode, Storage, StorageFile};

/// Where a scan of a segment stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// At the end of the bytes, after a whole batch.
    Clean,
    /// After a whole batch, where every byte from `position` to the end of
    /// the file is zero: the part of a segment the writer filled with zeros
    /// ahead of itself (`LogOptions::preallocate_segments`) and never wrote
    /// a batch into. Only ever in the last segment; a reader treats it as
    /// the clean end, a writer appends from `position` on.
    ZeroTail { position: u64 },
    /// At a torn tail starting at `position`.
    Torn { position: u64, reason: String },
    /// At corruption starting at `position`.
    Corrupt { position: u64, reason: String },
}

/// The result of scanning a segment's batches.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Byte position after the last valid batch.
    pub end: u64,
    /// The offset after the last valid record.
    pub next_offset: u64,
    pub batches: u64,
    pub records: u64,
    /// Records of those that belong to holes (see `hole`).
    pub lost: u64,
    pub index: IndexBuilder,
    pub stop: Stop,
}

/// Scans the batches of `bytes` (a whole segment file) from `from`, where
/// the batch for `next_offset` is expected. With `last_segment`, a failure
/// may be a torn tail; otherwise every failure is corruption.
pub(crate) fn scan(
    bytes: &[u8],
    from: u64,
    next_offset: u64,
    index: IndexBuilder,
    last_segment: bool,
) -> Scan {
    let mut scan = Scan {
        end: from,
        next_offset,
        batches: 0,
        records: 0,
        lost: 0,
        index,
        stop: Stop::Clean,
    };
    let mut pos = usize::try_from(from).unwrap_or(usize::MAX);
    while pos < bytes.len() {
        match decode_batch(&bytes[pos..], Some(scan.next_offset)) {
            Ok(view) => {
                let h = view.header;
                scan.index.offer(IndexEntry {
                    first_offset: h.first_offset,
                    position: pos as u64,
                    min_timestamp_us: h.min_timestamp_us,
                    max_timestamp_us: h.max_timestamp_us,
                });
                pos += view.len();
                scan.end = pos as u64;
                scan.next_offset = h.next_offset();
                scan.batches += 1;
                scan.records += u64::from(h.record_count);
                // A hole batch holds nothing but hole records.
                if view
                    .frames()
                    .next()
                    .is_some_and(|f| hole_of(f.payload).is_some())
                {
                    scan.lost += u64::from(h.record_count);
                }
            }
            Err(_) if last_segment && bytes[pos..].iter().all(|&b| b == 0) => {
                // Checked before any other rule: nothing was ever written
                // here (a batch never reads as zeros: its header holds
                // marker bytes). Any non-zero byte after `pos` sends the
                // failure to `classify`, exactly as without zeros, so a
                // valid batch after zeros is still judged by rules 1-5.
                scan.stop = Stop::ZeroTail {
                    position: pos as u64,
                };
                break;
            }
            Err(error) => {
                scan.stop = classify(bytes, pos, scan.next_offset, error, last_segment);
                break;
            }
        }
    }
    scan
}

fn classify(
    bytes: &[u8],
    pos: usize,
    next_offset: u64,
    error: BatchError,
    last_segment: bool,
) -> Stop {
    let (at, reason, header) = match error {
        BatchError::Incomplete => (0, "batch runs past the end of the file", None),
        BatchError::Invalid { at, reason, header } => (at, reason, header),
    };
    let position = (pos + at) as u64;
    let corrupt = |why: &str| Stop::Corrupt {
        position,
        reason: why.to_string(),
    };
    let torn = |why: &str| Stop::Torn {
        position: pos as u64,
        reason: format!("{reason} ({why})"),
    };
    if !last_segment {
        return corrupt(reason);
    }
    if matches!(error, BatchError::Incomplete) {
        return torn("the write did not finish");
    }
    if let Some(flip) = flipped_bit(&bytes[pos..], next_offset) {
        let at = pos + flip.at;
        if !in_edge_piece(bytes, pos, at) && !zeros_past_batch(bytes, pos, at, pos + flip.batch_len)
        {
            return corrupt(&format!(
                "{reason}; one flipped bit at byte {at} explains it: damage, not a torn write"
            ));
        }
    }
    let element = failing_element(bytes, pos, at, header.map(|h| h.batch_len as usize));
    let hole = lost_piece(bytes, pos, &element).or_else(|| lost_write(bytes, pos, next_offset));
    let valid = find_valid_after(bytes, pos + 1, next_offset);
    match (hole, valid) {
        (Some(hole), None) => torn(&format!(
            "bytes {}..{} read as zeros: never written",
            hole.start, hole.end
        )),
        (Some(hole), Some(valid)) if one_write_reaches(bytes, pos, next_offset) => torn(&format!(
            "bytes {}..{} read as zeros: never written; the valid data at byte {valid} \
                 belongs to the same unacknowledged write",
            hole.start, hole.end
        )),
        (Some(_), Some(valid)) => corrupt(&format!(
            "{reason}; valid data follows at byte {valid}, further than one write reaches"
        )),
        (None, Some(valid)) => corrupt(&format!("{reason}; valid data follows at byte {valid}")),
        // The header verified, so the batch was written; nothing lost explains it.
        (None, None) if header.is_some() => corrupt(reason),
        (None, None) => torn("nothing valid follows: a tail that was never written"),
    }
}

/// Sector size assumed for writes that reach the disk out of order: a
/// sector is written whole or not at all.
const SECTOR_BYTES: usize = 512;

/// The bytes of the first element of the batch at `pos` that fails: its
/// header (`batch_len` is `None`), the frame or trailer at `pos + at`
/// through the end of the batch, clipped to the file.
fn failing_element(bytes: &[u8], pos: usize, at: usize, batch_len: Option<usize>) -> Range<usize> {
    let start = pos + at;
    let end = match batch_len {
        None => pos + BATCH_HEADER_LEN,
        Some(len) if at == 0 => pos + len.min(BATCH_HEADER_LEN),
        Some(len) => pos + len,
    };
    start.min(bytes.len())..end.min(bytes.len()).max(start.min(bytes.len()))
}

/// Zeros that a lost sector explains, touching `element`: the run of zeros
/// that ends the file, or a sector-aligned block, clipped to the write that
/// starts at `pos` and to the end of the file, that is all zeros.
///
/// A sector that never reached the disk reads as zeros; one that did holds
/// what was written. So a lost sector is a whole aligned block of zeros,
/// except where the write (which starts at a batch, `pos` at the latest)
/// or the file begins or ends inside it.
fn lost_piece(bytes: &[u8], pos: usize, element: &Range<usize>) -> Option<Range<usize>> {
    let len = bytes.len();
    let tail = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if tail < len && tail < element.end {
        return Some(tail.max(pos)..len);
    }
    let first = element.start / SECTOR_BYTES * SECTOR_BYTES;
    (first..element.end)
        .step_by(SECTOR_BYTES)
        .map(|s| s.max(pos)..(s + SECTOR_BYTES).min(len))
        .find(|piece| !piece.is_empty() && bytes[piece.clone()].iter().all(|&b| b == 0))
}

/// A whole write lost while a later one reached the disk (possible when
/// several writes wait for one fsync, under `Interval` or `None`): zeros
/// from `pos` up to a batch that verifies.
fn lost_write(bytes: &[u8], pos: usize, next_offset: u64) -> Option<Range<usize>> {
    // The next batch may itself begin with zero bytes (its checksum's low
    // byte, say): its header starts at most 36 bytes (where its marker is)
    // before the first non-zero byte.
    let first = pos + bytes[pos..].iter().position(|&b| b != 0)?;
    let from = first.saturating_sub(36).max(pos + 1);
    let (next, _) = next_header(
        &bytes[..bytes.len().min(first + BATCH_HEADER_LEN)],
        from,
        next_offset,
    )?;
    (next <= first).then_some(pos..next)
}

/// True when `at` lies in a lost piece at an edge of the write that starts
/// at `pos`: the part of its first sector from `pos`, or the part of the
/// file's last sector, when those bytes are all zero.
///
/// There a flipped bit and a lost sector can leave the very same bytes: a
/// write that starts one byte before a sector boundary and loses that byte
/// (the low byte of a header checksum with one bit set), or a file that ends
/// one byte into a sector that was lost (the trailer's last byte, `D`, has
/// two bits set). Lost sectors at the edge of the last write are common in
/// a crash, two flipped bits exactly there are not: such a piece is read as
/// a tear. See the module docs.
fn in_edge_piece(bytes: &[u8], pos: usize, at: usize) -> bool {
    let len = bytes.len();
    let zeros = |r: Range<usize>| !r.is_empty() && bytes[r].iter().all(|&b| b == 0);
    let first_end = ((pos / SECTOR_BYTES + 1) * SECTOR_BYTES).min(len);
    let last_start = (len.saturating_sub(1) / SECTOR_BYTES * SECTOR_BYTES).max(pos);
    let first = !pos.is_multiple_of(SECTOR_BYTES) && at < first_end && zeros(pos..first_end);
    let last = !len.is_multiple_of(SECTOR_BYTES) && at >= last_start && zeros(last_start..len);
    first || last
}

/// True when the sector holding byte `at` (from `pos`, where the write may
/// start) is all zeros and runs past `batch_end`, where the next batch's
/// header must be. A flipped bit at `at` leaves the batch's own zeros as
/// they were written, but cannot zero what follows the batch: a lost sector
/// can (for example one that held only the trailer's last byte, `D`, and
/// the start of the next batch).
fn zeros_past_batch(bytes: &[u8], pos: usize, at: usize, batch_end: usize) -> bool {
    let start = (at / SECTOR_BYTES * SECTOR_BYTES).max(pos);
    let end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(bytes.len());
    end > batch_end && bytes[start..end].iter().all(|&b| b == 0)
}

/// True when every byte from `pos` to the end of the file can be one group
/// write: the writer stops a group once it holds `GROUP_MAX_BYTES`, so a
/// write is shorter than that plus its last batch, which is at most the
/// longest batch whose header verifies from `pos` on.
///
/// The span ends at the last non-zero byte: zeros after it need no write to
/// explain them (a file filled ahead of the writer holds them before any
/// write, and a lost sector reads as them), so a segment filled with zeros
/// ahead of the writer is judged as if it ended where its last write did.
fn one_write_reaches(bytes: &[u8], pos: usize, next_offset: u64) -> bool {
    let written_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let bytes = &bytes[..written_end.max(pos)];
    let span = bytes.len() - pos;
    if span <= GROUP_MAX_BYTES {
        return true;
    }
    let mut longest = 0;
    let mut from = pos;
    while let Some((at, len)) = next_header(bytes, from, next_offset) {
        longest = longest.max(len);
        from = at + len.max(1);
    }
    span < GROUP_MAX_BYTES + longest
}

/// The first batch header at or after `from` that verifies, with a first
/// offset of at least `min_offset`: its position and the batch length it
/// declares (its frames may be damaged; the header's checksum vouches for
/// the length).
fn next_header(bytes: &[u8], from: usize, min_offset: u64) -> Option<(usize, usize)> {
    let last = bytes.len().checked_sub(BATCH_HEADER_LEN)?;
    (from..=last).find_map(|at| {
        let rest = &bytes[at..];
        if !has_header_marker(rest) {
            return None;
        }
        decode_header(rest)
            .ok()
            .filter(|h| h.first_offset >= min_offset)
            .map(|h| (at, h.batch_len as usize))
    })
}

/// True when a segment file is what a creation that did not finish leaves:
/// a prefix of the right header, then zeros (or nothing) to its end.
///
/// The store tag bytes are not compared: a segment that holds nothing is
/// created again whatever store it names.
pub(crate) fn unfinished_creation(bytes: &[u8], base: u64) -> bool {
    let expected = SegmentHeader {
        store_tag: 0,
        base_offset: base,
    }
    .encode();
    let head = &bytes[..bytes.len().min(SEGMENT_HEADER_LEN)];
    let written = head.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let prefix_matches = head[..written]
        .iter()
        .zip(&expected)
        .enumerate()
        .all(|(i, (a, b))| (12..16).contains(&i) || a == b);
    SegmentHeader::decode(bytes).is_err()
        && prefix_matches
        && bytes[head.len()..].iter().all(|&b| b == 0)
}

/// Whether the open may change the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Writer,
    /// A reader: changes nothing, and reads the last segment only as far as
    /// the durable end the writer published (all of it when none is).
    ReadOnly(Option<DurableEnd>),
}

/// What opening found: the segments, and for a writer the active file.
pub(crate) struct Opened {
    pub segments: Segments,
    /// Bytes dropped from a torn tail.
    pub torn_bytes: u64,
}

/// Opens every segment of the log in `dir`.
///
/// Every segment must belong to the store `store_id` (the id on disk, if
/// any; see `identity::foreign_reason`), checked as its header is read. Its
/// tag goes into any segment the open creates (a writer's first segment, or
/// one whose creation did not finish); without an id, such a segment is
/// untagged, like the segments before it.
pub(crate) fn open_segments(
    storage: &dyn Storage,
    dir: &Path,
    options: &LogOptions,
    access: Access,
    store_id: Option<StoreId>,
) -> Result<Opened> {
    let store_tag = store_id.map_or(0, StoreId::tag);
    let mut owner = Owner {
        store_id,
        tagged_seen: false,
    };
    let listing = dir::list(storage, dir)?;
    let published = match access {
        Access::Writer => super::durable_end::load(storage, dir)?,
        Access::ReadOnly(end) => end,
    };
    refuse_a_missing_durable_segment(storage, dir, listing.segments.last().copied(), published)?;
    let mut sealed = Vec::new();
    let mut rebuilt_indexes = Vec::new();
    let mut expected_base = 0u64;
    for (i, &base) in listing.segments.iter().enumerate() {
        let path = dir::segment_path(dir, base);
        if base != expected_base {
            return Err(Error::corruption(
                &path,
                0,
                format!(
                    "segment starts at offset {base}, but the previous one ends at {expected_base}"
                ),
            ));
        }
        if let Some(&next_base) = listing.segments.get(i + 1) {
            let (segment, rebuilt) =
                open_sealed(storage, dir, base, next_base, options, &mut owner)?;
            expected_base = segment.next_offset;
            sealed.push(Arc::new(segment));
            rebuilt_indexes.extend(rebuilt);
        } else {
            let (active, torn_bytes, damaged) =
                open_last(storage, dir, base, options, access, store_tag, &mut owner)?;
            sealed.extend(damaged.map(Arc::new));
            // Only now that every segment checked out: an open that fails
            // leaves the directory as it found it.
            if access == Access::Writer {
                for index in &rebuilt_indexes {
                    write_index(storage, dir, index);
                }
            }
            return Ok(Opened {
                segments: Segments { sealed, active },
                torn_bytes,
            });
        }
    }
    // No segment yet.
    let active = match access {
        Access::Writer => ActiveSegment::create(storage, dir, 0, store_tag)?,
        Access::ReadOnly(_) => empty_view(storage, dir, 0),
    };
    Ok(Opened {
        segments: Segments { sealed, active },
        torn_bytes: 0,
    })
}

/// Which store the segments read so far belong to.
pub(super) struct Owner {
    pub store_id: Option<StoreId>,
    /// Whether a segment before carried a store tag.
    pub tagged_seen: bool,
}

/// Checks a segment's header; returns its store tag.
fn check_header(path: &Path, bytes: &[u8], base: u64, owner: &mut Owner) -> Result<u32> {
    // Refused, never guessed: an open changes nothing it cannot prove, and
    // reading past the header would accept a file that may not be this
    // segment. `repair` proves it (the first batch verifies from the base
    // offset the name gives) and writes the header again.
    let header = SegmentHeader::decode(bytes).map_err(|e| {
        Error::corruption(
            path,
            0,
            format!(
                "{}; run `enforcelog repair`: it writes the header again from the file name \
                 when the segment's batches verify from that offset",
                e.reason()
            ),
        )
    })?;
    if let Some(reason) = foreign_reason(header.store_tag, owner.store_id, owner.tagged_seen) {
        return Err(Error::corruption(path, 12, reason));
    }
    owner.tagged_seen |= header.store_tag != 0;
    if header.base_offset != base {
        return Err(Error::corruption(
            path,
            16,
            format!(
                "segment header names base offset {}, the file name {base}",
                header.base_offset
            ),
        ));
    }
    Ok(header.store_tag)
}

/// Opens a sealed segment. When its index file is missing or invalid, the
/// index is rebuilt from the segment and returned, for the caller to write
/// once the whole open has succeeded (writers only); damage that scan finds
/// is read past (see [`sealed_past_damage`]). `next_base` is the next
/// segment's base offset. The segment remembers its file's stamp as it was
/// checked (see `segment::Verified`).
pub(super) fn open_sealed(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    next_base: u64,
    options: &LogOptions,
    owner: &mut Owner,
) -> Result<(SealedSegment, Option<SegmentIndex>)> {
    let path = dir::segment_path(dir, base);
    let marker = dir.join(damage_marker_name(base));
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let stamp = file.stamp().map_err(|e| Error::io("stat", &path, e))?;
    let verified = |tag: u32| {
        stamp.map(|stamp| Verified {
            stamp,
            tagged: tag != 0,
        })
    };
    if storage
        .exists(&marker)
        .map_err(|e| Error::io("stat", &marker, e))?
    {
        let bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
        let tag = check_header(&path, &bytes, base, owner)?;
        // Rebuilt exactly as when it was sealed (as the last segment, a
        // torn last write left out), so that it ends where the next
        // segment was made to start; `open_segments` checks that it does.
        let (content, _) = rebuilt_segment(&bytes, base, None);
        let mut segment = damaged_sealed(&path, base, content, options, base)?;
        segment.verified = verified(tag);
        return Ok((segment, None));
    }
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    if len >= SEGMENT_HEADER_LEN as u64 {
        file.read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read", &path, e))?;
    }
    let tag = check_header(
        &path,
        &header[..len.min(SEGMENT_HEADER_LEN as u64) as usize],
        base,
        owner,
    )?;
    if let Some(index) = load_index(storage, dir, base, len) {
        let mut segment = SealedSegment::new(base, index.next_offset, len, path, index.entries);
        segment.verified = verified(tag);
        return Ok((segment, None));
    }
    // Missing or invalid index: rebuild it from the segment, which checks
    // every frame of it on the way.
    let bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
    let scan = scan(
        &bytes,
        SEGMENT_HEADER_LEN as u64,
        base,
        IndexBuilder::new(options.index_interval_bytes, Vec::new()),
        false,
    );
    if let Stop::Corrupt { position, reason } = scan.stop {
        // No index is written for it: its file stays as found, and every
        // open scans it and rebuilds it the same way.
        let damage = format!("damage at byte {position}: {reason}");
        let mut segment = sealed_past_damage(&path, base, next_base, &bytes, options, &damage)?;
        segment.verified = verified(tag);
        return Ok((segment, None));
    }
    if scan.records == 0 {
        return Err(Error::corruption(
            &path,
            SEGMENT_HEADER_LEN as u64,
            "sealed segment holds no record",
        ));
    }
    info!(segment = %path.display(), "rebuilt the offset index of a sealed segment");
    let index = SegmentIndex {
        base_offset: base,
        next_offset: scan.next_offset,
        segment_len: len,
        entries: scan.index.entries,
    };
    let mut segment = SealedSegment::new(base, index.next_offset, len, path, index.entries.clone());
    segment.verified = verified(tag);
    Ok((segment, Some(index)))
}

/// Reads the index of a sealed segment; `None` when missing or invalid.
fn load_index(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    segment_len: u64,
) -> Option<SegmentIndex> {
    let path = dir::index_path(dir, base);
    let file = storage.open(&path, OpenMode::Read).ok()?;
    let bytes = read_all(&*file).ok()?;
    let index = SegmentIndex::decode(&bytes);
    let usable = index.as_ref().is_some_and(|i| {
        i.base_offset == base && i.segment_len == segment_len && i.next_offset > base
    });
    if !usable && bytes.is_empty() {
        // Index files are not fsynced: a crash after the directory fsync
        // that made the name durable leaves an empty file. Expected.
        info!(index = %path.display(), "offset index is empty (not yet written at a crash); rebuilding it");
    } else if !usable {
        warn!(index = %path.display(), "offset index is invalid; rebuilding it from the segment");
    }
    index.filter(|_| usable)
}

/// Writes a sealed segment's index. Failure is only logged: the index is
/// derived data, rebuilt on the next open.
pub(crate) fn write_index(storage: &dyn Storage, dir: &Path, index: &SegmentIndex) {
    let name = dir::index_name(index.base_offset);
    if let Err(e) = dir::write_file_atomically(storage, dir, &name, &index.encode(), false) {
        warn!(error = %e, "could not write a segment index; it will be rebuilt on open");
    }
}

/// The view of a segment that holds nothing yet (read-only opens only):
/// an empty in-memory file, which refuses writes.
fn empty_view(storage: &dyn Storage, dir: &Path, base: u64) -> ActiveSegment {
    let _ = storage;
    ActiveSegment {
        base_offset: base,
        path: dir::segment_path(dir, base),
        file: Arc::new(InMemory(Vec::new())),
        committed_len: SEGMENT_HEADER_LEN as u64,
        next_offset: base,
        index: Vec::new(),
    }
}

/// A torn tail lies past everything the last writer made durable. When
/// the published durable end (`DURABLE`, which never names a byte before
/// its fsync) covers the failure, whatever the bytes look like, it is
/// damage to acknowledged data: corruption, which is sealed as found, never
/// cut. After a crash the file may lag the disk; then it protects less,
/// never wrongly.
///
/// Zeros that start below the durable end are the same damage: the writer
/// made batches durable there, and a batch never reads as zeros.
fn refuse_to_cut_durable_bytes(durable_len: u64, scan: &mut Scan) {
    let (position, reason) = match &scan.stop {
        Stop::Torn { position, reason } => (*position, reason.clone()),
        Stop::ZeroTail { position } => (*position, "the rest of the segment reads as zeros".into()),
        Stop::Clean | Stop::Corrupt { .. } => return,
    };
    if position < durable_len {
        scan.stop = Stop::Corrupt {
            position,
            reason: format!(
                "{reason}; but the writer had made the segment durable up to byte {durable_len}"
            ),
        };
    }
}

/// The segment the durable end names holds acknowledged records when the
/// end names more than its header; it exists when the end was published
/// (a writer creates a segment before it names it), so if it is not
/// listed now, or the segments stop before it, it was removed by something
/// else: refused as a cut below the durable end is, unless `repair`
/// withdrew or changed the end meanwhile (it moves segments away only after
/// it withdrew the end). `last` is the last listed segment's base.
pub(crate) fn refuse_a_missing_durable_segment(
    storage: &dyn Storage,
    dir: &Path,
    last: Option<u64>,
    published: Option<DurableEnd>,
) -> Result<()> {
    let Some(end) = published else {
        return Ok(());
    };
    let missing = last.is_none_or(|last| last < end.segment_base);
    if missing
        && end.segment_len > SEGMENT_HEADER_LEN as u64
        && super::durable_end::still_names(storage, dir, end.segment_base, end.segment_len)
    {
        return Err(Error::corruption(
            dir::segment_path(dir, end.segment_base),
            0,
            format!(
                "the segment is missing, but its writer made it durable up to offset {}: \
                 acknowledged records are missing",
                end.next_offset
            ),
        ));
    }
    Ok(())
}

/// Below the durable end lie records the writer acknowledged and synced,
/// and nothing enforcelog does shortens a file below it: a last segment
/// whose file ends before it lost them to something else. A cut at a batch
/// boundary would scan clean, and one into the header would read as a
/// creation that did not finish; both are refused here, before either: a
/// reader must not read what is left as the whole log, and a writer must
/// not hand the lost offsets out again (`repair` retires them). The end is
/// read again first: `repair` withdraws it before it rewrites a segment.
pub(crate) fn refuse_a_cut_below_the_durable_end(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    base: u64,
    file_len: usize,
    durable_len: u64,
) -> Result<()> {
    let file_len = file_len as u64;
    if file_len < durable_len
        && durable_len > SEGMENT_HEADER_LEN as u64
        && super::durable_end::still_names(storage, dir, base, durable_len)
    {
        return Err(Error::corruption(
            path,
            file_len,
            format!(
                "the segment ends at byte {file_len}, before byte {durable_len}, up to which its \
                 writer made it durable: acknowledged records are missing"
            ),
        ));
    }
    Ok(())
}

/// What the published durable end says of the last segment.
#[derive(Debug, Clone, Copy, Default)]
struct Durable {
    /// Bytes of it known durable (0 when the end names another segment or
    /// is missing).
    len: u64,
    /// The offset after the last durable record in it (0 likewise).
    next_offset: u64,
}

fn durable_in(storage: &dyn Storage, dir: &Path, base: u64) -> Result<Durable> {
    let end = super::durable_end::load(storage, dir)?;
    Ok(match (ReadLimit::for_last_segment(end, base), end) {
        (ReadLimit::Upto(len), Some(end)) => Durable {
            len,
            next_offset: end.next_offset,
        },
        _ => Durable::default(),
    })
}

pub(super) fn open_last(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    options: &LogOptions,
    access: Access,
    store_tag: u32,
    owner: &mut Owner,
) -> Result<(ActiveSegment, u64, Option<SealedSegment>)> {
    let path = dir::segment_path(dir, base);
    let mode = match access {
        Access::Writer => OpenMode::ReadWrite,
        Access::ReadOnly(_) => OpenMode::Read,
    };
    let file = storage
        .open(&path, mode)
        .map_err(|e| Error::io("open", &path, e))?;
    let mut bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
    // What the last writer made durable here: for a writer, the end it
    // reads now (and goes by below); for a reader, the end it opened with.
    let durable = match access {
        Access::Writer => durable_in(storage, dir, base)?,
        Access::ReadOnly(_) => Durable::default(),
    };
    let durable_len = match access {
        Access::ReadOnly(end) => match ReadLimit::for_last_segment(end, base) {
            ReadLimit::Upto(len) => len,
            ReadLimit::Unknown => 0,
        },
        Access::Writer => durable.len,
    };
    refuse_a_cut_below_the_durable_end(storage, dir, &path, base, bytes.len(), durable_len)?;
    if unfinished_creation(&bytes, base) {
        // A segment whose creation did not finish: it holds nothing.
        return match access {
            Access::ReadOnly(_) => Ok((empty_view(storage, dir, base), 0, None)),
            Access::Writer => {
                warn!(segment = %path.display(), "segment creation did not finish; creating it again");
                drop(file);
                storage
                    .remove(&path)
                    .map_err(|e| Error::io("remove", &path, e))?;
                Ok((
                    ActiveSegment::create(storage, dir, base, store_tag)?,
                    bytes.len() as u64,
                    None,
                ))
            }
        };
    }
    check_header(&path, &bytes, base, owner)?;
    let limit = match access {
        Access::ReadOnly(end) => ReadLimit::for_last_segment(end, base),
        Access::Writer => ReadLimit::Unknown,
    };
    let mut viewed_durable_len = 0;
    if let ReadLimit::Upto(durable_len) = limit {
        // Past the durable end lie bytes a crash may still take away.
        viewed_durable_len = durable_len;
        let durable_len = usize::try_from(durable_len).unwrap_or(usize::MAX);
        bytes.truncate(durable_len.max(SEGMENT_HEADER_LEN));
    }
    let scan_all = |bytes: &[u8]| {
        scan(
            bytes,
            SEGMENT_HEADER_LEN as u64,
            base,
            IndexBuilder::new(options.index_interval_bytes, Vec::new()),
            true,
        )
    };
    let mut scan = scan_all(&bytes);
    refuse_to_cut_durable_bytes(durable.len, &mut scan);
    let (file, bytes) = match (&scan.stop, access) {
        (Stop::Corrupt { position, reason }, Access::Writer) => {
            let damage = format!("damage at byte {position}: {reason}");
            // The zeros after the data go first (durably, before the
            // damage marker): the segment is sealed as it would be without
            // filling, and every later open rebuilds it from the same bytes.
            let data_end = damaged_data_end(&bytes, base, durable.len);
            if data_end < bytes.len() {
                file.set_len(data_end as u64)
                    .map_err(|e| Error::io("truncate", &path, e))?;
                file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
                bytes.truncate(data_end);
            }
            let sealed = seal_damaged(storage, dir, base, &bytes, options, durable, &damage)?;
            let active = ActiveSegment::create(storage, dir, sealed.next_offset, store_tag)?;
            return Ok((active, 0, Some(sealed)));
        }
        (Stop::Corrupt { position, reason }, Access::ReadOnly(_)) => {
            // Changes nothing: reads an in-memory rebuild instead (each
            // damaged range a hole), as the writer's next open will.
            warn!(
                segment = %path.display(),
                position,
                reason = %reason,
                "damage in the active segment: reading past it"
            );
            // Without the zeros after the data, as the writer seals it.
            let data_end = damaged_data_end(&bytes, base, viewed_durable_len);
            let (rebuilt, _) = rebuilt_segment(&bytes[..data_end], base, None);
            scan = scan_all(&rebuilt);
            let file: Arc<dyn StorageFile> = Arc::new(InMemory(rebuilt.clone()));
            (file, rebuilt)
        }
        _ => (file, bytes),
    };
    let torn_bytes = match scan.stop {
        // Zeros the writer filled ahead of itself: kept, and appended over.
        Stop::ZeroTail { .. } => 0,
        _ => bytes.len() as u64 - scan.end,
    };
    match &scan.stop {
        Stop::Clean | Stop::ZeroTail { .. } => {}
        Stop::Corrupt { position, reason } => {
            // Still damaged after every damaged range became a hole: not
            // a state a rebuild can leave; refuse rather than guess.
            return Err(Error::corruption(&path, *position, reason.clone()));
        }
        Stop::Torn { position, reason } if access == Access::Writer => {
            warn!(
                segment = %path.display(),
                position,
                bytes_dropped = torn_bytes,
                reason = %reason,
                "truncating a torn tail"
            );
            file.set_len(scan.end)
                .map_err(|e| Error::io("truncate", &path, e))?;
            file.sync_data().map_err(|e| Error::io("fsync", &path, e))?;
        }
        Stop::Torn { .. } => {} // a read-only view treats an in-flight tail as the end
    }
    info!(
        segment = %path.display(),
        records = scan.records,
        next_offset = scan.next_offset,
        "opened the active segment"
    );
    Ok((
        ActiveSegment {
            base_offset: base,
            path: PathBuf::from(&path),
            file,
            committed_len: scan.end,
            next_offset: scan.next_offset,
            index: scan.index.entries,
        },
        torn_bytes,
        None,
    ))
}

/// Damage in the active segment must not stop recording: the writer
/// leaves the segment as it found it (its data bytes never change, so
/// nothing a later `repair` or an operator needs is lost; only the zeros
/// after the data are cut first, see [`damaged_data_end`]) and seals it,
/// and the caller starts a new segment past every offset it holds.
///
/// The seal is durable before the new segment exists: a marker file
/// `<segment name>.damaged` (its text: where and why), fsynced with its
/// directory entry. From then on every open reads that segment through an
/// in-memory rebuild in which each damaged range is a hole of the offsets
/// it held (the size given by the next batch that verifies, or by the next
/// segment's base offset), so every batch that verifies stays readable and
/// projections count the hole as lost instead of stalling. `verify` still
/// reports the damage; `repair` writes the rebuild to disk (quarantining
/// the damaged bytes) and removes the marker.
fn seal_damaged(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    bytes: &[u8],
    options: &LogOptions,
    durable: Durable,
    damage: &str,
) -> Result<SealedSegment> {
    let path = dir::segment_path(dir, base);
    let (content, next_offset) = rebuilt_segment(bytes, base, None);
    let sealed = damaged_sealed(&path, base, content, options, durable.next_offset)?;
    debug_assert_eq!(sealed.next_offset, next_offset);
    let text = format!("{damage}\n");
    dir::write_file_atomically(
        storage,
        dir,
        &damage_marker_name(base),
        text.as_bytes(),
        true,
    )?;
    warn!(
        segment = %path.display(),
        damage,
        next_offset,
        "damage in the active segment: sealed it as found and going on recording in a new \
         segment; `enforcelog repair` records the damage as a hole"
    );
    Ok(sealed)
}

/// Damage in a sealed segment (other than the one a writer sealed with
/// damage, see [`seal_damaged`]) must fail neither other tenants' reads
/// nor recording: the segment is read through an in-memory rebuild of
/// `bytes` (its file, which stays as found for `verify` and `repair`) in
/// which each damaged range is a hole of exactly the offsets it held,
/// sized by the batches that verify around it and, at its end, by
/// `next_base`, the next segment's base offset. Found by a scan at open
/// (no usable index) or by a reader that meets it (`reader`), either way
/// the rebuild is the same: a function of the file's bytes and of
/// `next_base`, both durable, so no marker is needed for every later open
/// to read it alike. Refused (`Corruption`) only when no rebuild ends at
/// `next_base`.
pub(crate) fn sealed_past_damage(
    path: &Path,
    base: u64,
    next_base: u64,
    bytes: &[u8],
    options: &LogOptions,
    damage: &str,
) -> Result<SealedSegment> {
    let (content, next_offset) = rebuilt_segment(bytes, base, Some(next_base));
    let sealed = damaged_sealed(path, base, content, options, next_base)?;
    if next_offset != next_base || sealed.next_offset != next_base {
        return Err(Error::corruption(
            path,
            SEGMENT_HEADER_LEN as u64,
            format!(
                "{damage}; its rebuild ends at offset {next_offset}, the next segment starts at \
                 {next_base}"
            ),
        ));
    }
    warn!(
        segment = %path.display(),
        damage,
        offsets = %format_args!("{base}..{next_base}"),
        "damage in a sealed segment: reading every batch that verifies, the damaged ranges as \
         holes (lost entries); `enforcelog verify` reports it, `enforcelog repair` records it"
    );
    Ok(sealed)
}

/// A sealed segment read through `content`, the rebuild of its damaged
/// file, which must verify whole and hold a record. A torn tail at or past
/// `durable_next_offset` (the tear of the last write the segment took
/// before it was sealed, never acknowledged) is left out; one before it is
/// damage to durable records the rebuild could not size, refused.
fn damaged_sealed(
    path: &Path,
    base: u64,
    mut content: Vec<u8>,
    options: &LogOptions,
    durable_next_offset: u64,
) -> Result<SealedSegment> {
    let s = scan(
        &content,
        SEGMENT_HEADER_LEN as u64,
        base,
        IndexBuilder::new(options.index_interval_bytes, Vec::new()),
        true,
    );
    match s.stop {
        Stop::Clean => {}
        Stop::ZeroTail { .. } => {
            content.truncate(usize::try_from(s.end).unwrap_or(content.len()));
        }
        Stop::Torn { .. } if s.next_offset >= durable_next_offset => {
            content.truncate(usize::try_from(s.end).unwrap_or(content.len()));
        }
        Stop::Corrupt { position, reason } | Stop::Torn { position, reason } => {
            return Err(Error::corruption(path, position, reason));
        }
    }
    if s.records == 0 {
        return Err(Error::corruption(
            path,
            SEGMENT_HEADER_LEN as u64,
            "damaged segment holds no record that verifies",
        ));
    }
    Ok(SealedSegment::with_content(
        base,
        s.next_offset,
        path.to_path_buf(),
        s.index.entries,
        content,
    ))
}

/// A read-only file held in memory: an empty segment, or the rebuild of a
/// damaged segment that is read instead of its file.

#[derive(Debug)]
struct InMemory(Vec<u8>);

impl StorageFile for InMemory {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let start = usize::try_from(pos).map_err(|_| std::io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn map(&self) -> std::io::Result<crate::storage::Mapped> {
        Ok(crate::storage::Mapped::Owned(self.0.clone()))
    }
}

/// Truncates the active segment to the batch that starts at `end`, when
/// records at or after `end` are in it (see `Log::reopen_after_failure`).
pub(crate) fn drop_unacknowledged(active: &mut ActiveSegment, end: u64) -> Result<()> {
    if end >= active.next_offset || end < active.base_offset {
        return Ok(());
    }
    let path = active.path.clone();
    let bytes = read_all(&*active.file).map_err(|e| Error::io("read", &path, e))?;
    let mut pos = SEGMENT_HEADER_LEN;
    let mut next = active.base_offset;
    while next < end {
        let view = decode_batch(&bytes[pos..], Some(next))
            .map_err(|_| Error::corruption(&path, pos as u64, "batch changed while reopening"))?;
        pos += view.len();
        next = view.header.next_offset();
    }
    if next != end {
        // `end` falls inside a batch: an acknowledged end always lies on a
        // batch boundary, so this log is not the one that failed.
        return Err(Error::corruption(
            &path,
            pos as u64,
            "acknowledged end is not a batch boundary",
        ));
    }
    warn!(
        segment = %path.display(),
        position = pos,
        records_dropped = active.next_offset - end,
        "dropping records the failed writer never acknowledged"
    );
    active
        .file
        .set_len(pos as u64)
        .map_err(|e| Error::io("truncate", &path, e))?;
    active
        .file
        .sync_data()
        .map_err(|e| Error::io("fsync", &path, e))?;
    active.committed_len = pos as u64;
    active.next_offset = end;
    active.index.retain(|e| e.position < pos as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::encode_batch;
    use crate::record::Record;

    /// A segment whose first batch holds one record with a long run of
    /// zeros, followed by `after_bytes` of one-record batches.
    fn segment(after_bytes: usize) -> (Vec<u8>, usize) {
        let mut bytes = SegmentHeader {
            store_tag: 0,
            base_offset: 0,
        }
        .encode()
        .to_vec();
        let mut payload = vec![0u8; 4000];
        payload[..64].fill(0xA5);
        payload[2000..2064].fill(0x5A);
        encode_batch(&mut bytes, 0, &[Record::new(1, payload)]);
        let first_end = bytes.len();
        let mut next = 1;
        while bytes.len() - first_end < after_bytes {
            encode_batch(&mut bytes, next, &[Record::new(2, vec![0x77; 1 << 16])]);
            next += 1;
        }
        (bytes, first_end)
    }

    fn classify_first(bytes: &[u8]) -> Stop {
        let s = scan(
            bytes,
            SEGMENT_HEADER_LEN as u64,
            0,
            IndexBuilder::new(u64::MAX, Vec::new()),
            true,
        );
        assert_eq!(s.batches, 0, "the first batch should fail");
        s.stop
    }

    /// Zeros the aligned sector holding the non-zero run at 2000 of the
    /// first record: a lost sector, not a flipped bit.
    fn lose_a_sector(bytes: &mut [u8]) {
        let at = SEGMENT_HEADER_LEN + BATCH_HEADER_LEN + 24 + 2000;
        let start = at / SECTOR_BYTES * SECTOR_BYTES;
        bytes[start..start + SECTOR_BYTES].fill(0);
    }

    #[test]
    fn a_lost_sector_with_valid_batches_after_it_within_one_write_is_torn() {
        let (mut bytes, _) = segment(1 << 20);
        lose_a_sector(&mut bytes);
        assert!(matches!(classify_first(&bytes), Stop::Torn { .. }));
    }

    #[test]
    fn zeros_filled_ahead_of_the_writer_do_not_count_as_written() {
        // The write in flight lost a sector and reached into a segment
        // filled with zeros far ahead (more than one write's reach): the
        // zeros after its last byte need no write, so it is still torn.
        let (mut bytes, _) = segment(1 << 20);
        lose_a_sector(&mut bytes);
        bytes.resize(bytes.len() + GROUP_MAX_BYTES + (1 << 20), 0);
        assert!(matches!(classify_first(&bytes), Stop::Torn { .. }));
    }

    #[test]
    fn zeros_from_a_batch_boundary_to_the_end_are_a_zero_tail() {
        let (mut bytes, first_end) = segment(0);
        bytes.resize(first_end + 5000, 0);
        let s = scan(
            &bytes,
            SEGMENT_HEADER_LEN as u64,
            0,
            IndexBuilder::new(u64::MAX, Vec::new()),
            true,
        );
        assert_eq!(s.batches, 1);
        assert_eq!(
            s.stop,
            Stop::ZeroTail {
                position: first_end as u64
            }
        );
        // Not in a sealed segment: there the zeros are damage.
        let sealed = scan(
            &bytes,
            SEGMENT_HEADER_LEN as u64,
            0,
            IndexBuilder::new(u64::MAX, Vec::new()),
            false,
        );
        assert!(matches!(sealed.stop, Stop::Corrupt { .. }));
    }

    #[test]
    fn a_lost_sector_with_more_than_one_write_after_it_is_corruption() {
        let (mut bytes, _) = segment(GROUP_MAX_BYTES + (1 << 20));
        lose_a_sector(&mut bytes);
        match classify_first(&bytes) {
            Stop::Corrupt { reason, .. } => {
                assert!(reason.contains("further than one write"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn a_lost_write_before_a_batch_whose_checksum_starts_with_zero_is_torn() {
        // Under `None` or `Interval`, a lost write reads as zeros up to the
        // next write, whose first byte (its header checksum's low byte) may
        // be zero too: found with crash_sim seed 200214.
        let header = SegmentHeader {
            store_tag: 0,
            base_offset: 0,
        }
        .encode()
        .to_vec();
        let mut first = Vec::new();
        encode_batch(&mut first, 0, &[Record::new(1, vec![0x33; 80])]);
        let second = (0..10_000)
            .map(|ts| {
                let mut b = Vec::new();
                encode_batch(&mut b, 1, &[Record::new(ts, vec![0x44; 50])]);
                b
            })
            .find(|b| b[0] == 0)
            .expect("a checksum with a zero low byte");
        let mut bytes = header;
        bytes.extend(vec![0u8; first.len()]);
        bytes.extend(&second);
        assert!(matches!(classify_first(&bytes), Stop::Torn { .. }));
    }

    #[test]
    fn a_flipped_bit_before_a_natural_zero_sector_is_corruption() {
        let (mut bytes, first_end) = segment(0);
        assert_eq!(bytes.len(), first_end);
        let at = SEGMENT_HEADER_LEN + BATCH_HEADER_LEN + 24 + 10;
        bytes[at] ^= 0x10;
        match classify_first(&bytes) {
            Stop::Corrupt { reason, .. } => assert!(reason.contains("flipped bit"), "{reason}"),
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
