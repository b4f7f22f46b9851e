//! Metrics the request path updates: lock-free per-tenant figures and process-wide counters.
//!
//! prometheus-client's `Family` and `Histogram` take a lock on every update, and the request path
//! must not lock, so each tenant owns a [`TenantMetrics`] of plain atomics (a small status table and
//! three fixed-bucket histograms). The pipeline writes them; `admin::metrics` reads them, with the
//! token and limiter state, when `/metrics` is scraped. Nothing here knows about the text format.

use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::PerClass;

/// Latency buckets in seconds: sub-millisecond proxy overhead up to the default 60 s timeout.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Distinct status codes tracked per tenant; a tenant rarely sees more than a dozen.
const STATUS_SLOTS: usize = 16;

/// A fixed-bucket histogram updated with relaxed atomics.
#[derive(Debug, Default)]
pub(crate) struct AtomicHistogram {
    /// Non-cumulative counts; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = BUCKETS.iter().position(|bound| secs <= *bound).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The figures as read now: per-bucket (not cumulative) counts by upper bound, the last
    /// bound `f64::MAX` for +Inf, which is how prometheus-client wants them.
    pub(crate) fn read(&self) -> HistogramReading {
        let mut count = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, slot) in self.counts.iter().enumerate() {
            let slot = slot.load(Relaxed);
            count += slot;
            buckets.push((BUCKETS.get(i).copied().unwrap_or(f64::MAX), slot));
        }
        HistogramReading {
            sum_secs: self.sum_nanos.load(Relaxed) as f64 / 1e9,
            count,
            buckets,
        }
    }
}

/// One histogram as read at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramReading {
    pub sum_secs: f64,
    pub count: u64,
    /// `(upper bound in seconds, count in this bucket alone)`; the last bound is `f64::MAX`.
    pub buckets: Vec<(f64, u64)>,
}

/// Request counts by status code, in a small lock-free table (codes beyond it count as `other`).
#[derive(Debug, Default)]
pub(crate) struct StatusCounts {
    slots: [(AtomicU16, AtomicU64); STATUS_SLOTS],
    other: AtomicU64,
}

impl StatusCounts {
    pub(crate) fn add(&self, status: u16) {
        for (code, count) in &self.slots {
            let seen = code.load(Relaxed);
            // An empty slot is claimed with a CAS; losing it to the same status is as good.
            let claimed = seen == status
                || (seen == 0 && code.compare_exchange(0, status, Relaxed, Relaxed).unwrap_or_else(|s| s) == 0)
                || code.load(Relaxed) == status;
            if claimed {
                count.fetch_add(1, Relaxed);
                return;
            }
        }
        self.other.fetch_add(1, Relaxed);
    }

    /// Calls `f` with each status seen (as text) and its count, then `other` if any overflowed.
    pub(crate) fn each(&self, mut f: impl FnMut(&str, u64)) {
        let mut text = String::new();
        for (code, count) in &self.slots {
            let code = code.load(Relaxed);
            if code != 0 {
                text.clear();
                text.push_str(itoa_u16(code, &mut [0; 5]));
                f(&text, count.load(Relaxed));
            }
        }
        let other = self.other.load(Relaxed);
        if other > 0 {
            f("other", other);
        }
    }
}

fn itoa_u16(mut n: u16, buffer: &mut [u8; 5]) -> &str {
    let mut i = buffer.len();
    loop {
        i -= 1;
        buffer[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[i..]).expect("ascii digits")
}

/// One tenant's request-path figures. Kept across reloads for as long as the tenant exists.
#[derive(Debug, Default)]
pub(crate) struct TenantMetrics {
    /// Answers the upstream gave, by status.
    pub upstream_statuses: StatusCounts,
    /// Answers the proxy made itself (problem+json), by status.
    pub proxy_statuses: StatusCounts,
    pub request_duration: AtomicHistogram,
    pub upstream_duration: AtomicHistogram,
    /// Waits for a usable token (only requests that found none held: a first fetch, or one after
    /// the token lapsed).
    pub token_wait: AtomicHistogram,
    /// Waits for a slot, by caller class.
    pub ratelimit_wait: PerClass<AtomicHistogram>,
    /// Requests the tenant's own limiter refused with 429, by caller class.
    pub ratelimit_rejected: PerClass<AtomicU64>,
    pub unauthorized_replays: AtomicU64,
}

impl TenantMetrics {
    /// Counts an answer by its status and by who made it (`source` in the metrics).
    pub(crate) fn record_status(&self, status: u16, from_upstream: bool) {
        let table = if from_upstream {
            &self.upstream_statuses
        } else {
            &self.proxy_statuses
        };
        table.add(status);
    }
}

/// Process-wide figures.
#[derive(Debug, Default)]
pub(crate) struct GlobalMetrics {
    /// Connections to the proxy listeners closed at accept because `max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections to the proxy listeners open now (the admin listener is not counted).
    pub connections_open: AtomicU64,
    /// Bodies that would have been kept for a replay but streamed, the replay budget being full.
    pub replay_budget_exhausted: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table_counts_and_overflows() {
        let counts = StatusCounts::default();
        for status in [200, 200, 404, 200] {
            counts.add(status);
        }
        for status in 300..330 {
            counts.add(status);
        }
        let mut seen = Vec::new();
        counts.each(|code, n| seen.push((code.to_owned(), n)));
        assert_eq!(seen[0], ("200".to_owned(), 3));
        assert_eq!(seen[1], ("404".to_owned(), 1));
        assert_eq!(seen.len(), STATUS_SLOTS + 1);
        assert_eq!(seen.last(), Some(&("other".to_owned(), 16)));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let histogram = AtomicHistogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(120));
        let total: u64 = histogram.counts.iter().map(|c| c.load(Relaxed)).sum();
        assert_eq!(total, 3);
        assert_eq!(histogram.counts[0].load(Relaxed), 1);
        assert_eq!(
            histogram.counts[BUCKETS.len()].load(Relaxed),
            1,
            "beyond 60 s lands in +Inf"
        );
    }
}
