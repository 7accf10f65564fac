//! The JSON-lines import format: one line, one event, read
//! from raw bytes so that invalid UTF-8 is reported against the field that
//! holds it.
//!
//! Fields: `tenant_id`, `rule_id`, `action_taken` (required strings),
//! `run_id` (string), `details` (object), `enforced_at` (RFC 3339 with a
//! zone; default: when appended); `null` means absent for the optional
//! ones. `offset`, `shard` and `kind` (what `dump` and `query` write) are
//! accepted and ignored; a line of kind `gap` is skipped. Any other field, or a field given twice, is an
//! error: a typo must not silently drop data from an audit log.

use std::fmt;

use enforcelog::event::{id_from_bytes, EventError, Field};
use enforcelog::timestamp::parse_us;
use enforcelog::{Action, Event};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// What a line holds.
#[derive(Debug)]
pub enum Parsed {
    /// An event to append.
    Event(Box<Event>),
    /// A gap marker from `dump`: skipped.
    Gap,
    /// An empty or all-blank line: skipped.
    Blank,
}

/// Why a line is refused: `line N: field: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
    }
}

/// The field name used for problems with the line as a whole.
const WHOLE_LINE: &str = "json";

/// Parses line `line` (1-based) of the input.
///
/// Never panics, whatever the bytes; a refusal names the line and the field.
/// Its text is printable and short whatever the input: a key the format
/// does not know is shown quoted and escaped, and at most
/// [`SHOWN_MAX_CHARS`] characters of it, so input cannot move the cursor,
/// recolour a terminal, or forge a second report line.
///
/// ```
/// use enforcelog_cli::import::{parse_line, Parsed};
///
/// let line = br#"{"tenant_id":"acme","rule_id":"r1","action_taken":"KILLED","enforced_at":"2026-01-02T03:04:05Z"}"#;
/// let Ok(Parsed::Event(event)) = parse_line(1, line) else { panic!("a valid line") };
/// assert_eq!(event.rule_id, "r1");
///
/// let err = parse_line(2, br#"{"tenant_id":"acme","rule_id":"r1","action_taken":"melted"}"#).unwrap_err();
/// assert_eq!(err.line, 2);
/// assert_eq!(err.field, "action_taken");
/// ```
pub fn parse_line(line: usize, bytes: &[u8]) -> Result<Parsed, LineError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Parsed::Blank);
    }
    let error = |(field, reason): (String, String)| LineError {
        line,
        field: printable(&field),
        reason: printable(&reason),
    };
    let raw = parse_raw(bytes).map_err(error)?;
    to_event(raw).map_err(error)
}

/// The fields of a line, as raw bytes where they are text.
#[derive(Debug, Default)]
struct RawLine {
    tenant_id: Option<Vec<u8>>,
    rule_id: Option<Vec<u8>>,
    action_taken: Option<Vec<u8>>,
    run_id: Option<Vec<u8>>,
    details: Option<Value>,
    enforced_at: Option<Vec<u8>>,
    kind: Option<Vec<u8>>,
    unknown: Vec<String>,
}

fn parse_raw(bytes: &[u8]) -> Result<RawLine, (String, String)> {
    let mut field = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let raw = (&mut de)
        .deserialize_map(LineVisitor { field: &mut field })
        .map_err(|e| (field.unwrap_or_else(|| WHOLE_LINE.into()), reason_of(&e)))?;
    de.end().map_err(|e| (WHOLE_LINE.into(), reason_of(&e)))?;
    Ok(raw)
}

/// Longest field name or reason a [`LineError`] shows, in characters.
pub const SHOWN_MAX_CHARS: usize = 200;

