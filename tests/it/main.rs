//! The single integration-test binary: real sockets on 127.0.0.1, real binary where it matters.

mod support;

mod cli;
mod proxy;
