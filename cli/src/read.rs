//! The read commands: `query`, `stats`, `dump` and `tail`. Each opens the
//! store read-only (beside a writer, if one runs) and never creates it.
//!
//! Every filter flag names an event field (`--tenant` = `tenant_id`,
//! `--rule` = `rule_id`, `--run` = `run_id`, `--action` = `action_taken`,
//! `--since`/`--until` = `enforced_at`) and is checked before the store is
//! opened: a bad one is refused as `bad filter --FLAG: reason` (exit 2).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::Args;
use enforcelog::event::check_id;
use enforcelog::timestamp::format_us;
use enforcelog::{
    now_us, Action, Entry, Error, Field, Positions, Query, RuleStats, ShardEntry, Store,
    StoreOptions, StoredEvent, UnionDelivery,
};
use serde_json::{json, Value};

use crate::clock::show_us;
use crate::failure::Failure;
use crate::output::{
    details_cell, event_fields, gap_fields, note, Align, Format, JsonObject, Out, Table,
};
use crate::store_dir::{open_reader, open_reader_with};
use crate::{units, Global};

pub const QUERY_ABOUT: &str = "List one tenant's events, filtered (table, json or jsonl)";
pub const QUERY_LONG_ABOUT: &str = "\
List one tenant's events in offset order, filtered by rule, action, run and
time (--since inclusive, --until exclusive). A time is RFC 3339 with a zone,
a date (2026-11-01: midnight UTC), now, or a duration before now (24h, 1w).

A directory several writers share has shards (the root store is shard 0,
DIR/shards/<n>/ the others): events are listed shard by shard in ascending
shard number, each shard in offset order, and an event is named by its
shard and its offset (offsets count within a shard).

At most --limit events are printed (1 to 100000, default 1000). To page,
pass the position of the last event printed: --after-offset O, with
--after-shard S when it is in shard S > 0. Only events after it are listed
(the rest of shard S, then the shards above it). When more events may
follow, a note on stderr gives the flags for the next page; a page with
fewer than --limit events is the last. A shard that does not exist, or an
offset beyond a shard's end, is refused (exit 2). --count prints only how
many events match (every page, from the position given, if any).
--format jsonl prints one object per event with \"offset\" (and \"shard\"
when it is not 0) and the import fields (tenant_id, rule_id, action_taken,
run_id, details, enforced_at), so the output can be fed to `import`;
--format json prints them as one array. The table has a SHARD column when
an event shown is from a shard other than 0.";

pub const STATS_ABOUT: &str = "Trigger statistics per rule: count in a window, last triggered";
pub const STATS_LONG_ABOUT: &str = "\
Trigger statistics per (tenant, rule) as of an instant T (--as-of, default
now): the number of events in the window (T - window, T] (--window, default
30d), the greatest enforced_at at or before T, the number of events at or
before T, and the window's count by action.

