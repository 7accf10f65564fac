//! A borrowing view of a payload's keys (tenant, rule, action, run, time).
//!
//! STUB of work package A's module (issue 17), kept only so the scan and
//! parallel replay of package B build against the final signatures: `view`
//! here is `payload::decode` followed by borrowing the decoded ids from the
//! payload bytes (MessagePack stores strings verbatim), so it allocates and
//! is as slow as `decode`. Package A's module replaces this file whole.
//!
//! Contract: `view` is `Ok(Event(k))` iff `payload::decode` is
//! `Ok(Entry::Event(e))` with equal fields, `Ok(Other)` iff it is `Ok` with
//! a gap or lost entry, and `Err` iff it is `Err`.

use crate::event::{Action, Entry};
use crate::payload::{decode, PayloadError};

/// What a payload holds, as far as the keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryView<'a> {
    /// An event, by its keys.
    Event(EventKeys<'a>),
    /// A gap marker or a lost entry.
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
    /// When, in microseconds since the Unix epoch (UTC).
    pub enforced_at_us: i64,
    /// The event's offset.
    pub offset: u64,
}

/// The keys of the payload of the record at `offset`.
pub fn view(offset: u64, timestamp_us: i64, payload: &[u8]) -> Result<EntryView<'_>, PayloadError> {
    match decode(offset, timestamp_us, payload)? {
        Entry::Event(e) => Ok(EntryView::Event(EventKeys {
            tenant_id: borrow(payload, &e.tenant_id)?,
            rule_id: borrow(payload, &e.rule_id)?,
            action: e.action,
            run_id: e
                .run_id
                .as_deref()
                .map(|r| borrow(payload, r))
                .transpose()?,
            enforced_at_us: e.enforced_at_us,
            offset: e.offset,
        })),
        Entry::Gap(_) | Entry::Lost(_) => Ok(EntryView::Other),
    }
}

/// `text` as it lies in `payload`.
fn borrow<'a>(payload: &'a [u8], text: &str) -> Result<&'a str, PayloadError> {
    if text.is_empty() {
        return Ok("");
    }
    let at = payload
        .windows(text.len())
        .position(|w| w == text.as_bytes())
        .ok_or_else(|| PayloadError(format!("id {text:?} is not verbatim in the payload")))?;
    std::str::from_utf8(&payload[at..at + text.len()]).map_err(|e| PayloadError(e.to_string()))
}
