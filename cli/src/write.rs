//! The write commands: `record` (one event) and `import` (JSON Lines, all
//! validated before anything is appended, then appended in atomic batches).

use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use enforcelog::event::details_from_json;
use enforcelog::timestamp::format_us;
use enforcelog::{Action, Event, Store};

use crate::failure::Failure;
use crate::output::{note, progress, JsonObject, Out};
use crate::read::action_parser;
use crate::store_dir::open_writer_with;
use crate::{units, Global};
use enforcelog_cli::import::{parse_line, LineError, Parsed};

pub const RECORD_ABOUT: &str = "Record one enforcement outcome; prints {\"offset\":N}";
pub const RECORD_LONG_ABOUT: &str = "\
Record one enforcement outcome and print its offset as {\"offset\":N} once it
is committed (durable under the default --durability fsync). Beside another
writer of the directory the event goes into a shard of it (see --exclusive)
and the line names it: {\"offset\":N,\"shard\":S} (shard 0, the root store,
is not named); (shard, offset) identifies the event in the directory.

The event is validated before the store is opened: ids are 1 to 128 bytes
of UTF-8 without control characters; --details must be a JSON object of at
most 64 KiB; --at is RFC 3339 with a zone (default: now). A refused event
exits with code 2 and changes nothing. The store is created if missing.";

pub const IMPORT_ABOUT: &str = "Import events from JSON Lines (all validated first, then appended)";
pub const IMPORT_LONG_ABOUT: &str = "\
Import events from a JSON Lines file (or - for stdin), one JSON object per
line:

  {\"tenant_id\":\"acme\",\"rule_id\":\"budget\",\"action_taken\":\"KILLED\",
   \"run_id\":\"run-7\",\"details\":{\"step\":3},\"enforced_at\":\"2026-11-01T10:00:00Z\"}

tenant_id, rule_id and action_taken (stopped, killed, aborted or blocked, any
case) are required; run_id, details (a JSON object) and enforced_at (RFC 3339
with a zone; default: when appended) are optional, and null means absent.
Blank lines are skipped. The fields \"offset\", \"shard\" and \"kind\" written
by `dump` and `query` are accepted (and ignored), so
`enforcelog dump | enforcelog --data-dir NEW import -` copies a store: lines
of kind \"gap\" (events the source store failed to record) are skipped and
counted on stderr. Any other field, or a field given twice, is an error.

The whole input is validated before anything is appended. If any line is
bad, nothing is appended, every bad line is reported on stderr as
`line N: field: reason` (the first 20, then a count), and the exit code is 2.
Lines are read as bytes: invalid UTF-8 is reported against its field.

Events are appended in input order, --batch N at a time, each batch one
atomic log batch (a batch is cut early if its input exceeds 16 MiB). If the
import is killed, the store holds a prefix of whole batches. On success it
prints {\"imported\":n,\"first_offset\":a,\"last_offset\":b} (offsets null when
nothing was imported), with \"shard\":S when it wrote into shard S of the
directory (beside another writer; see --exclusive).

--progress-json prints, before that summary, one line per committed batch
as soon as the batch is committed (durable under --durability fsync):
{\"batch\":k,\"events\":n,\"imported\":total,\"last_line\":L,\"shard\":S,
\"first_offset\":a,\"last_offset\":b}: batch k (from 1) of n events is in the
store, and so is every event of input lines 1 to L (total events so far).
If the import is killed, the last such line says what is acknowledged: a
restart with the lines after L imports the rest. The batch that was being
committed when it died is in the store whole or not at all; readers may not
see it until a writer has opened the dead import's shard again (its
recovery settles it; writers claim the lowest free shard first), so look
for one of its events (query --run) only after that.";

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The tenant the event belongs to.
    #[arg(long, value_name = "T")]
    tenant: String,
    /// The rule that fired.
    #[arg(long, value_name = "R")]
    rule: String,
    /// What the rule did (action_taken): stopped, killed, aborted or blocked.
    #[arg(long, value_name = "A", ignore_case = true, value_parser = action_parser())]
    action: Action,
    /// The run that was halted.
    #[arg(long, value_name = "ID")]
    run: Option<String>,
    /// When it happened (enforced_at; default: now): RFC 3339, a date, or
    /// a duration before now (90s).
    #[arg(long, value_name = "TIME", value_parser = units::parse_time)]
    at: Option<i64>,
    /// Context: a JSON object of at most 64 KiB.
    #[arg(long, value_name = "JSON")]
    details: Option<String>,
    #[command(flatten)]
    bounds: TimeBounds,
}

