//! `record` and `import` through the binary: what they append, every bad
//! input refused with one line and nothing appended, and an import killed
//! midway leaving a prefix of whole batches.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::fs;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use cli::*;
use enforcelog::now_us;
use enforcelog::timestamp::format_us;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// record
// ---------------------------------------------------------------------------

#[test]
fn record_prints_the_offset_and_dump_shows_the_event() {
    let f = Fixture::new();
    let first = f.run(&[
        "record",
        "--tenant",
        "acme",
        "--rule",
        "no-prod-writes",
        "--action",
        "kill",
        "--run",
        "run-7",
        "--at",
        "2026-03-04T05:06:07.5+02:00",
        "--details",
        r#"{"step": 3, "why": "ünïcode ✓", "nested": {"ok": false}}"#,
    ]);
    first.expect(0);
    assert_eq!(first.json(), json!({"offset": 0}));

    let before = now_us();
    let second = f.run(&[
        "record", "--tenant", "acme", "--rule", "budget", "--action", "BLOCKED",
    ]);
    let after = now_us();
    second.expect(0);
    assert_eq!(second.json(), json!({"offset": 1}));

    let dump = f.dump();
    assert_eq!(dump.len(), 2, "{dump:?}");
    assert_eq!(
        dump[0],
        json!({
            "offset": 0,
            "kind": "enforcement",
            "tenant_id": "acme",
            "rule_id": "no-prod-writes",
            "action_taken": "KILLED",
            "run_id": "run-7",
            "details": {"step": 3, "why": "ünïcode ✓", "nested": {"ok": false}},
            "enforced_at": "2026-03-04T03:06:07.500000Z",
        })
    );
    let d = &dump[1];
    assert_eq!(d["offset"], 1);
    assert_eq!(d["kind"], "enforcement");
    assert_eq!(d["tenant_id"], "acme");
    assert_eq!(d["rule_id"], "budget");
    assert_eq!(d["action_taken"], "BLOCKED");
    assert!(d.get("run_id").is_none_or(Value::is_null), "{d}");
    assert!(d.get("details").is_none_or(Value::is_null), "{d}");
    let at = d["enforced_at"].as_str().expect("enforced_at");
    assert_eq!(at.len(), "2026-03-04T03:06:07.500000Z".len(), "{at}");
    assert!(at.ends_with('Z'), "{at}");
    let at_us = us(at);
    assert!(
        (before..=after).contains(&at_us),
        "default time {at} is not between {} and {}",
        format_us(before),
        format_us(after)
    );
}

#[test]
fn record_accepts_every_durability_mode() {
    let f = Fixture::new();
    for (i, mode) in ["fsync", "interval:10ms", "none"].into_iter().enumerate() {
        let out = run(
            {
                let mut c = enforcelog();
                c.arg("--data-dir")
                    .arg(&f.dir)
                    .args(["--durability", mode])
                    .args([
                        "record", "--tenant", "t", "--rule", mode, "--action", "stop",
                    ]);
                c
            },
            None,
        );
        out.expect(0);
        assert_eq!(out.json(), json!({"offset": i}));
    }
    for bad in ["sometimes", "interval:", "interval:soon", "fsync:10ms"] {
        let out = run(
            {
                let mut c = enforcelog();
                c.arg("--data-dir")
                    .arg(&f.dir)
                    .args(["--durability", bad])
                    .args(["record", "--tenant", "t", "--rule", "r", "--action", "stop"]);
                c
            },
            None,
        );
        out.expect(2);
    }
    let rules: Vec<Value> = f.dump().iter().map(|d| d["rule_id"].clone()).collect();
    assert_eq!(
        rules,
        [json!("fsync"), json!("interval:10ms"), json!("none")]
    );
}

