//! Adversarial review of the last issue-17 changes (cb99069..58aef65):
//! `payload::decode` through the view's walker, the dense rule-key table
//! of `TriggerStats`, the fence over run postings, the benches' figures.
//! Each test confirms (ignored, "confirmed: ...") or refutes (passes) one
//! finding.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test review_findings24`.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};

use common::Rng;
use enforcelog::event::{DETAILS_MAX_BYTES, DETAILS_MAX_DEPTH};
use enforcelog::event_view::takes_fast_path;
use enforcelog::payload;
use enforcelog::projection::{Answer, Projection, TriggerStats};
use enforcelog::{Action, Entry, StoredEvent};
use serde_json::Value;

// ---------------------------------------------------------------------
// A per-thread allocation counter: how much one call on this thread holds
// at its peak (other tests run on other threads).
// ---------------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // `try_with`: the slots have no destructor and need no allocation, but
    // an allocation during thread teardown must not panic.
    let _ = LIVE.try_with(|live| {
        let now = live.get().wrapping_add(delta);
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

// SAFETY: every call forwards to `System` with the same arguments; the
// counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (the caller upholds `alloc`'s contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged: `ptr` came from `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged: `ptr` came from `System` with `layout`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes `f` held at its peak on this thread, beyond what was live before.
fn peak_bytes<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    let peak = PEAK.with(Cell::get);
    ((peak - start).max(0) as usize, out)
}

// ---------------------------------------------------------------------
// Item 1: payload::decode (fast walk) against payload::decode_reference.
// ---------------------------------------------------------------------

/// `[1, 0, "acme", "r-1", 1, "run-9", <details>]` with `details` raw.
fn event_with_details(details: &[u8]) -> Vec<u8> {
    let mut out = vec![0x97, 0x01, 0x00];
    out.extend([0xa4, b'a', b'c', b'm', b'e']);
    out.extend([0xa3, b'r', b'-', b'1']);
    out.push(0x01);
    out.extend([0xa5, b'r', b'u', b'n', b'-', b'9']);
    out.extend_from_slice(details);
    out
}

/// The payload's action code (`Action::ALL` is in code order).
fn code(a: Action) -> u8 {
    Action::ALL.iter().position(|&x| x == a).expect("an action") as u8
}

fn key(out: &mut Vec<u8>, k: &str) {
    assert!(k.len() < 32);
    out.push(0xa0 | k.len() as u8);
    out.extend_from_slice(k.as_bytes());
}

/// A map16 of `entries` (key, raw value bytes).
fn map_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0xde];
    out.extend((entries.len() as u16).to_be_bytes());
    for (k, v) in entries {
        key(&mut out, k);
        out.extend_from_slice(v);
    }
    out
}

/// Each number's kind (u64, i64, f64) in document order: `==` and Debug
/// would not tell a `PosInt(5)` from a `NegInt`-free `i64` 5 if either
/// path built it differently.
fn kinds(v: &Value, out: &mut String) {
    match v {
        Value::Number(n) => out.push(if n.is_u64() {
            'u'
        } else if n.is_i64() {
            'i'
        } else {
            'f'
        }),
        Value::Array(items) => items.iter().for_each(|i| kinds(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push_str(k);
                kinds(v, out);
            }
        }
        _ => out.push('.'),
    }
}

/// `decode` and the general decoder give the same answer, details map
/// order, number kinds and JSON text included. Returns whether the fast
/// walk answered.
fn same_as_reference(bytes: &[u8]) -> Result<bool, String> {
    let fast = payload::decode(3, 44, bytes);
    let general = payload::decode_reference(3, 44, bytes);
    if fast != general {
        return Err(format!("decode {fast:?} but reference {general:?}"));
    }
    if format!("{fast:?}") != format!("{general:?}") {
        return Err(format!("debug differs: {fast:?} vs {general:?}"));
    }
    if let (Ok(Entry::Event(a)), Ok(Entry::Event(b))) = (&fast, &general) {
        let text = |e: &StoredEvent| serde_json::to_string(&e.details).expect("json");
        if text(a) != text(b) {
            return Err(format!("JSON {} vs {}", text(a), text(b)));
        }
        let (mut ka, mut kb) = (String::new(), String::new());
        if let Some(d) = &a.details {
            kinds(&Value::Object(d.clone()), &mut ka);
        }
        if let Some(d) = &b.details {
            kinds(&Value::Object(d.clone()), &mut kb);
        }
        if ka != kb {
            return Err(format!("number kinds {ka} vs {kb}"));
        }
    }
    Ok(takes_fast_path(bytes))
}

