//! Path rewriting: a tenant's rules, first match wins, applied after the tenant prefix is removed
//! and the path normalised. A rule whose pattern has a capture group named `store` also yields the
//! ACCS `Store` header (ACCS picks the store scope by header, not by path:
//! `docs/providers.md#accs-requests`).

use std::borrow::Cow;
use std::sync::Arc;

use regex::Regex;

/// The Adobe Commerce preset: `/rest/V1/...` and `/rest/<store>/V1/...` → `/V1/...`, the store code
/// becoming the `Store` header.
pub(crate) const ADOBE_REST_PATTERN: &str = r"^/rest(?:/(?P<store>[A-Za-z0-9_]+))?(/V1/.*)$";
pub(crate) const ADOBE_REST_REPLACE: &str = "$2";

/// `{ match = "...", replace = "..." }`.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    /// Shared: every tenant on a provider preset uses the one compiled program and match cache.
    pub pattern: Arc<Regex>,
    /// Replacement with `$1` / `${name}` references, as `regex::Regex::replace`.
    pub replace: String,
    /// The pattern has a capture group named `store`: when it matched, its text is sent as the
    /// `Store` header (ACCS selects store scope by header, not path).
    pub store_header: bool,
    /// How the rule runs on the request path (see [`RuleEngine`]).
    pub engine: RuleEngine,
}

/// How a rewrite rule is evaluated on each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleEngine {
    /// `pattern` and `replace`, through the regex engine.
    Regex,
    /// The Adobe preset ([`ADOBE_REST_PATTERN`] with [`ADOBE_REST_REPLACE`]) by a hand-written
    /// matcher with the same result: it runs on every ACCS request, and the matcher borrows the
    /// path where the regex's capture search allocates (the cost is in `benches/README.md`).
    AdobeRest,
}

impl RewriteRule {
    /// A rule from a compiled pattern and its replacement. Works out, once, whether the pattern
    /// names a `store` group and whether it is the Adobe preset, which then runs by the
    /// hand-written matcher (an operator who spells out the preset gets it too).
    pub(crate) fn new(pattern: Arc<Regex>, replace: String) -> Self {
        let store_header = pattern.capture_names().any(|name| name == Some("store"));
        let engine = if pattern.as_str() == ADOBE_REST_PATTERN && replace == ADOBE_REST_REPLACE {
            RuleEngine::AdobeRest
        } else {
            RuleEngine::Regex
        };
        Self {
            pattern,
            replace,
            store_header,
            engine,
        }
    }
}

/// The outcome of rewriting one path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Rewritten<'a> {
    pub path: Cow<'a, str>,
    /// Text of the `store` capture, when the matching rule has one and it matched.
    pub store: Option<&'a str>,
}

/// Applies the first rule that matches `path`; no rules or no match leaves it unchanged.
pub(crate) fn rewrite<'a>(rules: &[RewriteRule], path: &'a str) -> Rewritten<'a> {
    for rule in rules {
        if rule.engine == RuleEngine::AdobeRest {
            if let Some(rewritten) = adobe_rest(path) {
                return rewritten;
            }
            continue;
        }
        if !rule.store_header {
            if let Cow::Owned(replaced) = rule.pattern.replace(path, rule.replace.as_str()) {
                return Rewritten {
                    path: Cow::Owned(replaced),
                    store: None,
                };
            }
            continue;
        }
        if let Some(captures) = rule.pattern.captures(path) {
            let mut replaced = String::with_capacity(path.len());
            captures.expand(&rule.replace, &mut replaced);
            let store = captures.name("store").map(|m| m.as_str());
            return Rewritten {
                path: Cow::Owned(replaced),
                store,
            };
        }
    }
    Rewritten {
        path: Cow::Borrowed(path),
        store: None,
    }
}

