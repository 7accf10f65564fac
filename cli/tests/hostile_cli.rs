//! Hostile input through the `enforcelog` binary (issue 8): bad arguments
//! to `record`, bad input files to `import`, and bad data directories under
//! every command. Each must end with the documented exit code (0 ok,
//! 1 corruption, 2 bad input, 3 locked, 4 I/O and other), one `error:` line
//! on stderr naming the problem, no panic, and nothing changed on disk: the
//! whole directory tree around the store is compared, path by path and byte
//! by byte, before and after each run.
//!
//! `cli.rs` already covers the basic record and import matrices (one case
//! per field, 129-byte ids, a few bad times, a non-UTF-8 tenant, one bad line
//! per field with `line N: field:`), a data dir that is a regular file for
//! record/import/dump, and read commands on a missing store. This file adds
//! what those leave out:
//! - `record`: every control class, bidirectional override and isolate and
//!   line separator in each id flag (a NUL cannot be passed: program
//!   arguments are C strings; NUL is covered through `--details` and
//!   `import`), non-UTF-8 bytes in every flag, details
//!   nested 10,000 deep (a clear error, never a stack overflow) or not one
//!   JSON object, times at and past the range, leap seconds and impossible
//!   offsets; and values exactly at the limits, stored and dumped exactly;
//! - `import`: empty input, BOM, CRLF and bare CR, concatenated and
//!   truncated JSON, non-object lines, UTF-16 and binary files, invalid UTF-8
//!   in every field and in key names, raw and escaped controls, lone
//!   surrogates, huge and 10,000-deep values, duplicate and unknown keys;
//! - directories, under record, import, query, stats, dump, tail and verify:
//!   a data dir below a regular file, an empty or foreign directory, a bad or
//!   future `VERSION`, garbage and a directory named like segments, a segment
//!   of another store, and a read-only bind mount (skipped, with the reason
//!   printed, where it cannot be made); read commands must never create or
//!   change anything; foreign files beside a good store are left alone;
//! - a checkpoint of a future version: reads ignore it and stay exact,
//!   `verify` warns, the next write replaces it.
//!
//! Deterministic: no randomness. `cargo test --test hostile_cli`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::disk::{diff, snapshot, ReadOnlyStore, Snapshot};
use common::process::{self, jsonl, Out, Watchdog};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");
const AT: &str = "2026-01-01T00:00:00Z";
const CHECKPOINT: &str = "projections/trigger_stats.ckpt";

// ---------------------------------------------------------------------------
// Running the binary.

/// A run may take a minute at most; a panic or a stack overflow fails it.
const WATCHDOG: Watchdog = Watchdog {
    limit: Duration::from_secs(60),
    panic_signs: &["panicked", "stack backtrace", "overflowed"],
};

impl Out {
    /// The error lines (`error: ...`) on stderr.
    fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .collect()
    }

    /// Checks that stderr is safe to show on a terminal: no control
    /// character but newline and tab (an escape sequence or a carriage
    /// return copied from the input could repaint or forge what the
    /// operator reads).
    fn check_terminal_safe(&self) -> Result<(), String> {
        match self
            .stderr
            .chars()
            .find(|&c| c.is_control() && c != '\n' && c != '\t')
        {
            Some(c) => Err(format!(
                "stderr holds control character U+{:04X}: {:?}",
                u32::from(c),
                self.stderr
            )),
            None => Ok(()),
        }
    }

    /// Checks the exit code, that exactly one `error:` line names
    /// `fragment`, and that stderr is terminal-safe; returns a description
    /// of what is wrong.
    fn check_refused(&self, code: i32, fragment: &str) -> Result<(), String> {
        self.check_terminal_safe()?;
        let errors = self.error_lines();
        if self.code() != Some(code) {
            return Err(format!(
                "exit {:?}, want {code}; stderr: {}",
                self.code(),
                self.stderr.trim()
            ));
        }
        if errors.len() != 1 || !errors[0].contains(fragment) {
            return Err(format!(
                "want one error line naming {fragment:?}; stderr: {}",
                self.stderr.trim()
            ));
        }
        Ok(())
    }
}

/// Runs the binary with `args` (stdin closed, or fed `stdin`), a clean
/// environment and backtraces on, and fails the test on a panic, a signal
/// or a run longer than the watchdog's limit.
fn run(args: &[OsString], stdin: Option<&[u8]>) -> Out {
    let mut cmd = process::command(BIN);
    cmd.args(args);
    let what = process::describe(&cmd);
    WATCHDOG.run(cmd, what, stdin)
}

fn os(items: &[&str]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

/// `--data-dir DIR --durability none <args>`.
fn at_dir(dir: &Path, args: Vec<OsString>) -> Vec<OsString> {
    let mut all = vec![
        OsString::from("--data-dir"),
        dir.as_os_str().to_owned(),
        OsString::from("--durability"),
        OsString::from("none"),
    ];
    all.extend(args);
    all
}

// ---------------------------------------------------------------------------
// What is on disk.

/// Collects failures of a matrix and reports them all at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, case: &str, result: Result<(), String>) {
        if let Err(why) = result {
            self.0.push(format!("{case}: {why}"));
        }
    }

    fn unchanged(&mut self, case: &str, before: &Snapshot, root: &Path) {
        if let Some(d) = diff(before, &snapshot(root)) {
            self.0.push(format!("{case}: the disk changed: {d}"));
        }
    }

    #[track_caller]
    fn assert_none(&self, what: &str, cases: usize) {
        assert!(
            self.0.is_empty(),
            "{what}: {} problem(s) in {cases} cases:\n  {}",
            self.0.len(),
            self.0.join("\n  ")
        );
    }
}

