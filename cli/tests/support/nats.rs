//! A `nats-server -js` for the review tests of the fleet reader, and a
//! shipper run until it has shipped everything (included with `#[path]`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use enforcelog::ship::{ShipOptions, Shipper};
use enforcelog::{Action, Event, Store};

/// A `nats-server -js` on a free port, killed on drop. The fields are
/// open so that a test can start a server of its own configuration.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub _dir: tempfile::TempDir,
}

impl Server {
    /// `None` (and a line saying the test is skipped) without `nats-server`
    /// on PATH.
    pub fn start() -> Option<Server> {
        let ok = Command::new("nats-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPED: nats-server is not on the PATH");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path().join("js"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Server {
            child,
            port,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a shipper for `store` until it has shipped every committed entry.
pub async fn ship_all(store: &Store, options: &ShipOptions) {
    let shipper = Shipper::new(store, options.clone()).unwrap();
    let watcher = shipper.clone();
    shipper
        .run(async move {
            while watcher.progress().lag() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap();
}

/// A realistic event: a run id, details with zeros and an invisible space.
pub fn event(i: u64) -> Event {
    Event::new(format!("tenant-{}", i % 3), "budget", Action::Killed)
        .with_run_id(format!("run-{i:04}"))
        .with_details(enforcelog::details!({"step": i, "zeros": [0, 0, 0, 0], "note": "\u{200b}"}))
}

/// Shipping options for `server`, with short timeouts.
pub fn options(server: &Server) -> ShipOptions {
    ShipOptions {
        servers: vec![server.url()],
        replicas: 1,
        ack_timeout: Duration::from_secs(2),
        retry_max: Duration::from_millis(500),
        ..ShipOptions::default()
    }
}

/// A two-thread tokio runtime.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` events recorded and shipped: stream sequences 1..=n.
pub async fn shipped(store: &Store, options: &ShipOptions, n: u64) {
    for i in 0..n {
        store.record_blocking(event(i)).unwrap();
    }
    ship_all(store, options).await;
}
