//! Shards: several writing processes on one store directory.
//!
//! ```text
//! <dir>/                 shard 0, the root store: the store as one process writes it
//! <dir>/shards/<n>/      shard n (1 ..= SHARDS_MAX), each a whole log directory of its
//!                        own: VERSION, LOCK, STORE_ID, DURABLE, segments, projections/
//! ```
//!
//! A writer opens the root store when its lock is free, and otherwise
//! claims the lowest shard whose lock is free, creating it if missing. The
//! lock of a shard is its log's `LOCK` (an `flock`, released when the
//! process dies), so a dead process's shard is claimed again by the next
//! opener, with no other state to clean up. Each shard has its own store id,
//! so `(store id, offset)` names one event across all shards.
//!
//! Invariants:
//! - shard numbers are decimal, without leading zeros, `1..=SHARDS_MAX`;
//!   no other name under `shards/` is read as a shard (nor ever written);
//! - a shard's directory is made durable in its parent (and `shards/` in
//!   the root) before anything is written in it (`Log::open` does so);
//! - a shard is never removed: an empty one is claimed again, so the
//!   directory holds at most as many shards as writers ever ran at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::LogOptions;
use crate::error::{Error, Result};
use crate::log::dir::SHARDS_DIR;
use crate::log::Log;
use crate::storage::Storage;

/// The highest shard number: at most this many writers besides the root's
/// can share one directory at once.
pub const SHARDS_MAX: u32 = 1024;

/// The directory of shard `n` under `root` (shard 0 is the root).
pub(crate) fn shard_dir(root: &Path, n: u32) -> PathBuf {
    if n == 0 {
        root.to_path_buf()
    } else {
        root.join(SHARDS_DIR).join(n.to_string())
    }
}

/// The shard number a name under `shards/` stands for, if it is one.
fn parse_shard(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() > 4 || name.starts_with('0') {
        return None;
    }
    if !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok().filter(|n| (1..=SHARDS_MAX).contains(n))
}

/// The shards (1 and up) present under `root`, ascending. Names that are
/// not shard numbers are ignored.
pub(crate) fn list(storage: &dyn Storage, root: &Path) -> Result<Vec<u32>> {
    let dir = root.join(SHARDS_DIR);
    if !storage
        .exists(&dir)
        .map_err(|e| Error::io("stat", &dir, e))?
    {
        return Ok(Vec::new());
    }
    let names = storage.list(&dir).map_err(|e| Error::io("list", &dir, e))?;
    let mut shards: Vec<u32> = names.iter().filter_map(|n| parse_shard(n)).collect();
    shards.sort_unstable();
    Ok(shards)
}

impl crate::Store {
    /// The directories of the shards of the store directory `root`, with
    /// their numbers, ascending: `(0, root)` first, then every
    /// `root/shards/<n>/` that holds a store (its `VERSION` written), for
    /// tools that look at each shard's log on its own (`verify`).
    ///
    /// ```
    /// # use enforcelog::{Store, StoreOptions};
    /// let dir = tempfile::tempdir()?;
    /// let first = Store::open(dir.path(), StoreOptions::default())?;
    /// let second = Store::open(dir.path(), StoreOptions::default())?; // claims shard 1
    /// let shards = Store::shard_dirs(dir.path())?;
    /// assert_eq!(shards.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [0, 1]);
    /// # drop((first, second));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn shard_dirs(root: &Path) -> Result<Vec<(u32, PathBuf)>> {
        let storage = crate::storage::FileStorage;
        let mut dirs = vec![(0, root.to_path_buf())];
        for n in list(&storage, root)? {
            let dir = shard_dir(root, n);
            let version = dir.join(crate::log::dir::VERSION_FILE);
            if storage
                .exists(&version)
                .map_err(|e| Error::io("stat", &version, e))?
            {
                dirs.push((n, dir));
            }
        }
        Ok(dirs)
    }
}

/// Opens the root store for writing or, when its lock is held and
/// `share` is set, the lowest shard whose lock is free. Returns the shard
/// number and its log.
///
/// Only `Locked` moves on to the next shard: any other failure of a shard
/// (damage, a foreign directory) is returned, as it would be for the root,
/// rather than silently leaving an unreadable shard behind.
pub(crate) fn open_claiming(
    storage: &Arc<dyn Storage>,
    root: &Path,
    options: &LogOptions,
    share: bool,
) -> Result<(u32, Log)> {
    let locked = match Log::open_with_storage(storage.clone(), root, options.clone()) {
        Ok(log) => return Ok((0, log)),
        Err(e @ Error::Locked { .. }) if !share => return Err(e),
        Err(e @ Error::Locked { .. }) => e,
        Err(e) => return Err(e),
    };
    for n in 1..=SHARDS_MAX {
        match Log::open_with_storage(storage.clone(), shard_dir(root, n), options.clone()) {
            Ok(log) => {
                tracing::info!(dir = %root.display(), shard = n, "the root store is held by another writer; claimed a shard");
                return Ok((n, log));
            }
            Err(Error::Locked { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    // Every shard is held: report the directory as locked.
    Err(locked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_roundtrip_and_strangers_are_ignored() {
        for n in [1, 9, 10, 999, SHARDS_MAX] {
            let dir = shard_dir(Path::new("/s"), n);
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap();
            assert_eq!(parse_shard(name), Some(n));
        }
        assert_eq!(shard_dir(Path::new("/s"), 0), Path::new("/s"));
        for bad in ["", "0", "01", "1025", "99999", "1a", "-1", "+1", "1.tmp"] {
            assert_eq!(parse_shard(bad), None, "{bad:?}");
        }
    }
}
