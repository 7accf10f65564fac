//! Review 35: tree heads shipped with JetStream batches (commit 383845f).
//! Server helpers shared with cli/tests/jetstream.rs
//! (`support/jetstream_helpers.rs`).
//!
//! The servers are real `nats-server` processes on loopback ports, in
//! temporary directories: `.ci/run` installs the binary. Without it on the
//! PATH these tests print why and pass without running, so a developer
//! without NATS can still run the suite.
#![cfg(feature = "jetstream")]
#![allow(dead_code)]

#[path = "../../tests/common/mod.rs"]
mod common;

include!("support/jetstream_helpers.rs");

/// Publishes one message as a shipper would, with the given head header.
async fn inject(
    options: &ShipOptions,
    store: &str,
    offset: u64,
    payload: &[u8],
    head: Option<&str>,
    message_id: Option<&str>,
) {
    let client = async_nats::connect(options.servers[0].as_str())
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Enforcelog-Store", store);
    headers.insert("Enforcelog-Offset", offset.to_string().as_str());
    headers.insert("Enforcelog-Time", T0_US.to_string().as_str());
    if let Some(h) = head {
        headers.insert("Enforcelog-Head", h);
    }
    if let Some(id) = message_id {
        headers.insert("Nats-Msg-Id", id);
    }
    let subject = format!("{}.gap.{}", options.subject_prefix, store);
    js.publish_with_headers(subject, headers, payload.to_vec().into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

fn same_head(store: &Store, view: &enforcelog::ship::FleetView) {
    let own = store.head().unwrap();
    let id = store.store_id().unwrap().to_string();
    let shipped = view.head_of(&id).expect("a head for the store");
    assert_eq!(
        (shipped.size, shipped.root, shipped.log),
        (own.size, own.root, own.log)
    );
}

/// Finding 1 (refuted): a shipper stopped mid-stream, restarted (its
/// frontier rebuilt from the log), then one that lost its offset file and
/// sends everything again: every head equals `Store::head`, none mismatched.
#[test]
fn heads_after_restarts_and_resends_equal_the_store_head() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let evs = events(0x35_0001, 3_000);
    let store = open_store(&tmp.path().join("host"));
    record(&store, &evs[..2_000]);
    let options = ShipOptions {
        batch: 37,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    bounded(&rt, async {
        let first = Shipper::new(&store, options.clone()).unwrap();
        let watcher = first.clone();
        first
            .run(async move {
                while watcher.progress().shipped < 700 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap();
        record(&store, &evs[2_000..]);
        let second = Shipper::new(&store, options.clone()).unwrap();
        ship_until_caught_up(&second).await;
        std::fs::remove_dir_all(store.dir().join("ship")).unwrap();
        let third = Shipper::new(&store, options.clone()).unwrap();
        ship_until_caught_up(&third).await;
        let (_, view) = fleet(&options).await;
        assert_eq!(view.entries, 3_000);
        assert_eq!(view.heads_mismatched, 0);
        assert_eq!(view.heads_unchecked, 0);
        assert!(view.heads_checked >= 3_000 / 37);
        same_head(&store, &view);
    });
}

/// Finding 1/2 (refuted): NATS down while recording, then back: the
/// shipper's retries rebuild the frontier; no false mismatch, the last head
/// is the store's.
#[test]
fn heads_after_nats_was_down_equal_the_store_head() {
    if !nats_available() {
        return;
    }
    let mut server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let evs = events(0x35_0002, 1_500);
    let store = open_store(&tmp.path().join("host"));
    let options = ShipOptions {
        batch: 50,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    record(&store, &evs[..500]);
    let running = rt.block_on(async { Running::start(std::slice::from_ref(&store), &options) });
    bounded(&rt, caught_up(&running.shippers, Duration::from_secs(60)));
    server.stop();
    record(&store, &evs[500..]);
    std::thread::sleep(Duration::from_millis(700));
    server.resume();
    bounded(&rt, async {
        caught_up(&running.shippers, Duration::from_secs(120)).await;
        running.stop().await;
        let (_, view) = fleet(&options).await;
        assert_eq!(view.entries, 1_500);
        assert_eq!((view.heads_mismatched, view.heads_unchecked), (0, 0));
        same_head(&store, &view);
    });
}

/// Finding 3 (confirmed): a forged record injected into the stream at the
/// offset whose real message carries the batch's head. The real message is
/// then a duplicate on the fleet side, so `fold_until` never checks its head
/// (`check_head` runs only for new entries): the forged record stays in the
/// fleet's view, and nothing is counted mismatched or even unchecked.
#[test]
fn a_forged_record_at_the_head_offset_is_flagged() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let evs = events(0x35_0003, 6);
    let store = open_store(&tmp.path().join("host"));
    let id = store.store_id().unwrap().to_string();
    let options = ShipOptions {
        batch: 5,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    record(&store, &evs[..5]);
    bounded(&rt, async {
        let shipper = Shipper::new(&store, options.clone()).unwrap();
        ship_until_caught_up(&shipper).await;
        record(&store, &evs[5..]);
        // Forged offset 5, another message id than the shipper's.
        inject(&options, &id, 5, b"forged", None, Some("forger:5")).await;
        ship_until_caught_up(&shipper).await;
        let (_, view) = fleet(&options).await;
        assert_eq!(view.entries, 6);
        assert_eq!(view.duplicates, 1, "the real offset 5 was dropped");
        assert!(
            view.heads_mismatched + view.heads_unchecked >= 1,
            "the real head of 6 records was silently dropped: checked {} mismatched {} unchecked {}",
            view.heads_checked,
            view.heads_mismatched,
            view.heads_unchecked
        );
    });
}

/// Findings 3 and 4 (refuted): an altered record in the middle of a batch is
/// caught by the batch's head; a huge head, a head that is not JSON, a head
/// naming another store, a head on a message whose entry does not decode:
/// the consumer does not stall, each is counted.
#[test]
fn altered_records_and_bad_heads_are_counted_without_a_stall() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let evs = events(0x35_0004, 10);
    let a = open_store(&tmp.path().join("a"));
    let b = open_store(&tmp.path().join("b"));
    let id = a.store_id().unwrap().to_string();
    let options = ShipOptions {
        batch: 5,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    record(&a, &evs[..5]);
    record(&b, &evs[..6]);
    bounded(&rt, async {
        let shipper = Shipper::new(&a, options.clone()).unwrap();
        ship_until_caught_up(&shipper).await;
        // Offset 5: a forged record with no head, then the real batch
        // 5..9 (offset 5 a duplicate): the head on 9 must mismatch.
        record(&a, &evs[5..]);
        inject(&options, &id, 5, b"forged", None, Some("forger:5")).await;
        ship_until_caught_up(&shipper).await;
        let b_head = enforcelog::audit::head::to_json(&b.head().unwrap(), None);
        let b_head: String = serde_json::from_str::<serde_json::Value>(&b_head)
            .unwrap()
            .to_string();
        let huge = "x".repeat(60_000);
        inject(&options, &id, 10, b"\xff\xff", Some(&huge), None).await;
        inject(&options, &id, 11, b"\xff", Some("{not json"), None).await;
        inject(&options, &id, 12, b"\xff", Some(&b_head), None).await;
        let (_, view) = fleet(&options).await;
        assert_eq!(view.entries, 13);
        assert_eq!(view.heads_checked, 1, "the head of the first batch");
        // head on 9 (forged 5), head of store b: mismatched; huge and
        // not-JSON: unchecked.
        assert_eq!(view.heads_mismatched, 2);
        assert_eq!(view.heads_unchecked, 2);
        assert_eq!(view.head_of(&id).map(|h| h.size), Some(5));
    });
}

/// Finding 2 (refuted): two stores shipping concurrently into one stream,
/// interleaved; a second fold (a fresh view) sees the same.
#[test]
fn interleaved_stores_never_mismatch() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let stores: Vec<Store> = (0..3)
        .map(|i| open_store(&tmp.path().join(format!("s{i}"))))
        .collect();
    let options = ShipOptions {
        batch: 7,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    let running = rt.block_on(async { Running::start(&stores, &options) });
    for round in 0..5u64 {
        for (i, s) in stores.iter().enumerate() {
            record(s, &events(round * 10 + i as u64, 40));
        }
    }
    bounded(&rt, async {
        caught_up(&running.shippers, Duration::from_secs(60)).await;
        running.stop().await;
        let (_, view) = fleet(&options).await;
        assert_eq!(view.entries, 600);
        assert_eq!((view.heads_mismatched, view.heads_unchecked), (0, 0));
        for s in &stores {
            same_head(s, &view);
        }
    });
}
