//! The read commands through the binary: `dump` (and the dump | import
//! round trip), `query`, `tail`.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cli::*;
use common::process::{self};
use enforcelog::timestamp::format_us;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// The golden fixture and the dump | import round trip
// ---------------------------------------------------------------------------

#[test]
fn dump_then_import_into_a_fresh_store_reproduces_the_dump() {
    let a = Fixture::new();
    let events = golden("events-2000.jsonl");
    a.run(&[OsStr::new("import"), events.as_os_str()]).expect(0);
    a.import(&[
        ev("edge", "before-1970", "kill", "1969-12-31T23:59:59.999999Z"),
        ev("edge", "first", "block", "0001-01-01T00:00:00Z"),
        ev("edge", "last", "stop", "9999-12-31T23:59:59.999999Z"),
        with(
            ev(
                "quote\"back\\slash space",
                "r/1 ü",
                "abort",
                "2026-01-01T00:00:00Z",
            ),
            "details",
            json!({
                "max_u64": 18_446_744_073_709_551_615_u64,
                "min_i64": -9_223_372_036_854_775_808_i64,
                "float": 0.1,
                "tiny": 1e-7,
                "text": "line\nbreak \u{1} tab\t",
                "empty": {},
                "list": [],
                "ключ": null
            }),
        ),
    ]);
    let dump_a = a.dump_text();
    assert_eq!(jsonl(&dump_a, "dump a").len(), 2004);

    let b = Fixture::new();
    // The dump holds year 9999: past the default `--max-future-skew`.
    let out = b.run_stdin(
        &[
            "import",
            "--max-future-skew",
            "none",
            "--not-before",
            "none",
            "-",
        ],
        dump_a.as_bytes(),
    );
    out.expect(0);
    assert_eq!(
        out.json(),
        json!({"imported": 2004, "first_offset": 0, "last_offset": 2003})
    );
    let dump_b = b.dump_text();
    assert!(dump_a == dump_b, "dump | import | dump differs");

    // --from starts at that offset and prints the same lines.
    let tail = a.ok(&["dump", "--from", "1990"]);
    let expected_tail: String = dump_a
        .lines()
        .skip(1990)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(tail.trim_end(), expected_tail.trim_end());
    assert_eq!(
        a.ok(&["dump", "--from", "2004"]).trim(),
        "",
        "--from the end"
    );
}

/// The committed version-1 store (with a gap marker at offset 5) dumps as
/// the issue describes, and re-imports without the gap.
#[test]
fn dump_of_the_v1_fixture_shows_the_gap_and_import_skips_it() {
    let f = Fixture::new();
    fs::create_dir(&f.dir).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("tests/fixtures/store-v1");
    for name in [SEGMENT, "VERSION"] {
        fs::copy(fixture.join(name), f.dir.join(name)).unwrap();
    }
    let dump = f.dump();
    assert_eq!(offsets(&dump), (0..11).collect::<Vec<_>>());
    let kinds: Vec<&str> = dump.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    let mut expected_kinds = vec!["enforcement"; 11];
    expected_kinds[5] = "gap";
    assert_eq!(kinds, expected_kinds);
    assert_eq!(dump[0]["tenant_id"], "acme");
    assert_eq!(dump[0]["action_taken"], "BLOCKED");
    assert_eq!(dump[0]["enforced_at"], "2025-11-25T00:00:00.000000Z");
    assert_eq!(
        dump[6]["details"]["max_u64"],
        json!(18_446_744_073_709_551_615_u64)
    );
    assert_eq!(dump[9]["enforced_at"], "1969-12-31T23:59:59.999999Z");
    assert_eq!(dump[10]["enforced_at"], "9999-12-31T23:59:59.999999Z");
    f.ok(&["verify"]);

    let fresh = Fixture::new();
    // The fixture holds year 9999: past the default `--max-future-skew`.
    let out = fresh.run_stdin(
        &[
            "import",
            "--max-future-skew",
            "none",
            "--not-before",
            "none",
            "-",
        ],
        f.dump_text().as_bytes(),
    );
    out.expect(0);
    assert_eq!(
        out.json(),
        json!({"imported": 10, "first_offset": 0, "last_offset": 9})
    );
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("offset");
        v
    };
    let want: Vec<Value> = dump
        .into_iter()
        .filter(|d| d["kind"] == "enforcement")
        .map(strip)
        .collect();
    let got: Vec<Value> = fresh.dump().into_iter().map(strip).collect();
    assert_eq!(got, want);
}

