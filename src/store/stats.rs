//! Trigger statistics queries, answered from the projection.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::peers::View;
use super::{decode_entry, Store};
use crate::error::{Error, Result};
use crate::event::{check_id, Action, Entry, Field};
use crate::log::Log;
use crate::projection::{Answer, Host, Projection, RuleStats, TriggerStats};
use crate::record::now_us;
use crate::timestamp::format_us;

/// A query waits for the projections as long as they make progress, and
/// gives up after this long without any.
const CATCH_UP_STALL: Duration = Duration::from_secs(10);

impl Store {
    /// Waits until the projections reflect everything committed when the
    /// call began (read-your-writes), then returns the offset they reflect.
    fn caught_up(&self) -> Result<u64> {
        let target = self.inner.log().next_offset();
        let mut reached = self.inner.projections.applied_offset();
        while reached < target {
            let before = reached;
            reached = self.inner.projections.wait_for(target, CATCH_UP_STALL);
            if let Some(reason) = self.inner.projections.failure() {
                return Err(Error::ProjectionStalled { reason });
            }
            if reached < target && reached == before {
                return Err(Error::ProjectionStalled {
                    reason: format!(
                        "no progress for {CATCH_UP_STALL:?}: at offset {reached} of {target}"
                    ),
                });
            }
        }
        Ok(reached)
    }

    /// Statistics of one (tenant, rule) as of `as_of_us` (default: now).
    ///
    /// Answered from the trigger projection in O(log n) of the events in
    /// the window; an as-of instant whose window reaches into history the
    /// projection has folded is answered exactly from the log instead.
    pub fn stats(
        &self,
        tenant_id: &str,
        rule_id: &str,
        as_of_us: Option<i64>,
    ) -> Result<RuleStats> {
        check_id(Field::TenantId, tenant_id).map_err(Error::InvalidFilter)?;
        check_id(Field::RuleId, rule_id).map_err(Error::InvalidFilter)?;
        let keys = [(tenant_id.to_string(), rule_id.to_string())];
        let view = self.inner.peers.current();
        let mut all = self.stats_of(&view, &keys, as_of_us.unwrap_or_else(now_us))?;
        Ok(all.remove(0))
    }

    /// Statistics of every rule of a tenant that fired at or before
    /// `as_of_us`, sorted by rule (UTF-8 bytes).
    pub fn stats_for_tenant(
        &self,
        tenant_id: &str,
        as_of_us: Option<i64>,
    ) -> Result<Vec<RuleStats>> {
        check_id(Field::TenantId, tenant_id).map_err(Error::InvalidFilter)?;
        self.caught_up()?;
        let view = self.inner.peers.current();
        let keys = self.keys_of_every_shard(&view, |p| {
            p.rules_of(tenant_id)
                .map(|rule| (tenant_id.to_string(), rule.to_string()))
                .collect()
        });
        self.listed(&view, &keys, as_of_us)
    }

    /// Statistics of every (tenant, rule) that fired at or before
    /// `as_of_us`, sorted by tenant then rule (UTF-8 bytes). For operators.
    pub fn stats_all(&self, as_of_us: Option<i64>) -> Result<Vec<RuleStats>> {
        self.caught_up()?;
        let view = self.inner.peers.current();
        let keys = self.keys_of_every_shard(&view, |p| {
            p.all_rules()
                .map(|(t, r)| (t.to_string(), r.to_string()))
                .collect()
        });
        self.listed(&view, &keys, as_of_us)
    }

    /// The (tenant, rule) pairs `list` finds in any shard's trigger
    /// projection, sorted by tenant then rule, each once.
    fn keys_of_every_shard(
        &self,
        view: &View,
        list: impl Fn(&TriggerStats) -> Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut keys = self.with_trigger_stats(|p, _| list(p)).unwrap_or_default();
        if !view.peers.is_empty() {
            for peer in &view.peers {
                keys.extend(
                    peer.host
                        .with::<TriggerStats, _>(|p, _| list(p))
                        .unwrap_or_default(),
                );
            }
            keys.sort_unstable();
            keys.dedup();
        }
        keys
    }

