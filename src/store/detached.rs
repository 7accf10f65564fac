//! Fail-safe recording, gap markers, and the supervisor that recovers a
//! failed log.
//!
//! `record_detached` must never stop the host from enforcing: it validates,
//! queues the event with a deadline, and returns. Whatever cannot be recorded
//! (refused event, queue full past the deadline, failed writer) is logged
//! with `tracing::warn!`, counted, and added to the pending *gap*. The
//! supervisor thread writes the pending gap as a durable gap marker as soon
//! as an append works again, reopening the log first if its writer failed.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::event::{Action, Event};
use crate::log::{AppendCallback, Log};
use crate::payload;
use crate::record::{now_us, Record};

/// Events dropped since the last gap marker.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct GapState {
    pub dropped: u64,
    pub first_us: i64,
    pub last_us: i64,
}

/// What a warning about a dropped event names.
struct Dropped {
    tenant_id: String,
    rule_id: String,
    action: Action,
}

impl Inner {
    fn drop_event(&self, what: &Dropped, reason: &dyn std::fmt::Display) {
        warn!(
            tenant = %what.tenant_id,
            rule = %what.rule_id,
            action = %what.action,
            reason = %reason,
            "enforcement event not recorded"
        );
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        let now = now_us();
        let mut gap = self.gap.lock().unwrap_or_else(|e| e.into_inner());
        if gap.dropped == 0 {
            gap.first_us = now;
        }
        gap.dropped += 1;
        gap.last_us = now;
        drop(gap);
        self.wake();
    }
}

impl Store {
    /// Records an event without waiting for it, and without ever failing.
    ///
    /// Returns within [`StoreOptions::detached_timeout`](super::StoreOptions)
    /// (default 50 ms) whatever happens: a full queue, a failed writer, a
    /// full disk. An event that cannot be recorded is logged with
    /// `tracing::warn!` (tenant, rule, action, reason) and counted in
    /// [`StoreMetrics::dropped`](super::StoreMetrics); the count of events
    /// dropped since the last successful write is appended as a gap marker
    /// as soon as writing works again.
    pub fn record_detached(&self, event: Event) {
        let started = Instant::now();
        let inner = &self.inner;
        let what = Dropped {
            tenant_id: event.tenant_id.clone(),
            rule_id: event.rule_id.clone(),
            action: event.action,
        };
        // See `Inner::detached_gate`: after `close` began, nothing more is
        // queued, so nothing can miss the final gap marker uncounted.
        let _gate = inner
            .detached_gate
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if inner.closed.load(Ordering::Acquire) {
            return inner.drop_event(&what, &Error::Closed);
        }
        let record = match self.prepare(event) {
            Ok(record) => record,
            Err(e) => return inner.drop_event(&what, &e),
        };
        // Validation bounds the timeout, but an `Instant` near the end of
        // its range could still overflow: then this call does not wait.
        let deadline = started
            .checked_add(inner.options.detached_timeout)
            .unwrap_or(started);
        // The callback warns about the same event if the writer fails it.
        let context = Dropped {
            tenant_id: what.tenant_id.clone(),
            rule_id: what.rule_id.clone(),
            action: what.action,
        };
        let weak = Arc::downgrade(inner);
        let callback: AppendCallback = Box::new(move |result| {
            let Some(inner) = weak.upgrade() else { return };
            match result {
                Ok(_) => inner.note_committed(1, started),
                Err(e) => inner.drop_event(&context, &e),
            }
        });
        if let Err(e) = inner
            .log()
            .append_batch_detached(vec![record], deadline, callback)
        {
            inner.drop_event(&what, &e);
        }
    }
}

/// Starts the supervisor thread; it stops when the store is dropped.
pub(super) fn spawn_supervisor(
    inner: Weak<Inner>,
    wakeups: flume::Receiver<()>,
) -> Result<JoinHandle<()>> {
    let dir = inner.upgrade().map(|i| i.dir.clone()).unwrap_or_default();
    std::thread::Builder::new()
        .name("enforcelog-supervisor".into())
        .spawn(move || supervise(inner, wakeups))
        .map_err(|e| Error::io("spawn supervisor thread for", dir, e))
}

/// Stops the supervisor and waits for it.
pub(super) fn stop_supervisor(inner: &Inner) {
    inner.stopping.store(true, Ordering::Relaxed);
    inner.wake();
    let thread = inner
        .supervisor
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(thread) = thread {
        if thread.thread().id() != std::thread::current().id() {
            let _ = thread.join();
        }
    }
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
            if reopen(&inner) {
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
    }
}

/// Replaces a failed log with a fresh open of the same directory, which
/// recovers from what is on disk.
///
/// The slow part (closing the failed writer, recovery) runs without holding
/// the store's log lock, so callers meanwhile get the failed log's
/// `Poisoned` error at once instead of waiting; only the swap takes the lock.
/// The supervisor is the only thread that swaps, so nothing races it.
///
/// Returns whether the store has a working log afterwards.
fn reopen(inner: &Inner) -> bool {
    let failed = inner.log();
    if !failed.is_poisoned() {
        return true;
    }
    let fsyncs = failed.metrics().fsyncs;
    // Everything below this was acknowledged; whatever the failed writer
    // wrote after it was answered with an error and must not come back.
    let acknowledged_end = failed.next_offset();
    // Stops the failed writer and releases the directory lock; its error is
    // the one already reported.
    let _ = failed.close();
    drop(failed);
    let options = inner.options.log.clone();
    match Log::reopen_after_failure(inner.storage.clone(), &inner.dir, options, acknowledged_end) {
        Ok(log) => {
            info!(
                dir = %inner.dir.display(),
                next_offset = log.next_offset(),
                "reopened the log after a writer failure"
            );
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

/// Appends the pending gap as a marker, if any and if the log works.
pub(super) fn write_gap_marker(inner: &Inner) {
    let gap = *inner.gap.lock().unwrap_or_else(|e| e.into_inner());
    if gap.dropped == 0 {
        return;
    }
    let log = inner.log();
    if log.is_poisoned() || log.on_writer_thread() {
        return;
    }
    let record = Record::new(
        now_us(),
        payload::encode_gap(gap.dropped, gap.first_us, gap.last_us),
    );
    match log.append_blocking(record) {
        Ok(offset) => {
            let mut state = inner.gap.lock().unwrap_or_else(|e| e.into_inner());
            state.dropped -= gap.dropped;
            if state.dropped > 0 {
                // Drops that happened while the marker was being written.
                state.first_us = gap.last_us;
            }
            drop(state);
            inner.counters.gap_markers.fetch_add(1, Ordering::Relaxed);
            info!(offset, dropped = gap.dropped, "wrote a gap marker");
        }
        Err(e) => warn!(error = %e, dropped = gap.dropped, "could not write a gap marker yet"),
    }
}
