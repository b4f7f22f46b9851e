//! Per-tenant families that alerts join on: what a tenant is (`tokenbroker_tenant_info`), whether
//! it is ready, and the margin below which its token is overdue for renewal. All read at scrape
//! time from state the proxy already keeps; split from `metrics.rs` to keep that file short.

use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::labels::{Encoded, tenant_label};
use crate::tenant::Tenant;

/// The time to expiry at which the current token falls due for renewal at the latest:
/// `refresh_before`, clamped as the schedule clamps it (20-50 % of the lifetime left). A renewing
/// token whose time to expiry sits below this is overdue, and lapses unless a renewal succeeds.
/// Absent for static credentials and tokens without a known expiry.
pub(super) fn token_refresh_margin(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_token_refresh_margin_seconds",
        "Time to expiry at which the current token falls due for renewal at the latest",
        None,
        MetricType::Gauge,
    )?;
    for tenant in tenants.iter().filter(|t| t.tokens.renews()) {
        let Some(token) = tenant.tokens.usable() else { continue };
        let Some(expires_at) = token.expires_at else { continue };
        let lifetime = expires_at.saturating_duration_since(token.obtained_at);
        let refresh_before = tenant.config.token.refresh_before;
        let delay = crate::token::refresh::refresh_delay(lifetime, refresh_before, 0.0);
        let margin = lifetime.saturating_sub(delay).as_secs_f64();
        family.encode_family(&tenant_label(tenant))?.encode_gauge(&margin)?;
    }
    Ok(())
}

/// One series per tenant, always 1, whose labels say what the tenant is: its provider, whether
/// its credential renews (`false` for a CYBERBIZ token, a SHOPLINE private token or `static`), and
/// whether it is required for readiness. Alerts join on `tenant` to tell these apart.
pub(super) fn tenant_info(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_tenant_info",
        "Always 1: the tenant's provider, whether its credential renews, whether it is required",
        None,
        MetricType::Gauge,
    )?;
    let yes_no = |b: bool| if b { "true" } else { "false" };
    for tenant in tenants {
        let labels = [
            ("tenant", tenant.config.name.as_str()),
            ("provider", tenant.config.provider.kind().name()),
            ("renews", yes_no(tenant.tokens.renews())),
            ("required", yes_no(tenant.config.required)),
        ];
        family.encode_family(&labels)?.encode_gauge(&1_i64)?;
    }
    Ok(())
}

/// 1 while the tenant passes `/readyz?tenant=NAME` (an expiring static credential still does),
/// 0 while it fails: the same judgement, tenant by tenant, shutdown aside.
pub(super) fn tenant_ready(encoder: &mut DescriptorEncoder<'_>, tenants: &[&Tenant]) -> Encoded {
    let mut family = encoder.encode_descriptor(
        "tokenbroker_tenant_ready",
        "1 while the tenant holds a valid token that is not about to lapse, 0 otherwise",
        None,
        MetricType::Gauge,
    )?;
    for tenant in tenants {
        let readiness = crate::admin::view::tenant_view(tenant).readiness;
        let ready = !matches!(readiness, crate::admin::view::Readiness::Failing(_));
        family
            .encode_family(&tenant_label(tenant))?
            .encode_gauge(&i64::from(ready))?;
    }
    Ok(())
}
