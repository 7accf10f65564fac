//! Compatibility: a store directory written by version 0.1 (schema 1, log
//! format 1) must stay readable by every later release.
//!
//! `tests/fixtures/store-v1/` was written once by `examples/write_fixture.rs`
//! and is committed. These tests copy it to a temporary directory, open the
//! copy, and compare what they read with the values spelled out below, not
//! with anything derived from the same bytes. If a change to the library
//! makes them fail, the change broke the reading of existing files: fix the
//! library, never the fixture.
//!
//! The fixture holds 11 entries: every action, events with and without a run
//! id and with and without details (nested objects, arrays, null, booleans,
//! integers at the `u64`/`i64` limits, floats, non-ASCII text), equal and
//! non-monotonic times, a time before 1970 and the last representable time,
//! and one gap marker at offset 5.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use enforcelog::payload::{self, SCHEMA_VERSION};
use enforcelog::timestamp::{format_us, MAX_US};
use enforcelog::{
    verify_dir, Action, Entry, Event, GapMarker, Query, Store, StoreOptions, StoredEvent,
};
use serde_json::{json, Map, Value};

const SEGMENT: &str = "00000000000000000000.log";
/// 2025-11-25T00:00:00Z.
const T0_US: i64 = 1_764_028_800_000_000;
const SECOND_US: i64 = 1_000_000;
const ENTRY_COUNT: u64 = 11;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// Every file of a flat directory, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().into_string().expect("UTF-8 file name");
            let bytes = fs::read(entry.path()).expect("read fixture file");
            (name, bytes)
        })
        .collect()
}

/// A copy of the fixture in a fresh temporary directory.
fn copy_of_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store-v1");
    fs::create_dir(&dir).expect("create copy directory");
    for (name, bytes) in snapshot(&fixture_dir()) {
        fs::write(dir.join(name), bytes).expect("copy fixture file");
    }
    (tmp, dir)
}

fn details(value: Value) -> Option<Map<String, Value>> {
    match value {
        Value::Object(map) => Some(map),
        other => panic!("test bug: {other} is not an object"),
    }
}

fn event(
    offset: u64,
    (tenant_id, rule_id, action): (&str, &str, Action),
    run_id: Option<&str>,
    details_json: Option<Value>,
    enforced_at_us: i64,
) -> Entry {
    Entry::Event(StoredEvent {
        offset,
        tenant_id: tenant_id.into(),
        rule_id: rule_id.into(),
        action,
        run_id: run_id.map(Into::into),
        details: details_json.and_then(details),
        enforced_at_us,
    })
}

/// What the fixture holds, written out by hand.
fn expected_entries() -> Vec<Entry> {
    vec![
        event(
            0,
            ("acme", "no-prod-writes", Action::Blocked),
            None,
            None,
            T0_US,
        ),
        event(
            1,
            ("acme", "budget", Action::Killed),
            Some("run-1"),
            Some(json!({"spent_usd": 12.5, "limit_usd": 10, "currency": "USD"})),
            T0_US + SECOND_US,
        ),
        event(
            2,
            ("acme", "budget", Action::Stopped),
            Some("run-2"),
            Some(json!({
                "step": 7,
                "tools": ["shell", "http", 3, null],
                "nested": {"ok": false, "none": null, "deep": {"n": -3, "pi": 3.25}}
            })),
            T0_US + 2 * SECOND_US,
        ),
        event(
            3,
            ("globex", "rate-limit", Action::Aborted),
            None,
            Some(json!({"reason": "Limit überschritten ✋", "sign": "🚦", "rule": "规则"})),
            T0_US + 3 * SECOND_US,
        ),
        event(
            4,
            ("globex", "rate-limit", Action::Blocked),
            Some("run-α"),
            None,
            T0_US + 3 * SECOND_US,
        ),
        Entry::Gap(GapMarker {
            offset: 5,
            dropped: 3,
            first_dropped_at_us: T0_US + 4 * SECOND_US,
            last_dropped_at_us: T0_US + 4 * SECOND_US + SECOND_US / 2,
            losses: Vec::new(),
            unattributed: Some(enforcelog::LossSpan {
                count: 3,
                first_at_us: T0_US + 4 * SECOND_US,
                last_at_us: T0_US + 4 * SECOND_US + SECOND_US / 2,
            }),
        }),
        event(
            6,
            ("initech", "pii-leak", Action::Stopped),
            Some("run-3"),
            Some(json!({
                "max_u64": 18_446_744_073_709_551_615_u64,
                "min_i64": -9_223_372_036_854_775_808_i64,
                "tiny": 1e-7,
                "empty_object": {},
                "empty_array": []
            })),
            T0_US + 6 * SECOND_US,
        ),
        event(
            7,
            ("initech", "pii-leak", Action::Killed),
            None,
            Some(json!({})),
            T0_US + 7 * SECOND_US,
        ),
        event(
            8,
            ("ünïcødé", "r/1", Action::Aborted),
            Some("r"),
            None,
            T0_US - SECOND_US,
        ),
        event(
            9,
            ("acme", "no-prod-writes", Action::Blocked),
            Some("run-1"),
            Some(json!({"retry": true})),
            -1,
        ),
        event(
            10,
            ("acme", "far-future", Action::Killed),
            None,
            None,
            253_402_300_799_999_999,
        ),
    ]
}

