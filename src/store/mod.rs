//! The store: what host applications call to record enforcement outcomes
//! and read them back, on top of the log.
//!
//! Three ways to write, by what must happen when the disk fails:
//! - [`Store::record_detached`]: **the halt path** (code that stops, kills or
//!   blocks an agent). Fail-safe: it never returns an error and never blocks
//!   longer than [`StoreOptions::detached_timeout`], so no I/O failure can
//!   hold up the halt. What it cannot record is logged (rate-limited),
//!   counted, and later written as a gap marker naming who lost what;
//! - [`Store::record`] / [`Store::record_blocking`]: acknowledged; one event,
//!   committed on its own (concurrent callers share fsyncs through group
//!   commit), or an error for a caller that can act on it. Not for the halt
//!   path: `record().await?` there lets a full disk block the halt;
//! - [`Store::begin`]: a caller-owned batch; nothing is visible or durable
//!   until [`EventBatch::commit`], which appends it as one atomic log batch.
//!
//! Invariant: every record of the log is a payload the store encoded. The
//! store hands out no writer ([`Store::log`] is a read-only [`LogView`]);
//! an entry that does not decode anyway (written around the store) is
//! skipped and counted by projections and queries, never a stall.
//!
//! A background *supervisor* thread reopens the log when its writer failed
//! (the reopen recovers from what is on disk) and writes gap markers as soon
//! as writing works again.

// `open` first: rustdoc lists `Store`'s methods in the order of their
// modules, and a reader of the `Store` page meets opening first.
mod open;

mod audit;
mod batch;
mod detached;
mod follower;
mod gap;
pub(crate) mod keys;
pub(crate) mod metrics;
mod options;
mod peers;
mod query;
pub mod shards;
mod stats;
mod subscribe;
mod supervisor;
mod union;
mod view;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

pub use batch::EventBatch;
pub use detached::DROP_WARNING_INTERVAL;
pub use metrics::StoreMetrics;
pub use open::StoreBuilder;
pub use options::{
    StoreOptions, DETACHED_TIMEOUT_MAX, MAX_FUTURE_SKEW_DEFAULT, RECOVERY_INTERVAL_MAX,
    TRIGGER_WINDOW_MAX,
};
pub use query::{Query, QueryPage};
pub use stats::{stats_report, window_label};
pub use subscribe::{Delivery, Subscription};
pub use union::{
    Positions, ShardEntry, ShardPosition, UnionDelivery, UnionReplay, UnionSubscription,
};
pub use view::LogView;

use self::detached::DropWarnings;
use self::gap::GapState;
use self::metrics::Histogram;
use crate::error::{Error, Result};
use crate::event::{check_not_in_future, Entry, Event};
use crate::log::Log;
use crate::payload;
use crate::projection::{Host, TriggerStats};
use crate::record::{now_us, Record};
use crate::storage::Storage;

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    dropped: AtomicU64,
    gap_markers: AtomicU64,
    recoveries: AtomicU64,
    /// `stats` calls that had to replay the log (an as-of time whose window
    /// reaches into history the projection folded).
    stats_replays: AtomicU64,
    tree_passes: AtomicU64,
    /// Entries queries skipped because they do not decode.
    undecodable_read: AtomicU64,
    /// fsyncs of logs replaced by a recovery.
    fsyncs_before: AtomicU64,
    latency: Histogram,
}

#[derive(Debug)]
pub(crate) struct Inner {
    storage: Arc<dyn Storage>,
    /// The directory the store was opened on (shard 0's).
    root: PathBuf,
    /// This store's shard of `root` (0: the root store itself).
    shard: u32,
    /// This store's own log directory: `root` or `root/shards/<shard>`.
    dir: PathBuf,
    /// The directory's other shards, read-only.
    peers: peers::Peers,
    options: StoreOptions,
    /// What only a writer has; `None` for a read-only store.
    writer: Option<WriterSide>,
    log: RwLock<Log>,
    counters: Counters,
    gap: Mutex<GapState>,
    drop_warnings: Mutex<DropWarnings>,
    stopping: AtomicBool,
    projections: Host,
    follower: Mutex<Option<JoinHandle<()>>>,
    /// Wakes the follower: on each commit (registered with the log) and
    /// when the store stops.
    follower_wake: (flume::Sender<()>, flume::Receiver<()>),
    /// Set by `close`, which already checkpointed.
    closed: AtomicBool,
    /// Held (shared) by each `record_detached` call while it queues its
    /// event; `close` takes it exclusively once after setting `closed`, so
    /// every detached event is queued before the final gap marker (and
    /// answered or committed before the log closes) or refused and counted.
    detached_gate: RwLock<()>,
    /// The key indexes of sealed segments that queries loaded or built.
    keys: keys::KeyIndex,
    /// Set by tests to read every query by scan (`Store::use_key_indexes`).
    keys_disabled: AtomicBool,
    /// The Merkle tree of each shard's log kept since a head or a proof
    /// computed it (`audit::kept`; `store::audit`).
    trees: Mutex<std::collections::HashMap<u32, crate::audit::kept::KeptTree>>,
}

