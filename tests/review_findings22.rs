//! Adversarial review of session 22 (issue 16: union replay/subscribe
//! across shards, incremental read-only refresh, the shard lock across a
//! failed writer's reopen). Each test names a suspected defect; an
//! `#[ignore = "confirmed: ..."]` test fails on the code as reviewed, the
//! others pass and so refute the suspicion.
//!
//! The writers here are stores in this process: a second `Store::open` on
//! a directory whose root is held claims a shard, as another process
//! would. Waits on a subscriber carry a generous bound: a liveness check
//! (a lost wake-up would otherwise hang the suite), not a timing assertion.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::Duration;

use enforcelog::{
    Action, Entry, Error, Event, LogOptions, Positions, ShardEntry, Store, StoreOptions,
    UnionDelivery, UnionSubscription,
};

mod common;
use common::events::{host_details, writer_event};

/// How long a blocked subscriber may take to return once it must (liveness,
/// not timing).
const LIVENESS: Duration = Duration::from_secs(30);

fn event(who: u64, i: u64) -> Event {
    writer_event(who, i, false, host_details(i, 3, 6))
}

/// Only explicit refreshes, small segments (so that writers roll often).
fn manual_small() -> StoreOptions {
    StoreOptions {
        shard_refresh_interval: Duration::from_secs(24 * 3600),
        log: LogOptions {
            segment_max_bytes: 128 << 10,
            record_max_bytes: 96 << 10,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

fn run_id(e: &ShardEntry) -> Option<String> {
    match &e.entry {
        Entry::Event(ev) => ev.run_id.clone(),
        _ => None,
    }
}

/// Every delivery ready now.
fn drain(sub: &mut UnionSubscription, into: &mut Vec<ShardEntry>) {
    while let Some(d) = sub.try_next().expect("try_next") {
        if let UnionDelivery::Entry(e) = d {
            into.push(e);
        }
    }
}

/// Each (shard, offset) once, each shard's offsets dense from 0.
fn assert_once_dense(entries: &[ShardEntry]) {
    let mut by_shard: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for e in entries {
        by_shard.entry(e.shard).or_default().push(e.entry.offset());
    }
    for (shard, offsets) in by_shard {
        let want: Vec<u64> = (0..offsets.len() as u64).collect();
        assert_eq!(
            offsets, want,
            "shard {shard}: offsets not once each, in order"
        );
    }
}

/// Runs `next_blocking` on a thread; the receiver gets its result.
fn blocked_next(mut sub: UnionSubscription) -> mpsc::Receiver<Result<UnionDelivery, Error>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sub.next_blocking());
    });
    rx
}

/// Suspected hang: a read-only store's own log has no writer, so its
/// watchers are never disconnected, and close stops the refresher that
/// was the only other wake-up. A union subscription blocked on it must
/// still end with `Closed`, as one on a writer store does.
#[test]
fn closing_a_read_only_store_ends_a_blocked_union_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let peer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    peer.record_blocking(event(1, 0)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    reader.refresh().unwrap();
    let sub = reader.subscribe_union(reader.union_end().unwrap()).unwrap();
    let rx = blocked_next(sub);
    // Give the thread a chance to block (the close must end it either way).
    std::thread::sleep(Duration::from_millis(300));
    reader.close().unwrap();
    match rx.recv_timeout(LIVENESS) {
        Ok(Err(Error::Closed)) => {}
        Ok(other) => panic!("expected Closed, got {other:?}"),
        Err(_) => panic!("a union subscription on a closed read-only store never returned"),
    }
}

/// The writer-store counterpart: refuted (the own writer's stop
/// disconnects the watch).
#[test]
fn closing_a_writer_store_ends_a_blocked_union_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let peer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    peer.record_blocking(event(1, 0)).unwrap();
    writer.refresh().unwrap();
    let sub = writer.subscribe_union(writer.union_end().unwrap()).unwrap();
    let rx = blocked_next(sub);
    std::thread::sleep(Duration::from_millis(300));
    writer.close().unwrap();
    match rx.recv_timeout(LIVENESS) {
        Ok(Err(Error::Closed)) => {}
        Ok(other) => panic!("expected Closed, got {other:?}"),
        Err(_) => panic!("a union subscription on a closed writer store never returned"),
    }
}

