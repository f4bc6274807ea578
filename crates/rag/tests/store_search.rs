//! Both stores (SQLite, and PostgreSQL when `FORJA_TEST_PG_URL` names a server: `scripts/pg
//! run`) end to end with a small deterministic embedder: idempotent re-ingest, updates,
//! deletions, consistency after a failing file, collections bound to their model, and BM25 /
//! vector / hybrid search with filters. Each behaviour is one function run on both backends.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{BagOfWords, TestStore};
use forja_rag::{
    ElementKind, Filters, Generator, IngestOptions, IngestReport, PromptBudget, RagError, Reranker,
    SearchMode, SearchQuery, Store, answer, ingest, rerank_depth, rrf_fuse, search, search_with,
};

/// Runs each behaviour once per backend, as `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $name() {
                    let tmp = tempfile::tempdir().unwrap();
                    super::$name(&super::TestStore::sqlite(tmp.path()), tmp.path());
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    let Some(store) = super::TestStore::postgres() else {
                        return;
                    };
                    let tmp = tempfile::tempdir().unwrap();
                    super::$name(&store, tmp.path());
                }
            )*
        }
    };
}

on_both_stores!(
    re_ingest_is_idempotent_and_changes_propagate,
    a_failing_file_leaves_no_trace_and_a_re_run_completes,
    a_collection_keeps_its_embedding_model,
    include_and_exclude_globs_select_files,
    search_modes_and_filters,
    a_failing_write_rolls_the_whole_file_back,
    answers_cite_what_fits_and_refuse_without_relevant_sources,
    files_over_the_size_limit_fail_alone_and_unread,
    date_filters_use_the_documents_own_date_else_the_files,
    a_reranker_reorders_the_first_stages_candidates,
);

fn files_over_the_size_limit_fail_alone_and_unread(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let big = fs::canonicalize(write(&dir, "big.md", &"# Big\n\nwords ".repeat(400))).unwrap();
    let store = ts.open();
    let options = IngestOptions {
        max_file_bytes: 1024,
        ..Default::default()
    };
    let mut failed = Vec::new();
    let r = ingest(
        &store,
        "docs",
        std::slice::from_ref(&dir),
        &BagOfWords::default(),
        &options,
        &mut |ev| {
            if let forja_rag::IngestEvent::Failed { path, error } = ev {
                failed.push((path.to_path_buf(), error.to_string()));
            }
        },
    )
    .unwrap();
    // The corpus's small files are in; the big one failed with its size and the limit.
    assert_eq!(r.added, 4, "{:?}", r.failed);
    let (_, why) = failed.iter().find(|(p, _)| *p == big).unwrap();
    assert!(
        why.contains("over the limit of 1024 bytes") && why.contains("not read"),
        "{why}"
    );
    let c = store.existing_collection("docs").unwrap();
    assert!(
        store
            .document(&c, &big.display().to_string())
            .unwrap()
            .is_none()
    );
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(&p, text).unwrap();
    p
}

