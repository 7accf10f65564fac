//! `dump` and `tail --follow` over a directory several writers share
//! (shards): every shard's events, each once, each line naming its shard.
//!
//! The writers here are library stores in the test process (the tool's own
//! writers take the directory alone); `dump` and `tail` run as other
//! processes, so what they show is what another process wrote.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cli::*;
use common::process;
use enforcelog::{Action, Event, Store, StoreOptions};
use serde_json::{json, Map, Value};

/// How long `tail --follow` may take to show what it must (liveness, not
/// timing).
const LIVENESS: Duration = Duration::from_secs(60);

/// Details that look like what hosts send: nesting, runs of zero bytes,
/// and now and then a blob near the 64 KiB limit.
fn details(i: u64) -> Map<String, Value> {
    let mut nested = json!({"leaf": i, "zeros": "\u{0}".repeat(48)});
    for depth in 0..10 {
        nested = json!({"level": depth, "inner": nested});
    }
    let mut map = Map::new();
    map.insert("request".into(), nested);
    if i.is_multiple_of(7) {
        map.insert("blob".into(), json!("\u{0}x".repeat(8 * 1024)));
    }
    map
}

fn event(who: u64, i: u64) -> Event {
    Event::new(
        format!("tenant-{}", (who + i) % 3),
        format!("rule-{}", i % 4),
        Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{who}-{i}"))
    .with_details(details(i))
}

/// Writers of `dir` in this process: the root store and `n - 1` shards.
fn writers(dir: &std::path::Path, n: usize) -> Vec<Store> {
    let stores: Vec<Store> = (0..n)
        .map(|_| Store::open(dir, StoreOptions::default()).expect("open a writer"))
        .collect();
    assert_eq!(
        stores.iter().map(Store::shard).collect::<Vec<_>>(),
        (0..n as u32).collect::<Vec<_>>()
    );
    stores
}

#[test]
fn dump_over_a_sharded_directory_lists_every_event_once_with_its_shard() {
    let f = Fixture::new();
    let stores = writers(&f.dir, 3);
    let mut recorded = BTreeSet::new();
    for (who, count) in [(0u64, 9u64), (1, 15), (2, 4)] {
        for i in 0..count {
            stores[who as usize].record_blocking(event(who, i)).unwrap();
            recorded.insert(format!("run-{who}-{i}"));
        }
    }
    let ids: BTreeMap<u64, String> = stores
        .iter()
        .map(|s| (u64::from(s.shard()), s.store_id().unwrap().to_string()))
        .collect();
    let lines = f.dump();
    assert_eq!(lines.len(), recorded.len());
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for line in &lines {
        let shard = line["shard"].as_u64().expect("a shard on every line");
        let offset = line["offset"].as_u64().unwrap();
        assert_eq!(line["store_id"], json!(ids[&shard]), "{line}");
        assert!(
            seen.insert((line["store_id"].to_string(), offset)),
            "twice: {line}"
        );
        let run = line["run_id"].as_str().unwrap();
        assert!(
            run.starts_with(&format!("run-{shard}-")),
            "{run} in shard {shard}"
        );
        order.push((shard, offset));
    }
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "shard by shard, each in offset order");
    let runs: BTreeSet<String> = lines
        .iter()
        .map(|l| l["run_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(runs, recorded, "every event once");

    // --from starts every shard there; shard 2 (4 events) then has none.
    let from = jsonl(&f.ok(&["dump", "--from", "5"]), "dump");
    let shards: Vec<(u64, u64)> = from
        .iter()
        .map(|l| (l["shard"].as_u64().unwrap(), l["offset"].as_u64().unwrap()))
        .collect();
    let want: Vec<(u64, u64)> = (5..9)
        .map(|o| (0, o))
        .chain((5..15).map(|o| (1, o)))
        .collect();
    assert_eq!(shards, want);
    f.run(&["dump", "--from", "16"]).expect(2);
    // The table says SHARD:OFFSET.
    let table = f.ok(&["dump", "--format", "table"]);
    assert!(table.lines().any(|l| l.starts_with("2:3 ")), "{table}");
    // tail: the last -n of each shard.
    let tail = jsonl(&f.ok(&["tail", "-n", "2", "--format", "jsonl"]), "tail");
    let got: Vec<(u64, u64)> = tail
        .iter()
        .map(|l| (l["shard"].as_u64().unwrap(), l["offset"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [(0, 7), (0, 8), (1, 13), (1, 14), (2, 2), (2, 3)]);

    // The dump imports as before (the shard fields are where a line came
    // from), and the new store counts the same.
    let copy = Fixture::new();
    let summary = copy.run_stdin(&["import", "-"], f.dump_text().as_bytes());
    summary.expect(0);
    assert_eq!(
        summary.json()["imported"],
        json!(recorded.len()),
        "{}",
        summary.stdout
    );
    let stats = |fx: &Fixture| f_stats(&fx.ok(&["stats", "--format", "json"]));
    assert_eq!(stats(&copy), stats(&f));
}

/// The rules of a `stats --format json` report, without its time.
fn f_stats(text: &str) -> Value {
    let report: Value = serde_json::from_str(text).expect("stats json");
    report["rules"].clone()
}

/// `tail --follow` shows what writers in another process record into
/// other shards, shards created after it started included, each once.
#[test]
fn tail_follow_shows_every_shard_another_process_writes_into() {
    let f = Fixture::new();
    let mut stores = writers(&f.dir, 2);
    stores[0].record_blocking(event(0, 0)).unwrap();
    stores[1].record_blocking(event(1, 0)).unwrap();
    let mut cmd = f.cmd(&["tail", "--follow", "--format", "jsonl"]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn tail --follow");
    let (tx, rx) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value = serde_json::from_str(&line).expect("tail prints JSON lines");
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let stderr = process::drain(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    let wait_for = |count: usize, lines: &mut Vec<Value>| {
        while lines.len() < count {
            match rx.recv_timeout(LIVENESS) {
                Ok(line) => lines.push(line),
                Err(_) => return false,
            }
        }
        true
    };
    let first = wait_for(2, &mut lines);
    // While tail follows: more in both shards, and a third writer that
    // claims a shard tail has not seen yet.
    for i in 1..4 {
        stores[0].record_blocking(event(0, i)).unwrap();
        stores[1].record_blocking(event(1, i)).unwrap();
    }
    stores.push(Store::open(&f.dir, StoreOptions::default()).unwrap());
    assert_eq!(stores[2].shard(), 2);
    for i in 0..3 {
        stores[2].record_blocking(event(2, i)).unwrap();
    }
    let all = wait_for(2 + 6 + 3, &mut lines);
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let stderr = stderr.join().unwrap_or_default();
    assert!(
        first && all,
        "tail --follow showed only {lines:?}; stderr: {stderr}"
    );
    let mut runs: Vec<(u64, String)> = lines
        .iter()
        .map(|l| {
            (
                l["shard"].as_u64().expect("a shard on every line"),
                l["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    runs.sort();
    let mut want: Vec<(u64, String)> = (0..4)
        .map(|i| (0, format!("run-0-{i}")))
        .chain((0..4).map(|i| (1, format!("run-1-{i}"))))
        .chain((0..3).map(|i| (2, format!("run-2-{i}"))))
        .collect();
    want.sort();
    assert_eq!(runs, want, "every event once, with its shard");
}
