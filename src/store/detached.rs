//! Fail-safe recording, gap markers, and the supervisor that recovers a
//! failed log.
//!
//! `record_detached` must never stop the host from enforcing: it validates,
//! queues the event with a deadline, and returns. Whatever cannot be recorded
//! (refused event, queue full past the deadline, failed writer) is counted,
//! logged with `tracing::warn!` (at most one line per
//! `DROP_WARNING_INTERVAL`, then a summary), and added to the pending
//! *gap*, per (tenant, rule) up to `GAP_LOSSES_MAX` pairs. The supervisor
//! thread writes the pending gap as a durable gap marker as soon as an
//! append works again, reopening the log first if its writer failed; a
//! marker that cannot be written is put back, ahead of newer drops.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::event::{check_id, Action, Event, Field, GapLoss, LossSpan, GAP_LOSSES_MAX};
use crate::log::{AppendCallback, Log};
use crate::payload;
use crate::record::{now_us, Record};

/// Events dropped since the last gap marker, and who lost them.
#[derive(Debug, Default, Clone)]
pub(crate) struct GapState {
    pub dropped: u64,
    pub first_us: i64,
    pub last_us: i64,
    /// Per (tenant, rule): at most `GAP_LOSSES_MAX` pairs.
    losses: BTreeMap<(String, String), LossSpan>,
    /// Drops of further pairs, and of events whose ids are invalid.
    unattributed: Option<LossSpan>,
    /// Drops taken by a gap marker being written (still pending).
    pub writing: u64,
}

impl GapState {
    fn add(&mut self, tenant_id: &str, rule_id: &str, at_us: i64, now_us: i64) {
        if self.dropped == 0 {
            self.first_us = now_us;
        }
        self.dropped += 1;
        self.last_us = now_us;
        let key = (tenant_id.to_string(), rule_id.to_string());
        let valid = check_id(Field::TenantId, tenant_id).is_ok()
            && check_id(Field::RuleId, rule_id).is_ok();
        if let Some(span) = self.losses.get_mut(&key) {
            span.add(at_us);
        } else if valid && self.losses.len() < GAP_LOSSES_MAX {
            self.losses.insert(key, LossSpan::one(at_us));
        } else {
            add_span(&mut self.unattributed, LossSpan::one(at_us));
        }
    }

    /// Puts back the drops of a marker that could not be written, ahead of
    /// those that came meanwhile.
    fn restore(&mut self, taken: GapState) {
        let newer = std::mem::replace(self, taken);
        self.writing = 0;
        self.dropped += newer.dropped;
        if newer.dropped > 0 {
            self.last_us = newer.last_us;
        }
        for (key, span) in newer.losses {
            if let Some(mine) = self.losses.get_mut(&key) {
                let mut merged = Some(*mine);
                add_span(&mut merged, span);
                *mine = merged.unwrap_or(span);
            } else if self.losses.len() < GAP_LOSSES_MAX {
                self.losses.insert(key, span);
            } else {
                add_span(&mut self.unattributed, span);
            }
        }
        if let Some(span) = newer.unattributed {
            add_span(&mut self.unattributed, span);
        }
    }
}

fn add_span(into: &mut Option<LossSpan>, span: LossSpan) {
    *into = Some(match *into {
        None => span,
        Some(mine) => LossSpan {
            count: mine.count.saturating_add(span.count),
            first_at_us: mine.first_at_us.min(span.first_at_us),
            last_at_us: mine.last_at_us.max(span.last_at_us),
        },
    });
}

/// How often at most the store warns about dropped events: the first drop
/// after a quiet interval is logged with its tenant, rule, action and
/// reason; the drops after it within the interval are summed into one
/// summary line, so an outage that drops thousands of events per second
/// does not flood the log it may be filling.
pub const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// The rate limit of drop warnings.
#[derive(Debug, Default)]
pub(crate) struct DropWarnings {
    /// When the last line was written.
    last_line: Option<Instant>,
    /// Drops since then not yet named in a line.
    unreported: u64,
    /// The reason of the latest of them.
    last_reason: String,
}

/// What a warning about a dropped event names.
struct Dropped {
    tenant_id: String,
    rule_id: String,
    action: Action,
    at_us: i64,
}

impl Inner {
    fn drop_event(&self, what: &Dropped, reason: &dyn std::fmt::Display) {
        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        self.warn_drop(what, reason);
        let mut gap = self.gap.lock().unwrap_or_else(|e| e.into_inner());
        gap.add(&what.tenant_id, &what.rule_id, what.at_us, now_us());
        drop(gap);
        self.wake();
    }

    /// Logs a drop, at most one line per `DROP_WARNING_INTERVAL`.
    fn warn_drop(&self, what: &Dropped, reason: &dyn std::fmt::Display) {
        let mut warnings = self.drop_warnings.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = warnings
            .last_line
            .is_none_or(|at| at.elapsed() >= DROP_WARNING_INTERVAL);
        if quiet && warnings.unreported == 0 {
            warnings.last_line = Some(Instant::now());
            drop(warnings);
            warn!(
                dir = %self.dir.display(),
                tenant = %what.tenant_id,
                rule = %what.rule_id,
                action = %what.action,
                reason = %reason,
                "enforcement event not recorded"
            );
            return;
        }
        warnings.unreported += 1;
        warnings.last_reason = reason.to_string();
        drop(warnings);
        self.flush_drop_warnings(false);
    }

