//! The read commands: `query`, `stats`, `dump` and `tail`. Each opens the
//! store read-only (beside a writer, if one runs) and never creates it.

use std::time::Duration;

use clap::{Args, ValueEnum};
use enforcelog::timestamp::format_us;
use enforcelog::{now_us, Action, Delivery, Entry, Query, RuleStats, Store, StoreOptions};
use serde_json::Value;

use crate::failure::Failure;
use crate::output::{details_cell, event_fields, gap_fields, note, Align, JsonObject, Out, Table};
use crate::store_dir::{open_reader, open_reader_with};
use crate::{units, Global};

pub const QUERY_ABOUT: &str = "List one tenant's events, filtered (table or JSON Lines)";
pub const QUERY_LONG_ABOUT: &str = "\
List one tenant's events in offset order, filtered by rule, action, run and
time (--since inclusive, --until exclusive; RFC 3339 with a zone).

At most --limit events are printed (1 to 100000, default 1000). To page,
pass the last offset printed as --after-offset: only events with a greater
offset are listed. When more events may follow, a note on stderr gives the
next --after-offset. --format jsonl prints one object per event with
\"offset\" and the import fields (tenant_id, rule_id, action_taken, run_id,
details, enforced_at), so the output can be fed to `import`.";

pub const STATS_ABOUT: &str = "Trigger statistics per rule: count in a window, last triggered";
pub const STATS_LONG_ABOUT: &str = "\
Trigger statistics per (tenant, rule) as of an instant T (--as-of, default
now): the number of events in the window (T - window, T] (--window, default
30d; units d, h, m, s), the greatest enforced_at at or before T, the number of
events at or before T, and the window's count by action.

Only rules with at least one event at or before T are listed, sorted by
tenant then rule (UTF-8 bytes). --tenant and --rule narrow the list.
--format json prints {\"as_of\", \"window\", \"rules\": [{\"tenant_id\",
\"rule_id\", \"trigger_count_30d\", \"last_triggered_at\", \"total_count\",
\"by_action_30d\": {\"BLOCKED\": n, ...}}]} (the keys name the window).";

pub const DUMP_ABOUT: &str = "Every entry as JSON Lines (import-compatible)";
pub const DUMP_LONG_ABOUT: &str = "\
Print every entry of the log from --from (default 0) in offset order, one
JSON object per line, with \"offset\" and \"kind\":

  enforcement: the import fields tenant_id, rule_id, action_taken, run_id and
               details (when present) and enforced_at;
  gap:         dropped, first_dropped_at, last_dropped_at (events the store
               failed to record).

`enforcelog dump | enforcelog --data-dir NEW import -` reproduces the events
in a fresh store (gap lines are skipped by import, and counted).";

pub const TAIL_ABOUT: &str = "Print events as they commit (--follow to keep waiting)";
pub const TAIL_LONG_ABOUT: &str = "\
Print the entries committed from --from (default 0) on, through the
subscribe API, then exit; with --follow, keep printing new entries as they
commit (also those of a writer in another process) until interrupted.
--tenant shows only that tenant's events; gap markers (events the store
failed to record, of any tenant) are always shown. Text lines read
`OFFSET ENFORCED_AT TENANT RULE ACTION run=ID DETAILS`; --format jsonl prints
the objects `dump` prints.";

/// How `query` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Jsonl,
}

/// How `stats` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    Table,
    Json,
}

/// How `tail` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TailFormat {
    Text,
    Jsonl,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The tenant whose events to list.
    #[arg(long, value_name = "T")]
    tenant: String,
    /// Only this rule.
    #[arg(long, value_name = "R")]
    rule: Option<String>,
    /// Only this action: stopped, killed, aborted or blocked.
    #[arg(long, value_name = "A")]
    action: Option<String>,
    /// Only this run.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Only events enforced at or after TIME.
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    since: Option<i64>,
    /// Only events enforced before TIME.
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    until: Option<i64>,
    /// At most N events.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Only events with an offset greater than O (the last one already seen).
    #[arg(long, value_name = "O")]
    after_offset: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    format: ListFormat,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this tenant's rules.
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Only this rule (of every tenant, or of --tenant).
    #[arg(long, value_name = "R")]
    pub rule: Option<String>,
    /// The instant the statistics are computed at (default: now).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    pub as_of: Option<i64>,
    /// The window counted: 30d, 24h, 15m, 90s...
    #[arg(long, value_name = "WINDOW", default_value = "30d",
          value_parser = units::parse_window)]
    pub window: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatsFormat::Table)]
    pub format: StatsFormat,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The first offset to print.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    from: u64,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Keep waiting for new entries (until interrupted).
    #[arg(long, short)]
    follow: bool,
    /// Only this tenant's events (gap markers are always shown).
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// The first offset to print.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    from: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TailFormat::Text)]
    format: TailFormat,
}