/// Suspected loss/doubling: shard 1 changes hands (its writer closes, a
/// new writer claims it and goes on) while its segments roll and the
/// subscriber refreshes concurrently with the writes (incremental refresh
/// of a rolling peer). Every acknowledged event of every writer must come
/// exactly once, each shard dense and in order, and a replay from the
/// saved position must give nothing more.
#[test]
fn union_subscription_across_a_shard_changing_hands_while_it_rolls_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let reader = Store::open(dir.path(), manual_small()).unwrap();
    assert_eq!(reader.shard(), 0);
    let mut sub = reader.subscribe_union(Positions::new()).unwrap();
    let mut got = Vec::new();
    let mut acked = BTreeSet::new();
    for (who, count) in [(1u64, 60u64), (2, 45), (3, 30)] {
        let writer = Store::open(dir.path(), manual_small()).unwrap();
        assert_eq!(writer.shard(), 1, "the freed shard is claimed again");
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::spawn(move || {
            for i in 0..count {
                writer.record_blocking(event(who, i)).unwrap();
                let _ = tx.send(format!("run-{who}-{i}"));
            }
            writer.close().unwrap();
        });
        // Refresh and read while the writer records and rolls.
        let mut own = 0;
        loop {
            let done = handle.is_finished();
            reader.refresh().unwrap();
            drain(&mut sub, &mut got);
            if own < 5 {
                reader.record_blocking(event(100 + who, own)).unwrap();
                acked.insert(format!("run-{}-{own}", 100 + who));
                own += 1;
            }
            if done {
                break;
            }
        }
        handle.join().unwrap();
        acked.extend(rx.try_iter());
        reader.refresh().unwrap();
        drain(&mut sub, &mut got);
    }
    assert_once_dense(&got);
    let seen: Vec<String> = got.iter().filter_map(run_id).collect();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice");
    assert_eq!(unique, acked, "delivered != acknowledged");
    // Nothing more after the saved position; a full replay equals it.
    let rest: Vec<_> = reader.replay_union(sub.position()).unwrap().collect();
    assert!(
        rest.is_empty(),
        "replay past the position gave {}",
        rest.len()
    );
    let all: Vec<ShardEntry> = reader
        .replay_union(&Positions::new())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let replayed: BTreeSet<String> = all.iter().filter_map(run_id).collect();
    assert_eq!(replayed, acked);
}

/// Suspected loss: a position taken before a shard existed must read that
/// shard whole once it appears (docs: "a shard not named in the position
/// is read from its first entry"), both for replay and for a subscription
/// resumed from it.
#[test]
fn a_position_from_before_a_shard_appeared_reads_that_shard_whole() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    root.record_blocking(event(0, 0)).unwrap();
    let before = root.union_end().unwrap();
    let saved = serde_json::to_string(&before).unwrap();
    let later = Store::open(dir.path(), manual_small()).unwrap();
    for i in 0..12 {
        later.record_blocking(event(1, i)).unwrap();
    }
    root.refresh().unwrap();
    let from: Positions = serde_json::from_str(&saved).unwrap();
    let replayed: Vec<ShardEntry> = root
        .replay_union(&from)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    assert_eq!(replayed.len(), 12);
    assert!(replayed.iter().all(|e| e.shard == 1));
    let mut sub = root.subscribe_union(from).unwrap();
    let mut got = Vec::new();
    drain(&mut sub, &mut got);
    assert_eq!(got, replayed);
}

/// Suspected panic on bad input: positions at every extreme are refused
/// with `BadPosition` (or fail to parse), never a panic, and change
/// nothing.
#[test]
fn union_positions_at_the_extremes_are_refused_not_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    root.record_blocking(event(0, 0)).unwrap();
    peer.record_blocking(event(1, 0)).unwrap();
    root.refresh().unwrap();
    for (shard, offset) in [(0, u64::MAX), (1, 2), (1, u64::MAX), (u32::MAX, 0), (7, 0)] {
        let mut at = Positions::new();
        at.set(shard, offset);
        let r = root.replay_union(&at).map(|_| ());
        assert!(
            matches!(r, Err(Error::BadPosition { .. })),
            "{shard}:{offset}: {r:?}"
        );
        let s = root.subscribe_union(at).map(|_| ());
        assert!(
            matches!(s, Err(Error::BadPosition { .. })),
            "{shard}:{offset}: {s:?}"
        );
    }
    // Shard 1's id saved under shard 0: refused.
    let mut swapped = root.union_end().unwrap();
    let one = swapped.get(1).unwrap();
    let text = serde_json::to_string(&swapped).unwrap().replacen(
        &format!(
            "\"0\":{{\"store_id\":\"{}\"",
            swapped.get(0).unwrap().store_id.unwrap()
        ),
        &format!("\"0\":{{\"store_id\":\"{}\"", one.store_id.unwrap()),
        1,
    );
    swapped = serde_json::from_str(&text).unwrap();
    assert!(matches!(
        root.replay_union(&swapped).map(|_| ()),
        Err(Error::BadPosition { shard: 0, .. })
    ));
    for bad in [
        r#"{"0":{"store_id":"zz","next_offset":0}}"#,
        r#"{"-1":{"store_id":null,"next_offset":0}}"#,
        r#"{"4294967296":{"store_id":null,"next_offset":0}}"#,
        r#"{"0":{"store_id":null,"next_offset":-1}}"#,
    ] {
        assert!(serde_json::from_str::<Positions>(bad).is_err(), "{bad}");
    }
    assert_eq!(root.replay_union(&Positions::new()).unwrap().count(), 2);
}

