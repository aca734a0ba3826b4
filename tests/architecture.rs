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
