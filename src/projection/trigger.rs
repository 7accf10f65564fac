//! The trigger statistics: for every (tenant, rule), how many times it fired
//! in a window ending at an as-of instant, and when it last fired.
//!
//! For an as-of instant `T` and a window `w`:
//! - a window count is the number of events with `enforced_at` in the
//!   half-open interval `(T - w, T]`;
//! - `last_triggered_at` is the greatest `enforced_at <= T`;
//! - `total_count` is the number of events with `enforced_at <= T`.
//!
//! State per (tenant, rule): one sorted vector of timestamps per action for
//! the events inside the longest window before the newest event *of that
//! tenant* (the tenant's *watermark*), and a folded count and greatest
//! timestamp for everything older. Answers come from binary searches:
//! O(log n) in the events of the window. They depend only on the set of
//! events, never on their order: an event older than the fold horizon is
//! folded on arrival.
//!
//! An answer is exact whenever the window does not reach back into folded
//! events (`T - longest window >= the rule's greatest folded timestamp`),
//! which holds for every `T` at or after the tenant's watermark. For an
//! earlier `T` the projection says so ([`Answer::NeedsReplay`]) and the
//! store answers from the log instead.
//!
//! Invariant: one tenant's events never move another tenant's fold
//! horizon. (With one global watermark, a single event stamped in year 9999
//! folded every tenant's history and sent every "as of now" answer to the
//! log, for good.) The cost: a tenant that stops recording keeps the events
//! of its last window unfolded.
//!
//! Gap markers: each rule keeps the losses the markers attribute to it
//! (count and `enforced_at` span), and the projection keeps the losses no
//! marker attributes to a rule (markers of payload schema 1, pairs past the
//! per-marker limit). An answer says how many events the primary window is
//! missing at least, and whether a gap may have taken some of its events.
//! Losses are never folded: one record per (rule, gap marker).
//!
//! Entries that do not decode are counted ([`TriggerStats::undecodable`]).
//!
//! Ids are interned (issue 17): tenants and (tenant, rule) pairs live in
//! dense vectors, and an event costs one hash of its two borrowed ids, one
//! probe (confirmed by comparing bytes), the tenant's horizon and an append
//! to a sorted vector. Events come by their keys alone
//! ([`Projection::apply_keys`]), so a replay need not decode payloads.
//! Snapshots keep the shape of the nested maps the state had before (see
//! `wire`), so checkpoints of earlier builds restore and the bytes are the
//! same. Two folds of consecutive ranges merge
//! ([`Projection::merge_later`]) into the normalized fold of both.
//!
//! Memory (measured by `benches/replay.rs` and `benches/reads.rs`): 8 to
//! 10.5 bytes per event inside the longest window (8 per timestamp plus
//! vector growth slack); per (tenant, rule) with one event, its ids and
//! index entries included, 266 bytes with 1,000 rules and 379 with 10,000
//! (the dense tables grow by doubling, so the figure depends on where the
//! count falls; 272 and 361 with the hashbrown index the open-addressed
//! table of `intern.rs` replaced; the nested maps before the ids were
//! interned: 327 and 260).

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::intern::{prefetch, FxBuild, HashIndex};
use super::Projection;
use crate::event::{Action, Entry, LossSpan};
use crate::event_view::EventKeys;

/// Thirty days in microseconds.
pub const DAYS_30_US: i64 = 30 * 24 * 3600 * 1_000_000;

/// Fold again once the watermark moved this fraction of the longest window.
const SWEEP_FRACTION: i64 = 16;

/// Events of a block `apply_keys_block` prepares at once: what it
/// prefetches for them must still be in cache when they are folded.
const GROUP: usize = 64;

/// How many events after prefetching a pair's slot the block fold reads it:
/// enough for the load to arrive meanwhile.
const SLOT_LAG: usize = 8;

/// How many events ahead of folding one the block fold prefetches where
/// that one will append its timestamp.
const TAIL_AHEAD: usize = 8;

/// How far ahead a sweep loads the states of the rules it folds.
const SWEEP_AHEAD: usize = 8;

/// Statistics of one (tenant, rule) as of an instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleStats {
    /// The tenant.
    pub tenant_id: String,
    /// The rule.
    pub rule_id: String,
    /// The as-of instant, µs since the epoch.
    pub as_of_us: i64,
    /// Events in the primary window `(T - primary, T]` (30 days by default).
    pub trigger_count: u64,
    /// Events in each configured window, in the configured order.
    pub window_counts: Vec<(Duration, u64)>,
    /// The greatest `enforced_at <= T`.
    pub last_triggered_at_us: Option<i64>,
    /// Events with `enforced_at <= T`.
    pub total_count: u64,
    /// Events in the primary window by action, in [`Action::ALL`] order.
    pub by_action: [u64; 4],
    /// The log offset the answer reflects: every entry below it was
    /// counted. From a store whose directory has several shards, the sum
    /// of that over the shards: how many entries in all were counted.
    pub offset: u64,
    /// Events of this rule in the primary window that gap markers say were
    /// dropped, at least (a loss whose span only partly overlaps the window
    /// counts its events known to be inside: its first and last).
    pub missing_at_least: u64,
    /// Whether a gap overlaps the primary window that lost events of this
    /// rule or events not attributed to any rule: the window's counts may
    /// be short by more than `missing_at_least`.
    pub gap_in_window: bool,
}

impl RuleStats {
    /// The primary window's count for `action`.
    pub fn count_for(&self, action: Action) -> u64 {
        self.by_action[usize::from(action.code())]
    }
}

/// What the projection can say about one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The exact statistics.
    Exact(RuleStats),
    /// The window reaches into folded history: ask the log.
    NeedsReplay,
}

