//! Damage in the active (last) segment must not stop recording: a writer
//! open leaves the damaged segment as found, seals it (durably marked) and
//! records on in a new segment past every offset in it; reads of the
//! undamaged parts keep working, the store's projections count the damaged
//! batch as lost instead of stalling, and `verify` reports the damage until
//! `repair` turns it into a hole.

use std::path::Path;
use std::sync::Arc;

use enforcelog::log::repair;
use enforcelog::projection::TriggerStats;
use enforcelog::storage::sim::SimStorage;
use enforcelog::storage::Storage;
use enforcelog::{Action, Entry, Event, Log, Store, StoreOptions};
use serde_json::json;

const DIR: &str = "/store";
const EVENTS: u64 = 30;

/// An event whose details look like real ones: nested, with a run of zero
/// counters (short of a 512-byte sector of zeros).
fn event(i: u64) -> Event {
    Event::new("acme", format!("rule-{}", i % 3), Action::Blocked).with_details(
        enforcelog::details!({
            "step": i,
            "budget": {"histogram": vec![0; 40], "limit": {"tokens": 4096, "used": i * 7}},
            "why": "token budget exceeded",
        }),
    )
}

fn entries(store: &Store) -> Vec<Entry> {
    store.entries(0).unwrap().map(|e| e.unwrap()).collect()
}

fn lost(store: &Store) -> u64 {
    store
        .with_projection::<TriggerStats, _>(|p, _| p.lost())
        .unwrap()
        .unwrap()
}

fn total(store: &Store) -> u64 {
    store
        .stats_all(None)
        .unwrap()
        .iter()
        .map(|r| r.total_count)
        .sum()
}

/// Removes the projection checkpoints, so that the next open replays the
/// log over the damage (a checkpoint taken before it would answer without
/// reading the damaged batch).
fn drop_checkpoints(storage: &SimStorage) {
    let dir = Path::new(DIR).join("projections");
    for name in storage.list(&dir).unwrap_or_default() {
        storage.remove(&dir.join(name)).unwrap();
    }
}

#[test]
fn damage_in_the_active_segment_does_not_stop_recording() {
    let storage = SimStorage::new(21);
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(StoreOptions::default())
        .open()
        .unwrap();
    for i in 0..EVENTS {
        assert_eq!(store.record_blocking(event(i)).unwrap(), i);
    }
    store.close().unwrap();
    drop(store);
    drop_checkpoints(&storage);

    // One changed byte in the middle of the only (active) segment: inside
    // the payload of the event in the middle.
    let segment = format!("{DIR}/{:020}.log", 0);
    let mut bytes = storage.read_file(&segment).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x04;
    storage.write_file(&segment, &bytes);

    // A read-only open before any writer: reads past the damage, changes nothing.
    let reader = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .open_read_only()
        .unwrap();
    let seen = entries(&reader);
    assert_eq!(seen.len() as u64, EVENTS);
    assert_eq!(lost(&reader), 1);
    drop(reader);
    assert_eq!(storage.read_file(&segment).unwrap(), bytes);

    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(StoreOptions::default())
        .open()
        .unwrap();
    // Recording goes on, at the offset after every one the damaged segment holds.
    assert_eq!(store.record_blocking(event(EVENTS)).unwrap(), EVENTS);
    assert_eq!(
        store.record_blocking(event(EVENTS + 1)).unwrap(),
        EVENTS + 1
    );
    // Every event but the damaged one is read and counted; the damaged one
    // is a visible hole of one offset.
    let all = entries(&store);
    assert_eq!(all.len() as u64, EVENTS + 2);
    let holes: Vec<u64> = all
        .iter()
        .filter(|e| matches!(e, Entry::Lost(_)))
        .map(Entry::offset)
        .collect();
    assert_eq!(holes.len(), 1, "{holes:?}");
    for (offset, entry) in all.iter().enumerate() {
        assert_eq!(entry.offset(), offset as u64);
        if let Entry::Event(e) = entry {
            assert_eq!(e.details.as_ref().unwrap()["step"], json!(offset));
        }
    }
    assert_eq!(total(&store), EVENTS + 2 - 1);
    assert_eq!(lost(&store), 1);
    // The damaged segment is left as found; verify still reports it.
    assert_eq!(storage.read_file(&segment).unwrap(), bytes);
    let log = Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR).unwrap();
    let report = log.verify().unwrap();
    assert!(report.has_corruption(), "{report:?}");
    drop(log);
    store.close().unwrap();
    drop(store);

    // The seal survives a reopen (read-only and writer).
    let reader = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .open_read_only()
        .unwrap();
    assert_eq!(entries(&reader).len() as u64, EVENTS + 2);
    drop(reader);

    // `repair` turns the damage into a hole on disk: verify is then clean
    // and reports the hole.
    let repaired = repair(&storage, Path::new(DIR)).unwrap();
    assert_eq!(repaired.lost, 1, "{repaired:?}");
    drop_checkpoints(&storage);
    let log = Log::open_read_only_with_storage(Arc::new(storage.clone()), DIR).unwrap();
    let report = log.verify().unwrap();
    assert!(report.is_clean() && report.lost == 1, "{report:?}");
    drop(log);
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(StoreOptions::default())
        .open()
        .unwrap();
    assert_eq!(total(&store), EVENTS + 1);
    assert_eq!(lost(&store), 1);
    assert_eq!(store.record_blocking(event(99)).unwrap(), EVENTS + 2);
}
