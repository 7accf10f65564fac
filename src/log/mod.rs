//! The log: segments on disk, one writer thread committing appends in groups,
//! readers over committed records, recovery and verification.
//!
//! Invariants (checked by `debug_assert!` where they are maintained):
//! - offsets are dense: segment `n + 1` starts at the offset after the last
//!   record of segment `n`, and batch `k + 1` at the offset after batch `k`;
//! - only the writer thread writes, and only to the active segment; a sealed
//!   segment is fsynced before the next one is created and never written
//!   again;
//! - readers see a record only once its whole batch is written (and, under
//!   `Durability::Fsync`, fsynced): the committed length of the active
//!   segment only grows, by whole batches, and is published after the write.

mod batches;
mod chain;
pub(crate) mod dir;
mod durable_end;
mod hole;
mod identity;
mod prepare;
mod reader;
mod recovery;
mod refresh;
mod repair;
mod segment;
mod settle;
mod verify;
mod writer;

pub(crate) use batches::{BatchAt, Walk};
pub(crate) use repair::Repairs;

use std::ops::{ControlFlow, Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::thread::JoinHandle;
use std::time::Instant;

use tracing::info;

pub use identity::{ParseStoreIdError, StoreId};
pub use reader::{Frame, LogReader};
pub use repair::{
    repair, repair_dir, repair_dir_with, repair_with, DamagedRange, RepairAction, RepairOptions,
    RepairReport, MANIFEST_FILE, QUARANTINE_DIR,
};
pub use verify::{verify_dir, Problem, ProblemKind, VerifyReport};

use self::recovery::Access;
use self::segment::Segments;
pub use self::writer::AppendCallback;
use self::writer::{AppendReply, LockHandover, Request, Writer};
use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::format::batch::{encoded_batch_len, encoded_chained_batch_len};
use crate::format::LOG_FORMAT_VERSION;
use crate::record::Record;
use crate::storage::{create_dir_all_durably, FileStorage, LockGuard, Storage};

/// One sealed segment of a log, for indexes derived from its bytes.
#[derive(Debug, Clone)]
pub(crate) struct SealedBytes {
    segment: Arc<segment::SealedSegment>,
    storage: Arc<dyn Storage>,
}

impl SealedBytes {
    /// The segment's base offset.
    pub fn base_offset(&self) -> u64 {
        self.segment.base_offset
    }

    /// The offset after its last record.
    pub fn next_offset(&self) -> u64 {
        self.segment.next_offset
    }

    /// Its file's length.
    pub fn len(&self) -> u64 {
        self.segment.len
    }

    /// Its bytes, mapped (once per log).
    pub fn bytes(&self) -> Result<Arc<crate::storage::Mapped>> {
        self.segment.bytes(&*self.storage)
    }
}

/// The committed part of the active segment, for indexes of it.
#[derive(Debug, Clone)]
pub(crate) struct ActiveBytes {
    /// Its base offset.
    pub base_offset: u64,
    /// The offset after its last committed record.
    pub next_offset: u64,
    /// Bytes of whole, committed batches (header included).
    pub committed_len: u64,
    /// Read with `pread`, never past `committed_len`.
    pub file: Arc<dyn crate::storage::StorageFile>,
}

/// A held directory lock (the writer's `LOCK` file); released on drop.
pub(crate) type DirLock = Box<dyn LockGuard>;

/// Counters of what the writer did since the log was opened, and how many
/// damaged segments it reads past.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogMetrics {
    /// Records committed.
    pub records: u64,
    /// Batches committed (one per append call).
    pub batches: u64,
    /// Groups committed: one write call each (a group that rolls to a new
    /// segment writes once more, to the segment it seals).
    pub groups: u64,
    /// `fdatasync` calls on segment files.
    pub fsyncs: u64,
    /// Bytes written to segment files.
    pub bytes: u64,
    /// Segments read, right now, through an in-memory rebuild because they
    /// are damaged (each damaged range a hole of lost entries, see
    /// DURABILITY.md): found by open or by a reader that met the damage.
    /// `verify` reports them; `repair` writes the holes to disk.
    pub damaged_segments: u64,
    /// Zero bytes written ahead of the writer into the active segment
    /// (`LogOptions::preallocate_segments`).
    pub prefilled_bytes: u64,
    /// Fills with zeros that failed (each logged; appends go on without).
    pub prefill_failures: u64,
}

#[derive(Debug, Default)]
struct Metrics {
    records: AtomicU64,
    batches: AtomicU64,
    groups: AtomicU64,
    fsyncs: AtomicU64,
    bytes: AtomicU64,
    prefill: prepare::PrefillMetrics,
}

