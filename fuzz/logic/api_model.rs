//! The API model target: the fuzz bytes are a program of at most
//! [`MAX_STEPS`] steps run against a [`Store`] on the fault-injecting
//! in-memory storage and, side by side, against a plain vector of the
//! events that must be in the log.
//!
//! Steps: record one event, commit a batch, drop a batch uncommitted,
//! reopen, crash (each [`CrashMode`], after a power cut), arm a one-shot
//! fault ([`FaultOp`] × [`FaultKind`]), query, read from an offset, ask
//! for statistics, checkpoint the projections.
//!
//! What must hold:
//! - an acknowledged event is in the log at the offset it was given, after
//!   any reopen and any crash (durability is `Fsync`);
//! - an append fails only when a fault was armed, with an I/O error or
//!   `Poisoned`; the batch is then all there or not there at all, and the
//!   store is reopened (a failed write or fsync poisons the writer), which
//!   must succeed once the faults are cleared;
//! - a batch dropped before commit leaves nothing;
//! - queries, reads and statistics equal a brute-force answer from the
//!   model, and a query for one tenant never returns another's event.
//!
//! A run is deterministic but for one race, which the checks allow for:
//! after a failed append the store's supervisor may reopen the log before
//! the harness does, so the append that probes the poisoned writer may
//! succeed (it then must be in the log, where it was acknowledged).

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use enforcelog::storage::sim::{CrashMode, FaultKind, FaultOp, SimStorage};
use enforcelog::{
    Action, Durability, Error, Event, LogOptions, ProblemKind, Query, RuleStats, Store,
    StoreOptions, StoredEvent,
};

use super::Choices;

/// The most steps one input runs: keeps each run to milliseconds.
pub const MAX_STEPS: usize = 64;

const DIR: &str = "/store";
const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const RULES: [&str; 3] = ["r-1", "r-2", "r-3"];
const RUNS: [&str; 2] = ["run-a", "run-b"];
/// The rule of the event appended right after a failure, to probe the
/// poisoned writer.
const PROBE_RULE: &str = "probe";
/// Event times are `BASE_US + byte * TICK_US`: 256 seconds, so the
/// statistics windows (60 s and 100 s) cut through them.
const BASE_US: i64 = 1_764_028_800_000_000;
const TICK_US: i64 = 1_000_000;
const WINDOWS: [Duration; 2] = [Duration::from_secs(60), Duration::from_secs(100)];
const FAULT_OPS: [FaultOp; 5] = [
    FaultOp::Write,
    FaultOp::SyncData,
    FaultOp::Create,
    FaultOp::Rename,
    FaultOp::SyncDir,
];
const FAULT_KINDS: [FaultKind; 2] = [FaultKind::NoSpace, FaultKind::Io];
const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::TearLastWrite,
    CrashMode::Reorder,
    CrashMode::TornSectors,
];

/// Runs the program in `data`; panics on any divergence from the model.
pub fn check_api_model(data: &[u8]) {
    let mut c = Choices::new(data);
    let storage = SimStorage::new(u64::from(c.byte()));
    let mut h = Harness::new(storage);
    for _ in 0..MAX_STEPS {
        if c.is_empty() {
            break;
        }
        h.step(&mut c);
    }
    h.finish();
}

/// One step, kept for the failure message.
#[derive(Debug, Clone)]
#[expect(
    dead_code,
    reason = "the fields are read through Debug, in failure messages"
)]
enum Step {
    Record,
    Batch(usize),
    Dropped(usize),
    Reopen,
    Crash(CrashMode),
    Inject(FaultOp, u64, FaultKind),
    Query(QuerySpec),
    ReadFrom(u64),
    Stats(usize, usize, i64),
    Checkpoint,
}

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            segment_max_bytes: 4096,
            record_max_bytes: 1024,
            index_interval_bytes: 256,
            durability: Durability::Fsync,
            ..LogOptions::default()
        },
        trigger_windows: WINDOWS.to_vec(),
        // Checkpoints only when a step asks (or on close), so that runs are
        // deterministic: the follower thread never writes on its own.
        checkpoint_every_entries: 1 << 40,
        checkpoint_interval: Duration::from_secs(24 * 3600),
        // The supervisor still wakes at once when an append fails.
        recovery_interval: Duration::from_secs(24 * 3600),
        ..StoreOptions::default()
    }
}