fn check_all(cases: &[(String, Vec<u8>)], want_fast: bool) {
    for (what, bytes) in cases {
        match same_as_reference(bytes) {
            Ok(fast) => {
                if want_fast {
                    assert!(
                        fast,
                        "{what}: not on the fast path, the test checks nothing new"
                    );
                }
            }
            Err(e) => panic!("{what} ({:02x?}): {e}", &bytes[..bytes.len().min(48)]),
        }
    }
}

#[test]
fn decode_agrees_with_the_reference_on_every_integer_marker_at_its_limits() {
    let mut values: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |name: &str, raw: Vec<u8>| values.push((name.to_string(), raw));
    for v in [0u8, 1, 0x7f] {
        add(&format!("fixint {v}"), vec![v]);
    }
    for v in [0xe0u8, 0xff, 0xf0] {
        add(&format!("negfixint {v:x}"), vec![v]);
    }
    for v in [0u64, 1, 0x7f, 0x80, 0xff] {
        add(&format!("u8 {v}"), vec![0xcc, v as u8]);
    }
    for v in [0u64, 0xff, 0x100, 0xffff] {
        let mut r = vec![0xcd];
        r.extend((v as u16).to_be_bytes());
        add(&format!("u16 {v}"), r);
    }
    for v in [0u64, 0xffff, 0x1_0000, 0xffff_ffff] {
        let mut r = vec![0xce];
        r.extend((v as u32).to_be_bytes());
        add(&format!("u32 {v}"), r);
    }
    for v in [0u64, 1, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX] {
        let mut r = vec![0xcf];
        r.extend(v.to_be_bytes());
        add(&format!("u64 {v}"), r);
    }
    for v in [i8::MIN, -1, 0, 1, i8::MAX] {
        add(&format!("i8 {v}"), vec![0xd0, v as u8]);
    }
    for v in [i16::MIN, -1, 0, i16::MAX] {
        let mut r = vec![0xd1];
        r.extend(v.to_be_bytes());
        add(&format!("i16 {v}"), r);
    }
    for v in [i32::MIN, -1, 0, i32::MAX] {
        let mut r = vec![0xd2];
        r.extend(v.to_be_bytes());
        add(&format!("i32 {v}"), r);
    }
    for v in [i64::MIN, -1, 0, 5, i64::MAX] {
        let mut r = vec![0xd3];
        r.extend(v.to_be_bytes());
        add(&format!("i64 {v}"), r);
    }
    // One value per event, then all of them in one map (order of keys).
    let mut cases: Vec<(String, Vec<u8>)> = values
        .iter()
        .map(|(name, raw)| {
            (
                name.clone(),
                event_with_details(&map_of(&[("v".into(), raw.clone())])),
            )
        })
        .collect();
    let all: Vec<(String, Vec<u8>)> = values
        .iter()
        .enumerate()
        .map(|(i, (_, raw))| (format!("k{i}"), raw.clone()))
        .collect();
    cases.push(("all integers".into(), event_with_details(&map_of(&all))));
    // The same inside an array (a value at depth 2).
    let mut array = vec![0xdc];
    array.extend((values.len() as u16).to_be_bytes());
    for (_, raw) in &values {
        array.extend_from_slice(raw);
    }
    cases.push((
        "integers in an array".into(),
        event_with_details(&map_of(&[("a".into(), array)])),
    ));
    check_all(&cases, true);
}

#[test]
fn decode_agrees_with_the_reference_on_floats() {
    let f32s = [
        0.0f32,
        -0.0,
        0.1,
        1.0 / 3.0,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        f32::MAX,
        f32::MIN,
        16_777_217.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ];
    let f64s = [
        0.0f64,
        -0.0,
        0.1,
        f64::MIN_POSITIVE,
        f64::from_bits(1),
        f64::MAX,
        f64::MIN,
        9_007_199_254_740_993.0,
        f64::NAN,
        f64::from_bits(0x7ff0_0000_0000_0001),
        f64::INFINITY,
        f64::NEG_INFINITY,
    ];
    let mut cases = Vec::new();
    for f in f32s {
        let mut r = vec![0xca];
        r.extend(f.to_be_bytes());
        cases.push((
            format!("f32 {f:?}"),
            event_with_details(&map_of(&[("f".into(), r)])),
        ));
    }
    for f in f64s {
        let mut r = vec![0xcb];
        r.extend(f.to_be_bytes());
        cases.push((
            format!("f64 {f:?}"),
            event_with_details(&map_of(&[("f".into(), r)])),
        ));
    }
    // Non-finite ones leave the fast path; both must still agree.
    check_all(&cases, false);
    for (what, bytes) in &cases {
        let finite = !what.contains("NaN") && !what.contains("inf");
        assert_eq!(takes_fast_path(bytes), finite, "{what}");
    }
}