/// The times `record` and `import` accept: not further in the future than
/// `--max-future-skew`, not before `--not-before`.
#[derive(Debug, Args)]
pub struct TimeBounds {
    /// Refuse events stamped further than this after now (1h, 1d12h...),
    /// or `none` for no limit (an archive with far-future times).
    #[arg(long, value_name = "DURATION|none", default_value = "1h",
          value_parser = units::parse_skew)]
    max_future_skew: Duration,
    /// Refuse events stamped before this time (default 2000-01-01: an
    /// earlier time is far more likely a typo or an unset clock), or
    /// `none` for no limit.
    #[arg(long, value_name = "TIME|none", default_value = units::NOT_BEFORE_DEFAULT,
          value_parser = units::parse_not_before)]
    not_before: i64,
}

impl TimeBounds {
    /// Refuses `enforced_at_us` outside the bounds, as the event error the
    /// store would give (future) or its own (past).
    fn check(&self, enforced_at_us: i64) -> Result<(), String> {
        let skew_us = i64::try_from(self.max_future_skew.as_micros()).unwrap_or(i64::MAX);
        enforcelog::event::check_not_in_future(enforced_at_us, enforcelog::now_us(), skew_us)
            .map_err(|e| e.to_string())?;
        if enforced_at_us < self.not_before {
            return Err(format!(
                "enforced_at: {} is before --not-before {} (pass --not-before none, or an \
                 earlier time, to accept it)",
                format_us(enforced_at_us),
                format_us(self.not_before)
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON Lines file to read, or - for stdin.
    #[arg(value_name = "FILE|-")]
    input: PathBuf,
    /// Events per atomic batch.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch: u32,
    /// Print a JSON line on stdout as each batch commits (what a killed
    /// import had acknowledged).
    #[arg(long)]
    progress_json: bool,
    #[command(flatten)]
    bounds: TimeBounds,
}

pub fn record(global: &Global, args: &RecordArgs) -> Result<(), Failure> {
    let event = event_of(args)?;
    let store = open_writer_with(global, args.bounds.max_future_skew)?;
    let offset = store.record_blocking(event)?;
    let shard = store.shard();
    store.close()?;
    let mut out = Out::new();
    out.line(&with_shard(JsonObject::new().field("offset", offset), shard).finish())?;
    out.flush()
}

/// `object` with `"shard"` when the store written is a shard of the
/// directory: the root store's output keeps the shape it had before shards.
fn with_shard(object: JsonObject, shard: u32) -> JsonObject {
    if shard == 0 {
        object
    } else {
        object.field("shard", shard)
    }
}

fn event_of(args: &RecordArgs) -> Result<Event, Failure> {
    let mut event = Event::new(args.tenant.clone(), args.rule.clone(), args.action);
    if let Some(run) = &args.run {
        event = event.with_run_id(run.clone());
    }
    if let Some(details) = &args.details {
        event = event.with_details(details_from_json(details)?);
    }
    if let Some(at) = args.at {
        event = event.at_us(at);
    }
    event.validate()?;
    // Refused before the store is opened (or created): a refusal changes
    // nothing on disk. The store checks again with its own clock.
    if let Some(at) = event.enforced_at_us {
        args.bounds.check(at).map_err(Failure::usage)?;
    }
    Ok(event)
}

/// Bad lines shown before the rest are only counted.
const ERRORS_SHOWN: usize = 20;
/// A batch is committed early once its input lines exceed this, so that it
/// always fits in a segment.
const BATCH_INPUT_MAX_BYTES: usize = 16 << 20;

/// What validation found.
struct Checked {
    events: u64,
    gaps: u64,
}

pub fn import(global: &Global, args: &ImportArgs) -> Result<(), Failure> {
    let input = read_input(&args.input)?;
    let checked = validate(&input, &args.bounds)?;
    let mut out = Out::new();
    let (imported, shard) = if checked.events == 0 {
        (None, 0)
    } else {
        let store = open_writer_with(global, args.bounds.max_future_skew)?;
        let progress = args.progress_json.then_some(&mut out);
        let range = append_all(
            &store,
            &input,
            args.batch as usize,
            checked.events,
            progress,
        )?;
        let shard = store.shard();
        store.close()?;
        (Some(range), shard)
    };
    let summary = JsonObject::new()
        .field("imported", checked.events)
        .field("first_offset", imported.map(|r| r.0))
        .field("last_offset", imported.map(|r| r.1));
    out.line(&with_shard(summary, shard).finish())?;
    out.flush()?;
    if checked.gaps > 0 {
        note(&format!(
            "skipped {} gap line(s) (kind \"gap\": events the source store failed to record)",
            checked.gaps
        ));
    }
    Ok(())
}

fn read_input(input: &PathBuf) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    if input.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .read_to_end(&mut bytes)
            .map_err(|e| Failure::other(format!("reading stdin: {e}")))?;
        return Ok(bytes);
    }
    std::fs::read(input).map_err(|e| {
        let message = format!("cannot read {}: {e}", input.display());
        match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => {
                Failure::usage(message)
            }
            _ => Failure::other(message),
        }
    })
}

/// The input's lines, numbered from 1, without line ends or a leading BOM.
fn lines(input: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    input.split(|&b| b == b'\n').enumerate().map(|(i, line)| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        (i + 1, line)
    })
}