fn run(store: &Store, dir: &Path, e: &BagOfWords) -> IngestReport {
    ingest(
        store,
        "docs",
        &[dir.to_path_buf()],
        e,
        &IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap()
}

fn corpus(dir: &Path) {
    write(
        dir,
        "garden.md",
        "# Garden\n\nTomatoes need sun and water every day.\n\n## Pests\n\nAphids eat the leaves of roses.\n",
    );
    write(
        dir,
        "cars.html",
        "<h1>Cars</h1><p>The engine burns petrol and the gearbox shifts gears.</p>",
    );
    write(dir, "sub/prices.csv", "item,price\nhammer,12\nsaw,30\n");
    write(
        dir,
        "notes.txt",
        "The meeting moved to Thursday afternoon.\n",
    );
    write(dir, "scan.pdf", "%PDF-1.4 a broken PDF");
    write(dir, ".hidden/secret.md", "# hidden\n\nnever ingested\n");
    write(dir, "image.png", "not a document");
}

fn query(text: &str, mode: SearchMode, k: usize) -> SearchQuery {
    SearchQuery {
        text: text.into(),
        mode,
        k,
        filters: Filters::default(),
    }
}

fn consistent(store: &Store) -> usize {
    let c = store.existing_collection("docs").unwrap();
    let (chunks, fts, vecs) = store.chunk_counts(&c).unwrap();
    assert_eq!(
        (chunks, fts),
        (vecs, vecs),
        "indexes out of step with chunks"
    );
    chunks
}

fn re_ingest_is_idempotent_and_changes_propagate(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    assert_eq!(store.schema_version().unwrap(), 2);
    let e = BagOfWords::default();

    let r = run(&store, &dir, &e);
    assert_eq!((r.added, r.unchanged, r.updated, r.removed), (4, 0, 0, 0));
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert!(
        r.failed[0]
            .1
            .contains("scan.pdf: not a readable PDF (corrupt or truncated)"),
        "{:?}",
        r.failed
    );
    let chunks = consistent(&store);
    assert_eq!(chunks, r.chunks);

    // Nothing changed: nothing is embedded again.
    let calls = e.calls.get();
    let r = run(&store, &dir, &e);
    assert_eq!(
        (r.added, r.unchanged, r.updated, r.removed, r.chunks),
        (0, 4, 0, 0, 0)
    );
    assert_eq!(e.calls.get(), calls);
    assert_eq!(consistent(&store), chunks);

    // A changed file replaces its chunks; a deleted one is removed.
    write(
        &dir,
        "notes.txt",
        "The meeting moved to Friday.\n\nBring the budget.\n",
    );
    fs::remove_file(dir.join("cars.html")).unwrap();
    let r = run(&store, &dir, &e);
    assert_eq!((r.added, r.unchanged, r.updated, r.removed), (0, 2, 1, 1));
    let c = store.existing_collection("docs").unwrap();
    let paths = store.document_paths(&c).unwrap();
    assert_eq!(paths.len(), 3);
    assert!(!paths.iter().any(|p| p.ends_with("cars.html")));
    consistent(&store);
    let hits = search(
        &store,
        "docs",
        &query("Thursday", SearchMode::Bm25, 5),
        None,
    )
    .unwrap();
    assert!(
        hits.is_empty(),
        "the old text of notes.txt is still indexed"
    );
    let hits = search(&store, "docs", &query("Friday", SearchMode::Bm25, 5), None).unwrap();
    assert!(hits[0].source.ends_with("notes.txt"));

    // Reopening keeps everything and migrates nothing.
    drop(store);
    let store = ts.open();
    assert_eq!(store.schema_version().unwrap(), 2);
    assert_eq!(store.collections().unwrap()[0].documents, 3);
}

fn a_failing_file_leaves_no_trace_and_a_re_run_completes(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    // Files go in path order: cars.html, garden.md, notes.txt, sub/prices.csv; one embedding
    // call each. The model breaks down at the third file.
    let r = run(&store, &dir, &BagOfWords::failing_after(2));
    assert_eq!(r.added, 2);
    let failed: Vec<String> = r.failed.iter().map(|f| f.1.clone()).collect();
    assert_eq!(failed.len(), 3, "{failed:?}"); // notes.txt, prices.csv, scan.pdf
    let c = store.existing_collection("docs").unwrap();
    let paths = store.document_paths(&c).unwrap();
    assert_eq!(paths.len(), 2);
    assert!(paths[0].ends_with("cars.html") && paths[1].ends_with("garden.md"));
    consistent(&store);

    let r = run(&store, &dir, &BagOfWords::default());
    assert_eq!((r.added, r.unchanged), (2, 2));
    assert_eq!(store.document_paths(&c).unwrap().len(), 4);
    consistent(&store);
}

fn a_collection_keeps_its_embedding_model(ts: &TestStore, tmp: &Path) {
    struct Other(BagOfWords);
    impl forja_rag::Embedder for Other {
        fn embed(&self, t: &[&str]) -> forja_rag::Result<Vec<Vec<f32>>> {
            self.0.embed(t)
        }
        fn dimension(&self) -> usize {
            self.0.dimension()
        }
        fn max_tokens(&self) -> usize {
            self.0.max_tokens()
        }
        fn count_tokens(&self, t: &str) -> forja_rag::Result<usize> {
            self.0.count_tokens(t)
        }
        fn name(&self) -> String {
            "another-model".into()
        }
    }
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    run(&store, &dir, &BagOfWords::default());
    let other = Other(BagOfWords::default());
    let err = ingest(
        &store,
        "docs",
        std::slice::from_ref(&dir),
        &other,
        &IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(err, RagError::Collection { .. }), "{err}");
    let err = search(
        &store,
        "docs",
        &query("x", SearchMode::Vector, 3),
        Some(&other),
    )
    .unwrap_err();
    assert!(err.to_string().contains("test-bag-of-words-64"), "{err}");
    let err = search(&store, "nope", &query("x", SearchMode::Bm25, 3), None).unwrap_err();
    assert!(err.to_string().contains("no such collection"), "{err}");
    assert!(err.to_string().contains(store.location()), "{err}");
    // The same model name with vectors of another length.
    let err = store
        .ensure_collection("docs", "test-bag-of-words-64", 32)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("(64 dimensions), not test-bag-of-words-64 (32)"),
        "{err}"
    );
    // A new collection of another dimension lives beside the first.
    let small = store.ensure_collection("small", "tiny", 3).unwrap();
    assert_eq!(small.dimension, 3);
    let names: Vec<String> = store
        .collections()
        .unwrap()
        .into_iter()
        .map(|c| c.collection.name)
        .collect();
    assert_eq!(names, ["docs", "small"]);
    assert!(store.delete_collection("small").unwrap());
    assert!(!store.delete_collection("small").unwrap());
    assert_eq!(store.collections().unwrap().len(), 1);
}

