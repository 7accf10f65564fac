//! Review 26: `head`, `prove` and `audit` over heads that name their log
//! (store id and shard; cli/src/audit.rs `pick_shard`, `check_extends`).
//! Each test fails if the finding it is named after is real; confirmed
//! ones are `#[ignore]`d with the reason.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cli::*;
use enforcelog::{Action, Durability, Event, LogOptions, Store, StoreOptions};
use serde_json::{json, Value};

fn events(from: u64, to: u64) -> Vec<Value> {
    (from..to)
        .map(|i| {
            with(
                ev(
                    &format!("tenant-{}", i % 5),
                    "rule",
                    "block",
                    &format!("2026-11-{:02}T10:00:00Z", 1 + i % 28),
                ),
                "details",
                json!({"run_id": format!("run-{i:04}"), "zeros": [0, 0, 0, 0], "blob": "\u{0}".repeat(64)}),
            )
        })
        .collect()
}

fn event(tenant: &str, i: u64) -> Event {
    Event::new(tenant, "budget", Action::Killed)
        .with_run_id(format!("run-{i:04}"))
        .with_details(enforcelog::details!({"step": i, "zeros": [0, 0, 0]}))
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut all: Vec<(PathBuf, Vec<u8>)> = walk(dir)
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect();
    all.sort();
    all
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    args.iter().map(|a| a.as_ref().to_owned()).collect()
}

/// A directory `writers` writers shared: shard 0 holds 20 imported events,
/// shard n (n >= 1) holds n + 2 events of its own.
fn sharded(f: &Fixture, writers: usize) {
    f.import(&events(0, 20));
    let stores: Vec<Store> = (0..writers)
        .map(|_| Store::open(&f.dir, StoreOptions::default()).unwrap())
        .collect();
    for store in &stores[1..] {
        for i in 0..u64::from(store.shard()) + 2 {
            store.record_blocking(event("globex", i)).unwrap();
        }
    }
    for store in stores.into_iter().rev() {
        store.close().unwrap();
    }
    assert_eq!(Store::shard_dirs(&f.dir).unwrap().len(), writers);
}

fn shard_dir(f: &Fixture, n: u32) -> PathBuf {
    f.dir.join("shards").join(n.to_string())
}

/// The head of a shard removed whole, audited with `--shard` naming the
/// very shard the head names: the log the head covers is gone, which is
/// history removed (exit 1), as it is without `--shard` — not a usage
/// error (exit 2) that a script treats as "called it wrong, retry".
#[test]
fn a_removed_shard_is_history_removed_even_when_shard_is_given() {
    let f = Fixture::new();
    sharded(&f, 2);
    let head1 = f.ok(&["head", "--shard", "1"]);
    let head1 = f.write_file("head1.json", head1.as_bytes());
    fs::remove_dir_all(shard_dir(&f, 1)).unwrap();
    f.run(&os(&[&"audit", &"--head", &head1])).expect(1);
    f.run(&os(&[&"audit", &"--head", &head1, &"--shard", &"1"]))
        .expect(1)
        .expect_one_error_line();
    f.run(&os(&[
        &"prove",
        &"--offset",
        &"0",
        &"--head",
        &head1,
        &"--shard",
        &"1",
    ]))
    .expect(1);
}

/// Refutes: a head accepted for a shard swapped with another log — a
/// shard of the same directory, or the same shard of another store's
/// directory. Both are another store id: exit 1, one line, no file changed.
#[test]
fn a_shard_swapped_with_another_log_fails_the_audit() {
    let f = Fixture::new();
    sharded(&f, 3);
    let other = Fixture::new();
    sharded(&other, 3);
    let head1 = f.ok(&["head", "--shard", "1"]);
    let head1 = f.write_file("head1.json", head1.as_bytes());
    f.run(&os(&[&"audit", &"--head", &head1])).expect(0);
    // Shards 1 and 2 of the same directory exchanged.
    let aside = f.tmp.path().join("aside");
    fs::rename(shard_dir(&f, 1), &aside).unwrap();
    fs::rename(shard_dir(&f, 2), shard_dir(&f, 1)).unwrap();
    fs::rename(&aside, shard_dir(&f, 2)).unwrap();
    let before = snapshot(&f.dir);
    f.run(&os(&[&"audit", &"--head", &head1]))
        .expect(1)
        .expect_one_error_line();
    f.run(&os(&[&"prove", &"--offset", &"0", &"--head", &head1]))
        .expect(1);
    assert!(snapshot(&f.dir) == before);
    // Shard 1 replaced by shard 1 of another directory.
    fs::remove_dir_all(shard_dir(&f, 1)).unwrap();
    copy_dir(&shard_dir(&other, 1), &shard_dir(&f, 1));
    f.run(&os(&[&"audit", &"--head", &head1]))
        .expect(1)
        .expect_one_error_line();
}

