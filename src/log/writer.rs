//! The writer: one thread owns the active segment and commits appends in
//! groups.
//!
//! Appenders put requests on a bounded queue and wait for a reply. The writer
//! takes every request queued (up to [`GROUP_MAX_BYTES`]), encodes them into
//! one buffer, writes it with one call, issues one `fdatasync` for the whole
//! group (under `Durability::Fsync`), publishes the new committed length to
//! readers, and only then replies to each appender with its offsets. The
//! number of appenders sharing an fsync grows with the load, with no timer.
//!
//! A failed write or fsync is fatal: the writer records the reason (the log
//! is *poisoned*), answers every waiting and later append with
//! [`Error::Poisoned`], and never retries. After a failed fsync the kernel may
//! have dropped the dirty pages, so a retry that succeeds proves nothing.
//! Reopening the log recovers from what is really on disk.
//!
//! Before it reports the failure, a poisoned writer cuts the active segment
//! back to the last end it can trust: after a failed fsync, the end of the
//! last successful one; after a failed write, the end of what was
//! published. Bytes past that end may still be readable (from the page
//! cache) while never reaching the disk; left in the file, the next open in
//! any process would read them as committed, its own fsync would "succeed"
//! without writing them, and records appended after them would sit behind a
//! hole after a power cut. Readers in this process stop at the same end.
//!
//! Every request is answered, exactly once. A close request makes the writer
//! sync, release the directory lock and answer the closer; the thread then
//! stays to answer every request still queued, or sent later by handles that
//! still exist, with [`Error::Closed`], and exits only when the queue is
//! disconnected (every sender gone). The receiver is therefore never dropped
//! while a request can still arrive: nothing sits unanswered in a queue
//! nobody reads, no appender waits forever, no append callback is lost.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, error, info, warn};

use super::durable_end::{DurableEnd, Publisher};
use super::prepare::{cut_zero_tail, Prefill};
use super::recovery::write_index;
use super::segment::{ActiveSegment, IndexBuilder, SealedSegment};
use super::Shared;
use crate::audit::merkle::Hash;
use crate::config::Durability;
use crate::error::{Error, Result};
use crate::format::batch::decode_batch;
use crate::format::batch::{encode_batch, encode_chained_batch};
use crate::format::index_file::{IndexEntry, SegmentIndex};
use crate::format::SEGMENT_HEADER_LEN;
use crate::record::Record;
use crate::storage::LockGuard;

/// A group stops growing past this many bytes (it is written in one call).
pub(crate) const GROUP_MAX_BYTES: usize = 8 << 20;

pub(crate) type Reply<T> = flume::Sender<Result<T>>;
/// Where a closing writer sends its directory lock instead of releasing it.
pub(crate) type LockHandover = flume::Sender<Box<dyn LockGuard>>;

/// Called by the writer thread with the outcome of a detached append. It
/// runs on the writer thread: it must be quick and must not append.
pub type AppendCallback = Box<dyn FnOnce(Result<Range<u64>>) + Send>;

/// Where the outcome of an append goes.
pub(crate) enum AppendReply {
    /// To an appender waiting on a channel.
    Channel(Reply<Range<u64>>),
    /// To a callback; nobody waits.
    Callback(AppendCallback),
}

impl AppendReply {
    fn send(self, result: Result<Range<u64>>) {
        match self {
            // The appender may have given up waiting (a dropped future).
            AppendReply::Channel(tx) => {
                let _ = tx.send(result);
            }
            AppendReply::Callback(callback) => callback(result),
        }
    }
}