/// A write that fails half-way through a file (a NaN in its last vector, which pgvector
/// refuses; sqlite-vec stores it, then the file is simply stored) leaves the store as it was.
fn a_failing_write_rolls_the_whole_file_back(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    let e = BagOfWords::default();
    run(&store, &dir, &e);
    let c = store.existing_collection("docs").unwrap();
    let before = consistent(&store);
    let path = dir.join("garden.md");
    let doc = forja_rag::parse_file(&path).unwrap();
    let count = |t: &str| forja_rag::Embedder::count_tokens(&e, t);
    let chunks =
        forja_rag::chunk_document(&doc, forja_rag::ChunkOptions::for_model(128), &count).unwrap();
    assert!(chunks.len() > 1);
    let mut vectors: Vec<Vec<f32>> = chunks.iter().map(|c| common::bow(&c.text)).collect();
    vectors.last_mut().unwrap()[0] = f32::NAN;
    let key = std::fs::canonicalize(&path).unwrap().display().to_string();
    let stored = store.document(&c, &key).unwrap().unwrap();
    let mut changed = doc.clone();
    changed.content_hash = "changed".into();
    let result = store.replace_document(&c, &key, &changed, None, &chunks, &vectors);
    if ts.is_postgres() {
        let err = result.unwrap_err();
        assert!(err.to_string().contains("NaN"), "{err}");
        assert_eq!(store.document(&c, &key).unwrap().unwrap(), stored);
        assert_eq!(consistent(&store), before);
        let hits = search(&store, "docs", &query("aphids", SearchMode::Bm25, 5), None).unwrap();
        assert!(hits[0].source.ends_with("garden.md"));
    } else {
        result.unwrap();
        consistent(&store);
    }
    // Removing is one transaction too: the document, its chunks and vectors go together.
    assert!(store.remove_document(&c, &key).unwrap());
    assert!(!store.remove_document(&c, &key).unwrap());
    assert!(store.document(&c, &key).unwrap().is_none());
    assert!(consistent(&store) < before);
}

