//! `keygen`, `head`, `prove` and `audit` through the binary: a signed head
//! taken, the log grown, the audit passing; then a record edited on disk
//! with its CRC recomputed: `verify` still passes, `audit` exits 1; bad
//! heads, keys and offsets exit 2 and change nothing.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;

use cli::*;
use enforcelog::audit::proof::InclusionProof;
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
                json!({"step": i, "zeros": [0, 0, 0, 0]}),
            )
        })
        .collect()
}

#[test]
fn a_signed_head_audits_clean_until_a_record_is_rewritten_with_its_crc() {
    let f = Fixture::new();
    f.import(&events(0, 600));
    let key = f.tmp.path().join("signing");
    f.run(&[
        std::ffi::OsStr::new("keygen"),
        "--out".as_ref(),
        key.as_os_str(),
    ])
    .expect(0);
    // keygen never overwrites.
    f.run(&[
        std::ffi::OsStr::new("keygen"),
        "--out".as_ref(),
        key.as_os_str(),
    ])
    .expect(2)
    .expect_one_error_line();

    let head_text = f.ok(&[
        std::ffi::OsStr::new("head"),
        "--sign".as_ref(),
        key.as_os_str(),
    ]);
    let head: Value = serde_json::from_str(&head_text).unwrap();
    assert_eq!(head["size"], 600);
    assert_eq!(head["signature"]["algorithm"], "ed25519");
    let head_file = f.write_file("head.json", head_text.as_bytes());
    let public = format!("{}.pub", key.display());

    // The log grows: it still extends the head, signed by that key.
    f.import(&events(600, 650));
    let audit = f.run(&[
        "audit",
        "--head",
        head_file.to_str().unwrap(),
        "--key",
        &public,
    ]);
    audit.expect(0);
    assert_eq!(audit.json()["new_head"]["size"], 650);
    assert_eq!(audit.json()["signed_by"], head["signature"]["public_key"]);
    assert_eq!(audit.json()["key_checked"], true);
    // Without --key: the head's own key signed it, and the output says
    // that is all that was checked.
    let audit = f.run(&["audit", "--head", head_file.to_str().unwrap()]);
    audit.expect(0);
    assert_eq!(audit.json()["signed_by"], head["signature"]["public_key"]);
    assert_eq!(audit.json()["key_checked"], false);

    // An inclusion proof against the head verifies.
    let proof = f.ok(&[
        "prove",
        "--offset",
        "123",
        "--head",
        head_file.to_str().unwrap(),
    ]);
    let proof = InclusionProof::from_json(&proof).unwrap();
    assert_eq!(proof.verify(), Ok(()));
    assert_eq!(
        enforcelog::audit::head::hex(&proof.root),
        head["root"].as_str().unwrap()
    );

    // Another key: refused.
    let other = f.tmp.path().join("other");
    f.run(&[
        std::ffi::OsStr::new("keygen"),
        "--out".as_ref(),
        other.as_os_str(),
    ])
    .expect(0);
    f.run(&[
        "audit",
        "--head",
        head_file.to_str().unwrap(),
        "--key",
        &format!("{}.pub", other.display()),
    ])
    .expect(1);

    // Edit record 300's step in place and recompute its frame CRC.
    let (name, mut bytes) = f.segments().into_iter().next().unwrap();
    let needle = b"\xa4step\xcd\x01\x2c"; // "step": 300 as a uint16
    let at = find(&bytes, needle);
    bytes[at + 7] ^= 0x01; // 300 -> 301
                           // The frame header is the 24 bytes before the payload, which starts
                           // at the MessagePack array marker closest before `at`.
    let payload_start = (0..at)
        .rev()
        .find(|&i| bytes[i] == 0x97 && bytes[i + 1] == 1)
        .unwrap();
    let frame = payload_start - 24;
    let len = u32::from_le_bytes(bytes[frame + 4..frame + 8].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&bytes[frame + 4..payload_start + len]);
    bytes[frame..frame + 4].copy_from_slice(&crc.to_le_bytes());
    fs::write(f.dir.join(&name), &bytes).unwrap();

    // The checksums cannot tell; the chain in the batches can, and names
    // the batch.
    let verify = f.run(&["verify"]);
    verify.expect(1);
    assert!(
        verify.stdout.starts_with("tampering: "),
        "{}",
        verify.stdout
    );
    verify.stderr_has("history was rewritten");
    let audit = f.run(&["audit", "--head", head_file.to_str().unwrap()]);
    audit.expect(1).expect_one_error_line();
    audit.stderr_has("the log diverges at offset ");
    audit.stderr_has("among the records the head covers");
    f.run(&["head"]).expect(1).expect_one_error_line();

    // A forger who also computes every link again: the chain cannot tell
    // either; the head kept from before can.
    assert_eq!(f.segments().len(), 1, "one segment to relink");
    fs::write(f.dir.join(&name), common::segment::relinked(&bytes)).unwrap();
    f.run(&["verify"]).expect(0);
    let audit = f.run(&["audit", "--head", head_file.to_str().unwrap()]);
    audit.expect(1).expect_one_error_line();
    audit.stderr_has("does not extend the head");
    f.run(&[
        "prove",
        "--offset",
        "1",
        "--head",
        head_file.to_str().unwrap(),
    ])
    .expect(1);
}

#[test]
fn bad_heads_keys_and_offsets_are_usage_errors_and_change_nothing() {
    let f = Fixture::new();
    f.import(&events(0, 40));
    let before = f.segments();
    let head_text = f.ok(&["head"]);
    let good: Value = serde_json::from_str(&head_text).unwrap();
    assert!(good.get("signature").is_none());
    for bad in [
        "".to_string(),
        "{}".to_string(),
        json!({"size": 40, "root": "00", "time": good["time"]}).to_string(),
        json!({"size": 40, "root": good["root"], "time": "yesterday"}).to_string(),
        json!({"size": 40, "root": good["root"], "time": good["time"], "x": 1}).to_string(),
    ] {
        let file = f.write_file("bad.json", bad.as_bytes());
        f.run(&["audit", "--head", file.to_str().unwrap()])
            .expect(2)
            .expect_one_error_line();
    }
    let file = f.write_file("good.json", head_text.as_bytes());
    // An unsigned head and --key: refused (exit 1: it cannot be trusted).
    f.run(&[
        "audit",
        "--head",
        file.to_str().unwrap(),
        "--key",
        &"ab".repeat(32),
    ])
    .expect(1);
    f.run(&[
        "audit",
        "--head",
        file.to_str().unwrap(),
        "--key",
        "not-a-key",
    ])
    .expect(2);
    f.run(&["prove", "--offset", "40"])
        .expect(2)
        .expect_one_error_line();
    f.run(&["head", "--sign", "/nonexistent/key"]).expect(2);
    // A head of a longer log than this one.
    let longer = json!({"size": 41, "root": good["root"], "time": good["time"]}).to_string();
    let file = f.write_file("longer.json", longer.as_bytes());
    f.run(&["audit", "--head", file.to_str().unwrap()])
        .expect(1)
        .stderr_has("fewer than");
    assert!(
        f.segments() == before,
        "a read-only command changed a segment"
    );
    // No store: exit 2, nothing created.
    let empty = Fixture::new();
    empty.run(&["head"]).expect(2);
    assert!(!empty.dir.exists());
}
