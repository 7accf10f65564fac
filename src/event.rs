//! The enforcement event: what a host records when a policy halts a run.
//!
//! Every field is checked before anything is queued ([`Event::validate`]);
//! each refusal is an [`EventError`] variant naming the field and the
//! reason, so nothing invalid ever reaches the log.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use crate::timestamp;

/// Longest tenant, rule or run id, in bytes of UTF-8.
pub const ID_MAX_BYTES: usize = 128;
/// Largest `details` object, in bytes of compact JSON.
pub const DETAILS_MAX_BYTES: usize = 64 << 10;
/// Deepest nesting of arrays and objects in `details`, counting `details`
/// itself as 1. It keeps every event readable (the MessagePack decoder
/// stops at 1,024 levels), copyable by `dump | import` (a JSON line nests
/// `details` one level down, and the JSON parser stops at 128), and every
/// recursive walk of it far from the end of a thread's stack.
pub const DETAILS_MAX_DEPTH: usize = 64;

/// How a policy halted a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// The run was stopped.
    Stopped,
    /// The run was killed.
    Killed,
    /// The run was aborted.
    Aborted,
    /// The step was blocked.
    Blocked,
}

impl Action {
    /// Every action, in code order.
    pub const ALL: [Action; 4] = [
        Action::Stopped,
        Action::Killed,
        Action::Aborted,
        Action::Blocked,
    ];

    /// The upper-case past form: `STOPPED`, `KILLED`, `ABORTED`, `BLOCKED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Stopped => "STOPPED",
            Action::Killed => "KILLED",
            Action::Aborted => "ABORTED",
            Action::Blocked => "BLOCKED",
        }
    }

    /// The action's code in the payload (stable across versions).
    pub(crate) fn code(self) -> u8 {
        match self {
            Action::Stopped => 0,
            Action::Killed => 1,
            Action::Aborted => 2,
            Action::Blocked => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Action> {
        Action::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = EventError;

    /// Case-insensitive: `STOPPED`, `stopped`, `stop`, `Killed`, `kill`,
    /// `abort`, `block`...
    fn from_str(text: &str) -> Result<Self, EventError> {
        match text.to_ascii_lowercase().as_str() {
            "stopped" | "stop" => Ok(Action::Stopped),
            "killed" | "kill" => Ok(Action::Killed),
            "aborted" | "abort" => Ok(Action::Aborted),
            "blocked" | "block" => Ok(Action::Blocked),
            _ => Err(EventError::UnknownAction {
                given: text.chars().take(64).collect(),
            }),
        }
    }
}

/// The fields of an event, as named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `tenant_id`
    TenantId,
    /// `rule_id`
    RuleId,
    /// `action`
    Action,
    /// `run_id`
    RunId,
    /// `details`
    Details,
    /// `enforced_at`
    EnforcedAt,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::TenantId => "tenant_id",
            Field::RuleId => "rule_id",
            Field::Action => "action",
            Field::RunId => "run_id",
            Field::Details => "details",
            Field::EnforcedAt => "enforced_at",
        })
    }
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// An id is empty.
    #[error("{field}: must not be empty")]
    Empty {
        /// The field.
        field: Field,
    },
    /// An id is longer than [`ID_MAX_BYTES`].
    #[error("{field}: {len_bytes} bytes is longer than {max_bytes}")]
    TooLong {
        /// The field.
        field: Field,
        /// Its length in bytes.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// An id holds a control character, a line separator or a
    /// bidirectional control.
    #[error("{field}: control character U+{code:04X} at byte {at}")]
    ControlCharacter {
        /// The field.
        field: Field,
        /// Byte position of the character.
        at: usize,
        /// The character's code point.
        code: u32,
    },
    /// Raw input that is not UTF-8.
    #[error("{field}: not valid UTF-8 (at byte {at})")]
    InvalidUtf8 {
        /// The field.
        field: Field,
        /// Byte position of the first invalid byte.
        at: usize,
    },
    /// An action that is none of stopped, killed, aborted, blocked.
    #[error("action: unknown action {given:?} (expected stopped, killed, aborted or blocked)")]
    UnknownAction {
        /// What was given (at most 64 characters of it).
        given: String,
    },
    /// `details` is JSON but not an object.
    #[error("details: must be a JSON object, not {found}")]
    DetailsNotObject {
        /// What it is instead.
        found: &'static str,
    },
    /// `details` is not JSON at all.
    #[error("details: not valid JSON: {reason}")]
    DetailsNotJson {
        /// The parser's message.
        reason: String,
    },
    /// `details` encodes to more than [`DETAILS_MAX_BYTES`].
    #[error("details: {len_bytes} bytes of JSON is more than {max_bytes}")]
    DetailsTooLarge {
        /// Its length as compact JSON.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// `details` nests arrays and objects deeper than [`DETAILS_MAX_DEPTH`].
    #[error("details: nested more than {max_depth} levels deep")]
    DetailsTooDeep {
        /// The limit.
        max_depth: usize,
    },
    /// `enforced_at` outside years 0001..=9999.
    #[error("enforced_at: {value_us} µs is outside years 0001..=9999")]
    TimestampOutOfRange {
        /// The value given.
        value_us: i64,
    },
    /// `enforced_at` text that is not RFC 3339 with a zone.
    #[error("enforced_at: {0}")]
    BadTimestamp(#[from] timestamp::TimestampError),
    /// `enforced_at` further in the future than the store allows
    /// (`StoreOptions::max_future_skew`).
    #[error(
        "enforced_at: {} is more than {max_future_skew_us} µs after now ({}); the store refuses it (StoreOptions::max_future_skew)",
        timestamp::format_us(*value_us),
        timestamp::format_us(*now_us)
    )]
    InFuture {
        /// The value given.
        value_us: i64,
        /// The store's clock when it refused it.
        now_us: i64,
        /// The store's `max_future_skew`, in µs.
        max_future_skew_us: i64,
    },
}

