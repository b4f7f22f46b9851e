//! The single integration-test binary: real sockets on 127.0.0.1, real binary where it matters.

// Harness items are `pub` for the test modules that share them.
#![allow(unreachable_pub)]

mod support;

mod access_log;
mod admin;
mod callers;
mod cli;
mod proxy;
mod reload;
mod secrets;
