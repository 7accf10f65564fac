//! Hostile input through the library (issue 8): every public way in gets a
//! matrix of bad inputs, and each must give a clear error, change nothing on
//! disk and never panic or overflow the stack.
//!
//! What `events_validation.rs` already checks case by case (each id rule on
//! its own, the 64 KiB edge, the timestamp range) is not repeated here. This
//! file adds, on a real directory whose every file is compared byte for byte
//! before and after each refused call:
//! - events: NUL, C1 controls, every bidirectional override and isolate and
//!   both line separators in each id field, an over-long id whose forbidden
//!   character lies past the limit, details of several MiB, timestamps at
//!   `i64::MIN`/`i64::MAX`; and events at every limit stored and read back
//!   exactly, across a reopen;
//! - deeply nested `details`: refused with a clear error or stored and read
//!   back, at depths around the payload decoder's limit and at 10,000 (run in
//!   a child process's test thread, so that a stack overflow fails this test
//!   instead of aborting the whole file);
//! - import lines (`enforcelog::import::parse_line`): truncated, concatenated
//!   and non-object JSON, BOM, CR and CRLF, duplicate and unknown keys,
//!   invalid UTF-8 in every field and in key names, raw and escaped control
//!   characters, lone surrogates, huge and deeply nested values, timestamps at
//!   and past the range, leap seconds and impossible offsets;
//! - reads with hostile arguments (limits, offsets and times at the extremes);
//! - directories: a data dir that is a file or below a file, an empty or
//!   missing one, a foreign directory, a bad or future `VERSION`, stray files
//!   named like segments (garbage, a directory), `LOCK` as a directory, a
//!   segment copied in from another store, a read-only mount (real root only
//!   bypasses permissions, so a read-only bind mount is used; skipped with a
//!   printed reason when it cannot be made), and a regular file where the
//!   checkpoints go. Writers and read-only opens are both tried on each;
//! - checkpoints: a future checkpoint format or snapshot version is ignored
//!   with a warning and rebuilt (the statistics stay exact), and the file is
//!   replaced only by a later successful checkpoint; a checkpoint copied from
//!   another store whose anchor record happens to match is not used.
//!
//! Deterministic: no randomness. `cargo test --test hostile_api`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::capture::Capture;
use common::disk::{assert_unchanged, diff, snapshot, ReadOnlyStore};
use enforcelog::event::{DETAILS_MAX_BYTES, ID_MAX_BYTES};
use enforcelog::projection::checkpoint::{Checkpoint, CHECKPOINT_VERSION};
use enforcelog::projection::{Projection, TriggerStats};
use enforcelog::timestamp::{parse_us, MAX_US, MIN_US};
use enforcelog::{
    Action, Durability, Entry, Error, Event, EventError, Field, LogOptions, Query, Store,
    StoreOptions,
};
use enforcelog_cli::import::{parse_line, LineError, Parsed};
use serde_json::{json, Map, Value};

/// 2025-11-25T00:00:00Z.
const T0_US: i64 = 1_764_028_800_000_000;
const DAY_US: i64 = 86_400_000_000;
const SEGMENT_0: &str = "00000000000000000000.log";
const CHECKPOINT: &str = "projections/trigger_stats.ckpt";

// ---------------------------------------------------------------------------
// Stores and events.

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        // The edges of the timestamp range (year 9999) are accepted here;
        // the future-skew refusal is tested in one_tenant_degrades_none.rs.
        max_future_skew: std::time::Duration::MAX,
        ..StoreOptions::default()
    }
}

/// Options with 4 KiB segments, so that a few dozen events roll.
fn small_segments() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            segment_max_bytes: 4096,
            record_max_bytes: 1024,
            ..LogOptions::default()
        },
        max_future_skew: std::time::Duration::MAX,
        ..StoreOptions::default()
    }
}

fn ev(tenant: &str, rule: &str, action: Action, at_us: i64) -> Event {
    Event::new(tenant, rule, action).at_us(at_us)
}

/// A small, varied set of events of three tenants.
fn sample_events() -> Vec<Event> {
    let mut events = Vec::new();
    for i in 0..24i64 {
        let tenant = ["acme", "globex", "initech"][(i % 3) as usize];
        let rule = ["budget", "no-prod-writes"][(i % 2) as usize];
        let action = Action::ALL[(i % 4) as usize];
        // Some far back, so the projection folds them.
        let at = T0_US - (i % 5) * 9 * DAY_US - i * 1_000_000;
        events.push(ev(tenant, rule, action, at).with_run_id(format!("run-{i}")));
    }
    events
}

/// Records `events` in `dir` (one batch each) and closes the store, which
/// checkpoints it.
fn make_store(dir: &Path, options: &StoreOptions, events: &[Event]) {
    let store = Store::open(dir, options.clone()).expect("open store");
    for event in events {
        store.record_blocking(event.clone()).expect("record");
    }
    store.close().expect("close store");
}

fn stored_events(store: &Store) -> Vec<enforcelog::StoredEvent> {
    store
        .entries(0)
        .expect("entries")
        .map(|e| match e.expect("decode entry") {
            Entry::Event(e) => e,
            Entry::Gap(g) => panic!("unexpected gap marker {g:?}"),
            Entry::Lost(l) => panic!("unexpected lost entry {l:?}"),
        })
        .collect()
}

/// What the trigger statistics must say, computed by brute force: per
/// (tenant, rule) the total, the last time, the 30-day count and the count
/// by action, as of `as_of_us`.
type Brute = BTreeMap<(String, String), (u64, Option<i64>, u64, [u64; 4])>;

fn brute_stats(events: &[Event], as_of_us: i64) -> Brute {
    let window_us = 30 * DAY_US;
    let mut out = Brute::new();
    for e in events {
        let at = e.enforced_at_us.expect("tests stamp their events");
        if at > as_of_us {
            continue;
        }
        let s = out
            .entry((e.tenant_id.clone(), e.rule_id.clone()))
            .or_insert((0, None, 0, [0; 4]));
        s.0 += 1;
        s.1 = Some(s.1.map_or(at, |m: i64| m.max(at)));
        if at > as_of_us - window_us {
            s.2 += 1;
            let i = Action::ALL.iter().position(|&a| a == e.action).unwrap();
            s.3[i] += 1;
        }
    }
    out
}

