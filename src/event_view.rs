//! A borrowing view of a store payload: the keys of an event (tenant, rule,
//! action, run, time) read in place, without allocating, for readers that
//! need no more (projections folding counts, filters rejecting what is not
//! theirs). `payload::decode` stays the reader of whole events.
//!
//! Contract, for every `payload` (the whole exactness argument of the read
//! paths built on it rests on this; `tests/event_view.rs` and the fuzz
//! target `event_view` check it against `decode`):
//! - `view` is `Ok(EntryView::Event(k))` iff `decode` is
//!   `Ok(Entry::Event(e))`, and then `k`'s fields equal `e`'s;
//! - `view` is `Ok(EntryView::Other)` iff `decode` is a gap marker or a lost
//!   entry;
//! - `view` is `Err` iff `decode` is `Err` (with the same error).
//!
//! How it stays exact by construction: a hand-written MessagePack walker
//! (the *fast path*) answers only for payloads it can prove `decode`
//! accepts. That is a schema 1 event `[1, 0, tenant, rule, action, run |
//! nil, details | nil]` (fixarray or array16 of exactly 7) whose ids are
//! MessagePack str or bin holding valid UTF-8 that passes
//! [`crate::event::check_id`], whose action is an integer code 0..=3, and
//! whose `details` is nil or a map that a *validating skip* accepts: string
//! keys of valid UTF-8 (none starting with the prefix `serde_json` reserves
//! for its `raw_value` and `arbitrary_precision` features, which a host's
//! build may turn on), values nil, bool, integer, finite float, valid UTF-8
//! string, array or map, nested at most [`SAFE_DEPTH`] deep, and a payload
//! small enough (`len * 6 <= DETAILS_MAX_BYTES`) that `decode` never
//! measures its JSON size. Bytes after the array are ignored, as `decode`
//! (rmp_serde) ignores them. Anything else is *unsure* and goes to
//! `decode`, whose verdict is the answer; an event it accepts is then
//! borrowed back from the payload (its ids are bytes of the payload).

use serde_json::{Map, Value};

use crate::event::{check_id, Action, Entry, Field, StoredEvent, DETAILS_MAX_BYTES, ID_MAX_BYTES};
use crate::payload;
pub use crate::payload::PayloadError;

/// Deepest nesting of `details` the fast path walks (`details` itself is
/// 1). Far below the decoder's limit (1,024 levels for the whole payload),
/// and equal to what the store accepts on write.
pub const SAFE_DEPTH: usize = crate::event::DETAILS_MAX_DEPTH;

/// The prefix of the map keys `serde_json` reserves for its own use.
const SERDE_JSON_RESERVED: &str = "$serde_json::private::";

/// What a payload is, as far as readers of keys care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryView<'a> {
    /// An event, its keys borrowed from the payload.
    Event(EventKeys<'a>),
    /// A gap marker or a lost entry: use `payload::decode` for it.
    Other,
}

/// The keys of an event, borrowed from its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKeys<'a> {
    /// The tenant.
    pub tenant_id: &'a str,
    /// The rule.
    pub rule_id: &'a str,
    /// The action.
    pub action: Action,
    /// The run, if any.
    pub run_id: Option<&'a str>,
    /// When, µs since the epoch (the record's timestamp).
    pub enforced_at_us: i64,
    /// The event's offset in the log.
    pub offset: u64,
}

/// Views a record's payload: see the module docs for the contract.
pub fn view(offset: u64, timestamp_us: i64, payload: &[u8]) -> Result<EntryView<'_>, PayloadError> {
    if let Some(head) = Walker::new(payload).fast_event() {
        return Ok(EntryView::Event(head.keys(offset, timestamp_us)));
    }
    slow(offset, timestamp_us, payload)
}

