//! tokenbroker: a reverse proxy that holds commerce-API credentials, obtains and rotates their
//! access tokens, rewrites paths, enforces provider rate limits and streams traffic through.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
pub mod error;
pub mod metrics;
pub mod ratelimit;
pub mod reload;
pub mod routing;
pub mod sandbox;
pub(crate) mod server;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod tenant;
pub mod token;
pub mod upstream;