/// `text` with control characters (and the separators and bidi controls an
/// id may not hold) escaped, cut to [`SHOWN_MAX_CHARS`] characters.
fn printable(text: &str) -> String {
    let mut shown = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SHOWN_MAX_CHARS {
            shown.push('…');
            break;
        }
        if c.is_control() || enforcelog::event::is_forbidden_in_id(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A key the format does not know, as shown in an error: quoted, escaped.
fn shown_key(name: &str) -> String {
    let cut: String = name.chars().take(64).collect();
    if cut.len() < name.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// A serde_json message without its "at line 1 column N" suffix (the line
/// number that matters is the input's).
fn reason_of(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => format!("{message} (column {})", e.column()),
        None => text,
    }
}

/// A JSON string as raw bytes: serde_json hands strings to
/// `deserialize_bytes` without checking their UTF-8.
struct RawBytes(Vec<u8>);

impl<'de> Deserialize<'de> for RawBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(RawBytesVisitor)
    }
}

struct RawBytesVisitor;

impl Visitor<'_> for RawBytesVisitor {
    type Value = RawBytes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON string")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<RawBytes, E> {
        Ok(RawBytes(v.to_vec()))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawBytes, E> {
        Ok(RawBytes(v.as_bytes().to_vec()))
    }
}

/// Reads the object, remembering which field it is in so that an error is
/// reported against that field.
struct LineVisitor<'a> {
    field: &'a mut Option<String>,
}

impl<'de> Visitor<'de> for LineVisitor<'_> {
    type Value = RawLine;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawLine, A::Error> {
        let mut raw = RawLine::default();
        let mut seen: Vec<String> = Vec::new();
        loop {
            *self.field = None;
            let Some(RawBytes(key)) = map.next_key::<RawBytes>()? else {
                return Ok(raw);
            };
            let name = String::from_utf8_lossy(&key).into_owned();
            *self.field = Some(if KNOWN_KEYS.contains(&name.as_str()) {
                name.clone()
            } else {
                shown_key(&name)
            });
            if seen.contains(&name) {
                return Err(de::Error::custom("given more than once"));
            }
            seen.push(name.clone());
            read_value(&mut map, &name, &mut raw)?;
        }
    }
}

/// The keys of the import format.
const KNOWN_KEYS: [&str; 10] = [
    "tenant_id",
    "rule_id",
    "action_taken",
    "run_id",
    "details",
    "enforced_at",
    "offset",
    "kind",
    "shard",
    "store_id",
];

fn read_value<'de, A: MapAccess<'de>>(
    map: &mut A,
    name: &str,
    raw: &mut RawLine,
) -> Result<(), A::Error> {
    let text = |map: &mut A| map.next_value::<RawBytes>().map(|b| Some(b.0));
    let optional = |map: &mut A| map.next_value::<Option<RawBytes>>().map(|b| b.map(|b| b.0));
    match name {
        "tenant_id" => raw.tenant_id = text(map)?,
        "rule_id" => raw.rule_id = text(map)?,
        "action_taken" => raw.action_taken = text(map)?,
        "kind" => raw.kind = text(map)?,
        "run_id" => raw.run_id = optional(map)?,
        "enforced_at" => raw.enforced_at = optional(map)?,
        "details" => raw.details = map.next_value::<Option<Value>>()?,
        // Where `dump` and `query` found the event: a new store gives it
        // its own place.
        "offset" | "shard" | "store_id" => {
            map.next_value::<IgnoredAny>()?;
        }
        _ => {
            map.next_value::<IgnoredAny>()?;
            raw.unknown.push(name.to_string());
        }
    }
    Ok(())
}

type FieldError = (String, String);

