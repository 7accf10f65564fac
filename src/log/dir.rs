//! The layout of a log directory.
//!
//! ```text
//! <dir>/VERSION                     "enforcelog-log <LOG_FORMAT_VERSION>\n"
//! <dir>/LOCK                        flock-ed by the one writer; holds its PID (text)
//! <dir>/STORE_ID                    the store's random id (see `identity`)
//! <dir>/DURABLE                     how far the log is durable (see `durable_end`)
//! <dir>/<base offset, 20 digits>.log  segments
//! <dir>/<base offset, 20 digits>.idx  sparse index of a sealed segment (derived)
//! <dir>/shards/                     the store's other shards (see `store::shards`)
//! ```
//!
//! No name in the directory is ever derived from user data.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{LOG_FORMAT_VERSION, OLDEST_LOG_FORMAT_VERSION};
use crate::storage::{OpenMode, Storage};

/// The version file's name.
pub(crate) const VERSION_FILE: &str = "VERSION";
/// The lock file's name.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The directory of a store's shards: part of the store, not a foreign
/// name, even before `VERSION` exists (a second writer may claim a shard
/// while the first is still creating the root store).
pub(crate) const SHARDS_DIR: &str = "shards";
const VERSION_PREFIX: &str = "enforcelog-log ";

/// A segment file's name for `base_offset`.
pub(crate) fn segment_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The index file's name for the segment at `base_offset`.
pub(crate) fn index_name(base_offset: u64) -> String {
    format!("{base_offset:020}.idx")
}

/// The base offset named by a segment file name, if `name` is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn is_index_name(name: &str) -> bool {
    name.strip_suffix(".idx")
        .is_some_and(|d| d.len() == 20 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The version file's contents for log format `version`.
pub(crate) fn version_contents(version: u16) -> String {
    format!("{VERSION_PREFIX}{version}\n")
}

/// What a directory holds, as far as the log is concerned.
#[derive(Debug)]
pub(crate) struct Listing {
    /// Segment base offsets, ascending.
    pub segments: Vec<u64>,
    /// Whether a version file is present.
    pub has_version: bool,
    /// Names that are neither ours nor temporary files of ours.
    pub foreign: Vec<String>,
}

/// Lists `dir`.
pub(crate) fn list(storage: &dyn Storage, dir: &Path) -> Result<Listing> {
    let names = storage.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let mut listing = Listing {
        segments: Vec::new(),
        has_version: false,
        foreign: Vec::new(),
    };
    for name in names {
        if let Some(base) = parse_segment_name(&name) {
            listing.segments.push(base);
        } else if name == VERSION_FILE {
            listing.has_version = true;
        } else if name != LOCK_FILE
            && name != SHARDS_DIR
            && name != super::identity::STORE_ID_FILE
            && name != super::durable_end::DURABLE_FILE
            && !is_index_name(&name)
            && !name.ends_with(".tmp")
        {
            listing.foreign.push(name);
        }
    }
    listing.segments.sort_unstable();
    Ok(listing)
}

/// Most bytes of a version file looked at: a real one is far shorter.
const VERSION_MAX_BYTES: u64 = 64;

/// Checks the version file of an existing log and returns the log format
/// version it names. Reads at most `VERSION_MAX_BYTES + 1` bytes, whatever
/// the file's size.
pub(crate) fn check_version(storage: &dyn Storage, dir: &Path) -> Result<u16> {
    let path = dir.join(VERSION_FILE);
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
    let mut bytes = vec![0u8; usize::try_from(len.min(VERSION_MAX_BYTES + 1)).unwrap_or(0)];
    file.read_exact_at(&mut bytes, 0)
        .map_err(|e| Error::io("read", &path, e))?;
    let known = (OLDEST_LOG_FORMAT_VERSION..=LOG_FORMAT_VERSION)
        .find(|&v| len <= VERSION_MAX_BYTES && bytes == version_contents(v).as_bytes());
    known.ok_or_else(|| Error::UnsupportedVersion {
        path,
        found: String::from_utf8_lossy(&bytes[..bytes.len().min(VERSION_MAX_BYTES as usize)])
            .trim()
            .to_string(),
        supported: LOG_FORMAT_VERSION,
    })
}

/// Writes the version file of a new log: temporary file, fsync, rename,
/// directory fsync.
pub(crate) fn write_version(storage: &dyn Storage, dir: &Path) -> Result<()> {
    write_file_atomically(
        storage,
        dir,
        VERSION_FILE,
        version_contents(LOG_FORMAT_VERSION).as_bytes(),
        true,
    )
}

/// Writes `dir/name` through a temporary file and a rename, so a reader sees
/// the old file or the new one. With `durable`, both file and directory are
/// fsynced.
pub(crate) fn write_file_atomically(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", &tmp, e))?;
    file.write_all_at(bytes, 0)
        .map_err(|e| Error::io("write", &tmp, e))?;
    if durable {
        file.sync_data().map_err(|e| Error::io("fsync", &tmp, e))?;
    }
    drop(file);
    storage
        .rename(&tmp, &path)
        .map_err(|e| Error::io("rename", &tmp, e))?;
    if durable {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
    }
    Ok(())
}

/// The exclusive writer lock.
pub(crate) fn lock(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<Box<dyn crate::storage::LockGuard>> {
    let path = dir.join(LOCK_FILE);
    storage.try_lock(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: dir.to_path_buf(),
            }
        } else {
            Error::io("lock", path, e)
        }
    })
}

/// `dir/<segment name>`.
pub(crate) fn segment_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(segment_name(base_offset))
}

/// `dir/<index name>`.
pub(crate) fn index_path(dir: &Path, base_offset: u64) -> PathBuf {
    dir.join(index_name(base_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_roundtrip_and_strangers_are_refused() {
        assert_eq!(segment_name(0), "00000000000000000000.log");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "0.log",
            "0000000000000000000a.log",
            "00000000000000000000.idx",
            "99999999999999999999.log",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }
}