    fn listed(
        &self,
        view: &View,
        keys: &[(String, String)],
        as_of_us: Option<i64>,
    ) -> Result<Vec<RuleStats>> {
        let stats = self.stats_of(view, keys, as_of_us.unwrap_or_else(now_us))?;
        Ok(stats.into_iter().filter(|s| s.total_count > 0).collect())
    }

    /// Runs `f` on the built-in trigger projection.
    fn with_trigger_stats<R>(&self, f: impl FnOnce(&TriggerStats, u64) -> R) -> Option<R> {
        self.inner.projections.with::<TriggerStats, R>(f)
    }

    /// Runs `f` on the registered projection of type `P` with the offset it
    /// reflects, after it caught up with everything committed when the call
    /// began. `None` if no projection of that type is registered.
    pub fn with_projection<P: Projection, R>(
        &self,
        f: impl FnOnce(&P, u64) -> R,
    ) -> Result<Option<R>> {
        self.caught_up()?;
        Ok(self.inner.projections.with::<P, R>(f))
    }

    /// The statistics of `keys` summed over every shard of the directory:
    /// this store's own (caught up with everything it committed) and the
    /// others as of their last refresh.
    /// One view of the peers serves a whole call, so a rule list and its
    /// counts come from the same refresh.
    fn stats_of(
        &self,
        view: &View,
        keys: &[(String, String)],
        as_of_us: i64,
    ) -> Result<Vec<RuleStats>> {
        self.caught_up()?;
        if let Some(reason) = &view.failure {
            return Err(Error::ProjectionStalled {
                reason: format!("the other shards of the store cannot be read: {reason}"),
            });
        }
        let own = self.inner.log();
        let mut totals = self.shard_stats(&self.inner.projections, &own, keys, as_of_us)?;
        for peer in &view.peers {
            self.add_peer_stats(&peer.host, &peer.log, keys, as_of_us, &mut totals)?;
        }
        Ok(totals)
    }

    /// Adds the statistics of `keys` in another shard to `totals`. The
    /// common case (every answer exact from the projection) allocates no
    /// more than each answer does: this runs once per shard per `stats`.
    fn add_peer_stats(
        &self,
        host: &Host,
        log: &Log,
        keys: &[(String, String)],
        as_of_us: i64,
        totals: &mut [RuleStats],
    ) -> Result<()> {
        let missing = host
            .with::<TriggerStats, _>(|p, offset| {
                let mut missing = Vec::new();
                for (i, (t, r)) in keys.iter().enumerate() {
                    match p.answer(t, r, as_of_us, offset) {
                        Answer::Exact(stats) => add_shard(&mut totals[i], stats),
                        Answer::NeedsReplay => missing.push(i),
                    }
                }
                missing
            })
            .ok_or_else(|| Error::ProjectionStalled {
                reason: "the trigger projection is not registered".into(),
            })?;
        if missing.is_empty() {
            return Ok(());
        }
        // The window reaches into what this shard folded: replay its log.
        let replay_keys: Vec<(String, String)> = missing.iter().map(|&i| keys[i].clone()).collect();
        let part = self.shard_stats(host, log, &replay_keys, as_of_us)?;
        for (i, stats) in missing.into_iter().zip(part) {
            add_shard(&mut totals[i], stats);
        }
        Ok(())
    }