#[test]
fn decode_agrees_with_the_reference_on_repeated_keys_and_string_forms() {
    let mut cases = Vec::new();
    // {"a": 1, "b": 2, "a": 3}: first place, last value.
    let repeated = map_of(&[
        ("a".into(), vec![0x01]),
        ("b".into(), vec![0x02]),
        ("a".into(), vec![0x03]),
    ]);
    cases.push(("repeated key".into(), event_with_details(&repeated)));
    // A repeated key whose values are a map then a string, nested.
    let inner = map_of(&[("x".into(), vec![0xc3]), ("x".into(), vec![0xc2])]);
    let nested = map_of(&[
        ("z".into(), inner.clone()),
        ("y".into(), vec![0xc0]),
        ("z".into(), vec![0xa1, b'q']),
        ("y".into(), inner),
    ]);
    cases.push(("repeated nested".into(), event_with_details(&nested)));
    // Keys and values as str8, str16, str32 (forms the store never writes).
    for (marker, len_bytes) in [(0xd9u8, 1usize), (0xda, 2), (0xdb, 4)] {
        let text = "k\u{0}\u{200b}é";
        let mut m = vec![0x82];
        for _ in 0..2 {
            m.push(marker);
            m.extend(&(text.len() as u32).to_be_bytes()[4 - len_bytes..]);
            m.extend_from_slice(text.as_bytes());
            m.push(marker);
            m.extend(&(text.len() as u32).to_be_bytes()[4 - len_bytes..]);
            m.extend_from_slice(text.as_bytes());
        }
        cases.push((
            format!("str marker {marker:x} (repeated)"),
            event_with_details(&m),
        ));
    }
    // Empty map in each form.
    for m in [vec![0x80], vec![0xde, 0, 0], vec![0xdf, 0, 0, 0, 0]] {
        cases.push((format!("empty map {:x}", m[0]), event_with_details(&m)));
    }
    // Trailing bytes after the event.
    let mut trailing = event_with_details(&repeated);
    trailing.extend([0xc1, 0xff, 0x00]);
    cases.push(("trailing bytes".into(), trailing));
    check_all(&cases, true);
}

/// `depth` nested single-item arrays inside `details` (details = 1).
fn nested_details(depth: usize) -> Vec<u8> {
    let mut out = vec![0x81, 0xa1, b'n'];
    out.extend(std::iter::repeat_n(0x91, depth - 1));
    out.push(0x07);
    out
}

#[test]
fn decode_agrees_with_the_reference_at_the_depth_limit_and_the_size_threshold() {
    let mut cases = Vec::new();
    for depth in [
        DETAILS_MAX_DEPTH - 1,
        DETAILS_MAX_DEPTH,
        DETAILS_MAX_DEPTH + 1,
    ] {
        cases.push((
            format!("depth {depth}"),
            event_with_details(&nested_details(depth)),
        ));
    }
    check_all(&cases, false);
    assert!(takes_fast_path(&cases[1].1), "depth at the limit is fast");
    assert!(!takes_fast_path(&cases[2].1), "one past the limit is not");
    // Payloads of every length around `len * 6 > DETAILS_MAX_BYTES`, the
    // details a string of zero bytes (its JSON is 6 bytes per byte, so the
    // reference measures and refuses those over the threshold).
    let threshold = DETAILS_MAX_BYTES / 6;
    let head = event_with_details(&[]).len();
    let mut sized = Vec::new();
    for total in threshold - 3..=threshold + 3 {
        // map1, fixstr key, str16 header: 1 + 2 + 3.
        let body = total - head - 6;
        let mut d = vec![0x81, 0xa1, b's', 0xda];
        d.extend((body as u16).to_be_bytes());
        d.extend(std::iter::repeat_n(0u8, body));
        let bytes = event_with_details(&d);
        assert_eq!(bytes.len(), total);
        sized.push((format!("{total} bytes"), bytes));
        // Also: the same as a short event plus trailing bytes.
        let mut t = event_with_details(&[0x80]);
        t.resize(total, 0);
        sized.push((format!("{total} bytes, trailing"), t));
    }
    check_all(&sized, false);
}

