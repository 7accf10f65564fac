//! The store's identity: a random 128-bit id, created once with the store.
//!
//! ```text
//! <dir>/STORE_ID   "<32 lowercase hex digits>\n", written atomically
//! ```
//!
//! Every segment header carries the id's low 32 bits as its *store tag*, and
//! every checkpoint carries the whole id, so that a segment or a checkpoint
//! copied in from another store is refused instead of being read as ours.
//!
//! Invariants:
//! - a tag is never zero: zero marks a segment written before store ids
//!   existed, which is accepted only in a store whose segments all came
//!   before its first tagged one;
//! - `STORE_ID` is durable (file and directory fsynced) before the first
//!   tagged segment is created, so a tagged segment never exists without it.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use super::dir;
use crate::error::{Error, Result};
use crate::storage::{read_all, OpenMode, Storage};

/// The id file's name.
pub(crate) const STORE_ID_FILE: &str = "STORE_ID";

/// A store's random, permanent identity.
///
/// Displayed (and parsed) as 32 lowercase hex digits.
///
/// ```
/// use enforcelog::StoreId;
///
/// let id: StoreId = "0123456789abcdef0123456789abcdef".parse()?;
/// assert_eq!(id.to_string(), "0123456789abcdef0123456789abcdef");
/// assert!("not hex".parse::<StoreId>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(u128);

impl StoreId {
    /// A fresh id from the process's random hasher keys, the clock and the
    /// process id: unique for practical purposes, never with a zero tag.
    pub(crate) fn generate() -> StoreId {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let half = |salt: u64| {
            let mut h = RandomState::new().build_hasher();
            h.write_u64(salt);
            h.write_u128(now);
            h.write_u32(std::process::id());
            h.finish()
        };
        let mut id = u128::from(half(1)) << 64 | u128::from(half(2));
        if id as u32 == 0 {
            id |= 1;
        }
        StoreId(id)
    }

    /// The low 32 bits, written into every segment header; never zero.
    pub fn tag(self) -> u32 {
        self.0 as u32
    }

    /// The id as a number.
    pub fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Why a text is not a store id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a store id is 32 lowercase hex digits, not zero")]
pub struct ParseStoreIdError;

impl FromStr for StoreId {
    type Err = ParseStoreIdError;

    fn from_str(s: &str) -> std::result::Result<StoreId, ParseStoreIdError> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseStoreIdError);
        }
        let v = u128::from_str_radix(s, 16).map_err(|_| ParseStoreIdError)?;
        if v as u32 == 0 {
            return Err(ParseStoreIdError);
        }
        Ok(StoreId(v))
    }
}

/// As its text (32 hex digits), so that a saved union position
/// ([`Positions`](crate::store::Positions)) reads like the id printed
/// everywhere else.
impl serde::Serialize for StoreId {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StoreId {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Reads `dir/STORE_ID`; `None` when the file does not exist (a store made
/// before ids existed, or a directory being created).
pub(crate) fn load(storage: &dyn Storage, dir: &Path) -> Result<Option<StoreId>> {
    let path = dir.join(STORE_ID_FILE);
    if !storage
        .exists(&path)
        .map_err(|e| Error::io("stat", &path, e))?
    {
        return Ok(None);
    }
    let file = storage
        .open(&path, OpenMode::Read)
        .map_err(|e| Error::io("open", &path, e))?;
    let bytes = read_all(&*file).map_err(|e| Error::io("read", &path, e))?;
    let text = std::str::from_utf8(&bytes).ok();
    match text.and_then(|t| t.strip_suffix('\n')).map(str::parse) {
        Some(Ok(id)) => Ok(Some(id)),
        _ => Err(Error::corruption(
            &path,
            0,
            "the store id file does not hold 32 hex digits and a newline",
        )),
    }
}

/// Writes `dir/STORE_ID` durably (temporary file, fsync, rename, directory
/// fsync).
pub(crate) fn store(storage: &dyn Storage, dir: &Path, id: StoreId) -> Result<()> {
    dir::write_file_atomically(
        storage,
        dir,
        STORE_ID_FILE,
        format!("{id}\n").as_bytes(),
        true,
    )
}

/// Why a segment with `tag` does not belong to the store `id`, if it does
/// not; `tagged_seen` says whether an earlier segment carried a tag.
pub(crate) fn foreign_reason(tag: u32, id: Option<StoreId>, tagged_seen: bool) -> Option<String> {
    match (tag, id) {
        (0, _) if tagged_seen => Some(
            "segment has no store tag but follows tagged segments: it was copied in from another store"
                .into(),
        ),
        (0, _) => None,
        (tag, Some(id)) if tag == id.tag() => None,
        (tag, Some(id)) => Some(format!(
            "segment belongs to another store (store tag {tag:08x}, this store's is {:08x})",
            id.tag()
        )),
        (tag, None) => Some(format!(
            "segment carries store tag {tag:08x} but the directory has no {STORE_ID_FILE} file"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_differ_and_round_trip() {
        let a = StoreId::generate();
        let b = StoreId::generate();
        assert_ne!(a, b);
        assert_ne!(a.tag(), 0);
        assert_eq!(a.to_string().parse::<StoreId>(), Ok(a));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "0123456789ABCDEF0123456789ABCDEF",
            "+123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456700000000",
        ] {
            assert_eq!(bad.parse::<StoreId>(), Err(ParseStoreIdError), "{bad:?}");
        }
    }

    #[test]
    fn foreign_tags_are_named() {
        let id = "0123456789abcdef0123456789abcdef".parse::<StoreId>().ok();
        assert_eq!(foreign_reason(0, id, false), None);
        assert_eq!(foreign_reason(0x89abcdef, id, true), None);
        assert!(foreign_reason(0, id, true).is_some());
        assert!(foreign_reason(7, id, false)
            .unwrap()
            .contains("another store"));
        assert!(foreign_reason(7, None, false).unwrap().contains("STORE_ID"));
    }
}
