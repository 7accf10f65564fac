//! The MessagePack payload of a store record, with an explicit schema
//! version so a later release can read today's logs.
//!
//! ```text
//! schema 1, event:      [1, 0, tenant_id, rule_id, action_code, run_id | nil, details | nil]
//! schema 1, gap marker: [1, 1, dropped, first_dropped_at_us, last_dropped_at_us]
//! schema 1, lost entry: [1, 2, hole_first_offset, hole_len]
//! schema 2, gap marker: [2, 1, dropped, first_dropped_at_us, last_dropped_at_us,
//!                        [[tenant_id, rule_id, count, first_at_us, last_at_us], ...],
//!                        [count, first_at_us, last_at_us] | nil]
//! ```
//!
//! Events and lost entries are written with schema 1, gap markers with
//! schema 2, which adds who lost what: at most [`GAP_LOSSES_MAX`] (tenant,
//! rule) pairs with the count and `enforced_at` span of their dropped
//! events, and the rest summed as *unattributed*. Schema 1 gap markers
//! (written by earlier builds) still decode: all their drops are
//! unattributed, over the drop times.
//!
//! A lost entry is written by the log layer, not the store: every record of
//! a *hole batch* (see `log::hole`) carries it, one per offset that damage
//! destroyed.
//!
//! A payload is a MessagePack array whose first two elements are the schema
//! version and the entry kind. Action codes: 0 STOPPED, 1 KILLED, 2 ABORTED,
//! 3 BLOCKED. `details` is a MessagePack map (the JSON object). The event's
//! time is the record's timestamp, not part of the payload. Decoding never
//! panics: bytes that are not a payload of a known schema are an error.

use serde_json::{Map, Value};

use crate::event::{
    check_id, Action, Entry, Event, Field, GapLoss, GapMarker, LossSpan, LostEntry, StoredEvent,
    DETAILS_MAX_BYTES, GAP_LOSSES_MAX,
};

/// The schema version this build writes events with.
pub const SCHEMA_VERSION: u8 = 1;
/// The schema version this build writes gap markers with.
pub const GAP_SCHEMA_VERSION: u8 = 2;

const KIND_EVENT: u8 = 0;
const KIND_GAP: u8 = 1;
const KIND_LOST: u8 = 2;

type EventV1 = (u8, u8, String, String, u8, Option<String>, Option<Value>);
type GapV1 = (u8, u8, u64, i64, i64);
type LostV1 = (u8, u8, u64, u64);
type SpanV2 = (u64, i64, i64);
type LossV2 = (String, String, u64, i64, i64);
type GapV2 = (u8, u8, u64, i64, i64, Vec<LossV2>, Option<SpanV2>);

/// Encodes a validated event's payload.
pub(crate) fn encode_event(event: &Event) -> Vec<u8> {
    let tuple = (
        SCHEMA_VERSION,
        KIND_EVENT,
        &event.tenant_id,
        &event.rule_id,
        event.action.code(),
        &event.run_id,
        &event.details,
    );
    // Strings, integers and JSON values always serialize.
    rmp_serde::to_vec(&tuple).unwrap_or_default()
}

/// Encodes a gap marker's payload (schema 2). `losses` holds at most
/// [`GAP_LOSSES_MAX`] pairs with valid ids; the caller sums the rest into
/// `unattributed`.
pub(crate) fn encode_gap(
    dropped: u64,
    first_us: i64,
    last_us: i64,
    losses: &[GapLoss],
    unattributed: Option<LossSpan>,
) -> Vec<u8> {
    debug_assert!(losses.len() <= GAP_LOSSES_MAX);
    let losses: Vec<LossV2> = losses
        .iter()
        .map(|l| {
            let s = l.span;
            (
                l.tenant_id.clone(),
                l.rule_id.clone(),
                s.count,
                s.first_at_us,
                s.last_at_us,
            )
        })
        .collect();
    let unattributed = unattributed.map(|s| (s.count, s.first_at_us, s.last_at_us));
    let tuple: GapV2 = (
        GAP_SCHEMA_VERSION,
        KIND_GAP,
        dropped,
        first_us,
        last_us,
        losses,
        unattributed,
    );
    rmp_serde::to_vec(&tuple).unwrap_or_default()
}

/// Encodes a schema 1 gap marker, as builds before schema 2 wrote them
/// (for compatibility tests and fixtures).
#[doc(hidden)]
pub fn encode_gap_v1(dropped: u64, first_us: i64, last_us: i64) -> Vec<u8> {
    let tuple: GapV1 = (SCHEMA_VERSION, KIND_GAP, dropped, first_us, last_us);
    rmp_serde::to_vec(&tuple).unwrap_or_default()
}

/// Encodes the payload of every record of a hole covering `len` offsets
/// from `first`.
pub(crate) fn encode_lost(first: u64, len: u64) -> Vec<u8> {
    let tuple: LostV1 = (SCHEMA_VERSION, KIND_LOST, first, len);
    rmp_serde::to_vec(&tuple).unwrap_or_default()
}

