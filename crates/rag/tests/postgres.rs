//! What only the PostgreSQL store has: its keyword ranking is the same BM25 as SQLite's FTS5,
//! its schema and indexes (tsvector + GIN, HNSW per collection), collections too wide for an
//! HNSW index, and errors that say what to do when the server cannot be used. Needs a server:
//! `scripts/pg run cargo test -p forja-rag` (in CI, scripts/test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code fails loudly"
)]

mod common;

use std::fs;
use std::path::Path;

use common::{BagOfWords, PgDatabase, TestStore, pg_exec, pg_text, pg_url, with_database};
use forja_rag::{
    Embedder, Filters, IngestOptions, RagError, SearchMode, SearchQuery, Store, ingest, search,
};

fn corpus(dir: &Path) {
    let files = [
        (
            "garden.md",
            "# Garden\n\nTomatoes need sun and water every day.\n\n## Pests\n\nAphids eat the \
             leaves of roses. Aphids hide under leaves.\n\n## Soil\n\nRoses like rich soil and \
             water in the morning.\n",
        ),
        (
            "cars.md",
            "# Cars\n\nThe engine burns petrol and the gearbox shifts gears.\n\n## Service\n\n\
             Change the engine oil every year; check the water of the radiator.\n",
        ),
        (
            "notes.txt",
            "The meeting moved to Thursday afternoon. Bring the garden budget and the roses.\n",
        ),
        (
            "prices.csv",
            "item,price\nhammer,12\nsaw,30\nwater hose,25\n",
        ),
    ];
    fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
}

fn bm25(store: &Store, text: &str) -> Vec<(String, String, f64)> {
    let q = SearchQuery {
        text: text.into(),
        mode: SearchMode::Bm25,
        k: 20,
        filters: Filters::default(),
    };
    search(store, "docs", &q, None)
        .unwrap()
        .into_iter()
        .map(|h| {
            let name = h.source.file_name().unwrap().to_string_lossy().into_owned();
            (name, h.text, h.score)
        })
        .collect()
}

/// Also with the PostgreSQL collection written by three writers at once (each a connection
/// ingesting the same folder): they take turns per file, and the BM25 statistics they keep
/// together come out as one writer's.
#[test]
fn keyword_ranking_is_the_same_bm25_as_sqlite() {
    let Some(ts) = TestStore::postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("docs");
    corpus(&dir);
    let ingest_into = |store: &Store| {
        let r = ingest(
            store,
            "docs",
            std::slice::from_ref(&dir),
            &BagOfWords::default(),
            &IngestOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(r.added + r.updated + r.unchanged, 4, "{r:?}");
        assert!(r.failed.is_empty(), "{r:?}");
    };
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| ingest_into(&ts.open()));
        }
    });
    let sqlite = TestStore::sqlite(tmp.path()).open();
    ingest_into(&sqlite);
    let pg = ts.open();
    let c = pg.existing_collection("docs").unwrap();
    let (chunks, counted, vectors) = pg.chunk_counts(&c).unwrap();
    assert_eq!((chunks, counted, vectors), (chunks, chunks, chunks));
    assert_eq!(
        chunks,
        sqlite
            .chunk_counts(&sqlite.existing_collection("docs").unwrap())
            .unwrap()
            .0
    );
    for text in [
        "water",
        "aphids roses leaves",
        "engine oil",
        "the garden budget",
        "hammer price",
    ] {
        let (p, s) = (bm25(&pg, text), bm25(&sqlite, text));
        assert!(!p.is_empty(), "{text}");
        assert_eq!(p.len(), s.len(), "{text}: {p:#?} {s:#?}");
        for (a, b) in p.iter().zip(&s) {
            assert_eq!((&a.0, &a.1), (&b.0, &b.1), "{text}: {p:#?} {s:#?}");
            assert!(
                (a.2 - b.2).abs() <= 1e-9 * a.2.abs().max(b.2.abs()),
                "{text}: BM25 {} on PostgreSQL, {} on SQLite",
                a.2,
                b.2
            );
        }
    }
}

