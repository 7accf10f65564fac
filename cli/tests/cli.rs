//! The `enforcelog` command, run as a separate process (issue 6).
//!
//! Each test works in its own temporary directory through `--data-dir`, runs
//! the built binary with `std::process::Command` (stdin closed unless the
//! test pipes something in), and checks the global contract on every run:
//! no panic and no backtrace on stderr, whatever the input. The exit codes
//! are the contract: 0 success, 1 corruption found, 2 bad input or usage,
//! 3 store locked by another writer, 4 other I/O failure.
//!
//! Inputs are small and `--durability none` is used wherever durability is
//! not the point, so the whole file runs in seconds.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::process::{self, Out, Watchdog};
use enforcelog::timestamp::{format_us, parse_us};
use enforcelog::{now_us, Store, StoreOptions};
use serde_json::{json, Value};
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");
/// Longest any single invocation may take before the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(30);
const SEGMENT: &str = "00000000000000000000.log";
const DAY_US: i64 = 86_400_000_000;
const HOUR_US: i64 = 3_600_000_000;
/// Every subcommand the issue names.
const SUBCOMMANDS: [&str; 10] = [
    "demo",
    "record",
    "import",
    "query",
    "stats",
    "dump",
    "verify",
    "repair",
    "tail",
    "completions",
];

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

const WATCHDOG: Watchdog = Watchdog {
    limit: RUN_LIMIT,
    panic_signs: &["panicked", "stack backtrace", "RUST_BACKTRACE"],
};

impl Out {
    #[track_caller]
    fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "{}: expected exit {code}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.what,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Errors are one clear line on stderr (detail only with `-v`). clap's
    /// "For more information, try '--help'." hint is allowed beside it.
    #[track_caller]
    fn expect_one_error_line(&self) -> &Self {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with("For more information"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "{}: an error is one line on stderr, got:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    #[track_caller]
    fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "{}: stderr should contain {needle:?}:\n{}",
            self.what,
            self.stderr
        );
        self
    }

    /// stdout as one JSON value.
    #[track_caller]
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not one JSON value ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }

    /// stdout as JSON Lines.
    #[track_caller]
    fn jsonl(&self) -> Vec<Value> {
        jsonl(&self.stdout, &self.what)
    }
}

#[track_caller]
fn jsonl(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {l:?}"))
        })
        .collect()
}

fn enforcelog() -> Command {
    process::command(BIN)
}

/// Runs `cmd` to completion (stdin closed, or fed `stdin` and then closed),
/// failing the test if it takes longer than [`RUN_LIMIT`] or shows a panic.
fn run(cmd: Command, stdin: Option<&[u8]>) -> Out {
    let what = process::describe(&cmd);
    WATCHDOG.run(cmd, what, stdin)
}

// ---------------------------------------------------------------------------
// A store in a temporary directory
// ---------------------------------------------------------------------------

struct Fixture {
    tmp: TempDir,
    dir: PathBuf,
}

impl Fixture {
    /// A fresh temporary directory; the store directory inside it does not
    /// exist until the first write.
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        Fixture { tmp, dir }
    }

    /// `enforcelog --data-dir DIR <args>` (the store's durability left at
    /// its default).
    fn cmd_durable<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = enforcelog();
        cmd.arg("--data-dir").arg(&self.dir).args(args);
        cmd
    }

    /// `enforcelog --data-dir DIR --durability none <args>`.
    fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = enforcelog();
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--durability", "none"])
            .args(args);
        cmd
    }

    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        run(self.cmd(args), None)
    }

    fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> Out {
        run(self.cmd(args), Some(stdin))
    }

    /// Runs and expects exit 0; returns stdout.
    #[track_caller]
    fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        out.expect(0);
        out.stdout
    }

    /// Imports JSON Lines from stdin and returns the summary.
    #[track_caller]
    /// Times are not limited (`--max-future-skew none`): the tests that use
    /// this import the edges of the timestamp range; the default limit is
    /// tested by the bad-line matrix.
    fn import(&self, lines: &[Value]) -> Value {
        let out = self.run_stdin(
            &["import", "--max-future-skew", "none", "-"],
            jsonl_text(lines).as_bytes(),
        );
        out.expect(0);
        out.json()
    }

    #[track_caller]
    fn dump_text(&self) -> String {
        self.ok(&["dump"])
    }

    #[track_caller]
    fn dump(&self) -> Vec<Value> {
        jsonl(&self.dump_text(), "dump")
    }

    /// Name and bytes of every segment file.
    fn segments(&self) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&self.dir)
            .expect("list store directory")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension() == Some(OsStr::new("log")))
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, fs::read(&p).expect("read segment"))
            })
            .collect();
        files.sort();
        files
    }

    fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.tmp.path().join(name);
        fs::write(&path, bytes).expect("write input file");
        path
    }
}