/// The whole event, when the fast path answers for `payload`: what
/// `payload::decode` returns for it, built from the same walk (ids and
/// strings copied, `details` built as `serde_json` builds a `Value` from
/// MessagePack: unsigned integers as `u64`, signed ones as `i64`, floats as
/// `f64`, a repeated key keeping its first place and its last value).
/// `None`: unsure, the general decoder decides. `payload::decode` tries
/// this first; `tests/event_view.rs` checks it against the general decoder
/// on every input it checks `view` on.
pub(crate) fn decode_event(offset: u64, timestamp_us: i64, payload: &[u8]) -> Option<StoredEvent> {
    let mut walker = Walker::new(payload);
    let head = walker.head()?;
    let details = match walker.details_marker()? {
        None => None,
        Some(marker) => {
            let len = walker.map_len(marker)?;
            Some(walker.map_value(len, 1)?)
        }
    };
    Some(StoredEvent {
        offset,
        tenant_id: head.tenant_id.to_owned(),
        rule_id: head.rule_id.to_owned(),
        action: head.action,
        run_id: head.run_id.map(str::to_owned),
        details,
        enforced_at_us: timestamp_us,
    })
}

/// Whether the walker answers for `payload` by itself (no decode): for
/// tests that the store's own events take the fast path.
#[doc(hidden)]
pub fn takes_fast_path(payload: &[u8]) -> bool {
    Walker::new(payload).fast_event().is_some()
}

/// The answer of `decode`, with an event's ids borrowed from `payload`.
#[cold]
fn slow(offset: u64, timestamp_us: i64, payload: &[u8]) -> Result<EntryView<'_>, PayloadError> {
    match payload::decode(offset, timestamp_us, payload)? {
        Entry::Event(e) => {
            let borrow = |id: &str| find(payload, id);
            let run_id = match e.run_id.as_deref() {
                None => None,
                Some(run) => Some(borrow(run)?),
            };
            Ok(EntryView::Event(EventKeys {
                tenant_id: borrow(&e.tenant_id)?,
                rule_id: borrow(&e.rule_id)?,
                action: e.action,
                run_id,
                enforced_at_us: e.enforced_at_us,
                offset,
            }))
        }
        Entry::Gap(_) | Entry::Lost(_) => Ok(EntryView::Other),
    }
}

/// `id` as a slice of `payload`. The decoder copies ids from the payload's
/// bytes (a str or bin holding them verbatim), so they are always there;
/// any occurrence of the same bytes is an equal `&str`.
fn find<'a>(payload: &'a [u8], id: &str) -> Result<&'a str, PayloadError> {
    let needle = id.as_bytes();
    payload
        .windows(needle.len().max(1))
        .position(|w| w == needle)
        .and_then(|at| std::str::from_utf8(&payload[at..at + needle.len()]).ok())
        .ok_or_else(|| PayloadError(format!("event id {id:?} is not in its payload")))
}

/// `bytes` as a `&str` when every byte is printable ASCII (0x20 to 0x7e),
/// checked eight bytes at a time.
#[inline]
fn printable_ascii(bytes: &[u8]) -> Option<&str> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte's high bit is set in `w` (>= 0x80), in `w + 1` (0x7f) or in
    // `w - 0x20` (< 0x20). Carries and borrows cross into the next byte
    // only from a byte that is itself flagged, so "any flagged" is exact.
    let flagged = |w: u64| (w | w.wrapping_add(ONES) | w.wrapping_sub(0x20 * ONES)) & HIGH;
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let n = bytes.len();
    let bad = if n >= 8 {
        // Whole words, then the last eight bytes (overlapping the words).
        (0..n / 8).fold(flagged(word(n - 8)), |bad, i| bad | flagged(word(i * 8)))
    } else {
        bytes
            .iter()
            .fold(0, |bad, &b| bad | u64::from(b.wrapping_sub(0x20) >= 0x5f))
    };
    if bad != 0 {
        return None;
    }
    #[allow(
        unsafe_code,
        reason = "std's UTF-8 check of the three ids took 28 of 104 ns per view (benches/fold.rs)"
    )]
    // SAFETY: every byte of `bytes` is below 0x80 (checked just above:
    // none was flagged), and a sequence of ASCII bytes is valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// What the fast path read of an event.
struct Head<'a> {
    tenant_id: &'a str,
    rule_id: &'a str,
    action: Action,
    run_id: Option<&'a str>,
}

impl<'a> Head<'a> {
    fn keys(&self, offset: u64, enforced_at_us: i64) -> EventKeys<'a> {
        EventKeys {
            tenant_id: self.tenant_id,
            rule_id: self.rule_id,
            action: self.action,
            run_id: self.run_id,
            enforced_at_us,
            offset,
        }
    }
}

