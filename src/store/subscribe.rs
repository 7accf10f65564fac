//! Replay and subscriptions: every committed entry, in offset order, from
//! any offset, then live.
//!
//! A subscription reads the log itself (the log is the buffer), so it keeps
//! no queue of its own: a slow subscriber costs no memory, it just falls
//! behind, and is told so ([`Delivery::Lagging`]) when it is more than
//! [`StoreOptions::subscriber_lag_warning`](super::StoreOptions) entries
//! behind. The switch from catching up to following is seamless by
//! construction: the subscription only ever asks for "the entry at my next
//! offset", whether it was committed long ago or a moment ago, so nothing is
//! skipped and nothing is seen twice.

use std::time::Duration;

use super::{decode_entry, Store};
use crate::error::{Error, Result};
use crate::event::Entry;
use crate::log::{Log, LogReader};

/// How long a blocking wait sleeps between looks when the log's writer was
/// replaced (it notices a reopened log this way).
pub(super) const POLL: Duration = Duration::from_millis(100);

/// Waits [`POLL`] in async code without a runtime timer (the store does not
/// require one): the wait of a subscription whose watch is disconnected.
pub(super) async fn pause_async() {
    let (tx, rx) = flume::bounded::<()>(1);
    std::thread::spawn(move || {
        std::thread::sleep(POLL);
        let _ = tx.send(());
    });
    let _ = rx.recv_async().await;
}

/// What a subscription delivers.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The next entry.
    Entry(Entry),
    /// The subscriber is this many entries behind the log's end. Told once
    /// each time it crosses the lag threshold; no entry is lost.
    Lagging {
        /// Entries committed and not yet delivered.
        behind: u64,
    },
}

/// A live, gap-free, duplicate-free stream of entries from an offset on.
/// From [`Store::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    next: u64,
    log: Log,
    reader: Option<LogReader>,
    watch: flume::Receiver<()>,
    lag_warning: u64,
    lagging: bool,
}

impl Store {
    /// Every committed entry from `offset` on, in offset order; the
    /// iterator ends at the end of the log when it gets there.
    pub fn replay(&self, offset: u64) -> Result<impl Iterator<Item = Result<Entry>>> {
        self.entries(offset)
    }

    /// Entries from `offset` on: first those already committed, then each
    /// as it commits.
    pub fn subscribe(&self, offset: u64) -> Result<Subscription> {
        let log = self.inner.log();
        let end = log.next_offset();
        if offset > end {
            return Err(Error::OffsetOutOfRange {
                requested: offset,
                next_offset: end,
            });
        }
        let watch = log.watch();
        Ok(Subscription {
            store: self.clone(),
            next: offset,
            log,
            reader: None,
            watch,
            lag_warning: self.inner.options.subscriber_lag_warning,
            lagging: false,
        })
    }
}

impl Subscription {
    /// The offset of the next entry to deliver.
    pub fn position(&self) -> u64 {
        self.next
    }

    /// Entries committed and not yet delivered.
    pub fn lag(&self) -> u64 {
        self.store
            .inner
            .log()
            .next_offset()
            .saturating_sub(self.next)
    }

    /// The next delivery if one is ready now, without waiting.
    pub fn try_next(&mut self) -> Result<Option<Delivery>> {
        self.follow_reopened_log();
        let behind = self.log.next_offset().saturating_sub(self.next);
        if behind > self.lag_warning {
            if !self.lagging {
                self.lagging = true;
                return Ok(Some(Delivery::Lagging { behind }));
            }
        } else {
            self.lagging = false;
        }
        if behind == 0 {
            return Ok(None);
        }
        let reader = match &mut self.reader {
            Some(reader) => reader,
            None => self.reader.insert(self.log.read_from(self.next)?),
        };
        match reader.next() {
            Some(Err(e)) => {
                // A reader ends after an error; the next call starts a new
                // one at the same offset, which reports the damage again
                // rather than going silent.
                self.reader = None;
                Err(e)
            }
            Some(Ok(record)) => {
                debug_assert_eq!(record.offset, self.next, "subscriptions never skip");
                match decode_entry(&record) {
                    Ok(entry) => {
                        self.next = record.offset + 1;
                        Ok(Some(Delivery::Entry(entry)))
                    }
                    Err(e) => {
                        // Stays at this record: it is reported again, never
                        // skipped.
                        self.reader = None;
                        Err(e)
                    }
                }
            }
            None => Ok(None),
        }
    }

    /// Waits for the next delivery, blocking the thread.
    pub fn next_blocking(&mut self) -> Result<Delivery> {
        loop {
            if let Some(delivery) = self.try_next()? {
                return Ok(delivery);
            }
            self.check_open()?;
            if let Err(flume::RecvTimeoutError::Disconnected) = self.watch.recv_timeout(POLL) {
                std::thread::sleep(POLL);
            }
        }
    }

    /// Waits for the next delivery.
    pub async fn next(&mut self) -> Result<Delivery> {
        loop {
            if let Some(delivery) = self.try_next()? {
                return Ok(delivery);
            }
            self.check_open()?;
            if self.watch.recv_async().await.is_err() {
                // The writer stopped: wait for a reopened log (or closing).
                pause_async().await;
            }
        }
    }

    /// Fails once the store was closed and nothing is left to deliver.
    fn check_open(&self) -> Result<()> {
        let closed = self
            .store
            .inner
            .closed
            .load(std::sync::atomic::Ordering::Relaxed);
        if closed && self.next >= self.log.next_offset() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// After the store reopened a failed log, continues on the new one
    /// from the same offset.
    fn follow_reopened_log(&mut self) {
        let current = self.store.inner.log();
        if !current.same_as(&self.log) {
            self.watch = current.watch();
            self.log = current;
            self.reader = None;
        }
    }
}
