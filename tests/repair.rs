//! `repair`: moves what cannot be trusted to quarantine, never deletes, keeps
//! every valid record before the first damage, and refuses while locked.

use std::sync::Arc;

use enforcelog::log::{repair, RepairAction};
use enforcelog::storage::sim::SimStorage;
use enforcelog::{Durability, Error, Log, LogOptions, Record};

const DIR: &str = "/log";

fn options() -> LogOptions {
    LogOptions {
        durability: Durability::None,
        segment_max_bytes: 4096,
        record_max_bytes: 1024,
        index_interval_bytes: 128,
        ..LogOptions::default()
    }
}

/// 120 records of 100 bytes in batches of 3: several segments.
fn build(storage: &SimStorage) -> Vec<Vec<u8>> {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    let mut all = Vec::new();
    for b in 0..40u8 {
        let batch: Vec<Record> = (0..3u8)
            .map(|i| Record::new(i64::from(b), vec![b ^ i; 100]))
            .collect();
        all.extend(batch.iter().map(|r| r.payload.clone()));
        log.append_batch_blocking(batch).unwrap();
    }
    log.close().unwrap();
    all
}

fn segments(storage: &SimStorage) -> Vec<String> {
    use enforcelog::storage::Storage;
    let mut names: Vec<String> = storage
        .list(std::path::Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

fn read_all(storage: &SimStorage) -> Vec<Vec<u8>> {
    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    assert!(log.verify().unwrap().is_clean());
    log.read_from(0)
        .unwrap()
        .map(|r| r.unwrap().payload)
        .collect()
}

#[test]
fn damage_in_a_sealed_segment_keeps_the_prefix_and_quarantines_the_rest() {
    let storage = SimStorage::new(3);
    let written = build(&storage);
    let names = segments(&storage);
    assert!(names.len() >= 3, "{names:?}");
    let victim = format!("{DIR}/{}", names[1]);
    let mut bytes = storage.read_file(&victim).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    storage.write_file(&victim, &bytes);
    assert!(matches!(
        Log::open_with_storage(Arc::new(storage.clone()), DIR, options())
            .and_then(|l| l.read_from(0)?.collect::<Result<Vec<_>, _>>()),
        Err(Error::Corruption { .. })
    ));

    let report = repair(&storage, std::path::Path::new(DIR)).unwrap();
    let quarantine = report.quarantine.clone().expect("something quarantined");
    assert!(
        report.reason.as_deref().unwrap().contains(&names[1]),
        "{report:?}"
    );
    let truncated = report
        .actions
        .iter()
        .find_map(|a| match a {
            RepairAction::Truncated {
                at,
                bytes_moved,
                saved_as,
                ..
            } => Some((*at, *bytes_moved, saved_as.clone())),
            _ => None,
        })
        .expect("the damaged segment was cut");
    // Nothing deleted: the cut bytes and every later segment are in quarantine.
    let saved = storage.read_file(&truncated.2).unwrap();
    assert_eq!(saved.len() as u64, truncated.1);
    assert_eq!(&bytes[truncated.0 as usize..], &saved[..]);
    let moved = report
        .actions
        .iter()
        .filter(|a| matches!(a, RepairAction::Moved { .. }))
        .count();
    assert!(moved >= names.len() - 2, "{report:?}");
    assert!(quarantine.starts_with(DIR));

    let kept = read_all(&storage);
    assert_eq!(kept.len() as u64, report.next_offset);
    assert_eq!(&kept[..], &written[..kept.len()]);
    assert!(kept.len() < written.len());
    assert!(kept.len().is_multiple_of(3), "whole batches only");

    // A second repair has nothing to do.
    let again = repair(&storage, std::path::Path::new(DIR)).unwrap();
    assert!(
        again.actions.is_empty() && again.quarantine.is_none(),
        "{again:?}"
    );
}

#[test]
fn a_clean_log_is_left_alone_and_a_locked_one_refused() {
    let storage = SimStorage::new(4);
    let written = build(&storage);
    let before: Vec<_> = segments(&storage)
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    let report = repair(&storage, std::path::Path::new(DIR)).unwrap();
    assert!(report.actions.is_empty());
    assert_eq!(report.next_offset, written.len() as u64);
    let after: Vec<_> = segments(&storage)
        .iter()
        .map(|n| storage.read_file(format!("{DIR}/{n}")))
        .collect();
    assert_eq!(before, after);

    let log = Log::open_with_storage(Arc::new(storage.clone()), DIR, options()).unwrap();
    assert!(matches!(
        repair(&storage, std::path::Path::new(DIR)),
        Err(Error::Locked { .. })
    ));
    drop(log);
}

#[test]
fn a_damaged_segment_header_moves_the_whole_segment() {
    let storage = SimStorage::new(5);
    let written = build(&storage);
    let names = segments(&storage);
    let victim = format!("{DIR}/{}", names[2]);
    let mut bytes = storage.read_file(&victim).unwrap();
    bytes[3] ^= 1;
    storage.write_file(&victim, &bytes);
    let report = repair(&storage, std::path::Path::new(DIR)).unwrap();
    assert!(
        report
            .actions
            .iter()
            .all(|a| matches!(a, RepairAction::Moved { .. })),
        "{report:?}"
    );
    let kept = read_all(&storage);
    assert_eq!(&kept[..], &written[..kept.len()]);
    assert_eq!(kept.len() as u64, report.next_offset);
}
