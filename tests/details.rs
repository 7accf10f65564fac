//! `details`: an object by its type, keys in the order they were written,
//! through every way in and out.

use enforcelog::{details, Action, Entry, Event, EventError, Store, StoreOptions};

fn stored_keys(store: &Store, offset: u64) -> Vec<String> {
    match store.entries(offset).expect("entries").next() {
        Some(Ok(Entry::Event(e))) => e.details.expect("details").keys().cloned().collect(),
        other => panic!("no event at {offset}: {other:?}"),
    }
}

#[test]
fn details_keep_the_key_order_they_were_written_in_across_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Deliberately not sorted, with a nested object whose order matters too.
    let written = ["zeta", "alpha", "mid", "Beta", "_1", "10", "2"];
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let mut map = serde_json::Map::new();
    for (i, key) in written.iter().enumerate() {
        map.insert(key.to_string(), serde_json::json!(i));
    }
    let from_map = store
        .record_blocking(Event::new("t", "r", Action::Blocked).with_details(map))
        .expect("record");
    let from_text = store
        .record_blocking(
            Event::new("t", "r", Action::Blocked)
                .with_details_json(r#"{"zeta": 0, "alpha": {"y": 1, "x": 2}, "mid": null}"#)
                .expect("valid JSON object"),
        )
        .expect("record");
    let from_macro =
        store
            .record_blocking(Event::new("t", "r", Action::Blocked).with_details(
                details!({"reason": "Budget exceeded", "limit": 10, "currency": "USD"}),
            ))
            .expect("record");
    store.close().expect("close");
    drop(store);

    let store = Store::open_read_only(dir.path()).expect("reopen");
    assert_eq!(stored_keys(&store, from_map), written);
    assert_eq!(stored_keys(&store, from_text), ["zeta", "alpha", "mid"]);
    assert_eq!(
        stored_keys(&store, from_macro),
        ["reason", "limit", "currency"]
    );
    let Some(Ok(Entry::Event(e))) = store.entries(from_text).expect("entries").next() else {
        panic!("no event");
    };
    let nested: Vec<_> = e.details.expect("details")["alpha"]
        .as_object()
        .expect("object")
        .keys()
        .cloned()
        .collect();
    assert_eq!(nested, ["y", "x"], "a nested object was re-sorted");
}

#[test]
fn details_from_text_or_a_value_must_be_an_object() {
    let event = || Event::new("t", "r", Action::Stopped);
    for (text, found) in [
        (r#""{\"a\":1}""#, "a string"),
        ("[1, 2]", "an array"),
        ("null", "null"),
        ("7", "a number"),
        ("true", "a boolean"),
    ] {
        assert_eq!(
            event().with_details_json(text).err(),
            Some(EventError::DetailsNotObject { found }),
            "{text}"
        );
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(
            event().try_with_details(value).err(),
            Some(EventError::DetailsNotObject { found }),
            "{text}"
        );
    }
    assert!(matches!(
        event().with_details_json("{not json"),
        Err(EventError::DetailsNotJson { .. })
    ));
    // The string form the issue met: JSON text is parsed, not stored as a
    // string (and a string value is refused at once, not dropped later).
    let parsed = event()
        .with_details_json(r#"{"a":1}"#)
        .expect("an object in text");
    assert_eq!(parsed.details, Some(details!({"a": 1})));
}
