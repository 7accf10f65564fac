//! The validation matrix: every field of an event, every way to be wrong.
//!
//! Each refused case is checked three ways on a fresh store over the
//! simulated storage: `record_blocking`, `record().await` and a caller-owned
//! batch's `record`. Each must refuse with the expected [`EventError`]
//! (compared whole: variant, field, position, lengths), and nothing may be
//! written: `next_offset` stays 0, the writer wrote no byte, and the segment
//! file is byte for byte what the open left. Each accepted edge case (128
//! bytes exactly, details of exactly 64 KiB, the first and last
//! representable times) is recorded the same three ways and read back.
//!
//! Raw-input helpers are checked too: `id_from_bytes` (invalid UTF-8 and the
//! byte it starts at), `details_from_json`, `timestamp::parse_us`, and
//! parsing and printing actions. `record_detached` of an invalid event
//! writes no event but counts a drop, and the supervisor then writes a gap
//! marker for it.
//!
//! `random_ids_agree_with_a_model` draws ids from a seeded generator;
//! replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test
//! events_validation`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Rng;
use enforcelog::event::{
    check_details, check_id, details_from_json, id_from_bytes, DETAILS_MAX_BYTES, ID_MAX_BYTES,
};
use enforcelog::storage::sim::SimStorage;
use enforcelog::timestamp::{self, parse_us, TimestampError, MAX_US, MIN_US};
use enforcelog::{now_us, Action, Entry, Error, Event, EventError, Field, Store, StoreOptions};
use serde_json::{json, Value};

const DIR: &str = "/store";
const SEGMENT: &str = "/store/00000000000000000000.log";
const ID_FIELDS: [Field; 3] = [Field::TenantId, Field::RuleId, Field::RunId];
/// The longest wait for the supervisor to write a gap marker.
const GAP_WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Helpers.

fn open_store() -> (SimStorage, Store) {
    let storage = SimStorage::new(1);
    // The range of valid timestamps is under test, up to year 9999; the
    // future-skew refusal is tested in `one_tenant_degrades_none.rs`.
    let options = StoreOptions {
        max_future_skew: std::time::Duration::MAX,
        ..StoreOptions::default()
    };
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options)
        .open()
        .expect("open store on SimStorage");
    (storage, store)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A valid event with a run id and details, stamped at a fixed time.
fn valid_event() -> Event {
    Event::new("acme", "no-prod-writes", Action::Blocked)
        .with_run_id("run-1")
        .with_details(enforcelog::details!({"step": 1}))
        .at_us(1_764_028_800_000_000)
}

/// [`valid_event`] with one id field replaced.
fn with_id(field: Field, id: &str) -> Event {
    let mut event = valid_event();
    match field {
        Field::TenantId => event.tenant_id = id.to_string(),
        Field::RuleId => event.rule_id = id.to_string(),
        Field::RunId => event.run_id = Some(id.to_string()),
        other => panic!("test bug: {other} is not an id field"),
    }
    event
}

/// Every way in refuses `event` with exactly `expected`, and nothing is
/// written.
fn assert_refused(event: &Event, expected: &EventError) {
    let case = format!("{event:?}");
    assert_eq!(event.validate().as_ref(), Err(expected), "validate: {case}");
    let message = expected.to_string();
    let field = expected.field().to_string();
    assert!(
        message.starts_with(&format!("{field}: ")),
        "{message:?} does not name the field {field}"
    );

    let (storage, store) = open_store();
    let segment_before = storage.read_file(SEGMENT).expect("segment after open");

    match store.record_blocking(event.clone()) {
        Err(Error::InvalidEvent(e)) => assert_eq!(&e, expected, "record_blocking: {case}"),
        other => panic!("record_blocking: {case}: expected {expected:?}, got {other:?}"),
    }
    match runtime().block_on(store.record(event.clone())) {
        Err(Error::InvalidEvent(e)) => assert_eq!(&e, expected, "record: {case}"),
        other => panic!("record: {case}: expected {expected:?}, got {other:?}"),
    }
    let mut batch = store.begin();
    assert_eq!(
        batch.record(event.clone()).as_ref(),
        Err(expected),
        "batch.record: {case}"
    );
    assert!(batch.is_empty(), "a refused event was staged: {case}");
    assert!(
        matches!(batch.commit_blocking(), Err(Error::EmptyBatch)),
        "{case}"
    );

    assert_eq!(store.next_offset(), 0, "something was committed: {case}");
    assert_eq!(store.log().metrics().bytes, 0, "bytes written: {case}");
    assert_eq!(store.metrics().recorded, 0, "{case}");
    assert_eq!(
        storage.read_file(SEGMENT).expect("segment"),
        segment_before,
        "the segment changed: {case}"
    );
    assert_eq!(store.entries(0).expect("entries").count(), 0, "{case}");
}