fn to_event(raw: RawLine) -> Result<Parsed, FieldError> {
    match raw.kind.as_deref() {
        None | Some(b"enforcement") => {}
        Some(b"gap") => return Ok(Parsed::Gap),
        Some(_) => return Err(("kind".into(), "must be \"enforcement\" or \"gap\"".into())),
    }
    // First: a key the format does not know often explains a missing one
    // (`tenant` for `tenant_id`).
    if let Some(name) = raw.unknown.first() {
        return Err((shown_key(name), unknown_fields_reason(&raw.unknown)));
    }
    let tenant_id = required_id(Field::TenantId, raw.tenant_id)?;
    let rule_id = required_id(Field::RuleId, raw.rule_id)?;
    let action = action_of(raw.action_taken)?;
    let mut event = Event::new(tenant_id, rule_id, action);
    if let Some(run_id) = raw.run_id {
        event = event.with_run_id(id_from_bytes(Field::RunId, &run_id).map_err(field_error)?);
    }
    if let Some(details) = raw.details {
        event = event.try_with_details(details).map_err(field_error)?;
    }
    if let Some(at) = raw.enforced_at {
        let at = utf8(Field::EnforcedAt, &at)?;
        event = event.at_us(parse_us(at).map_err(|e| field_error(EventError::from(e)))?);
    }
    event.validate().map_err(field_error)?;
    Ok(Parsed::Event(Box::new(event)))
}

/// Unknown keys shown in one error, at most.
const UNKNOWN_SHOWN: usize = 8;

/// Why a line with unknown keys is refused: every unknown key (up to
/// [`UNKNOWN_SHOWN`]), the import name of a command-line flag's name used
/// as a key (`tenant` is `tenant_id`), and the keys the format knows.
fn unknown_fields_reason(unknown: &[String]) -> String {
    let mut reason = if unknown.len() == 1 {
        "unknown field".to_string()
    } else {
        let mut shown: Vec<String> = unknown
            .iter()
            .take(UNKNOWN_SHOWN)
            .map(|k| shown_key(k))
            .collect();
        if unknown.len() > UNKNOWN_SHOWN {
            shown.push(format!("and {} more", unknown.len() - UNKNOWN_SHOWN));
        }
        format!("unknown fields {}", shown.join(", "))
    };
    let hints: Vec<String> = unknown
        .iter()
        .filter_map(|k| flag_key(k).map(|known| format!("{k} is {known}")))
        .collect();
    if !hints.is_empty() {
        reason.push_str(&format!(" ({})", hints.join(", ")));
    }
    reason.push_str("; expected tenant_id, rule_id, action_taken, run_id, details, enforced_at");
    reason
}

/// The import key for a key named like a command-line flag.
fn flag_key(key: &str) -> Option<&'static str> {
    match key {
        "tenant" => Some("tenant_id"),
        "rule" => Some("rule_id"),
        "action" => Some("action_taken"),
        "run" => Some("run_id"),
        "at" | "since" | "until" | "time" | "timestamp" => Some("enforced_at"),
        _ => None,
    }
}

fn required_id(field: Field, bytes: Option<Vec<u8>>) -> Result<String, FieldError> {
    let bytes = bytes.ok_or_else(|| missing(field))?;
    id_from_bytes(field, &bytes).map_err(field_error)
}

fn action_of(bytes: Option<Vec<u8>>) -> Result<Action, FieldError> {
    let bytes = bytes.ok_or_else(|| missing(Field::Action))?;
    utf8(Field::Action, &bytes)?.parse().map_err(field_error)
}

fn utf8(field: Field, bytes: &[u8]) -> Result<&str, FieldError> {
    std::str::from_utf8(bytes).map_err(|e| {
        field_error(EventError::InvalidUtf8 {
            field,
            at: e.valid_up_to(),
        })
    })
}

fn missing(field: Field) -> FieldError {
    (import_name(field).into(), "missing (required)".into())
}

/// The import format's name for a field.
fn import_name(field: Field) -> &'static str {
    match field {
        Field::TenantId => "tenant_id",
        Field::RuleId => "rule_id",
        Field::Action => "action_taken",
        Field::RunId => "run_id",
        Field::Details => "details",
        Field::EnforcedAt => "enforced_at",
    }
}

/// An event error as (import field name, reason without the field).
/// Refuses a line whose `enforced_at` is more than `max_future_skew_us`
/// after `now_us`: the store would refuse it, and an import checks every
/// line before it appends any.
pub fn check_not_in_future(
    line: usize,
    event: &enforcelog::event::Event,
    now_us: i64,
    max_future_skew_us: i64,
) -> Result<(), LineError> {
    let Some(at) = event.enforced_at_us else {
        return Ok(());
    };
    enforcelog::event::check_not_in_future(at, now_us, max_future_skew_us).map_err(|e| {
        let (field, reason) = field_error(e);
        LineError {
            line,
            field,
            reason,
        }
    })
}

