//! Completing awaitables on their event loop without taking the GIL.
//!
//! An awaitable call's future (the store's own async API) is driven by one
//! "await" thread running a current-thread tokio runtime. If that thread
//! took the GIL to complete the asyncio future, it would queue for the GIL
//! behind the busy loop thread (up to the 5 ms switch interval, per call).
//! Instead it pushes the outcome onto the loop's [`Completer`] and, when the
//! queue was empty, writes one byte to a socket the loop watches
//! (`loop.add_reader`); the loop, which holds the GIL anyway, drains every
//! outcome at once and settles the futures (python/enforcelog/_store.py).
//!
//! No lost wake-up: the drain reads the socket empty *before* it takes the
//! queue, and a push onto an empty queue always writes a byte, so an outcome
//! pushed after a take finds the queue empty and wakes the loop again.

use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::to_py_err;

/// What a finished call hands back.
pub(crate) enum Outcome {
    Offset(u64),
    Range(u64, u64),
    Done,
}

type Finished = (u64, enforcelog::Result<Outcome>);

struct Shared {
    finished: Mutex<Vec<Finished>>,
    wake: UnixStream,
}

impl Shared {
    fn push(&self, token: u64, outcome: enforcelog::Result<Outcome>) {
        let was_empty = {
            let mut finished = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            finished.push((token, outcome));
            finished.len() == 1
        };
        if was_empty {
            // WouldBlock: the socket is full of wake-ups already.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// One event loop's queue of finished calls, keyed by the loop's tokens.
#[pyclass(module = "enforcelog._enforcelog", frozen)]
pub(crate) struct Completer {
    shared: Arc<Shared>,
    watched: UnixStream,
}

/// The one thread that drives every awaitable call's future: the store's
/// futures need no particular runtime (they wait on channels), so a
/// current-thread runtime polls them all, where a thread per call in flight
/// would cost a context switch per call.
fn runtime() -> PyResult<&'static tokio::runtime::Handle> {
    static HANDLE: OnceLock<Result<tokio::runtime::Handle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .map_err(|e| e.to_string())?;
            let handle = rt.handle().clone();
            std::thread::Builder::new()
                .name("enforcelog-await".into())
                .spawn(move || rt.block_on(std::future::pending::<()>()))
                .map_err(|e| e.to_string())?;
            Ok(handle)
        })
        .as_ref()
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(format!("cannot start a thread: {e}")))
}

impl Completer {
    /// Drives `work` on the await thread; its outcome comes back under `token`.
    pub(crate) fn submit_async<F>(&self, token: u64, work: F) -> PyResult<()>
    where
        F: Future<Output = enforcelog::Result<Outcome>> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        runtime()?.spawn(async move {
            let outcome = work.await;
            shared.push(token, outcome);
        });
        Ok(())
    }
}

#[pymethods]
impl Completer {
    #[new]
    fn new() -> PyResult<Self> {
        let (watched, wake) = UnixStream::pair()?;
        watched.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        Ok(Self {
            shared: Arc::new(Shared {
                finished: Mutex::new(Vec::new()),
                wake,
            }),
            watched,
        })
    }

    /// The file descriptor the loop watches for readability.
    fn fileno(&self) -> i32 {
        self.watched.as_raw_fd()
    }

    /// Every finished call: `(token, value, exception)` with one of the two None.
    fn take(&self, py: Python<'_>) -> PyResult<Vec<(u64, PyObject, PyObject)>> {
        let mut buf = [0u8; 256];
        while let Ok(n) = (&self.watched).read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let finished = std::mem::take(
            &mut *self
                .shared
                .finished
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        finished
            .into_iter()
            .map(|(token, outcome)| {
                Ok(match outcome {
                    Ok(Outcome::Offset(o)) => (token, o.into_py_any(py)?, py.None()),
                    Ok(Outcome::Range(a, b)) => (token, (a, b).into_py_any(py)?, py.None()),
                    Ok(Outcome::Done) => (token, py.None(), py.None()),
                    Err(e) => (
                        token,
                        py.None(),
                        to_py_err(py, &e).into_value(py).into_any(),
                    ),
                })
            })
            .collect()
    }
}