/// [`ADOBE_REST_PATTERN`] with [`ADOBE_REST_REPLACE`], without the regex engine. The pattern's
/// optional group is greedy, so a store segment is tried first; `[A-Za-z0-9_]+` runs to the first
/// other byte, and only its longest run can be followed by `/`. `.` matches anything but `\n`.
fn adobe_rest(path: &str) -> Option<Rewritten<'_>> {
    let rest = path.strip_prefix("/rest")?;
    if rest.contains('\n') {
        return None;
    }
    if let Some(segment) = rest.strip_prefix('/') {
        let store_len = segment
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        let (store, after) = segment.split_at(store_len);
        if store_len > 0 && after.starts_with("/V1/") {
            return Some(Rewritten {
                path: Cow::Borrowed(after),
                store: Some(store),
            });
        }
    }
    rest.starts_with("/V1/").then_some(Rewritten {
        path: Cow::Borrowed(rest),
        store: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, replace: &str) -> RewriteRule {
        let pattern = Regex::new(pattern).expect("test pattern is valid");
        let store_header = pattern.capture_names().any(|n| n == Some("store"));
        RewriteRule {
            pattern: Arc::new(pattern),
            replace: replace.to_owned(),
            store_header,
            engine: RuleEngine::Regex,
        }
    }

    fn adobe_preset() -> RewriteRule {
        RewriteRule {
            engine: RuleEngine::AdobeRest,
            ..rule(ADOBE_REST_PATTERN, ADOBE_REST_REPLACE)
        }
    }

    #[test]
    fn adobe_matcher_agrees_with_the_preset_regex() {
        let regex = [rule(ADOBE_REST_PATTERN, ADOBE_REST_REPLACE)];
        let fast = [adobe_preset()];
        // Every path over an alphabet of the pattern's pieces, up to four pieces long: prefixes,
        // store codes, the version segment, separators and bytes the classes exclude.
        let pieces = [
            "/rest", "/", "V1", "/V1/", "default", "_", "-", "é", "\n", "x", "%2F", "rest",
        ];
        let mut paths = vec![String::new()];
        let mut frontier = paths.clone();
        for _ in 0..4 {
            frontier = frontier
                .iter()
                .flat_map(|p| pieces.iter().map(move |piece| format!("{p}{piece}")))
                .collect();
            paths.extend(frontier.iter().cloned());
        }
        assert!(paths.len() > 20_000);
        for path in &paths {
            let (want, got) = (rewrite(&regex, path), rewrite(&fast, path));
            assert_eq!(got, want, "path {path:?}");
        }
    }

    #[test]
    fn adobe_matcher_borrows_the_path() {
        let r = rewrite(&[adobe_preset()], "/rest/default/V1/products");
        assert!(matches!(r.path, Cow::Borrowed("/V1/products")));
    }

    #[test]
    fn adobe_preset_moves_the_store_code_to_a_header() {
        let rules = [adobe_preset()];
        let r = rewrite(&rules, "/rest/default/V1/products");
        assert_eq!((r.path.as_ref(), r.store), ("/V1/products", Some("default")));
        let r = rewrite(&rules, "/rest/V1/products");
        assert_eq!((r.path.as_ref(), r.store), ("/V1/products", None));
        let r = rewrite(&rules, "/rest/all/V1/store/storeViews");
        assert_eq!((r.path.as_ref(), r.store), ("/V1/store/storeViews", Some("all")));
        let r = rewrite(&rules, "/V1/products");
        assert_eq!((r.path.as_ref(), r.store), ("/V1/products", None));
    }

    #[test]
    fn first_match_wins_and_no_match_borrows() {
        let rules = [rule("^/old/(.*)$", "/new/$1"), rule("^/old/(.*)$", "/never/$1")];
        assert_eq!(rewrite(&rules, "/old/x").path, "/new/x");
        assert!(matches!(rewrite(&rules, "/other").path, Cow::Borrowed("/other")));
        assert!(matches!(rewrite(&[], "/x").path, Cow::Borrowed("/x")));
    }
}
