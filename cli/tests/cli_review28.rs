//! Review 28: the fixes of review 27 (the fleet reader asking the stream
//! for its next message, src/ship/fleet.rs `Cursor::next_held`; a message
//! without enforcelog headers skipped; cli/src/audit.rs `check_same_log` on
//! the `OffsetOutOfRange` path). Each test fails if the finding it is named
//! after is real; confirmed ones are `#[ignore]`d with the reason.

#[path = "../../tests/common/cli.rs"]
mod cli;
#[path = "../../tests/common/mod.rs"]
mod common;

use std::ffi::OsString;
use std::path::Path;

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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Refutes: `check_same_log` on the `OffsetOutOfRange` path calling a log
/// of the same store (a copy of the directory taken before records were
/// added: same store id) "another store". Its head is longer than the log:
/// records were removed, exit 1, and said so.
#[test]
fn the_same_stores_shorter_log_is_still_called_records_removed() {
    let a = Fixture::new();
    a.import(&events(0, 3));
    let b = Fixture::new();
    std::fs::remove_dir_all(&b.dir).ok();
    copy_dir(&a.dir, &b.dir);
    a.import(&events(3, 12));
    let head = a.ok(&["head"]);
    let head = b.write_file("a-head.json", head.as_bytes());
    b.run(&[OsString::from("audit"), "--head".into(), head.into()])
        .expect(1)
        .expect_one_error_line()
        .stderr_has("removed");
}

