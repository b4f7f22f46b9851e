//! The source tree's direction, checked: the top-level modules of `src/` form a stack in which
//! each imports only modules below it ([`LAYERS`]), and no file takes names from another file
//! that, through any chain, takes names back from it, inside a module or across modules.
//!
//! A file's dependencies are the paths it names: `use` statements (expanded through their braces)
//! and `crate::`, `super::`, `self::` or child-module paths in code, each resolved to the file of
//! the longest module path it starts with. Re-exports (`pub use`, `pub(crate) use`, ...) are a
//! module's front door, not a use of what they name, so they add no edge; neither do `mod`
//! lines. Run it alone with `cargo test --test it layout`.

use std::collections::{BTreeMap, BTreeSet};

use super::layout::{Source, find_cycle, import_graph, product_sources};

/// The top-level modules of `src/`, top first. A module may import modules on lower rows only;
/// modules on one row do not import each other. A new module must be placed here, which is the
/// moment to decide what it may build on.
const LAYERS: &[&[&str]] = &[
    &["demo"],
    &["app"],
    &["server"],
    &["admin"],
    &["tenant"],
    &["webhook"],
    &["error"],
    &["token"],
    &["ratelimit", "upstream"],
    &["store", "reload", "metrics"],
    &["config", "sandbox"],
    &["providers"],
    &["auth", "telemetry"],
    &["schema", "routing", "signals", "cli"],
    &["clock"],
];

fn row(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

#[test]
fn no_module_imports_one_above_it() {
    let graph = import_graph(&product_sources());
    let mut wrong = Vec::new();
    for (module, imports) in &graph {
        let Some(mine) = row(module) else {
            wrong.push(format!(
                "`{module}` is not in LAYERS: place it on the row it belongs to"
            ));
            continue;
        };
        for import in imports {
            match row(import) {
                Some(theirs) if theirs > mine => {}
                Some(_) => wrong.push(format!("{module} → {import}: `{import}` is not below `{module}`")),
                None => wrong.push(format!("{module} → {import}: `{import}` is not in LAYERS")),
            }
        }
    }
    for module in LAYERS.iter().flat_map(|row| row.iter()) {
        if !graph.contains_key(*module) {
            wrong.push(format!("LAYERS names `{module}`, which src/ no longer has"));
        }
    }
    assert!(graph["config"].contains("providers") && graph["providers"].contains("schema"));
    assert!(wrong.is_empty(), "the module stack is broken:\n{}", wrong.join("\n"));
}

#[test]
fn no_file_takes_names_back_from_a_file_that_takes_names_from_it() {
    let sources = product_sources();
    let graph = file_graph(&sources);
    let edge = |from: &str, to: &str| graph.get(from).is_some_and(|to_all| to_all.contains(to));
    assert!(
        edge("server/pipeline.rs", "server/access_log.rs")
            && edge("providers/adobe_ims/validate.rs", "providers/adobe_ims/mod.rs")
            && edge("providers/mod.rs", "providers/adobe_ims/mod.rs")
            && edge("providers/adobe_ims/token.rs", "auth/mod.rs"),
        "the walk sees the imports it checks: {graph:#?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("files that import each other: {}", cycle.join(" → "));
    }
}

/// A source's module path: `providers/adobe_ims/mod.rs` → `providers::adobe_ims`.
fn module_path(source: &Source) -> Vec<String> {
    let mut segments: Vec<String> = source
        .path
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|last| last == "mod") {
        segments.pop();
    }
    segments
}

/// `file → files it takes names from` (paths relative to `src/`).
fn file_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let files: BTreeMap<Vec<String>, String> = sources
        .iter()
        .filter(|s| s.module != "lib" && s.module != "main")
        .map(|s| (module_path(s), s.path.display().to_string()))
        .collect();
    let mut graph = BTreeMap::new();
    for source in sources.iter().filter(|s| s.module != "lib" && s.module != "main") {
        let here = module_path(source);
        let children: BTreeSet<String> = files
            .keys()
            .filter(|path| path.len() == here.len() + 1 && path.starts_with(&here))
            .map(|path| path[here.len()].clone())
            .collect();
        let me = source.path.display().to_string();
        let mut edges = BTreeSet::new();
        for path in named_paths(&source.lines, &children) {
            let Some(absolute) = resolve(&here, &path) else {
                continue;
            };
            let longest = (1..=absolute.len()).rev().find_map(|len| files.get(&absolute[..len]));
            if let Some(file) = longest.filter(|file| **file != me) {
                edges.insert(file.clone());
            }
        }
        graph.insert(me, edges);
    }
    graph
}