Only rules with at least one event at or before T are listed, sorted by
tenant then rule (UTF-8 bytes). --tenant and --rule narrow the list.
--format json prints {\"as_of\", \"window\", \"rules\": [{\"tenant_id\",
\"rule_id\", \"window\", \"trigger_count\", \"last_triggered_at\",
\"total_count\", \"by_action\": {\"STOPPED\": n, \"KILLED\": n, \"ABORTED\": n,
\"BLOCKED\": n}, \"gap_in_window\", \"missing_at_least\"}]}: the keys are the
same whatever the window (the window is the \"window\" field) and are the
names of the Rust RuleStats fields (a Rust field ending _us is printed as
RFC 3339 text under the name without _us). --format jsonl prints one rule
object per line. In the table, the window's columns carry its length
(TRIGGER_COUNT_30D, BLOCKED_30D...).";

pub const DUMP_ABOUT: &str = "Every entry as JSON Lines (import-compatible)";
pub const DUMP_LONG_ABOUT: &str = "\
Print every entry of the log from --from (default 0) in offset order, one
JSON object per line, with \"offset\" and \"kind\":

  enforcement: the import fields tenant_id, rule_id, action_taken, run_id and
               details (when present) and enforced_at;
  gap:         dropped, first_dropped_at, last_dropped_at (events the store
               failed to record);
  lost:        hole_first_offset, hole_len (destroyed by damage on disk).

--tenant keeps only that tenant's events (gap and lost entries, which
belong to no one tenant, are always printed); --limit stops after N lines.
`enforcelog dump | enforcelog --data-dir NEW import -` reproduces the events
in a fresh store (gap lines are skipped by import, and counted).

A directory several writer processes share has shards (shards/<n>/ beside
the root store, shard 0), each with its own offsets. dump then prints every
shard, shard by shard in ascending order, each in offset order (there is no
order across shards), and each line also carries \"shard\" and the shard's
\"store_id\" (with \"offset\", the event's identity); in the table, the
offset reads SHARD:OFFSET. --from starts every shard at that offset.";

pub const TAIL_ABOUT: &str = "The last entries of the log (-n, default 10); --follow keeps going";
pub const TAIL_LONG_ABOUT: &str = "\
Print the last -n entries of the log (default 10) and exit, like tail; with
--follow (-f), keep printing new entries as they commit (also those of a
writer in another process) until interrupted. --tenant shows only that
tenant's events (the last -n of that tenant); gap markers (events the store
failed to record, of any tenant) are always shown. --from starts the search
for the last -n at an offset instead. Table lines read
`OFFSET ENFORCED_AT TENANT RULE ACTION run=ID DETAILS`; --format jsonl
prints the objects `dump` prints.

In a directory with shards (several writer processes), tail prints the last
-n entries of each shard, shard by shard, and --follow prints every shard's
new entries (shards created later included) as the store sees them: within
about 200 ms of their writer making them durable. Lines carry their shard
as dump's do.";

/// The actions, as `--action` offers them to shell completion (any case,
/// and the short forms `stop`, `kill`, `abort`, `block`, are accepted).
pub fn action_parser() -> impl TypedValueParser<Value = Action> {
    let values = [
        ("stopped", "stop"),
        ("killed", "kill"),
        ("aborted", "abort"),
        ("blocked", "block"),
    ]
    .map(|(name, short)| PossibleValue::new(name).alias(short));
    PossibleValuesParser::new(values).try_map(|text| text.parse::<Action>())
}

/// Refuses a bad id filter before the store is opened, naming the flag.
pub fn check_filter(flag: &str, field: Field, id: Option<&String>) -> Result<(), Failure> {
    match id {
        Some(id) => {
            check_id(field, id).map_err(|e| Failure::usage(format!("bad filter --{flag}: {e}")))
        }
        None => Ok(()),
    }
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    /// The tenant whose events to list (tenant_id).
    #[arg(long, value_name = "T")]
    tenant: String,
    /// Only this rule (rule_id).
    #[arg(long, value_name = "R")]
    rule: Option<String>,
    /// Only this action (action_taken).
    #[arg(long, value_name = "A", ignore_case = true, value_parser = action_parser())]
    action: Option<Action>,
    /// Only this run (run_id).
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// Only events enforced (enforced_at) at or after TIME.
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    since: Option<i64>,
    /// Only events enforced (enforced_at) before TIME.
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    until: Option<i64>,
    /// At most N events.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Only events after offset O (of shard --after-shard; the last one
    /// already seen).
    #[arg(long, value_name = "O")]
    after_offset: Option<u64>,
    /// The shard of --after-offset (default 0, the root store).
    #[arg(long, value_name = "S", requires = "after_offset")]
    after_shard: Option<u32>,
    /// Print only the number of matching events (all of them, not --limit).
    #[arg(long, conflicts_with = "limit")]
    count: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Only this tenant's rules (tenant_id).
    #[arg(long, value_name = "T")]
    pub tenant: Option<String>,
    /// Only this rule (rule_id), of every tenant or of --tenant.
    #[arg(long, value_name = "R")]
    pub rule: Option<String>,
    /// The instant the statistics are computed at (default: now).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    pub as_of: Option<i64>,
    /// The window counted: 30d, 1w, 1d12h, 90s...
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = units::parse_window)]
    pub window: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The first offset to print.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    from: u64,
    /// Only this tenant's events (tenant_id); gap and lost entries are kept.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// At most N lines.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    format: Format,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    /// How many of the last entries to print (0: none, then --follow).
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10)]
    lines: u64,
    /// Keep waiting for new entries (until interrupted).
    #[arg(long, short)]
    follow: bool,
    /// Only this tenant's events (tenant_id); gap markers are always shown.
    #[arg(long, value_name = "T")]
    tenant: Option<String>,
    /// Look for the last -n entries from this offset on.
    #[arg(long, value_name = "OFFSET")]
    from: Option<u64>,
    /// Output format (json is refused with --follow: it never ends).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

