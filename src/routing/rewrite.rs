//! Path rewriting: a tenant's rules, first match wins, applied after the tenant prefix is removed
//! and the path normalised. A rule whose pattern has a capture group named `store` also yields the
//! ACCS `Store` header (ACCS picks the store scope by header, not by path; UPSTREAMS.md 1.3).

use std::borrow::Cow;

use crate::config::RewriteRule;

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

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str, replace: &str) -> RewriteRule {
        let pattern = regex::Regex::new(pattern).expect("test pattern is valid");
        let store_header = pattern.capture_names().any(|n| n == Some("store"));
        RewriteRule {
            pattern: std::sync::Arc::new(pattern),
            replace: replace.to_owned(),
            store_header,
        }
    }

    fn adobe_preset() -> RewriteRule {
        rule(r"^/rest(?:/(?P<store>[A-Za-z0-9_]+))?(/V1/.*)$", "$2")
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
