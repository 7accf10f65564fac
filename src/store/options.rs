//! [`StoreOptions`]: what a store is opened with, and their limits.

use std::time::Duration;

use crate::config::LogOptions;
use crate::error::{Error, Result};

/// Options for [`Store::open`](crate::Store::open).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Options of the underlying log (durability, segment size...).
    pub log: LogOptions,
    /// Longest time `record_detached` may block its caller, at most
    /// [`DETACHED_TIMEOUT_MAX`]. Zero means try once and never wait (for a
    /// host that must not block at all). Default 50 ms.
    pub detached_timeout: Duration,
    /// How soon the supervisor retries reopening a failed log: longer than
    /// zero, at most [`RECOVERY_INTERVAL_MAX`]. Default 100 ms; each failed
    /// retry doubles the wait, up to 64 times this.
    pub recovery_interval: Duration,
    /// Windows of the trigger statistics; the last is the primary one
    /// (`trigger_count`, `by_action`). Each longer than zero and at most
    /// [`TRIGGER_WINDOW_MAX`]. Default: 30 days.
    pub trigger_windows: Vec<Duration>,
    /// Checkpoint the projections after this many new entries, at least 1.
    /// Default 100,000.
    pub checkpoint_every_entries: u64,
    /// ... or after this long with new entries (longer than zero). Default 60 s.
    pub checkpoint_interval: Duration,
    /// How far a subscriber may lag behind the log's end before it is told
    /// (see [`Delivery::Lagging`](crate::store::Delivery::Lagging)). Default 1,000,000 entries.
    pub subscriber_lag_warning: u64,
    /// How far after the store's clock an event's `enforced_at` may be.
    /// Later ones are refused ([`EventError::InFuture`](crate::EventError)):
    /// the log is append-only, so one event stamped in year 9999 would stay
    /// the newest time of its tenant for good. Default 1 hour (clock skew
    /// between hosts, batches built ahead of time). Any value is valid;
    /// `Duration::MAX` turns the check off (importing an archive that holds
    /// far-future times, testing the timestamp range).
    pub max_future_skew: Duration,
    /// What [`Store::open`](crate::Store::open) does when another writer
    /// (another process, or another open in this one) holds the directory:
    /// `true` (default), claim a shard of the directory (see
    /// [`Store::shard`](crate::Store::shard)); `false`, fail with
    /// [`Error::Locked`] as a store did before shards existed.
    pub share_directory: bool,
    /// How often the store looks again at the directory's other shards
    /// (other writers' events) for `stats` and `query`: they are read as
    /// far as their writers have made them durable, at open, in the
    /// background every this long, and at once by
    /// [`Store::refresh`](crate::Store::refresh). Longer than zero, at
    /// most [`RECOVERY_INTERVAL_MAX`]. Default 1 s.
    pub shard_refresh_interval: Duration,
}

/// The default [`StoreOptions::max_future_skew`]: one hour.
pub const MAX_FUTURE_SKEW_DEFAULT: Duration = Duration::from_secs(3600);

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            log: LogOptions::default(),
            detached_timeout: Duration::from_millis(50),
            recovery_interval: Duration::from_millis(100),
            trigger_windows: vec![Duration::from_secs(30 * 24 * 3600)],
            checkpoint_every_entries: 100_000,
            checkpoint_interval: Duration::from_secs(60),
            subscriber_lag_warning: 1_000_000,
            max_future_skew: MAX_FUTURE_SKEW_DEFAULT,
            share_directory: true,
            shard_refresh_interval: Duration::from_secs(1),
        }
    }
}

/// The longest accepted [`StoreOptions::detached_timeout`]: the fail-safe
/// call must give the host its thread back promptly.
pub const DETACHED_TIMEOUT_MAX: Duration = Duration::from_secs(60);
/// The longest accepted [`StoreOptions::recovery_interval`] (the backoff
/// multiplies it by up to 64). A day: a test harness may want the
/// supervisor to stay out of the way.
pub const RECOVERY_INTERVAL_MAX: Duration = Duration::from_secs(24 * 3600);
/// The longest accepted trigger window: 100 years.
pub const TRIGGER_WINDOW_MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl StoreOptions {
    /// Checks every option (and the log's); the store refuses to open with
    /// invalid options, naming the first bad one.
    pub(crate) fn validate(&self) -> Result<()> {
        self.log.validate()?;
        let invalid = |name, reason: String| Err(Error::InvalidOptions { name, reason });
        // Zero is allowed: try once, never wait (an asyncio host needs it).
        if self.detached_timeout > DETACHED_TIMEOUT_MAX {
            return invalid(
                "detached_timeout",
                format!(
                    "{:?} is longer than {DETACHED_TIMEOUT_MAX:?}",
                    self.detached_timeout
                ),
            );
        }
        let longest_window = self.trigger_windows.iter().max();
        if self.trigger_windows.iter().any(|w| w.is_zero())
            || longest_window.is_some_and(|w| *w > TRIGGER_WINDOW_MAX)
        {
            return invalid(
                "trigger_windows",
                format!("each window must be longer than zero and at most {TRIGGER_WINDOW_MAX:?}"),
            );
        }
        if self.checkpoint_every_entries == 0 {
            return invalid("checkpoint_every_entries", "must be at least 1".into());
        }
        if self.checkpoint_interval.is_zero() {
            return invalid("checkpoint_interval", "must be longer than zero".into());
        }
        if self.recovery_interval.is_zero() || self.recovery_interval > RECOVERY_INTERVAL_MAX {
            return invalid(
                "recovery_interval",
                format!(
                    "{:?} is outside (0, {RECOVERY_INTERVAL_MAX:?}]",
                    self.recovery_interval
                ),
            );
        }
        if self.shard_refresh_interval.is_zero()
            || self.shard_refresh_interval > RECOVERY_INTERVAL_MAX
        {
            return invalid(
                "shard_refresh_interval",
                format!(
                    "{:?} is outside (0, {RECOVERY_INTERVAL_MAX:?}]",
                    self.shard_refresh_interval
                ),
            );
        }
        Ok(())
    }

    /// `max_future_skew` in µs; saturates, so any value is safe (the check
    /// adds it to now with saturation too).
    pub(crate) fn max_future_skew_us(&self) -> i64 {
        i64::try_from(self.max_future_skew.as_micros()).unwrap_or(i64::MAX)
    }
}
