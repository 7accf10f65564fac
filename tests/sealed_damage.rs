//! Damage in a sealed segment of a multi-tenant store fails neither the
//! other tenants nor recording (issue 13, finding H).
//!
//! One flipped bit in one tenant's event in a sealed segment used to make
//! every other tenant's `query` fail with `Corruption` (the reader stopped
//! at the damage), and, with the segment's index file missing (index files
//! are not fsynced: a crash right after a roll leaves none), every writer
//! open was refused. Now the damaged batch reads as a hole of lost entries:
//! every other event is returned and counted as before, the answer says it
//! is incomplete (`QueryPage::lost`), the writer records on, `verify`
//! still reports the damage and the damaged file is never changed.
//!
//! Each case runs on a fresh copy of a pristine store's log files (no
//! projection checkpoints, so the statistics are replayed from the damaged
//! log), flips one bit of a sealed segment past its header (header damage
//! refuses the open: `bit_flips`), sometimes removes its index file, opens
//! the store for writing, records, and compares every tenant's query and
//! statistics with a brute-force count over the intact events.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use enforcelog::format::{decode_batch, SEGMENT_HEADER_LEN};
use enforcelog::{
    verify_dir, Action, Durability, Event, LogOptions, Query, Store, StoreOptions, StoredEvent,
};

const TENANTS: [&str; 3] = ["tenant-a", "tenant-b", "tenant-c"];
const RULES: [&str; 2] = ["rule-0", "rule-1"];
const ACTIONS: [Action; 3] = [Action::Blocked, Action::Stopped, Action::Killed];
const EVENTS: i64 = 36;
/// The most events a query page returns.
const LIMIT_MAX: usize = 100_000;
const FIRST_US: i64 = 1_764_028_800_000_000;

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            segment_max_bytes: 4096,
            record_max_bytes: 2048,
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// An event as hosts write them: nested details holding a long run of zero
/// counts (MessagePack 0x00 bytes) and a few non-zero values.
fn event(i: i64) -> Event {
    let n = usize::try_from(i).expect("small");
    Event::new(
        TENANTS[n % 3],
        RULES[(n / 3) % 2],
        ACTIONS[n % ACTIONS.len()],
    )
    .with_run_id(format!("run-{}", i / 5))
    .with_details(enforcelog::details!({
        "budget": {"histogram": vec![0u8; 300 + n * 7], "limit": {"tokens": 4096, "used": i}},
        "why": "token budget exceeded",
    }))
    .at_us(FIRST_US + i * 1_000)
}

/// The pristine store: its top-level files by name (not the lock, not the
/// projection checkpoints) and every event it holds, in offset order.
struct Pristine {
    files: BTreeMap<String, Vec<u8>>,
    events: Vec<StoredEvent>,
}

fn build() -> Pristine {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options()).expect("open");
    for i in 0..EVENTS {
        store.record_blocking(event(i)).expect("record");
    }
    let events = store
        .query(&Query::all_tenants().limit(LIMIT_MAX))
        .expect("query")
        .events;
    assert_eq!(events.len() as i64, EVENTS);
    store.close().expect("close");
    drop(store);
    assert!(verify_dir(dir.path()).expect("verify").is_clean());
    let files = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_type().expect("type").is_file())
        .map(|e| e.file_name().into_string().expect("utf-8"))
        .filter(|name| name != "LOCK")
        .map(|name| {
            let bytes = fs::read(dir.path().join(&name)).expect("read");
            (name, bytes)
        })
        .collect();
    Pristine { files, events }
}

/// Per batch of a pristine segment: its byte range and offsets.
fn batches(segment: &[u8]) -> Vec<(std::ops::Range<usize>, std::ops::Range<u64>)> {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while pos < segment.len() {
        let view = decode_batch(&segment[pos..], None).expect("a pristine batch verifies");
        let h = view.header;
        out.push((pos..pos + view.len(), h.first_offset..h.next_offset()));
        pos += view.len();
    }
    out
}

