//! The follower thread: keeps the projections current as entries commit,
//! and checkpoints them from time to time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tracing::{error, warn};

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
///
/// A projection (the host's own code) that panics must not end the
/// thread: nothing would fold later commits, and every query would stall
/// for as long as the store stays open. The panic is caught; the host has
/// marked the projection for a rebuild ([`crate::projection`]'s `Hold`).
/// After one panic, queries wait for the retry as for any catch-up; after
/// a second in a row they fail at once with the reason, until a catch-up
/// succeeds. Catch-ups after a panic are spaced out (from [`POLL`] doubling
/// up to [`MAX_BACKOFF`]), so a projection that panics on every attempt
/// costs a rebuild now and then, not a core; commits do not wake it sooner.
fn follow(weak: Weak<Inner>, wakeups: flume::Receiver<()>) {
    let mut watched: Option<Log> = None;
    let mut panics: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        let waiting = retry_at.map(|at| at.saturating_duration_since(Instant::now()));
        if waiting.is_none_or(|left| left.is_zero()) {
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
            match catch_unwind(AssertUnwindSafe(|| inner.projections.catch_up(&log))) {
                Ok(_) => {
                    panics = 0;
                    retry_at = None;
                    checkpoint_if_due(&inner, &log);
                }
                Err(panic) => {
                    panics = panics.saturating_add(1);
                    let backoff = POLL
                        .saturating_mul(1 << (panics - 1).min(16))
                        .min(MAX_BACKOFF);
                    let message = panic_message(&*panic);
                    error!(
                        panic = %message,
                        panics,
                        retry_in = ?backoff,
                        "a projection panicked while folding; it is rebuilt from the log"
                    );
                    // Once may be a passing fault, and the retry is near:
                    // queries wait for it. Again, and they fail at once.
                    if panics > 1 {
                        inner.projections.note_panic(&message);
                    }
                    retry_at = Some(Instant::now() + backoff);
                }
            }
        }
        if weak
            .upgrade()
            .is_none_or(|inner| inner.stopping.load(Ordering::Relaxed))
        {
            return;
        }
        // Holds no strong reference while it waits, so dropping the store
        // is never delayed by this thread.
        let wait = retry_at.map_or(POLL, |at| {
            at.saturating_duration_since(Instant::now()).min(POLL)
        });
        let _ = wakeups.recv_timeout(wait);
    }
}

/// Longest wait between two catch-ups after projections panicked.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Checkpoints the projections when one is due (not after a panic: the
/// projection that panicked is not yet rebuilt).
fn checkpoint_if_due(inner: &Inner, log: &Log) {
    let o = &inner.options;
    if inner.read_only()
        || !inner
            .projections
            .checkpoint_due(o.checkpoint_every_entries, o.checkpoint_interval)
    {
        return;
    }
    let saved = catch_unwind(AssertUnwindSafe(|| {
        inner
            .projections
            .checkpoint(&*inner.storage, &inner.dir, log)
    }));
    match saved {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "could not checkpoint projections; will retry"),
        Err(panic) => error!(
            panic = %panic_message(&*panic),
            "a projection panicked while taking its snapshot; will retry"
        ),
    }
}

/// The text a panic carries, when it carries one.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
