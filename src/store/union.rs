//! The union of a directory's shards for replay and subscriptions: every
//! writer's entries, each tagged with its shard and the shard's store id,
//! from a position a reader can save and resume from.
//!
//! A shard is a log of its own with its own offsets (see
//! [`shards`](super::shards)), so a position across shards is one offset
//! per shard ([`Positions`]), and an event's identity is
//! `(store id, offset)`. There is **no order across shards**: no clock or
//! counter orders two writer processes' commits, and none is invented.
//! Replay goes shard by shard, ascending; a subscription takes turns
//! among the shards that have something to deliver.
//!
//! What a union reader sees: its own shard's entries as they commit
//! (read-your-writes), and the other shards' as of the store's last look
//! at them (the `enforcelog-shards` refresher, every
//! `shard_refresh_interval`, or [`Store::refresh`]): what their writers
//! had made durable then.
//!
//! Invariants:
//! - within a shard, entries come in offset order, each exactly once: a
//!   shard's position moves only to one past the entry just delivered;
//! - a saved shard's store id is checked against the shard's before
//!   anything of it is read (a position never resumes in another store);
//! - a shard not named in the position is read from its first entry (a
//!   shard created after the position was taken is read whole).
//!
//! Like [`Subscription`](super::Subscription), a union subscription reads
//! the logs themselves and keeps no queue: a slow reader costs no memory.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::task::Poll;

use serde::{Deserialize, Serialize};

use super::subscribe::{pause_async, POLL};
use super::{decode_entry, Store};
use crate::error::{Error, Result};
use crate::event::Entry;
use crate::log::{Log, LogReader, StoreId};

/// Where a union reader is in one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPosition {
    /// The shard's store id, once known: a position is refused by a shard
    /// with another id.
    pub store_id: Option<StoreId>,
    /// The offset of the shard's next entry to read.
    pub next_offset: u64,
}

/// A position across every shard of a directory: for each shard, the next
/// offset to read. A shard it does not name is read from offset 0.
///
/// Serializable, so that a reader can checkpoint it with what it folded
/// and resume exactly after it. In JSON:
/// `{"0":{"store_id":"<32 hex>","next_offset":12},"1":{...}}`.
///
/// ```
/// use enforcelog::Positions;
///
/// let mut at = Positions::new();
/// at.set(2, 40);
/// assert_eq!((at.next_offset(2), at.next_offset(0)), (40, 0));
/// let saved = serde_json::to_string(&at)?;
/// assert_eq!(saved, r#"{"2":{"store_id":null,"next_offset":40}}"#);
/// assert_eq!(serde_json::from_str::<Positions>(&saved)?, at);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Positions {
    shards: BTreeMap<u32, ShardPosition>,
}

impl Positions {
    /// The start of every shard.
    pub fn new() -> Positions {
        Positions::default()
    }

    /// The next offset to read in `shard` (0 for a shard not named).
    pub fn next_offset(&self, shard: u32) -> u64 {
        self.shards.get(&shard).map_or(0, |p| p.next_offset)
    }

    /// The position in `shard`, if named.
    pub fn get(&self, shard: u32) -> Option<ShardPosition> {
        self.shards.get(&shard).copied()
    }

    /// Sets the next offset to read in `shard` (keeping its store id).
    pub fn set(&mut self, shard: u32, next_offset: u64) {
        self.shards
            .entry(shard)
            .or_insert(ShardPosition {
                store_id: None,
                next_offset,
            })
            .next_offset = next_offset;
    }

    /// The shards named, ascending, with their positions.
    pub fn iter(&self) -> impl Iterator<Item = (u32, ShardPosition)> + '_ {
        self.shards.iter().map(|(s, p)| (*s, *p))
    }

    /// Moves `shard` past an entry just delivered.
    fn advance(&mut self, shard: u32, store_id: Option<StoreId>, next_offset: u64) {
        let at = self.shards.entry(shard).or_insert(ShardPosition {
            store_id,
            next_offset,
        });
        debug_assert!(at.next_offset <= next_offset, "positions never go back");
        at.next_offset = next_offset;
        at.store_id = at.store_id.or(store_id);
    }
}

