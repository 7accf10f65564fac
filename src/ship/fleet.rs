//! Fleet-wide statistics: the shipped stream folded into the same trigger
//! statistics a store keeps, counting each `(store id, offset)` once.
//!
//! Messages may arrive twice (a shipper re-sends after a failure, past the
//! stream's duplicate window) and interleave across stores in any order;
//! `Seen` keeps, per store, the offset below which everything was seen
//! and the offsets seen above it, so a duplicate is recognised in O(log n)
//! and memory stays small while each store's messages arrive mostly in
//! order. The statistics themselves depend only on the set of events.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{remote, write_durably, ShipOptions};
use crate::audit::head::{self, TreeHead};
use crate::audit::merkle::{record_leaf_hash, Frontier, Hash};
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
/// Header of the last message of each batch a shipper sends: the tree head
/// (JSON, as `enforcelog head` prints it, unsigned) of the store's records
/// up to and including that message's, which the fleet side checks against
/// the records it received ([`FleetView::heads_checked`]).
pub const HEAD_HEADER: &str = "Enforcelog-Head";

/// The offsets of one store seen so far.
#[derive(Debug, Default, Serialize, Deserialize)]
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

/// (tenant, rule).
type RuleKey = (String, String);

/// Trigger statistics over every store that ships to one stream.
#[derive(Debug)]
pub struct FleetView {
    stats: TriggerStats,
    /// Every event's action and time by (tenant, rule): what answers an
    /// as-of whose window reaches into what `stats` folded away, as a
    /// store's log does for the store.
    history: HashMap<RuleKey, Vec<(Action, i64)>>,
    seen: HashMap<String, Seen>,
    /// Distinct entries folded in.
    pub entries: u64,
    /// Messages that repeated an entry already folded in.
    pub duplicates: u64,
    /// The stream sequence folded up to.
    pub stream_sequence: u64,
    /// Messages under the subject prefix that no shipper wrote (no
    /// enforcelog headers, or malformed ones), skipped since this view was
    /// made or restored (not kept in a checkpoint).
    pub foreign: u64,
    /// Per store: the frontier of the Merkle tree over the records folded
    /// from offset 0 in order (kept in a checkpoint), or `None` once one
    /// came out of order.
    chains: HashMap<String, Option<Frontier>>,
    /// Per store: the last tree head shipped with a batch that matched the
    /// records received.
    heads: HashMap<String, TreeHead>,
    /// Tree heads shipped with batches ([`HEAD_HEADER`]) that match the
    /// records received for their store, since this view was made or
    /// restored.
    pub heads_checked: u64,
    /// Tree heads that do not: the records received are not the ones the
    /// shipper hashed (changed in transit or in the stream), or the head
    /// names another store or size. Each is also logged.
    pub heads_mismatched: u64,
    /// Tree heads that could not be checked: records of their store came
    /// out of order (or before a view restored from a checkpoint written
    /// before shipped heads existed), or the head does not parse.
    pub heads_unchecked: u64,
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
            foreign: 0,
            chains: HashMap::new(),
            heads: HashMap::new(),
            heads_checked: 0,
            heads_mismatched: 0,
            heads_unchecked: 0,
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
        self.fold_new(store, offset, timestamp_us, bytes)
            .map(|_| ())
    }

    /// [`fold`](Self::fold); true when the entry was new.
    fn fold_new(
        &mut self,
        store: &str,
        offset: u64,
        timestamp_us: i64,
        bytes: &[u8],
    ) -> Result<bool> {
        let entry = payload::decode(offset, timestamp_us, bytes);
        if !self
            .seen
            .entry(store.to_string())
            .or_default()
            .insert(offset)
        {
            self.duplicates += 1;
            return Ok(false);
        }
        self.entries += 1;
        let chain = self
            .chains
            .entry(store.to_string())
            .or_insert_with(|| (offset == 0).then(Frontier::new));
        match chain {
            Some(frontier) if frontier.size() == offset => {
                frontier.push(record_leaf_hash(offset, timestamp_us, bytes));
            }
            _ => *chain = None,
        }
        let Ok(entry) = entry else {
            // Skipped and counted, never a stall (as in a store).
            self.stats.skip_undecodable(self.entries);
            return Ok(true);
        };
        if let Entry::Event(e) = &entry {
            self.history
                .entry((e.tenant_id.clone(), e.rule_id.clone()))
                .or_default()
                .push((e.action, e.enforced_at_us));
        }
        self.stats.apply(self.entries, &entry);
        Ok(true)
    }

    /// Checks the tree head `head` (JSON) that the message of `store`'s
    /// record at `offset` carried, against the records folded for that
    /// store: it must name the store and `offset + 1` records, and their
    /// root must be the one of the records received.
    fn check_head(&mut self, store: &str, offset: u64, head: &str) {
        let Ok((head, _)) = head::from_json(head) else {
            self.heads_unchecked += 1;
            return;
        };
        let named = head
            .log
            .is_some_and(|log| log.store_id.to_string() == store);
        if !named || head.size != offset + 1 {
            tracing::warn!(
                store,
                offset,
                size = head.size,
                "a shipped tree head names another store or size"
            );
            self.heads_mismatched += 1;
            return;
        }
        match self.chains.get(store) {
            Some(Some(frontier)) if frontier.size() == head.size => {
                if frontier.root() == head.root {
                    self.heads_checked += 1;
                    self.heads.insert(store.to_string(), head);
                } else {
                    tracing::warn!(
                        store,
                        size = head.size,
                        "the records received do not hash to the tree head their shipper sent"
                    );
                    self.heads_mismatched += 1;
                }
            }
            _ => self.heads_unchecked += 1,
        }
    }

    /// The last tree head shipped for `store` (its store id) that matched
    /// the records this view received: a head an auditor can keep and
    /// audit the store against later (`enforcelog audit --head`).
    pub fn head_of(&self, store: &str) -> Option<&TreeHead> {
        self.heads.get(store)
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

    /// The view as bytes (MessagePack), for a checkpoint.
    fn snapshot(&self) -> Vec<u8> {
        let history: Vec<(&RuleKey, Vec<(u8, i64)>)> = self
            .history
            .iter()
            .map(|(k, v)| (k, v.iter().map(|&(a, t)| (a.code(), t)).collect()))
            .collect();
        let chains: HashMap<&String, Option<(u64, &[Hash])>> = self
            .chains
            .iter()
            .map(|(store, f)| (store, f.as_ref().map(|f| (f.size(), f.peaks()))))
            .collect();
        let heads: HashMap<&String, String> = self
            .heads
            .iter()
            .map(|(store, h)| (store, head::to_json(h, None)))
            .collect();
        let state = (
            self.stats.snapshot(),
            history,
            &self.seen,
            self.entries,
            self.duplicates,
            self.stream_sequence,
            // Since the shipped heads: the frontier of each store's records
            // and the last head that matched, so a restored view goes on
            // checking heads.
            (chains, heads),
        );
        rmp_serde::to_vec(&state).expect("a fleet view always encodes")
    }

    /// Restores a [`FleetView::snapshot`]; `windows` must be the ones it
    /// was taken with.
    fn restore(windows: Vec<Duration>, bytes: &[u8]) -> std::result::Result<FleetView, String> {
        type Chains = (
            HashMap<String, Option<(u64, Vec<Hash>)>>,
            HashMap<String, String>,
        );
        type State = (
            Vec<u8>,
            Vec<(RuleKey, Vec<(u8, i64)>)>,
            HashMap<String, Seen>,
            u64,
            u64,
            u64,
        );
        type StateWithChains = (
            Vec<u8>,
            Vec<(RuleKey, Vec<(u8, i64)>)>,
            HashMap<String, Seen>,
            u64,
            u64,
            u64,
            Chains,
        );
        // A checkpoint written before the shipped heads has no chains: its
        // stores' later heads count as unchecked.
        let (stats_bytes, history, seen, entries, duplicates, stream_sequence, chains) =
            match rmp_serde::from_slice::<StateWithChains>(bytes) {
                Ok(state) => state,
                Err(_) => {
                    let (a, b, c, d, e, f): State =
                        rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
                    (a, b, c, d, e, f, (HashMap::new(), HashMap::new()))
                }
            };
        let mut view = FleetView::new(windows);
        view.stats.restore(&stats_bytes)?;
        for (key, events) in history {
            let events = events
                .into_iter()
                .map(|(code, t)| Action::from_code(code).map(|a| (a, t)))
                .collect::<Option<Vec<_>>>()
                .ok_or("unknown action code in a fleet checkpoint")?;
            view.history.insert(key, events);
        }
        view.seen = seen;
        let (frontiers, heads) = chains;
        for (store, frontier) in frontiers {
            let frontier = match frontier {
                Some((size, peaks)) => Some(
                    Frontier::from_parts(size, peaks)
                        .ok_or("a frontier in a fleet checkpoint does not fit its size")?,
                ),
                None => None,
            };
            view.chains.insert(store, frontier);
        }
        for (store, json) in heads {
            let (head, _) = head::from_json(&json).map_err(|e| e.to_string())?;
            view.heads.insert(store, head);
        }
        view.entries = entries;
        view.duplicates = duplicates;
        view.stream_sequence = stream_sequence;
        Ok(view)
    }

    /// Gap markers folded in, and the events they say were dropped.
    pub fn gaps(&self) -> (u64, u64) {
        self.stats.gaps()
    }
}