/// A [`LossSpan`] as stored in snapshots: (count, first_at_us, last_at_us).
type Loss = (u64, i64, i64);

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct RuleState {
    /// Timestamps of recent events, sorted ascending, one vector per action.
    recent: [Vec<i64>; 4],
    folded_count: u64,
    folded_max_us: Option<i64>,
    /// Losses gap markers attributed to this rule, in log order.
    losses: Vec<Loss>,
}

/// What a loss spanning `[first, last]` with `count` events says about the
/// window `(lo, hi]`: whether it overlaps, and how many of its events are
/// certainly inside (all when the span is, else its ends that are).
fn loss_in_window((count, first, last): Loss, lo_us: i64, hi_us: i64) -> (bool, u64) {
    let inside = |t: i64| t > lo_us && t <= hi_us;
    let overlaps = first <= hi_us && last > lo_us;
    let known = if inside(first) && inside(last) {
        count
    } else {
        u64::from(inside(first)) + u64::from(inside(last) && count > 1)
    };
    (overlaps, known)
}

impl RuleState {
    fn insert(&mut self, action: Action, at_us: i64, horizon_us: i64) {
        if at_us <= horizon_us {
            self.fold_one(at_us);
            return;
        }
        let v = &mut self.recent[usize::from(action.code())];
        // Events nearly always arrive in time order: append without a search.
        if v.last().is_none_or(|&last| last <= at_us) {
            v.push(at_us);
            return;
        }
        let at = v.partition_point(|&t| t <= at_us);
        v.insert(at, at_us);
    }

    fn fold_one(&mut self, at_us: i64) {
        self.folded_count += 1;
        self.folded_max_us = Some(self.folded_max_us.map_or(at_us, |m| m.max(at_us)));
    }

