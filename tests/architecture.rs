//! The house's shape, checked: what the turnout binary links.

use std::path::Path;

/// The `[dependencies]` section of a manifest: the crates a build links.
fn normal_dependencies(manifest: &str) -> Vec<String> {
    manifest
        .split("\n[")
        .find(|s| s.starts_with("dependencies]"))
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_binary_links_no_test_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let deps = normal_dependencies(&manifest);
    assert!(deps.contains(&"turnout-proxy".to_string()), "{deps:?}");
    assert!(deps.contains(&"turnout-instances".to_string()), "{deps:?}");
    assert!(
        !deps.contains(&"turnout-harness".to_string()),
        "the turnout binary must not link the test harness: {deps:?}"
    );
    // Nor do the crates it links.
    for member in ["config", "control", "proxy", "instances"] {
        let m = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
        let deps = normal_dependencies(&m);
        assert!(
            !deps.contains(&"turnout-harness".to_string()),
            "{member} links the test harness"
        );
    }
}

/// The layers of `proxy/src`, lowest first: a module may use the ones
/// below it (and its own), never one above. The order of the one-engine
/// work (issue 19): transport and wire formats, the backend clients, the
/// engine (written against them) with the mapping and the login tables, the
/// side jobs (which take the backends, or a narrow view of the listener),
/// the state the sessions share, the protocol adapters (which do not use
/// each other), the server, the control plane.
const LAYERS: &[(&str, u32)] = &[
    ("stream", 0),
    ("tls", 0),
    ("wire", 0),
    ("backend", 1),
    ("store", 1),
    ("engine", 2),
    ("mapping", 2),
    ("logins", 2),
    ("backfill", 3),
    ("catalog", 3),
    ("shared", 4),
    ("pg", 5),
    ("mysql", 5),
    ("server", 6),
    ("admin", 7),
    ("flip", 7),
    ("metrics", 7),
    ("backend_check", 7),
];

/// Layers whose modules must not use each other (the side jobs; the
/// protocol adapters).
const APART: &[u32] = &[3, 5];

/// Imports that break the layers, each to be removed: the test fails when
/// one is added, and when one is gone but still listed, so this list only
/// shrinks. Empty since the shared state moved below the adapters.
const KNOWN: &[(&str, &str)] = &[];

/// The proxy modules `module`'s production files use (`crate::x`), from its
/// sources without comments and test modules.
fn uses(src: &Path, module: &str) -> std::collections::BTreeSet<String> {
    let dir = src.join(module);
    let mut files = if dir.is_dir() {
        rust_files(&dir)
    } else {
        Vec::new()
    };
    let single = src.join(format!("{module}.rs"));
    if single.exists() {
        files.push(single);
    }
    let mut out = std::collections::BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Test modules at the end of a file are not production code.
        let text = text.split("#[cfg(test)]").next().unwrap_or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or_default();
            let mut rest = code;
            while let Some(at) = rest.find("crate::") {
                let tail = &rest[at + 7..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let used = &tail[..end];
                if used != module && !used.is_empty() {
                    out.insert(used.to_string());
                }
                rest = &tail[end..];
            }
        }
    }
    out
}

#[test]
fn no_layer_of_the_proxy_uses_a_higher_one_beyond_the_known_list() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/src");
    let rank = |m: &str| LAYERS.iter().find(|(n, _)| *n == m).map(|(_, r)| *r);
    let mut found = Vec::new();
    for (module, r) in LAYERS {
        for used in uses(&src, module) {
            let Some(ur) = rank(&used) else {
                continue; // lib.rs items, test support (fuzzing)
            };
            // Lower layers, or the same layer where its modules may use
            // each other.
            if ur < *r || (ur == *r && !APART.contains(r)) {
                continue;
            }
            found.push((module.to_string(), used));
        }
    }
    let known: Vec<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<_> = found.iter().filter(|f| !known.contains(f)).collect();
    assert!(
        new.is_empty(),
        "a lower layer uses a higher one: {new:?} (layers: {LAYERS:?})"
    );
    let gone: Vec<_> = known.iter().filter(|k| !found.contains(k)).collect();
    assert!(
        gone.is_empty(),
        "no longer used, take them off KNOWN: {gone:?}"
    );
    // Every module of proxy/src has a layer.
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "fuzzing"].contains(&name.as_str()) {
            continue;
        }
        assert!(
            rank(&name).is_some(),
            "proxy/src/{name} has no layer in LAYERS"
        );
    }
}

/// Production source files of the workspace (test files and test modules
/// left out): path and text before the first test module.
fn production_sources() -> Vec<(std::path::PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        "proxy/src",
        "src",
        "control/src",
        "config/src",
        "instances/src",
    ]
    .iter()
    .flat_map(|d| rust_files(&root.join(d)))
    .map(|p| {
        let text = std::fs::read_to_string(&p).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        (p, code.to_string())
    })
    .collect()
}

/// The Rust files below `dir` but test-only ones (`tests.rs`, `fuzz.rs`).
fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name()
                    .is_some_and(|n| n != "tests.rs" && n != "fuzz.rs")
            {
                files.push(p);
            }
        }
    }
    files
}

#[test]
fn production_files_stay_under_800_lines_and_name_what_they_import() {
    let mut long = Vec::new();
    let mut glob = Vec::new();
    for (path, code) in production_sources() {
        let lines = code.lines().count();
        if lines > 800 {
            long.push(format!("{} ({lines} lines)", path.display()));
        }
        if code.lines().any(|l| l.trim() == "use super::*;") {
            glob.push(path.display().to_string());
        }
    }
    assert!(long.is_empty(), "over 800 lines: {long:?}");
    assert!(glob.is_empty(), "`use super::*` outside tests: {glob:?}");
}

#[test]
fn the_module_graph_of_the_proxy_has_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy/src");
    let names: Vec<&str> = LAYERS.iter().map(|(n, _)| *n).collect();
    let edges: Vec<(String, Vec<String>)> = names
        .iter()
        .map(|m| {
            let used = uses(&src, m)
                .into_iter()
                .filter(|u| names.contains(&u.as_str()))
                .collect();
            (m.to_string(), used)
        })
        .collect();
    // Depth-first search; a module met again on the current path closes a cycle.
    fn visit(
        m: &str,
        edges: &[(String, Vec<String>)],
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        let next = edges.iter().find(|(n, _)| n == m).map(|(_, u)| u.clone());
        for u in next.unwrap_or_default() {
            if let Some(c) = visit(&u, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    for m in &names {
        let cycle = visit(m, &edges, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "a cycle of modules: {:?}",
            cycle.unwrap_or_default()
        );
    }
}