/// A cursor over MessagePack bytes. Every method returns `None` for
/// anything it is not sure of (which sends the payload to `decode`), never
/// panics, and never reads past the slice.
struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Values the builders may still reserve room for: starts at the
    /// payload's length and every reservation spends from it, so length
    /// fields of nested containers cannot multiply what is reserved.
    reserve_budget: usize,
}

impl<'a> Walker<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            reserve_budget: bytes.len(),
        }
    }

    fn fast_event(&mut self) -> Option<Head<'a>> {
        let head = self.head()?;
        if let Some(marker) = self.details_marker()? {
            let len = self.map_len(marker)?;
            self.skip_map_entries(len, 1)?;
        }
        Some(head)
    }

    /// The event up to its `details`: array, schema, kind, ids, action.
    fn head(&mut self) -> Option<Head<'a>> {
        // The outer array: fixarray or array16 of exactly 7, as `decode`'s
        // header check and tuple length allow.
        match self.byte()? {
            0x97 => {}
            0xdc if self.take(2)? == [0, 7] => {}
            _ => return None,
        }
        // Schema 1, kind event, both positive fixints.
        if self.take(2)? != [1, 0] {
            return None;
        }
        let tenant_id = self.id(Field::TenantId)?;
        let rule_id = self.id(Field::RuleId)?;
        let action = Action::from_code(self.byte().filter(|&b| b < 0x80)?)?;
        let run_id = match self.peek()? {
            0xc0 => {
                self.pos += 1;
                None
            }
            _ => Some(self.id(Field::RunId)?),
        };
        Some(Head {
            tenant_id,
            rule_id,
            action,
            run_id,
        })
    }

    /// The marker of `details`: `Some(None)` for nil, `Some(Some(m))` for
    /// anything else in a payload small enough that `decode` never
    /// measures its JSON (it measures big ones: those are left to it).
    fn details_marker(&mut self) -> Option<Option<u8>> {
        match self.byte()? {
            0xc0 => Some(None),
            _ if self.bytes.len().saturating_mul(6) > DETAILS_MAX_BYTES => None,
            marker => Some(Some(marker)),
        }
    }

    /// Bytes not yet read.
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    #[inline]
    fn be(&mut self, n: usize) -> Option<usize> {
        let bytes = self.take(n)?;
        let mut v: u64 = 0;
        for &b in bytes {
            v = (v << 8) | u64::from(b);
        }
        usize::try_from(v).ok()
    }

    /// The length of a str (or bin, for ids: `decode` accepts both for a
    /// `String`) whose marker is `marker`.
    #[inline]
    fn str_len(&mut self, marker: u8, bin_too: bool) -> Option<usize> {
        match marker {
            0xa0..=0xbf => Some(usize::from(marker & 0x1f)),
            0xd9 => self.be(1),
            0xda => self.be(2),
            0xdb => self.be(4),
            0xc4 if bin_too => self.be(1),
            0xc5 if bin_too => self.be(2),
            0xc6 if bin_too => self.be(4),
            _ => None,
        }
    }

    /// A map key: a string (str only) of valid UTF-8, and not one of the
    /// keys `serde_json` reserves for itself (with its `raw_value` or
    /// `arbitrary_precision` feature, which a host's build may turn on, a
    /// map keyed so decodes as raw JSON text or a number): those are left
    /// to `decode`.
    fn key(&mut self, marker: u8) -> Option<&'a str> {
        let len = self.str_len(marker, false)?;
        let key = std::str::from_utf8(self.take(len)?).ok()?;
        (!key.starts_with(SERDE_JSON_RESERVED)).then_some(key)
    }

    /// Skips a map key: accepts exactly what [`Walker::key`] accepts,
    /// without making a `&str` of it (most keys are ASCII: a check a word
    /// at a time, no call).
    #[inline]
    fn skip_key(&mut self, marker: u8) -> Option<()> {
        let len = self.str_len(marker, false)?;
        let key = self.take(len)?;
        let valid = key.is_ascii() || std::str::from_utf8(key).is_ok();
        (valid && !key.starts_with(SERDE_JSON_RESERVED.as_bytes())).then_some(())
    }

    /// Room to reserve for a container declaring `len` items of at least
    /// `min_bytes` each; `None` when the bytes left cannot hold them (the
    /// walk would fail on them anyway).
    fn reserve(&mut self, len: usize, min_bytes: usize) -> Option<usize> {
        if len > self.remaining() / min_bytes {
            return None;
        }
        let room = len.min(self.reserve_budget);
        self.reserve_budget -= room;
        Some(room)
    }

    /// Skips a string (str only), checking it is valid UTF-8.
    #[inline]
    fn skip_text(&mut self, marker: u8) -> Option<()> {
        let len = self.str_len(marker, false)?;
        let bytes = self.take(len)?;
        // Most details are ASCII: a word-at-a-time check, no call.
        (bytes.is_ascii() || std::str::from_utf8(bytes).is_ok()).then_some(())
    }

    #[inline]
    fn id(&mut self, field: Field) -> Option<&'a str> {
        let marker = self.byte()?;
        let len = self.str_len(marker, true)?;
        let bytes = self.take(len)?;
        // Printable ASCII holds no forbidden character: only the length
        // is left to check.
        if (1..=ID_MAX_BYTES).contains(&len) {
            if let Some(id) = printable_ascii(bytes) {
                return Some(id);
            }
        }
        let id = std::str::from_utf8(bytes).ok()?;
        check_id(field, id).ok()?;
        Some(id)
    }

    #[inline]
    fn map_len(&mut self, marker: u8) -> Option<usize> {
        match marker {
            0x80..=0x8f => Some(usize::from(marker & 0x0f)),
            0xde => self.be(2),
            0xdf => self.be(4),
            _ => None,
        }
    }

    #[inline]
    fn array_len(&mut self, marker: u8) -> Option<usize> {
        match marker {
            0x90..=0x9f => Some(usize::from(marker & 0x0f)),
            0xdc => self.be(2),
            0xdd => self.be(4),
            _ => None,
        }
    }

    /// Skips `len` entries of a map at `depth` (1 for `details`): string
    /// keys, values [`Walker::skip_value`] accepts.
    fn skip_map_entries(&mut self, len: usize, depth: usize) -> Option<()> {
        for _ in 0..len {
            let marker = self.byte()?;
            self.skip_key(marker)?;
            self.skip_value(depth)?;
        }
        Some(())
    }

    /// An unsigned big-endian integer of `n` (at most 8) bytes.
    fn be_u64(&mut self, n: usize) -> Option<u64> {
        let bytes = self.take(n)?;
        Some(bytes.iter().fold(0u64, |v, &b| (v << 8) | u64::from(b)))
    }

    /// A string (str only) of valid UTF-8, copied.
    fn string(&mut self, marker: u8) -> Option<String> {
        let len = self.str_len(marker, false)?;
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }

    /// `len` entries of a map at `depth`, built: accepts exactly what
    /// [`Walker::skip_map_entries`] accepts.
    fn map_value(&mut self, len: usize, depth: usize) -> Option<Map<String, Value>> {
        // An entry takes at least two bytes.
        let mut map = Map::with_capacity(self.reserve(len, 2)?);
        for _ in 0..len {
            let marker = self.byte()?;
            let key = self.key(marker)?.to_owned();
            let value = self.value(depth)?;
            // As `serde_json` builds a map: a repeated key keeps its first
            // place and takes the last value.
            map.insert(key, value);
        }
        Some(map)
    }

    /// One value inside a container at `depth`, built: accepts exactly
    /// what [`Walker::skip_value`] accepts.
    fn value(&mut self, depth: usize) -> Option<Value> {
        let marker = self.byte()?;
        let signed = |v: i64| Some(Value::from(v));
        let float = |f: f64| f.is_finite().then(|| Value::from(f));
        match marker {
            0x00..=0x7f => Some(Value::from(u64::from(marker))),
            0xe0..=0xff => signed(i64::from(marker as i8)),
            0xc0 => Some(Value::Null),
            0xc2 => Some(Value::Bool(false)),
            0xc3 => Some(Value::Bool(true)),
            0xcc => self.be_u64(1).map(Value::from),
            0xcd => self.be_u64(2).map(Value::from),
            0xce => self.be_u64(4).map(Value::from),
            0xcf => self.be_u64(8).map(Value::from),
            0xd0 => signed(i64::from(self.be_u64(1)? as u8 as i8)),
            0xd1 => signed(i64::from(self.be_u64(2)? as u16 as i16)),
            0xd2 => signed(i64::from(self.be_u64(4)? as u32 as i32)),
            0xd3 => signed(self.be_u64(8)? as i64),
            0xca => float(f64::from(f32::from_bits(self.be_u64(4)? as u32))),
            0xcb => float(f64::from_bits(self.be_u64(8)?)),
            0xa0..=0xbf | 0xd9..=0xdb => self.string(marker).map(Value::String),
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = self.array_len(marker)?;
                let depth = depth + 1;
                if depth > SAFE_DEPTH {
                    return None;
                }
                // An item takes at least a byte.
                let mut items = Vec::with_capacity(self.reserve(len, 1)?);
                for _ in 0..len {
                    items.push(self.value(depth)?);
                }
                Some(Value::Array(items))
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let len = self.map_len(marker)?;
                let depth = depth + 1;
                if depth > SAFE_DEPTH {
                    return None;
                }
                self.map_value(len, depth).map(Value::Object)
            }
            // bin, ext, the reserved marker: unsure.
            _ => None,
        }
    }

    /// Skips one value inside a container at `depth`, accepting only what
    /// a `serde_json::Value` is sure to be made of.
    fn skip_value(&mut self, depth: usize) -> Option<()> {
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Some(()),
            0xcc | 0xd0 => self.take(1).map(drop),
            0xcd | 0xd1 => self.take(2).map(drop),
            0xce | 0xd2 => self.take(4).map(drop),
            0xcf | 0xd3 => self.take(8).map(drop),
            0xca => {
                let b: [u8; 4] = self.take(4)?.try_into().ok()?;
                f32::from_be_bytes(b).is_finite().then_some(())
            }
            0xcb => {
                let b: [u8; 8] = self.take(8)?.try_into().ok()?;
                f64::from_be_bytes(b).is_finite().then_some(())
            }
            0xa0..=0xbf | 0xd9..=0xdb => self.skip_text(marker),
            0x90..=0x9f | 0xdc | 0xdd => {
                let len = self.array_len(marker)?;
                let depth = depth + 1;
                if depth > SAFE_DEPTH {
                    return None;
                }
                for _ in 0..len {
                    self.skip_value(depth)?;
                }
                Some(())
            }
            0x80..=0x8f | 0xde | 0xdf => {
                let len = self.map_len(marker)?;
                let depth = depth + 1;
                if depth > SAFE_DEPTH {
                    return None;
                }
                self.skip_map_entries(len, depth)
            }
            // bin, ext, the reserved marker: unsure.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_ascii_accepts_exactly_printable_ascii() {
        // Every byte value at every place of strings of 0 to 24 bytes
        // (both sides of the word reads), among printable neighbours and
        // among the extremes of the printable range.
        for fill in [b'a', b' ', b'~'] {
            assert_eq!(printable_ascii(b""), Some(""));
            for len in 1..=24 {
                for at in 0..len {
                    for b in 0..=255u8 {
                        let mut bytes = vec![fill; len];
                        bytes[at] = b;
                        let want = (0x20..=0x7e).contains(&b);
                        let got = printable_ascii(&bytes);
                        assert_eq!(got.is_some(), want, "{bytes:?}");
                        if let Some(s) = got {
                            assert_eq!(s.as_bytes(), &bytes[..]);
                        }
                    }
                }
            }
        }
    }
    use crate::event::Event;

    #[test]
    fn an_event_is_viewed_without_decode_and_equals_it() {
        let event = Event::new("acme", "r-1", Action::Killed)
            .with_run_id("run-9")
            .with_details(crate::details!({"step": 3, "nested": {"a": [1, 2.5, null]}}));
        let bytes = payload::encode_event(&event);
        assert!(Walker::new(&bytes).fast_event().is_some());
        let Ok(EntryView::Event(k)) = view(7, 42, &bytes) else {
            panic!("not an event");
        };
        assert_eq!(
            (
                k.tenant_id,
                k.rule_id,
                k.action,
                k.run_id,
                k.enforced_at_us,
                k.offset
            ),
            ("acme", "r-1", Action::Killed, Some("run-9"), 42, 7)
        );
    }

    #[test]
    fn gaps_and_lost_entries_are_other() {
        assert_eq!(
            view(3, 0, &payload::encode_lost(3, 1)),
            Ok(EntryView::Other)
        );
        assert_eq!(
            view(0, 0, &payload::encode_gap_v1(2, 1, 2)),
            Ok(EntryView::Other)
        );
    }
}
