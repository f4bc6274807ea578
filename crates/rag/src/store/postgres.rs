//! The PostgreSQL store: the same collections, documents and chunks as the SQLite file, in the
//! schema `forja_rag` of a PostgreSQL database with the pgvector extension.
//!
//! - Keywords: each chunk row holds a `tsvector` of its text (English stemming, like FTS5's
//!   porter tokenizer, and no stop words, like FTS5) under a GIN index. The ranking is Okapi
//!   BM25 with FTS5's constants (k1 = 1.2, b = 0.75, idf = ln((N − n + 0.5) / (n + 0.5)), at
//!   least 1e-6): term frequencies and chunk lengths come from the tsvectors, document
//!   frequencies from the GIN index, N and the mean length from counters kept per collection in
//!   the same transactions as the chunks. PostgreSQL's own `ts_rank_cd` (cover density) is not
//!   used: it is not BM25 and would rank differently from the SQLite store.
//! - Vectors: one table per collection with a `vector(dim)` column and an HNSW index with
//!   cosine distance (no index above pgvector's 2000 dimensions: exact scans). Searches raise
//!   `hnsw.ef_search` to the number of results wanted and, with filters, use pgvector's
//!   iterative index scans (0.8+) so that filtered results are not cut short.
//!
//! The crate's API is synchronous: the client (sqlx) runs on a private current-thread tokio
//! runtime over one connection (from async code, call the store through `spawn_blocking`: a
//! runtime cannot block inside another). TLS is not built in: connect over a Unix socket,
//! localhost or a trusted network (`sslmode=disable` or `prefer`).

use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use pgvector::Vector;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgRow};
use sqlx::{AssertSqlSafe, Connection, Row};

use super::{Backend, Collection, CollectionStats, StoredDocument};
use crate::chunk::Chunk;
use crate::document::{Document, ElementKind};
use crate::error::{RagError, Result};
use crate::retrieve::{Filters, Hit};

/// How long to wait for the server to answer a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// pgvector's largest `vector` for an HNSW index.
const HNSW_MAX_DIMENSIONS: usize = 2000;

/// pgvector's largest `vector`.
const VECTOR_MAX_DIMENSIONS: usize = 16000;

/// The text search configuration of the keyword index.
const TS_CONFIG: &str = "forja_rag.english";

/// Key of the advisory lock held while migrating (two forja processes starting at once).
const MIGRATION_LOCK: i64 = 0x666f_726a_6172_6167; // "forjarag"

/// Schema changes in order; entry `i` brings the schema from version `i` to `i + 1`. They run in
/// the schema `forja_rag`, created before them.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TEXT SEARCH DICTIONARY forja_rag.english_stem (TEMPLATE = snowball, language = english);
CREATE TEXT SEARCH CONFIGURATION forja_rag.english (COPY = pg_catalog.english);
ALTER TEXT SEARCH CONFIGURATION forja_rag.english
    ALTER MAPPING REPLACE english_stem WITH forja_rag.english_stem;
CREATE TABLE forja_rag.collections (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    embedding_model TEXT NOT NULL,
    dimension INTEGER NOT NULL CHECK (dimension > 0),
    -- BM25 statistics: chunks, and their indexed words, kept with every write.
    chunk_count BIGINT NOT NULL DEFAULT 0,
    term_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE forja_rag.documents (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    collection_id BIGINT NOT NULL REFERENCES forja_rag.collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    mtime BIGINT,
    modified TIMESTAMPTZ GENERATED ALWAYS AS (to_timestamp(mtime)) STORED,
    ingested_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (collection_id, path)
);
CREATE TABLE forja_rag.chunks (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id BIGINT NOT NULL REFERENCES forja_rag.documents(id) ON DELETE CASCADE,
    collection_id BIGINT NOT NULL REFERENCES forja_rag.collections(id) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT NOT NULL,
    section TEXT[] NOT NULL,
    page INTEGER,
    kind TEXT NOT NULL,
    span_start BIGINT,
    span_end BIGINT,
    tokens INTEGER NOT NULL,
    search_text TSVECTOR NOT NULL,
    terms INTEGER NOT NULL
);
CREATE INDEX chunks_by_document ON forja_rag.chunks (document_id);
CREATE INDEX chunks_by_collection ON forja_rag.chunks (collection_id);
CREATE INDEX chunks_search_text ON forja_rag.chunks USING gin (search_text);
",
    r"
-- The date the document gives itself (seconds since the epoch), from its metadata; searches
-- filter on it, else on mtime.
ALTER TABLE forja_rag.documents ADD COLUMN date BIGINT;
",
];

/// An open PostgreSQL store.
pub struct PgStore {
    rt: tokio::runtime::Runtime,
    conn: Mutex<PgConnection>,
    location: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// `url` with the password (in the user part or a `password=` parameter) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        _ => url.to_string(),
    };
    if let Some(q) = out.find('?') {
        let params: Vec<String> = out[q + 1..]
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_string(),
            })
            .collect();
        out = format!("{}?{}", &out[..q], params.join("&"));
    }
    out
}

