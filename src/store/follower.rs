//! The follower thread: keeps the projections current as entries commit,
//! and checkpoints them from time to time.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::warn;

use super::Inner;
use crate::error::{Error, Result};
use crate::log::Log;

/// Longest wait between two looks at the log (it also notices a reopened
/// log this way).
const POLL: Duration = Duration::from_millis(100);

pub(super) fn start(inner: &Arc<Inner>) -> Result<()> {
    let weak = Arc::downgrade(inner);
    let stop = inner.follower_stop.1.clone();
    let thread = std::thread::Builder::new()
        .name("enforcelog-projections".into())
        .spawn(move || follow(weak, stop))
        .map_err(|e| Error::io("spawn projection thread for", inner.dir.clone(), e))?;
    *inner.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(())
}

/// Stops the follower and waits for it.
pub(super) fn stop(inner: &Inner) {
    inner.stopping.store(true, Ordering::Relaxed);
    let thread = inner
        .follower
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(thread) = thread {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
}

fn follow(weak: Weak<Inner>, stop: flume::Receiver<()>) {
    let mut watched: Option<(Log, flume::Receiver<()>)> = None;
    loop {
        let wakeup = {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let log = inner.log();
            let wakeup = match &watched {
                Some((seen, rx)) if seen.same_as(&log) => rx.clone(),
                _ => {
                    let rx = log.watch();
                    watched = Some((log.clone(), rx.clone()));
                    rx
                }
            };
            // A failure is kept in the host and reported by queries.
            let _ = inner.projections.catch_up(&log);
            let o = &inner.options;
            if !inner.read_only
                && inner
                    .projections
                    .checkpoint_due(o.checkpoint_every_entries, o.checkpoint_interval)
            {
                if let Err(e) = inner
                    .projections
                    .checkpoint(&*inner.storage, &inner.dir, &log)
                {
                    warn!(error = %e, "could not checkpoint projections; will retry");
                }
            }
            wakeup
        };
        // Holds no strong reference while it waits, so dropping the store
        // is never delayed by this thread.
        // A disconnected wake-up means the log's writer stopped (the
        // supervisor may reopen it): then only the stop signal or the poll
        // interval ends the wait.
        let selector = flume::Selector::new().recv(&stop, |_| ());
        let selector = if wakeup.is_disconnected() {
            selector
        } else {
            selector.recv(&wakeup, |_| ())
        };
        let _ = selector.wait_timeout(POLL);
    }
}