fn include_and_exclude_globs_select_files(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    let options = IngestOptions {
        include: vec!["*.md".into(), "*.csv".into()],
        exclude: vec!["sub/**".into()],
        ..Default::default()
    };
    let r = ingest(
        &store,
        "docs",
        &[dir],
        &BagOfWords::default(),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((r.added, r.failed.len()), (1, 0));
    let err = ingest(
        &store,
        "docs",
        &[tmp.join("missing")],
        &BagOfWords::default(),
        &IngestOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(err.failed.len(), 1);
}

#[test]
fn rrf_rewards_agreement_between_rankings() {
    let fused = rrf_fuse(&[&[1, 2, 3], &[3, 1, 4]]);
    let ids: Vec<i64> = fused.iter().map(|f| f.0).collect();
    // 1: 1/61 + 1/62, 3: 1/63 + 1/61, 2: 1/62, 4: 1/63.
    assert_eq!(ids, [1, 3, 2, 4]);
    assert!((fused[0].1 - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-12);
    // Equal scores: the smaller id first.
    let tie: Vec<i64> = rrf_fuse(&[&[7], &[5]]).iter().map(|f| f.0).collect();
    assert_eq!(tie, [5, 7]);
}

fn search_modes_and_filters(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    let e = BagOfWords::default();
    run(&store, &dir, &e);

    for mode in [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid] {
        let hits = search(
            &store,
            "docs",
            &query("aphids roses leaves", mode, 3),
            Some(&e),
        )
        .unwrap();
        assert!(hits[0].source.ends_with("garden.md"), "{mode:?}: {hits:?}");
        assert_eq!(hits[0].section, ["Garden", "Pests"]);
        assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));
        if mode != SearchMode::Bm25 {
            assert!(hits[0].similarity.unwrap() > 0.5);
        }
    }
    let hybrid = search(
        &store,
        "docs",
        &query("hammer price", SearchMode::Hybrid, 3),
        Some(&e),
    )
    .unwrap();
    assert!(hybrid[0].source.ends_with("prices.csv"));
    assert_eq!(hybrid[0].kind, ElementKind::Table);
    assert_eq!(
        (hybrid[0].bm25_rank, hybrid[0].vector_rank),
        (Some(1), Some(1))
    );

    let filtered = |filters: Filters| {
        let q = SearchQuery {
            filters,
            ..query("the", SearchMode::Hybrid, 10)
        };
        search(&store, "docs", &q, Some(&e)).unwrap()
    };
    let tables = filtered(Filters {
        kind: Some(ElementKind::Table),
        ..Filters::default()
    });
    assert!(!tables.is_empty() && tables.iter().all(|h| h.kind == ElementKind::Table));
    let garden = filtered(Filters {
        source: Some("GARDEN".into()),
        ..Filters::default()
    });
    assert!(!garden.is_empty() && garden.iter().all(|h| h.source.ends_with("garden.md")));
    let pests = filtered(Filters {
        section: Some("pests".into()),
        ..Filters::default()
    });
    assert_eq!(pests.len(), 1);
    assert_eq!(pests[0].section, ["Garden", "Pests"]);
    // FTS5 syntax in a query is taken as words: "AND" is the word "and".
    let odd = search(
        &store,
        "docs",
        &query("\"AND (NEAR* -", SearchMode::Bm25, 3),
        None,
    )
    .unwrap();
    assert!(
        odd.iter().all(|h| h.text.to_lowercase().contains(" and ")),
        "{odd:?}"
    );
    assert!(!odd.is_empty());
}

/// Answers with the numbers of the sources it was given; counts words as tokens.
struct Echo {
    context: usize,
    calls: usize,
}

impl PromptBudget for Echo {
    fn context_tokens(&self) -> usize {
        self.context
    }
    fn prompt_tokens(&self, system: &str, user: &str) -> forja_rag::Result<usize> {
        Ok(common::words(system).count() + common::words(user).count())
    }
}

impl Generator for Echo {
    fn generate(
        &mut self,
        _system: &str,
        user: &str,
        _max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> forja_rag::Result<String> {
        self.calls += 1;
        let cited: Vec<&str> = user.lines().filter(|l| l.starts_with('[')).collect();
        let text = format!("from {} sources", cited.len());
        on_text(&text);
        Ok(text)
    }
}

fn answers_cite_what_fits_and_refuse_without_relevant_sources(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    let e = BagOfWords::default();
    run(&store, &dir, &e);
    let hits = search(
        &store,
        "docs",
        &query("what do aphids eat", SearchMode::Hybrid, 4),
        Some(&e),
    )
    .unwrap();
    let mut g = Echo {
        context: 10_000,
        calls: 0,
    };
    let options = forja_rag::AnswerOptions {
        max_answer_tokens: 100,
        min_similarity: 0.2,
    };
    let a = answer(
        &mut g,
        "what do aphids eat",
        hits.clone(),
        options,
        &mut |_| {},
    )
    .unwrap()
    .unwrap();
    assert!(a.sources[0].source.ends_with("garden.md"));
    assert_eq!(a.text, format!("from {} sources", a.sources.len()));
    // A context with room for one source only.
    let mut small = Echo {
        context: 100 + 60,
        calls: 0,
    };
    let a = answer(
        &mut small,
        "what do aphids eat",
        hits.clone(),
        options,
        &mut |_| {},
    )
    .unwrap()
    .unwrap();
    assert_eq!(a.sources.len(), 1);
    // Nothing relevant: the model is not called.
    let unrelated = search(
        &store,
        "docs",
        &query("quantum chromodynamics", SearchMode::Vector, 4),
        Some(&e),
    )
    .unwrap();
    let none = answer(
        &mut g,
        "quantum chromodynamics",
        unrelated,
        options,
        &mut |_| {},
    )
    .unwrap();
    assert!(none.is_none());
    assert_eq!(g.calls, 1);
}

/// Seconds since the epoch of a day, through the same reader users' dates go through.
fn day(date: &str) -> i64 {
    forja_rag::date::parse(date).unwrap()
}

fn date_filters_use_the_documents_own_date_else_the_files(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("dated");
    write(
        &dir,
        "report.md",
        "---\ntitle: Second quarter report\ndate: 2023-06-30\n---\n\nRevenue grew in the quarter.\n",
    );
    write(
        &dir,
        "page.html",
        "<html><head><meta name=\"date\" content=\"2024-02-10T09:00:00Z\"></head>\
         <body><p>Revenue fell in the winter.</p></body></html>",
    );
    let notes = write(&dir, "notes.txt", "Revenue notes from the meeting.\n");
    let set_mtime = |date: &str| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(day(date) as u64);
        fs::File::options()
            .write(true)
            .open(&notes)
            .unwrap()
            .set_modified(t)
            .unwrap();
    };
    set_mtime("2025-01-15");
    let store = ts.open();
    let e = BagOfWords::default();
    run(&store, &dir, &e);
    let found = |after: Option<&str>, before: Option<&str>| {
        let (after, before) = forja_rag::date::range(after, before).unwrap();
        let mut names: Vec<String> = [SearchMode::Bm25, SearchMode::Vector, SearchMode::Hybrid]
            .into_iter()
            .flat_map(|mode| {
                let q = SearchQuery {
                    filters: Filters {
                        after,
                        before,
                        ..Filters::default()
                    },
                    ..query("revenue", mode, 10)
                };
                search(&store, "docs", &q, Some(&e)).unwrap()
            })
            .map(|h| h.source.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(found(None, None), ["notes.txt", "page.html", "report.md"]);
    // The front matter's date, the meta tag's, the file's modification time.
    assert_eq!(found(None, Some("2023-06-30")), ["report.md"]);
    assert_eq!(found(Some("2023-07-01"), Some("2024-12-31")), ["page.html"]);
    assert_eq!(found(Some("2024-02-10T09:00:01Z"), None), ["notes.txt"]);
    assert_eq!(found(Some("2026-01-01"), None), Vec::<String>::new());
    let hits = search(
        &store,
        "docs",
        &query("revenue", SearchMode::Bm25, 10),
        None,
    )
    .unwrap();
    let date_of = |name: &str| {
        hits.iter()
            .find(|h| h.source.ends_with(name))
            .and_then(|h| h.date)
    };
    assert_eq!(date_of("report.md"), Some(day("2023-06-30")));
    assert_eq!(date_of("page.html"), Some(day("2024-02-10T09:00:00Z")));
    assert_eq!(date_of("notes.txt"), Some(day("2025-01-15")));
    // A file touched without changing is not re-read, and its date follows the new time.
    set_mtime("2022-03-01");
    let r = run(&store, &dir, &e);
    assert_eq!((r.unchanged, r.updated), (3, 0));
    assert_eq!(found(None, Some("2022-12-31")), ["notes.txt"]);
}

#[test]
fn a_store_of_the_first_schema_gains_document_dates_on_open() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    let notes = write(&dir, "notes.txt", "Revenue notes from the meeting.\n");
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(day("2021-05-05") as u64);
    fs::File::options()
        .write(true)
        .open(&notes)
        .unwrap()
        .set_modified(t)
        .unwrap();
    let path = tmp.path().join("old.sqlite");
    let e = BagOfWords::default();
    run(&Store::open(&path).unwrap(), &dir, &e);
    // Back to schema 1, as an earlier forja left it.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "ALTER TABLE documents DROP COLUMN date; DELETE FROM schema_version WHERE version = 2;",
    )
    .unwrap();
    drop(conn);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 2);
    // Documents stored before are dated by their file's time.
    let q = |after: &str| SearchQuery {
        filters: Filters {
            after: forja_rag::date::parse(after),
            ..Filters::default()
        },
        ..query("revenue", SearchMode::Bm25, 5)
    };
    let hits = search(&store, "docs", &q("2021-05-05"), None).unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].date, Some(day("2021-05-05")));
    assert!(
        search(&store, "docs", &q("2021-05-06"), None)
            .unwrap()
            .is_empty()
    );
}