/// The parts of a store that only a writer has.
#[derive(Debug)]
pub(crate) struct WriterSide {
    /// Wakes the supervisor.
    wake: flume::Sender<()>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn read_only(&self) -> bool {
        self.writer.is_none()
    }

    fn log(&self) -> Log {
        self.log.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the supervisor to look now (after a failure or a drop).
    fn wake(&self) {
        if let Some(writer) = &self.writer {
            let _ = writer.wake.try_send(());
        }
    }

    fn note_committed(&self, count: u64, started: Instant) {
        self.counters.recorded.fetch_add(count, Ordering::Relaxed);
        self.counters.latency.record(started.elapsed());
    }

    fn note_failure(&self, error: &Error) {
        if matches!(error, Error::Poisoned { .. }) {
            self.wake();
        }
    }
}

/// An embeddable, append-only store of enforcement events.
///
/// Cheap to clone; clones share one log. Usable from async code and from
/// plain threads: the writer is an OS thread of its own, so no runtime is
/// needed, and an async caller never waits on anything but the writer.
///
/// ```
/// use enforcelog::{Action, Event, Query, Store, StoreOptions};
///
/// let dir = tempfile::tempdir()?;
/// let store = Store::open(dir.path(), StoreOptions::default())?;
///
/// // The halt path: fail-safe, never fails, never blocks for long.
/// store.record_detached(Event::new("acme", "rate", Action::Aborted));
///
/// // Acknowledged: committed on its own, durable when it returns, or an error.
/// let offset = store.record_blocking(Event::new("acme", "no-prod-writes", Action::Blocked))?;
///
/// // Caller-owned: nothing is visible until commit, then all at once.
/// let mut batch = store.begin();
/// batch.record(Event::new("acme", "budget", Action::Killed).with_run_id("run-7"))?;
/// batch.record(Event::new("globex", "budget", Action::Stopped))?;
/// let offsets = batch.commit_blocking()?;
/// assert_eq!(offsets, offset + 1..offset + 3);
///
/// let page = store.query(&Query::tenant("acme").action(Action::Killed))?;
/// assert_eq!(page.events.len(), 1);
/// assert_eq!(page.events[0].run_id.as_deref(), Some("run-7"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Inner>,
    /// Shared by the clones the caller holds (not by background threads):
    /// when the last one goes, the store closes, in the caller's thread.
    _open: Arc<CloseOnDrop>,
}

/// Closes the store when the caller's last handle is dropped.
#[derive(Debug)]
struct CloseOnDrop(Arc<Inner>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Err(e) = self.0.close() {
            tracing::warn!(error = %e, "closing the store on drop failed");
        }
    }
}

impl Store {
    fn from_inner(inner: Arc<Inner>) -> Store {
        Store {
            _open: Arc::new(CloseOnDrop(inner.clone())),
            inner,
        }
    }
}

impl Store {
    /// Picks up, now, what other writers of the directory made durable:
    /// the other shards' events (and, for a read-only store, the events
    /// committed since it was opened or last refreshed). Without it, a
    /// store looks at the other shards in the background at most every
    /// [`StoreOptions::shard_refresh_interval`]. Its own shard's events a
    /// writer sees at once, without this.
    pub fn refresh(&self) -> Result<()> {
        self.inner.log().refresh()?;
        self.inner.peers.refresh()
    }

