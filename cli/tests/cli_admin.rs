//! The operator's commands through the binary: `verify`, `repair`, and
//! what a locked store (exit 3) or an unusable directory (exit 4 or 2) does.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::PathBuf;

use cli::*;
use enforcelog::{Store, StoreOptions};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// verify and repair
// ---------------------------------------------------------------------------

/// Five events, each in its own batch, with recognisable run ids.
/// Five events of one (tenant, rule), each in its own run.
fn five_events() -> Vec<Value> {
    (0..5)
        .map(|i| {
            with(
                ev("t", "r", "BLOCKED", &format!("2026-01-01T00:00:0{i}Z")),
                "run_id",
                json!(format!("victim-run-{i}")),
            )
        })
        .collect()
}

fn five_batches() -> Fixture {
    let f = Fixture::new();
    let lines = five_events();
    let out = f.run_stdin(
        &["import", "--batch", "1", "-"],
        jsonl_text(&lines).as_bytes(),
    );
    out.expect(0);
    let segments = f.segments();
    assert_eq!(segments.len(), 1);
    assert_eq!(batch_count(&segments[0].1), 5);
    f
}

/// Flips one bit inside the payload of event `i`; returns the byte position.
fn flip_bit_in_event(f: &Fixture, i: usize) -> usize {
    let path = f.dir.join(SEGMENT);
    let mut bytes = fs::read(&path).unwrap();
    let at = find(&bytes, format!("victim-run-{i}").as_bytes());
    bytes[at] ^= 0x04;
    fs::write(&path, &bytes).unwrap();
    at
}

#[test]
fn verify_a_clean_store_exits_0() {
    let f = five_batches();
    f.ok(&["verify"]);
}