/// Every way in accepts `event`; reading back gives it unchanged.
fn assert_accepted(event: &Event) {
    let case = format!("{:.200}", format!("{event:?}"));
    assert_eq!(event.validate(), Ok(()), "validate: {case}");
    let (_storage, store) = open_store();
    let first = store
        .record_blocking(event.clone())
        .unwrap_or_else(|e| panic!("record_blocking: {case}: {e}"));
    let second = runtime()
        .block_on(store.record(event.clone()))
        .unwrap_or_else(|e| panic!("record: {case}: {e}"));
    let mut batch = store.begin();
    batch
        .record(event.clone())
        .unwrap_or_else(|e| panic!("batch.record: {case}: {e}"));
    let third = batch
        .commit_blocking()
        .unwrap_or_else(|e| panic!("commit: {case}: {e}"));
    assert_eq!((first, second, third), (0, 1, 2..3), "{case}");

    let entries: Vec<Entry> = store
        .entries(0)
        .expect("entries")
        .collect::<Result<_, _>>()
        .expect("decode");
    assert_eq!(entries.len(), 3, "{case}");
    for entry in entries {
        let Entry::Event(stored) = entry else {
            panic!("{case}: not an event: {entry:?}");
        };
        assert_eq!(stored.tenant_id, event.tenant_id, "{case}");
        assert_eq!(stored.rule_id, event.rule_id, "{case}");
        assert_eq!(stored.action, event.action, "{case}");
        assert_eq!(stored.run_id, event.run_id, "{case}");
        assert_eq!(stored.details, event.details, "{case}");
        assert_eq!(Some(stored.enforced_at_us), event.enforced_at_us, "{case}");
    }
}

fn too_long(field: Field, len_bytes: usize) -> EventError {
    EventError::TooLong {
        field,
        len_bytes,
        max_bytes: ID_MAX_BYTES,
    }
}

fn control(field: Field, at: usize, code: u32) -> EventError {
    EventError::ControlCharacter { field, at, code }
}

