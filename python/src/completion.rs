//! Awaitable calls, driven on their event loop's own thread.
//!
//! An awaitable call (`record_async`, `commit_async`, `flush_async`) is the
//! store's own future, which needs no runtime: it waits on channels. It is
//! polled on the loop's thread: first when it is sent to the writer, then
//! each time its waker fires. Wakers fire on the store's threads; all they
//! do is push the call's token onto the shared `woken` list and, when that
//! list was empty, write one byte to a socket the loop watches
//! (`loop.add_reader`). The loop, which holds the GIL anyway, then polls
//! every woken call and settles the asyncio futures of the finished ones
//! ([`Completer::drain`]).
//!
//! `record_async` calls are not sent at once: the events of every such call
//! a loop iteration makes on one store are staged in one [`EventBatch`] and
//! sent by the next `drain` as one append ([`Completer::stage`]), each
//! caller getting its own offset. Sent one by one, the first of them would
//! find the writer idle and be committed alone, with an fsync of its own,
//! while the rest queued behind it: with many tasks that halves the
//! throughput. The events of one such batch are committed atomically
//! together; each was validated on its own when its call was made.
//!
//! So no store thread ever waits for the GIL (it would queue behind the busy
//! loop thread for up to the 5 ms switch interval), and no thread sits
//! between the loop and the writer: a call costs no thread hop of its own.
//!
//! Invariants:
//! - No lost wake-up: `drain` reads the socket empty *before* it takes the
//!   woken list, and a push onto an empty list always writes a byte, so a
//!   token pushed after a take finds the list empty and wakes the loop again.
//! - Staged events are sent before anything that must see them: the next
//!   `drain`, any other awaitable call of the loop ([`Completer::start`]),
//!   and the store's `flush` and `close` from any thread ([`send_staged`]).
//!   So a call made before `close()` is recorded, and a flush covers every
//!   `record_async` call made before it.
//! - A call stays in `calls` until its future is ready, even if its asyncio
//!   future was cancelled: cancelling an await never un-records an event,
//!   and the work is polled to its end like any other.
//! - `calls` and `fresh` are touched with the GIL held (the loop's thread,
//!   or `send_staged` from a store call), so their mutexes are never
//!   contended; they only make the state `Sync`.
//! - Dropping a completer (its loop closed or collected) sends what it has
//!   staged and drops its calls, which breaks the `Arc` cycle between a
//!   call's waker and the state that holds the call.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use enforcelog::{Error, Event, EventBatch, Store};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use pyo3::{PyTraverseError, PyVisit};

use crate::to_py_err;

/// What a finished call hands back.
#[derive(Clone, Copy)]
pub(crate) enum Outcome {
    Offset(u64),
    Range(u64, u64),
    Done,
}

/// A call's work: one of the store's futures.
pub(crate) type Work = Pin<Box<dyn Future<Output = enforcelog::Result<Outcome>> + Send>>;

/// Who hears of a call's outcome.
enum Target {
    /// One asyncio future, settled with the outcome.
    One(Py<PyAny>),
    /// The futures of the staged events of one batch, in order: the i-th
    /// is settled with offset `start + i`.
    Each(Vec<Py<PyAny>>),
}

/// A call in flight: its work, whom to tell, its waker.
struct Call {
    work: Work,
    target: Target,
    waker: Waker,
}

/// `record_async` events staged on one store, not yet sent to its writer.
struct Fresh {
    /// The [`crate::NativeStore`]'s id: a `Store` has no identity to compare.
    store_id: u64,
    batch: EventBatch,
    futures: Vec<Py<PyAny>>,
}

/// The most events one staged batch holds: 256 events of the largest size
/// the store accepts stay far under the largest batch a default segment
/// takes (64 MiB), and a loop rarely has more calls in one iteration.
const FRESH_MAX_EVENTS: usize = 256;

