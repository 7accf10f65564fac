//! enforcelog: an embeddable, append-only audit log for policy-enforcement
//! outcomes.
//!
//! A host (an agent runner, a job scheduler, an API gateway) that stops,
//! kills, aborts or blocks a run records the outcome in a [`Store`], in
//! process, with no database to run. Each outcome is an immutable
//! [`Event`]; the store keeps it in a checksummed, segmented log on disk and
//! keeps per (tenant, rule) trigger statistics current ([`Store::stats`]:
//! how often did the rule fire in the last 30 days, and when last).
//!
//! Three ways to write, by what must happen when the disk fails:
//!
//! ```
//! use enforcelog::{details, Action, Event, Store, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let store = Store::open(dir.path(), StoreOptions::default())?;
//!
//! // The halt path: fail-safe. Never returns an error and never blocks for
//! // long; what it cannot record is logged, counted and later written as a
//! // gap marker.
//! store.record_detached(Event::new("acme", "budget", Action::Stopped).with_run_id("run-7"));
//!
//! // Acknowledged: one event, durable when this returns, or an error.
//! store.record_blocking(Event::new("acme", "budget", Action::Killed))?;
//!
//! // A caller-owned batch: nothing is recorded until commit, then all of it.
//! let mut batch = store.begin();
//! batch.record(
//!     Event::new("acme", "no-prod-writes", Action::Blocked)
//!         .with_details(details!({"reason": "Budget exceeded"})),
//! )?;
//! batch.commit_blocking()?;
//!
//! // The counts (after `flush`, the fire-and-forget event is in them).
//! store.flush_blocking()?;
//! let stats = store.stats("acme", "budget", None)?;
//! assert_eq!(stats.trigger_count, 2);
//! store.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! Every call has an async form (`record`, `commit`, `flush`); the store
//! needs no runtime, its writer is a thread of its own.
//!
//! # Modules, from what hosts call down to the disk
//!
//! - [`store`]: [`Store`], the three write modes, queries, statistics,
//!   subscriptions, metrics;
//! - [`event`]: [`Event`] and its validation, [`Entry`] (what the log holds:
//!   events, gap markers, holes left by damage);
//! - [`projection`]: state derived from the log by replay and kept current
//!   ([`TriggerStats`] and the [`Projection`] trait for your own), with
//!   checkpoints;
//! - [`log`]: the engine underneath: segments, the group-commit writer,
//!   readers, recovery, verification and repair. Tools and tests use
//!   [`Log`] directly; hosts do not need to;
//! - [`storage`]: the narrow I/O seam every file operation goes through;
//! - [`config`], [`error`], [`record`], [`timestamp`]: options, the error
//!   type, raw records, and time as text;
//! - `ship` (feature `jetstream`): shipping committed events to NATS
//!   JetStream.
//!
//! The on-disk format is specified in `docs/FORMAT.md`; the guarantees of
//! each durability mode in `docs/DURABILITY.md`. The command-line tool is
//! the `enforcelog-cli` package (binary `enforcelog`), so a host that
//! depends on this crate compiles none of its dependencies.

// The exceptions, allowed by name where they live: the memory map of a
// sealed segment (`storage::fs`, `FileStorage::map`), the prefetch hint of
// the projections' lookups (`projection::intern::prefetch`) and ids known
// to be printable ASCII taken as `&str` (`event_view::printable_ascii`).
#![deny(unsafe_code)]

pub mod audit;
pub mod config;
pub mod error;
pub mod event;
pub mod event_view;
#[cfg(feature = "test-util")]
pub mod format;
// Parts of the format only the tests and fuzz targets call.
#[cfg(not(feature = "test-util"))]
#[allow(dead_code, unused_imports)]
mod format;
pub mod log;
#[cfg(feature = "test-util")]
pub mod payload;
#[cfg(not(feature = "test-util"))]
#[allow(dead_code, unused_imports)]
mod payload;
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
pub use event_view::{EntryView, EventKeys};
pub use log::{
    verify_dir, Frame, Log, LogMetrics, LogReader, Problem, ProblemKind, StoreId, VerifyReport,
};
pub use projection::{Projection, RuleStats, TriggerStats};
pub use record::{now_us, LogRecord, Record};
/// The README's examples, compiled (and run where they do not touch the
/// working directory) as doc tests, so that they stay true to the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use store::{
    stats_report, Delivery, EventBatch, LogView, Positions, Query, QueryPage, ShardEntry,
    ShardPosition, Store, StoreMetrics, StoreOptions, Subscription, UnionDelivery, UnionReplay,
    UnionSubscription,
};
