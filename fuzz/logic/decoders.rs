//! The decoder targets: segment header, batch, index file, checkpoint and
//! event payload. Each decoder must never panic; what it accepts must
//! re-encode to the same bytes (or, where the format allows several
//! encodings of one value, to bytes that decode to the same value).

use std::sync::Arc;

use enforcelog::event::{check_id, EventError, Field, DETAILS_MAX_BYTES};
use enforcelog::format::batch::{decode_header, find_valid_after, written_to_the_end};
use enforcelog::format::index_file::{seek, SegmentIndex};
use enforcelog::format::{
    decode_batch, encode_batch, encode_chained_batch, SegmentHeader, SegmentHeaderError,
    BATCH_HEADER_LEN, BATCH_TRAILER_LEN, CHAINED_TRAILER_LEN, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use enforcelog::projection::checkpoint::Checkpoint;
use enforcelog::projection::{ActionsPerDay, Answer, Projection, TriggerStats};
use enforcelog::storage::sim::SimStorage;
use enforcelog::timestamp::{MAX_US, MIN_US};
use enforcelog::{
    payload, Action, Durability, Entry, Event, LogOptions, Record, Store, StoreOptions, StoredEvent,
};

/// Where the segment header's checksum sits (docs/FORMAT.md): crc32 of
/// bytes 0..28, stored at 28..32.
const SEGMENT_CRC_AT: usize = 28;
/// Index files and checkpoints end with a crc32 of every byte before it.
const TRAILING_CRC_LEN: usize = 4;

// ---------------------------------------------------------------- segment header

/// `SegmentHeader::decode`: never panics, looks only at the first 32 bytes,
/// and what it accepts re-encodes to exactly those bytes.
pub fn check_segment_header(data: &[u8]) {
    segment_header_roundtrip(data);
    if data.len() >= SEGMENT_HEADER_LEN {
        let mut fixed = data.to_vec();
        let crc = crc32fast::hash(&fixed[..SEGMENT_CRC_AT]);
        fixed[SEGMENT_CRC_AT..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
        segment_header_roundtrip(&fixed);
    }
}

fn segment_header_roundtrip(data: &[u8]) {
    let decoded = SegmentHeader::decode(data);
    if data.len() < SEGMENT_HEADER_LEN {
        assert_eq!(decoded, Err(SegmentHeaderError::Truncated), "short header");
        return;
    }
    assert_eq!(
        decoded,
        SegmentHeader::decode(&data[..SEGMENT_HEADER_LEN]),
        "the verdict depends on bytes after the header"
    );
    match decoded {
        Ok(header) => {
            let encoded = header.encode();
            assert_eq!(
                encoded[..],
                data[..SEGMENT_HEADER_LEN],
                "an accepted header does not re-encode to its bytes"
            );
            assert_eq!(SegmentHeader::decode(&encoded), Ok(header));
        }
        Err(e) => assert!(!e.reason().is_empty(), "{e:?} has no reason"),
    }
}

// ---------------------------------------------------------------- batch

/// `decode_batch`: never panics; an accepted batch has dense offsets, frames
/// inside its timestamp bounds, and re-encodes to the same bytes except for
/// the bounds, which the encoder makes exact and the decoder only requires
/// to contain every frame (docs/FORMAT.md, "Batch").
pub fn check_batch(data: &[u8]) {
    batch_roundtrip(data);
    let fixed = fix_batch_checksums(data);
    if fixed != data {
        batch_roundtrip(&fixed);
    }
}

fn batch_roundtrip(data: &[u8]) {
    // The helpers recovery uses must not panic on any bytes either.
    let written = written_to_the_end(data);
    let found = find_valid_after(data, 0, 0);
    let Ok(view) = decode_batch(data, None) else {
        return;
    };
    let header = view.header;
    assert_eq!(decode_header(data), Ok(header), "header differs");
    assert!(written, "a valid batch must count as written to its end");
    assert_eq!(found, Some(0), "a valid batch at 0 is not found at 0");
    assert_eq!(view.len(), header.batch_len as usize);
    assert_eq!(view.bytes(), &data[..view.len()]);
    assert!(decode_batch(data, Some(header.first_offset)).is_ok());
    if let Some(other) = header.first_offset.checked_add(1) {
        assert!(
            decode_batch(data, Some(other)).is_err(),
            "a batch at the wrong offset was accepted"
        );
    }

    let mut records = Vec::new();
    for (i, frame) in view.frames().enumerate() {
        assert_eq!(
            frame.offset,
            header.first_offset + i as u64,
            "offsets not dense"
        );
        assert!(
            (header.min_timestamp_us..=header.max_timestamp_us).contains(&frame.timestamp_us),
            "frame timestamp outside the header bounds"
        );
        records.push(Record::new(frame.timestamp_us, frame.payload.to_vec()));
    }
    assert_eq!(records.len(), header.record_count as usize);
    assert_eq!(
        header.next_offset(),
        header.first_offset + records.len() as u64
    );

    let mut again = Vec::new();
    match view.prev() {
        None => encode_batch(&mut again, header.first_offset, &records),
        Some(prev) => {
            // Chained after the link it stores: the same bytes, but for a
            // link tag the fuzz bytes may have made up (kept as stored,
            // with the trailer's checksum).
            encode_chained_batch(&mut again, header.first_offset, &records, &prev);
            let n = again.len();
            let tag = view.link_tag().expect("a chained batch has a link tag");
            again[n - 16..n - 8].copy_from_slice(&tag);
            let crc = crc32fast::hash(&again[n - CHAINED_TRAILER_LEN..n - 8]).to_le_bytes();
            again[n - 8..n - 4].copy_from_slice(&crc);
        }
    }
    let bytes = view.bytes();
    assert_eq!(again.len(), bytes.len(), "re-encoded length differs");
    // batch_len, record_count, first_offset: bytes 4..20.
    assert_eq!(again[4..20], bytes[4..20], "re-encoded header differs");
    assert_eq!(
        again[BATCH_HEADER_LEN..],
        bytes[BATCH_HEADER_LEN..],
        "re-encoded frames differ"
    );
    let exact = decode_batch(&again, Some(header.first_offset))
        .expect("a re-encoded batch decodes")
        .header;
    let min = records.iter().map(|r| r.timestamp_us).min();
    let max = records.iter().map(|r| r.timestamp_us).max();
    assert_eq!(Some(exact.min_timestamp_us), min);
    assert_eq!(Some(exact.max_timestamp_us), max);
    if (header.min_timestamp_us, header.max_timestamp_us)
        == (exact.min_timestamp_us, exact.max_timestamp_us)
    {
        assert_eq!(
            again, bytes,
            "a batch with exact bounds re-encodes differently"
        );
    }
}

/// A copy of `data` whose batch header checksum and frame checksums are
/// recomputed, as far as the bytes go.
fn fix_batch_checksums(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    fix_batch_in_place(&mut out, 0);
    out
}

/// Fixes the batch at `at` in place; returns its length as its header
/// says, when that is at least a minimal batch.
fn fix_batch_in_place(buf: &mut [u8], at: usize) -> Option<usize> {
    let header_end = at.checked_add(BATCH_HEADER_LEN)?;
    if buf.len() < header_end {
        return None;
    }
    let crc = crc32fast::hash(&buf[at + 4..header_end]);
    buf[at..at + 4].copy_from_slice(&crc.to_le_bytes());
    let batch_len = u32_at(buf, at + 4) as usize;
    let count = u32_at(buf, at + 8);
    let mut pos = header_end;
    // Bounded by the bytes: each frame is at least FRAME_HEADER_LEN long.
    for _ in 0..count {
        let Some(payload_len) = pos
            .checked_add(FRAME_HEADER_LEN)
            .filter(|&end| end <= buf.len())
            .map(|_| u32_at(buf, pos + 4) as usize)
        else {
            break;
        };
        let end = pos + FRAME_HEADER_LEN + payload_len.min(buf.len());
        if end > buf.len() {
            break;
        }
        let crc = crc32fast::hash(&buf[pos + 4..end]);
        buf[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        pos = end;
    }
    let minimal = BATCH_HEADER_LEN + FRAME_HEADER_LEN + BATCH_TRAILER_LEN;
    (batch_len >= minimal).then_some(batch_len)
}

/// Fixes the segment header checksum and then every batch checksum, batch
/// after batch, as long as the batch lengths lead somewhere inside `buf`.
pub(super) fn fix_segment_checksums(buf: &mut [u8]) {
    if buf.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&buf[..SEGMENT_CRC_AT]);
        buf[SEGMENT_CRC_AT..SEGMENT_HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    }
    fix_batches_from(buf, SEGMENT_HEADER_LEN);
}

/// Fixes every batch from `at` on (see [`fix_segment_checksums`]).
pub(super) fn fix_batches_from(buf: &mut [u8], mut at: usize) {
    while let Some(len) = fix_batch_in_place(buf, at) {
        at += len;
    }
}

fn u32_at(buf: &[u8], pos: usize) -> u32 {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(&buf[pos..pos + 4]);
    u32::from_le_bytes(bytes)
}

/// `data` with its last four bytes replaced by the crc32 of the rest.
fn fix_trailing_crc(data: &[u8]) -> Option<Vec<u8>> {
    let body_len = data.len().checked_sub(TRAILING_CRC_LEN)?;
    let mut fixed = data.to_vec();
    let crc = crc32fast::hash(&fixed[..body_len]);
    fixed[body_len..].copy_from_slice(&crc.to_le_bytes());
    Some(fixed)
}

// ---------------------------------------------------------------- index file

/// `SegmentIndex::decode`: never panics; what it accepts re-encodes to the
/// same bytes and satisfies the documented invariants; `seek` agrees with a
/// linear search.
pub fn check_index_file(data: &[u8]) {
    index_roundtrip(data);
    if let Some(fixed) = fix_trailing_crc(data) {
        index_roundtrip(&fixed);
    }
}

fn index_roundtrip(data: &[u8]) {
    let Some(index) = SegmentIndex::decode(data) else {
        return;
    };
    assert_eq!(
        index.encode(),
        data,
        "an accepted index re-encodes differently"
    );
    assert!(index.base_offset <= index.next_offset);
    match index.entries.first() {
        Some(first) => assert_eq!(first.first_offset, index.base_offset),
        None => assert_eq!(index.next_offset, index.base_offset),
    }
    for e in &index.entries {
        assert!(e.first_offset >= index.base_offset && e.first_offset < index.next_offset);
        assert!(e.position < index.segment_len);
        assert!(e.min_timestamp_us <= e.max_timestamp_us);
    }
    for pair in index.entries.windows(2) {
        assert!(pair[0].first_offset < pair[1].first_offset);
        assert!(pair[0].position < pair[1].position);
    }
    let mut probes = vec![0, 1, u64::MAX, index.base_offset, index.next_offset];
    for e in index.entries.iter().take(64) {
        probes.extend([
            e.first_offset.saturating_sub(1),
            e.first_offset,
            e.first_offset + 1,
        ]);
    }
    for offset in probes {
        let linear = index
            .entries
            .iter()
            .rev()
            .find(|e| e.first_offset <= offset);
        assert_eq!(seek(&index.entries, offset), linear, "seek({offset})");
    }
}

// ---------------------------------------------------------------- checkpoint

/// `Checkpoint::decode`: never panics, and decode → encode reproduces the
/// file exactly. The snapshot inside is then given to the built-in
/// projections' `restore`, which must not panic either, nor may anything
/// the restored projection is asked afterwards.
pub fn check_checkpoint(data: &[u8]) {
    checkpoint_roundtrip(data);
    if let Some(fixed) = fix_trailing_crc(data) {
        checkpoint_roundtrip(&fixed);
    }
}

fn checkpoint_roundtrip(data: &[u8]) {
    let checkpoint = match Checkpoint::decode(data) {
        Ok(c) => c,
        Err(reason) => {
            assert!(!reason.is_empty(), "a refusal without a reason");
            return;
        }
    };
    let encoded = checkpoint.encode();
    assert!(
        encoded == data,
        "decode → encode changed the checkpoint file:\n in  {data:02x?}\n out {encoded:02x?}"
    );
    assert_eq!(Checkpoint::decode(&encoded).as_ref(), Ok(&checkpoint));
    restore_trigger_stats(&checkpoint.snapshot);
    restore_actions_per_day(&checkpoint.snapshot);
}

/// Restores a trigger-statistics snapshot and asks it everything.
fn restore_trigger_stats(snapshot: &[u8]) {
    let mut stats = TriggerStats::default();
    if stats.restore(snapshot).is_err() {
        return;
    }
    let again = stats.snapshot();
    let mut copy = TriggerStats::default();
    copy.restore(&again).expect("a snapshot restores");
    assert_eq!(
        copy.snapshot(),
        again,
        "snapshot → restore → snapshot changed"
    );

    let _ = (stats.gaps(), stats.rule_count(), stats.recent_event_count());
    let watermark = stats.watermark_us();
    let rules: Vec<(String, String)> = stats
        .all_rules()
        .take(16)
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect();
    let instants = [i64::MIN, MIN_US, 0, MAX_US, i64::MAX]
        .into_iter()
        .chain(watermark);
    for at in instants {
        for (tenant, rule) in &rules {
            let _ = stats.rules_of(tenant).count();
            if let Answer::Exact(s) = stats.answer(tenant, rule, at, 0) {
                assert_eq!(s.trigger_count, s.by_action.iter().sum::<u64>());
            }
        }
    }
    // Folding new events into restored state must not panic either.
    for (i, at) in [i64::MIN, 0, i64::MAX].into_iter().enumerate() {
        let event = StoredEvent {
            offset: i as u64,
            tenant_id: "t".into(),
            rule_id: "r".into(),
            action: Action::ALL[i % 4],
            run_id: None,
            details: None,
            enforced_at_us: at,
        };
        stats.apply(i as u64, &Entry::Event(event));
    }
}

/// Restores an actions-per-day snapshot and reads it back.
fn restore_actions_per_day(snapshot: &[u8]) {
    let mut per_day = ActionsPerDay::default();
    if per_day.restore(snapshot).is_err() {
        return;
    }
    for (day, action, n) in per_day.iter().take(64) {
        assert_eq!(per_day.count(day, action), n);
    }
    let again = per_day.snapshot();
    let mut copy = ActionsPerDay::default();
    copy.restore(&again).expect("a snapshot restores");
    assert_eq!(copy, per_day, "snapshot → restore changed the counts");
}

// ---------------------------------------------------------------- event payload

/// The timestamps payloads are decoded with (the time is the record's, not
/// the payload's): the edges of the range and an ordinary instant.
const PAYLOAD_TIMES_US: [i64; 4] = [MIN_US, 0, 1_764_028_800_000_000, MAX_US];

/// `payload::decode`: never panics; a decoded event is one the store would
/// accept (ids pass `check_id`, details an object of at most 64 KiB and 64
/// levels of nesting, time in range), and recording it in a store reads
/// back the same event.
pub fn check_event_payload(data: &[u8]) {
    let offset = 7;
    let ts = PAYLOAD_TIMES_US[data.len() % PAYLOAD_TIMES_US.len()];
    let entry = match payload::decode(offset, ts, data) {
        Ok(entry) => entry,
        Err(e) => {
            assert!(!e.0.is_empty(), "a refusal without a reason");
            return;
        }
    };
    assert_eq!(entry.offset(), offset);
    assert_eq!(payload::decode(offset, ts, data).as_ref(), Ok(&entry));
    let Entry::Event(stored) = entry else {
        return; // a gap marker: any counts and times are representable
    };
    assert_eq!(stored.enforced_at_us, ts);
    check_id(Field::TenantId, &stored.tenant_id).expect("decoded tenant id is valid");
    check_id(Field::RuleId, &stored.rule_id).expect("decoded rule id is valid");
    if let Some(run_id) = &stored.run_id {
        check_id(Field::RunId, run_id).expect("decoded run id is valid");
    }
    if let Some(details) = &stored.details {
        let len = serde_json::to_vec(details).map_or(usize::MAX, |v| v.len());
        assert!(
            len <= DETAILS_MAX_BYTES,
            "decoded details of {len} bytes of JSON exceed DETAILS_MAX_BYTES"
        );
    }
    let event = Event {
        tenant_id: stored.tenant_id.clone(),
        rule_id: stored.rule_id.clone(),
        action: stored.action,
        run_id: stored.run_id.clone(),
        details: stored.details.clone(),
        enforced_at_us: Some(ts),
    };
    match event.validate() {
        Ok(()) => roundtrip_through_store(event, &stored),
        // Read as written: builds before the depth limit accepted deeper
        // details, so their events must stay readable.
        Err(EventError::DetailsTooDeep { .. }) => {}
        Err(e) => panic!("a decoded payload is an event the store refuses: {e}"),
    }
}

/// Records `event` in a fresh in-memory store and checks that it reads back
/// as `expected` (at its new offset), from the entry and from a decode of
/// the payload bytes the store wrote.
fn roundtrip_through_store(event: Event, expected: &StoredEvent) {
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        // Decoded payloads carry any time of the valid range, year 9999
        // included; the skew limit is not what this checks.
        max_future_skew: std::time::Duration::MAX,
        ..StoreOptions::default()
    };
    let storage = SimStorage::new(0);
    let store = Store::builder("/store")
        .storage(Arc::new(storage))
        .options(options)
        .open()
        .expect("a fresh in-memory store opens");
    let offset = store.record_blocking(event).expect("a valid event records");
    let read = store
        .entries(offset)
        .expect("entries from a committed offset")
        .next()
        .expect("the recorded entry")
        .expect("the recorded entry decodes");
    let want = StoredEvent {
        offset,
        ..expected.clone()
    };
    assert_eq!(
        read,
        Entry::Event(want.clone()),
        "the store changed the event"
    );
    let record = store
        .log()
        .read_from(offset)
        .expect("read_from a committed offset")
        .next()
        .expect("the recorded record")
        .expect("the recorded record reads");
    let again = payload::decode(offset, record.timestamp_us, &record.payload)
        .expect("the store's own payload decodes");
    assert_eq!(again, Entry::Event(want));
    store.close().expect("closing an in-memory store");
}

// ---------------------------------------------------------------- event view

/// The borrowing view agrees with the full decode on every input: an event
/// with equal keys, "other" for a gap marker or lost entry, the same error
/// for everything else (the contract in `src/event_view.rs`).
pub fn check_event_view(data: &[u8]) {
    use enforcelog::event_view::{view, EntryView};
    let offset = 7;
    let ts = PAYLOAD_TIMES_US[data.len() % PAYLOAD_TIMES_US.len()];
    // `decode` builds the events it can in one walk of the view's walker:
    // the same answer as the general decoder, always.
    assert_eq!(
        payload::decode(offset, ts, data),
        payload::decode_reference(offset, ts, data)
    );
    match (view(offset, ts, data), payload::decode(offset, ts, data)) {
        (Ok(EntryView::Event(k)), Ok(Entry::Event(e))) => {
            assert_eq!(k.tenant_id, e.tenant_id);
            assert_eq!(k.rule_id, e.rule_id);
            assert_eq!(k.action, e.action);
            assert_eq!(k.run_id, e.run_id.as_deref());
            assert_eq!((k.enforced_at_us, k.offset), (ts, offset));
        }
        (Ok(EntryView::Other), Ok(Entry::Gap(_) | Entry::Lost(_))) => {}
        (Err(v), Err(d)) => assert_eq!(v, d),
        (v, d) => panic!("view {v:?} but decode {d:?}"),
    }
}
