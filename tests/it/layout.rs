//! The source tree's shape, checked: the import graph between the top-level modules of `src/` has
//! no cycle, no source file outside tests and the sandbox is over 450 lines, no function outside
//! tests is over 60 lines, and no comment sends a reader to a document the repository lacks.
//!
//! It reads whole files as rustfmt leaves them, `#[cfg(test)]` items aside: a module's imports are
//! its `crate::<module>` paths, and a function ends at the first line that is its own indentation
//! followed by `}`. Run it alone
//! with `cargo test --test it layout`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 450;
const MAX_FN_LINES: usize = 60;

/// A source file, without the items that belong to tests.
pub(crate) struct Source {
    pub(crate) path: PathBuf,
    /// The top-level module it belongs to (`src/token/mod.rs` → `token`).
    pub(crate) module: String,
    pub(crate) lines: Vec<String>,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Test files (`tests.rs`, `tests_*.rs`, `testing.rs`, anything under a `tests/` folder) are not
/// product code; nor is any `#[cfg(test)]` item within a file (see [`without_test_items`]).
fn is_test_file(relative: &Path) -> bool {
    let name = relative.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name == "tests.rs"
        || name == "testing.rs"
        || name.starts_with("tests_")
        || relative.components().any(|c| c.as_os_str() == "tests")
}

pub(crate) fn product_sources() -> Vec<Source> {
    let root = src_dir();
    let mut paths = Vec::new();
    rust_files(&root, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let relative = path.strip_prefix(&root).expect("under src/").to_path_buf();
            if is_test_file(&relative) {
                return None;
            }
            let first = relative.components().next().expect("a file name");
            let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
            let text = std::fs::read_to_string(&path).expect("source is UTF-8");
            let lines = without_test_items(&text);
            Some(Source {
                path: relative,
                module,
                lines,
            })
        })
        .collect()
}

/// The file's lines without its `#[cfg(test)]` items: a `mod tests;` line (whose file is skipped
/// as a test file) or a `mod tests { … }` block, wherever they sit. Everything else is read, so
/// a `mod tests;` near the top no longer hides the rest of the file.
fn without_test_items(text: &str) -> Vec<String> {
    let mut kept = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim_start() != "#[cfg(test)]" {
            kept.push(line.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let Some(item) = lines.next() else { break };
        if item.trim_end().ends_with(';') {
            continue;
        }
        // A block item: skip to the `}` at its own indentation.
        let close = format!("{}}}", " ".repeat(indent));
        for inner in lines.by_ref() {
            if inner.trim_end() == close {
                break;
            }
        }
    }
    kept
}

/// `module → modules it names as crate::<module>`, without self-edges or the crate root.
pub(crate) fn import_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for source in sources.iter().filter(|s| s.module != "lib" && s.module != "main") {
        let edges = graph.entry(source.module.clone()).or_default();
        // Comments name other modules (doc links) without depending on them.
        for line in source.lines.iter().filter(|l| !l.trim_start().starts_with("//")) {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != source.module {
                    edges.insert(name);
                }
            }
        }
    }
    graph
}

/// One cycle in `graph`, as the path that closes it, if there is any.
pub(crate) fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// `(name, first line, length)` of every function, by rustfmt's layout.
fn functions(lines: &[String]) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let signature = ["pub(crate) ", "pub(super) ", "pub ", "async ", "const ", "unsafe "]
            .iter()
            .fold(trimmed, |rest, prefix| rest.strip_prefix(prefix).unwrap_or(rest));
        let Some(after_fn) = signature.strip_prefix("fn ") else {
            continue;
        };
        // A declaration without a body (a trait's) ends on its own line.
        if line.trim_end().ends_with(';') {
            continue;
        }
        let name: String = after_fn
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if line.trim_end().ends_with('}') {
            found.push((name, start + 1, 1));
            continue;
        }
        let closing = format!("{indent}}}");
        let end = lines[start..]
            .iter()
            .position(|l| *l == closing)
            .map_or(lines.len() - start, |offset| offset + 1);
        found.push((name, start + 1, end));
    }
    found
}

