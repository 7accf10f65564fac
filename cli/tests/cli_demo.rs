//! `demo` through the binary: small runs that leave a clean store in the
//! demo's own directory.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::time::{Duration, Instant};

use cli::*;

// ---------------------------------------------------------------------------
// demo
// ---------------------------------------------------------------------------

#[test]
fn demo_writes_its_own_directory_not_the_store_of_data_dir_and_says_where() {
    let f = Fixture::new();
    // Run where a default store and ENFORCELOG_DIR would be: the demo
    // writes neither, nor --data-dir, only ./enforcelog-demo.
    let env_store = f.tmp.path().join("env-store");
    let mut cmd = f.cmd_durable(&["demo", "--events", "2000", "--producers", "8"]);
    cmd.current_dir(f.tmp.path())
        .env("ENFORCELOG_DIR", &env_store);
    let started = Instant::now();
    let out = run(cmd, None);
    let elapsed = started.elapsed();
    out.expect(0);
    let demo_dir = f.tmp.path().join("enforcelog-demo");
    assert!(demo_dir.join("VERSION").is_file(), "{}", out.show());
    for never in [&f.dir, &env_store, &f.tmp.path().join("enforcelog-data")] {
        assert!(!never.exists(), "the demo created {}", never.display());
    }
    let last = out.stdout.lines().last().unwrap_or_default();
    assert!(
        last.contains("./enforcelog-demo") && last.contains("--data-dir"),
        "the demo says where its store is and how to look at it: {last:?}"
    );
    // The rest of the test reads the demo's store through --data-dir.
    fs::rename(&demo_dir, &f.dir).unwrap();
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

#[test]
fn demo_dir_flag_chooses_where_the_demo_writes() {
    let f = Fixture::new();
    let mut cmd = f.cmd(&["demo", "--events", "50", "--producers", "2", "--dir"]);
    cmd.arg(f.tmp.path().join("mine"));
    let out = run(cmd, None);
    out.expect(0);
    assert!(f.tmp.path().join("mine").join("VERSION").is_file());
    assert!(!f.dir.exists(), "--data-dir is not the demo's store");
    assert!(out.stdout.contains("mine"), "{}", out.show());
}