fn read_all(store: &Store) -> Vec<Entry> {
    store
        .entries(0)
        .expect("entries(0)")
        .collect::<Result<_, _>>()
        .expect("every fixture entry decodes")
}

fn assert_entries(found: &[Entry], expected: &[Entry]) {
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert_eq!(f, e, "entry {i} of the fixture");
    }
    assert_eq!(found.len(), expected.len(), "number of fixture entries");
}

#[test]
fn fixture_is_small_and_holds_only_the_log() {
    let files = snapshot(&fixture_dir());
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["00000000000000000000.log", "VERSION"]);
    assert_eq!(files["VERSION"], b"enforcelog-log 1\n");
    let total: usize = files.values().map(Vec::len).sum();
    assert!(total < 8 << 10, "fixture is {total} bytes");
    assert!(
        files[SEGMENT].starts_with(b"ENFLOGSG"),
        "segment magic missing"
    );
}

#[test]
fn read_only_open_reads_every_entry_as_written() {
    let (_tmp, dir) = copy_of_fixture();
    let before = snapshot(&dir);
    let store = Store::open_read_only(&dir).expect("open the fixture read-only");
    assert_eq!(store.next_offset(), ENTRY_COUNT);
    assert_entries(&read_all(&store), &expected_entries());
    // Reading from the middle starts at the right entry.
    let tail: Vec<Entry> = store
        .entries(5)
        .expect("entries(5)")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_entries(&tail, &expected_entries()[5..]);
    drop(store);
    assert_eq!(snapshot(&dir), before, "a read-only open changed the files");
}

#[test]
fn raw_records_carry_schema_1_payloads_and_the_event_times() {
    assert_eq!(SCHEMA_VERSION, 1);
    let (_tmp, dir) = copy_of_fixture();
    let store = Store::open_read_only(&dir).expect("open the fixture read-only");
    let records: Vec<_> = store
        .log()
        .read_from(0)
        .expect("read_from(0)")
        .collect::<Result<_, _>>()
        .expect("every record reads");
    let expected = expected_entries();
    assert_eq!(records.len(), expected.len());
    for (record, entry) in records.iter().zip(&expected) {
        let offset = record.offset;
        // [schema 1, kind]: a fixarray of 7 for events, of 5 for gap markers.
        let header: &[u8] = match entry {
            Entry::Event(e) => {
                assert_eq!(record.timestamp_us, e.enforced_at_us, "offset {offset}");
                &[0x97, 0x01, 0x00]
            }
            Entry::Gap(_) => &[0x95, 0x01, 0x01],
            Entry::Lost(_) => &[0x94, 0x01, 0x02],
        };
        assert!(
            record.payload.starts_with(header),
            "offset {offset}: payload starts {:02x?}",
            &record.payload[..record.payload.len().min(3)]
        );
        let decoded = payload::decode(offset, record.timestamp_us, &record.payload)
            .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
        assert_eq!(&decoded, entry, "offset {offset}");
    }
    assert_eq!(records[5].timestamp_us, T0_US + 5 * SECOND_US);
}