/// Waits (bounded) until the supervisor wrote every pending drop as a gap
/// marker.
fn wait_for_gap_markers(store: &Store) {
    let deadline = Instant::now() + GAP_WAIT;
    loop {
        let m = store.metrics();
        if m.gap_markers >= 1 && m.dropped_pending_gap == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no gap marker after {GAP_WAIT:?}: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ---------------------------------------------------------------------------
// Ids: tenant_id, rule_id, run_id.

#[test]
fn empty_ids_are_refused() {
    assert_eq!(ID_MAX_BYTES, 128);
    for field in ID_FIELDS {
        assert_refused(&with_id(field, ""), &EventError::Empty { field });
    }
}

#[test]
fn ids_longer_than_128_bytes_are_refused_counting_bytes() {
    for field in ID_FIELDS {
        for (id, len_bytes) in [
            ("a".repeat(129), 129),
            ("a".repeat(1000), 1000),
            // 65 characters, 129 bytes.
            (format!("{}a", "é".repeat(64)), 129),
            // 43 characters, 129 bytes.
            ("€".repeat(43), 129),
            // 33 characters, 129 bytes.
            (format!("{}a", "🚦".repeat(32)), 129),
        ] {
            assert_eq!(id.len(), len_bytes, "test bug");
            assert_refused(&with_id(field, &id), &too_long(field, len_bytes));
        }
    }
}

#[test]
fn ids_of_exactly_128_bytes_are_accepted() {
    for field in ID_FIELDS {
        for id in [
            "a".repeat(128),
            "é".repeat(64),
            format!("{}ab", "€".repeat(42)),
            "🚦".repeat(32),
        ] {
            assert_eq!(id.len(), 128, "test bug");
            assert_accepted(&with_id(field, &id));
        }
    }
}

#[test]
fn ids_with_control_characters_are_refused_at_their_byte() {
    for field in ID_FIELDS {
        for (id, at, code) in [
            ("ab\ncd", 2, 0x0a),
            ("\0", 0, 0x00),
            ("run\u{7f}", 3, 0x7f),
            // `é` is two bytes, so U+0085 (itself two bytes) starts at byte 2.
            ("é\u{85}x", 2, 0x85),
            ("ok\t", 2, 0x09),
            ("\u{1b}[31m", 0, 0x1b),
            ("€\r", 3, 0x0d),
            ("a\u{1f}", 1, 0x1f),
            ("🚦\u{9f}", 4, 0x9f),
            // Only the first one is named.
            ("x\ny\0", 1, 0x0a),
        ] {
            assert_refused(&with_id(field, id), &control(field, at, code));
        }
    }
}

#[test]
fn ids_with_printable_neighbours_of_control_characters_are_accepted() {
    for field in ID_FIELDS {
        for id in ["a b", "\u{a0}", "zero\u{200b}width", "~", "tenant/rule:1"] {
            assert_accepted(&with_id(field, id));
        }
    }
}

#[test]
fn invalid_utf8_from_raw_input_is_refused_at_its_byte() {
    for field in ID_FIELDS {
        for (bytes, at) in [
            (&b"ab\xffcd"[..], 2),
            (b"\xff", 0),
            // Truncated: the first byte of a two-byte sequence at the end.
            (b"abc\xc3", 3),
            // Overlong encoding of NUL.
            (b"\xc0\x80", 0),
            // A UTF-16 surrogate.
            (b"ok\xed\xa0\x80", 2),
            // A lone continuation byte after a valid `é`.
            (b"\xc3\xa9\x80", 2),
            (b"\xe2\x82", 0),
        ] {
            let result = id_from_bytes(field, bytes);
            assert_eq!(
                result,
                Err(EventError::InvalidUtf8 { field, at }),
                "{field} from {bytes:x?}"
            );
            let error = result.unwrap_err();
            assert_eq!(error.field(), field);
            assert!(error.to_string().starts_with(&format!("{field}: ")));
        }
        // Valid UTF-8 is then checked like any id.
        assert_eq!(
            id_from_bytes(field, "tenant-é".as_bytes()),
            Ok("tenant-é".into())
        );
        assert_eq!(id_from_bytes(field, b""), Err(EventError::Empty { field }));
        assert_eq!(id_from_bytes(field, b"a\n"), Err(control(field, 1, 0x0a)));
        assert_eq!(
            id_from_bytes(field, &[b'a'; 129]),
            Err(too_long(field, 129))
        );
        let id = id_from_bytes(field, &[b'a'; 128]).expect("128 bytes");
        assert_accepted(&with_id(field, &id));
    }
}

#[test]
fn fields_are_checked_in_order() {
    let mut event = valid_event();
    event.tenant_id = String::new();
    event.rule_id = "\n".into();
    event.run_id = Some("x".repeat(200));
    event.details = Some(details_with(&"x".repeat(70_000)));
    event.enforced_at_us = Some(i64::MAX);
    let steps = [
        EventError::Empty {
            field: Field::TenantId,
        },
        control(Field::RuleId, 0, 0x0a),
        too_long(Field::RunId, 200),
        EventError::DetailsTooLarge {
            len_bytes: 70_008,
            max_bytes: DETAILS_MAX_BYTES,
        },
        EventError::TimestampOutOfRange { value_us: i64::MAX },
    ];
    for (i, expected) in steps.iter().enumerate() {
        assert_refused(&event, expected);
        match i {
            0 => event.tenant_id = "acme".into(),
            1 => event.rule_id = "rule".into(),
            2 => event.run_id = None,
            3 => event.details = None,
            _ => event.enforced_at_us = None,
        }
    }
    assert_eq!(event.validate(), Ok(()));
}

// ---------------------------------------------------------------------------
// Action.

#[test]
fn every_accepted_spelling_of_an_action_parses() {
    for (texts, action, shown) in [
        (
            &[
                "STOPPED", "stopped", "Stopped", "sToPpEd", "stop", "STOP", "Stop",
            ][..],
            Action::Stopped,
            "STOPPED",
        ),
        (
            &["KILLED", "killed", "Killed", "kill", "KILL", "kIlL"][..],
            Action::Killed,
            "KILLED",
        ),
        (
            &["ABORTED", "aborted", "Aborted", "abort", "ABORT", "aBoRt"][..],
            Action::Aborted,
            "ABORTED",
        ),
        (
            &["BLOCKED", "blocked", "Blocked", "block", "BLOCK", "bLoCk"][..],
            Action::Blocked,
            "BLOCKED",
        ),
    ] {
        for text in texts {
            assert_eq!(text.parse::<Action>(), Ok(action), "{text:?}");
        }
        assert_eq!(action.to_string(), shown);
        assert_eq!(action.as_str(), shown);
        assert_eq!(shown.parse::<Action>(), Ok(action), "Display parses back");
    }
    let shown: Vec<String> = Action::ALL.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["STOPPED", "KILLED", "ABORTED", "BLOCKED"]);
}

#[test]
fn unknown_actions_are_refused_naming_what_was_given() {
    for text in [
        "halt",
        "",
        "stopp",
        "kil",
        "killed!",
        "STOPPÉD",
        "ｓｔｏｐ",
        "stopped killed",
        "0",
    ] {
        let error = text.parse::<Action>().expect_err(text);
        assert_eq!(
            error,
            EventError::UnknownAction {
                given: text.to_string()
            },
            "{text:?}"
        );
        assert_eq!(error.field(), Field::Action);
        assert!(error.to_string().starts_with("action: "), "{error}");
    }
    // What is given is kept to 64 characters in the error.
    let long = "é".repeat(100);
    let Err(EventError::UnknownAction { given }) = long.parse::<Action>() else {
        panic!("a 100-character action parsed");
    };
    assert_eq!(given, "é".repeat(64));
}

#[test]
fn every_action_is_recorded_and_read_back() {
    for action in Action::ALL {
        let mut event = valid_event();
        event.action = action;
        assert_accepted(&event);
    }
}

// ---------------------------------------------------------------------------
// Details.

#[test]
fn details_that_are_not_an_object_are_refused() {
    for (value, found) in [
        (json!(null), "null"),
        (json!(0), "a number"),
        (json!(-1.5), "a number"),
        (json!(u64::MAX), "a number"),
        (json!("text"), "a string"),
        (json!(""), "a string"),
        (json!([]), "an array"),
        (json!([1, {"a": 2}]), "an array"),
        (json!(true), "a boolean"),
        (json!(false), "a boolean"),
    ] {
        let expected = EventError::DetailsNotObject { found };
        assert_eq!(check_details(&value), Err(expected.clone()), "{value}");
        // `Event::details` holds an object by its type; a value from
        // elsewhere goes through `try_with_details`.
        assert_eq!(
            valid_event().try_with_details(value.clone()).err(),
            Some(expected.clone()),
            "{value}"
        );
    }
}

#[test]
fn details_json_text_must_be_a_json_object() {
    for text in [
        "",
        "{",
        "{'a': 1}",
        "{\"a\": 1,}",
        "nul",
        "{\"a\": 1} trailing",
        "{\"a\": NaN}",
        "{a: 1}",
        "\u{feff}{}",
    ] {
        match details_from_json(text) {
            Err(error @ EventError::DetailsNotJson { .. }) => {
                assert_eq!(error.field(), Field::Details);
                assert!(error.to_string().starts_with("details: "), "{error}");
                let EventError::DetailsNotJson { reason } = error else {
                    unreachable!()
                };
                assert!(!reason.is_empty(), "{text:?}: no reason given");
            }
            other => panic!("{text:?}: expected DetailsNotJson, got {other:?}"),
        }
    }
    for (text, found) in [
        ("null", "null"),
        ("[1, 2]", "an array"),
        ("\"s\"", "a string"),
        ("12", "a number"),
        (" true ", "a boolean"),
    ] {
        assert_eq!(
            details_from_json(text),
            Err(EventError::DetailsNotObject { found }),
            "{text:?}"
        );
    }
    let map = details_from_json(r#"{"a": {"b": [1, null, "é", 2.5, false]}}"#).expect("object");
    assert_eq!(
        Value::Object(map.clone()),
        json!({"a": {"b": [1, null, "é", 2.5, false]}})
    );
    assert_accepted(&valid_event().with_details(map));
}

/// `{"k":"<filler>"}`: compact JSON of `filler` plus 8 bytes.
fn details_with(filler: &str) -> serde_json::Map<String, Value> {
    enforcelog::details!({ "k": filler })
}

fn encoded_len(value: &impl serde::Serialize) -> usize {
    serde_json::to_vec(value).expect("encode").len()
}

#[test]
fn details_larger_than_64_kib_encoded_are_refused() {
    assert_eq!(DETAILS_MAX_BYTES, 65_536);
    let over = |len_bytes| EventError::DetailsTooLarge {
        len_bytes,
        max_bytes: DETAILS_MAX_BYTES,
    };
    for (value, len_bytes) in [
        (details_with(&"x".repeat(DETAILS_MAX_BYTES - 7)), 65_537),
        (details_with(&"x".repeat(200_000)), 200_008),
        // 32,765 characters, each escaped as two bytes.
        (details_with(&"\"".repeat(32_765)), 65_538),
        // Two bytes each, unescaped.
        (details_with(&format!("{}x", "é".repeat(32_764))), 65_537),
        // Nested arrays of small numbers.
        (
            enforcelog::details!({"a": vec![json!([1, 2, 3]); 10_000]}),
            80_007,
        ),
    ] {
        assert_eq!(encoded_len(&value), len_bytes, "test bug");
        assert_refused(&valid_event().with_details(value), &over(len_bytes));
    }
}

#[test]
fn details_of_exactly_64_kib_encoded_are_accepted() {
    let value = details_with(&"x".repeat(DETAILS_MAX_BYTES - 8));
    assert_eq!(encoded_len(&value), DETAILS_MAX_BYTES);
    assert_accepted(&valid_event().with_details(value));

    // The limit is on compact JSON: whitespace in the text does not count.
    let text = format!(
        "{{\n    \"k\"  :  \"{}\"\n{}}}",
        "y".repeat(DETAILS_MAX_BYTES - 8),
        " ".repeat(1000)
    );
    assert!(text.len() > DETAILS_MAX_BYTES + 1000);
    let map = details_from_json(&text).expect("compact form is at the limit");
    assert_accepted(&valid_event().with_details(map));
    let text = text.replacen("\"k\"", "\"kk\"", 1);
    assert_eq!(
        details_from_json(&text),
        Err(EventError::DetailsTooLarge {
            len_bytes: DETAILS_MAX_BYTES + 1,
            max_bytes: DETAILS_MAX_BYTES
        })
    );
}

// ---------------------------------------------------------------------------
// enforced_at.

#[test]
fn timestamps_out_of_range_are_refused() {
    for value_us in [
        MIN_US - 1,
        MAX_US + 1,
        i64::MIN,
        i64::MAX,
        MIN_US - 1_000_000,
    ] {
        assert_refused(
            &valid_event().at_us(value_us),
            &EventError::TimestampOutOfRange { value_us },
        );
    }
}

#[test]
fn timestamps_at_the_range_ends_are_accepted() {
    for at_us in [MIN_US, MAX_US, 0, -1, MIN_US + 1, MAX_US - 1] {
        assert_accepted(&valid_event().at_us(at_us));
    }
}

#[test]
fn timestamp_text_without_zone_or_garbage_is_refused() {
    for text in [
        "2026-11-25T10:00:00",
        "2026-11-25T10:00:00.123456",
        "2026-11-25",
        "10:00:00Z",
        "yesterday",
        "",
        "   ",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-25T24:00:01Z",
        "2026-11-25T10:00:00+25:00",
        "1764028800000000",
    ] {
        let result = parse_us(text);
        assert_eq!(
            result,
            Err(TimestampError::Syntax(text.to_string())),
            "{text:?}"
        );
        let error = EventError::from(result.unwrap_err());
        assert!(matches!(error, EventError::BadTimestamp(_)));
        assert_eq!(error.field(), Field::EnforcedAt);
        assert!(error.to_string().starts_with("enforced_at: "), "{error}");
    }
}

#[test]
fn timestamp_text_outside_years_1_to_9999_is_refused() {
    for text in [
        // Year 0 is RFC 3339 syntax, but before 0001-01-01.
        "0000-12-31T23:59:59.999999Z",
        // The last microsecond of 9999 in a zone west of UTC is year 10000 in UTC.
        "9999-12-31T23:59:59.999999-00:01",
        // The first microsecond of 0001 in a zone east of UTC is year 0 in UTC.
        "0001-01-01T00:00:00+00:01",
    ] {
        assert_eq!(
            parse_us(text),
            Err(TimestampError::OutOfRange(text.to_string())),
            "{text:?}"
        );
    }
}

#[test]
fn timestamp_text_in_range_parses_to_utc() {
    for (text, us) in [
        ("2025-11-25T00:00:00Z", 1_764_028_800_000_000),
        ("2025-11-25T01:00:00+01:00", 1_764_028_800_000_000),
        ("2025-11-24T19:30:00.5-04:30", 1_764_028_800_500_000),
        ("1970-01-01T00:00:00.000001Z", 1),
        ("0001-01-01T00:00:00Z", MIN_US),
        ("9999-12-31T23:59:59.999999Z", MAX_US),
    ] {
        assert_eq!(parse_us(text), Ok(us), "{text:?}");
        assert!(timestamp::in_range(us));
    }
    assert_eq!(
        timestamp::format_us(parse_us("2025-11-25T01:00:00.25+01:00").expect("parse")),
        "2025-11-25T00:00:00.250000Z"
    );
}

// ---------------------------------------------------------------------------
// record_detached.

#[test]
fn record_detached_of_an_invalid_event_writes_only_a_gap_marker() {
    let (_storage, store) = open_store();
    let before_us = now_us();
    store.record_detached(with_id(Field::TenantId, ""));
    let m = store.metrics();
    assert_eq!((m.dropped, m.recorded), (1, 0), "{m:?}");

    wait_for_gap_markers(&store);
    let after_us = now_us();
    let m = store.metrics();
    assert_eq!((m.dropped, m.recorded, m.gap_markers), (1, 0, 1), "{m:?}");
    let entries: Vec<Entry> = store
        .entries(0)
        .expect("entries")
        .collect::<Result<_, _>>()
        .expect("decode");
    let [Entry::Gap(gap)] = entries.as_slice() else {
        panic!("expected one gap marker, found {entries:?}");
    };
    assert_eq!((gap.offset, gap.dropped), (0, 1));
    assert_eq!(gap.first_dropped_at_us, gap.last_dropped_at_us);
    assert!(
        (before_us..=after_us).contains(&gap.first_dropped_at_us),
        "dropped at {} outside {before_us}..={after_us}",
        gap.first_dropped_at_us
    );
    assert_eq!(store.next_offset(), 1);
}

#[test]
fn record_detached_counts_every_kind_of_invalid_event() {
    let (_storage, store) = open_store();
    let invalid = [
        with_id(Field::TenantId, ""),
        with_id(Field::RuleId, &"r".repeat(129)),
        with_id(Field::RunId, "a\u{85}"),
        valid_event().with_details(details_with(&"x".repeat(DETAILS_MAX_BYTES))),
        valid_event().at_us(MAX_US + 1),
        valid_event().at_us(i64::MIN),
    ];
    let count = invalid.len() as u64;
    for event in invalid {
        store.record_detached(event);
    }
    assert_eq!(store.metrics().dropped, count);

    wait_for_gap_markers(&store);
    let entries: Vec<Entry> = store
        .entries(0)
        .expect("entries")
        .collect::<Result<_, _>>()
        .expect("decode");
    let mut dropped = 0;
    for entry in &entries {
        match entry {
            Entry::Gap(gap) => {
                assert!(gap.dropped >= 1, "{gap:?}");
                assert!(gap.first_dropped_at_us <= gap.last_dropped_at_us, "{gap:?}");
                dropped += gap.dropped;
            }
            Entry::Event(event) => panic!("an invalid event was written: {event:?}"),
            Entry::Lost(lost) => panic!("nothing was damaged: {lost:?}"),
        }
    }
    assert_eq!(dropped, count, "gap markers: {entries:?}");
    let m = store.metrics();
    assert_eq!((m.dropped, m.recorded), (count, 0), "{m:?}");
    assert_eq!(m.gap_markers, entries.len() as u64, "{m:?}");
}

// ---------------------------------------------------------------------------
// Random ids against a model.

fn base_seed() -> u64 {
    common::seed_or(0x00E7_E475_0004_0001)
}

/// What `check_id` must say, written from the rules rather than the code:
/// empty, then more than 128 bytes, then the first C0/DEL/C1 character.
fn model_check(field: Field, id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        return Err(EventError::Empty { field });
    }
    if id.len() > 128 {
        return Err(too_long(field, id.len()));
    }
    let mut at = 0;
    for c in id.chars() {
        let code = u32::from(c);
        if code < 0x20 || (0x7f..=0x9f).contains(&code) {
            return Err(control(field, at, code));
        }
        at += c.len_utf8();
    }
    Ok(())
}

#[test]
fn random_ids_agree_with_a_model() {
    const ALPHABET: [char; 17] = [
        'a', 'Z', '0', '-', ' ', 'é', '€', '🚦', '\u{a0}', '\u{200b}', '\n', '\0', '\u{7f}',
        '\u{85}', '\u{9f}', '\u{1f}', '\t',
    ];
    let seed = base_seed();
    let mut rng = Rng(seed);
    for case in 0..5_000 {
        let field = ID_FIELDS[rng.index(3)];
        let len = match rng.index(4) {
            0 => rng.index(4),
            1 => 120 + rng.index(20),
            _ => rng.index(140),
        };
        // Mostly printable characters, so that long valid ids occur.
        let id: String = (0..len)
            .map(|_| {
                if rng.index(40) == 0 {
                    ALPHABET[10 + rng.index(7)]
                } else {
                    ALPHABET[rng.index(10)]
                }
            })
            .collect();
        let expected = model_check(field, &id);
        let context = format!("seed {seed}, case {case}: {field} {id:?}");
        assert_eq!(check_id(field, &id), expected, "{context}");
        let from_bytes = id_from_bytes(field, id.as_bytes());
        assert_eq!(from_bytes.clone().map(|_| ()), expected, "{context}");
        if let Ok(text) = from_bytes {
            assert_eq!(text, id, "{context}");
        }

        // Break the bytes at a character boundary: the error names that byte.
        let boundaries: Vec<usize> = id
            .char_indices()
            .map(|(i, _)| i)
            .chain([id.len()])
            .collect();
        let at = boundaries[rng.index(boundaries.len())];
        let bad_byte = [0xff, 0x80, 0xc3, 0xf8][rng.index(4)];
        let mut bytes = id.as_bytes().to_vec();
        bytes.insert(at, bad_byte);
        if bad_byte == 0xc3 && bytes.get(at + 1).is_some_and(|b| (0x80..0xc0).contains(b)) {
            continue; // 0xc3 starts a valid two-byte sequence here.
        }
        assert_eq!(
            id_from_bytes(field, &bytes),
            Err(EventError::InvalidUtf8 { field, at }),
            "{context}, byte {bad_byte:#x} inserted at {at}"
        );
    }
}