/// What appenders and the log handle ask of the writer.
pub(crate) enum Request {
    /// Append `records` as one atomic batch of `encoded_len` bytes.
    Append {
        records: Vec<Record>,
        encoded_len: usize,
        reply: AppendReply,
    },
    /// Make every append queued before it durable, whatever the durability
    /// mode, then answer (after those appends were answered) with the next
    /// offset.
    Sync { reply: Reply<u64> },
    /// Make everything durable, then stop. With `hand_lock`, the directory
    /// lock is sent there instead of being released (a reopen after
    /// failure keeps it, see `Log::close_keeping_lock`).
    Close {
        reply: Reply<()>,
        hand_lock: Option<LockHandover>,
    },
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: flume::Receiver<Request>,
    active: ActiveSegment,
    /// Bytes written to the active segment, committed or not.
    written_len: u64,
    /// The offset the next staged record gets.
    next_offset: u64,
    index: IndexBuilder,
    /// Index entries already published to readers.
    published_index: usize,
    buf: Vec<u8>,
    unsynced: bool,
    /// (byte length, next offset) of the active segment as of the last
    /// successful `fdatasync`: the end a failed fsync falls back to.
    synced: (u64, u64),
    /// Set when an fsync failed: everything after `synced` is suspect.
    sync_failed: bool,
    last_sync: Instant,
    /// Tells readers in other processes how far the log is durable.
    durable_end: Publisher,
    /// The directory lock; released (`None`) as soon as the log is closed,
    /// so a reopen need not wait for the queue to drain.
    lock: Option<Box<dyn LockGuard>>,
    /// Zeros ahead of `written_len` in the active segment (see `prepare`).
    prefill: Prefill,
    /// The chain link of the last batch staged (log format 2; see
    /// `log::chain`). A failed write poisons the writer, so a link staged
    /// and never written is never chained to.
    link: Hash,
}

/// One append of the current group, waiting for its reply.
struct Pending {
    range: Range<u64>,
    reply: AppendReply,
}

impl Writer {
    pub fn new(
        shared: Arc<Shared>,
        rx: flume::Receiver<Request>,
        active: ActiveSegment,
        durable_end: Publisher,
        lock: Box<dyn LockGuard>,
        link: Hash,
    ) -> Self {
        let index = IndexBuilder::new(shared.options.index_interval_bytes, active.index.clone());
        let prefill = Prefill::new(
            shared.options.preallocate_segments && shared.options.durability == Durability::Fsync,
            // Zeros a crashed writer filled ahead are kept (recovery read
            // them as the end) and appended over.
            active.file.len().unwrap_or(active.committed_len),
        );
        Self {
            prefill,
            link,
            // The open fsynced the active segment before the writer started.
            synced: (active.committed_len, active.next_offset),
            written_len: active.committed_len,
            next_offset: active.next_offset,
            published_index: active.index.len(),
            shared,
            rx,
            active,
            index,
            buf: Vec::with_capacity(1 << 20),
            unsynced: false,
            sync_failed: false,
            last_sync: Instant::now(),
            durable_end,
            lock: Some(lock),
        }
    }