impl PgStore {
    /// Connects to `url`, enables pgvector if needed and brings the schema up to date.
    pub fn connect(url: &str) -> Result<PgStore> {
        let location = redact_url(url);
        let server = |what: String| RagError::Server {
            store: location.clone(),
            what,
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| server(format!("not a PostgreSQL URL: {e}")))?
            .application_name("forja");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| server(format!("starting the client: {e}")))?;
        let conn = rt
            .block_on(async {
                tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await
            })
            .map_err(|_| {
                server(format!(
                    "no answer from the server in {} s",
                    CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| connect_error(e, &options, &location))?;
        let store = PgStore {
            rt,
            conn: Mutex::new(conn),
            location,
        };
        store.prepare(&options)?;
        Ok(store)
    }

    /// Runs `f` on the connection, blocking; errors say what was being done.
    fn run<T>(
        &self,
        what: &str,
        f: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        self.rt
            .block_on(f(&mut conn))
            .map_err(|source| RagError::Postgres {
                store: self.location.clone(),
                what: what.to_string(),
                source,
            })
    }

    fn server_error(&self, what: String) -> RagError {
        RagError::Server {
            store: self.location.clone(),
            what,
        }
    }

    /// What to do when `CREATE EXTENSION vector` fails.
    fn extension_error(&self, e: sqlx::Error, options: &PgConnectOptions) -> RagError {
        let code = e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned());
        let db = options.get_database().unwrap_or("(default)");
        let user = options.get_username();
        match code.as_deref() {
            // feature_not_supported ("extension is not available"), undefined_file.
            Some("0A000" | "58P01") => self.server_error(format!(
                "the pgvector extension is not installed on this server ({e}). Install it where \
                 the server runs: on Debian or Ubuntu `apt install postgresql-NN-pgvector` (NN: \
                 the server's major version; from apt.postgresql.org), with Homebrew `brew \
                 install pgvector`, elsewhere from source (https://github.com/pgvector/pgvector); \
                 forja then enables it in the database by itself"
            )),
            // insufficient_privilege.
            Some("42501") => self.server_error(format!(
                "pgvector is not enabled in database {db:?} and user {user:?} may not enable it \
                 ({e}): have a superuser run `CREATE EXTENSION vector;` in that database once"
            )),
            _ => RagError::Postgres {
                store: self.location.clone(),
                what: "enabling pgvector (CREATE EXTENSION vector)".into(),
                source: e,
            },
        }
    }

    /// In one transaction under a lock, so that forja processes starting at once take turns:
    /// enables pgvector where it is missing, puts its schema on the search path after
    /// `forja_rag`, and brings the schema up to date.
    fn prepare(&self, options: &PgConnectOptions) -> Result<()> {
        let outcome = self.run("preparing the database", async |conn| {
            let mut tx = conn.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(MIGRATION_LOCK)
                .execute(&mut *tx)
                .await?;
            let schema = match vector_schema(&mut tx).await? {
                Some(s) => s,
                None => {
                    if let Err(e) = sqlx::query("CREATE EXTENSION IF NOT EXISTS vector")
                        .execute(&mut *tx)
                        .await
                    {
                        return Ok(Prepared::NoExtension(e));
                    }
                    vector_schema(&mut tx)
                        .await?
                        .unwrap_or_else(|| "public".into())
                }
            };
            sqlx::query(
                "SELECT set_config('search_path', 'forja_rag, ' || quote_ident($1), false)",
            )
            .bind(&schema)
            .execute(&mut *tx)
            .await?;
            sqlx::raw_sql(
                "CREATE SCHEMA IF NOT EXISTS forja_rag; \
                 CREATE TABLE IF NOT EXISTS forja_rag.schema_version (version INTEGER NOT NULL);",
            )
            .execute(&mut *tx)
            .await?;
            let version: i32 = sqlx::query_scalar(
                "SELECT coalesce(max(version), 0) FROM forja_rag.schema_version",
            )
            .fetch_one(&mut *tx)
            .await?;
            let version = version.max(0) as usize;
            if version > MIGRATIONS.len() {
                return Ok(Prepared::Newer(version));
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO forja_rag.schema_version (version) VALUES ($1)")
                    .bind((i + 1) as i32)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(Prepared::Ready)
        })?;
        match outcome {
            Prepared::Ready => Ok(()),
            Prepared::NoExtension(e) => Err(self.extension_error(e, options)),
            Prepared::Newer(version) => Err(RagError::Schema {
                path: self.location.clone().into(),
                what: format!(
                    "schema version {version} is newer than this forja knows ({}): upgrade forja",
                    MIGRATIONS.len()
                ),
            }),
        }
    }
}

/// How preparing the database ended, short of a failing query.
enum Prepared {
    Ready,
    /// `CREATE EXTENSION vector` failed with this.
    NoExtension(sqlx::Error),
    /// The schema is at this version, newer than this forja's.
    Newer(usize),
}

/// The schema the `vector` extension lives in, when it is enabled.
async fn vector_schema(conn: &mut PgConnection) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e \
         JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
    )
    .fetch_optional(conn)
    .await
}