/// Every tenant's query and statistics equal a brute-force count over the
/// events `expected`; `lost` entries are reported as such.
fn assert_answers(store: &Store, expected: &[StoredEvent], lost: u64, what: &str) {
    let as_of_us = FIRST_US + EVENTS * 1_000;
    for tenant in TENANTS {
        let page = store
            .query(&Query::tenant(tenant).limit(LIMIT_MAX))
            .unwrap_or_else(|e| panic!("{what}: {tenant}'s query fails: {e}"));
        let want: Vec<&StoredEvent> = expected.iter().filter(|e| e.tenant_id == tenant).collect();
        let got: Vec<&StoredEvent> = page.events.iter().collect();
        assert_eq!(got, want, "{what}: {tenant}'s query");
        assert_eq!(
            page.lost, lost,
            "{what}: {tenant}'s query must say it is incomplete"
        );
        for rule in RULES {
            let stats = store
                .stats(tenant, rule, Some(as_of_us))
                .unwrap_or_else(|e| panic!("{what}: {tenant}/{rule} stats fail: {e}"));
            let mine: Vec<&&StoredEvent> = want.iter().filter(|e| e.rule_id == rule).collect();
            assert_eq!(
                stats.trigger_count,
                mine.len() as u64,
                "{what}: {tenant}/{rule}"
            );
            assert_eq!(
                stats.total_count,
                mine.len() as u64,
                "{what}: {tenant}/{rule}"
            );
            let by_action: u64 = stats.by_action.iter().sum();
            assert_eq!(by_action, mine.len() as u64, "{what}: {tenant}/{rule}");
        }
    }
}

fn write_files(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("write");
    }
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_fails_no_other_tenant_and_stops_no_recording() {
    let pristine = build();
    let segments: Vec<&String> = pristine
        .files
        .keys()
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(segments.len() >= 4, "want 3+ sealed segments: {segments:?}");
    // Bytes sampled densely enough to land in every part of every batch
    // (headers, frames, payload zeros, trailers); bits rotate.
    let step = common_step();
    let mut cases = 0;
    for name in &segments[..3] {
        let bytes = &pristine.files[*name];
        let index = name.replace(".log", ".idx");
        assert!(pristine.files.contains_key(&index), "{index}");
        for (byte_range, offsets) in batches(bytes) {
            for byte in byte_range.clone().step_by(step) {
                cases += 1;
                let bit = (byte * 5 + cases) % 8;
                let without_index = cases % 2 == 0;
                let what = format!(
                    "{name}: byte {byte} bit {bit} (batch at {}, offsets {offsets:?}), without \
                     index {without_index}",
                    byte_range.start
                );
                let dir = tempfile::tempdir().expect("tempdir");
                let mut files = pristine.files.clone();
                let damaged = files.get_mut(*name).expect("segment");
                damaged[byte] ^= 1 << bit;
                let damaged = damaged.clone();
                if without_index {
                    files.remove(&index);
                }
                write_files(dir.path(), &files);
                let report = verify_dir(dir.path()).expect("verify");
                assert!(report.has_corruption(), "{what}: verify: {report:?}");

                let store = Store::open(dir.path(), options())
                    .unwrap_or_else(|e| panic!("{what}: recording stops: {e}"));
                let intact: Vec<StoredEvent> = pristine
                    .events
                    .iter()
                    .filter(|e| !offsets.contains(&e.offset))
                    .cloned()
                    .collect();
                let lost = offsets.end - offsets.start;
                assert_answers(&store, &intact, lost, &what);
                let next = store
                    .record_blocking(event(EVENTS))
                    .unwrap_or_else(|e| panic!("{what}: record after damage: {e}"));
                assert_eq!(next, EVENTS as u64, "{what}");
                let after = store
                    .query(&Query::tenant(TENANTS[0]).from_offset(next))
                    .expect("query");
                assert_eq!(after.events.len(), 1, "{what}: the new event");
                store.close().expect("close");
                drop(store);
                assert!(
                    fs::read(dir.path().join(name)).expect("read") == damaged,
                    "{what}: the damaged segment changed"
                );
                // Every later open reads it the same way, read-only too.
                let reader = Store::open_read_only(dir.path())
                    .unwrap_or_else(|e| panic!("{what}: read-only open: {e}"));
                let mut with_new = intact.clone();
                with_new.extend(after.events);
                assert_answers(&reader, &with_new, lost, &format!("{what}, read-only"));
                let report = verify_dir(dir.path()).expect("verify");
                assert!(report.has_corruption(), "{what}: verify after: {report:?}");
            }
        }
    }
    assert!(cases > 100, "only {cases} cases");
}

/// Every `n`th byte (`ENFORCELOG_SEALED_DAMAGE_STEP`, default 31).
fn common_step() -> usize {
    std::env::var("ENFORCELOG_SEALED_DAMAGE_STEP")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(31)
}