/// Suspected loss/doubling on the read-only side: a read-only store's own
/// log (the root, written by another handle) is refreshed incrementally
/// while its writer rolls segments, and a peer shard records too; a union
/// subscription on the read-only store, refreshed concurrently with the
/// writes, gets every acknowledged event once. With a lag threshold of 0
/// it is told it lags and still loses nothing.
#[test]
fn read_only_union_subscriber_gets_a_rolling_root_and_a_peer_once_with_lag_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    root.record_blocking(event(0, 0)).unwrap();
    let reader = Store::builder(dir.path())
        .options(StoreOptions {
            subscriber_lag_warning: 0,
            ..manual_small()
        })
        .open_read_only()
        .unwrap();
    let mut sub = reader.subscribe_union(Positions::new()).unwrap();
    let mut acked = BTreeSet::from(["run-0-0".to_string()]);
    let writers: Vec<_> = [(root, 0u64), (peer, 1u64)]
        .into_iter()
        .map(|(store, who)| {
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                let first = u64::from(who == 0);
                for i in first..first + 50 {
                    store.record_blocking(event(who, i)).unwrap();
                    runs.push(format!("run-{who}-{i}"));
                }
                store.close().unwrap();
                runs
            })
        })
        .collect();
    let mut got = Vec::new();
    let mut lagging = 0;
    let mut pull = |sub: &mut UnionSubscription, got: &mut Vec<ShardEntry>| {
        while let Some(d) = sub.try_next().expect("try_next") {
            match d {
                UnionDelivery::Entry(e) => got.push(e),
                UnionDelivery::Lagging { .. } => lagging += 1,
            }
        }
    };
    while !writers.iter().all(|w| w.is_finished()) {
        reader.refresh().unwrap();
        pull(&mut sub, &mut got);
    }
    for w in writers {
        acked.extend(w.join().unwrap());
    }
    reader.refresh().unwrap();
    pull(&mut sub, &mut got);
    assert_once_dense(&got);
    let seen: Vec<String> = got.iter().filter_map(run_id).collect();
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "an event came twice");
    assert_eq!(unique, acked, "delivered != acknowledged");
    assert!(lagging > 0, "a lag threshold of 0 was never reported");
}

/// Suspected spurious failure (a `tail --follow` or a union subscriber
/// that ends with an error because another writer started): shards
/// appear while a reader refreshes and reads the union over and over. A
/// shard being created must be skipped or seen whole, never fail the
/// refresh (which would fail every union read until the next one).
#[test]
fn shards_appearing_while_a_union_subscriber_refreshes_never_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    root.record_blocking(event(0, 0)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let mut sub = reader.subscribe_union(Positions::new()).unwrap();
    let path = dir.path().to_path_buf();
    let opener = std::thread::spawn(move || {
        let mut writers = Vec::new();
        let mut acked = BTreeSet::new();
        for who in 1..=24u64 {
            let w = Store::open(&path, manual_small()).unwrap();
            w.record_blocking(event(who, 0)).unwrap();
            acked.insert(format!("run-{who}-0"));
            writers.push(w);
        }
        for w in writers {
            w.close().unwrap();
        }
        acked
    });
    let mut got = Vec::new();
    let mut failures = Vec::new();
    while !opener.is_finished() {
        if let Err(e) = reader.refresh() {
            failures.push(format!("refresh: {e}"));
        }
        loop {
            match sub.try_next() {
                Ok(Some(UnionDelivery::Entry(e))) => got.push(e),
                Ok(Some(UnionDelivery::Lagging { .. })) => {}
                Ok(None) => break,
                Err(e) => {
                    failures.push(format!("try_next: {e}"));
                    break;
                }
            }
        }
    }
    let mut acked = opener.join().unwrap();
    acked.insert("run-0-0".into());
    reader.refresh().unwrap();
    drain(&mut sub, &mut got);
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert_once_dense(&got);
    let seen: BTreeSet<String> = got.iter().filter_map(run_id).collect();
    assert_eq!(seen, acked);
}

