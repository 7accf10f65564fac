//! The other shards of a store's directory, as this store reads them: each
//! one's log opened read-only, with its own trigger statistics folded from
//! it, so that `stats` can add them to the store's own.
//!
//! What a store sees of another shard is what that shard's writer had made
//! durable (its `DURABLE` end) at the last refresh. Refreshes happen at
//! open, in a thread of their own (`enforcelog-shards`) every
//! `shard_refresh_interval`, and at once on
//! [`Store::refresh`](super::Store::refresh); a read (`stats`, `query`)
//! never touches the file system for them, so it costs no system call. The
//! thread is not the projection follower's, so re-reading a busy shard
//! never delays the folding of the store's own commits (read-your-writes).
//!
//! Invariants:
//! - a peer's statistics reflect exactly the entries below its host's
//!   applied offset, which is the peer log's end as of its last refresh
//!   (the refresh catches up before it publishes the peer);
//! - the store's own shard is never a peer (its own statistics are read
//!   through its writer: read-your-writes);
//! - refreshes run one at a time (`refreshing`), and a read sees either the
//!   set before a refresh or the one after, never half of one;
//! - watchers (union subscriptions) are woken after a view is published,
//!   never before, so a woken reader finds what woke it; once the store
//!   stopped they are disconnected (no view will come).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{shards, Inner};
use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::log::Log;
use crate::projection::{Host, TriggerStats};
use crate::storage::Storage;

/// Another shard, read-only.
#[derive(Debug)]
pub(crate) struct Peer {
    pub shard: u32,
    pub log: Log,
    pub host: Host,
    /// The shard's published durable end when `log` was last refreshed
    /// (read before the refresh); `None` when it had none (always refresh).
    seen_end: Mutex<Option<(u64, u64, u64)>>,
}

impl Peer {
    /// Re-reads the shard, unless its published durable end is the one
    /// seen at the last refresh (then nothing new is readable: the common
    /// case of an idle writer costs a 32-byte read, not a reopen).
    fn refresh(&self) -> Result<()> {
        let end = self.log.published_end()?;
        let mut seen = self.seen_end.lock().unwrap_or_else(|e| e.into_inner());
        if end.is_some() && end == *seen {
            return Ok(());
        }
        self.log.refresh()?;
        *seen = end;
        Ok(())
    }
}

/// What the last refresh found.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// The other shards, ascending.
    pub peers: Vec<Arc<Peer>>,
    /// Why the last refresh failed, if it did: `peers` are then as of the
    /// refresh before, and answers built on them may be short.
    pub failure: Option<String>,
}

/// The other shards of the directory.
#[derive(Debug)]
pub(crate) struct Peers {
    storage: Arc<dyn Storage>,
    root: PathBuf,
    own: u32,
    windows: Vec<Duration>,
    interval: Duration,
    /// A writer store's log options: it settles shards no writer holds
    /// before it reads them (see `Log::settle_if_abandoned`). `None` for a
    /// read-only store, which writes nothing.
    settle_with: Option<LogOptions>,
    view: RwLock<Arc<View>>,
    /// When the last refresh started; held while one runs.
    refreshing: Mutex<Option<Instant>>,
    /// The refresher thread, and what wakes it to stop.
    thread: Mutex<Option<JoinHandle<()>>>,
    wake: (flume::Sender<()>, flume::Receiver<()>),
    /// Woken (coalesced, no data) each time a view is published: union
    /// subscriptions wait on these for the other shards' new entries and
    /// for shards that appeared.
    watchers: Mutex<Vec<flume::Sender<()>>>,
    /// Set when the store stops: no view will be published any more, so
    /// the watchers are disconnected, and later ones born disconnected.
    stopped: std::sync::atomic::AtomicBool,
}

