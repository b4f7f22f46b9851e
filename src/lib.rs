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
pub mod app;
pub(crate) mod server;
pub mod upstream;
pub mod cli;
pub mod demo;
pub mod signals;
pub mod telemetry;
pub mod store;
pub mod admin;