pub fn query(global: &Global, args: &QueryArgs) -> Result<(), Failure> {
    let query = query_of(args)?;
    let store = open_reader(global)?;
    let page = store.query(&query)?;
    let mut out = Out::new();
    match args.format {
        ListFormat::Jsonl => {
            for event in &page.events {
                let object = JsonObject::new().field("offset", event.offset);
                out.line(&event_fields(object, event).finish())?;
            }
        }
        ListFormat::Table => events_table(&page.events).print(&mut out)?,
    }
    out.flush()?;
    if let (Some(_), Some(last)) = (page.next_offset, page.events.last()) {
        note(&format!(
            "more events may follow: --after-offset {}",
            last.offset
        ));
    }
    Ok(())
}

fn query_of(args: &QueryArgs) -> Result<Query, Failure> {
    let mut query = Query::tenant(args.tenant.clone()).limit(args.limit as usize);
    if let Some(rule) = &args.rule {
        query = query.rule(rule.clone());
    }
    if let Some(action) = &args.action {
        query = query.action(action.parse::<Action>()?);
    }
    if let Some(run) = &args.run {
        query = query.run_id(run.clone());
    }
    if let Some(since) = args.since {
        query = query.since_us(since);
    }
    if let Some(until) = args.until {
        query = query.until_us(until);
    }
    if let Some(after) = args.after_offset {
        query = query.from_offset(after.saturating_add(1));
    }
    Ok(query)
}

fn events_table(events: &[enforcelog::StoredEvent]) -> Table {
    let mut table = Table::new(&[
        ("OFFSET", Align::Right),
        ("ENFORCED_AT", Align::Left),
        ("TENANT", Align::Left),
        ("RULE", Align::Left),
        ("ACTION", Align::Left),
        ("RUN_ID", Align::Left),
        ("DETAILS", Align::Left),
    ]);
    for e in events {
        table.push(vec![
            e.offset.to_string(),
            format_us(e.enforced_at_us),
            e.tenant_id.clone(),
            e.rule_id.clone(),
            e.action.as_str().to_string(),
            e.run_id.clone().unwrap_or_else(|| "-".into()),
            details_cell(e.details.as_ref(), 60),
        ]);
    }
    table
}

pub fn stats(global: &Global, args: &StatsArgs) -> Result<(), Failure> {
    let options = StoreOptions {
        trigger_windows: vec![args.window],
        ..StoreOptions::default()
    };
    let store = open_reader_with(global, options)?;
    let as_of = args.as_of.unwrap_or_else(now_us);
    let rules = rules_of(&store, args, as_of)?;
    // Entries recorded and later destroyed by damage on disk (holes a
    // repair left): statistics cannot count them, so they say how many.
    let lost = store
        .with_projection::<enforcelog::TriggerStats, _>(|p, _| p.lost())?
        .unwrap_or(0);
    let mut out = Out::new();
    match args.format {
        StatsFormat::Json => {
            let mut report = enforcelog::stats_report(as_of, &rules);
            if lost > 0 {
                report["lost"] = Value::from(lost);
            }
            // The library labels the window from the first rule; say it
            // even when no rule is listed.
            report["window"] = Value::String(units::window_label(args.window));
            // Entries that are not store payloads were skipped: say so
            // (absent when there are none, so the usual report keeps its
            // shape).
            let undecodable = store.undecodable_entries();
            if undecodable > 0 {
                report["undecodable"] = Value::from(undecodable);
            }
            let text = serde_json::to_string_pretty(&report)
                .map_err(|e| Failure::other(format!("encoding JSON: {e}")))?;
            out.line(&text)?;
        }
        StatsFormat::Table => {
            if lost > 0 {
                note(&format!(
                    "warning: {lost} event(s) were lost to damage on disk (holes left by a \
                     repair); these statistics cannot count them"
                ));
            }
            stats_table(&rules, args.window).print(&mut out)?
        }
    }
    out.flush()
}

fn rules_of(store: &Store, args: &StatsArgs, as_of: i64) -> Result<Vec<RuleStats>, Failure> {
    let rules = match (&args.tenant, &args.rule) {
        (Some(tenant), Some(rule)) => vec![store.stats(tenant, rule, Some(as_of))?],
        (Some(tenant), None) => store.stats_for_tenant(tenant, Some(as_of))?,
        (None, rule) => {
            if let Some(rule) = rule {
                enforcelog::event::check_id(enforcelog::Field::RuleId, rule)?;
            }
            store.stats_all(Some(as_of))?
        }
    };
    Ok(rules
        .into_iter()
        .filter(|r| r.total_count > 0)
        .filter(|r| args.rule.as_ref().is_none_or(|rule| *rule == r.rule_id))
        .collect())
}