    /// Folds every recent event at or before `horizon_us`.
    fn fold(&mut self, horizon_us: i64) {
        for v in &mut self.recent {
            let n = v.partition_point(|&t| t <= horizon_us);
            if n > 0 {
                let newest = v[n - 1];
                self.folded_count += n as u64;
                self.folded_max_us = Some(self.folded_max_us.map_or(newest, |m| m.max(newest)));
                v.drain(..n);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.folded_count == 0 && self.recent.iter().all(Vec::is_empty)
    }
}

/// One tenant: its rules (ids into [`State::rules`]) and its own fold
/// horizon.
#[derive(Debug, Clone, Default)]
struct Tenant {
    id: Box<str>,
    rules: Vec<u32>,
    /// The tenant's newest `enforced_at`.
    watermark_us: Option<i64>,
    /// The tenant's watermark at its last sweep.
    swept_at_us: Option<i64>,
}

/// The key of one (tenant, rule) pair, as a lookup confirms it: 32 bytes
/// in a dense table apart from the rules' states, so the keys of 10,000
/// rules stay in a core's cache while the states do not.
#[derive(Debug, Clone)]
struct PairKey {
    /// Index into [`State::tenants`].
    tenant: u32,
    id: RuleId,
}

/// Bytes of a rule id kept in place in its [`PairKey`].
const INLINE_ID: usize = 22;

/// A rule id: in place when it is at most [`INLINE_ID`] bytes (no pointer
/// to follow when a lookup compares it), boxed otherwise.
#[derive(Debug, Clone)]
enum RuleId {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Boxed(Box<str>),
}

impl RuleId {
    fn new(id: &str) -> Self {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID => {
                let mut bytes = [0u8; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                RuleId::Inline { len, bytes }
            }
            _ => RuleId::Boxed(id.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            RuleId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            RuleId::Boxed(id) => id.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // `new` copied these bytes whole from a `&str` and nothing
            // writes them afterwards, so the check cannot fail. (Checked,
            // not assumed: the crate keeps `unsafe` to its memory map, and
            // only snapshots and listings come here, never a lookup.)
            RuleId::Inline { .. } => std::str::from_utf8(self.as_bytes())
                .expect("an inline rule id holds the bytes of a str"),
            RuleId::Boxed(id) => id,
        }
    }
}

/// Counts events of `v` (sorted) in `(lo, hi]`.
fn count_in(v: &[i64], lo_us: i64, hi_us: i64) -> u64 {
    let hi = v.partition_point(|&t| t <= hi_us);
    let lo = v.partition_point(|&t| t <= lo_us);
    hi.saturating_sub(lo) as u64
}

/// The folded state, with interned ids: tenants and (tenant, rule) pairs
/// are dense `u32`s, found by one hash of the borrowed ids and one probe
/// ([`HashIndex`], confirmed by comparing bytes). Snapshots are written
/// in the shape of [`wire::State`] (maps sorted by id), the same bytes as
/// before the ids were interned.
#[derive(Debug, Clone, Default)]
struct State {
    tenants: Vec<Tenant>,
    tenant_ids: HashMap<Box<str>, u32, FxBuild>,
    /// Per rule id: its key, and apart (cold) its state.
    keys: Vec<PairKey>,
    rules: Vec<RuleState>,
    /// (tenant, rule) hash → rule ids.
    pairs: HashIndex,
    gap_markers: u64,
    dropped_events: u64,
    /// Losses no marker attributed to a rule, in log order.
    unattributed: Vec<Loss>,
    /// Entries skipped because they do not decode.
    undecodable: u64,
    /// Offsets lost to damage (hole entries).
    lost_entries: u64,
}

impl State {
    fn tenant(&self, tenant_id: &str) -> Option<&Tenant> {
        let &t = self.tenant_ids.get(tenant_id)?;
        Some(&self.tenants[t as usize])
    }

    fn find_rule(&self, tenant_id: &str, rule_id: &str) -> Option<u32> {
        self.find_rule_hashed(self.pairs.pair_hash(tenant_id, rule_id), tenant_id, rule_id)
    }

    /// [`State::find_rule`] given the pair's hash.
    #[inline]
    fn find_rule_hashed(&self, hash: u64, tenant_id: &str, rule_id: &str) -> Option<u32> {
        self.pairs
            .find(hash, |r| self.is_pair(r, tenant_id, rule_id))
    }

    /// Whether `r` is the id of (`tenant_id`, `rule_id`).
    #[inline]
    fn is_pair(&self, r: u32, tenant_id: &str, rule_id: &str) -> bool {
        let key = &self.keys[r as usize];
        key.id.as_bytes() == rule_id.as_bytes()
            && *self.tenants[key.tenant as usize].id == *tenant_id
    }

    /// Prefetches what confirming the pair `r` and folding into it load
    /// first: its key and its state.
    #[inline]
    fn prefetch_rule(&self, r: u32) {
        if let (Some(key), Some(rule)) = (self.keys.get(r as usize), self.rules.get(r as usize)) {
            prefetch(key);
            prefetch(rule);
        }
    }

    /// Prefetches where an event of `action` would be appended to the
    /// pair `r`'s timestamps.
    #[inline]
    fn prefetch_insert(&self, r: u32, action: Action) {
        if let Some(rule) = self.rules.get(r as usize) {
            // The last timestamp, which the append compares with (the new
            // one goes next to it, nearly always in the same line).
            let v = &rule.recent[usize::from(action.code())];
            prefetch(v.as_ptr().wrapping_add(v.len().saturating_sub(1)));
        }
    }

    fn rule(&self, tenant_id: &str, rule_id: &str) -> Option<&RuleState> {
        let r = self.find_rule(tenant_id, rule_id)?;
        Some(&self.rules[r as usize])
    }

    /// The id of the pair, added (with its tenant) when new.
    fn rule_id_of(&mut self, tenant_id: &str, rule_id: &str) -> u32 {
        if let Some(r) = self.find_rule(tenant_id, rule_id) {
            return r;
        }
        let tenant = match self.tenant_ids.get(tenant_id) {
            Some(&t) => t,
            None => {
                let t = u32::try_from(self.tenants.len()).expect("fewer than 2^32 tenants");
                self.tenants.push(Tenant {
                    id: tenant_id.into(),
                    ..Tenant::default()
                });
                self.tenant_ids.insert(tenant_id.into(), t);
                t
            }
        };
        let r = self.pairs.push(self.pairs.pair_hash(tenant_id, rule_id));
        debug_assert_eq!(r as usize, self.rules.len());
        debug_assert_eq!(self.keys.len(), self.rules.len());
        self.keys.push(PairKey {
            tenant,
            id: RuleId::new(rule_id),
        });
        self.rules.push(RuleState::default());
        self.tenants[tenant as usize].rules.push(r);
        r
    }

    /// Builds the interned state from a snapshot's.
    fn from_wire(wire: wire::State) -> Self {
        let mut state = State {
            gap_markers: wire.gap_markers,
            dropped_events: wire.dropped_events,
            unattributed: wire.unattributed,
            undecodable: wire.undecodable,
            lost_entries: wire.lost_entries,
            ..State::default()
        };
        let mut tenants: Vec<(String, wire::TenantState)> = wire.tenants.into_iter().collect();
        tenants.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (tenant_id, tenant) in tenants {
            let mut rules: Vec<(String, RuleState)> = tenant.rules.into_iter().collect();
            rules.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (rule_id, rule) in rules {
                let r = state.rule_id_of(&tenant_id, &rule_id);
                state.rules[r as usize] = rule;
            }
            // A tenant with no rules was never written, but a snapshot may
            // hold one: keep it, so it snapshots back the same.
            let t = match state.tenant_ids.get(tenant_id.as_str()) {
                Some(&t) => t,
                None => {
                    let t = u32::try_from(state.tenants.len()).expect("fewer than 2^32 tenants");
                    state.tenants.push(Tenant {
                        id: tenant_id.as_str().into(),
                        ..Tenant::default()
                    });
                    state.tenant_ids.insert(tenant_id.into(), t);
                    t
                }
            };
            let t = &mut state.tenants[t as usize];
            t.watermark_us = tenant.watermark_us;
            t.swept_at_us = tenant.swept_at_us;
        }
        state
    }

    /// The snapshot's shape of the state, borrowed, maps sorted by id.
    fn to_wire(&self) -> wire::StateOut<'_> {
        let mut tenants: Vec<(&str, wire::TenantOut<'_>)> = self
            .tenants
            .iter()
            .map(|t| {
                let mut rules: Vec<(&str, &RuleState)> = t
                    .rules
                    .iter()
                    .map(|&r| (self.keys[r as usize].id.as_str(), &self.rules[r as usize]))
                    .collect();
                rules.sort_unstable_by(|a, b| a.0.cmp(b.0));
                let out = wire::TenantOut {
                    rules: wire::Sorted(rules),
                    watermark_us: t.watermark_us,
                    swept_at_us: t.swept_at_us,
                };
                (&*t.id, out)
            })
            .collect();
        tenants.sort_unstable_by(|a, b| a.0.cmp(b.0));
        wire::StateOut {
            tenants: wire::Sorted(tenants),
            gap_markers: self.gap_markers,
            dropped_events: self.dropped_events,
            unattributed: &self.unattributed,
            undecodable: self.undecodable,
            lost_entries: self.lost_entries,
        }
    }
}

/// The snapshot format (version 3 of the projection): the state as nested
/// maps of owned ids, as it was kept in memory before the ids were
/// interned. Serialised with rmp_serde's defaults (a struct is an array of
/// its fields in order), maps sorted by id, so the bytes depend only on the
/// state.
mod wire {
    use std::collections::HashMap;

    use serde::{Deserialize, Serialize, Serializer};

    use super::{Loss, RuleState};

    #[derive(Debug, Clone, Default, Deserialize)]
    pub(super) struct TenantState {
        pub(super) rules: HashMap<String, RuleState>,
        pub(super) watermark_us: Option<i64>,
        pub(super) swept_at_us: Option<i64>,
    }

    #[derive(Debug, Clone, Default, Deserialize)]
    pub(super) struct State {
        pub(super) tenants: HashMap<String, TenantState>,
        pub(super) gap_markers: u64,
        pub(super) dropped_events: u64,
        pub(super) unattributed: Vec<Loss>,
        pub(super) undecodable: u64,
        /// Defaulted so checkpoints written before holes existed still
        /// restore.
        #[serde(default)]
        pub(super) lost_entries: u64,
    }

    /// Pairs already sorted by key, written as a map.
    pub(super) struct Sorted<'a, V>(pub(super) Vec<(&'a str, V)>);

    impl<V: Serialize> Serialize for Sorted<'_, V> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
        }
    }

    #[derive(Serialize)]
    pub(super) struct TenantOut<'a> {
        pub(super) rules: Sorted<'a, &'a RuleState>,
        pub(super) watermark_us: Option<i64>,
        pub(super) swept_at_us: Option<i64>,
    }

    #[derive(Serialize)]
    pub(super) struct StateOut<'a> {
        pub(super) tenants: Sorted<'a, TenantOut<'a>>,
        pub(super) gap_markers: u64,
        pub(super) dropped_events: u64,
        pub(super) unattributed: &'a [Loss],
        pub(super) undecodable: u64,
        pub(super) lost_entries: u64,
    }
}

