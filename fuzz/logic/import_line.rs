//! The import-line target: `import::parse_line` over arbitrary bytes.

use enforcelog::timestamp::format_us;
use enforcelog::Event;
use enforcelog_cli::import::{parse_line, Parsed, SHOWN_MAX_CHARS};
use serde_json::{Map, Value};

/// `parse_line`: never panics; a refusal names the line it was given, a
/// field and a reason; an accepted event passes `Event::validate`, and the
/// event written back as an import line parses to the same event.
pub fn check_import_line(data: &[u8]) {
    let line = 1 + data.len() % 1000;
    match parse_line(line, data) {
        Err(e) => {
            assert_eq!(e.line, line, "the error names another line");
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}");
            assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
            // Printable and short whatever the input (`parse_line`'s docs):
            // at most SHOWN_MAX_CHARS characters of it, each escaped to at
            // most 10 (`\u{10ffff}`), and an ellipsis.
            for part in [&e.field, &e.reason] {
                assert!(part.chars().all(printable), "unprintable error text: {e:?}");
                assert!(
                    part.chars().count() <= SHOWN_MAX_CHARS * 10 + 1,
                    "an error of {} characters",
                    part.chars().count()
                );
            }
        }
        Ok(Parsed::Blank) => assert!(
            data.iter().all(u8::is_ascii_whitespace),
            "a line with content parsed as blank"
        ),
        Ok(Parsed::Gap) => {}
        Ok(Parsed::Event(event)) => {
            if let Err(e) = event.validate() {
                panic!("parse_line accepted an invalid event: {e}\n{event:?}");
            }
            let again = to_import_line(&event);
            match parse_line(line, again.as_bytes()) {
                Ok(Parsed::Event(back)) => assert!(
                    back == event,
                    "the re-serialised event parses differently:\n line  {again}\n \
                     first {event:?}\n again {back:?}"
                ),
                other => panic!("the re-serialised event {again} is refused: {other:?}"),
            }
        }
    }
}

/// Not a control character, line or paragraph separator, or bidirectional
/// control: what an error may show of the input.
fn printable(c: char) -> bool {
    !c.is_control()
        && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The event as an import line (the fields `dump` writes).
fn to_import_line(event: &Event) -> String {
    let mut line = Map::new();
    line.insert("tenant_id".into(), event.tenant_id.clone().into());
    line.insert("rule_id".into(), event.rule_id.clone().into());
    line.insert("action_taken".into(), event.action.as_str().into());
    if let Some(run_id) = &event.run_id {
        line.insert("run_id".into(), run_id.clone().into());
    }
    if let Some(details) = &event.details {
        line.insert("details".into(), Value::Object(details.clone()));
    }
    if let Some(at) = event.enforced_at_us {
        line.insert("enforced_at".into(), format_us(at).into());
    }
    Value::Object(line).to_string()
}
