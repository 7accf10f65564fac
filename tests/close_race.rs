//! Closing one log from several threads at once never hangs: one close does
//! the work, the others wait for it and return.

use std::sync::Arc;
use std::time::Duration;

use enforcelog::storage::sim::{FaultKind, FaultOp, SimStorage};
use enforcelog::{Durability, Log, LogOptions, Record};

#[test]
fn concurrent_closes_of_a_poisoned_log_all_return() {
    for round in 0..200u64 {
        let storage = SimStorage::new(round);
        let options = LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        };
        let log = Log::open_with_storage(Arc::new(storage.clone()), "/log", options).unwrap();
        log.append_blocking(Record::new(1, b"kept".to_vec()))
            .unwrap();
        if round % 2 == 0 {
            storage.inject(FaultOp::SyncData, 0, FaultKind::Io, true);
            assert!(log
                .append_blocking(Record::new(2, b"lost".to_vec()))
                .is_err());
        }
        let (done, finished) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let log = log.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let _ = log.close();
                let _ = done.send(());
            });
        }
        for closer in 0..3 {
            finished
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("round {round}: close {closer} hangs"));
        }
        assert!(log
            .append_blocking(Record::new(3, b"after".to_vec()))
            .is_err());
    }
}

/// What one appender saw: offsets acknowledged, and whether anything but
/// `Closed` came back.
#[derive(Default)]
struct Seen {
    acknowledged: Vec<u64>,
    unexpected: Vec<String>,
}

/// A payload that looks like a real event: runs of zeros, nesting bytes.
fn payload(thread: u64, i: u64) -> Vec<u8> {
    let mut p = vec![0x82, 0xa1, b't', thread as u8, 0xa1, b'i'];
    p.extend_from_slice(&i.to_le_bytes());
    p.extend(std::iter::repeat_n(0u8, 64 + (i % 200) as usize));
    p.extend(std::iter::repeat_n(0x91, 16));
    p
}

/// Waits for `count` reports on `finished`, turning a hang into a failure.
fn watchdog(finished: &std::sync::mpsc::Receiver<()>, count: usize, what: &str) {
    for n in 0..count {
        finished
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{what}: participant {n} of {count} never returned"));
    }
}

/// Blocking, async and detached appends race `close()`: every one is
/// answered (acknowledged or `Closed`), every detached callback runs, the
/// lock is free as soon as `close` returns, and exactly the acknowledged
/// records are in the log. On the old writer, requests queued behind the
/// close were never answered: blocking appends hung, callbacks vanished.
#[test]
fn appends_racing_close_are_all_answered() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    for round in 0..40u64 {
        let storage = Arc::new(SimStorage::new(round));
        let options = LogOptions {
            durability: Durability::Fsync,
            queue_capacity: 1 + (round % 8) as usize,
            ..LogOptions::default()
        };
        let log = Log::open_with_storage(storage.clone(), "/log", options.clone()).unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let detached_queued = Arc::new(AtomicU64::new(0));
        let detached_answered = Arc::new(AtomicU64::new(0));
        let (done, finished) = std::sync::mpsc::channel();
        let (started, first_acks) = std::sync::mpsc::channel::<()>();
        let note = |seen: &Mutex<Seen>, result: enforcelog::Result<std::ops::Range<u64>>| -> bool {
            let mut seen = seen.lock().unwrap();
            match result {
                Ok(range) => {
                    seen.acknowledged.extend(range);
                    true
                }
                Err(enforcelog::Error::Closed) => false,
                Err(e) => {
                    seen.unexpected.push(e.to_string());
                    false
                }
            }
        };
        let participants = 6;
        for t in 0..participants as u64 {
            let log = log.clone();
            let seen = seen.clone();
            let done = done.clone();
            let started = started.clone();
            let queued = detached_queued.clone();
            let answered = detached_answered.clone();
            let handle = runtime.handle().clone();
            std::thread::spawn(move || {
                for i in 0.. {
                    let record = Record::new(i as i64, payload(t, i));
                    let more = match t % 3 {
                        0 => note(&seen, log.append_batch_blocking(vec![record])),
                        1 => note(&seen, handle.block_on(log.append_batch(vec![record]))),
                        _ => {
                            let seen_cb = seen.clone();
                            let answered = answered.clone();
                            let callback: enforcelog::log::AppendCallback =
                                Box::new(move |result| {
                                    let mut seen = seen_cb.lock().unwrap();
                                    match result {
                                        Ok(range) => seen.acknowledged.extend(range),
                                        Err(enforcelog::Error::Closed) => {}
                                        Err(e) => seen.unexpected.push(e.to_string()),
                                    }
                                    drop(seen);
                                    answered.fetch_add(1, Ordering::SeqCst);
                                });
                            let deadline = std::time::Instant::now() + Duration::from_millis(50);
                            match log.append_batch_detached(vec![record], deadline, callback) {
                                Ok(()) => {
                                    queued.fetch_add(1, Ordering::SeqCst);
                                    true
                                }
                                Err(enforcelog::Error::Closed) => false,
                                Err(enforcelog::Error::QueueFull) => true,
                                Err(e) => {
                                    seen.lock().unwrap().unexpected.push(e.to_string());
                                    false
                                }
                            }
                        }
                    };
                    if i == 20 {
                        let _ = started.send(());
                    }
                    if !more {
                        break;
                    }
                }
                let _ = started.send(());
                // The last handle's drop joins the writer, once every
                // request is answered: drop this one before reporting.
                drop(log);
                let _ = done.send(());
            });
        }
        // Close once every participant is well under way.
        for _ in 0..participants {
            first_acks.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        {
            let log = log.clone();
            let storage = storage.clone();
            let done = done.clone();
            let options = options.clone();
            std::thread::spawn(move || {
                log.close().unwrap();
                // The lock is released by the time close returns, although
                // the old handles are still appending.
                let reopened = Log::open_with_storage(storage, "/log", options).unwrap();
                reopened.close().unwrap();
                drop(log);
                let _ = done.send(());
            });
        }
        watchdog(&finished, participants + 1, &format!("round {round}"));
        // The last handle: its drop joins the writer thread.
        drop(log);
        // Every detached append that was queued got its callback.
        assert_eq!(
            detached_answered.load(Ordering::SeqCst),
            detached_queued.load(Ordering::SeqCst),
            "round {round}: detached callbacks lost"
        );
        let seen = seen.lock().unwrap();
        assert!(
            seen.unexpected.is_empty(),
            "round {round}: {:?}",
            seen.unexpected
        );
        let mut acknowledged = seen.acknowledged.clone();
        acknowledged.sort_unstable();
        let reopened = Log::open_with_storage(storage.clone(), "/log", options).unwrap();
        // Exactly the acknowledged offsets are in the log, nothing else.
        let expected: Vec<u64> = (0..reopened.next_offset()).collect();
        assert_eq!(acknowledged, expected, "round {round}");
        assert_eq!(
            reopened.read_from(0).unwrap().count() as u64,
            reopened.next_offset()
        );
    }
}