    /// The statistics of `keys` in one shard: from its trigger projection,
    /// or replayed from its log where the projection folded the window.
    fn shard_stats(
        &self,
        host: &Host,
        log: &Log,
        keys: &[(String, String)],
        as_of_us: i64,
    ) -> Result<Vec<RuleStats>> {
        let (answers, windows, offset) = host
            .with::<TriggerStats, _>(|p, offset| {
                let answers: Vec<Answer> = keys
                    .iter()
                    .map(|(t, r)| p.answer(t, r, as_of_us, offset))
                    .collect();
                (answers, p.windows().to_vec(), offset)
            })
            .ok_or_else(|| Error::ProjectionStalled {
                reason: "the trigger projection is not registered".into(),
            })?;
        let missing: Vec<&(String, String)> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, a)| matches!(a, Answer::NeedsReplay))
            .map(|(k, _)| k)
            .collect();
        let mut replayed = if missing.is_empty() {
            BTreeMap::new()
        } else {
            self.inner
                .counters
                .stats_replays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let replayed = replay_stats(
                log,
                &missing,
                &TriggerStats::with_windows(windows),
                as_of_us,
                offset,
            )?;
            // The gap losses are in the projection whatever the as-of time
            // (they are never folded).
            host.with::<TriggerStats, _>(|p, _| {
                replayed
                    .into_iter()
                    .map(|(key, stats)| (key, p.with_gaps(stats)))
                    .collect()
            })
            .unwrap_or_default()
        };
        Ok(keys
            .iter()
            .zip(answers)
            .map(|(key, answer)| match answer {
                Answer::Exact(stats) => stats,
                Answer::NeedsReplay => replayed
                    .remove(key)
                    .unwrap_or_else(|| empty(key, as_of_us, offset)),
            })
            .collect())
    }
}

/// Adds one shard's statistics of a rule to the sum over shards: counts
/// add up (each event lives in exactly one shard), the last time is the
/// latest, a gap in any shard's window is a gap in the sum, and `offset`
/// becomes the number of entries counted over all shards.
fn add_shard(total: &mut RuleStats, part: RuleStats) {
    debug_assert_eq!(
        (&total.tenant_id, &total.rule_id, total.as_of_us),
        (&part.tenant_id, &part.rule_id, part.as_of_us)
    );
    total.trigger_count += part.trigger_count;
    for ((_, sum), (_, n)) in total.window_counts.iter_mut().zip(part.window_counts) {
        *sum += n;
    }
    total.last_triggered_at_us = total.last_triggered_at_us.max(part.last_triggered_at_us);
    total.total_count += part.total_count;
    for (sum, n) in total.by_action.iter_mut().zip(part.by_action) {
        *sum += n;
    }
    total.offset += part.offset;
    total.missing_at_least += part.missing_at_least;
    total.gap_in_window |= part.gap_in_window;
}

/// Exact statistics of `keys` from one pass over `log` below `offset`,
/// reading only the spans whose timestamps can be at or before `as_of_us`.
fn replay_stats(
    log: &Log,
    keys: &[&(String, String)],
    config: &TriggerStats,
    as_of_us: i64,
    offset: u64,
) -> Result<BTreeMap<(String, String), RuleStats>> {
    let mut events: BTreeMap<(String, String), Vec<(Action, i64)>> =
        keys.iter().map(|&k| (k.clone(), Vec::new())).collect();
    for record in log.read_time_range(0, i64::MIN..=as_of_us)? {
        let record = record?;
        if record.offset >= offset {
            break;
        }
        // An entry that does not decode was skipped (and counted) by
        // the projection too.
        if let Ok(Entry::Event(e)) = decode_entry(&record) {
            if let Some(list) = events.get_mut(&(e.tenant_id, e.rule_id)) {
                list.push((e.action, e.enforced_at_us));
            }
        }
    }
    Ok(events
        .into_iter()
        .map(|((t, r), list)| {
            let stats = config.from_entries(&t, &r, as_of_us, offset, list.into_iter());
            ((t, r), stats)
        })
        .collect())
}

fn empty(key: &(String, String), as_of_us: i64, offset: u64) -> RuleStats {
    TriggerStats::default().from_entries(&key.0, &key.1, as_of_us, offset, std::iter::empty())
}

