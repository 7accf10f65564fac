//! Fleet-wide statistics: the shipped stream folded into the same trigger
//! statistics a store keeps, counting each `(store id, offset)` once.
//!
//! Messages may arrive twice (a shipper re-sends after a failure, past the
//! stream's duplicate window) and interleave across stores in any order;
//! [`Seen`] keeps, per store, the offset below which everything was seen
//! and the offsets seen above it, so a duplicate is recognised in O(log n)
//! and memory stays small while each store's messages arrive mostly in
//! order. The statistics themselves depend only on the set of events.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;

use super::ShipOptions;
use crate::error::{Error, Result};
use crate::payload;
use crate::projection::Answer;
use crate::projection::{Projection, RuleStats, TriggerStats};
use crate::{Action, Entry};

/// Header naming the store an entry comes from.
pub const STORE_HEADER: &str = "Enforcelog-Store";
/// Header holding the entry's offset in its store.
pub const OFFSET_HEADER: &str = "Enforcelog-Offset";
/// Header holding the record's timestamp, in µs.
pub const TIME_HEADER: &str = "Enforcelog-Time";

/// The offsets of one store seen so far.
#[derive(Debug, Default)]
struct Seen {
    /// Every offset below this was seen.
    below: u64,
    /// Offsets seen at or above `below`.
    above: BTreeSet<u64>,
}

impl Seen {
    /// Records `offset`; false when it was seen before.
    fn insert(&mut self, offset: u64) -> bool {
        if offset < self.below || !self.above.insert(offset) {
            return false;
        }
        while self.above.remove(&self.below) {
            self.below += 1;
        }
        true
    }
}

/// Trigger statistics over every store that ships to one stream.
#[derive(Debug)]
pub struct FleetView {
    stats: TriggerStats,
    /// Every event's action and time by (tenant, rule): what answers an
    /// as-of whose window reaches into what `stats` folded away, as a
    /// store's log does for the store.
    history: HashMap<(String, String), Vec<(Action, i64)>>,
    seen: HashMap<String, Seen>,
    /// Distinct entries folded in.
    pub entries: u64,
    /// Messages that repeated an entry already folded in.
    pub duplicates: u64,
    /// The stream sequence folded up to.
    pub stream_sequence: u64,
}

impl FleetView {
    /// An empty view with the given windows (the last is the primary one).
    pub fn new(windows: Vec<Duration>) -> FleetView {
        FleetView {
            stats: TriggerStats::with_windows(windows),
            history: HashMap::new(),
            seen: HashMap::new(),
            entries: 0,
            duplicates: 0,
            stream_sequence: 0,
        }
    }

    /// Folds one shipped message in: its store, offset, timestamp and
    /// payload. A repeat of an entry already folded is counted and ignored.
    pub fn fold(
        &mut self,
        store: &str,
        offset: u64,
        timestamp_us: i64,
        bytes: &[u8],
    ) -> Result<()> {
        let entry =
            payload::decode(offset, timestamp_us, bytes).map_err(|e| Error::BadPayload {
                offset,
                reason: format!("store {store}: {}", e.0),
            })?;
        if !self
            .seen
            .entry(store.to_string())
            .or_default()
            .insert(offset)
        {
            self.duplicates += 1;
            return Ok(());
        }
        self.entries += 1;
        if let Entry::Event(e) = &entry {
            self.history
                .entry((e.tenant_id.clone(), e.rule_id.clone()))
                .or_default()
                .push((e.action, e.enforced_at_us));
        }
        self.stats.apply(self.entries, &entry);
        Ok(())
    }

    /// Stores seen.
    pub fn stores(&self) -> usize {
        self.seen.len()
    }

