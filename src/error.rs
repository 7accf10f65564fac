//! The one error type of the crate.
//!
//! Each variant is something a caller can act on: retry later (`Locked`),
//! alert an operator (`Corruption`, `Poisoned`), fix the input
//! (`RecordTooLarge`, `InvalidOptions`), or look at the disk (`Io`).

use std::io;
use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in enforcelog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`"write"`, `"fsync"`, `"open"`...).
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// Another writer (in this process or another one) holds the log's lock.
    #[error("the log at {} is locked by another writer", path.display())]
    Locked {
        /// The log directory.
        path: PathBuf,
    },

    /// Bytes on disk that cannot be what this library wrote. Nothing was
    /// repaired or dropped: an operator must look at the file.
    #[error("corruption in {} at byte {position}: {reason}", path.display())]
    Corruption {
        /// The damaged file.
        path: PathBuf,
        /// Byte position in that file where the damage starts.
        position: u64,
        /// What is wrong.
        reason: String,
    },

    /// A batch of a chained log whose checksums match but whose chain link
    /// does not fit its records (log format 2): the history was rewritten,
    /// not damaged. Nothing vouches for it, so no tree head is given over
    /// it. See `docs/AUDIT.md`.
    #[error("the log was rewritten at the batch from offset {first_offset} ({} at byte {position}): {reason}", path.display())]
    Tampering {
        /// The segment file holding the batch.
        path: PathBuf,
        /// Byte position of the batch in that file.
        position: u64,
        /// The batch's first offset: the first whose chain does not fit.
        first_offset: u64,
        /// What does not fit.
        reason: String,
    },

    /// A record's payload is longer than `record_max_bytes`.
    #[error("record payload of {size_bytes} bytes exceeds record_max_bytes ({max_bytes})")]
    RecordTooLarge {
        /// The payload length.
        size_bytes: usize,
        /// The configured limit.
        max_bytes: usize,
    },

    /// A batch is too large to fit in one segment.
    #[error("batch of {size_bytes} bytes exceeds the largest batch a segment holds ({max_bytes})")]
    BatchTooLarge {
        /// The encoded batch length.
        size_bytes: usize,
        /// The largest batch that fits in an empty segment.
        max_bytes: usize,
    },

    /// A batch with no records.
    #[error("a batch must hold at least one record")]
    EmptyBatch,

    /// The writer failed to write or fsync and stopped accepting appends.
    /// Appends that were not acknowledged may or may not be on disk; reopen
    /// the log to recover.
    #[error("the log writer stopped after a failure and accepts no more appends: {reason}")]
    Poisoned {
        /// The failure that stopped the writer.
        reason: String,
    },

    /// The writer's queue stayed full until the caller's deadline.
    #[error("the log writer's queue is full")]
    QueueFull,

    /// The log was closed.
    #[error("the log is closed")]
    Closed,

    /// The directory holds a format version this build does not read.
    #[error("{} holds log format version {found:?}; this build reads versions 1 to {supported}", path.display())]
    UnsupportedVersion {
        /// The version file.
        path: PathBuf,
        /// What the version file says.
        found: String,
        /// The newest version this build reads (it reads every version
        /// from 1 up to it), and the one it gives new logs.
        supported: u16,
    },

    /// The directory is not a log directory (and was left untouched).
    #[error("{} is not an enforcelog log directory: {reason}", path.display())]
    NotALogDirectory {
        /// The directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },

    /// An option value is out of range.
    #[error("invalid option {name}: {reason}")]
    InvalidOptions {
        /// The option's name.
        name: &'static str,
        /// Why the value is refused.
        reason: String,
    },

    /// A read asked for an offset past the end of the log.
    #[error("offset {requested} is beyond the end of the log (next offset {next_offset})")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The log's next offset.
        next_offset: u64,
    },

    /// A saved union position ([`Positions`](crate::store::Positions))
    /// cannot be resumed in this directory: the shard's store id is not
    /// the one saved (another directory, or a shard replaced), or the
    /// position is beyond what the shard holds.
    #[error("position in shard {shard} cannot be resumed: {reason}")]
    BadPosition {
        /// The shard.
        shard: u32,
        /// Why.
        reason: String,
    },

    /// An event was refused: the field and the reason are in the
    /// [`EventError`](crate::event::EventError). Nothing was written.
    #[error("invalid event: {0}")]
    InvalidEvent(#[from] crate::event::EventError),

    /// A query's filter is not a valid id (the field and the reason are in
    /// the [`EventError`](crate::event::EventError)): it could match no
    /// event. Nothing was read.
    #[error("invalid query filter: {0}")]
    InvalidFilter(crate::event::EventError),

    /// A committed record whose payload is not a store entry (a log written
    /// by something else, or a schema from a newer release).
    #[error("record at offset {offset} is not a store entry: {reason}")]
    BadPayload {
        /// The record's offset.
        offset: u64,
        /// Why it does not decode.
        reason: String,
    },

    /// The projections cannot advance (a record they cannot decode, or an
    /// I/O failure while reading the log).
    #[error("projections are stuck: {reason}")]
    ProjectionStalled {
        /// Why.
        reason: String,
    },

    /// A write was attempted through a read-only handle.
    #[error("the log was opened read-only")]
    ReadOnly,
    /// The remote system events are shipped to (NATS JetStream) failed or
    /// refused a request.
    #[error("{op}: {reason}")]
    Remote {
        /// What was being done (`"connect to NATS"`, `"publish"`...).
        op: &'static str,
        /// What the remote side or its client library said.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corruption(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}