#[test]
fn schema_indexes_and_wide_collections() {
    let Some(ts) = TestStore::postgres() else {
        return;
    };
    let store = ts.open();
    assert_eq!(store.schema_version().unwrap(), 2);
    // Opening again migrates nothing.
    drop(store);
    let store = ts.open();
    assert_eq!(store.schema_version().unwrap(), 2);
    let narrow = store.ensure_collection("narrow", "m", 8).unwrap();
    // pgvector indexes at most 2000 dimensions with HNSW: wider collections scan exactly.
    let wide = store.ensure_collection("wide", "m", 2100).unwrap();
    pg_exec(
        &ts.location,
        &format!(
            "DO $$ BEGIN \
             IF NOT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'forja_rag' \
                 AND tablename = 'chunk_vec_{}' AND indexdef LIKE '%USING hnsw (embedding \
                 vector_cosine_ops)%') THEN RAISE EXCEPTION 'no HNSW index'; END IF; \
             IF EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = 'chunk_vec_{}' \
                 AND indexdef LIKE '%hnsw%') THEN RAISE EXCEPTION 'an HNSW index on 2100'; END IF; \
             IF NOT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = 'forja_rag' \
                 AND tablename = 'chunks' AND indexdef LIKE '%USING gin (search_text)%') \
                 THEN RAISE EXCEPTION 'no GIN index'; END IF; \
             END $$",
            narrow.id, wide.id
        ),
    );
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("wide.md");
    fs::write(&path, "# Wide\n\nA collection of very long vectors.\n").unwrap();
    let doc = forja_rag::parse_file(&path).unwrap();
    let chunks = forja_rag::chunk_document(&doc, forja_rag::ChunkOptions::for_model(64), &|t| {
        Ok(t.split_whitespace().count() + 2)
    })
    .unwrap();
    let vectors: Vec<Vec<f32>> = (0..chunks.len())
        .map(|i| (0..2100).map(|j| ((i + j) % 7) as f32).collect())
        .collect();
    store
        .replace_document(&wide, "wide.md", &doc, None, &chunks, &vectors)
        .unwrap();
    assert_eq!(
        store.chunk_counts(&wide).unwrap(),
        (chunks.len(), chunks.len(), chunks.len())
    );
    // The stored document's modification date is a timestamp too.
    store
        .replace_document(
            &narrow,
            "n.md",
            &doc,
            Some(86_400),
            &chunks,
            &vec![vec![1.0; 8]; chunks.len()],
        )
        .unwrap();
    pg_exec(
        &ts.location,
        "DO $$ BEGIN IF (SELECT modified FROM forja_rag.documents WHERE path = 'n.md') \
         <> '1970-01-02 00:00:00+00' THEN RAISE EXCEPTION 'wrong date'; END IF; END $$",
    );
}

fn connect_error(url: &str) -> String {
    match Store::connect(url) {
        Ok(_) => panic!("{url} connected"),
        Err(e @ RagError::Server { .. }) => e.to_string(),
        Err(e) => panic!("{url}: not a server error: {e:?}"),
    }
}

