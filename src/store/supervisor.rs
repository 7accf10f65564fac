//! The supervisor: a writer's background thread that reopens the log when
//! its writer failed (the reopen recovers from what is on disk), with a
//! growing wait between failed attempts, and writes the pending gap marker
//! as soon as an append works again.
//!
//! Invariant: from the failure until a reopen succeeds (or the store
//! stops), the directory lock stays held, by the failed writer and then by
//! this thread between attempts. No other process can claim the directory
//! (a shard of a shared one) meanwhile: if one could, its events would sit
//! in the shard this store counts as its own, left out of this store's
//! answers without an error for as long as it held it.

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::gap::write_gap_marker;
use super::Inner;
use crate::error::{Error, Result};
use crate::log::{DirLock, Log};

/// Starts the supervisor thread; it stops when the store is dropped.
pub(super) fn spawn(inner: Weak<Inner>, wakeups: flume::Receiver<()>) -> Result<JoinHandle<()>> {
    let dir = inner.upgrade().map(|i| i.dir.clone()).unwrap_or_default();
    std::thread::Builder::new()
        .name("enforcelog-supervisor".into())
        .spawn(move || supervise(inner, wakeups))
        .map_err(|e| Error::io("spawn supervisor thread for", dir, e))
}

/// Stops the supervisor and waits for it.
pub(super) fn stop(inner: &Inner) {
    inner.stopping.store(true, Ordering::Relaxed);
    inner.wake();
    let Some(writer) = &inner.writer else { return };
    super::join_background(&writer.supervisor);
}

/// Most a failed reopen multiplies `recovery_interval` by, before the next
/// attempt: 2^6, so 6.4 s with the default 100 ms.
const MAX_BACKOFF_SHIFT: u32 = 6;

fn supervise(inner: Weak<Inner>, wakeups: flume::Receiver<()>) {
    // Consecutive failed reopens, and when the next may be tried: a disk
    // that stays full is not hammered (wake-ups from dropped events come
    // often, so the wait is kept by time, not by counting wake-ups).
    let mut failures = 0u32;
    let mut next_attempt = Instant::now();
    // The failed writer's directory lock, between failed reopens; dropped
    // (released) when this thread ends.
    let mut held: Option<DirLock> = None;
    loop {
        let interval = match inner.upgrade() {
            Some(inner) if !inner.stopping.load(Ordering::Relaxed) => {
                inner.options.recovery_interval
            }
            _ => return,
        };
        let wait = interval.max(next_attempt.saturating_duration_since(Instant::now()));
        match wakeups.recv_timeout(wait) {
            Ok(()) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.stopping.load(Ordering::Relaxed) {
            return;
        }
        if inner.log().is_poisoned() && Instant::now() >= next_attempt {
            if reopen(&inner, &mut held) {
                failures = 0;
            } else {
                failures = failures.saturating_add(1);
                // Checked: a long interval must not kill this thread.
                let backoff = interval
                    .checked_mul(1 << failures.min(MAX_BACKOFF_SHIFT))
                    .unwrap_or(Duration::MAX);
                let now = Instant::now();
                next_attempt = now.checked_add(backoff).unwrap_or(now);
            }
        }
        write_gap_marker(&inner);
        inner.flush_drop_warnings(false);
    }
}

/// Replaces a failed log with a fresh open of the same directory, which
/// recovers from what is on disk.
///
/// The slow part (closing the failed writer, recovery) runs without holding
/// the store's log lock, so callers meanwhile get the failed log's
/// `Poisoned` error at once instead of waiting; only the swap takes the lock.
/// The supervisor is the only thread that swaps, so nothing races it.
/// The directory lock moves from the failed writer into `held` and from
/// there into the new writer; a failed attempt leaves it in `held`.
///
/// Returns whether the store has a working log afterwards.
fn reopen(inner: &Inner, held: &mut Option<DirLock>) -> bool {
    let failed = inner.log();
    if !failed.is_poisoned() {
        return true;
    }
    let fsyncs = failed.metrics().fsyncs;
    // Everything below this was acknowledged; whatever the failed writer
    // wrote after it was answered with an error and must not come back.
    let acknowledged_end = failed.next_offset();
    // Stops the failed writer (its error is the one already reported),
    // which hands its directory lock over instead of releasing it. Already
    // closed (an attempt before this one): the lock is in `held`.
    if let Some(lock) = failed.close_keeping_lock() {
        *held = Some(lock);
    }
    drop(failed);
    let options = inner.options.log.clone();
    let storage = inner.storage.clone();
    match Log::reopen_after_failure_holding(storage, &inner.dir, options, acknowledged_end, held) {
        Ok(log) => {
            info!(
                dir = %inner.dir.display(),
                next_offset = log.next_offset(),
                "reopened the log after a writer failure"
            );
            if inner.projections.ahead_of(log.next_offset()) {
                // Records the projections counted were lost with the failed
                // fsync (acknowledged under `Interval`, never synced): their
                // offsets will be given again, so count from what the log
                // holds (checkpoints cover only synced entries).
                warn!(
                    dir = %inner.dir.display(),
                    next_offset = log.next_offset(),
                    "projections counted records the failure lost; rebuilding them"
                );
                inner.projections.reset_all();
                inner
                    .projections
                    .load_checkpoints(&*inner.storage, &inner.dir, &log);
            }
            *inner.log.write().unwrap_or_else(|e| e.into_inner()) = log;
            inner
                .counters
                .fsyncs_before
                .fetch_add(fsyncs, Ordering::Relaxed);
            inner.counters.recoveries.fetch_add(1, Ordering::Relaxed);
            true
        }
        Err(e) => {
            warn!(dir = %inner.dir.display(), error = %e, "could not reopen the log yet");
            false
        }
    }
}