    /// Runs until closed, or until every handle is gone.
    pub fn run(mut self) {
        loop {
            let Some(first) = self.next_request() else {
                // Every handle is gone: nobody is left to tell of a failure,
                // which `finish` has logged.
                let _ = self.finish();
                return;
            };
            let mut group = vec![first];
            let mut group_bytes = request_len(&group[0]);
            while group_bytes < GROUP_MAX_BYTES {
                match self.rx.try_recv() {
                    Ok(request) => {
                        group_bytes += request_len(&request);
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            if let Some((close, hand_lock)) = self.commit_group(group) {
                let result = self.finish();
                // The lock goes before the closer hears back: a reopen right
                // after `close` returns must find the directory free, or
                // (handed over) already held for it.
                if let (Some(to), Some(lock)) = (hand_lock, self.lock.take()) {
                    let _ = to.send(lock);
                }
                self.lock = None;
                let _ = close.send(result);
                self.answer_closed_until_disconnected();
                return;
            }
        }
    }

    /// After a close: answers every request, queued or still to come, with
    /// [`Error::Closed`] until every sender is gone. Flume hands out what is
    /// queued before it reports `Disconnected`, so nothing is left behind.
    fn answer_closed_until_disconnected(&mut self) {
        while let Ok(request) = self.rx.recv() {
            match request {
                Request::Append { reply, .. } => reply.send(Err(Error::Closed)),
                Request::Sync { reply } => {
                    let _ = reply.send(Err(Error::Closed));
                }
                // A second closer: everything is already durable.
                Request::Close { reply, .. } => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    /// Waits for the next request, syncing on time under `Interval`.
    fn next_request(&mut self) -> Option<Request> {
        loop {
            let deadline = match self.shared.options.durability {
                // A poisoned writer never syncs again (see the module docs).
                Durability::Interval(every)
                    if self.unsynced && self.shared.poison_error().is_none() =>
                {
                    // An interval past the end of `Instant`'s range means:
                    // never sync on time.
                    self.last_sync.checked_add(every)
                }
                _ => None,
            };
            let Some(deadline) = deadline else {
                return self.rx.recv().ok();
            };
            match self.rx.recv_deadline(deadline) {
                Ok(request) => return Some(request),
                Err(flume::RecvTimeoutError::Timeout) => {
                    if let Err(e) = self.sync() {
                        self.poison(&e);
                    }
                }
                Err(flume::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Commits a group; returns the reply of a close request found in it.
    ///
    /// Sync requests are answered last, so each is answered after every
    /// append queued before it: a caller that waits for one knows the fate
    /// of everything it queued earlier.
    fn commit_group(&mut self, group: Vec<Request>) -> Option<(Reply<()>, Option<LockHandover>)> {
        let mut pending = Vec::with_capacity(group.len());
        let mut syncs = Vec::new();
        let mut close = None;
        let mut records = 0u64;
        let started = Instant::now();
        let mut failure = self.shared.poison_error();
        for request in group {
            match request {
                Request::Close { reply, hand_lock } => {
                    // Appends not yet queued are refused at once from now on.
                    self.shared.closed.store(true, Ordering::Release);
                    close = Some((reply, hand_lock));
                }
                Request::Append { reply, .. } if close.is_some() => reply.send(Err(Error::Closed)),
                Request::Sync { reply } if close.is_some() => {
                    let _ = reply.send(Err(Error::Closed));
                }
                Request::Sync { reply } => syncs.push(reply),
                Request::Append { reply, .. } if failure.is_some() => {
                    reply.send(Err(self.shared.poison_error().unwrap_or(Error::Closed)));
                }
                Request::Append {
                    records: batch,
                    encoded_len,
                    reply,
                } => match self.stage(&batch, encoded_len) {
                    Ok(range) => {
                        records += batch.len() as u64;
                        pending.push(Pending { range, reply });
                    }
                    Err(e) => {
                        self.poison(&e);
                        failure = self.shared.poison_error();
                        reply.send(Err(self.shared.poison_error().unwrap_or(e)));
                    }
                },
            }
        }
        if failure.is_none() && pending.is_empty() && !syncs.is_empty() {
            // Bytes an earlier group wrote under `Interval` or `None`.
            if let Err(e) = self.sync() {
                self.poison(&e);
            }
        }
        if failure.is_none() && !pending.is_empty() {
            let bytes = self.buf.len();
            let sync = if syncs.is_empty() {
                Self::sync_for_commit
            } else {
                Self::sync
            };
            match self.flush().and_then(|()| sync(self)) {
                Ok(()) => {
                    self.publish();
                    // Before the replies: the calls stay in one order
                    // relative to what the appenders do next (see
                    // `prepare`). One write of zeros per fill, no fsync.
                    self.prefill.fill_ahead(
                        &*self.active.file,
                        &self.active.path,
                        self.written_len,
                        self.shared.options.segment_max_bytes,
                        &self.shared.metrics.prefill,
                    );
                    let m = &self.shared.metrics;
                    m.records.fetch_add(records, Ordering::Relaxed);
                    m.batches.fetch_add(pending.len() as u64, Ordering::Relaxed);
                    m.groups.fetch_add(1, Ordering::Relaxed);
                    debug!(
                        records,
                        batches = pending.len(),
                        bytes,
                        latency_us = started.elapsed().as_micros() as u64,
                        "committed a group"
                    );
                }
                Err(e) => self.poison(&e),
            }
        }
        // After a failure, an append that a roll sealed (fsynced and
        // published) before it is committed all the same: answering it with
        // an error would have the caller retry, or count as dropped, a
        // record the log keeps.
        let published = self.shared.read_segments().next_offset();
        for p in pending {
            let result = match self.shared.poison_error() {
                Some(e) if p.range.end > published => Err(e),
                _ => Ok(p.range),
            };
            p.reply.send(result);
        }
        for reply in syncs {
            let result = match self.shared.poison_error() {
                Some(e) => Err(e),
                None => Ok(self.next_offset),
            };
            let _ = reply.send(result);
        }
        close
    }

    /// Encodes one batch into the group buffer, rolling the segment first if
    /// the batch would not fit.
    fn stage(&mut self, records: &[Record], encoded_len: usize) -> Result<Range<u64>> {
        let staged_end = self.written_len + self.buf.len() as u64;
        let has_data = staged_end > SEGMENT_HEADER_LEN as u64;
        if staged_end + encoded_len as u64 > self.shared.options.segment_max_bytes && has_data {
            self.flush()?;
            self.roll()?;
        }
        let first = self.next_offset;
        let position = self.written_len + self.buf.len() as u64;
        let start = self.buf.len();
        if self.shared.chained {
            self.link = encode_chained_batch(&mut self.buf, first, records, &self.link);
        } else {
            encode_batch(&mut self.buf, first, records);
        }
        debug_assert_eq!(self.buf.len() - start, encoded_len);
        debug_assert!(
            decode_batch(&self.buf[start..], Some(first)).is_ok_and(|view| {
                view.is_chained() == self.shared.chained
                    && (!self.shared.chained || view.compute_link() == Some(self.link))
                    && view.frames().count() == records.len()
                    && view.header.next_offset() == first + records.len() as u64
                    && view.frames().zip(records).all(|(frame, record)| {
                        frame.timestamp_us == record.timestamp_us
                            && frame.payload == record.payload.as_slice()
                    })
            }),
            "a staged batch does not decode back to what was staged"
        );
        self.index.offer(IndexEntry {
            first_offset: first,
            position,
            min_timestamp_us: records.iter().map(|r| r.timestamp_us).min().unwrap_or(0),
            max_timestamp_us: records.iter().map(|r| r.timestamp_us).max().unwrap_or(0),
        });
        self.next_offset += records.len() as u64;
        Ok(first..self.next_offset)
    }

    /// Writes the group buffer to the active segment in one call.
    fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = &self.active.path;
        self.active
            .file
            .write_all_at(&self.buf, self.written_len)
            .map_err(|e| Error::io("write", path, e))?;
        self.written_len += self.buf.len() as u64;
        self.shared
            .metrics
            .bytes
            .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
        self.buf.clear();
        self.unsynced = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        debug_assert!(self.buf.is_empty(), "sync with staged bytes not written");
        if let Err(e) = self.active.file.sync_data() {
            self.sync_failed = true;
            return Err(Error::io("fsync", &self.active.path, e));
        }
        self.shared.metrics.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.synced = (self.written_len, self.next_offset);
        self.unsynced = false;
        self.publish_durable_end()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs as the durability mode asks before a group is acknowledged.
    fn sync_for_commit(&mut self) -> Result<()> {
        match self.shared.options.durability {
            Durability::Fsync => self.sync(),
            Durability::Interval(every) if self.last_sync.elapsed() >= every => self.sync(),
            Durability::Interval(_) | Durability::None => Ok(()),
        }
    }

    /// Lets readers see everything written so far.
    fn publish(&mut self) {
        let mut segments = self.shared.write_segments();
        let active = &mut segments.active;
        debug_assert!(active.committed_len <= self.written_len);
        debug_assert!(active.next_offset <= self.next_offset);
        active.committed_len = self.written_len;
        active.next_offset = self.next_offset;
        // The last published entry may have widened its timestamp bounds.
        let from = self.published_index.saturating_sub(1);
        active.index.truncate(from);
        active.index.extend_from_slice(&self.index.entries[from..]);
        self.published_index = self.index.entries.len();
        drop(segments);
        self.shared.notify_committed();
    }

    /// Seals the active segment (always fsynced, whatever the durability
    /// mode) and starts the next one.
    fn roll(&mut self) -> Result<()> {
        self.unsynced = true;
        self.sync()?;
        // What the segment holds is durable: publish it now, so that a
        // failure later in the roll (creating the next segment) neither
        // cuts it nor answers its appends with an error, and the durable
        // end just published never names bytes that are cut.
        self.publish();
        // A sealed segment ends at its last batch, as without filling:
        // the cut is durable before the next segment exists, so that a
        // segment that is not the last never ends in zeros.
        cut_zero_tail(&*self.active.file, self.written_len)
            .map_err(|e| Error::io("truncate the zeros past the end of", &self.active.path, e))?;
        let base = self.next_offset;
        let index = SegmentIndex {
            base_offset: self.active.base_offset,
            next_offset: base,
            segment_len: self.written_len,
            entries: std::mem::take(&mut self.index.entries),
        };
        write_index(&*self.shared.storage, &self.shared.dir, &index);
        let sealed = SealedSegment::new(
            index.base_offset,
            index.next_offset,
            index.segment_len,
            self.active.path.clone(),
            index.entries,
        );
        let next = ActiveSegment::create(
            &*self.shared.storage,
            &self.shared.dir,
            base,
            self.shared.store_tag(),
        )?;
        info!(
            sealed = %self.active.path.display(),
            next = %next.path.display(),
            base_offset = base,
            "rolled to a new segment"
        );
        let mut segments = self.shared.write_segments();
        // Offsets stay dense across the roll: the sealed segment ends where
        // the previous one did plus what it holds, and the next one starts
        // exactly there.
        debug_assert!(segments
            .sealed
            .last()
            .is_none_or(|prev| prev.next_offset == sealed.base_offset));
        debug_assert_eq!(next.base_offset, sealed.next_offset);
        debug_assert_eq!(segments.active.next_offset, sealed.next_offset);
        segments.sealed.push(Arc::new(sealed));
        segments.active = next.clone();
        drop(segments);
        self.shared.notify_committed();
        self.synced = (SEGMENT_HEADER_LEN as u64, base);
        self.active = next;
        self.written_len = SEGMENT_HEADER_LEN as u64;
        self.published_index = 0;
        self.unsynced = false;
        self.prefill.restart(SEGMENT_HEADER_LEN as u64);
        self.publish_durable_end()?;
        // Sealed segments are durable whole: after a power cut, readers see
        // at least every one of them.
        self.durable_end.sync();
        Ok(())
    }

    /// Publishes `synced` as the durable end for readers in other
    /// processes. Only ever after the fsync that made it true.
    fn publish_durable_end(&self) -> Result<()> {
        let (segment_len, next_offset) = self.synced;
        self.durable_end.publish(DurableEnd {
            segment_base: self.active.base_offset,
            segment_len,
            next_offset,
        })
    }

    fn poison(&mut self, e: &Error) {
        error!(error = %e, "the log writer failed and stops accepting appends");
        if self.shared.poison_error().is_none() {
            self.cut_to_trusted_end();
        }
        self.shared.set_poison(e.to_string());
        self.shared.forget_watchers();
    }

    /// Cuts the active segment back to the last end that can be trusted
    /// (see the module docs), first for readers, then in the file.
    fn cut_to_trusted_end(&mut self) {
        let (len, next) = {
            let mut segments = self.shared.write_segments();
            let active = &mut segments.active;
            if self.sync_failed && active.base_offset == self.active.base_offset {
                let (synced_len, synced_next) = self.synced;
                if synced_len < active.committed_len {
                    // Acknowledged under `Interval` or `None`, never synced:
                    // lost, as a crash would have lost them.
                    error!(
                        records_lost = active.next_offset - synced_next,
                        "records acknowledged but not yet synced were lost with the failed fsync"
                    );
                    active.committed_len = synced_len;
                    active.next_offset = synced_next;
                    active.index.retain(|e| e.position < synced_len);
                }
            }
            (active.committed_len, active.next_offset)
        };
        // A write that failed may have reached the file in part, past
        // `written_len`: ask the file, not the writer's count.
        if self.active.file.len().is_ok_and(|file_len| file_len <= len) {
            return;
        }
        let path = &self.active.path;
        let cut = self
            .active
            .file
            .set_len(len)
            .and_then(|()| self.active.file.sync_data());
        match cut {
            Ok(()) => {
                self.written_len = len;
                self.next_offset = next;
                self.buf.clear();
                info!(segment = %path.display(), at = len, "cut the failed writes from the active segment");
            }
            Err(e) => error!(
                segment = %path.display(),
                at = len,
                error = %e,
                "could not cut the failed writes from the active segment; a reopen drops them only in this process"
            ),
        }
    }

    /// Makes everything written durable before the writer stops.
    fn finish(&mut self) -> Result<()> {
        // Followers waiting for commits learn that none will come.
        self.shared.forget_watchers();
        if let Some(e) = self.shared.poison_error() {
            return Err(e);
        }
        self.unsynced |= !matches!(self.shared.options.durability, Durability::Fsync);
        let result = self.sync();
        if let Err(e) = &result {
            self.poison(e);
        } else {
            // A closed log looks as without filling. Everything is durable
            // already: a failed cut only leaves zeros, which every open
            // reads as the end.
            if let Err(e) = cut_zero_tail(&*self.active.file, self.written_len) {
                warn!(segment = %self.active.path.display(), error = %e, "could not cut the zeros past the end of the active segment at close");
            }
            // A store that no writer opens again (archived, read by
            // `ship` or `stats` only) must not show readers less than it
            // holds after a power cut.
            self.durable_end.sync();
        }
        info!(dir = %self.shared.dir.display(), next_offset = self.next_offset, "log writer stopped");
        result
    }
}

fn request_len(request: &Request) -> usize {
    match request {
        Request::Append { encoded_len, .. } => *encoded_len,
        Request::Sync { .. } | Request::Close { .. } => 0,
    }
}
