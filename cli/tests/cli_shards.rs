//! The command-line tool on a directory several writers share (issue 16):
//! its writers claim shards beside another writer, `import --progress-json`
//! says what a killed import had acknowledged, `query` pages across shards
//! with `--after-shard`, `info` describes every shard. The many-processes
//! oracle test (8 CLI writers and 4 Python workers, SIGKILLs) lives in
//! python/tests/test_many_writers.py, where the Python package is built.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use cli::*;
use enforcelog::{Action, Event, Store, StoreOptions};
use serde_json::{json, Value};

/// Events `import` can read, each with a unique run id `run-<i>`, tenant
/// `acme`, a 1 KiB run of zero bytes and nesting in its details.
fn numbered_lines(range: std::ops::Range<usize>) -> String {
    let lines: Vec<Value> = range
        .map(|i| {
            let action = ["STOPPED", "KILLED", "ABORTED", "BLOCKED"][i % 4];
            json!({
                "tenant_id": "acme",
                "rule_id": format!("rule-{}", i % 5),
                "action_taken": action,
                "run_id": format!("run-{i}"),
                "details": {"i": i, "pad": "\u{0}".repeat(1024), "deep": {"a": {"b": {"c": [i]}}}},
                "enforced_at": "2026-01-01T00:00:00Z",
            })
        })
        .collect();
    jsonl_text(&lines)
}

/// Every event of tenant `acme` as (shard, offset, run_id), paging with
/// the hint `query` prints (`limit` events a page).
fn all_pages(f: &Fixture, limit: u32) -> Vec<(u64, u64, String)> {
    let mut seen = Vec::new();
    let mut cursor: Vec<String> = Vec::new();
    for _ in 0..10_000 {
        let mut args: Vec<String> = ["query", "--tenant", "acme", "--format", "jsonl"]
            .map(String::from)
            .to_vec();
        args.extend(["--limit".into(), limit.to_string()]);
        args.extend(cursor.iter().cloned());
        let out = f.run(&args);
        out.expect(0);
        for e in out.jsonl() {
            seen.push((
                e["shard"].as_u64().unwrap_or(0),
                e["offset"].as_u64().unwrap(),
                e["run_id"].as_str().unwrap().to_string(),
            ));
        }
        let Some(hint) = out.stderr.split("more events may follow: ").nth(1) else {
            return seen;
        };
        cursor = hint
            .lines()
            .next()
            .unwrap()
            .split(' ')
            .map(String::from)
            .collect();
    }
    panic!("paging never ended");
}

