//! enforcelog: an embeddable, append-only audit log for policy-enforcement
//! outcomes.
//!
//! This crate is built in layers; each module is one concept:
//!
//! - [`format`](mod@format): the on-disk bytes (segment header, batches of record frames,
//!   index files), encode and decode only, no I/O;
//! - [`storage`]: the narrow I/O seam, with the real file system and an
//!   in-memory, fault-injecting one for tests;
//! - [`log`]: segments, the group-commit writer, readers, recovery and
//!   verification;
//! - [`record`], [`config`], [`error`]: the records, options and the error
//!   type the log speaks in.
//!
//! ```
//! use enforcelog::{Durability, Log, LogOptions, Record};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let options = LogOptions { durability: Durability::Fsync, ..LogOptions::default() };
//! let log = Log::open(dir.path(), options)?;
//! let offset = log.append_blocking(Record::now(b"BLOCKED rule-7".to_vec()))?;
//! assert_eq!(offset, 0);
//! log.close()?;
//!
//! let reopened = Log::open_read_only(dir.path())?;
//! assert_eq!(reopened.next_offset(), 1);
//! assert!(reopened.verify()?.is_clean());
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
pub mod event;
pub mod format;
pub mod log;
pub mod payload;
pub mod projection;
pub mod record;
#[cfg(feature = "jetstream")]
pub mod ship;
pub mod storage;
pub mod store;
pub mod timestamp;

/// What the exported macros need; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}

pub use config::{Durability, LogOptions};
pub use error::{Error, Result};
pub use event::{
    Action, Entry, Event, EventError, Field, GapLoss, GapMarker, LossSpan, LostEntry, StoredEvent,
    GAP_LOSSES_MAX,
};
pub use log::{
    verify_dir, Log, LogMetrics, LogReader, Problem, ProblemKind, StoreId, VerifyReport,
};
pub use projection::{Projection, RuleStats, TriggerStats};
pub use record::{now_us, LogRecord, Record};
pub use store::{
    stats_report, Delivery, EventBatch, LogView, Query, QueryPage, Store, StoreMetrics,
    StoreOptions, Subscription,
};