fn event(c: &mut Choices) -> Event {
    let who = usize::from(c.byte());
    let extras = c.byte();
    let at = BASE_US + i64::from(c.byte()) * TICK_US;
    let mut event = Event::new(
        TENANTS[who % 3],
        RULES[who / 3 % 3],
        Action::ALL[who / 9 % 4],
    )
    .at_us(at);
    if extras & 1 == 1 {
        event = event.with_run_id(RUNS[usize::from(extras >> 1) & 1]);
    }
    if extras & 4 == 4 {
        // Up to 248 bytes of padding: a few dozen records fill a segment.
        let pad = "x".repeat(usize::from(extras >> 3) * 8);
        event = event.with_details(enforcelog::details!({ "n": extras, "pad": pad }));
    }
    event
}

/// Whether a stored event is the model's event at its offset.
fn same(stored: &StoredEvent, event: &Event) -> bool {
    stored.tenant_id == event.tenant_id
        && stored.rule_id == event.rule_id
        && stored.action == event.action
        && stored.run_id == event.run_id
        && stored.details == event.details
        && Some(stored.enforced_at_us) == event.enforced_at_us
}

fn at_us(event: &Event) -> i64 {
    event.enforced_at_us.expect("model events carry their time")
}

struct Harness {
    storage: SimStorage,
    /// Always `Some` between steps.
    store: Option<Store>,
    /// The events that must be in the log, at offset = index.
    model: Vec<Event>,
    /// A fault was injected since faults were last cleared (it may have
    /// fired already).
    faults_armed: bool,
    /// A fault may have hit the write of a segment index since the last
    /// open without faults (which rebuilds every missing index). Indexes
    /// are derived data: a failed write is only logged, and `verify`
    /// reports the missing file as an `Index` problem.
    index_may_be_missing: bool,
    steps: Vec<Step>,
}

macro_rules! ensure {
    ($h:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            $h.fail(format!($($msg)+));
        }
    };
}

impl Harness {
    fn new(storage: SimStorage) -> Self {
        super::prepare_dir(&storage, DIR.as_ref());
        let mut h = Harness {
            storage,
            store: None,
            model: Vec::new(),
            faults_armed: false,
            index_may_be_missing: false,
            steps: Vec::new(),
        };
        let store = h
            .open()
            .unwrap_or_else(|e| h.fail(format!("first open: {e}")));
        h.store = Some(store);
        h
    }

    fn fail(&self, message: String) -> ! {
        panic!(
            "{message}\n  model: {} events, faults armed: {}\n  steps: {:?}",
            self.model.len(),
            self.faults_armed,
            self.steps
        );
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("a store is open between steps")
    }

    fn open(&mut self) -> enforcelog::Result<Store> {
        let store = Store::builder(DIR)
            .storage(Arc::new(self.storage.clone()))
            .options(options())
            .open()?;
        self.index_may_be_missing = self.faults_armed;
        Ok(store)
    }

    fn step(&mut self, c: &mut Choices) {
        match c.below(13) {
            0..=2 => self.record(c),
            3 | 4 => self.batch(c),
            5 => self.dropped_batch(c),
            6 => {
                self.steps.push(Step::Reopen);
                self.reopen(false);
                self.check_log();
            }
            7 => self.crash(CRASH_MODES[c.below(4)]),
            8 => {
                let (op, skip, kind) = (
                    FAULT_OPS[c.below(5)],
                    c.below(4) as u64,
                    FAULT_KINDS[c.below(2)],
                );
                self.steps.push(Step::Inject(op, skip, kind));
                self.storage.inject(op, skip, kind, false);
                self.faults_armed = true;
                self.index_may_be_missing = true;
            }
            9 => self.query(QuerySpec::new(c, self.model.len())),
            10 => self.read_from(c.below(self.model.len() + 3) as u64),
            11 => {
                let at = BASE_US + (i64::from(c.byte()) - 16) * TICK_US;
                self.stats(c.below(3), c.below(RULES.len() + 1), at);
            }
            _ => {
                self.steps.push(Step::Checkpoint);
                let result = self.store().checkpoint();
                ensure!(
                    self,
                    self.faults_armed || result.is_ok(),
                    "checkpoint: {result:?}"
                );
            }
        }
    }

