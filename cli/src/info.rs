//! `info`: what a store holds and how it stands, read-only (it works while
//! a writer holds the store, and never creates or changes a file).
//!
//! Sizes and the segment count come from the directory listing; offsets,
//! the store id and the event times from a read-only open and one pass over
//! every entry (so `info` on a large store takes as long as a replay);
//! checkpoint ages from the checkpoint files' modification times.

use std::path::Path;
use std::time::SystemTime;

use clap::Args;
use enforcelog::timestamp::format_us;
use enforcelog::{now_us, Entry};
use serde_json::{json, Value};

use crate::clock::show_us;
use crate::failure::{lock_holder, Failure};
use crate::output::{Format, Out};
use crate::store_dir::open_reader;
use crate::units::{format_duration, thousands};
use crate::Global;

pub const INFO_ABOUT: &str =
    "What a store holds: segments, sizes, offsets, event times (read-only)";
pub const INFO_LONG_ABOUT: &str = "\
Describe the store: its id, the number of segments and their bytes, the
first and next offset, how many entries are events, gap markers and holes,
the oldest and newest enforced_at, each projection checkpoint's age, and
whether a writer holds the store (with its process id). Read-only: it works
while a writer runs. --format json prints one object with the keys
store_id, dir, segments, segment_bytes, total_bytes, first_offset,
next_offset, events, gaps, lost, oldest_enforced_at, newest_enforced_at,
checkpoints [{name, bytes, age_s, written_at}], writer_pid (null when no
writer holds the store).";

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// What `info` found.
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

struct Checkpoint {
    name: String,
    bytes: u64,
    written_us: Option<i64>,
}

pub fn info(global: &Global, args: &InfoArgs) -> Result<(), Failure> {
    let dir = &global.data_dir;
    let store = open_reader(global)?;
    let mut info = Info {
        segments: 0,
        segment_bytes: 0,
        total_bytes: 0,
        first_offset: 0,
        next_offset: store.next_offset(),
        events: 0,
        gaps: 0,
        lost: 0,
        oldest_us: None,
        newest_us: None,
        checkpoints: checkpoints(&dir.join("projections")),
        store_id: store.store_id().map(|id| id.to_string()),
        writer_pid: writer(dir),
    };
    list_files(dir, &mut info)?;
    count_entries(&store, &mut info)?;
    let mut out = Out::new();
    match args.format {
        Format::Table => {
            for line in table_lines(dir, &info) {
                out.line(&line)?;
            }
        }
        Format::Json => out.line(&pretty(&info_json(dir, &info))?)?,
        Format::Jsonl => out.line(&info_json(dir, &info).to_string())?,
    }
    out.flush()
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

fn info_json(dir: &Path, info: &Info) -> Value {
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
    json!({
        "store_id": info.store_id,
        "dir": dir.display().to_string(),
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
    })
}

fn table_lines(dir: &Path, info: &Info) -> Vec<String> {
    let mib = |b: u64| {
        format!(
            "{} bytes ({:.1} MiB)",
            thousands(b),
            b as f64 / (1 << 20) as f64
        )
    };
    let time = |us: Option<i64>| us.map_or_else(|| "-".into(), show_us);
    let mut lines = vec![
        format!("store            {}", dir.display()),
        format!(
            "store id         {}",
            info.store_id
                .as_deref()
                .unwrap_or("- (made before store ids)")
        ),
        format!(
            "segments         {}, {}",
            info.segments,
            mib(info.segment_bytes)
        ),
        format!("all files        {}", mib(info.total_bytes)),
        format!(
            "offsets          first {}, next {}",
            info.first_offset, info.next_offset
        ),
        format!(
            "entries          {} events, {} gap markers, {} lost to damage",
            thousands(info.events),
            thousands(info.gaps),
            thousands(info.lost)
        ),
        format!("oldest event     {}", time(info.oldest_us)),
        format!("newest event     {}", time(info.newest_us)),
    ];
    if info.checkpoints.is_empty() {
        lines.push("checkpoints      none".into());
    }
    for c in &info.checkpoints {
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
        lines.push(format!(
            "checkpoint       {}: {} bytes, {age}",
            c.name,
            thousands(c.bytes)
        ));
    }
    lines.push(match info.writer_pid {
        None => "writer           none (the store is not locked)".into(),
        Some(Some(pid)) => format!("writer           process {pid} holds the store"),
        Some(None) => "writer           a process holds the store (its id is not recorded)".into(),
    });
    lines
}
