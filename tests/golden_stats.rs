//! The golden fixture: importing `../shared/golden/events-2000.jsonl` and
//! asking for the trigger statistics as of 2026-11-01T00:00:00Z gives exactly
//! the JSON beside it — from the live projection, after a reopen from a
//! checkpoint, and after a rebuild.

use std::path::PathBuf;
use std::sync::Arc;

use enforcelog::event::details_from_json;
use enforcelog::storage::sim::SimStorage;
use enforcelog::timestamp::parse_us;
use enforcelog::{stats_report, Durability, Event, LogOptions, Store, StoreOptions};
use serde_json::Value;

/// The golden files, as committed in this repository.
fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden")
}

/// The committed copy must equal the team's shared reference
/// (`../shared/golden/`, beside the checkout) wherever that is present.
#[test]
fn committed_golden_files_equal_the_shared_reference() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    if !shared.is_dir() {
        eprintln!(
            "no shared reference at {}; using the committed copy",
            shared.display()
        );
        return;
    }
    for name in [
        "events-2000.jsonl",
        "events-2000.stats-2026-11-01T00-00-00Z.json",
    ] {
        let committed = std::fs::read(golden_dir().join(name)).expect("committed golden file");
        let reference = std::fs::read(shared.join(name)).expect("shared golden file");
        assert!(
            committed == reference,
            "{name} differs from the shared reference"
        );
    }
}

fn events() -> Vec<Event> {
    let text =
        std::fs::read_to_string(golden_dir().join("events-2000.jsonl")).expect("golden events");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}", i + 1));
            let field = |name: &str| v.get(name).and_then(Value::as_str);
            let mut event = Event::new(
                field("tenant_id").expect("tenant_id"),
                field("rule_id").expect("rule_id"),
                field("action_taken")
                    .expect("action_taken")
                    .parse()
                    .expect("action"),
            )
            .at_us(parse_us(field("enforced_at").expect("enforced_at")).expect("time"));
            if let Some(run) = field("run_id") {
                event = event.with_run_id(run);
            }
            if let Some(details) = v.get("details") {
                let map = details_from_json(&details.to_string()).expect("details");
                event = event.with_details(map);
            }
            event
        })
        .collect()
}

fn expected() -> Value {
    let path = golden_dir().join("events-2000.stats-2026-11-01T00-00-00Z.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("golden stats")).expect("json")
}

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            segment_max_bytes: 64 << 10,
            record_max_bytes: 8 << 10,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

#[test]
fn golden_stats_live_after_reopen_and_after_rebuild() {
    let as_of = parse_us("2026-11-01T00:00:00Z").unwrap();
    let storage = SimStorage::new(11);
    let store = Store::builder("/store")
        .storage(Arc::new(storage.clone()))
        .options(options())
        .open()
        .unwrap();
    let events = events();
    assert_eq!(events.len(), 2000);
    for chunk in events.chunks(97) {
        let mut batch = store.begin();
        for event in chunk {
            batch.record(event.clone()).unwrap();
        }
        batch.commit_blocking().unwrap();
    }
    let want = expected();
    let live = stats_report(as_of, &store.stats_all(Some(as_of)).unwrap());
    assert_eq!(live, want, "live projection");
    store.close().unwrap();
    drop(store);

    let reopened = Store::builder("/store")
        .storage(Arc::new(storage.clone()))
        .options(options())
        .open()
        .unwrap();
    let checks = reopened.verify_projections().unwrap();
    assert!(
        checks
            .iter()
            .all(|c| c.matches && c.checkpoint_offset == Some(2000)),
        "{checks:?}"
    );
    assert_eq!(
        stats_report(as_of, &reopened.stats_all(Some(as_of)).unwrap()),
        want,
        "from checkpoint"
    );

    reopened.rebuild_projections().unwrap();
    assert_eq!(
        stats_report(as_of, &reopened.stats_all(Some(as_of)).unwrap()),
        want,
        "rebuilt"
    );
}