fn jsonl_text(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// An event in the import format.
fn ev(tenant: &str, rule: &str, action: &str, at: &str) -> Value {
    json!({"tenant_id": tenant, "rule_id": rule, "action_taken": action, "enforced_at": at})
}

fn with(mut event: Value, key: &str, value: Value) -> Value {
    event[key] = value;
    event
}

fn offsets(values: &[Value]) -> Vec<u64> {
    values
        .iter()
        .map(|v| {
            v["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset in {v}"))
        })
        .collect()
}

fn us(text: &str) -> i64 {
    parse_us(text).expect("test time")
}

/// Number of atomic batches in a segment (each starts with this marker).
fn batch_count(segment: &[u8]) -> usize {
    segment.windows(4).filter(|w| w == b"EBAT").count()
}

/// Whether `text` holds a time as the CLI prints them:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn has_utc_time(text: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    text.as_bytes().windows(SHAPE.len()).any(|w| {
        w.iter().zip(SHAPE).all(|(&c, &s)| {
            if s == b'd' {
                c.is_ascii_digit()
            } else {
                c == s
            }
        })
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in the segment", String::from_utf8_lossy(needle)))
}

// ---------------------------------------------------------------------------
// Help, completions, usage
// ---------------------------------------------------------------------------

#[test]
fn help_on_every_subcommand_exits_zero_and_names_the_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let top = run(
        {
            let mut c = enforcelog();
            c.current_dir(tmp.path()).arg("--help");
            c
        },
        None,
    );
    top.expect(0);
    for name in SUBCOMMANDS {
        assert!(
            top.stdout.contains(name),
            "--help lists {name}:\n{}",
            top.stdout
        );
    }
    for flag in ["--data-dir", "--durability"] {
        assert!(top.stdout.contains(flag), "--help names {flag}");
    }
    let flags: [(&str, &[&str]); 10] = [
        ("demo", &["--events", "--producers", "--tenants", "--rules"]),
        (
            "record",
            &[
                "--tenant",
                "--rule",
                "--action",
                "--run",
                "--at",
                "--details",
            ],
        ),
        ("import", &["--batch"]),
        (
            "query",
            &[
                "--tenant",
                "--rule",
                "--action",
                "--run",
                "--since",
                "--until",
                "--limit",
                "--after-offset",
                "--format",
            ],
        ),
        (
            "stats",
            &["--tenant", "--rule", "--as-of", "--window", "--format"],
        ),
        ("dump", &["--from"]),
        ("verify", &[]),
        ("repair", &[]),
        ("tail", &["--follow", "--tenant"]),
        ("completions", &[]),
    ];
    for (name, wanted) in flags {
        let mut cmd = enforcelog();
        cmd.current_dir(tmp.path()).args([name, "--help"]);
        let out = run(cmd, None);
        out.expect(0);
        assert!(
            out.stdout.contains("Usage"),
            "{name} --help:\n{}",
            out.stdout
        );
        for flag in wanted {
            assert!(
                out.stdout.contains(flag),
                "{name} --help should name {flag}:\n{}",
                out.stdout
            );
        }
    }
    assert!(
        fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "--help created files in the working directory"
    );
}

#[test]
fn completions_print_a_plausible_script() {
    let out = run(
        {
            let mut c = enforcelog();
            c.args(["completions", "bash"]);
            c
        },
        None,
    );
    out.expect(0);
    for needle in ["enforcelog", "complete", "import", "stats", "--data-dir"] {
        assert!(
            out.stdout.contains(needle),
            "bash completions mention {needle:?}"
        );
    }
    let zsh = run(
        {
            let mut c = enforcelog();
            c.args(["completions", "zsh"]);
            c
        },
        None,
    );
    zsh.expect(0);
    assert!(zsh.stdout.contains("#compdef enforcelog"), "{}", zsh.stdout);
    let bad = run(
        {
            let mut c = enforcelog();
            c.args(["completions", "no-such-shell"]);
            c
        },
        None,
    );
    bad.expect(2);
}

