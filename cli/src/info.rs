//! `info`: what a store holds and how it stands, read-only (it works while
//! writers run, and never creates or changes a file).
//!
//! A directory several writers share has shards (the root store, shard 0,
//! and `shards/<n>/`): `info` describes each, and the totals. Sizes and the
//! segment count come from the directory listings; offsets, the store ids
//! and the event times from a read-only open of each shard and one pass
//! over every entry (so `info` on a large store takes as long as a
//! replay); checkpoint ages from the checkpoint files' modification times.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::Args;
use enforcelog::timestamp::format_us;
use enforcelog::{now_us, Entry, Store};
use serde_json::{json, Value};

use crate::clock::show_us;
use crate::failure::{lock_holder, Failure};
use crate::output::{Format, Out};
use crate::store_dir::require_store;
use crate::units::{format_duration, thousands};
use crate::Global;

pub const INFO_ABOUT: &str =
    "What a store holds: shards, segments, sizes, offsets, event times (read-only)";
pub const INFO_LONG_ABOUT: &str = "\
Describe the store: its id, the number of segments and their bytes, the
first and next offset, how many entries are events, gap markers and holes,
the oldest and newest enforced_at, each projection checkpoint's age, and
whether a writer holds the store (with its process id). Read-only: it works
while writers run.

A directory several writers share has shards (the root store is shard 0,
DIR/shards/<n>/ the others, one per writer that ran beside another): the
table then adds a line per shard, and the counts and sizes above them are
totals over every shard.

--format json prints one object with the keys store_id, dir, segments,
segment_bytes, total_bytes, first_offset, next_offset, events, gaps, lost,
oldest_enforced_at, newest_enforced_at, checkpoints [{name, bytes, age_s,
written_at}], writer_pid (null when no writer holds the store), writer,
writers and shards. segments, segment_bytes, total_bytes, events, gaps,
lost and the enforced_at range are totals over every shard; store_id,
first_offset, next_offset, checkpoints, writer_pid and writer are the root
store's (shard 0); writers counts the shards a writer holds; shards lists
every shard as an object with shard, dir and the per-store keys above.";

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What `info` found in one shard (or, summed, in the directory).
#[derive(Default)]
struct Info {
    segments: u64,
    segment_bytes: u64,
    total_bytes: u64,
    first_offset: u64,
    next_offset: u64,
    events: u64,
    gaps: u64,
    lost: u64,
    oldest_us: Option<i64>,
    newest_us: Option<i64>,
    checkpoints: Vec<Checkpoint>,
    store_id: Option<String>,
    writer_pid: Option<Option<u32>>,
}

impl Info {
    /// Adds a shard's counts and sizes into these totals.
    fn add(&mut self, shard: &Info) {
        self.segments += shard.segments;
        self.segment_bytes += shard.segment_bytes;
        self.total_bytes += shard.total_bytes;
        self.events += shard.events;
        self.gaps += shard.gaps;
        self.lost += shard.lost;
        self.oldest_us = min_some(self.oldest_us, shard.oldest_us);
        self.newest_us = max_some(self.newest_us, shard.newest_us);
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.into_iter().chain(b).min()
}

fn max_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.into_iter().chain(b).max()
}

struct Checkpoint {
    name: String,
    bytes: u64,
    written_us: Option<i64>,
}

/// One shard of the directory: its number, directory and what it holds.
struct Shard {
    number: u32,
    dir: PathBuf,
    info: Info,
}

pub fn info(global: &Global, args: &InfoArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    require_store(dir)?;
    let mut shards = Vec::new();
    for (number, shard_dir) in Store::shard_dirs(dir)? {
        let info = describe(&shard_dir)?;
        shards.push(Shard {
            number,
            dir: shard_dir,
            info,
        });
    }
    let mut out = Out::new();
    match args.format {
        Format::Table => {
            for line in table_lines(dir, &shards) {
                out.line(&line)?;
            }
        }
        Format::Json => out.line(&pretty(&info_json(dir, &shards))?)?,
        Format::Jsonl => out.line(&info_json(dir, &shards).to_string())?,
    }
    out.flush()
}

/// What one shard's directory holds (a read-only open of that shard alone).
fn describe(dir: &Path) -> Result<Info, Failure> {
    let store = Store::builder(dir)
        .projections(Vec::new())
        .open_read_only()
        .map_err(Failure::from)?;
    let mut info = Info {
        next_offset: store.next_offset(),
        checkpoints: checkpoints(&dir.join("projections")),
        store_id: store.store_id().map(|id| id.to_string()),
        writer_pid: writer(dir),
        ..Info::default()
    };
    list_files(dir, &mut info)?;
    count_entries(&store, &mut info)?;
    Ok(info)
}