/// Refutes: a shard whose `STORE_ID` file was deleted (so its log names no
/// store) passing the audit of a head that names the store: exit 1.
#[test]
fn a_shard_that_lost_its_store_id_fails_the_audit_of_a_named_head() {
    let f = Fixture::new();
    sharded(&f, 2);
    let head1 = f.ok(&["head", "--shard", "1"]);
    let head1 = f.write_file("head1.json", head1.as_bytes());
    fs::remove_file(shard_dir(&f, 1).join("STORE_ID")).unwrap();
    f.run(&os(&[&"audit", &"--head", &head1])).expect(1);
}

/// Refutes: `head --shard N` of a shard whose writer is live and holds
/// acknowledged but unsynced records (`Durability::Interval`) printing a
/// head over them, or changing any file of the directory; and shard
/// numbers at their extremes panicking instead of exit 2.
#[test]
fn a_live_peer_shards_head_covers_durable_records_and_changes_no_file() {
    let f = Fixture::new();
    f.import(&events(0, 5));
    let options = StoreOptions {
        log: LogOptions {
            durability: Durability::Interval(Duration::from_secs(3_600)),
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    };
    let a = Store::open(&f.dir, StoreOptions::default()).unwrap();
    let b = Store::open(&f.dir, options).unwrap();
    assert_eq!(b.shard(), 1);
    for i in 0..4 {
        b.record_blocking(event("globex", i)).unwrap();
    }
    let before = snapshot(&f.dir);
    let head: Value = serde_json::from_str(&f.ok(&["head", "--shard", "1"])).unwrap();
    assert_eq!(head["size"], 0, "a head of records not yet durable");
    assert_eq!(head["shard"], 1);
    assert_eq!(head["store_id"], json!(b.store_id().unwrap().to_string()));
    for shard in ["2", "-1", "4294967295", "4294967296", "1e0", ""] {
        f.run(&["head", "--shard", shard])
            .expect(2)
            .expect_one_error_line();
    }
    assert!(
        snapshot(&f.dir) == before,
        "a read-only command changed a file"
    );
    b.close().unwrap();
    a.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The durable fleet consumer (src/ship/fleet.rs, `FleetConsumer`) across a
/// crash between a fetch and its checkpoint. Needs `nats-server` on PATH
/// (`cargo test -p enforcelog-cli --all-features --test cli_review26`).
#[cfg(feature = "jetstream")]
#[path = "support/nats.rs"]
#[allow(dead_code, reason = "this file uses the server and ship_all only")]
mod nats;

#[cfg(feature = "jetstream")]
mod fleet {
    use super::nats::{ship_all, Server};
    use std::time::Duration;

    use enforcelog::ship::{FleetConsumer, ShipOptions};
    use enforcelog::Store;
    use futures_util::StreamExt;

    fn record(store: &Store, from: u64, to: u64) {
        for i in from..to {
            store.record_blocking(super::event("acme", i)).unwrap();
        }
    }

    /// A fleet process fetched a batch (the messages are delivered and
    /// pending on the durable consumer), folded it in memory and died
    /// before its checkpoint. The restarted consumer resumes from the
    /// checkpoint, but the server does not deliver the pending batch again
    /// before its `ack_wait`: it delivers the messages after it. Folding
    /// those and acknowledging the last (AckPolicy::All) acknowledges the
    /// pending batch too, which no checkpointed view ever folded: those
    /// events are lost from the fleet statistics for good.
    #[test]
    fn a_fleet_consumer_restarted_after_a_crash_between_fetch_and_checkpoint_loses_nothing() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let state = tmp.path().join("fleet-state");
        let options = ShipOptions {
            servers: vec![server.url()],
            replicas: 1,
            ack_timeout: Duration::from_secs(2),
            retry_max: Duration::from_millis(500),
            ..ShipOptions::default()
        };
        let name = "fleet-crashed-before-checkpoint";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(240), async {
                record(&store, 0, 300);
                ship_all(&store, &options).await;
                let mut reader = FleetConsumer::open(&options, name, &state, windows.clone())
                    .await
                    .unwrap();
                assert_eq!(reader.catch_up().await.unwrap(), 300);
                drop(reader);

                record(&store, 300, 500);
                ship_all(&store, &options).await;
                // The crashed process's fetch: the durable consumer as it
                // is, 50 messages delivered, folded in a view that died
                // before its checkpoint, never acknowledged.
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js.get_stream(&options.stream).await.unwrap();
                let consumer: async_nats::jetstream::consumer::PullConsumer =
                    stream.get_consumer(name).await.unwrap();
                let mut fetched = consumer.fetch().max_messages(50).messages().await.unwrap();
                let mut delivered = 0;
                while let Some(message) = fetched.next().await {
                    message.unwrap();
                    delivered += 1;
                }
                assert_eq!(delivered, 50);

                let mut reader = FleetConsumer::open(&options, name, &state, windows.clone())
                    .await
                    .unwrap();
                assert_eq!(reader.view().entries, 300, "restored from the checkpoint");
                reader.catch_up().await.unwrap();
                assert_eq!(
                    reader.view().entries,
                    500,
                    "every shipped event folded once"
                );
                drop(reader);
                // Nor does a later restart find them: they were acknowledged.
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 500);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }
}
