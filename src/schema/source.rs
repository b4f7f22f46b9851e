//! The configuration text as a spanned TOML tree: where every key and value sits.
//!
//! Operators fix configs from the `file:line:column` of each message, so every error, whether
//! from the TOML parser, from serde or from our own rules, must point at the offending key or
//! value. `toml::de::DeTable` keeps byte spans for every key and value; this module looks them up
//! by dotted path (`tenant.2.rate_limit.per_second`, numbers index arrays), turns spans into
//! line and column, and deserializes the raw sections one by one so that a bad tenant does not
//! hide the problems of the next one.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::errors::ConfigError;

/// The parsed text, kept for span lookups while validating.
pub(crate) struct Source<'t> {
    origin: &'t str,
    text: &'t str,
    root: Spanned<DeValue<'t>>,
}

/// A lookup result: the key and value spans of the deepest part of the path that exists.
struct Found {
    key: Option<Range<usize>>,
    value: Range<usize>,
    complete: bool,
}

impl<'t> Source<'t> {
    /// Parses `text`; on syntax errors returns every one the parser could recover from.
    pub(crate) fn parse(text: &'t str, origin: &'t str) -> Result<Self, Vec<ConfigError>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        let source = Self {
            origin,
            text,
            root: Spanned::new(root.span(), DeValue::Table(root.into_inner())),
        };
        if errors.is_empty() {
            return Ok(source);
        }
        let mut errors = errors;
        errors.sort_by_key(|e| e.span().map_or(0, |s| s.start));
        let errors = errors
            .iter()
            .map(|e| source.error(e.span(), format!("TOML syntax: {}", e.message())))
            .collect();
        Err(errors)
    }

    pub(crate) fn error(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            location: self.location(span),
            message,
        }
    }

    /// `file:line:column` (1-based, column in characters) of the start of `span`.
    pub(crate) fn location(&self, span: Option<Range<usize>>) -> String {
        let Some(span) = span else {
            return self.origin.to_owned();
        };
        let offset = span.start.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(self.text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", self.origin)
    }

    /// Span of the value at `path`, or of its deepest existing ancestor (a missing key is
    /// reported where its table starts).
    pub(crate) fn value_span(&self, path: &str) -> Option<Range<usize>> {
        Some(self.find(path).value)
    }

    /// Span of the key at `path` when it exists, else like [`Self::value_span`].
    pub(crate) fn key_span(&self, path: &str) -> Option<Range<usize>> {
        let found = self.find(path);
        Some(if found.complete {
            found.key.unwrap_or(found.value)
        } else {
            found.value
        })
    }

    /// The value at `path`, if any.
    pub(crate) fn get(&self, path: &str) -> Option<&Spanned<DeValue<'t>>> {
        let mut current = &self.root;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            current = child(current.get_ref(), segment)?.1;
        }
        Some(current)
    }

    /// Keys of the table at `path` with their spans, in document order.
    pub(crate) fn keys(&self, path: &str) -> Vec<(String, Range<usize>)> {
        let Some(DeValue::Table(table)) = self.get(path).map(Spanned::get_ref) else {
            return Vec::new();
        };
        let mut keys: Vec<_> = table.iter().map(|(k, _)| (k.get_ref().to_string(), k.span())).collect();
        keys.sort_by_key(|(_, span)| span.start);
        keys
    }

    /// The string value at `path`, if it is one (used to name tenants whose table failed to
    /// deserialize).
    pub(crate) fn str_at(&self, path: &str) -> Option<&str> {
        self.get(path)?.get_ref().as_str()
    }

    /// Number of elements of the array at `path` (0 when absent or not an array).
    pub(crate) fn len(&self, path: &str) -> usize {
        match self.get(path).map(Spanned::get_ref) {
            Some(DeValue::Array(items)) => items.len(),
            _ => 0,
        }
    }

    fn find(&self, path: &str) -> Found {
        let mut found = Found {
            key: None,
            value: self.root.span(),
            complete: true,
        };
        let mut current = &self.root;
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            match child(current.get_ref(), segment) {
                Some((key, value)) => {
                    found = Found {
                        key,
                        value: value.span(),
                        complete: true,
                    };
                    current = value;
                }
                None => {
                    found.complete = false;
                    break;
                }
            }
        }
        found
    }

    /// Deserializes the value at `path` as `T`; serde's error (unknown key, wrong type) is
    /// returned located and naming the key it is about.
    pub(crate) fn deserialize<T: Deserialize<'t>>(&self, path: &str, label: &str) -> Result<Option<T>, ConfigError> {
        let Some(value) = self.get(path) else {
            return Ok(None);
        };
        T::deserialize(ValueDeserializer::from(value.clone()))
            .map(Some)
            .map_err(|e| {
                let key = e
                    .span()
                    .and_then(|span| self.path_at(value, span.start))
                    .unwrap_or_default();
                let message = explain_serde_message(e.message());
                let message = if key.is_empty() {
                    format!("{label}: {message}")
                } else {
                    format!("{label}, key `{key}`: {message}")
                };
                self.error(e.span().or_else(|| Some(value.span())), message)
            })
    }

    /// Dotted path (relative to `value`) of the innermost key whose key or value covers `offset`.
    fn path_at(&self, value: &Spanned<DeValue<'t>>, offset: usize) -> Option<String> {
        let entries: Vec<(String, &Spanned<DeValue<'t>>, Range<usize>)> = match value.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .map(|(k, v)| (k.get_ref().to_string(), v, k.span()))
                .collect(),
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("[{i}]"), v, v.span()))
                .collect(),
            _ => return None,
        };
        entries.into_iter().find_map(|(name, child, key_span)| {
            let covers = key_span.contains(&offset) || child.span().contains(&offset);
            covers.then(|| match self.path_at(child, offset) {
                Some(inner) if inner.starts_with('[') => format!("{name}{inner}"),
                Some(inner) => format!("{name}.{inner}"),
                None => name,
            })
        })
    }
}