// ---------------------------------------------------------------------------
// Events.

fn import_line(tenant: &str, rule: &str, action: &str, at: &str) -> String {
    json!({"tenant_id": tenant, "rule_id": rule, "action_taken": action, "enforced_at": at})
        .to_string()
}

/// A store of four events in `dir`, made through the binary.
fn make_store(dir: &Path) {
    let lines = [
        import_line("acme", "budget", "KILLED", "2026-01-01T00:00:00Z"),
        import_line("acme", "no-prod-writes", "BLOCKED", "2026-01-02T00:00:00Z"),
        import_line("globex", "budget", "STOPPED", "2026-01-03T00:00:00Z"),
        import_line("initech", "rate", "ABORTED", "2026-01-04T00:00:00Z"),
    ]
    .join("\n");
    let out = run(&at_dir(dir, os(&["import", "-"])), Some(lines.as_bytes()));
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

fn dump(dir: &Path) -> Vec<Value> {
    let out = run(&at_dir(dir, os(&["dump"])), None);
    assert_eq!(out.code(), Some(0), "dump: {}", out.stderr);
    jsonl(&out.stdout)
}

/// `{"k": "<nasty><x...>"}` whose compact JSON is exactly `len` bytes.
fn details_of_len(len: usize) -> Value {
    let nasty = "\0\u{1}\u{1b}[31m\u{202E}\u{2028}\"\\";
    let mut value = json!({ "k": nasty });
    let base = serde_json::to_vec(&value).unwrap().len();
    value["k"] = json!(format!("{nasty}{}", "x".repeat(len - base)));
    assert_eq!(serde_json::to_vec(&value).unwrap().len(), len, "test bug");
    value
}

fn deep_arrays(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn bytes(b: &[u8]) -> OsString {
    OsStr::from_bytes(b).to_owned()
}

// ---------------------------------------------------------------------------
// record

/// `record` with a good value for every flag but `flag`, given `value`.
fn record_args(flag: &str, value: OsString) -> Vec<OsString> {
    let mut args = os(&["record"]);
    for (f, v) in [
        ("--tenant", "acme"),
        ("--rule", "budget"),
        ("--action", "kill"),
        ("--at", AT),
        ("--run", "run-1"),
    ] {
        if f != flag {
            args.push(format!("{f}={v}").into());
        }
    }
    let mut pair = OsString::from(format!("{flag}="));
    pair.push(value);
    args.push(pair);
    args
}

/// (case, flag, value, fragment the error line must hold).
fn refused_records() -> Vec<(String, &'static str, OsString, &'static str)> {
    let mut cases = Vec::new();
    for (flag, field) in [
        ("--tenant", "tenant_id"),
        ("--rule", "rule_id"),
        ("--run", "run_id"),
    ] {
        let mut add = |name: String, value: String, fragment: &'static str| {
            cases.push((format!("{flag} {name}"), flag, value.into(), fragment));
        };
        for (name, c) in [
            ("SOH", '\u{1}'),
            ("TAB", '\t'),
            ("LF", '\n'),
            ("CR", '\r'),
            ("ESC", '\u{1b}'),
            ("DEL", '\u{7f}'),
            ("NEL", '\u{85}'),
            ("CSI", '\u{9b}'),
            ("LINE SEPARATOR", '\u{2028}'),
            ("PARAGRAPH SEPARATOR", '\u{2029}'),
        ] {
            add(name.into(), format!("é{c}x"), field);
        }
        for code in (0x202A..=0x202E).chain(0x2066..=0x2069) {
            let c = char::from_u32(code).unwrap();
            add(format!("bidi U+{code:04X}"), format!("acme{c}"), field);
        }
        add("129 bytes".into(), format!("{}x", "a.*>".repeat(32)), field);
        add(
            "130 bytes ending in an override".into(),
            format!("{}\u{202E}", "a".repeat(127)),
            "130 bytes",
        );
    }
    // Not UTF-8 (`cli.rs` covers --tenant).
    for flag in ["--rule", "--action", "--run", "--details", "--at"] {
        cases.push((
            format!("{flag} not UTF-8"),
            flag,
            bytes(b"ok\xff\xfe"),
            "UTF-8",
        ));
    }
    let mut add = |name: &str, flag: &'static str, value: String, fragment: &'static str| {
        cases.push((name.to_string(), flag, value.into(), fragment));
    };
    add(
        "details nested 10,000 deep",
        "--details",
        format!("{{\"k\":{}}}", deep_arrays(10_000)),
        "recursion limit",
    );
    add(
        "details of 64 KiB + 1",
        "--details",
        details_of_len(65_537).to_string(),
        "65537 bytes",
    );
    add(
        "two details objects",
        "--details",
        r#"{"a":1}{"b":2}"#.into(),
        "details",
    );
    add(
        "details after a BOM",
        "--details",
        "\u{feff}{}".into(),
        "details",
    );
    add(
        "details with a lone surrogate",
        "--details",
        r#"{"a":"\ud800"}"#.into(),
        "details",
    );
    add(
        "details cut short",
        "--details",
        r#"{"a":"#.into(),
        "details",
    );
    add("details an array", "--details", "[{}]".into(), "details");
    for (name, at) in [
        ("year -1", "-0001-01-01T00:00:00Z"),
        ("year +10000", "+10000-01-01T00:00:00Z"),
        ("year 0", "0000-12-31T23:59:59Z"),
        (
            "year 10000 through a zone",
            "9999-12-31T23:59:59.999999-00:01",
        ),
        ("offset +24:00", "2026-01-01T00:00:00+24:00"),
        ("second 60 that is no leap second", "2026-06-30T22:59:60Z"),
        ("an override inside", "2026-01-01T00:00:00\u{202E}Z"),
        ("microseconds since the epoch", "1767225600000000"),
    ] {
        add(name, "--at", at.into(), "--at");
    }
    // Issue 13, item 8: valid, but further ahead than `max_future_skew`.
    add(
        "the last time of year 9999",
        "--at",
        "9999-12-31T23:59:59.999999Z".into(),
        "max_future_skew",
    );
    for (name, action) in [
        ("action with an override", "kill\u{202E}"),
        ("action with a dotless i", "kıll"),
        ("action with a trailing space", "stopped "),
        ("action with a NEL", "kill\u{85}"),
    ] {
        add(name, "--action", action.into(), "action");
    }
    cases
}

#[test]
fn record_refuses_hostile_arguments_with_exit_2_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    make_store(&dir);
    let missing = tmp.path().join("missing");
    let before = snapshot(tmp.path());
    let cases = refused_records();
    let mut failures = Failures::default();
    for (name, flag, value, fragment) in &cases {
        for target in [&dir, &missing] {
            let out = run(&at_dir(target, record_args(flag, value.clone())), None);
            failures.check(name, out.check_refused(2, fragment));
            if !out.stdout.trim().is_empty() {
                failures.check(name, Err(format!("stdout: {}", out.stdout)));
            }
            failures.unchanged(name, &before, tmp.path());
        }
    }
    failures.assert_none("record", cases.len());
}