fn field_error(e: EventError) -> FieldError {
    let field = e.field();
    let text = e.to_string();
    let prefix = format!("{field}: ");
    let reason = text.strip_prefix(&prefix).unwrap_or(&text).to_string();
    (import_name(field).into(), reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(line: &[u8]) -> (String, String) {
        match parse_line(7, line) {
            Err(e) => {
                assert_eq!(e.line, 7);
                (e.field, e.reason)
            }
            Ok(p) => panic!("accepted {:?}: {p:?}", String::from_utf8_lossy(line)),
        }
    }

    #[test]
    fn unknown_keys_are_all_named_with_the_field_a_flag_name_means() {
        let (field, reason) = error_of(br#"{"tenant":"a","rule_id":"r","action":"kill","x":1}"#);
        assert_eq!(field, "\"tenant\"");
        for needle in [
            "unknown fields \"tenant\", \"action\", \"x\"",
            "tenant is tenant_id",
            "action is action_taken",
            "expected tenant_id",
        ] {
            assert!(reason.contains(needle), "{needle:?} not in {reason:?}");
        }
        let (_, one) = error_of(br#"{"tenant_id":"a","rule_id":"r","action_taken":"kill","zz":1}"#);
        assert!(one.starts_with("unknown field;"), "{one}");
    }

    #[test]
    fn good_lines_parse() {
        let line = br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","run_id":null,"details":{"a":1},"enforced_at":"2026-11-01T00:00:00+01:00"}"#;
        let Ok(Parsed::Event(event)) = parse_line(1, line) else {
            panic!("refused")
        };
        assert_eq!(event.action, Action::Killed);
        assert_eq!(event.run_id, None);
        assert_eq!(
            event.enforced_at_us,
            Some(parse_us("2026-10-31T23:00:00Z").unwrap())
        );
        assert!(matches!(parse_line(2, b"  \t"), Ok(Parsed::Blank)));
        let gap = br#"{"offset":3,"kind":"gap","dropped":2,"first_dropped_at":"x"}"#;
        assert!(matches!(parse_line(3, gap), Ok(Parsed::Gap)));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"rule_id":"r","action_taken":"kill"}"#, "tenant_id"),
            (br#"{"tenant_id":"","rule_id":"r","action_taken":"kill"}"#, "tenant_id"),
            (br#"{"tenant_id":5,"rule_id":"r","action_taken":"kill"}"#, "tenant_id"),
            (b"{\"tenant_id\":\"t\xff\",\"rule_id\":\"r\",\"action_taken\":\"kill\"}", "tenant_id"),
            (br#"{"tenant_id":"t","rule_id":"r\u0007","action_taken":"kill"}"#, "rule_id"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"halt"}"#, "action_taken"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","details":[1]}"#, "details"),
            (b"{\"tenant_id\":\"t\",\"rule_id\":\"r\",\"action_taken\":\"kill\",\"details\":{\"a\":\"\xc3\"}}", "details"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","enforced_at":"2026-11-01T00:00:00"}"#, "enforced_at"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","tenant":"x"}"#, "\"tenant\""),
            (br#"{"tenant_id":"t","tenant_id":"u","rule_id":"r","action_taken":"kill"}"#, "tenant_id"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill","kind":"other"}"#, "kind"),
            (br#"[1,2]"#, "json"),
            (br#"{"tenant_id":"t""#, "json"),
            (br#"{"tenant_id":"t","rule_id":"r","action_taken":"kill"} x"#, "json"),
        ];
        for (line, field) in cases {
            let (got, reason) = error_of(line);
            assert_eq!(&got, field, "{}: {reason}", String::from_utf8_lossy(line));
            assert!(!reason.contains("at line 1"), "{reason}");
        }
    }
}
