//! The union of every shard for replay and subscriptions: writer processes
//! record into their own shards while a subscriber in this process reads
//! the union; every acknowledged event comes once, a user projection over
//! it equals `stats`, and a saved position resumes exactly after what was
//! delivered.
//!
//! Writer processes are this test binary re-run on one test
//! (`child_writer`), with its orders in the environment, as in
//! `tests/shards.rs`. Waits on the subscriber carry a generous bound: a
//! liveness check (a lost wake-up would otherwise hang), not a timing
//! assertion.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use enforcelog::{
    Action, Entry, Error, Event, Positions, ShardEntry, Store, StoreOptions, UnionDelivery,
    UnionSubscription,
};

mod common;
use common::events::{host_details, summary, writer_event, Summary, DAY_US, T0_US};

const CHILD_ENV: &str = "ENFORCELOG_UNION_TEST_CHILD";
const CHILD_TEST: &str = "child_writer";
/// How long a subscriber may take to see what it must see before the test
/// calls it lost (liveness, not timing).
const LIVENESS: Duration = Duration::from_secs(120);

fn event(who: u64, i: u64) -> Event {
    writer_event(who, i, true, host_details(i, 41, 8))
}

/// Which writer sent a run id, and its index.
fn writer_of(run: &str) -> (u64, u64) {
    let mut parts = run.strip_prefix("run-").expect("run id").split('-');
    let who = parts.next().unwrap().parse().unwrap();
    let i = parts.next().unwrap().parse().unwrap();
    (who, i)
}

/// Only explicit refreshes: the test decides what a store sees of others.
fn manual() -> StoreOptions {
    StoreOptions {
        shard_refresh_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    }
}

/// The refresher looks often: for subscribers that must see other
/// processes' writes without a call.
fn quick() -> StoreOptions {
    StoreOptions {
        shard_refresh_interval: Duration::from_millis(20),
        ..StoreOptions::default()
    }
}

/// The user projection of the tests: per (tenant, rule), the summary
/// `stats` gives (trigger count in 30 days, total, last time, by action),
/// folded from union entries only.
#[derive(Default)]
struct UserProjection {
    events: BTreeMap<(String, String), Vec<(Action, i64)>>,
}

impl UserProjection {
    fn apply(&mut self, entry: &Entry) {
        if let Entry::Event(e) = entry {
            self.events
                .entry((e.tenant_id.clone(), e.rule_id.clone()))
                .or_default()
                .push((e.action, e.enforced_at_us));
        }
    }

    fn summary(&self, as_of_us: i64) -> Vec<Summary> {
        let mut out = Vec::new();
        for ((t, r), events) in &self.events {
            let upto: Vec<_> = events.iter().filter(|(_, at)| *at <= as_of_us).collect();
            if upto.is_empty() {
                continue;
            }
            let mut by_action = [0u64; 4];
            let mut in_window = 0;
            for (a, at) in &upto {
                if *at > as_of_us - 30 * DAY_US {
                    in_window += 1;
                    by_action[Action::ALL.iter().position(|x| x == a).unwrap()] += 1;
                }
            }
            let last = upto.iter().map(|(_, at)| *at).max();
            out.push((
                t.clone(),
                r.clone(),
                in_window,
                upto.len() as u64,
                last,
                by_action,
            ));
        }
        out
    }
}

/// The user projection over `entries` equals `store`'s statistics, now
/// and at as-of times whose windows reach into folded history.
fn assert_projection_equals_stats(store: &Store, entries: &[ShardEntry]) {
    let mut projection = UserProjection::default();
    for e in entries {
        projection.apply(&e.entry);
    }
    for as_of in [T0_US, T0_US - 5 * DAY_US, T0_US - 33 * DAY_US] {
        let stats = store.stats_all(Some(as_of)).expect("stats_all");
        assert_eq!(
            projection.summary(as_of),
            summary(&stats),
            "user projection vs stats as of {as_of}"
        );
    }
}

