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
    let wakeups = inner.follower_wake.1.clone();
    let thread = std::thread::Builder::new()
        .name("enforcelog-projections".into())
        .spawn(move || follow(weak, wakeups))
        .map_err(|e| Error::io("spawn projection thread for", inner.dir.clone(), e))?;
    *inner.follower.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
    Ok(())
}

/// Stops the follower and waits for it.
pub(super) fn stop(inner: &Inner) {
    inner.stopping.store(true, Ordering::Relaxed);
    let _ = inner.follower_wake.0.try_send(());
    super::join_background(&inner.follower);
}

/// Waits on one channel, woken by commits of the log it watches (it
/// registers its sender with each log it follows) and by `stop`; the
/// timeout notices a log the supervisor reopened.
fn follow(weak: Weak<Inner>, wakeups: flume::Receiver<()>) {
    let mut watched: Option<Log> = None;
    loop {
        {
            let Some(inner) = weak.upgrade() else { return };
            if inner.stopping.load(Ordering::Relaxed) {
                return;
            }
            let log = inner.log();
            if !watched.as_ref().is_some_and(|seen| seen.same_as(&log)) {
                log.watch_with(inner.follower_wake.0.clone());
                watched = Some(log.clone());
            }
            // A failure is kept in the host and reported by queries.
            let _ = inner.projections.catch_up(&log);
            let o = &inner.options;
            if !inner.read_only()
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
        }
        // Holds no strong reference while it waits, so dropping the store
        // is never delayed by this thread.
        let _ = wakeups.recv_timeout(POLL);
    }
}
