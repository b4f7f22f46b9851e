//! Routing: which tenant a request belongs to, and the upstream path it maps to.

/// Public so that the fuzz target (`fuzz/`) can reach [`path::normalize`].
pub(crate) mod path;
pub(crate) mod rewrite;
