//! Rust `tracing` events to Python's `logging` (logger `enforcelog`).
//!
//! The store logs from its own threads (the writer, the supervisor) and a
//! thread that logs must never wait for the GIL: a Python thread holding it
//! may be waiting for that very writer (dropping the last `Store` handle, for
//! one). So the subscriber only formats the event and hands it to a bounded
//! queue without blocking; one forwarding thread takes the GIL and calls
//! `logging`. When the queue is full, records are counted and dropped, and
//! the count is logged with the next record that gets through.
//!
//! Invariant: the forwarding thread never takes the GIL once the interpreter
//! has begun to exit. A thread that asks for the GIL during finalisation is
//! ended by CPython (`pthread_exit`), which a Rust thread cannot survive
//! (the process aborts). So it takes the GIL only under [`FORWARDING`], and
//! an `atexit` callback ([`stop`], through `gil::at_exit`) waits for any forwarding under way and
//! turns it off; records logged after that (stores closed by the
//! interpreter's own teardown) are dropped.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Records waiting for the forwarding thread, at most.
const QUEUE_MAX_RECORDS: usize = 4096;

/// Python `logging` levels.
fn python_level(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 40,
        Level::WARN => 30,
        Level::INFO => 20,
        Level::DEBUG | Level::TRACE => 10,
    }
}

struct LogRecord {
    level: u32,
    target: String,
    message: String,
}

/// Forwards INFO and above (the store logs little at INFO: opens,
/// recoveries, drops).
struct PythonLogging {
    queue: SyncSender<LogRecord>,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for PythonLogging {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::INFO
    }
    fn new_span(&self, _span: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _span: &Id, _values: &Record<'_>) {}
    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message::default();
        event.record(&mut message);
        let lost = self.dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = write!(
                message.0,
                " ({lost} earlier log records dropped: queue full)"
            );
        }
        let record = LogRecord {
            level: python_level(event.metadata().level()),
            target: event.metadata().target().to_string(),
            message: message.0,
        };
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1 + lost, Ordering::Relaxed);
            }
        }
    }
    fn enter(&self, _span: &Id) {}
    fn exit(&self, _span: &Id) {}
}

/// Whether records still go to Python; held while one does.
static FORWARDING: Mutex<bool> = Mutex::new(true);

/// Stops forwarding for good, after the record under way (if any). Called
/// at exit ([`crate::gil::at_exit`]), with the GIL, which it lets go while
/// it waits: the record under way may be waiting for it.
pub(crate) fn stop(py: Python<'_>) {
    py.allow_threads(|| {
        *FORWARDING.lock().unwrap_or_else(|e| e.into_inner()) = false;
    });
}

/// Installs the forwarder as the process's `tracing` subscriber, unless
/// another one is installed already (a host embedding Rust of its own).
pub(crate) fn install() {
    let (queue, receiver) = sync_channel::<LogRecord>(QUEUE_MAX_RECORDS);
    let subscriber = PythonLogging {
        queue,
        dropped: AtomicU64::new(0),
    };
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("enforcelog-logging".into())
        .spawn(move || {
            for record in receiver {
                let forwarding = FORWARDING.lock().unwrap_or_else(|e| e.into_inner());
                if !*forwarding {
                    continue;
                }
                Python::with_gil(|py| {
                    let logged = py.import("logging").and_then(|logging| {
                        let logger = logging.call_method1("getLogger", ("enforcelog",))?;
                        logger.call_method1(
                            "log",
                            (record.level, "%s: %s", &record.target, &record.message),
                        )
                    });
                    // Logging failed (interpreter shutting down, a broken
                    // handler): nowhere left to report it.
                    drop(logged);
                });
                drop(forwarding);
            }
        });
    drop(spawned);
}
