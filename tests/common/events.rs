//! Events that look like what hosts record, for the tests that run
//! several writers: a few tenants and rules, every action, run ids that
//! name the writer and the event, and details with nesting, runs of zero
//! bytes and now and then a blob of several KiB.

use enforcelog::{Action, Event, RuleStats};
use serde_json::{json, Map, Value};

/// One day in microseconds.
pub const DAY_US: i64 = 86_400_000_000;
/// The instant test events are spread before (2026-10-01T00:00:00Z).
pub const T0_US: i64 = 1_790_812_800_000_000;

/// Details nested 12 deep around a run of 64 zero bytes; every
/// `blob_every`-th event also carries `blob_kib` KiB of zeros and letters.
pub fn host_details(i: u64, blob_every: u64, blob_kib: usize) -> Map<String, Value> {
    let mut nested = json!({"leaf": i, "zeros": "\u{0}".repeat(64)});
    for depth in 0..12 {
        nested = json!({"level": depth, "inner": nested});
    }
    let mut map = Map::new();
    map.insert("request".into(), nested);
    if i.is_multiple_of(blob_every) {
        map.insert("blob".into(), json!("\u{0}x".repeat(blob_kib * 1024)));
    }
    map
}

/// The `i`-th event writer `who` records, run id `run-{who}-{i}`: three
/// tenants, five rules, every action, and (with `spread`) times over the
/// 40 days before [`T0_US`] (otherwise stamped when appended).
pub fn writer_event(who: u64, i: u64, spread: bool, details: Map<String, Value>) -> Event {
    let event = Event::new(
        format!("tenant-{}", (who + i) % 3),
        format!("rule-{}", i % 5),
        Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{who}-{i}"))
    .with_details(details);
    if spread {
        event.at_us(T0_US - ((who * 7_919 + i * 104_729) % 40) as i64 * DAY_US - i as i64)
    } else {
        event
    }
}

/// A rule's answer as the oracle tests compare it: tenant, rule, count in
/// the window, total count, last time, counts by action.
pub type Summary = (String, String, u64, u64, Option<i64>, [u64; 4]);

/// The comparable form of `stats` answers.
pub fn summary(stats: &[RuleStats]) -> Vec<Summary> {
    stats
        .iter()
        .map(|s| {
            (
                s.tenant_id.clone(),
                s.rule_id.clone(),
                s.trigger_count,
                s.total_count,
                s.last_triggered_at_us,
                s.by_action,
            )
        })
        .collect()
}
