//! The shipper: tails a store's log and publishes to JetStream.
//!
//! Invariants:
//! - the saved offset `s` means every entry below `s` was acknowledged by
//!   JetStream; it only grows, and is saved only after the acknowledgements;
//! - a batch whose publish or acknowledgement failed is sent again whole,
//!   from its first offset, on a new connection: the message ids make the
//!   re-send harmless inside the duplicate window, and fleet folding makes
//!   it harmless after it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::context::Publish;
use tracing::{info, warn};

use super::subject::{event_subject, gap_subject};
use super::{remote, write_durably, ShipOptions};
use crate::audit::head::{self, LogName, TreeHead};
use crate::audit::merkle::{record_leaf_hash, Frontier};
use crate::error::{Error, Result};
use crate::log::StoreId;
use crate::record::LogRecord;
use crate::storage::{read_all, FileStorage, OpenMode, Storage};
use crate::{Entry, Store};

/// Where a shipper keeps its offsets, inside the store directory.
pub(crate) const SHIP_DIR: &str = "ship";
const OFFSET_PREFIX: &str = "enforcelog-ship 1 ";

/// What a shipper has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShipProgress {
    /// Every entry below this offset is acknowledged by JetStream (and the
    /// offset saved).
    pub shipped: u64,
    /// The store's committed end when last looked at.
    pub committed: u64,
    /// Messages published and acknowledged by this shipper since it started,
    /// re-sends included.
    pub published: u64,
    /// Of those, how many JetStream reported as duplicates (dropped).
    pub duplicates: u64,
    /// Failed connections, publishes or acknowledgements.
    pub failures: u64,
    /// Whether the shipper has a working connection now.
    pub connected: bool,
}

impl ShipProgress {
    /// Entries committed but not yet acknowledged by JetStream.
    pub fn lag(&self) -> u64 {
        self.committed.saturating_sub(self.shipped)
    }
}

#[derive(Debug, Default)]
struct Counters {
    shipped: AtomicU64,
    committed: AtomicU64,
    published: AtomicU64,
    duplicates: AtomicU64,
    failures: AtomicU64,
    connected: AtomicBool,
}

/// Ships one store's committed entries to a JetStream stream.
///
/// `run` works until its `stop` future completes, through NATS outages:
/// it reconnects with backoff and resumes from the last acknowledged
/// offset. Clones share progress.
#[derive(Debug, Clone)]
pub struct Shipper {
    store: Store,
    store_id: StoreId,
    options: ShipOptions,
    /// `<store>/ship` and the shipped-offset file's name in it.
    ship_dir: PathBuf,
    offset_name: String,
    counters: Arc<Counters>,
    /// The Merkle tree's frontier over the records shipped so far (from
    /// offset 0): the tree head each batch's last message carries.
    frontier: Arc<std::sync::Mutex<Option<Frontier>>>,
}

impl Shipper {
    /// A shipper for `store`. The store must have an id (every store opened
    /// for writing once has one).
    pub fn new(store: &Store, options: ShipOptions) -> Result<Shipper> {
        options.validate()?;
        let store_id = store.store_id().ok_or_else(|| Error::InvalidOptions {
            name: "store",
            reason: "the store has no id yet: open it for writing once".into(),
        })?;
        // Per shard: each shard is a log of its own, with its own store id
        // and its own shipped offset (the root store's stays where it was).
        let ship_dir = store.shard_dir().join(SHIP_DIR);
        let offset_name = format!("{}.offset", options.stream);
        let shipper = Shipper {
            store: store.clone(),
            store_id,
            options,
            ship_dir,
            offset_name,
            counters: Arc::default(),
            frontier: Arc::default(),
        };
        let saved = shipper.load_offset()?;
        shipper.counters.shipped.store(saved, Ordering::Relaxed);
        Ok(shipper)
    }

    /// Progress so far.
    pub fn progress(&self) -> ShipProgress {
        let c = &self.counters;
        ShipProgress {
            shipped: c.shipped.load(Ordering::Relaxed),
            committed: c
                .committed
                .load(Ordering::Relaxed)
                .max(self.store.next_offset()),
            published: c.published.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            connected: c.connected.load(Ordering::Relaxed),
        }
    }

