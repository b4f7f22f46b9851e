//! Metrics: lock-free per-tenant figures on the request path, turned into Prometheus text at
//! scrape time by a `prometheus-client` collector.
//!
//! prometheus-client's `Family` and `Histogram` take a lock on every update; the request path must
//! not, so each tenant owns a [`TenantMetrics`] of plain atomics (a small status table and three
//! fixed-bucket histograms) and the [`MetricsCollector`] reads them, together with token and limiter
//! state, when `/metrics` is scraped. The registry is created in `main` and passed in: no globals.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::app::Snapshot;
use crate::clock;

/// Latency buckets in seconds: sub-millisecond proxy overhead up to the default 60 s timeout.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Distinct status codes tracked per tenant; a tenant rarely sees more than a dozen.
const STATUS_SLOTS: usize = 16;

/// A fixed-bucket histogram updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    /// Non-cumulative counts; the last slot is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub fn observe(&self, value: Duration) {
        let secs = value.as_secs_f64();
        let slot = BUCKETS.iter().position(|bound| secs <= *bound).unwrap_or(BUCKETS.len());
        self.counts[slot].fetch_add(1, Relaxed);
        self.sum_nanos
            .fetch_add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// prometheus-client takes *per-bucket* counts and accumulates them itself, and writes
    /// `le="+Inf"` only for an upper bound of `f64::MAX` (`INFINITY` would print as `inf`, which
    /// is not valid OpenMetrics).
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, count) in self.counts.iter().enumerate() {
            let count = count.load(Relaxed);
            total += count;
            buckets.push((BUCKETS.get(i).copied().unwrap_or(f64::MAX), count));
        }
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, total, &buckets, None)
    }
}

/// Request counts by status code, in a small lock-free table (codes beyond it count as `other`).
#[derive(Debug, Default)]
struct StatusCounts {
    slots: [(AtomicU16, AtomicU64); STATUS_SLOTS],
    other: AtomicU64,
}