#[test]
fn decode_agrees_with_the_reference_on_overlong_lengths_and_every_marker() {
    let mut cases = Vec::new();
    // Declared lengths beyond the bytes, at every level.
    for header in [
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],
        vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        vec![0xdc, 0xff, 0xff],
        vec![0xde, 0xff, 0xff],
        vec![0x9f],
        vec![0x8f],
        vec![0xdb, 0xff, 0xff, 0xff, 0xff],
    ] {
        let mut d = vec![0x81, 0xa1, b'k'];
        d.extend_from_slice(&header);
        d.extend([0xc0, 0xa1, b'x', 0x01]);
        cases.push((format!("overlong {:x}", header[0]), event_with_details(&d)));
        let mut top = header.clone();
        top.extend([0xa1, b'x', 0x01]);
        cases.push((
            format!("overlong details {:x}", header[0]),
            event_with_details(&top),
        ));
    }
    // Every marker as a value, followed by 9 bytes of each pattern.
    for marker in 0u8..=0xff {
        for fill in [0x00u8, 0x01, 0x7f, 0x80, 0xff] {
            let mut v = vec![marker];
            v.extend(std::iter::repeat_n(fill, 9));
            let d = map_of(&[("m".into(), v)]);
            cases.push((
                format!("marker {marker:02x} fill {fill:02x}"),
                event_with_details(&d),
            ));
        }
    }
    check_all(&cases, false);
    // And every truncation of a real-looking event.
    let details = serde_json::json!({
        "zeros": "\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}\u{0}",
        "n": [-1, 255, 65536, -40000, 1.5, -0.0, 4294967296u64, -9223372036854775808i64],
        "deep": {"a": {"b": {"c": [null, true, false, "\u{200b}"]}}},
    });
    let event = enforcelog::Event::new("acme", "r-1", Action::Killed)
        .with_run_id("run-7")
        .with_details(details.as_object().expect("object").clone());
    let bytes = rmp_serde::to_vec(&(
        1u8,
        0u8,
        &event.tenant_id,
        &event.rule_id,
        code(event.action),
        &event.run_id,
        &event.details,
    ))
    .expect("encode");
    assert!(takes_fast_path(&bytes));
    for cut in 0..=bytes.len() {
        if let Err(e) = same_as_reference(&bytes[..cut]) {
            panic!("cut {cut}: {e}");
        }
    }
}

#[test]
fn decode_agrees_with_the_reference_on_random_mutations() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let base = event_with_details(&map_of(&[
        (
            "a".into(),
            vec![0x93, 0xd3, 0, 0, 0, 0, 0, 0, 0, 5, 0xca, 0, 0, 0, 1, 0xe0],
        ),
        (
            "b".into(),
            vec![
                0x82, 0xa1, b'x', 0xc0, 0xa1, b'x', 0xcf, 0xff, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
        ("a".into(), vec![0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0]),
    ]));
    assert!(takes_fast_path(&base));
    for i in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(b.len() as u64) as usize;
            b[at] = rng.next() as u8;
        }
        if let Err(e) = same_as_reference(&b) {
            panic!("seed {seed}, case {i}, {b:02x?}: {e}");
        }
    }
}

/// serde_json reserves two map keys: with its `raw_value` or
/// `arbitrary_precision` feature (Cargo unifies features: a host's other
/// crate may turn them on, as the comment on `preserve_order` in
/// Cargo.toml says of that one), `Value`'s deserializer reads a map whose
/// first key is `$serde_json::private::RawValue` (or `...::Number`) as raw
/// JSON text (or a number), not as a map. The walker builds a map.
/// Fixed: a key with serde_json's reserved prefix sends the payload off the
/// fast path (to the general decoder, whatever features are on), for
/// `view` and `decode` alike; the test checks both agree with the
/// reference and that these payloads no longer take the fast path.
#[test]
fn details_with_serde_json_reserved_keys_decode_as_the_reference_does() {
    let mut cases = Vec::new();
    for (k, v) in [
        ("$serde_json::private::RawValue", "{\"a\":1}"),
        ("$serde_json::private::RawValue", "[1,2]"),
        ("$serde_json::private::Number", "12"),
        ("$serde_json::private::Number", "1.5e3"),
    ] {
        let mut d = vec![0x81, 0xd9, k.len() as u8];
        d.extend_from_slice(k.as_bytes());
        d.push(0xa0 | v.len() as u8);
        d.extend_from_slice(v.as_bytes());
        cases.push((format!("{k} = {v}"), event_with_details(&d)));
        // The same map one level down.
        let mut nested = vec![0x81, 0xa1, b'x'];
        nested.extend_from_slice(&d);
        cases.push((format!("nested {k} = {v}"), event_with_details(&nested)));
    }
    check_all(&cases, false);
    for (what, bytes) in &cases {
        assert!(!takes_fast_path(bytes), "{what}: on the fast path");
    }
}