// ---------------------------------------------------------------------------
// query
// ---------------------------------------------------------------------------

const T0: &str = "2026-05-01T00:00:00Z";

/// Ten events an hour apart (offset i at T0 + i h).
fn query_fixture() -> Fixture {
    let f = Fixture::new();
    let rows: [(&str, &str, &str, Option<&str>); 10] = [
        ("a", "r1", "BLOCKED", Some("run-1")),
        ("a", "r2", "KILLED", Some("run-1")),
        ("b", "r1", "BLOCKED", Some("run-2")),
        ("a", "r1", "STOPPED", Some("run-2")),
        ("a", "r1", "BLOCKED", None),
        ("b", "r2", "ABORTED", Some("run-3")),
        ("a", "r2", "BLOCKED", Some("run-3")),
        ("a", "r1", "KILLED", Some("run-1")),
        ("a", "r1", "BLOCKED", Some("run-4")),
        ("b", "r1", "BLOCKED", Some("run-4")),
    ];
    let t0 = us(T0);
    let lines: Vec<Value> = rows
        .iter()
        .zip(0i64..)
        .map(|((tenant, rule, action, run), i)| {
            let e = ev(tenant, rule, action, &format_us(t0 + i * HOUR_US));
            match run {
                Some(run) => with(e, "run_id", json!(run)),
                None => e,
            }
        })
        .collect();
    f.import(&lines);
    f
}

fn at_hour(h: i64) -> String {
    format_us(us(T0) + h * HOUR_US)
}

#[test]
fn query_filters_select_the_right_events() {
    let f = query_fixture();
    let since3 = at_hour(3);
    let until3 = at_hour(3);
    let (h1, h7) = (at_hour(1), at_hour(7));
    let cases: Vec<(Vec<&str>, Vec<u64>)> = vec![
        (vec!["--tenant", "a"], vec![0, 1, 3, 4, 6, 7, 8]),
        (vec!["--tenant", "b"], vec![2, 5, 9]),
        (vec!["--tenant", "c"], vec![]),
        (vec!["--tenant", "a", "--rule", "r1"], vec![0, 3, 4, 7, 8]),
        (
            vec!["--tenant", "a", "--action", "blocked"],
            vec![0, 4, 6, 8],
        ),
        (vec!["--tenant", "a", "--action", "KILL"], vec![1, 7]),
        (vec!["--tenant", "a", "--run", "run-1"], vec![0, 1, 7]),
        (
            vec!["--tenant", "a", "--since", &since3],
            vec![3, 4, 6, 7, 8],
        ),
        (
            vec!["--tenant", "a", "--since", "2026-05-01T05:00:00+02:00"],
            vec![3, 4, 6, 7, 8],
        ),
        (vec!["--tenant", "a", "--until", &until3], vec![0, 1]),
        (
            vec![
                "--tenant", "a", "--rule", "r1", "--since", &h1, "--until", &h7,
            ],
            vec![3, 4],
        ),
        (
            vec!["--tenant", "b", "--rule", "r1", "--action", "block"],
            vec![2, 9],
        ),
        (vec!["--tenant", "a", "--limit", "3"], vec![0, 1, 3]),
        (
            vec!["--tenant", "a", "--after-offset", "3"],
            vec![4, 6, 7, 8],
        ),
        (
            vec!["--tenant", "a", "--after-offset", "3", "--limit", "2"],
            vec![4, 6],
        ),
        (vec!["--tenant", "a", "--after-offset", "8"], vec![]),
    ];
    for (filter, expected) in cases {
        let mut args = vec!["query"];
        args.extend(&filter);
        args.extend(["--format", "jsonl"]);
        let out = f.run(&args);
        out.expect(0);
        let rows = out.jsonl();
        assert_eq!(offsets(&rows), expected, "{}", out.what);
        for row in &rows {
            let tenant = filter[1];
            assert_eq!(row["tenant_id"], tenant, "{row}");
        }
    }

    // The fields of a row are those of the import format.
    let out = f.run(&[
        "query", "--tenant", "a", "--run", "run-2", "--format", "jsonl",
    ]);
    let rows = out.expect(0).jsonl();
    assert_eq!(rows.len(), 1, "{}", out.stdout);
    let row = &rows[0];
    assert_eq!(row["offset"], 3);
    assert_eq!(row["rule_id"], "r1");
    assert_eq!(row["action_taken"], "STOPPED");
    assert_eq!(row["run_id"], "run-2");
    assert_eq!(row["enforced_at"], "2026-05-01T03:00:00.000000Z");
}

