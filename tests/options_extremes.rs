//! Every option of `LogOptions` and `StoreOptions`, at zero and at its
//! type's maximum, is either refused at open with `Error::InvalidOptions`
//! naming that option, or works: the store opens, records (blocking and
//! detached), answers `stats`, closes and reopens. Before, a maximal
//! `detached_timeout` panicked inside `record_detached` and a maximal
//! `recovery_interval` killed the supervisor thread silently.
//!
//! A zero `detached_timeout` means "try once, never wait": the event is
//! recorded when the queue has room and dropped (and counted) when not.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::options::{extremes, Expect};
use enforcelog::storage::sim::SimStorage;
use enforcelog::{Action, Entry, Error, Event, Log, LogOptions, Record, Store, StoreOptions};

fn event(n: u64) -> Event {
    Event::new("acme", "no-prod-writes", Action::Blocked).with_details(enforcelog::details!({
        "n": n,
        "histogram": [0, 0, 0, 0, 0, 0, 0, 0],
        "nested": {"a": {"b": {"c": {"d": [0, {"e": null}]}}}},
        "blob": "\u{0}".repeat(256),
    }))
}

/// Opens a store (and a bare log) with `options`; records, reads back,
/// closes and reopens. Returns the open error, if any.
fn exercise(case: &str, options: &StoreOptions) -> Result<(), Error> {
    let storage = Arc::new(SimStorage::new(11));
    // The log alone checks its own options the same way.
    let log_result = Log::open_with_storage(storage.clone(), "/log", options.log.clone());
    let store = match Store::builder("/store")
        .storage(storage.clone())
        .options(options.clone())
        .open()
    {
        Ok(store) => store,
        Err(e) => {
            if let Error::InvalidOptions { name, .. } = &e {
                if let Err(Error::InvalidOptions { name: log_name, .. }) = &log_result {
                    assert_eq!(log_name, name, "{case}: the log names another option");
                } else if options.log.validate().is_err() {
                    panic!("{case}: the log accepted options its validation refuses");
                }
            }
            return Err(e);
        }
    };
    let log = log_result.unwrap_or_else(|e| panic!("{case}: the log refused: {e}"));
    log.append_blocking(Record::new(1, vec![0; 512])).unwrap();
    log.close().unwrap();

    store.record_blocking(event(0)).unwrap();
    store.record_detached(event(1));
    let stats = store.stats("acme", "no-prod-writes", None).unwrap();
    assert!(stats.trigger_count >= 1, "{case}: {stats:?}");
    // A subscription works with the lag option at either extreme.
    let mut subscription = store.subscribe(0).unwrap();
    assert!(subscription.next_blocking().is_ok(), "{case}");
    store.close().unwrap();
    let metrics = store.metrics();
    drop(store);

    let reopened = Store::builder("/store")
        .storage(storage)
        .options(options.clone())
        .open()
        .unwrap();
    let events = reopened
        .entries(0)
        .unwrap()
        .filter(|e| matches!(e, Ok(Entry::Event(_))))
        .count() as u64;
    // Every detached event is recorded or counted as dropped.
    assert_eq!(events + metrics.dropped, 2, "{case}: {metrics:?}");
    reopened.close().unwrap();
    Ok(())
}

#[test]
fn every_option_at_zero_and_max_is_refused_by_name_or_works() {
    for case in extremes() {
        // An option outside its range must be refused before anything is
        // touched, and must never panic (a panic fails this test too).
        let result = exercise(case.label, &case.options);
        match (case.expect, result) {
            (Expect::Works, Ok(())) => {}
            (Expect::Refused, Err(Error::InvalidOptions { name: got, reason })) => {
                assert_eq!(
                    got, case.field,
                    "{}: refused as {got}: {reason}",
                    case.label
                );
                assert!(!reason.is_empty(), "{}", case.label);
            }
            (expect, got) => panic!("{}: expected {expect:?}, got {got:?}", case.label),
        }
    }
}

/// With `detached_timeout = 0` the call tries once: the event is recorded
/// when the queue has room; when the queue is full (a writer held up in a
/// slow fsync behind a one-slot queue) it is dropped and counted, never
/// waited for. Either way every event is accounted for exactly.
#[test]
fn zero_detached_timeout_records_when_the_queue_has_room_and_counts_a_drop_when_full() {
    let storage = SimStorage::new(3);
    let options = StoreOptions {
        detached_timeout: Duration::ZERO,
        log: LogOptions {
            queue_capacity: 1,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    let store = Store::builder("/s")
        .storage(Arc::new(storage.clone()))
        .options(options.clone())
        .open()
        .unwrap();

    // Room in the queue: recorded.
    store.record_detached(event(0));
    store.close().unwrap();
    let metrics = store.metrics();
    assert_eq!((metrics.recorded, metrics.dropped), (1, 0));
    drop(store);

    // A full queue: the writer sits in a slow fsync with one more event
    // queued; the rest of a burst cannot be queued and is dropped.
    let store = Store::builder("/s")
        .storage(Arc::new(storage.clone()))
        .options(options.clone())
        .open()
        .unwrap();
    storage.set_sync_delay(Duration::from_millis(300));
    const BURST: u64 = 200;
    for n in 1..=BURST {
        store.record_detached(event(n));
    }
    store.close().unwrap();
    storage.set_sync_delay(Duration::ZERO);
    let metrics = store.metrics();
    drop(store);
    assert!(metrics.dropped >= 1, "{metrics:?}");

    let reopened = Store::builder("/s")
        .storage(Arc::new(storage))
        .options(options)
        .open()
        .unwrap();
    let (mut events, mut gap) = (0u64, 0u64);
    for entry in reopened.entries(0).unwrap() {
        match entry.unwrap() {
            Entry::Event(_) => events += 1,
            Entry::Gap(marker) => gap += marker.dropped,
            Entry::Lost(lost) => panic!("no damage here, yet a hole: {lost:?}"),
        }
    }
    assert_eq!(events, 1 + metrics.recorded, "{metrics:?}");
    assert_eq!(metrics.recorded + metrics.dropped, BURST, "{metrics:?}");
    // The drops were written as gap markers (the last one at close).
    assert_eq!(gap, metrics.dropped, "{metrics:?}");
}
