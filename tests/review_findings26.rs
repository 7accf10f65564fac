//! Review 26: adversarial review of the two-thread tree extension
//! (`src/audit/tree.rs`, `LogTree::extend`) and of heads that name their
//! log (`src/audit/head.rs`, `src/store/audit.rs`: `heads`, `shard_head`,
//! `prove_*_in_shard`). Each test fails if the finding it is named after is
//! real; confirmed ones are `#[ignore]`d with the reason so the suite stays
//! green.

use std::time::Duration;

use enforcelog::audit::head::{self, SigningKey};
use enforcelog::audit::merkle::{self, Hash};
use enforcelog::audit::tree::{LogTree, BLOCK_LEAVES};
use enforcelog::{Action, Durability, Event, Log, LogOptions, Record, Store, StoreOptions};

/// A real-looking payload: a run id, details with runs of zero bytes.
fn payload(i: u64) -> Vec<u8> {
    let mut p = format!(
        "{{\"run_id\":\"run-{:06}\",\"step\":{i},\"zeros\":\"",
        i / 10
    )
    .into_bytes();
    p.extend(std::iter::repeat_n(0u8, (i % 48) as usize));
    p.extend_from_slice(b"\"}");
    p
}

fn event(tenant: &str, i: u64) -> Event {
    Event::new(tenant, "budget", Action::Blocked)
        .with_run_id(format!("run-{i:04}"))
        .with_details(
            enforcelog::details!({"step": i, "zeros": [0, 0, 0, 0], "note": "\u{0}\u{0}"}),
        )
}

/// A log of `n` records in small segments (so the two halves of a long
/// extension start in different sealed segments), and its leaf hashes by
/// definition.
fn small_segment_log(dir: &std::path::Path, n: u64) -> (Log, Vec<Hash>) {
    let options = LogOptions {
        segment_max_bytes: 256 << 10,
        record_max_bytes: 64 << 10,
        durability: Durability::None,
        ..LogOptions::default()
    };
    let writer = Log::open(dir, options).unwrap();
    let mut at = 0;
    while at < n {
        let end = n.min(at + 1_000);
        let records = (at..end)
            .map(|i| Record::new(1_780_000_000_000_000 + i as i64, payload(i)))
            .collect();
        writer.append_batch_blocking(records).unwrap();
        at = end;
    }
    writer.close().unwrap();
    let log = Log::open_read_only(dir).unwrap();
    let leaves: Vec<Hash> = log
        .read_from(0)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            merkle::record_leaf_hash(r.offset, r.timestamp_us, &r.payload)
        })
        .collect();
    assert_eq!(leaves.len() as u64, n);
    (log, leaves)
}

/// Refutes: the two-thread extension giving another root than the
/// definition when it starts mid-block, exactly at a block, one past one,
/// or ends one short of / exactly at / one past a block, across many
/// sealed segments; a split at `from + 32Ki` rounded down never loses or
/// repeats the block it falls in.
#[test]
fn two_thread_extensions_from_any_start_give_the_roots_of_the_definition() {
    let dir = tempfile::tempdir().unwrap();
    let n = 2 * 65_536 + 3 * BLOCK_LEAVES + 1;
    let (log, all) = small_segment_log(dir.path(), n);
    assert!(log.metrics().records == 0 && std::fs::read_dir(dir.path()).unwrap().count() > 8);
    for (start, end) in [
        (0, 65_536),
        (1, 65_537),
        (255, 65_536 + 255),
        (256, 65_536 + 256),
        (257, n),
        (65_535, n - 1),
        (0, n),
    ] {
        let mut tree = LogTree::new();
        tree.extend(&log, start).unwrap();
        tree.extend(&log, end).unwrap();
        assert_eq!(tree.size(), end);
        let view = tree.view(&log);
        for prefix in [
            end,
            end - 1,
            end / 2,
            (end / 2) / BLOCK_LEAVES * BLOCK_LEAVES + 1,
        ] {
            assert_eq!(
                view.root_of_prefix(prefix).unwrap(),
                merkle::root(&all[..prefix as usize]),
                "extension {start}..{end}, prefix {prefix}"
            );
        }
    }
}