/// One step down: a table key, or an array index given as a decimal segment.
type Child<'v, 't> = (Option<Range<usize>>, &'v Spanned<DeValue<'t>>);

fn child<'v, 't>(value: &'v DeValue<'t>, segment: &str) -> Option<Child<'v, 't>> {
    match value {
        DeValue::Table(table) => table.get_key_value(segment).map(|(k, v)| (Some(k.span()), v)),
        DeValue::Array(items) => segment
            .parse::<usize>()
            .ok()
            .and_then(|i| items.get(i))
            .map(|v| (None, v)),
        _ => None,
    }
}

/// serde lists every field of a struct on an unknown key (70 for a tenant); name the closest
/// one instead, which is what the operator who made a typo needs.
fn explain_serde_message(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_owned();
    };
    let mut quoted = rest.split('`').step_by(2);
    let unknown = quoted.next().unwrap_or_default();
    let expected: Vec<&str> = quoted.filter(|s| !s.is_empty()).collect();
    let closest = expected
        .iter()
        .min_by_key(|candidate| edit_distance(unknown, candidate));
    match closest {
        Some(best) if edit_distance(unknown, best) <= 3 => {
            format!("unknown key `{unknown}` (did you mean `{best}`?)")
        }
        _ => format!("unknown key `{unknown}`"),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_lines_and_character_columns() {
        let source = Source::parse("a = 1\n# é\n[t]\n  \"bé\" = \"x\"\n", "f.toml").expect("valid");
        assert_eq!(source.location(source.key_span("a")), "f.toml:1:1");
        assert_eq!(source.location(source.key_span("t.bé")), "f.toml:4:3");
        assert_eq!(source.location(source.value_span("t.bé")), "f.toml:4:10");
        assert_eq!(source.location(None), "f.toml");
    }

    #[test]
    fn syntax_errors_are_all_located() {
        let errors = Source::parse("a = \nb = 2\nc = ]\n", "f.toml").err().expect("invalid");
        assert!(errors.len() >= 2, "{errors:?}");
        assert!(errors[0].location.starts_with("f.toml:1:"), "{errors:?}");
        assert!(errors.iter().any(|e| e.location.starts_with("f.toml:3:")), "{errors:?}");
    }

    #[test]
    fn unknown_field_names_the_closest_key() {
        let message = "unknown field `refresh_befor`, expected one of `name`, `refresh_before`, `token`";
        assert_eq!(
            explain_serde_message(message),
            "unknown key `refresh_befor` (did you mean `refresh_before`?)"
        );
        assert_eq!(
            explain_serde_message("unknown field `zzzzzzzzz`, expected `a` or `b`"),
            "unknown key `zzzzzzzzz`"
        );
    }
}