    fn record(&mut self, c: &mut Choices) {
        self.steps.push(Step::Record);
        let event = event(c);
        match self.store().record_blocking(event.clone()) {
            Ok(offset) => {
                ensure!(
                    self,
                    offset == self.model.len() as u64,
                    "recorded at {offset}"
                );
                self.model.push(event);
            }
            Err(e) => self.after_failure(vec![event], &e),
        }
    }

    fn batch(&mut self, c: &mut Choices) {
        let n = 1 + c.below(4);
        self.steps.push(Step::Batch(n));
        let events: Vec<Event> = (0..n).map(|_| event(c)).collect();
        let mut batch = self.store().begin();
        for e in &events {
            batch.record(e.clone()).expect("model events are valid");
        }
        match batch.commit_blocking() {
            Ok(range) => {
                let start = self.model.len() as u64;
                ensure!(
                    self,
                    range == (start..start + n as u64),
                    "batch committed at {range:?}"
                );
                self.model.extend(events);
            }
            Err(e) => self.after_failure(events, &e),
        }
    }

    fn dropped_batch(&mut self, c: &mut Choices) {
        let n = 1 + c.below(4);
        self.steps.push(Step::Dropped(n));
        let mut batch = self.store().begin();
        for _ in 0..n {
            batch.record(event(c)).expect("model events are valid");
        }
        ensure!(self, batch.len() == n, "batch holds {} events", batch.len());
        drop(batch);
        let next = self.store().next_offset();
        ensure!(
            self,
            next == self.model.len() as u64,
            "a dropped batch moved the log to {next}"
        );
    }

    /// An append failed: check why, probe the poisoned writer, reopen with
    /// the faults cleared and find out whether the batch is in or out.
    fn after_failure(&mut self, failed: Vec<Event>, error: &Error) {
        ensure!(
            self,
            self.faults_armed,
            "an append failed with no fault armed: {error}"
        );
        ensure!(
            self,
            matches!(error, Error::Io { .. } | Error::Poisoned { .. }),
            "an append failed with an unexpected error: {error:?}"
        );
        let mut pending = vec![(failed, None)];
        // The writer is poisoned now, unless the store's supervisor already
        // reopened the log: then the probe is an ordinary append.
        let probe = Event::new(TENANTS[0], PROBE_RULE, Action::Stopped).at_us(BASE_US);
        match self.store().record_blocking(probe.clone()) {
            Ok(offset) => pending.push((vec![probe], Some(offset))),
            Err(e) => {
                ensure!(
                    self,
                    matches!(e, Error::Io { .. } | Error::Poisoned { .. } | Error::Closed),
                    "an append after a failure: {e:?}"
                );
                // Failed too, so it is in or out as a whole, like the batch.
                pending.push((vec![probe], None));
            }
        }
        self.storage.clear_faults();
        self.faults_armed = false;
        self.reopen(true);
        self.reconcile(pending);
        self.check_log();
    }

    /// Closes and reopens the store; the open must succeed, at the latest
    /// once the faults are cleared. Closing a store whose writer failed
    /// reports that failure again (`poisoned`).
    fn reopen(&mut self, poisoned: bool) {
        let store = self.store.take().expect("a store is open");
        match store.close() {
            Ok(()) => {}
            Err(Error::Io { .. } | Error::Poisoned { .. }) if poisoned || self.faults_armed => {}
            Err(e) => self.fail(format!("close (poisoned: {poisoned}): {e:?}")),
        }
        drop(store);
        let store = match self.open() {
            Ok(store) => store,
            Err(e) => {
                ensure!(self, self.faults_armed, "reopen with no fault armed: {e}");
                self.storage.clear_faults();
                self.faults_armed = false;
                self.open()
                    .unwrap_or_else(|e| self.fail(format!("reopen with the faults cleared: {e}")))
            }
        };
        self.store = Some(store);
    }

    /// A power cut, the process gone, then a crash that settles unsynced
    /// writes as `mode` says; everything acknowledged must be back.
    fn crash(&mut self, mode: CrashMode) {
        self.steps.push(Step::Crash(mode));
        self.storage.power_cut_after(0);
        let store = self.store.take().expect("a store is open");
        // Fails (nothing can be written any more); what matters is the disk.
        let _ = store.close();
        drop(store);
        self.storage.crash(mode);
        self.faults_armed = false;
        let store = self
            .open()
            .unwrap_or_else(|e| self.fail(format!("open after a {mode:?} crash: {e}")));
        self.store = Some(store);
        self.check_log();
    }

