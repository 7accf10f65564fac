//! Shipping to real NATS JetStream servers (feature `jetstream`).
//!
//! The servers are real `nats-server` processes on loopback ports, in
//! temporary directories: `.ci/run` installs the binary. Without it on the
//! PATH these tests print why and pass without running, so a developer
//! without NATS can still run the suite.
#![cfg(feature = "jetstream")]

#[path = "../../tests/common/mod.rs"]
mod common;

include!("support/jetstream_helpers.rs");

#[test]
fn three_stores_ship_concurrently_and_fleet_stats_are_the_exact_union() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0x5C41_E0F7);
    let per_store: [usize; 3] = [33_334, 33_333, 33_333];
    let all: Vec<Vec<Event>> = per_store
        .iter()
        .enumerate()
        .map(|(i, &n)| events(seed + i as u64, n))
        .collect();
    let stores: Vec<Store> = (0..3)
        .map(|i| open_store(&tmp.path().join(format!("host-{i}"))))
        .collect();
    let options = ship_options(vec![server.url()], 1);
    let rt = runtime();
    bounded(&rt, async {
        let running = Running::start(&stores, &options);
        let shippers = &running.shippers;
        let started = Instant::now();
        // Recording goes on while the shippers run.
        std::thread::scope(|scope| {
            for (store, events) in stores.iter().zip(&all) {
                scope.spawn(move || record(store, events));
            }
        });
        caught_up(shippers, Duration::from_secs(120)).await;
        let elapsed = started.elapsed();
        running.stop().await;
        let total = per_store.iter().sum::<usize>() as u64;
        eprintln!(
            "shipped {total} events from 3 stores in {:.2} s: {:.0} events/s",
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64()
        );
        let (found, view) = fleet(&options).await;
        assert_eq!(view.entries, total, "seed {seed}");
        assert_eq!(view.stores(), 3);
        assert_eq!(found, brute_force(all.iter().flatten()), "seed {seed}");
        // Every batch's last message carried the tree head of its store's
        // records so far, and every one matched what the fleet received;
        // the last is the store's own head.
        assert!(view.heads_checked >= 3, "{}", view.heads_checked);
        assert_eq!((view.heads_mismatched, view.heads_unchecked), (0, 0));
        for store in &stores {
            let own = store.head().unwrap();
            let id = store.store_id().unwrap().to_string();
            let shipped = view.head_of(&id).expect("a head per store");
            assert_eq!(
                (shipped.size, shipped.root, shipped.log),
                (own.size, own.root, own.log)
            );
        }
    });
}

#[test]
fn a_shipper_stopped_mid_stream_resumes_without_loss_or_double_count() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0x000F_F5E7);
    let events = events(seed, 20_000);
    let store = open_store(&tmp.path().join("host"));
    record(&store, &events);
    let options = ShipOptions {
        batch: 64,
        ..ship_options(vec![server.url()], 1)
    };
    let rt = runtime();
    bounded(&rt, async {
        // First run: stopped (dropped, acknowledgements in flight) once a
        // quarter is shipped.
        let first = Shipper::new(&store, options.clone()).unwrap();
        let watcher = first.clone();
        first
            .run(async move {
                while watcher.progress().shipped < 5_000 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap();
        let stopped_at = first.progress().shipped;
        assert!(
            stopped_at < events.len() as u64,
            "it shipped everything before the stop"
        );

        // The restart resumes from the saved offset; what was in flight is
        // sent again and dropped by JetStream as duplicates.
        let second = Shipper::new(&store, options.clone()).unwrap();
        assert_eq!(
            second.progress().shipped,
            stopped_at,
            "resumes from the saved offset"
        );
        ship_until_caught_up(&second).await;

        // A shipper that lost its offset file sends everything again.
        std::fs::remove_dir_all(store.dir().join("ship")).unwrap();
        let third = Shipper::new(&store, options.clone()).unwrap();
        ship_until_caught_up(&third).await;
        let p = third.progress();
        assert_eq!(p.published, events.len() as u64);
        assert_eq!(
            p.duplicates,
            events.len() as u64,
            "JetStream dropped every re-send"
        );

        let (found, view) = fleet(&options).await;
        assert_eq!(view.entries, events.len() as u64, "seed {seed}");
        assert_eq!(found, brute_force(events.iter()), "seed {seed}");
    });
}

#[test]
fn nats_down_while_recording_only_grows_the_lag_which_is_shipped_later() {
    if !nats_available() {
        return;
    }
    let mut server = Server::start(&[]);
    server.stop();
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0xD03E);
    let events = events(seed, 5_000);
    let store = open_store(&tmp.path().join("host"));
    let options = ship_options(vec![server.url()], 1);
    let rt = runtime();
    let shipper = Shipper::new(&store, options.clone()).unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let task = {
        let s = shipper.clone();
        rt.spawn(async move {
            s.run(async move {
                let _ = stop_rx.wait_for(|&v| v).await;
            })
            .await
        })
    };
    // Every record is acknowledged locally while NATS is down.
    let mut slowest = Duration::ZERO;
    for e in &events {
        let started = Instant::now();
        store
            .record_blocking(e.clone())
            .expect("record while NATS is down");
        slowest = slowest.max(started.elapsed());
    }
    let p = shipper.progress();
    assert_eq!(p.shipped, 0);
    assert_eq!(p.lag(), events.len() as u64);
    assert!(!p.connected);
    eprintln!("slowest local record while NATS was down: {slowest:?}");

    server.resume();
    bounded(&rt, async {
        caught_up(std::slice::from_ref(&shipper), Duration::from_secs(60)).await;
        let _ = stop_tx.send(true);
        task.await.unwrap().unwrap();
        let (found, view) = fleet(&options).await;
        assert_eq!(view.entries, events.len() as u64, "seed {seed}");
        assert_eq!(found, brute_force(events.iter()), "seed {seed}");
    });
}

