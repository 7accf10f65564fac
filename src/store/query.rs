//! Reading events back: filters, tenant isolation, pagination.

use std::ops::{ControlFlow, Range};

use super::keys::{self, Lookup};
use super::{decode_payload, Store};
use crate::error::{Error, Result};
use crate::event::{check_id, Action, Entry, Field, GapMarker, StoredEvent};
use crate::event_view::{self, EntryView, EventKeys};
use crate::format::keys_file::key_hash;
use crate::format::FrameView;
use crate::log::{ActiveBytes, Log, SealedBytes};

/// The most bytes of the active segment one `pread` reads for a query's
/// hits: hits closer together than this are read at once.
const ACTIVE_READ_MAX_BYTES: u64 = 4 << 20;

/// The most events one page returns.
pub const LIMIT_MAX: usize = 100_000;
/// Events per page when no limit is set.
pub const LIMIT_DEFAULT: usize = 1_000;

/// Which events a query returns.
///
/// A query names one tenant ([`Query::tenant`]) unless it explicitly asks
/// for every tenant ([`Query::all_tenants`]); an event of another tenant is
/// never returned, whatever the other filters say.
///
/// ```
/// use enforcelog::{Action, Query};
/// let query = Query::tenant("acme")
///     .rule("no-prod-writes")
///     .action(Action::Blocked)
///     .since_us(1_764_000_000_000_000)
///     .limit(100);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    tenant: Option<String>,
    rule: Option<String>,
    action: Option<Action>,
    run_id: Option<String>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    offsets: Range<u64>,
    first_shard: u32,
    limit: usize,
    include_gaps: bool,
}

impl Query {
    fn new(tenant: Option<String>) -> Self {
        Self {
            tenant,
            rule: None,
            action: None,
            run_id: None,
            since_us: None,
            until_us: None,
            offsets: 0..u64::MAX,
            first_shard: 0,
            limit: LIMIT_DEFAULT,
            include_gaps: false,
        }
    }

    /// Events of one tenant.
    pub fn tenant(tenant_id: impl Into<String>) -> Self {
        Self::new(Some(tenant_id.into()))
    }

    /// Events of every tenant (an explicit choice, for operators).
    pub fn all_tenants() -> Self {
        Self::new(None)
    }

    /// Only events of this rule.
    pub fn rule(mut self, rule_id: impl Into<String>) -> Self {
        self.rule = Some(rule_id.into());
        self
    }

    /// Only events with this action.
    pub fn action(mut self, action: Action) -> Self {
        self.action = Some(action);
        self
    }

    /// Only events of this run.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Only events enforced at or after this time (µs since the epoch).
    pub fn since_us(mut self, since_us: i64) -> Self {
        self.since_us = Some(since_us);
        self
    }

    /// Only events enforced strictly before this time (µs since the epoch).
    pub fn until_us(mut self, until_us: i64) -> Self {
        self.until_us = Some(until_us);
        self
    }

    /// Only events whose offset is in this range. Offsets count within
    /// one shard (see [`Query::from_shard`]): the start applies to the
    /// first shard read, the end to every shard.
    pub fn offsets(mut self, offsets: Range<u64>) -> Self {
        self.offsets = offsets;
        self
    }

    /// Only events at or after this offset (of the first shard read): how
    /// to ask for the next page (`page.next_offset`, with
    /// `page.next_shard`).
    pub fn from_offset(mut self, offset: u64) -> Self {
        self.offsets.start = offset;
        self
    }

    /// Starts at this shard of the directory (default 0): shards are read
    /// in ascending order, each in offset order, so shards below this one
    /// are skipped; with [`Query::from_offset`], the cursor of the next
    /// page (`page.next_shard`, `page.next_offset`).
    pub fn from_shard(mut self, shard: u32) -> Self {
        self.first_shard = shard;
        self
    }

    /// At most this many events per page (1..=100,000; default 1,000).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Also return the gap markers in the range scanned (they belong to no
    /// tenant: they count events the store failed to record).
    pub fn include_gaps(mut self, include: bool) -> Self {
        self.include_gaps = include;
        self
    }