/// Each `(shard, offset)` at most once, and each shard's offsets in the
/// order delivered a gap-free run from `from` (its first offset).
fn assert_once_in_order(entries: &[ShardEntry], from: &Positions) {
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    for e in entries {
        let at = next.entry(e.shard).or_insert(from.next_offset(e.shard));
        assert_eq!(
            e.entry.offset(),
            *at,
            "shard {}: offsets in order, none skipped or repeated",
            e.shard
        );
        *at += 1;
    }
}

fn run_id(e: &ShardEntry) -> Option<String> {
    match &e.entry {
        Entry::Event(ev) => ev.run_id.clone(),
        _ => None,
    }
}

/// Runs `subscription` in a thread until it has delivered `want` entries
/// (lag notices are counted apart); returns them and the subscription.
fn collect(
    mut subscription: UnionSubscription,
    want: usize,
) -> mpsc::Receiver<(Vec<ShardEntry>, UnionSubscription)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        while got.len() < want {
            match subscription.next_blocking().expect("next") {
                UnionDelivery::Entry(e) => got.push(e),
                UnionDelivery::Lagging { .. } => {}
            }
        }
        let _ = tx.send((got, subscription));
    });
    rx
}

// ---------------------------------------------------------------------
// In one process.

/// The own shard's commits are delivered at once (read-your-writes); the
/// other shards' after a refresh, never before, and then each once.
#[test]
fn union_subscription_sees_own_commits_at_once_and_other_shards_after_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), manual()).unwrap();
    let b = Store::open(dir.path(), manual()).unwrap();
    assert_eq!((a.shard(), b.shard()), (0, 1));
    let mut sub = a.subscribe_union(Positions::new()).unwrap();
    assert_eq!(sub.try_next().unwrap(), None);
    a.record_blocking(event(0, 0)).unwrap();
    b.record_blocking(event(1, 0)).unwrap();
    b.record_blocking(event(1, 1)).unwrap();
    let Some(UnionDelivery::Entry(own)) = sub.try_next().unwrap() else {
        panic!("the own commit is delivered at once");
    };
    assert_eq!((own.shard, own.store_id), (0, a.store_id()));
    assert_eq!(
        sub.try_next().unwrap(),
        None,
        "b's events wait for a refresh"
    );
    a.refresh().unwrap();
    let mut rest = Vec::new();
    while let Some(d) = sub.try_next().unwrap() {
        let UnionDelivery::Entry(e) = d else {
            panic!("not lagging")
        };
        rest.push(e);
    }
    assert_eq!(
        rest.iter()
            .map(|e| (e.shard, e.entry.offset(), e.store_id))
            .collect::<Vec<_>>(),
        [(1, 0, b.store_id()), (1, 1, b.store_id())]
    );
    assert_eq!(sub.position().next_offset(0), 1);
    assert_eq!(sub.position().next_offset(1), 2);
    assert_eq!(sub.lag(), 0);
}

/// A blocking `next` waits on the own log and on the other shards'
/// refreshes: with the background refresh effectively off, only the
/// explicit refresh's publication can wake it for another shard's event.
/// (The subscriber shows it is in its loop by delivering an own event
/// first; it then blocks, nearly always before the refresh.)
#[test]
fn blocked_union_next_wakes_on_a_refresh_that_finds_another_shards_event() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), manual()).unwrap();
    let b = Store::open(dir.path(), manual()).unwrap();
    let mut sub = a.subscribe_union(a.union_end().unwrap()).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for _ in 0..2 {
            if let UnionDelivery::Entry(e) = sub.next_blocking().expect("next") {
                let _ = tx.send(run_id(&e).unwrap());
            }
        }
    });
    a.record_blocking(event(0, 8)).unwrap();
    assert_eq!(rx.recv_timeout(LIVENESS).expect("own event"), "run-0-8");
    b.record_blocking(event(1, 7)).unwrap();
    a.refresh().unwrap();
    assert_eq!(
        rx.recv_timeout(LIVENESS)
            .expect("the refresh woke the subscriber"),
        "run-1-7"
    );
}

