//! Reading committed records in offset order.
//!
//! Sealed segments are read through a memory map; the active segment with
//! `pread`, in chunks, and never past its committed length. Both start from
//! the sparse index entry at or before the wanted offset and verify every
//! batch they hand out, so damage is reported, never returned as data.
//!
//! One stepping (`ScanCore`) serves both ways to read: [`LogReader`] copies
//! each record it is handed into an owned [`LogRecord`]; `Log::scan` hands
//! each verified frame to its visitor where it lies (the map of a sealed
//! segment, one reused buffer for the active one), so a pass over the log
//! costs the checksums and no allocation per record. The same code decides
//! what both see: the same records, the same errors, the same reads past
//! damage.

use std::collections::VecDeque;
use std::ops::{ControlFlow, RangeInclusive};
use std::path::PathBuf;
use std::sync::Arc;

use super::segment::{SealedSegment, Segments};
use super::Shared;
use crate::error::{Error, Result};
use crate::format::batch::{decode_header, verify_frames, BatchError, FrameAt};
use crate::format::index_file::IndexEntry;
use crate::format::SEGMENT_HEADER_LEN;
use crate::record::LogRecord;
use crate::storage::Mapped;

/// How much of the active segment is read per `pread`, at least.
const CHUNK_BYTES: u64 = 1 << 20;

/// Bytes of one segment being read.
enum Source {
    Mapped(Arc<Mapped>),
    Chunk(Vec<u8>),
}

impl Source {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Mapped(map) => map,
            Source::Chunk(bytes) => bytes,
        }
    }
}

struct Cursor {
    source: Source,
    path: PathBuf,
    segment_base: u64,
    /// File position of `source.bytes()[0]`.
    origin: u64,
    /// Next position to decode, relative to `origin`.
    pos: usize,
    /// End of the committed bytes, relative to `origin`.
    limit: usize,
    /// First offset of the next batch.
    expected: u64,
    /// Whether `source` ends before the committed bytes do.
    partial: bool,
    /// Index entries of this segment from the cursor's start on, when the
    /// reader has a time range (empty otherwise): the spans it may skip.
    spans: Vec<IndexEntry>,
    /// The first of `spans` not behind the cursor.
    span_at: usize,
    /// The offset after the segment's last committed record.
    segment_next: u64,
    /// The sealed segment it reads, if any (damage there is read past, see
    /// [`read_past_damage`]).
    sealed: Option<Arc<SealedSegment>>,
}

/// Where the cursor goes when it stands at a span that misses the range.
enum Jump {
    /// To the next span that overlaps: (file position, first offset).
    To(u64, u64),
    /// Past every committed batch of the segment.
    End,
}

impl Cursor {
    /// At the start of an index span whose timestamps miss `range`: where
    /// to jump. `None` when the cursor is not at such a span.
    fn jump(&mut self, range: &RangeInclusive<i64>) -> Option<Jump> {
        let here = self.origin + self.pos as u64;
        while self
            .spans
            .get(self.span_at)
            .is_some_and(|e| e.position < here)
        {
            self.span_at += 1;
        }
        let span = self.spans.get(self.span_at)?;
        if span.position != here || overlaps(range, span.min_timestamp_us, span.max_timestamp_us) {
            return None;
        }
        let next = self.spans[self.span_at + 1..]
            .iter()
            .find(|e| overlaps(range, e.min_timestamp_us, e.max_timestamp_us));
        Some(next.map_or(Jump::End, |e| Jump::To(e.position, e.first_offset)))
    }
}

/// A committed record visited in place by [`Log::scan`](crate::Log::scan):
/// its payload borrows the segment's bytes (the memory map of a sealed
/// segment, the reader's buffer of the active one) and is valid only
/// during the visit. Its frame has been verified (checksum, offset,
/// timestamp bounds) like every record [`LogReader`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The record's offset.
    pub offset: u64,
    /// The record's timestamp, microseconds since the Unix epoch (UTC).
    pub timestamp_us: i64,
    /// The record's payload bytes.
    pub payload: &'a [u8],
    /// The base offset of the segment holding the record.
    pub segment_base: u64,
    /// The position of the record's frame in that segment's bytes: in its
    /// file, but for a sealed segment read past damage, whose bytes are
    /// then its in-memory rebuild (see `LogMetrics::damaged_segments`).
    pub position: u64,
}