    fn check(&self) -> Result<()> {
        let ids = [
            (Field::TenantId, &self.tenant),
            (Field::RuleId, &self.rule),
            (Field::RunId, &self.run_id),
        ];
        for (field, id) in ids {
            if let Some(id) = id {
                check_id(field, id).map_err(Error::InvalidFilter)?;
            }
        }
        if self.limit == 0 || self.limit > LIMIT_MAX {
            return Err(Error::InvalidOptions {
                name: "limit",
                reason: format!("{} is outside 1..={LIMIT_MAX}", self.limit),
            });
        }
        Ok(())
    }

    fn matches(&self, e: &StoredEvent) -> bool {
        self.matches_keys(&EventKeys {
            tenant_id: &e.tenant_id,
            rule_id: &e.rule_id,
            action: e.action,
            run_id: e.run_id.as_deref(),
            enforced_at_us: e.enforced_at_us,
            offset: e.offset,
        })
    }

    /// Whether an event, by its keys, is one the query asks for: on keys
    /// viewed in place (before anything is decoded) and on decoded events
    /// alike, so both give the same answer (`view` and `decode` agree on
    /// every field).
    fn matches_keys(&self, k: &EventKeys<'_>) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == k.tenant_id)
            && self.rule.as_deref().is_none_or(|r| r == k.rule_id)
            && self.action.is_none_or(|a| a == k.action)
            && self.run_id.as_deref().is_none_or(|r| k.run_id == Some(r))
            && self.since_us.is_none_or(|s| k.enforced_at_us >= s)
            && self.until_us.is_none_or(|u| k.enforced_at_us < u)
    }
}

/// One page of query results.
///
/// A store whose directory has several shards (several writers, see
/// [`Store::shard`]) answers from all of them: shard by shard in ascending
/// shard number, each in offset order. An event is named by its shard's
/// store id and its offset; `shards` says which shard each event is from.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// Matching events, by shard, then in log (offset) order.
    pub events: Vec<StoredEvent>,
    /// The shard of each event: `shards[i]` is the shard of `events[i]`.
    pub shards: Vec<u32>,
    /// Gap markers in the range scanned, with [`Query::include_gaps`].
    pub gaps: Vec<GapMarker>,
    /// Where the next page starts (`query.from_offset(n)`, with
    /// `next_shard`), or `None` when the scan reached the end of the range
    /// or of the log (of every shard). A cursor is a position in one
    /// shard's log, so pages never repeat an event; with one shard they
    /// skip none either, even while events are appended (with several, an
    /// event appended to a shard the scan has left is not on later pages).
    /// Use [`QueryPage::next_query`]: `from_offset` alone restarts at shard 0.
    pub next_offset: Option<u64>,
    /// The shard `next_offset` is in (`query.from_shard(n)`); `None` when
    /// `next_offset` is.
    pub next_shard: Option<u32>,
    /// Entries in the range scanned that do not decode (not store
    /// payloads, written around the store): skipped, and counted here.
    pub undecodable: u64,
    /// Entries in the range scanned lost to damage on disk (holes, see
    /// [`LostEntry`](crate::LostEntry)): whose they were is unknown, so
    /// when this is not zero the page may lack events of any tenant.
    pub lost: u64,
}

impl QueryPage {
    /// The query for the page after this one (`query` from this page's
    /// cursor), or `None` when this page was the last.
    ///
    /// ```
    /// # use enforcelog::{Action, Event, Query, Store, StoreOptions};
    /// # let dir = tempfile::tempdir()?;
    /// # let store = Store::open(dir.path(), StoreOptions::default())?;
    /// # for _ in 0..5 { store.record_blocking(Event::new("acme", "r", Action::Blocked))?; }
    /// let mut query = Query::tenant("acme").limit(2);
    /// let mut seen = 0;
    /// loop {
    ///     let page = store.query(&query)?;
    ///     seen += page.events.len();
    ///     match page.next_query(&query) {
    ///         Some(next) => query = next,
    ///         None => break,
    ///     }
    /// }
    /// assert_eq!(seen, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn next_query(&self, query: &Query) -> Option<Query> {
        let offset = self.next_offset?;
        let shard = self.next_shard.unwrap_or(query.first_shard);
        Some(query.clone().from_shard(shard).from_offset(offset))
    }
}

/// How the scan of one shard ended.
enum Scan {
    /// The page is full; the next page starts at this offset of the same
    /// shard, if the shard has more to read.
    Full(Option<u64>),
    /// The shard has nothing more in range.
    Exhausted,
}

