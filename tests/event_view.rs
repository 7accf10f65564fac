//! The borrowing event view against the full decode (`src/event_view.rs`):
//! for every payload, `view` is an event with equal keys iff `decode` is an
//! event, "other" iff `decode` is a gap marker or lost entry, and the same
//! error iff `decode` fails.
//!
//! Inputs: real-looking events encoded as the store encodes them (ids of
//! every length boundary of the MessagePack string forms and of the id
//! limit, forbidden characters, runs of zero bytes, 64 KiB details, nesting
//! to and past the limit), the same with encodings the store never writes
//! but the decoder accepts or refuses (array16, bin ids, wide integers,
//! NaN, ext, trailing bytes, a wrong length), every truncation and every
//! single bit flip of them, and arbitrary bytes.
//!
//! `ENFORCELOG_SEED=<seed>` replays a failure.

mod common;

use enforcelog::event::{DETAILS_MAX_BYTES, ID_MAX_BYTES};
use enforcelog::event_view::{view, EntryView};
use enforcelog::{payload, Action, Entry};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Map, Value};

/// The verdicts of `view` and `decode` on one payload agree, and `decode`
/// (which builds the events it can in one walk) returns exactly what the
/// general decoder returns.
fn agree(offset: u64, ts: i64, bytes: &[u8]) -> Result<(), String> {
    let (fast, general) = (
        payload::decode(offset, ts, bytes),
        payload::decode_reference(offset, ts, bytes),
    );
    if fast != general {
        return Err(format!(
            "decode {fast:?} but the general decoder {general:?}"
        ));
    }
    match (view(offset, ts, bytes), payload::decode(offset, ts, bytes)) {
        (Ok(EntryView::Event(k)), Ok(Entry::Event(e))) => {
            let same = k.tenant_id == e.tenant_id
                && k.rule_id == e.rule_id
                && k.action == e.action
                && k.run_id == e.run_id.as_deref()
                && k.enforced_at_us == e.enforced_at_us
                && k.offset == e.offset;
            if same {
                Ok(())
            } else {
                Err(format!("keys {k:?} but event {e:?}"))
            }
        }
        (Ok(EntryView::Other), Ok(Entry::Gap(_) | Entry::Lost(_))) => Ok(()),
        (Err(v), Err(d)) if v == d => Ok(()),
        (v, d) => Err(format!("view {v:?} but decode {d:?}")),
    }
}

/// `agree` on the payload, on every truncation of it and on every single
/// bit flip (for big payloads: of the first 2 KiB and the last 256 bytes,
/// where the structure is; the middle of a 64 KiB string is one byte class).
fn agree_with_damage(bytes: &[u8]) -> Result<(), TestCaseError> {
    let check = |b: &[u8], what: &str| {
        agree(7, 1_764_028_800_000_000, b).map_err(|e| {
            TestCaseError::fail(format!(
                "{what} of {} bytes {:02x?}: {e}",
                b.len(),
                &b[..b.len().min(64)]
            ))
        })
    };
    check(bytes, "payload")?;
    let n = bytes.len();
    let positions: Vec<usize> = if n <= 4096 {
        (0..n).collect()
    } else {
        (0..2048).chain(n - 256..n).collect()
    };
    for &cut in &positions {
        check(&bytes[..cut], "truncation")?;
    }
    let mut flipped = bytes.to_vec();
    for &at in &positions {
        for bit in 0..8 {
            flipped[at] ^= 1 << bit;
            check(&flipped, "bit flip")?;
            flipped[at] ^= 1 << bit;
        }
    }
    Ok(())
}