/// An untrusted length may reserve at most what the rest of the payload
/// could hold: one `Value` per remaining byte, for the whole payload (a
/// byte belongs to one value). `map_value` and `value` cap each container
/// by the bytes after it, but nested containers each take that cap: 63
/// nested arrays of declared length 2^32-1 over ~10 KiB of nils reserve
/// 63 times what the bytes could hold, before the walk fails and the
/// general decoder (which reserves nothing) answers.
#[test]
fn decode_reserves_no_more_than_the_payload_can_hold() {
    let threshold = DETAILS_MAX_BYTES / 6;
    let mut d = vec![0x81, 0xa1, b'k'];
    for _ in 1..DETAILS_MAX_DEPTH {
        d.extend([0xdd, 0xff, 0xff, 0xff, 0xff]);
    }
    let mut bytes = event_with_details(&d);
    bytes.resize(threshold, 0xc0);
    assert!(
        bytes.len() * 6 <= DETAILS_MAX_BYTES,
        "stays on the fast path"
    );
    let (fast_peak, fast) = peak_bytes(|| payload::decode(0, 0, &bytes));
    let (general_peak, general) = peak_bytes(|| payload::decode_reference(0, 0, &bytes));
    assert_eq!(fast, general);
    assert!(fast.is_err());
    let could_hold = bytes.len() * std::mem::size_of::<Value>();
    assert!(
        fast_peak <= could_hold + general_peak,
        "decode of a {}-byte payload held {fast_peak} bytes at its peak; the \
         reference {general_peak}; the payload can hold at most {could_hold} bytes of values",
        bytes.len()
    );
}

// ---------------------------------------------------------------------
// Item 2: TriggerStats' dense key table (inline ids <= 22 bytes).
// ---------------------------------------------------------------------

/// Rule ids around the inline limit: multi-byte characters across it,
/// shared 22-byte prefixes, the id limit.
fn boundary_rule_ids() -> Vec<String> {
    let a = |n: usize| "r".repeat(n);
    vec![
        a(1),
        a(21),
        a(22),
        a(23),
        format!("{}é", a(20)), // 22 bytes, inline
        format!("{}é", a(21)), // 23 bytes, boxed, 'é' across the limit
        format!("{}€", a(19)), // 22 bytes
        format!("{}€", a(20)), // 23 bytes
        format!("{}€", a(21)), // 24 bytes, the 22nd byte inside '€'
        format!("{}a", a(22)), // shares 22 bytes with a(22)+"b"
        format!("{}b", a(22)),
        format!("{}\u{0}", a(21)), // a zero byte at the inline limit
        format!("{}{}", a(22), "\u{200b}"),
        "规则规则规则规".into(),   // 21 bytes
        "规则规则规则规则".into(), // 24 bytes
        a(128),
        format!("{}x", a(127)),
    ]
}

fn ev(offset: u64, tenant: &str, rule: &str, action: Action, at_us: i64) -> Entry {
    Entry::Event(StoredEvent {
        offset,
        tenant_id: tenant.into(),
        rule_id: rule.into(),
        action,
        run_id: None,
        details: None,
        enforced_at_us: at_us,
    })
}

fn exact(a: Answer) -> enforcelog::RuleStats {
    match a {
        Answer::Exact(s) => s,
        Answer::NeedsReplay => panic!("needs replay"),
    }
}