/// How long the stream may deliver nothing before folding gives up.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// How long one pull request waits on the server for messages.
const FETCH_EXPIRES: Duration = Duration::from_secs(1);
/// How long past a pull request's expiry the client waits for the server
/// to end it before giving the request up.
const FETCH_GRACE: Duration = Duration::from_secs(4);

/// Reads the whole stream, as it is when called, into a [`FleetView`].
pub async fn fold_fleet(options: &ShipOptions, windows: Vec<Duration>) -> Result<FleetView> {
    use async_nats::jetstream::consumer::{pull, AckPolicy};
    let js = options.connect().await?;
    let mut stream = js
        .get_stream(&options.stream)
        .await
        .map_err(remote("find the JetStream stream"))?;
    let last = stream
        .info()
        .await
        .map_err(remote("read the stream's state"))?
        .state
        .last_sequence;
    let mut view = FleetView::new(windows);
    if last == 0 {
        return Ok(view);
    }
    let config = pull::Config {
        ack_policy: AckPolicy::None,
        filter_subject: format!("{}.>", options.subject_prefix),
        ..Default::default()
    };
    let mut cursor = Cursor::start(js, stream, config, 1).await?;
    let mut stall = Stall::new(view.stream_sequence);
    while view.stream_sequence < last {
        let fetched = fold_until(&cursor, &mut view, last, false).await?;
        if fetched.end {
            break;
        }
        stall.check(view.stream_sequence, last)?;
        if fetched.gap {
            cursor.restart(view.stream_sequence + 1).await?;
        }
    }
    Ok(view)
}