#[test]
fn the_modules_of_src_import_each_other_without_a_cycle() {
    let sources = product_sources();
    let graph = import_graph(&sources);
    assert!(graph.len() > 10, "the walk found the modules: {graph:?}");
    assert!(
        graph["server"].contains("tenant") && graph["config"].contains("routing"),
        "the walk sees the imports it checks: {graph:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle between modules: {}", cycle.join(" → "));
    }
}

#[test]
fn the_cycle_check_finds_a_cycle_when_there_is_one() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    graph.get_mut("c").expect("c").clear();
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn no_product_file_or_function_is_over_its_budget() {
    let mut over = Vec::new();
    for source in product_sources() {
        if source.module != "sandbox" && source.lines.len() > MAX_FILE_LINES {
            over.push(format!("{}: {} lines", source.path.display(), source.lines.len()));
        }
        for (name, line, length) in functions(&source.lines) {
            if length > MAX_FN_LINES {
                over.push(format!("{}:{line}: fn {name} is {length} lines", source.path.display()));
            }
        }
    }
    assert!(
        over.is_empty(),
        "over {MAX_FILE_LINES} lines a file or {MAX_FN_LINES} a function:\n{}",
        over.join("\n")
    );
}

#[test]
fn the_function_measure_counts_to_the_closing_brace() {
    let lines: Vec<String> = "impl X {\n    pub(crate) async fn long(\n        a: u8,\n    ) -> u8 {\n        a\n    }\n\n    fn declared();\n}\nfn top() {}\n"
        .lines()
        .map(str::to_owned)
        .collect();
    let found = functions(&lines);
    assert_eq!(found[0], ("long".to_owned(), 2, 5));
    assert_eq!(found[1], ("top".to_owned(), 10, 1));
    assert_eq!(found.len(), 2);
}

#[test]
fn comments_point_only_at_documents_in_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    rust_files(&root.join("src"), &mut paths);
    rust_files(&root.join("tests"), &mut paths);
    rust_files(&root.join("benches"), &mut paths);
    let outside = ["SPEC.md", "UPSTREAMS.md", "DEVELOPERS.md", "STYLE.md", "../shared"];
    let mut found = Vec::new();
    for path in paths.iter().filter(|p| !p.ends_with("tests/it/layout.rs")) {
        let text = std::fs::read_to_string(path).expect("source is UTF-8");
        for (number, line) in text.lines().enumerate() {
            if outside.iter().any(|name| line.contains(name)) {
                found.push(format!("{}:{}: {line}", path.display(), number + 1));
            }
        }
    }
    assert!(paths.len() > 50, "the walk found the sources");
    assert!(
        found.is_empty(),
        "references outside the repository:\n{}",
        found.join("\n")
    );
}

/// A `mod tests;` at the top hides nothing after it; a test block is skipped whole, nested or not.
#[test]
fn test_items_are_cut_out_and_the_rest_is_read() {
    let text = "use a;\n#[cfg(test)]\nmod tests;\nfn kept() {\n    crate::store::x();\n}\n\
                #[cfg(test)]\nmod inline {\n    fn hidden() {}\n}\nfn after() {}\n\
                impl X {\n    #[cfg(test)]\n    fn helper() {\n        crate::auth::y();\n    }\n    fn shown() {}\n}\n";
    let kept = without_test_items(text);
    assert!(kept.iter().any(|l| l.contains("crate::store")), "{kept:?}");
    assert!(kept.iter().any(|l| l == "fn after() {}"), "{kept:?}");
    assert!(kept.iter().any(|l| l.contains("fn shown")), "{kept:?}");
    assert!(
        !kept
            .iter()
            .any(|l| l.contains("hidden") || l.contains("crate::auth") || l.contains("mod tests"))
    );
}