    /// The store directory (the one it was opened on, whichever shard of
    /// it this store writes).
    #[expect(
        clippy::misnamed_getters,
        reason = "the directory opened is `root`; `Inner::dir` is this store's own shard"
    )]
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// The directory of the shard this store writes (the root for shard 0):
    /// where what belongs to this shard's log alone is kept.
    #[cfg_attr(not(feature = "jetstream"), allow(dead_code))]
    pub(crate) fn shard_dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The shard of the directory this store writes: 0 for the root store
    /// (the only one, when one writer at a time opens the directory), `n`
    /// for `dir/shards/<n>/`, claimed because other writers held the lower
    /// ones (see [`StoreOptions::share_directory`]). A read-only store
    /// reports 0: it reads the root store and, through it, every shard.
    pub fn shard(&self) -> u32 {
        self.inner.shard
    }

    /// A read-only view of the underlying log (for replay and tools).
    /// After the store reopens a failed log, this returns the new one.
    ///
    /// Read-only on purpose: a record appended around the store would not
    /// be an event payload; see [`LogView`].
    pub fn log(&self) -> LogView {
        LogView::new(self.inner.log())
    }

    /// The store's permanent random id, created with the store and kept in
    /// `STORE_ID`; see [`Log::store_id`](crate::Log::store_id). Each shard
    /// has its own: `(store id, offset)` names one event in the directory.
    pub fn store_id(&self) -> Option<crate::StoreId> {
        self.log().store_id()
    }

    /// The offset the next committed event will get.
    pub fn next_offset(&self) -> u64 {
        self.inner.log().next_offset()
    }

    /// Starts a caller-owned batch.
    pub fn begin(&self) -> EventBatch {
        EventBatch::new(self.clone())
    }

    /// Records one event; returns its offset once committed (durable under
    /// `Durability::Fsync`), or an error.
    ///
    /// Acknowledged, not fail-safe: on the halt path use
    /// [`Store::record_detached`], which an I/O error can never stop.
    pub async fn record(&self, event: Event) -> Result<u64> {
        let record = self.prepare(event)?;
        let started = Instant::now();
        let result = self.inner.log().append(record).await;
        self.finish(result, 1, started)
    }

    /// [`Store::record`] for code that is not async. It blocks the calling
    /// thread until the event is committed. Called from inside an async
    /// runtime it cannot deadlock (the writer never needs the runtime), but
    /// it holds up that runtime thread for an fsync; prefer `record().await`
    /// there. Not for the halt path: see [`Store::record_detached`].
    pub fn record_blocking(&self, event: Event) -> Result<u64> {
        let record = self.prepare(event)?;
        let started = Instant::now();
        let result = self.inner.log().append_blocking(record);
        self.finish(result, 1, started)
    }

    /// Validates an event and turns it into a log record.
    fn prepare(&self, event: Event) -> Result<Record> {
        if self.inner.read_only() {
            event.discard();
            return Err(Error::ReadOnly);
        }
        let event = event.validate_owned()?;
        let now = now_us();
        let at = event.enforced_at_us.unwrap_or(now);
        check_not_in_future(at, now, self.inner.options.max_future_skew_us())?;
        Ok(Record::new(at, payload::encode_event(&event)))
    }

    fn finish<T>(&self, result: Result<T>, count: u64, started: Instant) -> Result<T> {
        match &result {
            Ok(_) => self.inner.note_committed(count, started),
            Err(e) => self.inner.note_failure(e),
        }
        result
    }

    /// Reads every entry (events and gap markers) from `offset` on, in log
    /// order: the raw replay.
    pub fn entries(&self, offset: u64) -> Result<impl Iterator<Item = Result<Entry>>> {
        let reader = self.inner.log().read_from(offset)?;
        Ok(reader.map(|r| r.and_then(|r| decode_entry(&r))))
    }

    /// What the store did since it was opened.
    pub fn metrics(&self) -> StoreMetrics {
        let c = &self.inner.counters;
        let pending = {
            let gap = self.inner.gap.lock().unwrap_or_else(|e| e.into_inner());
            gap.dropped + gap.writing
        };
        StoreMetrics {
            recorded: c.recorded.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            gap_markers: c.gap_markers.load(Ordering::Relaxed),
            dropped_pending_gap: pending,
            fsyncs: c.fsyncs_before.load(Ordering::Relaxed) + self.inner.log().metrics().fsyncs,
            recoveries: c.recoveries.load(Ordering::Relaxed),
            stats_replays: c.stats_replays.load(Ordering::Relaxed),
            tree_passes: c.tree_passes.load(Ordering::Relaxed),
            undecodable_entries: self.undecodable_entries(),
            undecodable_read: c.undecodable_read.load(Ordering::Relaxed),
            append_p50_us: c.latency.quantile_us(0.5),
            append_p90_us: c.latency.quantile_us(0.9),
            append_p99_us: c.latency.quantile_us(0.99),
            append_p999_us: c.latency.quantile_us(0.999),
            append_max_us: c.latency.max_us(),
        }
    }

    /// Log entries that are not store payloads (written around the store),
    /// as far as the projections have read: they skip them, and so do
    /// queries and `stats`, so one such entry cannot stall every tenant.
    pub fn undecodable_entries(&self) -> u64 {
        self.inner
            .projections
            .with::<TriggerStats, _>(|p, _| p.undecodable())
            .unwrap_or(0)
    }

    /// Compares each projection's checkpoint file with a fresh rebuild from
    /// the log up to the checkpoint's offset (reports a damaged or foreign
    /// checkpoint; changes nothing).
    pub fn verify_projections(&self) -> Result<Vec<crate::projection::ProjectionCheck>> {
        let log = self.inner.log();
        self.inner
            .projections
            .verify(&*self.inner.storage, &self.inner.dir, &log)
    }

    /// Forgets the projections' state and rebuilds them from the log; returns
    /// once they reflect everything committed when the call began.
    pub fn rebuild_projections(&self) -> Result<u64> {
        self.inner.projections.reset_all();
        self.inner.projections.catch_up(&self.inner.log())
    }

    /// Whether queries read sealed segments through their key indexes
    /// (default) or scan every segment. For tests that compare the two
    /// paths; answers are the same either way.
    #[doc(hidden)]
    pub fn use_key_indexes(&self, on: bool) {
        self.inner.keys_disabled.store(!on, Ordering::Relaxed);
    }

    /// Writes the projections' checkpoints now (writers only).
    pub fn checkpoint(&self) -> Result<()> {
        if self.inner.read_only() {
            return Err(Error::ReadOnly);
        }
        let log = self.inner.log();
        self.inner.projections.catch_up(&log)?;
        self.inner
            .projections
            .checkpoint(&*self.inner.storage, &self.inner.dir, &log)
    }

    /// Stops the background threads, brings the projections up to date and
    /// checkpoints them, makes everything durable and releases the lock.
    /// Later writes through any clone fail with [`Error::Closed`]. Dropping
    /// the last clone does the same, but cannot report a failure.
    ///
    /// The error reports the log only: every committed event is durable
    /// when this returns `Ok`. A checkpoint that cannot be written (a full
    /// disk, say) is logged with `warn!` and does not fail the close, since
    /// checkpoints are derived data and the next open replays from the last
    /// good one; call [`Store::checkpoint`] first to see its error.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }
}