/// Pushed onto the woken list to have the next `drain` send staged events.
const KICK: u64 = u64::MAX;

/// One loop's state, shared with the wakers (and, weakly, the registry).
struct Shared {
    woken: Mutex<Vec<u64>>,
    wake: UnixStream,
    calls: Mutex<HashMap<u64, Call>>,
    /// Calls that finished when first polled, waiting to be settled.
    ready: Mutex<Vec<(Target, enforcelog::Result<Outcome>)>>,
    fresh: Mutex<Vec<Fresh>>,
    next_token: AtomicU64,
}

impl Shared {
    fn push(&self, token: u64) {
        let was_empty = {
            let mut woken = self.woken.lock().unwrap_or_else(|e| e.into_inner());
            woken.push(token);
            woken.len() == 1
        };
        if was_empty {
            // WouldBlock: the socket is full of wake-ups already.
            let _ = (&self.wake).write(&[1]);
        }
    }

    /// Registers `work` under a new token and polls it once, which sends it
    /// to the writer. Finished at once, it is woken like any other call, so
    /// only a `drain` ever settles a future.
    fn send(self: &Arc<Self>, work: Work, target: Target) {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let waker = Waker::from(Arc::new(TokenWaker {
            shared: Arc::clone(self),
            token,
        }));
        let mut call = Call {
            work,
            target,
            waker,
        };
        match poll(&mut call) {
            Poll::Ready(outcome) => {
                // Settled by the next drain, on the loop's thread: this may
                // be another thread (a `close` or `flush` of the store).
                self.ready
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((call.target, outcome));
                self.push(token);
            }
            Poll::Pending => {
                self.calls
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(token, call);
            }
        }
    }

    /// Sends the staged batches that `take` picks.
    fn send_fresh(self: &Arc<Self>, take: impl Fn(&Fresh) -> bool) {
        let taken: Vec<Fresh> = {
            let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
            let (taken, kept) = std::mem::take(&mut *fresh).into_iter().partition(&take);
            *fresh = kept;
            taken
        };
        for f in taken {
            let batch = f.batch;
            let work: Work = Box::pin(async move {
                batch
                    .commit()
                    .await
                    .map(|range| Outcome::Range(range.start, range.end))
            });
            self.send(work, Target::Each(f.futures));
        }
    }
}

/// Every live loop's state, so that a store's `flush` and `close` can send
/// what any loop has staged for it.
static REGISTRY: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Sends every batch staged for the store `store_id`, on every loop. Called
/// (with the GIL) before the store's `flush` and `close`, so that they
/// cover every `record_async` call made before them.
pub(crate) fn send_staged(store_id: u64) {
    let live: Vec<Arc<Shared>> = {
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        registry.retain(|w| w.strong_count() > 0);
        registry.iter().filter_map(Weak::upgrade).collect()
    };
    for shared in live {
        shared.send_fresh(|f| f.store_id == store_id);
    }
}

/// Wakes one call: its token goes onto the loop's woken list.
struct TokenWaker {
    shared: Arc<Shared>,
    token: u64,
}

impl Wake for TokenWaker {
    fn wake(self: Arc<Self>) {
        self.shared.push(self.token);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.push(self.token);
    }
}

fn poll(call: &mut Call) -> Poll<enforcelog::Result<Outcome>> {
    let mut cx = Context::from_waker(&call.waker);
    call.work.as_mut().poll(&mut cx)
}

/// One event loop's awaitable calls. Made by `enforcelog._store` once per
/// loop, which registers [`Completer::drain`] with `loop.add_reader`: that
/// reader is the only strong reference to it, so it goes when the loop
/// closes.
#[pyclass(module = "enforcelog._enforcelog", frozen, weakref)]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    watched: UnixStream,
    /// The loop's `create_future`, looked up once.
    create_future: Py<PyAny>,
}

