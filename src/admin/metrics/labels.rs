//! What every family function of `/metrics` shares: its result type and the `tenant` label.

use crate::tenant::Tenant;

pub(super) type Labels<'a> = [(&'static str, &'a str); 1];

/// What encoding one family gives: `fmt::Error` only when the scrape's writer fails.
pub(super) type Encoded = Result<(), std::fmt::Error>;

pub(super) fn tenant_label(tenant: &Tenant) -> Labels<'_> {
    [("tenant", tenant.config.name.as_str())]
}