    /// Adopts what the log holds after the model's end: each pending batch
    /// whole or not at all, an acknowledged one where it was acknowledged,
    /// and nothing else.
    fn reconcile(&mut self, pending: Vec<(Vec<Event>, Option<u64>)>) {
        let tail = self.entries(self.model.len() as u64);
        let mut pos = 0;
        for (events, acked) in pending {
            let here = self.model.len() as u64;
            let present = tail.len() - pos >= events.len()
                && tail[pos..pos + events.len()]
                    .iter()
                    .zip(&events)
                    .all(|(s, e)| same(s, e));
            if let Some(offset) = acked {
                ensure!(
                    self,
                    present,
                    "an event acknowledged at {offset} is not in the log"
                );
                ensure!(
                    self,
                    offset == here,
                    "acknowledged at {offset}, found at {here}"
                );
            }
            if present {
                pos += events.len();
                self.model.extend(events);
            }
        }
        ensure!(
            self,
            pos == tail.len(),
            "after a failure the log holds {} entries past the model: a partial batch or \
             events nobody wrote",
            tail.len() - pos
        );
    }

    /// The events from `offset` on.
    fn entries(&self, offset: u64) -> Vec<StoredEvent> {
        let entries = self
            .store()
            .entries(offset)
            .unwrap_or_else(|e| self.fail(format!("entries({offset}): {e}")));
        entries
            .map(|entry| match entry {
                Ok(enforcelog::Entry::Event(e)) => e,
                other => self.fail(format!("reading entries: {other:?}")),
            })
            .collect()
    }

    /// The whole log equals the model, and verifies clean.
    fn check_log(&self) {
        let next = self.store().next_offset();
        ensure!(self, next == self.model.len() as u64, "next_offset {next}");
        let all = self.entries(0);
        ensure!(
            self,
            all.len() == self.model.len(),
            "the log holds {} events",
            all.len()
        );
        for (i, (stored, event)) in all.iter().zip(&self.model).enumerate() {
            ensure!(
                self,
                stored.offset == i as u64,
                "offset {} at index {i}",
                stored.offset
            );
            ensure!(
                self,
                same(stored, event),
                "offset {i}: {stored:?} is not {event:?}"
            );
        }
        let report = self
            .store()
            .log()
            .verify()
            .unwrap_or_else(|e| self.fail(format!("verify: {e}")));
        let allowed = |kind: ProblemKind| kind == ProblemKind::Index && self.index_may_be_missing;
        ensure!(
            self,
            report.problems.iter().all(|p| allowed(p.kind)),
            "verify: {report:?}"
        );
    }

    fn read_from(&mut self, offset: u64) {
        self.steps.push(Step::ReadFrom(offset));
        let len = self.model.len() as u64;
        if offset > len {
            match self.store().entries(offset) {
                Err(Error::OffsetOutOfRange {
                    requested,
                    next_offset,
                }) => ensure!(
                    self,
                    requested == offset && next_offset == len,
                    "OffsetOutOfRange {{ {requested}, {next_offset} }}"
                ),
                Err(e) => self.fail(format!("entries({offset}) past the end: {e}")),
                Ok(_) => self.fail(format!("entries({offset}) past the end ({len}) succeeded")),
            }
            return;
        }
        let got = self.entries(offset);
        let want = &self.model[offset as usize..];
        ensure!(
            self,
            got.len() == want.len(),
            "entries({offset}) gave {}",
            got.len()
        );
        for (i, (stored, event)) in got.iter().zip(want).enumerate() {
            let at = offset + i as u64;
            ensure!(
                self,
                stored.offset == at && same(stored, event),
                "entries({offset}) at {at}"
            );
        }
    }