/// Docs check (PROJECTIONS.md): an undecodable entry in one shard is an
/// error each time the union subscription gets to it, the other shards
/// keep their turns meanwhile (one writer's bad entry must not stall the
/// others' events), and a position set past it resumes with the rest.
#[test]
fn an_undecodable_entry_in_one_shard_stalls_neither_the_other_shards_nor_a_resume_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    assert_eq!(peer.shard(), 1);
    peer.record_blocking(event(1, 0)).unwrap();
    peer.record_blocking(event(1, 1)).unwrap();
    peer.close().unwrap();
    drop(peer);
    let shard_dir = dir.path().join("shards").join("1");
    {
        let log = enforcelog::Log::open(&shard_dir, manual_small().log).unwrap();
        // A record that is no store payload: a run of zero bytes.
        let at = log.append_blocking(enforcelog::Record::new(
            enforcelog::now_us(),
            vec![0u8; 4096],
        ));
        assert_eq!(at.unwrap(), 2);
        log.close().unwrap();
    }
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    assert_eq!(peer.shard(), 1);
    peer.record_blocking(event(1, 3)).unwrap();
    peer.record_blocking(event(1, 4)).unwrap();
    root.refresh().unwrap();
    let mut sub = root.subscribe_union(Positions::new()).unwrap();
    let mut got = Vec::new();
    let mut errors = 0;
    let mut own = 0;
    while errors < 4 {
        if own < 4 {
            root.record_blocking(event(0, own)).unwrap();
            own += 1;
        }
        match sub.try_next() {
            Ok(Some(UnionDelivery::Entry(e))) => got.push(e),
            Ok(_) => {}
            Err(Error::BadPayload { offset, reason }) => {
                assert_eq!(offset, 2);
                assert!(reason.contains("shard 1"), "{reason}");
                errors += 1;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    drain_past_errors(&mut sub, &mut got);
    let own_got = got.iter().filter(|e| e.shard == 0).count();
    assert_eq!(
        own_got, 4,
        "the own shard was stalled by shard 1's bad entry"
    );
    let mut at = sub.position().clone();
    assert_eq!(at.next_offset(1), 2, "the bad entry was skipped");
    at.set(1, 3);
    let mut rest = root.subscribe_union(at).unwrap();
    let mut after = Vec::new();
    drain(&mut rest, &mut after);
    let runs: Vec<String> = after.iter().filter_map(run_id).collect();
    assert_eq!(runs, ["run-1-3", "run-1-4"]);
}

/// Like `drain`, stepping over errors (at most a few).
fn drain_past_errors(sub: &mut UnionSubscription, into: &mut Vec<ShardEntry>) {
    for _ in 0..16 {
        match sub.try_next() {
            Ok(Some(UnionDelivery::Entry(e))) => into.push(e),
            Ok(Some(_)) | Err(_) => {}
            Ok(None) => return,
        }
    }
}

/// Suspected wrong answer: `Log::refresh` of a read-only store's own log
/// is not serialised (the refresher thread and `Store::refresh` both call
/// it), so an older view computed first can be installed after a newer
/// one: what the store sees goes back (`next_offset`, `union_end`), and a
/// position taken a moment ago is then "beyond the shard's end".
#[test]
fn a_read_only_stores_view_of_its_own_log_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), manual_small()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    let reader = Store::builder(dir.path())
        .options(StoreOptions {
            shard_refresh_interval: Duration::from_millis(1),
            ..manual_small()
        })
        .open_read_only()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refreshers: Vec<_> = (0..2)
        .map(|_| {
            let (reader, stop) = (reader.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = reader.refresh();
                }
            })
        })
        .collect();
    let w = std::thread::spawn(move || {
        for i in 1..3000 {
            writer
                .record_blocking(
                    Event::new("t", "r", Action::Blocked).with_run_id(format!("run-0-{i}")),
                )
                .unwrap();
        }
        writer.close().unwrap();
    });
    let mut highest = 0;
    let mut went_back = Vec::new();
    while !w.is_finished() {
        let now = reader.next_offset();
        if now < highest {
            went_back.push((highest, now));
        }
        highest = highest.max(now);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    w.join().unwrap();
    for r in refreshers {
        r.join().unwrap();
    }
    assert!(
        went_back.is_empty(),
        "{} times, first {:?}",
        went_back.len(),
        went_back.first()
    );
}

/// The consequence that lasts: when the older view is installed last and
/// the writer then goes idle, the background refresher sees the published
/// end it already refreshed to and never looks again. The read-only store
/// then leaves acknowledged, durable events out of every answer (and a
/// union subscriber waiting for them waits) until the writer writes again
/// or someone calls `refresh`. Rounds: a burst of writes with a user
/// refresh racing the background one, then a liveness wait for the
/// background refresher alone to show everything.
#[test]
fn a_read_only_store_left_behind_by_racing_refreshes_catches_up_without_a_call() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), manual_small()).unwrap();
    let reader = Store::builder(dir.path())
        .options(StoreOptions {
            shard_refresh_interval: Duration::from_millis(1),
            ..manual_small()
        })
        .open_read_only()
        .unwrap();
    let mut stuck = Vec::new();
    for round in 0..200u64 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refresher = {
            let (reader, stop) = (reader.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = reader.refresh();
                }
            })
        };
        for i in 0..30 {
            writer
                .record_blocking(
                    Event::new("t", "r", Action::Blocked).with_run_id(format!("run-{round}-{i}")),
                )
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        refresher.join().unwrap();
        let want = writer.next_offset();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while reader.next_offset() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if reader.next_offset() < want {
            stuck.push((round, reader.next_offset(), want));
            reader.refresh().unwrap(); // go on with the next round
        }
    }
    assert!(
        stuck.is_empty(),
        "left behind in {} rounds: {:?}",
        stuck.len(),
        stuck
    );
}