#[test]
fn unusable_servers_are_clear_errors() {
    let Some(base) = pg_url() else {
        return;
    };
    // Nothing listens on port 1.
    let e = connect_error("postgres://forja@127.0.0.1:1/postgres");
    assert!(
        e.contains("cannot reach a PostgreSQL server at 127.0.0.1:1"),
        "{e}"
    );
    // The password never shows in messages.
    let e = connect_error("postgres://someone:s3cret@127.0.0.1:1/db");
    assert!(
        e.contains("postgres://someone:***@127.0.0.1:1/db") && !e.contains("s3cret"),
        "{e}"
    );
    let e = connect_error("postgres://someone@127.0.0.1:1/db?password=s3cret&sslmode=disable");
    assert!(
        e.contains("db?password=***&sslmode=disable") && !e.contains("s3cret"),
        "{e}"
    );
    // No server socket in a folder.
    let e = connect_error("postgres:///db?host=/nonexistent&user=forja");
    assert!(e.contains("the Unix socket in /nonexistent"), "{e}");

    // The server's Unix socket, as a URL with `host=` a folder.
    let dir = pg_text(&base, "SHOW unix_socket_directories");
    let port = pg_text(&base, "SHOW port");
    let db = PgDatabase::create(&base);
    let socket = format!("postgres:///{}?host={dir}&port={port}&user=forja", db.name);
    let store = Store::connect(&socket).unwrap();
    assert_eq!(store.location(), socket);
    store.ensure_collection("docs", "m", 4).unwrap();
    drop(store);
    drop(db);
    let unknown_user = base.replacen("://forja@", "://nobody_here@", 1);
    let e = connect_error(&unknown_user);
    assert!(e.contains("refused user \"nobody_here\""), "{e}");
    let e = connect_error(&with_database(&base, "no_such_database"));
    assert!(
        e.contains("no_such_database") && e.contains("createdb"),
        "{e}"
    );
    let e = Store::open_location("postgres://forja@127.0.0.1:notaport/x").unwrap_err();
    assert!(e.to_string().contains("not a PostgreSQL URL"), "{e}");

    // A database without pgvector, and a user who may not enable it.
    let db = PgDatabase::create(&base);
    pg_exec(
        &db.url,
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'forja_plain') \
         THEN CREATE ROLE forja_plain LOGIN; END IF; END $$; \
         GRANT ALL ON SCHEMA public TO forja_plain",
    );
    let plain = db.url.replacen("://forja@", "://forja_plain@", 1);
    let e = connect_error(&plain);
    assert!(
        e.contains("pgvector is not enabled in database") && e.contains("CREATE EXTENSION vector"),
        "{e}"
    );
    // Once a superuser has enabled it, that user can use the store.
    pg_exec(
        &db.url,
        &format!(
            "CREATE EXTENSION vector; GRANT CREATE ON DATABASE {} TO forja_plain",
            db.name
        ),
    );
    let store = Store::connect(&plain).unwrap();
    let c = store.ensure_collection("docs", "m", 4).unwrap();
    assert_eq!(store.collections().unwrap()[0].collection, c);
}

/// HNSW keeps `ef_search` candidates (40 by default): searches for more results, and filtered
/// searches, must still get every result there is.
#[test]
fn vector_search_returns_all_it_is_asked_for() {
    let Some(ts) = TestStore::postgres() else {
        return;
    };
    let store = ts.open();
    let e = BagOfWords::default();
    let c = store
        .ensure_collection("docs", &e.name(), e.dimension())
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("many.md");
    fs::write(&path, "# Many\n\nplaceholder\n").unwrap();
    let doc = forja_rag::parse_file(&path).unwrap();
    // 2000 chunks, a third of them code.
    let chunks: Vec<forja_rag::Chunk> = (0..2000)
        .map(|i| forja_rag::Chunk {
            ordinal: i,
            text: format!("item {i} word{} word{}", i % 97, i % 13),
            context: "Many".into(),
            section: vec!["Many".into()],
            page: None,
            kind: if i % 3 == 0 {
                forja_rag::ElementKind::Code
            } else {
                forja_rag::ElementKind::Paragraph
            },
            span: None,
            tokens: 6,
        })
        .collect();
    let vectors: Vec<Vec<f32>> = chunks.iter().map(|c| common::bow(&c.text)).collect();
    store
        .replace_document(&c, "many.md", &doc, None, &chunks, &vectors)
        .unwrap();
    drop(store);
    // A new session, as a new `forja search` would have.
    let store = ts.open();
    let q = |k: usize, filters: Filters| SearchQuery {
        text: "word5 word7".into(),
        mode: SearchMode::Vector,
        k,
        filters,
    };
    let hits = search(&store, "docs", &q(300, Filters::default()), Some(&e)).unwrap();
    assert_eq!(hits.len(), 300);
    // Best first, up to float rounding (the index orders by single-precision distances).
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score - 1e-6));
    let code = Filters {
        kind: Some(forja_rag::ElementKind::Code),
        ..Filters::default()
    };
    let hits = search(&store, "docs", &q(1000, code), Some(&e)).unwrap();
    assert_eq!(hits.len(), 667);
    assert!(hits.iter().all(|h| h.kind == forja_rag::ElementKind::Code));
}
