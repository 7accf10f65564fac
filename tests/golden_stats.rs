//! The golden fixture: importing `../shared/golden/events-2000.jsonl` and
//! asking for the trigger statistics as of 2026-11-01T00:00:00Z gives exactly
//! the JSON beside it — from the live projection, after a reopen from a
//! checkpoint, and after a rebuild.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use enforcelog::event::details_from_json;
use enforcelog::storage::sim::SimStorage;
use enforcelog::timestamp::parse_us;
use enforcelog::{
    stats_report, Action, Durability, Event, LogOptions, Store, StoreOptions, TriggerStats,
};
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

/// The golden statistics, written in the window-named keys the fixture
/// format uses (`trigger_count_30d`, `by_action_30d` with non-zero actions
/// only), under the fixed names `stats_report` prints (see
/// [`fixed_keys`]).
fn expected() -> Value {
    let path = golden_dir().join("events-2000.stats-2026-11-01T00-00-00Z.json");
    let golden = serde_json::from_str(&std::fs::read_to_string(path).expect("golden stats"));
    fixed_keys(&golden.expect("json"))
}

/// The fixture's report under the names the library and the CLI print: the
/// window is a field, `by_action` holds every action, and a rule without a
/// gap says so.
fn fixed_keys(golden: &Value) -> Value {
    let window = golden["window"].as_str().expect("window").to_string();
    let in_window = |name: &str| format!("{name}_{window}");
    let rules: Vec<Value> = golden["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            let by_action: serde_json::Map<String, Value> = Action::ALL
                .iter()
                .map(|a| {
                    let n = r[in_window("by_action")][a.as_str()].as_u64().unwrap_or(0);
                    (a.as_str().to_string(), Value::from(n))
                })
                .collect();
            serde_json::json!({
                "tenant_id": r["tenant_id"],
                "rule_id": r["rule_id"],
                "window": window,
                "trigger_count": r[in_window("trigger_count")],
                "last_triggered_at": r["last_triggered_at"],
                "total_count": r["total_count"],
                "by_action": by_action,
                "gap_in_window": r[in_window("gap_in_window")].as_bool().unwrap_or(false),
                "missing_at_least": r[in_window("missing_at_least")].as_u64().unwrap_or(0),
            })
        })
        .collect();
    serde_json::json!({"as_of": golden["as_of"], "window": window, "rules": rules})
}

/// The CLI's copy of the golden statistics (cli/tests) is exactly the
/// fixture under the fixed names: the two cannot drift apart.
#[test]
fn the_cli_golden_file_is_the_fixture_under_fixed_names() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/golden/events-2000.cli-stats-2026-11-01T00-00-00Z.json");
    let cli: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("cli golden")).expect("json");
    assert_eq!(cli, expected());
}

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 86_400);

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
    let live = stats_report(as_of, THIRTY_DAYS, &store.stats_all(Some(as_of)).unwrap());
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
        stats_report(
            as_of,
            THIRTY_DAYS,
            &reopened.stats_all(Some(as_of)).unwrap()
        ),
        want,
        "from checkpoint"
    );

    reopened.rebuild_projections().unwrap();
    assert_eq!(
        stats_report(
            as_of,
            THIRTY_DAYS,
            &reopened.stats_all(Some(as_of)).unwrap()
        ),
        want,
        "rebuilt"
    );
}

/// The projections' checkpoints as the build before interned ids wrote
/// them, for the golden events in several orders plus gaps, losses, lost
/// and undecodable entries and a far-future event
/// (`tests/fixtures/checkpoints-v3/`, written by [`checkpoint_projections`]
/// at main 966c958 with `ENFORCELOG_WRITE_CHECKPOINT_FIXTURE=1`).
fn checkpoint_fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints-v3")
}

