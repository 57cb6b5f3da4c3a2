//! The shape of the source, checked without a GPU: the files of `src/` import each other in one
//! direction (no cycle, nothing imported through the crate root), no function runs past 150
//! lines, and nothing cites a path outside the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/a/b.rs` and `src/a/b/mod.rs` are `[a, b]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The source without comments and without `#[cfg(test)]` inline modules (tests are not part
/// of the library's structure).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut test_attr = false;
    for line in text.lines() {
        let line = line.split("//").next().unwrap_or("");
        let trimmed = line.trim();
        if skip_depth.is_none()
            && test_attr
            && trimmed.starts_with("mod ")
            && trimmed.ends_with('{')
        {
            skip_depth = Some(depth);
        }
        test_attr = trimmed == "#[cfg(test)]" || (test_attr && trimmed.starts_with("#["));
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        match skip_depth {
            Some(d) if depth <= d && line.contains('}') => skip_depth = None,
            Some(_) => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into paths.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return vec![path.to_string()];
    };
    let prefix = tree[..open].trim_end_matches("::");
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, ch) in inner.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(expand)
        .map(|p| {
            if p == "self" {
                prefix.to_string()
            } else {
                format!("{prefix}::{p}")
            }
        })
        .collect()
}

/// Every path a file names, relative to its module: `crate::...`, `super::...`, `self::...`.
fn paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    // `use` statements (they may span lines).
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 4..];
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_') {
            if let Some(end) = after.find(';') {
                out.extend(expand(&after[..end]));
            }
        }
        rest = after;
    }
    // Paths inside code.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if before.is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != ':') {
                out.push(tail[..end].trim_end_matches(':').to_string());
            }
            rest = &tail[start.len()..];
        }
    }
    out
}

/// The file a path from module `here` names: the longest prefix that is a module file.
fn resolve(
    modules: &BTreeMap<Vec<String>, PathBuf>,
    here: &[String],
    path: &str,
) -> Option<Vec<String>> {
    let mut segs: Vec<&str> = path.split("::").collect();
    let mut base: Vec<String> = match segs.first() {
        Some(&"crate") => {
            segs.remove(0);
            Vec::new()
        }
        Some(&"super") | Some(&"self") => {
            let mut b = here.to_vec();
            while let Some(&s) = segs.first() {
                match s {
                    "super" => {
                        b.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                segs.remove(0);
            }
            b
        }
        _ => return None, // an external crate or a local name
    };
    let full: Vec<String> = base
        .drain(..)
        .chain(segs.iter().map(|s| s.to_string()))
        .collect();
    (0..=full.len())
        .rev()
        .map(|k| full[..k].to_vec())
        .find(|m| modules.contains_key(m))
}

/// Modules (by path) and the modules each imports.
type Graph = BTreeMap<Vec<String>, BTreeSet<Vec<String>>>;

/// Files of `src/` and the files each imports.
fn import_graph() -> (Graph, Vec<String>) {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut graph = BTreeMap::new();
    let mut through_root = Vec::new();
    for (module, file) in &modules {
        let text = code(&std::fs::read_to_string(file).unwrap());
        let mut edges = BTreeSet::new();
        for p in paths(&text) {
            let Some(target) = resolve(&modules, module, &p) else {
                continue;
            };
            // Exported macros live at the root by necessity.
            if target.is_empty() && p.ends_with("::gpu_struct") {
                continue;
            }
            if target.is_empty() {
                if !module.is_empty() && !p.starts_with("super") {
                    through_root.push(format!("{}: {p}", file.display()));
                }
                continue;
            }
            if &target != module {
                edges.insert(target);
            }
        }
        graph.insert(module.clone(), edges);
    }
    (graph, through_root)
}

/// A cycle of the graph, if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &Vec<String>,
        graph: &Graph,
        marks: &mut BTreeMap<Vec<String>, Mark>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        match marks.get(node) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let from = stack.iter().position(|n| n == node).unwrap();
                let mut cycle: Vec<String> = stack[from..].iter().map(|m| m.join("::")).collect();
                cycle.push(node.join("::"));
                return Some(cycle);
            }
            None => {}
        }
        marks.insert(node.clone(), Mark::Open);
        stack.push(node.clone());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(node.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if let Some(c) = visit(node, graph, &mut marks, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

#[test]
fn source_files_import_each_other_in_one_direction() {
    let (graph, through_root) = import_graph();
    assert!(graph.len() > 40, "found only {} files", graph.len());
    assert!(
        through_root.is_empty(),
        "library code imports through the crate root (use the defining module):\n{}",
        through_root.join("\n")
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let node = |s: &str| vec![s.to_string()];
    let mut graph = BTreeMap::new();
    graph.insert(node("a"), [node("b")].into_iter().collect());
    graph.insert(node("b"), [node("c")].into_iter().collect());
    graph.insert(node("c"), BTreeSet::new());
    assert_eq!(find_cycle(&graph), None);
    graph.insert(node("c"), [node("a")].into_iter().collect());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        expand("a::{b, c::{d, e as f}, self}"),
        vec!["a::b", "a::c::d", "a::c::e", "a"]
    );
}

/// (file, function, lines) of every function longer than `max` lines.
fn long_functions(max: usize) -> Vec<(String, String, usize)> {
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let is_fn = [
                "fn ",
                "pub fn ",
                "pub(crate) fn ",
                "pub(super) fn ",
                "async fn ",
            ]
            .iter()
            .any(|p| trimmed.starts_with(p));
            if !is_fn || trimmed.ends_with(';') {
                continue;
            }
            let close = format!("{}}}", " ".repeat(indent));
            if let Some(len) = lines[i..].iter().position(|l| *l == close) {
                if len + 1 > max {
                    let name = trimmed.split('(').next().unwrap_or(trimmed).to_string();
                    long.push((file.display().to_string(), name, len + 1));
                }
            }
        }
    }
    long
}

#[test]
fn no_function_runs_past_150_lines() {
    let long = long_functions(150);
    assert!(long.is_empty(), "functions over 150 lines: {long:#?}");
    // The counter sees long functions: the longest ones are well over 40 lines.
    assert!(!long_functions(40).is_empty());
}

#[test]
fn nothing_cites_a_path_outside_the_repository() {
    let mut files = Vec::new();
    for dir in ["src", "tools/src", "tests", "shaders", "docs"] {
        let dir = root().join(dir);
        if dir.exists() {
            let mut all = Vec::new();
            collect(&dir, &mut all);
            files.extend(all);
        }
    }
    files.push(root().join("README.md"));
    let mut bad = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if file.ends_with("architecture.rs") {
                continue;
            }
            if line.contains("shared/LOSSES.md")
                || line.contains("shared/DESIGN.md")
                || line.contains("../shared")
                || (line.contains("DESIGN.md") && !line.contains("docs/"))
            {
                bad.push(format!("{}:{}: {line}", file.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "paths outside the repository:\n{}",
        bad.join("\n")
    );
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path
            .extension()
            .is_some_and(|e| e == "rs" || e == "wgsl" || e == "md")
        {
            out.push(path);
        }
    }
}
