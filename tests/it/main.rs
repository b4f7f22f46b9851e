//! The single integration-test binary: real sockets on 127.0.0.1, real binary where it matters.

// Harness items are `pub` for the test modules that share them.
#![allow(unreachable_pub)]

// The shared harness offers helpers that only some test modules use.
#[allow(dead_code)]
mod support;

mod access_log;
mod admin;
mod admin_crowding;
mod browsers;
mod callers;
mod class_script;
mod classes;
mod cli;
mod commerce;
mod demo;
mod head_limits;
mod https;
mod inbound;
mod layout;
mod layout_layers;
mod observability_files;
mod oidc;
mod providers;
mod proxy;
mod rate_limit;
mod redis_harness;
mod reload;
mod request_bodies;
mod sandboxed;
mod secrets;
mod shared_classes;
mod shared_failures;
mod shared_limits;
mod shared_pauses;
mod shared_tokens;
mod status_page;
mod store_cluster;
mod store_sentinel;
mod store_tls;
mod tokens;
mod traces;
mod webhooks;