/// Suspected loss of acknowledged events from every reader's answers: the
/// `DURABLE` end is fsynced only at a roll and at close, so after a power
/// cut it names only what the active segment held when it was created,
/// and "the next writer open rewrites it". With shards, the next writer
/// open of a shard may never come (writers claim the lowest free shard;
/// after a reboot with fewer workers the higher shards stay unclaimed):
/// every reader (stats, query, the union) then leaves out that shard's
/// acknowledged, durable events, for as long as nobody writes there.
#[test]
fn after_a_power_cut_every_reader_sees_the_acknowledged_events_of_shards_nobody_reopened() {
    use enforcelog::storage::sim::{CrashMode, SimStorage};
    use std::sync::Arc;

    const DIR: &str = "/data/store";
    let sim = SimStorage::new(22);
    let open = || {
        Store::builder(DIR)
            .storage(Arc::new(sim.clone()))
            .options(manual_small())
            .open()
    };
    let stores: Vec<Store> = (0..3).map(|_| open().unwrap()).collect();
    let mut acked = BTreeSet::new();
    for (who, store) in stores.iter().enumerate() {
        assert_eq!(store.shard(), who as u32);
        for i in 0..4u64 {
            // Durability::Fsync (the default): acknowledged = durable.
            store.record_blocking(event(who as u64, i)).unwrap();
            acked.insert(format!("run-{who}-{i}"));
        }
    }
    sim.crash(CrashMode::LoseUnsynced);
    drop(stores);
    // After the reboot one worker comes back (it takes the root), and a
    // reader looks.
    let back = open().unwrap();
    assert_eq!(back.shard(), 0);
    back.refresh().unwrap();
    let seen: BTreeSet<String> = back
        .replay_union(&Positions::new())
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| run_id(&e))
        .collect();
    let reader = Store::builder(DIR)
        .storage(Arc::new(sim.clone()))
        .options(manual_small())
        .open_read_only()
        .unwrap();
    let total: u64 = reader
        .stats_all(None)
        .unwrap()
        .iter()
        .map(|s| s.total_count)
        .sum();
    // They are on disk: writers claiming the two shards again (their open
    // rewrites DURABLE) make every reader see them.
    let reclaimed: Vec<Store> = (0..2).map(|_| open().unwrap()).collect();
    back.refresh().unwrap();
    let after: BTreeSet<String> = back
        .replay_union(&Positions::new())
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| run_id(&e))
        .collect();
    assert_eq!(after, acked, "durable on disk once the shards are reopened");
    drop(reclaimed);
    let missing: Vec<_> = acked.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "acknowledged, durable, and left out of the union: {missing:?}"
    );
    assert_eq!(total, acked.len() as u64, "stats of a read-only store");
}

/// The class of the read-only close hang: the async union `next` waits on
/// the same never-disconnected watches (and so does the own-shard
/// `Subscription`'s async `next`, whose blocking form polls every 100 ms
/// and therefore returns: the union's blocking form dropped that poll).
#[test]
fn closing_a_read_only_store_ends_every_blocked_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let union = reader.subscribe_union(reader.union_end().unwrap()).unwrap();
    let own_async = reader.subscribe(reader.next_offset()).unwrap();
    let mut own_blocking = reader.subscribe(reader.next_offset()).unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for (name, mut union, mut own) in [
        ("union async", Some(union), None),
        ("subscribe async", None, Some(own_async)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let r = match (&mut union, &mut own) {
                (Some(u), _) => format!("{:?}", runtime.block_on(u.next()).map(|_| ())),
                (_, Some(o)) => format!("{:?}", runtime.block_on(o.next()).map(|_| ())),
                _ => unreachable!(),
            };
            let _ = tx.send(format!("{name}: {r}"));
        });
    }
    std::thread::spawn(move || {
        let r = own_blocking.next_blocking().map(|_| ());
        let _ = tx.send(format!("subscribe blocking: {r:?}"));
    });
    std::thread::sleep(Duration::from_millis(300));
    reader.close().unwrap();
    let mut ended = Vec::new();
    while let Ok(line) = rx.recv_timeout(LIVENESS) {
        ended.push(line);
        if ended.len() == 3 {
            break;
        }
    }
    assert_eq!(ended.len(), 3, "only these returned after close: {ended:?}");
    assert!(ended.iter().all(|l| l.contains("Closed")), "{ended:?}");
}