#[test]
fn verify_a_flipped_bit_exits_1_and_names_the_segment_and_byte() {
    let f = five_batches();
    let flipped = flip_bit_in_event(&f, 2);
    let damaged = fs::read(f.dir.join(SEGMENT)).unwrap();
    let out = f.run(&["verify"]);
    out.expect(1);
    let text = format!("{}{}", out.stdout, out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{SEGMENT}: byte ")))
        .unwrap_or_else(|| panic!("no `{SEGMENT}: byte N:` line:\n{text}"));
    let rest = &line[line.find(": byte ").unwrap() + ": byte ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let position: usize = digits
        .parse()
        .unwrap_or_else(|_| panic!("no position in {line:?}"));
    assert!(
        rest[digits.len()..].starts_with(": "),
        "`<file>: byte <position>: <what>`: {line:?}"
    );
    assert!(
        (32..=flipped).contains(&position),
        "damage at byte {flipped} reported at {position}: {line:?}"
    );

    // Damage in the active segment stops nothing (it used to make every
    // command fail until a repair): the read commands read past it and show
    // the damaged event as lost, and `record` goes on, after it.
    let dump = f.dump();
    assert_eq!(dump.len(), 5, "{dump:?}");
    assert_eq!(dump[2]["kind"], "lost", "{dump:?}");
    f.run(&["query", "--tenant", "t"]).expect(0);
    // (The checkpoint written by the import counted the event before the
    // damage; the statistics keep that count.)
    f.run(&["stats"]).expect(0);
    let tail = f.run(&["tail"]);
    tail.expect(0);
    assert!(tail.stdout.contains("LOST"), "{}", tail.stdout);
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
    // The writer sealed the damaged segment as found: verify still reports it.
    f.run(&["verify"]).expect(1);
    assert!(
        fs::read(f.dir.join(SEGMENT)).unwrap() == damaged,
        "the damaged segment is left as found"
    );
}

#[test]
fn verify_of_a_future_version_does_not_send_the_user_to_repair() {
    let f = five_batches();
    fs::write(f.dir.join("VERSION"), "enforcelog-log 9\n").unwrap();
    let out = f.run(&["verify"]);
    out.expect(1);
    assert!(out.stderr.contains("repair cannot help"), "{}", out.stderr);
    assert!(!out.stderr.contains("moves what cannot"), "{}", out.stderr);
}

/// A torn tail is the last write of a writer that crashed before that
/// write was durable: its published durable end (`DURABLE`) still names
/// the log without it, as here (the end of the first four events, put back
/// after the fifth was imported). Cutting a closed store's segment is
/// another case: its records were acknowledged, and verify reports them
/// missing (`verify_reports_records_cut_below_the_durable_end`).
#[test]
fn verify_treats_a_torn_tail_as_a_warning() {
    let f = Fixture::new();
    let lines = five_events();
    f.run_stdin(
        &["import", "--batch", "1", "-"],
        jsonl_text(&lines[..4]).as_bytes(),
    )
    .expect(0);
    let durable = f.dir.join("DURABLE");
    let before_the_fifth = fs::read(&durable).unwrap();
    f.run_stdin(
        &["import", "--batch", "1", "-"],
        jsonl_text(&lines[4..]).as_bytes(),
    )
    .expect(0);
    fs::write(&durable, &before_the_fifth).unwrap();
    let path = f.dir.join(SEGMENT);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let out = f.run(&["verify"]);
    out.expect(0);
    let text = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(text.contains("torn"), "the torn tail is reported:\n{text}");
}

/// The same cut in a store closed cleanly: the fifth event was
/// acknowledged and made durable, so it is missing, not torn.
#[test]
fn verify_reports_records_cut_below_the_durable_end() {
    let f = five_batches();
    let path = f.dir.join(SEGMENT);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    let out = f.run(&["verify"]);
    out.expect(1);
    assert!(
        out.stdout.contains("acknowledged records are missing"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn verify_runs_read_only_beside_a_writer() {
    let f = five_batches();
    let store = Store::open(&f.dir, StoreOptions::default()).expect("open writer");
    store
        .record_blocking(enforcelog::Event::new("t", "r", enforcelog::Action::Killed))
        .unwrap();
    f.ok(&["verify"]);
    // Read commands, too, work beside the writer.
    assert_eq!(f.dump().len(), 6);
    drop(store);
}

#[test]
fn repair_moves_only_the_damage_to_quarantine_and_keeps_every_other_event() {
    let f = five_batches();
    let dump_before = f.dump();
    let flipped = flip_bit_in_event(&f, 2);
    let damaged = fs::read(f.dir.join(SEGMENT)).unwrap();
    f.run(&["verify"]).expect(1);

    // A dry run says what would move and changes nothing.
    let dry = f.run(&["repair", "--dry-run"]);
    dry.expect(0);
    assert!(dry.stdout.contains("dry run"), "{}", dry.stdout);
    assert!(
        dry.stdout.contains("1 event(s) would be lost"),
        "{}",
        dry.stdout
    );
    assert_eq!(fs::read(f.dir.join(SEGMENT)).unwrap(), damaged);
    assert!(!f.dir.join("quarantine").exists());

    let out = f.run(&["repair"]);
    out.expect(0);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(
        said.contains("quarantine"),
        "repair says where it moved things:\n{said}"
    );
    assert!(said.contains(SEGMENT), "repair names the segment:\n{said}");

    // Nothing deleted: the damaged bytes are in quarantine.
    let quarantine = f.dir.join("quarantine");
    let mut saved = Vec::new();
    for entry in walk(&quarantine) {
        saved.extend(fs::read(entry).unwrap());
    }
    assert!(
        saved
            .windows(16)
            .any(|w| w == &damaged[flipped - 8..flipped + 8]),
        "the damaged bytes are saved in quarantine"
    );
    let listed = f.run(&["quarantine"]);
    listed.expect(0);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.contains("\tdamaged\t") && l.contains(SEGMENT)),
        "{}",
        listed.stdout
    );

    // Every other event is kept, at its offset; the damaged one is a hole.
    f.ok(&["verify"]);
    let dump = f.dump();
    assert_eq!(dump.len(), dump_before.len());
    for (i, (now, before)) in dump.iter().zip(&dump_before).enumerate() {
        if i == 2 {
            assert_eq!(now["kind"], "lost", "{now}");
            assert_eq!(now["hole_len"], 1, "{now}");
        } else {
            assert_eq!(now, before);
        }
    }
    let stats = stats_json_at(&f, "2026-02-01T00:00:00Z");
    let total: u64 = stats["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["total_count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total, 4,
        "stats count every event but the lost one: {stats}"
    );
    assert_eq!(stats["lost"], 1, "stats report the hole: {stats}");
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
}

/// Finding E (issue 13): one flipped bit in a segment header. Every command
/// that opens the log refuses it with one line naming the file and `repair`
/// and changes nothing; `verify` reports it; `repair` writes the header
/// again from the file name (the segment is then exactly as written), loses
/// nothing, and the next event takes the next offset.
#[test]
fn a_flipped_segment_header_bit_is_refused_naming_repair_and_repair_rewrites_the_header() {
    let f = five_batches();
    let dump_before = f.dump();
    let path = f.dir.join(SEGMENT);
    let pristine = fs::read(&path).unwrap();
    let mut damaged = pristine.clone();
    damaged[17] ^= 0x02; // the base offset field
    fs::write(&path, &damaged).unwrap();

    f.run(&["verify"]).expect(1);
    for args in [
        &["record", "--tenant", "t", "--rule", "r", "--action", "kill"][..],
        &["dump"][..],
    ] {
        let out = f.run(args);
        assert_ne!(out.code(), Some(0), "{args:?} accepted a bad header");
        out.expect_one_error_line();
        assert!(
            out.stderr.contains(SEGMENT) && out.stderr.contains("repair"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(fs::read(&path).unwrap() == damaged, "{args:?} changed it");
    }

    let dry = f.run(&["repair", "--dry-run"]);
    dry.expect(0);
    assert!(
        dry.stdout.contains("header") && dry.stdout.contains("would be rewritten"),
        "{}",
        dry.stdout
    );
    assert!(fs::read(&path).unwrap() == damaged, "a dry run changed it");
    assert!(!f.dir.join("quarantine").exists());

    let out = f.run(&["repair"]);
    out.expect(0);
    assert!(out.stdout.contains("header"), "{}", out.stdout);
    assert!(
        out.stdout.contains("0 event(s) lost") && out.stdout.contains("next offset 5"),
        "{}",
        out.stdout
    );
    assert!(
        fs::read(&path).unwrap() == pristine,
        "the header is as written"
    );
    let listed = f.run(&["quarantine"]);
    listed.expect(0);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.contains("\theader\t") && l.contains(SEGMENT)),
        "{}",
        listed.stdout
    );
    f.ok(&["verify"]);
    assert_eq!(f.dump(), dump_before);
    let next = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(next.expect(0).json(), json!({"offset": 5}));
}

#[test]
fn repair_of_a_clean_store_changes_nothing() {
    let f = five_batches();
    let before = f.segments();
    f.ok(&["repair"]);
    assert!(f.segments() == before);
    assert!(walk(&f.dir.join("quarantine")).is_empty());
    f.ok(&["verify"]);
}

// ---------------------------------------------------------------------------
// Exit 3: locked; exit 4: I/O
// ---------------------------------------------------------------------------

/// With `--exclusive`, a writer beside another one fails as before shards
/// (without it, it claims a shard: `cli_shards.rs`).
#[test]
fn a_store_locked_by_another_writer_exits_3() {
    let g = five_batches();
    let store = Store::open(&g.dir, StoreOptions::default()).expect("open writer");
    let before = g.segments();
    let record = g.run(&[
        "--exclusive",
        "record",
        "--tenant",
        "t",
        "--rule",
        "r",
        "--action",
        "kill",
    ]);
    record.expect(3).expect_one_error_line();
    assert!(
        record.stderr.to_lowercase().contains("lock"),
        "{}",
        record.stderr
    );
    let lines = jsonl_text(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    g.run_stdin(&["import", "--exclusive", "-"], lines.as_bytes())
        .expect(3)
        .expect_one_error_line();
    g.run(&["repair"]).expect(3).expect_one_error_line();
    assert!(g.segments() == before, "nothing written while locked");
    assert!(!g.dir.join("shards").exists(), "no shard claimed");
    drop(store);
    let after = g.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    assert_eq!(after.expect(0).json(), json!({"offset": 5}));
}

#[test]
fn repair_is_refused_while_a_writer_holds_the_lock() {
    let f = five_batches();
    let store = Store::open(&f.dir, StoreOptions::default()).expect("open writer");
    // Damage a byte the open writer has already read past; repair must still
    // refuse to touch the directory.
    flip_bit_in_event(&f, 1);
    let damaged = f.segments();
    f.run(&["repair"]).expect(3).expect_one_error_line();
    assert!(f.segments() == damaged, "repair changed a locked store");
    assert!(
        walk(&f.dir.join("quarantine")).is_empty(),
        "nothing quarantined"
    );
    drop(store);
}

#[test]
fn a_data_dir_that_is_a_regular_file_exits_4() {
    let f = Fixture::new();
    fs::write(&f.dir, b"not a directory").unwrap();
    let record = f.run(&["record", "--tenant", "t", "--rule", "r", "--action", "kill"]);
    record.expect(4).expect_one_error_line();
    assert!(
        record.stderr.contains("store"),
        "names the path: {}",
        record.stderr
    );
    let lines = jsonl_text(&[ev("t", "r", "BLOCKED", "2026-01-01T00:00:00Z")]);
    f.run_stdin(&["import", "-"], lines.as_bytes())
        .expect(4)
        .expect_one_error_line();
    // Readers find no store there: the binary calls that a usage error (2),
    // like a missing directory; an I/O failure (4) would do as well.
    let dump = f.run(&["dump"]);
    assert!(
        matches!(dump.code(), Some(2 | 4)),
        "{}: exit {:?}",
        dump.what,
        dump.code()
    );
    dump.expect_one_error_line();
    assert_eq!(fs::read(&f.dir).unwrap(), b"not a directory");
}

#[test]
fn read_commands_on_a_missing_store_say_so_and_create_nothing() {
    let f = Fixture::new();
    let cases: &[&[&str]] = &[
        &["dump"],
        &["query", "--tenant", "t"],
        &["stats"],
        &["verify"],
        &["tail"],
    ];
    for args in cases {
        let out = f.run(args);
        assert!(
            matches!(out.code(), Some(2 | 4)),
            "{}: exit {:?}\n{}",
            out.what,
            out.code(),
            out.stderr
        );
        out.expect_one_error_line();
        assert!(
            out.stderr.contains(&*f.dir.to_string_lossy()),
            "{}: the error names the directory: {}",
            out.what,
            out.stderr
        );
        assert!(!f.dir.exists(), "{}: created the store", out.what);
    }
    f.run(&["repair"]);
    assert!(!f.dir.exists(), "repair created the store");
}

/// Regression: a second writer was told only "locked by another writer".
/// It now names the holding process (its PID, recorded in LOCK by the
/// holder) and the commands that work meanwhile; each of them does.
#[test]
fn a_locked_store_names_the_holding_process_and_the_commands_that_still_work() {
    let g = five_batches();
    let store = Store::open(&g.dir, StoreOptions::default()).expect("open writer");
    let pid = std::process::id();
    let record = g.run(&[
        "record",
        "--exclusive",
        "--tenant",
        "t",
        "--rule",
        "r",
        "--action",
        "kill",
    ]);
    record.expect(3).expect_one_error_line();
    record.stderr_has(&format!("process {pid}"));
    for command in ["query", "stats", "dump", "tail", "info", "verify"] {
        record.stderr_has(command);
    }
    for args in [
        &["query", "--tenant", "t"][..],
        &["stats"],
        &["dump"],
        &["tail"],
        &["info"],
        &["verify"],
    ] {
        g.run(args).expect(0);
    }
    let info = g.run(&["info", "--format", "json"]).expect(0).json();
    assert_eq!(info["writer"], true, "{info}");
    assert_eq!(info["writer_pid"], pid, "{info}");
    drop(store);
    let info = g.run(&["info", "--format", "json"]).expect(0).json();
    assert_eq!(info["writer"], false, "{info}");
    assert_eq!(info["writer_pid"], Value::Null, "{info}");
}

/// `info` says what the store holds: segments and bytes, first and next
/// offset, entries by kind, oldest and newest event, checkpoint age, store
/// id; read-only (no file changes), in each format.
#[test]
fn info_describes_the_store_and_changes_nothing() {
    let f = Fixture::new();
    f.import(&[
        ev("a", "r", "BLOCKED", "2026-03-01T00:00:00Z"),
        ev("b", "r", "KILLED", "2025-01-01T12:00:00Z"),
        ev("a", "s", "STOPPED", "2026-02-01T00:00:00Z"),
    ]);
    let before: Vec<(PathBuf, Vec<u8>)> = walk(&f.dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    let info = f.run(&["info", "--format", "json"]).expect(0).json();
    let segment_bytes: u64 = f.segments().iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(info["segments"], f.segments().len() as u64, "{info}");
    assert_eq!(info["segment_bytes"], segment_bytes, "{info}");
    assert!(
        info["total_bytes"].as_u64().unwrap() >= segment_bytes,
        "{info}"
    );
    assert_eq!(info["first_offset"], 0, "{info}");
    assert_eq!(info["next_offset"], 3, "{info}");
    assert_eq!(info["events"], 3, "{info}");
    assert_eq!(
        info["oldest_enforced_at"], "2025-01-01T12:00:00.000000Z",
        "{info}"
    );
    assert_eq!(
        info["newest_enforced_at"], "2026-03-01T00:00:00.000000Z",
        "{info}"
    );
    let id = fs::read_to_string(f.dir.join("STORE_ID")).unwrap();
    assert_eq!(info["store_id"], id.trim(), "{info}");
    let checkpoints = info["checkpoints"].as_array().expect("checkpoints");
    assert!(
        !checkpoints.is_empty(),
        "the import's close wrote one: {info}"
    );
    assert!(checkpoints.iter().all(|c| c["age_s"].is_u64()), "{info}");
    let one_line = f.run(&["info", "--format", "jsonl"]);
    one_line.expect(0);
    assert_eq!(one_line.stdout.lines().count(), 1);
    assert_eq!(one_line.json()["next_offset"], 3);
    let table = f.ok(&["info"]);
    for needle in [
        "segments",
        "next 3",
        "2025-01-01T12:00:00",
        id.trim(),
        "checkpoint",
    ] {
        assert!(table.contains(needle), "{needle:?} not in:\n{table}");
    }
    let after: Vec<(PathBuf, Vec<u8>)> = walk(&f.dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    assert!(before == after, "info changed a file");
    // On a missing store: exit 2, nothing created.
    let missing = Fixture::new();
    missing.run(&["info"]).expect(2).expect_one_error_line();
    assert!(!missing.dir.exists());
}