/// State shared by the handle, the writer thread and readers.
#[derive(Debug)]
pub(crate) struct Shared {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    options: LogOptions,
    /// Whether the log's batches carry chain links (log format 2): the
    /// writer writes chained batches, `verify` checks the chain.
    chained: bool,
    /// Always set for a writer. A read-only view has none for a store made
    /// before store ids existed and not opened for writing since, and until
    /// it first finds one for a store being created as it opened.
    store_id: std::sync::OnceLock<StoreId>,
    segments: RwLock<Segments>,
    poison: Mutex<Option<String>>,
    metrics: Metrics,
    /// Woken (coalescing, never blocking) whenever records are committed.
    watchers: Mutex<Vec<flume::Sender<()>>>,
    /// Set when the writer stopped: new watchers are born disconnected.
    watch_closed: std::sync::atomic::AtomicBool,
    /// Set once a close was asked for: `prepare` refuses new appends at
    /// once (the writer answers any that raced past it with `Closed`).
    closed: std::sync::atomic::AtomicBool,
    /// A read-only view's refreshes, one at a time: held from loading
    /// `DURABLE` until the view built from it is installed, so that a view
    /// built from an older end is never installed over a newer one (the
    /// store's refresher thread and `Store::refresh` both refresh). Holds
    /// the durable end the installed view was built from.
    refreshed: Mutex<Option<durable_end::DurableEnd>>,
    /// This handle's number, unique in the process (never reused, unlike
    /// an address): with `rebuilds`, what a tree kept over the view names.
    id: u64,
    /// Times a read-only refresh built the view again from the files
    /// instead of extending it (a segment replaced by `repair`, say).
    rebuilds: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// The one constructor, for writers and read-only views alike.
    fn new(
        storage: Arc<dyn Storage>,
        dir: PathBuf,
        options: LogOptions,
        version: u16,
        store_id: Option<StoreId>,
        segments: Segments,
    ) -> Arc<Shared> {
        let known = std::sync::OnceLock::new();
        if let Some(id) = store_id {
            let _ = known.set(id);
        }
        Arc::new(Shared {
            storage,
            dir,
            options,
            chained: version >= 2,
            store_id: known,
            segments: RwLock::new(segments),
            poison: Mutex::new(None),
            metrics: Metrics::default(),
            watchers: Mutex::new(Vec::new()),
            watch_closed: std::sync::atomic::AtomicBool::new(false),
            closed: std::sync::atomic::AtomicBool::new(false),
            refreshed: Mutex::new(None),
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT.fetch_add(1, Ordering::Relaxed)
            },
            rebuilds: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The tag written into new segments.
    fn store_tag(&self) -> u32 {
        self.store_id.get().map_or(0, |id| id.tag())
    }

    /// Tells every watcher that the committed end moved; forgets watchers
    /// that went away. A watcher that already has a wake-up pending is not
    /// sent another (its channel holds one), so this never blocks.
    /// Disconnects every watcher, and every later one: no commit will come
    /// from this handle any more.
    fn forget_watchers(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.clear();
        self.watch_closed.store(true, Ordering::Relaxed);
    }

    fn notify_committed(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| !matches!(w.try_send(()), Err(flume::TrySendError::Disconnected(_))));
    }

    fn read_segments(&self) -> RwLockReadGuard<'_, Segments> {
        self.segments.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_segments(&self) -> RwLockWriteGuard<'_, Segments> {
        self.segments.write().unwrap_or_else(|e| e.into_inner())
    }

    fn set_poison(&self, reason: String) {
        let mut poison = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        poison.get_or_insert(reason);
    }

    fn poison_error(&self) -> Option<Error> {
        let poison = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        poison.as_ref().map(|reason| Error::Poisoned {
            reason: reason.clone(),
        })
    }
}

/// The writer side of a handle: the queue and the thread behind it.
#[derive(Debug)]
struct WriterHandle {
    tx: flume::Sender<Request>,
    /// Whether a close was sent; held by the one caller closing the writer.
    closed: Mutex<bool>,
    /// Joined when the last handle is dropped.
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: std::thread::ThreadId,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    writer: Option<WriterHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        let _ = close_writer(&writer, None);
        // The writer thread answers what is still queued with `Closed` and
        // exits once its queue is disconnected: dropping the last sender
        // (this one) does that, so the join is bounded by the queue.
        let WriterHandle {
            tx,
            thread,
            thread_id,
            ..
        } = writer;
        drop(tx);
        let thread = thread.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Some(thread) = thread {
            if thread_id != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl WriterHandle {
    /// Whether the calling thread is this writer's own thread (an append
    /// callback), which must never wait for the writer.
    fn is_current_thread(&self) -> bool {
        self.thread_id == std::thread::current().id()
    }
}

/// Stops the writer: it makes everything durable, releases the lock and
/// answers; from then on it answers every append with `Closed` (see the
/// writer's module docs) until the last handle is dropped, which joins it.
/// Concurrent callers are serialised on the `closed` slot: the first sends
/// the one close request and waits for its answer; the others wait for it
/// and then find nothing left to do. With `hand_lock`, the writer sends the
/// directory lock there instead of releasing it.
fn close_writer(writer: &WriterHandle, hand_lock: Option<LockHandover>) -> Result<()> {
    let (reply, done) = flume::bounded(1);
    if writer.is_current_thread() {
        // The last handle was dropped by an append callback running on the
        // writer thread: it cannot wait for itself. The writer stops after
        // this group, on the close request or when its queue disconnects.
        let _ = writer.tx.try_send(Request::Close { reply, hand_lock });
        return Ok(());
    }
    let mut closed = writer.closed.lock().unwrap_or_else(|e| e.into_inner());
    if *closed {
        return Ok(());
    }
    *closed = true;
    match writer.tx.send(Request::Close { reply, hand_lock }) {
        Ok(()) => done.recv().unwrap_or(Ok(())),
        Err(_) => Ok(()), // the writer stopped on its own
    }
}

/// An append-only, segmented, checksummed log of records.
///
/// `Log` is a cheap handle: clones share one writer and one set of segments.
/// Appends from any number of threads and tasks are committed in groups by
/// one writer thread; each append is acknowledged with its offsets once it
/// is as durable as [`LogOptions::durability`] asks.
///
/// ```
/// use enforcelog::{Log, LogOptions, Record};
///
/// let dir = tempfile::tempdir()?;
/// let log = Log::open(dir.path(), LogOptions::default())?;
/// let first = log.append_blocking(Record::new(1_000, b"first".to_vec()))?;
/// let rest = log.append_batch_blocking(vec![
///     Record::new(2_000, b"second".to_vec()),
///     Record::new(3_000, b"third".to_vec()),
/// ])?;
/// assert_eq!((first, rest), (0, 1..3));
///
/// let payloads: Vec<Vec<u8>> = log
///     .read_from(1)?
///     .map(|r| r.map(|r| r.payload))
///     .collect::<Result<_, _>>()?;
/// assert_eq!(payloads, [b"second".to_vec(), b"third".to_vec()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Log {
    inner: Arc<Inner>,
}

impl Log {
    /// Opens (or creates) the log in `dir` for writing, on the real file
    /// system. Fails with [`Error::Locked`] if another writer holds it.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<Log> {
        Self::open_with_storage(Arc::new(FileStorage), dir, options)
    }

