//! A walk over the log's committed batches from the batch that holds a
//! given offset: what a kept Merkle tree (`audit::kept`) reads to check
//! that the log still ends the way it did, to take in the records
//! committed since, and to read one block of records again, without the
//! megabyte reads of a record scan.
//!
//! Each batch is handed out with its header checked and its bytes read
//! only when asked for ([`BatchAt`]): its trailer alone, the whole batch
//! with every checksum checked, or the whole batch with its bounds and
//! markers checked only (for bytes the caller checks otherwise). Sealed
//! segments are read through their maps; the active one with `pread`,
//! never past its committed length as of the walk's start. A segment read
//! through its in-memory rebuild (damage read past) ends the walk with
//! [`Walk::Damaged`], bytes that do not decode with [`Walk::Undecodable`];
//! the caller then falls back to a full pass, which says what is wrong.

use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;

use crate::audit::merkle::Hash;
use crate::error::{Error, Result};
use crate::format::batch::{
    decode_batch, decode_chain_trailer, decode_header, decode_verified_batch, BatchHeader,
    BatchView, BATCH_HEADER_LEN, CHAINED_TRAILER_LEN, LINK_TAG_LEN,
};
use crate::format::index_file::IndexEntry;
use crate::format::SEGMENT_HEADER_LEN;
use crate::storage::StorageFile;

use super::Shared;

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// The visitor stopped it.
    Stopped,
    /// It went past the log's last committed batch.
    End,
    /// It reached a segment read past its damage.
    Damaged,
    /// Bytes where a batch should be do not decode as one, or hold another
    /// offset than the one that must come next.
    Undecodable,
}

/// Where a batch's bytes are.
enum Bytes<'a> {
    /// In a sealed segment's map.
    Mapped(&'a [u8]),
    /// In the active segment's file, at `pos`, read into `buf` on demand.
    File {
        file: &'a dyn StorageFile,
        path: &'a Path,
        pos: u64,
        buf: &'a mut Vec<u8>,
        read: bool,
    },
}

/// One batch of a walk: its header checked, its bytes read when asked for.
pub(crate) struct BatchAt<'a> {
    /// The batch's header (its checksum checked).
    pub header: BatchHeader,
    bytes: Bytes<'a>,
}

impl BatchAt<'_> {
    fn all(&mut self) -> Result<&[u8]> {
        let len = self.header.batch_len as usize;
        match &mut self.bytes {
            Bytes::Mapped(bytes) => Ok(bytes),
            Bytes::File {
                file,
                path,
                pos,
                buf,
                read,
            } => {
                if !*read {
                    buf.resize(len, 0);
                    file.read_exact_at(buf, *pos)
                        .map_err(|e| Error::io("read", *path, e))?;
                    *read = true;
                }
                Ok(buf.as_slice())
            }
        }
    }

    /// The batch with every checksum checked; `None` when it does not
    /// decode.
    pub fn verified(&mut self) -> Result<Option<BatchView<'_>>> {
        Ok(decode_batch(self.all()?, None).ok())
    }

    /// The batch with its bounds and markers checked but not its frame
    /// checksums: for records whose hashes the caller checks against a
    /// root it keeps. `None` when it does not decode.
    pub fn unchecked(&mut self) -> Result<Option<BatchView<'_>>> {
        Ok(decode_verified_batch(self.all()?, None).ok())
    }

    /// The `prev` and link tag the batch stores, from its trailer alone
    /// (the trailer's checksum checked); `None` for an unchained batch.
    pub fn chain_trailer(&mut self) -> Result<Option<(Hash, [u8; LINK_TAG_LEN])>> {
        let len = self.header.batch_len as usize;
        if len < BATCH_HEADER_LEN + CHAINED_TRAILER_LEN {
            return Ok(None);
        }
        match &self.bytes {
            Bytes::Mapped(bytes) => Ok(decode_chain_trailer(&bytes[len - CHAINED_TRAILER_LEN..])),
            Bytes::File {
                read: true, buf, ..
            } => Ok(decode_chain_trailer(&buf[len - CHAINED_TRAILER_LEN..])),
            Bytes::File {
                file, path, pos, ..
            } => {
                let mut trailer = [0u8; CHAINED_TRAILER_LEN];
                file.read_exact_at(&mut trailer, pos + (len - CHAINED_TRAILER_LEN) as u64)
                    .map_err(|e| Error::io("read", path, e))?;
                Ok(decode_chain_trailer(&trailer))
            }
        }
    }
}

