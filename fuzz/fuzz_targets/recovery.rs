//! Recovery over arbitrary bytes of a segment file: open either fails with a
//! clear error or yields a log whose records all read back and verify clean.
#![no_main]

use std::sync::Arc;

use enforcelog::storage::sim::SimStorage;
use enforcelog::{Durability, Log, LogOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let storage = SimStorage::new(0);
    storage.write_file("/log/VERSION", b"enforcelog-log 1\n");
    storage.write_file("/log/00000000000000000000.log", data);
    let options = LogOptions {
        durability: Durability::None,
        ..LogOptions::default()
    };
    let Ok(log) = Log::open_with_storage(Arc::new(storage), "/log", options) else {
        return;
    };
    let next = log.next_offset();
    let mut count = 0u64;
    for record in log.read_from(0).expect("offset 0 is always readable") {
        let record = record.expect("a recovered log reads back");
        assert_eq!(record.offset, count);
        count += 1;
    }
    assert_eq!(count, next);
    assert!(log.verify().expect("verify runs").is_clean());
});
