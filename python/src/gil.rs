//! Letting go of the GIL safely, up to the interpreter's exit.
//!
//! Every call that can wait runs without the GIL ([`without_gil`]). When
//! it returns, its thread takes the GIL back; once the interpreter has begun
//! to finalise, CPython (before 3.14) ends a thread that takes the GIL with
//! `pthread_exit`, whose unwinding a Rust frame cannot pass: the process
//! aborts ("FATAL: exception not rethrown"). Only daemon threads run then
//! (the interpreter joins the others first), and a host's daemon thread
//! calling the fail-safe `record_detached` as the host exits is exactly the
//! halt path's case.
//!
//! So an `atexit` callback ([`at_exit`], registered at import; `atexit` runs
//! before finalisation begins) marks the exit and then, without the GIL,
//! waits until no thread is inside [`without_gil`] (bounded by
//! [`EXIT_WAIT`]): each one either takes the GIL back while that is still
//! safe (the callback has let it go) or, finding the mark when its work is
//! done, parks for good instead of taking it. A thread that calls in after
//! the mark lets go of the GIL and parks at once. Parked threads are daemon
//! threads, which the process's exit ends anyway. The thread that runs the
//! exit goes on as usual (it finalises, and may close stores).
//!
//! What this does not cover: Python code that the native side itself runs
//! (a `details` value's encoder fallback, an enum's `value`) can also take
//! the GIL back mid-call, if the interpreter's switch interval falls inside
//! it just as a daemon thread is caught by the exit.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long the exit waits for calls under way (an fsync, a full queue).
const EXIT_WAIT: Duration = Duration::from_secs(5);

static EXITING: AtomicBool = AtomicBool::new(false);
static EXIT_THREAD: OnceLock<ThreadId> = OnceLock::new();
/// Threads inside [`without_gil`], from entry until they hold the GIL again.
/// A counter, not a lock: every blocking call passes here, and only the
/// exit waits on it (polling).
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

fn exiting_elsewhere() -> bool {
    EXITING.load(Ordering::SeqCst) && EXIT_THREAD.get() != Some(&std::thread::current().id())
}

fn leave() {
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
}

fn park_for_good() -> ! {
    loop {
        std::thread::park();
    }
}

/// `f` without the GIL, then the GIL back, unless the interpreter is
/// exiting (see the module docs).
pub(crate) fn without_gil<T, F>(py: Python<'_>, f: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    if exiting_elsewhere() {
        py.allow_threads(|| park_for_good())
    }
    // With the GIL, as `at_exit` sets the mark: no thread counts itself in
    // after the exit looked.
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let out = py.allow_threads(|| {
        let out = f();
        if exiting_elsewhere() {
            leave();
            park_for_good();
        }
        out
    });
    leave();
    out
}

/// Registered with `atexit` at import: see the module docs.
#[pyfunction]
pub(crate) fn at_exit(py: Python<'_>) {
    let _ = EXIT_THREAD.set(std::thread::current().id());
    EXITING.store(true, Ordering::SeqCst);
    py.allow_threads(|| {
        let started = Instant::now();
        while ACTIVE.load(Ordering::SeqCst) > 0 && started.elapsed() < EXIT_WAIT {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    crate::logging::stop(py);
}
