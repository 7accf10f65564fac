//! Shipping committed events to NATS JetStream, and fleet-wide statistics
//! folded back from it (feature `jetstream`; see docs/SCALING.md).
//!
//! A [`Shipper`] tails one store's log and publishes every committed entry
//! to a JetStream stream, one message per entry:
//!
//! - subject `<prefix>.ev.<tenant>.<rule>` (or `<prefix>.gap.<store id>`),
//!   ids escaped so that any id is one subject token ([`subject`]);
//! - payload: the entry's log payload, unchanged (MessagePack, see
//!   docs/EVENTS.md);
//! - headers: `Nats-Msg-Id: <store id>:<offset>` (JetStream drops a re-send
//!   inside its duplicate window), `Enforcelog-Store`, `Enforcelog-Offset`
//!   and `Enforcelog-Time` (the record's timestamp, µs); the last message
//!   of each batch also `Enforcelog-Head`: the tree head (one line of JSON,
//!   as `enforcelog head` prints it, unsigned) of the store's records up to
//!   it, from a Merkle frontier the shipper keeps over what it shipped. The
//!   fleet side checks each head against the records it received
//!   ([`FleetView::heads_checked`]) and keeps the last that matched
//!   ([`FleetView::head_of`]): a head an auditor can audit the store against.
//!
//! Delivery is at least once. The shipped offset is written to
//! `<store>/ship/<stream>.offset` only after JetStream acknowledged every
//! message below it, so a shipper that crashes or loses its connection
//! resumes there and re-sends what may not have arrived. [`fleet`] counts
//! each `(store id, offset)` once whatever arrives twice, so fleet
//! statistics stay exact.
//!
//! Shipping never slows recording: the shipper only reads the log, as any
//! reader does, and holds at most one batch of messages in memory. A NATS
//! that is down or slow makes the shipper fall behind (its lag is in
//! [`ShipProgress`] and in `tracing`), never `record` wait.

pub mod fleet;
mod shipper;
pub mod subject;

use std::path::PathBuf;
use std::time::Duration;

pub use fleet::{fold_fleet, FleetConsumer, FleetView};
pub use shipper::{ShipProgress, Shipper};

use crate::error::{Error, Result};

/// Where and how to ship.
///
/// ```
/// use enforcelog::ship::ShipOptions;
///
/// let options = ShipOptions {
///     servers: vec!["nats://10.0.0.5:4222".into()],
///     ..ShipOptions::default()
/// };
/// assert_eq!(options.stream, "ENFORCELOG");
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipOptions {
    /// NATS server URLs (`nats://host:port`, `tls://host:port`); the client
    /// connects to one and fails over to the others. Default: local 4222.
    pub servers: Vec<String>,
    /// A NATS credentials file (JWT and NKey seed), if the servers ask for one.
    pub credentials: Option<PathBuf>,
    /// Refuse to connect without TLS.
    pub require_tls: bool,
    /// The JetStream stream. Created (file storage, `replicas`, subjects
    /// `<subject_prefix>.>`) if it does not exist. Default `ENFORCELOG`.
    pub stream: String,
    /// First token of every subject. Default `enforcelog`.
    pub subject_prefix: String,
    /// Replicas of a stream the shipper creates (1, or 3 on a cluster).
    pub replicas: usize,
    /// Most messages published before their acknowledgements are awaited
    /// (and the shipped offset saved). Default 512.
    pub batch: usize,
    /// How long an acknowledgement may take before the batch is sent again.
    pub ack_timeout: Duration,
    /// Longest wait between reconnection attempts (they back off from
    /// 100 ms). Default 5 s.
    pub retry_max: Duration,
}

/// The error for a failed remote request: `.map_err(remote("publish"))`.
pub(crate) fn remote<E: std::fmt::Display>(op: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Remote {
        op,
        reason: e.to_string(),
    }
}

/// Writes `dir/name` durably (temporary file, fsync, rename, directory
/// fsync), creating `dir` if needed: the shipped offset and fleet
/// checkpoints, which live on the real file system beside the store.
pub(crate) fn write_durably(dir: &std::path::Path, name: &str, bytes: &[u8]) -> Result<()> {
    use crate::storage::{create_dir_all_durably, FileStorage};
    create_dir_all_durably(&FileStorage, dir).map_err(|e| Error::io("create directory", dir, e))?;
    crate::log::dir::write_file_atomically(&FileStorage, dir, name, bytes, true)
}

impl Default for ShipOptions {
    fn default() -> Self {
        ShipOptions {
            servers: vec!["nats://127.0.0.1:4222".into()],
            credentials: None,
            require_tls: false,
            stream: "ENFORCELOG".into(),
            subject_prefix: "enforcelog".into(),
            replicas: 1,
            batch: 512,
            ack_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(5),
        }
    }
}

impl ShipOptions {
    /// Checks the options; the error names the one that is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: &str| {
            Err(Error::InvalidOptions {
                name,
                reason: reason.into(),
            })
        };
        if self.servers.is_empty() {
            return bad("servers", "at least one NATS server URL is needed");
        }
        let token_ok = |t: &str| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !token_ok(&self.stream) {
            return bad("stream", "a stream name is letters, digits, '_' and '-'");
        }
        if !self.subject_prefix.split('.').all(token_ok) {
            return bad(
                "subject_prefix",
                "dot-separated tokens of letters, digits, '_' and '-'",
            );
        }
        if !(1..=5).contains(&self.replicas) {
            return bad("replicas", "JetStream keeps 1 to 5 replicas");
        }
        if !(1..=65_536).contains(&self.batch) {
            return bad("batch", "between 1 and 65536 messages");
        }
        if self.ack_timeout.is_zero() || self.retry_max.is_zero() {
            return bad("ack_timeout", "timeouts must not be zero");
        }
        Ok(())
    }

    /// Connects to the servers and returns a JetStream context.
    pub(crate) async fn connect(&self) -> Result<async_nats::jetstream::Context> {
        let mut connect = async_nats::ConnectOptions::new()
            .require_tls(self.require_tls)
            .retry_on_initial_connect()
            .max_reconnects(None);
        if let Some(path) = &self.credentials {
            connect = connect
                .credentials_file(path)
                .await
                .map_err(remote("read the NATS credentials file"))?;
        }
        let servers: Vec<async_nats::ServerAddr> = self
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e: std::io::Error| Error::InvalidOptions {
                name: "servers",
                reason: e.to_string(),
            })?;
        let client = tokio::time::timeout(
            self.retry_max.max(Duration::from_secs(2)),
            connect.connect(servers),
        )
        .await
        .map_err(|_| Error::Remote {
            op: "connect to NATS",
            reason: "no server answered in time".into(),
        })?
        .map_err(remote("connect to NATS"))?;
        let mut js = async_nats::jetstream::new(client);
        js.set_timeout(self.ack_timeout);
        Ok(js)
    }

    /// The stream, created if missing.
    pub(crate) async fn stream(
        &self,
        js: &async_nats::jetstream::Context,
    ) -> Result<async_nats::jetstream::stream::Stream> {
        let config = async_nats::jetstream::stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject_prefix)],
            num_replicas: self.replicas,
            storage: async_nats::jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(remote("create or find the JetStream stream"))
    }
}
