//! `enforcelog._enforcelog`: the native half of the Python package.
//!
//! Python (`python/enforcelog/`) owns the public classes and converts
//! `datetime`s; this module turns the caller's values into [`Event`](enforcelog::Event)s
//! (`convert`, one path for every write call), calls the store, drives the
//! awaitable calls on the event loop (`completion`), and maps every Rust
//! [`Error`] onto the exception classes of `enforcelog._errors`.
//!
//! Invariants:
//! - No call waits (for an fsync, the writer's queue, a lock, the
//!   projections) while holding the GIL: every store call that can wait runs
//!   inside `gil::without_gil`.
//! - The `*_async` calls never block the caller: they return an asyncio
//!   future that the loop's `Completer` (`completion`) settles once the
//!   store's future is ready; no store thread takes the GIL for it.

mod baseline;
mod completion;
mod convert;
mod gil;
mod logging;

use completion::{Completer, Outcome};

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use enforcelog::{Action, Durability, Error, EventBatch, Query, Store, StoreOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

/// The `enforcelog._errors` class for an error, and the invalid field.
fn error_class(error: &Error) -> (&'static str, Option<String>) {
    match error {
        Error::Locked { .. } => ("LockedError", None),
        Error::InvalidEvent(e) => ("InvalidEventError", Some(e.field().to_string())),
        Error::InvalidFilter(e) => ("InvalidFilterError", Some(e.field().to_string())),
        Error::Closed => ("ClosedError", None),
        Error::ReadOnly => ("ReadOnlyError", None),
        Error::Io { .. } => ("IoError", None),
        // A stored payload that does not decode is damage like any other.
        Error::Corruption { .. } | Error::BadPayload { .. } | Error::Tampering { .. } => {
            ("CorruptionError", None)
        }
        Error::RecordTooLarge { .. } | Error::BatchTooLarge { .. } => ("TooLargeError", None),
        Error::EmptyBatch => ("EmptyBatchError", None),
        Error::Poisoned { .. } => ("PoisonedError", None),
        Error::QueueFull => ("QueueFullError", None),
        Error::UnsupportedVersion { .. } | Error::NotALogDirectory { .. } => {
            ("NotAStoreError", None)
        }
        Error::InvalidOptions { name, .. } => ("InvalidOptionsError", Some(name.to_string())),
        Error::OffsetOutOfRange { .. } => ("OffsetOutOfRangeError", None),
        Error::ProjectionStalled { .. } => ("ProjectionStalledError", None),
        _ => ("Error", None),
    }
}

/// Builds the Python exception for a Rust error.
pub(crate) fn to_py_err(py: Python<'_>, error: &Error) -> PyErr {
    let (class, field) = error_class(error);
    let mut message = error.to_string();
    if let Error::Locked { .. } = error {
        message.push_str(
            ": another process (or another Store in this process) has this store open for \
             writing, and share_directory=False asks for it alone. Close the other first, open \
             this one with read_only=True to read, or leave share_directory on (the default) to \
             write into a shard of the same directory",
        );
    }
    py_error(py, class, message, field.as_deref())
}

/// An instance of `enforcelog._errors.<class>` with `.field` set.
pub(crate) fn py_error(py: Python<'_>, class: &str, message: String, field: Option<&str>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module = py.import("enforcelog._errors")?;
        let exc = module.getattr(class)?.call1((message,))?;
        if let Some(field) = field {
            exc.setattr("field", field)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// A batch used after its commit or discard.
fn batch_done(py: Python<'_>) -> PyErr {
    py_error(
        py,
        "ClosedError",
        "this batch was already committed or discarded; start another with store.begin()".into(),
        None,
    )
}

fn result<T>(py: Python<'_>, r: enforcelog::Result<T>) -> PyResult<T> {
    r.map_err(|e| to_py_err(py, &e))
}

/// The native store handle. Use `enforcelog.Store`.
#[pyclass(module = "enforcelog._enforcelog", frozen)]
struct NativeStore {
    /// `None` only while dropping.
    store: Option<Store>,
    /// Unique in the process: tells stores apart for `Completer::stage`.
    id: u64,
    /// The process that opened it. A child made by `fork` has no writer
    /// thread (threads do not survive a fork): every call there would wait
    /// forever, so it is refused instead, and the child never closes it.
    pid: u32,
}

impl NativeStore {
    /// The store, in the process that opened it.
    fn store(&self, py: Python<'_>) -> PyResult<&Store> {
        match &self.store {
            Some(store) if this_process() == self.pid => Ok(store),
            _ => Err(py_error(
                py,
                "ClosedError",
                format!(
                    "this store was opened by process {} before a fork; a forked process \
                     must open the store again (its writer did not survive the fork)",
                    self.pid
                ),
                None,
            )),
        }
    }
}

impl Drop for NativeStore {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            if this_process() == self.pid {
                // The last handle closes the store (a flush and an fsync):
                // other Python threads run meanwhile.
                Python::with_gil(|py| gil::without_gil(py, move || drop(store)));
            } else {
                // Closing would wait for a writer thread that is not there.
                std::mem::forget(store);
            }
        }
    }
}

/// This process's id: set at import and again in a forked child (an
/// `os.register_at_fork` hook), so that the check every call makes
/// ([`NativeStore::store`]) costs a load, not a `getpid` system call.
static PROCESS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn this_process() -> u32 {
    PROCESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// `os.register_at_fork(after_in_child=...)`: the child is a new process.
#[pyfunction]
fn after_fork_in_child() {
    PROCESS.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
}

/// The next [`NativeStore::id`].
static NEXT_STORE_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[pymethods]
impl NativeStore {
    #[new]
    #[pyo3(signature = (path, durability, interval_ms, detached_timeout_ms, read_only,
                        share_directory, shard_refresh_ms))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        durability: &str,
        interval_ms: u64,
        detached_timeout_ms: u64,
        read_only: bool,
        share_directory: bool,
        shard_refresh_ms: u64,
    ) -> PyResult<Self> {
        let mut options = StoreOptions::default();
        options.log.durability = match durability {
            "fsync" => Durability::Fsync,
            "interval" => Durability::Interval(Duration::from_millis(interval_ms)),
            "none" => Durability::None,
            other => {
                return Err(to_py_err(
                    py,
                    &Error::InvalidOptions {
                        name: "durability",
                        reason: format!("{other:?} is not one of fsync, interval, none"),
                    },
                ))
            }
        };
        options.detached_timeout = Duration::from_millis(detached_timeout_ms);
        options.share_directory = share_directory;
        options.shard_refresh_interval = Duration::from_millis(shard_refresh_ms);
        let opened = gil::without_gil(py, || {
            let builder = Store::builder(&path).options(options);
            if read_only {
                builder.open_read_only()
            } else {
                builder.open()
            }
        });
        Ok(Self {
            store: Some(result(py, opened)?),
            id: NEXT_STORE_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            pid: this_process(),
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        // `record_async` calls made before the close are recorded by it.
        completion::send_staged(self.id);
        let r = gil::without_gil(py, || store.close());
        result(py, r)
    }

    fn dir(&self, py: Python<'_>) -> PyResult<PathBuf> {
        Ok(self.store(py)?.dir().to_path_buf())
    }

    fn shard(&self, py: Python<'_>) -> PyResult<u32> {
        Ok(self.store(py)?.shard())
    }

    fn refresh(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || store.refresh());
        result(py, r)
    }

    #[pyo3(signature = (tenant_id, rule_id, action, run_id, details, at_us))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        tenant_id: &Bound<'_, PyAny>,
        rule_id: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        run_id: Option<&Bound<'_, PyAny>>,
        details: Option<&Bound<'_, PyAny>>,
        at_us: Option<i64>,
    ) -> PyResult<u64> {
        let event = convert::event(py, tenant_id, rule_id, action, run_id, details, at_us)?;
        let store = self.store(py)?;
        let r = gil::without_gil(py, || store.record_blocking(event));
        result(py, r)
    }

    /// Returns an asyncio future of `completer`'s loop, settled with the
    /// offset once the event is durable. Bad input raises here, at once.
    #[pyo3(signature = (completer, tenant_id, rule_id, action, run_id, details, at_us))]
    #[allow(clippy::too_many_arguments)]
    fn record_async(
        &self,
        py: Python<'_>,
        completer: PyRef<'_, Completer>,
        tenant_id: &Bound<'_, PyAny>,
        rule_id: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        run_id: Option<&Bound<'_, PyAny>>,
        details: Option<&Bound<'_, PyAny>>,
        at_us: Option<i64>,
    ) -> PyResult<PyObject> {
        let event = convert::event(py, tenant_id, rule_id, action, run_id, details, at_us)?;
        completer.stage(py, self.id, self.store(py)?, event)
    }

    /// Fail-safe: never raises for anything the store does; returns within
    /// the store's detached timeout. Returns why the input was refused, or
    /// `None` when the event went to the store (which counts and logs its
    /// own drops).
    #[pyo3(signature = (tenant_id, rule_id, action, run_id, details, at_us))]
    #[allow(clippy::too_many_arguments)]
    fn record_detached(
        &self,
        py: Python<'_>,
        tenant_id: &Bound<'_, PyAny>,
        rule_id: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        run_id: Option<&Bound<'_, PyAny>>,
        details: Option<&Bound<'_, PyAny>>,
        at_us: Option<i64>,
    ) -> PyResult<Option<String>> {
        let refused = |e: PyErr| -> PyResult<Option<String>> {
            // Fail-safe is for the host's data, not for the host's own
            // interrupts: those go on up, wherever they were raised.
            if e.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
                || e.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
            {
                return Err(e);
            }
            Ok(Some(e.to_string()))
        };
        let store = match self.store(py) {
            Ok(store) => store,
            Err(e) => return refused(e),
        };
        match convert::event(py, tenant_id, rule_id, action, run_id, details, at_us) {
            Ok(event) => {
                gil::without_gil(py, || store.record_detached(event));
                Ok(None)
            }
            // Input that never makes an event never reaches the store, which
            // would count and log it: the Python side does both.
            Err(e) => refused(e),
        }
    }

    fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let store = self.store(py)?;
        completion::send_staged(self.id);
        let r = gil::without_gil(py, || store.flush_blocking());
        result(py, r)
    }

    fn flush_async(&self, py: Python<'_>, completer: PyRef<'_, Completer>) -> PyResult<PyObject> {
        let store = self.store(py)?.clone();
        completion::send_staged(self.id);
        completer.start(
            py,
            Box::pin(async move { store.flush().await.map(|()| Outcome::Done) }),
        )
    }

    fn begin(&self, py: Python<'_>) -> PyResult<NativeBatch> {
        Ok(NativeBatch {
            batch: Mutex::new(Some(self.store(py)?.begin())),
            pid: self.pid,
        })
    }

    /// The tree head of the store's log, or of shard `shard`, as its JSON
    /// (docs/AUDIT.md).
    #[pyo3(signature = (shard=None))]
    fn head_json(&self, py: Python<'_>, shard: Option<u32>) -> PyResult<String> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || match shard {
            None => store.head(),
            Some(shard) => store.shard_head(shard),
        });
        let head = result(py, r)?;
        Ok(enforcelog::audit::head::to_json(&head, None))
    }

    /// How many records a head would cover now, without computing it.
    #[pyo3(signature = (shard=None))]
    fn head_size(&self, py: Python<'_>, shard: Option<u32>) -> PyResult<u64> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || match shard {
            None => store.head_size(),
            Some(shard) => store.shard_head_size(shard),
        });
        result(py, r)
    }

    /// The head of every shard, as the JSON of each.
    fn heads_json(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || store.heads());
        Ok(result(py, r)?
            .iter()
            .map(|h| enforcelog::audit::head::to_json(h, None))
            .collect())
    }

    /// An inclusion proof, as its JSON.
    #[pyo3(signature = (offset, tree_size, shard=None))]
    fn prove_inclusion_json(
        &self,
        py: Python<'_>,
        offset: u64,
        tree_size: u64,
        shard: Option<u32>,
    ) -> PyResult<String> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || match shard {
            None => store.prove_inclusion(offset, tree_size),
            Some(shard) => store.prove_inclusion_in_shard(shard, offset, tree_size),
        });
        Ok(result(py, r)?.to_json())
    }

    /// A consistency proof, as its JSON.
    #[pyo3(signature = (old_size, new_size, shard=None))]
    fn prove_consistency_json(
        &self,
        py: Python<'_>,
        old_size: u64,
        new_size: u64,
        shard: Option<u32>,
    ) -> PyResult<String> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || match shard {
            None => store.prove_consistency(old_size, new_size),
            Some(shard) => store.prove_consistency_in_shard(shard, old_size, new_size),
        });
        Ok(result(py, r)?.to_json())
    }

    #[pyo3(signature = (tenant_id, rule_id, as_of_us=None))]
    fn stats<'py>(
        &self,
        py: Python<'py>,
        tenant_id: &str,
        rule_id: &str,
        as_of_us: Option<i64>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store(py)?;
        let r = gil::without_gil(py, || store.stats(tenant_id, rule_id, as_of_us));
        let s = result(py, r)?;
        let d = PyDict::new(py);
        d.set_item("tenant_id", &s.tenant_id)?;
        d.set_item("rule_id", &s.rule_id)?;
        d.set_item("as_of_us", s.as_of_us)?;
        d.set_item("trigger_count", s.trigger_count)?;
        let windows = PyDict::new(py);
        for (window, count) in &s.window_counts {
            windows.set_item(window.as_secs(), *count)?;
        }
        d.set_item("window_counts", windows)?;
        d.set_item("last_triggered_at_us", s.last_triggered_at_us)?;
        d.set_item("total_count", s.total_count)?;
        let by_action = PyDict::new(py);
        for (action, count) in Action::ALL.iter().zip(s.by_action) {
            by_action.set_item(action.as_str(), count)?;
        }
        d.set_item("by_action", by_action)?;
        d.set_item("offset", s.offset)?;
        d.set_item("missing_at_least", s.missing_at_least)?;
        d.set_item("gap_in_window", s.gap_in_window)?;
        Ok(d)
    }

    #[pyo3(signature = (tenant_id, rule_id, action, run_id, since_us, until_us, from_offset, limit,
                        from_shard=None))]
    #[allow(clippy::too_many_arguments)]
    fn query<'py>(
        &self,
        py: Python<'py>,
        tenant_id: Option<String>,
        rule_id: Option<String>,
        action: Option<&str>,
        run_id: Option<String>,
        since_us: Option<i64>,
        until_us: Option<i64>,
        from_offset: Option<u64>,
        limit: Option<usize>,
        from_shard: Option<u32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let mut q = match tenant_id {
            Some(t) => Query::tenant(t),
            None => Query::all_tenants(),
        };
        if let Some(r) = rule_id {
            q = q.rule(r);
        }
        if let Some(a) = action {
            let a = result(py, a.parse::<Action>().map_err(Error::from))?;
            q = q.action(a);
        }
        if let Some(r) = run_id {
            q = q.run_id(r);
        }
        if let Some(s) = since_us {
            q = q.since_us(s);
        }
        if let Some(u) = until_us {
            q = q.until_us(u);
        }
        if let Some(o) = from_offset {
            q = q.from_offset(o);
        }
        if let Some(l) = limit {
            q = q.limit(l);
        }
        if let Some(shard) = from_shard {
            q = q.from_shard(shard);
        }
        let store = self.store(py)?;
        let r = gil::without_gil(py, || store.query(&q));
        let page = result(py, r)?;
        let events = PyList::empty(py);
        for (e, shard) in page.events.iter().zip(&page.shards) {
            let d = PyDict::new(py);
            d.set_item("offset", e.offset)?;
            d.set_item("shard", shard)?;
            d.set_item("tenant_id", &e.tenant_id)?;
            d.set_item("rule_id", &e.rule_id)?;
            d.set_item("action", e.action.as_str())?;
            d.set_item("run_id", &e.run_id)?;
            let details = e
                .details
                .as_ref()
                .map(|m| serde_json::to_string(m).unwrap_or_default());
            d.set_item("details_json", details)?;
            d.set_item("enforced_at_us", e.enforced_at_us)?;
            events.append(d)?;
        }
        let out = PyDict::new(py);
        out.set_item("events", events)?;
        out.set_item("next_offset", page.next_offset)?;
        out.set_item("next_shard", page.next_shard)?;
        out.set_item("undecodable", page.undecodable)?;
        out.set_item("lost", page.lost)?;
        Ok(out)
    }

    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let store = self.store(py)?;
        // Takes the projections' lock: never with the GIL held.
        let m = gil::without_gil(py, || store.metrics());
        let d = PyDict::new(py);
        for (name, value) in [
            ("recorded", m.recorded),
            ("dropped", m.dropped),
            ("gap_markers", m.gap_markers),
            ("dropped_pending_gap", m.dropped_pending_gap),
            ("fsyncs", m.fsyncs),
            ("recoveries", m.recoveries),
            ("stats_replays", m.stats_replays),
            ("tree_passes", m.tree_passes),
            ("undecodable_entries", m.undecodable_entries),
            ("undecodable_read", m.undecodable_read),
            ("append_p50_us", m.append_p50_us),
            ("append_p90_us", m.append_p90_us),
            ("append_p99_us", m.append_p99_us),
            ("append_p999_us", m.append_p999_us),
            ("append_max_us", m.append_max_us),
        ] {
            d.set_item(name, value)?;
        }
        Ok(d)
    }
}