/// The trigger-statistics projection.
///
/// ```
/// use enforcelog::projection::TriggerStats;
/// use std::time::Duration;
/// let stats = TriggerStats::with_windows(vec![
///     Duration::from_secs(3600),
///     Duration::from_secs(24 * 3600),
///     Duration::from_secs(30 * 24 * 3600),
/// ]);
/// assert_eq!(stats.windows().len(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct TriggerStats {
    windows: Vec<Duration>,
    windows_us: Vec<i64>,
    primary_us: i64,
    longest_us: i64,
    state: State,
}

impl Default for TriggerStats {
    fn default() -> Self {
        Self::with_windows(vec![Duration::from_secs(30 * 24 * 3600)])
    }
}

fn duration_us(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX).max(1)
}

impl TriggerStats {
    /// A projection with these windows; the last one is the primary window
    /// (`trigger_count`, `by_action`). An empty list means 30 days.
    pub fn with_windows(windows: Vec<Duration>) -> Self {
        let windows = if windows.is_empty() {
            vec![Duration::from_secs(30 * 24 * 3600)]
        } else {
            windows
        };
        let windows_us: Vec<i64> = windows.iter().map(|&d| duration_us(d)).collect();
        let primary_us = *windows_us.last().unwrap_or(&DAYS_30_US);
        let longest_us = windows_us.iter().copied().max().unwrap_or(DAYS_30_US);
        Self {
            windows,
            windows_us,
            primary_us,
            longest_us,
            state: State::default(),
        }
    }

    /// The configured windows.
    pub fn windows(&self) -> &[Duration] {
        &self.windows
    }

    /// The newest `enforced_at` seen, over all tenants.
    pub fn watermark_us(&self) -> Option<i64> {
        self.state
            .tenants
            .iter()
            .filter_map(|t| t.watermark_us)
            .max()
    }

    /// The newest `enforced_at` of one tenant: its fold horizon is this
    /// minus the longest window.
    pub fn tenant_watermark_us(&self, tenant_id: &str) -> Option<i64> {
        self.state.tenant(tenant_id)?.watermark_us
    }

    /// The most (tenant, rule) pairs that share one hash in the interning
    /// table: how many pairs one event's lookup may compare at most. For
    /// tests of the keyed hash (feature `test-util`); not a stable API.
    #[cfg(feature = "test-util")]
    #[doc(hidden)]
    pub fn longest_pair_chain(&self) -> usize {
        self.state.pairs.longest_chain()
    }

    /// Log entries skipped because they do not decode (not store payloads).
    pub fn undecodable(&self) -> u64 {
        self.state.undecodable
    }

    /// Gap markers seen and the events they say were dropped.
    pub fn gaps(&self) -> (u64, u64) {
        (self.state.gap_markers, self.state.dropped_events)
    }

    /// Entries recorded and later lost to damage on disk (offsets of holes).
    pub fn lost(&self) -> u64 {
        self.state.lost_entries
    }

    /// Number of (tenant, rule) pairs.
    pub fn rule_count(&self) -> usize {
        self.state.rules.len()
    }

    fn rule_states(&self) -> impl Iterator<Item = &RuleState> {
        self.state.rules.iter()
    }

    /// Number of recent (unfolded) events held, over all rules.
    pub fn recent_event_count(&self) -> usize {
        self.rule_states()
            .map(|r| r.recent.iter().map(Vec::len).sum::<usize>())
            .sum()
    }

    fn horizon_us(&self, tenant: &Tenant) -> i64 {
        tenant
            .watermark_us
            .map_or(i64::MIN, |w| w.saturating_sub(self.longest_us))
    }

    fn rule_mut(&mut self, tenant_id: &str, rule_id: &str) -> &mut RuleState {
        let r = self.state.rule_id_of(tenant_id, rule_id);
        &mut self.state.rules[r as usize]
    }

    /// Folds one event: one hash of the ids, one probe, then the tenant's
    /// horizon and an append (or ordered insert) to the rule's vector.
    fn record(&mut self, tenant_id: &str, rule_id: &str, action: Action, at_us: i64) {
        let r = self.state.rule_id_of(tenant_id, rule_id);
        self.record_rule(r, action, at_us);
    }

    /// Folds one event of the pair `r`.
    #[inline]
    fn record_rule(&mut self, r: u32, action: Action, at_us: i64) {
        let r = r as usize;
        let t = self.state.keys[r].tenant as usize;
        let horizon = self.horizon_us(&self.state.tenants[t]);
        self.state.rules[r].insert(action, at_us, horizon);
        let tenant = &mut self.state.tenants[t];
        if tenant.watermark_us.is_none_or(|w| at_us > w) {
            tenant.watermark_us = Some(at_us);
            maybe_sweep(tenant, &mut self.state.rules, self.longest_us);
        }
    }

