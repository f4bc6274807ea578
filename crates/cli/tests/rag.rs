//! `forja ingest`, `search` and `ask` end to end with the real MiniLM embedding model and the
//! real SmolLM2 chat model, on documents written by the test into a temporary store: a SQLite
//! file, and a PostgreSQL server (`scripts/pg run`; required in CI).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

use std::path::Path;
use std::process::Command;

use forja_testkit::{pg_test_url, testdata_dir, testdata_file};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn forja(home: &Path, args: &[&str]) -> Run {
    forja_with_store(home, args, None)
}

/// `forja` with `FORJA_RAG_STORE` set to `store`, or unset.
fn forja_with_store(home: &Path, args: &[&str], store: Option<&str>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_forja"));
    cmd.args(args)
        .env("FORJA_LOG", "off")
        .env("FORJA_HOME", home)
        // No pdfium: PDFs go to the built-in extractor, and ingest says so once.
        .env("FORJA_PDFIUM", home.join("no-libpdfium.so"));
    match store {
        Some(s) => cmd.env("FORJA_RAG_STORE", s),
        None => cmd.env_remove("FORJA_RAG_STORE"),
    };
    let out = cmd.output().unwrap();
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

/// On the documents of `write_docs`: a paraphrase finds the vacation policy by meaning and by
/// keywords, and `--type paragraph` finds the fan section with its section path.
fn search_ranks_by_meaning_keywords_and_kind(home: &Path, common: &[&str]) {
    let mut args = vec!["search", "how much time off do staff get each year"];
    args.extend(common);
    let out = ok(home, &args);
    assert!(
        out.lines().next().unwrap().contains("vacation.html"),
        "{out}"
    );
    args.extend(["--mode", "bm25", "-k", "1"]);
    let out = ok(home, &args);
    assert!(out.contains("vacation.html"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    let mut args = vec![
        "search",
        "what happens when a fan breaks",
        "--type",
        "paragraph",
    ];
    args.extend(common);
    let out = ok(home, &args);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .contains("cooling.md, Server cooling > Fans"),
        "{out}"
    );
    // Every document here is dated by its file's time (written by this test, today).
    let dated = |after: &str, before: &str| {
        let mut args = vec!["search", "fan", "--after", after, "--before", before];
        args.extend(common);
        forja(home, &args)
    };
    let r = dated("2000-01-01", "2999-12-31");
    assert!(r.stdout.contains("cooling.md"), "{}{}", r.stdout, r.stderr);
    let r = dated("2999-01-01", "2999-12-31");
    assert_eq!(
        (r.code, r.stdout.trim()),
        (0, "no chunk matches"),
        "{}",
        r.stderr
    );
    let r = dated("2024-01-01", "soon");
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--before \"soon\" is not a date"),
        "{}",
        r.stderr
    );
    let r = dated("2025-01-01", "2024-01-01");
    assert!(r.stderr.contains("later than before"), "{}", r.stderr);

    // A cross-encoder reorders the candidates and reports its scores, best first.
    let reranker = forja_testkit::fixtures_dir().join("tiny/cross-encoder");
    let reranker = reranker.to_str().unwrap();
    let mut args = vec![
        "search",
        "fan",
        "-k",
        "3",
        "--json",
        "--rerank-model",
        reranker,
    ];
    args.extend(common);
    let hits: serde_json::Value = serde_json::from_str(&ok(home, &args)).unwrap();
    let scores: Vec<f64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["rerank_score"].as_f64().unwrap())
        .collect();
    assert_eq!(scores.len(), 3, "{hits}");
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{hits}");
    let mut args = vec!["search", "fan", "--rerank-model", "/nonexistent/reranker"];
    args.extend(common);
    let r = forja(home, &args);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--rerank-model: no model folder at"),
        "{}",
        r.stderr
    );
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

    // Files over --max-file-size fail alone, unread.
    let small_store = tmp.path().join("small.sqlite");
    let r = forja(
        &home,
        &[
            "ingest",
            docs,
            "--collection",
            "small",
            "--store",
            small_store.to_str().unwrap(),
            "--embedding-model",
            minilm,
            "--max-file-size",
            "100",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("files: 1 added, 0 unchanged, 0 updated, 0 removed, 3 failed"),
        "{}",
        r.stdout
    );
    assert_eq!(
        r.stderr
            .matches("over the limit of 100 bytes (the file was not read)")
            .count(),
        2,
        "{}",
        r.stderr
    );

    // A paraphrase that shares few words with the document.
    search_ranks_by_meaning_keywords_and_kind(&home, &common);

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

    // Hits as JSON: every field, the whole chunk.
    let mut args = vec![
        "search",
        "how much time off do staff get each year",
        "--json",
    ];
    args.extend(common);
    let hits: serde_json::Value = serde_json::from_str(&ok(&home, &args)).unwrap();
    let first = &hits[0];
    assert_eq!(first["rank"], 1);
    assert!(
        first["source"].as_str().unwrap().ends_with("vacation.html"),
        "{hits}"
    );
    assert_eq!(first["title"], "Vacation policy");
    assert!(
        first["text"].as_str().unwrap().contains("25 paid days"),
        "{hits}"
    );
    assert!(first["score"].as_f64().unwrap() > 0.0, "{hits}");
    assert!(first["similarity"].as_f64().is_some(), "{hits}");

    // The store's collections, as a table and as JSON; deleting one.
    let listed = ok(&home, &["collections", "--store", store]);
    let row = listed
        .lines()
        .find(|l| l.starts_with("company"))
        .unwrap_or_else(|| panic!("{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[1], "3", "{listed}");
    assert_eq!(cells[3], "all-minilm-l6-v2", "{listed}");
    assert_eq!(cells[4], "384", "{listed}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&home, &["collections", "--store", store, "--json"])).unwrap();
    assert_eq!(json[0]["name"], "company");
    assert_eq!(json[0]["documents"], 3);
    assert_eq!(json[0]["chunks"].to_string(), cells[2], "{json}");
    let out = ok(&home, &["collections", "rm", "company", "--store", store]);
    assert!(out.contains("deleted collection company"), "{out}");
    let listed = ok(&home, &["collections", "--store", store]);
    assert!(listed.starts_with("no collections in"), "{listed}");
    let r = forja(&home, &["collections", "rm", "company", "--store", store]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no collection named \"company\""),
        "{}",
        r.stderr
    );
    let r = forja(
        &home,
        &["collections", "--store", "/nonexistent/rag.sqlite"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no store at /nonexistent/rag.sqlite"),
        "{}",
        r.stderr
    );
}

#[test]
fn ingest_and_search_on_postgres() {
    let Some(url) = pg_test_url() else {
        return;
    };
    let minilm = testdata_dir().join("all-minilm-l6-v2");
    assert!(
        minilm.join("config.json").is_file(),
        "{} is missing: run scripts/fetch-testdata",
        minilm.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let docs = tmp.path().join("docs");
    write_docs(&docs);
    // A collection of its own in the server's database, so that runs never meet.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let collection = format!("cli-{}-{nanos}", std::process::id());
    let (minilm, docs_arg) = (minilm.to_str().unwrap(), docs.to_str().unwrap());
    let common = [
        "--collection",
        collection.as_str(),
        "--store",
        url.as_str(),
        "--embedding-model",
        minilm,
    ];
    let ingest = || {
        let mut args = vec!["ingest", docs_arg];
        args.extend(common);
        forja(&home, &args)
    };
    let r = ingest();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("collection {collection:?} in {url}")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("files: 3 added, 0 unchanged, 0 updated, 0 removed, 1 failed"),
        "{}",
        r.stdout
    );
    let again = ingest();
    assert!(
        again
            .stdout
            .contains("0 added, 3 unchanged, 0 updated, 0 removed"),
        "{}",
        again.stdout
    );
    std::fs::remove_file(docs.join("offices.csv")).unwrap();
    let again = ingest();
    assert!(
        again
            .stdout
            .contains("0 added, 2 unchanged, 0 updated, 1 removed"),
        "{}",
        again.stdout
    );

    search_ranks_by_meaning_keywords_and_kind(&home, &common);
    let mut args = vec!["search", "Lisbon Portugal", "--mode", "bm25"];
    args.extend(common);
    assert_eq!(ok(&home, &args).trim(), "no chunk matches");

    // FORJA_RAG_STORE picks the server as --store does.
    let by_env = forja_with_store(
        &home,
        &[
            "search",
            "inlet air temperature",
            "--collection",
            &collection,
            "--mode",
            "bm25",
        ],
        Some(&url),
    );
    assert_eq!(by_env.code, 0, "{}", by_env.stderr);
    assert!(by_env.stdout.contains("cooling.md"), "{}", by_env.stdout);

    // Unknown collections and unreachable servers are one-line errors.
    let r = forja(
        &home,
        &[
            "search",
            "x",
            "--collection",
            "nope",
            "--store",
            &url,
            "--mode",
            "bm25",
        ],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("no such collection in postgres://"),
        "{}",
        r.stderr
    );
    let r = forja(
        &home,
        &[
            "search",
            "x",
            "--collection",
            "nope",
            "--store",
            "postgres://forja@127.0.0.1:1/postgres",
            "--mode",
            "bm25",
        ],
    );
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot reach a PostgreSQL server at 127.0.0.1:1"),
        "{}",
        r.stderr
    );
}
