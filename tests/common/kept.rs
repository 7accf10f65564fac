//! What the reviews of the kept Merkle tree (`tests/review_findings36.rs`
//! to `39`) build their logs and stores from: real-looking events, tagged
//! payloads, logs of small segments written in batches of 10, and which
//! history a proved root belongs to.

use std::path::Path;

use enforcelog::audit::merkle::{self, Hash};
use enforcelog::{Action, Event, Log, LogOptions, Record, StoreOptions};

/// A real-looking event: details with a run of zero counts, a run id.
pub fn event(i: u64) -> Event {
    Event::new(
        format!("tenant-{}", i % 5),
        format!("rule-{}", i % 11),
        Action::ALL[(i % 4) as usize],
    )
    .with_run_id(format!("run-{}", i / 7))
    .with_details(
        enforcelog::details!({"step": i, "zeros": [0, 0, 0, 0, 0, 0], "note": "\u{200b}"}),
    )
}

/// `len` bytes: `i` (little-endian), `tag`, then zeros.
pub fn payload(tag: u8, i: u64, len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[..8].copy_from_slice(&i.to_le_bytes());
    p[8] = tag;
    p
}

/// Log options whose segments roll every 8 KiB.
pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_max_bytes: 8 << 10,
        record_max_bytes: 2 << 10,
        ..LogOptions::default()
    }
}

/// Store options over [`small_segments`].
pub fn store_options() -> StoreOptions {
    StoreOptions {
        log: small_segments(),
        ..StoreOptions::default()
    }
}

/// Writes batches of 10 records `from..to` (payload tagged `tag`,
/// timestamp = offset) to the log in `dir`.
pub fn write_log(dir: &Path, options: &LogOptions, tag: u8, from: u64, to: u64) {
    let writer = Log::open(dir, options.clone()).unwrap();
    assert_eq!(writer.next_offset(), from);
    for chunk in from / 10..to / 10 {
        writer
            .append_batch_blocking(
                (chunk * 10..chunk * 10 + 10)
                    .map(|i| Record::new(i as i64, payload(tag, i, 200)))
                    .collect(),
            )
            .unwrap();
    }
    writer.close().unwrap();
}

/// Which history `root` is the root of: the log as it is (`after`), or as
/// it was before a repair (`before`).
pub fn describe(root: Hash, before: &[Hash], after: &[Hash]) -> &'static str {
    if root == merkle::root(after) {
        "the log as it is"
    } else if root == merkle::root(before) {
        "the records before the repair"
    } else {
        "unknown"
    }
}