pub fn query(global: &Global, args: &QueryArgs) -> Result<(), Failure> {
    let query = query_of(args)?;
    let store = open_reader(global)?;
    check_cursor(&store, global, args)?;
    if args.count {
        return print_count(&store, query, args.format);
    }
    let page = store.query(&query)?;
    let mut out = Out::new();
    let objects = || {
        page.events.iter().zip(&page.shards).map(|(e, &shard)| {
            let object = JsonObject::new().field("offset", e.offset);
            let object = if shard == 0 {
                object
            } else {
                object.field("shard", shard)
            };
            event_fields(object, e).finish()
        })
    };
    match args.format {
        Format::Jsonl => {
            for object in objects() {
                out.line(&object)?;
            }
        }
        Format::Json => out.line(&json_array(objects()))?,
        Format::Table => events_table(&page.events, &page.shards).print(&mut out)?,
    }
    out.flush()?;
    // The cursor is the last event printed: the next page lists what comes
    // after it in (shard, offset) order, whichever shard it is in.
    if page.next_offset.is_some() {
        if let (Some(&shard), Some(last)) = (page.shards.last(), page.events.last()) {
            note(&format!(
                "more events may follow: {}",
                cursor_flags(shard, last.offset)
            ));
        }
    }
    Ok(())
}

/// The flags that continue a listing after the event at (`shard`, `offset`).
fn cursor_flags(shard: u32, offset: u64) -> String {
    if shard == 0 {
        format!("--after-offset {offset}")
    } else {
        format!("--after-shard {shard} --after-offset {offset}")
    }
}

/// Refuses a position that names no event of the directory: a shard that
/// does not exist, or an offset at or beyond its shard's end. A cursor from
/// an earlier page always names one (shards are never removed, offsets
/// only grow), so this is a typo or another directory's cursor, and an
/// empty page would hide that.
fn check_cursor(store: &Store, global: &Global, args: &QueryArgs) -> Result<(), Failure> {
    let Some(offset) = args.after_offset else {
        return Ok(());
    };
    let shard = args.after_shard.unwrap_or(0);
    let dirs = Store::shard_dirs(&global.data_dir)?;
    let shown = cursor_flags(shard, offset);
    let Some((_, dir)) = dirs.iter().find(|(n, _)| *n == shard) else {
        let have: Vec<String> = dirs.iter().map(|(n, _)| n.to_string()).collect();
        return Err(Failure::usage(format!(
            "bad position {shown}: the store at {} has no shard {shard} (its shards: {})",
            global.data_dir.display(),
            have.join(", ")
        )));
    };
    let next = if shard == 0 {
        store.next_offset()
    } else {
        enforcelog::Log::open_read_only(dir)?.next_offset()
    };
    if offset >= next {
        return Err(Failure::usage(format!(
            "bad position {shown}: shard {shard} holds offsets below {next} only (the \
             position is the shard and offset of the last event already seen)"
        )));
    }
    Ok(())
}

/// Counts every event `query` matches, page after page.
fn print_count(store: &Store, query: Query, format: Format) -> Result<(), Failure> {
    let mut query = query.limit(100_000);
    let mut count = 0u64;
    loop {
        let page = store.query(&query)?;
        count += page.events.len() as u64;
        match page.next_query(&query) {
            Some(next) => query = next,
            None => break,
        }
    }
    let mut out = Out::new();
    match format {
        Format::Table => out.line(&count.to_string())?,
        Format::Json | Format::Jsonl => out.line(&json!({ "count": count }).to_string())?,
    }
    out.flush()
}

