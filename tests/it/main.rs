//! The single integration-test binary: real sockets on 127.0.0.1, real binary where it matters.

// Harness items are `pub` for the test modules that share them.
#![allow(unreachable_pub)]

// Shared by every module; no single module (or branch) uses every helper.
#[allow(dead_code)]
mod support;

mod cli;
mod proxy;
mod rate_limit;