#[test]
fn fixture_times_format_as_utc_rfc3339() {
    let texts: Vec<String> = expected_entries()
        .iter()
        .filter_map(|e| match e {
            Entry::Event(e) => Some(format_us(e.enforced_at_us)),
            Entry::Gap(_) | Entry::Lost(_) => None,
        })
        .collect();
    assert_eq!(texts[0], "2025-11-25T00:00:00.000000Z");
    assert_eq!(texts[7], "2025-11-24T23:59:59.000000Z");
    assert_eq!(texts[8], "1969-12-31T23:59:59.999999Z");
    assert_eq!(texts[9], "9999-12-31T23:59:59.999999Z");
    assert_eq!(
        253_402_300_799_999_999, MAX_US,
        "the fixture's last time is MAX_US"
    );
}

#[test]
fn fixture_verifies_clean() {
    let (_tmp, dir) = copy_of_fixture();
    let report = verify_dir(&dir).expect("verify the fixture copy");
    assert!(report.is_clean(), "problems: {:?}", report.problems);
    // The committed files themselves, too (verify only reads).
    let before = snapshot(&fixture_dir());
    let report = verify_dir(fixture_dir()).expect("verify the fixture");
    assert!(report.is_clean(), "problems: {:?}", report.problems);
    assert_eq!(
        snapshot(&fixture_dir()),
        before,
        "verify changed the fixture"
    );
}

#[test]
fn queries_on_the_fixture_filter_by_tenant() {
    let (_tmp, dir) = copy_of_fixture();
    let store = Store::open_read_only(&dir).expect("open the fixture read-only");
    let page = store.query(&Query::tenant("acme")).expect("query acme");
    let offsets: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [0, 1, 2, 9, 10]);
    let page = store
        .query(&Query::all_tenants().include_gaps(true))
        .expect("query all");
    assert_eq!(page.events.len(), 10);
    let gaps: Vec<u64> = page.gaps.iter().map(|g| g.offset).collect();
    assert_eq!(gaps, [5]);
}

#[test]
fn a_writer_continues_the_fixture_log() {
    let (_tmp, dir) = copy_of_fixture();
    // The fixture predates store ids: its segment's store tag is zero.
    let read_only = Store::open_read_only(&dir).expect("open the fixture read-only");
    assert_eq!(read_only.store_id(), None);
    drop(read_only);
    assert!(!dir.join("STORE_ID").exists());
    let store = Store::open(&dir, StoreOptions::default()).expect("open the fixture copy to write");
    // The first writer assigns an id, durably, before it writes anything.
    let id = store.store_id().expect("a writer always has a store id");
    let on_disk = std::fs::read_to_string(dir.join("STORE_ID")).expect("STORE_ID written");
    assert_eq!(on_disk, format!("{id}\n"));
    assert_eq!(store.next_offset(), ENTRY_COUNT);
    let offset = store
        .record_blocking(Event::new("acme", "late", Action::Stopped).at_us(T0_US + 8 * SECOND_US))
        .expect("append to the fixture copy");
    assert_eq!(offset, ENTRY_COUNT);
    store.close().expect("close");
    drop(store);

    let store = Store::open_read_only(&dir).expect("reopen read-only");
    assert_eq!(store.store_id(), Some(id), "the id is permanent");
    let mut expected = expected_entries();
    expected.push(event(
        ENTRY_COUNT,
        ("acme", "late", Action::Stopped),
        None,
        None,
        T0_US + 8 * SECOND_US,
    ));
    assert_entries(&read_all(&store), &expected);
}