#[test]
fn rule_ids_around_the_inline_limit_fold_list_snapshot_and_merge_exactly() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let ids = boundary_rule_ids();
    // Rule ids that are also tenant ids, and a tenant whose id is another
    // tenant's rule id.
    let tenants = ["t", "tt", "rrrrrrrrrrrrrrrrrrrrrr"];
    let base_us = 1_764_028_800_000_000i64;
    let mut entries = Vec::new();
    let mut model: BTreeMap<(String, String), u64> = BTreeMap::new();
    for i in 0..2_000u64 {
        let t = tenants[rng.below(tenants.len() as u64) as usize];
        let r = &ids[rng.below(ids.len() as u64) as usize];
        let at = base_us + rng.below(3_600_000_000) as i64;
        entries.push(ev(i, t, r, Action::ALL[(i % 4) as usize], at));
        *model.entry((t.to_string(), r.clone())).or_default() += 1;
    }
    let fold = |part: &[Entry]| {
        let mut p = TriggerStats::default();
        for e in part {
            let Entry::Event(s) = e else { unreachable!() };
            p.apply(s.offset, e);
        }
        p
    };
    let whole = fold(&entries);
    let as_of = base_us + 3_600_000_000;
    let check = |p: &TriggerStats, what: &str| {
        assert_eq!(p.rule_count(), model.len(), "{what}, seed {seed}");
        let all: Vec<(String, String)> = p
            .all_rules()
            .map(|(t, r)| (t.to_string(), r.to_string()))
            .collect();
        let want: Vec<(String, String)> = model.keys().cloned().collect();
        assert_eq!(all, want, "{what}: all_rules, seed {seed}");
        for t in tenants {
            let listed: Vec<&str> = p.rules_of(t).collect();
            let want: Vec<&str> = model
                .keys()
                .filter(|(mt, _)| mt == t)
                .map(|(_, r)| r.as_str())
                .collect();
            assert_eq!(listed, want, "{what}: rules_of({t}), seed {seed}");
        }
        for ((t, r), &n) in &model {
            let s = exact(p.answer(t, r, as_of, 2_000));
            assert_eq!(s.total_count, n, "{what}: {t}/{r}, seed {seed}");
            assert_eq!(s.rule_id, *r);
        }
        // An id one byte off the inline limit of a present one is absent.
        let s = exact(p.answer("t", &"r".repeat(24), as_of, 2_000));
        assert_eq!(s.total_count, 0, "{what}");
    };
    check(&whole, "in order");
    // Snapshot -> restore -> snapshot: the same bytes, the same answers.
    let bytes = whole.snapshot();
    let mut restored = TriggerStats::default();
    restored.restore(&bytes).expect("restore");
    assert!(restored.snapshot() == bytes, "snapshot bytes after restore");
    check(&restored, "restored");
    // Two halves merged: the normalized in-order fold, to the byte.
    for split in [1, 700, 1_999] {
        let mut older = fold(&entries[..split]);
        let newer = fold(&entries[split..]);
        assert!(older.merge_later(Box::new(newer)).is_ok());
        let mut normalized = whole.clone();
        normalized.normalize();
        assert!(
            older.snapshot() == normalized.snapshot(),
            "merge at {split}, seed {seed}"
        );
        check(&older, "merged");
        // A restored later half merges the same.
        let mut older2 = fold(&entries[..split]);
        let mut later = TriggerStats::default();
        later
            .restore(&fold(&entries[split..]).snapshot())
            .expect("restore");
        assert!(older2.merge_later(Box::new(later)).is_ok());
        assert!(
            older2.snapshot() == normalized.snapshot(),
            "restored merge at {split}"
        );
    }
    // reset empties both tables: folding again gives the same.
    let mut again = whole.clone();
    again.reset();
    assert_eq!(again.rule_count(), 0);
    assert_eq!(again.all_rules().count(), 0);
    for e in &entries {
        again.apply(0, e);
    }
    assert!(again.snapshot() == whole.snapshot(), "after reset");
}

/// The snapshot shape (`wire::State`, rmp_serde defaults) of a state with
/// one tenant that has no rules.
fn snapshot_with_empty_tenant(windows: &[i64]) -> Vec<u8> {
    type TenantOut = (BTreeMap<String, ()>, Option<i64>, Option<i64>);
    let mut tenants: BTreeMap<String, TenantOut> = BTreeMap::new();
    tenants.insert(
        "ghost".into(),
        (BTreeMap::new(), Some(1_764_028_800_000_000), None),
    );
    let state = (
        tenants,
        0u64,
        0u64,
        Vec::<(u64, i64, i64)>::new(),
        0u64,
        0u64,
    );
    rmp_serde::to_vec(&(windows, state)).expect("encode")
}

#[test]
fn a_tenant_with_no_rules_restores_lists_nothing_and_snapshots_back_the_same() {
    let default = TriggerStats::default();
    let (windows, _): (Vec<i64>, serde::de::IgnoredAny) =
        rmp_serde::from_slice(&default.snapshot()).expect("windows");
    let bytes = snapshot_with_empty_tenant(&windows);
    let mut p = TriggerStats::default();
    p.restore(&bytes).expect("restore");
    assert!(p.snapshot() == bytes, "snapshot back");
    assert_eq!(p.rule_count(), 0);
    assert_eq!(p.rules_of("ghost").count(), 0);
    assert_eq!(p.all_rules().count(), 0);
    // Merged into a state with rules, and rules added to it afterwards.
    let mut q = TriggerStats::default();
    q.apply(
        0,
        &ev(0, "t", "r-1", Action::Blocked, 1_764_028_800_000_001),
    );
    assert!(q.merge_later(Box::new(p.clone())).is_ok());
    assert_eq!(
        q.all_rules().collect::<Vec<_>>(),
        vec![("t", "r-1")],
        "the empty tenant lists nothing"
    );
    let long = "g".repeat(40);
    p.apply(
        1,
        &ev(1, "ghost", &long, Action::Killed, 1_764_028_800_000_002),
    );
    p.apply(
        2,
        &ev(2, "ghost", "g", Action::Killed, 1_764_028_800_000_003),
    );
    assert_eq!(
        p.rules_of("ghost").collect::<Vec<_>>(),
        vec!["g", long.as_str()]
    );
    let mut back = TriggerStats::default();
    back.restore(&p.snapshot()).expect("restore");
    assert!(back.snapshot() == p.snapshot());
}