/// Refutes: another store's head audited against an empty store (its log
/// has no records, so `shard_head` of it may name no store): still exit 1,
/// naming the store, no panic and no "records were removed".
#[test]
fn another_stores_head_against_an_empty_store_names_the_store() {
    let a = Fixture::new();
    a.import(&events(0, 4));
    let head = a.ok(&["head"]);
    let b = Fixture::new();
    enforcelog::Store::open(&b.dir, enforcelog::StoreOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let head = b.write_file("a-head.json", head.as_bytes());
    let out = b.run(&[OsString::from("audit"), "--head".into(), head.into()]);
    out.expect(1).expect_one_error_line().stderr_has("store");
    assert!(!out.stderr.contains("removed"), "{}", out.stderr);
}

/// Needs `nats-server` on PATH
/// (`cargo test -p enforcelog-cli --all-features --test cli_review28`).
#[cfg(feature = "jetstream")]
#[path = "support/nats.rs"]
mod nats;

#[cfg(feature = "jetstream")]
mod fleet {
    use super::nats::{event, options, runtime, ship_all, shipped, Server};
    use std::net::TcpListener;
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use enforcelog::ship::{FleetConsumer, ShipOptions};
    use enforcelog::Store;
    use futures_util::StreamExt;

    /// Total events counted by the view's statistics.
    fn counted(reader: &FleetConsumer) -> u64 {
        reader
            .view()
            .stats_all(i64::MAX)
            .iter()
            .map(|s| s.total_count)
            .sum()
    }

    /// A stream shared with other subjects (created by an operator with
    /// `enforcelog.>` and `other.>`; `ShipOptions::stream` finds it and
    /// uses it as it is): every shipped message follows a message the
    /// consumer's filter leaves out, so every delivery is past view+1 and
    /// `fold_until` asks the stream (`next_held`, one STREAM.MSG.GET round
    /// trip, the whole next message in its reply) before folding it, one
    /// message at a time: catching up costs a round trip per message, not
    /// per batch, whatever the other application publishes.
    #[test]
    #[ignore = "confirmed: fleet.rs:579 a stream shared with other subjects costs one STREAM.MSG.GET round trip per folded message"]
    fn a_stream_shared_with_other_subjects_is_read_without_a_request_per_message() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-shared";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client.clone());
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: options.stream.clone(),
                    subjects: vec![format!("{}.>", options.subject_prefix), "other.>".into()],
                    ..Default::default()
                })
                .await
                .unwrap();
                for i in 0..20 {
                    js.publish(format!("other.{i}"), "{\"other\":\"app\"}".into())
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    store.record_blocking(event(i)).unwrap();
                    ship_all(&store, &options).await;
                }
                let mut gets = client
                    .subscribe(format!("$JS.API.STREAM.MSG.GET.{}", options.stream))
                    .await
                    .unwrap();
                client.flush().await.unwrap();
                let state = tmp.path().join("fleet-state");
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 20, "every shipped event folded once");
                drop(reader);
                client.flush().await.unwrap();
                let mut requests = 0;
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(500), gets.next()).await
                {
                    requests += 1;
                }
                assert!(
                    requests <= 3,
                    "{requests} STREAM.MSG.GET round trips to read 20 messages"
                );
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// A message on the fleet's subjects whose enforcelog headers parse but
    /// are not a shipper's (a re-publish by a tool, a test message copying
    /// real headers) naming a real store and an offset it has not shipped
    /// yet: `FleetView::fold` takes it as that entry (its payload,
    /// undecodable, is skipped as an undecodable entry, not counted as
    /// `foreign`), and when the store's own message for that offset comes
    /// it is counted a duplicate: the real event is never in the fleet's
    /// statistics.
    #[test]
    #[ignore = "confirmed: fleet.rs:97 a stray message with a real store's headers takes the place of that store's event, which is then dropped as a duplicate"]
    fn a_stray_message_with_a_stores_headers_does_not_displace_its_event() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-liar";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 5).await;
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js.get_stream(&options.stream).await.unwrap();
                let first = stream.get_raw_message(1).await.unwrap();
                let store_id = first
                    .headers
                    .get(enforcelog::ship::fleet::STORE_HEADER)
                    .unwrap()
                    .as_str()
                    .to_string();
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(enforcelog::ship::fleet::STORE_HEADER, store_id.as_str());
                headers.insert(enforcelog::ship::fleet::OFFSET_HEADER, "5");
                headers.insert(enforcelog::ship::fleet::TIME_HEADER, "1764000000000000");
                js.publish_with_headers(
                    format!("{}.stray", options.subject_prefix),
                    headers,
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
                reader.catch_up().await.unwrap();
                assert_eq!(
                    counted(&reader),
                    10,
                    "the ten recorded events counted (entries {}, duplicates {}, foreign {})",
                    reader.view().entries,
                    reader.view().duplicates,
                    reader.view().foreign
                );
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// Refutes: a stray message without headers as the stream's LAST message
    /// (after everything shipped), and another one deleted after it: the
    /// view skips and counts it, `catch_up` ends (caught up, no 30 s stall),
    /// and a reopened reader from the checkpoint folds nothing twice and
    /// loses nothing shipped afterwards.
    #[test]
    fn a_stray_last_message_then_a_deleted_one_is_caught_up_with_and_resumed() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = options(&server);
        let name = "fleet-stray-last";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 5).await;
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                for _ in 0..2 {
                    js.publish(
                        format!("{}.stray", options.subject_prefix),
                        "{\"hello\":\"\u{200b}\"}".into(),
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                }
                let stream = js.get_stream(&options.stream).await.unwrap();
                assert!(stream.delete_message(7).await.unwrap());
                let started = Instant::now();
                let mut reader = FleetConsumer::open(&options, name, &state, windows.clone())
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert!(started.elapsed() < Duration::from_secs(10));
                assert_eq!(reader.view().entries, 5);
                assert_eq!(reader.view().foreign, 1);
                drop(reader);
                for i in 5..8 {
                    store.record_blocking(event(i)).unwrap();
                }
                ship_all(&store, &options).await;
                let mut reader = FleetConsumer::open(&options, name, &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 8);
                assert_eq!(reader.view().duplicates, 0);
                assert_eq!(counted(&reader), 8);
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
        /// Deliveries let through, once armed, before the one dropped.
        pass: std::sync::Arc<std::sync::atomic::AtomicUsize>,
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
            let pass = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let passes = pass.clone();
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
                    let passes = passes.clone();
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
                                if delivery
                                    && flag.load(Ordering::SeqCst)
                                    && passes
                                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                            n.checked_sub(1)
                                        })
                                        .is_err()
                                    && flag.swap(false, Ordering::SeqCst)
                                {
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
            DropOne { port, armed, pass }
        }
    }

    /// The last delivery lost on its way (a pull request given up, as
    /// `DropOne` makes it) when nothing follows it: the server counts it
    /// delivered and pending, so no fetch delivers it again before the
    /// consumer's ack wait (30 s), and no later message comes to show a
    /// gap. `fold_until` sees empty fetches while `next_held(view+1)` says
    /// the stream holds exactly the message it waits for, which proves the
    /// delivery was lost, yet it neither restarts the consumer there nor
    /// ends: it waits out STALL_LIMIT (30 s) and fails with "no message"
    /// (or folds the redelivery after ~30 s, whichever comes first).
    #[test]
    fn a_lost_delivery_of_the_last_message_is_read_again_without_a_stall() {
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
        let name = "fleet-lost-last";
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 10).await;
                let mut reader = FleetConsumer::open(&through, name, &state, windows)
                    .await
                    .unwrap();
                assert_eq!(reader.catch_up().await.unwrap(), 10);
                store.record_blocking(event(10)).unwrap();
                ship_all(&store, &options).await;
                proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
                let started = Instant::now();
                let caught = reader.catch_up().await;
                assert!(!proxy.armed.load(std::sync::atomic::Ordering::SeqCst));
                let took = started.elapsed();
                assert!(
                    caught.is_ok() && took < Duration::from_secs(10),
                    "{caught:?} after {took:?}"
                );
                assert_eq!(reader.view().entries, 11);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// `fold_fleet` (AckPolicy::None: a delivery is never sent again) whose
    /// delivery of the stream's last message is lost: every fetch after it
    /// is empty, `next_held(view+1)` names that very message, and
    /// `fold_until` waits out STALL_LIMIT and fails, where restarting the
    /// consumer at view+1 would read it at once.
    #[test]
    fn fold_fleet_reads_a_lost_last_delivery_again() {
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
        let windows = vec![Duration::from_secs(30 * 86_400)];
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &options, 10).await;
                proxy.pass.store(9, std::sync::atomic::Ordering::SeqCst);
                proxy.armed.store(true, std::sync::atomic::Ordering::SeqCst);
                let started = Instant::now();
                let folded = enforcelog::ship::fold_fleet(&through, windows).await;
                assert!(!proxy.armed.load(std::sync::atomic::Ordering::SeqCst));
                let took = started.elapsed();
                assert!(
                    folded.as_ref().is_ok_and(|v| v.entries == 10)
                        && took < Duration::from_secs(10),
                    "{:?} after {took:?}",
                    folded.map(|v| v.entries)
                );
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// A fleet reader whose NATS user may use consumers but not the
    /// stream's message API (`$JS.API.STREAM.MSG.GET`: a least-privilege
    /// account listing what a pull consumer needs, which was enough before
    /// review 27's fix; no document names the new subject): the first hole
    /// in the stream (a deleted message) makes `next_held` time out, and
    /// `catch_up` fails for good at that hole, where it used to restart
    /// its consumer past it.
    #[test]
    #[ignore = "confirmed: fleet.rs:303 next_held needs $JS.API.STREAM.MSG.GET, undocumented: a consumer-only user fails at every hole"]
    fn a_reader_allowed_consumers_only_reads_past_a_hole() {
        let ok = Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let config = dir.path().join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: \"127.0.0.1:{port}\"\nno_auth_user: reader\njetstream {{ store_dir: \"{}\" }}\n\
                 accounts {{ A {{ jetstream: enabled, users: [\n\
                 {{ user: admin, password: admin }},\n\
                 {{ user: reader, password: reader, permissions: {{ publish: {{ allow: [\">\"], \
                 deny: [\"$JS.API.STREAM.MSG.GET.>\", \"$JS.API.DIRECT.GET.>\"] }}, subscribe: \">\" }} }}\n\
                 ] }} }}\n",
                dir.path().join("js").display()
            ),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Server {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        // Shipper and reader connect without credentials: `no_auth_user`
        // makes them `reader`, which may do all but get stream messages.
        let reader_options = options(&server);
        let admin = reader_options.clone();
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                shipped(&store, &admin, 10).await;
                let client = async_nats::ConnectOptions::with_user_and_password(
                    "admin".into(),
                    "admin".into(),
                )
                .connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js.get_stream(&admin.stream).await.unwrap();
                assert!(stream.delete_message(5).await.unwrap());
                let mut reader =
                    FleetConsumer::open(&reader_options, "fleet-least-privilege", &state, windows)
                        .await
                        .unwrap();
                let caught = tokio::time::timeout(Duration::from_secs(60), reader.catch_up()).await;
                assert!(
                    matches!(caught, Ok(Ok(_))),
                    "{caught:?} (view at {})",
                    reader.view().stream_sequence
                );
                assert_eq!(reader.view().entries, 9);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }

    /// Refutes: `next_held` misreading a stream created with `allow_direct`
    /// (and a prefix of two tokens: filter `acme.fleet.>` as
    /// `next_by_subj`): holes in the middle and a deleted last message are
    /// read past, every message left folded once.
    #[test]
    fn an_allow_direct_stream_with_holes_and_a_deleted_tail_is_caught_up_with() {
        let Some(server) = Server::start() else {
            return;
        };
        let tmp = tempfile::tempdir().unwrap();
        let store =
            Store::open(tmp.path().join("host"), enforcelog::StoreOptions::default()).unwrap();
        let options = ShipOptions {
            subject_prefix: "acme.fleet".into(),
            ..options(&server)
        };
        let windows = vec![Duration::from_secs(30 * 86_400)];
        let state = tmp.path().join("fleet-state");
        runtime().block_on(async {
            tokio::time::timeout(Duration::from_secs(120), async {
                let client = async_nats::connect(server.url()).await.unwrap();
                let js = async_nats::jetstream::new(client);
                let stream = js
                    .create_stream(async_nats::jetstream::stream::Config {
                        name: options.stream.clone(),
                        subjects: vec!["acme.fleet.>".into()],
                        allow_direct: true,
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                shipped(&store, &options, 12).await;
                for seq in [3, 4, 8, 12] {
                    assert!(stream.delete_message(seq).await.unwrap());
                }
                let mut reader = FleetConsumer::open(&options, "fleet-direct", &state, windows)
                    .await
                    .unwrap();
                reader.catch_up().await.unwrap();
                assert_eq!(reader.view().entries, 8);
                assert_eq!(reader.view().duplicates, 0);
                assert_eq!(counted(&reader), 8);
            })
            .await
            .expect("bounded");
        });
        store.close().unwrap();
    }
}
