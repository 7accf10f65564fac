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
