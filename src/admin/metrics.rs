//! `/metrics`: the figures of [`crate::metrics`], with token and limiter state, turned into
//! Prometheus (OpenMetrics) text by a `prometheus-client` collector at scrape time.
//!
//! The request path only bumps atomics; all formatting happens here, when a scraper asks. The
//! registry is created in `main` and passed in: no globals.

mod labels;
mod tenants;

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use self::labels::{Encoded, tenant_label};
use crate::clock;
use crate::config::CallerClass;
use crate::metrics::{AtomicHistogram, GlobalMetrics};
use crate::reload::ReloadRecord;
use crate::store::{StoreHealth, StoreOp};
use crate::tenant::{Snapshot, Tenant};

/// Reads the live snapshot at scrape time.
#[derive(Debug)]
pub(crate) struct MetricsCollector {
    pub state: Arc<ArcSwap<Snapshot>>,
    pub globals: Arc<GlobalMetrics>,
}

impl prometheus_client::collector::Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Encoded {
        let snapshot = self.state.load_full();
        let tenants: Vec<_> = snapshot.tenants().map(Arc::as_ref).collect();
        requests(&mut encoder, &snapshot, &tenants)?;
        durations(&mut encoder, &tenants)?;
        let limited: Vec<(&Tenant, Vec<CallerClass>)> = (tenants.iter())
            .filter(|t| t.limiter.is_some())
            .map(|t| (*t, classes_of(&snapshot, t)))
            .collect();
        ratelimit_waits(&mut encoder, &limited)?;
        token_renewals(&mut encoder, &tenants)?;
        token_call_durations(&mut encoder, &tenants)?;
        token_expiry(&mut encoder, &tenants)?;
        tenants::token_refresh_margin(&mut encoder, &tenants)?;
        tenants::tenant_info(&mut encoder, &tenants)?;
        tenants::tenant_ready(&mut encoder, &tenants)?;
        ratelimit_rejected(&mut encoder, &limited)?;
        ratelimit_shared(&mut encoder, &tenants)?;
        tenant_counter(
            &mut encoder,
            (
                "tokenbroker_unauthorized_replays",
                "Requests replayed after an upstream 401 with a renewed token",
            ),
            &tenants,
            |t| t.metrics.unauthorized_replays.load(Relaxed),
        )?;
        tenant_counter(
            &mut encoder,
            (
                "tokenbroker_token_task_restarts",
                "Times a tenant's token task panicked and was restarted",
            ),
            &tenants,
            |t| t.tokens.stats().task_restarts,
        )?;
        crate::webhook::encode_metrics(&mut encoder, snapshot.webhooks())?;
        reloads(&mut encoder, &snapshot.reloads().read())?;
        connections(&mut encoder, &self.globals)?;
        replay_budget(&mut encoder, &self.globals)?;
        if let Some(health) = snapshot.store().health() {
            store(&mut encoder, health)?;
        }
        super::process::build_info(&mut encoder)?;
        super::process::process(&mut encoder)
    }
}

/// Where requests spend their time: in all, waiting for a token, and at the upstream.
fn durations(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    histogram_family(
        encoder,
        "tokenbroker_request_duration_seconds",
        "Time from request to response headers, including waits",
        tenants,
        |t| &t.metrics.request_duration,
    )?;
    histogram_family(
        encoder,
        "tokenbroker_upstream_duration_seconds",
        "Time the upstream took to answer with headers",
        tenants,
        |t| &t.metrics.upstream_duration,
    )?;
    histogram_family(
        encoder,
        "tokenbroker_token_wait_seconds",
        "Time a request waited for a usable token (only requests that found none held)",
        tenants,
        |t| &t.metrics.token_wait,
    )?;
    Ok(())
}

/// The caller classes whose requests can reach `tenant`: standard without callers, else the
/// classes of the callers allowed on it. The class series exist only for these (and only for
/// tenants with a limiter), so a tenant without a limit adds no empty series.
fn classes_of(snapshot: &Snapshot, tenant: &Tenant) -> Vec<CallerClass> {
    if snapshot.callers.is_empty() {
        return vec![CallerClass::Standard];
    }
    let allowed = |caller: &&crate::config::CallerConfig| {
        (caller.tenants.as_ref()).is_none_or(|names| names.contains(&tenant.config.name))
    };
    let present: Vec<CallerClass> = snapshot.callers.iter().filter(allowed).map(|c| c.class).collect();
    CallerClass::ALL
        .into_iter()
        .filter(|class| present.contains(class))
        .collect()
}

