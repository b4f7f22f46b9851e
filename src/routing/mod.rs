//! Routing: which tenant a request belongs to, and the upstream path it maps to.

pub(crate) mod path;
pub(crate) mod rewrite;