/// Lines already JSON, as one JSON array (one element per line).
fn json_array(objects: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = objects.collect();
    if items.is_empty() {
        return "[]".into();
    }
    format!("[\n{}\n]", items.join(",\n"))
}

fn query_of(args: &QueryArgs) -> Result<Query, Failure> {
    check_filter("tenant", Field::TenantId, Some(&args.tenant))?;
    check_filter("rule", Field::RuleId, args.rule.as_ref())?;
    check_filter("run", Field::RunId, args.run.as_ref())?;
    if let (Some(since), Some(until)) = (args.since, args.until) {
        if since >= until {
            return Err(Failure::usage(format!(
                "bad filter --since/--until: --since {} is not before --until {} (the range is \
                 since inclusive, until exclusive)",
                format_us(since),
                format_us(until)
            )));
        }
    }
    let mut query = Query::tenant(args.tenant.clone()).limit(args.limit as usize);
    if let Some(rule) = &args.rule {
        query = query.rule(rule.clone());
    }
    if let Some(action) = args.action {
        query = query.action(action);
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
        query = query
            .from_shard(args.after_shard.unwrap_or(0))
            .from_offset(after.saturating_add(1));
    }
    Ok(query)
}

/// The events as a table; a SHARD column when any of them is from a shard
/// other than the root store.
fn events_table(events: &[StoredEvent], shards: &[u32]) -> Table {
    let with_shard = shards.iter().any(|&s| s != 0);
    let mut headers = vec![("OFFSET", Align::Right)];
    if with_shard {
        headers.insert(0, ("SHARD", Align::Right));
    }
    headers.extend([
        ("ENFORCED_AT", Align::Left),
        ("TENANT", Align::Left),
        ("RULE", Align::Left),
        ("ACTION", Align::Left),
        ("RUN_ID", Align::Left),
        ("DETAILS", Align::Left),
    ]);
    let mut table = Table::new(&headers);
    for (e, shard) in events.iter().zip(shards) {
        let mut row = vec![
            e.offset.to_string(),
            show_us(e.enforced_at_us),
            e.tenant_id.clone(),
            e.rule_id.clone(),
            e.action.as_str().to_string(),
            e.run_id.clone().unwrap_or_else(|| "-".into()),
            details_cell(e.details.as_ref(), 60),
        ];
        if with_shard {
            row.insert(0, shard.to_string());
        }
        table.push(row);
    }
    table
}