/// Refutes: a long extension past the log's end (the newer thread fails,
/// the older one succeeds) panicking, or leaving a tree that covers records
/// it does not have. It fails, and the tree is as it was.
#[test]
fn a_two_thread_extension_past_the_log_fails_and_leaves_the_tree_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let n = 70_000;
    let (log, all) = small_segment_log(dir.path(), n);
    let mut tree = LogTree::new();
    tree.extend(&log, 300).unwrap();
    for to in [n + 1, 2 * n, u64::MAX / 2] {
        assert!(tree.extend(&log, to).is_err(), "extension to {to}");
        assert_eq!(tree.size(), 300);
    }
    tree.extend(&log, n).unwrap();
    assert_eq!(
        tree.view(&log).root_of_prefix(n).unwrap(),
        merkle::root(&all)
    );
}

fn shard_options(durability: Durability) -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability,
            ..LogOptions::default()
        },
        shard_refresh_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    }
}

/// Refutes: the head of a peer shard covering records its writer
/// acknowledged but never synced (`Durability::Interval`). A peer's head
/// is read from its published durable end (`DURABLE`), which the writer
/// rewrites only after an fsync; its own head syncs first.
#[test]
fn a_peer_shards_head_covers_only_what_its_writer_made_durable() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), shard_options(Durability::Fsync)).unwrap();
    let b = Store::open(
        dir.path(),
        shard_options(Durability::Interval(Duration::from_secs(3_600))),
    )
    .unwrap();
    assert_eq!((a.shard(), b.shard()), (0, 1));
    a.record_blocking(event("acme", 0)).unwrap();
    for i in 0..5 {
        b.record_blocking(event("globex", i)).unwrap();
    }
    let peer = a.shard_head(1).unwrap();
    assert_eq!(peer.size, 0, "a head of records not yet durable");
    assert_eq!(a.prove_consistency_in_shard(1, 0, 5).map(|_| ()).ok(), None);
    let own = b.shard_head(1).unwrap();
    assert_eq!(own.size, 5, "the writer's own head syncs first");
    let peer = a.shard_head(1).unwrap();
    assert_eq!((peer.size, peer.root), (own.size, own.root));
    assert_eq!(peer.log, own.log);
    b.close().unwrap();
    a.close().unwrap();
}

/// Refutes: `heads()` naming one store twice, or a shard's head whose
/// signature also passes for another shard's or an unnamed head; and a
/// writer's head of a peer racing the peer's writer giving a root that is
/// not the tree of that many records.
#[test]
fn each_shards_head_names_its_log_and_signs_only_that_name() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), shard_options(Durability::Fsync)).unwrap();
    let b = Store::open(dir.path(), shard_options(Durability::Fsync)).unwrap();
    for i in 0..40 {
        a.record_blocking(event("acme", i)).unwrap();
    }
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..300 {
                b.record_blocking(event("globex", i)).unwrap();
            }
        });
        let mut seen = 0;
        while !writer.is_finished() || seen < 3 {
            let head = a.shard_head(1).unwrap();
            let proof = a.prove_consistency_in_shard(1, 0, head.size).unwrap();
            assert_eq!(proof.new_root, head.root, "size {}", head.size);
            seen += 1;
        }
    });
    let heads = a.heads().unwrap();
    assert_eq!(heads.len(), 2);
    assert_eq!((heads[0].size, heads[1].size), (40, 300));
    let names: Vec<_> = heads.iter().map(|h| h.log.unwrap()).collect();
    assert_eq!((names[0].shard, names[1].shard), (0, 1));
    assert_eq!(Some(names[0].store_id), a.store_id());
    assert_eq!(Some(names[1].store_id), b.store_id());
    assert_ne!(names[0].store_id, names[1].store_id);
    let key = SigningKey::from_bytes(&[7; 32]);
    let signed = heads[1].clone().sign(&key);
    assert!(signed.verify().is_ok());
    let (back, back_signed) = head::from_json(&head::to_json(&heads[1], Some(&signed))).unwrap();
    assert_eq!(back, heads[1]);
    assert!(back_signed.unwrap().verify().is_ok());
    let mut other = signed.clone();
    other.head.log.as_mut().unwrap().shard = 0;
    assert!(other.verify().is_err());
    let mut other = signed.clone();
    other.head.log.as_mut().unwrap().store_id = names[0].store_id;
    assert!(other.verify().is_err());
    let mut other = signed;
    other.head.log = None;
    assert!(other.verify().is_err());
    b.close().unwrap();
    a.close().unwrap();
}