fn store_stats(store: &Store, as_of_us: i64) -> Brute {
    store
        .stats_all(Some(as_of_us))
        .expect("stats_all")
        .into_iter()
        .map(|r| {
            let key = (r.tenant_id.clone(), r.rule_id.clone());
            (
                key,
                (
                    r.total_count,
                    r.last_triggered_at_us,
                    r.trigger_count,
                    r.by_action,
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Events: refused.

fn control(field: Field, at: usize, code: u32) -> EventError {
    EventError::ControlCharacter { field, at, code }
}

fn with_id(field: Field, id: &str) -> Event {
    let mut event = ev("acme", "rule", Action::Blocked, T0_US).with_run_id("run-1");
    match field {
        Field::TenantId => event.tenant_id = id.into(),
        Field::RuleId => event.rule_id = id.into(),
        Field::RunId => event.run_id = Some(id.into()),
        other => panic!("test bug: {other} is not an id"),
    }
    event
}

/// (case, event, the error it must get).
fn refused_events() -> Vec<(String, Event, EventError)> {
    let mut cases = Vec::new();
    for field in [Field::TenantId, Field::RuleId, Field::RunId] {
        let mut id_case = |name: &str, id: String, error: EventError| {
            cases.push((format!("{field}: {name}"), with_id(field, &id), error));
        };
        id_case("NUL alone", "\0".into(), control(field, 0, 0));
        id_case("NUL after é", "é\0x".into(), control(field, 2, 0));
        id_case("ESC", "a\u{1b}[2J".into(), control(field, 1, 0x1b));
        id_case("DEL", "a\u{7f}".into(), control(field, 1, 0x7f));
        id_case("C1 NEL", "€\u{85}".into(), control(field, 3, 0x85));
        id_case("C1 CSI", "a\u{9b}31m".into(), control(field, 1, 0x9b));
        // Every bidirectional embedding, override and isolate.
        for code in (0x202A..=0x202E).chain(0x2066..=0x2069) {
            let c = char::from_u32(code).unwrap();
            id_case(
                &format!("bidi U+{code:04X}"),
                format!("é{c}moc.emca"),
                control(field, 2, code),
            );
        }
        for code in [0x2028, 0x2029] {
            let c = char::from_u32(code).unwrap();
            id_case(
                &format!("separator U+{code:04X}"),
                format!("🚦{c}x"),
                control(field, 4, code),
            );
        }
        // Length is checked first: the override past the limit is not named.
        id_case(
            "130 bytes ending in an override",
            format!("{}\u{202E}", "a".repeat(127)),
            EventError::TooLong {
                field,
                len_bytes: 130,
                max_bytes: ID_MAX_BYTES,
            },
        );
        id_case(
            "129 bytes of . * >",
            format!("{}x", "a.*>".repeat(32)),
            EventError::TooLong {
                field,
                len_bytes: 129,
                max_bytes: ID_MAX_BYTES,
            },
        );
    }
    let big = |len: usize| EventError::DetailsTooLarge {
        len_bytes: len,
        max_bytes: DETAILS_MAX_BYTES,
    };
    let huge = json!({ "k": "x".repeat(8 << 20) });
    let many_keys: Map<String, Value> = (0..20_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let many_keys = Value::Object(many_keys);
    let many_len = serde_json::to_vec(&many_keys).unwrap().len();
    let escaped = json!({ "k": "\0".repeat(11_000) });
    let escaped_len = serde_json::to_vec(&escaped).unwrap().len();
    let base = || ev("acme", "rule", Action::Killed, T0_US);
    cases.push((
        "details: 8 MiB string".into(),
        base().with_details(common::object(huge)),
        big((8 << 20) + 8),
    ));
    cases.push((
        "details: 20,000 keys".into(),
        base().with_details(common::object(many_keys)),
        big(many_len),
    ));
    // Each NUL is six bytes of JSON (\u0000): 66,008 bytes in all.
    cases.push((
        "details: 11,000 escaped NULs".into(),
        base().with_details(common::object(escaped)),
        big(escaped_len),
    ));
    for value_us in [i64::MIN, i64::MAX, MIN_US - 1, MAX_US + 1] {
        cases.push((
            format!("enforced_at {value_us}"),
            base().at_us(value_us),
            EventError::TimestampOutOfRange { value_us },
        ));
    }
    cases
}

#[test]
fn refused_events_name_their_error_and_change_nothing_on_disk() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    make_store(&dir, &options(), &sample_events()[..4]);
    let store = Store::open(&dir, options()).expect("open");
    let before = snapshot(tmp.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let cases = refused_events();
    for (name, event, expected) in &cases {
        assert_eq!(event.validate().as_ref(), Err(expected), "{name}: validate");
        let message = expected.to_string();
        assert!(
            message.starts_with(&format!("{}: ", expected.field())),
            "{name}: {message:?} does not start with its field"
        );
        match store.record_blocking(event.clone()) {
            Err(Error::InvalidEvent(e)) => assert_eq!(&e, expected, "{name}: record_blocking"),
            other => panic!("{name}: record_blocking: expected {expected:?}, got {other:?}"),
        }
        match runtime.block_on(store.record(event.clone())) {
            Err(Error::InvalidEvent(e)) => assert_eq!(&e, expected, "{name}: record"),
            other => panic!("{name}: record: expected {expected:?}, got {other:?}"),
        }
        let mut batch = store.begin();
        assert_eq!(
            batch.record(event.clone()).as_ref(),
            Err(expected),
            "{name}: batch"
        );
        assert!(batch.is_empty(), "{name}: a refused event was staged");
        assert_unchanged(&before, &snapshot(tmp.path()), name);
    }
    assert_eq!(store.next_offset(), 4);
    assert_eq!(store.metrics().recorded, 0);
    eprintln!("{} refused events checked", cases.len());
}

// ---------------------------------------------------------------------------
// Events: accepted at the limits.

/// `{"k": <text padded>}` whose compact JSON is exactly `len` bytes, with
/// control characters, NUL, an override and a line separator inside.
fn details_of_len(len: usize) -> Value {
    let nasty = "\0\u{1}\u{1b}[31m\u{202E}\u{2028}\u{feff}\"\\";
    let mut value = json!({ "k": nasty });
    let base = serde_json::to_vec(&value).unwrap().len();
    value["k"] = json!(format!("{nasty}{}", "x".repeat(len - base)));
    assert_eq!(serde_json::to_vec(&value).unwrap().len(), len, "test bug");
    value
}

fn accepted_events() -> Vec<(&'static str, Event)> {
    let max_id = "a.*>".repeat(32);
    assert_eq!(max_id.len(), ID_MAX_BYTES);
    let base = |tenant: &str| ev(tenant, "rule", Action::Aborted, T0_US);
    vec![
        (
            "every id 128 bytes of . * > and emoji",
            Event::new(max_id.clone(), "🚦".repeat(32), Action::Stopped)
                .with_run_id(">".repeat(128))
                .at_us(T0_US),
        ),
        (
            "invisible but permitted characters",
            base("a\u{200B}\u{200E}\u{200F}\u{61C}\u{FEFF}b"),
        ),
        (
            "details of exactly 64 KiB",
            base("t").with_details(common::object(details_of_len(DETAILS_MAX_BYTES))),
        ),
        (
            "details keys that are empty, NUL, overrides",
            base("t").with_details(
                enforcelog::details!({"": 1, "\0": 2, "\u{202E}": 3, "\u{2028}": [null]}),
            ),
        ),
        (
            "details numbers at the extremes",
            base("t").with_details(enforcelog::details!({
                "min": i64::MIN, "max": u64::MAX, "big": f64::MAX,
                "tiny": f64::MIN_POSITIVE, "neg": -1.5e-300, "zero": 0
            })),
        ),
        (
            "details empty object",
            base("t").with_details(enforcelog::details!({})),
        ),
        (
            "details nested as deep as allowed",
            base("t").with_details(common::object(nested_objects(
                enforcelog::event::DETAILS_MAX_DEPTH - 1,
            ))),
        ),
        ("enforced_at 0001-01-01T00:00:00Z", base("t").at_us(MIN_US)),
        (
            "enforced_at 9999-12-31T23:59:59.999999Z",
            base("t").at_us(MAX_US),
        ),
        ("enforced_at one µs before the epoch", base("t").at_us(-1)),
    ]
}

fn nested_objects(depth: usize) -> Value {
    let mut value = json!({});
    for _ in 0..depth {
        value = json!({ "a": value });
    }
    value
}

fn assert_same_event(stored: &enforcelog::StoredEvent, event: &Event, what: &str) {
    assert_eq!(stored.tenant_id, event.tenant_id, "{what}");
    assert_eq!(stored.rule_id, event.rule_id, "{what}");
    assert_eq!(stored.action, event.action, "{what}");
    assert_eq!(stored.run_id, event.run_id, "{what}");
    assert_eq!(stored.details, event.details, "{what}");
    if let Some(at) = event.enforced_at_us {
        assert_eq!(stored.enforced_at_us, at, "{what}");
    }
}

#[test]
fn events_at_every_limit_are_stored_and_read_back_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases = accepted_events();
    let events: Vec<Event> = cases.iter().map(|(_, e)| e.clone()).collect();
    make_store(tmp.path(), &options(), &events);
    let check = |store: &Store, how: &str| {
        let stored = stored_events(store);
        assert_eq!(stored.len(), cases.len(), "{how}");
        for ((name, event), stored) in cases.iter().zip(&stored) {
            assert_same_event(stored, event, &format!("{how}: {name}"));
            let page = store
                .query(&Query::tenant(event.tenant_id.clone()).rule(event.rule_id.clone()))
                .unwrap_or_else(|e| panic!("{how}: {name}: query: {e}"));
            assert!(
                page.events.iter().any(|e| e.offset == stored.offset),
                "{how}: {name}: query misses it"
            );
        }
        assert_eq!(
            store_stats(store, MAX_US),
            brute_stats(&events, MAX_US),
            "{how}: stats"
        );
        assert_eq!(
            store_stats(store, T0_US),
            brute_stats(&events, T0_US),
            "{how}: stats"
        );
    };
    let store = Store::open_read_only(tmp.path()).expect("open read-only");
    check(&store, "read-only, from the checkpoint");
    drop(store);
    let store = Store::open(tmp.path(), options()).expect("reopen");
    store.rebuild_projections().expect("rebuild");
    check(&store, "writer, rebuilt from the log");
    store.close().expect("close");
    let report = enforcelog::verify_dir(tmp.path()).expect("verify");
    assert!(report.is_clean(), "{report:?}");
}

// ---------------------------------------------------------------------------
// Deeply nested details.

/// `{"k": [[[...]]]}` with `depth` nested arrays.
fn nested_arrays(depth: usize) -> Value {
    let mut value = json!([]);
    for _ in 1..depth {
        value = Value::Array(vec![value]);
    }
    // Not `json!({ "k": value })`: that serialises `value` again, by
    // recursion, in this thread.
    let mut object = serde_json::Map::new();
    object.insert("k".into(), value);
    Value::Object(object)
}

/// An event whose details nest `depth` arrays deep is either refused as
/// bad details with nothing written, or stored so that every read path
/// returns it (entries, query, stats, a reopen) and the reads of another
/// tenant, whose event follows it in the log, keep working. Returns how it
/// was handled, or everything that went wrong.
fn check_deep_details(depth: usize) -> Result<&'static str, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path(), options()).expect("open");
    let before = snapshot(tmp.path());
    // Built afresh for each use: cloning (or dropping) a value thousands of
    // levels deep recurses in this thread, in serde_json, not in the store.
    let event =
        || ev("t", "r", Action::Killed, T0_US).with_details(common::object(nested_arrays(depth)));
    let offset = match store.record_blocking(event()) {
        Err(Error::InvalidEvent(e)) if e.field() == Field::Details => {
            let mut batch = store.begin();
            if batch.record(event()).is_ok() {
                return Err("record refused it but a batch accepted it".into());
            }
            if let Some(d) = diff(&before, &snapshot(tmp.path())) {
                return Err(format!("refused, but the disk changed: {d}"));
            }
            return Ok("refused");
        }
        Err(other) => return Err(format!("refused with the wrong error: {other}")),
        Ok(offset) => offset,
    };
    store
        .record_blocking(ev("other", "r", Action::Blocked, T0_US))
        .map_err(|e| format!("recording another tenant's event: {e}"))?;
    let mut problems = Vec::new();
    match store.entries(offset).map(|mut it| it.next()) {
        Ok(Some(Ok(Entry::Event(e)))) if e.details == event().details => {}
        Ok(Some(Ok(other))) => problems.push(format!(
            "read back something else: {:.80}",
            format!("{other:?}")
        )),
        Ok(Some(Err(e))) => problems.push(format!("accepted, then reading it back fails: {e}")),
        Ok(None) => problems.push("nothing at its offset".into()),
        Err(e) => problems.push(format!("entries: {e}")),
    }
    for tenant in ["t", "other"] {
        match store.query(&Query::tenant(tenant)) {
            Ok(page) if page.events.len() == 1 => {}
            Ok(page) => problems.push(format!(
                "query({tenant:?}) returned {} events",
                page.events.len()
            )),
            Err(e) => problems.push(format!("query({tenant:?}) fails: {e}")),
        }
        match store.stats(tenant, "r", Some(T0_US)) {
            Ok(stats) if stats.total_count == 1 => {}
            Ok(stats) => problems.push(format!("stats({tenant:?}) count {}", stats.total_count)),
            Err(e) => problems.push(format!("stats({tenant:?}) fail: {e}")),
        }
    }
    if problems.is_empty() {
        store.close().map_err(|e| format!("close: {e}"))?;
        let reopened = Store::open_read_only(tmp.path()).map_err(|e| format!("reopen: {e}"))?;
        match reopened.query(&Query::tenant("t")) {
            Ok(page) if page.events.len() == 1 => {}
            other => problems.push(format!("query after reopen: {other:?}")),
        }
    }
    if problems.is_empty() {
        Ok("stored and read back")
    } else {
        Err(problems.join("; "))
    }
}

/// Depths on both sides of what the payload decoder reads (the MessagePack
/// decoder stops at 1024 levels, two of which the payload itself uses), and
/// of what `serde_json` parses from text (128).
#[test]
fn details_nested_around_the_decoder_limit_are_refused_or_read_back() {
    let mut failures = Vec::new();
    for depth in [127, 128, 129, 1_000, 1_021, 1_022, 1_023, 2_000] {
        match check_deep_details(depth) {
            Ok(how) => eprintln!("depth {depth}: {how}"),
            Err(why) => failures.push(format!("depth {depth}: {why}")),
        }
    }
    assert!(
        failures.is_empty(),
        "nested details must be refused as bad details or stay readable:\n  {}",
        failures.join("\n  ")
    );
}

const DEEP_CHILD_TEST: &str = "details_nested_10000_deep_in_the_test_thread";

/// Runs in a test thread of its own (the harness's 2 MiB stack), started by
/// `details_nested_10000_deep_never_overflow_the_stack` in a child process
/// so that a stack overflow, which aborts the process, is reported as that
/// test's failure rather than killing every test of this file.
#[test]
#[ignore = "run in a child process by details_nested_10000_deep_never_overflow_the_stack"]
fn details_nested_10000_deep_in_the_test_thread() {
    // `validate` borrows; the store takes the event apart without recursion
    // when it refuses it (see `check_deep_details`).
    let refused = Store::open(tempfile::tempdir().expect("tempdir").path(), options())
        .expect("open")
        .record_blocking(
            ev("t", "r", Action::Killed, T0_US).with_details(common::object(nested_arrays(10_000))),
        );
    eprintln!("record: {refused:?}");
    match check_deep_details(10_000) {
        Ok(how) => eprintln!("depth 10000: {how}"),
        Err(why) => panic!("depth 10000: {why}"),
    }
}

#[test]
fn details_nested_10000_deep_never_overflow_the_stack() {
    let exe = std::env::current_exe().expect("current test binary");
    let out = Command::new(exe)
        .args([DEEP_CHILD_TEST, "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env_remove("RUST_MIN_STACK")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let signal = {
        use std::os::unix::process::ExitStatusExt;
        out.status.signal()
    };
    assert!(
        out.status.success(),
        "the 10,000-deep details case failed ({}):\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}",
        match signal {
            Some(6) => "SIGABRT: the process aborted, e.g. on a stack overflow".to_string(),
            Some(s) => format!("killed by signal {s}"),
            None => format!("exit {:?}", out.status.code()),
        }
    );
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

// ---------------------------------------------------------------------------
// Import lines.

/// What a line must give.
#[derive(Debug)]
enum Want {
    /// Refused, naming this field, with this fragment in the reason.
    Refused(&'static str, &'static str),
    /// This event.
    Event(Event),
    Blank,
    Gap,
}

/// `{"tenant_id":"t","rule_id":"r","action_taken":"kill"}` with `fields`
/// (raw JSON values) replacing or following those three.
fn line(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut all: Vec<(&[u8], &[u8])> = vec![
        (b"tenant_id", b"\"t\""),
        (b"rule_id", b"\"r\""),
        (b"action_taken", b"\"kill\""),
    ];
    for &(key, value) in fields {
        match all.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => all.push((key, value)),
        }
    }
    raw_object(&all)
}

fn raw_object(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = b"{".to_vec();
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value);
    }
    out.push(b'}');
    out
}

fn quoted(text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!(text)).unwrap()
}

fn base_event() -> Event {
    Event::new("t", "r", Action::Killed)
}

fn import_cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    use Want::{Blank, Refused};
    let good = line(&[]);
    let with_at = |at: &str| line(&[(b"enforced_at", &quoted(at))]);
    let at_event = |us: i64| Want::Event(base_event().at_us(us));
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes();
    let deep_details = format!("{{\"k\":{}}}", String::from_utf8_lossy(&deep)).into_bytes();
    let big_details = format!("{{\"k\":\"{}\"}}", "x".repeat(8 << 20)).into_bytes();
    let max_details = serde_json::to_vec(&details_of_len(DETAILS_MAX_BYTES)).unwrap();
    let over_details = serde_json::to_vec(&details_of_len(DETAILS_MAX_BYTES + 1)).unwrap();
    let mut two = good.clone();
    two.extend_from_slice(&good);
    let mut cr_between = good.clone();
    cr_between.push(b'\r');
    cr_between.extend_from_slice(&good);
    let mut with_cr = good.clone();
    with_cr.push(b'\r');
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(&good);
    let mut comma = good.clone();
    comma.push(b',');
    let mut in_array = b"[".to_vec();
    in_array.extend_from_slice(&good);
    in_array.push(b']');
    let truncated = &good[..good.len() - 1];
    vec![
        // The line as a whole.
        ("empty", Vec::new(), Blank),
        ("blanks", b" \t \r".to_vec(), Blank),
        ("CRLF end", with_cr, Want::Event(base_event())),
        (
            "BOM before the object",
            bom,
            Refused("json", "expected value"),
        ),
        ("two objects", two, Refused("json", "trailing characters")),
        (
            "two objects split by a bare CR",
            cr_between,
            Refused("json", "trailing characters"),
        ),
        (
            "object then comma",
            comma,
            Refused("json", "trailing characters"),
        ),
        (
            "object inside an array",
            in_array,
            Refused("json", "expected a JSON object"),
        ),
        (
            "a number",
            b"42".to_vec(),
            Refused("json", "expected a JSON object"),
        ),
        (
            "a string",
            b"\"{}\"".to_vec(),
            Refused("json", "expected a JSON object"),
        ),
        (
            "null",
            b"null".to_vec(),
            Refused("json", "expected a JSON object"),
        ),
        (
            "true",
            b"true".to_vec(),
            Refused("json", "expected a JSON object"),
        ),
        (
            "a NUL byte",
            b"\0".to_vec(),
            Refused("json", "expected value"),
        ),
        ("just a brace", b"{".to_vec(), Refused("json", "EOF")),
        (
            "cut inside a key",
            b"{\"tena".to_vec(),
            Refused("json", "EOF"),
        ),
        (
            "cut inside a value",
            b"{\"tenant_id\":\"t".to_vec(),
            Refused("tenant_id", "EOF"),
        ),
        (
            "cut before the last brace",
            truncated.to_vec(),
            Refused("json", "EOF"),
        ),
        (
            "empty object",
            b"{}".to_vec(),
            Refused("tenant_id", "missing"),
        ),
        // Keys.
        (
            "rule_id twice",
            line(&[(b"rule_id", b"\"r\""), (b"x", b"1")]).replacen_key(b"x", b"rule_id"),
            Refused("rule_id", "more than once"),
        ),
        (
            "details twice",
            line(&[(b"details", b"{}"), (b"x", b"{}")]).replacen_key(b"x", b"details"),
            Refused("details", "more than once"),
        ),
        (
            "enforced_at twice",
            line(&[(b"enforced_at", b"null"), (b"x", b"null")]).replacen_key(b"x", b"enforced_at"),
            Refused("enforced_at", "more than once"),
        ),
        (
            "unknown key twice",
            line(&[(b"x", b"1"), (b"y", b"1")]).replacen_key(b"y", b"x"),
            Refused("\"x\"", "more than once"),
        ),
        (
            "key in another case",
            line(&[(b"Tenant_ID", b"\"u\"")]),
            Refused("\"Tenant_ID\"", "unknown field"),
        ),
        (
            "key with a trailing space",
            line(&[(b"tenant_id ", b"\"u\"")]),
            Refused("\"tenant_id \"", "unknown field"),
        ),
        (
            "empty key",
            line(&[(b"", b"1")]),
            Refused("\"\"", "unknown field"),
        ),
        (
            "key with an escaped NUL",
            line(&[(b"tenant_id\\u0000", b"\"u\"")]),
            Refused("\"tenant_id\\0\"", "unknown field"),
        ),
        (
            "key not UTF-8",
            line(&[(b"t\xffx", b"1")]),
            Refused("\"t\u{FFFD}x\"", "unknown field"),
        ),
        // Invalid UTF-8 in each field.
        (
            "tenant_id not UTF-8",
            line(&[(b"tenant_id", b"\"ok\xc3\x28\"")]),
            Refused("tenant_id", "not valid UTF-8 (at byte 2)"),
        ),
        (
            "rule_id not UTF-8",
            line(&[(b"rule_id", b"\"\xed\xa0\x80\"")]),
            Refused("rule_id", "not valid UTF-8 (at byte 0)"),
        ),
        (
            "action_taken not UTF-8",
            line(&[(b"action_taken", b"\"kil\xff\"")]),
            Refused("action_taken", "not valid UTF-8 (at byte 3)"),
        ),
        (
            "run_id not UTF-8",
            line(&[(b"run_id", b"\"\xc0\x80\"")]),
            Refused("run_id", "not valid UTF-8 (at byte 0)"),
        ),
        (
            "enforced_at not UTF-8",
            line(&[(b"enforced_at", b"\"2026\xff\"")]),
            Refused("enforced_at", "not valid UTF-8 (at byte 4)"),
        ),
        (
            "details value not UTF-8",
            line(&[(b"details", b"{\"a\":\"\xfe\"}")]),
            Refused("details", ""),
        ),
        (
            "details key not UTF-8",
            line(&[(b"details", b"{\"\xfe\":1}")]),
            Refused("details", ""),
        ),
        // Control characters, raw and escaped.
        (
            "raw NUL in a string",
            line(&[(b"tenant_id", b"\"a\0b\"")]),
            Refused("tenant_id", "control character"),
        ),
        (
            "raw tab in a string",
            line(&[(b"rule_id", b"\"a\tb\"")]),
            Refused("rule_id", "control character"),
        ),
        (
            "escaped NUL",
            line(&[(b"tenant_id", b"\"a\\u0000\"")]),
            Refused("tenant_id", "U+0000 at byte 1"),
        ),
        (
            "escaped ESC",
            line(&[(b"run_id", b"\"\\u001b[0m\"")]),
            Refused("run_id", "U+001B at byte 0"),
        ),
        (
            "escaped NEL",
            line(&[(b"rule_id", b"\"x\\u0085\"")]),
            Refused("rule_id", "U+0085 at byte 1"),
        ),
        (
            "escaped RLO",
            line(&[(b"rule_id", b"\"ab\\u202ecd\"")]),
            Refused("rule_id", "U+202E at byte 2"),
        ),
        (
            "escaped FSI",
            line(&[(b"tenant_id", b"\"\\u2068\"")]),
            Refused("tenant_id", "U+2068 at byte 0"),
        ),
        (
            "raw LINE SEPARATOR",
            line(&[(b"tenant_id", "\"a\u{2028}b\"".as_bytes())]),
            Refused("tenant_id", "U+2028 at byte 1"),
        ),
        (
            "raw PARAGRAPH SEPARATOR",
            line(&[(b"run_id", "\"\u{2029}\"".as_bytes())]),
            Refused("run_id", "U+2029 at byte 0"),
        ),
        (
            "lone high surrogate",
            line(&[(b"tenant_id", b"\"\\ud800\"")]),
            Refused("tenant_id", "not valid UTF-8"),
        ),
        (
            "lone low surrogate",
            line(&[(b"rule_id", b"\"a\\udc00\"")]),
            Refused("rule_id", "not valid UTF-8 (at byte 1)"),
        ),
        (
            "surrogates reversed",
            line(&[(b"run_id", b"\"\\udc00\\ud800\"")]),
            Refused("run_id", "not valid UTF-8"),
        ),
        (
            "surrogate pair",
            line(&[(b"tenant_id", b"\"\\ud83d\\udea6\"")]),
            Want::Event(Event::new("🚦", "r", Action::Killed)),
        ),
        // Sizes and depth.
        (
            "tenant_id of 128 bytes",
            line(&[(b"tenant_id", &quoted(&"a.*>".repeat(32)))]),
            Want::Event(Event::new("a.*>".repeat(32), "r", Action::Killed)),
        ),
        (
            "tenant_id of 129 bytes",
            line(&[(b"tenant_id", &quoted(&"x".repeat(129)))]),
            Refused("tenant_id", "129 bytes is longer than 128"),
        ),
        (
            "tenant_id of 1 MiB",
            line(&[(b"tenant_id", &quoted(&"x".repeat(1 << 20)))]),
            Refused("tenant_id", "1048576 bytes"),
        ),
        (
            "details of 64 KiB",
            line(&[(b"details", &max_details)]),
            Want::Event(
                base_event().with_details(common::object(details_of_len(DETAILS_MAX_BYTES))),
            ),
        ),
        (
            "details of 64 KiB + 1",
            line(&[(b"details", &over_details)]),
            Refused("details", "65537 bytes"),
        ),
        (
            "details of 8 MiB",
            line(&[(b"details", &big_details)]),
            Refused("details", "more than 65536"),
        ),
        (
            "details nested 10,000 deep",
            line(&[(b"details", &deep_details)]),
            Refused("details", "recursion limit"),
        ),
        (
            "tenant_id nested 10,000 deep",
            line(&[(b"tenant_id", &deep)]),
            Refused("tenant_id", "invalid type"),
        ),
        (
            "unknown key nested 10,000 deep",
            line(&[(b"zzz", &deep)]),
            Refused("\"zzz\"", "unknown field"),
        ),
        (
            "offset nested 10,000 deep (ignored)",
            line(&[(b"offset", &deep)]),
            Want::Event(base_event()),
        ),
        (
            "details number out of range",
            line(&[(b"details", b"{\"n\":1e400}")]),
            Refused("details", "number out of range"),
        ),
        // Time.
        (
            "first representable time",
            with_at("0001-01-01T00:00:00Z"),
            at_event(MIN_US),
        ),
        (
            "last representable time",
            with_at("9999-12-31T23:59:59.999999Z"),
            at_event(MAX_US),
        ),
        (
            "last time, nanoseconds truncated",
            with_at("9999-12-31T23:59:59.999999999Z"),
            at_event(MAX_US),
        ),
        (
            "year 0",
            with_at("0000-12-31T23:59:59Z"),
            Refused("enforced_at", "outside years 0001..=9999"),
        ),
        (
            "year 10000 through a zone",
            with_at("9999-12-31T23:59:59.999999-00:01"),
            Refused("enforced_at", "outside years"),
        ),
        (
            "year 10000",
            with_at("10000-01-01T00:00:00Z"),
            Refused("enforced_at", "not an RFC 3339 time"),
        ),
        (
            "negative year",
            with_at("-0001-01-01T00:00:00Z"),
            Refused("enforced_at", "not an RFC 3339 time"),
        ),
        (
            "leap second",
            with_at("2016-12-31T23:59:60Z"),
            at_event(parse_us("2016-12-31T23:59:59.999999Z").unwrap()),
        ),
        (
            "second 60 that is no leap second",
            with_at("2026-06-30T22:59:60Z"),
            Refused("enforced_at", "not an RFC 3339 time"),
        ),
        (
            "offset +24:00",
            with_at("2026-01-01T00:00:00+24:00"),
            Refused("enforced_at", "not an RFC 3339 time"),
        ),
        (
            "offset -00:00",
            with_at("2026-01-01T00:00:00-00:00"),
            at_event(parse_us("2026-01-01T00:00:00Z").unwrap()),
        ),
        (
            "time as a number",
            line(&[(b"enforced_at", b"1767225600")]),
            Refused("enforced_at", "invalid type"),
        ),
        (
            "empty time",
            with_at(""),
            Refused("enforced_at", "not an RFC 3339 time"),
        ),
        // Kind.
        (
            "a gap line",
            b"{\"kind\":\"gap\",\"dropped\":3}".to_vec(),
            Want::Gap,
        ),
        (
            "kind in capitals",
            line(&[(b"kind", b"\"GAP\"")]),
            Refused("kind", "must be"),
        ),
    ]
}

/// Replaces the first key `from` of a line built by [`line`] by `to`, so a
/// line can hold a key twice.
trait ReplaceKey {
    fn replacen_key(self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceKey for Vec<u8> {
    fn replacen_key(self, from: &[u8], to: &[u8]) -> Vec<u8> {
        let mut needle = b"\"".to_vec();
        needle.extend_from_slice(from);
        needle.extend_from_slice(b"\":");
        let at = self
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("test bug: key not in line");
        let mut out = self[..at + 1].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&self[at + 1 + from.len()..]);
        out
    }
}

#[test]
fn import_line_matrix_refuses_naming_the_field_or_parses_exactly() {
    let cases = import_cases();
    let mut accepted = Vec::new();
    let mut failures = Vec::new();
    for (name, bytes, want) in &cases {
        let got = parse_line(7, bytes);
        let ok = match (want, &got) {
            (
                Want::Refused(field, fragment),
                Err(LineError {
                    line,
                    field: f,
                    reason,
                }),
            ) => {
                *line == 7
                    && f == field
                    && reason.contains(fragment)
                    && !reason.contains("at line 1")
            }
            (Want::Event(expected), Ok(Parsed::Event(event))) => {
                let same = **event == *expected;
                if same {
                    accepted.push((*name, expected.clone()));
                }
                same
            }
            (Want::Blank, Ok(Parsed::Blank)) | (Want::Gap, Ok(Parsed::Gap)) => true,
            _ => false,
        };
        if !ok {
            let shown: String = String::from_utf8_lossy(bytes).chars().take(80).collect();
            let got = format!("{got:?}");
            failures.push(format!(
                "{name}: {shown:?}\n    want {:.200}\n    got  {got:.200}",
                format!("{want:?}")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} import lines misjudged:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );

    // What was accepted is stored and read back as parsed.
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = Store::open(tmp.path(), options()).expect("open");
    let mut batch = store.begin();
    for (name, event) in &accepted {
        batch
            .record(event.clone())
            .unwrap_or_else(|e| panic!("{name}: parsed but refused by the store: {e}"));
    }
    batch.commit_blocking().expect("commit");
    for ((name, event), stored) in accepted.iter().zip(stored_events(&store)) {
        assert_same_event(&stored, event, name);
    }
}

/// A refusal is printed for an operator (`enforcelog import` writes each
/// one on stderr): its text must be one line, free of control characters
/// (an escape sequence or a newline copied from the input could repaint the
/// terminal or forge another `line N:` report) and short, whatever the
/// input's keys and values hold.
#[test]
fn import_refusals_are_one_short_printable_line() {
    let long_key = "k".repeat(1 << 20);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "unknown key with ESC and a newline",
            line(&[(b"\\u001b[2J\\nline 99: tenant_id", b"1")]),
        ),
        (
            "unknown key with an escaped CR",
            line(&[(b"a\\rline 1: ok", b"1")]),
        ),
        (
            "duplicate key with ESC",
            line(&[(b"\\u001b]0;title\\u0007", b"1"), (b"y", b"2")])
                .replacen_key(b"y", b"\\u001b]0;title\\u0007"),
        ),
        ("unknown key of 1 MiB", line(&[(long_key.as_bytes(), b"1")])),
        ("a string line with ESC", b"\"\\u001b[2J\"".to_vec()),
        (
            "an action with ESC",
            line(&[(b"action_taken", b"\"\\u001b[31mkill\"")]),
        ),
        (
            "a time with a newline",
            line(&[(b"enforced_at", b"\"2026\\nline 2: x\"")]),
        ),
        (
            "a details number too large",
            line(&[(b"details", b"{\"\\u001b\":1e999}")]),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        let text = match parse_line(3, bytes) {
            Err(e) => e.to_string(),
            Ok(p) => {
                failures.push(format!("{name}: accepted: {p:?}"));
                continue;
            }
        };
        let bad = text
            .chars()
            .find(|c| c.is_control())
            .map(|c| format!("control character U+{:04X}", u32::from(c)));
        let problem =
            bad.or_else(|| (text.len() > 1024).then(|| format!("{} bytes long", text.len())));
        if let Some(problem) = problem {
            let shown: String = text.chars().take(120).collect();
            failures.push(format!("{name}: {problem}: {shown:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "import refusals unsafe to print:\n  {}",
        failures.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Reads with hostile arguments.

#[test]
fn reads_with_hostile_arguments_fail_cleanly_and_change_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = vec![
        ev("t", "r", Action::Killed, MIN_US),
        ev("t", "r", Action::Blocked, MAX_US),
        ev("t", "r", Action::Stopped, T0_US),
        ev("u", "r", Action::Stopped, T0_US),
    ];
    make_store(tmp.path(), &options(), &events);
    let before = snapshot(tmp.path());
    let store = Store::open_read_only(tmp.path()).expect("open read-only");
    let t = || Query::tenant("t");
    let invalid_filter = |e: &Error| matches!(e, Error::InvalidFilter(_));
    let invalid_limit =
        |e: &Error| matches!(e, Error::InvalidOptions { name, .. } if *name == "limit");
    type Check = fn(&Error) -> bool;
    let refused: Vec<(&str, Query, Check)> = vec![
        ("limit 0", t().limit(0), invalid_limit),
        ("limit 100,001", t().limit(100_001), invalid_limit),
        ("limit usize::MAX", t().limit(usize::MAX), invalid_limit),
        ("empty tenant", Query::tenant(""), invalid_filter),
        (
            "tenant of 129 bytes",
            Query::tenant("x".repeat(129)),
            invalid_filter,
        ),
        (
            "tenant with an override",
            Query::tenant("t\u{202E}"),
            invalid_filter,
        ),
        ("rule with NUL", t().rule("\0"), invalid_filter),
        (
            "run with a line separator",
            t().run_id("\u{2028}"),
            invalid_filter,
        ),
    ];
    for (name, query, check) in refused {
        match store.query(&query) {
            Err(e) if check(&e) => {}
            other => panic!("{name}: expected a clear refusal, got {other:?}"),
        }
    }
    let count = |q: Query| store.query(&q).map(|p| p.events.len());
    let empty_or_all: Vec<(&str, Query, usize)> = vec![
        ("since i64::MAX", t().since_us(i64::MAX), 0),
        ("until i64::MIN", t().until_us(i64::MIN), 0),
        ("since after until", t().since_us(5).until_us(4), 0),
        ("since = until", t().since_us(T0_US).until_us(T0_US), 0),
        (
            "whole time range",
            t().since_us(i64::MIN).until_us(i64::MAX),
            3,
        ),
        ("up to the last µs", t().until_us(MAX_US), 2),
        ("from the first µs", t().since_us(MIN_US), 3),
        (
            "offsets reversed",
            t().offsets(std::ops::Range { start: 3, end: 1 }),
            0,
        ),
        ("from offset u64::MAX", t().from_offset(u64::MAX), 0),
        ("offsets to u64::MAX", t().offsets(2..u64::MAX), 1),
        ("limit 100,000", t().limit(100_000), 3),
    ];
    for (name, query, n) in empty_or_all {
        assert_eq!(count(query).map_err(|e| e.to_string()), Ok(n), "{name}");
    }
    for (name, result) in [
        ("stats of an empty tenant", store.stats("", "r", None).err()),
        (
            "stats of a rule with NUL",
            store.stats("t", "a\0", None).err(),
        ),
        (
            "stats_for_tenant with an override",
            store.stats_for_tenant("\u{202D}", None).err(),
        ),
    ] {
        assert!(
            matches!(result, Some(Error::InvalidFilter(_))),
            "{name}: {result:?}"
        );
    }
    for (as_of, total) in [(i64::MIN, 0), (MIN_US, 1), (i64::MAX, 3), (MAX_US, 3)] {
        let stats = store.stats("t", "r", Some(as_of)).expect("stats");
        assert_eq!(stats.total_count, total, "as of {as_of}");
        // Tenant "u" has one event, at T0.
        let all = store.stats_all(Some(as_of)).expect("stats_all");
        assert_eq!(
            all.iter().map(|r| r.total_count).sum::<u64>(),
            total + u64::from(as_of >= T0_US),
            "stats_all as of {as_of}"
        );
    }
    assert!(matches!(
        store.subscribe(u64::MAX),
        Err(Error::OffsetOutOfRange { .. })
    ));
    match store.entries(u64::MAX) {
        Err(Error::OffsetOutOfRange { .. }) => {}
        Err(e) => panic!("entries(u64::MAX): {e}"),
        Ok(mut it) => assert!(
            it.next().is_none(),
            "entries past the end returned something"
        ),
    }
    assert_eq!(store.entries(4).expect("entries at the end").count(), 0);
    drop(store);
    assert_unchanged(&before, &snapshot(tmp.path()), "read-only reads");
}

// ---------------------------------------------------------------------------
// Directories.

type ErrorCheck = fn(&Error) -> bool;

/// What opening a bad directory must give.
#[derive(Clone, Copy)]
enum Open {
    /// An error matching the check whose message holds the fragment.
    Refused(ErrorCheck, &'static str),
    /// The open works (reads see the store's events).
    Works,
    /// Not tried (a writer would create a store there, as it should).
    Skip,
}

struct DirCase {
    name: &'static str,
    /// Builds the case below `root` (scratch space in `scratch`); returns
    /// the data directory.
    setup: fn(root: &Path, scratch: &Path) -> PathBuf,
    writer: Open,
    reader: Open,
}

fn is_io(e: &Error) -> bool {
    matches!(e, Error::Io { .. })
}

fn is_not_a_store(e: &Error) -> bool {
    matches!(e, Error::NotALogDirectory { .. })
}

fn is_io_or_not_a_store(e: &Error) -> bool {
    is_io(e) || is_not_a_store(e)
}

fn is_version(e: &Error) -> bool {
    matches!(e, Error::UnsupportedVersion { .. })
}

fn is_corruption(e: &Error) -> bool {
    matches!(e, Error::Corruption { .. })
}

fn is_io_or_corruption(e: &Error) -> bool {
    is_io(e) || is_corruption(e)
}

/// A store of four events in `root/store`.
fn small_store(root: &Path) -> PathBuf {
    let dir = root.join("store");
    make_store(&dir, &options(), &sample_events()[..4]);
    dir
}

/// Events of equal encoded size, so that two stores roll at the same
/// offsets; `tenant` must be one byte.
fn same_size_events(tenant: &str, n: usize) -> Vec<Event> {
    assert_eq!(tenant.len(), 1);
    (0..n)
        .map(|i| ev(tenant, "rule", Action::Blocked, T0_US + i as i64))
        .collect()
}

/// Records same-size events in `dir` until it has two segments; returns the
/// second one's base offset.
fn store_with_two_segments(dir: &Path, tenant: &str) -> u64 {
    let store = Store::open(dir, small_segments()).expect("open");
    for event in same_size_events(tenant, 1000) {
        store.record_blocking(event).expect("record");
        if segment_bases(dir).len() == 2 {
            break;
        }
    }
    store.close().expect("close");
    let bases = segment_bases(dir);
    assert_eq!(bases.len(), 2, "test bug: no roll");
    bases[1]
}

fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .expect("list")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

fn dir_cases() -> Vec<DirCase> {
    vec![
        DirCase {
            name: "data dir is a regular file",
            setup: |root, _| {
                let dir = root.join("store");
                fs::write(&dir, b"my notes, not a store").unwrap();
                dir
            },
            writer: Open::Refused(is_io_or_not_a_store, "store"),
            reader: Open::Refused(is_io_or_not_a_store, "store"),
        },
        DirCase {
            name: "data dir below a regular file",
            setup: |root, _| {
                fs::write(root.join("file"), b"a file").unwrap();
                root.join("file").join("store")
            },
            writer: Open::Refused(is_io_or_not_a_store, "file/store"),
            reader: Open::Refused(is_io_or_not_a_store, "file/store"),
        },
        DirCase {
            name: "missing data dir",
            setup: |root, _| root.join("missing"),
            writer: Open::Skip,
            reader: Open::Refused(is_not_a_store, "does not exist"),
        },
        DirCase {
            name: "empty data dir",
            setup: |root, _| {
                fs::create_dir(root.join("empty")).unwrap();
                root.join("empty")
            },
            writer: Open::Skip,
            reader: Open::Refused(is_not_a_store, "VERSION"),
        },
        DirCase {
            name: "someone's directory",
            setup: |root, _| {
                let dir = root.join("home");
                fs::create_dir(&dir).unwrap();
                fs::write(dir.join("notes.txt"), b"dear diary").unwrap();
                fs::create_dir(dir.join("photos")).unwrap();
                dir
            },
            writer: Open::Refused(is_not_a_store, "not empty"),
            reader: Open::Refused(is_not_a_store, "VERSION"),
        },
        DirCase {
            name: "VERSION from the future",
            setup: |root, _| {
                let dir = small_store(root);
                fs::write(dir.join("VERSION"), b"enforcelog-log 99\n").unwrap();
                dir
            },
            writer: Open::Refused(is_version, "99"),
            reader: Open::Refused(is_version, "99"),
        },
        DirCase {
            name: "VERSION of 1 MiB of garbage",
            setup: |root, _| {
                let dir = small_store(root);
                fs::write(dir.join("VERSION"), vec![0xff; 1 << 20]).unwrap();
                dir
            },
            writer: Open::Refused(is_version, "VERSION"),
            reader: Open::Refused(is_version, "VERSION"),
        },
        DirCase {
            name: "VERSION is a directory",
            setup: |root, _| {
                let dir = small_store(root);
                fs::remove_file(dir.join("VERSION")).unwrap();
                fs::create_dir(dir.join("VERSION")).unwrap();
                dir
            },
            writer: Open::Refused(is_io, "VERSION"),
            reader: Open::Refused(is_io, "VERSION"),
        },
        DirCase {
            name: "LOCK is a directory",
            setup: |root, _| {
                let dir = small_store(root);
                fs::remove_file(dir.join("LOCK")).unwrap();
                fs::create_dir(dir.join("LOCK")).unwrap();
                dir
            },
            writer: Open::Refused(is_io, "LOCK"),
            reader: Open::Works,
        },
        DirCase {
            name: "a file named like the next segment holding garbage",
            setup: |root, _| {
                let dir = small_store(root);
                fs::write(
                    dir.join(segment_name(4)),
                    b"not a segment at all, just text",
                )
                .unwrap();
                dir
            },
            writer: Open::Refused(is_corruption, "00000000000000000004.log"),
            reader: Open::Refused(is_corruption, "00000000000000000004.log"),
        },
        DirCase {
            name: "a file named like a later segment holding garbage",
            setup: |root, _| {
                let dir = small_store(root);
                fs::write(dir.join(segment_name(7)), b"random").unwrap();
                dir
            },
            writer: Open::Refused(is_corruption, "00000000000000000007.log"),
            reader: Open::Refused(is_corruption, "00000000000000000007.log"),
        },
        DirCase {
            name: "a directory named like the next segment",
            setup: |root, _| {
                let dir = small_store(root);
                fs::create_dir(dir.join(segment_name(4))).unwrap();
                dir
            },
            writer: Open::Refused(is_io_or_corruption, "00000000000000000004.log"),
            reader: Open::Refused(is_io_or_corruption, "00000000000000000004.log"),
        },
        DirCase {
            name: "a segment of another store after ours",
            setup: |root, scratch| {
                let other = scratch.join("other");
                let base = store_with_two_segments(&other, "b");
                let dir = root.join("store");
                make_store(
                    &dir,
                    &small_segments(),
                    &same_size_events("a", base as usize),
                );
                assert_eq!(segment_bases(&dir), [0], "test bug: our store rolled");
                let name = segment_name(base);
                fs::copy(other.join(&name), dir.join(&name)).unwrap();
                dir
            },
            writer: Open::Refused(is_corruption, "another store"),
            reader: Open::Refused(is_corruption, "another store"),
        },
        DirCase {
            name: "a segment of another store in place of ours",
            setup: |root, scratch| {
                let other = scratch.join("other");
                store_with_two_segments(&other, "b");
                let dir = root.join("store");
                store_with_two_segments(&dir, "a");
                fs::copy(other.join(SEGMENT_0), dir.join(SEGMENT_0)).unwrap();
                dir
            },
            writer: Open::Refused(is_corruption, SEGMENT_0),
            reader: Open::Refused(is_corruption, SEGMENT_0),
        },
    ]
}

/// Opens `dir` (as a writer or read-only) and checks the outcome against
/// `want`; the caller checks that the disk did not change.
fn check_open(dir: &Path, writer: bool, want: Open) -> Result<(), String> {
    let result = if writer {
        Store::open(dir, options())
    } else {
        Store::open_read_only(dir)
    };
    match (want, result) {
        (Open::Skip, _) => Ok(()),
        (Open::Refused(check, fragment), Err(e)) => {
            let text = e.to_string();
            if check(&e) && text.contains(fragment) {
                Ok(())
            } else {
                Err(format!(
                    "wrong error {e:?} (want {fragment:?} in the message)"
                ))
            }
        }
        (Open::Refused(_, fragment), Ok(store)) => {
            let n = store.next_offset();
            let _ = store.close();
            Err(format!(
                "opened ({n} entries) instead of refusing with {fragment:?}"
            ))
        }
        (Open::Works, Ok(store)) => {
            let events = store.entries(0).map(|it| it.count()).unwrap_or(0);
            if writer {
                let _ = store.close();
            }
            if events == 0 {
                return Err("opened but shows no event".into());
            }
            Ok(())
        }
        (Open::Works, Err(e)) => Err(format!("refused: {e}")),
    }
}

#[test]
fn bad_store_directories_are_refused_and_left_untouched() {
    let mut failures = Vec::new();
    let cases = dir_cases();
    for case in &cases {
        for writer in [false, true] {
            let want = if writer { case.writer } else { case.reader };
            if matches!(want, Open::Skip) {
                continue;
            }
            let root = tempfile::tempdir().expect("tempdir");
            let scratch = tempfile::tempdir().expect("tempdir");
            let dir = (case.setup)(root.path(), scratch.path());
            let before = snapshot(root.path());
            let how = if writer { "writer" } else { "read-only" };
            if let Err(why) = check_open(&dir, writer, want) {
                failures.push(format!("{} ({how}): {why}", case.name));
            }
            if let Some(diffs) = diff(&before, &snapshot(root.path())) {
                failures.push(format!("{} ({how}): the disk changed: {diffs}", case.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} problem(s) over {} directory cases:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}

#[test]
fn foreign_files_inside_a_store_are_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = small_store(tmp.path());
    let notes = [
        ("notes.txt", &b"someone's notes"[..]),
        ("00000000000000000000.log.bak", b"a backup"),
        ("0.log", b"short name"),
        ("00000000000000000000.idx.old", b"old index"),
    ];
    for (name, bytes) in notes {
        fs::write(dir.join(name), bytes).unwrap();
    }
    fs::create_dir(dir.join("quarantine-notes")).unwrap();
    let store = Store::open(&dir, options()).expect("a store with foreign files opens");
    store
        .record_blocking(ev("acme", "budget", Action::Killed, T0_US))
        .expect("record");
    assert_eq!(stored_events(&store).len(), 5);
    store.close().expect("close");
    let ro = Store::open_read_only(&dir).expect("read-only open");
    assert_eq!(stored_events(&ro).len(), 5);
    for (name, bytes) in notes {
        assert_eq!(fs::read(dir.join(name)).unwrap(), bytes, "{name} changed");
    }
    assert!(dir.join("quarantine-notes").is_dir());
}

/// A regular file where the checkpoint directory goes: events are still
/// recorded and kept; the checkpoint fails with an error naming the path.
#[test]
fn a_file_where_checkpoints_go_fails_the_checkpoint_not_the_events() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = small_store(tmp.path());
    fs::remove_dir_all(dir.join("projections")).unwrap();
    fs::write(dir.join("projections"), b"not a directory").unwrap();
    let store = Store::open(&dir, options()).expect("open");
    store
        .record_blocking(ev("acme", "budget", Action::Killed, T0_US))
        .expect("record");
    match store.checkpoint() {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("projections"), "{e}"),
        other => panic!("expected an I/O error naming projections, got {other:?}"),
    }
    let _ = store.close();
    assert_eq!(
        fs::read(dir.join("projections")).unwrap(),
        b"not a directory"
    );
    let ro = Store::open_read_only(&dir).expect("reopen");
    assert_eq!(stored_events(&ro).len(), 5);
    assert_eq!(
        ro.stats("acme", "budget", Some(T0_US)).unwrap().total_count,
        2
    );
}

// ---------------------------------------------------------------------------
// A read-only mount.

#[test]
fn a_read_only_mount_refuses_writers_cleanly_and_serves_readers() {
    let events = sample_events();
    let Some(ro) = ReadOnlyStore::new(
        "a_read_only_mount_refuses_writers_cleanly_and_serves_readers",
        |dir| make_store(dir, &options(), &events),
    ) else {
        return;
    };
    let (source, target) = (&ro.source, &ro.target);
    let before = snapshot(source);
    let read_only_fs =
        |e: &Error| matches!(e, Error::Io { source, .. } if source.raw_os_error() == Some(30));
    for (name, dir) in [
        ("a store", target.join("store")),
        ("an empty directory", target.join("empty")),
        ("a missing directory", target.join("missing")),
    ] {
        match Store::open(&dir, options()) {
            Err(e) if read_only_fs(&e) => {
                assert!(
                    e.to_string().contains(&*target.to_string_lossy()),
                    "{name}: {e}"
                );
            }
            other => panic!("{name}: a writer should fail with EROFS naming the path: {other:?}"),
        }
    }
    let store = Store::open_read_only(target.join("store")).expect("read-only open");
    assert_eq!(stored_events(&store).len(), events.len());
    assert_eq!(store_stats(&store, T0_US), brute_stats(&events, T0_US));
    drop(store);
    for dir in [target.join("empty"), target.join("missing")] {
        assert!(matches!(
            Store::open_read_only(&dir),
            Err(Error::NotALogDirectory { .. })
        ));
    }
    drop(ro.mount);
    assert_unchanged(&before, &snapshot(source), "read-only mount");
}

// ---------------------------------------------------------------------------
// Checkpoints.

/// Captures what the library logs at WARN and above while `f` runs in this
/// thread.
fn warnings_during<R>(f: impl FnOnce() -> R) -> (R, String) {
    let capture = Capture::default();
    let result = tracing::subscriber::with_default(capture.subscriber(tracing::Level::WARN), f);
    (result, capture.text())
}

/// The checkpoint's bytes with its format version replaced (checksum
/// recomputed, so only the version is wrong).
fn with_format_version(bytes: &[u8], version: u16) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[8..10].copy_from_slice(&version.to_le_bytes());
    let body = out.len() - 4;
    let crc = crc32fast::hash(&out[..body]);
    out[body..].copy_from_slice(&crc.to_le_bytes());
    out
}

fn with_snapshot_version(bytes: &[u8], version: u32) -> Vec<u8> {
    let checkpoint = Checkpoint::decode(bytes).expect("decode our checkpoint");
    Checkpoint {
        snapshot_version: version,
        ..checkpoint
    }
    .encode()
}

#[test]
fn future_checkpoint_versions_are_ignored_rebuilt_and_replaced_only_later() {
    let events = sample_events();
    let current_snapshot = TriggerStats::default().version();
    /// Rewrites a checkpoint, given the current snapshot version.
    type Damage = fn(&[u8], u32) -> Vec<u8>;
    let variants: Vec<(&str, Damage)> = vec![
        ("format version + 1", |b, _| {
            with_format_version(b, CHECKPOINT_VERSION + 1)
        }),
        ("format version u16::MAX", |b, _| {
            with_format_version(b, u16::MAX)
        }),
        ("snapshot version + 1", |b, v| {
            with_snapshot_version(b, v + 1)
        }),
        ("snapshot version u32::MAX", |b, _| {
            with_snapshot_version(b, u32::MAX)
        }),
    ];
    for (name, damage) in variants {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        make_store(dir, &options(), &events);
        let ours = fs::read(dir.join(CHECKPOINT)).expect("checkpoint written on close");
        let planted = damage(&ours, current_snapshot);
        assert_ne!(planted, ours);
        fs::write(dir.join(CHECKPOINT), &planted).unwrap();
        let before = snapshot(dir);

        // A reader ignores it (with a warning), rebuilds, writes nothing.
        let (store, warned) = warnings_during(|| Store::open_read_only(dir));
        let store = store.unwrap_or_else(|e| panic!("{name}: read-only open: {e}"));
        assert!(
            warned.contains("ignoring the checkpoint") && warned.contains("version"),
            "{name}: no warning naming the version: {warned:?}"
        );
        for as_of in [T0_US, T0_US - 20 * DAY_US, MAX_US] {
            assert_eq!(
                store_stats(&store, as_of),
                brute_stats(&events, as_of),
                "{name}: read-only stats as of {as_of}"
            );
        }
        drop(store);
        assert_unchanged(&before, &snapshot(dir), name);

        // A writer too; the file is replaced only by its next checkpoint.
        let (store, warned) = warnings_during(|| Store::open(dir, options()));
        let store = store.unwrap_or_else(|e| panic!("{name}: open: {e}"));
        assert!(
            warned.contains("ignoring the checkpoint"),
            "{name}: {warned:?}"
        );
        assert_eq!(
            store_stats(&store, T0_US),
            brute_stats(&events, T0_US),
            "{name}"
        );
        assert_eq!(
            fs::read(dir.join(CHECKPOINT)).unwrap(),
            planted,
            "{name}: the open replaced the checkpoint before checkpointing"
        );
        store.checkpoint().expect("checkpoint");
        let replaced = fs::read(dir.join(CHECKPOINT)).unwrap();
        let decoded = Checkpoint::decode(&replaced).expect("a checkpoint of the current format");
        assert_eq!(decoded.snapshot_version, current_snapshot, "{name}");
        assert_eq!(decoded.offset, events.len() as u64, "{name}");
        store.close().expect("close");
        let (store, warned) = warnings_during(|| Store::open_read_only(dir));
        let store = store.expect("reopen");
        assert!(
            !warned.contains("ignoring"),
            "{name}: new checkpoint refused: {warned}"
        );
        assert_eq!(
            store_stats(&store, T0_US),
            brute_stats(&events, T0_US),
            "{name}"
        );
    }
}

/// Store B's checkpoint copied into store A, whose record just before the
/// checkpoint's offset is byte-identical (same payload, same time): the
/// anchor matches, yet B's statistics are not A's. The store id binding
/// must refuse it.
#[test]
fn a_checkpoint_from_another_store_with_a_matching_anchor_is_not_used() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let shared = ev("shared", "rule", Action::Killed, T0_US);
    let mut a_events: Vec<Event> = (0..6)
        .map(|i| ev("alpha", "r1", Action::Blocked, T0_US - i * DAY_US))
        .collect();
    let mut b_events: Vec<Event> = (0..6)
        .map(|i| ev("beta", "r2", Action::Stopped, T0_US - i * 3 * DAY_US))
        .collect();
    a_events.push(shared.clone());
    b_events.push(shared);
    make_store(&a, &options(), &a_events);
    make_store(&b, &options(), &b_events);
    fs::copy(b.join(CHECKPOINT), a.join(CHECKPOINT)).expect("copy the checkpoint");
    let before = snapshot(&a);
    let (store, warned) = warnings_during(|| Store::open_read_only(&a));
    let store = store.expect("open read-only");
    let stats = store_stats(&store, T0_US);
    assert_eq!(
        stats,
        brute_stats(&a_events, T0_US),
        "store A answers with store B's statistics (warnings: {warned:?})"
    );
    let checks = store.verify_projections().expect("verify projections");
    let check = checks.iter().find(|c| c.name == "trigger_stats").unwrap();
    assert!(
        check.problem.is_some(),
        "verify_projections does not flag the foreign checkpoint: {check:?}"
    );
    drop(store);
    assert_unchanged(&before, &snapshot(&a), "read-only open");
    let store = Store::open(&a, options()).expect("open");
    assert_eq!(
        store_stats(&store, T0_US),
        brute_stats(&a_events, T0_US),
        "writer"
    );
    store.close().expect("close");
}
