//! Caller-owned batches: staged in memory, appended atomically on commit.

use std::ops::Range;
use std::time::Instant;

use super::Store;
use crate::error::{Error, Result};
use crate::event::{check_not_in_future, Event, EventError};
use crate::payload;
use crate::record::{now_us, Record};

/// Events staged by [`Store::begin`]. Nothing is visible or durable until
/// [`EventBatch::commit`]; then all of them are, as one atomic log batch
/// (after a crash, all or none). Dropping the batch records nothing.
#[derive(Debug)]
pub struct EventBatch {
    store: Store,
    records: Vec<Record>,
}

impl EventBatch {
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            records: Vec::new(),
        }
    }

    /// Validates and stages one event. A refused event is not staged; the
    /// batch stays usable.
    pub fn record(&mut self, event: Event) -> Result<(), EventError> {
        let event = event.validate_owned()?;
        let now = now_us();
        let at = event.enforced_at_us.unwrap_or(now);
        let skew_us = self.store.inner.options.max_future_skew_us();
        check_not_in_future(at, now, skew_us)?;
        self.records
            .push(Record::new(at, payload::encode_event(&event)));
        Ok(())
    }

    /// Number of staged events.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Appends the staged events as one batch; returns their offsets once
    /// committed. An empty batch is refused with [`Error::EmptyBatch`].
    pub async fn commit(self) -> Result<Range<u64>> {
        let (store, records, count) = self.take()?;
        let started = Instant::now();
        let result = store.inner.log().append_batch(records).await;
        store.finish(result, count, started)
    }

    /// [`EventBatch::commit`] for code that is not async; blocks the thread.
    pub fn commit_blocking(self) -> Result<Range<u64>> {
        let (store, records, count) = self.take()?;
        let started = Instant::now();
        let result = store.inner.log().append_batch_blocking(records);
        store.finish(result, count, started)
    }

    fn take(self) -> Result<(Store, Vec<Record>, u64)> {
        if self.store.inner.read_only() {
            return Err(Error::ReadOnly);
        }
        if self.records.is_empty() {
            return Err(Error::EmptyBatch);
        }
        let count = self.records.len() as u64;
        Ok((self.store, self.records, count))
    }
}
