//! Test support shared by forja's crates: where the real test models are, the repository's
//! fixtures, a GGUF writer for building valid and deliberately broken headers, and a counting
//! allocator.

pub mod gguf_builder;
pub mod heap;
pub mod vectors;

use std::path::PathBuf;

/// The repository root: `$FORJA_REPO` when set (a test binary run from another checkout, as on
/// the GPU machine), else the checkout the tests were built in.
pub fn repo_root() -> PathBuf {
    if let Some(d) = std::env::var_os("FORJA_REPO").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.ancestors().nth(2).map(PathBuf::from).unwrap_or(here)
}

/// `fixtures/` at the repository root.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
}

/// Where `scripts/fetch-testdata` installs the real models: `$FORJA_TESTDATA`, else
/// `~/.cache/forja-testdata`.
pub fn testdata_dir() -> PathBuf {
    match std::env::var_os("FORJA_TESTDATA") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => std::env::var_os("HOME").map_or_else(
            || PathBuf::from(".cache/forja-testdata"),
            |h| PathBuf::from(h).join(".cache/forja-testdata"),
        ),
    }
}

/// A real test model by file name. Panics with the fix when it is missing: tests that need real
/// models must fail loudly rather than pass without them.
pub fn testdata_file(name: &str) -> PathBuf {
    let p = testdata_dir().join(name);
    assert!(
        p.is_file(),
        "test model {} is missing: run scripts/fetch-testdata",
        p.display()
    );
    p
}

/// The three real GGUF models the tests read.
pub const REAL_GGUFS: [&str; 3] = [
    "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "gemma-3-270m-q4_k_m.gguf",
];

/// The PostgreSQL server for the tests of the PostgreSQL RAG store: `$FORJA_TEST_PG_URL`, which
/// `scripts/pg run` sets (scripts/test runs the suite under it). In CI (`CI` set and not
/// `false`/`0`) a missing server fails the test; elsewhere the test is told to say so and pass.
pub fn pg_test_url() -> Option<String> {
    match std::env::var("FORJA_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
            assert!(
                !ci,
                "FORJA_TEST_PG_URL is not set: in CI the tests run under `scripts/pg run` \
                 (scripts/test does it), which starts a PostgreSQL server for them"
            );
            eprintln!(
                "NOT RUN against PostgreSQL: FORJA_TEST_PG_URL is not set; run the tests under \
                 `scripts/pg run` (e.g. `scripts/pg run cargo test -p forja-rag`) to include them"
            );
            None
        }
    }
}
