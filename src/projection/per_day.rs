//! A small example projection: events per action per UTC day. It shows the
//! [`Projection`] API on something other than the trigger statistics.

use std::collections::BTreeMap;

use super::Projection;
use crate::event::{Action, Entry};
use crate::event_view::EventKeys;

const DAY_US: i64 = 24 * 3600 * 1_000_000;

/// Counts events per (UTC day, action), for all tenants.
///
/// ```
/// use enforcelog::projection::{ActionsPerDay, Projection};
/// use enforcelog::{Action, Entry, StoredEvent};
/// let mut p = ActionsPerDay::default();
/// let event = StoredEvent {
///     offset: 0, tenant_id: "t".into(), rule_id: "r".into(), action: Action::Blocked,
///     run_id: None, details: None, enforced_at_us: 86_400_000_000 + 5,
/// };
/// p.apply(0, &Entry::Event(event));
/// assert_eq!(p.count(1, Action::Blocked), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionsPerDay {
    /// (days since the epoch, action code) → events.
    counts: BTreeMap<(i64, u8), u64>,
}

impl ActionsPerDay {
    /// Events with `action` on day `day` (days since 1970-01-01, UTC).
    pub fn count(&self, day: i64, action: Action) -> u64 {
        self.counts.get(&(day, action.code())).copied().unwrap_or(0)
    }

    fn add(&mut self, at_us: i64, action: Action) {
        let day = at_us.div_euclid(DAY_US);
        *self.counts.entry((day, action.code())).or_default() += 1;
    }

    /// Every (day, action, count), by day then action.
    pub fn iter(&self) -> impl Iterator<Item = (i64, Action, u64)> + '_ {
        self.counts
            .iter()
            .filter_map(|(&(day, code), &n)| Action::from_code(code).map(|a| (day, a, n)))
    }
}

impl Projection for ActionsPerDay {
    fn name(&self) -> &str {
        "actions_per_day"
    }

    fn apply(&mut self, _offset: u64, entry: &Entry) {
        if let Entry::Event(e) = entry {
            self.add(e.enforced_at_us, e.action);
        }
    }

    fn keys_only(&self) -> bool {
        true
    }

    fn apply_keys(&mut self, keys: &EventKeys<'_>) {
        self.add(keys.enforced_at_us, keys.action);
    }

    /// Counts add up: the merge is exact, byte for byte.
    fn merge_later(&mut self, mut later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
        let Some(other) = (&mut *later as &mut dyn std::any::Any).downcast_mut::<Self>() else {
            return Err(later);
        };
        for (key, n) in std::mem::take(&mut other.counts) {
            *self.counts.entry(key).or_default() += n;
        }
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        let rows: Vec<(i64, u8, u64)> = self.counts.iter().map(|(&(d, a), &n)| (d, a, n)).collect();
        rmp_serde::to_vec(&rows).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let rows: Vec<(i64, u8, u64)> = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        self.counts = rows.into_iter().map(|(d, a, n)| ((d, a), n)).collect();
        Ok(())
    }

    fn reset(&mut self) {
        self.counts.clear();
    }

    fn fresh(&self) -> Box<dyn Projection> {
        Box::new(Self::default())
    }
}