impl Store {
    /// Runs a query. Time ranges skip every part of the log whose index
    /// bounds lie outside the range, without reading it.
    ///
    /// The other shards of the directory are read as of their last
    /// refresh (see [`Store::refresh`]); this store's own shard as of now.
    pub fn query(&self, query: &Query) -> Result<QueryPage> {
        let page = self.query_page(query)?;
        // Counted once the page is final: a segment read through its key
        // index and then dropped (`Undo`) is read again by scan, and its
        // records must not count twice.
        if page.undecodable > 0 {
            self.inner
                .counters
                .undecodable_read
                .fetch_add(page.undecodable, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(page)
    }

    /// The page of [`Store::query`], before it is counted.
    fn query_page(&self, query: &Query) -> Result<QueryPage> {
        query.check()?;
        let view = self.inner.peers.current();
        if let Some(reason) = &view.failure {
            return Err(Error::ProjectionStalled {
                reason: format!("the other shards of the store cannot be read: {reason}"),
            });
        }
        let mut logs: Vec<(u32, Log)> = view
            .peers
            .iter()
            .map(|p| (p.shard, p.log.clone()))
            .collect();
        logs.push((self.inner.shard, self.inner.log()));
        logs.sort_unstable_by_key(|(shard, _)| *shard);
        logs.retain(|(shard, _)| *shard >= query.first_shard);
        let mut page = QueryPage {
            events: Vec::new(),
            shards: Vec::new(),
            gaps: Vec::new(),
            next_offset: None,
            next_shard: None,
            undecodable: 0,
            lost: 0,
        };
        for (i, (shard, log)) in logs.iter().enumerate() {
            let start = if *shard == query.first_shard {
                query.offsets.start
            } else {
                0
            };
            if let Scan::Full(next) = self.scan_shard(query, *shard, log, start, &mut page)? {
                // The next page starts where this one stopped, or at the
                // start of the next shard.
                let cursor = match next {
                    Some(offset) => Some((*shard, offset)),
                    None => logs.get(i + 1).map(|(next_shard, _)| (*next_shard, 0)),
                };
                page.next_shard = cursor.map(|c| c.0);
                page.next_offset = cursor.map(|c| c.1);
                return Ok(page);
            }
        }
        Ok(page)
    }

    /// Adds the matches of one shard's log, from `start`, to `page`, until
    /// the page is full. A query for one tenant or one run reads each
    /// sealed segment through its key index (`store::keys`) where it can,
    /// and the rest of the log (the active segment, segments that cannot be
    /// indexed) by scan; both hand records, in offset order, to the same
    /// [`Store::take_record`], so pages, cursors and counts do not depend
    /// on which path read them.
    fn scan_shard(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        start: u64,
        page: &mut QueryPage,
    ) -> Result<Scan> {
        if start >= query.offsets.end || start >= log.next_offset() {
            return Ok(Scan::Exhausted);
        }
        let since = query.since_us.unwrap_or(i64::MIN);
        let until = query.until_us.map_or(i64::MAX, |u| u.saturating_sub(1));
        if since > until {
            return Ok(Scan::Exhausted);
        }
        let time_us = since..=until;
        let indexed = (query.tenant.is_some() || query.run_id.is_some()) && !self.scan_only();
        let sealed = if indexed {
            log.sealed_segments()
        } else {
            Vec::new()
        };
        let mut from = start;
        for segment in &sealed {
            if segment.next_offset() <= from {
                continue;
            }
            if from >= query.offsets.end {
                return Ok(Scan::Exhausted);
            }
            if from < segment.base_offset() {
                // A segment left out (read through its rebuild): by scan.
                let to = segment.base_offset();
                if let Some(done) = self.scan_range(query, shard, log, from..to, &time_us, page)? {
                    return Ok(done);
                }
                from = to;
            }
            let mut outcome =
                self.index_segment(query, shard, log, segment, from, &time_us, page)?;
            if let Indexed::Dropped = outcome {
                // Built again from the segment's verified batches.
                outcome = self.index_segment(query, shard, log, segment, from, &time_us, page)?;
            }
            match outcome {
                Indexed::Done(done) => return Ok(done),
                Indexed::Next => {}
                Indexed::Unusable | Indexed::Dropped => {
                    let range = from..segment.next_offset();
                    if let Some(done) = self.scan_range(query, shard, log, range, &time_us, page)? {
                        return Ok(done);
                    }
                }
            }
            from = segment.next_offset();
        }
        if indexed && from < query.offsets.end {
            let active = log.active_segment();
            if from < active.base_offset {
                let to = active.base_offset;
                if let Some(done) = self.scan_range(query, shard, log, from..to, &time_us, page)? {
                    return Ok(done);
                }
                from = to;
            }
            if from < active.next_offset {
                let (mut outcome, mut covered) =
                    self.index_active(query, shard, log, &active, from, &time_us, page)?;
                if let Indexed::Dropped = outcome {
                    (outcome, covered) =
                        self.index_active(query, shard, log, &active, from, &time_us, page)?;
                }
                match outcome {
                    Indexed::Done(done) => return Ok(done),
                    Indexed::Next => from = from.max(covered),
                    Indexed::Unusable | Indexed::Dropped => {}
                }
            }
        }
        // Past what the key indexes cover (`covered_until`): by scan.
        Ok(self
            .scan_range(query, shard, log, from..u64::MAX, &time_us, page)?
            .unwrap_or(Scan::Exhausted))
    }

    /// Whether queries ignore the key indexes (tests compare both paths).
    fn scan_only(&self) -> bool {
        self.inner
            .keys_disabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads `offsets` of the log by scan; `Some` when the page is done.
    fn scan_range(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        offsets: Range<u64>,
        time_us: &std::ops::RangeInclusive<i64>,
        page: &mut QueryPage,
    ) -> Result<Option<Scan>> {
        if offsets.start >= log.next_offset() {
            return Ok(None);
        }
        // Gap markers are stamped with the time they were written; a time
        // range applies to them too.
        let mut done = None;
        log.scan(offsets.start, time_us.clone(), |frame| {
            if frame.offset >= offsets.end {
                return ControlFlow::Break(());
            }
            // Most records a tenant's (or a run's) query passes are someone
            // else's: reject them on their keys, with no decode.
            if let Ok(EntryView::Event(keys)) =
                event_view::view(frame.offset, frame.timestamp_us, frame.payload)
            {
                if !query.matches_keys(&keys) {
                    if frame.offset >= query.offsets.end {
                        done = Some(Scan::Exhausted);
                        return ControlFlow::Break(());
                    }
                    return ControlFlow::Continue(());
                }
            }
            let entry = decode_payload(frame.offset, frame.timestamp_us, frame.payload);
            match self.take_record(query, shard, log, frame.offset, entry, page) {
                Some(scan) => {
                    done = Some(scan);
                    ControlFlow::Break(())
                }
                None => ControlFlow::Continue(()),
            }
        })?;
        Ok(done)
    }

    /// Reads one sealed segment, from `from`, through its key index: the
    /// frames the postings name, each verified, in position (= offset)
    /// order. A posting that fails verification drops the index and undoes
    /// what this segment added to the page: the caller builds the index
    /// again from the segment (or scans it).
    #[expect(clippy::too_many_arguments, reason = "one step of scan_shard's loop")]
    fn index_segment(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        segment: &SealedBytes,
        from: u64,
        time_us: &std::ops::RangeInclusive<i64>,
        page: &mut QueryPage,
    ) -> Result<Indexed> {
        let own = shard == self.inner.shard;
        let write = own && !self.inner.read_only();
        let storage = &*self.inner.storage;
        let Some(keys) = self.inner.keys.get(storage, log.dir(), segment, write) else {
            return Ok(Indexed::Unusable);
        };
        // What each position was posted as: an event of the wanted key
        // (its hash), or a record that is not an event.
        let mut hits: Vec<(u32, Option<u64>)> = match (&query.run_id, &query.tenant) {
            (Some(run), _) => {
                let hash = key_hash(run);
                keys.run(run).into_iter().map(|p| (p, Some(hash))).collect()
            }
            (None, Some(tenant)) => {
                let hash = key_hash(tenant);
                let postings = keys.tenant(tenant, time_us).into_iter();
                postings.map(|p| (p, Some(hash))).collect()
            }
            (None, None) => return Ok(Indexed::Unusable),
        };
        hits.extend(keys.others(time_us).into_iter().map(|p| (p, None)));
        hits.sort_unstable();
        let Ok(map) = segment.bytes() else {
            // The scan meets the same failure and reports it.
            return Ok(Indexed::Unusable);
        };
        let len = usize::try_from(segment.len()).map_or(map.len(), |l| l.min(map.len()));
        let bytes = &map[..len];
        let offsets = segment.base_offset()..segment.next_offset();
        let frames = hits.iter().enumerate().map(|(i, &(position, posted))| {
            // Two postings of one frame: the file is wrong.
            let twice = hits.get(i + 1).is_some_and(|next| next.0 == position);
            let frame = keys::check_frame(bytes, position as usize, offsets.clone());
            (frame.filter(|_| !twice), posted)
        });
        if let Some(done) = self.take_hits(query, shard, log, from, time_us, page, frames) {
            return Ok(done);
        }
        tracing::warn!(dir = %log.dir().display(), base_offset = segment.base_offset(), "a key index named a frame that does not match it; built again from the segment");
        self.inner
            .keys
            .drop_file(storage, log.dir(), segment.base_offset(), write);
        Ok(Indexed::Dropped)
    }

    /// Reads the active segment, from `from`, through its in-memory key
    /// index, up to the offset it covers (returned; the caller scans from
    /// there).
    #[expect(clippy::too_many_arguments, reason = "one step of scan_shard")]
    fn index_active(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        active: &ActiveBytes,
        from: u64,
        time_us: &std::ops::RangeInclusive<i64>,
        page: &mut QueryPage,
    ) -> Result<(Indexed, u64)> {
        let lookup = match (&query.run_id, &query.tenant) {
            (Some(run), _) => Lookup::Run(key_hash(run)),
            (None, Some(tenant)) => Lookup::Tenant(key_hash(tenant)),
            (None, None) => return Ok((Indexed::Unusable, from)),
        };
        let keys = &self.inner.keys;
        let (hits, covered) = keys.active_hits(log.dir(), active, lookup, time_us);
        let (Some(first), Some(last)) = (hits.first(), hits.last()) else {
            return Ok((Indexed::Next, covered));
        };
        let offsets = active.base_offset..covered;
        let start = u64::from(first.0.position);
        let span = u64::from(last.0.position) + u64::from(last.0.len) - start;
        // Close hits are read in one `pread`, far ones one by one.
        let read = |at: u64, len: u64| -> Option<Vec<u8>> {
            let mut buf = vec![0u8; usize::try_from(len).ok()?];
            active.file.read_exact_at(&mut buf, at).ok().map(|()| buf)
        };
        let mut bufs: Vec<Option<Vec<u8>>> = Vec::new();
        let whole = (span <= ACTIVE_READ_MAX_BYTES)
            .then(|| read(start, span))
            .flatten();
        if whole.is_none() {
            bufs = hits
                .iter()
                .map(|(p, _)| read(u64::from(p.position), u64::from(p.len)))
                .collect();
        }
        let frames = hits.iter().enumerate().map(|(i, &(p, posted))| {
            let twice = hits
                .get(i + 1)
                .is_some_and(|next| next.0.position == p.position);
            let frame = match &whole {
                Some(buf) => {
                    let at = (u64::from(p.position) - start) as usize;
                    keys::check_frame(buf, at, offsets.clone())
                }
                None => bufs[i]
                    .as_deref()
                    .and_then(|buf| keys::check_frame(buf, 0, offsets.clone())),
            };
            (frame.filter(|_| !twice), posted)
        });
        if let Some(done) = self.take_hits(query, shard, log, from, time_us, page, frames) {
            return Ok((done, covered));
        }
        tracing::warn!(dir = %log.dir().display(), "the active segment's key index named a frame that does not match it; built again");
        keys.drop_active(log.dir());
        Ok((Indexed::Dropped, covered))
    }

    /// Hands the verified frames of one segment's hits (in position order,
    /// each with the key hash it was posted under, `None` for a record
    /// posted as not an event) to [`Store::take_record`]. `None` when a hit
    /// fails verification: the page is then as it was before the segment.
    #[expect(clippy::too_many_arguments, reason = "one step of scan_shard")]
    fn take_hits<'a>(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        from: u64,
        time_us: &std::ops::RangeInclusive<i64>,
        page: &mut QueryPage,
        frames: impl Iterator<Item = (Option<FrameView<'a>>, Option<u64>)>,
    ) -> Option<Indexed> {
        let undo = Undo::of(page);
        let mut last_offset = None;
        for (frame, posted) in frames {
            let verified = frame.filter(|f| last_offset.is_none_or(|last| f.offset > last));
            let Some(frame) = verified else {
                undo.apply(page);
                return None;
            };
            last_offset = Some(frame.offset);
            let in_range = time_us.contains(&frame.timestamp_us);
            if (posted.is_none() || query.run_id.is_none()) && !in_range {
                // Tenant postings and others were chosen by this very
                // timestamp (run postings carry none).
                undo.apply(page);
                return None;
            }
            if frame.offset < from || !in_range {
                continue;
            }
            // The keys, viewed in place: they confirm the posting (its hash
            // names this record's tenant or run) and reject what the query
            // does not want; only what it returns is decoded in full.
            let viewed = event_view::view(frame.offset, frame.timestamp_us, frame.payload);
            let as_posted = match (&viewed, posted) {
                (Ok(EntryView::Event(k)), Some(hash)) => {
                    let key = match &query.run_id {
                        Some(_) => k.run_id,
                        None => Some(k.tenant_id),
                    };
                    key.map(key_hash) == Some(hash)
                }
                (Ok(EntryView::Event(_)), None) | (Ok(_) | Err(_), Some(_)) => false,
                (Ok(_) | Err(_), None) => true,
            };
            if !as_posted {
                undo.apply(page);
                return None;
            }
            if let Ok(EntryView::Event(k)) = &viewed {
                if !query.matches_keys(k) {
                    if frame.offset >= query.offsets.end {
                        return Some(Indexed::Done(Scan::Exhausted));
                    }
                    continue;
                }
            }
            let entry = decode_payload(frame.offset, frame.timestamp_us, frame.payload);
            if let Some(done) = self.take_record(query, shard, log, frame.offset, entry, page) {
                return Some(Indexed::Done(done));
            }
        }
        Some(Indexed::Next)
    }

    /// Adds one record (in offset order) to the page; `Some` when the page
    /// is done: full, or past the query's offsets.
    fn take_record(
        &self,
        query: &Query,
        shard: u32,
        log: &Log,
        offset: u64,
        entry: Result<Entry>,
        page: &mut QueryPage,
    ) -> Option<Scan> {
        if offset >= query.offsets.end {
            return Some(Scan::Exhausted);
        }
        match entry {
            Ok(Entry::Event(event)) if query.matches(&event) => {
                page.events.push(event);
                page.shards.push(shard);
            }
            Ok(Entry::Gap(gap)) if query.include_gaps => page.gaps.push(gap),
            Ok(Entry::Lost(_)) => page.lost += 1,
            Ok(_) => {}
            // Not a store payload: skipped and counted, as the
            // projections do, so it cannot hide every later event (on the
            // page here; in the store's metrics once the page is final).
            Err(_) => page.undecodable += 1,
        }
        if page.events.len() == query.limit {
            let next = offset + 1;
            return Some(Scan::Full(
                (next < query.offsets.end && next < log.next_offset()).then_some(next),
            ));
        }
        None
    }
}

/// How reading a segment through its key index ended.
enum Indexed {
    /// The page is done.
    Done(Scan),
    /// The segment is read; go on with the next.
    Next,
    /// No usable index: read the segment by scan.
    Unusable,
    /// The index failed a check and was dropped (and the page left as it
    /// was): build it again, or read the segment by scan.
    Dropped,
}

/// The page as it was before a segment was read through its index.
struct Undo {
    events: usize,
    gaps: usize,
    undecodable: u64,
    lost: u64,
}

impl Undo {
    fn of(page: &QueryPage) -> Self {
        Undo {
            events: page.events.len(),
            gaps: page.gaps.len(),
            undecodable: page.undecodable,
            lost: page.lost,
        }
    }

    fn apply(self, page: &mut QueryPage) {
        page.events.truncate(self.events);
        page.shards.truncate(self.events);
        page.gaps.truncate(self.gaps);
        page.undecodable = self.undecodable;
        page.lost = self.lost;
    }
}