#[test]
fn record_stores_values_at_the_limits_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A data dir whose name is not UTF-8 is a valid Unix path.
    let dir = tmp.path().join(OsStr::from_bytes(b"store-\xff"));
    let max_id = "a.*>".repeat(32);
    let details = details_of_len(65_536);
    let cases: Vec<(&str, Vec<OsString>, Value)> = vec![
        (
            "ids of 128 bytes, details of 64 KiB",
            vec![
                format!("--tenant={max_id}").into(),
                format!("--rule={}", "🚦".repeat(32)).into(),
                format!("--run={}", ">".repeat(128)).into(),
                format!("--details={details}").into(),
                "--at=0001-01-01T00:00:00Z".into(),
                // The first time of the range is before the default bound.
                "--not-before=none".into(),
            ],
            json!({"tenant_id": max_id, "rule_id": "🚦".repeat(32), "run_id": ">".repeat(128),
                   "details": details, "enforced_at": "0001-01-01T00:00:00.000000Z"}),
        ),
        (
            // The last time of the range (year 9999) is past the default
            // `max_future_skew`: refused, below.
            "a tenant that looks like a flag",
            os(&[
                "--tenant=--data-dir",
                "--rule=-r",
                "--at=2026-11-25T10:00:00.999999Z",
            ]),
            json!({"tenant_id": "--data-dir", "rule_id": "-r",
                   "enforced_at": "2026-11-25T10:00:00.999999Z"}),
        ),
        (
            "a leap second",
            os(&["--tenant=t", "--rule=r", "--at=2016-12-31T23:59:60Z"]),
            json!({"enforced_at": "2016-12-31T23:59:59.999999Z"}),
        ),
        (
            "offset -00:00 and nanoseconds",
            os(&[
                "--tenant=t",
                "--rule=r",
                "--at=2026-01-01T00:00:00.123456789-00:00",
            ]),
            json!({"enforced_at": "2026-01-01T00:00:00.123456Z"}),
        ),
        (
            "details nested as deep as allowed (64), duplicate keys",
            vec![
                "--tenant=t".into(),
                "--rule=r".into(),
                format!("--details={{\"k\":{},\"d\":1,\"d\":2}}", deep_arrays(63)).into(),
            ],
            json!({"details": {"k": serde_json::from_str::<Value>(&deep_arrays(63)).unwrap(), "d": 2}}),
        ),
    ];
    for (i, (name, flags, _)) in cases.iter().enumerate() {
        let mut args = os(&["record", "--action=block"]);
        args.extend(flags.iter().cloned());
        let out = run(&at_dir(&dir, args), None);
        assert_eq!(out.code(), Some(0), "{name}: {}", out.stderr);
        assert_eq!(
            serde_json::from_str::<Value>(out.stdout.trim()).unwrap(),
            json!({ "offset": i })
        );
    }
    let dumped = dump(&dir);
    assert_eq!(dumped.len(), cases.len());
    for ((name, _, want), got) in cases.iter().zip(&dumped) {
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(&got[key], value, "{name}: {key}");
        }
    }
    let out = run(&at_dir(&dir, os(&["verify"])), None);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
}