    /// Opens (or creates) the log in `dir` for writing, through `storage`.
    pub fn open_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: LogOptions,
    ) -> Result<Log> {
        Self::open_writer(storage, dir.as_ref(), options, None, &mut None)
    }

    /// Reopens a log whose writer failed, in this process, dropping every
    /// record at or after `acknowledged_end` that the failed writer had
    /// written to its active segment but never acknowledged. Without this, a
    /// write whose fsync failed could come back as committed: the kernel
    /// may have marked its pages clean without writing them, so the reopen's
    /// fsync would prove nothing about them. Records already sealed into an
    /// earlier segment by a roll are kept (they were fsynced).
    pub fn reopen_after_failure(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
        options: LogOptions,
        acknowledged_end: u64,
    ) -> Result<Log> {
        Self::open_writer(
            storage,
            dir.as_ref(),
            options,
            Some(acknowledged_end),
            &mut None,
        )
    }

    /// [`Log::reopen_after_failure`] with the directory lock in `held`
    /// (taken there first when `None`): the lock the failed writer handed
    /// over ([`Log::close_keeping_lock`]). On success the new writer owns
    /// it; on failure it stays in `held`, so that a caller retrying keeps
    /// the directory to itself between attempts.
    pub(crate) fn reopen_after_failure_holding(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: LogOptions,
        acknowledged_end: u64,
        held: &mut Option<DirLock>,
    ) -> Result<Log> {
        Self::open_writer(storage, dir, options, Some(acknowledged_end), held)
    }

    /// Closes a writer as [`Log::close`] does, except that its directory
    /// lock is handed to the caller instead of released: `None` when this
    /// is no writer or it was closed already.
    pub(crate) fn close_keeping_lock(&self) -> Option<DirLock> {
        let writer = self.inner.writer.as_ref()?;
        let (to, from) = flume::bounded(1);
        // Its error (a poisoned writer's) is the one already reported.
        let _ = close_writer(writer, Some(to));
        from.try_recv().ok()
    }

    fn open_writer(
        storage: Arc<dyn Storage>,
        dir: &Path,
        options: LogOptions,
        keep_below: Option<u64>,
        held: &mut Option<DirLock>,
    ) -> Result<Log> {
        options.validate()?;
        let dir = dir.to_path_buf();
        // The lock comes before the version file is written: two first
        // openers must not both write (and rename) `VERSION.tmp`. The LOCK
        // file lives in the directory, so a foreign directory is refused
        // before the lock would create it there.
        create_dir_refusing_foreign(&*storage, &dir)?;
        if held.is_none() {
            *held = Some(dir::lock(&*storage, &dir)?);
        }
        let version = prepare_dir(&*storage, &dir)?;
        let mut known_id = identity::load(&*storage, &dir)?;
        if known_id.is_none() && dir::list(&*storage, &dir)?.segments.is_empty() {
            // A new store: the id must be durable before the first segment
            // carries its tag.
            known_id = Some(assign_store_id(&*storage, &dir)?);
        }
        let mut opened =
            recovery::open_segments(&*storage, &dir, &options, Access::Writer, known_id)?;
        // A store made before store ids gets one once its segments checked
        // out, so that a refused open changes nothing.
        let store_id = match known_id {
            Some(id) => id,
            None => assign_store_id(&*storage, &dir)?,
        };
        if let Some(end) = keep_below {
            // Unless the failed writer's lock was held across (the store's
            // supervisor holds it), the lock was free meanwhile: another
            // process may have claimed this directory (a shard of a shared
            // one), recorded and closed. What it published as durable it
            // acknowledged; the failed writer's own published end never
            // passes `end` (it publishes only after an fsync succeeded).
            let published = durable_end::load(&*storage, &dir)?.map_or(0, |d| d.next_offset);
            recovery::drop_unacknowledged(&mut opened.segments.active, end.max(published))?;
        }
        let active = opened.segments.active.clone();
        // What an earlier process wrote may not be durable yet: its last
        // fsync or the directory fsync of its last segment may have failed.
        // Make both durable before anything is shown or acknowledged.
        active
            .file
            .sync_data()
            .map_err(|e| Error::io("fsync", &active.path, e))?;
        storage
            .sync_dir(&dir)
            .map_err(|e| Error::io("fsync directory", &dir, e))?;
        let publisher = durable_end::Publisher::create(
            &*storage,
            &dir,
            durable_end::DurableEnd {
                segment_base: active.base_offset,
                segment_len: active.committed_len,
                next_offset: active.next_offset,
            },
        )?;
        let Some(lock) = held.take() else {
            // Taken above and given up by nothing in between.
            return Err(Error::Locked { path: dir });
        };
        // Only now: a refused open leaves the lock file as it was.
        lock.record_holder();
        info!(
            dir = %dir.display(),
            segments = opened.segments.sealed.len() + 1,
            next_offset = active.next_offset,
            torn_bytes_dropped = opened.torn_bytes,
            "opened log for writing"
        );
        let link = if version >= 2 {
            chain::tail_link(&*storage, &opened.segments)?
        } else {
            crate::format::chain::GENESIS
        };
        let (tx, rx) = flume::bounded(options.queue_capacity);
        let shared = Shared::new(
            storage,
            dir,
            options,
            version,
            Some(store_id),
            opened.segments,
        );
        let writer = Writer::new(shared.clone(), rx, active, publisher, lock, link);
        let thread = std::thread::Builder::new()
            .name("enforcelog-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| Error::io("spawn writer thread for", shared.dir.clone(), e))?;
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                writer: Some(WriterHandle {
                    tx,
                    closed: Mutex::new(false),
                    thread_id: thread.thread().id(),
                    thread: Mutex::new(Some(thread)),
                }),
            }),
        })
    }

    /// Opens the log in `dir` for reading only. It takes no lock, changes
    /// nothing on disk, and works while another process writes: a batch
    /// still being written is treated as the end of the log. Call
    /// [`Log::refresh`] to see records committed since.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Log> {
        Self::open_read_only_with_storage(Arc::new(FileStorage), dir)
    }

    /// [`Log::open_read_only`] through `storage`.
    pub fn open_read_only_with_storage(
        storage: Arc<dyn Storage>,
        dir: impl AsRef<Path>,
    ) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        let listing = match storage.exists(&dir) {
            Ok(true) => dir::list(&*storage, &dir)?,
            Ok(false) => {
                return Err(Error::NotALogDirectory {
                    path: dir,
                    reason: "it does not exist".into(),
                })
            }
            Err(e) => return Err(Error::io("stat", dir, e)),
        };
        if !listing.has_version {
            return Err(Error::NotALogDirectory {
                path: dir,
                reason: "it has no VERSION file".into(),
            });
        }
        let version = dir::check_version(&*storage, &dir)?;
        let store_id = identity::load(&*storage, &dir)?;
        let options = LogOptions::default();
        // Loaded before the segments are listed; either order is safe (see
        // `durable_end::ReadLimit`), this one reads less of a stale end.
        let end = durable_end::load_for_reader(&*storage, &dir)?;
        let (opened, store_id) = open_segments_read_only(&*storage, &dir, &options, end, store_id)?;
        let shared = Shared::new(storage, dir, options, version, store_id, opened.segments);
        *shared.refreshed.lock().unwrap_or_else(|e| e.into_inner()) = end;
        Ok(Log {
            inner: Arc::new(Inner {
                shared,
                writer: None,
            }),
        })
    }

    /// For a read-only handle: picks up what writers committed since the
    /// handle was opened or last refreshed. A writer handle is always
    /// current; this does nothing for it.
    ///
    /// The cost is that of what changed, not of the log: the sealed
    /// segments already verified are kept (after a check of their file's
    /// stamp) and the last one is read on from where the view ended (see
    /// `refresh`); anything else found makes it reopen every segment.
    /// A damaged `DURABLE` file fails it with [`Error::Corruption`] and
    /// leaves the view as it was (so does any other failure).
    pub fn refresh(&self) -> Result<()> {
        if self.inner.writer.is_some() {
            return Ok(());
        }
        let shared = &self.inner.shared;
        let mut refreshed = shared.refreshed.lock().unwrap_or_else(|e| e.into_inner());
        let end = durable_end::load_for_reader(&*shared.storage, &shared.dir)?;
        let known_id = shared.store_id.get().copied();
        // A copy of the view (segment handles, not bytes), so that readers
        // are not held up while the directory is read.
        let previous = {
            let segments = shared.read_segments();
            Segments {
                sealed: segments.sealed.clone(),
                active: segments.active.clone(),
            }
        };
        let incremental = refresh::refresh_segments(
            &*shared.storage,
            &shared.dir,
            &shared.options,
            end,
            known_id,
            &previous,
        );
        let segments = match incremental {
            Some(segments) => segments,
            None => {
                let (opened, store_id) = open_segments_read_only(
                    &*shared.storage,
                    &shared.dir,
                    &shared.options,
                    end,
                    known_id,
                )?;
                if let Some(id) = store_id {
                    // Set once: a store's id never changes.
                    let _ = shared.store_id.set(id);
                }
                shared.rebuilds.fetch_add(1, Ordering::Relaxed);
                opened.segments
            }
        };
        *shared.write_segments() = segments;
        *refreshed = end;
        drop(refreshed);
        shared.notify_committed();
        Ok(())
    }

    /// For a read-only handle: the durable end (as [`Log::published_end`]
    /// gives it) its view was last built from, at its open or its last
    /// refresh. A refresher compares the published end with this one, not
    /// with one it remembers: another caller's refresh may have installed
    /// the view since.
    pub(crate) fn refreshed_end(&self) -> Option<(u64, u64, u64)> {
        let refreshed = self.inner.shared.refreshed.lock();
        let end = *refreshed.unwrap_or_else(|e| e.into_inner());
        end.map(|e| (e.segment_base, e.segment_len, e.next_offset))
    }

    /// The end the log's writer last published in `DURABLE` (segment base,
    /// durable length, next offset), or `None` without one. A read-only
    /// handle refreshed when the file said the same has nothing new to
    /// find: a refresh reads the last segment only up to that end.
    pub(crate) fn published_end(&self) -> Result<Option<(u64, u64, u64)>> {
        let shared = &self.inner.shared;
        Self::published_end_in(&*shared.storage, &shared.dir)
    }

    /// [`Log::published_end`] of the log in `dir`, without opening it.
    pub(crate) fn published_end_in(
        storage: &dyn Storage,
        dir: &Path,
    ) -> Result<Option<(u64, u64, u64)>> {
        let end = durable_end::load_for_reader(storage, dir)?;
        Ok(end.map(|e| (e.segment_base, e.segment_len, e.next_offset)))
    }

    /// A channel that receives a wake-up (coalesced: at most one pending)
    /// each time records are committed, or a read-only handle's refresh
    /// finds new ones. Followers wait on it and then read from where they
    /// stopped; it carries no data, so a slow follower costs no memory.
    pub fn watch(&self) -> flume::Receiver<()> {
        let (tx, rx) = flume::bounded(1);
        self.watch_with(tx);
        rx
    }

    /// Like [`Log::watch`], with a channel of the caller's (which may also
    /// carry other wake-ups). After the writer stopped, `tx` is dropped.
    pub(crate) fn watch_with(&self, tx: flume::Sender<()>) {
        let shared = &self.inner.shared;
        let mut watchers = shared.watchers.lock().unwrap_or_else(|e| e.into_inner());
        // After the writer stopped, `tx` is dropped here: the receiver is
        // born disconnected, as the watchers before it were.
        if !shared.watch_closed.load(Ordering::Relaxed) {
            watchers.push(tx);
        }
    }

    /// Whether `other` is a handle to the same open log (a clone of this
    /// one), not a later reopen of the same directory.
    pub(crate) fn same_as(&self, other: &Log) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &LogOptions {
        &self.inner.shared.options
    }

    /// The store's permanent random id (see [`StoreId`]). Always `Some` for
    /// a writer, which assigns one on first open; `None` only for a
    /// read-only view of a store made before store ids existed.
    pub fn store_id(&self) -> Option<StoreId> {
        self.inner.shared.store_id.get().copied()
    }

    /// The offset the next committed record will get; equally, the number
    /// of committed records.
    pub fn next_offset(&self) -> u64 {
        self.inner.shared.read_segments().next_offset()
    }

    /// What the writer did since the log was opened.
    pub fn metrics(&self) -> LogMetrics {
        let m = &self.inner.shared.metrics;
        LogMetrics {
            records: m.records.load(Ordering::Relaxed),
            batches: m.batches.load(Ordering::Relaxed),
            groups: m.groups.load(Ordering::Relaxed),
            fsyncs: m.fsyncs.load(Ordering::Relaxed),
            bytes: m.bytes.load(Ordering::Relaxed),
            damaged_segments: self
                .inner
                .shared
                .read_segments()
                .sealed
                .iter()
                .filter(|s| s.is_rebuilt())
                .count() as u64,
            prefilled_bytes: m.prefill.bytes.load(Ordering::Relaxed),
            prefill_failures: m.prefill.failures.load(Ordering::Relaxed),
        }
    }

    /// Appends one record; returns its offset once committed.
    pub async fn append(&self, record: Record) -> Result<u64> {
        Ok(self.append_batch(vec![record]).await?.start)
    }

    /// Appends records as one atomic batch: after a crash either all of them
    /// are in the log or none is. Returns their offsets once committed.
    pub async fn append_batch(&self, records: Vec<Record>) -> Result<Range<u64>> {
        let (tx, rx) = flume::bounded(1);
        let (writer, request) = self.prepare(records, AppendReply::Channel(tx))?;
        writer
            .tx
            .send_async(request)
            .await
            .map_err(|_| self.stopped())?;
        rx.recv_async().await.map_err(|_| self.stopped())?
    }

    /// [`Log::append`] for code that is not async. Blocks the thread.
    pub fn append_blocking(&self, record: Record) -> Result<u64> {
        Ok(self.append_batch_blocking(vec![record])?.start)
    }

    /// [`Log::append_batch`] for code that is not async. Blocks the thread
    /// until the batch is committed; the writer is an OS thread of its own,
    /// so this never waits on an async runtime and cannot deadlock one
    /// (it does hold up the runtime thread it is called on).
    pub fn append_batch_blocking(&self, records: Vec<Record>) -> Result<Range<u64>> {
        let (tx, rx) = flume::bounded(1);
        let (writer, request) = self.prepare(records, AppendReply::Channel(tx))?;
        writer.tx.send(request).map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Queues a batch without waiting for it to commit: `callback` gets the
    /// outcome on the writer thread. Waits at most until `deadline` for room
    /// in the queue (a deadline already past: one try, no wait); a full
    /// queue then gives [`Error::QueueFull`] and the batch is not appended.
    /// When this returns `Ok`, `callback` is called exactly once, even if
    /// the log is closed meanwhile (with [`Error::Closed`]).
    pub fn append_batch_detached(
        &self,
        records: Vec<Record>,
        deadline: Instant,
        callback: AppendCallback,
    ) -> Result<()> {
        let (writer, request) = self.prepare(records, AppendReply::Callback(callback))?;
        if deadline <= Instant::now() {
            // A zero timeout: one try, no wait.
            return writer.tx.try_send(request).map_err(|e| match e {
                flume::TrySendError::Full(_) => Error::QueueFull,
                flume::TrySendError::Disconnected(_) => self.stopped(),
            });
        }
        writer
            .tx
            .send_deadline(request, deadline)
            .map_err(|e| match e {
                flume::SendTimeoutError::Timeout(_) => Error::QueueFull,
                flume::SendTimeoutError::Disconnected(_) => self.stopped(),
            })
    }

    /// Waits until every append queued before this call is durable (whatever
    /// the [`Durability`](crate::Durability) mode: this is an explicit fsync) or has been
    /// answered with its error; returns the next offset. Under
    /// `Durability::Fsync` appends are durable when answered, so this only
    /// waits for those still in flight, detached ones included.
    pub async fn sync(&self) -> Result<u64> {
        let (tx, rx) = flume::bounded(1);
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer
            .tx
            .send_async(Request::Sync { reply: tx })
            .await
            .map_err(|_| self.stopped())?;
        rx.recv_async().await.map_err(|_| self.stopped())?
    }

    /// [`Log::sync`] for code that is not async. Blocks the thread; never
    /// call it from an append callback (it would wait for itself).
    pub fn sync_blocking(&self) -> Result<u64> {
        let (tx, rx) = flume::bounded(1);
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        writer
            .tx
            .send(Request::Sync { reply: tx })
            .map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Whether the calling thread is the writer thread (code running in an
    /// append callback). Blocking appends from there would wait forever.
    pub(crate) fn on_writer_thread(&self) -> bool {
        self.inner
            .writer
            .as_ref()
            .is_some_and(WriterHandle::is_current_thread)
    }

    /// Whether the writer stopped after a failure.
    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poison_error().is_some()
    }

    /// Checks a batch before it is queued, so a refused batch costs nothing
    /// and changes nothing.
    fn prepare(
        &self,
        records: Vec<Record>,
        reply: AppendReply,
    ) -> Result<(&WriterHandle, Request)> {
        let shared = &self.inner.shared;
        let writer = self.inner.writer.as_ref().ok_or(Error::ReadOnly)?;
        if let Some(e) = shared.poison_error() {
            return Err(e);
        }
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if records.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let max = shared.options.record_max_bytes;
        if let Some(r) = records.iter().find(|r| r.payload.len() > max) {
            return Err(Error::RecordTooLarge {
                size_bytes: r.payload.len(),
                max_bytes: max,
            });
        }
        let lens = records.iter().map(|r| r.payload.len());
        let encoded_len = if shared.chained {
            encoded_chained_batch_len(lens)
        } else {
            encoded_batch_len(lens)
        };
        let largest = shared.options.largest_batch();
        if encoded_len > largest {
            return Err(Error::BatchTooLarge {
                size_bytes: encoded_len,
                max_bytes: largest,
            });
        }
        let request = Request::Append {
            records,
            encoded_len,
            reply,
        };
        Ok((writer, request))
    }

    /// The error for an append that found the writer gone.
    fn stopped(&self) -> Error {
        self.inner.shared.poison_error().unwrap_or(Error::Closed)
    }

    /// Reads committed records from `offset` on, in offset order. The
    /// iterator ends where the log ends when it gets there, so it includes
    /// records committed while it runs.
    pub fn read_from(&self, offset: u64) -> Result<LogReader> {
        let next = self.next_offset();
        if offset > next {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                next_offset: next,
            });
        }
        Ok(LogReader::new(
            self.inner.shared.clone(),
            offset,
            i64::MIN..=i64::MAX,
        ))
    }

    /// Like [`Log::read_from`], but returns only records whose timestamp
    /// lies in `time_us`. Timestamps need not grow with offsets: the sparse
    /// index keeps the least and greatest timestamp of the batches each entry
    /// covers, and the reader skips every span whose bounds miss the range,
    /// without reading it. So the result is exact whatever the order of
    /// timestamps, and the cost is proportional to the spans that overlap.
    pub fn read_time_range(&self, offset: u64, time_us: RangeInclusive<i64>) -> Result<LogReader> {
        let next = self.next_offset();
        if offset > next {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                next_offset: next,
            });
        }
        Ok(LogReader::new(self.inner.shared.clone(), offset, time_us))
    }

    /// Visits the committed records from `offset` on whose timestamp lies in
    /// `time_us`, in offset order, in place: each [`Frame`] borrows the
    /// segment's bytes (no copy, no allocation per record), after its batch
    /// verified whole. `f` returns [`ControlFlow::Break`] to stop. Returns
    /// the next offset not visited: the one after the record `f` stopped
    /// at, or where the log ended when the scan got there (records
    /// committed meanwhile are included, as with [`Log::read_from`]).
    ///
    /// The records visited and the errors are exactly those of
    /// [`Log::read_time_range`] (of [`Log::read_from`] for the full range):
    /// damage in a sealed segment is read past, other damage or an I/O
    /// failure ends the scan with the error after the records before it
    /// were visited.
    pub fn scan(
        &self,
        offset: u64,
        time_us: RangeInclusive<i64>,
        f: impl FnMut(Frame<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let next = self.next_offset();
        if offset > next {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                next_offset: next,
            });
        }
        reader::scan(self.inner.shared.clone(), offset, time_us, f)
    }

    /// Visits the committed batches from the one holding `offset` on, in
    /// log order, each read when the visitor asks (see `batches`).
    pub(crate) fn walk_batches(
        &self,
        offset: u64,
        visit: impl FnMut(&mut BatchAt<'_>) -> Result<ControlFlow<()>>,
    ) -> Result<batches::Walk> {
        batches::walk(&self.inner.shared, offset, visit)
    }

    /// Which view of the log this is: the handle's number in the process
    /// and how many times a refresh built its view again from the files.
    /// Anything kept over the view's records (`audit::kept`) holds only
    /// while this stays the same: a rebuilt view may read records a
    /// `repair` changed below where it ended.
    pub(crate) fn view_id(&self) -> (u64, u64) {
        let shared = &self.inner.shared;
        (shared.id, shared.rebuilds.load(Ordering::Relaxed))
    }

    /// Whether this handle writes the log (and holds its lock: no
    /// `repair` can run on the directory while it lives).
    pub(crate) fn is_writer(&self) -> bool {
        self.inner.writer.is_some()
    }

    /// The repairs the directory shows (see `repair::repairs_seen`).
    pub(crate) fn repairs_seen(&self) -> Option<repair::Repairs> {
        let shared = &self.inner.shared;
        repair::repairs_seen(&*shared.storage, &shared.dir)
    }

    /// A writer's: replaces a repair count that does not read (see
    /// `repair::renew_unreadable_count`); a read-only handle changes
    /// nothing.
    pub(crate) fn renew_repair_count(&self) -> Result<()> {
        if !self.is_writer() {
            return Ok(());
        }
        let shared = &self.inner.shared;
        repair::renew_unreadable_count(&*shared.storage, &shared.dir)
    }

    /// The storage the log's files are read and written through.
    pub(crate) fn storage(&self) -> &dyn crate::storage::Storage {
        &*self.inner.shared.storage
    }

    /// Whether the log's batches carry chain links (log format 2).
    pub(crate) fn is_chained(&self) -> bool {
        self.inner.shared.chained
    }

    /// The base offsets of the log's segments, sealed ones and the active
    /// one, in order: where a reader can split the log for work on two
    /// threads.
    pub(crate) fn segment_bases(&self) -> Vec<u64> {
        let segments = self.inner.shared.read_segments();
        segments
            .sealed
            .iter()
            .map(|s| s.base_offset)
            .chain(std::iter::once(segments.active.base_offset))
            .collect()
    }

    /// The sealed segments as of now, with their bytes mapped: what an
    /// index derived per sealed segment (`store::keys`) is built from and
    /// checked against. Rebuilds of damaged segments are left out (their
    /// bytes are not the file's).
    pub(crate) fn sealed_segments(&self) -> Vec<SealedBytes> {
        let segments = self.inner.shared.read_segments();
        segments
            .sealed
            .iter()
            .filter(|s| !s.is_rebuilt())
            .map(|s| SealedBytes {
                segment: s.clone(),
                storage: self.inner.shared.storage.clone(),
            })
            .collect()
    }

    /// The sealed segments starting below `offset` that are read through
    /// their rebuild (damage read past: some of their records are
    /// stand-ins), as (path, base offset, next offset), in offset order.
    pub(crate) fn damaged_segments_below(&self, offset: u64) -> Vec<(PathBuf, u64, u64)> {
        let segments = self.inner.shared.read_segments();
        segments
            .sealed
            .iter()
            .filter(|s| s.is_rebuilt() && s.base_offset < offset)
            .map(|s| (s.path.clone(), s.base_offset, s.next_offset))
            .collect()
    }

    /// The active segment as of now: what an in-memory key index of it
    /// (`store::keys`) reads, up to the committed length.
    pub(crate) fn active_segment(&self) -> ActiveBytes {
        let segments = self.inner.shared.read_segments();
        let active = &segments.active;
        ActiveBytes {
            base_offset: active.base_offset,
            next_offset: active.next_offset,
            committed_len: active.committed_len,
            file: active.file.clone(),
        }
    }

    /// Checks every frame of every segment, and the index files, and reports
    /// every problem found. Only I/O failures are errors; damage is reported
    /// in the [`VerifyReport`].
    pub fn verify(&self) -> Result<VerifyReport> {
        Ok(self.verify_folding(None)?.0)
    }

    /// [`Log::verify`], and with `fold_to = Some(n)` the Merkle tree of the
    /// first `n` records from the same pass (see `verify::verify`).
    pub(crate) fn verify_folding(
        &self,
        fold_to: Option<u64>,
    ) -> Result<(VerifyReport, Option<crate::audit::tree::LogTree>)> {
        let shared = &self.inner.shared;
        // The active segment's file must hold at least what its writer
        // published as durable (a writer's failed fsyncs cut only above
        // that, and nothing else enforcelog does cuts below it). Read
        // before the committed length: a writer's published end never runs
        // ahead of it. A reader's may have moved past its view since (the
        // writer went on), hence the `min` below: only the part of the file
        // the view covers is checked. A reader's view of a damaged active
        // segment may be an in-memory rebuild longer than the file; the
        // file itself still holds the published end (damage never shortens
        // a file), so the check is the same.
        let published = durable_end::load(&*shared.storage, &shared.dir)
            .ok()
            .flatten();
        let limit = {
            let segments = shared.read_segments();
            (segments.active.base_offset, segments.active.committed_len)
        };
        let must_hold = published
            .filter(|end| end.segment_base == limit.0)
            .map(|end| end.segment_len.min(limit.1));
        verify::verify(
            &*shared.storage,
            &shared.dir,
            Some(limit),
            must_hold,
            fold_to,
        )
    }

    /// Makes everything appended durable, stops the writer and releases the
    /// lock. Later appends through any clone fail with [`Error::Closed`];
    /// reads keep working. Dropping the last handle does the same. For a
    /// read-only handle it disconnects every [`Log::watch`] channel, now
    /// and later, as a writer's stop does.
    pub fn close(&self) -> Result<()> {
        match &self.inner.writer {
            Some(writer) => close_writer(writer, None),
            None => {
                // No writer will stop to disconnect the watchers: without
                // this, a follower blocked on a closed read-only handle
                // (whose refresher stopped too) would wait for good.
                self.inner.shared.forget_watchers();
                Ok(())
            }
        }
    }
}