#[test]
fn data_dir_comes_from_the_flag_then_the_environment_then_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let record = [
        "record", "--tenant", "t", "--rule", "r", "--action", "block",
    ];

    let from_env = tmp.path().join("from-env");
    let mut cmd = enforcelog();
    cmd.env("ENFORCELOG_DIR", &from_env)
        .current_dir(tmp.path())
        .args(["--durability", "none"])
        .args(record);
    run(cmd, None).expect(0);
    assert!(
        from_env.join("VERSION").is_file(),
        "store created in $ENFORCELOG_DIR"
    );

    let from_flag = tmp.path().join("from-flag");
    let mut cmd = enforcelog();
    cmd.env("ENFORCELOG_DIR", &from_env)
        .current_dir(tmp.path())
        .arg("--data-dir")
        .arg(&from_flag)
        .args(["--durability", "none"])
        .args(record);
    run(cmd, None).expect(0);
    assert!(
        from_flag.join("VERSION").is_file(),
        "--data-dir wins over the environment"
    );

    let mut cmd = enforcelog();
    cmd.current_dir(tmp.path())
        .args(["--durability", "none"])
        .args(record);
    run(cmd, None).expect(0);
    assert!(
        tmp.path().join("enforcelog-data/VERSION").is_file(),
        "default ./enforcelog-data"
    );

    // The environment's store got one event; the flag's store got one.
    let mut cmd = enforcelog();
    cmd.env("ENFORCELOG_DIR", &from_env).arg("dump");
    assert_eq!(run(cmd, None).expect(0).jsonl().len(), 1);
}

