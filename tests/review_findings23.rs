//! Adversarial review of the issue-17 work (zero tail, event view, interned
//! fold and merge, scan and parallel replay, key index). Each test confirms
//! (ignored, "confirmed: ...") or refutes (passes) one finding.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test review_findings23`.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::Rng;
use enforcelog::event_view::{view, EntryView};
use enforcelog::payload;
use enforcelog::projection::{Answer, Projection, TriggerStats};
use enforcelog::storage::sim::{CrashMode, SimStorage};
use enforcelog::{Action, Entry, EventKeys, Log, LogOptions, LogRecord, Record};

// ---------------------------------------------------------------------
// event_view::view against payload::decode, on hand-made MessagePack.
// ---------------------------------------------------------------------

fn str_of(out: &mut Vec<u8>, s: &[u8], marker: u8) {
    let n = s.len();
    match marker {
        0xa0 => out.push(0xa0 | n as u8),
        0xd9 | 0xc4 => out.extend([marker, n as u8]),
        0xda | 0xc5 => out.extend([marker, (n >> 8) as u8, n as u8]),
        0xdb | 0xc6 => {
            out.push(marker);
            out.extend((n as u32).to_be_bytes());
        }
        _ => unreachable!(),
    }
    out.extend_from_slice(s);
}

/// `[1, 0, tenant, rule, action, run, details]` with the given raw pieces.
fn event_bytes(
    head: &[u8],
    tenant: &[u8],
    rule: &[u8],
    action: &[u8],
    run: &[u8],
    details: &[u8],
) -> Vec<u8> {
    let mut out = head.to_vec();
    out.extend_from_slice(tenant);
    out.extend_from_slice(rule);
    out.extend_from_slice(action);
    out.extend_from_slice(run);
    out.extend_from_slice(details);
    out
}

fn s(text: &[u8], marker: u8) -> Vec<u8> {
    let mut out = Vec::new();
    str_of(&mut out, text, marker);
    out
}

/// The contract: Event iff Event with equal fields, Other iff gap/lost,
/// Err iff Err.
fn agrees(bytes: &[u8]) -> Result<(), String> {
    let v = view(5, 77, bytes);
    let d = payload::decode(5, 77, bytes);
    let ok = match (&v, &d) {
        (Ok(EntryView::Event(k)), Ok(Entry::Event(e))) => {
            k.tenant_id == e.tenant_id
                && k.rule_id == e.rule_id
                && k.action == e.action
                && k.run_id == e.run_id.as_deref()
                && k.enforced_at_us == e.enforced_at_us
                && k.offset == e.offset
        }
        (Ok(EntryView::Other), Ok(Entry::Gap(_) | Entry::Lost(_))) => true,
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "view {v:?} vs decode {d:?} for {:02x?}",
            &bytes[..bytes.len().min(64)]
        ))
    }
}