#[test]
fn query_after_offset_pages_through_everything_once() {
    let f = query_fixture();
    let mut seen = Vec::new();
    let mut after: Option<u64> = None;
    for _ in 0..10 {
        let mut args: Vec<String> = [
            "query", "--tenant", "a", "--limit", "2", "--format", "jsonl",
        ]
        .map(String::from)
        .to_vec();
        if let Some(o) = after {
            args.extend(["--after-offset".to_string(), o.to_string()]);
        }
        let page = offsets(&f.run(&args).expect(0).jsonl());
        assert!(page.len() <= 2, "{page:?}");
        let Some(&last) = page.last() else { break };
        seen.extend(page);
        after = Some(last);
    }
    assert_eq!(seen, [0, 1, 3, 4, 6, 7, 8]);
}

#[test]
fn query_table_format_shows_the_matching_events() {
    let f = query_fixture();
    let table = f.ok(&["query", "--tenant", "a", "--rule", "r2"]);
    let explicit = f.ok(&[
        "query", "--tenant", "a", "--rule", "r2", "--format", "table",
    ]);
    assert_eq!(table, explicit, "table is the default format");
    for h in [1, 6] {
        assert!(table.contains(&at_hour(h)), "row at hour {h}:\n{table}");
    }
    for h in [0, 2, 3, 4, 5, 7, 8, 9] {
        assert!(!table.contains(&at_hour(h)), "no row at hour {h}:\n{table}");
    }
    assert!(
        table.contains("KILLED") && table.contains("BLOCKED"),
        "{table}"
    );
}

// ---------------------------------------------------------------------------
// tail
// ---------------------------------------------------------------------------

#[test]
fn tail_without_follow_prints_committed_events_and_exits() {
    let f = Fixture::new();
    f.import(&[
        ev("alpha", "alpha-rule-0", "BLOCKED", "2026-01-01T00:00:00Z"),
        ev("beta", "beta-rule-0", "BLOCKED", "2026-01-01T00:00:01Z"),
        ev("alpha", "alpha-rule-1", "KILLED", "2026-01-01T00:00:02Z"),
    ]);
    let alpha = f.ok(&["tail", "--tenant", "alpha"]);
    assert!(alpha.contains("alpha-rule-1"), "the latest event:\n{alpha}");
    assert!(!alpha.contains("beta"), "only tenant alpha:\n{alpha}");
    let all = f.ok(&["tail"]);
    assert!(all.contains("alpha-rule-1"), "{all}");
    assert!(all.contains("beta-rule-0"), "{all}");
}

