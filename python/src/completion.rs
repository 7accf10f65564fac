//! Awaitable calls, driven on their event loop's own thread.
//!
//! An awaitable call (`record_async`, `commit_async`, `flush_async`) is the
//! store's own future, which needs no runtime: it waits on channels. The
//! loop thread polls it first in the `drain` after the call (that queues the
//! work with the writer; see [`Completer::start`] for why not at once), and
//! again each time its waker fires. Wakers fire on the
//! store's threads; all they do is push the call's token onto the shared
//! `woken` list and, when that list was empty, write one byte to a socket
//! the loop watches (`loop.add_reader`). The loop, which holds the GIL
//! anyway, then polls every woken call and settles the asyncio futures of
//! the finished ones ([`Completer::drain`]).
//!
//! `record_async` calls go further: the events of every such call a loop
//! iteration makes on one store are staged in one [`EventBatch`] and
//! committed by the next `drain` as one append ([`Completer::stage`]), each
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
//! - A call stays in `calls` until its future is ready, even if its asyncio
//!   future was cancelled: cancelling an await never un-records an event,
//!   and the work is polled to its end like any other.
//! - `calls` and `fresh` are touched only on the loop thread (with the
//!   GIL); their mutexes are never contended and only make the class `Sync`.
//! - A staged event is committed even if its caller's await is cancelled,
//!   and even if the loop never drains again: dropping the completer
//!   commits what is left on a thread of its own.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

struct Shared {
    woken: Mutex<Vec<u64>>,
    wake: UnixStream,
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

/// One event loop's awaitable calls. Made by `enforcelog._store` once per
/// loop, which registers [`Completer::drain`] with `loop.add_reader`: that
/// reader is the only strong reference to it, so it goes when the loop
/// closes (and commits any staged events it still holds).
#[pyclass(module = "enforcelog._enforcelog", frozen, weakref)]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    watched: UnixStream,
    /// The loop's `create_future`, looked up once.
    create_future: Py<PyAny>,
    calls: Mutex<HashMap<u64, Call>>,
    fresh: Mutex<Vec<Fresh>>,
    next_token: AtomicU64,
}

impl Completer {
    /// Registers `work` and returns the asyncio future it will settle. The
    /// work is first polled (which queues it with the writer) by the next
    /// `drain`, with the other calls of this loop iteration.
    pub(crate) fn start(&self, py: Python<'_>, work: Work) -> PyResult<Py<PyAny>> {
        let future = self.create_future.call0(py)?;
        let token = self.register(work, Target::One(future.clone_ref(py)));
        self.shared.push(token);
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
        let mut fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
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

    fn register(&self, work: Work, target: Target) -> u64 {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let waker = Waker::from(Arc::new(TokenWaker {
            shared: Arc::clone(&self.shared),
            token,
        }));
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token,
            Call {
                work,
                target,
                waker,
            },
        );
        token
    }

    /// Turns every staged batch into a call; returns their tokens.
    fn send_fresh(&self) -> Vec<u64> {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        fresh
            .into_iter()
            .map(|f| {
                let batch = f.batch;
                let work: Work = Box::pin(async move {
                    batch
                        .commit()
                        .await
                        .map(|range| Outcome::Range(range.start, range.end))
                });
                self.register(work, Target::Each(f.futures))
            })
            .collect()
    }
}

impl Drop for Completer {
    /// Staged events whose loop never drained again are committed all the
    /// same, off the thread that drops the completer (a finaliser must not
    /// wait for an fsync). Their callers' futures are gone with the loop.
    fn drop(&mut self) {
        let fresh = std::mem::take(&mut *self.fresh.lock().unwrap_or_else(|e| e.into_inner()));
        if fresh.is_empty() {
            return;
        }
        let commit = move || {
            for f in fresh {
                if let Err(e) = f.batch.commit_blocking() {
                    tracing::warn!(error = %e, "enforcelog: events of a closed event loop not recorded");
                }
            }
        };
        if std::thread::Builder::new()
            .name("enforcelog-leftover".into())
            .spawn(commit)
            .is_err()
        {
            tracing::warn!("enforcelog: cannot start a thread to record a closed loop's events");
        }
    }
}

fn poll(call: &mut Call) -> Poll<enforcelog::Result<Outcome>> {
    let mut cx = Context::from_waker(&call.waker);
    call.work.as_mut().poll(&mut cx)
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
        Ok(Self {
            shared: Arc::new(Shared {
                woken: Mutex::new(Vec::new()),
                wake,
            }),
            watched,
            create_future: event_loop
                .getattr(intern!(event_loop.py(), "create_future"))?
                .unbind(),
            calls: Mutex::new(HashMap::new()),
            fresh: Mutex::new(Vec::new()),
            next_token: AtomicU64::new(0),
        })
    }

    /// The garbage collector's view: the completer holds the loop (through
    /// `create_future`) and futures of the loop, and the loop holds the
    /// completer (its reader callback), so an unclosed loop dropped with
    /// calls in flight is a cycle only the collector can free. A lock held
    /// elsewhere only hides edges: the collector then keeps the objects.
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.create_future)?;
        if let Ok(calls) = self.calls.try_lock() {
            for call in calls.values() {
                match &call.target {
                    Target::One(future) => visit.call(future)?,
                    Target::Each(futures) => {
                        for future in futures {
                            visit.call(future)?;
                        }
                    }
                }
            }
        }
        if let Ok(fresh) = self.fresh.try_lock() {
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
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner()).len();
        let fresh = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        calls + fresh.iter().map(|f| f.futures.len()).sum::<usize>()
    }

    /// Polls every woken call; settles the futures of those that finished.
    /// The loop's reader callback.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.watched).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let mut woken =
            std::mem::take(&mut *self.shared.woken.lock().unwrap_or_else(|e| e.into_inner()));
        if woken.contains(&KICK) {
            // Polled below, back to back: the first poll sends each batch.
            woken.extend(self.send_fresh());
        }
        let mut finished = Vec::new();
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
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
        // Settled outside the lock: a done callback may start another call.
        let mut first_error = None;
        for (target, outcome) in finished {
            if let Err(e) = settle(py, target, outcome) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