/// Whatever `record --details` accepts, `dump | import` must copy: the
/// import parses a whole line, one nesting level more than the details
/// alone, so a depth accepted by one and refused by the other breaks the
/// documented way to copy a store.
#[test]
fn nested_details_that_record_accepts_survive_dump_then_import() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut failures = Failures::default();
    let depths = [1, 64, 100, 125, 126, 127, 128];
    for depth in depths {
        let source = tmp.path().join(format!("source-{depth}"));
        let copy = tmp.path().join(format!("copy-{depth}"));
        let details = format!("{{\"k\":{}}}", deep_arrays(depth));
        let args = os(&[
            "record",
            "--tenant=t",
            "--rule=r",
            "--action=kill",
            "--at",
            AT,
        ]);
        let mut args = at_dir(&source, args);
        args.push(format!("--details={details}").into());
        let out = run(&args, None);
        if out.code() != Some(0) {
            // Refused: it must be a clear details error, and nothing made.
            failures.check(&format!("depth {depth}"), out.check_refused(2, "details"));
            continue;
        }
        let dumped = run(&at_dir(&source, os(&["dump"])), None);
        assert_eq!(dumped.code(), Some(0), "{}", dumped.stderr);
        let out = run(
            &at_dir(&copy, os(&["import", "-"])),
            Some(dumped.stdout.as_bytes()),
        );
        if out.code() != Some(0) {
            failures.check(
                &format!("depth {depth}"),
                Err(format!(
                    "record accepted it, dump | import refuses it: {}",
                    out.stderr.trim()
                )),
            );
            continue;
        }
        let copied = run(&at_dir(&copy, os(&["dump"])), None);
        if copied.stdout != dumped.stdout {
            failures.check(&format!("depth {depth}"), Err("the copy differs".into()));
        }
    }
    failures.assert_none("dump | import of nested details", depths.len());
}

// ---------------------------------------------------------------------------
// import

/// What an import input must give.
enum Want {
    /// Exit 2 with `line N: field:` and the fragment on stderr.
    Refused(usize, &'static str, &'static str),
    /// Exit 0, this many events imported.
    Imported(u64),
}

fn good() -> String {
    import_line("acme", "budget", "KILLED", AT)
}

/// A line with `key` set to the raw JSON bytes `value`.
fn raw_line(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut line = br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","#.to_vec();
    line.push(b'"');
    line.extend_from_slice(key);
    line.extend_from_slice(b"\":");
    line.extend_from_slice(value);
    line.push(b'}');
    line
}

/// `good`, then `bad` as line 2, then `good` again.
fn sandwich(bad: &[u8]) -> Vec<u8> {
    let mut input = format!("{}\n", good()).into_bytes();
    input.extend_from_slice(bad);
    input.push(b'\n');
    input.extend_from_slice(good().as_bytes());
    input.push(b'\n');
    input
}

