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
    // The library's golden report with the CLI's fixed keys (made from it
    // mechanically: trigger_count_30d -> trigger_count plus "window": "30d",
    // by_action_30d -> by_action with every action, no gap in any window).
    let expected: Value = serde_json::from_str(
        &fs::read_to_string(golden("events-2000.cli-stats-2026-11-01T00-00-00Z.json")).unwrap(),
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
    let rule = |tenant: &str, rule: &str, count: u64, last: i64, total: u64, by: [u64; 4]| {
        json!({
            "tenant_id": tenant, "rule_id": rule, "window": "30d", "trigger_count": count,
            "last_triggered_at": at(last), "total_count": total,
            "by_action": {"STOPPED": by[0], "KILLED": by[1], "ABORTED": by[2], "BLOCKED": by[3]},
            "gap_in_window": false, "missing_at_least": 0
        })
    };
    let x_r1 = rule("x", "r1", 3, -1, 4, [0, 1, 0, 2]);
    let x_r2 = rule("x", "r2", 1, 0, 1, [0, 0, 1, 0]);
    let y_r1 = rule("y", "r1", 1, -3, 2, [0, 0, 0, 1]);
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
    assert_eq!(x_r1["window"], "7d", "{seven}");
    assert_eq!(x_r1["trigger_count"], 2, "{seven}");
    assert_eq!(
        x_r1["by_action"],
        json!({"STOPPED": 0, "KILLED": 1, "ABORTED": 0, "BLOCKED": 1})
    );
    assert_eq!(x_r1["total_count"], 4);

    // A one-day window: as-of itself counts, a day before does not.
    let one = stats_json(&f, &["--window", "1d", "--tenant", "x"]);
    let counts: Vec<&Value> = one["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["trigger_count"])
        .collect();
    assert_eq!(counts, [&json!(0), &json!(1)], "{one}");
}

/// Regression: `--window 36h` gave `trigger_count_36h` and `by_action_36h`,
/// so a script could not read the count under one key. Every window now
/// gives the same keys (the window is a field), for every format.
#[test]
fn stats_json_keys_do_not_change_with_the_window() {
    let f = stats_fixture();
    let keys_of = |report: &Value| -> Vec<Vec<String>> {
        report["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .map(|r| {
                r.as_object()
                    .expect("a rule object")
                    .keys()
                    .cloned()
                    .collect()
            })
            .collect()
    };
    let thirty = stats_json::<&str>(&f, &[]);
    let expected = keys_of(&thirty);
    assert!(!expected.is_empty());
    for window in ["36h", "1d12h", "1w", "90s", "1m30s", "100d"] {
        let report = stats_json(&f, &["--window", window]);
        assert_eq!(keys_of(&report), expected, "--window {window}: {report}");
        let label = report["window"].as_str().expect("window").to_string();
        for r in report["rules"].as_array().unwrap() {
            assert_eq!(r["window"], label.as_str(), "{r}");
        }
        // The label is itself a window that gives the same report.
        assert_eq!(stats_json(&f, &["--window", &label]), report, "{label}");
    }
    // jsonl: one rule object per line, the same objects.
    let lines = f.ok(&[
        "stats", "--as-of", AS_OF, "--format", "jsonl", "--window", "36h",
    ]);
    let report = stats_json(&f, &["--window", "36h"]);
    assert_eq!(
        Value::Array(cli::jsonl(&lines, "stats jsonl")),
        report["rules"],
        "{lines}"
    );
}