/// Bounds a reading loop that restarts its consumer: an error once the
/// view has not moved for [`STALL_LIMIT`], however many restarts it took.
struct Stall {
    at: u64,
    since: std::time::Instant,
}

impl Stall {
    fn new(at: u64) -> Stall {
        Stall {
            at,
            since: std::time::Instant::now(),
        }
    }

    fn check(&mut self, at: u64, last: u64) -> Result<()> {
        if at != self.at {
            *self = Stall::new(at);
            return Ok(());
        }
        if self.since.elapsed() >= STALL_LIMIT {
            return Err(Error::Remote {
                op: "read the stream",
                reason: format!("no message for {STALL_LIMIT:?} at sequence {at} of {last}"),
            });
        }
        Ok(())
    }
}

/// A pull consumer reading the stream in order from the view's next
/// sequence, started over there whenever its deliveries skip a message
/// the stream still holds.
///
/// A message the server delivered but the view never folded (its pull
/// request was given up on, or the process that fetched it died before its
/// checkpoint) is delivered again only after `ack_wait`, or never (no acks),
/// while later ones keep coming: folding those would move the view past it
/// for good, and with `AckPolicy::All` their acknowledgement would drop it
/// from the consumer too. So the view folds strictly in stream order: a
/// message past the next one is taken only when the stream holds nothing
/// between (messages deleted by an operator or a limit, or on subjects
/// the filter leaves out: asked of the stream, one request per hole);
/// otherwise one was skipped, and the consumer is made again at the view's
/// next sequence.
struct Cursor {
    context: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    config: async_nats::jetstream::consumer::pull::Config,
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("durable_name", &self.config.durable_name)
            .finish_non_exhaustive()
    }
}

impl Cursor {
    /// A consumer of `config` (a durable one replaces any of its name)
    /// delivering from stream sequence `next`.
    async fn start(
        context: async_nats::jetstream::Context,
        stream: async_nats::jetstream::stream::Stream,
        config: async_nats::jetstream::consumer::pull::Config,
        next: u64,
    ) -> Result<Cursor> {
        let consumer = create_at(&stream, &config, next).await?;
        Ok(Cursor {
            context,
            stream,
            config,
            consumer,
        })
    }