/// Lengths where the encoding or the validity of an id changes: fixstr
/// ends at 31, str8 at 255, the id limit is 128.
const ID_LENGTHS: [usize; 10] = [0, 1, 2, 31, 32, 127, 128, 129, 255, 256];

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9_-]{1,12}",
        2 => proptest::sample::select(ID_LENGTHS.to_vec()).prop_map(|n| "x".repeat(n)),
        // Multi-byte characters across the 128-byte limit.
        1 => (40usize..46).prop_map(|n| "ü€".repeat(n / 2)),
        // Forbidden characters: control, NUL, a bidi override, a separator.
        1 => proptest::sample::select(vec!["a\u{0}b", "\u{7}", "x\u{202e}y", "l\u{2028}", "ok\n"])
            .prop_map(str::to_string),
        1 => ".{1,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
        // A run of zero bytes (NUL characters), and integer zeros.
        (1usize..300).prop_map(|n| Value::String("\0".repeat(n))),
        Just(Value::from(0)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec(("[a-z\u{0}]{0,6}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An object nested `depth` levels (details itself is 1), alternating maps
/// and arrays.
fn nested(depth: usize) -> Map<String, Value> {
    let mut v = Value::from(1);
    for level in (1..depth).rev() {
        v = if level % 2 == 0 {
            Value::Array(vec![v])
        } else {
            let mut m = Map::new();
            m.insert("k".into(), v);
            Value::Object(m)
        };
    }
    let mut top = Map::new();
    top.insert("deep".into(), v);
    top
}

fn details() -> impl Strategy<Value = Option<Map<String, Value>>> {
    prop_oneof![
        2 => Just(None),
        6 => proptest::collection::vec(("[a-z_]{1,8}", value()), 0..8)
            .prop_map(|kv| Some(kv.into_iter().collect())),
        // Near and over the 64 KiB limit, in zero bytes and in text.
        1 => (DETAILS_MAX_BYTES - 64..DETAILS_MAX_BYTES + 64, any::<bool>()).prop_map(|(n, zeros)| {
            let mut m = Map::new();
            m.insert("blob".into(), Value::String(if zeros { "\0".repeat(n / 6) } else { "z".repeat(n) }));
            Some(m)
        }),
        // Nesting to the limit and past it.
        1 => (60usize..70).prop_map(|d| Some(nested(d))),
    ]
}

/// How a case encodes its event.
#[derive(Debug, Clone, Copy)]
enum Form {
    /// As the store writes it.
    Store,
    /// Array16 instead of a fixarray.
    Array16,
    /// Ids as MessagePack bin.
    BinIds,
    /// The action as a uint8.
    WideAction,
    /// Extra bytes after the array.
    Trailing,
    /// An eighth element.
    Eight,
    /// `details` replaced by something odd: a NaN, an ext, a bin, an
    /// integer key, not a map.
    OddDetails(u8),
}

fn form() -> impl Strategy<Value = Form> {
    prop_oneof![
        8 => Just(Form::Store),
        1 => Just(Form::Array16),
        1 => Just(Form::BinIds),
        1 => Just(Form::WideAction),
        1 => Just(Form::Trailing),
        1 => Just(Form::Eight),
        3 => (0u8..16).prop_map(Form::OddDetails),
    ]
}

fn str_or_bin(out: &mut Vec<u8>, s: &str, bin: bool) {
    let b = s.as_bytes();
    let n = b.len();
    match (bin, n) {
        (false, 0..=31) => out.push(0xa0 | n as u8),
        (false, 32..=255) => out.extend([0xd9, n as u8]),
        (false, _) => out.extend([0xda, (n >> 8) as u8, n as u8]),
        (true, 0..=255) => out.extend([0xc4, n as u8]),
        (true, _) => out.extend([0xc5, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(b);
}

#[derive(Debug, Clone)]
struct Case {
    tenant: String,
    rule: String,
    code: u8,
    run: Option<String>,
    details: Option<Map<String, Value>>,
    form: Form,
}

fn case() -> impl Strategy<Value = Case> {
    (
        id(),
        id(),
        prop_oneof![9 => 0u8..4, 1 => 4u8..=255],
        proptest::option::of(id()),
        details(),
        form(),
    )
        .prop_map(|(tenant, rule, code, run, details, form)| Case {
            tenant,
            rule,
            code,
            run,
            details,
            form,
        })
}

fn encode(c: &Case) -> Vec<u8> {
    let store = rmp_serde::to_vec(&(1u8, 0u8, &c.tenant, &c.rule, c.code, &c.run, &c.details))
        .expect("encodes");
    let details = rmp_serde::to_vec(&c.details).expect("encodes");
    let by_hand = |array16: bool, bin: bool, wide: bool, details: &[u8], extra: Option<u8>| {
        let mut out = Vec::new();
        let len = 7 + u8::from(extra.is_some());
        if array16 {
            out.extend([0xdc, 0, len]);
        } else {
            out.push(0x90 | len);
        }
        out.extend([1, 0]);
        str_or_bin(&mut out, &c.tenant, bin);
        str_or_bin(&mut out, &c.rule, bin);
        if wide {
            out.extend([0xcc, c.code]);
        } else {
            out.extend(rmp_serde::to_vec(&c.code).expect("encodes"));
        }
        match &c.run {
            None => out.push(0xc0),
            Some(r) => str_or_bin(&mut out, r, bin),
        }
        out.extend_from_slice(details);
        out.extend(extra);
        out
    };
    match c.form {
        Form::Store => store,
        Form::Array16 => by_hand(true, false, false, &details, None),
        Form::BinIds => by_hand(false, true, false, &details, None),
        Form::WideAction => by_hand(false, false, true, &details, None),
        Form::Trailing => {
            let mut out = store;
            out.extend([0xc0, 0x00, 0xff]);
            out
        }
        Form::Eight => by_hand(false, false, false, &details, Some(0xc0)),
        Form::OddDetails(which) => {
            let odd: Vec<u8> = match which {
                // {"x": NaN}
                0 => vec![0x81, 0xa1, b'x', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1],
                // {"x": ext 1}
                1 => vec![0x81, 0xa1, b'x', 0xd4, 0x01, 0x07],
                // {"x": bin}
                2 => vec![0x81, 0xa1, b'x', 0xc4, 0x02, b'h', b'i'],
                // {1: 2}
                3 => vec![0x81, 0x01, 0x02],
                // [1]: not an object
                4 => vec![0x91, 0x01],
                // {"x": "\xff"}: invalid UTF-8
                5 => vec![0x81, 0xa1, b'x', 0xa1, 0xff],
                // {"x": 1.5 as a float32}
                6 => vec![0x81, 0xa1, b'x', 0xca, 0x3f, 0xc0, 0, 0],
                // {"x": NaN as a float32}
                7 => vec![0x81, 0xa1, b'x', 0xca, 0x7f, 0xc0, 0, 0],
                // {"x": -3 as an int8, "y": 5 as an int64, "z": 2^64 - 1}
                8 => vec![
                    0x83, 0xa1, b'x', 0xd0, 0xfd, 0xa1, b'y', 0xd3, 0, 0, 0, 0, 0, 0, 0, 5, 0xa1,
                    b'z', 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                ],
                // {"a": 1, "b": 2, "a": 3}: a repeated key
                9 => vec![0x83, 0xa1, b'a', 1, 0xa1, b'b', 2, 0xa1, b'a', 3],
                // map16 holding an array16 and a str8 key
                10 => vec![0xde, 0, 1, 0xd9, 2, b'k', b'k', 0xdc, 0, 2, 0xc3, 0xc2],
                // {"x": -1 as int16, "y": 300 as uint16, "w": i32::MIN}
                11 => vec![
                    0x83, 0xa1, b'x', 0xd1, 0xff, 0xff, 0xa1, b'y', 0xcd, 0x01, 0x2c, 0xa1, b'w',
                    0xd2, 0x80, 0, 0, 0,
                ],
                // {"x": +inf as a float64}
                12 => vec![0x81, 0xa1, b'x', 0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],
                // an empty map32
                13 => vec![0xdf, 0, 0, 0, 0],
                // {"x": array32 of one negative fixint}
                14 => vec![0x81, 0xa1, b'x', 0xdd, 0, 0, 0, 1, 0xff],
                // {"x": a str32 of two bytes}
                _ => vec![0x81, 0xa1, b'x', 0xdb, 0, 0, 0, 2, b'o', b'k'],
            };
            by_hand(false, false, false, &odd, None)
        }
    }
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(common::run_seed()),
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    })
}

#[test]
fn view_agrees_with_decode_on_real_looking_events_and_their_damage() {
    runner(160)
        .run(&case(), |c| agree_with_damage(&encode(&c)))
        .unwrap();
}

#[test]
fn view_agrees_with_decode_on_arbitrary_bytes() {
    let bytes = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        // Past the header, so the walker gets to the ids and details.
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|mut v| {
            v.splice(0..0, [0x97, 0x01, 0x00]);
            v
        }),
    ];
    runner(20_000)
        .run(&bytes, |b| agree(3, -5, &b).map_err(TestCaseError::fail))
        .unwrap();
}

#[test]
fn view_agrees_with_decode_on_every_id_length_boundary() {
    for &n in &ID_LENGTHS {
        for field in 0..3 {
            let mut ids = ["t".to_string(), "r".to_string(), "run".to_string()];
            ids[field] = "i".repeat(n);
            let c = Case {
                tenant: ids[0].clone(),
                rule: ids[1].clone(),
                code: 3,
                run: Some(ids[2].clone()),
                details: None,
                form: Form::Store,
            };
            let bytes = encode(&c);
            agree(0, 0, &bytes).unwrap();
            let is_event = matches!(view(0, 0, &bytes), Ok(EntryView::Event(_)));
            assert_eq!(is_event, (1..=ID_MAX_BYTES).contains(&n), "length {n}");
        }
    }
}

/// Gap markers (both schemas) and lost entries are "other"; their damage
/// agrees too.
#[test]
fn gaps_and_lost_entries_are_other_and_their_damage_agrees() {
    let gap_v1 = payload::encode_gap_v1(12, -5, 9);
    assert_eq!(view(0, 0, &gap_v1), Ok(EntryView::Other));
    agree_with_damage(&gap_v1).unwrap();
    // A lost entry at offset 7 inside its hole 5+4.
    let lost = rmp_serde::to_vec(&(1u8, 2u8, 5u64, 4u64)).unwrap();
    assert_eq!(view(7, 0, &lost), Ok(EntryView::Other));
    agree_with_damage(&lost).unwrap();
}

/// The speed of the read paths depends on the walker answering for what
/// the store writes, without the decoder: an event as the store encodes it
/// (ids, run, small details) takes the fast path. Checked through the
/// allocation-free answer's identity: the keys point into the payload.
#[test]
fn store_written_events_are_viewed_in_place() {
    let c = Case {
        tenant: "tenant_1".into(),
        rule: "rule_000".into(),
        code: 3,
        run: Some("run_445140".into()),
        details: Some(nested(8)),
        form: Form::Store,
    };
    let bytes = encode(&c);
    let Ok(EntryView::Event(k)) = view(1, 2, &bytes) else {
        panic!("not an event");
    };
    let inside = |s: &str| bytes.as_ptr_range().contains(&s.as_ptr());
    assert!(inside(k.tenant_id) && inside(k.rule_id) && inside(k.run_id.unwrap()));
    assert_eq!(k.action, Action::Blocked);
    assert!(enforcelog::event_view::takes_fast_path(&bytes));
}