/// After a close nothing refreshes the other shards again: a union
/// subscription whose last refresh had failed must end with `Closed`
/// (blocking and async), not answer `ProjectionStalled` to every call for
/// good, which a caller retrying on that error would do forever.
#[test]
fn a_closed_stores_union_subscription_ends_even_after_a_failed_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), manual_small()).unwrap();
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    peer.record_blocking(event(1, 0)).unwrap();
    for store in [
        Store::builder(dir.path())
            .options(manual_small())
            .open_read_only()
            .unwrap(),
        writer.clone(),
    ] {
        store.refresh().unwrap();
        let mut blocking = store.subscribe_union(Positions::new()).unwrap();
        let mut nonblocking = store.subscribe_union(Positions::new()).unwrap();
        let mut seen = Vec::new();
        drain(&mut blocking, &mut seen);
        drain(&mut nonblocking, &mut seen);
        assert_eq!(seen.len(), 4, "both subscriptions saw both shards");
        // A shard that cannot be read (a foreign VERSION) fails the refresh.
        let bad = dir.path().join("shards/2");
        std::fs::create_dir_all(&bad).unwrap();
        std::fs::write(bad.join("VERSION"), b"not a version\n\0\0\0").unwrap();
        assert!(store.refresh().is_err(), "the shard cannot be read");
        assert!(matches!(
            blocking.try_next(),
            Err(Error::ProjectionStalled { .. })
        ));
        store.close().unwrap();
        let rx = blocked_next(blocking);
        match rx.recv_timeout(LIVENESS) {
            Ok(Err(Error::Closed)) => {}
            other => panic!("blocking: expected Closed, got {other:?}"),
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match runtime.block_on(nonblocking.next()) {
            Err(Error::Closed) => {}
            other => panic!("async: expected Closed, got {other:?}"),
        }
        std::fs::remove_dir_all(&bad).unwrap();
    }
}

/// Suspected silent omission: a shard whose `DURABLE` file is damaged (32
/// zero bytes: a sector lost) is read as "nothing of the last segment is
/// durable" with only a log line, so every reader leaves out that
/// segment's acknowledged events without an error, where a shard that
/// cannot be read fails the union readers and `stats` (DESIGN: "a union
/// reader never passes over a shard unawares"). A reader that had already
/// folded them keeps counting them in `stats` while its union no longer
/// lists them.
/// Read-only readers report the damage; a writer store that looks at the
/// shard (no writer holds it) settles it, rewriting the file, after which
/// every reader answers exactly again.
#[test]
fn a_damaged_durable_file_in_a_shard_is_an_error_not_a_silent_omission() {
    let dir = tempfile::tempdir().unwrap();
    let root = Store::open(dir.path(), manual_small()).unwrap();
    let peer = Store::open(dir.path(), manual_small()).unwrap();
    for i in 0..5 {
        peer.record_blocking(event(1, i)).unwrap();
    }
    peer.close().unwrap();
    drop(peer);
    let reader = Store::builder(dir.path())
        .options(manual_small())
        .open_read_only()
        .unwrap();
    reader.refresh().unwrap();
    let count = |store: &Store| -> Result<(u64, usize), Error> {
        let stats: u64 = store.stats_all(None)?.iter().map(|s| s.total_count).sum();
        let union = store.replay_union(&Positions::new())?.count();
        Ok((stats, union))
    };
    assert_eq!(count(&reader).unwrap(), (5, 5));
    let durable = dir.path().join("shards/1/DURABLE");
    std::fs::write(&durable, [0u8; 32]).unwrap();
    // The refresh that meets the damage says so, naming the file.
    match reader.refresh() {
        Err(Error::Corruption { path, .. }) => assert_eq!(path, durable),
        other => panic!("a refresh over a damaged DURABLE: {other:?}"),
    }
    let fresh = Store::open_read_only(dir.path()).unwrap();
    let answers = [
        ("the reader that folded them", count(&reader)),
        ("a new reader", count(&fresh)),
    ];
    let wrong: Vec<String> = answers
        .into_iter()
        .filter_map(|(who, answer)| match answer {
            Err(_) | Ok((5, 5)) => None,
            Ok(other) => Some(format!("{who}: (stats, union) = {other:?}")),
        })
        .collect();
    assert!(wrong.is_empty(), "not (5, 5) and no error: {wrong:?}");
    // A writer store's look settles the shard (its recovery open rewrites
    // the file): every reader is exact again.
    root.refresh().unwrap();
    assert_eq!(count(&root).unwrap(), (5, 5));
    reader.refresh().unwrap();
    assert_eq!(count(&reader).unwrap(), (5, 5));
    fresh.refresh().unwrap();
    assert_eq!(count(&fresh).unwrap(), (5, 5));
}

