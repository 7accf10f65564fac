//! `stats` through the binary: the golden fixture, the JSON report's fixed
//! keys, windows, the table.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::fs;

use cli::*;
use enforcelog::timestamp::format_us;
use serde_json::{json, Value};

#[test]
fn golden_fixture_through_import_and_stats_json() {
    let f = Fixture::new();
    let events = golden("events-2000.jsonl");
    let out = f.run(&[OsStr::new("import"), events.as_os_str()]);
    out.expect(0);
    assert_eq!(
        out.json(),
        json!({"imported": 2000, "first_offset": 0, "last_offset": 1999})
    );
    let stats = f.run(&[
        "stats",
        "--as-of",
        "2026-11-01T00:00:00Z",
        "--format",
        "json",
    ]);
    stats.expect(0);
    let expected: Value = serde_json::from_str(
        &fs::read_to_string(golden("events-2000.stats-2026-11-01T00-00-00Z.json")).unwrap(),
    )
    .unwrap();
    assert!(
        stats.json() == expected,
        "stats differ from the golden file:\n{}",
        stats.stdout
    );
    // The same instant written with an offset gives the same answer.
    let shifted = f.run(&[
        "stats",
        "--as-of",
        "2026-11-01T01:00:00+01:00",
        "--format",
        "json",
    ]);
    assert!(shifted.expect(0).json() == expected, "as-of with +01:00");
}

// ---------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------

const AS_OF: &str = "2026-06-01T00:00:00Z";

fn stats_fixture() -> Fixture {
    let f = Fixture::new();
    let t = us(AS_OF);
    let at = |days: i64| format_us(t + days * DAY_US);
    f.import(&[
        ev("x", "r1", "BLOCKED", &at(-1)),
        ev("x", "r1", "KILLED", &at(-5)),
        ev("x", "r1", "BLOCKED", &at(-10)),
        ev("x", "r1", "STOPPED", &at(-40)),
        ev("x", "r1", "BLOCKED", &at(1)),
        ev("x", "r2", "ABORTED", &at(0)),
        ev("y", "r1", "BLOCKED", &at(-3)),
        ev("y", "r1", "KILLED", &at(-30)),
        ev("y", "r9", "BLOCKED", &at(2)),
    ]);
    f
}

fn stats_json<S: AsRef<OsStr>>(f: &Fixture, extra: &[S]) -> Value {
    let mut cmd = f.cmd(&["stats", "--as-of", AS_OF, "--format", "json"]);
    cmd.args(extra);
    run(cmd, None).expect(0).json()
}

#[test]
fn stats_json_for_all_rules_and_by_tenant_and_rule() {
    let f = stats_fixture();
    let t = us(AS_OF);
    let at = |days: i64| format_us(t + days * DAY_US);
    let x_r1 = json!({
        "tenant_id": "x", "rule_id": "r1", "trigger_count_30d": 3,
        "last_triggered_at": at(-1), "total_count": 4,
        "by_action_30d": {"BLOCKED": 2, "KILLED": 1}
    });
    let x_r2 = json!({
        "tenant_id": "x", "rule_id": "r2", "trigger_count_30d": 1,
        "last_triggered_at": at(0), "total_count": 1,
        "by_action_30d": {"ABORTED": 1}
    });
    let y_r1 = json!({
        "tenant_id": "y", "rule_id": "r1", "trigger_count_30d": 1,
        "last_triggered_at": at(-3), "total_count": 2,
        "by_action_30d": {"BLOCKED": 1}
    });
    let report = |rules: Vec<Value>| json!({"as_of": "2026-06-01T00:00:00.000000Z", "window": "30d", "rules": rules});
    assert_eq!(
        stats_json::<&str>(&f, &[]),
        report(vec![x_r1.clone(), x_r2.clone(), y_r1.clone()])
    );
    assert_eq!(
        stats_json(&f, &["--tenant", "x"]),
        report(vec![x_r1.clone(), x_r2])
    );
    assert_eq!(
        stats_json(&f, &["--tenant", "x", "--rule", "r1"]),
        report(vec![x_r1])
    );
    assert_eq!(stats_json(&f, &["--tenant", "y"]), report(vec![y_r1]));
    assert_eq!(
        stats_json(&f, &["--window", "30d"]),
        stats_json::<&str>(&f, &[])
    );

    // Table: every listed rule appears; y/r9 (only after as-of) does not.
    let table = f.ok(&["stats", "--as-of", AS_OF]);
    assert!(table.contains("r1") && table.contains("r2"), "{table}");
    assert!(!table.contains("r9"), "{table}");
    assert_eq!(
        table,
        f.ok(&["stats", "--as-of", AS_OF, "--format", "table"]),
        "table is the default"
    );
}

#[test]
fn stats_window_changes_the_counted_span() {
    let f = stats_fixture();
    let seven = stats_json(&f, &["--window", "7d"]);
    assert_eq!(seven["window"], "7d", "{seven}");
    let rules = seven["rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 3, "{seven}");
    let x_r1 = &rules[0];
    assert_eq!(
        (x_r1["tenant_id"].as_str(), x_r1["rule_id"].as_str()),
        (Some("x"), Some("r1"))
    );
    assert_eq!(x_r1["trigger_count_7d"], 2, "{seven}");
    assert_eq!(x_r1["by_action_7d"], json!({"BLOCKED": 1, "KILLED": 1}));
    assert_eq!(x_r1["total_count"], 4);
    assert!(x_r1.get("trigger_count_30d").is_none(), "{seven}");

    // A one-day window: as-of itself counts, a day before does not.
    let one = stats_json(&f, &["--window", "1d", "--tenant", "x"]);
    let counts: Vec<&Value> = one["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["trigger_count_1d"])
        .collect();
    assert_eq!(counts, [&json!(0), &json!(1)], "{one}");
}
