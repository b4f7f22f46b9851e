//! `Secret<T>`: a credential that can be used but never shown.
//!
//! Every credential the configuration holds (client secrets, app secrets, passwords, static tokens,
//! caller keys, the Redis URL) lives in a `Secret`. Its `Debug` and `Display` print `***`, so a
//! config, a provider or an error that embeds one can be logged or formatted without leaking it.
//! The value is reached only through [`Secret::expose`], which makes every use greppable.

use std::fmt;

/// A value that must never reach a log line, a metric, an error body or `/tenants`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself. Call it only where the value goes on the wire.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret<String> {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::from("hunter2-very-secret");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(***)");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }
}