    /// The stream sequence of the first message at or after `from` that
    /// the consumer's filter takes, as the stream holds it now; `None` when
    /// there is none.
    async fn next_held(&self, from: u64) -> Result<Option<u64>> {
        const OP: &str = "look up the stream's next message";
        let subject = format!("STREAM.MSG.GET.{}", self.stream.cached_info().config.name);
        let request = serde_json::json!({"seq": from, "next_by_subj": self.config.filter_subject});
        let reply: serde_json::Value = self
            .context
            .request(subject, &request)
            .await
            .map_err(remote(OP))?;
        if let Some(sequence) = reply
            .pointer("/message/seq")
            .and_then(serde_json::Value::as_u64)
        {
            return Ok(Some(sequence));
        }
        match reply
            .pointer("/error/code")
            .and_then(serde_json::Value::as_u64)
        {
            Some(404) => Ok(None),
            _ => Err(Error::Remote {
                op: OP,
                reason: reply.to_string(),
            }),
        }
    }

    /// Drops the consumer and makes it again at stream sequence `next`.
    async fn restart(&mut self, next: u64) -> Result<()> {
        tracing::info!(
            next,
            "fleet consumer skipped a message; starting it again where the view is"
        );
        if self.config.durable_name.is_none() {
            // An ephemeral one would expire by itself; it goes at once.
            // (`create_at` replaces a durable one of the same name.)
            let name = self.consumer.cached_info().name.clone();
            let _ = self.stream.delete_consumer(&name).await;
        }
        self.consumer = create_at(&self.stream, &self.config, next).await?;
        Ok(())
    }
}

