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
