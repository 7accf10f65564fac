//! The `enforcelog` command's global contract, run as a separate process:
//! help and completions, usage errors (exit 2, one line), odd input that must
//! never panic, `-v` detail, no progress bar off a terminal, the hidden
//! segment-size option. Exit codes: 0 success, 1 corruption found, 2 bad
//! input or usage, 3 store locked by another writer, 4 other failure.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;

use cli::*;
use serde_json::json;

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
    for flag in ["--data-dir", "--durability", "--exclusive"] {
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
        ("import", &["--batch", "--progress-json"]),
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
                "--after-shard",
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
    // A rule id with a control character: refused by the library's checks,
    // which carry detail (a bad --action is refused by the flag parser).
    let args = [
        "record", "--tenant", "t", "--rule", "r\u{7}", "--action", "killed",
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
    let demo_dir = f.tmp.path().join("demo");
    let mut cmd = f.cmd(&["demo", "--events", "500", "--producers", "2", "--dir"]);
    cmd.arg(&demo_dir);
    let out = run(cmd, None);
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

/// Completions offer the action names for `--action` (record and query):
/// each shell's script lists the four actions as the values of a flag, at
/// least twice.
#[test]
fn completions_offer_the_action_names() {
    let lists = [
        ("bash", "\"stopped killed aborted blocked\""),
        ("zsh", ":(stopped killed aborted blocked)"),
        (
            "fish",
            "\"stopped\\t''\nkilled\\t''\naborted\\t''\nblocked\\t''\"",
        ),
    ];
    for (shell, list) in lists {
        let mut c = enforcelog();
        c.args(["completions", shell]);
        let out = run(c, None);
        out.expect(0);
        let offered = out.stdout.matches(list).count();
        assert!(
            offered >= 2,
            "{shell}: record and query offer the actions as {list:?}, found {offered}:\n{}",
            out.stdout
        );
    }
}

/// One duration syntax for every flag that takes one: the same text means
/// the same span in --window, --max-future-skew and --durability interval:.
#[test]
fn one_duration_syntax_for_every_duration_flag() {
    let f = Fixture::new();
    for (flag, value) in [
        ("--max-future-skew", "1d12h"),
        ("--max-future-skew", "1w"),
        ("--max-future-skew", "90s"),
        ("--max-future-skew", "500ms"),
    ] {
        let mut c = f.cmd(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
        c.args([flag, value]);
        run(c, None).expect(0);
    }
    for durability in ["interval:10ms", "interval:1s500ms", "interval:500us"] {
        let mut c = f.cmd_durable(&["--durability", durability]);
        c.args(["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
        run(c, None).expect(0);
    }
    for window in ["1w", "1d12h", "36h", "90s", "1m30s"] {
        f.ok(&["stats", "--window", window]);
    }
    // The same refusals everywhere: no unit, zero, units out of order.
    for bad in ["30", "0s", "1h1d", "1.5h"] {
        for args in [
            vec!["stats", "--window", bad],
            vec![
                "record",
                "--tenant",
                "t",
                "--rule",
                "r",
                "--action",
                "kill",
                "--max-future-skew",
                bad,
            ],
            vec!["import", "--max-future-skew", bad, "-"],
            vec!["query", "--tenant", "t", "--since", bad],
        ] {
            f.run(&args).expect(2).expect_one_error_line();
        }
        let interval = format!("interval:{bad}");
        let mut c = f.cmd_durable(&["--durability", interval.as_str()]);
        c.args(["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
        run(c, None).expect(2).expect_one_error_line();
    }
}