/// The async `next` wakes the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_union_next_wakes_on_own_commits_and_peer_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), manual()).unwrap();
    let b = Store::open(dir.path(), manual()).unwrap();
    let mut sub = a.subscribe_union(a.union_end().unwrap()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for _ in 0..2 {
            if let UnionDelivery::Entry(e) = sub.next().await.expect("next") {
                let _ = tx.send((e.shard, e.entry.offset()));
            }
        }
    });
    a.record(event(0, 2)).await.unwrap();
    let first = tokio::time::timeout(LIVENESS, rx.recv())
        .await
        .expect("own event");
    assert_eq!(first, Some((0, 0)));
    b.record(event(1, 1)).await.unwrap();
    a.refresh().unwrap();
    let second = tokio::time::timeout(LIVENESS, rx.recv())
        .await
        .expect("the refresh woke the subscriber");
    assert_eq!(second, Some((1, 0)));
}

/// A position is resumed only where it was taken: another directory's
/// (other store ids), one beyond a shard's end, or one naming a shard the
/// store does not see, is refused by name; the store is unchanged.
#[test]
fn foreign_or_impossible_union_positions_are_refused_by_shard() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), manual()).unwrap();
    let stranger = Store::open(other.path(), manual()).unwrap();
    for i in 0..3 {
        a.record_blocking(event(0, i)).unwrap();
        stranger.record_blocking(event(9, i)).unwrap();
    }
    let foreign: Positions =
        serde_json::from_str(&serde_json::to_string(&stranger.union_end().unwrap()).unwrap())
            .unwrap();
    let mut beyond = Positions::new();
    beyond.set(0, 4);
    let mut unknown = Positions::new();
    unknown.set(5, 0);
    for (position, needle) in [
        (&foreign, "taken in store"),
        (&beyond, "beyond the shard's end"),
        (&unknown, "no such shard"),
    ] {
        for result in [
            a.replay_union(position).map(|_| ()),
            a.subscribe_union(position.clone()).map(|_| ()),
        ] {
            match result {
                Err(e @ Error::BadPosition { .. }) => {
                    assert!(e.to_string().contains(needle), "{e}")
                }
                other => panic!("expected BadPosition ({needle}), got {other:?}"),
            }
        }
    }
    assert_eq!(a.next_offset(), 3);
    assert_eq!(a.replay_union(&Positions::new()).unwrap().count(), 3);
}

/// A shard the store cannot read (here: a foreign VERSION) fails the
/// union readers, as it fails `stats`, rather than leaving its events out
/// of a replay that would then look complete.
#[test]
fn unreadable_shard_fails_the_union_readers_instead_of_being_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = Store::open(dir.path(), manual()).unwrap();
    a.record_blocking(event(0, 0)).unwrap();
    let shard = dir.path().join("shards/1");
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join("VERSION"), b"not a version\n\0\0\0").unwrap();
    assert!(a.refresh().is_err(), "the shard cannot be read");
    let stalled = |r: Result<(), Error>| match r {
        Err(Error::ProjectionStalled { reason }) => {
            assert!(reason.contains("other shards"), "{reason}")
        }
        other => panic!("expected ProjectionStalled, got {other:?}"),
    };
    stalled(a.replay_union(&Positions::new()).map(|_| ()));
    stalled(a.subscribe_union(Positions::new()).map(|_| ()));
    stalled(a.union_end().map(|_| ()));
    assert!(a.stats_all(None).is_err(), "stats agrees");
}