impl Peers {
    pub fn new(
        storage: Arc<dyn Storage>,
        root: &Path,
        own: u32,
        windows: Vec<Duration>,
        interval: Duration,
        settle_with: Option<LogOptions>,
    ) -> Peers {
        Peers {
            storage,
            root: root.to_path_buf(),
            own,
            windows,
            interval,
            settle_with,
            view: RwLock::default(),
            refreshing: Mutex::new(None),
            thread: Mutex::new(None),
            wake: flume::bounded(1),
            watchers: Mutex::default(),
            stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A channel woken after each published view (see `watchers`).
    pub fn watch(&self) -> flume::Receiver<()> {
        let (tx, rx) = flume::bounded(1);
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        // After the stop `tx` is dropped: the receiver is born disconnected.
        if !self.stopped.load(Ordering::Relaxed) {
            watchers.push(tx);
        }
        rx
    }

    /// Disconnects every watcher, now and later (the store stopped).
    fn forget_watchers(&self) {
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.clear();
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Wakes the refresher (to see that the store is stopping).
    pub fn wake(&self) {
        let _ = self.wake.0.try_send(());
    }

    /// The peers as of the last refresh (a cheap `Arc` clone).
    pub fn current(&self) -> Arc<View> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn publish(&self, view: View) {
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(view);
        // After the view is in place, so that a woken reader finds it.
        let mut watchers = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        watchers.retain(|w| !matches!(w.try_send(()), Err(flume::TrySendError::Disconnected(_))));
    }

    /// Refreshes if the last refresh is older than the interval (the
    /// refresher's call); a failure is logged and the previous view kept.
    fn refresh_if_due(&self) {
        let due = self
            .refreshing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            if let Err(e) = self.refresh() {
                tracing::warn!(dir = %self.root.display(), error = %e, "could not read the other shards of the store; answers leave out what they wrote since the last refresh");
            }
        }
    }

    /// Looks at the directory now: opens shards that appeared, picks up
    /// what every shard made durable since, and folds it. A failure is
    /// kept in the view (and reported by every `stats` until a refresh
    /// succeeds) as well as returned.
    pub fn refresh(&self) -> Result<()> {
        let mut refreshing = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current();
        *refreshing = Some(Instant::now());
        match self.look(&old.peers) {
            Ok(peers) => {
                self.publish(View {
                    peers,
                    failure: None,
                });
                Ok(())
            }
            Err(e) => {
                self.publish(View {
                    peers: old.peers.clone(),
                    failure: Some(e.to_string()),
                });
                Err(e)
            }
        }
    }

    fn look(&self, old: &[Arc<Peer>]) -> Result<Vec<Arc<Peer>>> {
        let mut numbers = vec![0];
        numbers.extend(shards::list(&*self.storage, &self.root)?);
        numbers.retain(|&n| n != self.own);
        let mut fresh = Vec::with_capacity(numbers.len());
        for n in numbers {
            self.settle(n);
            let peer = match old.iter().find(|p| p.shard == n) {
                Some(peer) => {
                    peer.refresh()?;
                    peer.clone()
                }
                None => match self.open(n)? {
                    Some(peer) => Arc::new(peer),
                    None => continue,
                },
            };
            peer.host.catch_up(&peer.log)?;
            fresh.push(peer);
        }
        Ok(fresh)
    }

    /// Settles shard `n` if this is a writer store and no writer holds the
    /// shard: what its dead writer left durable becomes visible to every
    /// reader. A failure is logged; the read-only refresh that follows
    /// finds real damage on its own.
    fn settle(&self, n: u32) {
        let Some(options) = &self.settle_with else {
            return;
        };
        let dir = shards::shard_dir(&self.root, n);
        match Log::settle_if_abandoned(&self.storage, &dir, options) {
            Ok(true) => {
                tracing::info!(dir = %dir.display(), "settled a shard no writer holds: what its last writer made durable is now readable");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not settle a shard no writer holds; readers may miss what its last writer left until a writer opens it");
            }
        }
    }

    /// Opens shard `n` read-only; `None` if it is not a store yet (its
    /// writer is creating it).
    fn open(&self, n: u32) -> Result<Option<Peer>> {
        let dir = shards::shard_dir(&self.root, n);
        // Read before the open, so that the open sees at least this end.
        // (A failure to read it only costs a full refresh next time.)
        let end = Log::published_end_in(&*self.storage, &dir).unwrap_or(None);
        let log = match Log::open_read_only_with_storage(self.storage.clone(), &dir) {
            Ok(log) => log,
            Err(Error::NotALogDirectory { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let host = Host::new(vec![Box::new(TriggerStats::with_windows(
            self.windows.clone(),
        ))])?;
        // Its writer's checkpoint, when valid for what is durable, saves
        // replaying the whole shard.
        host.load_checkpoints(&*self.storage, &dir, &log);
        Ok(Some(Peer {
            shard: n,
            log,
            host,
            seen_end: Mutex::new(end),
        }))
    }
}

/// Starts the refresher thread of a store.
pub(super) fn start(inner: &Arc<Inner>) -> Result<()> {
    let weak = Arc::downgrade(inner);
    let wakeups = inner.peers.wake.1.clone();
    let interval = inner.peers.interval;
    let thread = std::thread::Builder::new()
        .name("enforcelog-shards".into())
        .spawn(move || refresh_loop(weak, wakeups, interval))
        .map_err(|e| Error::io("spawn shard refresh thread for", inner.root.clone(), e))?;
    *inner.peers.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(())
}

/// Stops the refresher and waits for it (`stopping` is already set), then
/// disconnects the watchers: with the refresher gone nothing publishes a
/// view any more, and a union subscription blocked on them must wake to
/// see the store closed.
pub(super) fn stop(inner: &Inner) {
    inner.peers.wake();
    super::join_background(&inner.peers.thread);
    inner.peers.forget_watchers();
}

/// Refreshes every `interval` until the store stops or is gone. Holds no
/// strong reference while it waits, so dropping the store is never delayed.
///
/// A read-only store's own log is another process's shard too (the root's
/// writer, for a reader opened on the root): it is refreshed here as well,
/// when its writer has published a new durable end since the last look.
fn refresh_loop(weak: Weak<Inner>, wakeups: flume::Receiver<()>, interval: Duration) {
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            if inner.read_only() {
                refresh_own_log(&inner);
            }
            inner.peers.refresh_if_due();
        }
        let _ = wakeups.recv_timeout(interval);
    }
}

/// Refreshes a read-only store's own log if its published end is not the
/// one its installed view was built from. Compared with the view, not with
/// what this thread last refreshed to: a `Store::refresh` racing this one
/// may have installed its view last, and a writer gone idle then would
/// never move the published end again to make this thread look.
fn refresh_own_log(inner: &Inner) {
    let log = inner.log();
    let refreshed = log.published_end().and_then(|end| {
        if end.is_some() && end != log.refreshed_end() {
            log.refresh()?;
        }
        Ok(())
    });
    if let Err(e) = refreshed {
        tracing::warn!(dir = %inner.dir.display(), error = %e, "could not read what the store's writer added; answers leave it out until a refresh succeeds");
    }
}