    fn record_gap(&mut self, gap: &crate::event::GapMarker) {
        self.state.gap_markers += 1;
        self.state.dropped_events += gap.dropped;
        let as_loss = |s: LossSpan| (s.count, s.first_at_us, s.last_at_us);
        for loss in &gap.losses {
            self.rule_mut(&loss.tenant_id, &loss.rule_id)
                .losses
                .push(as_loss(loss.span));
        }
        if let Some(span) = gap.unattributed {
            self.state.unattributed.push(as_loss(span));
        }
    }

    /// What the gap markers say about one rule's primary window ending at
    /// `t`: (a gap overlaps it, events certainly missing from it).
    fn gaps_in_window(&self, rule: Option<&RuleState>, t: i64) -> (bool, u64) {
        let lo = t.saturating_sub(self.primary_us);
        let mut overlaps = false;
        let mut missing = 0u64;
        for &loss in rule.into_iter().flat_map(|r| &r.losses) {
            let (o, known) = loss_in_window(loss, lo, t);
            overlaps |= o;
            missing = missing.saturating_add(known);
        }
        overlaps |= self
            .state
            .unattributed
            .iter()
            .any(|&loss| loss_in_window(loss, lo, t).0);
        (overlaps, missing)
    }

    /// Adds what the gap markers say to statistics answered for `stats`'s
    /// rule (from the projection or from the log).
    pub fn with_gaps(&self, mut stats: RuleStats) -> RuleStats {
        let rule = self.state.rule(&stats.tenant_id, &stats.rule_id);
        let (gap, missing) = self.gaps_in_window(rule, stats.as_of_us);
        stats.gap_in_window = gap;
        stats.missing_at_least = missing;
        stats
    }

    /// The statistics of one rule as of `as_of_us`, reflecting `offset`.
    pub fn answer(&self, tenant_id: &str, rule_id: &str, as_of_us: i64, offset: u64) -> Answer {
        let rule = self.state.rule(tenant_id, rule_id);
        let answer = match rule {
            None => Answer::Exact(self.empty(tenant_id, rule_id, as_of_us, offset)),
            Some(rule) => self.answer_rule(tenant_id, rule_id, rule, as_of_us, offset),
        };
        match answer {
            Answer::Exact(stats) => Answer::Exact(self.with_gaps(stats)),
            Answer::NeedsReplay => Answer::NeedsReplay,
        }
    }

    fn empty(&self, tenant_id: &str, rule_id: &str, as_of_us: i64, offset: u64) -> RuleStats {
        RuleStats {
            tenant_id: tenant_id.to_string(),
            rule_id: rule_id.to_string(),
            as_of_us,
            trigger_count: 0,
            window_counts: self.windows.iter().map(|&w| (w, 0)).collect(),
            last_triggered_at_us: None,
            total_count: 0,
            by_action: [0; 4],
            offset,
            missing_at_least: 0,
            gap_in_window: false,
        }
    }

    fn answer_rule(
        &self,
        tenant_id: &str,
        rule_id: &str,
        rule: &RuleState,
        t: i64,
        offset: u64,
    ) -> Answer {
        if let Some(folded) = rule.folded_max_us {
            if t.saturating_sub(self.longest_us) < folded {
                return Answer::NeedsReplay;
            }
        }
        let count = |w_us: i64| -> u64 {
            rule.recent
                .iter()
                .map(|v| count_in(v, t.saturating_sub(w_us), t))
                .sum()
        };
        let mut by_action = [0u64; 4];
        for (i, v) in rule.recent.iter().enumerate() {
            by_action[i] = count_in(v, t.saturating_sub(self.primary_us), t);
        }
        let last_recent = rule
            .recent
            .iter()
            .filter_map(|v| v[..v.partition_point(|&x| x <= t)].last().copied())
            .max();
        let total = rule.folded_count
            + rule
                .recent
                .iter()
                .map(|v| v.partition_point(|&x| x <= t) as u64)
                .sum::<u64>();
        Answer::Exact(RuleStats {
            tenant_id: tenant_id.to_string(),
            rule_id: rule_id.to_string(),
            as_of_us: t,
            trigger_count: count(self.primary_us),
            window_counts: self
                .windows
                .iter()
                .zip(&self.windows_us)
                .map(|(&w, &w_us)| (w, count(w_us)))
                .collect(),
            // An event folded on arrival can be newer than a recent one not
            // swept yet; on this exact path every folded event is <= T.
            last_triggered_at_us: last_recent.max(rule.folded_max_us),
            total_count: total,
            by_action,
            offset,
            missing_at_least: 0,
            gap_in_window: false,
        })
    }

    /// The (tenant, rule) pairs of one tenant, in rule order (UTF-8 bytes).
    pub fn rules_of<'a>(&'a self, tenant_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        let mut rules: Vec<&str> = self
            .state
            .tenant(tenant_id)
            .into_iter()
            .flat_map(|t| &t.rules)
            .filter(|&&r| !self.state.rules[r as usize].is_empty())
            .map(|&r| self.state.keys[r as usize].id.as_str())
            .collect();
        rules.sort_unstable();
        rules.into_iter()
    }

    /// Every (tenant, rule) pair, sorted by tenant then rule (UTF-8 bytes).
    pub fn all_rules(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut pairs: Vec<(&str, &str)> = self
            .state
            .keys
            .iter()
            .map(|k| (&*self.state.tenants[k.tenant as usize].id, k.id.as_str()))
            .collect();
        pairs.sort_unstable();
        pairs.into_iter()
    }

    /// Computes exact statistics by brute force from entries (the log
    /// replayed): how the store answers [`Answer::NeedsReplay`].
    pub fn from_entries<'a>(
        &self,
        tenant_id: &str,
        rule_id: &str,
        as_of_us: i64,
        offset: u64,
        events: impl Iterator<Item = (Action, i64)> + 'a,
    ) -> RuleStats {
        let mut stats = self.empty(tenant_id, rule_id, as_of_us, offset);
        for (action, at) in events {
            if at > as_of_us {
                continue;
            }
            stats.total_count += 1;
            stats.last_triggered_at_us = Some(stats.last_triggered_at_us.map_or(at, |l| l.max(at)));
            for ((_, count), &w_us) in stats.window_counts.iter_mut().zip(&self.windows_us) {
                if at > as_of_us.saturating_sub(w_us) {
                    *count += 1;
                }
            }
            if at > as_of_us.saturating_sub(self.primary_us) {
                stats.trigger_count += 1;
                stats.by_action[usize::from(action.code())] += 1;
            }
        }
        stats
    }
}