/// Waits for a slot, by tenant and caller class.
fn ratelimit_waits(encoder: &mut DescriptorEncoder<'_>, tenants: &[(&Tenant, Vec<CallerClass>)]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_ratelimit_wait_seconds",
        "Time requests waited for a rate-limit slot, by caller class",
        None,
        MetricType::Histogram,
    )?;
    for (tenant, classes) in tenants {
        for &class in classes {
            let labels = [("tenant", tenant.config.name.as_str()), ("class", class.as_str())];
            histogram(family.encode_family(&labels)?, tenant.metrics.ratelimit_wait.by(class))?;
        }
    }
    Ok(())
}

/// Refusals by the tenant's own limiter, by tenant and caller class.
fn ratelimit_rejected(encoder: &mut DescriptorEncoder<'_>, tenants: &[(&Tenant, Vec<CallerClass>)]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_ratelimit_rejected",
        "Requests refused with 429 by the proxy's own limiter, by caller class",
        None,
        MetricType::Counter,
    )?;
    for (tenant, classes) in tenants {
        for &class in classes {
            let labels = [("tenant", tenant.config.name.as_str()), ("class", class.as_str())];
            let rejected = tenant.metrics.ratelimit_rejected.by(class).load(Relaxed);
            counter(&mut family.encode_family(&labels)?, rejected)?;
        }
    }
    Ok(())
}

/// Per limited tenant: 1 while its slots come from the cluster-wide bucket, 0 while local (one
/// process, or the fallback while the store is unreachable).
fn ratelimit_shared(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_ratelimit_shared",
        "1 while the tenant's rate limit is the cluster-wide bucket, 0 while it is local",
        None,
        MetricType::Gauge,
    )?;
    for tenant in tenants {
        if let Some(limiter) = &tenant.limiter {
            let shared = i64::from(limiter.state().mode == "shared");
            family.encode_family(&tenant_label(tenant))?.encode_gauge(&shared)?;
        }
    }
    Ok(())
}

/// The shared store's state; absent with the in-process store.
fn store(encoder: &mut DescriptorEncoder<'_>, health: &StoreHealth) -> Encoded {
    let mut up = encoder.encode_descriptor(
        "tokenbroker_store_up",
        "1 while the shared store answers, 0 while tokens are renewed locally",
        None,
        MetricType::Gauge,
    )?;
    up.encode_gauge(&i64::from(health.is_up()))?;
    let mut errors = encoder.encode_descriptor(
        "tokenbroker_store_errors",
        "Shared-store commands that failed (no answer, or an error reply), by operation",
        None,
        MetricType::Counter,
    )?;
    for op in StoreOp::ALL {
        counter(&mut errors.encode_family(&[("op", op.as_str())])?, health.errors(op))?;
    }
    Ok(())
}

/// Answers by tenant, status and `source`: `upstream` for the upstream's own, `proxy` for those
/// the proxy made (so its 502 is told from the upstream's); requests that matched no tenant are
/// counted with an empty `tenant`.
fn requests(encoder: &mut DescriptorEncoder<'_>, snapshot: &Snapshot, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_requests",
        "Requests answered, by tenant, status code and who answered (proxy or upstream)",
        None,
        MetricType::Counter,
    )?;
    let mut tables = vec![("", "proxy", snapshot.unmatched_statuses())];
    for tenant in tenants {
        let name = tenant.config.name.as_str();
        tables.push((name, "upstream", &tenant.metrics.upstream_statuses));
        tables.push((name, "proxy", &tenant.metrics.proxy_statuses));
    }
    for (tenant, source, statuses) in tables {
        let mut result = Ok(());
        statuses.each(|status, count| {
            if result.is_ok() {
                result = family
                    .encode_family(&[("tenant", tenant), ("status", status), ("source", source)])
                    .and_then(|mut m| counter(&mut m, count));
            }
        });
        result?;
    }
    Ok(())
}

/// Token endpoint calls, by tenant and outcome (static credentials make none, so have none).
fn token_call_durations(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_token_request_duration_seconds",
        "Time token endpoint calls took, by outcome",
        None,
        MetricType::Histogram,
    )?;
    for tenant in tenants.iter().filter(|t| t.tokens.renews()) {
        let durations = tenant.tokens.call_durations();
        for (outcome, histogram_of) in [("success", &durations.success), ("failure", &durations.failure)] {
            let labels = [("tenant", tenant.config.name.as_str()), ("outcome", outcome)];
            histogram(family.encode_family(&labels)?, histogram_of)?;
        }
    }
    Ok(())
}