/// The table's per-action and missing columns carry the window they count.
#[test]
fn stats_table_columns_say_which_window_they_count() {
    let f = stats_fixture();
    for (window, label) in [("30d", "30D"), ("36h", "1D12H"), ("1w", "7D")] {
        let table = f.ok(&["stats", "--as-of", AS_OF, "--window", window]);
        let header = table.lines().next().unwrap_or_default();
        for column in [
            "TRIGGER_COUNT",
            "STOPPED",
            "KILLED",
            "ABORTED",
            "BLOCKED",
            "MISSING",
        ] {
            let want = format!("{column}_{label}");
            assert!(
                header.split_whitespace().any(|h| h == want),
                "--window {window}: no column {want} in {header:?}"
            );
        }
        assert!(
            header.split_whitespace().any(|h| h == "TOTAL_COUNT"),
            "TOTAL counts everything up to as-of, not the window: {header:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Several writers on one directory (shards)
// ---------------------------------------------------------------------------

/// The same events written by three writers into one directory (the root
/// store and two shards) and by one writer into another: `stats` and a
/// counting `query` print the same answers for both. The tool reads every
/// shard, so splitting the writers changes nothing a reader sees.
#[test]
fn stats_and_query_read_every_shard_of_the_directory() {
    use enforcelog::{Action, Event, Store, StoreOptions};
    let sharded = Fixture::new();
    let single = Fixture::new();
    let t0_us: i64 = 1_790_812_800_000_000; // 2026-10-01
    let day_us: i64 = 86_400_000_000;
    let writers: Vec<Store> = (0..3)
        .map(|_| Store::open(&sharded.dir, StoreOptions::default()).expect("open"))
        .collect();
    assert_eq!(
        writers.iter().map(Store::shard).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let one = Store::open(&single.dir, StoreOptions::default()).expect("open");
    for i in 0..240i64 {
        let event = || {
            Event::new(
                format!("tenant-{}", i % 3),
                format!("rule-{}", i % 7),
                Action::ALL[(i % 4) as usize],
            )
            .at_us(t0_us - (i * 7_919 % 45) * day_us - i)
            .with_run_id(format!("run-{i}"))
        };
        writers[(i % 3) as usize].record_blocking(event()).unwrap();
        one.record_blocking(event()).unwrap();
    }
    drop(writers);
    drop(one);
    for as_of in ["2026-10-01T00:00:00Z", "2026-09-01T00:00:00Z"] {
        let args = ["stats", "--as-of", as_of, "--format", "json"];
        let got = sharded.run(&args).expect(0).json();
        let want = single.run(&args).expect(0).json();
        assert!(got == want, "as of {as_of}:\n{got}\nwant\n{want}");
        assert!(!want["rules"].as_array().unwrap().is_empty());
    }
    let count = [
        "query", "--tenant", "tenant-1", "--count", "--format", "json",
    ];
    assert_eq!(sharded.run(&count).expect(0).json(), json!({"count": 80}));
    assert_eq!(single.run(&count).expect(0).json(), json!({"count": 80}));
}

/// `query`'s paging hint names an offset of the root store: on a page that
/// ended in another shard, `--after-offset <that offset>` restarted in the
/// root and repeated events (review finding R16-3). The hint now names the
/// shard too (`--after-shard 1 --after-offset 1`) when the last event
/// printed is in another shard; following the hints lists each event once
/// (`cli_shards.rs` pages through many shards).
#[test]
fn query_paging_hint_never_points_into_another_shard() {
    use enforcelog::{Action, Event, Store, StoreOptions};
    let fx = Fixture::new();
    let writers: Vec<Store> = (0..2)
        .map(|_| Store::open(&fx.dir, StoreOptions::default()).expect("open"))
        .collect();
    for i in 0..10 {
        writers[i % 2]
            .record_blocking(
                Event::new("acme", "rule", Action::Blocked).with_run_id(format!("run-{i}")),
            )
            .unwrap();
    }
    drop(writers);
    // 5 events in the root, 5 in shard 1.
    let in_root = fx.run(&["query", "--tenant", "acme", "--limit", "3"]);
    in_root.expect(0);
    assert!(
        in_root.stderr.contains("follow: --after-offset 2\n"),
        "{}",
        in_root.stderr
    );
    let past_root = fx.run(&["query", "--tenant", "acme", "--limit", "7"]);
    past_root.expect(0);
    assert!(
        past_root
            .stderr
            .contains("follow: --after-shard 1 --after-offset 1\n"),
        "{}",
        past_root.stderr
    );
    let rest = fx.run(&[
        "query",
        "--tenant",
        "acme",
        "--after-shard",
        "1",
        "--after-offset",
        "1",
        "--format",
        "jsonl",
    ]);
    let runs: Vec<Value> = rest
        .expect(0)
        .jsonl()
        .iter()
        .map(|e| e["run_id"].clone())
        .collect();
    assert_eq!(runs, [json!("run-5"), json!("run-7"), json!("run-9")]);
}

/// `verify` checks every shard of the directory, not only the root store:
/// a clean directory reports one summary per shard, and a flipped byte in a
/// shard's segment is found and named, with the shard's directory for
/// `repair`.
#[test]
fn verify_checks_every_shard_of_the_directory() {
    use enforcelog::{Action, Event, Store, StoreOptions};
    let fx = Fixture::new();
    let writers: Vec<Store> = (0..3)
        .map(|_| Store::open(&fx.dir, StoreOptions::default()).expect("open"))
        .collect();
    for i in 0..30 {
        writers[i % 3]
            .record_blocking(
                Event::new("acme", "rule", Action::Blocked)
                    .with_run_id(format!("run-{i}"))
                    .with_details_json(r#"{"pad": "\u0000\u0000\u0000\u0000"}"#)
                    .unwrap(),
            )
            .unwrap();
    }
    drop(writers);
    let clean = fx.run(&["verify"]);
    clean.expect(0);
    let lines: Vec<&str> = clean.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", clean.stdout);
    assert!(lines[0].starts_with("ok: "), "{}", clean.stdout);
    assert!(lines[1].starts_with("shards/1: ok: "), "{}", clean.stdout);
    assert!(lines[2].starts_with("shards/2: ok: "), "{}", clean.stdout);
    assert!(
        lines.iter().all(|l| l.contains("10 records")),
        "{}",
        clean.stdout
    );

    // One flipped byte in the middle of shard 2's segment.
    let segment = fx.dir.join("shards/2/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();
    let damaged = fx.run(&["verify"]);
    damaged.expect(1);
    assert!(damaged.stdout.contains("shards/2"), "{}", damaged.stdout);
    assert!(
        damaged.stderr.contains("--data-dir") && damaged.stderr.contains("shards/2"),
        "{}",
        damaged.stderr
    );
}
