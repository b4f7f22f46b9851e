//! tokenbroker: a reverse proxy that holds commerce-API credentials, obtains and rotates their
//! access tokens, rewrites paths, enforces provider rate limits and streams traffic through.

pub mod auth;
pub mod clock;
pub mod config;
pub mod ratelimit;
pub mod sandbox;
pub mod cache;
pub mod error;
pub mod routing;