/// One entry of the union, with the shard it is in.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardEntry {
    /// The shard (0: the root store).
    pub shard: u32,
    /// The shard's store id: with the entry's offset, the event's identity
    /// across the directory (`None` only for a store made before ids).
    pub store_id: Option<StoreId>,
    /// The entry; its offset is the shard's.
    pub entry: Entry,
}

/// What a union subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum UnionDelivery {
    /// The next entry of some shard.
    Entry(ShardEntry),
    /// The subscriber is this many entries behind, over all shards. Told
    /// once each time it crosses the lag threshold; no entry is lost.
    Lagging {
        /// Entries visible and not yet delivered.
        behind: u64,
    },
}

/// One shard's log as the store reads it now.
struct Source {
    shard: u32,
    log: Log,
}

impl Store {
    /// The store's own shard and every other shard as of the last refresh,
    /// ascending; fails, as `stats` and `query` do, while the last refresh
    /// failed (a shard could be missing from the view, and a union reader
    /// must not pass over it unawares).
    fn shard_logs_checked(&self, own: Log) -> Result<Vec<Source>> {
        if let Some(reason) = &self.inner.peers.current().failure {
            return Err(Error::ProjectionStalled {
                reason: format!("the other shards of the store cannot be read: {reason}"),
            });
        }
        Ok(self.shard_logs(own))
    }

    /// [`Store::shard_logs_checked`] without the check (for the lag).
    fn shard_logs(&self, own: Log) -> Vec<Source> {
        let view = self.inner.peers.current();
        let mut sources = vec![Source {
            shard: self.inner.shard,
            log: own,
        }];
        sources.extend(view.peers.iter().map(|p| Source {
            shard: p.shard,
            log: p.log.clone(),
        }));
        sources.sort_by_key(|s| s.shard);
        sources
    }

    /// The end of every shard this store sees now: a position to
    /// [`subscribe_union`](Store::subscribe_union) from to get only what
    /// commits (or becomes visible) from now on. Fails while the other
    /// shards cannot be read (the last refresh failed).
    pub fn union_end(&self) -> Result<Positions> {
        let mut end = Positions::new();
        for source in self.shard_logs_checked(self.inner.log())? {
            end.advance(
                source.shard,
                source.log.store_id(),
                source.log.next_offset(),
            );
        }
        Ok(end)
    }

    /// Every entry of every shard of the directory from `from` on, as the
    /// store sees them when the call begins (its own shard's committed
    /// entries; the other shards' as of the last refresh: call
    /// [`Store::refresh`] first for the latest). Shard by shard, ascending,
    /// each in offset order; there is no order across shards.
    ///
    /// Fails with [`Error::BadPosition`] if `from` names a shard whose
    /// store id differs, or, even after a refresh, one the store does not
    /// see or a position beyond a shard's end. An entry that does not decode is an `Err` item, and the replay
    /// goes on past it; a read error ends it (after the `Err` item).
    ///
    /// A user projection folded over the union equals what the store's own
    /// statistics say:
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use enforcelog::{Action, Entry, Event, Positions, Store, StoreOptions, UnionDelivery};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let first = Store::open(dir.path(), StoreOptions::default())?;
    /// let second = Store::open(dir.path(), StoreOptions::default())?; // another writer: shard 1
    /// first.record_blocking(Event::new("acme", "budget", Action::Killed))?;
    /// second.record_blocking(Event::new("acme", "budget", Action::Blocked))?;
    /// second.record_blocking(Event::new("globex", "rate", Action::Stopped))?;
    /// first.refresh()?; // see shard 1 now, not within `shard_refresh_interval`
    ///
    /// // The user's projection: events per (tenant, rule), over every shard.
    /// let mut counts = BTreeMap::<(String, String), u64>::new();
    /// let mut replay = first.replay_union(&Positions::new())?;
    /// for item in &mut replay {
    ///     if let Entry::Event(e) = item?.entry {
    ///         *counts.entry((e.tenant_id, e.rule_id)).or_default() += 1;
    ///     }
    /// }
    /// for ((tenant, rule), count) in &counts {
    ///     assert_eq!(first.stats(tenant, rule, None)?.total_count, *count);
    /// }
    /// assert_eq!(counts.values().sum::<u64>(), 3);
    ///
    /// // Saved with the projection, the position resumes after what it folded.
    /// let saved = serde_json::to_string(replay.positions())?;
    /// second.record_blocking(Event::new("acme", "budget", Action::Aborted))?;
    /// first.refresh()?;
    /// let mut live = first.subscribe_union(serde_json::from_str(&saved)?)?;
    /// let UnionDelivery::Entry(next) = live.next_blocking()? else { panic!("not lagging") };
    /// assert_eq!((next.shard, next.entry.offset()), (1, 2));
    /// assert_eq!(next.store_id, second.store_id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn replay_union(&self, from: &Positions) -> Result<UnionReplay> {
        let sources = self.checked_sources(from, self.inner.log())?;
        let plan = sources
            .into_iter()
            .map(|s| {
                let end = s.log.next_offset();
                (s, end)
            })
            .collect();
        Ok(UnionReplay {
            plan,
            current: None,
            positions: from.clone(),
            done: false,
        })
    }

    /// Entries of every shard from `from` on: first those the store sees
    /// now, then each as it becomes visible: the own shard's as they
    /// commit, the other shards' as a refresh finds them (shards created
    /// later included, from their first entry). Each `(shard, offset)` is
    /// delivered once, and within a shard in offset order; shards take
    /// turns, with no order across them. [`UnionSubscription::position`]
    /// says where to resume. `from` is checked as for
    /// [`Store::replay_union`].
    pub fn subscribe_union(&self, from: Positions) -> Result<UnionSubscription> {
        // Watching first: whatever commits after the check below wakes it.
        let own = self.inner.log();
        let own_watch = own.watch();
        let peers_watch = self.inner.peers.watch();
        self.checked_sources(&from, own.clone())?;
        Ok(UnionSubscription {
            store: self.clone(),
            positions: from,
            own,
            own_watch,
            peers_watch,
            readers: BTreeMap::new(),
            turn: None,
            lag_warning: self.inner.options.subscriber_lag_warning,
            lagging: false,
        })
    }
}