    /// Writes the summary of the drops not yet logged, once the interval
    /// since the last line has passed (or now, with `force`).
    pub(super) fn flush_drop_warnings(&self, force: bool) {
        let mut warnings = self.drop_warnings.lock().unwrap_or_else(|e| e.into_inner());
        let due = warnings
            .last_line
            .is_none_or(|at| at.elapsed() >= DROP_WARNING_INTERVAL);
        if warnings.unreported == 0 || !(due || force) {
            return;
        }
        let dropped = std::mem::take(&mut warnings.unreported);
        let reason = std::mem::take(&mut warnings.last_reason);
        warnings.last_line = Some(Instant::now());
        drop(warnings);
        warn!(
            dir = %self.dir.display(),
            dropped,
            last_reason = %reason,
            "more enforcement events not recorded since the last warning (see the gap markers for tenants and rules)"
        );
    }
}

impl Store {
    /// Records an event without waiting for it, and without ever failing:
    /// **the call for the halt path** (code that stops, kills or blocks an
    /// agent), where an I/O error must never hold up the enforcement.
    ///
    /// Returns within [`StoreOptions::detached_timeout`](super::StoreOptions)
    /// (default 50 ms) whatever happens: a full queue, a failed writer, a
    /// full disk. An event that cannot be recorded (also one the store
    /// refuses, e.g. an `enforced_at` too far in the future) is counted in
    /// [`StoreMetrics::dropped`](super::StoreMetrics) and logged with
    /// `tracing::warn!`: the first drop after a quiet interval with its
    /// tenant, rule, action and reason, later ones summed into one summary
    /// line per [`DROP_WARNING_INTERVAL`]. The events dropped since the last
    /// successful write are appended as a gap marker as soon as writing
    /// works again, with per (tenant, rule) counts (at most
    /// [`GAP_LOSSES_MAX`] pairs; the rest summed),
    /// which [`Store::stats`] reports as `missing_at_least`.
    #[doc(alias = "record_fail_safe")]
    #[doc(alias = "halt")]
    pub fn record_detached(&self, event: Event) {
        let started = Instant::now();
        let inner = &self.inner;
        let what = Dropped {
            tenant_id: event.tenant_id.clone(),
            rule_id: event.rule_id.clone(),
            action: event.action,
            at_us: event.enforced_at_us.unwrap_or_else(now_us),
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
            at_us: record.timestamp_us,
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

    /// Read-your-writes for the fire-and-forget path: waits until every
    /// event recorded before this call (by [`Store::record_detached`] or any
    /// other write mode) is durable, whatever the durability mode, or has
    /// been counted as dropped. Then [`Store::query`], [`Store::stats`] and
    /// [`Store::metrics`] in this process include it, and so does a reader
    /// in another process once it refreshes.
    ///
    /// `Err` says that writing failed: some of those events may be counted
    /// in [`StoreMetrics::dropped`](super::StoreMetrics) instead (their gap
    /// marker is written when writing works again). Not for the halt path:
    /// a slow disk makes this wait for its fsync.
    ///
    /// An event queued on a log that the store has since replaced after a
    /// failure is answered by that log's failed writer, at once but on its
    /// own thread: it may be counted as dropped just after this returns.
    ///
    /// ```
    /// use enforcelog::{Action, Durability, Event, Query, Store, StoreOptions};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let mut options = StoreOptions::default();
    /// options.log.durability = Durability::None;
    /// let store = Store::open(dir.path(), options)?;
    /// store.record_detached(Event::new("acme", "budget", Action::Stopped));
    /// store.flush_blocking()?;
    /// assert_eq!(store.query(&Query::tenant("acme"))?.events.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush_blocking(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.log().sync_blocking().map(drop)
    }

    /// [`Store::flush_blocking`] for async code.
    pub async fn flush(&self) -> Result<()> {
        self.inner.check_writable()?;
        self.inner.log().sync().await.map(drop)
    }
}

impl Inner {
    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
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

/// Appends the pending gap as a marker, if any and if the log works.
pub(super) fn write_gap_marker(inner: &Inner) {
    let log = inner.log();
    if log.is_poisoned() || log.on_writer_thread() {
        return;
    }
    // Takes the pending drops (drops meanwhile start a new gap); a marker
    // that cannot be written puts them back.
    let gap = {
        let mut state = inner.gap.lock().unwrap_or_else(|e| e.into_inner());
        if state.dropped == 0 || state.writing > 0 {
            return;
        }
        let taken = std::mem::take(&mut *state);
        state.writing = taken.dropped;
        taken
    };
    let losses: Vec<GapLoss> = gap
        .losses
        .iter()
        .map(|((tenant_id, rule_id), span)| GapLoss {
            tenant_id: tenant_id.clone(),
            rule_id: rule_id.clone(),
            span: *span,
        })
        .collect();
    let record = Record::new(
        now_us(),
        payload::encode_gap(
            gap.dropped,
            gap.first_us,
            gap.last_us,
            &losses,
            gap.unattributed,
        ),
    );
    let dropped = gap.dropped;
    match log.append_blocking(record) {
        Ok(offset) => {
            inner.gap.lock().unwrap_or_else(|e| e.into_inner()).writing = 0;
            inner.counters.gap_markers.fetch_add(1, Ordering::Relaxed);
            info!(offset, dropped, "wrote a gap marker");
        }
        Err(e) => {
            inner
                .gap
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore(gap);
            warn!(error = %e, dropped, "could not write a gap marker yet");
        }
    }
}