/// Replay is shard by shard, ascending, each in offset order, bounded by
/// what was visible when it began; its position after a partial read
/// resumes exactly the rest, through replay and through a subscription.
#[test]
fn union_replay_goes_shard_by_shard_and_resumes_exactly_after_a_saved_position() {
    let dir = tempfile::tempdir().unwrap();
    let stores: Vec<Store> = (0..3)
        .map(|_| Store::open(dir.path(), manual()).unwrap())
        .collect();
    for (who, count) in [(0u64, 5u64), (1, 9), (2, 3)] {
        for i in 0..count {
            stores[who as usize].record_blocking(event(who, i)).unwrap();
        }
    }
    let reader = Store::open_read_only(dir.path()).unwrap();
    let all: Vec<ShardEntry> = reader
        .replay_union(&Positions::new())
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let order: Vec<(u32, u64)> = all.iter().map(|e| (e.shard, e.entry.offset())).collect();
    let mut want = Vec::new();
    for (shard, count) in [(0u32, 5u64), (1, 9), (2, 3)] {
        want.extend((0..count).map(|o| (shard, o)));
    }
    assert_eq!(order, want);
    assert_projection_equals_stats(&reader, &all);
    // Longest first: store 1 has not looked at the others since it opened
    // (before anything was written), so the first position is ahead of its
    // view; it is accepted after the refresh the check then makes.
    for cut in [17, 14, 11, 5, 1, 0] {
        let mut replay = reader.replay_union(&Positions::new()).unwrap();
        for _ in 0..cut {
            replay.next().unwrap().unwrap();
        }
        let saved = serde_json::to_string(replay.positions()).unwrap();
        let resumed: Positions = serde_json::from_str(&saved).unwrap();
        let rest: Vec<(u32, u64)> = reader
            .replay_union(&resumed)
            .unwrap()
            .map(|e| e.map(|e| (e.shard, e.entry.offset())).unwrap())
            .collect();
        assert_eq!(rest, want[cut..], "replay resumed after {cut}");
        let mut sub = stores[1].subscribe_union(resumed.clone()).unwrap();
        let mut live = BTreeSet::new();
        while let Some(d) = sub.try_next().unwrap() {
            if let UnionDelivery::Entry(e) = d {
                assert!(live.insert((e.shard, e.entry.offset())), "delivered twice");
            }
        }
        let rest: BTreeSet<(u32, u64)> = want[cut..].iter().copied().collect();
        assert_eq!(live, rest, "subscription resumed after {cut}");
    }
}

/// A subscriber far behind is told once, and loses nothing.
#[test]
fn lagging_union_subscriber_is_told_once_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        subscriber_lag_warning: 10,
        ..manual()
    };
    let a = Store::open(dir.path(), options.clone()).unwrap();
    let b = Store::open(dir.path(), options).unwrap();
    for i in 0..8 {
        a.record_blocking(event(0, i)).unwrap();
        b.record_blocking(event(1, i)).unwrap();
    }
    a.refresh().unwrap();
    let mut sub = a.subscribe_union(Positions::new()).unwrap();
    let mut lagging = Vec::new();
    let mut seen = BTreeSet::new();
    while let Some(d) = sub.try_next().unwrap() {
        match d {
            UnionDelivery::Lagging { behind } => lagging.push(behind),
            UnionDelivery::Entry(e) => assert!(seen.insert((e.shard, e.entry.offset()))),
        }
    }
    assert_eq!(lagging, [16]);
    assert_eq!(seen.len(), 16);
}

// ---------------------------------------------------------------------
// Writer processes.

/// The child side: opens the directory in `ENFORCELOG_UNION_TEST_CHILD`
/// (`dir|who|count|then`), prints `SHARD n`, records `count` events of
/// writer `who`, printing `ACK i` after each acknowledgement, then exits
/// (`exit`) or waits to be killed (`hang`). Does nothing as an ordinary
/// test.
#[test]
fn child_writer() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [dir, who, count, then] = parts[..] else {
        panic!("bad spec {spec:?}")
    };
    let who: u64 = who.parse().unwrap();
    let count: u64 = count.parse().unwrap();
    let store = Store::open(dir, manual()).expect("child open");
    // The parent may stop reading (then close the pipe) before it kills
    // this writer: a failed print must not end it first.
    let say = |text: String| {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{text}").and_then(|()| out.flush());
    };
    say(format!("SHARD {}", store.shard()));
    for i in 0..count {
        store.record_blocking(event(who, i)).expect("child record");
        say(format!("ACK {i}"));
    }
    say("DONE".into());
    if then == "hang" {
        loop {
            std::thread::park();
        }
    }
    store.close().expect("child close");
}