// ---------------------------------------------------------------------
// Item 3: the fence over run postings (every 64th posting's hash).
// ---------------------------------------------------------------------

fn key_files(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "keys") {
                out.push(std::fs::read(&path).expect("read key file"));
            }
        }
    }
    out
}

/// Segments holding exactly `per_segment` events each (one batch of
/// events padded to fill most of a segment), every event with a run id:
/// run posting counts of 1, 63, 64, 65, 128, 129 and 200, runs of one
/// event and hot runs spanning several fence blocks. Every run's query
/// equals the brute force, in release builds too (no debug_assert).
#[test]
fn run_queries_are_exact_at_every_fence_boundary() {
    let seed = common::run_seed();
    let mut rng = Rng::new(seed);
    let segment_bytes = 48usize << 10;
    for per_segment in [1usize, 2, 63, 64, 65, 128, 129, 200] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = enforcelog::StoreOptions {
            log: enforcelog::LogOptions {
                segment_max_bytes: segment_bytes as u64,
                record_max_bytes: 40 << 10,
                ..enforcelog::LogOptions::default()
            },
            ..enforcelog::StoreOptions::default()
        };
        let store = enforcelog::Store::open(dir.path(), options).expect("open");
        // Each batch fills ~60% of a segment: the next one does not fit.
        let pad = (segment_bytes * 6 / 10) / per_segment;
        let pad = pad.max(8);
        let mut model: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let segments = 5;
        for s in 0..segments {
            let mut batch = store.begin();
            let mut runs = Vec::new();
            for i in 0..per_segment {
                // A third in one hot run, the rest in runs of 1 to 3 events.
                let run = match rng.below(3) {
                    0 => format!("hot-{s}"),
                    _ => format!("run-{s}-{}", rng.below(per_segment as u64 / 2 + 1)),
                };
                let text = format!("{}{}", "\u{0}".repeat(pad / 8), "a".repeat(pad - pad / 8));
                let details = serde_json::json!({"pad": text, "i": i});
                batch
                    .record(
                        enforcelog::Event::new("acme", "r-1", Action::Blocked)
                            .with_run_id(run.clone())
                            .with_details(details.as_object().expect("object").clone()),
                    )
                    .expect("stage");
                runs.push(run);
            }
            let range = batch.commit_blocking().expect("commit");
            for (run, offset) in runs.into_iter().zip(range) {
                model.entry(run).or_default().push(offset);
            }
        }
        // Builds the sealed segments' key files.
        let all = store
            .query(&enforcelog::Query::tenant("acme").limit(100_000))
            .expect("query");
        assert_eq!(all.events.len(), segments * per_segment);
        let files = key_files(dir.path());
        let counts: BTreeSet<u32> = files
            .iter()
            .map(|f| u32::from_le_bytes(f[44..48].try_into().expect("4 bytes")))
            .collect();
        assert!(
            files.len() >= segments - 1 && counts == BTreeSet::from([per_segment as u32]),
            "{per_segment} per segment: {} key files with run posting counts {counts:?}",
            files.len()
        );
        for (run, offsets) in &model {
            let page = store
                .query(
                    &enforcelog::Query::all_tenants()
                        .run_id(run.clone())
                        .limit(100_000),
                )
                .expect("run query");
            let got: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
            assert_eq!(
                &got, offsets,
                "{per_segment} per segment, run {run}, seed {seed}"
            );
        }
        for i in 0..200 {
            let page = store
                .query(
                    &enforcelog::Query::all_tenants()
                        .run_id(format!("absent-{i}"))
                        .limit(10),
                )
                .expect("run query");
            assert!(page.events.is_empty());
        }
        store.close().expect("close");
    }
}

