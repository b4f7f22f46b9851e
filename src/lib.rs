//! tokenbroker: a reverse proxy that holds commerce-API credentials, obtains and rotates their
//! access tokens, rewrites paths, enforces provider rate limits and streams traffic through.

pub(crate) mod admin;
pub mod app;
pub(crate) mod auth;
pub mod cli;
pub(crate) mod clock;
pub mod config;
pub mod demo;
pub(crate) mod error;
pub(crate) mod metrics;
pub(crate) mod providers;
pub(crate) mod ratelimit;
pub mod reload;
pub(crate) mod routing;
pub mod sandbox;
pub(crate) mod schema;
pub(crate) mod server;
pub mod signals;
pub mod store;
pub mod telemetry;
pub(crate) mod tenant;
pub(crate) mod token;
pub(crate) mod upstream;
pub(crate) mod webhook;
