//! A read-only view of the store's log, for replay and tools.
//!
//! The store owns its log's writer: every record in it must be a payload
//! the store encoded, or every projection and query would meet bytes it
//! cannot read. So the store never hands out the writable [`Log`]; callers
//! get this view, which reads, verifies and watches, and cannot append or
//! close. (A tool that must write raw records opens the directory with
//! [`Log::open`] itself, with no store open on it.)

use std::ops::RangeInclusive;
use std::path::Path;

use crate::config::LogOptions;
use crate::error::Result;
use crate::log::{Log, LogMetrics, LogReader, StoreId, VerifyReport};

/// A read-only handle to the log under a [`Store`](super::Store): see
/// [`Store::log`](super::Store::log). It is a snapshot of which log the
/// store uses: after the store reopens a failed log, call `Store::log`
/// again for the new one.
///
/// It cannot append (nor close the store's log):
///
/// ```compile_fail
/// # fn f(store: &enforcelog::Store) {
/// store.log().append_blocking(enforcelog::Record::now(b"not an event".to_vec()));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LogView {
    log: Log,
}

impl LogView {
    pub(super) fn new(log: Log) -> Self {
        Self { log }
    }

    /// See [`Log::dir`].
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// See [`Log::options`].
    pub fn options(&self) -> &LogOptions {
        self.log.options()
    }

    /// See [`Log::store_id`].
    pub fn store_id(&self) -> Option<StoreId> {
        self.log.store_id()
    }

    /// See [`Log::next_offset`].
    pub fn next_offset(&self) -> u64 {
        self.log.next_offset()
    }

    /// See [`Log::metrics`].
    pub fn metrics(&self) -> LogMetrics {
        self.log.metrics()
    }

    /// See [`Log::is_poisoned`].
    pub fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    /// See [`Log::watch`].
    pub fn watch(&self) -> flume::Receiver<()> {
        self.log.watch()
    }

    /// See [`Log::read_from`].
    pub fn read_from(&self, offset: u64) -> Result<LogReader> {
        self.log.read_from(offset)
    }

    /// See [`Log::read_time_range`].
    pub fn read_time_range(&self, offset: u64, time_us: RangeInclusive<i64>) -> Result<LogReader> {
        self.log.read_time_range(offset, time_us)
    }

    /// See [`Log::verify`].
    pub fn verify(&self) -> Result<VerifyReport> {
        self.log.verify()
    }

    /// Stops the writer of a log that has already failed (what the
    /// supervisor's reopen does first), so a test can act on a log whose
    /// writer has certainly stopped. Does nothing to a working log.
    #[doc(hidden)]
    pub fn stop_failed_writer(&self) {
        if self.log.is_poisoned() {
            let _ = self.log.close();
        }
    }
}
