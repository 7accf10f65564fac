//! Review 27: the fixes of review 26 (the fleet reader reading strictly in
//! stream order, src/ship/fleet.rs `Cursor`, `fold_until`). Each test fails
//! if the finding it is named after is real; confirmed ones are
//! `#[ignore]`d with the reason.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsString;

use cli::*;
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

/// The head of another store, longer than this store's log: `check_extends`
/// now asks `head_with_consistency` for a proof from the head's size first,
/// which fails with OffsetOutOfRange before the store ids are compared, so
/// the audit says "records were removed" of a log that is simply another
/// store's (the exit code, 1, is the same). An operator pointed at the
/// wrong directory is told history was deleted.
#[test]
fn another_stores_longer_head_is_reported_as_another_store() {
    let a = Fixture::new();
    a.import(&events(0, 12));
    let head = a.ok(&["head"]);
    let b = Fixture::new();
    b.import(&events(0, 3));
    let head = b.write_file("a-head.json", head.as_bytes());
    b.run(&[OsString::from("audit"), "--head".into(), head.into()])
        .expect(1)
        .expect_one_error_line()
        .stderr_has("store");
}

/// Refutes: `audit` of a head of the empty log (size 0) failing now that
/// the head and the proof come from one tree (`head_with_consistency` with
/// `old_size` 0): exit 0 once records were added.
#[test]
fn a_size_zero_head_audits_after_records_are_added() {
    let f = Fixture::new();
    enforcelog::Store::open(&f.dir, enforcelog::StoreOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let zero: Value = serde_json::from_str(&f.ok(&["head"])).unwrap();
    assert_eq!(zero["size"], 0);
    let file = f.write_file("zero.json", zero.to_string().as_bytes());
    f.import(&events(0, 4));
    f.run(&[OsString::from("audit"), "--head".into(), file.into()])
        .expect(0);
}

/// Needs `nats-server` on PATH
/// (`cargo test -p enforcelog-cli --all-features --test cli_review27`).
#[cfg(feature = "jetstream")]
#[path = "support/nats.rs"]
mod nats;

#[cfg(feature = "jetstream")]
mod fleet {
    use super::nats::{event, options, runtime, ship_all, shipped, Server};
    use std::net::TcpListener;
    use std::time::Duration;

    use enforcelog::ship::{FleetConsumer, ShipOptions};
    use enforcelog::Store;
    use futures_util::StreamExt;

    /// A stream with holes in the middle (messages deleted by an operator,
    /// or by per-subject limits: `max_msgs_per_subject`) is read with a
    /// bounded number of consumer restarts. Each hole is a delivery past
    /// view+1 from a consumer that delivered before, which `fold_until`
    /// takes for a skipped delivery: the durable consumer is deleted and
    /// made again (and the checkpoint written and acked) once per hole,
    /// so a stream with k holes costs k consumer recreations, k
    /// checkpoint fsyncs and k round trips to the stream leader.
    #[test]
    fn a_stream_with_holes_in_the_middle_is_read_without_a_consumer_restart_per_hole() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-holes";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 40).await;
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client.clone());
                let stream = js.get_stream(&options.stream).await.unwrap();
                for seq in (2..40).step_by(2) {
                    assert!(stream.delete_message(seq).await.unwrap());
                }
                let mut created = client
                    .subscribe(format!(
                        "$JS.EVENT.ADVISORY.CONSUMER.CREATED.{}.>",
                        options.stream
                    ))
                    .await
                    .unwrap();
                client.flush().await.unwrap();
                let state = tmp.path().join("fleet-state");
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 21, "every message left folded once");
                drop(reader);
                client.flush().await.unwrap();
                let mut creations = 0;
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(500), created.next()).await
                {
                    creations += 1;
                }
                assert!(
                    creations <= 2,
                    "{creations} consumer creations to read 21 messages across 19 holes"
                );
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// The stream's last message deleted (by an operator, or a per-subject
    /// limit): `catch_up` reads until the view reaches the stream's
    /// `last_sequence`, which no delivery ever reaches; it fails after
    /// STALL_LIMIT (30 s) with "no message", though everything there is
    /// was folded. Same for a last message on a subject outside the
    /// consumer's filter (a stream shared with other subjects).
    #[test]
    fn a_stream_whose_last_message_was_deleted_is_caught_up_with() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-tail-deleted";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 10).await;
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let mut stream = js.get_stream(&options.stream).await.unwrap();
                assert!(stream.delete_message(10).await.unwrap());
                let info = stream.info().await.unwrap();
                assert_eq!(info.state.last_sequence, 10, "{:?}", info.state);
                let state = tmp.path().join("fleet-state");
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                let caught = reader.catch_up().await;
                assert!(caught.is_ok(), "{caught:?}");
                assert_eq!(reader.view().entries, 9);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// A TCP proxy to `server` that drops, once armed, the next JetStream
    /// delivery (a message whose reply subject is `$JS.ACK.…`) it passes
    /// to the client: what a pull request given up by the client (its
    /// response arrived after FETCH_EXPIRES + FETCH_GRACE, the inbox was
    /// gone) looks like to the server, which counts the message delivered.
    struct DropOne {
        port: u16,
        armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl DropOne {
        fn start(server: &Server) -> DropOne {
            use std::io::{BufRead, Read, Write};
            use std::sync::atomic::Ordering;
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let upstream = server.port;
            let flag = armed.clone();
            std::thread::spawn(move || {
                for client in listener.incoming() {
                    let Ok(client) = client else { return };
                    let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    let (mut c_in, mut s_out) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c_in, &mut s_out);
                    });
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut from = std::io::BufReader::new(server);
                        let mut to = client;
                        loop {
                            let mut line = Vec::new();
                            if from.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let text = String::from_utf8_lossy(&line).to_string();
                            let words: Vec<&str> = text.split_whitespace().collect();
                            if matches!(words.first(), Some(&"MSG") | Some(&"HMSG")) {
                                let total: usize = words.last().unwrap().parse().unwrap();
                                let mut body = vec![0; total + 2];
                                if from.read_exact(&mut body).is_err() {
                                    return;
                                }
                                let delivery = words.iter().any(|w| w.starts_with("$JS.ACK."));
                                if delivery && flag.swap(false, Ordering::SeqCst) {
                                    continue;
                                }
                                line.extend_from_slice(&body);
                            }
                            if to.write_all(&line).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            DropOne { port, armed }
        }
    }

    /// The first delivery of a consumer just made (by `open`, or by a
    /// restart after a gap) is taken as it is even when it skips a
    /// message that exists (`fresh`, fleet.rs:547): meant for messages
    /// deleted from the stream, it equally accepts a delivery lost on its
    /// way (a pull request given up), the very case `Cursor` exists for.
    /// The next message is folded, the checkpoint saved past the lost one,
    /// and the AckAll acknowledgement drops it from the consumer: the
    /// event is never counted in the fleet view.
    #[test]
    fn a_delivery_lost_on_the_first_fetch_of_a_fresh_consumer_is_not_skipped() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let proxy = DropOne::start(&server);
        let through = ShipOptions {
            servers: vec![format!("nats://127.0.0.1:{}", proxy.port)],
            ..options.clone()
        };
        let name = "fleet-lost-first";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 20).await;
                let mut reader = FleetConsumer::open(&through, name, &state, windows.clone())
                    .await
                    .unwrap();
                proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
                reader.catch_up().await.unwrap();
                assert!(
                    !proxy.armed.load(std::sync::atomic::Ordering::SeqCst),
                    "one delivery dropped"
                );
                drop(reader);
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 20, "every shipped event folded once");
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// Refutes: a delivery lost from a consumer that already delivered
    /// (not `fresh`) being acked past. The next delivery is past view+1, a
    /// gap: the batch before it is saved and acked, the consumer made again
    /// at view+1, and the lost message is read from it.
    #[test]
    fn a_delivery_lost_after_the_first_fetch_is_read_again() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let proxy = DropOne::start(&server);
        let through = ShipOptions {
            servers: vec![format!("nats://127.0.0.1:{}", proxy.port)],
            ..options.clone()
        };
        let name = "fleet-lost-later";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 10).await;
                let mut reader = FleetConsumer::open(&through, name, &state, windows.clone())
                    .await
                    .unwrap();
                assert_eq!(reader.catch_up().await.unwrap(), 10);
                for i in 10..20 {
                    store.record_blocking(event(i)).unwrap();
                }
                ship_all(&store, &options).await;
                proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
                reader.catch_up().await.unwrap();
                assert!(!proxy.armed.load(std::sync::atomic::Ordering::SeqCst));
                assert_eq!(reader.view().entries, 20, "the lost delivery read again");
                drop(reader);
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 20, "and checkpointed once");
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// A message under the subject prefix without enforcelog headers (a
    /// stray publish, a tool's test message) between shipped ones: every
    /// `catch_up` from the checkpoint fails at it ("lacks enforcelog
    /// headers"), so no event after it is ever folded, by this process or
    /// the next: one undecodable message stalls the whole fleet view. (The
    /// store skips and counts an undecodable entry; `FleetView::fold` does
    /// too for an undecodable payload.) And `fold_until` sets the view's
    /// sequence past the message before it checks the headers, so a retry
    /// in the same process later checkpoints past it, neither folded nor
    /// counted.
    #[test]
    fn a_message_without_enforcelog_headers_does_not_stall_the_fleet_view() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-stray";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 5).await;
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                js.publish(
                    format!("{}.stray", options.subject_prefix),
                    "{\"hello\":\"\u{200b}\"}".into(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
                for i in 5..10 {
                    store.record_blocking(event(i)).unwrap();
                }
                ship_all(&store, &options).await;
                let mut reader = FleetConsumer::open(&options, name, &state, windows.clone())
                    .await
                    .unwrap();
                let caught = reader.catch_up().await;
                assert!(caught.is_ok(), "{caught:?}");
                assert_eq!(reader.view().entries, 10);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }
}
