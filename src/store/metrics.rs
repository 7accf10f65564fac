//! Counters and an append-latency histogram, updated without locks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets: values below 16 µs exactly, then 8 buckets per power of two.
const EXACT: usize = 16;
const SUB_BUCKETS: usize = 8;
const BUCKETS: usize = EXACT + (64 - 4) * SUB_BUCKETS;

/// A fixed-size latency histogram in microseconds; relative error of a
/// reported percentile is at most 12.5%.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    if us < EXACT as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros() as usize; // >= 4
    let sub = ((us >> (exp - 3)) & 7) as usize;
    EXACT + (exp - 4) * SUB_BUCKETS + sub
}

/// The largest value that falls in bucket `i`.
fn bucket_upper(i: usize) -> u64 {
    if i < EXACT {
        return i as u64;
    }
    let exp = (i - EXACT) / SUB_BUCKETS + 4;
    let sub = ((i - EXACT) % SUB_BUCKETS) as u64;
    let low = (8 + sub) << (exp - 3);
    low + (1u64 << (exp - 3)) - 1
}

impl Histogram {
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The value below which a fraction `q` of the samples lie (an upper
    /// bound of the bucket holding it); 0 with no samples.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return bucket_upper(i).min(self.max_us.load(Ordering::Relaxed));
            }
        }
        self.max_us.load(Ordering::Relaxed)
    }

    pub fn max_us(&self) -> u64 {
        self.max_us.load(Ordering::Relaxed)
    }
}

/// What the store did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreMetrics {
    /// Events committed (all write modes).
    pub recorded: u64,
    /// Events `record_detached` could not record (refused, queue full,
    /// writer failed); each is logged with `tracing::warn!`.
    pub dropped: u64,
    /// Gap markers written.
    pub gap_markers: u64,
    /// Dropped events not yet covered by a gap marker.
    pub dropped_pending_gap: u64,
    /// `fdatasync` calls on segment files (group commits that synced).
    pub fsyncs: u64,
    /// Times the store reopened its log after the writer failed.
    pub recoveries: u64,
    /// `stats` calls answered by replaying the log instead of from the
    /// projection (an as-of time whose window reaches into folded history).
    pub stats_replays: u64,
    /// Full passes over a log (every checksum, the chain, the leaves)
    /// made for tree heads and proofs: one per head, and one per proof
    /// without a tree kept since (see [`Store::prove_inclusion`](super::Store::prove_inclusion)).
    pub tree_passes: u64,
    /// Log entries that do not decode (not store payloads), as counted by
    /// the projections, which skip them (see [`Store::undecodable_entries`](super::Store::undecodable_entries)).
    pub undecodable_entries: u64,
    /// Undecodable entries queries met and skipped since the store opened
    /// (one entry met by two queries counts twice).
    pub undecodable_read: u64,
    /// Append latency (queue to durable acknowledgement), 50th percentile, µs.
    pub append_p50_us: u64,
    /// 90th percentile, µs.
    pub append_p90_us: u64,
    /// 99th percentile, µs.
    pub append_p99_us: u64,
    /// 99.9th percentile, µs.
    pub append_p999_us: u64,
    /// Greatest append latency seen, µs.
    pub append_max_us: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values_with_bounded_error() {
        for us in (0..5000u64).chain([1 << 20, 123_456_789, u64::MAX / 3]) {
            let b = bucket_of(us);
            assert!(bucket_upper(b) >= us, "{us}");
            assert!(b == 0 || bucket_upper(b - 1) < us, "{us}");
            assert!(bucket_upper(b) - us <= us / 8 + 1, "{us}");
        }
    }

    #[test]
    fn quantiles_follow_samples() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile_us(0.5);
        assert!((500..=570).contains(&p50), "{p50}");
        let p99 = h.quantile_us(0.99);
        assert!((990..=1000).contains(&p99), "{p99}");
        assert_eq!(h.max_us(), 1000);
    }
}