#[test]
fn usage_errors_exit_2() {
    let f = Fixture::new();
    f.import(&[ev("a", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["--no-such-global", "dump"],
        &["record", "--bogus"],
        &["record", "--tenant", "a", "--rule", "r"],
        &["record", "--tenant", "a", "--action", "kill"],
        &["record", "--rule", "r", "--action", "kill"],
        &["import"],
        &["query"],
        &["query", "--tenant", "a", "--since", "2026-01-01T00:00:00"],
        &["query", "--tenant", "a", "--until", "2026-01-01 00:00:00"],
        &["query", "--tenant", "a", "--since", "yesterday"],
        &["query", "--tenant", "a", "--format", "xml"],
        &["query", "--tenant", "a", "--limit", "abc"],
        &["query", "--tenant", "a", "--limit", "0"],
        &["query", "--tenant", "a", "--limit", "-5"],
        &["query", "--tenant", "a", "--action", "explode"],
        &["query", "--tenant", "a", "--after-offset", "x"],
        &["stats", "--as-of", "2026-01-01T00:00:00"],
        &["stats", "--as-of", "2026-13-45T00:00:00Z"],
        &["stats", "--window", "thirty days"],
        &["stats", "--format", "yaml"],
        &["dump", "--from", "-1"],
        &["dump", "--from", "18446744073709551616"],
        &["dump", "--from", "99"],
        &["demo", "--events", "many"],
    ];
    for args in cases {
        let out = f.run(args);
        out.expect(2);
        assert!(
            out.stdout.trim().is_empty(),
            "{}: stdout {}",
            out.what,
            out.stdout
        );
    }
    let out = run(
        {
            let mut c = f.cmd_durable(&["dump"]);
            c.args(["--durability", "sometimes"]);
            c
        },
        None,
    );
    out.expect(2);
    // Still exactly the one event.
    assert_eq!(offsets(&f.dump()), [0]);
}

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
        ("--at", "2026-01-01".into(), ""),
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

// ---------------------------------------------------------------------------
// The golden fixture and the dump | import round trip
// ---------------------------------------------------------------------------

fn golden(name: &str) -> PathBuf {
    let root = &Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/golden").join(name);
    if shared.is_file() {
        shared
    } else {
        root.join("tests/fixtures/golden").join(name)
    }
}

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
        &["import", "--max-future-skew", "none", "-"],
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
        &["import", "--max-future-skew", "none", "-"],
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

// ---------------------------------------------------------------------------
// verify and repair
// ---------------------------------------------------------------------------

/// Five events, each in its own batch, with recognisable run ids.
fn five_batches() -> Fixture {
    let f = Fixture::new();
    let lines: Vec<Value> = (0..5)
        .map(|i| {
            with(
                ev("t", "r", "BLOCKED", &format!("2026-01-01T00:00:0{i}Z")),
                "run_id",
                json!(format!("victim-run-{i}")),
            )
        })
        .collect();
    let out = f.run_stdin(
        &["import", "--batch", "1", "-"],
        jsonl_text(&lines).as_bytes(),
    );
    out.expect(0);
    let segments = f.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(batch_count(&segments[0].1), 5);
    f
}

/// Flips one bit inside the payload of event `i`; returns the byte position.
fn flip_bit_in_event(f: &Fixture, i: usize) -> usize {
    let path = f.dir.join(SEGMENT);
    let mut bytes = fs::read(&path).unwrap();
    let at = find(&bytes, format!("victim-run-{i}").as_bytes());
    bytes[at] ^= 0x04;
    fs::write(&path, &bytes).unwrap();
    at
}

#[test]
fn verify_a_clean_store_exits_0() {
    let f = five_batches();
    f.ok(&["verify"]);
}

#[test]
fn verify_a_flipped_bit_exits_1_and_names_the_segment_and_byte() {
    let f = five_batches();
    let flipped = flip_bit_in_event(&f, 2);
    let damaged = fs::read(f.dir.join(SEGMENT)).unwrap();
    let out = f.run(&["verify"]);
    out.expect(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{SEGMENT}: byte ")))
        .unwrap_or_else(|| panic!("no `{SEGMENT}: byte N:` line:\n{text}"));
    let rest = &line[line.find(": byte ").unwrap() + ": byte ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let position: usize = digits
        .parse()
        .unwrap_or_else(|_| panic!("no position in {line:?}"));
    assert!(
        rest[digits.len()..].starts_with(": "),
        "`<file>: byte <position>: <what>`: {line:?}"
    );
    assert!(
        (32..=flipped).contains(&position),
        "damage at byte {flipped} reported at {position}: {line:?}"
    );

    // Damage in the active segment stops nothing (it used to make every
    // command fail until a repair): the read commands read past it and show
    // the damaged event as lost, and `record` goes on, after it.
    let dump = f.dump();
    assert_eq!(dump.len(), 5, "{dump:?}");
    assert_eq!(dump[2]["kind"], "lost", "{dump:?}");
    f.run(&["query", "--tenant", "t"]).expect(0);
    // (The checkpoint written by the import counted the event before the
    // damage; the statistics keep that count.)
    f.run(&["stats"]).expect(0);
    let tail = f.run(&["tail"]);
    tail.expect(0);
    assert!(tail.stdout.contains("LOST"), "{}", tail.stdout);
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
    // The writer sealed the damaged segment as found: verify still reports it.
    f.run(&["verify"]).expect(1);
    assert!(
        fs::read(f.dir.join(SEGMENT)).unwrap() == damaged,
        "the damaged segment is left as found"
    );
}

#[test]
fn verify_of_a_future_version_does_not_send_the_user_to_repair() {
    let f = five_batches();
    fs::write(f.dir.join("VERSION"), "enforcelog-log 9\n").unwrap();
    let out = f.run(&["verify"]);
    out.expect(1);
    assert!(out.stderr.contains("repair cannot help"), "{}", out.stderr);
    assert!(!out.stderr.contains("moves what cannot"), "{}", out.stderr);
}

#[test]
fn verify_treats_a_torn_tail_as_a_warning() {
    let f = five_batches();
    let path = f.dir.join(SEGMENT);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let out = f.run(&["verify"]);
    out.expect(0);
    let text = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(text.contains("torn"), "the torn tail is reported:\n{text}");
}

#[test]
fn verify_runs_read_only_beside_a_writer() {
    let f = five_batches();
    let store = Store::open(&f.dir, StoreOptions::default()).expect("open writer");
    store
        .record_blocking(enforcelog::Event::new("t", "r", enforcelog::Action::Killed))
        .unwrap();
    f.ok(&["verify"]);
    // Read commands, too, work beside the writer.
    assert_eq!(f.dump().len(), 6);
    drop(store);
}

#[test]
fn repair_moves_only_the_damage_to_quarantine_and_keeps_every_other_event() {
    let f = five_batches();
    let dump_before = f.dump();
    let flipped = flip_bit_in_event(&f, 2);
    let damaged = fs::read(f.dir.join(SEGMENT)).unwrap();
    f.run(&["verify"]).expect(1);

    // A dry run says what would move and changes nothing.
    let dry = f.run(&["repair", "--dry-run"]);
    dry.expect(0);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("1 event(s) would be lost"),
        "{}",
        dry.stdout
    );
    assert_eq!(fs::read(f.dir.join(SEGMENT)).unwrap(), damaged);
    assert!(!f.dir.join("quarantine").exists());

    let out = f.run(&["repair"]);
    out.expect(0);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("quarantine"),
        "repair says where it moved things:\n{said}"
    );
    assert!(said.contains(SEGMENT), "repair names the segment:\n{said}");

    // Nothing deleted: the damaged bytes are in quarantine.
    let quarantine = f.dir.join("quarantine");
    let mut saved = Vec::new();
    for entry in walk(&quarantine) {
        saved.extend(fs::read(entry).unwrap());
    }
    assert!(
        saved
            .windows(16)
            .any(|w| w == &damaged[flipped - 8..flipped + 8]),
        "the damaged bytes are saved in quarantine"
    );
    let listed = f.run(&["quarantine"]);
    listed.expect(0);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.contains("\tdamaged\t") && l.contains(SEGMENT)),
        "{}",
        listed.stdout
    );

    // Every other event is kept, at its offset; the damaged one is a hole.
    f.ok(&["verify"]);
    let dump = f.dump();
    assert_eq!(dump.len(), dump_before.len());
    for (i, (now, before)) in dump.iter().zip(&dump_before).enumerate() {
        if i == 2 {
            assert_eq!(now["kind"], "lost", "{now}");
            assert_eq!(now["hole_len"], 1, "{now}");
        } else {
            assert_eq!(now, before);
        }
    }
    let stats = stats_json_at(&f, "2026-02-01T00:00:00Z");
    let total: u64 = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 4,
        "stats count every event but the lost one: {stats}"
    );
    assert_eq!(stats["lost"], 1, "stats report the hole: {stats}");
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
}