fn spawn_child(dir: &Path, who: u64, count: u64, then: &str) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}|{who}|{count}|{then}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Reads a child's output: its shard and how many events it acknowledged;
/// with `stop_after`, returns once that many are.
fn read_child(child: &mut Child, stop_after: Option<u64>) -> (u32, u64) {
    let out = child.stdout.take().expect("child stdout");
    let mut shard = None;
    let mut acked = 0;
    for line in BufReader::new(out).lines() {
        let line = line.expect("child line");
        if let Some((_, n)) = line.split_once("SHARD ") {
            shard = Some(n.trim().parse().unwrap());
        } else if line.contains("ACK ") {
            acked += 1;
            if Some(acked) == stop_after {
                break;
            }
        }
    }
    (shard.expect("the child opened"), acked)
}

/// Three writer processes start after the subscription (their shards are
/// created after it began) and record while this process records too; the
/// subscriber, waking on its own commits and on the background refresher,
/// gets every acknowledged event exactly once, shards in offset order; a
/// user projection over what it got equals `stats`; a position saved
/// midway resumes, in a new reader, exactly the rest.
#[test]
fn union_subscriber_gets_every_acknowledged_event_of_every_writer_process_once() {
    const OWN: u64 = 120;
    const PER_CHILD: u64 = 150;
    let dir = tempfile::tempdir().unwrap();
    let own = Store::open(dir.path(), quick()).expect("open");
    let start = own.union_end().unwrap();
    assert_eq!(start.iter().map(|(s, _)| s).collect::<Vec<_>>(), [0]);
    let want = (OWN + 3 * PER_CHILD) as usize;
    let half = collect(own.subscribe_union(start.clone()).unwrap(), want / 2);
    let mut children: Vec<(u64, Child)> = (1..=3)
        .map(|who| (who, spawn_child(dir.path(), who, PER_CHILD, "exit")))
        .collect();
    let mut acknowledged = BTreeSet::new();
    for i in 0..OWN {
        own.record_blocking(event(0, i)).unwrap();
        acknowledged.insert(format!("run-0-{i}"));
    }
    let (first, sub) = half.recv_timeout(LIVENESS).expect("the first half came");
    let saved = serde_json::to_string(sub.position()).unwrap();
    let rest = collect(sub, want - want / 2);
    let mut shards = BTreeSet::new();
    for (who, child) in &mut children {
        let (shard, acked) = read_child(child, None);
        assert!(child.wait().unwrap().success());
        assert_eq!(acked, PER_CHILD);
        acknowledged.extend((0..acked).map(|i| format!("run-{who}-{i}")));
        shards.insert(shard);
    }
    assert_eq!(shards, BTreeSet::from([1, 2, 3]));
    let (second, mut sub) = rest.recv_timeout(LIVENESS).expect("the rest came");
    let got: Vec<ShardEntry> = first.iter().chain(&second).cloned().collect();
    assert_once_in_order(&got, &start);
    let runs: Vec<String> = got.iter().filter_map(run_id).collect();
    assert_eq!(runs.len(), got.len(), "only events were written");
    let unique: BTreeSet<String> = runs.iter().cloned().collect();
    assert_eq!(unique.len(), runs.len(), "an event delivered twice");
    assert_eq!(
        unique, acknowledged,
        "every acknowledged event, nothing else"
    );
    let ids: BTreeMap<u32, _> = Store::shard_dirs(dir.path())
        .unwrap()
        .into_iter()
        .map(|(n, path)| (n, enforcelog::Log::open_read_only(path).unwrap().store_id()))
        .collect();
    for e in &got {
        assert_eq!(
            e.store_id, ids[&e.shard],
            "tagged with its shard's store id"
        );
        if e.shard == 0 {
            assert_eq!(writer_of(&run_id(e).unwrap()).0, 0);
        }
    }
    own.refresh().unwrap();
    assert_eq!(sub.try_next().unwrap(), None, "nothing more, nothing twice");
    assert_projection_equals_stats(&own, &got);
    // Resumed elsewhere from the position saved after the first half.
    let reader = Store::open_read_only(dir.path()).unwrap();
    let resumed: Positions = serde_json::from_str(&saved).unwrap();
    let replayed: BTreeSet<String> = reader
        .replay_union(&resumed)
        .unwrap()
        .map(|e| run_id(&e.unwrap()).unwrap())
        .collect();
    let second_runs: BTreeSet<String> = second.iter().filter_map(run_id).collect();
    assert_eq!(replayed, second_runs, "resume yields exactly the rest");
}