impl Store {
    /// The shards as the store sees them, once `from` is known to resume
    /// in them. A position ahead of what the store has seen (a shard not
    /// seen yet, or grown since the last refresh) is checked again after a
    /// refresh before it is refused.
    fn checked_sources(&self, from: &Positions, own: Log) -> Result<Vec<Source>> {
        let sources = self.shard_logs_checked(own.clone())?;
        if check_position(from, &sources).is_ok() {
            return Ok(sources);
        }
        self.refresh()?;
        let sources = self.shard_logs_checked(own)?;
        check_position(from, &sources)?;
        Ok(sources)
    }
}

/// Refuses a position that cannot be resumed against `sources`.
fn check_position(from: &Positions, sources: &[Source]) -> Result<()> {
    for (shard, at) in from.iter() {
        let Some(source) = sources.iter().find(|s| s.shard == shard) else {
            return Err(Error::BadPosition {
                shard,
                reason: "the store sees no such shard in the directory (Store::refresh looks \
                         again)"
                    .into(),
            });
        };
        check_identity(shard, at.store_id, source.log.store_id())?;
        let end = source.log.next_offset();
        if at.next_offset > end {
            return Err(Error::BadPosition {
                shard,
                reason: format!(
                    "offset {} is beyond the shard's end (next offset {end})",
                    at.next_offset
                ),
            });
        }
    }
    Ok(())
}

/// Refuses a shard whose store id is not the one saved.
fn check_identity(shard: u32, saved: Option<StoreId>, found: Option<StoreId>) -> Result<()> {
    match (saved, found) {
        (Some(saved), Some(found)) if saved != found => Err(Error::BadPosition {
            shard,
            reason: format!(
                "it was taken in store {saved}, and this shard is store {found} (another \
                 directory, or the shard was replaced)"
            ),
        }),
        _ => Ok(()),
    }
}

/// Names the shard in an undecodable entry's error.
fn in_shard(shard: u32, error: Error) -> Error {
    match error {
        Error::BadPayload { offset, reason } => Error::BadPayload {
            offset,
            reason: format!("in shard {shard}: {reason}"),
        },
        other => other,
    }
}

/// A replay of the union: from [`Store::replay_union`].
pub struct UnionReplay {
    /// The shards left to read, with the end each had when the replay
    /// began.
    plan: VecDeque<(Source, u64)>,
    current: Option<(u32, Option<StoreId>, LogReader, u64)>,
    positions: Positions,
    done: bool,
}