/// The statistics as a table, one row per rule.
pub fn stats_table(rules: &[RuleStats], window: Duration) -> Table {
    let label = units::window_label(window).to_uppercase();
    let count_header = format!("TRIGGER_COUNT_{label}");
    let mut headers = vec![
        ("TENANT", Align::Left),
        ("RULE", Align::Left),
        (count_header.as_str(), Align::Right),
        ("LAST_TRIGGERED_AT", Align::Left),
        ("TOTAL", Align::Right),
    ];
    headers.extend(Action::ALL.map(|a| (a.as_str(), Align::Right)));
    headers.push(("MISSING", Align::Right));
    let mut table = Table::new(&headers);
    for r in rules {
        let mut row = vec![
            r.tenant_id.clone(),
            r.rule_id.clone(),
            r.trigger_count.to_string(),
            r.last_triggered_at_us.map_or_else(|| "-".into(), format_us),
            r.total_count.to_string(),
        ];
        row.extend(Action::ALL.map(|a| r.count_for(a).to_string()));
        // `-`: no gap in the window; `>=N`: a gap that lost at least N
        // events of this rule (0: a gap that may have).
        row.push(if r.gap_in_window {
            format!(">={}", r.missing_at_least)
        } else {
            "-".into()
        });
        table.push(row);
    }
    table
}

pub fn dump(global: &Global, args: &DumpArgs) -> Result<(), Failure> {
    let store = open_reader(global)?;
    let mut out = Out::new();
    for entry in store.entries(args.from)? {
        out.line(&entry_json(&entry?))?;
    }
    out.flush()
}

/// An entry as `dump` prints it.
fn entry_json(entry: &Entry) -> String {
    let object = JsonObject::new().field("offset", entry.offset());
    match entry {
        Entry::Event(e) => event_fields(object.field("kind", "enforcement"), e).finish(),
        Entry::Gap(g) => gap_fields(object.field("kind", "gap"), g).finish(),
        Entry::Lost(l) => object
            .field("kind", "lost")
            .field("hole_first_offset", l.hole_first_offset)
            .field("hole_len", l.hole_len)
            .finish(),
    }
}

/// How long `tail --follow` waits before looking for new commits of a
/// writer in another process.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn tail(global: &Global, args: &TailArgs) -> Result<(), Failure> {
    if let Some(tenant) = &args.tenant {
        enforcelog::event::check_id(enforcelog::Field::TenantId, tenant)?;
    }
    let store = open_reader(global)?;
    let mut subscription = store.subscribe(args.from)?;
    let mut out = Out::new();
    loop {
        while let Some(delivery) = subscription.try_next()? {
            print_delivery(&mut out, args, &delivery)?;
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
        store.refresh()?;
    }
}

fn print_delivery(out: &mut Out, args: &TailArgs, delivery: &Delivery) -> Result<(), Failure> {
    let entry = match delivery {
        Delivery::Entry(entry) => entry,
        Delivery::Lagging { behind } => {
            note(&format!("warning: tail is {behind} entries behind the log"));
            return Ok(());
        }
    };
    if let (Entry::Event(e), Some(tenant)) = (entry, &args.tenant) {
        if e.tenant_id != *tenant {
            return Ok(());
        }
    }
    match args.format {
        TailFormat::Jsonl => out.line(&entry_json(entry)),
        TailFormat::Text => out.line(&entry_text(entry)),
    }
}

fn entry_text(entry: &Entry) -> String {
    match entry {
        Entry::Event(e) => format!(
            "{} {} {} {} {} run={} {}",
            e.offset,
            format_us(e.enforced_at_us),
            e.tenant_id,
            e.rule_id,
            e.action,
            e.run_id.as_deref().unwrap_or("-"),
            details_cell(e.details.as_ref(), 200),
        ),
        Entry::Gap(g) => format!(
            "{} GAP: {} event(s) dropped between {} and {}",
            g.offset,
            g.dropped,
            format_us(g.first_dropped_at_us),
            format_us(g.last_dropped_at_us),
        ),
        Entry::Lost(l) => format!(
            "{} LOST: recorded, then destroyed by damage on disk (hole of {} offset(s) from {})",
            l.offset, l.hole_len, l.hole_first_offset
        ),
    }
}