/// [`recovery::open_segments`] for a reader, which may meet a store being
/// created by another process: it loaded `STORE_ID` (absent) before it
/// listed the segments, and the writer made its id durable and then its
/// first tagged segment in between. A segment that was listed proves its
/// id was durable first, so when the open fails without an id, the id is
/// read again and, if it is there now, the open is tried once more with it.
/// Returns the id the segments were checked against.
fn open_segments_read_only(
    storage: &dyn Storage,
    dir: &Path,
    options: &LogOptions,
    end: Option<durable_end::DurableEnd>,
    known_id: Option<StoreId>,
) -> Result<(recovery::Opened, Option<StoreId>)> {
    match recovery::open_segments(storage, dir, options, Access::ReadOnly(end), known_id) {
        Err(e) if known_id.is_none() => match identity::load(storage, dir)? {
            Some(id) => {
                let opened = recovery::open_segments(
                    storage,
                    dir,
                    options,
                    Access::ReadOnly(end),
                    Some(id),
                )?;
                Ok((opened, Some(id)))
            }
            None => Err(e),
        },
        other => other.map(|opened| (opened, known_id)),
    }
}

/// Creates and durably writes a new store id.
fn assign_store_id(storage: &dyn Storage, dir: &Path) -> Result<StoreId> {
    let id = StoreId::generate();
    identity::store(storage, dir, id)?;
    info!(dir = %dir.display(), store_id = %id, "assigned a store id");
    Ok(id)
}

