//! The class keys of `rate_limit`: a per-class `max_wait` and `batch_share`.

use std::time::Duration;

use crate::config::{BatchShare, CallerClass, CallerConfig, PerClass, TenantConfig};
use crate::schema::check::{Ctx, Scope};
use crate::schema::raw::{RawMaxWait, RawShare};

/// Unset classes, and a plain `max_wait`, take this.
const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// `max_wait = "5s"` for every class, or a table of classes (the others keep the default).
pub(super) fn max_wait(ctx: &mut Ctx<'_>, scope: &Scope, raw: Option<&RawMaxWait>) -> Option<PerClass<Duration>> {
    let key = "rate_limit.max_wait";
    match raw {
        None => Some(PerClass::all(DEFAULT_MAX_WAIT)),
        Some(RawMaxWait::All(quantity)) => ctx
            .duration(scope, key, Some(quantity), DEFAULT_MAX_WAIT)
            .map(PerClass::all),
        Some(RawMaxWait::PerClass(table)) => {
            let mut waits = PerClass::all(DEFAULT_MAX_WAIT);
            let mut valid = true;
            for (class, value) in [
                (CallerClass::Interactive, &table.interactive),
                (CallerClass::Standard, &table.standard),
                (CallerClass::Batch, &table.batch),
            ] {
                let class_key = format!("{key}.{}", class.as_str());
                match ctx.duration(scope, &class_key, value.as_ref(), DEFAULT_MAX_WAIT) {
                    Some(wait) => *waits.get_mut(class) = wait,
                    None => valid = false,
                }
            }
            valid.then_some(waits)
        }
    }
}

/// `batch_share = 0.1` or `"10%"`: strictly between 0 and 1; 10 % when absent.
pub(super) fn batch_share(ctx: &mut Ctx<'_>, scope: &Scope, raw: Option<&RawShare>) -> Option<BatchShare> {
    let fraction = match raw {
        None => return Some(BatchShare::DEFAULT),
        Some(RawShare::Fraction(f)) => Some(*f),
        Some(RawShare::Text(text)) => text
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|percent| percent / 100.0),
    };
    let share = fraction.filter(|f| f.is_finite()).and_then(BatchShare::from_fraction);
    if share.is_none() {
        ctx.error(
            scope,
            "rate_limit.batch_share",
            "must be a fraction between 0 and 1 (such as 0.1) or a percentage (such as \"10%\")",
        );
    }
    share
}

/// Gives each limited tenant its lead class: the highest class among the callers that may use it.
pub(super) fn lead_classes(tenants: &mut [TenantConfig], callers: &[CallerConfig]) {
    for tenant in tenants {
        let name = &tenant.name;
        let Some(limit) = tenant.rate_limit.as_mut() else {
            continue;
        };
        limit.lead = callers
            .iter()
            .filter(|caller| caller.tenants.as_ref().is_none_or(|names| names.contains(name)))
            .map(|caller| caller.class)
            .min_by_key(|class| class.index())
            .unwrap_or(CallerClass::Standard);
    }
}