/// Visits every committed batch from the one holding `offset` on, in log
/// order (a batch whose records all lie below `offset` is skipped).
pub(crate) fn walk(
    shared: &Arc<Shared>,
    offset: u64,
    mut visit: impl FnMut(&mut BatchAt<'_>) -> Result<ControlFlow<()>>,
) -> Result<Walk> {
    let (sealed, active) = {
        let segments = shared.read_segments();
        let from = segments.sealed.partition_point(|s| s.next_offset <= offset);
        (segments.sealed[from..].to_vec(), segments.active.clone())
    };
    let mut next = offset;
    for segment in &sealed {
        if segment.is_rebuilt() {
            return Ok(Walk::Damaged);
        }
        if next < segment.base_offset {
            return Ok(Walk::Undecodable);
        }
        let map = segment.bytes(&*shared.storage)?;
        let len = usize::try_from(segment.len)
            .unwrap_or(usize::MAX)
            .min(map.len());
        let mut pos = usize::try_from(start_position(&segment.index, next))
            .unwrap_or(usize::MAX)
            .min(len);
        while pos < len {
            let Ok(header) = decode_header(&map[pos..len]) else {
                return Ok(Walk::Undecodable);
            };
            let batch_len = header.batch_len as usize;
            if batch_len > len - pos {
                return Ok(Walk::Undecodable);
            }
            let at = pos;
            pos += batch_len;
            if header.next_offset() <= next {
                continue;
            }
            let mut batch = BatchAt {
                header,
                bytes: Bytes::Mapped(&map[at..pos]),
            };
            if let Some(end) = visit_in_order(&mut batch, &mut next, &mut visit)? {
                return Ok(end);
            }
        }
        // A sealed segment ends where the next begins.
        if next != segment.next_offset {
            return Ok(Walk::Undecodable);
        }
    }
    if next < active.base_offset {
        return Ok(Walk::Undecodable);
    }
    let mut pos = start_position(&active.index, next);
    let end = active.committed_len;
    if pos > end {
        return Ok(Walk::Undecodable);
    }
    let mut header_bytes = [0u8; BATCH_HEADER_LEN];
    let mut buf = Vec::new();
    while pos < end {
        if end - pos < BATCH_HEADER_LEN as u64 {
            return Ok(Walk::Undecodable);
        }
        active
            .file
            .read_exact_at(&mut header_bytes, pos)
            .map_err(|e| Error::io("read", &active.path, e))?;
        let Ok(header) = decode_header(&header_bytes) else {
            return Ok(Walk::Undecodable);
        };
        let len = u64::from(header.batch_len);
        if len > end - pos {
            return Ok(Walk::Undecodable);
        }
        let at = pos;
        pos += len;
        if header.next_offset() <= next {
            continue;
        }
        let mut batch = BatchAt {
            header,
            bytes: Bytes::File {
                file: &*active.file,
                path: &active.path,
                pos: at,
                buf: &mut buf,
                read: false,
            },
        };
        if let Some(end) = visit_in_order(&mut batch, &mut next, &mut visit)? {
            return Ok(end);
        }
    }
    Ok(Walk::End)
}

/// Hands `batch` to the visitor when it holds the offset that must come
/// next; `None` when the walk goes on.
fn visit_in_order(
    batch: &mut BatchAt<'_>,
    next: &mut u64,
    visit: &mut impl FnMut(&mut BatchAt<'_>) -> Result<ControlFlow<()>>,
) -> Result<Option<Walk>> {
    let header = batch.header;
    if !(header.first_offset..header.next_offset()).contains(next) {
        return Ok(Some(Walk::Undecodable));
    }
    *next = header.next_offset();
    Ok(match visit(batch)? {
        ControlFlow::Continue(()) => None,
        ControlFlow::Break(()) => Some(Walk::Stopped),
    })
}

/// Where in a segment to start looking for the batch holding `offset`:
/// the last index entry at or below it, or the first batch.
fn start_position(index: &[IndexEntry], offset: u64) -> u64 {
    let after = index.partition_point(|e| e.first_offset <= offset);
    after
        .checked_sub(1)
        .map_or(SEGMENT_HEADER_LEN as u64, |i| index[i].position)
        .max(SEGMENT_HEADER_LEN as u64)
}
