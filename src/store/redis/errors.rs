//! What the Redis store's errors mean: a URL that cannot be used at all, and the failures that
//! count as Redis being unreachable rather than one command failing.

/// Why the Redis store could not be set up (never a connection failure: connecting is lazy, and a
/// Redis that is down at startup is a degraded state, not a fatal one).
#[derive(Debug, thiserror::Error)]
#[error("the Redis store URL is not usable: {0}")]
pub struct RedisSetupError(pub(super) &'static str);

/// Whether `error` means Redis cannot be used now (no connection, no answer in time, a server
/// that is loading, failing over or read-only, refused credentials), as opposed to an error
/// reply to this one command.
pub(super) fn is_unreachable(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() || error.is_connection_refusal() {
        return true;
    }
    // Replies that mean the server serves nobody now, whatever the command: a script running
    // too long, writes stopped by a failed save, out of memory, our credentials or rights gone,
    // too few replicas. redis-rs passes most of them through as bare codes.
    if matches!(
        error.code(),
        Some("BUSY" | "MISCONF" | "OOM" | "NOAUTH" | "WRONGPASS" | "NOPERM" | "NOREPLICAS")
    ) {
        return true;
    }
    matches!(
        error.kind(),
        ErrorKind::Io
            | ErrorKind::Parse
            | ErrorKind::AuthenticationFailed
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::RESP3NotSupported
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
            )
    )
}
