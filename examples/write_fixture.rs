//! Writes the compatibility fixture `tests/fixtures/store-v1/`, read back by
//! `tests/events_fixture.rs`.
//!
//! ```text
//! cargo run --example write_fixture -- tests/fixtures/store-v1
//! ```
//!
//! The fixture is a store directory written by this version, committed so
//! that later releases prove they still read today's files. It is written
//! once: the target directory must not exist yet (remove it to regenerate,
//! and update the expected values in the test if you change the events).
//!
//! Events 0–4 go in through a caller-owned batch, events 6–10 through
//! `record_blocking`; every event has a fixed `enforced_at`. Entry 5 is a gap
//! marker, appended through the log with a payload built by hand from the
//! schema in `src/payload.rs` (`[1, 1, dropped, first_us, last_us]`), because
//! the store writes gap markers only with the clock's times. The derived
//! files the store adds (`LOCK`, the `projections/` checkpoints) are removed:
//! the fixture is the log alone.

use std::error::Error;
use std::path::PathBuf;

use enforcelog::timestamp::MAX_US;
use enforcelog::{Action, Durability, Event, Log, LogOptions, Record, Store, StoreOptions};

/// 2025-11-25T00:00:00Z, in microseconds since the Unix epoch.
const T0_US: i64 = 1_764_028_800_000_000;
const SECOND_US: i64 = 1_000_000;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: write_fixture <new directory>")?,
    );
    if dir.exists() {
        return Err(format!("{} exists; remove it first", dir.display()).into());
    }
    let options = StoreOptions {
        // The fixture holds an event at MAX_US (year 9999).
        max_future_skew: std::time::Duration::MAX,
        log: LogOptions {
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    let store = Store::open(&dir, options.clone())?;

    let mut batch = store.begin();
    batch.record(Event::new("acme", "no-prod-writes", Action::Blocked).at_us(T0_US))?;
    batch.record(
        Event::new("acme", "budget", Action::Killed)
            .with_run_id("run-1")
            .with_details(
                enforcelog::details!({"spent_usd": 12.5, "limit_usd": 10, "currency": "USD"}),
            )
            .at_us(T0_US + SECOND_US),
    )?;
    batch.record(
        Event::new("acme", "budget", Action::Stopped)
            .with_run_id("run-2")
            .with_details(enforcelog::details!({
                "step": 7,
                "tools": ["shell", "http", 3, null],
                "nested": {"ok": false, "none": null, "deep": {"n": -3, "pi": 3.25}}
            }))
            .at_us(T0_US + 2 * SECOND_US),
    )?;
    batch.record(
        Event::new("globex", "rate-limit", Action::Aborted)
            .with_details(enforcelog::details!({"reason": "Limit überschritten ✋", "sign": "🚦", "rule": "规则"}))
            .at_us(T0_US + 3 * SECOND_US),
    )?;
    batch.record(
        Event::new("globex", "rate-limit", Action::Blocked)
            .with_run_id("run-α")
            .at_us(T0_US + 3 * SECOND_US),
    )?;
    batch.commit_blocking()?;

    // A schema 1 gap marker, as earlier builds wrote them: appended through
    // a raw log, since the store hands out no writer.
    store.close()?;
    drop(store);
    let log = Log::open(&dir, options.log.clone())?;
    log.append_blocking(Record::new(T0_US + 5 * SECOND_US, gap_payload()))?;
    log.close()?;
    drop(log);
    let store = Store::open(&dir, options)?;

    let singles = [
        Event::new("initech", "pii-leak", Action::Stopped)
            .with_run_id("run-3")
            .with_details(enforcelog::details!({
                "max_u64": u64::MAX,
                "min_i64": i64::MIN,
                "tiny": 1e-7,
                "empty_object": {},
                "empty_array": []
            }))
            .at_us(T0_US + 6 * SECOND_US),
        Event::new("initech", "pii-leak", Action::Killed)
            .with_details(enforcelog::details!({}))
            .at_us(T0_US + 7 * SECOND_US),
        // Earlier than the entries before it: times need not be monotonic.
        Event::new("ünïcødé", "r/1", Action::Aborted)
            .with_run_id("r")
            .at_us(T0_US - SECOND_US),
        Event::new("acme", "no-prod-writes", Action::Blocked)
            .with_run_id("run-1")
            .with_details(enforcelog::details!({"retry": true}))
            .at_us(-1),
        Event::new("acme", "far-future", Action::Killed).at_us(MAX_US),
    ];
    for event in singles {
        store.record_blocking(event)?;
    }
    store.close()?;
    drop(store);

    std::fs::remove_file(dir.join("LOCK"))?;
    let checkpoints = dir.join("projections");
    if checkpoints.exists() {
        std::fs::remove_dir_all(checkpoints)?;
    }
    println!("wrote {}", dir.display());
    Ok(())
}

/// `[1, 1, 3, T0 + 4 s, T0 + 4.5 s]` as MessagePack, the way rmp-serde
/// writes it: a fixarray of 5, positive fixints, and the two (positive,
/// above `u32::MAX`) times as `uint 64` (0xcf, big-endian).
fn gap_payload() -> Vec<u8> {
    let mut bytes = vec![0x95, 0x01, 0x01, 0x03];
    for at_us in [T0_US + 4 * SECOND_US, T0_US + 4 * SECOND_US + SECOND_US / 2] {
        bytes.push(0xcf);
        bytes.extend_from_slice(&at_us.to_be_bytes());
    }
    bytes
}
