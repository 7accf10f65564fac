//! Tenant isolation (issue 8): no read path ever returns another tenant's
//! event, however alike two tenant ids are.
//!
//! The tenant ids are chosen to collide under any sloppy comparison:
//! prefixes and extensions of each other, ids differing only in case or in
//! a leading or trailing space, Unicode look-alikes (Cyrillic `а`, fullwidth
//! letters, a composed and a decomposed `é`, invisible format characters),
//! ids holding `.`, `*`, `>`, `%`, `_`, `/`, `:` (wildcards and separators
//! of other systems), ids that look like command-line flags, and ids of the
//! maximum length. Rule ids overlap the tenant ids and hold separators too,
//! so that a store keying on `tenant + separator + rule` would mix
//! `("acme", "budget.x")` with `("acme.budget", "x")`.
//!
//! `isolation_holds_on_every_read_path` is a property test (seeded; a few
//! hundred quick cases on the simulated storage): random events of those
//! tenants are recorded (single records and batches), then, compared with a
//! brute force over the recorded events:
//! - `query` for every tenant of the pool (also ones that recorded nothing),
//!   paged with a random limit; and for two tenants per case every
//!   combination of the rule, action, run, since, until and offset filters,
//!   each paged too: every event returned is the tenant's, and the pages
//!   together are exactly the brute force's list;
//! - `stats` for every (tenant, rule) pair, `stats_for_tenant` for every
//!   tenant, and `stats_all` grouped by tenant, as of an instant inside the
//!   window and one whose window reaches into folded history (answered by
//!   replaying the log);
//! - the same after a reopen, when the statistics come from the checkpoint.
//!
//! `replay`/`entries` take no tenant and `subscribe` offers no tenant
//! filter (a subscriber filters in its own code), so neither is a read path
//! that could leak; the CLI's `tail --tenant` filter is checked instead.
//!
//! `cli_reads_show_only_the_named_tenant` runs `query --tenant`, `stats
//! --tenant` (with and without `--rule`) and `tail --tenant` for every
//! tenant of the pool on a small store.
//!
//! Replay a failure with `ENFORCELOG_SEED=<seed> cargo test --test
//! tenant_isolation`; `ENFORCELOG_ISOLATION_CASES=<n>` runs more cases.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::process::{self, jsonl, Watchdog};
use enforcelog::storage::sim::SimStorage;
use enforcelog::{
    Action, Durability, Entry, Event, LogOptions, Query, RuleStats, Store, StoreOptions,
    StoredEvent,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::Value;

const DIR: &str = "/store";
/// 2025-11-25T00:00:00Z.
const T0_US: i64 = 1_764_028_800_000_000;
const DAY_US: i64 = 86_400_000_000;
const WINDOW_US: i64 = 30 * DAY_US;
const DEFAULT_CASES: u32 = 300;

/// Tenant ids that a careless comparison would confuse.
fn tenants() -> Vec<String> {
    let mut ids: Vec<String> = [
        "acme",
        "Acme",
        "ACME",
        "acme ",
        " acme",
        "acm",
        "acmeacme",
        "acme.",
        "acme.*",
        "acme.>",
        "acme.budget",
        "acme*",
        "acme>",
        "acme%",
        "acme_",
        "acme/x",
        "acme:budget",
        "*",
        ">",
        ".",
        "%",
        "_",
        "-acme",
        "--tenant",
        "\u{0430}cme",        // Cyrillic а
        "\u{FF41}\u{FF43}me", // fullwidth ａｃ
        "acm\u{E9}",          // é composed
        "acme\u{301}",        // e + combining acute
        "acme\u{200B}",       // zero-width space
        "acme\u{200E}",       // left-to-right mark
        "\u{FEFF}acme",       // byte order mark
        "ß",
        "ss",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    ids.push("a".repeat(128));
    ids.push("a".repeat(127));
    ids.push(format!("{}b", "a".repeat(127)));
    ids.push("a.*>".repeat(32));
    ids.push("🚦".repeat(32));
    ids
}

/// Rule ids: some are tenant ids, some hold separators.
const RULES: [&str; 8] = ["budget", "x", "budget.x", "acme", "Budget", "*", ">", "c"];
const RUNS: [&str; 3] = ["run-1", "acme", "Run-1"];

fn tenant_count() -> usize {
    tenants().len()
}

fn options() -> StoreOptions {
    StoreOptions {
        log: LogOptions {
            durability: Durability::None,
            segment_max_bytes: 8192,
            record_max_bytes: 2048,
            index_interval_bytes: 512,
            ..LogOptions::default()
        },
        ..StoreOptions::default()
    }
}

// ---------------------------------------------------------------------------
// Cases.

#[derive(Debug, Clone)]
struct Spec {
    tenant: usize,
    rule: usize,
    action: Action,
    run: Option<usize>,
    /// Days before `T0`, 0..45 (beyond the 30-day window: folded history).
    days_back: i64,
}

impl Spec {
    fn at_us(&self) -> i64 {
        T0_US - self.days_back * DAY_US + self.tenant as i64
    }

    fn event(&self, tenants: &[String]) -> Event {
        let mut event = Event::new(tenants[self.tenant].clone(), RULES[self.rule], self.action)
            .at_us(self.at_us());
        if let Some(run) = self.run {
            event = event.with_run_id(RUNS[run]);
        }
        event
    }
}

/// Query filters drawn once per case; a combination uses a subset of them.
#[derive(Debug, Clone)]
struct Filters {
    rule: usize,
    action: Action,
    run: usize,
    since_days_back: i64,
    until_days_back: i64,
    offsets: (u64, u64),
    limit: usize,
}

#[derive(Debug, Clone)]
struct Case {
    specs: Vec<Spec>,
    /// Where the writes are cut into batches (a batch of one is recorded
    /// with `record_blocking`).
    cuts: Vec<usize>,
    /// The two tenants that get every filter combination.
    probed: (usize, usize),
    filters: Filters,
    /// Page size for the per-tenant paged query.
    page: usize,
}

fn spec_strategy() -> impl Strategy<Value = Spec> {
    let tenants = tenant_count();
    // Half the events go to the first eight tenants, so that close
    // look-alikes often both hold events.
    let tenant = prop_oneof![0..8usize, 0..tenants];
    (
        tenant,
        0..RULES.len(),
        proptest::sample::select(Action::ALL.to_vec()),
        proptest::option::of(0..RUNS.len()),
        0..45i64,
    )
        .prop_map(|(tenant, rule, action, run, days_back)| Spec {
            tenant,
            rule,
            action,
            run,
            days_back,
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let tenants = tenant_count();
    let filters = (
        0..RULES.len(),
        proptest::sample::select(Action::ALL.to_vec()),
        0..RUNS.len(),
        0..46i64,
        -1..46i64,
        (0..40u64, 0..40u64),
        1..5usize,
    )
        .prop_map(
            |(rule, action, run, since_days_back, until_days_back, offsets, limit)| Filters {
                rule,
                action,
                run,
                since_days_back,
                until_days_back,
                offsets,
                limit,
            },
        );
    (
        proptest::collection::vec(spec_strategy(), 1..40),
        proptest::collection::vec(1..6usize, 1..12),
        (0..8usize, 0..tenants),
        filters,
        1..6usize,
    )
        .prop_map(|(specs, cuts, probed, filters, page)| Case {
            specs,
            cuts,
            probed,
            filters,
            page,
        })
}

// ---------------------------------------------------------------------------
// The brute force.

fn brute_query<'a>(
    events: &'a [StoredEvent],
    tenant: &str,
    keep: impl Fn(&StoredEvent) -> bool,
) -> Vec<&'a StoredEvent> {
    events
        .iter()
        .filter(|e| e.tenant_id == tenant && keep(e))
        .collect()
}

/// (total, last, window count, by action) per (tenant, rule) as of `as_of_us`.
type Stats = BTreeMap<(String, String), (u64, Option<i64>, u64, [u64; 4])>;

fn brute_stats(events: &[StoredEvent], as_of_us: i64) -> Stats {
    let mut out = Stats::new();
    for e in events.iter().filter(|e| e.enforced_at_us <= as_of_us) {
        let s = out
            .entry((e.tenant_id.clone(), e.rule_id.clone()))
            .or_insert((0, None, 0, [0; 4]));
        s.0 += 1;
        s.1 = Some(s.1.map_or(e.enforced_at_us, |m: i64| m.max(e.enforced_at_us)));
        if e.enforced_at_us > as_of_us - WINDOW_US {
            s.2 += 1;
            s.3[Action::ALL.iter().position(|&a| a == e.action).unwrap()] += 1;
        }
    }
    out
}

fn stats_of(rules: &[RuleStats]) -> Stats {
    rules
        .iter()
        .map(|r| {
            (
                (r.tenant_id.clone(), r.rule_id.clone()),
                (
                    r.total_count,
                    r.last_triggered_at_us,
                    r.trigger_count,
                    r.by_action,
                ),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The property.

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

/// Runs `query` page by page (following `next_offset`), checking that no
/// page is longer than `limit` or holds an event of another tenant.
fn paged(
    store: &Store,
    query: Query,
    tenant: &str,
    limit: usize,
) -> Result<Vec<u64>, TestCaseError> {
    let mut offsets = Vec::new();
    let mut query = query.limit(limit);
    for _ in 0..10_000 {
        let page = store
            .query(&query)
            .map_err(|e| fail(format!("query: {e}")))?;
        prop_assert!(page.events.len() <= limit);
        if let Some(stray) = page.events.iter().find(|e| e.tenant_id != tenant) {
            return Err(fail(format!(
                "query for tenant {tenant:?} returned an event of {:?}",
                stray.tenant_id
            )));
        }
        offsets.extend(page.events.iter().map(|e| e.offset));
        match page.next_offset {
            Some(next) => query = query.from_offset(next),
            None => return Ok(offsets),
        }
    }
    Err(fail("pagination did not end"))
}

/// Every combination of the six filters for `tenant`, each paged.
fn check_filter_combinations(
    store: &Store,
    events: &[StoredEvent],
    tenant: &str,
    f: &Filters,
) -> Result<(), TestCaseError> {
    let since = T0_US - f.since_days_back * DAY_US;
    let until = T0_US - f.until_days_back * DAY_US;
    let (a, b) = (f.offsets.0.min(f.offsets.1), f.offsets.0.max(f.offsets.1));
    for mask in 0u32..64 {
        let on = |bit: u32| mask & (1 << bit) != 0;
        let mut query = Query::tenant(tenant);
        if on(0) {
            query = query.rule(RULES[f.rule]);
        }
        if on(1) {
            query = query.action(f.action);
        }
        if on(2) {
            query = query.run_id(RUNS[f.run]);
        }
        if on(3) {
            query = query.since_us(since);
        }
        if on(4) {
            query = query.until_us(until);
        }
        if on(5) {
            query = query.offsets(a..b);
        }
        let got = paged(store, query, tenant, f.limit)?;
        let want: Vec<u64> = brute_query(events, tenant, |e| {
            (!on(0) || e.rule_id == RULES[f.rule])
                && (!on(1) || e.action == f.action)
                && (!on(2) || e.run_id.as_deref() == Some(RUNS[f.run]))
                && (!on(3) || e.enforced_at_us >= since)
                && (!on(4) || e.enforced_at_us < until)
                && (!on(5) || (a..b).contains(&e.offset))
        })
        .iter()
        .map(|e| e.offset)
        .collect();
        prop_assert_eq!(got, want, "tenant {:?}, filter mask {:06b}", tenant, mask);
    }
    Ok(())
}

/// The statistics through every call, for every tenant and pair, as of
/// `as_of_us`, against the brute force.
fn check_stats(
    store: &Store,
    events: &[StoredEvent],
    tenants: &[String],
    as_of_us: i64,
    view: &str,
) -> Result<(), TestCaseError> {
    let want = brute_stats(events, as_of_us);
    let all = store
        .stats_all(Some(as_of_us))
        .map_err(|e| fail(format!("{view}: stats_all: {e}")))?;
    prop_assert_eq!(
        &stats_of(&all),
        &want,
        "{}: stats_all as of {}",
        view,
        as_of_us
    );
    for tenant in tenants {
        let mine: Stats = want
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let listed = store
            .stats_for_tenant(tenant, Some(as_of_us))
            .map_err(|e| fail(format!("{view}: stats_for_tenant: {e}")))?;
        if let Some(stray) = listed.iter().find(|r| r.tenant_id != *tenant) {
            return Err(fail(format!(
                "{view}: stats_for_tenant({tenant:?}) lists a rule of {:?}",
                stray.tenant_id
            )));
        }
        prop_assert_eq!(
            &stats_of(&listed),
            &mine,
            "{}: stats_for_tenant({:?})",
            view,
            tenant
        );
        for rule in RULES {
            let one = store
                .stats(tenant, rule, Some(as_of_us))
                .map_err(|e| fail(format!("{view}: stats: {e}")))?;
            prop_assert_eq!(&one.tenant_id, tenant);
            let key = (tenant.clone(), rule.to_string());
            let got = (
                one.total_count,
                one.last_triggered_at_us,
                one.trigger_count,
                one.by_action,
            );
            let expected = want.get(&key).copied().unwrap_or((0, None, 0, [0; 4]));
            prop_assert_eq!(got, expected, "{}: stats({:?}, {:?})", view, tenant, rule);
        }
    }
    Ok(())
}

/// Every read path of `store` against the brute force over `events`.
fn check_reads(
    store: &Store,
    events: &[StoredEvent],
    tenants: &[String],
    case: &Case,
    view: &str,
) -> Result<(), TestCaseError> {
    for tenant in tenants {
        let got = paged(store, Query::tenant(tenant.as_str()), tenant, case.page)?;
        let want: Vec<u64> = brute_query(events, tenant, |_| true)
            .iter()
            .map(|e| e.offset)
            .collect();
        prop_assert_eq!(got, want, "{}: query for {:?}", view, tenant);
    }
    for probed in [case.probed.0, case.probed.1] {
        check_filter_combinations(store, events, &tenants[probed], &case.filters)?;
    }
    // Inside the window, and early enough that folded history is replayed.
    for as_of in [T0_US, T0_US - 20 * DAY_US] {
        check_stats(store, events, tenants, as_of, view)?;
    }
    Ok(())
}

fn run_case(case: &Case, tenants: &[String]) -> Result<(), TestCaseError> {
    let storage = SimStorage::new(7);
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .options(options())
        .open()
        .map_err(|e| fail(format!("open: {e}")))?;
    let mut specs = case.specs.iter();
    for &cut in case.cuts.iter().cycle() {
        let chunk: Vec<&Spec> = specs.by_ref().take(cut).collect();
        if chunk.is_empty() {
            break;
        }
        if chunk.len() == 1 {
            store
                .record_blocking(chunk[0].event(tenants))
                .map_err(|e| fail(format!("record: {e}")))?;
        } else {
            let mut batch = store.begin();
            for spec in chunk {
                batch
                    .record(spec.event(tenants))
                    .map_err(|e| fail(format!("batch: {e}")))?;
            }
            batch
                .commit_blocking()
                .map_err(|e| fail(format!("commit: {e}")))?;
        }
    }
    let events: Vec<StoredEvent> = store
        .entries(0)
        .map_err(|e| fail(format!("entries: {e}")))?
        .map(|e| match e {
            Ok(Entry::Event(e)) => Ok(e),
            other => Err(fail(format!("unexpected entry {other:?}"))),
        })
        .collect::<Result<_, _>>()?;
    prop_assert_eq!(events.len(), case.specs.len());
    check_reads(&store, &events, tenants, case, "writer")?;
    store.close().map_err(|e| fail(format!("close: {e}")))?;
    drop(store);
    let store = Store::builder(DIR)
        .storage(Arc::new(storage.clone()))
        .open_read_only()
        .map_err(|e| fail(format!("reopen: {e}")))?;
    check_reads(
        &store,
        &events,
        tenants,
        case,
        "reopened from the checkpoint",
    )?;
    Ok(())
}

#[test]
fn isolation_holds_on_every_read_path() {
    let seed = common::seed_or(0x007e_4a17_1501);
    let tenants = tenants();
    assert_eq!(
        tenants.iter().collect::<BTreeSet<_>>().len(),
        tenants.len(),
        "test bug: duplicate tenant ids"
    );
    for t in &tenants {
        assert!(
            enforcelog::event::check_id(enforcelog::Field::TenantId, t).is_ok(),
            "{t:?}"
        );
    }
    let config = Config {
        cases: common::env_or("ENFORCELOG_ISOLATION_CASES", DEFAULT_CASES),
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        max_shrink_iters: 300,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&case_strategy(), |case| run_case(&case, &tenants)) {
        panic!("tenant isolation failed (replay with ENFORCELOG_SEED={seed}): {e}");
    }
}

// ---------------------------------------------------------------------------
// The command-line tool.

const BIN: &str = env!("CARGO_BIN_EXE_enforcelog");

const WATCHDOG: Watchdog = Watchdog {
    limit: Duration::from_secs(60),
    panic_signs: &["panicked"],
};

fn cli(dir: &Path, args: &[String]) -> (String, String) {
    let mut cmd = process::command(BIN);
    cmd.arg("--data-dir").arg(dir).args(args);
    let what = process::describe(&cmd);
    let out = WATCHDOG.run(cmd, what, None);
    assert!(out.status.success(), "{}", out.show());
    (out.stdout, out.stderr)
}

#[test]
fn cli_reads_show_only_the_named_tenant() {
    let seed = common::seed_or(0x007e_4a17_1502);
    let mut state = seed;
    let tenants = tenants();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("store");
    let store = Store::open(&dir, options()).expect("open");
    let mut batch = store.begin();
    for i in 0..240usize {
        let r = common::splitmix64(&mut state);
        let spec = Spec {
            // Every tenant but the last holds events; the last holds none.
            tenant: if i < tenants.len() - 1 {
                i
            } else {
                (r % (tenants.len() as u64 - 1)) as usize
            },
            rule: ((r >> 8) % RULES.len() as u64) as usize,
            action: Action::ALL[((r >> 16) % 4) as usize],
            run: None,
            days_back: ((r >> 24) % 45) as i64,
        };
        batch.record(spec.event(&tenants)).expect("record");
        if batch.len() == 16 {
            std::mem::replace(&mut batch, store.begin())
                .commit_blocking()
                .expect("commit");
        }
    }
    if !batch.is_empty() {
        batch.commit_blocking().expect("commit");
    }
    let events: Vec<StoredEvent> = store
        .entries(0)
        .expect("entries")
        .map(|e| match e.expect("entry") {
            Entry::Event(e) => e,
            Entry::Gap(g) => panic!("gap {g:?}"),
            Entry::Lost(l) => panic!("lost {l:?}"),
        })
        .collect();
    store.close().expect("close");
    let as_of = "2025-11-26T00:00:00Z".to_string();
    let as_of_us = enforcelog::timestamp::parse_us(&as_of).unwrap();
    let want_stats = brute_stats(&events, as_of_us);

    for (i, tenant) in tenants.iter().enumerate() {
        let what = format!("seed {seed}, tenant {tenant:?}");
        let want: Vec<u64> = brute_query(&events, tenant, |_| true)
            .iter()
            .map(|e| e.offset)
            .collect();
        let flag = format!("--tenant={tenant}");

        let (out, _) = cli(
            &dir,
            &[
                "query".into(),
                flag.clone(),
                "--format=jsonl".into(),
                "--limit=100000".into(),
            ],
        );
        let lines = jsonl(&out);
        assert!(
            lines.iter().all(|l| l["tenant_id"] == tenant.as_str()),
            "{what}: query: {out}"
        );
        let got: Vec<u64> = lines
            .iter()
            .map(|l| l["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{what}: query");

        // Paging through --after-offset, for a few tenants.
        if i % 8 == 0 {
            let mut got = Vec::new();
            let mut after: Option<u64> = None;
            loop {
                let mut args = vec![
                    "query".into(),
                    flag.clone(),
                    "--format=jsonl".into(),
                    "--limit=2".into(),
                ];
                if let Some(a) = after {
                    args.push(format!("--after-offset={a}"));
                }
                let (out, _) = cli(&dir, &args);
                let page = jsonl(&out);
                assert!(
                    page.iter().all(|l| l["tenant_id"] == tenant.as_str()),
                    "{what}: page"
                );
                if page.is_empty() {
                    break;
                }
                got.extend(page.iter().map(|l| l["offset"].as_u64().unwrap()));
                after = got.last().copied();
            }
            assert_eq!(got, want, "{what}: paged query");
        }

        let (out, _) = cli(
            &dir,
            &[
                "tail".into(),
                flag.clone(),
                "--format=jsonl".into(),
                format!("-n{}", u64::MAX),
            ],
        );
        let lines = jsonl(&out);
        assert!(
            lines.iter().all(|l| l["tenant_id"] == tenant.as_str()),
            "{what}: tail: {out}"
        );
        let got: Vec<u64> = lines
            .iter()
            .map(|l| l["offset"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{what}: tail");

        let (out, _) = cli(
            &dir,
            &[
                "stats".into(),
                flag.clone(),
                "--format=json".into(),
                format!("--as-of={as_of}"),
            ],
        );
        let report: Value = serde_json::from_str(out.trim()).expect("stats JSON");
        let rules = report["rules"].as_array().expect("rules");
        let got: BTreeMap<String, u64> = rules
            .iter()
            .map(|r| {
                assert_eq!(
                    r["tenant_id"],
                    tenant.as_str(),
                    "{what}: stats lists another tenant"
                );
                (
                    r["rule_id"].as_str().unwrap().to_string(),
                    r["total_count"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: BTreeMap<String, u64> = want_stats
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, r), s)| (r.clone(), s.0))
            .collect();
        assert_eq!(got, want, "{what}: stats");

        // One rule of the tenant: only that (tenant, rule) is listed.
        let rule = RULES[i % RULES.len()];
        let (out, _) = cli(
            &dir,
            &[
                "stats".into(),
                flag.clone(),
                format!("--rule={rule}"),
                "--format=json".into(),
                format!("--as-of={as_of}"),
            ],
        );
        let report: Value = serde_json::from_str(out.trim()).expect("stats JSON");
        let total: u64 = report["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                assert_eq!(r["tenant_id"], tenant.as_str(), "{what}: stats --rule");
                assert_eq!(r["rule_id"], rule, "{what}: stats --rule");
                r["total_count"].as_u64().unwrap()
            })
            .sum();
        let want_total = want_stats
            .get(&(tenant.clone(), rule.to_string()))
            .map_or(0, |s| s.0);
        assert_eq!(total, want_total, "{what}: stats --rule {rule}");
    }
}