/// `crate::a::b`, `super::a`, `self::a` or `child::a`, made absolute from the module `here`.
fn resolve(here: &[String], path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    let mut base: Vec<String> = match first.as_str() {
        "crate" => Vec::new(),
        "self" => here.to_vec(),
        "super" => here[..here.len().checked_sub(1)?].to_vec(),
        _ => [here, std::slice::from_ref(first)].concat(),
    };
    let mut rest = rest;
    while let Some(("super", tail)) = rest.split_first().map(|(s, t)| (s.as_str(), t)) {
        base.pop()?;
        rest = tail;
    }
    base.extend(rest.iter().cloned());
    Some(base)
}

/// Every path the lines name that starts at `crate`, `super`, `self` or a child module: whole
/// `use` statements expanded (re-exports skipped), and qualified paths in code.
fn named_paths(lines: &[String], children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut statement: Option<String> = None;
    for line in lines.iter().map(|l| l.trim()).filter(|l| !l.starts_with("//")) {
        let starts_use = line.starts_with("use ") || line.starts_with("pub") && line.contains(" use ");
        if let Some(open) = statement.as_mut() {
            open.push_str(line);
        } else if starts_use {
            statement = Some(line.to_owned());
        } else {
            found.extend(code_paths(line, children));
            continue;
        }
        if let Some(done) = statement.take_if(|s| s.ends_with(';')) {
            if done.starts_with("use ") {
                let tree = done.trim_start_matches("use ").trim_end_matches(';');
                found.extend(expand(tree).into_iter().map(|p| split(&p)));
            }
        }
    }
    let roots = ["crate", "super", "self"];
    found.retain(|p| {
        p.first()
            .is_some_and(|f| roots.contains(&f.as_str()) || children.contains(f))
    });
    found
}

/// `a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree
        .replace(" as ", "@")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let Some(open) = tree.find('{') else {
        let plain = tree.split('@').next().unwrap_or_default();
        return vec![plain.trim_end_matches("::self").to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    let parts = parts.into_iter().filter(|p| !p.is_empty());
    parts.flat_map(|part| expand(&format!("{prefix}{part}"))).collect()
}

/// Paths in a line of code: `crate::x`, `super::x`, `self::x`, `child::x`, each not itself the
/// tail of a longer path.
fn code_paths(line: &str, children: &BTreeSet<String>) -> Vec<Vec<String>> {
    let bytes = line.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let starts = is_word(bytes[at]) && (at == 0 || !(is_word(bytes[at - 1]) || bytes[at - 1] == b':'));
        if !starts {
            at += 1;
            continue;
        }
        let end = (at..bytes.len())
            .find(|&i| !(is_word(bytes[i]) || bytes[i] == b':'))
            .unwrap_or(bytes.len());
        let path = split(&line[at..end]);
        let rooted = path
            .first()
            .is_some_and(|first| ["crate", "super", "self"].contains(&first.as_str()) || children.contains(first));
        if rooted && path.len() > 1 {
            found.push(path);
        }
        at = end;
    }
    found
}

/// A path's segments; none for `::name`, which is an outside crate.
fn split(path: &str) -> Vec<String> {
    if path.starts_with("::") {
        return Vec::new();
    }
    path.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

#[test]
fn use_trees_expand_to_every_path() {
    assert_eq!(
        expand("super::{a, b::{c, self}, d as e}"),
        ["super::a", "super::b::c", "super::b", "super::d"]
    );
    let here = split("providers::adobe_ims::token");
    assert_eq!(
        resolve(&here, &split("super::super::auth::Token")),
        Some(split("providers::auth::Token"))
    );
    assert_eq!(resolve(&here, &split("crate::auth::Token")), Some(split("auth::Token")));
    let children: BTreeSet<String> = ["token".to_owned()].into();
    let lines = [
        "pub(crate) use token::A;",
        "use crate::x::{y,",
        "    z};",
        "let v = token::f(super::g());",
    ];
    let lines: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let paths = named_paths(&lines, &children);
    assert_eq!(
        paths,
        [
            split("crate::x::y"),
            split("crate::x::z"),
            split("token::f"),
            split("super::g")
        ]
    );
}