impl EventError {
    /// The field the error is about.
    pub fn field(&self) -> Field {
        match self {
            EventError::Empty { field }
            | EventError::TooLong { field, .. }
            | EventError::ControlCharacter { field, .. }
            | EventError::InvalidUtf8 { field, .. } => *field,
            EventError::UnknownAction { .. } => Field::Action,
            EventError::DetailsNotObject { .. }
            | EventError::DetailsNotJson { .. }
            | EventError::DetailsTooLarge { .. }
            | EventError::DetailsTooDeep { .. } => Field::Details,
            EventError::TimestampOutOfRange { .. }
            | EventError::BadTimestamp(_)
            | EventError::InFuture { .. } => Field::EnforcedAt,
        }
    }
}

/// Characters an id may not hold: control characters (Unicode `Cc`), line
/// and paragraph separators, and the bidirectional overrides and isolates
/// that can make one id display as another.
pub fn is_forbidden_in_id(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Checks an id: 1..=128 bytes, no control characters (see
/// `is_forbidden_in_id`: also line separators and bidirectional controls).
pub fn check_id(field: Field, id: &str) -> Result<(), EventError> {
    if id.is_empty() {
        return Err(EventError::Empty { field });
    }
    if id.len() > ID_MAX_BYTES {
        return Err(EventError::TooLong {
            field,
            len_bytes: id.len(),
            max_bytes: ID_MAX_BYTES,
        });
    }
    if let Some((at, c)) = id.char_indices().find(|&(_, c)| is_forbidden_in_id(c)) {
        return Err(EventError::ControlCharacter {
            field,
            at,
            code: u32::from(c),
        });
    }
    Ok(())
}

/// Checks an id given as raw bytes (from a file or the network) and returns
/// it as text.
pub fn id_from_bytes(field: Field, bytes: &[u8]) -> Result<String, EventError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EventError::InvalidUtf8 {
        field,
        at: e.valid_up_to(),
    })?;
    check_id(field, text)?;
    Ok(text.to_string())
}

/// Checks `details`: a JSON object of at most [`DETAILS_MAX_BYTES`].
pub fn check_details(details: &Value) -> Result<(), EventError> {
    let found = match details {
        Value::Object(map) => return check_details_object(map),
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
    };
    Err(EventError::DetailsNotObject { found })
}

/// Checks a `details` object: at most [`DETAILS_MAX_BYTES`] of compact JSON,
/// nested at most [`DETAILS_MAX_DEPTH`] levels.
pub fn check_details_object(details: &Map<String, Value>) -> Result<(), EventError> {
    // Depth first, without recursion: the length count below recurses.
    if details
        .values()
        .any(|v| depth_exceeds(v, DETAILS_MAX_DEPTH - 1))
    {
        return Err(EventError::DetailsTooDeep {
            max_depth: DETAILS_MAX_DEPTH,
        });
    }
    let len = json_len(details);
    if len > DETAILS_MAX_BYTES {
        return Err(EventError::DetailsTooLarge {
            len_bytes: len,
            max_bytes: DETAILS_MAX_BYTES,
        });
    }
    Ok(())
}