    /// Ships until `stop` completes; returns early only on a local error
    /// (the store's log cannot be read, the offset file cannot be saved).
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(stop);
        let mut backoff = Duration::from_millis(100);
        loop {
            let session = self.session();
            tokio::select! {
                () = &mut stop => return Ok(()),
                result = session => match result {
                    Ok(()) => return Ok(()),
                    Err(e @ Error::Remote { .. }) => {
                        self.counters.connected.store(false, Ordering::Relaxed);
                        self.counters.failures.fetch_add(1, Ordering::Relaxed);
                        let p = self.progress();
                        warn!(error = %e, shipped = p.shipped, lag = p.lag(), retry_in_ms = backoff.as_millis() as u64, "shipping to NATS failed; retrying");
                    }
                    Err(e) => return Err(e),
                },
            }
            tokio::select! {
                () = &mut stop => return Ok(()),
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(self.options.retry_max);
        }
    }

    /// One connection's worth of shipping: returns on a remote failure.
    async fn session(&self) -> Result<()> {
        let js = self.options.connect().await?;
        self.options.stream(&js).await?;
        self.counters.connected.store(true, Ordering::Relaxed);
        info!(stream = %self.options.stream, shipped = self.counters.shipped.load(Ordering::Relaxed), "shipping to NATS JetStream");
        let mut wake = self.store.log().watch();
        let mut last_report = Instant::now();
        loop {
            let from = self.counters.shipped.load(Ordering::Relaxed);
            let records = self.read_batch(from)?;
            if records.is_empty() {
                // Nothing new: wait for a commit (or poll, for a read-only
                // store whose writer is another process).
                match tokio::time::timeout(Duration::from_millis(200), wake.recv_async()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => wake = self.store.log().watch(),
                    Err(_) => {
                        let _ = self.store.refresh();
                    }
                }
                continue;
            }
            let head = self.head_after(from, &records)?;
            let mut acks = Vec::with_capacity(records.len());
            for (i, record) in records.iter().enumerate() {
                let (subject, mut publish) = self.message(record)?;
                if i + 1 == records.len() {
                    // The batch's last message carries the tree head of
                    // everything shipped up to it (docs/AUDIT.md).
                    publish = publish.header(super::fleet::HEAD_HEADER, head.as_str());
                }
                let ack = js
                    .send_publish(subject, publish)
                    .await
                    .map_err(remote("publish"))?;
                acks.push(ack);
            }
            for ack in acks {
                let ack = ack
                    .await
                    .map_err(remote("await the JetStream acknowledgement"))?;
                self.counters.published.fetch_add(1, Ordering::Relaxed);
                if ack.duplicate {
                    self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                }
            }
            let next = from + records.len() as u64;
            self.save_offset(next)?;
            self.counters.shipped.store(next, Ordering::Relaxed);
            if last_report.elapsed() >= Duration::from_secs(10) {
                let p = self.progress();
                info!(
                    shipped = p.shipped,
                    lag = p.lag(),
                    published = p.published,
                    "shipping progress"
                );
                last_report = Instant::now();
            }
        }
    }

    /// The tree head (JSON, unsigned) of the records up to the last of
    /// `records`, which follow the `from` records shipped before. The
    /// frontier of those is kept between batches; it is computed again from
    /// the log (one pass over `from` records) when it is not at `from` (a
    /// new shipper, or a batch that was not acknowledged and is sent again).
    fn head_after(&self, from: u64, records: &[LogRecord]) -> Result<String> {
        let mut slot = self.frontier.lock().unwrap_or_else(|e| e.into_inner());
        let mut frontier = match slot.take() {
            Some(f) if f.size() == from => f,
            _ => self.frontier_at(from)?,
        };
        for record in records {
            debug_assert_eq!(record.offset, frontier.size());
            frontier.push(record_leaf_hash(
                record.offset,
                record.timestamp_us,
                &record.payload,
            ));
        }
        let head = TreeHead {
            log: Some(LogName {
                store_id: self.store_id,
                shard: self.store.shard(),
            }),
            size: frontier.size(),
            root: frontier.root(),
            time: crate::timestamp::format_us(crate::record::now_us()),
        };
        // Kept only once the batch was acknowledged would be tighter; a
        // batch sent again starts from `from` and rebuilds it.
        *slot = Some(frontier);
        // One line: a header value may hold no line break.
        Ok(head::to_json_line(&head, None))
    }