/// The class of the above on a store's own log: a read-only open over a
/// damaged `DURABLE` (zeros, cut short, empty) fails naming the file, a
/// refresh over it fails and keeps every event it showed, a missing file
/// (a store from a release before it) is still read, and the writer's
/// next open rewrites a damaged one, after which readers go on.
#[test]
fn a_damaged_durable_file_fails_read_only_opens_and_refreshes_and_shrinks_no_view() {
    let dir = tempfile::tempdir().unwrap();
    let durable = dir.path().join("DURABLE");
    let writer = Store::open(dir.path(), manual_small()).unwrap();
    for i in 0..40 {
        writer.record_blocking(event(0, i)).unwrap();
    }
    writer.close().unwrap();
    drop(writer);
    let valid = std::fs::read(&durable).unwrap();
    let reader = Store::builder(dir.path())
        .options(manual_small())
        .open_read_only()
        .unwrap();
    let shown = |store: &Store| store.replay(0).unwrap().filter(Result::is_ok).count();
    assert_eq!(shown(&reader), 40);
    let damages: [(&str, Vec<u8>); 4] = [
        ("zeros", vec![0u8; 32]),
        ("one bit flipped", {
            let mut v = valid.clone();
            v[13] ^= 0x10;
            v
        }),
        ("cut short", valid[..31].to_vec()),
        ("empty", Vec::new()),
    ];
    for (what, bytes) in damages {
        std::fs::write(&durable, &bytes).unwrap();
        match reader.refresh() {
            Err(Error::Corruption { path, .. }) => assert_eq!(path, durable, "{what}"),
            other => panic!("{what}: a refresh over a damaged DURABLE: {other:?}"),
        }
        assert_eq!(shown(&reader), 40, "{what}: the view shrank");
        match Store::open_read_only(dir.path()) {
            Err(Error::Corruption { path, .. }) => assert_eq!(path, durable, "{what}"),
            Err(other) => panic!("{what}: a read-only open over a damaged DURABLE: {other}"),
            Ok(_) => panic!("{what}: a read-only open over a damaged DURABLE succeeded"),
        }
    }
    std::fs::remove_file(&durable).unwrap();
    let old_release = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(shown(&old_release), 40, "a store without DURABLE");
    std::fs::write(&durable, [0u8; 32]).unwrap();
    let writer = Store::open(dir.path(), manual_small()).unwrap();
    writer.record_blocking(event(0, 40)).unwrap();
    reader.refresh().unwrap();
    assert_eq!(shown(&reader), 41, "after the writer rewrote DURABLE");
    writer.close().unwrap();
}

/// Suspected transient shrink: a reader racing the writer's 32-byte
/// `pwrite` of `DURABLE` retries three times, then reads the file as
/// "nothing of the last segment is durable", and a refresh then installs a
/// view without the last segment's events. One refreshing thread only
/// (no refresh race): a view that goes back comes from that fallback.
#[test]
fn a_single_refresher_never_sees_the_durable_end_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let writer = Store::open(dir.path(), StoreOptions::default()).unwrap();
    writer.record_blocking(event(0, 0)).unwrap();
    let reader = Store::builder(dir.path())
        .options(manual_small())
        .open_read_only()
        .unwrap();
    let w = std::thread::spawn(move || {
        for i in 1..6000 {
            writer
                .record_blocking(
                    Event::new("t", "r", Action::Blocked).with_run_id(format!("run-0-{i}")),
                )
                .unwrap();
        }
        writer.close().unwrap();
    });
    let mut highest = 0;
    let mut went_back = Vec::new();
    while !w.is_finished() {
        reader.refresh().unwrap();
        let now = reader.next_offset();
        if now < highest {
            went_back.push((highest, now));
        }
        highest = highest.max(now);
    }
    w.join().unwrap();
    assert!(
        went_back.is_empty(),
        "{} times, first {:?}",
        went_back.len(),
        went_back.first()
    );
}