    /// The statistics of every rule that fired at or before `as_of_us`,
    /// sorted by tenant then rule: exact at any `as_of_us`.
    pub fn stats_all(&self, as_of_us: i64) -> Vec<RuleStats> {
        let mut out = Vec::new();
        for (tenant, rule) in self.stats.all_rules() {
            let stats = match self.stats.answer(tenant, rule, as_of_us, self.entries) {
                Answer::Exact(stats) => stats,
                Answer::NeedsReplay => {
                    let key = (tenant.to_string(), rule.to_string());
                    let events = self.history.get(&key).into_iter().flatten().copied();
                    self.stats
                        .from_entries(tenant, rule, as_of_us, self.entries, events)
                }
            };
            if stats.total_count > 0 {
                out.push(stats);
            }
        }
        out
    }

    /// Gap markers folded in, and the events they say were dropped.
    pub fn gaps(&self) -> (u64, u64) {
        self.stats.gaps()
    }
}

/// How long the stream may deliver nothing before folding gives up.
const STALL_LIMIT: Duration = Duration::from_secs(30);

/// Reads the whole stream, as it is when called, into a [`FleetView`].
pub async fn fold_fleet(options: &ShipOptions, windows: Vec<Duration>) -> Result<FleetView> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    let remote = |op: &'static str| {
        move |e: Box<dyn std::error::Error + Send + Sync>| Error::Remote {
            op,
            reason: e.to_string(),
        }
    };
    let js = options.connect().await?;
    let mut stream = js
        .get_stream(&options.stream)
        .await
        .map_err(|e| remote("find the JetStream stream")(e.into()))?;
    let last = stream
        .info()
        .await
        .map_err(|e| remote("read the stream's state")(e.into()))?
        .state
        .last_sequence;
    let mut view = FleetView::new(windows);
    if last == 0 {
        return Ok(view);
    }
    let config = pull::Config {
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::None,
        filter_subject: format!("{}.>", options.subject_prefix),
        ..Default::default()
    };
    // A cluster electing a stream leader (a node just restarted) answers
    // consumer requests late for a few seconds: retry until STALL_LIMIT.
    let started = std::time::Instant::now();
    let consumer = loop {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => break consumer,
            Err(e) if started.elapsed() < STALL_LIMIT => {
                tracing::info!(error = %e, "creating the fleet consumer; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(remote("create a consumer")(e.into())),
        }
    };
    let mut idle_since = std::time::Instant::now();
    while view.stream_sequence < last {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| remote("fetch from the stream")(e.into()))?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| remote("fetch from the stream")(e))?;
            got += 1;
            let info = message
                .info()
                .map_err(|e| remote("read a message's metadata")(e))?;
            view.stream_sequence = info.stream_sequence;
            let headers = message.headers.as_ref();
            let header = |name: &str| {
                headers
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let (Some(store), Some(offset), Some(time)) = (
                header(STORE_HEADER),
                header(OFFSET_HEADER),
                header(TIME_HEADER),
            ) else {
                return Err(Error::Remote {
                    op: "read a shipped message",
                    reason: format!("message {} lacks enforcelog headers", info.stream_sequence),
                });
            };
            let (Ok(offset), Ok(time)) = (offset.parse::<u64>(), time.parse::<i64>()) else {
                return Err(Error::Remote {
                    op: "read a shipped message",
                    reason: format!(
                        "message {} has malformed enforcelog headers",
                        info.stream_sequence
                    ),
                });
            };
            view.fold(&store, offset, time, &message.payload)?;
        }
        if got > 0 {
            idle_since = std::time::Instant::now();
        } else if idle_since.elapsed() >= STALL_LIMIT {
            return Err(Error::Remote {
                op: "read the stream",
                reason: format!(
                    "no message for {STALL_LIMIT:?} at sequence {} of {last}",
                    view.stream_sequence
                ),
            });
        }
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_each_offset_once_in_any_order() {
        let mut seen = Seen::default();
        for offset in [3, 0, 1, 1, 2, 3, 7, 0] {
            seen.insert(offset);
        }
        assert_eq!(seen.below, 4);
        assert_eq!(seen.above.iter().copied().collect::<Vec<_>>(), [7]);
        assert!(!seen.insert(2));
        assert!(!seen.insert(7));
        assert!(seen.insert(4));
    }
}