/// `record_detached` and `record_blocking` race `Store::close`: every call
/// returns, and every detached event ends either in the log (seen after a
/// reopen) or counted in `metrics().dropped`, exactly; the dropped ones are
/// in gap markers or still pending. On the old writer, events queued behind
/// the log's close were neither recorded nor counted.
#[test]
fn detached_events_racing_store_close_are_recorded_or_counted() {
    use enforcelog::{Action, Entry, Event, Store, StoreOptions};

    const DETACHED_THREADS: u64 = 4;
    const PER_THREAD: u64 = 400;
    for round in 0..12u64 {
        let storage = Arc::new(SimStorage::new(round));
        let options = StoreOptions {
            log: LogOptions {
                queue_capacity: 2 + (round % 4) as usize * 16,
                ..LogOptions::default()
            },
            detached_timeout: Duration::from_millis(20),
            ..StoreOptions::default()
        };
        let store = Store::builder("/store")
            .storage(storage.clone())
            .options(options.clone())
            .open()
            .unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let (started, under_way) = std::sync::mpsc::channel::<()>();
        let event = |tenant: &str, n: u64| {
            Event::new(tenant, format!("rule-{}", n % 3), Action::Blocked).with_details(
                enforcelog::details!({
                    "n": n,
                    "histogram": vec![0u8; 48],
                    "nested": {"a": {"b": {"c": [0, 0, {"d": null}]}}},
                }),
            )
        };
        for t in 0..DETACHED_THREADS {
            let store = store.clone();
            let done = done.clone();
            let started = started.clone();
            std::thread::spawn(move || {
                for n in 0..PER_THREAD {
                    store.record_detached(event("detached", t * PER_THREAD + n));
                    if n == 50 {
                        let _ = started.send(());
                    }
                }
                let _ = done.send(());
            });
        }
        let blocking_acknowledged = {
            let store = store.clone();
            let done = done.clone();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut acknowledged = 0u64;
                let mut unexpected = Vec::new();
                for n in 0.. {
                    match store.record_blocking(event("blocking", n)) {
                        Ok(_) => acknowledged += 1,
                        Err(enforcelog::Error::Closed) => break,
                        Err(e) => {
                            unexpected.push(e.to_string());
                            break;
                        }
                    }
                }
                let _ = tx.send((acknowledged, unexpected));
                let _ = done.send(());
            });
            rx
        };
        for _ in 0..DETACHED_THREADS {
            under_way.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        {
            let store = store.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                store.close().unwrap();
                let _ = done.send(());
            });
        }
        watchdog(
            &finished,
            DETACHED_THREADS as usize + 2,
            &format!("round {round}"),
        );
        let (blocking_acked, unexpected) = blocking_acknowledged.recv().unwrap();
        assert!(unexpected.is_empty(), "round {round}: {unexpected:?}");
        let metrics = store.metrics();
        drop(store);

        let reopened = Store::builder("/store")
            .storage(storage.clone())
            .options(options)
            .open()
            .unwrap();
        let (mut detached_in_log, mut blocking_in_log, mut gap_in_log) = (0u64, 0u64, 0u64);
        for entry in reopened.entries(0).unwrap() {
            match entry.unwrap() {
                Entry::Event(e) if e.tenant_id == "detached" => detached_in_log += 1,
                Entry::Event(_) => blocking_in_log += 1,
                Entry::Gap(gap) => gap_in_log += gap.dropped,
                Entry::Lost(lost) => panic!("no damage here, yet a hole: {lost:?}"),
            }
        }
        let attempted = DETACHED_THREADS * PER_THREAD;
        assert_eq!(
            detached_in_log + metrics.dropped,
            attempted,
            "round {round}: {detached_in_log} recorded + {} dropped",
            metrics.dropped
        );
        assert_eq!(blocking_in_log, blocking_acked, "round {round}");
        assert_eq!(
            metrics.recorded,
            detached_in_log + blocking_in_log,
            "round {round}"
        );
        assert_eq!(
            gap_in_log + metrics.dropped_pending_gap,
            metrics.dropped,
            "round {round}"
        );
    }
}
