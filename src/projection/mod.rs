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

mod block;
pub mod checkpoint;
mod host;
mod intern;
mod per_day;
mod trigger;

use std::any::Any;

pub use block::KeyBlock;
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

    /// Whether events need only their keys: when true, the host calls
    /// [`Projection::apply_keys`] for every event instead of
    /// [`Projection::apply`], with keys read in place from the payload
    /// (no decode, no allocation). Gap markers and lost entries still come
    /// to `apply`, undecodable entries to `skip_undecodable`. The answer
    /// must not change while the projection is registered.
    fn keys_only(&self) -> bool {
        false
    }

    /// Folds one event given by its keys; called instead of `apply` for
    /// events when [`Projection::keys_only`] is true, in the same offset
    /// order. Folding `keys` must leave the state (and snapshot bytes)
    /// exactly as `apply` of the decoded event would.
    fn apply_keys(&mut self, keys: &EventKeys<'_>) {
        let _ = keys;
    }

    /// Folds consecutive events given by their keys, in order; called
    /// instead of [`Projection::apply_keys`] when [`Projection::keys_only`]
    /// is true and the host has several events in a row to fold (a replay,
    /// a group commit). It must leave the state exactly as `apply_keys` of
    /// each event in turn would (the default does just that). A projection
    /// that sees the whole block can fold it faster: [`TriggerStats`]
    /// looks up several events' rules at once, so their cache misses
    /// overlap.
    fn apply_keys_block(&mut self, block: &[EventKeys<'_>]) {
        for keys in block {
            self.apply_keys(keys);
        }
    }

    /// Appends the fold of a *later* range of the log to this one: `self`
    /// holds the entries of offsets `[a, b)`, `later` a [`Projection::fresh`]
    /// copy that folded `[b, c)`; afterwards `self` answers as a projection
    /// that folded `[a, c)` in order. So the host can fold ranges on several
    /// threads and merge them in offset order.
    ///
    /// Returns `later` back when this projection cannot merge (the
    /// default, or `later` is of another type): the host then folds that
    /// range again, in order, into `self`. A merged state may differ from
    /// the in-order fold in how it is laid out (for example what is folded
    /// and what is kept), never in any number it answers: a projection
    /// that can say "ask the log" (like `TriggerStats`'
    /// `Answer::NeedsReplay`) may say it for more queries after a merge,
    /// since the merge folds as much as it may, and the host then answers
    /// those from the log; an answer the merged state gives itself is the
    /// in-order fold's. [`Projection::normalize`] brings both to the same
    /// state, so the same snapshot bytes.
    fn merge_later(&mut self, later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
        Err(later)
    }

    /// Brings the state to its canonical form for the entries it folded,
    /// without changing any number it answers (it may send more answers to
    /// the log, as a merge may): the form [`Projection::merge_later`]
    /// leaves. `verify` normalizes the checkpoint and the rebuild before it
    /// compares their snapshots. The default (nothing to do) is right for
    /// any projection whose merge is already byte-exact or that does not
    /// merge.
    fn normalize(&mut self) {}

    /// The state as bytes.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the state with a snapshot's; an error leaves the projection
    /// to be rebuilt from the log.
    fn restore(&mut self, bytes: &[u8]) -> Result<(), String>;

    /// Forgets all state (before a rebuild).
    fn reset(&mut self);

    /// A new, empty projection of the same kind and configuration.
    fn fresh(&self) -> Box<dyn Projection>;
}

/// Whether `name` is usable as a projection name.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