/// Regression: the CLI's writers forced `share_directory: false`, so a
/// `record` or `import` beside a worker process that held the directory
/// failed with exit 3. They now claim a shard, say which, and every read
/// command counts their events.
#[test]
fn cli_writers_beside_another_writer_claim_a_shard() {
    let f = Fixture::new();
    let holder = Store::open(&f.dir, StoreOptions::default()).expect("open");
    holder
        .record_blocking(Event::new("acme", "rule-0", Action::Blocked).with_run_id("held"))
        .unwrap();
    let record = f.run(&[
        "record",
        "--tenant",
        "acme",
        "--rule",
        "rule-1",
        "--action",
        "kill",
        "--run",
        "cli-record",
    ]);
    assert_eq!(record.expect(0).json(), json!({"offset": 0, "shard": 1}));
    // The record closed: its shard is free again, and the import reuses it.
    let import = f.run_stdin(&["import", "-"], numbered_lines(0..3).as_bytes());
    assert_eq!(
        import.expect(0).json(),
        json!({"imported": 3, "first_offset": 1, "last_offset": 3, "shard": 1})
    );
    assert!(f.dir.join("shards/1/VERSION").exists());
    assert!(!f.dir.join("shards/2").exists(), "one shard reused");
    holder.close().unwrap();
    let count = f.run(&["query", "--tenant", "acme", "--count", "--format", "json"]);
    assert_eq!(count.expect(0).json(), json!({"count": 5}));
    let stats = f.run(&["stats", "--format", "json"]);
    let total: u64 = stats.expect(0).json()["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5);
    f.run(&["verify"]).expect(0);
    // With the root store free, a writer writes it (no "shard" key).
    let root = f.run(&[
        "record", "--tenant", "acme", "--rule", "r", "--action", "stop",
    ]);
    assert_eq!(root.expect(0).json(), json!({"offset": 1}));
}

/// `--progress-json` prints one line per committed batch, in order, each
/// naming the last input line it covers (blank and gap lines counted as
/// lines, not events), then the summary.
#[test]
fn import_progress_json_reports_each_committed_batch() {
    let f = Fixture::new();
    let mut input = numbered_lines(0..7);
    input.push_str("\n{\"offset\":3,\"kind\":\"gap\",\"dropped\":1}\n");
    input.push_str(&numbered_lines(7..10));
    let out = f.run_stdin(
        &["import", "--batch", "3", "--progress-json", "-"],
        input.as_bytes(),
    );
    let lines = out.expect(0).jsonl();
    let want_last_lines = [3, 6, 11, 12];
    assert_eq!(lines.len(), want_last_lines.len() + 1, "{}", out.stdout);
    let mut imported = 0;
    for (k, (line, last_line)) in lines.iter().zip(want_last_lines).enumerate() {
        let events = if k == 3 { 1 } else { 3 };
        imported += events;
        assert_eq!(
            *line,
            json!({"batch": k + 1, "events": events, "imported": imported,
                   "last_line": last_line, "shard": 0,
                   "first_offset": imported - events, "last_offset": imported - 1}),
            "{}",
            out.stdout
        );
    }
    assert_eq!(
        lines[4],
        json!({"imported": 10, "first_offset": 0, "last_offset": 9})
    );
    // Without the flag, the summary alone, as before.
    let g = Fixture::new();
    let plain = g.run_stdin(&["import", "--batch", "3", "-"], input.as_bytes());
    assert_eq!(plain.expect(0).jsonl().len(), 1);
}

/// An import killed (SIGKILL) after a few batches: every batch it reported
/// committed is in the store once, the batch in flight is there whole or
/// not at all (once a writer has opened the store again), nothing else is,
/// and `verify` is clean. A restart with the
/// lines after the last reported one (and after the in-flight batch, when
/// it landed) completes the input with every event exactly once.
#[test]
fn a_killed_import_holds_exactly_what_it_acknowledged_and_resumes() {
    let f = Fixture::new();
    let n = 3_000;
    let batch = 25;
    let input = numbered_lines(0..n);
    let mut child = f
        .cmd_durable(&["import", "--batch", "25", "--progress-json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked_lines = 0usize;
    let mut reports = 0;
    let mut line = String::new();
    // Killed after its fifth report (or at its end, if it is that fast).
    while reports < 5 {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let report: Value = serde_json::from_str(&line).unwrap();
        if let Some(last) = report["last_line"].as_u64() {
            acked_lines = last as usize;
            reports += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(acked_lines >= 5 * batch, "{acked_lines}");
    // The batch in flight may be written and not yet published as durable:
    // readers see it only once a writer has opened the dead writer's store
    // again (its recovery decides). A host that looks for it opens a
    // writer first; a restarted CLI writer would do the same, too late.
    let options = StoreOptions {
        share_directory: false,
        ..StoreOptions::default()
    };
    Store::open(&f.dir, options)
        .expect("adopt")
        .close()
        .unwrap();
    let present: Vec<String> = all_pages(&f, 1000).into_iter().map(|e| e.2).collect();
    let landed = present.len() - acked_lines;
    assert!(
        landed == 0 || landed == batch || present.len() == n,
        "the batch in flight is atomic: {landed} extra event(s)"
    );
    let want: Vec<String> = (0..present.len()).map(|i| format!("run-{i}")).collect();
    assert_eq!(present, want, "a prefix of the input, each event once");
    f.run(&["verify"]).expect(0);
    // The restart imports what is not in the store yet.
    let rest = numbered_lines(present.len()..n);
    let resumed = f.run_stdin(&["import", "--progress-json", "-"], rest.as_bytes());
    resumed.expect(0);
    let all: Vec<String> = all_pages(&f, 1000).into_iter().map(|e| e.2).collect();
    let want: Vec<String> = (0..n).map(|i| format!("run-{i}")).collect();
    assert_eq!(all, want);
    f.run(&["verify"]).expect(0);
}

/// Four writers' events in one directory: following `query`'s hints page
/// after page (`--after-shard S --after-offset O`) lists every event once,
/// shard by shard in offset order, whatever the page size; JSON rows name
/// their shard (not 0), the table gets a SHARD column.
#[test]
fn query_pages_across_every_shard_with_after_shard() {
    let f = Fixture::new();
    let writers: Vec<Store> = (0..4)
        .map(|_| Store::open(&f.dir, StoreOptions::default()).expect("open"))
        .collect();
    for i in 0..41usize {
        // Uneven: shard 3 gets one event, shard 2 none of tenant acme.
        let w = match i % 10 {
            0..=5 => 0,
            6..=8 => 1,
            _ if i == 9 => 3,
            _ => 2,
        };
        let tenant = if w == 2 { "other" } else { "acme" };
        writers[w]
            .record_blocking(
                Event::new(tenant, "rule", Action::Blocked).with_run_id(format!("run-{i}")),
            )
            .unwrap();
    }
    drop(writers);
    let full = all_pages(&f, 100_000);
    let mut sorted = full.clone();
    sorted.sort();
    assert_eq!(full, sorted, "shard by shard, in offset order");
    let shards: BTreeSet<u64> = full.iter().map(|e| e.0).collect();
    assert_eq!(shards, BTreeSet::from([0, 1, 3]));
    for limit in [1, 2, 3, 7, 29] {
        assert_eq!(all_pages(&f, limit), full, "--limit {limit}");
    }
    // --count from a position counts what the pages after it list.
    let after = &full[20];
    let count = f.run(&[
        "query",
        "--tenant",
        "acme",
        "--count",
        "--format",
        "json",
        "--after-shard",
        &after.0.to_string(),
        "--after-offset",
        &after.1.to_string(),
    ]);
    assert_eq!(
        count.expect(0).json(),
        json!({"count": full.len() - 21}),
        "{}",
        count.what
    );
    let table = f.ok(&["query", "--tenant", "acme", "--limit", "100"]);
    assert!(table.starts_with("SHARD"), "{table}");
    let root_only = f.ok(&["query", "--tenant", "acme", "--limit", "3"]);
    assert!(root_only.starts_with("OFFSET"), "{root_only}");
}

/// A position no shard holds is refused (exit 2) with a line that says
/// why, instead of an empty page that looks like the end; `--after-shard`
/// needs `--after-offset`; nothing is written.
#[test]
fn query_refuses_a_position_no_shard_holds() {
    let f = Fixture::new();
    let writers: Vec<Store> = (0..2)
        .map(|_| Store::open(&f.dir, StoreOptions::default()).expect("open"))
        .collect();
    for (i, w) in writers.iter().enumerate() {
        w.record_blocking(Event::new("acme", "rule", Action::Blocked).with_run_id(format!("r{i}")))
            .unwrap();
    }
    drop(writers);
    let before: Vec<_> = walk(&f.dir)
        .into_iter()
        .map(|p| (fs::read(&p).unwrap(), p))
        .collect();
    let query = |extra: &[&str]| {
        let mut args = vec!["query", "--tenant", "acme"];
        args.extend(extra);
        f.run(&args)
    };
    query(&["--after-shard", "7", "--after-offset", "0"])
        .expect(2)
        .expect_one_error_line()
        .stderr_has("has no shard 7 (its shards: 0, 1)");
    query(&["--after-shard", "1", "--after-offset", "1"])
        .expect(2)
        .expect_one_error_line()
        .stderr_has("shard 1 holds offsets below 1 only");
    query(&["--after-offset", "18446744073709551615"])
        .expect(2)
        .expect_one_error_line();
    query(&["--after-shard", "1"])
        .expect(2)
        .expect_one_error_line()
        .stderr_has("--after-offset");
    query(&["--after-shard", "x", "--after-offset", "0"])
        .expect(2)
        .expect_one_error_line();
    query(&["--after-shard", "-1", "--after-offset", "0"])
        .expect(2)
        .expect_one_error_line();
    // The good positions still work: after shard 1's only event, nothing.
    let last = query(&[
        "--after-shard",
        "1",
        "--after-offset",
        "0",
        "--format",
        "jsonl",
    ]);
    assert!(last.expect(0).jsonl().is_empty());
    let after_root = query(&["--after-offset", "0", "--format", "jsonl"]);
    assert_eq!(after_root.expect(0).jsonl()[0]["run_id"], "r1");
    let after: Vec<_> = walk(&f.dir)
        .into_iter()
        .map(|p| (fs::read(&p).unwrap(), p))
        .collect();
    assert!(before == after, "a refused query changed a file");
}

/// `info` on a directory with shards: totals over every shard at the top,
/// the root store's id and offsets, one object per shard (its own store id,
/// counts and writer), and a table line per shard.
#[test]
fn info_describes_every_shard_and_the_totals() {
    let f = Fixture::new();
    let writers: Vec<Store> = (0..3)
        .map(|_| Store::open(&f.dir, StoreOptions::default()).expect("open"))
        .collect();
    for i in 0..12u64 {
        let w = (i % 3) as usize;
        let at = 1_767_225_600_000_000 + i as i64 * HOUR_US; // 2026-01-01 + i h
        writers[w]
            .record_blocking(Event::new("acme", "rule", Action::Killed).at_us(at))
            .unwrap();
    }
    // Shard 2 closes: its writer is gone, its events stay.
    let mut writers = writers;
    writers.pop().unwrap().close().unwrap();
    let info = f.run(&["info", "--format", "json"]).expect(0).json();
    assert_eq!(info["events"], 12, "{info}");
    assert_eq!(info["next_offset"], 4, "the root's: {info}");
    assert_eq!(info["writers"], 2, "{info}");
    assert_eq!(info["writer"], true, "{info}");
    assert_eq!(info["oldest_enforced_at"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(info["newest_enforced_at"], "2026-01-01T11:00:00.000000Z");
    let shards = info["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 3, "{info}");
    let mut ids = BTreeSet::new();
    let mut segments = 0;
    for (n, s) in shards.iter().enumerate() {
        assert_eq!(s["shard"], n as u64);
        assert_eq!(s["events"], 4, "{s}");
        assert_eq!(s["next_offset"], 4, "{s}");
        assert_eq!(s["writer"], n < 2, "{s}");
        let dir = if n == 0 {
            f.dir.clone()
        } else {
            f.dir.join(format!("shards/{n}"))
        };
        let id = fs::read_to_string(dir.join("STORE_ID")).unwrap();
        assert_eq!(s["store_id"], id.trim(), "{s}");
        ids.insert(id);
        segments += s["segments"].as_u64().unwrap();
    }
    assert_eq!(ids.len(), 3, "each shard its own id");
    assert_eq!(info["segments"], segments);
    assert_eq!(info["store_id"], shards[0]["store_id"]);
    let table = f.ok(&["info"]);
    for needle in [
        "12 events",
        "shards           3",
        "2 with a writer",
        "shard 1",
        "shard 2",
        "no writer",
    ] {
        assert!(table.contains(needle), "{needle:?} not in:\n{table}");
    }
    drop(writers);
    // One shard: no shard lines, as before.
    let g = Fixture::new();
    g.import(&[ev("a", "r", "BLOCKED", "2026-03-01T00:00:00Z")]);
    assert!(!g.ok(&["info"]).contains("shard"));
    let one = g.run(&["info", "--format", "json"]).expect(0).json();
    assert_eq!(one["shards"].as_array().map(Vec::len), Some(1));
    assert_eq!(one["writers"], 0);
}

/// `demo` beside another writer of its directory writes a shard: it says
/// so, times the replay of its own shard (only its events), and its top
/// rules count every shard's events.
#[test]
fn demo_beside_another_writer_replays_its_own_shard() {
    let f = Fixture::new();
    let holder = Store::open(&f.dir, StoreOptions::default()).expect("open");
    for _ in 0..500 {
        holder
            .record_blocking(Event::new("tenant-000", "held-rule", Action::Blocked))
            .unwrap();
    }
    let dir = f.dir.to_str().unwrap();
    let out = f.run(&[
        "demo",
        "--dir",
        dir,
        "--events",
        "300",
        "--producers",
        "2",
        "--tenants",
        "1",
    ]);
    out.expect(0);
    assert!(out.stdout.contains(", shard 1 ("), "{}", out.stdout);
    assert!(
        out.stdout.contains("read all 300 entries"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("held-rule"), "{}", out.stdout);
    holder.close().unwrap();
}
