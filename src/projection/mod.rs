//! Materialized projections: state folded from the log's entries, kept
//! current as entries commit, and checkpointed so a restart replays only the
//! tail.
//!
//! A [`Projection`] folds entries (with their offsets) into state and can
//! snapshot and restore it. The store runs one *follower* thread that reads
//! committed entries from the log and applies them, in offset order, to every
//! registered projection; queries read the projections, never the log.
//! [`TriggerStats`] (trigger counts per window, last trigger) is one
//! projection built on this API; [`ActionsPerDay`] is a small second one.

pub mod checkpoint;
mod host;
mod per_day;
mod trigger;

use std::any::Any;

pub use per_day::ActionsPerDay;
pub use trigger::{Answer, RuleStats, TriggerStats, DAYS_30_US};

pub use host::ProjectionCheck;
pub(crate) use host::{Host, CHECKPOINT_DIR};

use crate::event::Entry;
use crate::event_view::EventKeys;

/// State folded from log entries.
///
/// Implementations must be deterministic: the same entries applied in the
/// same order give the same snapshot bytes (that is how `verify` compares a
/// checkpoint with a fresh rebuild).
///
/// ```
/// use enforcelog::projection::Projection;
/// use enforcelog::Entry;
///
/// /// Counts gap markers.
/// #[derive(Default)]
/// struct Gaps(u64);
///
/// impl Projection for Gaps {
///     fn name(&self) -> &str { "gaps" }
///     fn apply(&mut self, _offset: u64, entry: &Entry) {
///         if let Entry::Gap(_) = entry { self.0 += 1 }
///     }
///     fn snapshot(&self) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
///     fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
///         let bytes: [u8; 8] = bytes.try_into().map_err(|_| "bad length".to_string())?;
///         self.0 = u64::from_le_bytes(bytes);
///         Ok(())
///     }
///     fn reset(&mut self) { self.0 = 0 }
///     fn fresh(&self) -> Box<dyn Projection> { Box::new(Gaps::default()) }
/// }
/// ```
pub trait Projection: Any + Send + Sync {
    /// A stable name: 1..=64 of `a-z`, `0-9`, `_`, `-`. It names the
    /// checkpoint file, so two projections of a store need two names.
    fn name(&self) -> &str;

    /// The version of the snapshot format; a checkpoint of another version
    /// is ignored and the projection rebuilt.
    fn version(&self) -> u32 {
        1
    }

    /// Folds one entry. Called once per entry, in offset order.
    fn apply(&mut self, offset: u64, entry: &Entry);

    /// Called instead of [`Projection::apply`] for a log entry that is not a
    /// store payload (it does not decode), in the same offset order. The
    /// projection moves past it either way; the default ignores it.
    fn skip_undecodable(&mut self, offset: u64) {
        let _ = offset;
    }

    /// The state as bytes.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot's; an error leaves the projection
    /// to be rebuilt from the log.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// Forgets all state (before a rebuild).
    fn reset(&mut self);

    /// A new, empty projection of the same kind and configuration.
    fn fresh(&self) -> Box<dyn Projection>;

    /// Whether events need only their keys here: then the host calls
    /// [`Projection::apply_keys`] for events, with no full decode, and
    /// `apply` only for gap and lost entries. The default is false.
    fn keys_only(&self) -> bool {
        false
    }

    /// Folds one event by its keys; called instead of `apply` for events
    /// when [`Projection::keys_only`] is true, in the same offset order.
    fn apply_keys(&mut self, keys: &EventKeys<'_>) {
        let _ = keys;
    }

    /// Folds into `self` the state of `later`, a [`Projection::fresh`]
    /// copy that folded the entries right after `self`'s: the result must
    /// equal (the same snapshot bytes) folding them all in offset order.
    /// That lets the host replay a long log on two threads, one half each,
    /// and merge. `Err(later)` (the default) says the projection cannot
    /// merge: `self` must then be unchanged, and the host replays the
    /// entries in order instead.
    fn merge_later(&mut self, later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
        Err(later)
    }
}

/// Whether `name` is usable as a projection name.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