/// Scores a passage by how often it says `word`; `extra` more scores than passages when set.
struct WordCount {
    word: &'static str,
    extra: usize,
    seen: std::cell::Cell<usize>,
}

impl Reranker for WordCount {
    fn score(&self, _query: &str, passages: &[&str]) -> forja_rag::Result<Vec<f32>> {
        self.seen.set(passages.len());
        let mut s: Vec<f32> = passages
            .iter()
            .map(|p| p.to_lowercase().matches(self.word).count() as f32)
            .collect();
        s.extend(std::iter::repeat_n(0.0, self.extra));
        Ok(s)
    }
    fn name(&self) -> String {
        "word-count".into()
    }
}

fn a_reranker_reorders_the_first_stages_candidates(ts: &TestStore, tmp: &Path) {
    let dir = tmp.join("docs");
    corpus(&dir);
    let store = ts.open();
    let e = BagOfWords::default();
    run(&store, &dir, &e);
    let q = query("the", SearchMode::Hybrid, 1);
    let first = search(&store, "docs", &q, Some(&e)).unwrap();
    assert!(first[0].rerank_score.is_none());
    let aphids = WordCount {
        word: "aphids",
        extra: 0,
        seen: Default::default(),
    };
    let hits = search_with(&store, "docs", &q, Some(&e), Some(&aphids)).unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].text.contains("Aphids"), "{hits:?}");
    assert_eq!(hits[0].rerank_score, Some(1.0));
    // It read the first stage's best candidates (all of this small collection), not just k.
    let all = search(
        &store,
        "docs",
        &query("the", SearchMode::Hybrid, 100),
        Some(&e),
    )
    .unwrap();
    assert_eq!(aphids.seen.get(), all.len().min(rerank_depth(1)));
    assert!(aphids.seen.get() > 1);
    // Without a reranker, search_with is search.
    assert_eq!(
        search_with(&store, "docs", &q, Some(&e), None).unwrap(),
        first
    );
    // A reranker that answers for the wrong number of passages is an error, not a guess.
    let broken = WordCount {
        word: "x",
        extra: 1,
        seen: Default::default(),
    };
    let err = search_with(&store, "docs", &q, Some(&e), Some(&broken)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("reranking: the reranker word-count"),
        "{err}"
    );
}

#[test]
fn rerank_depth_reads_four_times_k_within_bounds() {
    assert_eq!(rerank_depth(1), 20);
    assert_eq!(rerank_depth(10), 40);
    assert_eq!(rerank_depth(30), 100);
    assert_eq!(rerank_depth(100), 100);
}