fn pretty(value: &Value) -> Result<String, Failure> {
    serde_json::to_string_pretty(value).map_err(|e| Failure::other(format!("encoding JSON: {e}")))
}

/// Segments (`<20 digits>.log`), their bytes, the first offset, and the
/// bytes of every file in the directory and its `projections/`.
fn list_files(dir: &Path, info: &mut Info) -> Result<(), Failure> {
    let mut first: Option<u64> = None;
    for (path, bytes) in files_in(dir)? {
        info.total_bytes += bytes;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let base = name
            .as_deref()
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|b| b.len() == 20 && b.bytes().all(|c| c.is_ascii_digit()));
        if let Some(base) = base.and_then(|b| b.parse::<u64>().ok()) {
            info.segments += 1;
            info.segment_bytes += bytes;
            first = Some(first.map_or(base, |f| f.min(base)));
        }
    }
    for (_, bytes) in files_in(&dir.join("projections")).unwrap_or_default() {
        info.total_bytes += bytes;
    }
    info.first_offset = first.unwrap_or(0);
    Ok(())
}

/// The regular files of `dir` and their sizes.
fn files_in(dir: &Path) -> Result<Vec<(std::path::PathBuf, u64)>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Failure::other(format!("cannot list {}: {e}", dir.display())))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (e.path(), meta.len()))
        })
        .collect())
}

/// One pass over the log: entries by kind, oldest and newest event time.
fn count_entries(store: &enforcelog::Store, info: &mut Info) -> Result<(), Failure> {
    for entry in store.entries(info.first_offset)? {
        match entry? {
            Entry::Event(e) => {
                info.events += 1;
                let at = e.enforced_at_us;
                info.oldest_us = Some(info.oldest_us.map_or(at, |o| o.min(at)));
                info.newest_us = Some(info.newest_us.map_or(at, |n| n.max(at)));
            }
            Entry::Gap(_) => info.gaps += 1,
            Entry::Lost(_) => info.lost += 1,
        }
    }
    Ok(())
}

/// Each `*.ckpt` file of `projections/`, with its size and write time.
fn checkpoints(dir: &Path) -> Vec<Checkpoint> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Checkpoint> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".ckpt")?.to_string();
            let meta = e.metadata().ok()?;
            let written_us = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_micros()).ok());
            Some(Checkpoint {
                name,
                bytes: meta.len(),
                written_us,
            })
        })
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// `None`: no writer holds the store; `Some(pid)`: one does (its process
/// id when it recorded one). Asked with a shared lock taken and released
/// at once on the lock file, read-only, never creating it.
fn writer(dir: &Path) -> Option<Option<u32>> {
    let file = std::fs::File::open(dir.join("LOCK")).ok()?;
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(std::fs::TryLockError::WouldBlock) => Some(lock_holder(dir)),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// Seconds from `us` to now (0 for a time in the future).
fn age_s(us: i64) -> u64 {
    u64::try_from(now_us().saturating_sub(us) / 1_000_000).unwrap_or(0)
}

/// The per-store keys of one shard (also the root's, at the top level).
fn store_json(info: &Info) -> serde_json::Map<String, Value> {
    let checkpoints: Vec<Value> = info
        .checkpoints
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "bytes": c.bytes,
                "age_s": c.written_us.map(age_s),
                "written_at": c.written_us.map(format_us),
            })
        })
        .collect();
    let value = json!({
        "store_id": info.store_id,
        "segments": info.segments,
        "segment_bytes": info.segment_bytes,
        "total_bytes": info.total_bytes,
        "first_offset": info.first_offset,
        "next_offset": info.next_offset,
        "events": info.events,
        "gaps": info.gaps,
        "lost": info.lost,
        "oldest_enforced_at": info.oldest_us.map(format_us),
        "newest_enforced_at": info.newest_us.map(format_us),
        "checkpoints": checkpoints,
        "writer_pid": info.writer_pid.flatten(),
        "writer": info.writer_pid.is_some(),
    });
    match value {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}

/// The keys of the report whose value is a total over every shard (the
/// others at the top level are the root store's).
const SUMMED_KEYS: [&str; 8] = [
    "segments",
    "segment_bytes",
    "total_bytes",
    "events",
    "gaps",
    "lost",
    "oldest_enforced_at",
    "newest_enforced_at",
];

