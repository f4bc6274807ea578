//! A small deterministic embedding model for the tests: words hashed into a bag of 64
//! buckets, L2-normalized. Texts that share words are close; the store and search are real.

#![allow(dead_code, reason = "each test file uses part of it")]

use std::cell::Cell;

use forja_rag::{Embedder, RagError, Result};

pub const DIM: usize = 64;

pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

#[derive(Debug, Default)]
pub struct BagOfWords {
    /// Fails every call to `embed` after this many successful ones.
    pub fail_after: Option<usize>,
    pub calls: Cell<usize>,
}

impl BagOfWords {
    pub fn failing_after(n: usize) -> Self {
        BagOfWords {
            fail_after: Some(n),
            calls: Cell::new(0),
        }
    }
}

pub fn bucket(word: &str) -> usize {
    // FNV-1a
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % DIM as u64) as usize
}

pub fn bow(text: &str) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    for w in words(text) {
        v[bucket(&w)] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0;
    }
    v
}

impl Embedder for BagOfWords {
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if let Some(n) = self.fail_after
            && self.calls.get() >= n
        {
            return Err(RagError::Embedding(
                "the test model fails on purpose".into(),
            ));
        }
        self.calls.set(self.calls.get() + 1);
        Ok(texts.iter().map(|t| bow(t)).collect())
    }
    fn dimension(&self) -> usize {
        DIM
    }
    fn max_tokens(&self) -> usize {
        128
    }
    fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(words(text).count() + 2)
    }
    fn name(&self) -> String {
        "test-bag-of-words-64".into()
    }
}

/// A store for one test, of either backend, and what it needs to live.
#[derive(Debug)]
pub struct TestStore {
    /// The SQLite file or the PostgreSQL URL.
    pub location: String,
    database: Option<PgDatabase>,
}

impl TestStore {
    /// A SQLite store in `dir`.
    pub fn sqlite(dir: &std::path::Path) -> TestStore {
        TestStore {
            location: dir.join("rag.sqlite").display().to_string(),
            database: None,
        }
    }

    /// A PostgreSQL store in a new, empty database of the test server (dropped at the end), or
    /// `None` where no server is given outside CI.
    pub fn postgres() -> Option<TestStore> {
        let base = pg_url()?;
        let database = PgDatabase::create(&base);
        Some(TestStore {
            location: database.url.clone(),
            database: Some(database),
        })
    }

    pub fn open(&self) -> forja_rag::Store {
        forja_rag::Store::open_location(&self.location).unwrap()
    }

    pub fn is_postgres(&self) -> bool {
        self.database.is_some()
    }
}

pub use forja_testkit::pg_test_url as pg_url;

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let (main, query) = url.split_once('?').map_or((url, ""), |(m, q)| (m, q));
    let scheme_end = main.find("://").unwrap() + 3;
    let base = match main[scheme_end..].find('/') {
        Some(i) => &main[..scheme_end + i],
        None => main,
    };
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{base}/{name}{query}")
}

/// Runs `sql` on the test server's database of `url`.
pub fn pg_exec(url: &str, sql: &str) {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

/// The first column of the first row `sql` returns, as text.
pub fn pg_text(url: &str, sql: &str) -> String {
    use sqlx::Connection;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        let text: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        text
    })
}

/// A database of its own for one test.
#[derive(Debug)]
pub struct PgDatabase {
    admin: String,
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(admin: &str) -> PgDatabase {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!(
            "forja_test_{}_{}_{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        pg_exec(admin, &format!("CREATE DATABASE {name}"));
        PgDatabase {
            admin: admin.to_string(),
            url: with_database(admin, &name),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            pg_exec(
                &self.admin,
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            );
        }
    }
}