/// A window length as text, largest units first: `30d`, `1d12h`, `90s`,
/// `10ms` (the units `d`, `h`, `m`, `s`, `ms`, `us`; the syntax the CLI
/// reads).
pub fn window_label(window: Duration) -> String {
    const UNITS_US: [(&str, u64); 6] = [
        ("d", 86_400_000_000),
        ("h", 3_600_000_000),
        ("m", 60_000_000),
        ("s", 1_000_000),
        ("ms", 1_000),
        ("us", 1),
    ];
    let mut us = u64::try_from(window.as_micros()).unwrap_or(u64::MAX);
    if us == 0 {
        return "0s".into();
    }
    let mut text = String::new();
    for (name, unit_us) in UNITS_US {
        if us >= unit_us {
            text.push_str(&format!("{}{name}", us / unit_us));
            us %= unit_us;
        }
    }
    text
}

impl RuleStats {
    /// The primary window these statistics count (`trigger_count`,
    /// `by_action`, `missing_at_least`).
    pub fn window(&self) -> Duration {
        self.window_counts
            .last()
            .map_or(Duration::from_secs(30 * 86_400), |(w, _)| *w)
    }

    /// The statistics as JSON, under the names of the fields, the same
    /// whatever the window (a jq script can rely on them): `tenant_id`,
    /// `rule_id`, `window` (e.g. `"30d"`), `trigger_count`,
    /// `last_triggered_at` (a field `x_us` prints as `x`, RFC 3339, or
    /// null), `total_count`, `by_action` (every action, zeros included),
    /// `gap_in_window`, `missing_at_least`, and `windows` (each configured
    /// window's count) when more than one is configured.
    ///
    /// ```
    /// # use enforcelog::{Action, Event, Store, StoreOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path(), StoreOptions::default())?;
    /// store.record_blocking(Event::new("acme", "budget", Action::Killed))?;
    /// let json = store.stats("acme", "budget", None)?.to_json();
    /// assert_eq!(json["window"], "30d");
    /// assert_eq!(json["trigger_count"], 1);
    /// assert_eq!(json["by_action"]["KILLED"], 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_json(&self) -> Value {
        let by_action: Map<String, Value> = Action::ALL
            .iter()
            .map(|a| (a.as_str().to_string(), json!(self.count_for(*a))))
            .collect();
        let mut out = Map::new();
        out.insert("tenant_id".into(), json!(self.tenant_id));
        out.insert("rule_id".into(), json!(self.rule_id));
        out.insert("window".into(), json!(window_label(self.window())));
        out.insert("trigger_count".into(), json!(self.trigger_count));
        out.insert(
            "last_triggered_at".into(),
            self.last_triggered_at_us
                .map_or(Value::Null, |us| json!(format_us(us))),
        );
        out.insert("total_count".into(), json!(self.total_count));
        out.insert("by_action".into(), Value::Object(by_action));
        out.insert("gap_in_window".into(), json!(self.gap_in_window));
        out.insert("missing_at_least".into(), json!(self.missing_at_least));
        if self.window_counts.len() > 1 {
            let windows: Map<String, Value> = self
                .window_counts
                .iter()
                .map(|(w, n)| (window_label(*w), json!(n)))
                .collect();
            out.insert("windows".into(), Value::Object(windows));
        }
        Value::Object(out)
    }
}

/// The report of [`Store::stats_all`] or [`Store::stats_for_tenant`] as
/// JSON: `{"as_of": ..., "window": "30d", "rules": [...]}` with the rules of
/// [`RuleStats::to_json`]. `window` is the primary window the rules were
/// counted with (given, so that a report without rules still says it).
pub fn stats_report(as_of_us: i64, window: Duration, rules: &[RuleStats]) -> Value {
    json!({
        "as_of": format_us(as_of_us),
        "window": window_label(window),
        "rules": rules.iter().map(RuleStats::to_json).collect::<Vec<_>>(),
    })
}