pub fn stats(global: &Global, args: &StatsArgs) -> Result<(), Failure> {
    check_filter("tenant", Field::TenantId, args.tenant.as_ref())?;
    check_filter("rule", Field::RuleId, args.rule.as_ref())?;
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
        Format::Json => {
            let mut report = enforcelog::stats_report(as_of, args.window, &rules);
            if lost > 0 {
                report["lost"] = Value::from(lost);
            }
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
        Format::Jsonl => {
            for rule in &rules {
                out.line(&rule.to_json().to_string())?;
            }
        }
        Format::Table => {
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
        (None, _) => store.stats_all(Some(as_of))?,
    };
    Ok(rules
        .into_iter()
        .filter(|r| r.total_count > 0)
        .filter(|r| args.rule.as_ref().is_none_or(|rule| *rule == r.rule_id))
        .collect())
}

/// The statistics as a table, one row per rule; the window's columns carry
/// its length (`TRIGGER_COUNT_30D`, `BLOCKED_30D`, `MISSING_30D`).
pub fn stats_table(rules: &[RuleStats], window: Duration) -> Table {
    let label = units::window_label(window).to_uppercase();
    let in_window = |name: &str| format!("{name}_{label}");
    let count_header = in_window("TRIGGER_COUNT");
    let action_headers = Action::ALL.map(|a| in_window(a.as_str()));
    let missing_header = in_window("MISSING");
    let mut headers = vec![
        ("TENANT", Align::Left),
        ("RULE", Align::Left),
        (count_header.as_str(), Align::Right),
        ("LAST_TRIGGERED_AT", Align::Left),
        ("TOTAL_COUNT", Align::Right),
    ];
    headers.extend(action_headers.iter().map(|h| (h.as_str(), Align::Right)));
    headers.push((missing_header.as_str(), Align::Right));
    let mut table = Table::new(&headers);
    for r in rules {
        let mut row = vec![
            r.tenant_id.clone(),
            r.rule_id.clone(),
            r.trigger_count.to_string(),
            r.last_triggered_at_us.map_or_else(|| "-".into(), show_us),
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
    check_filter("tenant", Field::TenantId, args.tenant.as_ref())?;
    let store = open_reader(global)?;
    let end = store.union_end()?;
    let sharded = has_shards(&end);
    let from = every_shard_from(&end, args.from)?;
    let mut out = Out::new();
    let limit = args.limit.unwrap_or(u64::MAX);
    let mut printed = 0u64;
    let mut table_rows = Vec::new();
    let mut json_items = Vec::new();
    for entry in store.replay_union(&from)? {
        if printed >= limit {
            break;
        }
        let entry = entry?;
        if !is_shown(&entry.entry, args.tenant.as_ref()) {
            continue;
        }
        printed += 1;
        match args.format {
            Format::Jsonl => out.line(&entry_json(&entry, sharded))?,
            Format::Json => json_items.push(entry_json(&entry, sharded)),
            Format::Table => table_rows.push(entry_text(&entry, sharded)),
        }
    }
    match args.format {
        Format::Jsonl => {}
        Format::Json => out.line(&json_array(json_items.into_iter()))?,
        Format::Table => {
            for line in table_rows {
                out.line(&line)?;
            }
        }
    }
    out.flush()
}

/// Whether the directory has shards besides the root (as `end`, the
/// union's end when the command started, names them): lines then say
/// their shard.
fn has_shards(end: &Positions) -> bool {
    end.iter().any(|(shard, _)| shard != 0)
}

/// Every shard from `from` on (a shard that ends before it, at its end);
/// `from` beyond every shard's end is refused, as beyond the log's end was
/// before shards.
fn every_shard_from(end: &Positions, from: u64) -> Result<Positions, Failure> {
    let last = end.iter().map(|(_, p)| p.next_offset).max().unwrap_or(0);
    if from > last {
        return Err(Error::OffsetOutOfRange {
            requested: from,
            next_offset: last,
        }
        .into());
    }
    let mut start = end.clone();
    for (shard, at) in end.iter() {
        start.set(shard, from.min(at.next_offset));
    }
    Ok(start)
}

/// Whether an entry passes a `--tenant` filter: events of that tenant, and
/// every gap and lost entry (they belong to no one tenant).
fn is_shown(entry: &Entry, tenant: Option<&String>) -> bool {
    match (entry, tenant) {
        (Entry::Event(e), Some(tenant)) => e.tenant_id == *tenant,
        _ => true,
    }
}

/// An entry as `dump` prints it: with its shard and the shard's store id
/// first when the directory has shards (or the entry is not the root's).
fn entry_json(shard_entry: &ShardEntry, sharded: bool) -> String {
    let entry = &shard_entry.entry;
    let mut object = JsonObject::new();
    if sharded || shard_entry.shard != 0 {
        object = object
            .field("shard", shard_entry.shard)
            .field("store_id", shard_entry.store_id.map(|id| id.to_string()));
    }
    let object = object.field("offset", entry.offset());
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

/// How often `tail --follow` looks for what writers in other processes
/// made durable (the store's shard refresh interval).
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn tail(global: &Global, args: &TailArgs) -> Result<(), Failure> {
    check_filter("tenant", Field::TenantId, args.tenant.as_ref())?;
    if args.follow && args.format == Format::Json {
        return Err(Failure::usage(
            "--format json prints one document and --follow never ends it; use --format jsonl",
        ));
    }
    let options = StoreOptions {
        shard_refresh_interval: FOLLOW_POLL,
        ..StoreOptions::default()
    };
    let store = open_reader_with(global, options)?;
    let end = store.union_end()?;
    let sharded = has_shards(&end);
    let (last, resume) = last_entries(&store, &end, args)?;
    let mut out = Out::new();
    if args.format == Format::Json {
        out.line(&json_array(last.iter().map(|e| entry_json(e, sharded))))?;
        return out.flush();
    }
    for entry in &last {
        print_entry(&mut out, args, entry, sharded)?;
    }
    out.flush()?;
    if !args.follow {
        return Ok(());
    }
    // Wakes on the root's new commits and on each look at the other
    // shards (every FOLLOW_POLL), never polls in between.
    let mut subscription = store.subscribe_union(resume)?;
    loop {
        let delivery = match subscription.try_next()? {
            Some(delivery) => delivery,
            None => {
                out.flush()?;
                subscription.next_blocking()?
            }
        };
        match delivery {
            UnionDelivery::Entry(entry) if is_shown(&entry.entry, args.tenant.as_ref()) => {
                print_entry(&mut out, args, &entry, sharded)?
            }
            UnionDelivery::Entry(_) => {}
            UnionDelivery::Lagging { behind } => {
                note(&format!("warning: tail is {behind} entries behind the log"));
            }
        }
    }
}

/// The last `-n` entries shown of each shard (from `--from`, or where they
/// can start), and the position after everything read: where `--follow`
/// goes on.
fn last_entries(
    store: &Store,
    end: &Positions,
    args: &TailArgs,
) -> Result<(Vec<ShardEntry>, Positions), Failure> {
    let want = usize::try_from(args.lines).unwrap_or(usize::MAX);
    // An offset beyond every shard's end is refused (exit 2), as ever.
    let mut start = every_shard_from(end, args.from.unwrap_or(0))?;
    for (shard, at) in end.iter() {
        // Offsets are dense, so without a tenant filter the last N entries
        // start N offsets before the end; with one, they may be anywhere.
        let first = match (args.from, &args.tenant) {
            (Some(from), _) => from.min(at.next_offset),
            (None, None) => at.next_offset.saturating_sub(args.lines),
            (None, Some(_)) => 0,
        };
        start.set(shard, first);
    }
    if want == 0 {
        return Ok((Vec::new(), end.clone()));
    }
    let mut last: BTreeMap<u32, VecDeque<ShardEntry>> = BTreeMap::new();
    let mut replay = store.replay_union(&start)?;
    for entry in &mut replay {
        let entry = entry?;
        if !is_shown(&entry.entry, args.tenant.as_ref()) {
            continue;
        }
        let shard = last.entry(entry.shard).or_default();
        if shard.len() == want {
            shard.pop_front();
        }
        shard.push_back(entry);
    }
    let resume = replay.positions().clone();
    Ok((last.into_values().flatten().collect(), resume))
}

fn print_entry(
    out: &mut Out,
    args: &TailArgs,
    entry: &ShardEntry,
    sharded: bool,
) -> Result<(), Failure> {
    match args.format {
        Format::Jsonl | Format::Json => out.line(&entry_json(entry, sharded)),
        Format::Table => out.line(&entry_text(entry, sharded)),
    }
}

/// An entry as a table line; its offset reads `SHARD:OFFSET` when the
/// directory has shards (or the entry is not the root's).
fn entry_text(shard_entry: &ShardEntry, sharded: bool) -> String {
    let offset = if sharded || shard_entry.shard != 0 {
        format!("{}:{}", shard_entry.shard, shard_entry.entry.offset())
    } else {
        shard_entry.entry.offset().to_string()
    };
    match &shard_entry.entry {
        Entry::Event(e) => format!(
            "{} {} {} {} {} run={} {}",
            offset,
            show_us(e.enforced_at_us),
            e.tenant_id,
            e.rule_id,
            e.action,
            e.run_id.as_deref().unwrap_or("-"),
            details_cell(e.details.as_ref(), 200),
        ),
        Entry::Gap(g) => format!(
            "{} GAP: {} event(s) dropped between {} and {}",
            offset,
            g.dropped,
            show_us(g.first_dropped_at_us),
            show_us(g.last_dropped_at_us),
        ),
        Entry::Lost(l) => format!(
            "{} LOST: recorded, then destroyed by damage on disk (hole of {} offset(s) from {})",
            offset, l.hole_len, l.hole_first_offset
        ),
    }
}
