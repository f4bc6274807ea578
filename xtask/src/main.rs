//! `cargo xtask`: repository checks that no compiler enforces.
//!
//! - `layers`: every crate depends only on the crates below it (the dependency direction ARCHITECTURE.md draws);
//!   `forja-testkit` is a dev-dependency only.
//! - `file-size`: no Rust source file exceeds the size convention.
//! - `check`: both.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Lines a Rust file may have (convention: one concept per file, under ~800 lines).
const MAX_FILE_LINES: usize = 800;

/// What each workspace crate may depend on (normal dependencies). A crate missing here is an
/// error: adding a crate means deciding its place in the layering.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        (
            "forja-cli",
            &[
                "forja-planner",
                "forja-server",
                "forja-rag",
                "forja-train",
                "forja-api",
                "forja-engine",
                "forja-models",
                "forja-arch",
                "forja-hw",
                "forja-store",
                "forja-convert",
            ][..],
        ),
        ("forja-store", &["forja-arch", "forja-hw"][..]),
        ("forja-planner", &["forja-arch", "forja-hw"][..]),
        // Its GPU sampling test runs the kernel beside the engine's sampler, whose rules it
        // repeats (a dev-dependency).
        (
            "forja-engine",
            &[
                "forja-kernels",
                "forja-models",
                "forja-arch",
                "forja-kv",
                "forja-sched",
                "forja-quant",
            ][..],
        ),
        (
            "forja-server",
            &["forja-api", "forja-engine", "forja-arch", "forja-rag"][..],
        ),
        ("forja-api", &[][..]),
        ("forja-rag", &[][..]),
        // The engine owns tokenizers and chat templates: training data goes through the same
        // prompt rendering as inference, so a tuned model sees at serving time what it learned.
        (
            "forja-train",
            &["forja-engine", "forja-models", "forja-arch", "forja-quant"][..],
        ),
        ("forja-sched", &["forja-kv"][..]),
        ("forja-kv", &[][..]),
        // Block tables reach the paged stores with forja-kv's mark for given-back blocks.
        (
            "forja-models",
            &["forja-arch", "forja-kv", "forja-quant", "forja-kernels"][..],
        ),
        // Its tests read the written vocabulary back through the engine's tokenizer.
        (
            "forja-convert",
            &["forja-engine", "forja-models", "forja-arch", "forja-quant"][..],
        ),
        ("forja-quant", &[][..]),
        ("forja-kernels", &[][..]),
        ("forja-arch", &[][..]),
        ("forja-hw", &[][..]),
        ("forja-testkit", &[][..]),
        ("xtask", &[][..]),
    ])
}

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "layers" => layers(),
        "file-size" => file_size(),
        "check" => {
            layers()?;
            file_size()
        }
        _ => bail!("usage: cargo xtask <layers|file-size|check>"),
    }
}

fn layers() -> Result<()> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let problems = layer_problems(&meta);
    let packages = meta["packages"].as_array().map_or(0, Vec::len);
    if problems.is_empty() {
        println!("layers: {packages} crates, dependencies point down");
        Ok(())
    } else {
        bail!("layering violations:\n  {}", problems.join("\n  "))
    }
}

/// Violations of the layer table in `cargo metadata` output.
fn layer_problems(meta: &serde_json::Value) -> Vec<String> {
    let rules = allowed();
    let mut problems = Vec::new();
    let no_packages = Vec::new();
    let packages = meta["packages"].as_array().unwrap_or(&no_packages);
    let members: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let Some(allowed) = rules.get(name) else {
            problems.push(format!(
                "{name}: not in xtask's layer table; decide which crates it may use"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or_default();
            if !members.contains(&dep) {
                continue;
            }
            let dev = d["kind"].as_str() == Some("dev");
            if dep == "forja-testkit" {
                if !dev {
                    problems.push(format!(
                        "{name} depends on forja-testkit outside dev-dependencies"
                    ));
                }
            } else if !allowed.contains(&dep) {
                problems.push(format!("{name} depends on {dep}, which is not below it"));
            }
        }
    }
    problems
}

fn file_size() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent dir")?;
    let mut long = Vec::new();
    let mut count = 0;
    for dir in ["crates", "xtask"] {
        visit(&root.join(dir), &mut |p| {
            if p.extension().is_some_and(|e| e == "rs") {
                count += 1;
                let lines = std::fs::read_to_string(p)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                if lines > MAX_FILE_LINES {
                    long.push(format!(
                        "{} has {lines} lines (limit {MAX_FILE_LINES})",
                        p.display()
                    ));
                }
            }
        })?;
    }
    if long.is_empty() {
        println!("file-size: {count} Rust files, none over {MAX_FILE_LINES} lines");
        Ok(())
    } else {
        bail!(
            "files too long, split them by concept:\n  {}",
            long.join("\n  ")
        )
    }
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            visit(&path, f)?;
        } else {
            f(&path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pkgs: serde_json::Value) -> serde_json::Value {
        serde_json::json!({ "packages": pkgs })
    }

    #[test]
    fn upward_dependency_is_reported() {
        let m = meta(serde_json::json!([
            {"name": "forja-arch", "dependencies": [{"name": "forja-planner", "kind": null}]},
            {"name": "forja-planner", "dependencies": [{"name": "forja-arch", "kind": null}]},
        ]));
        assert_eq!(
            layer_problems(&m),
            vec!["forja-arch depends on forja-planner, which is not below it"]
        );
    }

    #[test]
    fn testkit_only_as_dev_dependency() {
        let m = meta(serde_json::json!([
            {"name": "forja-arch", "dependencies": [{"name": "forja-testkit", "kind": "dev"}]},
            {"name": "forja-hw", "dependencies": [{"name": "forja-testkit", "kind": null}]},
            {"name": "forja-testkit", "dependencies": []},
            {"name": "forja-new", "dependencies": []},
        ]));
        let p = layer_problems(&m);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("forja-hw depends on forja-testkit outside dev-dependencies"));
        assert!(p[1].contains("forja-new: not in xtask's layer table"));
    }
}