/// What one step of a [`ScanCore`] did.
enum Step {
    /// Went on: a batch was verified (its wanted frames visited) or
    /// stepped over, or a cursor was positioned.
    More,
    /// The log ends here (for now).
    End,
    /// The visitor asked to stop; the offset after the frame it stopped at.
    Stopped(u64),
}

/// The stepping both readers share: where the next batch lies, verifying
/// it, handing out its wanted frames in place, moving to the next segment,
/// reading past damage in sealed segments, resuming in the active one.
/// [`LogReader`] copies what it is handed into owned records;
/// [`Log::scan`](crate::Log::scan) passes it to its visitor as it lies.
struct ScanCore {
    shared: Arc<Shared>,
    next: u64,
    cursor: Option<Cursor>,
    /// Where to resume in the active segment: (segment base, position, offset).
    resume: Option<(u64, u64, u64)>,
    /// Only records with a timestamp in this range are handed out.
    time_us: RangeInclusive<i64>,
    /// Where the frames of the batch being handed out lie (reused).
    frames: Vec<FrameAt>,
    /// The buffer of the last active-segment read, kept for the next one.
    spare: Vec<u8>,
}

impl ScanCore {
    fn new(shared: Arc<Shared>, offset: u64, time_us: RangeInclusive<i64>) -> Self {
        Self {
            shared,
            next: offset,
            cursor: None,
            resume: None,
            time_us,
            frames: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Where to start reading a segment for `self.next`: (position, first
    /// offset of that batch), skipping index spans whose timestamp bounds
    /// miss the time range. `None` when nothing in the segment from
    /// `self.next` on can match.
    fn start_in(&mut self, entries: &[IndexEntry], base: u64) -> Option<(u64, u64)> {
        let Some(at) = entries
            .partition_point(|e| e.first_offset <= self.next)
            .checked_sub(1)
        else {
            return Some((SEGMENT_HEADER_LEN as u64, base));
        };
        let time_us = &self.time_us;
        let found = (at..entries.len()).find(|&i| {
            overlaps(
                time_us,
                entries[i].min_timestamp_us,
                entries[i].max_timestamp_us,
            )
        })?;
        let entry = entries[found];
        if found > at {
            self.next = entry.first_offset;
        }
        Some((entry.position, entry.first_offset))
    }

    /// The index entries at or after `position`, if the reader has a time
    /// range to skip spans by.
    fn spans_from(&self, entries: &[IndexEntry], position: u64) -> Vec<IndexEntry> {
        if *self.time_us.start() == i64::MIN && *self.time_us.end() == i64::MAX {
            return Vec::new();
        }
        let from = entries.partition_point(|e| e.position < position);
        entries[from..].to_vec()
    }

    /// One step: the next batch of the cursor, or a new cursor when it is
    /// used up.
    fn step<F>(&mut self, visit: &mut F) -> Result<Step>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        match self.advance(visit)? {
            Some(step) => Ok(step),
            None => {
                let found = self.locate()?;
                Ok(if found { Step::More } else { Step::End })
            }
        }
    }

    /// Verifies the next batch of the cursor and visits its wanted frames.
    /// Returns `None` when the cursor is used up.
    fn advance<F>(&mut self, visit: &mut F) -> Result<Option<Step>>
    where
        F: FnMut(Frame<'_>) -> ControlFlow<()>,
    {
        let Some(c) = self.cursor.as_mut() else {
            return Ok(None);
        };
        if c.pos >= c.limit {
            return Ok(None);
        }
        match c.jump(&self.time_us) {
            None => {}
            Some(Jump::End) => {
                self.next = self.next.max(c.segment_next);
                c.pos = c.limit;
                return Ok(None);
            }
            Some(Jump::To(position, first_offset)) => {
                self.next = self.next.max(first_offset);
                let within = position
                    .checked_sub(c.origin)
                    .and_then(|p| usize::try_from(p).ok());
                match within {
                    Some(p) if p < c.limit => {
                        c.pos = p;
                        c.expected = first_offset;
                    }
                    _ => {
                        // Past this chunk of the active segment.
                        self.resume = Some((c.segment_base, position, first_offset));
                        c.pos = c.limit;
                        return Ok(None);
                    }
                }
            }
        }
        let bytes = &c.source.bytes()[c.pos..c.limit];
        // A batch whose timestamps all miss the range is stepped over on its
        // verified header alone: none of its records would be returned.
        if let Ok(h) = decode_header(bytes) {
            let len = h.batch_len as usize;
            if !overlaps(&self.time_us, h.min_timestamp_us, h.max_timestamp_us)
                && h.first_offset == c.expected
                && len <= bytes.len()
            {
                self.next = self.next.max(h.next_offset());
                c.expected = h.next_offset();
                c.pos += len;
                return Ok(Some(Step::More));
            }
        }
        match verify_frames(bytes, Some(c.expected), &mut self.frames) {
            Ok(view) => {
                let h = view.header;
                let time_us = &self.time_us;
                let wanted = overlaps(time_us, h.min_timestamp_us, h.max_timestamp_us);
                let next = self.next;
                let batch_position = c.origin + c.pos as u64;
                self.next = self.next.max(h.next_offset());
                c.expected = h.next_offset();
                c.pos += view.len();
                // `bytes` ends at the limit and a verified batch lies inside
                // it: the scan never reads past the committed length.
                debug_assert!(c.pos <= c.limit, "a batch read past the limit");
                if !wanted {
                    return Ok(Some(Step::More));
                }
                for at in &self.frames {
                    if at.offset < next || !time_us.contains(&at.timestamp_us) {
                        continue;
                    }
                    let frame = at.view(&view);
                    let flow = visit(Frame {
                        offset: frame.offset,
                        timestamp_us: frame.timestamp_us,
                        payload: frame.payload,
                        segment_base: c.segment_base,
                        position: batch_position + u64::from(at.position),
                    });
                    if flow.is_break() {
                        return Ok(Some(Step::Stopped(at.offset + 1)));
                    }
                }
                Ok(Some(Step::More))
            }
            Err(BatchError::Incomplete) if c.partial => {
                self.resume = Some((c.segment_base, c.origin + c.pos as u64, c.expected));
                Ok(None)
            }
            Err(e) => {
                let (at, reason) = match e {
                    BatchError::Incomplete => (0, "committed batch ends past the end of the file"),
                    BatchError::Invalid { at, reason, .. } => (at, reason),
                };
                let damage = Error::corruption(&c.path, c.origin + (c.pos + at) as u64, reason);
                let Some(segment) = c.sealed.clone() else {
                    return Err(damage);
                };
                read_past_damage(&self.shared, &segment, damage)?;
                // Located again from `self.next`, through the rebuild.
                self.cursor = None;
                Ok(Some(Step::More))
            }
        }
    }

    /// Positions a new cursor at `self.next`; false at the end of the log.
    fn locate(&mut self) -> Result<bool> {
        // The buffer of a used-up active chunk is kept for the next read.
        if let Some(Cursor {
            source: Source::Chunk(bytes),
            ..
        }) = self.cursor.take()
        {
            self.spare = bytes;
        }
        self.cursor = self.find_cursor()?;
        Ok(self.cursor.is_some())
    }

    fn find_cursor(&mut self) -> Result<Option<Cursor>> {
        let shared = self.shared.clone();
        let segments = shared.read_segments();
        if self.next >= segments.next_offset() {
            return Ok(None);
        }
        if let Some(sealed) = segments.sealed_for(self.next).cloned() {
            drop(segments);
            let Some((pos, expected)) = self.start_in(&sealed.index, sealed.base_offset) else {
                // Nothing in the rest of this segment is in the time range.
                self.next = sealed.next_offset;
                return self.find_cursor();
            };
            let map = sealed.bytes(&*self.shared.storage)?;
            return Ok(Some(Cursor {
                limit: usize::try_from(sealed.len).unwrap_or(usize::MAX),
                source: Source::Mapped(map),
                path: sealed.path.clone(),
                segment_base: sealed.base_offset,
                origin: 0,
                pos: usize::try_from(pos).unwrap_or(usize::MAX),
                expected,
                partial: false,
                spans: self.spans_from(&sealed.index, pos),
                span_at: 0,
                segment_next: sealed.next_offset,
                sealed: Some(sealed.clone()),
            }));
        }
        self.read_active(&segments)
    }

    fn read_active(&mut self, segments: &Segments) -> Result<Option<Cursor>> {
        let active = &segments.active;
        let resume = self.resume.take();
        let end = active.committed_len;
        let (pos, expected) = match resume {
            // A resume point past the committed end is stale: a read-only
            // refresh found the segment cut back (a dropped torn tail or an
            // unacknowledged group) since it was taken. Start over from the
            // index, which matches what is committed now.
            Some((base, pos, expected))
                if base == active.base_offset && expected <= self.next && pos <= end =>
            {
                (pos, expected)
            }
            _ => match self.start_in(&active.index, active.base_offset) {
                Some(start) => start,
                None => {
                    self.next = active.next_offset;
                    return Ok(None);
                }
            },
        };
        // Checked, not assumed: an index entry past the end would otherwise
        // underflow here (a panic in debug, a huge read in release).
        let Some(left) = end.checked_sub(pos) else {
            return Err(Error::corruption(
                &active.path,
                pos,
                "a read position lies past the committed end of the active segment",
            ));
        };
        let mut len = left.min(CHUNK_BYTES);
        // Every byte of the buffer is read over, so the reused one's old
        // content never shows.
        let read = |buf: &mut Vec<u8>, len: u64| -> Result<()> {
            buf.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            active
                .file
                .read_exact_at(buf, pos)
                .map_err(|e| Error::io("read", &active.path, e))
        };
        let mut bytes = std::mem::take(&mut self.spare);
        read(&mut bytes, len)?;
        // A batch longer than a chunk is read whole.
        if let Ok(header) = decode_header(&bytes) {
            let batch_len = u64::from(header.batch_len);
            if batch_len > len && batch_len <= left {
                len = batch_len;
                read(&mut bytes, len)?;
            }
        }
        Ok(Some(Cursor {
            limit: bytes.len(),
            source: Source::Chunk(bytes),
            path: active.path.clone(),
            segment_base: active.base_offset,
            origin: pos,
            pos: 0,
            expected,
            partial: len < left,
            spans: self.spans_from(&active.index, pos),
            span_at: 0,
            segment_next: active.next_offset,
            sealed: None,
        }))
    }
}

/// Visits every committed record from `offset` on whose timestamp lies in
/// `time_us`, in offset order, in place: see [`Log::scan`](crate::Log::scan).
pub(crate) fn scan<F>(
    shared: Arc<Shared>,
    offset: u64,
    time_us: RangeInclusive<i64>,
    mut visit: F,
) -> Result<u64>
where
    F: FnMut(Frame<'_>) -> ControlFlow<()>,
{
    let mut core = ScanCore::new(shared, offset, time_us);
    loop {
        match core.step(&mut visit)? {
            Step::More => {}
            Step::End => return Ok(core.next),
            Step::Stopped(next) => return Ok(next),
        }
    }
}

/// Iterator over committed records, from [`Log::read_from`](crate::Log::read_from).
///
/// Yields `Err` once, on damage or an I/O failure, and then ends.
pub struct LogReader {
    core: ScanCore,
    buffered: VecDeque<LogRecord>,
    failed: bool,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("next", &self.core.next)
            .finish_non_exhaustive()
    }
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, offset: u64, time_us: RangeInclusive<i64>) -> Self {
        Self {
            core: ScanCore::new(shared, offset, time_us),
            buffered: VecDeque::new(),
            failed: false,
        }
    }

    /// The offset from which this reader has not yet looked at the log: the
    /// next record it returns has this offset or a later one (records outside
    /// a time range are skipped). A cursor to resume from.
    pub fn next_offset(&self) -> u64 {
        self.buffered.front().map_or(self.core.next, |r| r.offset)
    }
}

/// Damage met in the sealed `segment`: one bad batch must not fail every
/// reader (every other tenant's query, every projection), so the segment
/// is replaced, for every reader of this log from now on, by its in-memory
/// rebuild in which each damaged range is a hole
/// (`recovery::sealed_past_damage`). The file is left as found. Readers
/// race here (a query and the projections meet the same damage): whoever
/// comes second finds the segment already replaced and just reads the
/// rebuild. `damage` is returned when the segment already is a rebuild
/// (its bytes verify whole, so this is not damage a rebuild can explain)
/// or cannot be rebuilt.
fn read_past_damage(shared: &Shared, segment: &Arc<SealedSegment>, damage: Error) -> Result<()> {
    if segment.is_rebuilt() {
        return Err(damage);
    }
    let bytes = segment.bytes(&*shared.storage)?;
    let Ok(mut rebuilt) = super::recovery::sealed_past_damage(
        &segment.path,
        segment.base_offset,
        segment.next_offset,
        &bytes,
        &shared.options,
        &damage.to_string(),
    ) else {
        return Err(damage);
    };
    // A function of the same file's bytes: a refresh may keep it as long
    // as the file keeps the stamp its open checked.
    rebuilt.verified = segment.verified;
    let mut segments = shared.write_segments();
    if let Some(slot) = segments.sealed.iter_mut().find(|s| Arc::ptr_eq(s, segment)) {
        *slot = Arc::new(rebuilt);
    }
    // Not found: another reader replaced it already, or a read-only
    // refresh read the directory again; either way locating again from
    // the same offset reads what the log holds now.
    Ok(())
}

/// Whether a span with these timestamp bounds may hold a record in `range`.
fn overlaps(range: &RangeInclusive<i64>, min_us: i64, max_us: i64) -> bool {
    min_us <= *range.end() && max_us >= *range.start()
}

impl Iterator for LogReader {
    type Item = Result<LogRecord>;

    fn next(&mut self) -> Option<Result<LogRecord>> {
        if self.failed {
            return None;
        }
        loop {
            if let Some(record) = self.buffered.pop_front() {
                return Some(Ok(record));
            }
            let buffered = &mut self.buffered;
            let mut keep = |frame: Frame<'_>| {
                buffered.push_back(LogRecord {
                    offset: frame.offset,
                    timestamp_us: frame.timestamp_us,
                    payload: frame.payload.to_vec(),
                });
                ControlFlow::Continue(())
            };
            match self.core.step(&mut keep) {
                Ok(Step::More) => {}
                // The visitor never stops.
                Ok(Step::End | Step::Stopped(_)) => return None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogOptions;
    use crate::log::Log;
    use crate::record::Record;
    use crate::storage::sim::SimStorage;

    /// A resume point taken before a read-only refresh found the active
    /// segment cut back lies past the new committed end. It used to be
    /// subtracted from that end unchecked (a panic in debug builds); now it
    /// is dropped and the reader starts over from the index.
    #[test]
    fn stale_resume_point_past_the_committed_end_restarts_from_the_index() {
        let storage = Arc::new(SimStorage::new(7));
        let log = Log::open_with_storage(storage, "/log", LogOptions::default()).unwrap();
        let payload = |i: u8| [vec![i], vec![0u8; 300], vec![0x91; 8]].concat();
        for i in 0..3u8 {
            log.append_blocking(Record::new(i64::from(i), payload(i)))
                .unwrap();
        }
        let shared = log.inner.shared.clone();
        let (base, end) = {
            let segments = shared.read_segments();
            (segments.active.base_offset, segments.active.committed_len)
        };
        for stale_pos in [end + 1, end + 4096, u64::MAX] {
            let mut reader = LogReader::new(shared.clone(), 1, i64::MIN..=i64::MAX);
            reader.core.resume = Some((base, stale_pos, 0));
            let offsets: Vec<u64> = reader.map(|r| r.unwrap().offset).collect();
            assert_eq!(offsets, [1, 2], "resume at {stale_pos}");

            // The stepping a scan runs on drops it the same way.
            let mut core = ScanCore::new(shared.clone(), 1, i64::MIN..=i64::MAX);
            core.resume = Some((base, stale_pos, 0));
            let mut visited = Vec::new();
            let mut visit = |frame: Frame<'_>| {
                visited.push(frame.offset);
                ControlFlow::Continue(())
            };
            while let Step::More = core.step(&mut visit).unwrap() {}
            assert_eq!(visited, [1, 2], "scan resume at {stale_pos}");
        }
    }
}