/// Makes a consumer of `config` delivering from stream sequence `next`,
/// replacing a durable consumer of the same name (whose delivery state
/// speaks for a view that may never have been saved). A cluster electing a
/// stream leader (a node just restarted) answers consumer requests late
/// for a few seconds: retried until STALL_LIMIT.
async fn create_at(
    stream: &async_nats::jetstream::stream::Stream,
    config: &async_nats::jetstream::consumer::pull::Config,
    next: u64,
) -> Result<async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>>
{
    use async_nats::jetstream::consumer::DeliverPolicy;
    let mut config = config.clone();
    config.deliver_policy = DeliverPolicy::ByStartSequence {
        start_sequence: next,
    };
    if let Some(name) = &config.durable_name {
        // Not found is fine: only a consumer of the name that exists must go.
        let _ = stream.delete_consumer(name).await;
    }
    let started = std::time::Instant::now();
    loop {
        match stream.create_consumer(config.clone()).await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if started.elapsed() < STALL_LIMIT => {
                tracing::info!(error = %e, "creating the fleet consumer; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(remote("create the fleet consumer")(e)),
        }
    }
}

/// A durable fleet reader: a durable JetStream consumer named `name`, and a
/// checkpoint of the folded view in a local directory, so that a restart
/// reads only what arrived since.
///
/// Each batch is folded, the checkpoint written (temporary file, fsync,
/// rename), and only then the batch acknowledged (the consumer acks all up
/// to a message). The checkpoint, not the consumer, says where reading
/// resumes: `open` makes the durable consumer again at the checkpoint's
/// next sequence, so messages a crashed process fetched but never
/// checkpointed are read again, not acknowledged past. One process reads
/// through a given name at a time.
#[derive(Debug)]
pub struct FleetConsumer {
    view: FleetView,
    cursor: Cursor,
    state_dir: std::path::PathBuf,
}

const FLEET_CHECKPOINT_VERSION: u32 = 1;

impl FleetConsumer {
    /// Opens (or creates) the durable consumer `name` and the view
    /// checkpointed in `state_dir` (a missing, damaged or differently
    /// configured checkpoint starts the view over, from the stream's start).
    pub async fn open(
        options: &ShipOptions,
        name: &str,
        state_dir: &std::path::Path,
        windows: Vec<Duration>,
    ) -> Result<FleetConsumer> {
        use async_nats::jetstream::consumer::{pull, AckPolicy};
        let view = match load_view(state_dir, name, &windows) {
            Ok(Some(view)) => view,
            Ok(None) => FleetView::new(windows.clone()),
            Err(reason) => {
                tracing::warn!(%reason, "fleet checkpoint unusable; folding the stream from its start");
                FleetView::new(windows.clone())
            }
        };
        let js = options.connect().await?;
        let stream = js
            .get_stream(&options.stream)
            .await
            .map_err(remote("find the JetStream stream"))?;
        let config = pull::Config {
            durable_name: Some(name.to_string()),
            ack_policy: AckPolicy::All,
            filter_subject: format!("{}.>", options.subject_prefix),
            ..Default::default()
        };
        let cursor = Cursor::start(js, stream, config, view.stream_sequence + 1)
            .await
            .map_err(|e| match e {
                Error::Remote { reason, .. } => Error::Remote {
                    op: "create the durable fleet consumer",
                    reason,
                },
                other => other,
            })?;
        Ok(FleetConsumer {
            view,
            cursor,
            state_dir: state_dir.to_path_buf(),
        })
    }

    /// Folds everything the stream holds now; returns the messages folded.
    pub async fn catch_up(&mut self) -> Result<u64> {
        let last = self
            .cursor
            .stream
            .info()
            .await
            .map_err(remote("read the stream's state"))?
            .state
            .last_sequence;
        let before = self.view.stream_sequence;
        let mut stall = Stall::new(before);
        while self.view.stream_sequence < last {
            let fetched = fold_until(&self.cursor, &mut self.view, last, true).await?;
            let acknowledged = fetched.last.is_some();
            if let Some(message) = fetched.last {
                self.save()?;
                // Confirmed by the server, so an acknowledgement still in
                // the client's buffer is not lost when the caller drops the
                // consumer right after `catch_up`.
                message
                    .double_ack()
                    .await
                    .map_err(remote("acknowledge to the fleet consumer"))?;
            }
            if fetched.end {
                break;
            }
            stall.check(self.view.stream_sequence, last)?;
            if fetched.gap {
                self.cursor.restart(self.view.stream_sequence + 1).await?;
            } else if !acknowledged {
                break;
            }
        }
        Ok(self.view.stream_sequence - before)
    }

    /// The view folded so far.
    pub fn view(&self) -> &FleetView {
        &self.view
    }

    /// The view, giving up the consumer.
    pub fn into_view(self) -> FleetView {
        self.view
    }

    fn save(&self) -> Result<()> {
        let checkpoint = crate::projection::checkpoint::Checkpoint {
            snapshot_version: FLEET_CHECKPOINT_VERSION,
            offset: self.view.stream_sequence,
            anchor_crc: 0,
            anchor_ts: 0,
            store_id: 0,
            snapshot: self.view.snapshot(),
        };
        let name = checkpoint_name(self.cursor.consumer.cached_info().name.as_str());
        write_durably(&self.state_dir, &name, &checkpoint.encode())
    }
}

fn checkpoint_name(consumer: &str) -> String {
    format!("{consumer}.fleet")
}

fn load_view(
    dir: &std::path::Path,
    name: &str,
    windows: &[Duration],
) -> std::result::Result<Option<FleetView>, String> {
    let path = dir.join(checkpoint_name(name));
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let checkpoint = crate::projection::checkpoint::Checkpoint::decode(&bytes)?;
    if checkpoint.snapshot_version != FLEET_CHECKPOINT_VERSION {
        return Err(format!(
            "fleet checkpoint version {}",
            checkpoint.snapshot_version
        ));
    }
    FleetView::restore(windows.to_vec(), &checkpoint.snapshot).map(Some)
}

/// What one call of [`fold_until`] ended with.
struct Fetched {
    /// With `acked`: the message to acknowledge once the view is saved (the
    /// highest stream sequence delivered, all folded).
    last: Option<async_nats::jetstream::Message>,
    /// The consumer skipped a message (see [`Cursor`]): folding stopped
    /// before it, and the consumer must start again at the view's next
    /// sequence.
    gap: bool,
    /// The stream holds nothing more for the filter (what was not
    /// delivered up to `last` was deleted, or is on other subjects): caught
    /// up.
    end: bool,
}

/// Fetches from `consumer` and folds, in stream order, until the view
/// reaches stream sequence `last`. With `acked`, it returns after each
/// batch, which the caller saves before acknowledging its last message
/// (the consumer acks all).
async fn fold_until(
    cursor: &Cursor,
    view: &mut FleetView,
    last: u64,
    acked: bool,
) -> Result<Fetched> {
    let consumer = &cursor.consumer;
    let mut last_message = None;
    while view.stream_sequence < last {
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(FETCH_EXPIRES)
            .messages()
            .await
            .map_err(remote("fetch from the stream"))?;
        let mut got = 0;
        // The server ends a pull request with a status when it expires. If
        // that status never comes (the request was lost while the consumer
        // was recreated or its leader moved), the batch would stay open
        // forever: bound each wait, so a silent stream ends this batch and
        // counts toward STALL_LIMIT instead of hanging the caller.
        while let Ok(Some(message)) =
            tokio::time::timeout(FETCH_EXPIRES + FETCH_GRACE, batch.next()).await
        {
            let message = message.map_err(remote("fetch from the stream"))?;
            got += 1;
            let info = message
                .info()
                .map_err(remote("read a message's metadata"))?;
            let sequence = info.stream_sequence;
            if sequence > view.stream_sequence + 1
                && cursor.next_held(view.stream_sequence + 1).await? != Some(sequence)
            {
                // A message between that the stream still holds was
                // delivered and never folded.
                return Ok(Fetched {
                    last: last_message.map(|(_, m)| m),
                    gap: true,
                    end: false,
                });
            }
            if sequence <= view.stream_sequence {
                // Delivered again (after a restart, or because the server
                // never got an acknowledgement): folded already. It must
                // still be acknowledged: once `max_ack_pending` of these are
                // outstanding the consumer delivers nothing new, and only
                // redelivers them, every `ack_wait`, forever.
                if acked && last_message.as_ref().is_none_or(|(s, _)| *s < sequence) {
                    last_message = Some((sequence, message));
                }
                continue;
            }
            let headers = message.headers.as_ref();
            let header = |name: &str| {
                headers
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            let shipped = match (
                header(STORE_HEADER),
                header(OFFSET_HEADER).and_then(|o| o.parse::<u64>().ok()),
                header(TIME_HEADER).and_then(|t| t.parse::<i64>().ok()),
            ) {
                (Some(store), Some(offset), Some(time)) => Some((store, offset, time)),
                _ => None,
            };
            match shipped {
                Some((store, offset, time)) => {
                    view.fold_new(&store, offset, time, &message.payload)?;
                    // A head is checked on a repeated message too: if the
                    // copy folded first was another record (published by
                    // someone else ahead of the shipper), the head of the
                    // real one is where that shows (review 35 finding 3).
                    if let Some(head) = header(HEAD_HEADER) {
                        view.check_head(&store, offset, &head);
                    }
                }
                None => {
                    // Not a shipper's message: skipped and counted, never a
                    // stall (nothing a checkpoint resumes from could get
                    // past it otherwise).
                    tracing::warn!(
                        sequence,
                        subject = %message.subject,
                        "a message on the fleet's subjects without (valid) enforcelog headers: skipped"
                    );
                    view.foreign += 1;
                }
            }
            view.stream_sequence = sequence;
            if acked {
                last_message = Some((sequence, message));
            }
        }
        if acked && last_message.is_some() {
            return Ok(Fetched {
                last: last_message.map(|(_, m)| m),
                gap: false,
                end: false,
            });
        }
        if got == 0 {
            match cursor.next_held(view.stream_sequence + 1).await? {
                // Nothing was delivered because nothing is left: the rest up
                // to `last` was deleted, or is on subjects the filter leaves
                // out.
                None => {
                    return Ok(Fetched {
                        last: last_message.map(|(_, m)| m),
                        gap: false,
                        end: true,
                    })
                }
                // The stream holds the next message and a whole pull
                // request went by without it: its delivery was lost (and
                // would come back only after `ack_wait`, or never without
                // acks). Start the consumer again where the view is; the
                // caller bounds restarts that bring nothing (`Stall`).
                Some(_) => {
                    return Ok(Fetched {
                        last: last_message.map(|(_, m)| m),
                        gap: true,
                        end: false,
                    })
                }
            }
        }
    }
    Ok(Fetched {
        last: last_message.map(|(_, m)| m),
        gap: false,
        end: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_json(store: crate::log::StoreId, leaves: &[Hash], size: u64) -> String {
        let head = TreeHead {
            log: Some(crate::audit::head::LogName {
                store_id: store,
                shard: 0,
            }),
            size,
            root: crate::audit::merkle::root(&leaves[..size as usize]),
            time: "2026-12-05T00:00:00Z".into(),
        };
        head::to_json(&head, None)
    }

    #[test]
    fn shipped_heads_are_checked_against_the_records_received() {
        let id = "0123456789abcdef0123456789abcdef"
            .parse::<crate::log::StoreId>()
            .unwrap();
        let store = id.to_string();
        let records: Vec<(u64, i64, Vec<u8>)> = (0..10u64)
            .map(|i| (i, i as i64, vec![i as u8; 3]))
            .collect();
        let leaves: Vec<Hash> = records
            .iter()
            .map(|(o, t, p)| record_leaf_hash(*o, *t, p))
            .collect();
        let mut view = FleetView::new(vec![Duration::from_secs(86_400)]);
        for (o, t, p) in &records[..5] {
            assert!(view.fold_new(&store, *o, *t, p).unwrap());
        }
        view.check_head(&store, 4, &head_json(id, &leaves, 5));
        assert_eq!((view.heads_checked, view.heads_mismatched), (1, 0));
        assert_eq!(view.head_of(&store).map(|h| h.size), Some(5));
        // A root over other records, a size that is not the message's, a
        // head of another store: mismatched.
        let mut other = leaves.clone();
        other[2] = record_leaf_hash(2, 2, b"changed");
        view.check_head(&store, 4, &head_json(id, &other, 5));
        view.check_head(&store, 3, &head_json(id, &leaves, 5));
        let stranger = "fedcba9876543210fedcba9876543210"
            .parse::<crate::log::StoreId>()
            .unwrap();
        view.check_head(&store, 4, &head_json(stranger, &leaves, 5));
        assert_eq!(view.heads_mismatched, 3);
        // A record out of order: later heads cannot be checked.
        view.fold_new(&store, 7, 7, &records[7].2).unwrap();
        view.check_head(&store, 7, &head_json(id, &leaves, 8));
        view.check_head(&store, 7, "not json");
        assert_eq!((view.heads_checked, view.heads_unchecked), (1, 2));
    }

    #[test]
    fn a_restored_view_goes_on_checking_heads() {
        let id = "0123456789abcdef0123456789abcdef"
            .parse::<crate::log::StoreId>()
            .unwrap();
        let store = id.to_string();
        let windows = vec![Duration::from_secs(86_400)];
        let records: Vec<(u64, i64, Vec<u8>)> =
            (0..8u64).map(|i| (i, i as i64, vec![i as u8; 5])).collect();
        let leaves: Vec<Hash> = records
            .iter()
            .map(|(o, t, p)| record_leaf_hash(*o, *t, p))
            .collect();
        let mut view = FleetView::new(windows.clone());
        for (o, t, p) in &records[..5] {
            view.fold_new(&store, *o, *t, p).unwrap();
        }
        view.check_head(&store, 4, &head_json(id, &leaves, 5));
        let mut restored = FleetView::restore(windows.clone(), &view.snapshot()).unwrap();
        assert_eq!(restored.head_of(&store), view.head_of(&store));
        for (o, t, p) in &records[5..] {
            restored.fold_new(&store, *o, *t, p).unwrap();
        }
        restored.check_head(&store, 7, &head_json(id, &leaves, 8));
        assert_eq!(
            (
                restored.heads_checked,
                restored.heads_mismatched,
                restored.heads_unchecked
            ),
            (1, 0, 0)
        );
        assert_eq!(restored.head_of(&store).map(|h| h.size), Some(8));

        // A checkpoint written before shipped heads still restores; its
        // stores' heads are then unchecked, never mismatched.
        let history: Vec<(RuleKey, Vec<(u8, i64)>)> = Vec::new();
        let old = rmp_serde::to_vec(&(
            view.stats.snapshot(),
            history,
            &view.seen,
            view.entries,
            view.duplicates,
            view.stream_sequence,
        ))
        .unwrap();
        let mut older = FleetView::restore(windows, &old).unwrap();
        assert_eq!(older.entries, 5);
        for (o, t, p) in &records[5..] {
            older.fold_new(&store, *o, *t, p).unwrap();
        }
        older.check_head(&store, 7, &head_json(id, &leaves, 8));
        assert_eq!((older.heads_checked, older.heads_unchecked), (0, 1));
    }

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