impl Completer {
    /// Sends `work` to the writer now, after everything this loop has
    /// staged (so a `flush_async` covers the `record_async` calls before
    /// it), and returns the asyncio future it will settle.
    pub(crate) fn start(&self, py: Python<'_>, work: Work) -> PyResult<Py<PyAny>> {
        let future = self.create_future.call0(py)?;
        self.shared.send_fresh(|_| true);
        self.shared.send(work, Target::One(future.clone_ref(py)));
        Ok(future)
    }

    /// Stages `event` for `store` and returns the asyncio future that the
    /// next `drain`'s commit settles with its offset. A refused event
    /// raises here and stages nothing.
    pub(crate) fn stage(
        &self,
        py: Python<'_>,
        store_id: u64,
        store: &Store,
        event: Event,
    ) -> PyResult<Py<PyAny>> {
        // Made first: once the event is in the batch, nothing may fail.
        let future = self.create_future.call0(py)?;
        let mut fresh = self.shared.fresh.lock().unwrap_or_else(|e| e.into_inner());
        let was_empty = fresh.is_empty();
        let slot = match fresh
            .iter()
            .position(|f| f.store_id == store_id && f.futures.len() < FRESH_MAX_EVENTS)
        {
            Some(i) => i,
            None => {
                fresh.push(Fresh {
                    store_id,
                    batch: store.begin(),
                    futures: Vec::new(),
                });
                fresh.len() - 1
            }
        };
        if let Err(e) = fresh[slot].batch.record(event) {
            if fresh[slot].futures.is_empty() {
                fresh.remove(slot);
            }
            return Err(to_py_err(py, &Error::from(e)));
        }
        fresh[slot].futures.push(future.clone_ref(py));
        drop(fresh);
        if was_empty {
            self.shared.push(KICK);
        }
        Ok(future)
    }
}

impl Drop for Completer {
    /// Sends what is still staged (its loop never drained again), so those
    /// events are committed, ordered before any later `close` of their
    /// store; nobody is left to hear how. Then drops the calls in flight:
    /// their requests are with the writer already.
    fn drop(&mut self) {
        self.shared.send_fresh(|_| true);
        let calls =
            std::mem::take(&mut *self.shared.calls.lock().unwrap_or_else(|e| e.into_inner()));
        let ready =
            std::mem::take(&mut *self.shared.ready.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, outcome) in ready {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "enforcelog: a closed event loop's call failed");
            }
        }
        drop(calls);
    }
}

/// Tells `target` of `outcome`.
fn settle(py: Python<'_>, target: Target, outcome: enforcelog::Result<Outcome>) -> PyResult<()> {
    match target {
        Target::One(future) => settle_one(py, &future, outcome.as_ref().map(|o| *o)),
        Target::Each(futures) => {
            let mut first_error = None;
            for (i, future) in futures.iter().enumerate() {
                let one = match &outcome {
                    Ok(Outcome::Range(start, _)) => Ok(Outcome::Offset(start + i as u64)),
                    Ok(_) => unreachable!("a batch commit ends in a range"),
                    // Each caller gets an exception object of its own.
                    Err(e) => Err(e),
                };
                if let Err(e) = settle_one(py, future, one) {
                    first_error.get_or_insert(e);
                }
            }
            first_error.map_or(Ok(()), Err)
        }
    }
}

/// Completes `future` with `outcome`, unless it was cancelled meanwhile.
fn settle_one(
    py: Python<'_>,
    future: &Py<PyAny>,
    outcome: Result<Outcome, &Error>,
) -> PyResult<()> {
    let future = future.bind(py);
    let set = match outcome {
        Ok(Outcome::Offset(o)) => future.call_method1(intern!(py, "set_result"), (o,)),
        Ok(Outcome::Range(a, b)) => {
            future.call_method1(intern!(py, "set_result"), ((a, b).into_py_any(py)?,))
        }
        Ok(Outcome::Done) => future.call_method1(intern!(py, "set_result"), (py.None(),)),
        Err(e) => future.call_method1(
            intern!(py, "set_exception"),
            (to_py_err(py, e).into_value(py),),
        ),
    };
    match set {
        Ok(_) => Ok(()),
        // Cancelled meanwhile (asked only then: this runs once per call).
        Err(_) if future.call_method0(intern!(py, "done"))?.is_truthy()? => Ok(()),
        Err(e) => Err(e),
    }
}