    fn query(&mut self, spec: QuerySpec) {
        let expected: Vec<u64> = (0..self.model.len() as u64)
            .filter(|&o| spec.matches(o, &self.model[o as usize]))
            .collect();
        self.steps.push(Step::Query(spec.clone()));
        let mut got = Vec::new();
        let mut query = spec.build();
        // Each page but the last holds at least one event.
        for _ in 0..=self.model.len() + 1 {
            let page = self
                .store()
                .query(&query)
                .unwrap_or_else(|e| self.fail(format!("query: {e}")));
            ensure!(
                self,
                page.events.len() <= spec.limit,
                "a page of {}",
                page.events.len()
            );
            ensure!(self, page.gaps.is_empty(), "gaps without include_gaps");
            for e in &page.events {
                let Some(event) = self.model.get(e.offset as usize) else {
                    self.fail(format!("query returned offset {} past the end", e.offset));
                };
                ensure!(self, same(e, event), "query: {e:?} is not {event:?}");
                if let Some(t) = spec.tenant {
                    ensure!(
                        self,
                        e.tenant_id == TENANTS[t],
                        "another tenant's event: {e:?}"
                    );
                }
                got.push(e.offset);
            }
            match page.next_offset {
                None => break,
                Some(next) => {
                    ensure!(
                        self,
                        page.events.len() == spec.limit,
                        "next_offset on a short page"
                    );
                    ensure!(
                        self,
                        page.events.last().is_some_and(|e| e.offset < next),
                        "cursor"
                    );
                    query = query.from_offset(next);
                }
            }
        }
        ensure!(
            self,
            got == expected,
            "query returned {got:?}, brute force {expected:?}"
        );
    }

    fn stats(&mut self, tenant: usize, rule: usize, as_of_us: i64) {
        self.steps.push(Step::Stats(tenant, rule, as_of_us));
        let tenant_id = TENANTS[tenant];
        if rule < RULES.len() {
            let got = self
                .store()
                .stats(tenant_id, RULES[rule], Some(as_of_us))
                .unwrap_or_else(|e| self.fail(format!("stats: {e}")));
            self.check_stats(&got, tenant_id, RULES[rule], as_of_us);
            return;
        }
        // The tenant's every rule, then every tenant's.
        let listed = self
            .store()
            .stats_for_tenant(tenant_id, Some(as_of_us))
            .unwrap_or_else(|e| self.fail(format!("stats_for_tenant: {e}")));
        let mut keys = self.fired_keys(as_of_us);
        let all = self
            .store()
            .stats_all(Some(as_of_us))
            .unwrap_or_else(|e| self.fail(format!("stats_all: {e}")));
        let got: Vec<(&str, &str)> = all.iter().map(|s| (&*s.tenant_id, &*s.rule_id)).collect();
        let want: Vec<(&str, &str)> = keys.iter().map(|(t, r)| (*t, r.as_str())).collect();
        ensure!(
            self,
            got == want,
            "stats_all lists {got:?}, brute force {want:?}"
        );
        for s in &all {
            self.check_stats(s, &s.tenant_id, &s.rule_id, as_of_us);
        }
        keys.retain(|(t, _)| *t == tenant_id);
        let got: Vec<&str> = listed.iter().map(|s| &*s.rule_id).collect();
        let want: Vec<&str> = keys.iter().map(|(_, r)| r.as_str()).collect();
        ensure!(
            self,
            got == want,
            "stats_for_tenant lists {got:?}, brute force {want:?}"
        );
        for s in &listed {
            ensure!(
                self,
                s.tenant_id == tenant_id,
                "another tenant's statistics: {s:?}"
            );
            self.check_stats(s, tenant_id, &s.rule_id, as_of_us);
        }
    }

