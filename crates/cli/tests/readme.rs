//! README examples are real output: every ```text block that starts with `$ forja …` is run and
//! compared with what the binary prints now. A block ending in `…` shows a prefix. Blocks that
//! depend on the machine (`forja hw`, `--here`) are fenced as ```console and not checked.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::process::Command;

#[test]
fn readme_examples_match_the_binary() {
    let readme = std::fs::read_to_string(forja_testkit::repo_root().join("README.md")).unwrap();
    let mut checked = 0;
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```text\n$ forja") {
        let block = &rest[start + "```text\n".len()..];
        let end = block.find("```").unwrap();
        let (command, expected) = block[..end].split_once('\n').unwrap();
        rest = &block[end + 3..];
        let args: Vec<&str> = command
            .trim_start_matches("$ forja")
            .split_whitespace()
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_forja"))
            .args(&args)
            .env("FORJA_LOG", "off")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README command `{command}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let actual = String::from_utf8(out.stdout).unwrap();
        match expected.strip_suffix("…\n") {
            Some(prefix) => assert!(
                actual.starts_with(prefix),
                "README output of `{command}` is stale:\n{actual}"
            ),
            None => assert_eq!(actual, expected, "README output of `{command}` is stale"),
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} README examples found");
}
