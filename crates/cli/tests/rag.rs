//! `forja ingest`, `search` and `ask` end to end with the real MiniLM embedding model and the
//! real SmolLM2 chat model, on documents written by the test into a temporary store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::Path;
use std::process::Command;

use forja_testkit::{testdata_dir, testdata_file};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn forja(home: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_forja"))
        .args(args)
        .env("FORJA_LOG", "off")
        .env("FORJA_HOME", home)
        .env_remove("FORJA_RAG_STORE")
        // No pdfium: PDFs go to the built-in extractor, and ingest says so once.
        .env("FORJA_PDFIUM", home.join("no-libpdfium.so"))
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(home: &Path, args: &[&str]) -> String {
    let r = forja(home, args);
    assert_eq!(r.code, 0, "forja {args:?} failed: {}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.stdout
}

fn write_docs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("cooling.md"),
        "# Server cooling\n\n## Fans\n\nThe GPU servers in rack B are cooled by six front fans \
         that run at 60 percent speed. If a fan fails, the server throttles its GPUs to protect \
         them.\n\n## Temperatures\n\nKeep the inlet air below 27 degrees Celsius.\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("vacation.html"),
        "<html><head><title>Vacation policy</title></head><body><nav>Home | Intranet</nav>\
         <h1>Vacation policy</h1><p>Every employee receives 25 paid days of holiday per \
         calendar year. Unused days can be carried over until the end of March.</p>\
         <script>track()</script></body></html>",
    )
    .unwrap();
    std::fs::write(
        dir.join("offices.csv"),
        "city,country,employees\nMadrid,Spain,120\nLisbon,Portugal,45\nBerlin,Germany,80\n",
    )
    .unwrap();
    std::fs::write(dir.join("scan.pdf"), "%PDF-1.7").unwrap();
}

#[test]
fn ingest_search_and_ask_with_real_models() {
    let minilm = testdata_dir().join("all-minilm-l6-v2");
    assert!(
        minilm.join("config.json").is_file(),
        "{} is missing: run scripts/fetch-testdata",
        minilm.display()
    );
    let smollm = testdata_file("SmolLM2-135M-Instruct.Q4_1.gguf");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let docs = tmp.path().join("docs");
    write_docs(&docs);
    let store = tmp.path().join("rag.sqlite");
    let (store, minilm, docs) = (
        store.to_str().unwrap(),
        minilm.to_str().unwrap(),
        docs.to_str().unwrap(),
    );
    let common = [
        "--collection",
        "company",
        "--store",
        store,
        "--embedding-model",
        minilm,
    ];

    let ingest = |home: &Path| {
        let mut args = vec!["ingest", docs];
        args.extend(common);
        forja(home, &args)
    };
    let r = ingest(&home);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("files: 3 added, 0 unchanged, 0 updated, 0 removed, 1 failed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("scan.pdf: not a readable PDF (corrupt or truncated)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("note: pdfium could not be loaded").count(),
        1,
        "{}",
        r.stderr
    );
    let again = ingest(&home);
    assert!(
        again.stdout.contains("0 added, 3 unchanged"),
        "{}",
        again.stdout
    );

    // A paraphrase that shares few words with the document.
    let mut args = vec!["search", "how much time off do staff get each year"];
    args.extend(common);
    let out = ok(&home, &args);
    let first = out.lines().next().unwrap();
    assert!(first.contains("vacation.html"), "{out}");
    args.extend(["--mode", "bm25", "-k", "1"]);
    let out = ok(&home, &args);
    assert!(out.contains("vacation.html"), "{out}");
    let mut args = vec![
        "search",
        "what happens when a fan breaks",
        "--type",
        "paragraph",
    ];
    args.extend(common);
    let out = ok(&home, &args);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("cooling.md, Server cooling > Fans"),
        "{out}"
    );

    let model = smollm.to_str().unwrap();
    let mut args = vec![
        "ask",
        "How many paid vacation days does an employee get per year?",
        "--model",
        model,
        "--max-tokens",
        "40",
        "-k",
        "2",
    ];
    args.extend(common);
    let out = ok(&home, &args);
    let sources = out
        .split("\nSources:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    let first = sources.lines().next().unwrap();
    assert!(
        first.starts_with("[1] vacation.html, Vacation policy: Every employee receives 25"),
        "{out}"
    );

    let mut args = vec![
        "ask",
        "What is the best recipe for chocolate cake?",
        "--model",
        model,
    ];
    args.extend(common);
    let out = ok(&home, &args);
    assert!(out.contains("I found nothing relevant"), "{out}");
    assert!(!out.contains("Sources:"), "{out}");

    // The default store lives under FORJA_HOME; an unknown collection is a one-line error.
    let r = forja(
        &home,
        &["search", "x", "--collection", "nope", "--mode", "bm25"],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("rag.sqlite"), "{}", r.stderr);
    let r = forja(
        &home,
        &[
            "search",
            "x",
            "--collection",
            "nope",
            "--store",
            store,
            "--mode",
            "bm25",
        ],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("no such collection"), "{}", r.stderr);
}
