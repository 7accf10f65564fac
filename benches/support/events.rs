//! The enforcement events the benches record, built in one place: the
//! shape every data set shares (a run id and a `details` object of about
//! 180 to 200 bytes of payload in all), and the smaller builders of the
//! refresh and shards benches. Included with `#[path]` by each bench that
//! writes events (`reads`, `replay`, `durable`, `refresh`, `shards`).
//!
//! Invariant: each builder draws its random numbers in the order its bench
//! drew them before this module existed, so every bench writes exactly the
//! events it wrote before.

// Each bench uses only some of the builders.
#![allow(dead_code)]

use enforcelog::{Action, Event};
use serde_json::{json, Map};

/// The event of the read and write benches' data sets: `below(n)` draws a
/// number in `0..n` (the run id, then the step, then the host).
pub fn enforcement_event(
    tenant: String,
    rule: String,
    action: Action,
    mut below: impl FnMut(u64) -> u64,
) -> Event {
    let run_id = format!("run-{:08}", below(100_000_000));
    enforcement_event_in_run(tenant, rule, action, run_id, below)
}

/// [`enforcement_event`] in a given run: `below(n)` draws the step, then
/// the host.
pub fn enforcement_event_in_run(
    tenant: String,
    rule: String,
    action: Action,
    run_id: String,
    mut below: impl FnMut(u64) -> u64,
) -> Event {
    Event::new(tenant, rule, action)
        .with_run_id(run_id)
        .with_details(enforcelog::details!({
            "tool": "shell-exec",
            "step": below(500),
            "reason": "budget of 50000 tokens exceeded at this step",
            "host": format!("worker-{:02}.eu-west-1.internal", below(64)),
            "policy_version": "2026-09-14.3",
        }))
}

/// The `i`-th event of the refresh bench: 50 tenants, 20 rules, a day of
/// timestamps back from `t0_us`, a request in `details` (with a run of
/// zero counts).
pub fn numbered_event(i: u64, t0_us: i64) -> Event {
    let mut details = Map::new();
    details.insert(
        "request".into(),
        json!({"path": format!("/api/v1/items/{}", i % 977), "status": 403, "zeros": [0, 0, 0, 0]}),
    );
    Event::new(
        format!("tenant-{}", i % 50),
        format!("rule-{}", i % 20),
        Action::ALL[(i % 4) as usize],
    )
    .at_us(t0_us - (i % 86_400) as i64 * 1_000_000)
    .with_run_id(format!("run-{i}"))
    .with_details(details)
}

/// The small event a producer of the shards bench records: its tenant and
/// rule, its own run, no details.
pub fn producer_event(tenant: &str, rule: &str, producer: usize) -> Event {
    Event::new(tenant, rule, Action::Blocked).with_run_id(format!("run-{producer}"))
}