/// Three servers in one JetStream cluster, their cluster and route ports.
fn cluster() -> Vec<Server> {
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    cluster_ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Server::start(&[
                "-n".into(),
                format!("node-{i}"),
                "--cluster_name".into(),
                "enforcelog-test".into(),
                "-cluster".into(),
                format!("nats://127.0.0.1:{port}"),
                "-routes".into(),
                routes.clone(),
            ])
        })
        .collect()
}

#[test]
fn a_replicated_stream_keeps_taking_events_while_a_node_restarts() {
    if !nats_available() {
        return;
    }
    let mut nodes = cluster();
    let servers: Vec<String> = nodes.iter().map(Server::url).collect();
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0x3_0DE5);
    let all: Vec<Vec<Event>> = (0..2).map(|i| events(seed + i, 15_000)).collect();
    let stores: Vec<Store> = (0..2)
        .map(|i| open_store(&tmp.path().join(format!("host-{i}"))))
        .collect();
    let options = ShipOptions {
        batch: 128,
        ..ship_options(servers, 3)
    };
    let rt = runtime();
    bounded(&rt, async {
        let running = Running::start(&stores, &options);
        let shippers = &running.shippers;
        let started = Instant::now();
        // First halves, then one node goes down, second halves, node back.
        for (store, events) in stores.iter().zip(&all) {
            record(store, &events[..events.len() / 2]);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while shippers.iter().map(|s| s.progress().shipped).sum::<u64>() < 5_000 {
            assert!(Instant::now() < deadline, "nothing shipped to the cluster");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let first_part = started.elapsed();
        nodes[1].stop();
        let stopped = Instant::now();
        for (store, events) in stores.iter().zip(&all) {
            record(store, &events[events.len() / 2..]);
        }
        // The stream keeps its quorum (2 of 3): shipping goes on, the
        // shippers on the lost node reconnecting to the others.
        caught_up(shippers, Duration::from_secs(120)).await;
        let while_down = stopped.elapsed();
        for s in shippers {
            eprintln!("{:?}", s.progress());
        }
        nodes[1].resume();
        let elapsed = started.elapsed();
        // Steady state, all three nodes up: 2 x 10,000 more events.
        let more: Vec<Vec<Event>> = (0..2).map(|i| events(seed + 10 + i, 10_000)).collect();
        let steady = Instant::now();
        for (store, events) in stores.iter().zip(&more) {
            record(store, events);
        }
        caught_up(shippers, Duration::from_secs(120)).await;
        let steady = steady.elapsed();
        running.stop().await;
        eprintln!(
            "3-node R3 cluster: 30000 events from 2 stores in {:.2} s; the first 5000 after \
             {:.2} s (cluster forming), the second half with node-1 down in {:.2} s",
            elapsed.as_secs_f64(),
            first_part.as_secs_f64(),
            while_down.as_secs_f64(),
        );
        eprintln!(
            "3-node R3 cluster, all nodes up: 20000 events recorded and shipped in {:.2} s \
             ({:.0} events/s)",
            steady.as_secs_f64(),
            20_000.0 / steady.as_secs_f64()
        );
        let (found, view) = fleet(&options).await;
        assert_eq!(view.entries, 50_000, "seed {seed}");
        let expected = brute_force(all.iter().chain(&more).flatten());
        assert_eq!(found, expected, "seed {seed}");
    });
}

/// `enforcelog ship` then `enforcelog fleet-stats`: with one store shipped,
/// the fleet's statistics are that store's `stats`, in the same format.
#[test]
fn cli_ship_then_fleet_stats_match_the_store_stats() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("host");
    let seed = common::seed_or(0xC11);
    let store = open_store(&dir);
    record(&store, &events(seed, 3_000));
    store.close().unwrap();
    drop(store);
    let exe = env!("CARGO_BIN_EXE_enforcelog");
    let run = |args: &[&str]| {
        let out = Command::new(exe)
            .args(args)
            .output()
            .expect("run enforcelog");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let dir_arg = dir.display().to_string();
    let url = server.url();
    for _ in 0..2 {
        let shipped = run(&[
            "--data-dir",
            &dir_arg,
            "ship",
            "--nats",
            &url,
            "--until-caught-up",
        ]);
        let shipped: serde_json::Value = serde_json::from_str(&shipped).expect("json");
        assert_eq!(shipped, serde_json::json!({"lag": 0, "shipped": 3000}));
    }
    let as_of = "2026-11-18T00:00:00Z";
    let local: serde_json::Value = serde_json::from_str(&run(&[
        "--data-dir",
        &dir_arg,
        "stats",
        "--format",
        "json",
        "--as-of",
        as_of,
    ]))
    .unwrap();
    let fleet: serde_json::Value = serde_json::from_str(&run(&[
        "fleet-stats",
        "--nats",
        &url,
        "--format",
        "json",
        "--as-of",
        as_of,
    ]))
    .unwrap();
    assert_eq!(fleet["rules"], local["rules"], "seed {seed}");
    assert_eq!(fleet["stores"], 1);
    assert_eq!(fleet["duplicates_dropped"], 0);
    // 3,000 events in batches of at most 512: six heads, all matching.
    assert_eq!(fleet["heads_checked"], 6, "{fleet}");
    assert_eq!(fleet["heads_mismatched"], 0);
    assert_eq!(fleet["heads_unchecked"], 0);
    // With --state: a durable consumer and a checkpoint; twice, the same.
    let state = tmp.path().join("fleet-state").display().to_string();
    for _ in 0..2 {
        let durable: serde_json::Value = serde_json::from_str(&run(&[
            "fleet-stats",
            "--nats",
            &url,
            "--format",
            "json",
            "--as-of",
            as_of,
            "--state",
            &state,
        ]))
        .unwrap();
        assert_eq!(durable["rules"], local["rules"], "seed {seed}");
    }
}

/// Needs no server: bad options are refused by name, and a shipped-offset
/// file from another store (copied along with a directory) is refused, not
/// trusted.
#[test]
fn bad_options_and_a_foreign_offset_file_are_refused() {
    for (options, name) in [
        (
            ShipOptions {
                servers: vec![],
                ..ShipOptions::default()
            },
            "servers",
        ),
        (
            ShipOptions {
                stream: "a.b".into(),
                ..ShipOptions::default()
            },
            "stream",
        ),
        (
            ShipOptions {
                subject_prefix: "a..b".into(),
                ..ShipOptions::default()
            },
            "subject_prefix",
        ),
        (
            ShipOptions {
                replicas: 0,
                ..ShipOptions::default()
            },
            "replicas",
        ),
        (
            ShipOptions {
                batch: 0,
                ..ShipOptions::default()
            },
            "batch",
        ),
    ] {
        match options.validate() {
            Err(enforcelog::Error::InvalidOptions { name: got, .. }) => assert_eq!(got, name),
            other => panic!("{name}: {other:?}"),
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = open_store(&tmp.path().join("a"));
    let b = open_store(&tmp.path().join("b"));
    std::fs::create_dir_all(a.dir().join("ship")).unwrap();
    let foreign = format!("enforcelog-ship 1 {} 7\n", b.store_id().unwrap());
    std::fs::write(a.dir().join("ship/ENFORCELOG.offset"), foreign).unwrap();
    match Shipper::new(&a, ShipOptions::default()) {
        Err(enforcelog::Error::Corruption { reason, .. }) => {
            assert!(reason.contains("belongs to store"), "{reason}")
        }
        other => panic!("a foreign offset file was accepted: {other:?}"),
    }
    std::fs::write(a.dir().join("ship/ENFORCELOG.offset"), "garbage").unwrap();
    assert!(matches!(
        Shipper::new(&a, ShipOptions::default()),
        Err(enforcelog::Error::Corruption { .. })
    ));
}

/// The durable fleet reader: folds, checkpoints, and after a restart reads
/// only what arrived since; a lost checkpoint makes it fold from the start
/// again (the durable consumer is reset), never miss or double count.
#[test]
fn the_durable_fleet_consumer_resumes_from_its_checkpoint() {
    use enforcelog::ship::FleetConsumer;
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0xF1EE7);
    let first = events(seed, 6_000);
    let second = events(seed + 1, 4_000);
    let store = open_store(&tmp.path().join("host"));
    let state = tmp.path().join("fleet-state");
    let options = ship_options(vec![server.url()], 1);
    let rt = runtime();
    bounded(&rt, async {
        let ship_all = |store: &Store| {
            let shipper = Shipper::new(store, options.clone()).unwrap();
            async move { ship_until_caught_up(&shipper).await }
        };
        let exact = |view: &enforcelog::ship::FleetView, events: &[&Event]| {
            let found: Expected = view
                .stats_all(T0_US)
                .into_iter()
                .map(|s| {
                    (
                        (s.tenant_id, s.rule_id),
                        (s.trigger_count, s.last_triggered_at_us, s.total_count),
                    )
                })
                .collect();
            assert_eq!(found, brute_force(events.iter().copied()), "seed {seed}");
        };
        record(&store, &first);
        ship_all(&store).await;
        let mut reader = FleetConsumer::open(&options, "fleet-test", &state, vec![DAYS_30])
            .await
            .unwrap();
        assert_eq!(reader.catch_up().await.unwrap(), 6_000);
        exact(reader.view(), &first.iter().collect::<Vec<_>>());
        drop(reader);

        record(&store, &second);
        ship_all(&store).await;
        let mut reader = FleetConsumer::open(&options, "fleet-test", &state, vec![DAYS_30])
            .await
            .unwrap();
        assert_eq!(reader.view().entries, 6_000, "restored from the checkpoint");
        assert_eq!(
            reader.catch_up().await.unwrap(),
            4_000,
            "read only the new messages"
        );
        let both: Vec<&Event> = first.iter().chain(&second).collect();
        exact(reader.view(), &both);
        // The checkpoint kept the frontier: the heads shipped after it are
        // checked, and the last is the store's own.
        let view = reader.view();
        assert!(view.heads_checked > 0);
        assert_eq!((view.heads_mismatched, view.heads_unchecked), (0, 0));
        let own = store.head().unwrap();
        let shipped = view
            .head_of(&store.store_id().unwrap().to_string())
            .unwrap();
        assert_eq!((shipped.size, shipped.root), (own.size, own.root));
        drop(reader);

        std::fs::remove_dir_all(&state).unwrap();
        let mut reader = FleetConsumer::open(&options, "fleet-test", &state, vec![DAYS_30])
            .await
            .unwrap();
        assert_eq!(
            reader.catch_up().await.unwrap(),
            10_000,
            "folded from the start again"
        );
        assert_eq!(reader.view().entries, 10_000);
        exact(reader.view(), &both);
    });
}

/// The durable fleet consumer holds a full window of messages it already
/// folded but whose acknowledgement the server never got (the process was
/// dropped before the client flushed it, say). The server redelivers them
/// and delivers nothing new until they are acknowledged: catching up must
/// acknowledge them, not spin on their redelivery forever.
#[test]
fn a_fleet_consumer_with_a_window_of_unacknowledged_folded_messages_catches_up() {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use enforcelog::ship::FleetConsumer;
    use futures_util::StreamExt;
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let seed = common::seed_or(0xAC4_1057);
    let first = events(seed, 6_000);
    let second = events(seed + 1, 4_000);
    let store = open_store(&tmp.path().join("host"));
    let state = tmp.path().join("fleet-state");
    let options = ship_options(vec![server.url()], 1);
    let name = "fleet-lost-acks";
    let rt = runtime();
    bounded(&rt, async {
        let ship_all = |store: &Store| {
            let shipper = Shipper::new(store, options.clone()).unwrap();
            async move { ship_until_caught_up(&shipper).await }
        };
        record(&store, &first);
        ship_all(&store).await;
        let mut reader = FleetConsumer::open(&options, name, &state, vec![DAYS_30])
            .await
            .unwrap();
        assert_eq!(reader.catch_up().await.unwrap(), 6_000);
        drop(reader);

        // The consumer as a lost acknowledgement leaves it: the checkpoint
        // is at 6,000, the consumer has 1,000 folded messages delivered and
        // outstanding, which is its whole `max_ack_pending`.
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(&options.stream).await.unwrap();
        stream.delete_consumer(name).await.unwrap();
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.to_string()),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
                ack_policy: AckPolicy::All,
                ack_wait: Duration::from_secs(1),
                max_ack_pending: 1_000,
                filter_subject: format!("{}.>", options.subject_prefix),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut held = consumer
            .fetch()
            .max_messages(1_000)
            .messages()
            .await
            .unwrap();
        let mut outstanding = 0;
        while let Some(message) = held.next().await {
            message.unwrap();
            outstanding += 1;
        }
        assert_eq!(outstanding, 1_000, "a full window left unacknowledged");

        record(&store, &second);
        ship_all(&store).await;
        let mut reader = FleetConsumer::open(&options, name, &state, vec![DAYS_30])
            .await
            .unwrap();
        assert_eq!(reader.view().entries, 6_000, "restored from the checkpoint");
        let folded = tokio::time::timeout(Duration::from_secs(60), reader.catch_up())
            .await
            .expect("catch_up acknowledges the redelivered window instead of spinning")
            .unwrap();
        assert_eq!(folded, 4_000, "only the new messages are folded");
        let both: Vec<&Event> = first.iter().chain(&second).collect();
        let found: Expected = reader
            .view()
            .stats_all(T0_US)
            .into_iter()
            .map(|s| {
                (
                    (s.tenant_id, s.rule_id),
                    (s.trigger_count, s.last_triggered_at_us, s.total_count),
                )
            })
            .collect();
        assert_eq!(found, brute_force(both.iter().copied()), "seed {seed}");
    });
}

/// `enforcelog ship` killed with SIGKILL mid-stream, then run again: the
/// fleet holds every event exactly once.
#[test]
fn cli_ship_killed_mid_stream_then_rerun_loses_and_doubles_nothing() {
    if !nats_available() {
        return;
    }
    let server = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("host");
    let seed = common::seed_or(0x0516_1C11);
    let events = events(seed, 40_000);
    let store = open_store(&dir);
    record(&store, &events);
    store.close().unwrap();
    drop(store);
    let exe = env!("CARGO_BIN_EXE_enforcelog");
    let dir_arg = dir.display().to_string();
    let url = server.url();
    let offset_file = dir.join("ship/ENFORCELOG.offset");
    let mut child = Command::new(exe)
        .args([
            "--data-dir",
            &dir_arg,
            "ship",
            "--nats",
            &url,
            "--batch",
            "64",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ship");
    let deadline = Instant::now() + Duration::from_secs(60);
    let shipped = |path: &Path| -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| t.trim().rsplit(' ').next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    // Killed at a seeded point of the run.
    let target = common::Rng::new(seed).range(1_000..30_000);
    while shipped(&offset_file) < target {
        assert!(
            Instant::now() < deadline,
            "ship did not reach offset {target}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let at_kill = shipped(&offset_file);
    assert!(at_kill < 40_000, "shipped everything before the kill");
    let out = Command::new(exe)
        .args([
            "--data-dir",
            &dir_arg,
            "ship",
            "--nats",
            &url,
            "--until-caught-up",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rt = runtime();
    let (found, view) = bounded(&rt, fleet(&ship_options(vec![url], 1)));
    eprintln!(
        "killed at offset {at_kill} of 40000; fleet folded {} (+{} duplicates)",
        view.entries, view.duplicates
    );
    assert_eq!(view.entries, 40_000, "seed {seed}");
    assert_eq!(found, brute_force(events.iter()), "seed {seed}");
}
