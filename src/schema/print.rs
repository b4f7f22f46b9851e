//! How `check --print` writes values: durations and sizes in the units the file uses, secrets
//! masked. The configuration prints its sections with these, and each provider its own keys.

use std::time::Duration;

use toml::Value;

use super::units::{format_duration, format_size};

/// What every secret prints as.
pub const MASK: &str = "***";

pub(crate) fn duration(value: Duration) -> Value {
    Value::String(format_duration(value))
}

pub(crate) fn size(bytes: u64) -> Value {
    Value::String(format_size(bytes))
}

pub(crate) fn text(value: &(impl std::fmt::Display + ?Sized)) -> Value {
    Value::String(value.to_string())
}

pub(crate) fn masked() -> Value {
    text(MASK)
}

pub(crate) fn list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> Value {
    Value::Array(items.into_iter().map(|item| text(&item)).collect())
}

/// `count` masked secrets.
pub(crate) fn secrets(count: usize) -> Value {
    Value::Array(vec![masked(); count])
}