impl std::fmt::Debug for UnionReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionReplay")
            .field("positions", &self.positions)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl UnionReplay {
    /// Where the replay is: past every entry it returned (an undecodable
    /// one included). Save it to resume with
    /// [`Store::replay_union`] or [`Store::subscribe_union`].
    pub fn positions(&self) -> &Positions {
        &self.positions
    }
}

impl Iterator for UnionReplay {
    type Item = Result<ShardEntry>;

    fn next(&mut self) -> Option<Result<ShardEntry>> {
        while !self.done {
            let (shard, store_id, reader, end) = match &mut self.current {
                Some(current) => current,
                None => {
                    let Some((source, end)) = self.plan.pop_front() else {
                        self.done = true;
                        return None;
                    };
                    let next = self.positions.next_offset(source.shard);
                    if next >= end {
                        continue;
                    }
                    match source.log.read_from(next) {
                        Ok(reader) => {
                            self.current
                                .insert((source.shard, source.log.store_id(), reader, end))
                        }
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            };
            let (shard, store_id, end) = (*shard, *store_id, *end);
            if self.positions.next_offset(shard) >= end {
                self.current = None;
                continue;
            }
            match reader.next() {
                // Shorter than when the replay began: only a read-only
                // refresh that found the shard cut back does that.
                None => self.current = None,
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(record)) => {
                    debug_assert_eq!(record.offset, self.positions.next_offset(shard));
                    self.positions.advance(shard, store_id, record.offset + 1);
                    let entry = decode_entry(&record).map_err(|e| in_shard(shard, e));
                    return Some(entry.map(|entry| ShardEntry {
                        shard,
                        store_id,
                        entry,
                    }));
                }
            }
        }
        None
    }
}

/// A live, gap-free, duplicate-free stream of every shard's entries: from
/// [`Store::subscribe_union`].
pub struct UnionSubscription {
    store: Store,
    positions: Positions,
    /// The store's own log (replaced when the store reopens it).
    own: Log,
    /// Woken on the own shard's commits (disconnected when its writer
    /// stops).
    own_watch: flume::Receiver<()>,
    /// Woken when a refresh published the other shards anew.
    peers_watch: flume::Receiver<()>,
    /// Open readers, by shard, with the log each reads.
    readers: BTreeMap<u32, (Log, LogReader)>,
    /// The shard that delivered last: the next turn starts after it.
    turn: Option<u32>,
    lag_warning: u64,
    lagging: bool,
}

impl std::fmt::Debug for UnionSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnionSubscription")
            .field("positions", &self.positions)
            .field("turn", &self.turn)
            .finish_non_exhaustive()
    }
}

impl UnionSubscription {
    /// Where the subscription is: past every entry delivered. Save it (it
    /// is serializable) to resume exactly after them.
    pub fn position(&self) -> &Positions {
        &self.positions
    }

    /// Entries visible and not yet delivered, over all shards.
    pub fn lag(&self) -> u64 {
        self.behind(&self.store.shard_logs(self.store.inner.log()))
    }

    fn behind(&self, sources: &[Source]) -> u64 {
        sources
            .iter()
            .map(|s| {
                s.log
                    .next_offset()
                    .saturating_sub(self.positions.next_offset(s.shard))
            })
            .sum()
    }