fn token_renewals(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_token_renewals",
        "Token calls, by tenant and outcome",
        None,
        MetricType::Counter,
    )?;
    for tenant in tenants {
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
    Ok(())
}

fn token_expiry(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_token_expires_in_seconds",
        "Seconds until the current token expires (0 when none is valid; absent when the credential has no known expiry)",
        None,
        MetricType::Gauge,
    )?;
    for tenant in tenants {
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
    Ok(())
}

fn reloads(encoder: &mut DescriptorEncoder<'_>, record: &ReloadRecord) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_config_reloads",
        "Configuration reloads, by outcome",
        None,
        MetricType::Counter,
    )?;
    counter(&mut family.encode_family(&[("outcome", "success")])?, record.succeeded)?;
    counter(&mut family.encode_family(&[("outcome", "failure")])?, record.failed)?;
    // Prometheus' own names for the same facts, so the alerts written for it carry over.
    let ok = i64::from(!record.last_failed());
    encoder
        .encode_descriptor(
            "tokenbroker_config_last_reload_successful",
            "1 if the last configuration reload succeeded (or none was tried since start), 0 if it was rejected",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&ok)?;
    let at = record.loaded_unix_ms as f64 / 1000.0;
    encoder
        .encode_descriptor(
            "tokenbroker_config_last_reload_success_timestamp_seconds",
            "When the running configuration was loaded (start or last successful reload), Unix seconds",
            None,
            MetricType::Gauge,
        )?
        .encode_gauge(&at)
}

/// The proxy listeners' connection pool (`server.max_connections`); the admin listener has its own.
fn connections(encoder: &mut DescriptorEncoder<'_>, globals: &GlobalMetrics) -> Encoded {
    let mut refused = encoder.encode_descriptor(
        "tokenbroker_connections_refused",
        "Connections closed at accept because server.max_connections were open",
        None,
        MetricType::Counter,
    )?;
    counter(&mut refused, globals.connections_refused.load(Relaxed))?;
    let mut open = encoder.encode_descriptor(
        "tokenbroker_connections_open",
        "Connections open on the proxy listeners",
        None,
        MetricType::Gauge,
    )?;
    let value = i64::try_from(globals.connections_open.load(Relaxed)).unwrap_or(i64::MAX);
    open.encode_gauge(&value)
}

/// `server.replay_buffer_budget`: how often a body streamed (not replayable) because it was full.
fn replay_budget(encoder: &mut DescriptorEncoder<'_>, globals: &GlobalMetrics) -> Encoded {
    let mut exhausted = encoder.encode_descriptor(
        "tokenbroker_replay_budget_exhausted",
        "Request bodies streamed without a replay copy because server.replay_buffer_budget was full",
        None,
        MetricType::Counter,
    )?;
    counter(&mut exhausted, globals.replay_budget_exhausted.load(Relaxed))
}

fn counter(encoder: &mut MetricEncoder<'_>, value: u64) -> Encoded {
    encoder.encode_counter::<NoLabelSet, _, u64>(&value, None)
}

/// A counter family with one series per tenant.
fn tenant_counter(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help): (&str, &str),
    tenants: &[&Tenant],
    value: impl Fn(&Tenant) -> u64,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for tenant in tenants {
        counter(&mut family.encode_family(&tenant_label(tenant))?, value(tenant))?;
    }
    Ok(())
}

fn histogram_family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    tenants: &[&Tenant],
    pick: impl Fn(&Tenant) -> &AtomicHistogram,
) -> Encoded {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for tenant in tenants {
        histogram(family.encode_family(&tenant_label(tenant))?, pick(tenant))?;
    }
    Ok(())
}

/// prometheus-client takes *per-bucket* counts and accumulates them itself, and writes
/// `le="+Inf"` only for an upper bound of `f64::MAX` (`INFINITY` would print as `inf`, which is not
/// valid OpenMetrics): [`AtomicHistogram::read`] gives exactly that.
fn histogram(mut encoder: MetricEncoder<'_>, histogram: &AtomicHistogram) -> Encoded {
    let reading = histogram.read();
    encoder.encode_histogram::<NoLabelSet>(reading.sum_secs, reading.count, &reading.buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
                histogram(family, &self.0)
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
}