/// Finding E (issue 13): one flipped bit in a segment header. Every command
/// that opens the log refuses it with one line naming the file and `repair`
/// and changes nothing; `verify` reports it; `repair` writes the header
/// again from the file name (the segment is then exactly as written), loses
/// nothing, and the next event takes the next offset.
#[test]
fn a_flipped_segment_header_bit_is_refused_naming_repair_and_repair_rewrites_the_header() {
    let f = five_batches();
    let dump_before = f.dump();
    let path = f.dir.join(SEGMENT);
    let pristine = fs::read(&path).unwrap();
    let mut damaged = pristine.clone();
    damaged[17] ^= 0x02; // the base offset field
    fs::write(&path, &damaged).unwrap();

    f.run(&["verify"]).expect(1);
    for args in [
        &["record", "--tenant", "t", "--rule", "r", "--action", "kill"][..],
        &["dump"][..],
    ] {
        let out = f.run(args);
        assert_ne!(out.code(), Some(0), "{args:?} accepted a bad header");
        out.expect_one_error_line();
        assert!(
            out.stderr.contains(SEGMENT) && out.stderr.contains("repair"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(fs::read(&path).unwrap() == damaged, "{args:?} changed it");
    }

    let dry = f.run(&["repair", "--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains("header") && dry.stdout.contains("would be rewritten"),
        "{}",
        dry.stdout
    );
    assert!(fs::read(&path).unwrap() == damaged, "a dry run changed it");
    assert!(!f.dir.join("quarantine").exists());

    let out = f.run(&["repair"]);
    out.expect(0);
    assert!(out.stdout.contains("header"), "{}", out.stdout);
    assert!(
        out.stdout.contains("0 event(s) lost") && out.stdout.contains("next offset 5"),
        "{}",
        out.stdout
    );
    assert!(
        fs::read(&path).unwrap() == pristine,
        "the header is as written"
    );
    let listed = f.run(&["quarantine"]);
    listed.expect(0);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.contains("\theader\t") && l.contains(SEGMENT)),
        "{}",
        listed.stdout
    );
    f.ok(&["verify"]);
    assert_eq!(f.dump(), dump_before);
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
}

fn stats_json_at(f: &Fixture, as_of: &str) -> Value {
    f.run(&["stats", "--as-of", as_of, "--format", "json"])
        .expect(0)
        .json()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn repair_of_a_clean_store_changes_nothing() {
    let f = five_batches();
    let before = f.segments();
    f.ok(&["repair"]);
    assert!(f.segments() == before);
    assert!(walk(&f.dir.join("quarantine")).is_empty());
    f.ok(&["verify"]);
}

// ---------------------------------------------------------------------------
// Exit 3: locked; exit 4: I/O
// ---------------------------------------------------------------------------

#[test]
fn a_store_locked_by_another_writer_exits_3() {
    let g = five_batches();
    let store = Store::open(&g.dir, StoreOptions::default()).expect("open writer");
    let before = g.segments();
    let record = g.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    record.expect(3).expect_one_error_line();
    assert!(
        record.stderr.to_lowercase().contains("lock"),
        "{}",
        record.stderr
    );
    let lines = jsonl_text(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    g.run_stdin(&["import", "-"], lines.as_bytes())
        .expect(3)
        .expect_one_error_line();
    g.run(&["repair"]).expect(3).expect_one_error_line();
    assert!(g.segments() == before, "nothing written while locked");
    drop(store);
    let after = g.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(after.expect(0).json(), json!({"offset": 5}));
}

#[test]
fn repair_is_refused_while_a_writer_holds_the_lock() {
    let f = five_batches();
    let store = Store::open(&f.dir, StoreOptions::default()).expect("open writer");
    // Damage a byte the open writer has already read past; repair must still
    // refuse to touch the directory.
    flip_bit_in_event(&f, 1);
    let damaged = f.segments();
    f.run(&["repair"]).expect(3).expect_one_error_line();
    assert!(f.segments() == damaged, "repair changed a locked store");
    assert!(
        walk(&f.dir.join("quarantine")).is_empty(),
        "nothing quarantined"
    );
    drop(store);
}

#[test]
fn a_data_dir_that_is_a_regular_file_exits_4() {
    let f = Fixture::new();
    fs::write(&f.dir, b"not a directory").unwrap();
    let record = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    record.expect(4).expect_one_error_line();
    assert!(
        record.stderr.contains("store"),
        "names the path: {}",
        record.stderr
    );
    let lines = jsonl_text(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    f.run_stdin(&["import", "-"], lines.as_bytes())
        .expect(4)
        .expect_one_error_line();
    // Readers find no store there: the binary calls that a usage error (2),
    // like a missing directory; an I/O failure (4) would do as well.
    let dump = f.run(&["dump"]);
    assert!(
        matches!(dump.code(), Some(2 | 4)),
        "{}: exit {:?}",
        dump.what,
        dump.code()
    );
    dump.expect_one_error_line();
    assert_eq!(fs::read(&f.dir).unwrap(), b"not a directory");
}

#[test]
fn read_commands_on_a_missing_store_say_so_and_create_nothing() {
    let f = Fixture::new();
    let cases: &[&[&str]] = &[
        &["dump"],
        &["query", "--tenant", "t"],
        &["stats"],
        &["verify"],
        &["tail"],
    ];
    for args in cases {
        let out = f.run(args);
        assert!(
            matches!(out.code(), Some(2 | 4)),
            "{}: exit {:?}\n{}",
            out.what,
            out.code(),
            out.stderr
        );
        out.expect_one_error_line();
        assert!(
            out.stderr.contains(&*f.dir.to_string_lossy()),
            "{}: the error names the directory: {}",
            out.what,
            out.stderr
        );
        assert!(!f.dir.exists(), "{}: created the store", out.what);
    }
    f.run(&["repair"]);
    assert!(!f.dir.exists(), "repair created the store");
}

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

#[test]
fn demo_with_small_numbers_runs_quickly_and_leaves_a_clean_store() {
    let f = Fixture::new();
    let started = Instant::now();
    let out = run(
        f.cmd_durable(&["demo", "--events", "2000", "--producers", "8"]),
        None,
    );
    let elapsed = started.elapsed();
    out.expect(0);
    assert!(elapsed < Duration::from_secs(20), "demo took {elapsed:?}");
    let said = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(said.contains("fsync"), "demo reports fsyncs:\n{said}");
    assert!(
        said.contains("trigger"),
        "demo prints the top rules:\n{said}"
    );
    assert!(
        has_utc_time(&out.stdout),
        "demo prints last_triggered_at times:\n{}",
        out.stdout
    );

    f.ok(&["verify"]);
    let dump = f.dump();
    let events = dump.iter().filter(|d| d["kind"] == "enforcement").count();
    let gaps = dump.len() - events;
    if gaps == 0 {
        assert_eq!(events, 2000, "demo records --events outcomes");
    } else {
        assert!(events < 2000, "{events} events and {gaps} gap markers");
    }
    let stats = stats_json_at(&f, "9999-12-31T23:59:59Z");
    let total: u64 = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_count"].as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, events, "stats count every demo event");
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

#[test]
fn odd_input_never_panics() {
    let f = Fixture::new();
    f.import(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    let big = "9".repeat(400);
    let cases: Vec<(Vec<&str>, Option<&[u8]>)> = vec![
        (vec!["import", "-"], Some(b"")),
        (vec!["import", "-"], Some(b"\n\n\n")),
        (vec!["import", "-"], Some(b"\xff\xfe\x00\x01garbage")),
        (vec!["import", "-"], Some(b"{}\n")),
        (
            vec!["import", "-"],
            Some(b"{\"tenant_id\":{\"a\":[[[[[[[[]]]]]]]]}}\n"),
        ),
        (vec!["query", "--tenant", "t", "--limit", &big], None),
        (
            vec![
                "query",
                "--tenant",
                "t",
                "--after-offset",
                "18446744073709551615",
            ],
            None,
        ),
        (vec!["query", "--tenant", "t", "--limit", "100000000"], None),
        (vec!["query", "--tenant", "", "--format", "jsonl"], None),
        (vec!["stats", "--window", "0d"], None),
        (vec!["stats", "--window", "99999999999999999d"], None),
        (
            vec!["stats", "--as-of", "9999-12-31T23:59:59.999999-23:59"],
            None,
        ),
        (vec!["dump", "--from", &big], None),
        (vec!["demo", "--events", "0", "--producers", "0"], None),
        (
            vec![
                "record",
                "--tenant",
                "t",
                "--rule",
                "r",
                "--action",
                "kill",
                "--at",
                "0000-00-00T00:00:00Z",
            ],
            None,
        ),
    ];
    for (args, stdin) in cases {
        let out = match stdin {
            Some(bytes) => f.run_stdin(&args, bytes),
            None => f.run(&args),
        };
        assert!(
            matches!(out.code(), Some(0 | 2)),
            "{}: exit {:?}\n{}",
            out.what,
            out.code(),
            out.stderr
        );
    }
    assert_eq!(offsets(&f.dump()), [0], "none of these appended anything");
}

// ---------------------------------------------------------------------------
// Global contract details
// ---------------------------------------------------------------------------

#[test]
fn verbose_adds_detail_below_the_one_line_error() {
    let f = Fixture::new();
    let args = [
        "record", "--tenant", "t", "--rule", "r", "--action", "explode",
    ];
    let plain = f.run(&args);
    plain.expect(2).expect_one_error_line();
    let mut cmd = enforcelog();
    cmd.arg("-v").arg("--data-dir").arg(&f.dir).args(args);
    let verbose = run(cmd, None);
    verbose.expect(2);
    let first = |s: &str| s.lines().next().unwrap_or_default().to_string();
    assert_eq!(first(&verbose.stderr), first(&plain.stderr));
    assert!(
        verbose.stderr.lines().count() > 1,
        "-v adds detail:\n{}",
        verbose.stderr
    );
    assert!(!f.dir.exists(), "a refused record created the store");
}

/// Progress bars only when stderr is a terminal: here it is a pipe.
#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let f = Fixture::new();
    let out = f.run(&["demo", "--events", "500", "--producers", "2"]);
    out.expect(0);
    assert!(
        !out.stderr.contains('\r') && !out.stderr.contains('\u{1b}'),
        "terminal control characters on a piped stderr: {:?}",
        out.stderr
    );
    let lines = jsonl_text(
        &(0..50)
            .map(|i| ev("t", &format!("r{i}"), "BLOCKED", "2026-01-01T00:00:00Z"))
            .collect::<Vec<_>>(),
    );
    let import = f.run_stdin(&["import", "-"], lines.as_bytes());
    import.expect(0);
    assert!(
        !import.stderr.contains('\r') && !import.stderr.contains('\u{1b}'),
        "{:?}",
        import.stderr
    );
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

/// The hidden `--segment-max-bytes` (for tests that kill the CLI across
/// segment rolls) makes an import roll segments, stays out of `--help`, and
/// an out-of-range size is refused with the library's error, one line.
#[test]
fn hidden_segment_size_option_rolls_segments_and_stays_out_of_help() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let help = run(
        {
            let mut c = enforcelog();
            c.arg("--help");
            c
        },
        None,
    );
    help.expect(0);
    assert!(
        !help.stdout.contains("segment-max-bytes"),
        "{}",
        help.stdout
    );

    let input: String = (0..400)
        .map(|n| {
            format!(
                "{}\n",
                json!({"tenant_id": "acme", "rule_id": "r", "action_taken": "blocked",
                       "details": {"n": n, "histogram": [0, 0, 0, 0, 0, 0, 0, 0], "pad": "\u{0}".repeat(200)}})
            )
        })
        .collect();
    let out = run(
        {
            let mut c = enforcelog();
            c.arg("--data-dir").arg(&dir).args([
                "--segment-max-bytes",
                "8192",
                "import",
                "--batch",
                "10",
                "-",
            ]);
            c
        },
        Some(input.as_bytes()),
    );
    out.expect(0);
    let segments = fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    assert!(segments > 2, "{segments} segments");
    let verify = run(
        {
            let mut c = enforcelog();
            c.arg("--data-dir").arg(&dir).arg("verify");
            c
        },
        None,
    );
    verify.expect(0);

    let bad = run(
        {
            let mut c = enforcelog();
            c.arg("--data-dir")
                .arg(&dir)
                .args(["--segment-max-bytes", "10", "record", "--tenant", "acme"])
                .args(["--rule", "r", "--action", "blocked"]);
            c
        },
        None,
    );
    bad.expect_one_error_line().stderr_has("segment_max_bytes");
    assert_ne!(bad.code(), Some(0));
}