/// Suspected lost wake-up or skip on the read-only side when the root
/// changes hands: a read-only store's union subscriber, woken only by the
/// background refresher (no `refresh` calls), follows the root through
/// three writer generations (each rolls segments, the next reopens the
/// same directory) and gets every acknowledged event once.
#[test]
fn read_only_union_subscriber_follows_the_root_through_writer_generations() {
    let dir = tempfile::tempdir().unwrap();
    // A read-only store needs a store: the first writer makes it.
    let first = Store::open(dir.path(), manual_small()).unwrap();
    let reader = Store::builder(dir.path())
        .options(StoreOptions {
            shard_refresh_interval: Duration::from_millis(10),
            ..manual_small()
        })
        .open_read_only()
        .unwrap();
    let mut sub = reader.subscribe_union(Positions::new()).unwrap();
    let mut acked = BTreeSet::new();
    let mut writer = Some(first);
    for generation in 0..3u64 {
        let store = writer
            .take()
            .unwrap_or_else(|| Store::open(dir.path(), manual_small()).unwrap());
        assert_eq!(store.shard(), 0);
        for i in 0..25 {
            store.record_blocking(event(generation, i)).unwrap();
            acked.insert(format!("run-{generation}-{i}"));
        }
        store.close().unwrap();
    }
    let (tx, rx) = mpsc::channel();
    let want = acked.len();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < want {
            match sub.next_blocking() {
                Ok(UnionDelivery::Entry(e)) => got.push(e),
                Ok(UnionDelivery::Lagging { .. }) => {}
                Err(e) => panic!("next_blocking: {e}"),
            }
        }
        let _ = tx.send(got);
    });
    let got = rx
        .recv_timeout(LIVENESS)
        .expect("the subscriber never got every event (a lost wake-up)");
    assert_once_dense(&got);
    let seen: BTreeSet<String> = got.iter().filter_map(run_id).collect();
    assert_eq!(seen, acked);
}

/// Suspicion S1: `refresh::extend_active` refuses to extend only when no
/// durable end is published *now*; a view built when none was (a store
/// last written by a release before `DURABLE`) read every complete batch,
/// durable or not, and once a writer of this release publishes an end, the
/// refresh keeps those bytes as read and reads on past them. If they were
/// replaced in between (that old writer's fsync failed, it cut the batch
/// and wrote another of the same length, as every release does after a
/// failed fsync), the reader keeps a record that never was durable, where
/// a full reopen reads the one on disk. Simulated by hand: `DURABLE`
/// removed (the old release), the last batch rewritten in place.
/// Refuted: a view holds positions, not bytes, so records are read from
/// the file as it is now; a batch replaced by one of another length or
/// offset fails the extension's decode where the view ended (a full
/// reopen follows), and an end below the view's is refused.
#[test]
fn a_view_built_without_a_durable_end_is_not_extended_over_bytes_that_changed() {
    use enforcelog::{Durability, Log, Record};
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        durability: Durability::Fsync,
        ..LogOptions::default()
    };
    let payload = |tag: u8, i: u64| {
        let mut p = vec![0u8; 700];
        p[..8].copy_from_slice(&i.to_le_bytes());
        p[8] = tag;
        p
    };
    let writer = Log::open(dir.path(), options.clone()).unwrap();
    for i in 0..10 {
        writer
            .append_blocking(Record::new(1_000 + i as i64, payload(b'a', i)))
            .unwrap();
    }
    writer.close().unwrap();
    drop(writer);
    std::fs::remove_file(dir.path().join("DURABLE")).unwrap();
    let reader = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.next_offset(), 10);
    // The old writer's failed fsync: record 9 cut and written again.
    let segment = dir.path().join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    // Written again as that writer would: chained after record 8's batch
    // (the `prev` the original record 9 stores), so only its bytes change.
    let bytes = std::fs::read(&segment).unwrap();
    let mut pos = enforcelog::format::SEGMENT_HEADER_LEN;
    let mut prev = None;
    while pos < bytes.len() {
        let view = enforcelog::format::decode_batch(&bytes[pos..], None).unwrap();
        prev = view.prev();
        pos += view.len();
    }
    let mut batch = Vec::new();
    enforcelog::format::encode_chained_batch(
        &mut batch,
        9,
        &[Record::new(1_009, payload(b'b', 9))],
        &prev.expect("a chained log"),
    );
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .unwrap();
        file.write_all_at(&batch, len - batch.len() as u64).unwrap();
        file.sync_all().unwrap();
    }
    // A writer of this release opens (publishing DURABLE) and records on.
    let writer = Log::open(dir.path(), options).unwrap();
    writer
        .append_blocking(Record::new(1_010, payload(b'a', 10)))
        .unwrap();
    writer.close().unwrap();
    reader.refresh().unwrap();
    let read = |log: &Log| -> Vec<Vec<u8>> {
        log.read_from(0)
            .unwrap()
            .map(|r| r.unwrap().payload)
            .collect()
    };
    let fresh = Log::open_read_only(dir.path()).unwrap();
    assert_eq!(read(&fresh)[9][8], b'b');
    assert!(
        read(&reader) == read(&fresh),
        "the refreshed reader's record 9 is the one replaced"
    );
}
