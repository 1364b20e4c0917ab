//! Lock-free latency histograms for operators (Prometheus-style cumulative
//! buckets). Recording is a couple of relaxed atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// CPU time (user and system) this process has spent so far, in seconds:
/// atedb's `process_cpu_seconds_total`, and `ate-loadgen`'s own cost.
pub fn process_cpu_seconds() -> f64 {
    let time = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

/// Upper bounds of the buckets, in microseconds (the last is +Inf).
pub const LATENCY_BUCKETS_US: [u64; 12] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000, 1_000_000, u64::MAX];

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; 12],
    sum_us: AtomicU64,
    count: AtomicU64,
}

/// A point-in-time copy of a histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// (upper bound in µs, observations ≤ bound), cumulative.
    pub buckets: Vec<(u64, u64)>,
    pub sum_us: u64,
    pub count: u64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u64::MAX as u128) as u64;
        let index =
            LATENCY_BUCKETS_US.iter().position(|bound| micros <= *bound).unwrap_or(LATENCY_BUCKETS_US.len() - 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let buckets = LATENCY_BUCKETS_US
            .iter()
            .zip(&self.buckets)
            .map(|(bound, bucket)| {
                cumulative += bucket.load(Ordering::Relaxed);
                (*bound, cumulative)
            })
            .collect();
        HistogramSnapshot {
            buckets,
            sum_us: self.sum_us.load(Ordering::Relaxed),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

/// Counters of one chain's log.
#[derive(Debug, Default)]
pub struct LogMetrics {
    pub events_appended: AtomicU64,
    pub bytes_appended: AtomicU64,
    /// Zeros written ahead of the appends (`AteConfig::zero_ahead_bytes`).
    pub zeroed_bytes: AtomicU64,
    /// Write + fdatasync of one group, from submission to completion.
    pub sync_latency: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let histogram = LatencyHistogram::default();
        for micros in [10, 60, 60, 3_000, 2_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 5);
        assert_eq!(snapshot.buckets[0], (50, 1));
        assert_eq!(snapshot.buckets[1], (100, 3));
        assert_eq!(snapshot.buckets[6], (5_000, 4));
        assert_eq!(snapshot.buckets.last().unwrap().1, 5);
    }
}