/// Whether arrays and objects in `value` nest deeper than `max` (`value`
/// itself is level 1). Iterative, so any depth is safe to ask about.
fn depth_exceeds(value: &Value, max: usize) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth > max {
            return true;
        }
        stack.extend(children.map(|child| (child, depth + 1)));
    }
    false
}

/// Drops `details` one value at a time, children first moved out to a heap
/// stack, so any depth is safe to drop.
fn drop_without_recursion(details: Map<String, Value>) {
    drop_values_without_recursion(details.into_iter().map(|(_, v)| v).collect());
}

/// Drops `stack` and everything inside it one value at a time.
fn drop_values_without_recursion(mut stack: Vec<Value>) {
    while let Some(value) = stack.pop() {
        match value {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// The length of `value` as compact JSON, counted without building it.
fn json_len(value: &impl serde::Serialize) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

/// Parses `details` from JSON text and checks it.
pub fn details_from_json(text: &str) -> Result<Map<String, Value>, EventError> {
    let value: Value = serde_json::from_str(text).map_err(|e| EventError::DetailsNotJson {
        reason: e.to_string(),
    })?;
    check_details(&value)?;
    match value {
        Value::Object(map) => Ok(map),
        _ => unreachable!("check_details accepts only objects"),
    }
}

/// A `details` object from JSON object syntax, for [`Event::with_details`]:
/// `details!({"step": 7, "reason": "budget"})`. It takes the same syntax as
/// `serde_json::json!`, but only an object, so what it builds is always
/// storable in kind (the size limits are checked when the event is
/// recorded). Keys keep the order they are written in.
///
/// ```
/// use enforcelog::{details, Action, Event};
/// let event = Event::new("acme", "budget", Action::Stopped)
///     .with_details(details!({"spent_usd": 12.5, "limit_usd": 10}));
/// let keys: Vec<_> = event.details.as_ref().unwrap().keys().cloned().collect();
/// assert_eq!(keys, ["spent_usd", "limit_usd"]);
/// ```
///
/// Anything but an object does not compile:
///
/// ```compile_fail
/// let details = enforcelog::details!("budget");
/// ```
#[macro_export]
macro_rules! details {
    ({ $($body:tt)* }) => {
        match $crate::__private::serde_json::json!({ $($body)* }) {
            $crate::__private::serde_json::Value::Object(map) => map,
            _ => unreachable!("an object literal builds an object"),
        }
    };
}

/// An enforcement outcome to record.
///
/// ```
/// use enforcelog::{Action, Event};
/// let event = Event::new("acme", "no-prod-writes", Action::Blocked)
///     .with_run_id("run-42")
///     .with_details(enforcelog::details!({"step": 7}))
///     .at_us(1_764_028_800_000_000);
/// assert!(event.validate().is_ok());
/// assert_eq!("kill".parse::<Action>().unwrap(), Action::Killed);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The tenant: 1..=128 bytes, no control characters.
    pub tenant_id: String,
    /// The rule that fired: same rules as `tenant_id`.
    pub rule_id: String,
    /// What the rule did.
    pub action: Action,
    /// The run that was halted, if any: same rules as `tenant_id`.
    pub run_id: Option<String>,
    /// Free-form context: a JSON object (by its type) of at most
    /// [`DETAILS_MAX_BYTES`], keys in the order they were written.
    pub details: Option<Map<String, Value>>,
    /// When, in microseconds since the Unix epoch (UTC); the store's clock
    /// when `None`.
    pub enforced_at_us: Option<i64>,
}

impl Event {
    /// An event with no run id, no details, stamped when recorded.
    pub fn new(tenant_id: impl Into<String>, rule_id: impl Into<String>, action: Action) -> Self {
        Self {
            tenant_id: tenant_id.into(),
            rule_id: rule_id.into(),
            action,
            run_id: None,
            details: None,
            enforced_at_us: None,
        }
    }

    /// Sets the run id.
    pub fn with_run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Sets the details: a JSON object, e.g. from [`details!`](crate::details).
    /// Its size is checked when the event is recorded ([`Event::validate`]).
    pub fn with_details(mut self, details: Map<String, Value>) -> Self {
        self.details = Some(details);
        self
    }

    /// Sets the details from any JSON value, which must be an object that
    /// [`check_details`] accepts.
    ///
    /// ```
    /// use enforcelog::{Action, Event, EventError};
    /// let event = Event::new("acme", "budget", Action::Stopped);
    /// assert!(event.clone().try_with_details(serde_json::json!({"a": 1})).is_ok());
    /// assert!(matches!(
    ///     event.try_with_details(serde_json::json!("budget exceeded")),
    ///     Err(EventError::DetailsNotObject { .. })
    /// ));
    /// ```
    pub fn try_with_details(mut self, details: Value) -> Result<Self, EventError> {
        if let Err(e) = check_details(&details) {
            // Refused values may be nested to any depth: see `discard`.
            drop_values_without_recursion(vec![details]);
            return Err(e);
        }
        match details {
            Value::Object(map) => self.details = Some(map),
            _ => unreachable!("check_details accepts only objects"),
        }
        Ok(self)
    }

    /// Sets the details from JSON text, which must hold an object that
    /// [`check_details`] accepts; keys keep their order.
    ///
    /// ```
    /// use enforcelog::{Action, Event};
    /// let event = Event::new("acme", "budget", Action::Stopped)
    ///     .with_details_json(r#"{"reason": "Budget exceeded", "spent": 12.5}"#)?;
    /// assert_eq!(event.details.unwrap()["reason"], "Budget exceeded");
    /// # Ok::<(), enforcelog::EventError>(())
    /// ```
    pub fn with_details_json(mut self, text: &str) -> Result<Self, EventError> {
        self.details = Some(details_from_json(text)?);
        Ok(self)
    }

    /// Sets the enforcement time.
    pub fn at_us(mut self, enforced_at_us: i64) -> Self {
        self.enforced_at_us = Some(enforced_at_us);
        self
    }

    /// [`Event::validate`] for an event the caller hands over: a refused
    /// event is dropped here, and details nested deeper than the limit are
    /// taken apart without recursion (serde_json drops a value by
    /// recursion, one stack frame per level: a host's 10,000-deep value
    /// would overflow the stack of the thread that drops it).
    pub(crate) fn validate_owned(self) -> Result<Self, EventError> {
        match self.validate() {
            Ok(()) => Ok(self),
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Drops an event the store will not record, taking its details apart
    /// without recursion (see [`Event::validate_owned`]): every path that
    /// refuses a caller's event before validating it ends here.
    pub(crate) fn discard(mut self) {
        if let Some(details) = self.details.take() {
            drop_without_recursion(details);
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), EventError> {
        check_id(Field::TenantId, &self.tenant_id)?;
        check_id(Field::RuleId, &self.rule_id)?;
        if let Some(run_id) = &self.run_id {
            check_id(Field::RunId, run_id)?;
        }
        if let Some(details) = &self.details {
            check_details_object(details)?;
        }
        if let Some(us) = self.enforced_at_us {
            if !timestamp::in_range(us) {
                return Err(EventError::TimestampOutOfRange { value_us: us });
            }
        }
        Ok(())
    }
}

/// Refuses an `enforced_at` more than `max_future_skew_us` after `now_us`.
///
/// One event stamped far in the future would stay in the log for good, and
/// every reader that tracks "the newest time seen" would believe it; so
/// the store refuses it at the door (see `StoreOptions::max_future_skew`).
pub fn check_not_in_future(
    enforced_at_us: i64,
    now_us: i64,
    max_future_skew_us: i64,
) -> Result<(), EventError> {
    if enforced_at_us > now_us.saturating_add(max_future_skew_us) {
        return Err(EventError::InFuture {
            value_us: enforced_at_us,
            now_us,
            max_future_skew_us,
        });
    }
    Ok(())
}

/// An event read back from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The event's identity: its offset in the log.
    pub offset: u64,
    /// The tenant.
    pub tenant_id: String,
    /// The rule.
    pub rule_id: String,
    /// The action.
    pub action: Action,
    /// The run, if any.
    pub run_id: Option<String>,
    /// The details object, if any.
    pub details: Option<Map<String, Value>>,
    /// When, in microseconds since the Unix epoch (UTC).
    pub enforced_at_us: i64,
}

/// A record of events the store failed to record: an audit trail shows its
/// own holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapMarker {
    /// The marker's offset in the log.
    pub offset: u64,
    /// How many events were dropped since the previous successful write.
    pub dropped: u64,
    /// When the first of them was dropped (µs since the epoch, UTC).
    pub first_dropped_at_us: i64,
    /// When the last of them was dropped.
    pub last_dropped_at_us: i64,
    /// Which rules lost the dropped events: at most [`GAP_LOSSES_MAX`]
    /// (tenant, rule) pairs. Empty in markers written before this was
    /// recorded (payload schema 1).
    pub losses: Vec<GapLoss>,
    /// Dropped events not in `losses`: those of pairs past the first
    /// [`GAP_LOSSES_MAX`], and those whose ids were invalid. `None` when
    /// there are none. For a schema 1 marker, all `dropped` events, over
    /// the drop times.
    pub unattributed: Option<LossSpan>,
}

/// Most (tenant, rule) pairs one gap marker names; the losses of further
/// pairs are summed into [`GapMarker::unattributed`]. Bounds a marker's
/// payload (each pair is at most about 290 bytes) whatever the outage.
pub const GAP_LOSSES_MAX: usize = 64;

/// Events dropped together, and the span of their `enforced_at` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LossSpan {
    /// How many.
    pub count: u64,
    /// The earliest `enforced_at` among them, µs since the epoch.
    pub first_at_us: i64,
    /// The latest.
    pub last_at_us: i64,
}

impl LossSpan {
    /// One event at `at_us`.
    pub fn one(at_us: i64) -> Self {
        Self {
            count: 1,
            first_at_us: at_us,
            last_at_us: at_us,
        }
    }

    /// Adds one event at `at_us`.
    pub fn add(&mut self, at_us: i64) {
        self.count = self.count.saturating_add(1);
        self.first_at_us = self.first_at_us.min(at_us);
        self.last_at_us = self.last_at_us.max(at_us);
    }
}

/// The events of one (tenant, rule) a gap marker says were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapLoss {
    /// The tenant.
    pub tenant_id: String,
    /// The rule.
    pub rule_id: String,
    /// How many, and when they were enforced.
    pub span: LossSpan,
}

/// An offset whose entry was recorded and then lost to damage on disk: the
/// `repair` command (or a writer open that finds its active segment
/// damaged) replaced the bytes that no longer verified with a *hole*, one
/// such entry per lost offset, so readers and statistics see the loss and
/// its size instead of silence. The damaged bytes are kept in the log's
/// quarantine directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostEntry {
    /// This entry's offset in the log.
    pub offset: u64,
    /// The first offset of the hole it belongs to.
    pub hole_first_offset: u64,
    /// How many offsets the hole covers.
    pub hole_len: u64,
}