fn import_cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::{Imported, Refused};
    let g = good();
    let utf16: Vec<u8> = std::iter::once(0xFEFFu16)
        .chain(g.encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    let binary: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .map(|b| if b == b'\n' { b'x' } else { b })
        .collect();
    let deep = deep_arrays(10_000).into_bytes();
    let deep_details = format!("{{\"k\":{}}}", deep_arrays(10_000)).into_bytes();
    let huge_details = format!("{{\"k\":\"{}\"}}", "x".repeat(8 << 20)).into_bytes();
    vec![
        ("empty input", Vec::new(), Imported(0)),
        ("blank lines only", b"\n \n\t\r\n\r\n".to_vec(), Imported(0)),
        ("a BOM only", b"\xEF\xBB\xBF".to_vec(), Imported(0)),
        (
            "BOM, then CRLF lines",
            format!("\u{feff}{g}\r\n{g}\r\n").into_bytes(),
            Imported(2),
        ),
        (
            "no newline at the end",
            format!("{g}\n{g}").into_bytes(),
            Imported(2),
        ),
        (
            "BOM on line 2",
            format!("{g}\n\u{feff}{g}\n").into_bytes(),
            Refused(2, "json", "expected value"),
        ),
        (
            "two BOMs",
            format!("\u{feff}\u{feff}{g}\n").into_bytes(),
            Refused(1, "json", "expected value"),
        ),
        ("UTF-16", utf16, Refused(1, "json", "")),
        ("binary noise on one line", binary, Refused(1, "json", "")),
        (
            "bare CR line endings",
            format!("{g}\r{g}\r{g}\r").into_bytes(),
            Refused(1, "json", "trailing characters"),
        ),
        (
            "two objects on one line",
            sandwich(format!("{g}{g}").as_bytes()),
            Refused(2, "json", "trailing characters"),
        ),
        (
            "an object and a comma",
            sandwich(format!("{g},").as_bytes()),
            Refused(2, "json", "trailing characters"),
        ),
        (
            "the last line cut short",
            format!("{g}\n{}", &g[..g.len() - 3]).into_bytes(),
            Refused(2, "", "EOF"),
        ),
        ("a number line", sandwich(b"7"), Refused(2, "json", "JSON object")),
        ("a string line", sandwich(b"\"x\""), Refused(2, "json", "JSON object")),
        ("an array line", sandwich(b"[{}]"), Refused(2, "json", "JSON object")),
        ("a null line", sandwich(b"null"), Refused(2, "json", "JSON object")),
        ("a NUL byte line", sandwich(b"\0"), Refused(2, "json", "")),
        (
            "rule_id twice",
            sandwich(br#"{"tenant_id":"t","rule_id":"r","rule_id":"s","action_taken":"kill"}"#),
            Refused(2, "rule_id", "more than once"),
        ),
        (
            "details twice",
            sandwich(br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","details":{},"details":{}}"#),
            Refused(2, "details", "more than once"),
        ),
        (
            "an unknown key in another case",
            sandwich(&raw_line(b"Tenant_ID", b"\"u\"")),
            Refused(2, "\"Tenant_ID\"", "unknown field"),
        ),
        (
            "an empty key",
            sandwich(&raw_line(b"", b"1")),
            Refused(2, "", "unknown field"),
        ),
        (
            "a key not UTF-8",
            sandwich(&raw_line(b"k\xff", b"1")),
            Refused(2, "\"k\u{FFFD}\"", "unknown field"),
        ),
        (
            "rule_id not UTF-8",
            sandwich(b"{\"tenant_id\":\"t\",\"rule_id\":\"r\xff\",\"action_taken\":\"kill\"}"),
            Refused(2, "rule_id", "not valid UTF-8 (at byte 1)"),
        ),
        (
            "action_taken not UTF-8",
            sandwich(b"{\"tenant_id\":\"t\",\"rule_id\":\"r\",\"action_taken\":\"ki\xffll\"}"),
            Refused(2, "action_taken", "not valid UTF-8 (at byte 2)"),
        ),
        (
            "run_id not UTF-8",
            sandwich(&raw_line(b"run_id", b"\"\xc3\"")),
            Refused(2, "run_id", "not valid UTF-8 (at byte 0)"),
        ),
        (
            "enforced_at not UTF-8",
            sandwich(&raw_line(b"enforced_at", b"\"2026\xed\xa0\x80\"")),
            Refused(2, "enforced_at", "not valid UTF-8 (at byte 4)"),
        ),
        (
            "details not UTF-8",
            sandwich(&raw_line(b"details", b"{\"a\":\"\xf8\"}")),
            Refused(2, "details", ""),
        ),
        (
            "a raw NUL in a string",
            sandwich(&raw_line(b"run_id", b"\"a\0b\"")),
            Refused(2, "run_id", "control character"),
        ),
        (
            "an escaped NUL",
            sandwich(br#"{"tenant_id":"t\u0000","rule_id":"r","action_taken":"kill"}"#),
            Refused(2, "tenant_id", "U+0000 at byte 1"),
        ),
        (
            "an escaped override",
            sandwich(br#"{"tenant_id":"t","rule_id":"\u202dr","action_taken":"kill"}"#),
            Refused(2, "rule_id", "U+202D at byte 0"),
        ),
        (
            "a raw line separator",
            sandwich("{\"tenant_id\":\"t\u{2028}\",\"rule_id\":\"r\",\"action_taken\":\"kill\"}".as_bytes()),
            Refused(2, "tenant_id", "U+2028 at byte 1"),
        ),
        (
            "a lone surrogate",
            sandwich(br#"{"tenant_id":"\udfff","rule_id":"r","action_taken":"kill"}"#),
            Refused(2, "tenant_id", "not valid UTF-8"),
        ),
        (
            "details nested 10,000 deep",
            sandwich(&raw_line(b"details", &deep_details)),
            Refused(2, "details", "recursion limit"),
        ),
        (
            "a tenant nested 10,000 deep",
            sandwich(&[&b"{\"tenant_id\":"[..], &deep, b",\"rule_id\":\"r\",\"action_taken\":\"kill\"}"].concat()),
            Refused(2, "tenant_id", "invalid type"),
        ),
        (
            "an unknown key forging a report line with ESC and a newline",
            sandwich(&raw_line(b"\\u001b[31mred\\u001b[0m\\nline 9: tenant_id", b"1")),
            Refused(2, "", "unknown field"),
        ),
        (
            "details of 8 MiB",
            sandwich(&raw_line(b"details", &huge_details)),
            Refused(2, "details", "more than 65536"),
        ),
        (
            "a tenant of 1 MiB",
            sandwich(format!("{{\"tenant_id\":\"{}\",\"rule_id\":\"r\",\"action_taken\":\"kill\"}}", "t".repeat(1 << 20)).as_bytes()),
            Refused(2, "tenant_id", "1048576 bytes"),
        ),
        (
            "year 10000",
            sandwich(import_line("t", "r", "kill", "10000-01-01T00:00:00Z").as_bytes()),
            Refused(2, "enforced_at", "RFC 3339"),
        ),
        (
            "year 0",
            sandwich(import_line("t", "r", "kill", "0000-06-01T00:00:00Z").as_bytes()),
            Refused(2, "enforced_at", "outside years"),
        ),
        (
            "offset +24:00",
            sandwich(import_line("t", "r", "kill", "2026-01-01T00:00:00+24:00").as_bytes()),
            Refused(2, "enforced_at", "RFC 3339"),
        ),
        (
            "the first time and a leap second",
            [
                import_line("t", "r", "kill", "0001-01-01T00:00:00Z"),
                import_line("t", "r", "kill", "2016-12-31T23:59:60Z"),
            ]
            .join("\n")
            .into_bytes(),
            Imported(2),
        ),
        // Issue 14: far in the past is refused too, by default before 2000.
        (
            "before 2000",
            sandwich(import_line("t", "r", "kill", "1999-12-31T23:59:59Z").as_bytes()),
            Refused(2, "enforced_at", "--not-before"),
        ),
        // Issue 13, item 8: the last time of the range is further ahead than
        // the default `--max-future-skew`.
        (
            "the last time, year 9999",
            sandwich(import_line("t", "r", "kill", "9999-12-31T23:59:59.999999Z").as_bytes()),
            Refused(2, "enforced_at", "max_future_skew"),
        ),
    ]
}

#[test]
fn import_refuses_hostile_input_naming_line_and_field_and_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    make_store(&dir);
    let before = snapshot(tmp.path());
    let cases = import_cases();
    let mut failures = Failures::default();
    for (name, input, want) in &cases {
        let Want::Refused(line, field, fragment) = want else {
            continue;
        };
        let out = run(&at_dir(&dir, os(&["import", "-"])), Some(input));
        let wanted = format!("line {line}: {field}");
        let reports: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("line "))
            .collect();
        let ok = out.code() == Some(2)
            && reports.len() == 1
            && reports[0].starts_with(&wanted)
            && reports[0].contains(fragment)
            && out.stdout.trim().is_empty()
            && out.error_lines().len() == 1;
        failures.check(name, out.check_terminal_safe());
        if !ok {
            failures.check(
                name,
                Err(format!(
                    "want exit 2 with {wanted:?} and {fragment:?}; got exit {:?}, stderr: {:.400}",
                    out.code(),
                    out.stderr.trim()
                )),
            );
        }
        failures.unchanged(name, &before, tmp.path());
    }
    failures.assert_none("import", cases.len());
}

#[test]
fn import_accepts_odd_but_valid_input_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (i, (name, input, want)) in import_cases().into_iter().enumerate() {
        let Want::Imported(n) = want else {
            continue;
        };
        let dir = tmp.path().join(format!("store-{i}"));
        // The range's first time is before the default `--not-before`.
        let args = os(&["import", "--not-before", "none", "-"]);
        let out = run(&at_dir(&dir, args), Some(&input));
        assert_eq!(out.code(), Some(0), "{name}: {}", out.stderr);
        let summary: Value = serde_json::from_str(out.stdout.trim()).expect("summary");
        assert_eq!(summary["imported"], json!(n), "{name}");
        if n == 0 {
            assert!(!dir.exists(), "{name}: importing nothing created the store");
            continue;
        }
        let dumped = dump(&dir);
        assert_eq!(dumped.len() as u64, n, "{name}");
        if name.starts_with("times") {
            let times: Vec<&str> = dumped
                .iter()
                .map(|d| d["enforced_at"].as_str().unwrap())
                .collect();
            assert_eq!(
                times,
                [
                    "0001-01-01T00:00:00.000000Z",
                    "9999-12-31T23:59:59.999999Z",
                    "2016-12-31T23:59:59.999999Z"
                ]
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Directories.

/// A command to run: its name, its arguments and what it reads on stdin.
type Run = (&'static str, Vec<OsString>, Option<Vec<u8>>);

/// Every command; `import` reads one good line.
fn commands() -> Vec<Run> {
    vec![
        (
            "record",
            os(&[
                "record",
                "--tenant=t",
                "--rule=r",
                "--action=kill",
                "--at",
                AT,
            ]),
            None,
        ),
        ("import", os(&["import", "-"]), Some(good().into_bytes())),
        ("query", os(&["query", "--tenant", "acme"]), None),
        ("stats", os(&["stats", "--as-of", AT]), None),
        ("dump", os(&["dump"]), None),
        ("tail", os(&["tail"]), None),
        ("info", os(&["info"]), None),
        ("verify", os(&["verify"]), None),
    ]
}

fn is_writer(command: &str) -> bool {
    matches!(command, "record" | "import")
}

/// What a command must do in a bad directory: exit code and a fragment of
/// its one error line (exit 0: the command works).
#[derive(Clone, Copy)]
struct Expect {
    writers: (i32, &'static str),
    readers: (i32, &'static str),
    verify: (i32, &'static str),
}

impl Expect {
    /// Every command exits `code` naming `fragment`.
    const fn all(code: i32, fragment: &'static str) -> Expect {
        Expect::writers_apart((code, fragment), (code, fragment))
    }

    /// The writers do `writers`; the readers and `verify` do `others`.
    const fn writers_apart(writers: (i32, &'static str), others: (i32, &'static str)) -> Expect {
        Expect {
            writers,
            readers: others,
            verify: others,
        }
    }
}

struct DirCase {
    name: &'static str,
    /// Builds the case in `root` (scratch space in `scratch`); returns the
    /// data directory.
    setup: fn(root: &Path, scratch: &Path) -> PathBuf,
    expect: Expect,
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// A store in `root/store` with `name` in it written with `bytes`, or made
/// a directory when `bytes` is `None`.
fn store_with(root: &Path, name: &str, bytes: Option<&[u8]>) -> PathBuf {
    let dir = root.join("store");
    make_store(&dir);
    match bytes {
        Some(bytes) => fs::write(dir.join(name), bytes).unwrap(),
        None => fs::create_dir(dir.join(name)).unwrap(),
    }
    dir
}

fn dir_cases() -> Vec<DirCase> {
    vec![
        DirCase {
            name: "data dir below a regular file",
            setup: |root, _| {
                fs::write(root.join("file"), b"a file").unwrap();
                root.join("file").join("store")
            },
            expect: Expect::all(4, "file/store"),
        },
        DirCase {
            name: "data dir is a regular file",
            setup: |root, _| {
                fs::write(root.join("store"), b"notes").unwrap();
                root.join("store")
            },
            expect: Expect::writers_apart((4, "store"), (2, "not a directory")),
        },
        DirCase {
            name: "empty data dir (read commands only)",
            setup: |root, _| {
                fs::create_dir(root.join("store")).unwrap();
                root.join("store")
            },
            expect: Expect::writers_apart((0, ""), (2, "no enforcelog store")),
        },
        DirCase {
            name: "someone's directory",
            setup: |root, _| {
                let dir = root.join("home");
                fs::create_dir(&dir).unwrap();
                fs::write(dir.join("notes.txt"), b"dear diary").unwrap();
                dir
            },
            expect: Expect::writers_apart((2, "not an enforcelog"), (2, "no enforcelog store")),
        },
        DirCase {
            name: "VERSION from the future",
            setup: |root, _| store_with(root, "VERSION", Some(b"enforcelog-log 3\n")),
            expect: Expect {
                verify: (1, "VERSION"),
                ..Expect::all(4, "format version")
            },
        },
        DirCase {
            name: "VERSION of binary garbage",
            setup: |root, _| store_with(root, "VERSION", Some(b"\xff\xfe\x00\x01\x1b[2J")),
            expect: Expect {
                verify: (1, "VERSION"),
                ..Expect::all(4, "VERSION")
            },
        },
        DirCase {
            name: "garbage named like a later segment",
            setup: |root, _| store_with(root, &segment_name(7), Some(b"not a segment")),
            expect: Expect::all(1, "00000000000000000007.log"),
        },
        DirCase {
            name: "a directory named like the next segment",
            setup: |root, _| store_with(root, &segment_name(4), None),
            expect: Expect::all(4, "00000000000000000004.log"),
        },
        DirCase {
            name: "a segment of another store in place of ours",
            setup: |root, scratch| {
                let other = scratch.join("other");
                let lines = import_line("mallory", "forged", "KILLED", AT);
                let out = run(
                    &at_dir(&other, os(&["import", "-"])),
                    Some(lines.as_bytes()),
                );
                assert_eq!(out.code(), Some(0), "{}", out.stderr);
                let dir = root.join("store");
                make_store(&dir);
                let name = segment_name(0);
                fs::copy(other.join(&name), dir.join(&name)).unwrap();
                dir
            },
            expect: Expect::all(1, "00000000000000000000.log"),
        },
    ]
}

fn expected_for(expect: &Expect, command: &str) -> (i32, &'static str) {
    if is_writer(command) {
        expect.writers
    } else if command == "verify" {
        expect.verify
    } else {
        expect.readers
    }
}

#[test]
fn every_command_on_a_bad_directory_fails_clearly_and_changes_nothing() {
    let mut failures = Failures::default();
    let cases = dir_cases();
    let mut runs = 0;
    for case in &cases {
        for (command, args, stdin) in commands() {
            let (code, fragment) = expected_for(&case.expect, command);
            if code == 0 {
                continue;
            }
            let root = tempfile::tempdir().expect("tempdir");
            let scratch = tempfile::tempdir().expect("tempdir");
            let dir = (case.setup)(root.path(), scratch.path());
            let before = snapshot(root.path());
            let out = run(&at_dir(&dir, args), stdin.as_deref());
            runs += 1;
            let what = format!("{} / {command}", case.name);
            failures.check(&what, out.check_refused(code, fragment));
            failures.unchanged(&what, &before, root.path());
        }
    }
    failures.assert_none("directories", runs);
}

/// Someone's files beside a good store: every command works, the read
/// commands change nothing at all, and the writers leave the files alone.
#[test]
fn foreign_files_beside_a_store_are_left_alone_by_every_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    make_store(&dir);
    let foreign = [
        ("notes.txt", &b"someone's notes"[..]),
        ("00000000000000000000.log.bak", b"a backup"),
        ("1.log", b"a short name"),
    ];
    for (name, bytes) in foreign {
        fs::write(dir.join(name), bytes).unwrap();
    }
    fs::create_dir(dir.join("photos")).unwrap();
    let mut failures = Failures::default();
    let mut runs = 0;
    for (command, args, stdin) in commands() {
        let before = snapshot(tmp.path());
        let out = run(&at_dir(&dir, args), stdin.as_deref());
        runs += 1;
        if out.code() != Some(0) {
            failures.check(
                command,
                Err(format!("exit {:?}: {}", out.code(), out.stderr)),
            );
        }
        if !is_writer(command) {
            failures.unchanged(command, &before, tmp.path());
        }
        for (name, bytes) in foreign {
            if fs::read(dir.join(name)).ok().as_deref() != Some(bytes) {
                failures.check(command, Err(format!("{name} changed")));
            }
        }
    }
    failures.assert_none("foreign files", runs);
    assert!(dir.join("photos").is_dir());
    assert_eq!(
        dump(&dir).len(),
        6,
        "record and import each added one event"
    );
}

// ---------------------------------------------------------------------------
// A read-only mount.

#[test]
fn a_read_only_mount_fails_writers_with_exit_4_and_serves_readers() {
    let Some(ro) = ReadOnlyStore::new(
        "a_read_only_mount_fails_writers_with_exit_4_and_serves_readers",
        make_store,
    ) else {
        return;
    };
    let (source, target) = (&ro.source, &ro.target);
    let before = snapshot(source);
    let mut failures = Failures::default();
    let mut runs = 0;
    for (dir_name, writers, readers) in [
        ("store", (4, "Read-only file system"), (0, "")),
        (
            "empty",
            (4, "Read-only file system"),
            (2, "no enforcelog store"),
        ),
    ] {
        for (command, args, stdin) in commands() {
            let (code, fragment) = if is_writer(command) { writers } else { readers };
            let out = run(&at_dir(&target.join(dir_name), args), stdin.as_deref());
            runs += 1;
            let what = format!("{dir_name} / {command}");
            if code == 0 {
                if out.code() != Some(0) {
                    failures.check(&what, Err(format!("exit {:?}: {}", out.code(), out.stderr)));
                }
            } else {
                failures.check(&what, out.check_refused(code, fragment));
            }
            failures.unchanged(&what, &before, source);
        }
    }
    failures.assert_none("read-only mount", runs);
    let out = run(&at_dir(&target.join("store"), os(&["dump"])), None);
    assert_eq!(jsonl(&out.stdout).len(), 4, "the readers see every event");
}

// ---------------------------------------------------------------------------
// A checkpoint from a future version.

#[test]
fn a_future_checkpoint_is_ignored_by_reads_and_replaced_by_the_next_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    make_store(&dir);
    let stats_args = || {
        at_dir(
            &dir,
            os(&[
                "stats",
                "--format",
                "json",
                "--as-of",
                "2026-01-10T00:00:00Z",
            ]),
        )
    };
    let stats = |what: &str| {
        let out = run(&stats_args(), None);
        assert_eq!(out.code(), Some(0), "{what}: {}", out.stderr);
        serde_json::from_str::<Value>(out.stdout.trim()).expect("stats JSON")
    };
    let exact = stats("with our checkpoint");
    let totals: Vec<(String, u64)> = exact["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}/{}",
                    r["tenant_id"].as_str().unwrap(),
                    r["rule_id"].as_str().unwrap()
                ),
                r["total_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("acme/budget".to_string(), 1),
            ("acme/no-prod-writes".to_string(), 1),
            ("globex/budget".to_string(), 1),
            ("initech/rate".to_string(), 1)
        ]
    );

    // A checkpoint whose format version is one this build does not know.
    let mut planted = fs::read(dir.join(CHECKPOINT)).expect("checkpoint");
    let version = u16::from_le_bytes([planted[8], planted[9]]);
    planted[8..10].copy_from_slice(&(version + 1).to_le_bytes());
    let body = planted.len() - 4;
    let crc = crc32fast::hash(&planted[..body]);
    planted[body..].copy_from_slice(&crc.to_le_bytes());
    fs::write(dir.join(CHECKPOINT), &planted).unwrap();
    let before = snapshot(tmp.path());

    assert_eq!(stats("with a future checkpoint"), exact);
    let out = run(&at_dir(&dir, os(&["verify"])), None);
    assert_eq!(
        out.code(),
        Some(0),
        "a future checkpoint is no damage: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("trigger_stats.ckpt") && out.stderr.contains("warning"),
        "verify warns about the checkpoint: {}",
        out.stderr
    );
    for args in [
        os(&["dump"]),
        os(&["query", "--tenant", "acme"]),
        os(&["tail"]),
    ] {
        let out = run(&at_dir(&dir, args), None);
        assert_eq!(out.code(), Some(0), "{}: {}", out.what, out.stderr);
    }
    assert!(
        diff(&before, &snapshot(tmp.path())).is_none(),
        "read commands changed the store"
    );

    let out = run(
        &at_dir(
            &dir,
            os(&[
                "record",
                "--tenant=acme",
                "--rule=budget",
                "--action=kill",
                "--at",
                AT,
            ]),
        ),
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let replaced = fs::read(dir.join(CHECKPOINT)).unwrap();
    assert_eq!(
        u16::from_le_bytes([replaced[8], replaced[9]]),
        version,
        "the write's checkpoint replaced the future one"
    );
    let after = stats("after the write");
    assert_eq!(after["rules"][0]["total_count"], json!(2));
    let out = run(&at_dir(&dir, os(&["verify"])), None);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}