    /// The next delivery if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<UnionDelivery>> {
        self.follow_reopened_log();
        let sources = self.store.shard_logs_checked(self.own.clone())?;
        for source in &sources {
            let saved = self.positions.get(source.shard).and_then(|p| p.store_id);
            check_identity(source.shard, saved, source.log.store_id())?;
        }
        let behind = self.behind(&sources);
        if behind > self.lag_warning {
            if !self.lagging {
                self.lagging = true;
                return Ok(Some(UnionDelivery::Lagging { behind }));
            }
        } else {
            self.lagging = false;
        }
        if behind == 0 {
            return Ok(None);
        }
        // Turns: start after the shard that delivered last, so that a busy
        // shard cannot starve the others.
        let first = sources
            .iter()
            .position(|s| self.turn.is_none_or(|t| s.shard > t))
            .unwrap_or(0);
        for i in 0..sources.len() {
            let source = &sources[(first + i) % sources.len()];
            if source.log.next_offset() <= self.positions.next_offset(source.shard) {
                continue;
            }
            if let Some(entry) = self.read_one(source)? {
                self.turn = Some(source.shard);
                return Ok(Some(UnionDelivery::Entry(entry)));
            }
        }
        Ok(None)
    }

    /// The next entry of `source`, if its reader has one now.
    fn read_one(&mut self, source: &Source) -> Result<Option<ShardEntry>> {
        let shard = source.shard;
        let next = self.positions.next_offset(shard);
        let mut reader = match self.readers.remove(&shard) {
            Some((log, reader)) if log.same_as(&source.log) => reader,
            _ => source.log.read_from(next)?,
        };
        let failed = match reader.next() {
            None => {
                self.readers.insert(shard, (source.log.clone(), reader));
                return Ok(None);
            }
            Some(Ok(record)) => {
                debug_assert_eq!(record.offset, next, "subscriptions never skip");
                match decode_entry(&record) {
                    Ok(entry) => {
                        self.readers.insert(shard, (source.log.clone(), reader));
                        let store_id = source.log.store_id();
                        self.positions.advance(shard, store_id, record.offset + 1);
                        return Ok(Some(ShardEntry {
                            shard,
                            store_id,
                            entry,
                        }));
                    }
                    Err(e) => in_shard(shard, e),
                }
            }
            Some(Err(e)) => e,
        };
        // The reader is dropped: a new one starts at this entry and reports
        // it again, never skips it. The other shards get their turn first.
        self.turn = Some(shard);
        Err(failed)
    }

    /// Waits for the next delivery, blocking the thread.
    pub fn next_blocking(&mut self) -> Result<UnionDelivery> {
        loop {
            if let Some(delivery) = self.try_next_while_open()? {
                return Ok(delivery);
            }
            self.check_open()?;
            let disconnected = flume::Selector::new()
                .recv(&self.own_watch, |r| r.is_err())
                .recv(&self.peers_watch, |r| r.is_err())
                .wait();
            if disconnected {
                // The own writer stopped (the store may reopen its log) or
                // the store did: poll, as a disconnected channel would
                // otherwise answer at once, again and again.
                std::thread::sleep(POLL);
            }
        }
    }

    /// Waits for the next delivery.
    pub async fn next(&mut self) -> Result<UnionDelivery> {
        loop {
            if let Some(delivery) = self.try_next_while_open()? {
                return Ok(delivery);
            }
            self.check_open()?;
            let disconnected = {
                let mut own = pin!(self.own_watch.recv_async());
                let mut peers = pin!(self.peers_watch.recv_async());
                std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = own.as_mut().poll(cx) {
                        return Poll::Ready(r.is_err());
                    }
                    if let Poll::Ready(r) = peers.as_mut().poll(cx) {
                        return Poll::Ready(r.is_err());
                    }
                    Poll::Pending
                })
                .await
            };
            if disconnected {
                // As in `next_blocking`: wait a poll interval, no spin.
                pause_async().await;
            }
        }
    }

    /// [`UnionSubscription::try_next`] for the waits: once the store is
    /// closed, a failed last refresh of the other shards will never be
    /// followed by a good one, so the wait ends with `Closed` rather than
    /// answering `ProjectionStalled` to every call for good.
    fn try_next_while_open(&mut self) -> Result<Option<UnionDelivery>> {
        match self.try_next() {
            Err(Error::ProjectionStalled { .. })
                if self.store_closed() && self.store.inner.peers.current().failure.is_some() =>
            {
                Err(Error::Closed)
            }
            other => other,
        }
    }

    fn store_closed(&self) -> bool {
        self.store
            .inner
            .closed
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fails once the store was closed and nothing is left to deliver.
    fn check_open(&self) -> Result<()> {
        if self.store_closed() && self.lag() == 0 {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// After the store reopened a failed log, continues on the new one
    /// from the same offset.
    fn follow_reopened_log(&mut self) {
        let current = self.store.inner.log();
        if !current.same_as(&self.own) {
            self.own_watch = current.watch();
            self.own = current;
            self.readers.remove(&self.store.inner.shard);
        }
    }
}
