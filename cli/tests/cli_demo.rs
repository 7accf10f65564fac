//! `demo` through the binary: small runs that leave a clean store in the
//! demo's own directory.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cli::*;

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