/// Refuses an event outside the time bounds, before anything is appended.
fn within_bounds(line: usize, event: &Event, bounds: &TimeBounds) -> Result<(), LineError> {
    let Some(at) = event.enforced_at_us else {
        return Ok(());
    };
    bounds.check(at).map_err(|reason| LineError {
        line,
        field: "enforced_at".into(),
        reason: reason
            .strip_prefix("enforced_at: ")
            .unwrap_or(&reason)
            .to_string(),
    })
}

/// Checks every line; on any bad line reports them and fails with exit 2.
fn validate(input: &[u8], bounds: &TimeBounds) -> Result<Checked, Failure> {
    let mut checked = Checked { events: 0, gaps: 0 };
    let mut errors: Vec<LineError> = Vec::new();
    let mut bad = 0u64;
    for (n, line) in lines(input) {
        match parse_line(n, line) {
            Ok(Parsed::Event(event)) => match within_bounds(n, &event, bounds) {
                Ok(()) => checked.events += 1,
                Err(e) => {
                    bad += 1;
                    if errors.len() < ERRORS_SHOWN {
                        errors.push(e);
                    }
                }
            },
            Ok(Parsed::Gap) => checked.gaps += 1,
            Ok(Parsed::Blank) => {}
            Err(e) => {
                bad += 1;
                if errors.len() < ERRORS_SHOWN {
                    errors.push(e);
                }
            }
        }
    }
    if bad == 0 {
        return Ok(checked);
    }
    for e in &errors {
        note(&e.to_string());
    }
    if bad > errors.len() as u64 {
        note(&format!(
            "... and {} more bad lines",
            bad - errors.len() as u64
        ));
    }
    Err(Failure::usage(format!(
        "import refused: {bad} bad line(s); nothing was appended"
    )))
}

/// Appends every event of the (validated) input in batches; returns the
/// first and last offsets. With `progress_out`, each batch is reported
/// there (and flushed) once it is committed, never before.
fn append_all(
    store: &Store,
    input: &[u8],
    batch_max: usize,
    events: u64,
    mut progress_out: Option<&mut Out>,
) -> Result<(u64, u64), Failure> {
    let bar = progress(events, "importing");
    let mut batch = store.begin();
    let mut batch_bytes = 0usize;
    let mut first = None;
    let mut last = 0;
    let mut committed = Committed::default();
    let mut commit = |batch: enforcelog::EventBatch, line: usize| -> Result<(), Failure> {
        let n = batch.len() as u64;
        let range = batch.commit_blocking()?;
        first.get_or_insert(range.start);
        last = range.end - 1;
        bar.inc(n);
        committed.batches += 1;
        committed.events += n;
        if let Some(out) = progress_out.as_deref_mut() {
            out.line(&committed.line(n, line, store.shard(), &range))?;
            out.flush()?;
        }
        Ok(())
    };
    let mut last_line = 0;
    for (n, line) in lines(input) {
        let Parsed::Event(event) = parse_line(n, line)
            .map_err(|e| Failure::other(format!("input changed after validation: {e}")))?
        else {
            continue;
        };
        batch.record(*event)?;
        last_line = n;
        batch_bytes += line.len();
        if batch.len() >= batch_max || batch_bytes >= BATCH_INPUT_MAX_BYTES {
            commit(std::mem::replace(&mut batch, store.begin()), n)?;
            batch_bytes = 0;
        }
    }
    if !batch.is_empty() {
        commit(batch, last_line)?;
    }
    bar.finish_and_clear();
    let first = first.ok_or_else(|| Failure::other("nothing was appended"))?;
    Ok((first, last))
}

/// What an import has committed so far, for `--progress-json`.
#[derive(Debug, Default)]
struct Committed {
    batches: u64,
    events: u64,
}

impl Committed {
    /// The progress line of the batch just committed: `events` events at
    /// `offsets` of `shard`, the last from input line `line`.
    fn line(&self, events: u64, line: usize, shard: u32, offsets: &std::ops::Range<u64>) -> String {
        JsonObject::new()
            .field("batch", self.batches)
            .field("events", events)
            .field("imported", self.events)
            .field("last_line", line)
            .field("shard", shard)
            .field("first_offset", offsets.start)
            .field("last_offset", offsets.end - 1)
            .finish()
    }
}