/// The native batch handle. Use `store.begin()`.
#[pyclass(module = "enforcelog._enforcelog", frozen)]
struct NativeBatch {
    /// `None` once committed or discarded.
    batch: Mutex<Option<EventBatch>>,
    /// The process whose store it belongs to: see [`NativeStore::pid`].
    pid: u32,
}

impl NativeBatch {
    fn take(&self, py: Python<'_>) -> PyResult<EventBatch> {
        self.check_process(py)?;
        let taken = self.batch.lock().unwrap_or_else(|e| e.into_inner()).take();
        taken.ok_or_else(|| batch_done(py))
    }

    fn check_process(&self, py: Python<'_>) -> PyResult<()> {
        if this_process() == self.pid {
            return Ok(());
        }
        Err(py_error(
            py,
            "ClosedError",
            format!(
                "this batch belongs to a store opened by process {} before a fork; a forked \
                 process must open the store again",
                self.pid
            ),
            None,
        ))
    }
}

impl Drop for NativeBatch {
    fn drop(&mut self) {
        let batch = self
            .batch
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if this_process() != self.pid {
            // It may hold the last handle of its store, whose close would
            // wait for a writer thread the fork did not copy.
            std::mem::forget(batch);
        }
    }
}

#[pymethods]
impl NativeBatch {
    #[pyo3(signature = (tenant_id, rule_id, action, run_id, details, at_us))]
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        py: Python<'_>,
        tenant_id: &Bound<'_, PyAny>,
        rule_id: &Bound<'_, PyAny>,
        action: &Bound<'_, PyAny>,
        run_id: Option<&Bound<'_, PyAny>>,
        details: Option<&Bound<'_, PyAny>>,
        at_us: Option<i64>,
    ) -> PyResult<()> {
        self.check_process(py)?;
        let event = convert::event(py, tenant_id, rule_id, action, run_id, details, at_us)?;
        let mut guard = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        let batch = guard.as_mut().ok_or_else(|| batch_done(py))?;
        result(py, batch.record(event).map_err(Error::from))
    }

    fn __len__(&self) -> usize {
        let guard = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map_or(0, |b| b.len())
    }

    fn is_open(&self) -> bool {
        self.batch
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Drops the staged events.
    fn discard(&self) {
        self.batch.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn commit(&self, py: Python<'_>) -> PyResult<(u64, u64)> {
        let batch = self.take(py)?;
        let r = gil::without_gil(py, || batch.commit_blocking());
        result(py, r).map(|range| (range.start, range.end))
    }

    fn commit_async(&self, py: Python<'_>, completer: PyRef<'_, Completer>) -> PyResult<PyObject> {
        let batch = self.take(py)?;
        completer.start(
            py,
            Box::pin(async move {
                batch
                    .commit()
                    .await
                    .map(|range| Outcome::Range(range.start, range.end))
            }),
        )
    }
}

#[pymodule]
fn _enforcelog(m: &Bound<'_, PyModule>) -> PyResult<()> {
    logging::install();
    after_fork_in_child();
    let os = m.py().import("os")?;
    if os.hasattr("register_at_fork")? {
        let hook = wrap_pyfunction!(after_fork_in_child, m)?;
        let kwargs = pyo3::types::PyDict::new(m.py());
        kwargs.set_item("after_in_child", hook)?;
        os.call_method("register_at_fork", (), Some(&kwargs))?;
    }
    // Before the interpreter begins to finalise: see `gil`.
    let at_exit = wrap_pyfunction!(gil::at_exit, m)?;
    m.py()
        .import("atexit")?
        .call_method1("register", (at_exit,))?;
    m.add_class::<NativeStore>()?;
    m.add_class::<NativeBatch>()?;
    m.add_class::<Completer>()?;
    m.add_function(wrap_pyfunction!(baseline::rust_producers, m)?)?;
    Ok(())
}