impl StatusCounts {
    fn add(&self, status: u16) {
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

    fn each(&self, mut f: impl FnMut(&str, u64)) {
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
pub struct TenantMetrics {
    statuses: StatusCounts,
    pub request_duration: AtomicHistogram,
    pub upstream_duration: AtomicHistogram,
    pub ratelimit_wait: AtomicHistogram,
    pub unauthorized_replays: AtomicU64,
}

impl TenantMetrics {
    pub fn record_status(&self, status: u16) {
        self.statuses.add(status);
    }
}

/// Process-wide figures.
#[derive(Debug, Default)]
pub struct GlobalMetrics {
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
}

/// Reads the live snapshot at scrape time.
#[derive(Debug)]
pub struct MetricsCollector {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub globals: Arc<GlobalMetrics>,
}

type Labels<'a> = [(&'static str, &'a str); 1];

impl prometheus_client::collector::Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let snapshot = self.state.load_full();
        let mut tenants: Vec<_> = snapshot.tenants().collect();
        tenants.sort_by(|a, b| a.config.name.cmp(&b.config.name));

        let mut family = encoder.encode_descriptor(
            "tokenbroker_requests",
            "Requests answered, by tenant and status code",
            None,
            MetricType::Counter,
        )?;
        for tenant in &tenants {
            let name = tenant.config.name.as_str();
            let mut result = Ok(());
            tenant.metrics.statuses.each(|status, count| {
                if result.is_ok() {
                    result = family
                        .encode_family(&[("tenant", name), ("status", status)])
                        .and_then(|mut m| counter(&mut m, count));
                }
            });
            result?;
        }
        histogram_family(
            &mut encoder,
            "tokenbroker_request_duration_seconds",
            "Time from request to response headers, including waits",
            &tenants,
            |t| &t.metrics.request_duration,
        )?;
        histogram_family(
            &mut encoder,
            "tokenbroker_upstream_duration_seconds",
            "Time the upstream took to answer with headers",
            &tenants,
            |t| &t.metrics.upstream_duration,
        )?;
        histogram_family(
            &mut encoder,
            "tokenbroker_ratelimit_wait_seconds",
            "Time requests waited for a rate-limit slot",
            &tenants,
            |t| &t.metrics.ratelimit_wait,
        )?;

        let mut family = encoder.encode_descriptor(
            "tokenbroker_token_renewals",
            "Token calls, by tenant and outcome",
            None,
            MetricType::Counter,
        )?;
        for tenant in &tenants {
            let stats = tenant.tokens.stats();
            let name = tenant.config.name.as_str();
            counter(
                &mut family.encode_family(&[("tenant", name), ("outcome", "success")])?,
                stats.renewals_ok,
            )?;
            counter(
                &mut family.encode_family(&[("tenant", name), ("outcome", "failure")])?,
                stats.renewals_failed,
            )?;
        }
        let mut family = encoder.encode_descriptor(
            "tokenbroker_token_expires_in_seconds",
            "Seconds until the current token expires (0 when none is valid; absent when the credential has no known expiry)",
            None,
            MetricType::Gauge,
        )?;
        for tenant in &tenants {
            // A credential without expiry has no value here: `inf` is not valid OpenMetrics, and
            // a made-up large number would be a lie an alert could compare against.
            let expires_in = match tenant.tokens.usable() {
                Some(token) => match token.expires_at {
                    Some(at) => clock::remaining(at).as_secs_f64(),
                    None => continue,
                },
                None => 0.0,
            };
            family.encode_family(&tenant_label(tenant))?.encode_gauge(&expires_in)?;
        }
        let mut family = encoder.encode_descriptor(
            "tokenbroker_ratelimit_rejected",
            "Requests refused with 429 by the proxy's own limiter",
            None,
            MetricType::Counter,
        )?;
        for tenant in &tenants {
            let rejected = tenant.limiter.as_ref().map_or(0, |l| l.state().rejected_total);
            counter(&mut family.encode_family(&tenant_label(tenant))?, rejected)?;
        }
        let mut family = encoder.encode_descriptor(
            "tokenbroker_unauthorized_replays",
            "Requests replayed after an upstream 401 with a renewed token",
            None,
            MetricType::Counter,
        )?;
        for tenant in &tenants {
            counter(
                &mut family.encode_family(&tenant_label(tenant))?,
                tenant.metrics.unauthorized_replays.load(Relaxed),
            )?;
        }
        let mut family = encoder.encode_descriptor(
            "tokenbroker_config_reloads",
            "Configuration reloads, by outcome",
            None,
            MetricType::Counter,
        )?;
        counter(
            &mut family.encode_family(&[("outcome", "success")])?,
            self.globals.reloads_ok.load(Relaxed),
        )?;
        counter(
            &mut family.encode_family(&[("outcome", "failure")])?,
            self.globals.reloads_failed.load(Relaxed),
        )?;
        Ok(())
    }
}

fn tenant_label(tenant: &crate::app::Tenant) -> Labels<'_> {
    [("tenant", tenant.config.name.as_str())]
}

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> Result<(), std::fmt::Error> {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn histogram_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    tenants: &[&Arc<crate::app::Tenant>],
    pick: impl Fn(&crate::app::Tenant) -> &AtomicHistogram,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for tenant in tenants {
        pick(tenant).encode(family.encode_family(&tenant_label(tenant))?)?;
    }
    Ok(())
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
    fn histogram_text_is_cumulative_once_and_ends_in_plus_inf() {
        struct One(AtomicHistogram);
        impl std::fmt::Debug for One {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("One")
            }
        }
        impl prometheus_client::collector::Collector for One {
            fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
                let family = encoder.encode_descriptor("h_seconds", "test", None, MetricType::Histogram)?;
                self.0.encode(family)
            }
        }
        let histogram = AtomicHistogram::default();
        histogram.observe(Duration::from_micros(300));
        histogram.observe(Duration::from_millis(30));
        histogram.observe(Duration::from_secs(120));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(One(histogram)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            "h_seconds_count 3\n",
            "h_seconds_bucket{le=\"0.0005\"} 1\n",
            "h_seconds_bucket{le=\"0.025\"} 1\n",
            "h_seconds_bucket{le=\"0.05\"} 2\n",
            "h_seconds_bucket{le=\"60.0\"} 2\n",
            "h_seconds_bucket{le=\"+Inf\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
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
