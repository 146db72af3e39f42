//! What a mount counts of its object reads: reads answered, bytes, errors,
//! opens handed to the kernel by passthrough (whose reads never reach
//! the mount), and a histogram of how long each read took to answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds in seconds of the read-latency histogram's buckets (a
/// last, unbounded bucket follows): from a page in memory to a fetch
/// across a slow link.
pub const LATENCY_BOUNDS: [f64; 8] = [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.1, 1.0, 10.0];

/// Counters of one mount's reads, shared by its worker threads and the
/// threads that complete reads waiting on a fetch.
#[derive(Debug, Default)]
pub struct ReadStats {
    reads: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    passthrough_opens: AtomicU64,
    /// Reads per latency bucket (not cumulative).
    buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    nanos: AtomicU64,
}

/// A copy of [`ReadStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadSnapshot {
    /// Reads answered with data.
    pub reads: u64,
    /// Bytes those reads returned.
    pub bytes: u64,
    /// Reads answered with an error.
    pub errors: u64,
    /// Opens served by passthrough (their reads are the kernel's).
    pub passthrough_opens: u64,
    /// Reads (with data or an error) per bucket of [`LATENCY_BOUNDS`],
    /// cumulative as Prometheus histograms count: `cumulative[i]` took at
    /// most `LATENCY_BOUNDS[i]`; the last is every read.
    pub cumulative: Vec<u64>,
    /// Seconds all those reads took, summed.
    pub seconds: f64,
}

impl ReadStats {
    /// Records one read answered after `took`: `Some(n)` bytes, or `None`
    /// for an error.
    pub(crate) fn record(&self, took: Duration, bytes: Option<usize>) {
        match bytes {
            Some(n) => {
                self.reads.fetch_add(1, Ordering::Relaxed);
                self.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            None => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records an open served by passthrough.
    pub(crate) fn passthrough_open(&self) {
        self.passthrough_opens.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ReadSnapshot {
        let mut total = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect();
        ReadSnapshot {
            reads: self.reads.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            passthrough_opens: self.passthrough_opens.load(Ordering::Relaxed),
            cumulative,
            seconds: self.nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_last_counts_every_read() {
        let s = ReadStats::default();
        s.record(Duration::from_micros(50), Some(10));
        s.record(Duration::from_millis(3), Some(20));
        s.record(Duration::from_secs(30), None);
        let snap = s.snapshot();
        assert_eq!((snap.reads, snap.bytes, snap.errors), (2, 30, 1));
        assert_eq!(snap.cumulative.len(), LATENCY_BOUNDS.len() + 1);
        assert_eq!(snap.cumulative[0], 1);
        assert_eq!(snap.cumulative[3], 2, "3 ms is within 5 ms");
        assert_eq!(snap.cumulative[LATENCY_BOUNDS.len() - 1], 2);
        assert_eq!(snap.cumulative.last(), Some(&3));
        assert!((snap.seconds - 30.00305).abs() < 1e-6);
    }
}