/// One entry of the store's log.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// An enforcement event.
    Event(StoredEvent),
    /// A gap marker.
    Gap(GapMarker),
    /// One offset of a hole left by damage (see [`LostEntry`]).
    Lost(LostEntry),
}

impl Entry {
    /// The entry's offset.
    pub fn offset(&self) -> u64 {
        match self {
            Entry::Event(e) => e.offset,
            Entry::Gap(g) => g.offset,
            Entry::Lost(l) => l.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a":[[...[1]...]]}` with `depth` levels of arrays and objects.
    fn nested(depth: usize) -> Value {
        let mut v = Value::from(1);
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        serde_json::json!({ "a": v })
    }

    #[test]
    fn details_nest_at_most_the_max_depth() {
        // On a thread with room to spare: `check_details` does not recurse,
        // but dropping a `serde_json::Value` 3,000 levels deep does, and
        // how deep a 2 MiB test thread lets it go depends on how the build
        // lays out its frames (it overflowed in one release build).
        let checks = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(|| {
                assert_eq!(check_details(&nested(DETAILS_MAX_DEPTH)), Ok(()));
                for depth in [DETAILS_MAX_DEPTH + 1, 1_000, 3_000] {
                    assert_eq!(
                        check_details(&nested(depth)),
                        Err(EventError::DetailsTooDeep {
                            max_depth: DETAILS_MAX_DEPTH
                        }),
                        "depth {depth}"
                    );
                }
            })
            .unwrap();
        checks.join().unwrap();
    }

    #[test]
    fn actions_parse_case_insensitively_and_print_upper_case() {
        for (text, action) in [
            ("STOPPED", Action::Stopped),
            ("stop", Action::Stopped),
            ("Killed", Action::Killed),
            ("kill", Action::Killed),
            ("ABORT", Action::Aborted),
            ("aborted", Action::Aborted),
            ("block", Action::Blocked),
            ("BLOCKED", Action::Blocked),
        ] {
            assert_eq!(text.parse::<Action>(), Ok(action), "{text}");
        }
        assert!(matches!(
            "halt".parse::<Action>(),
            Err(EventError::UnknownAction { .. })
        ));
        assert_eq!(Action::Aborted.to_string(), "ABORTED");
        for action in Action::ALL {
            assert_eq!(Action::from_code(action.code()), Some(action));
        }
    }
}