    /// (tenant, rule) pairs with an event at or before `as_of_us`, sorted.
    fn fired_keys(&self, as_of_us: i64) -> Vec<(&'static str, String)> {
        let mut keys: Vec<(&'static str, String)> = self
            .model
            .iter()
            .filter(|e| at_us(e) <= as_of_us)
            .map(|e| {
                let t = TENANTS
                    .iter()
                    .find(|t| **t == e.tenant_id)
                    .expect("a model tenant");
                (*t, e.rule_id.clone())
            })
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    fn check_stats(&self, got: &RuleStats, tenant: &str, rule: &str, t: i64) {
        let events: Vec<&Event> = self
            .model
            .iter()
            .filter(|e| e.tenant_id == tenant && e.rule_id == rule && at_us(e) <= t)
            .collect();
        let in_window = |w: Duration, e: &&Event| at_us(e) > t - w.as_micros() as i64;
        let primary = WINDOWS[WINDOWS.len() - 1];
        let mut by_action = [0u64; 4];
        for e in events.iter().filter(|e| in_window(primary, e)) {
            by_action[Action::ALL
                .iter()
                .position(|a| *a == e.action)
                .expect("an action")] += 1;
        }
        let want = RuleStats {
            tenant_id: tenant.to_string(),
            rule_id: rule.to_string(),
            as_of_us: t,
            trigger_count: events.iter().filter(|e| in_window(primary, e)).count() as u64,
            window_counts: WINDOWS
                .iter()
                .map(|&w| (w, events.iter().filter(|e| in_window(w, e)).count() as u64))
                .collect(),
            last_triggered_at_us: events.iter().map(|e| at_us(e)).max(),
            total_count: events.len() as u64,
            by_action,
            offset: self.model.len() as u64,
            // The model drops nothing, so no gap marker is ever written.
            missing_at_least: 0,
            gap_in_window: false,
        };
        ensure!(
            self,
            *got == want,
            "stats:\n  got  {got:?}\n  want {want:?}"
        );
    }

    /// Reopens once more, checks everything, and closes cleanly.
    fn finish(mut self) {
        self.storage.clear_faults();
        self.faults_armed = false;
        self.reopen(false);
        self.check_log();
        for tenant in 0..TENANTS.len() {
            self.stats(tenant, RULES.len(), BASE_US + 255 * TICK_US);
        }
        let store = self.store.take().expect("a store is open");
        if let Err(e) = store.close() {
            self.fail(format!("final close: {e}"));
        }
    }
}

/// A query, as data, so the brute force can evaluate it.
#[derive(Debug, Clone)]
struct QuerySpec {
    /// `None`: every tenant.
    tenant: Option<usize>,
    rule: Option<usize>,
    action: Option<Action>,
    run: Option<usize>,
    since_us: Option<i64>,
    until_us: Option<i64>,
    offsets: Option<Range<u64>>,
    limit: usize,
}

impl QuerySpec {
    fn new(c: &mut Choices, len: usize) -> Self {
        let filters = c.byte();
        let pick = |c: &mut Choices, bit: u8, n: usize| (filters & bit != 0).then(|| c.below(n));
        let time = |c: &mut Choices| BASE_US + (i64::from(c.byte()) - 8) * TICK_US;
        let tenant = (filters & 0x01 == 0).then(|| c.below(TENANTS.len()));
        let rule = pick(c, 0x02, RULES.len());
        let action = pick(c, 0x04, 4).map(|i| Action::ALL[i]);
        let run = pick(c, 0x08, RUNS.len());
        let since_us = (filters & 0x10 != 0).then(|| time(c));
        let until_us = (filters & 0x20 != 0).then(|| time(c));
        let offsets = (filters & 0x40 != 0).then(|| {
            let start = c.below(len + 2) as u64;
            start..start + c.below(len + 2) as u64
        });
        let limit = if filters & 0x80 != 0 {
            1 + c.below(5)
        } else {
            1000
        };
        QuerySpec {
            tenant,
            rule,
            action,
            run,
            since_us,
            until_us,
            offsets,
            limit,
        }
    }

    fn build(&self) -> Query {
        let mut q = match self.tenant {
            Some(t) => Query::tenant(TENANTS[t]),
            None => Query::all_tenants(),
        };
        if let Some(r) = self.rule {
            q = q.rule(RULES[r]);
        }
        if let Some(a) = self.action {
            q = q.action(a);
        }
        if let Some(r) = self.run {
            q = q.run_id(RUNS[r]);
        }
        if let Some(s) = self.since_us {
            q = q.since_us(s);
        }
        if let Some(u) = self.until_us {
            q = q.until_us(u);
        }
        if let Some(o) = &self.offsets {
            q = q.offsets(o.clone());
        }
        q.limit(self.limit)
    }

    fn matches(&self, offset: u64, e: &Event) -> bool {
        let at = at_us(e);
        self.tenant.is_none_or(|t| e.tenant_id == TENANTS[t])
            && self.rule.is_none_or(|r| e.rule_id == RULES[r])
            && self.action.is_none_or(|a| e.action == a)
            && self
                .run
                .is_none_or(|r| e.run_id.as_deref() == Some(RUNS[r]))
            && self.since_us.is_none_or(|s| at >= s)
            && self.until_us.is_none_or(|u| at < u)
            && self.offsets.as_ref().is_none_or(|o| o.contains(&offset))
    }
}