/// The entries of the checkpoint fixture, in log order: the golden events
/// forwards, a gap marker, the golden events backwards (every one out of
/// time order), a lost entry, an event of one tenant far in the future, the
/// golden events again in a stride order.
fn checkpoint_entries() -> Vec<Option<enforcelog::Entry>> {
    use enforcelog::{Entry, GapLoss, GapMarker, LossSpan, LostEntry, StoredEvent};
    let events = events();
    let stored = |offset: u64, e: &Event| {
        Some(Entry::Event(StoredEvent {
            offset,
            tenant_id: e.tenant_id.clone(),
            rule_id: e.rule_id.clone(),
            action: e.action,
            run_id: e.run_id.clone(),
            details: None,
            enforced_at_us: e.enforced_at_us.expect("golden events are timed"),
        }))
    };
    let mut out: Vec<Option<Entry>> = Vec::new();
    for e in &events {
        out.push(stored(out.len() as u64, e));
    }
    let t = parse_us("2026-10-20T00:00:00Z").unwrap();
    out.push(Some(Entry::Gap(GapMarker {
        offset: out.len() as u64,
        dropped: 9,
        first_dropped_at_us: t,
        last_dropped_at_us: t + 5,
        losses: vec![
            GapLoss {
                tenant_id: "tenant_1".into(),
                rule_id: "rule_000".into(),
                span: LossSpan {
                    count: 4,
                    first_at_us: t,
                    last_at_us: t + 3,
                },
            },
            GapLoss {
                tenant_id: "no-such-tenant".into(),
                rule_id: "r".into(),
                span: LossSpan {
                    count: 3,
                    first_at_us: t + 1,
                    last_at_us: t + 2,
                },
            },
        ],
        unattributed: Some(LossSpan {
            count: 2,
            first_at_us: t + 4,
            last_at_us: t + 5,
        }),
    })));
    out.push(None);
    for e in events.iter().rev() {
        out.push(stored(out.len() as u64, e));
    }
    out.push(Some(Entry::Lost(LostEntry {
        offset: out.len() as u64,
        hole_first_offset: out.len() as u64,
        hole_len: 1,
    })));
    let mut rogue = events[0].clone();
    rogue.tenant_id = "rogue".into();
    rogue.enforced_at_us = Some(parse_us("9000-01-01T00:00:00Z").unwrap());
    out.push(stored(out.len() as u64, &rogue));
    for i in 0..events.len() {
        let e = &events[(i * 7) % events.len()];
        out.push(stored(out.len() as u64, e));
    }
    out
}

/// Folds the fixture's entries into the two built-in projections (the
/// trigger statistics with the default and with three windows).
fn checkpoint_projections() -> Vec<(String, Box<dyn enforcelog::Projection>)> {
    use enforcelog::projection::ActionsPerDay;
    let mut projections: Vec<(String, Box<dyn enforcelog::Projection>)> = vec![
        (
            "trigger_stats-30d".into(),
            Box::new(TriggerStats::default()),
        ),
        (
            "trigger_stats-1h-1d-30d".into(),
            Box::new(TriggerStats::with_windows(vec![
                Duration::from_secs(3600),
                Duration::from_secs(86_400),
                THIRTY_DAYS,
            ])),
        ),
        ("actions_per_day".into(), Box::new(ActionsPerDay::default())),
    ];
    for (offset, entry) in checkpoint_entries().iter().enumerate() {
        for (_, p) in projections.iter_mut() {
            match entry {
                Some(entry) => p.apply(offset as u64, entry),
                None => p.skip_undecodable(offset as u64),
            }
        }
    }
    projections
}

/// Regression (issue 17): the trigger statistics moved from nested maps of
/// owned ids to interned ids. A checkpoint written before must restore,
/// snapshot to the same bytes, and a fold of the same entries must write
/// exactly the bytes the old build wrote (the snapshot version did not
/// change, so an old reader must read new checkpoints too).
#[test]
fn a_checkpoint_written_before_interning_restores_to_the_same_answers() {
    let projections = checkpoint_projections();
    if std::env::var_os("ENFORCELOG_WRITE_CHECKPOINT_FIXTURE").is_some() {
        std::fs::create_dir_all(checkpoint_fixture_dir()).unwrap();
        for (name, p) in &projections {
            std::fs::write(checkpoint_fixture_dir().join(name), p.snapshot()).unwrap();
        }
    }
    let as_of = parse_us("2026-11-01T00:00:00Z").unwrap();
    for (name, p) in &projections {
        let old = std::fs::read(checkpoint_fixture_dir().join(name)).expect("fixture");
        assert!(p.snapshot() == old, "{name}: a fold writes other bytes");
        let mut restored = p.fresh();
        restored.restore(&old).unwrap();
        assert!(restored.snapshot() == old, "{name}: re-snapshot differs");
        let (Some(live), Some(back)) = (
            (&**p as &dyn std::any::Any).downcast_ref::<TriggerStats>(),
            (&*restored as &dyn std::any::Any).downcast_ref::<TriggerStats>(),
        ) else {
            continue;
        };
        let pairs: Vec<(String, String)> = live
            .all_rules()
            .map(|(t, r)| (t.to_string(), r.to_string()))
            .collect();
        assert_eq!(
            pairs,
            back.all_rules()
                .map(|(t, r)| (t.to_string(), r.to_string()))
                .collect::<Vec<_>>()
        );
        for (t, r) in &pairs {
            for at in [as_of, as_of - 86_400_000_000, i64::MAX, i64::MIN] {
                assert_eq!(live.answer(t, r, at, 7), back.answer(t, r, at, 7));
            }
        }
        assert_eq!(live.gaps(), back.gaps());
        assert_eq!(
            (live.lost(), live.undecodable()),
            (back.lost(), back.undecodable())
        );
    }
}
