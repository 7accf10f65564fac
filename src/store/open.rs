//! Opening a store: [`Store::open`] and [`Store::open_read_only`] for the
//! common cases, [`StoreBuilder`] for the rest (another storage, user
//! projections), and the one constructor both paths go through.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, RwLock};

use super::peers::{self, Peers};
use super::{follower, shards, supervisor, Counters, Inner, Store, StoreOptions, WriterSide};
use crate::error::Result;
use crate::log::Log;
use crate::projection::{Host, Projection, TriggerStats};
use crate::storage::{FileStorage, Storage};

impl Store {
    /// Opens (or creates) the store in `dir` for writing. When another
    /// writer holds the directory, the store claims a shard of it (see
    /// [`Store::shard`]), unless [`StoreOptions::share_directory`] is off:
    /// then it fails with [`Error::Locked`](crate::Error::Locked).
    ///
    /// Shorthand for `Store::builder(dir).options(options).open()`.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        Store::builder(dir).options(options).open()
    }

    /// Opens the store in `dir` for reading only, beside a writer that may
    /// be running in another process (no lock is taken). It sees what that
    /// writer has made durable; [`Store::refresh`] picks up what it commits
    /// later.
    ///
    /// Shorthand for `Store::builder(dir).open_read_only()`.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Store> {
        Store::builder(dir).open_read_only()
    }

    /// Everything else a store can be opened with: options, a [`Storage`]
    /// (the fault-injecting one in tests), user projections.
    ///
    /// ```
    /// use enforcelog::projection::ActionsPerDay;
    /// use enforcelog::{Store, StoreOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let store = Store::builder(dir.path())
    ///     .options(StoreOptions::default())
    ///     .projection(ActionsPerDay::default())
    ///     .open()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn builder(dir: impl AsRef<Path>) -> StoreBuilder {
        StoreBuilder {
            dir: dir.as_ref().to_path_buf(),
            options: StoreOptions::default(),
            storage: Arc::new(FileStorage),
            projections: Vec::new(),
        }
    }
}

/// How to open a store; from [`Store::builder`]. Nothing is touched on disk
/// until [`StoreBuilder::open`] or [`StoreBuilder::open_read_only`].
#[must_use = "a builder opens nothing until `open` or `open_read_only`"]
pub struct StoreBuilder {
    dir: PathBuf,
    options: StoreOptions,
    storage: Arc<dyn Storage>,
    projections: Vec<Box<dyn Projection>>,
}

impl std::fmt::Debug for StoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.projections.iter().map(|p| p.name()).collect();
        f.debug_struct("StoreBuilder")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("storage", &self.storage)
            .field("projections", &names)
            .finish()
    }
}

impl StoreBuilder {
    /// The options (default: [`StoreOptions::default`]). A read-only store
    /// uses the projection options (trigger windows) and ignores the rest.
    pub fn options(mut self, options: StoreOptions) -> Self {
        self.options = options;
        self
    }

    /// The file system to go through (default: the real one).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = storage;
        self
    }

    /// Adds a user projection, kept current beside the built-in
    /// [`TriggerStats`]. It starts from its checkpoint when a valid one
    /// exists, otherwise from the log; its name must be unique.
    pub fn projection(mut self, projection: impl Projection + 'static) -> Self {
        self.projections.push(Box::new(projection));
        self
    }

    /// Adds user projections already boxed (see [`StoreBuilder::projection`]).
    pub fn projections(mut self, projections: Vec<Box<dyn Projection>>) -> Self {
        self.projections.extend(projections);
        self
    }

    /// Opens (or creates) the store for writing.
    pub fn open(self) -> Result<Store> {
        self.options.validate()?;
        let host = host_for(&self.options, self.projections)?;
        let (shard, log) = shards::open_claiming(
            &self.storage,
            &self.dir,
            &self.options.log,
            self.options.share_directory,
        )?;
        let own_dir = shards::shard_dir(&self.dir, shard);
        host.load_checkpoints(&*self.storage, &own_dir, &log);
        let (wake, wakeups) = flume::bounded(1);
        let writer = WriterSide {
            wake,
            supervisor: Mutex::new(None),
        };
        let inner = Inner::new(
            self.storage,
            (self.dir, shard),
            self.options,
            Some(writer),
            log,
            host,
        );
        let thread = supervisor::spawn(Arc::downgrade(&inner), wakeups)?;
        if let Some(writer) = &inner.writer {
            *writer.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        }
        look_at_other_shards(&inner);
        follower::start(&inner)?;
        peers::start(&inner)?;
        Ok(Store::from_inner(inner))
    }

    /// Opens the store for reading only (see [`Store::open_read_only`]).
    /// Checkpoints are read, never written.
    pub fn open_read_only(self) -> Result<Store> {
        self.options.validate()?;
        let host = host_for(&self.options, self.projections)?;
        let log = Log::open_read_only_with_storage(self.storage.clone(), &self.dir)?;
        host.load_checkpoints(&*self.storage, &self.dir, &log);
        let inner = Inner::new(self.storage, (self.dir, 0), self.options, None, log, host);
        look_at_other_shards(&inner);
        follower::start(&inner)?;
        peers::start(&inner)?;
        Ok(Store::from_inner(inner))
    }
}

impl Inner {
    /// The one constructor of a store's shared state; `writer` is `None`
    /// for a read-only store; `(root, shard)` are the directory opened and
    /// which shard of it the store writes (0 for a read-only store).
    fn new(
        storage: Arc<dyn Storage>,
        (root, shard): (PathBuf, u32),
        options: StoreOptions,
        writer: Option<WriterSide>,
        log: Log,
        projections: Host,
    ) -> Arc<Inner> {
        let peers = Peers::new(
            storage.clone(),
            &root,
            shard,
            options.trigger_windows.clone(),
            options.shard_refresh_interval,
            writer.as_ref().map(|_| options.log.clone()),
        );
        Arc::new(Inner {
            storage,
            dir: shards::shard_dir(&root, shard),
            root,
            shard,
            peers,
            options,
            writer,
            log: RwLock::new(log),
            counters: Counters::default(),
            gap: Mutex::default(),
            drop_warnings: Mutex::default(),
            stopping: AtomicBool::new(false),
            projections,
            follower: Mutex::new(None),
            follower_wake: flume::bounded(1),
            closed: AtomicBool::new(false),
            detached_gate: RwLock::new(()),
            keys: Default::default(),
            keys_disabled: AtomicBool::new(false),
            trees: Mutex::default(),
        })
    }
}

/// The first look at the other shards, before the store is handed out, so
/// that its first answers include what they made durable. A failure does
/// not fail the open (a writer must be able to record whatever another
/// shard's state): it is logged and kept, and `stats` reports it.
fn look_at_other_shards(inner: &Inner) {
    if let Err(e) = inner.peers.refresh() {
        tracing::warn!(dir = %inner.root.display(), error = %e, "could not read the other shards of the store");
    }
}

/// The built-in trigger statistics first, then the user's projections.
fn host_for(options: &StoreOptions, mut projections: Vec<Box<dyn Projection>>) -> Result<Host> {
    projections.insert(
        0,
        Box::new(TriggerStats::with_windows(options.trigger_windows.clone())),
    );
    Host::new(projections)
}