/// `tail --follow` beside a writer in another process prints what it
/// commits.
#[test]
fn tail_follow_prints_events_as_another_process_commits_them() {
    let f = Fixture::new();
    f.import(&[ev("alpha", "before", "BLOCKED", "2026-01-01T00:00:00Z")]);
    let mut cmd = f.cmd(&["tail", "--follow", "--tenant", "alpha"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tail --follow");
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = process::drain(child.stderr.take().unwrap());

    let deadline = Instant::now() + Duration::from_secs(20);
    let wait_for = |needle: &str, lines: &mut Vec<String>| -> bool {
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    lines.push(line);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    };
    let mut lines = Vec::new();
    let saw_before = wait_for("before", &mut lines);
    let recorded = f.run(&[
        "record", "--tenant", "beta", "--rule", "other", "--action", "kill",
    ]);
    let recorded_alpha = f.run(&[
        "record",
        "--tenant",
        "alpha",
        "--rule",
        "live-rule",
        "--action",
        "kill",
    ]);
    let saw_live = wait_for("live-rule", &mut lines);
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let stderr = stderr.join().unwrap();
    recorded.expect(0);
    recorded_alpha.expect(0);
    assert!(
        saw_before && saw_live,
        "tail --follow printed {lines:?}; stderr:\n{stderr}"
    );
    assert!(!lines.iter().any(|l| l.contains("other")), "{lines:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `n` events of tenants `a` (even) and `b` (odd), rule `r{i}`, one a minute.
fn numbered(n: usize) -> Fixture {
    let f = Fixture::new();
    let t = us("2026-01-01T00:00:00Z");
    let events: Vec<Value> = (0..n)
        .map(|i| {
            let tenant = if i % 2 == 0 { "a" } else { "b" };
            ev(
                tenant,
                &format!("r{i}"),
                "BLOCKED",
                &format_us(t + i as i64 * 60_000_000),
            )
        })
        .collect();
    f.import(&events);
    f
}

/// The rule ids of `tail --format jsonl` lines.
fn rules_of(lines: &str) -> Vec<String> {
    cli::jsonl(lines, "tail")
        .iter()
        .map(|v| v["rule_id"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Regression: `tail` printed the whole log from offset 0. Like tail, it
/// prints the last 10 entries by default, the last N with `-n N`, and with
/// `--tenant` the last N of that tenant.
#[test]
fn tail_prints_the_last_entries_not_the_whole_log() {
    let f = numbered(25);
    let names =
        |range: std::ops::Range<usize>| -> Vec<String> { range.map(|i| format!("r{i}")).collect() };
    let last10 = f.ok(&["tail", "--format", "jsonl"]);
    assert_eq!(rules_of(&last10), names(15..25));
    assert_eq!(f.ok(&["tail"]).lines().count(), 10, "table: 10 lines");
    assert_eq!(
        rules_of(&f.ok(&["tail", "-n", "3", "--format", "jsonl"])),
        names(22..25)
    );
    assert_eq!(
        rules_of(&f.ok(&["tail", "--lines", "100", "--format", "jsonl"])),
        names(0..25)
    );
    assert_eq!(f.ok(&["tail", "-n", "0"]), "");
    let a = f.ok(&["tail", "-n", "3", "--tenant", "a", "--format", "jsonl"]);
    assert_eq!(rules_of(&a), ["r20", "r22", "r24"]);
    // --from: the last N from that offset on.
    let from = f.ok(&["tail", "-n", "2", "--from", "5", "--format", "jsonl"]);
    assert_eq!(rules_of(&from), ["r23", "r24"]);
    // json: one array of the same objects; refused with --follow (it would
    // never end).
    let array = f.run(&["tail", "-n", "2", "--format", "json"]);
    assert_eq!(
        array.expect(0).json(),
        Value::Array(cli::jsonl(
            &f.ok(&["tail", "-n", "2", "--format", "jsonl"]),
            "tail"
        ))
    );
    f.run(&["tail", "--follow", "--format", "json"])
        .expect(2)
        .expect_one_error_line();
    f.run(&["tail", "-n", "-1"])
        .expect(2)
        .expect_one_error_line();
    // An offset beyond the end is still refused, not an empty answer.
    f.run(&["tail", "--from", "26"])
        .expect(2)
        .expect_one_error_line();
    assert_eq!(f.ok(&["tail", "--from", "25"]), "");
}

/// `query --count` counts every match, across pages, in each format.
#[test]
fn query_count_counts_every_match_beyond_one_page() {
    let f = numbered(30);
    let count = |extra: &[&str]| -> String {
        let mut args = vec!["query", "--count"];
        args.extend_from_slice(extra);
        f.ok(&args).trim().to_string()
    };
    assert_eq!(count(&["--tenant", "a"]), "15");
    assert_eq!(
        count(&["--tenant", "b", "--format", "json"]),
        r#"{"count":15}"#
    );
    assert_eq!(
        count(&["--tenant", "b", "--format", "jsonl"]),
        r#"{"count":15}"#
    );
    assert_eq!(count(&["--tenant", "a", "--rule", "r4"]), "1");
    assert_eq!(count(&["--tenant", "nobody"]), "0");
    assert_eq!(
        count(&["--tenant", "a", "--since", "2026-01-01T00:10:00Z"]),
        "10"
    );
    assert_eq!(count(&["--tenant", "a", "--after-offset", "19"]), "5");
    // Limit is for listing: with --count it is refused, not ignored.
    f.run(&["query", "--tenant", "a", "--count", "--limit", "2"])
        .expect(2)
        .expect_one_error_line();
}

/// `dump --tenant` keeps one tenant's events (and every gap or lost
/// entry); `--limit` stops after N lines; `--format` as everywhere.
#[test]
fn dump_tenant_and_limit_narrow_the_dump() {
    let f = numbered(10);
    let a = cli::jsonl(&f.ok(&["dump", "--tenant", "a"]), "dump");
    assert_eq!(offsets(&a), [0, 2, 4, 6, 8]);
    assert!(a.iter().all(|v| v["tenant_id"] == "a"));
    let two = cli::jsonl(&f.ok(&["dump", "--tenant", "b", "--limit", "2"]), "dump");
    assert_eq!(offsets(&two), [1, 3]);
    let from = cli::jsonl(&f.ok(&["dump", "--from", "7", "--limit", "100"]), "dump");
    assert_eq!(offsets(&from), [7, 8, 9]);
    let array = f.run(&["dump", "--limit", "3", "--format", "json"]);
    assert_eq!(array.expect(0).json(), Value::Array(f.dump()[..3].to_vec()));
    let table = f.ok(&["dump", "--limit", "3", "--format", "table"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    f.run(&["dump", "--limit", "0"])
        .expect(2)
        .expect_one_error_line();
}

/// Regression: a query with a bad filter said "invalid event: ...". It now
/// says it is a bad filter and names the flag; nothing is created.
#[test]
fn a_bad_filter_is_called_a_filter_and_names_its_flag() {
    let f = numbered(2);
    let cases: [(&[&str], &str); 6] = [
        (&["query", "--tenant", "a\u{1}"], "bad filter --tenant"),
        (
            &["query", "--tenant", "a", "--rule", ""],
            "bad filter --rule",
        ),
        (
            &["query", "--tenant", "a", "--run", &"x".repeat(200)],
            "bad filter --run",
        ),
        (
            &[
                "query",
                "--tenant",
                "a",
                "--since",
                "2026-01-02",
                "--until",
                "2026-01-01",
            ],
            "bad filter --since/--until",
        ),
        (&["stats", "--rule", "r\u{7}"], "bad filter --rule"),
        (&["dump", "--tenant", ""], "bad filter --tenant"),
    ];
    for (args, says) in cases {
        let out = f.run(args);
        out.expect(2).expect_one_error_line().stderr_has(says);
        assert!(!out.stderr.contains("invalid event"), "{}", out.show());
    }
    let tail = f.run(&["tail", "--tenant", "\u{7}"]);
    tail.expect(2)
        .expect_one_error_line()
        .stderr_has("bad filter --tenant");
    // A bad action is refused by the flag, naming it and the actions.
    let action = f.run(&["query", "--tenant", "a", "--action", "melted"]);
    action
        .expect(2)
        .expect_one_error_line()
        .stderr_has("--action")
        .stderr_has("blocked");
    // Actions in any case, and the short forms.
    for action in ["BLOCKED", "Blocked", "block"] {
        let n = f.ok(&["query", "--tenant", "a", "--action", action, "--count"]);
        assert_eq!(n.trim(), "1", "--action {action}");
    }
    let missing = Fixture::new();
    missing
        .run(&["query", "--tenant", "a\u{1}"])
        .expect(2)
        .expect_one_error_line();
    assert!(!missing.dir.exists());
}

/// Every command that prints data accepts the same `--format` values.
#[test]
fn every_data_command_speaks_table_json_and_jsonl() {
    let f = numbered(4);
    let commands: [&[&str]; 5] = [
        &["query", "--tenant", "a"],
        &["stats", "--as-of", "2026-02-01T00:00:00Z"],
        &["dump"],
        &["tail"],
        &["info"],
    ];
    for args in commands {
        for format in ["table", "json", "jsonl"] {
            let mut all = args.to_vec();
            all.extend(["--format", format]);
            let out = f.run(&all);
            out.expect(0);
            match format {
                "json" => {
                    out.json();
                }
                "jsonl" => {
                    out.jsonl();
                }
                _ => assert!(!out.stdout.trim().is_empty(), "{}", out.show()),
            }
        }
        let mut bad = args.to_vec();
        bad.extend(["--format", "yaml"]);
        f.run(&bad).expect(2).expect_one_error_line();
    }
}

/// Times in: RFC 3339 with a zone, a date alone (midnight UTC), `now`, and
/// a duration before now, for every time flag; refusals name the forms.
#[test]
fn times_in_as_dates_and_durations_before_now() {
    let f = numbered(4);
    let count = |since: &str, until: &str| -> String {
        f.ok(&[
            "query", "--tenant", "a", "--count", "--since", since, "--until", until,
        ])
        .trim()
        .to_string()
    };
    assert_eq!(count("2026-01-01", "2026-01-02"), "2");
    assert_eq!(count("2026-01-01T00:01:00Z", "2026-01-02"), "1");
    assert_eq!(count("2025-12-31", "2026-01-01"), "0");
    // Relative: the events are in 2026-01-01, far before "1h" ago.
    assert_eq!(count("2020-01-01", "1h"), "2");
    assert_eq!(count("1h", "now"), "0");
    let recent = Fixture::new();
    recent.ok(&[
        "record", "--tenant", "a", "--rule", "r", "--action", "kill", "--at", "90s",
    ]);
    let n = recent.ok(&["query", "--tenant", "a", "--count", "--since", "1d12h"]);
    assert_eq!(n.trim(), "1");
    let stats = recent.run(&[
        "stats", "--as-of", "now", "--window", "1h", "--format", "json",
    ]);
    assert_eq!(stats.expect(0).json()["rules"][0]["trigger_count"], 1);
    for bad in ["2026-01-01T00:00:00", "yesterday", "2026-1-1", "1x"] {
        f.run(&["query", "--tenant", "a", "--since", bad])
            .expect(2)
            .expect_one_error_line()
            .stderr_has("--since");
    }
}

/// Times out: UTC by default; tables in the local zone with `--local` or
/// `TZ`; JSON stays UTC whatever the zone.
#[test]
fn times_out_are_utc_unless_local_is_asked_for() {
    let f = numbered(1);
    let utc = f.ok(&["tail"]);
    assert!(utc.contains("2026-01-01T00:00:00.000000Z"), "{utc}");
    // Zones as TZif files written here (the host may have no tz database).
    let plus1 = fixed_zone(&f, "plus1", 3600);
    let plus9 = fixed_zone(&f, "plus9", 9 * 3600);
    let mut paris = f.cmd(&["tail"]);
    paris.env("TZ", &plus1);
    let out = run(paris, None);
    out.expect(0);
    assert!(
        out.stdout.contains("2026-01-01T01:00:00.000000+01:00"),
        "{}",
        out.show()
    );
    let mut local = f.cmd(&["--local", "tail", "--format", "jsonl"]);
    local.env("TZ", &plus9);
    let out = run(local, None);
    assert_eq!(
        out.expect(0).jsonl()[0]["enforced_at"],
        "2026-01-01T00:00:00.000000Z"
    );
    let mut table = f.cmd(&["--local", "query", "--tenant", "a"]);
    table.env("TZ", &plus9);
    let out = run(table, None);
    assert!(
        out.expect(0)
            .stdout
            .contains("2026-01-01T09:00:00.000000+09:00"),
        "{}",
        out.show()
    );
    // An unknown zone: one warning, and UTC.
    let mut nowhere = f.cmd(&["tail"]);
    nowhere.env("TZ", "Nowhere/Atlantis");
    let out = run(nowhere, None);
    out.expect(0).stderr_has("UTC");
    assert!(
        out.stdout.contains("2026-01-01T00:00:00.000000Z"),
        "{}",
        out.show()
    );
}

/// A TZif (version 1) file of one zone `offset_s` east of UTC, no
/// transitions: what /usr/share/zoneinfo holds for a fixed-offset zone.
fn fixed_zone(f: &Fixture, name: &str, offset_s: i32) -> std::path::PathBuf {
    let mut b = b"TZif".to_vec();
    b.push(0);
    b.extend([0u8; 15]);
    // isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
    for count in [0u32, 0, 0, 0, 1, 4] {
        b.extend(count.to_be_bytes());
    }
    b.extend(offset_s.to_be_bytes());
    b.extend([0, 0]);
    b.extend(b"ZZZ\0");
    f.write_file(name, &b)
}
