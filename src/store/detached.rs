//! Fail-safe recording: the halt path's call, and the warnings about what
//! it could not record.
//!
//! `record_detached` must never stop the host from enforcing: it validates,
//! queues the event with a deadline, and returns. Whatever cannot be recorded
//! (refused event, queue full past the deadline, failed writer) is counted,
//! logged with `tracing::warn!` (at most one line per
//! `DROP_WARNING_INTERVAL`, then a summary), and added to the pending
//! *gap* (see `gap`), which the supervisor (see `supervisor`) writes as a
//! durable gap marker as soon as an append works again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::event::{Action, Event};
use crate::log::AppendCallback;
use crate::record::now_us;

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
    /// [`GAP_LOSSES_MAX`](crate::GAP_LOSSES_MAX) pairs; the rest summed),
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
            event.discard();
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
        if self.read_only() {
            return Err(Error::ReadOnly);
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