/// A connection error with what to do about it.
fn connect_error(e: sqlx::Error, options: &PgConnectOptions, location: &str) -> RagError {
    let server = |what: String| RagError::Server {
        store: location.to_string(),
        what,
    };
    let place = match options.get_socket() {
        Some(dir) => format!("the Unix socket in {}", dir.display()),
        None => format!("{}:{}", options.get_host(), options.get_port()),
    };
    let code = e
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned());
    match (&e, code.as_deref()) {
        (sqlx::Error::Io(io), _) => server(format!(
            "cannot reach a PostgreSQL server at {place} ({io}): is it running and accepting \
             connections there?"
        )),
        // invalid_password, invalid_authorization_specification.
        (_, Some("28P01" | "28000")) => server(format!(
            "the server refused user {:?} ({e}): check the user and password in the URL and the \
             server's pg_hba.conf",
            options.get_username()
        )),
        // invalid_catalog_name.
        (_, Some("3D000")) => server(format!(
            "{e}: create it (`createdb {}`) or name an existing database in the URL",
            options.get_database().unwrap_or("NAME")
        )),
        (sqlx::Error::Tls(_), _) => server(format!(
            "{e}: this forja connects without TLS; use a Unix socket, localhost or a trusted \
             network with sslmode=disable or sslmode=prefer"
        )),
        _ => RagError::Postgres {
            store: location.to_string(),
            what: format!("connecting to {place}"),
            source: e,
        },
    }
}

/// The name of a collection's vector table (ids are integers: safe to put in SQL).
fn vec_table(collection_id: i64) -> String {
    format!("forja_rag.chunk_vec_{collection_id}")
}

fn collection_of(r: &PgRow) -> Result<Collection, sqlx::Error> {
    Ok(Collection {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        embedding_model: r.try_get(2)?,
        dimension: r.try_get::<i32, _>(3)?.max(0) as usize,
    })
}

/// SQL conditions of `filters` on `c` (chunks) and `d` (documents), numbered from `$first`,
/// with their values in order.
fn filter_sql(filters: &Filters, first: usize) -> (String, Vec<String>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    let mut n = first;
    if let Some(s) = &filters.source {
        sql += &format!(" AND strpos(lower(d.path), lower(${n})) > 0");
        values.push(s.clone());
        n += 1;
    }
    if let Some(s) = &filters.section {
        sql += &format!(
            " AND EXISTS (SELECT 1 FROM unnest(c.section) h \
             WHERE strpos(lower(h), lower(${n})) > 0)"
        );
        values.push(s.clone());
        n += 1;
    }
    if let Some(k) = filters.kind {
        sql += &format!(" AND c.kind = ${n}");
        values.push(k.as_str().to_string());
        n += 1;
    }
    for (bound, op) in [(filters.after, ">="), (filters.before, "<=")] {
        if let Some(t) = bound {
            sql += &format!(" AND COALESCE(d.date, d.mtime) {op} ${n}::bigint");
            values.push(t.to_string());
            n += 1;
        }
    }
    (sql, values)
}

/// What deleting a document took away: whether it existed, its chunks and their indexed words
/// (for the BM25 statistics, which the caller updates once at the end of its transaction, so
/// that the collection's row stays locked only briefly).
struct Removed {
    existed: bool,
    chunks: i64,
    terms: i64,
}

/// Deletes a document's chunks (their vectors follow) and row. Holds a lock on the path until
/// the transaction ends, so that two writers of one file take turns.
async fn delete_document_rows(
    tx: &mut PgConnection,
    c: &Collection,
    path: &str,
) -> Result<Removed, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($2, $1))")
        .bind(c.id)
        .bind(path)
        .execute(&mut *tx)
        .await?;
    let (chunks, terms): (i64, i64) = sqlx::query_as(
        "WITH gone AS (DELETE FROM chunks WHERE document_id IN \
         (SELECT id FROM documents WHERE collection_id = $1 AND path = $2) RETURNING terms) \
         SELECT count(*), coalesce(sum(terms), 0)::bigint FROM gone",
    )
    .bind(c.id)
    .bind(path)
    .fetch_one(&mut *tx)
    .await?;
    let existed = sqlx::query("DELETE FROM documents WHERE collection_id = $1 AND path = $2")
        .bind(c.id)
        .bind(path)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    Ok(Removed {
        existed,
        chunks,
        terms,
    })
}

async fn add_statistics(
    tx: &mut PgConnection,
    c: &Collection,
    chunks: i64,
    terms: i64,
) -> Result<(), sqlx::Error> {
    if chunks != 0 || terms != 0 {
        sqlx::query(
            "UPDATE collections SET chunk_count = chunk_count + $2, \
             term_count = term_count + $3 WHERE id = $1",
        )
        .bind(c.id)
        .bind(chunks)
        .bind(terms)
        .execute(tx)
        .await?;
    }
    Ok(())
}

fn to_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

mod backend;
