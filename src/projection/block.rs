//! Keys of consecutive events, copied out of their frames, so that a reader
//! that visits frames one at a time ([`crate::Log::scan`], where each frame
//! borrows the segment only for its visit) can hand a projection many
//! events at once ([`Projection::apply_keys_block`]).
//!
//! Invariant: `events` holds, in the order they were pushed, the keys of
//! events whose ids are the byte ranges of `text` they name; `text` holds
//! nothing else.

use std::ops::Range;

use super::Projection;
use crate::event::Action;
use crate::event_view::EventKeys;

/// Keys of up to `capacity` events, owned. Filled with
/// [`KeyBlock::push`], emptied into a projection with
/// [`KeyBlock::fold_into`].
///
/// ```
/// use enforcelog::projection::{KeyBlock, Projection};
/// use enforcelog::{Action, EventKeys, TriggerStats};
///
/// let mut block = KeyBlock::with_capacity(256);
/// let mut stats = TriggerStats::default();
/// for i in 0..300u64 {
///     let rule = format!("r-{}", i % 7);
///     block.push(&EventKeys {
///         tenant_id: "acme",
///         rule_id: &rule,
///         action: Action::Blocked,
///         run_id: None,
///         enforced_at_us: 1_000 + i as i64,
///         offset: i,
///     });
///     if block.is_full() {
///         block.fold_into(&mut stats);
///     }
/// }
/// block.fold_into(&mut stats);
/// assert!(block.is_empty());
/// assert_eq!(stats.rule_count(), 7);
/// ```
#[derive(Debug, Clone)]
pub struct KeyBlock {
    capacity: usize,
    /// The ids of every event, one after another.
    text: String,
    events: Vec<Copied>,
}

/// One event's keys, its ids as ranges of [`KeyBlock::text`].
#[derive(Debug, Clone)]
struct Copied {
    tenant: Range<usize>,
    rule: Range<usize>,
    run: Option<Range<usize>>,
    action: Action,
    enforced_at_us: i64,
    offset: u64,
}

impl KeyBlock {
    /// An empty block that calls itself full at `capacity` events (at
    /// least one).
    /// Room is reserved for at most [`KeyBlock::RESERVED`] events up front;
    /// a larger block grows as it fills.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let reserved = capacity.min(Self::RESERVED);
        Self {
            capacity,
            text: String::with_capacity(reserved * 48),
            events: Vec::with_capacity(reserved),
        }
    }

    /// Events [`KeyBlock::with_capacity`] reserves room for at most.
    pub const RESERVED: usize = 1024;

    /// Copies one event's keys in, after those already there. A push past
    /// the capacity is kept too (the block grows); [`KeyBlock::is_full`]
    /// is the caller's cue to fold.
    pub fn push(&mut self, keys: &EventKeys<'_>) {
        let mut copy = |id: &str| {
            let start = self.text.len();
            self.text.push_str(id);
            start..self.text.len()
        };
        let tenant = copy(keys.tenant_id);
        let rule = copy(keys.rule_id);
        let run = keys.run_id.map(copy);
        self.events.push(Copied {
            tenant,
            rule,
            run,
            action: keys.action,
            enforced_at_us: keys.enforced_at_us,
            offset: keys.offset,
        });
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the block holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Whether the block holds `capacity` events or more.
    pub fn is_full(&self) -> bool {
        self.events.len() >= self.capacity
    }

    /// The keys held, in the order they were pushed.
    pub fn keys(&self) -> Vec<EventKeys<'_>> {
        let text = self.text.as_str();
        self.events
            .iter()
            .map(|e| EventKeys {
                tenant_id: &text[e.tenant.clone()],
                rule_id: &text[e.rule.clone()],
                action: e.action,
                run_id: e.run.clone().map(|run| &text[run]),
                enforced_at_us: e.enforced_at_us,
                offset: e.offset,
            })
            .collect()
    }

    /// Folds the events held into `projection` (one
    /// [`Projection::apply_keys_block`] call, none when empty) and empties
    /// the block.
    pub fn fold_into<P: Projection + ?Sized>(&mut self, projection: &mut P) {
        if !self.events.is_empty() {
            projection.apply_keys_block(&self.keys());
        }
        self.clear();
    }

    /// Forgets the events held (keeping the room they took).
    pub fn clear(&mut self) {
        self.text.clear();
        self.events.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_back_as_pushed_with_and_without_runs() {
        let key = |tenant_id, rule_id, run_id, action, enforced_at_us, offset| EventKeys {
            tenant_id,
            rule_id,
            action,
            run_id,
            enforced_at_us,
            offset,
        };
        let pushed = [
            key("acme", "r-1", Some("run-é"), Action::Killed, -5, 0),
            key("", "规则", None, Action::Stopped, i64::MAX, 1),
            key("globex", "r-1", Some(""), Action::Blocked, 7, u64::MAX),
        ];
        let mut block = KeyBlock::with_capacity(2);
        for (i, keys) in pushed.iter().enumerate() {
            assert_eq!(block.is_full(), i >= 2);
            block.push(keys);
        }
        assert_eq!(block.len(), 3);
        assert_eq!(block.keys(), pushed);
        block.clear();
        assert!(block.is_empty() && block.keys().is_empty());
    }
}
