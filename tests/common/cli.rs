//! Running the `enforcelog` binary in the CLI tests (cli/tests/cli_*.rs):
//! a store in a temporary directory ([`Fixture`]), the checks every run
//! gets (exit code, one error line, no panic), and small builders of import
//! lines. Only the `enforcelog-cli` package's tests can include it: it needs
//! `CARGO_BIN_EXE_enforcelog`. Include it after `common`:
//!
//! ```text
//! #[path = "../../tests/common/mod.rs"]
//! mod common;
//! #[path = "../../tests/common/cli.rs"]
//! mod cli;
//! ```

// Each test file uses part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::process::{self, Out, Watchdog};
use enforcelog::timestamp::parse_us;
use serde_json::{json, Value};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");
/// Longest any single invocation may take before the test fails.
pub const RUN_LIMIT: Duration = Duration::from_secs(30);
pub const SEGMENT: &str = "00000000000000000000.log";
pub const DAY_US: i64 = 86_400_000_000;
pub const HOUR_US: i64 = 3_600_000_000;
/// Every subcommand the issue names.
pub const SUBCOMMANDS: [&str; 11] = [
    "demo",
    "record",
    "import",
    "query",
    "stats",
    "dump",
    "info",
    "verify",
    "repair",
    "tail",
    "completions",
];

// ---------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------

pub const WATCHDOG: Watchdog = Watchdog {
    limit: RUN_LIMIT,
    panic_signs: &["panicked", "stack backtrace", "RUST_BACKTRACE"],
};

impl Out {
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
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
    pub fn expect_one_error_line(&self) -> &Self {
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
    pub fn stderr_has(&self, needle: &str) -> &Self {
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
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "{}: stdout is not one JSON value ({e}):\n{}",
                self.what, self.stdout
            )
        })
    }

    /// stdout as JSON Lines.
    #[track_caller]
    pub fn jsonl(&self) -> Vec<Value> {
        jsonl(&self.stdout, &self.what)
    }
}

#[track_caller]
pub fn jsonl(text: &str, what: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{what}: not a JSON line ({e}): {l:?}"))
        })
        .collect()
}

pub fn enforcelog() -> Command {
    process::command(BIN)
}

/// Runs `cmd` to completion (stdin closed, or fed `stdin` and then closed),
/// failing the test if it takes longer than [`RUN_LIMIT`] or shows a panic.
pub fn run(cmd: Command, stdin: Option<&[u8]>) -> Out {
    let what = process::describe(&cmd);
    WATCHDOG.run(cmd, what, stdin)
}

// ---------------------------------------------------------------------------
// A store in a temporary directory
// ---------------------------------------------------------------------------

pub struct Fixture {
    pub tmp: TempDir,
    pub dir: PathBuf,
}

impl Fixture {
    /// A fresh temporary directory; the store directory inside it does not
    /// exist until the first write.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("store");
        Fixture { tmp, dir }
    }

    /// `enforcelog --data-dir DIR <args>` (the store's durability left at
    /// its default).
    pub fn cmd_durable<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = enforcelog();
        cmd.arg("--data-dir").arg(&self.dir).args(args);
        cmd
    }

    /// `enforcelog --data-dir DIR --durability none <args>`.
    pub fn cmd<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = enforcelog();
        cmd.arg("--data-dir")
            .arg(&self.dir)
            .args(["--durability", "none"])
            .args(args);
        cmd
    }

    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Out {
        run(self.cmd(args), None)
    }

    pub fn run_stdin<S: AsRef<OsStr>>(&self, args: &[S], stdin: &[u8]) -> Out {
        run(self.cmd(args), Some(stdin))
    }

    /// Runs and expects exit 0; returns stdout.
    #[track_caller]
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        out.expect(0);
        out.stdout
    }

    /// Imports JSON Lines from stdin and returns the summary.
    #[track_caller]
    /// Times are not limited (`--max-future-skew none --not-before none`):
    /// the tests that use this import the edges of the timestamp range; the
    /// default limits are tested by the bad-line matrix.
    pub fn import(&self, lines: &[Value]) -> Value {
        let out = self.run_stdin(
            &[
                "import",
                "--max-future-skew",
                "none",
                "--not-before",
                "none",
                "-",
            ],
            jsonl_text(lines).as_bytes(),
        );
        out.expect(0);
        out.json()
    }

    #[track_caller]
    pub fn dump_text(&self) -> String {
        self.ok(&["dump"])
    }

    #[track_caller]
    pub fn dump(&self) -> Vec<Value> {
        jsonl(&self.dump_text(), "dump")
    }

    /// Name and bytes of every segment file.
    pub fn segments(&self) -> Vec<(String, Vec<u8>)> {
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

    pub fn write_file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.tmp.path().join(name);
        fs::write(&path, bytes).expect("write input file");
        path
    }
}

pub fn jsonl_text(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// An event in the import format.
pub fn ev(tenant: &str, rule: &str, action: &str, at: &str) -> Value {
    json!({"tenant_id": tenant, "rule_id": rule, "action_taken": action, "enforced_at": at})
}

pub fn with(mut event: Value, key: &str, value: Value) -> Value {
    event[key] = value;
    event
}

pub fn offsets(values: &[Value]) -> Vec<u64> {
    values
        .iter()
        .map(|v| {
            v["offset"]
                .as_u64()
                .unwrap_or_else(|| panic!("no offset in {v}"))
        })
        .collect()
}

pub fn us(text: &str) -> i64 {
    parse_us(text).expect("test time")
}

/// Number of atomic batches in a segment (each starts with this marker).
pub fn batch_count(segment: &[u8]) -> usize {
    segment.windows(4).filter(|w| w == b"EBAT").count()
}

/// Whether `text` holds a time as the CLI prints them:
/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
pub fn has_utc_time(text: &str) -> bool {
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

pub fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{:?} not in the segment", String::from_utf8_lossy(needle)))
}

pub fn golden(name: &str) -> PathBuf {
    let root = &Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shared = root.join("../shared/golden").join(name);
    if shared.is_file() {
        shared
    } else {
        root.join("tests/fixtures/golden").join(name)
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
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

/// `stats --as-of AS_OF --format json`, expected to succeed.
#[track_caller]
pub fn stats_json_at(f: &Fixture, as_of: &str) -> Value {
    f.run(&["stats", "--as-of", as_of, "--format", "json"])
        .expect(0)
        .json()
}