/// The report: the root store's keys, the totals in place of its counts
/// and sizes, and every shard.
fn info_json(dir: &Path, shards: &[Shard]) -> Value {
    let totals = totals(shards);
    let mut top = shards
        .first()
        .map(|s| store_json(&s.info))
        .unwrap_or_default();
    for (key, value) in store_json(&totals) {
        if SUMMED_KEYS.contains(&key.as_str()) {
            top.insert(key, value);
        }
    }
    top.insert("dir".into(), Value::from(dir.display().to_string()));
    top.insert("writers".into(), Value::from(writers(shards)));
    let each: Vec<Value> = shards
        .iter()
        .map(|s| {
            let mut object = serde_json::Map::new();
            object.insert("shard".into(), Value::from(s.number));
            object.insert("dir".into(), Value::from(s.dir.display().to_string()));
            object.extend(store_json(&s.info));
            Value::Object(object)
        })
        .collect();
    top.insert("shards".into(), Value::from(each));
    Value::Object(top)
}

/// The counts and sizes summed over every shard.
fn totals(shards: &[Shard]) -> Info {
    let mut totals = Info::default();
    for s in shards {
        totals.add(&s.info);
    }
    totals
}

/// How many shards a writer holds.
fn writers(shards: &[Shard]) -> u64 {
    shards
        .iter()
        .filter(|s| s.info.writer_pid.is_some())
        .count() as u64
}

fn mib(b: u64) -> String {
    format!(
        "{} bytes ({:.1} MiB)",
        thousands(b),
        b as f64 / (1 << 20) as f64
    )
}

fn time(us: Option<i64>) -> String {
    us.map_or_else(|| "-".into(), show_us)
}

fn table_lines(dir: &Path, shards: &[Shard]) -> Vec<String> {
    let root = shards.first().map(|s| &s.info);
    let totals = totals(shards);
    let several = shards.len() > 1;
    let of_all = if several { " (all shards)" } else { "" };
    let mut lines = vec![
        format!("store            {}", dir.display()),
        format!(
            "store id         {}",
            root.and_then(|r| r.store_id.as_deref())
                .unwrap_or("- (made before store ids)")
        ),
        format!(
            "segments         {}, {}{of_all}",
            totals.segments,
            mib(totals.segment_bytes)
        ),
        format!("all files        {}{of_all}", mib(totals.total_bytes)),
        format!(
            "offsets          first {}, next {}{}",
            root.map_or(0, |r| r.first_offset),
            root.map_or(0, |r| r.next_offset),
            if several { " (shard 0)" } else { "" }
        ),
        format!(
            "entries          {} events, {} gap markers, {} lost to damage{of_all}",
            thousands(totals.events),
            thousands(totals.gaps),
            thousands(totals.lost)
        ),
        format!("oldest event     {}", time(totals.oldest_us)),
        format!("newest event     {}", time(totals.newest_us)),
    ];
    if let Some(root) = root {
        lines.extend(checkpoint_lines(root));
        lines.push(writer_line(root.writer_pid));
    }
    if several {
        lines.push(format!(
            "shards           {} (shard 0 is the root store), {} with a writer",
            shards.len(),
            writers(shards)
        ));
        for s in shards.iter().skip(1) {
            lines.push(shard_line(dir, s));
        }
    }
    lines
}

/// One line for a shard other than the root.
fn shard_line(root: &Path, s: &Shard) -> String {
    let shown = s
        .dir
        .strip_prefix(root)
        .unwrap_or(&s.dir)
        .display()
        .to_string();
    let writer = match s.info.writer_pid {
        None => "no writer".to_string(),
        Some(Some(pid)) => format!("writer process {pid}"),
        Some(None) => "a writer".to_string(),
    };
    format!(
        "shard {:<10} {shown}: id {}, {} events, {} gap markers, {} lost, next offset {}, {} \
         segment(s) {}, {writer}",
        s.number,
        s.info.store_id.as_deref().unwrap_or("-"),
        thousands(s.info.events),
        thousands(s.info.gaps),
        thousands(s.info.lost),
        s.info.next_offset,
        s.info.segments,
        mib(s.info.segment_bytes),
    )
}

fn checkpoint_lines(info: &Info) -> Vec<String> {
    if info.checkpoints.is_empty() {
        return vec!["checkpoints      none".into()];
    }
    info.checkpoints
        .iter()
        .map(|c| {
            let age = c.written_us.map_or_else(
                || "age unknown".into(),
                |us| match age_s(us) {
                    0 => "written just now".to_string(),
                    s => format!(
                        "written {} ago",
                        format_duration(std::time::Duration::from_secs(s))
                    ),
                },
            );
            format!(
                "checkpoint       {}: {} bytes, {age}",
                c.name,
                thousands(c.bytes)
            )
        })
        .collect()
}

fn writer_line(writer_pid: Option<Option<u32>>) -> String {
    match writer_pid {
        None => "writer           none (the store is not locked)".into(),
        Some(Some(pid)) => format!("writer           process {pid} holds the store"),
        Some(None) => "writer           a process holds the store (its id is not recorded)".into(),
    }
}