#[pymethods]
impl Completer {
    #[new]
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (watched, wake) = UnixStream::pair()?;
        watched.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            woken: Mutex::new(Vec::new()),
            wake,
            calls: Mutex::new(HashMap::new()),
            ready: Mutex::new(Vec::new()),
            fresh: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(0),
        });
        let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        // Closed loops' entries go here too, not only at the next flush: a
        // process that runs `asyncio.run` again and again never flushes.
        registry.retain(|w| w.strong_count() > 0);
        registry.push(Arc::downgrade(&shared));
        drop(registry);
        Ok(Self {
            shared,
            watched,
            create_future: event_loop
                .getattr(intern!(event_loop.py(), "create_future"))?
                .unbind(),
        })
    }

    /// The garbage collector's view: the completer holds the loop (through
    /// `create_future`) and futures of the loop, and the loop holds the
    /// completer (its reader callback), so an unclosed loop dropped with
    /// calls in flight is a cycle only the collector can free. A lock held
    /// elsewhere only hides edges: the collector then keeps the objects.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.create_future)?;
        let visit_target = |target: &Target| -> Result<(), PyTraverseError> {
            match target {
                Target::One(future) => visit.call(future),
                Target::Each(futures) => futures.iter().try_for_each(|f| visit.call(f)),
            }
        };
        if let Ok(calls) = self.shared.calls.try_lock() {
            for call in calls.values() {
                visit_target(&call.target)?;
            }
        }
        if let Ok(ready) = self.shared.ready.try_lock() {
            for (target, _) in ready.iter() {
                visit_target(target)?;
            }
        }
        if let Ok(fresh) = self.shared.fresh.try_lock() {
            for f in fresh.iter() {
                for future in &f.futures {
                    visit.call(future)?;
                }
            }
        }
        Ok(())
    }

    /// The file descriptor the loop watches for readability.
    fn fileno(&self) -> i32 {
        self.watched.as_raw_fd()
    }

    /// Calls in flight and events staged (their asyncio futures may be
    /// done already).
    fn __len__(&self) -> usize {
        let s = &self.shared;
        let calls = s.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
        let ready = s.ready.lock().unwrap_or_else(|e| e.into_inner()).len();
        let fresh = s.fresh.lock().unwrap_or_else(|e| e.into_inner());
        calls + ready + fresh.iter().map(|f| f.futures.len()).sum::<usize>()
    }

    /// Sends what is staged, polls every woken call, and settles the futures
    /// of those that finished. The loop's reader callback.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.watched).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let shared = &self.shared;
        let woken = std::mem::take(&mut *shared.woken.lock().unwrap_or_else(|e| e.into_inner()));
        if woken.contains(&KICK) {
            shared.send_fresh(|_| true);
        }
        let mut finished =
            std::mem::take(&mut *shared.ready.lock().unwrap_or_else(|e| e.into_inner()));
        {
            let mut calls = shared.calls.lock().unwrap_or_else(|e| e.into_inner());
            for token in woken {
                // A call can be woken more than once; only the first finds it.
                let Some(call) = calls.get_mut(&token) else {
                    continue;
                };
                if let Poll::Ready(outcome) = poll(call) {
                    if let Some(call) = calls.remove(&token) {
                        finished.push((call.target, outcome));
                    }
                }
            }
        }
        // Settled outside the locks: a done callback may start another call.
        let mut first_error = None;
        for (target, outcome) in finished {
            if let Err(e) = settle(py, target, outcome) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
