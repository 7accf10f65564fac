//! Review 37 (commit 4c6a8fb, the kept tree on disk): the read-only
//! commands (`head`, `prove`, `audit`, `verify`) never write `TREE` or
//! `TREE.tmp`, with no writer and beside a writer in another handle.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::Path;

use cli::*;
use serde_json::{json, Value};

fn events(from: u64, to: u64) -> Vec<Value> {
    (from..to)
        .map(|i| {
            with(
                ev(
                    &format!("tenant-{}", i % 5),
                    &format!("rule-{}", i % 11),
                    "block",
                    &format!("2026-11-{:02}T10:00:00Z", 1 + i % 28),
                ),
                "details",
                json!({"step": i, "zeros": [0, 0, 0, 0], "note": "\u{200b}"}),
            )
        })
        .collect()
}

fn tree_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("TREE"))
        .collect();
    names.sort();
    names
}

fn read_only_commands(f: &Fixture) {
    let head_text = f.ok(&["head"]);
    let head_file = f.write_file("head.json", head_text.as_bytes());
    f.ok(&["prove", "--offset", "5"]);
    f.ok(&[
        "prove",
        "--offset",
        "7",
        "--head",
        head_file.to_str().unwrap(),
    ]);
    f.ok(&["audit", "--head", head_file.to_str().unwrap()]);
    f.ok(&["verify"]);
}

#[test]
fn read_only_commands_never_write_the_tree_file() {
    let f = Fixture::new();
    f.import(&events(0, 300));
    read_only_commands(&f);
    assert!(tree_names(&f.dir).is_empty(), "{:?}", tree_names(&f.dir));

    // Beside a writer (another handle) that left TREE with a head.
    let store = enforcelog::Store::open(&f.dir, enforcelog::StoreOptions::default()).unwrap();
    store.head().unwrap();
    let tree = std::fs::read(f.dir.join("TREE")).expect("the writer's TREE");
    read_only_commands(&f);
    assert_eq!(std::fs::read(f.dir.join("TREE")).unwrap(), tree);
    assert_eq!(tree_names(&f.dir), vec!["TREE".to_string()]);
    store.close().unwrap();
}

/// `enforcelog prove` (with `--head`: `head_with_consistency`; without: a
/// head first) always makes a full pass, so a record rewritten below the
/// seal with TREE's block root rewritten to match (review 37 finding 3 in
/// the library) is still named as tampering by the CLI.
#[test]
fn prove_names_a_record_rewritten_under_a_matching_tree_file() {
    use enforcelog::audit::merkle;
    let f = Fixture::new();
    let options = enforcelog::StoreOptions::default();
    let record = |from: u64, to: u64| {
        let store = enforcelog::Store::open(&f.dir, options.clone()).unwrap();
        for i in from..to {
            let e = enforcelog::Event::new(
                format!("tenant-{}", i % 5),
                format!("rule-{}", i % 11),
                enforcelog::Action::ALL[(i % 4) as usize],
            )
            .with_details(enforcelog::details!({"step": i, "pad": "x".repeat(120)}));
            store.record_blocking(e).unwrap();
        }
        store.flush_blocking().unwrap();
        if to == 200 {
            store.head().unwrap();
        }
        store.close().unwrap();
    };
    record(0, 32);
    let head_text = f.ok(&["head"]);
    let head_file = f.write_file("head.json", head_text.as_bytes());
    record(32, 200);
    let good = std::fs::read(f.dir.join("TREE")).expect("TREE");
    let target = {
        let log = enforcelog::Log::open_read_only(&f.dir).unwrap();
        let r = log.read_from(40).unwrap().next().unwrap().unwrap();
        r.payload
    };
    let mut done = false;
    for seg in common::segment::segment_files(&f.dir) {
        let mut bytes = std::fs::read(&seg).unwrap();
        let Some(at) = bytes.windows(target.len()).position(|w| w == &target[..]) else {
            continue;
        };
        let frame = at - 24;
        bytes[at + target.len() - 10] ^= 0x01;
        let crc = crc32fast::hash(&bytes[frame + 4..at + target.len()]);
        bytes[frame..frame + 4].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&seg, &bytes).unwrap();
        done = true;
        break;
    }
    assert!(done);
    let now = common::segment::leaves(&f.dir);
    let mut forged = good[..good.len() - 4].to_vec();
    forged[104 + 64..104 + 96].copy_from_slice(&merkle::root(&now[32..48]));
    let crc = crc32fast::hash(&forged);
    forged.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(f.dir.join("TREE"), &forged).unwrap();
    let with_head = f.run(&[
        "prove",
        "--offset",
        "40",
        "--head",
        head_file.to_str().unwrap(),
    ]);
    assert_ne!(with_head.code(), Some(0), "prove --head gave a proof");
    assert!(
        with_head.stderr.to_lowercase().contains("tamper")
            || with_head.stderr.contains("chain")
            || with_head.stderr.contains("rewritten"),
        "{}",
        with_head.stderr
    );
    let without = f.run(&["prove", "--offset", "40"]);
    assert_ne!(without.code(), Some(0), "prove gave a proof");
}