impl Projection for TriggerStats {
    fn name(&self) -> &str {
        "trigger_stats"
    }

    /// 3: a fold horizon per tenant, gap losses per rule, undecodable
    /// entries counted (2 had one global horizon; 1 keyed rules by the pair).
    fn version(&self) -> u32 {
        3
    }

    fn apply(&mut self, _offset: u64, entry: &Entry) {
        match entry {
            Entry::Event(e) => self.record(&e.tenant_id, &e.rule_id, e.action, e.enforced_at_us),
            Entry::Gap(g) => self.record_gap(g),
            Entry::Lost(_) => self.state.lost_entries += 1,
        }
    }

    fn skip_undecodable(&mut self, _offset: u64) {
        self.state.undecodable += 1;
    }

    fn keys_only(&self) -> bool {
        true
    }

    fn apply_keys(&mut self, keys: &EventKeys<'_>) {
        self.record(
            keys.tenant_id,
            keys.rule_id,
            keys.action,
            keys.enforced_at_us,
        );
    }

    /// Folds the block in order, `GROUP` events at a time, in two passes
    /// over each group. The first only reads and prefetches: it hashes each
    /// event's pair and prefetches the pair's slot in the index, and
    /// `SLOT_LAG` events behind, reads that slot for a likely id and
    /// prefetches its key and state. The second folds the events in order,
    /// prefetching the end of the timestamp vector `TAIL_AHEAD` events
    /// ahead: it confirms each likely id (or looks the pair up, adding it
    /// when new) and folds the event, exactly as
    /// [`Projection::apply_keys`] would. The state changes only there, in
    /// event order; the cache misses of a group's events overlap instead
    /// of following one another.
    fn apply_keys_block(&mut self, block: &[EventKeys<'_>]) {
        for group in block.chunks(GROUP) {
            let n = group.len();
            let mut hashes = [0u64; GROUP];
            let mut likely = [u32::MAX; GROUP];
            for j in 0..n + SLOT_LAG {
                if let Some(keys) = group.get(j) {
                    hashes[j] = self.state.pairs.pair_hash(keys.tenant_id, keys.rule_id);
                    self.state.pairs.prefetch(hashes[j]);
                }
                if let Some(k) = j.checked_sub(SLOT_LAG).filter(|&k| k < n) {
                    // The first id under the hash: nearly always the pair's
                    // (confirmed when it is folded). Only a hint until then.
                    if let Some(id) = self.state.pairs.find(hashes[k], |_| true) {
                        likely[k] = id;
                        self.state.prefetch_rule(id);
                    }
                }
            }
            for (k, keys) in group.iter().enumerate().take(TAIL_AHEAD) {
                self.state.prefetch_insert(likely[k], keys.action);
            }
            for (i, keys) in group.iter().enumerate() {
                if let Some(ahead) = group.get(i + TAIL_AHEAD) {
                    self.state
                        .prefetch_insert(likely[i + TAIL_AHEAD], ahead.action);
                }
                let (tenant_id, rule_id) = (keys.tenant_id, keys.rule_id);
                let r =
                    if likely[i] != u32::MAX && self.state.is_pair(likely[i], tenant_id, rule_id) {
                        likely[i]
                    } else {
                        match self.state.find_rule_hashed(hashes[i], tenant_id, rule_id) {
                            Some(r) => r,
                            None => self.state.rule_id_of(tenant_id, rule_id),
                        }
                    };
                self.record_rule(r, keys.action, keys.enforced_at_us);
            }
        }
    }

    /// Merges the fold of a later range of the log (a `TriggerStats` with
    /// the same windows). Answers depend only on the set of events, so per
    /// tenant the watermark is the greater, and per rule the recent vectors
    /// are merged in order, the folded counts summed, the greatest folded
    /// time kept and the losses appended (log order: ours, then later's);
    /// then every tenant is swept to its horizon ([`Projection::normalize`]). What
    /// either half folded is at or before its own horizon, so at or before
    /// the union's: nothing folded needs unfolding. The result is the
    /// normalized state of the in-order fold ([`Projection::normalize`]).
    fn merge_later(&mut self, mut later: Box<dyn Projection>) -> Result<(), Box<dyn Projection>> {
        let Some(other) = (&mut *later as &mut dyn std::any::Any).downcast_mut::<Self>() else {
            return Err(later);
        };
        if other.windows_us != self.windows_us {
            return Err(later);
        }
        let other = std::mem::take(&mut other.state);
        self.merge_state(other);
        Ok(())
    }

    /// Sweeps every tenant to its horizon: what is at or before it is
    /// folded, what is after it recent.
    fn normalize(&mut self) {
        let State { tenants, rules, .. } = &mut self.state;
        for tenant in tenants.iter_mut() {
            sweep(tenant, rules, self.longest_us);
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        let windows: Vec<i64> = self.windows_us.clone();
        rmp_serde::to_vec(&(windows, self.state.to_wire())).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (windows, state): (Vec<i64>, wire::State) =
            rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        if windows != self.windows_us {
            return Err(format!(
                "checkpoint was written with windows {windows:?} µs, this projection has {:?} µs",
                self.windows_us
            ));
        }
        self.state = State::from_wire(state);
        Ok(())
    }

    fn reset(&mut self) {
        self.state = State::default();
    }

    fn fresh(&self) -> Box<dyn Projection> {
        Box::new(Self::with_windows(self.windows.clone()))
    }
}

impl TriggerStats {
    fn merge_state(&mut self, other: State) {
        let longest_us = self.longest_us;
        let me = &mut self.state;
        me.gap_markers += other.gap_markers;
        me.dropped_events += other.dropped_events;
        me.undecodable += other.undecodable;
        me.lost_entries += other.lost_entries;
        me.unattributed.extend(other.unattributed);
        // The tenants first, so that each rule below knows its tenant's
        // merged watermark. Every tenant of `later` has a rule (it was made
        // for one), except in a restored snapshot that held an empty one.
        for tenant in &other.tenants {
            let t = match me.tenant_ids.get(&*tenant.id) {
                Some(&t) => t as usize,
                None => {
                    let t = me.tenants.len();
                    me.tenant_ids.insert(tenant.id.clone(), t as u32);
                    me.tenants.push(Tenant {
                        id: tenant.id.clone(),
                        ..Tenant::default()
                    });
                    t
                }
            };
            let mine = &mut me.tenants[t];
            mine.watermark_us = mine.watermark_us.max(tenant.watermark_us);
        }
        for (key, rule) in other.keys.iter().zip(other.rules) {
            let tenant = &other.tenants[key.tenant as usize];
            let r = me.rule_id_of(&tenant.id, key.id.as_str()) as usize;
            let mine = &mut me.rules[r];
            // What the normalization below would fold anyway is folded
            // before the merge, so it is neither copied nor merged: in a
            // replay split in two, most of the earlier half's events are
            // behind the later half's horizon.
            let t = me.keys[r].tenant as usize;
            if let Some(watermark) = me.tenants[t].watermark_us {
                mine.fold(watermark.saturating_sub(longest_us));
            }
            merge_rule(mine, rule);
        }
        // Every tenant, not only those of `later`: a tenant only the
        // earlier half saw may hold events its own sweeps have not reached
        // yet, which the normalized in-order fold has folded.
        self.normalize();
    }
}

/// Adds the state of the same rule from a later range of the log.
fn merge_rule(mine: &mut RuleState, later: RuleState) {
    for (v, w) in mine.recent.iter_mut().zip(later.recent) {
        if w.is_empty() {
            continue;
        }
        if v.is_empty() {
            *v = w;
            continue;
        }
        if v.last().is_some_and(|&last| last <= w[0]) {
            v.extend(w);
            continue;
        }
        let mut merged = Vec::with_capacity(v.len() + w.len());
        let (mut a, mut b) = (v.iter().peekable(), w.iter().peekable());
        while let (Some(&&x), Some(&&y)) = (a.peek(), b.peek()) {
            if x <= y {
                merged.push(x);
                a.next();
            } else {
                merged.push(y);
                b.next();
            }
        }
        merged.extend(a);
        merged.extend(b);
        *v = merged;
    }
    mine.folded_count += later.folded_count;
    mine.folded_max_us = mine.folded_max_us.max(later.folded_max_us);
    mine.losses.extend(later.losses);
}

/// Folds the tenant's rules once its watermark moved far enough since its
/// last sweep. Deterministic: depends only on the events applied, in order.
fn maybe_sweep(tenant: &mut Tenant, rules: &mut [RuleState], longest_us: i64) {
    let Some(watermark) = tenant.watermark_us else {
        return;
    };
    let step = (longest_us / SWEEP_FRACTION).max(1);
    if tenant
        .swept_at_us
        .is_some_and(|s| watermark.saturating_sub(s) < step)
    {
        return;
    }
    sweep(tenant, rules, longest_us);
}

/// Folds every rule of the tenant to its horizon (its watermark minus the
/// longest window).
fn sweep(tenant: &mut Tenant, rules: &mut [RuleState], longest_us: i64) {
    let Some(watermark) = tenant.watermark_us else {
        return;
    };
    let horizon = watermark.saturating_sub(longest_us);
    // The rules of a tenant lie anywhere in `rules`: load each state
    // [`SWEEP_AHEAD`] rules before its turn, and the heads of its
    // timestamp vectors half that before.
    let ids = &tenant.rules;
    for (i, &r) in ids.iter().enumerate() {
        if let Some(&ahead) = ids.get(i + SWEEP_AHEAD) {
            prefetch(&rules[ahead as usize]);
        }
        if let Some(&near) = ids.get(i + SWEEP_AHEAD / 2) {
            for v in &rules[near as usize].recent {
                prefetch(v.as_ptr());
            }
        }
        rules[r as usize].fold(horizon);
    }
    tenant.swept_at_us = Some(watermark);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 24 * 3600 * 1_000_000;

    fn exact(a: Answer) -> RuleStats {
        match a {
            Answer::Exact(s) => s,
            Answer::NeedsReplay => panic!("needs replay"),
        }
    }

    #[test]
    fn a_block_folds_as_one_by_one_when_every_pair_shares_one_hash() {
        // Each lookup's first candidate is then some other pair (the
        // block's hint is wrong), and new pairs join the one chain.
        let ids: Vec<(String, String)> = (0..200)
            .map(|i| (format!("t-{}", i % 7), format!("r-{}", (i * 37) % 61)))
            .collect();
        let keys: Vec<EventKeys<'_>> = ids
            .iter()
            .enumerate()
            .map(|(i, (t, r))| EventKeys {
                tenant_id: t,
                rule_id: r,
                action: Action::ALL[i % 4],
                run_id: None,
                enforced_at_us: (i as i64 % 13) * DAY,
                offset: i as u64,
            })
            .collect();
        let colliding = || {
            let mut p = TriggerStats::default();
            p.state.pairs.collide_all = true;
            p
        };
        let (mut one_by_one, mut in_blocks) = (colliding(), colliding());
        for k in &keys {
            one_by_one.apply_keys(k);
        }
        for block in keys.chunks(37) {
            in_blocks.apply_keys_block(block);
        }
        assert_eq!(
            in_blocks.state.pairs.longest_chain(),
            in_blocks.rule_count()
        );
        assert_eq!(one_by_one.snapshot(), in_blocks.snapshot());
        assert_eq!(one_by_one.rule_count(), in_blocks.rule_count());
    }

    #[test]
    fn rule_ids_round_trip_in_place_and_boxed() {
        // Both sides of the inline limit, multi-byte characters across it,
        // the empty id: each kept exactly, and the key stays 32 bytes.
        let long = "r".repeat(INLINE_ID + 1);
        let split = format!("{}é", "r".repeat(INLINE_ID - 1));
        for id in ["", "r-1", &"r".repeat(INLINE_ID), &long, &split, "规则-二"] {
            let kept = RuleId::new(id);
            assert_eq!(kept.as_str(), id);
            assert_eq!(kept.as_bytes(), id.as_bytes());
            assert_eq!(
                matches!(kept, RuleId::Inline { .. }),
                id.len() <= INLINE_ID,
                "{id:?}"
            );
        }
        assert_eq!(std::mem::size_of::<PairKey>(), 32);
        // Two rules whose ids share the first 22 bytes stay apart.
        let mut p = TriggerStats::default();
        let (a, b) = (format!("{long}a"), format!("{long}b"));
        p.record("t", &a, Action::Blocked, 10);
        p.record("t", &b, Action::Killed, 11);
        p.record("t", &split, Action::Killed, 12);
        assert_eq!(p.rule_count(), 3);
        let rules: Vec<&str> = p.rules_of("t").collect();
        let mut want = vec![a.as_str(), b.as_str(), split.as_str()];
        want.sort_unstable();
        assert_eq!(rules, want);
    }

    #[test]
    fn window_is_half_open_at_t_minus_30_days() {
        let mut p = TriggerStats::default();
        let t = 100 * DAY;
        for at in [t - 30 * DAY, t - 30 * DAY + 1, t, t + 1] {
            p.record("a", "r", Action::Blocked, at);
        }
        let s = exact(p.answer("a", "r", t, 4));
        assert_eq!(s.trigger_count, 2); // t-30d excluded, t included, t+1 after
        assert_eq!(s.total_count, 3);
        assert_eq!(s.last_triggered_at_us, Some(t));
        assert_eq!(s.count_for(Action::Blocked), 2);
    }

    #[test]
    fn order_does_not_matter_and_old_events_fold() {
        let events: Vec<i64> = (0..200).map(|i| (i * 7919) % 200 * DAY / 2).collect();
        let mut forward = TriggerStats::default();
        let mut backward = TriggerStats::default();
        for &at in &events {
            forward.record("a", "r", Action::Killed, at);
        }
        for &at in events.iter().rev() {
            backward.record("a", "r", Action::Killed, at);
        }
        let t = 100 * DAY;
        assert_eq!(
            forward.answer("a", "r", t, 0),
            backward.answer("a", "r", t, 0)
        );
        assert!(forward.recent_event_count() <= 61);
        assert_eq!(
            forward.answer("a", "r", t - 40 * DAY, 0),
            Answer::NeedsReplay
        );
    }

    /// Regression (issue 13, item 8): one tenant's far-future event folded
    /// every tenant's history (one global horizon), so every "as of now"
    /// answer needed the log. The horizon is per tenant now.
    #[test]
    fn a_far_future_event_of_one_tenant_folds_no_other_tenants_history() {
        let mut p = TriggerStats::default();
        let t = 1_000 * DAY;
        for i in 0..40 {
            p.record("a", "r", Action::Blocked, t - i * DAY);
            p.record("b", "r", Action::Killed, t - i * DAY);
        }
        p.record("rogue", "r", Action::Stopped, 3_000_000 * DAY);
        for tenant in ["a", "b"] {
            let s = exact(p.answer(tenant, "r", t, 81));
            assert_eq!((s.trigger_count, s.total_count), (30, 40), "{tenant}");
        }
        assert_eq!(p.tenant_watermark_us("a"), Some(t));
        assert_eq!(p.watermark_us(), Some(3_000_000 * DAY));
        assert_eq!(exact(p.answer("rogue", "r", t, 81)).total_count, 0);
    }

    #[test]
    fn a_loss_counts_only_the_events_known_to_be_in_the_window() {
        // Window (10, 20].
        assert_eq!(loss_in_window((5, 11, 20), 10, 20), (true, 5));
        assert_eq!(loss_in_window((5, 5, 15), 10, 20), (true, 1));
        assert_eq!(loss_in_window((5, 15, 25), 10, 20), (true, 1));
        assert_eq!(loss_in_window((5, 5, 25), 10, 20), (true, 0));
        assert_eq!(loss_in_window((5, 1, 10), 10, 20), (false, 0));
        assert_eq!(loss_in_window((5, 21, 30), 10, 20), (false, 0));
        assert_eq!(loss_in_window((1, 15, 15), 10, 20), (true, 1));
    }

    #[test]
    fn snapshot_roundtrip() {
        let mut p = TriggerStats::default();
        p.record("t", "r", Action::Aborted, 5);
        let mut q = TriggerStats::default();
        q.restore(&p.snapshot()).unwrap();
        assert_eq!(p.answer("t", "r", 10, 1), q.answer("t", "r", 10, 1));
        let mut other = TriggerStats::with_windows(vec![Duration::from_secs(60)]);
        assert!(other.restore(&p.snapshot()).is_err());
    }
}
