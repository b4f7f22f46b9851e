//! How the pipeline sees the listener a request arrived on.

use std::sync::Arc;

use crate::config::TenantName;
use crate::upstream::ReplayBudget;

/// Which listener a request arrived on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Binding {
    /// The main listener: the first path segment names the tenant.
    Main,
    /// A tenant's own listener: every request is this tenant, with no prefix.
    Tenant(TenantName),
}

/// A proxy listener as the pipeline sees it.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub(crate) binding: Binding,
    /// Bound to a loopback address: anonymous requests on it must name this machine as their host
    /// (see `origin.rs`).
    pub(crate) loopback: bool,
    /// `server.replay_buffer_budget`, shared by every request on the proxy listeners.
    pub(crate) replay_budget: Arc<ReplayBudget>,
}