/// Creates the log directory if it is missing; refuses, untouched, an
/// existing directory that holds something other than a log (or a log of
/// a version this build does not read).
fn create_dir_refusing_foreign(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let exists = storage.exists(dir).map_err(|e| Error::io("stat", dir, e))?;
    // The store's name must survive a crash before anything acknowledged is
    // written inside it: a new directory (parents included) is synced into
    // its parent, and so is an existing one, which an earlier open may have
    // created before failing or crashing short of that sync.
    if !exists {
        create_dir_all_durably(storage, dir).map_err(|e| Error::io("create directory", dir, e))?;
        return Ok(());
    }
    let listing = dir::list(storage, dir)?;
    if listing.has_version {
        // Checked before the lock too, so a version this build does not
        // read is refused without a LOCK file left behind.
        dir::check_version(storage, dir)?;
    } else if !listing.segments.is_empty() || !listing.foreign.is_empty() {
        return Err(not_a_log_dir(dir));
    }
    sync_ancestors(storage, dir)
}

/// Syncs every ancestor of an existing store directory, top down: an
/// earlier open may have created several levels and failed before syncing
/// them all. The store's own parent must succeed; an ancestor above it that
/// cannot be synced (not readable by this user, say) was not created by
/// enforcelog.
fn sync_ancestors(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let ancestors: Vec<&Path> = dir
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    for (i, ancestor) in ancestors.iter().enumerate().rev() {
        match storage.sync_dir(ancestor) {
            Ok(()) => {}
            Err(e) if i == 0 => return Err(Error::io("fsync directory", *ancestor, e)),
            Err(_) => {}
        }
    }
    if ancestors.is_empty() {
        storage
            .sync_dir(Path::new("."))
            .map_err(|e| Error::io("fsync directory", Path::new("."), e))?;
    }
    Ok(())
}

fn not_a_log_dir(dir: &Path) -> Error {
    Error::NotALogDirectory {
        path: dir.to_path_buf(),
        reason: "it is not empty and has no VERSION file".into(),
    }
}

/// Writes the version file of a new log directory, or checks an existing
/// one (under the writer lock). A directory that holds anything else is
/// refused untouched.
/// Returns the log format version of the directory.
fn prepare_dir(storage: &dyn Storage, dir: &Path) -> Result<u16> {
    let listing = dir::list(storage, dir)?;
    if listing.has_version {
        return dir::check_version(storage, dir);
    }
    if !listing.segments.is_empty() || !listing.foreign.is_empty() {
        return Err(not_a_log_dir(dir));
    }
    dir::write_version(storage, dir)?;
    Ok(LOG_FORMAT_VERSION)
}
