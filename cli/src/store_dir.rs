//! Opening the store named by `--data-dir`: writers create it, readers
//! require it and say so clearly when it is not there (exit code 2).
//!
//! A writer (`record`, `import`, `demo`) shares the directory with other
//! writers as the library does: when another process holds the root store
//! it claims a shard (`dir/shards/<n>/`), and every read command answers
//! for all shards. `--exclusive` keeps the old contract (one writer per
//! directory, exit 3 for a second one).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use enforcelog::storage::FileStorage;
use enforcelog::{LogOptions, Store, StoreOptions};

use crate::failure::Failure;
use crate::Global;

/// Opens (or creates) the store for writing, with the global durability
/// (and segment size, when the hidden option sets one).
pub fn open_writer(global: &Global) -> Result<Store, Failure> {
    open_writer_with(global, StoreOptions::default().max_future_skew)
}

/// [`open_writer`] refusing events stamped more than `max_future_skew`
/// after now.
pub fn open_writer_with(global: &Global, max_future_skew: Duration) -> Result<Store, Failure> {
    let defaults = LogOptions::default();
    let segment_max_bytes = global
        .segment_max_bytes
        .unwrap_or(defaults.segment_max_bytes);
    // A small segment must still hold a batch of one largest record; out of
    // range sizes are left for the library to refuse by name.
    let half_segment = usize::try_from(segment_max_bytes / 2).unwrap_or(usize::MAX);
    let options = StoreOptions {
        log: LogOptions {
            durability: global.durability,
            segment_max_bytes,
            record_max_bytes: defaults.record_max_bytes.min(half_segment.max(1)),
            ..defaults
        },
        max_future_skew,
        // Beside another writer, claim a shard unless told not to: a host's
        // CLI invocations must not fail because a worker process records.
        share_directory: !global.exclusive,
        // A write command reads nothing of the other shards: their
        // background re-reads would only take CPU from the writers.
        shard_refresh_interval: enforcelog::store::RECOVERY_INTERVAL_MAX,
        ..StoreOptions::default()
    };
    Store::open(&global.data_dir, options).map_err(Failure::from)
}

/// Opens an existing store read-only (beside a writer, if one runs).
pub fn open_reader(global: &Global) -> Result<Store, Failure> {
    open_reader_with(global, StoreOptions::default())
}

/// [`open_reader`] with projection options (statistics windows).
pub fn open_reader_with(global: &Global, options: StoreOptions) -> Result<Store, Failure> {
    require_store(&global.data_dir)?;
    Store::builder(&global.data_dir)
        .storage(Arc::new(FileStorage))
        .options(options)
        .projections(Vec::new())
        .open_read_only()
        .map_err(Failure::from)
}

/// Fails with exit code 2 unless `dir` holds a store: a directory with a
/// VERSION file or at least one segment.
pub fn require_store(dir: &Path) -> Result<(), Failure> {
    let shown = dir.display();
    let hint = "record, import and demo create one; --data-dir or ENFORCELOG_DIR say where";
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::usage(format!(
                "no store at {shown}: the directory does not exist; {hint}"
            )));
        }
        Err(e) => return Err(Failure::other(format!("cannot read {shown}: {e}"))),
        Ok(m) if !m.is_dir() => {
            return Err(Failure::usage(format!(
                "no store at {shown}: it is not a directory"
            )));
        }
        Ok(_) => {}
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| Failure::other(format!("cannot list {shown}: {e}")))?;
    let is_store = entries.filter_map(Result::ok).any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name == "VERSION" || name.ends_with(".log")
    });
    if is_store {
        Ok(())
    } else {
        Err(Failure::usage(format!(
            "no store at {shown}: the directory holds no enforcelog store; {hint}"
        )))
    }
}