impl Inner {
    /// See [`Store::close`]. Idempotent: a second call does nothing.
    fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        // Waits (each at most `detached_timeout`) for detached calls that
        // started before `closed` was set; later ones see it and drop.
        drop(
            self.detached_gate
                .write()
                .unwrap_or_else(|e| e.into_inner()),
        );
        supervisor::stop(self);
        follower::stop(self);
        peers::stop(self);
        self.flush_drop_warnings(true);
        // A projection that panics (the host's code) must not keep the log
        // from closing: its last writes would go unsynced, and a close from
        // `drop` would panic the host's thread.
        let checkpointed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.final_checkpoint()));
        match checkpointed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not checkpoint the projections at close; the next open replays from the last good checkpoint");
            }
            Err(panic) => {
                tracing::error!(dir = %self.dir.display(), panic = %follower::panic_message(&*panic), "a projection panicked at close; the next open replays from the last good checkpoint");
            }
        }
        self.log().close()
    }

    /// Writes a pending gap marker, catches the projections up and
    /// checkpoints them (writers only).
    fn final_checkpoint(&self) -> Result<()> {
        if self.read_only() {
            return Ok(());
        }
        let log = self.log();
        if log.is_poisoned() {
            return Ok(()); // the next open replays from the last good checkpoint
        }
        gap::write_gap_marker(self);
        self.projections.catch_up(&log)?;
        self.projections.checkpoint(&*self.storage, &self.dir, &log)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Normally `CloseOnDrop` closed the store already; this only stops
        // the background threads of a store whose handles were leaked.
        self.stopping.store(true, Ordering::Relaxed);
        self.wake();
        self.peers.wake();
        let _ = self.follower_wake.0.try_send(());
    }
}

pub(crate) fn decode_entry(record: &crate::record::LogRecord) -> Result<Entry> {
    decode_payload(record.offset, record.timestamp_us, &record.payload)
}

/// [`decode_entry`] of a record's parts, as a scan hands them over in place.
pub(crate) fn decode_payload(offset: u64, timestamp_us: i64, bytes: &[u8]) -> Result<Entry> {
    payload::decode(offset, timestamp_us, bytes).map_err(|e| Error::BadPayload {
        offset,
        reason: e.0,
    })
}

/// Joins the background thread in `slot` (the follower, the supervisor, the
/// shards refresher), unless it is the calling thread: the last handle can
/// be dropped on that thread itself, which must not wait for itself.
pub(super) fn join_background(slot: &Mutex<Option<JoinHandle<()>>>) {
    let thread = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(thread) = thread {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}