#[test]
fn record_bad_input_matrix_exits_2_and_appends_nothing() {
    let f = Fixture::new();
    f.import(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    let before = f.segments();
    let base = [
        ("--tenant", "t".to_string()),
        ("--rule", "r".to_string()),
        ("--action", "block".to_string()),
        ("--at", "2026-01-01T00:00:00Z".to_string()),
    ];
    let huge = format!(r#"{{"k":"{}"}}"#, "x".repeat(70_000));
    // (flag, value, word the one-line error must contain)
    let cases: Vec<(&str, String, &str)> = vec![
        ("--action", "explode".into(), "action"),
        ("--action", String::new(), "action"),
        ("--at", "2026-01-01T00:00:00".into(), ""),
        // A date alone is a time now (midnight UTC); a malformed one is not.
        ("--at", "2026-1-01".into(), ""),
        ("--at", "1999-12-31".into(), "not-before"),
        ("--at", "yesterday".into(), ""),
        ("--at", "10000-01-01T00:00:00Z".into(), ""),
        ("--details", "{a:1}".into(), "details"),
        ("--details", "[1, 2]".into(), "details"),
        ("--details", r#""text""#.into(), "details"),
        ("--details", "null".into(), "details"),
        ("--details", huge, "details"),
        ("--tenant", String::new(), "tenant"),
        ("--tenant", "x".repeat(129), "tenant"),
        ("--tenant", "a\u{1}b".into(), "tenant"),
        ("--tenant", "a\u{202E}b".into(), "tenant"),
        ("--rule", String::new(), "rule"),
        ("--rule", "a\u{2028}b".into(), "rule"),
        ("--run", String::new(), "run"),
        ("--run", "é".repeat(65), "run"),
    ];
    for (flag, value, word) in &cases {
        let mut args: Vec<String> = vec!["record".into()];
        let mut replaced = false;
        for (f0, v0) in &base {
            args.push((*f0).into());
            if f0 == flag {
                args.push(value.clone());
                replaced = true;
            } else {
                args.push(v0.clone());
            }
        }
        if !replaced {
            args.push((*flag).into());
            args.push(value.clone());
        }
        let out = f.run(&args);
        out.expect(2).expect_one_error_line();
        assert!(out.stdout.trim().is_empty(), "{}: {}", out.what, out.stdout);
        assert!(
            out.stderr.to_lowercase().contains(word),
            "{}: the error should name {word:?}: {}",
            out.what,
            out.stderr
        );
        assert!(f.segments() == before, "{}: the store changed", out.what);
    }

    // An argument that is not UTF-8 at all.
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut cmd = f.cmd(&["record", "--rule", "r", "--action", "block", "--tenant"]);
        cmd.arg(OsStr::from_bytes(b"t\xff\xfe"));
        run(cmd, None).expect(2);
        assert!(f.segments() == before, "non-UTF-8 tenant changed the store");
    }
    assert_eq!(offsets(&f.dump()), [0]);
}

// ---------------------------------------------------------------------------
// import
// ---------------------------------------------------------------------------

#[test]
fn import_from_a_file_and_from_stdin_appends_in_input_order() {
    let f = Fixture::new();
    let first = [
        ev("a", "r1", "BLOCKED", "2026-02-01T00:00:00Z"),
        with(
            ev("a", "r2", "kill", "2026-02-01T01:00:00+01:00"),
            "run_id",
            json!("run-1"),
        ),
        with(
            ev("b", "r1", "Abort", "2026-02-01T00:00:00.123456789Z"),
            "details",
            json!({"n": 1, "list": [1, "two", null]}),
        ),
    ];
    let path = f.write_file("first.jsonl", jsonl_text(&first).as_bytes());
    let out = f.run(&[OsStr::new("import"), path.as_os_str()]);
    out.expect(0);
    assert_eq!(
        out.json(),
        json!({"imported": 3, "first_offset": 0, "last_offset": 2})
    );

    let before = now_us();
    let second = f.import(&[
        json!({"tenant_id": "c", "rule_id": "r", "action_taken": "stopped"}),
        ev("c", "r", "STOP", "2026-02-02T00:00:00Z"),
    ]);
    let after = now_us();
    assert_eq!(
        second,
        json!({"imported": 2, "first_offset": 3, "last_offset": 4})
    );

    let dump = f.dump();
    assert_eq!(offsets(&dump), [0, 1, 2, 3, 4]);
    let summary: Vec<(String, String, String, String)> = dump
        .iter()
        .map(|d| {
            (
                d["tenant_id"].as_str().unwrap().to_string(),
                d["rule_id"].as_str().unwrap().to_string(),
                d["action_taken"].as_str().unwrap().to_string(),
                d["enforced_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let row = |t: &str, r: &str, a: &str, at: &str| {
        (t.to_string(), r.to_string(), a.to_string(), at.to_string())
    };
    let default_at = summary[3].3.clone();
    assert_eq!(
        summary,
        [
            row("a", "r1", "BLOCKED", "2026-02-01T00:00:00.000000Z"),
            row("a", "r2", "KILLED", "2026-02-01T00:00:00.000000Z"),
            row("b", "r1", "ABORTED", "2026-02-01T00:00:00.123456Z"),
            row("c", "r", "STOPPED", &default_at),
            row("c", "r", "STOPPED", "2026-02-02T00:00:00.000000Z"),
        ]
    );
    assert!(
        (before..=after).contains(&us(&default_at)),
        "enforced_at defaults to now: {default_at}"
    );
    assert_eq!(dump[1]["run_id"], "run-1");
    assert_eq!(
        dump[2]["details"],
        json!({"n": 1, "list": [1, "two", null]})
    );
}

#[test]
fn import_batch_size_sets_the_atomic_batches() {
    let f = Fixture::new();
    let lines: Vec<Value> = (0..5)
        .map(|i| ev("t", &format!("r{i}"), "BLOCKED", "2026-01-01T00:00:00Z"))
        .collect();
    let out = f.run_stdin(
        &["import", "--batch", "2", "-"],
        jsonl_text(&lines).as_bytes(),
    );
    out.expect(0);
    assert_eq!(
        out.json(),
        json!({"imported": 5, "first_offset": 0, "last_offset": 4})
    );
    let segments = f.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(batch_count(&segments[0].1), 3, "5 events in batches of 2");

    // The default (1000) puts a small input in one batch.
    f.import(&lines);
    assert_eq!(batch_count(&f.segments()[0].1), 4, "one more batch");

    for bad in ["0", "-1", "lots"] {
        f.run_stdin(
            &["import", "--batch", bad, "-"],
            jsonl_text(&lines).as_bytes(),
        )
        .expect(2);
    }
    assert_eq!(f.dump().len(), 10);
}

#[test]
fn import_skips_gap_lines() {
    let f = Fixture::new();
    let lines = [
        with(
            ev("a", "r", "BLOCKED", "2026-01-01T00:00:00Z"),
            "offset",
            json!(0),
        ),
        json!({"offset": 1, "kind": "gap", "dropped": 3,
               "first_dropped_at": "2026-01-01T00:00:01.000000Z",
               "last_dropped_at": "2026-01-01T00:00:02.000000Z"}),
        with(
            with(
                ev("a", "r", "KILLED", "2026-01-01T00:00:03Z"),
                "kind",
                json!("enforcement"),
            ),
            "offset",
            json!(2),
        ),
    ];
    assert_eq!(
        f.import(&lines),
        json!({"imported": 2, "first_offset": 0, "last_offset": 1})
    );
    let dump = f.dump();
    assert_eq!(offsets(&dump), [0, 1]);
    assert!(dump.iter().all(|d| d["kind"] == "enforcement"), "{dump:?}");
}

/// One bad line among good ones, for every way a line can be wrong: exit 2,
/// `line N: field:` on stderr, and the store's bytes untouched.
#[test]
fn import_bad_line_matrix_reports_line_and_field_and_appends_nothing() {
    let f = Fixture::new();
    f.import(&[
        ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z"),
        ev("t", "r", "KILLED", "2026-01-01T00:00:01Z"),
    ]);
    let before_segments = f.segments();
    let before_dump = f.dump_text();

    let good = ev("t", "r", "STOPPED", "2026-01-02T00:00:00Z");
    let without = |key: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(key);
        v.to_string().into_bytes()
    };
    let set = |key: &str, value: Value| with(good.clone(), key, value).to_string().into_bytes();
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        (
            "truncated JSON",
            br#"{"tenant_id": "t", "rule_id""#.to_vec(),
            None,
        ),
        ("not JSON", b"hello world".to_vec(), None),
        ("JSON array", b"[1, 2, 3]".to_vec(), None),
        ("JSON string", br#""tenant_id""#.to_vec(), None),
        (
            "invalid UTF-8",
            b"{\"tenant_id\": \"t\xff\", \"rule_id\": \"r\", \"action_taken\": \"kill\"}".to_vec(),
            None,
        ),
        ("missing tenant", without("tenant_id"), Some("tenant_id")),
        (
            "empty tenant",
            set("tenant_id", json!("")),
            Some("tenant_id"),
        ),
        (
            "number tenant",
            set("tenant_id", json!(5)),
            Some("tenant_id"),
        ),
        (
            "null tenant",
            set("tenant_id", Value::Null),
            Some("tenant_id"),
        ),
        (
            "long tenant",
            set("tenant_id", json!("x".repeat(129))),
            Some("tenant_id"),
        ),
        (
            "control tenant",
            set("tenant_id", json!("a\u{7}b")),
            Some("tenant_id"),
        ),
        (
            "bidi tenant",
            set("tenant_id", json!("a\u{202E}b")),
            Some("tenant_id"),
        ),
        ("missing rule", without("rule_id"), Some("rule_id")),
        ("empty rule", set("rule_id", json!("")), Some("rule_id")),
        (
            "newline rule",
            set("rule_id", json!("a\nb")),
            Some("rule_id"),
        ),
        (
            "missing action",
            without("action_taken"),
            Some("action_taken"),
        ),
        (
            "unknown action",
            set("action_taken", json!("explode")),
            Some("action_taken"),
        ),
        (
            "number action",
            set("action_taken", json!(3)),
            Some("action_taken"),
        ),
        ("empty run", set("run_id", json!("")), Some("run_id")),
        ("number run", set("run_id", json!(42)), Some("run_id")),
        (
            "long run",
            set("run_id", json!("r".repeat(200))),
            Some("run_id"),
        ),
        (
            "details array",
            set("details", json!([1, 2])),
            Some("details"),
        ),
        (
            "details string",
            set("details", json!(r#"{"a":1}"#)),
            Some("details"),
        ),
        ("details number", set("details", json!(7)), Some("details")),
        (
            "details too large",
            set("details", json!({"k": "x".repeat(70_000)})),
            Some("details"),
        ),
        (
            "time without zone",
            set("enforced_at", json!("2026-01-01T00:00:00")),
            Some("enforced_at"),
        ),
        (
            "time garbage",
            set("enforced_at", json!("yesterday")),
            Some("enforced_at"),
        ),
        (
            "time as number",
            set("enforced_at", json!(1_767_225_600)),
            Some("enforced_at"),
        ),
        (
            "time date only",
            set("enforced_at", json!("2026-01-01")),
            Some("enforced_at"),
        ),
        // Issue 13, item 8: further ahead than `max_future_skew` allows.
        (
            "time in year 9999",
            set("enforced_at", json!("9999-12-31T23:59:59Z")),
            Some("enforced_at"),
        ),
    ];
    for (name, bad, field) in &cases {
        let mut input = Vec::new();
        for line in [
            good.to_string().into_bytes(),
            good.to_string().into_bytes(),
            bad.clone(),
            good.to_string().into_bytes(),
        ] {
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let path = f.write_file("bad.jsonl", &input);
        let out = f.run(&[OsStr::new("import"), path.as_os_str()]);
        out.expect(2);
        let wanted = match field {
            Some(field) => format!("line 3: {field}:"),
            None => "line 3:".to_string(),
        };
        assert!(
            out.stderr.contains(&wanted),
            "{name}: stderr should contain {wanted:?}:\n{}",
            out.stderr
        );
        for other in ["line 1:", "line 2:", "line 4:"] {
            assert!(
                !out.stderr.contains(other),
                "{name}: a good line reported:\n{}",
                out.stderr
            );
        }
        assert!(
            out.stdout.trim().is_empty(),
            "{name}: stdout {}",
            out.stdout
        );
        assert!(f.segments() == before_segments, "{name}: the store changed");
    }

    // A key given twice is ambiguous: refused, not silently resolved.
    let twice = br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","tenant_id":"u"}"#;
    let mut input = format!("{good}\n{good}\n").into_bytes();
    input.extend_from_slice(twice);
    input.push(b'\n');
    f.run_stdin(&["import", "-"], &input)
        .expect(2)
        .stderr_has("line 3: tenant_id:");

    // Line numbers count physical lines: blank lines and CRLF endings.
    let input = format!(
        "{good}\r\n\r\n{}\r\n{good}\r\n",
        r#"{"tenant_id":"t","rule_id":"r","action_taken":"zap"}"#
    );
    f.run_stdin(&["import", "-"], input.as_bytes())
        .expect(2)
        .stderr_has("line 3: action_taken:");

    // The same through stdin, with the bad line first.
    let input = format!(
        "{}\n{good}\n",
        r#"{"tenant_id":"t","rule_id":"r","action_taken":"zap"}"#
    );
    f.run_stdin(&["import", "-"], input.as_bytes())
        .expect(2)
        .stderr_has("line 1: action_taken:");
    assert!(f.segments() == before_segments, "stdin: the store changed");
    assert_eq!(f.dump_text(), before_dump);
}

#[test]
fn import_reports_every_bad_line_up_to_20_then_a_count() {
    let f = Fixture::new();
    f.import(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    let before = f.segments();

    // Three different problems, far apart: all are reported.
    let good = ev("t", "r", "STOPPED", "2026-01-02T00:00:00Z");
    let mut lines: Vec<String> = (0..8).map(|_| good.to_string()).collect();
    lines[1] = with(good.clone(), "tenant_id", json!("")).to_string();
    lines[4] = with(good.clone(), "action_taken", json!("nope")).to_string();
    lines[6] = with(good.clone(), "enforced_at", json!("2026-01-01T00:00:00")).to_string();
    let out = f.run_stdin(&["import", "-"], (lines.join("\n") + "\n").as_bytes());
    out.expect(2)
        .stderr_has("line 2: tenant_id:")
        .stderr_has("line 5: action_taken:")
        .stderr_has("line 7: enforced_at:");

    // 25 bad lines (2..=26): the first 20 are listed, then a count.
    let mut lines: Vec<String> = Vec::new();
    for n in 1..=27 {
        let line = if n == 1 || n == 27 {
            good.clone()
        } else if n % 2 == 0 {
            let mut v = good.clone();
            v.as_object_mut().unwrap().remove("tenant_id");
            v
        } else {
            with(good.clone(), "action_taken", json!("explode"))
        };
        lines.push(line.to_string());
    }
    let out = f.run_stdin(&["import", "-"], (lines.join("\n") + "\n").as_bytes());
    out.expect(2);
    for n in 2..=21 {
        let field = if n % 2 == 0 {
            "tenant_id"
        } else {
            "action_taken"
        };
        out.stderr_has(&format!("line {n}: {field}:"));
    }
    for n in 22..=27 {
        assert!(
            !out.stderr.contains(&format!("line {n}:")),
            "only the first 20 bad lines are listed:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr
            .lines()
            .filter(|l| !l.starts_with("line "))
            .any(|l| l.contains("25") || l.contains("5 more")),
        "after the first 20, a count of the bad lines:\n{}",
        out.stderr
    );
    assert!(f.segments() == before, "the store changed");
}

#[test]
fn import_of_a_missing_file_fails_cleanly() {
    let f = Fixture::new();
    let missing = f.tmp.path().join("no-such-input.jsonl");
    let out = f.run(&[OsStr::new("import"), missing.as_os_str()]);
    assert!(
        matches!(out.code(), Some(2 | 4)),
        "{}: exit {:?}\n{}",
        out.what,
        out.code(),
        out.stderr
    );
    out.expect_one_error_line()
        .stderr_has("no-such-input.jsonl");
}

/// Killed (SIGKILL) while appending, an import leaves a prefix of whole
/// `--batch` batches, in input order, and a store that verifies.
#[test]
fn an_import_killed_midway_leaves_a_prefix_of_whole_batches() {
    const EVENTS: usize = 20_000;
    const BATCH: usize = 4;
    let f = Fixture::new();
    let lines: Vec<Value> = (0..EVENTS)
        .map(|i| ev("t", &format!("r{i}"), "BLOCKED", "2026-01-01T00:00:00Z"))
        .collect();
    let path = f.write_file("big.jsonl", jsonl_text(&lines).as_bytes());
    let mut cmd = f.cmd_durable(&[OsStr::new("import"), OsStr::new("--batch")]);
    cmd.arg(BATCH.to_string())
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("spawn import");
    // Kill it once about a tenth of the input is on disk (or when it is
    // done, if it is faster than this poll).
    let segment = f.dir.join(SEGMENT);
    let deadline = Instant::now() + RUN_LIMIT;
    loop {
        let len = fs::metadata(&segment).map_or(0, |m| m.len());
        if len > 100_000 || child.try_wait().expect("try_wait").is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "import made no progress");
        thread::sleep(Duration::from_millis(1));
    }
    let _ = child.kill();
    let _ = child.wait();

    let dump = f.dump();
    let n = dump.len();
    eprintln!("killed after {n} of {EVENTS} events");
    assert!(
        n == EVENTS || n.is_multiple_of(BATCH),
        "{n} events is not a whole number of batches of {BATCH}"
    );
    for (i, d) in dump.iter().enumerate() {
        assert_eq!(d["offset"], i);
        assert_eq!(d["rule_id"], format!("r{i}"), "input order");
    }
    f.ok(&["verify"]);
    // A writer reopens it and carries on after the prefix. The read above
    // stopped at the durable end the killed writer last published; the
    // writer's open also adopts (and fsyncs) whole batches the killed
    // process wrote after that, never acknowledged but in the page cache.
    let next = f.run(&[
        "record", "--tenant", "t", "--rule", "after", "--action", "kill",
    ]);
    let offset = next.expect(0).json()["offset"].as_u64().expect("an offset");
    let dump = f.dump();
    assert_eq!(offset as usize + 1, dump.len(), "the new record is last");
    assert!(offset as usize >= n, "nothing read before is lost");
    assert!(
        offset as usize == EVENTS || (offset as usize).is_multiple_of(BATCH),
        "{offset} events before it is not a whole number of batches of {BATCH}"
    );
    for (i, d) in dump[..offset as usize].iter().enumerate() {
        assert_eq!(d["rule_id"], format!("r{i}"), "input order");
    }
}

/// An event stamped far in the past is refused the same way by `record`
/// and `import` (before 2000-01-01 by default; `--not-before` moves the
/// bound, `none` lifts it), as far-future ones are (`--max-future-skew`);
/// a refusal changes nothing on disk.
#[test]
fn far_past_and_far_future_are_refused_alike_by_record_and_import() {
    let f = Fixture::new();
    let record = |at: &str, extra: &[&str]| {
        let mut args = vec![
            "record", "--tenant", "t", "--rule", "r", "--action", "kill", "--at", at,
        ];
        args.extend_from_slice(extra);
        f.run(&args)
    };
    let import = |at: &str, extra: &[&str]| {
        let mut args = vec!["import"];
        args.extend_from_slice(extra);
        args.push("-");
        let line = jsonl_text(&[ev("t", "r", "KILLED", at)]);
        f.run_stdin(&args, line.as_bytes())
    };
    let far_future = format_us(now_us() + 2 * HOUR_US);
    for at in [
        "1999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1970-01-01",
        far_future.as_str(),
    ] {
        let r = record(at, &[]);
        r.expect(2)
            .expect_one_error_line()
            .stderr_has("enforced_at");
        let i = import(at, &[]);
        i.expect(2).stderr_has("line 1: enforced_at");
        assert!(!f.dir.exists(), "a refused event created the store");
    }
    let before_bound = "2010-06-01T00:00:00Z";
    record(before_bound, &["--not-before", "2011-01-01"]).expect(2);
    import(before_bound, &["--not-before", "2011-01-01"]).expect(2);
    assert!(!f.dir.exists());
    record("2000-01-01T00:00:00Z", &[]).expect(0);
    record("1999-12-31T23:59:59Z", &["--not-before", "none"]).expect(0);
    import("0001-01-01T00:00:00Z", &["--not-before", "none"]).expect(0);
    record(&far_future, &["--max-future-skew", "3h"]).expect(0);
    import(&far_future, &["--max-future-skew", "1d12h"]).expect(0);
    assert_eq!(f.dump().len(), 5);
}

/// Import names every unknown key in its error, and when a key is a flag's
/// name it says which import field that flag is.
#[test]
fn import_names_unknown_keys_and_the_field_a_flag_name_means() {
    let f = Fixture::new();
    let line = r#"{"tenant":"a","rule_id":"r","action":"kill","colour":"red"}"#;
    let out = f.run_stdin(&["import", "-"], format!("{line}\n").as_bytes());
    out.expect(2);
    let first = out.stderr.lines().next().unwrap_or_default();
    for needle in [
        "line 1",
        "\"tenant\"",
        "\"action\"",
        "\"colour\"",
        "tenant is tenant_id",
        "action is action_taken",
        "expected tenant_id",
    ] {
        assert!(first.contains(needle), "{needle:?} not in {first:?}");
    }
    assert!(!f.dir.exists());
}