#[test]
fn view_agrees_with_decode_on_non_canonical_and_edge_encodings() {
    let fix = [0x97u8, 0x01, 0x00];
    let a16 = [0xdcu8, 0x00, 0x07, 0x01, 0x00];
    let t = s(b"acme", 0xa0);
    let r = s(b"r-1", 0xa0);
    let nil = [0xc0u8];
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // Ids in every string and bin width.
    for m in [0xa0, 0xd9, 0xda, 0xdb, 0xc4, 0xc5, 0xc6] {
        cases.push(event_bytes(
            &fix,
            &s(b"acme", m),
            &s(b"r-1", m),
            &[2],
            &s(b"run", m),
            &nil,
        ));
    }
    // Ids at and past the length limit, with invisible characters.
    for len in [127usize, 128, 129] {
        let id = vec![b'x'; len];
        cases.push(event_bytes(&a16, &s(&id, 0xd9), &r, &[1], &nil, &nil));
        let mut bidi = "\u{202E}".as_bytes().to_vec();
        bidi.resize(len, b'y');
        cases.push(event_bytes(&fix, &t, &s(&bidi, 0xd9), &[1], &nil, &nil));
        let mut zw = "\u{200B}".as_bytes().to_vec();
        zw.resize(len, b'z');
        cases.push(event_bytes(&fix, &t, &r, &[1], &s(&zw, 0xda), &nil));
    }
    // Invalid UTF-8 (overlong, lone surrogate, truncated) in ids and in details.
    for bad in [
        &[0xc0u8, 0xaf][..],
        &[0xed, 0xa0, 0x80],
        &[b'a', 0xe2, 0x82],
    ] {
        cases.push(event_bytes(&fix, &s(bad, 0xa0), &r, &[0], &nil, &nil));
        cases.push(event_bytes(&fix, &s(bad, 0xc4), &r, &[0], &nil, &nil));
        let mut details = vec![0x81];
        details.extend(s(b"k", 0xa0));
        details.extend(s(bad, 0xa0));
        cases.push(event_bytes(&fix, &t, &r, &[0], &nil, &details));
        let mut key = vec![0x81];
        key.extend(s(bad, 0xa0));
        key.push(0xc0);
        cases.push(event_bytes(&fix, &t, &r, &[0], &nil, &key));
    }
    // Action: wider uint encodings, out of range, negative.
    for action in [
        &[0xcc, 0x01][..],
        &[0xcd, 0, 3],
        &[0xce, 0, 0, 0, 2],
        &[0xcf, 0, 0, 0, 0, 0, 0, 0, 1],
        &[0x04],
        &[0x7f],
        &[0xff],
        &[0xd0, 0x01],
        &[0xcc, 0xff],
    ] {
        cases.push(event_bytes(&fix, &t, &r, action, &nil, &nil));
    }
    // Details: every map width, huge declared lengths, duplicates, special floats,
    // bin and ext values, non-string keys, arrays with huge headers.
    let entry = |v: &[u8]| {
        let mut e = s(b"k", 0xa0);
        e.extend_from_slice(v);
        e
    };
    let mut details_cases: Vec<Vec<u8>> = vec![
        vec![0x80],
        vec![0xde, 0, 0],
        vec![0xdf, 0, 0, 0, 0],
        vec![0xde, 0xff, 0xff],
        vec![0xdf, 0xff, 0xff, 0xff, 0xff],
        [&[0x81u8][..], &entry(&[0xdd, 0xff, 0xff, 0xff, 0xff])].concat(),
        [&[0x81u8][..], &entry(&[0xdf, 0xff, 0xff, 0xff, 0xff])].concat(),
        [&[0x82u8][..], &entry(&[1]), &entry(&[2])].concat(),
        [&[0x81u8][..], &entry(&[0xca, 0x7f, 0xc0, 0, 0])].concat(),
        [&[0x81u8][..], &entry(&[0xcb, 0x80, 0, 0, 0, 0, 0, 0, 0])].concat(),
        [&[0x81u8][..], &entry(&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0])].concat(),
        [
            &[0x81u8][..],
            &entry(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        ]
        .concat(),
        [&[0x81u8][..], &entry(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0])].concat(),
        [&[0x81u8][..], &entry(&[0xc4, 0x01, 0x00])].concat(),
        [&[0x81u8][..], &entry(&[0xd4, 0x01, 0x00])].concat(),
        [&[0x81u8][..], &entry(&[0xc1])].concat(),
        [&[0x81u8][..], &entry(&[0xd9, 0x01, b'a'])].concat(),
        [&[0x81u8][..], &entry(&[0xdb, 0, 0, 0, 1, b'a'])].concat(),
        vec![0x81, 0x01, 0x02],
        vec![0x81, 0xc4, 0x01, b'k', 0x02],
        vec![0x91, 0x01],
        vec![0xa1, b'x'],
        vec![0xc2],
        // serde_json's private magic keys: plain keys here (no
        // arbitrary_precision / raw_value in this build).
        [
            &[0x81u8][..],
            &s(b"$serde_json::private::Number", 0xa0),
            &s(b"12", 0xa0),
        ]
        .concat(),
        [
            &[0x81u8][..],
            &s(b"$serde_json::private::RawValue", 0xa0),
            &s(b"{}", 0xa0),
        ]
        .concat(),
    ];
    // Nesting: exactly at the store's depth limit and one past, maps and arrays.
    for depth in [63usize, 64, 65, 200] {
        let mut d = Vec::new();
        for _ in 0..depth - 1 {
            d.push(0x81);
            d.extend(s(b"n", 0xa0));
        }
        d.push(0x80);
        details_cases.push(d);
        let mut a = vec![0x81];
        a.extend(s(b"a", 0xa0));
        a.extend(std::iter::repeat_n(0x91, depth - 1));
        a.push(0xc0);
        details_cases.push(a);
    }
    // 64 KiB of details: a zero run in a bin (unsure), a str of zeros, a str
    // of control characters (JSON 6x), right around the measuring threshold.
    for len in [
        10_000usize,
        10_900,
        10_923,
        10_930,
        11_000,
        64 << 10,
        (64 << 10) + 1,
    ] {
        let mut d = vec![0x81];
        d.extend(s(b"blob", 0xa0));
        d.extend(s(&vec![0u8; len], 0xdb));
        details_cases.push(d);
        let mut c = vec![0x81];
        c.extend(s(b"ctl", 0xa0));
        c.extend(s(&vec![0x01u8; len], 0xdb));
        details_cases.push(c);
        let mut f = vec![0x81];
        f.extend(s(b"f", 0xa0));
        f.push(0xdd);
        f.extend((len as u32).to_be_bytes());
        f.extend(std::iter::repeat_n(0xc2, len));
        details_cases.push(f);
    }
    for d in &details_cases {
        cases.push(event_bytes(&fix, &t, &r, &[3], &nil, d));
        cases.push(event_bytes(&a16, &t, &r, &[3], &s(b"run-1", 0xa0), d));
    }
    // Outer array: other lengths, array32, trailing bytes, truncation.
    let good = event_bytes(&fix, &t, &r, &[0], &nil, &nil);
    cases.push([&good[..], &[0x00, 0xff, 0xc1]].concat());
    cases.push([&good[..], &good[..]].concat());
    cases.push([&[0x98u8][..], &good[1..], &[0xc0]].concat());
    cases.push([&[0x96u8][..], &good[1..good.len() - 1]].concat());
    cases.push([&[0xdd, 0, 0, 0, 7][..], &good[1..]].concat());
    cases.push([&[0xdc, 0, 8][..], &good[1..], &[0xc0]].concat());
    cases.push([&[0x97, 0xcc, 0x01, 0x00][..], &good[3..]].concat());
    cases.push([&[0x97, 0x01, 0xcc, 0x00][..], &good[3..]].concat());
    for cut in 0..good.len() {
        cases.push(good[..cut].to_vec());
    }
    // Gap and lost entries, and their truncations.
    for other in [
        vec![0x94, 0x01, 0x02, 0x05, 0x01],
        payload::encode_gap_v1(2, 1, 2),
        vec![0x94, 0x01, 0x02, 0x09, 0x02],
        vec![0x94, 0x01, 0x02, 0xcc, 0x05, 0x01],
    ] {
        for cut in 0..=other.len() {
            cases.push(other[..cut].to_vec());
        }
    }
    let failures: Vec<String> = cases.iter().filter_map(|c| agrees(c).err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {} disagree:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------
// TriggerStats: merge_later of two consecutive halves vs the in-order fold.
// ---------------------------------------------------------------------

const DAY_US: i64 = 24 * 3600 * 1_000_000;

fn keys<'a>(tenant: &'a str, rule: &'a str, at_us: i64, offset: u64) -> EventKeys<'a> {
    EventKeys {
        tenant_id: tenant,
        rule_id: rule,
        action: Action::Blocked,
        run_id: None,
        enforced_at_us: at_us,
        offset,
    }
}

/// Late events (an older `enforced_at` after a newer one) are ordinary: a
/// fleet of enforcers with skewed clocks. The in-order fold sweeps a tenant
/// only when its watermark moved 1/16 of the longest window since the last
/// sweep; `merge_later` sweeps every tenant to its current horizon, so it
/// folds more, and `answer_rule` says NeedsReplay for any `T` whose window
/// start lies before the newest folded event. Confirmed: the merged state
/// (what a parallel replay at open leaves) answered NeedsReplay where the
/// in-order fold answered Exact, against "never in any answer". Resolved by
/// the contract (`Projection::merge_later`, docs/PROJECTIONS.md): the
/// numbers never differ; a merged state may send more answers to the log,
/// never fewer. So: wherever the merged state is Exact, the in-order fold
/// is Exact with the same numbers, and the merged state answers exactly as
/// the normalized in-order fold does, for every `T`.
#[test]
fn merged_trigger_stats_answer_like_the_in_order_fold() {
    let events = [
        (0, 0i64),
        (1, 31 * DAY_US),
        (2, DAY_US + DAY_US / 2), // late: 1.5 days
        (3, 32 * DAY_US),
    ];
    let mut in_order = TriggerStats::default();
    for &(offset, at) in &events {
        in_order.apply_keys(&keys("acme", "r-1", at, offset));
    }
    let mut normalized = TriggerStats::default();
    for &(offset, at) in &events {
        normalized.apply_keys(&keys("acme", "r-1", at, offset));
    }
    normalized.normalize();
    let mut older = TriggerStats::default();
    for &(offset, at) in &events[..3] {
        older.apply_keys(&keys("acme", "r-1", at, offset));
    }
    let mut newer = in_order.fresh();
    for &(offset, at) in &events[3..] {
        newer.apply_keys(&keys("acme", "r-1", at, offset));
    }
    assert!(older.merge_later(newer).is_ok(), "TriggerStats merges");
    let mut wrong = Vec::new();
    let mut exact = 0;
    for step in 0..=(8 * 24) {
        let t = 30 * DAY_US + step * 3600 * 1_000_000;
        let a = in_order.answer("acme", "r-1", t, 4);
        let b = older.answer("acme", "r-1", t, 4);
        let day = t as f64 / DAY_US as f64;
        if let Answer::Exact(_) = b {
            exact += 1;
            if a != b {
                wrong.push(format!("T = day {day:.2}: in order {a:?}, merged {b:?}"));
            }
        }
        let n = normalized.answer("acme", "r-1", t, 4);
        if n != b {
            wrong.push(format!("T = day {day:.2}: normalized {n:?}, merged {b:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers differ, first: {}",
        wrong.len(),
        wrong[0]
    );
    assert!(exact > 0, "the merged state answers some T exactly");
}

/// Random splits, late events, three tenants: the merged state is the
/// normalized in-order fold (same snapshot bytes), and wherever it answers
/// Exact the in-order fold answers Exact with the same numbers (the numbers
/// a user sees are right; NeedsReplay is answered from the log).
#[test]
fn merged_trigger_stats_exact_answers_equal_the_in_order_fold() {
    let seed = common::run_seed();
    let mut rng = Rng(seed);
    for round in 0..40 {
        let n = 200 + rng.index(400);
        let tenants = ["acme", "globex", "initech"];
        let rules = ["r-1", "r-2", "r-3", "r-4"];
        let mut events = Vec::new();
        let mut clock = 0i64;
        for offset in 0..n as u64 {
            clock += rng.range_i64(0..DAY_US);
            let skew = if rng.chance(20) {
                rng.range_i64(0..40 * DAY_US)
            } else {
                0
            };
            events.push((offset, *rng.pick(&tenants), *rng.pick(&rules), clock - skew));
        }
        let mut in_order = TriggerStats::default();
        for &(o, t, r, at) in &events {
            in_order.apply_keys(&keys(t, r, at, o));
        }
        // Half the rounds split near the end: a later half that misses
        // some tenants (whose own sweeps may lag in the earlier half).
        let split = if round % 2 == 0 {
            rng.index(n)
        } else {
            n - 1 - rng.index(3)
        };
        let mut older = TriggerStats::default();
        for &(o, t, r, at) in &events[..split] {
            older.apply_keys(&keys(t, r, at, o));
        }
        let mut newer = in_order.fresh();
        for &(o, t, r, at) in &events[split..] {
            newer.apply_keys(&keys(t, r, at, o));
        }
        assert!(older.merge_later(newer).is_ok());
        let mut normalized = in_order.clone();
        normalized.normalize();
        assert!(
            older.snapshot() == normalized.snapshot(),
            "seed {seed} round {round}: merged is not the normalized in-order fold"
        );
        // Every Exact answer of the merged state is the in-order one (the
        // merged state may send more answers to the log, never fewer).
        for &(_, t, r, _) in events.iter().take(50) {
            let at = clock - rng.range_i64(0..40 * DAY_US);
            if let Answer::Exact(m) = older.answer(t, r, at, n as u64) {
                match in_order.answer(t, r, at, n as u64) {
                    Answer::Exact(i) => assert_eq!(m, i, "seed {seed} round {round}"),
                    Answer::NeedsReplay => {
                        panic!("seed {seed} round {round}: merged Exact, in order NeedsReplay")
                    }
                }
            }
        }
    }
}

/// `merge_later`'s docs: "The result is the normalized state of the
/// in-order fold" (and `Projection::merge_later`: `normalize` brings both
/// to the same state, so the same snapshot bytes). But the merge sweeps only
/// the tenants the later half touched: a tenant only the earlier half saw
/// keeps events the in-order fold, normalized, has folded. So a checkpoint
/// written after a parallel replay has bytes neither the in-order fold nor
/// its normalized form has, and the merged state answers Exact where the
/// normalized in-order fold answers NeedsReplay. (`verify` normalizes both
/// sides, so it still agrees.)
#[test]
fn merged_trigger_stats_are_the_normalized_in_order_fold() {
    let events = [
        ("acme", 0, 0i64),
        ("acme", 1, 31 * DAY_US),
        ("acme", 2, DAY_US + DAY_US / 2),
        ("acme", 3, 32 * DAY_US),
        ("globex", 4, 32 * DAY_US),
    ];
    let mut in_order = TriggerStats::default();
    for &(t, o, at) in &events {
        in_order.apply_keys(&keys(t, "r-1", at, o));
    }
    in_order.normalize();
    let mut older = TriggerStats::default();
    for &(t, o, at) in &events[..4] {
        older.apply_keys(&keys(t, "r-1", at, o));
    }
    let mut newer = in_order.fresh();
    for &(t, o, at) in &events[4..] {
        newer.apply_keys(&keys(t, "r-1", at, o));
    }
    assert!(older.merge_later(newer).is_ok());
    let t = 31 * DAY_US + DAY_US / 4;
    assert_eq!(
        older.answer("acme", "r-1", t, 5),
        in_order.answer("acme", "r-1", t, 5),
        "answer at day 31.25"
    );
    assert!(
        older.snapshot() == in_order.snapshot(),
        "snapshot bytes differ"
    );
}

// ---------------------------------------------------------------------
// Zero tail: damage in an active segment filled with zeros.
// ---------------------------------------------------------------------

const DIR: &str = "/review23";

fn read_all(log: &Log) -> Vec<LogRecord> {
    log.read_from(0)
        .expect("read_from(0)")
        .collect::<Result<_, _>>()
        .expect("read every record")
}

fn real_payload(rng: &mut Rng, i: usize) -> Vec<u8> {
    // Runs of zeros around a little text, sometimes 64 KiB of them.
    let len = if i % 7 == 3 {
        64 << 10
    } else {
        200 + rng.index(300)
    };
    let mut p = vec![0u8; len];
    let text = format!("{{\"tenant\":\"acme\",\"i\":{i}}}");
    let at = rng.index(len - text.len());
    p[at..at + text.len()].copy_from_slice(text.as_bytes());
    p
}

/// A bit flipped in an acknowledged batch of the active segment of a writer
/// that crashed while its segment was filled with zeros: the open seals the
/// segment as found (zeros included) and records on in a new one. Every
/// other record stays readable, after the next open (the damaged segment is
/// sealed now, and not the last: its zeros are read through the rebuild),
/// `verify` reports what it reports without filling, and `repair` leaves a
/// clean log with the same records.
fn damage_in_active_segment(
    preallocate_segments: bool,
    seed: u64,
) -> (usize, u64, u64, Vec<String>, bool, usize) {
    damage_in_active_segment_at(preallocate_segments, seed, false, false)
}

/// As [`damage_in_active_segment`]; with `in_last_header`, the bit is
/// flipped in the header of the last batch, so the damage runs to the end
/// of the data and its hole is sized by the bytes to the end of the file;
/// with `repair_first`, `repair` runs on the crashed log before any open.
fn damage_in_active_segment_at(
    preallocate_segments: bool,
    seed: u64,
    in_last_header: bool,
    repair_first: bool,
) -> (usize, u64, u64, Vec<String>, bool, usize) {
    let mut rng = Rng(seed);
    let storage = SimStorage::new(seed);
    let options = LogOptions {
        preallocate_segments,
        ..LogOptions::default()
    };
    let open = || Log::open_with_storage(Arc::new(storage.clone()), DIR, options.clone());
    let log = open().expect("open");
    let mut acked = Vec::new();
    for i in 0..30 {
        let p = real_payload(&mut rng, i);
        let offset = log
            .append_blocking(Record::new(1_000 + i as i64, p.clone()))
            .expect("append");
        acked.push(LogRecord {
            offset,
            timestamp_us: 1_000 + i as i64,
            payload: p,
        });
    }
    storage.crash(CrashMode::LoseUnsynced);
    drop(log);
    let path = PathBuf::from(DIR).join(format!("{:020}.log", 0));
    let mut bytes = storage.read_file(&path).expect("segment");
    let data_end = bytes.iter().rposition(|&b| b != 0).expect("data") + 1;
    assert_eq!(
        bytes.len() > data_end + 4096,
        preallocate_segments,
        "seed {seed}"
    );
    // Flip one bit in a non-zero byte in the middle of the data.
    let at = if in_last_header {
        // The last batch starts after the trailer ("EEND", or "ECHD"
        // chained) before its own;
        // byte 8 of its header (record_count) is covered by header_crc.
        let before = &bytes[..data_end - 4];
        let start = before
            .windows(4)
            .rposition(|w| w == b"EEND" || w == b"ECHD")
            .expect("a batch before the last")
            + 4;
        start + 8
    } else {
        let mid = data_end / 2;
        mid + bytes[mid..].iter().position(|&b| b != 0).expect("a byte")
    };
    bytes[at] ^= 0x04;
    storage.write_file(&path, &bytes);
    if repair_first {
        enforcelog::log::repair(&storage, std::path::Path::new(DIR)).expect("repair first");
    }

    let intact = |seen: &[LogRecord]| {
        let by_offset: std::collections::BTreeMap<u64, &LogRecord> =
            seen.iter().map(|r| (r.offset, r)).collect();
        acked
            .iter()
            .filter(|r| by_offset.get(&r.offset) == Some(r))
            .count()
    };
    let log = open().expect("open over the damage");
    let kept = intact(&read_all(&log));
    let more = log
        .append_blocking(Record::new(5_000, b"after the damage".to_vec()))
        .expect("append after");
    log.close().expect("close");

    let log = open().expect("reopen");
    let again = read_all(&log);
    assert_eq!(
        intact(&again),
        kept,
        "seed {seed}: the reopen reads another set"
    );
    assert!(again.iter().any(|r| r.offset == more), "seed {seed}");
    let report = log.verify().expect("verify");
    let problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("{:?} {}", p.kind, p.reason))
        .collect();
    log.close().expect("close");

    enforcelog::log::repair(&storage, std::path::Path::new(DIR)).expect("repair");
    let log = open().expect("open after repair");
    let clean = log.verify().expect("verify").is_clean();
    let after = intact(&read_all(&log));
    log.close().expect("close");
    (kept, more, report.lost, problems, clean, after)
}

#[test]
fn damage_in_a_zero_filled_active_segment_is_judged_as_without_zeros() {
    let seed = common::run_seed();
    let without = damage_in_active_segment(false, seed);
    let with = damage_in_active_segment(true, seed);
    assert_eq!(
        with, without,
        "seed {seed}: (kept, offset appended after, lost, verify problems, clean after repair, kept after repair)"
    );
}

/// Damage that runs to the end of the data of a zero-filled active segment
/// (a bit flipped in the last batch's header): its hole is sized by the
/// data, not by the zeros after it (up to 2 MiB / 24 B = 87k offsets).
#[test]
fn damage_to_the_end_of_a_zero_filled_active_segment_is_judged_as_without_zeros() {
    let seed = common::run_seed();
    let without = damage_in_active_segment_at(false, seed, true, false);
    let with = damage_in_active_segment_at(true, seed, true, false);
    assert_eq!(
        with, without,
        "seed {seed}: (kept, offset appended after, lost, verify problems, clean after repair, kept after repair)"
    );
}

/// The same damage repaired before any open: `repair` sizes the hole of the
/// last segment by its data, not by the zeros after it.
#[test]
fn repair_of_damage_to_the_end_of_a_zero_filled_segment_is_judged_as_without_zeros() {
    let seed = common::run_seed();
    let without = damage_in_active_segment_at(false, seed, true, true);
    let with = damage_in_active_segment_at(true, seed, true, true);
    assert_eq!(
        with, without,
        "seed {seed}: (kept, offset appended after, lost, verify problems, clean after repair, kept after repair)"
    );
}

// ---------------------------------------------------------------------
// Key index: a key file that checks whole and is bound to the right
// (base, next, length) but belongs to another store.
// ---------------------------------------------------------------------

fn key_store_options() -> enforcelog::StoreOptions {
    enforcelog::StoreOptions {
        log: LogOptions {
            segment_max_bytes: 8 << 10,
            record_max_bytes: 4 << 10,
            ..LogOptions::default()
        },
        ..enforcelog::StoreOptions::default()
    }
}

/// Every `.keys` file under `dir`, by path relative to it.
fn keys_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "keys") {
                out.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// Two stores of the same shape (one tenant each, events of one size: a
/// fleet's stores look like this). Store B's key files copied over store
/// A's (a restore from the wrong shard's backup; a store wiped and created
/// again in place, its `keys/` left behind) check whole and name A's
/// segments by (base, next, length): A's tenant has no postings in them, no
/// posting fails a check, and A's events are silently missing from its
/// tenant's query. The key file names no store (`store_tag`), nor anything
/// of the segment's content.
#[test]
fn a_key_file_of_another_store_does_not_hide_events() {
    let a = tempfile::tempdir().expect("temporary directory");
    let b = tempfile::tempdir().expect("temporary directory");
    let details = serde_json::json!({"note": "\u{0}\u{0}\u{0}\u{0}", "nested": {"a": [0, 0, 0]}});
    let details = details.as_object().expect("object").clone();
    for (dir, tenant) in [(a.path(), "acme"), (b.path(), "beta")] {
        let store = enforcelog::Store::open(dir, key_store_options()).expect("open");
        for i in 0..200 {
            let event = enforcelog::Event::new(tenant, "r-1", Action::Blocked)
                .with_run_id(format!("run-{:03}", i % 100))
                .with_details(details.clone());
            store.record_blocking(event).expect("record");
        }
        // Builds (and writes) every sealed segment's key file.
        let page = store
            .query(&enforcelog::Query::tenant(tenant).limit(100_000))
            .expect("query");
        assert_eq!(page.events.len(), 200, "{tenant}");
        store.close().expect("close");
    }
    let a_files = keys_files(a.path());
    let b_files = keys_files(b.path());
    assert!(!a_files.is_empty(), "no key files written: {a_files:?}");
    assert_eq!(a_files, b_files, "the stores differ in shape");
    for name in &a_files {
        std::fs::copy(b.path().join(name), a.path().join(name)).expect("copy");
    }
    let store = enforcelog::Store::open(a.path(), key_store_options()).expect("reopen");
    let page = store
        .query(&enforcelog::Query::tenant("acme").limit(100_000))
        .expect("query");
    store.close().expect("close");
    assert_eq!(
        page.events.len(),
        200,
        "events of acme hidden by B's key files"
    );
}

// ---------------------------------------------------------------------
// Interned ids: the (tenant, rule) table hashes with a fixed, unkeyed
// multiply-rotate hash (`projection::intern::FxHasher`, seed in the source)
// and resolves collisions by walking a chain. Ids are user input.
// ---------------------------------------------------------------------

/// The interning hash as `src/projection/intern.rs` computes it (the attack
/// model: an attacker reads the open source and crafts ids offline).
struct Fx(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Fx {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        self.add(bytes.len() as u64);
    }
}

fn fx_state(tenant: &str, rule_head: &[u8]) -> u64 {
    let mut h = Fx(0);
    h.write(tenant.as_bytes());
    for chunk in rule_head.chunks(8) {
        h.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
    }
    h.0
}

fn pair_hash(tenant: &str, rule: &str) -> u64 {
    let mut h = Fx(0);
    h.write(tenant.as_bytes());
    h.write(rule.as_bytes());
    h.0.rotate_left(26)
}

fn mul_inverse(a: u64) -> u64 {
    // Newton's iteration for the inverse of an odd number mod 2^64.
    let mut x = a;
    for _ in 0..6 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
    }
    x
}

/// `n` 16-byte printable rule ids of `tenant` whose pair hash equals that
/// of (`victim_tenant`, `victim_rule`).
fn colliding_rules(tenant: &str, victim_tenant: &str, victim_rule: &str, n: usize) -> Vec<String> {
    let target_final = pair_hash(victim_tenant, victim_rule).rotate_right(26);
    // final = (rotl(h2, 5) ^ 16) * SEED  =>  h2 = rotr(final * SEED^-1 ^ 16, 5)
    let inv = mul_inverse(FX_SEED);
    let h2 = (target_final.wrapping_mul(inv) ^ 16).rotate_right(5);
    // h2 = (rotl(h1, 5) ^ w2) * SEED  =>  w2 = rotl(h1, 5) ^ h2 * SEED^-1
    let w2_mask = h2.wrapping_mul(inv);
    let printable = |w: u64| w.to_le_bytes().iter().all(|b| (0x21..0x7f).contains(b));
    let mut rng = Rng(0x5eed_c011);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let w1 = u64::from_le_bytes(std::array::from_fn(|_| 0x21 + (rng.next() % 94) as u8));
        let h1 = fx_state(tenant, &w1.to_le_bytes());
        let w2 = h1.rotate_left(5) ^ w2_mask;
        if printable(w2) {
            let mut bytes = w1.to_le_bytes().to_vec();
            bytes.extend(w2.to_le_bytes());
            out.push(String::from_utf8(bytes).expect("ASCII"));
        }
    }
    out
}

/// One tenant's rule ids (any printable text up to 128 bytes) could be
/// crafted offline so that every (tenant, rule) pair landed in the chain of
/// another tenant's pair: each of the victim's events then walked the whole
/// chain, on the one projection thread every tenant shares (and in every
/// replay). Confirmed (by CPU time, 20,000 crafted rules against 20,000
/// ordinary ones). The interning hash is now keyed per table with a random
/// key, so ids crafted against the source no longer share a chain. Checked
/// without timing: the longest chain after the victim's pair and the
/// crafted ids (all in one chain with the unkeyed hash).
#[test]
fn crafted_rule_ids_do_not_share_one_interning_chain() {
    let crafted = colliding_rules("mallory", "acme", "r-1", 20_000);
    for rule in crafted.iter().take(3) {
        assert_eq!(
            pair_hash("mallory", rule),
            pair_hash("acme", "r-1"),
            "{rule}"
        );
        assert!(enforcelog::event::check_id(enforcelog::Field::RuleId, rule).is_ok());
    }
    let mut p = TriggerStats::default();
    p.apply_keys(&keys("acme", "r-1", 1, 0));
    for (i, rule) in crafted.iter().enumerate() {
        p.apply_keys(&keys("mallory", rule, 2, i as u64 + 1));
    }
    // 20,001 random 64-bit hashes: a chain of 3 has a chance near 2^-90.
    assert!(
        p.longest_pair_chain() <= 2,
        "{} of 20,001 pairs share one chain",
        p.longest_pair_chain()
    );
    // The pairs are all there, each found.
    assert_eq!(p.all_rules().count(), 20_001);
    assert!(matches!(p.answer("acme", "r-1", 1, 20_001), Answer::Exact(s) if s.total_count == 1));
}

// ---------------------------------------------------------------------
// Zero tail: many crashes of an unacknowledged group written over zeros.
// ---------------------------------------------------------------------

/// What a reopen after a crash in the middle of an unacknowledged group
/// makes of it: (acknowledged records all read back, segments sealed as
/// damaged, verify clean).
fn crash_in_a_group(preallocate_segments: bool, seed: u64, mode: CrashMode) -> (bool, u64, bool) {
    let mut rng = Rng(seed);
    let storage = SimStorage::new(seed);
    let options = LogOptions {
        preallocate_segments,
        ..LogOptions::default()
    };
    let open = || Log::open_with_storage(Arc::new(storage.clone()), DIR, options.clone());
    let log = open().expect("open");
    let mut acked = Vec::new();
    for i in 0..(1 + rng.index(12)) {
        let p = real_payload(&mut rng, i);
        let offset = log
            .append_blocking(Record::new(i as i64, p.clone()))
            .expect("append");
        acked.push(LogRecord {
            offset,
            timestamp_us: i as i64,
            payload: p,
        });
    }
    // One group: its write reaches the disk (in part), its fsync fails.
    storage.power_cut_after(1);
    let group: Vec<Record> = (0..1 + rng.index(6))
        .map(|i| Record::new(100 + i as i64, real_payload(&mut rng, i + 3)))
        .collect();
    assert!(log.append_batch_blocking(group).is_err(), "seed {seed}");
    storage.crash(mode);
    drop(log);
    let log = open().expect("reopen");
    let seen = read_all(&log);
    let all_there = acked.iter().all(|r| seen.get(r.offset as usize) == Some(r));
    let damaged = log.metrics().damaged_segments;
    let clean = log.verify().expect("verify").is_clean();
    log.close().expect("close");
    (all_there, damaged, clean)
}

/// A crash during an unacknowledged group written over zeros is judged as
/// the same crash of a growing file: never damage, every acknowledged
/// record kept.
#[test]
fn crashes_in_a_group_over_zeros_are_judged_as_without_zeros() {
    let base = common::run_seed();
    let mut differ = Vec::new();
    for i in 0..120u64 {
        let seed = base.wrapping_add(i);
        for mode in [
            CrashMode::TearLastWrite,
            CrashMode::TornSectors,
            CrashMode::Reorder,
        ] {
            let with = crash_in_a_group(true, seed, mode);
            let without = crash_in_a_group(false, seed, mode);
            if with != (true, 0, true) || without != (true, 0, true) {
                differ.push(format!(
                    "seed {seed} {mode:?}: with zeros {with:?}, without {without:?}"
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "{} cases:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

// ---------------------------------------------------------------------
// Key index: a dropped index pass undoes the page, not the store's counter.
// ---------------------------------------------------------------------

/// A key file whose last posting of the tenant names a wrong frame (a
/// file that checks whole: derived data with a bug, or a colliding hash's
/// frame moved): the query takes the segment's undecodable record, meets
/// the bad posting, undoes the page and reads the segment again. The page
/// is right, but `StoreMetrics::undecodable_read` counted the one
/// undecodable record twice (`Store::take_record` adds to the counter,
/// `Undo` does not take it back).
#[test]
fn a_dropped_key_index_pass_counts_each_undecodable_record_once() {
    use enforcelog::format::keys_file::KeysFile;
    let dir = tempfile::tempdir().expect("temporary directory");
    let record = |store: &enforcelog::Store, n: usize| {
        for i in 0..n {
            let event = enforcelog::Event::new("acme", "r-1", Action::Killed)
                .with_run_id(format!("run-{i}"))
                .with_details(common::object(serde_json::json!({"zeros": [0, 0, 0, 0]})));
            store.record_blocking(event).expect("record");
        }
    };
    let store = enforcelog::Store::open(dir.path(), key_store_options()).expect("open");
    record(&store, 40);
    store.close().expect("close");
    let log = Log::open(dir.path(), key_store_options().log).expect("open the log");
    log.append_blocking(Record::new(enforcelog::now_us(), vec![0u8; 300]))
        .expect("a raw record");
    log.close().expect("close the log");
    let store = enforcelog::Store::open(dir.path(), key_store_options()).expect("reopen");
    record(&store, 80);
    store
        .query(&enforcelog::Query::tenant("acme").limit(100_000))
        .expect("build the key files");
    store.close().expect("close");

    let mut damaged = false;
    for name in keys_files(dir.path()) {
        let path = dir.path().join(&name);
        let mut file = KeysFile::decode(&std::fs::read(&path).expect("read")).expect("checks");
        let Some(other) = file.others.first().copied() else {
            continue;
        };
        let last = file
            .tenant_postings
            .iter_mut()
            .filter(|p| p.position > other.position)
            .max_by_key(|p| p.position);
        if let Some(last) = last {
            last.position += 1;
            std::fs::write(&path, file.encode()).expect("write");
            damaged = true;
        }
    }
    assert!(
        damaged,
        "no key file with an undecodable record before an event"
    );
    let store = enforcelog::Store::open(dir.path(), key_store_options()).expect("reopen");
    let page = store
        .query(&enforcelog::Query::tenant("acme").limit(100_000))
        .expect("query");
    assert_eq!(page.events.len(), 120);
    assert_eq!(page.undecodable, 1);
    let counted = store.metrics().undecodable_read;
    store.close().expect("close");
    assert_eq!(counted, 1, "one undecodable record read once");
}