/// Sealed segments with no run postings at all (an empty fence) beside
/// ones with a single posting: run queries find exactly the runs' events.
#[test]
fn run_queries_over_segments_without_run_postings_are_exact() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = enforcelog::StoreOptions {
        log: enforcelog::LogOptions {
            segment_max_bytes: 8 << 10,
            record_max_bytes: 4 << 10,
            ..enforcelog::LogOptions::default()
        },
        ..enforcelog::StoreOptions::default()
    };
    let store = enforcelog::Store::open(dir.path(), options).expect("open");
    let mut want = Vec::new();
    for i in 0..400u64 {
        let mut event = enforcelog::Event::new("acme", "r-1", Action::Stopped).with_details(
            serde_json::json!({"z": "\u{0}\u{0}\u{0}", "i": i})
                .as_object()
                .expect("object")
                .clone(),
        );
        // Runs only in a few stretches: most segments hold none.
        if (150..153).contains(&i) || i == 399 {
            event = event.with_run_id("the-run");
            want.push(i);
        }
        let offset = store.record_blocking(event).expect("record");
        assert_eq!(offset, i);
    }
    store
        .query(&enforcelog::Query::tenant("acme").limit(100_000))
        .expect("query");
    let files = key_files(dir.path());
    assert!(
        files.iter().filter(|f| f[44..48] == [0, 0, 0, 0]).count() >= 2,
        "segments without run postings"
    );
    let page = store
        .query(
            &enforcelog::Query::all_tenants()
                .run_id("the-run")
                .limit(100),
        )
        .expect("run query");
    let got: Vec<u64> = page.events.iter().map(|e| e.offset).collect();
    assert_eq!(got, want);
    for run in ["x", "the-ru", "the-run-"] {
        let page = store
            .query(&enforcelog::Query::all_tenants().run_id(run).limit(100))
            .expect("run query");
        assert!(page.events.is_empty(), "{run}");
    }
    store.close().expect("close");
}

// ---------------------------------------------------------------------
// Item 4: what the benches' 2-thread replay by keys relies on.
// ---------------------------------------------------------------------

/// `benches/support/dataset.rs::replay_by_keys(log, 2)`: each half scans
/// from its first offset and stops at the other's; the older half merges
/// the later. That is exact only if `Log::scan(from)` yields no frame
/// below `from` (a batch straddling the split) and the merge is the
/// normalized in-order fold.
#[test]
fn a_scan_from_a_mid_batch_offset_starts_there_and_halves_merge_exactly() {
    use std::ops::ControlFlow;
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = enforcelog::Log::open(
        dir.path(),
        enforcelog::LogOptions {
            segment_max_bytes: 16 << 10,
            record_max_bytes: 4 << 10,
            ..enforcelog::LogOptions::default()
        },
    )
    .expect("open");
    let mut rng = Rng::new(common::run_seed());
    let mut next = 0u64;
    let base_us = 1_764_028_800_000_000i64;
    while next < 1_000 {
        let n = 1 + rng.below(40);
        let records: Vec<enforcelog::Record> = (0..n)
            .map(|i| {
                let e = enforcelog::Event::new(
                    format!("t{}", rng.below(5)),
                    format!("{}{}", "r".repeat(20 + rng.below(5) as usize), i % 3),
                    Action::ALL[rng.below(4) as usize],
                );
                let at = base_us - rng.below(40 * 86_400_000_000) as i64;
                let bytes = rmp_serde::to_vec(&(
                    1u8,
                    0u8,
                    &e.tenant_id,
                    &e.rule_id,
                    code(e.action),
                    None::<String>,
                    None::<()>,
                ))
                .expect("encode");
                enforcelog::Record::new(at, bytes)
            })
            .collect();
        let range = log.append_batch_blocking(records).expect("append");
        next = range.end;
    }
    let end = log.next_offset();
    let fold = |from: u64, to: u64| {
        let mut p = TriggerStats::default();
        let mut first = None;
        log.scan(from, i64::MIN..=i64::MAX, |frame| {
            if frame.offset >= to {
                return ControlFlow::Break(());
            }
            first.get_or_insert(frame.offset);
            let entry =
                payload::decode(frame.offset, frame.timestamp_us, frame.payload).expect("payload");
            p.apply(frame.offset, &entry);
            ControlFlow::Continue(())
        })
        .expect("scan");
        (p, first)
    };
    let (mut whole, _) = fold(0, end);
    whole.normalize();
    for split in [1, end / 3, end / 2, end - 1] {
        let (mut older, _) = fold(0, split);
        let (newer, first) = fold(split, end);
        assert_eq!(first, Some(split), "scan from {split}");
        assert!(older.merge_later(Box::new(newer)).is_ok());
        assert!(older.snapshot() == whole.snapshot(), "split at {split}");
    }
}