/// A writer process is killed mid-stream while a subscriber follows the
/// union; a new process reuses its shard (offsets go on from where the
/// dead one's durable events end). The subscriber gets the dead writer's
/// stored events and the new one's, each once, in offset order, and they
/// are exactly what the shard holds.
#[cfg(unix)]
#[test]
fn union_subscriber_follows_a_killed_writers_shard_into_its_reuse_once() {
    let dir = tempfile::tempdir().unwrap();
    let own = Store::open(dir.path(), quick()).expect("open");
    let start = own.union_end().unwrap();
    let mut sub = own.subscribe_union(start.clone()).unwrap();
    let mut dead = spawn_child(dir.path(), 20, 1_000_000, "hang");
    let (shard, acked) = read_child(&mut dead, Some(60));
    assert_eq!(shard, 1);
    // Some of the dead writer's events, delivered before it dies.
    let mut got = Vec::new();
    while got.len() < 30 {
        if let UnionDelivery::Entry(e) = sub.next_blocking().unwrap() {
            got.push(e);
        }
    }
    dead.kill().expect("SIGKILL");
    dead.wait().unwrap();
    // This writer store settles the dead writer's shard (a recovery open
    // under the shard's lock); a writer starting meanwhile finds the lock
    // held and rightly claims a new shard. Wait until the settle has made
    // every acknowledged event readable, so the next writer finds the shard
    // free.
    let waited = Instant::now();
    while (got
        .iter()
        .filter_map(run_id)
        .filter(|r| writer_of(r).0 == 20)
        .count() as u64)
        < acked
    {
        assert!(
            waited.elapsed() < LIVENESS,
            "the dead writer's shard was never settled"
        );
        own.refresh().unwrap();
        while let Some(delivery) = sub.try_next().unwrap() {
            if let UnionDelivery::Entry(e) = delivery {
                got.push(e);
            }
        }
    }
    own.refresh().unwrap();
    let mut next = spawn_child(dir.path(), 21, 80, "exit");
    let (reused, new_acked) = read_child(&mut next, None);
    assert!(next.wait().unwrap().success());
    assert_eq!(
        (reused, new_acked),
        (1, 80),
        "the dead writer's shard is reused"
    );
    // What the shard holds, as a fresh reader replays it.
    let reader = Store::open_read_only(dir.path()).unwrap();
    let stored: Vec<ShardEntry> = reader
        .replay_union(&start)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let stored_runs: Vec<String> = stored.iter().filter_map(run_id).collect();
    let dead_count = stored_runs.iter().filter(|r| writer_of(r).0 == 20).count() as u64;
    assert!(
        dead_count >= acked,
        "{acked} acknowledged, {dead_count} stored"
    );
    let want: Vec<String> = (0..dead_count)
        .map(|i| format!("run-20-{i}"))
        .chain((0..80).map(|i| format!("run-21-{i}")))
        .collect();
    assert_eq!(
        stored_runs, want,
        "the shard: the dead writer's, then the new one's"
    );
    let rest = collect(sub, stored.len() - got.len());
    let (more, mut sub) = rest.recv_timeout(LIVENESS).expect("the rest came");
    got.extend(more);
    assert_once_in_order(&got, &start);
    assert_eq!(got.iter().filter_map(run_id).collect::<Vec<_>>(), want);
    assert_eq!(
        got, stored,
        "what the subscriber got is what the shard holds"
    );
    own.refresh().unwrap();
    assert_eq!(sub.try_next().unwrap(), None, "nothing more, nothing twice");
    assert_projection_equals_stats(&own, &got);
}