/// The hole (first offset, length) a record's payload names, if it is a
/// lost-entry payload.
pub(crate) fn decode_lost(payload: &[u8]) -> Option<(u64, u64)> {
    match peek_header(payload) {
        Ok((SCHEMA_VERSION, KIND_LOST)) => {
            let (_, _, first, len): LostV1 = rmp_serde::from_slice(payload).ok()?;
            Some((first, len))
        }
        _ => None,
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable payload: {0}")]
pub struct PayloadError(pub String);

/// Decodes a record's payload into an entry.
pub fn decode(offset: u64, timestamp_us: i64, payload: &[u8]) -> Result<Entry, PayloadError> {
    // The common case, an event as the store writes it, built in one walk
    // (`event_view`); anything that walk is not sure of comes here.
    if let Some(event) = crate::event_view::decode_event(offset, timestamp_us, payload) {
        return Ok(Entry::Event(event));
    }
    decode_general(offset, timestamp_us, payload)
}

/// [`decode`] without its fast path: every payload through `rmp_serde`.
/// The reference the fast path is tested against (feature `test-util`);
/// not a stable API.
#[cfg(feature = "test-util")]
#[doc(hidden)]
pub fn decode_reference(
    offset: u64,
    timestamp_us: i64,
    payload: &[u8],
) -> Result<Entry, PayloadError> {
    decode_general(offset, timestamp_us, payload)
}

fn decode_general(offset: u64, timestamp_us: i64, payload: &[u8]) -> Result<Entry, PayloadError> {
    let (schema, kind) = peek_header(payload)?;
    let bad = |e: rmp_serde::decode::Error| PayloadError(e.to_string());
    match (schema, kind) {
        (1, KIND_GAP) => {
            let (_, _, dropped, first, last): GapV1 =
                rmp_serde::from_slice(payload).map_err(bad)?;
            Ok(Entry::Gap(GapMarker {
                offset,
                dropped,
                first_dropped_at_us: first,
                last_dropped_at_us: last,
                losses: Vec::new(),
                unattributed: (dropped > 0).then_some(LossSpan {
                    count: dropped,
                    first_at_us: first,
                    last_at_us: last,
                }),
            }))
        }
        (2, KIND_GAP) => decode_gap_v2(offset, payload),
        (1, KIND_EVENT) => {
            let (_, _, tenant_id, rule_id, code, run_id, details): EventV1 =
                rmp_serde::from_slice(payload).map_err(bad)?;
            for (field, id) in [(Field::TenantId, &tenant_id), (Field::RuleId, &rule_id)]
                .into_iter()
                .chain(run_id.as_ref().map(|r| (Field::RunId, r)))
            {
                check_id(field, id).map_err(|e| PayloadError(e.to_string()))?;
            }
            let action = Action::from_code(code)
                .ok_or_else(|| PayloadError(format!("unknown action code {code}")))?;
            let details = match details {
                None => None,
                Some(Value::Object(map)) => Some(map),
                Some(_) => return Err(PayloadError("details is not an object".into())),
            };
            // The size limit has held since the first build: a payload
            // over it was never written by enforcelog. Measuring costs a
            // serialisation, so only payloads that could be over it are
            // measured (JSON is at most 6 times its MessagePack: a one-byte
            // control character becomes `\u00XX`). Nesting deeper than
            // DETAILS_MAX_DEPTH is read as written: builds before that
            // limit accepted it.
            if let Some(map) = &details {
                if payload.len().saturating_mul(6) > DETAILS_MAX_BYTES {
                    let len = serde_json::to_vec(map).map_or(usize::MAX, |v| v.len());
                    if len > DETAILS_MAX_BYTES {
                        return Err(PayloadError(format!(
                            "details: {len} bytes of JSON is more than {DETAILS_MAX_BYTES}"
                        )));
                    }
                }
            }
            Ok(Entry::Event(StoredEvent {
                offset,
                tenant_id,
                rule_id,
                action,
                run_id,
                details,
                enforced_at_us: timestamp_us,
            }))
        }
        (1, KIND_LOST) => {
            let (_, _, first, len): LostV1 = rmp_serde::from_slice(payload).map_err(bad)?;
            if !(first..first.saturating_add(len)).contains(&offset) {
                return Err(PayloadError(format!(
                    "lost entry at offset {offset} outside its hole {first}+{len}"
                )));
            }
            Ok(Entry::Lost(LostEntry {
                offset,
                hole_first_offset: first,
                hole_len: len,
            }))
        }
        (1 | 2, other) => Err(PayloadError(format!(
            "unknown entry kind {other} of schema version {schema}"
        ))),
        (other, _) => Err(PayloadError(format!("unknown schema version {other}"))),
    }
}

fn decode_gap_v2(offset: u64, payload: &[u8]) -> Result<Entry, PayloadError> {
    let (_, _, dropped, first, last, losses, unattributed): GapV2 =
        rmp_serde::from_slice(payload).map_err(|e| PayloadError(e.to_string()))?;
    if losses.len() > GAP_LOSSES_MAX {
        return Err(PayloadError(format!(
            "gap marker names {} (tenant, rule) pairs, more than {GAP_LOSSES_MAX}",
            losses.len()
        )));
    }
    let span = |(count, first_at_us, last_at_us): SpanV2| -> Result<LossSpan, PayloadError> {
        if count == 0 || first_at_us > last_at_us {
            return Err(PayloadError(format!(
                "gap marker loss of {count} events from {first_at_us} to {last_at_us} µs"
            )));
        }
        Ok(LossSpan {
            count,
            first_at_us,
            last_at_us,
        })
    };
    let mut out = Vec::with_capacity(losses.len());
    for (tenant_id, rule_id, count, first_at, last_at) in losses {
        check_id(Field::TenantId, &tenant_id).map_err(|e| PayloadError(e.to_string()))?;
        check_id(Field::RuleId, &rule_id).map_err(|e| PayloadError(e.to_string()))?;
        out.push(GapLoss {
            tenant_id,
            rule_id,
            span: span((count, first_at, last_at))?,
        });
    }
    Ok(Entry::Gap(GapMarker {
        offset,
        dropped,
        first_dropped_at_us: first,
        last_dropped_at_us: last,
        losses: out,
        unattributed: unattributed.map(span).transpose()?,
    }))
}

/// Reads the schema version and kind: a MessagePack array (fixarray or
/// array16) whose first two elements are positive fixints.
fn peek_header(payload: &[u8]) -> Result<(u8, u8), PayloadError> {
    let rest = match payload.first() {
        Some(&b) if (0x92..=0x9f).contains(&b) => &payload[1..],
        Some(0xdc) if payload.len() >= 3 => &payload[3..],
        _ => return Err(PayloadError("not a MessagePack array".into())),
    };
    match rest {
        [schema, kind, ..] if *schema < 0x80 && *kind < 0x80 => Ok((*schema, *kind)),
        _ => Err(PayloadError("no schema version and kind".into())),
    }
}

/// Details of an event as stored, for tests and tools.
pub fn details_of(entry: &Entry) -> Option<&Map<String, Value>> {
    match entry {
        Entry::Event(e) => e.details.as_ref(),
        Entry::Gap(_) | Entry::Lost(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_roundtrip() {
        let event = Event::new("acme", "r-1", Action::Killed)
            .with_run_id("run-9")
            .with_details(
                crate::details!({"step": 3, "why": "budget", "nested": {"a": [1, 2.5, null]}}),
            );
        let bytes = encode_event(&event);
        let Entry::Event(back) = decode(7, 42, &bytes).unwrap() else {
            panic!("not an event");
        };
        assert_eq!(back.offset, 7);
        assert_eq!(back.enforced_at_us, 42);
        assert_eq!(back.tenant_id, "acme");
        assert_eq!(back.rule_id, "r-1");
        assert_eq!(back.action, Action::Killed);
        assert_eq!(back.run_id.as_deref(), Some("run-9"));
        assert_eq!(back.details, event.details);
    }

    #[test]
    fn gap_roundtrip() {
        let losses = vec![GapLoss {
            tenant_id: "acme".into(),
            rule_id: "r-1".into(),
            span: LossSpan {
                count: 10,
                first_at_us: -7,
                last_at_us: 8,
            },
        }];
        let other = Some(LossSpan {
            count: 2,
            first_at_us: 1,
            last_at_us: 2,
        });
        let bytes = encode_gap(12, -5, 9, &losses, other);
        assert_eq!(
            decode(3, 0, &bytes),
            Ok(Entry::Gap(GapMarker {
                offset: 3,
                dropped: 12,
                first_dropped_at_us: -5,
                last_dropped_at_us: 9,
                losses,
                unattributed: other,
            }))
        );
    }

    #[test]
    fn schema_1_gap_markers_still_decode_as_unattributed_drops() {
        let bytes = encode_gap_v1(12, -5, 9);
        assert_eq!(
            decode(3, 0, &bytes),
            Ok(Entry::Gap(GapMarker {
                offset: 3,
                dropped: 12,
                first_dropped_at_us: -5,
                last_dropped_at_us: 9,
                losses: Vec::new(),
                unattributed: Some(LossSpan {
                    count: 12,
                    first_at_us: -5,
                    last_at_us: 9
                }),
            }))
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let good = encode_event(&Event::new("t", "r", Action::Blocked));
        for cut in 0..good.len() {
            assert!(decode(0, 0, &good[..cut]).is_err(), "cut {cut}");
        }
        for bad in [
            &b""[..],
            b"\x92\x02\x00",
            b"\x93\x01\x07\x00",
            b"\xc0",
            b"\x97\x01\x00\x01\x01\x09\xc0\xc0",
        ] {
            assert!(decode(0, 0, bad).is_err(), "{bad:?}");
        }
    }
}