    /// The frontier of the log's first `size` records.
    fn frontier_at(&self, size: u64) -> Result<Frontier> {
        let mut frontier = Frontier::new();
        if size == 0 {
            return Ok(frontier);
        }
        let log = self.store.log();
        for record in log.read_from(0)? {
            let record = record?;
            if record.offset >= size {
                break;
            }
            frontier.push(record_leaf_hash(
                record.offset,
                record.timestamp_us,
                &record.payload,
            ));
        }
        if frontier.size() != size {
            return Err(Error::Corruption {
                path: self.store.shard_dir().to_path_buf(),
                position: 0,
                reason: format!(
                    "the record at offset {} cannot be read: the tree head a shipped batch \
                     carries needs every record",
                    frontier.size()
                ),
            });
        }
        Ok(frontier)
    }

    /// Up to `batch` committed records from `from`.
    fn read_batch(&self, from: u64) -> Result<Vec<LogRecord>> {
        let log = self.store.log();
        let committed = log.next_offset();
        self.counters.committed.store(committed, Ordering::Relaxed);
        if from >= committed {
            if from > committed {
                return Err(Error::OffsetOutOfRange {
                    requested: from,
                    next_offset: committed,
                });
            }
            return Ok(Vec::new());
        }
        log.read_from(from)?
            .take(self.options.batch)
            .collect::<Result<Vec<_>>>()
    }

    /// The subject and message of one record.
    fn message(&self, record: &LogRecord) -> Result<(String, Publish)> {
        let prefix = &self.options.subject_prefix;
        // An entry that does not decode is shipped as it is, on the store's
        // own subject, so shipping never stalls on it; the fleet view skips
        // and counts it, as the store's projections do.
        let subject = match crate::store::decode_entry(record) {
            Ok(Entry::Event(e)) => event_subject(prefix, &e.tenant_id, &e.rule_id),
            Ok(Entry::Gap(_) | Entry::Lost(_)) => gap_subject(prefix, &self.store_id.to_string()),
            Err(e) => {
                tracing::warn!(offset = record.offset, error = %e, "shipping an entry that does not decode as it is");
                gap_subject(prefix, &self.store_id.to_string())
            }
        };
        let publish = Publish::build()
            .payload(bytes::Bytes::copy_from_slice(&record.payload))
            .message_id(format!("{}:{}", self.store_id, record.offset))
            .header(
                super::fleet::STORE_HEADER,
                self.store_id.to_string().as_str(),
            )
            .header(
                super::fleet::OFFSET_HEADER,
                record.offset.to_string().as_str(),
            )
            .header(
                super::fleet::TIME_HEADER,
                record.timestamp_us.to_string().as_str(),
            );
        Ok((subject, publish))
    }

    fn load_offset(&self) -> Result<u64> {
        let storage = FileStorage;
        let path = &self.ship_dir.join(&self.offset_name);
        if !storage
            .exists(path)
            .map_err(|e| Error::io("stat", path, e))?
        {
            return Ok(0);
        }
        let bytes = storage
            .open(path, OpenMode::Read)
            .and_then(|f| read_all(&*f))
            .map_err(|e| Error::io("read", path, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let parsed = text
            .strip_prefix(OFFSET_PREFIX)
            .and_then(|rest| rest.strip_suffix('\n'))
            .and_then(|rest| rest.split_once(' '))
            .and_then(|(id, offset)| {
                Some((id.parse::<StoreId>().ok()?, offset.parse::<u64>().ok()?))
            });
        match parsed {
            Some((id, offset)) if id == self.store_id => Ok(offset),
            Some((id, _)) => Err(Error::corruption(
                path,
                0,
                format!(
                    "the shipped offset belongs to store {id}, not this store ({})",
                    self.store_id
                ),
            )),
            None => Err(Error::corruption(path, 0, "not a shipped-offset file")),
        }
    }

    fn save_offset(&self, offset: u64) -> Result<()> {
        let text = format!("{OFFSET_PREFIX}{} {offset}\n", self.store_id);
        write_durably(&self.ship_dir, &self.offset_name, text.as_bytes())
    }
}
