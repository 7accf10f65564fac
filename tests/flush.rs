//! `Store::flush`: read-your-writes for the fire-and-forget path. When it
//! returns, every event recorded before it is durable (whatever the
//! durability mode) or counted as dropped; nothing is still in flight.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::{Action, Durability, Error, Event, Query, Store, StoreOptions};

const DIR: &str = "/store";

fn options(durability: Durability) -> StoreOptions {
    let mut options = StoreOptions::default();
    options.log.durability = durability;
    // Rolls inside the run, so flushes meet sealed and active segments.
    options.log.segment_max_bytes = 64 << 10;
    options.log.record_max_bytes = 16 << 10;
    options
}

/// Events with details that look like real ones (zero runs included), so a
/// lost tail cannot hide behind zero-filled sectors.
fn event(i: u64) -> Event {
    Event::new(
        format!("tenant-{}", i % 3),
        format!("rule-{}", i % 7),
        Action::Blocked,
    )
    .with_run_id(format!("run-{i}"))
    .with_details(enforcelog::details!({"step": i, "histogram": vec![0u8; (i % 40) as usize]}))
}

fn modes() -> [Durability; 3] {
    [
        Durability::Fsync,
        Durability::Interval(Duration::from_secs(3600)),
        Durability::None,
    ]
}

/// Records `n` events detached from `threads` threads, then flushes.
fn record_detached_then_flush(store: &Store, n: u64, threads: u64) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                for i in (t..n).step_by(threads as usize) {
                    store.record_detached(event(i));
                }
            });
        }
    });
    store.flush_blocking().expect("flush");
}

#[test]
fn after_flush_every_detached_event_is_counted_visible_and_survives_a_power_cut() {
    for durability in modes() {
        let storage = Arc::new(SimStorage::new(11));
        let store = Store::builder(DIR)
            .storage(storage.clone())
            .options(options(durability))
            .open()
            .expect("open");
        let n = 2_000;
        record_detached_then_flush(&store, n, 4);

        let metrics = store.metrics();
        assert_eq!(
            (metrics.recorded, metrics.dropped),
            (n, 0),
            "{durability:?}: flush returned with events still in flight"
        );
        let mut seen = 0;
        for tenant in 0..3 {
            let page = store
                .query(&Query::tenant(format!("tenant-{tenant}")).limit(10_000))
                .expect("query");
            seen += page.events.len() as u64;
        }
        assert_eq!(seen, n, "{durability:?}: a flushed event is not visible");

        // A power cut right after the flush, without a close: what the
        // flush acknowledged is on disk. (A writer reopens, as a host
        // would: a read-only open after a power cut stops at the durable
        // end last fsynced, which may be short until a writer recovers.)
        std::mem::forget(store);
        storage.crash(CrashMode::LoseUnsynced);
        storage.clear_faults();
        let reopened = Store::builder(DIR)
            .storage(storage.clone())
            .options(options(durability))
            .open()
            .expect("reopen");
        assert_eq!(
            reopened.next_offset(),
            n,
            "{durability:?}: flushed events were lost by a power cut"
        );
    }
}

#[test]
fn a_reader_in_another_process_sees_what_was_flushed() {
    // Read-only opens stop at the durable end the writer publishes; under
    // `None` that end moves only when something syncs, and flush does.
    for durability in modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), options(durability)).expect("open");
        record_detached_then_flush(&store, 500, 2);
        let reader = Store::open_read_only(dir.path()).expect("read-only open");
        assert_eq!(reader.next_offset(), 500, "{durability:?}");
        store.record_detached(event(500));
        store.flush_blocking().expect("flush");
        reader.refresh().expect("refresh");
        assert_eq!(reader.next_offset(), 501, "{durability:?}");
    }
}

#[test]
fn flush_after_a_failed_fsync_reports_it_and_every_event_is_counted_as_dropped() {
    let storage = Arc::new(SimStorage::new(12));
    let store = Store::builder(DIR)
        .storage(storage.clone())
        .options(options(Durability::None))
        .open()
        .expect("open");
    for i in 0..100 {
        store.record_detached(event(i));
    }
    storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
    let flushed = store.flush_blocking();
    assert!(
        matches!(flushed, Err(Error::Poisoned { .. }) | Err(Error::Io { .. })),
        "a flush whose fsync failed must say so: {flushed:?}"
    );
    let metrics = store.metrics();
    assert_eq!(
        metrics.recorded + metrics.dropped,
        100,
        "every event recorded before the flush is either recorded or dropped: {metrics:?}"
    );
    drop(store);
}

#[test]
fn flush_waits_for_the_fsync_it_asks_for() {
    let storage = Arc::new(SimStorage::new(13));
    let store = Store::builder(DIR)
        .storage(storage.clone())
        .options(options(Durability::None))
        .open()
        .expect("open");
    store.record_detached(event(0));
    let before = storage.sync_count();
    store.flush_blocking().expect("flush");
    assert!(
        storage.sync_count() > before,
        "under `None` a flush must fsync the bytes it acknowledges"
    );
    // Nothing new: a second flush finds nothing to sync.
    let after = storage.sync_count();
    store.flush_blocking().expect("flush");
    assert_eq!(storage.sync_count(), after, "an idle flush synced anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_flush_gives_read_your_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options(Durability::None)).expect("open");
    for i in 0..300 {
        store.record_detached(event(i));
    }
    store.flush().await.expect("flush");
    assert_eq!(store.metrics().recorded, 300);
    let stats = store.stats("tenant-0", "rule-0", None).expect("stats");
    let expected = (0..300u64).filter(|i| i % 3 == 0 && i % 7 == 0).count() as u64;
    assert_eq!(stats.total_count, expected);
}

#[test]
fn flush_is_refused_where_nothing_can_be_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options(Durability::Fsync)).expect("open");
    store.record_blocking(event(0)).expect("record");
    let reader = Store::open_read_only(dir.path()).expect("read-only open");
    assert!(matches!(reader.flush_blocking(), Err(Error::ReadOnly)));
    store.close().expect("close");
    assert!(matches!(store.flush_blocking(), Err(Error::Closed)));
    assert!(Path::new(dir.path()).exists());
}
