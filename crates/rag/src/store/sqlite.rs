//! The embedded store: one SQLite file holding collections, documents (path, content hash,
//! modification time), chunks, an FTS5 index of the chunks for BM25, and per collection a
//! sqlite-vec `vec0` table of their embeddings. Each document is written in one transaction,
//! so an interrupted ingest leaves every document either complete or as it was before.

use std::path::{Path, PathBuf};
use std::sync::Once;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::{Backend, Collection, CollectionStats, StoredDocument, now_secs};
use crate::chunk::Chunk;
use crate::document::{Document, ElementKind};
use crate::error::{RagError, Result};
use crate::retrieve::{Filters, Hit};

/// Schema changes in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE collections (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    embedding_model TEXT NOT NULL,
    dimension INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE documents (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    title TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    mtime INTEGER,
    ingested_at INTEGER NOT NULL,
    UNIQUE (collection_id, path)
);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    collection_id INTEGER NOT NULL,
    ordinal INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT NOT NULL,
    section TEXT NOT NULL,
    page INTEGER,
    kind TEXT NOT NULL,
    span_start INTEGER,
    span_end INTEGER,
    tokens INTEGER NOT NULL
);
CREATE INDEX chunks_by_document ON chunks(document_id);
CREATE INDEX chunks_by_collection ON chunks(collection_id);
CREATE VIRTUAL TABLE chunk_fts USING fts5(text, tokenize = 'porter unicode61 remove_diacritics 2');
",
    r"
-- The date the document gives itself (seconds since the epoch), from its metadata; searches
-- filter on it, else on mtime.
ALTER TABLE documents ADD COLUMN date INTEGER;
",
];

/// Separates the headings of a section path in the `section` column.
pub(crate) const SECTION_SEP: char = '\u{1f}';

/// An open SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    location: String,
}

static VEC_EXTENSION: Once = Once::new();

/// Makes every connection opened after this call load sqlite-vec (compiled into the binary).
fn register_vec_extension() {
    VEC_EXTENSION.call_once(|| {
        // SAFETY: `sqlite3_vec_init` is the extension's entry point with the signature SQLite
        // expects of an auto-extension (db, error message, API routines); sqlite-vec is built
        // with SQLITE_CORE against the SQLite linked here, so it calls that library directly.
        unsafe {
            type Init = unsafe extern "C" fn(
                *mut rusqlite::ffi::sqlite3,
                *mut *mut std::os::raw::c_char,
                *const rusqlite::ffi::sqlite3_api_routines,
            ) -> std::os::raw::c_int;
            let init: Init = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

impl SqliteStore {
    /// Opens (creating it and its folder if needed) the store at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        register_vec_extension();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| RagError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| RagError::Store {
            path: path.to_path_buf(),
            what: "opening".into(),
            source,
        })?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            location: path.display().to_string(),
        };
        store.exec_batch(
            "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
            "setting up the connection",
        )?;
        store.migrate()?;
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps a SQLite error with the store's path and what was being done.
    pub(crate) fn err(&self, what: &str) -> impl FnOnce(rusqlite::Error) -> RagError + use<> {
        let path = self.path.clone();
        let what = what.to_string();
        move |source| RagError::Store { path, what, source }
    }

    fn exec_batch(&self, sql: &str, what: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(self.err(what))
    }

    /// The schema version the store is at (0 for a new file).
    pub fn schema_version(&self) -> Result<usize> {
        self.exec_batch(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            "reading the schema version",
        )?;
        let v: Option<i64> = self
            .conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .map_err(self.err("reading the schema version"))?;
        Ok(v.unwrap_or(0).max(0) as usize)
    }

    fn migrate(&mut self) -> Result<()> {
        let version = self.schema_version()?;
        if version > MIGRATIONS.len() {
            return Err(RagError::Schema {
                path: self.path.clone(),
                what: format!(
                    "schema version {version} is newer than this forja knows ({}): upgrade forja",
                    MIGRATIONS.len()
                ),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let err = self.err(&format!("migrating to schema version {}", i + 1));
            let begin_err = self.err("migrating");
            let tx = self.conn.transaction().map_err(begin_err)?;
            tx.execute_batch(sql)
                .and_then(|()| {
                    tx.execute(
                        "INSERT INTO schema_version (version) VALUES (?1)",
                        [(i + 1) as i64],
                    )
                    .map(drop)
                })
                .and_then(|()| tx.commit())
                .map_err(err)?;
        }
        Ok(())
    }
}

impl Backend for SqliteStore {
    fn location(&self) -> &str {
        &self.location
    }

    fn schema_version(&self) -> Result<usize> {
        SqliteStore::schema_version(self)
    }

    /// The collection called `name`, if any.
    fn collection(&self, name: &str) -> Result<Option<Collection>> {
        self.conn
            .query_row(
                "SELECT id, name, embedding_model, dimension FROM collections WHERE name = ?1",
                [name],
                |r| {
                    Ok(Collection {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        embedding_model: r.get(2)?,
                        dimension: r.get::<_, i64>(3)? as usize,
                    })
                },
            )
            .optional()
            .map_err(self.err("reading collections"))
    }

    fn create_collection(
        &self,
        name: &str,
        embedding_model: &str,
        dimension: usize,
    ) -> Result<Collection> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("creating a collection"))?;
        tx.execute(
            "INSERT INTO collections (name, embedding_model, dimension, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![name, embedding_model, dimension as i64, now_secs()],
        )
        .map_err(self.err("creating a collection"))?;
        let id = tx.last_insert_rowid();
        tx.execute_batch(&format!(
            "CREATE VIRTUAL TABLE {} USING vec0(embedding float[{dimension}] distance_metric=cosine)",
            vec_table(id)
        ))
        .map_err(self.err("creating a collection's vector table"))?;
        tx.commit().map_err(self.err("creating a collection"))?;
        Ok(Collection {
            id,
            name: name.to_string(),
            embedding_model: embedding_model.to_string(),
            dimension,
        })
    }

    /// Every collection with its document and chunk counts, by name.
    fn collections(&self) -> Result<Vec<CollectionStats>> {
        let err = self.err("listing collections");
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.id, c.name, c.embedding_model, c.dimension, \
                 (SELECT count(*) FROM documents d WHERE d.collection_id = c.id), \
                 (SELECT count(*) FROM chunks k WHERE k.collection_id = c.id) \
                 FROM collections c ORDER BY c.name",
            )
            .map_err(self.err("listing collections"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CollectionStats {
                    collection: Collection {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        embedding_model: r.get(2)?,
                        dimension: r.get::<_, i64>(3)? as usize,
                    },
                    documents: r.get::<_, i64>(4)? as usize,
                    chunks: r.get::<_, i64>(5)? as usize,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>());
        rows.map_err(err)
    }

    fn delete_collection(&self, c: &Collection) -> Result<()> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(self.err("deleting a collection"))?;
        tx.execute(
            "DELETE FROM chunk_fts WHERE rowid IN (SELECT id FROM chunks WHERE collection_id = ?1)",
            [c.id],
        )
        .and_then(|_| tx.execute_batch(&format!("DROP TABLE {}", vec_table(c.id))))
        .and_then(|()| tx.execute("DELETE FROM chunks WHERE collection_id = ?1", [c.id]))
        .and_then(|_| tx.execute("DELETE FROM collections WHERE id = ?1", [c.id]))
        .and_then(|_| tx.commit())
        .map_err(self.err("deleting a collection"))
    }

    /// The stored document at `path` in `collection`.
    fn document(&self, collection: &Collection, path: &str) -> Result<Option<StoredDocument>> {
        self.conn
            .query_row(
                "SELECT id, path, content_hash, mtime FROM documents \
                 WHERE collection_id = ?1 AND path = ?2",
                params![collection.id, path],
                |r| {
                    Ok(StoredDocument {
                        id: r.get(0)?,
                        path: r.get(1)?,
                        content_hash: r.get(2)?,
                        mtime: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.err("reading documents"))
    }

    /// Paths of the documents of `collection`, sorted.
    fn document_paths(&self, collection: &Collection) -> Result<Vec<String>> {
        let err = self.err("listing documents");
        let mut stmt = self
            .conn
            .prepare("SELECT path FROM documents WHERE collection_id = ?1 ORDER BY path")
            .map_err(self.err("listing documents"))?;
        stmt.query_map([collection.id], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(err)
    }

    /// Records a new modification time for an unchanged document.
    fn touch_document(&self, doc: &StoredDocument, mtime: Option<i64>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE documents SET mtime = ?1 WHERE id = ?2",
                params![mtime, doc.id],
            )
            .map(drop)
            .map_err(self.err("updating a document"))
    }

    /// Stores `doc` under `path` with its chunks and their vectors (one per chunk), replacing
    /// what was stored for that path, in one transaction.
    fn replace_document(
        &self,
        collection: &Collection,
        path: &str,
        doc: &Document,
        mtime: Option<i64>,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        let what = format!("storing {path}");
        let tx = self.conn.unchecked_transaction().map_err(self.err(&what))?;
        let write = || -> rusqlite::Result<()> {
            delete_document_rows(&tx, collection, path)?;
            tx.execute(
                "INSERT INTO documents \
                 (collection_id, path, title, content_hash, mtime, ingested_at, date) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    collection.id,
                    path,
                    doc.title,
                    doc.content_hash,
                    mtime,
                    now_secs(),
                    doc.date
                ],
            )?;
            let doc_id = tx.last_insert_rowid();
            let mut chunk_stmt = tx.prepare(
                "INSERT INTO chunks (document_id, collection_id, ordinal, text, context, section, \
                 page, kind, span_start, span_end, tokens) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            let mut fts_stmt = tx.prepare("INSERT INTO chunk_fts (rowid, text) VALUES (?1, ?2)")?;
            let mut vec_stmt = tx.prepare(&format!(
                "INSERT INTO {} (rowid, embedding) VALUES (?1, ?2)",
                vec_table(collection.id)
            ))?;
            let sep = SECTION_SEP.to_string();
            for (chunk, vector) in chunks.iter().zip(vectors) {
                chunk_stmt.execute(params![
                    doc_id,
                    collection.id,
                    chunk.ordinal as i64,
                    chunk.text,
                    chunk.context,
                    chunk.section.join(&sep),
                    chunk.page,
                    chunk.kind.as_str(),
                    chunk.span.as_ref().map(|s| s.start as i64),
                    chunk.span.as_ref().map(|s| s.end as i64),
                    chunk.tokens as i64,
                ])?;
                let id = tx.last_insert_rowid();
                fts_stmt.execute(params![id, chunk.embedding_text()])?;
                vec_stmt.execute(params![id, vector_blob(vector)])?;
            }
            Ok(())
        };
        write().map_err(self.err(&what))?;
        tx.commit().map_err(self.err(&what))
    }

    /// Removes the document at `path` with its chunks; whether it was there.
    fn remove_document(&self, collection: &Collection, path: &str) -> Result<bool> {
        let what = format!("removing {path}");
        let tx = self.conn.unchecked_transaction().map_err(self.err(&what))?;
        let removed = delete_document_rows(&tx, collection, path).map_err(self.err(&what))?;
        tx.commit().map_err(self.err(&what))?;
        Ok(removed)
    }

    /// Number of chunks in `collection`, and of rows in its keyword and vector indexes (equal in
    /// a consistent store).
    fn chunk_counts(&self, collection: &Collection) -> Result<(usize, usize, usize)> {
        let count = |sql: &str| -> Result<usize> {
            self.conn
                .query_row(sql, [collection.id], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(self.err("counting chunks"))
        };
        Ok((
            count("SELECT count(*) FROM chunks WHERE collection_id = ?1")?,
            count(
                "SELECT count(*) FROM chunk_fts WHERE rowid IN \
                 (SELECT id FROM chunks WHERE collection_id = ?1)",
            )?,
            self.conn
                .query_row(
                    &format!("SELECT count(*) FROM {}", vec_table(collection.id)),
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .map(|n| n as usize)
                .map_err(self.err("counting vectors"))?,
        ))
    }

    fn keyword_ranking(
        &self,
        c: &Collection,
        words: &[String],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        // Each word quoted (so no word is read as an FTS5 operator), any of them matching.
        let fts = words
            .iter()
            .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" OR ");
        let (cond, values) = filter_sql(filters);
        let sql = format!(
            "SELECT c.id, bm25(chunk_fts) AS s FROM chunk_fts \
             JOIN chunks c ON c.id = chunk_fts.rowid JOIN documents d ON d.id = c.document_id \
             WHERE chunk_fts MATCH ? AND c.collection_id = ?{cond} ORDER BY s, c.id LIMIT ?"
        );
        let mut all = vec![Value::Text(fts), Value::Integer(c.id)];
        all.extend(values);
        all.push(Value::Integer(limit as i64));
        // FTS5's bm25() is negated: lower is better.
        self.query_pairs(&sql, all, "keyword search")
            .map(|v| v.into_iter().map(|(id, s)| (id, -s)).collect())
    }

    /// Without filters this is sqlite-vec's KNN query; with filters, an exact scan of the chunks
    /// that pass them.
    fn vector_ranking(
        &self,
        c: &Collection,
        vector: &[f32],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let table = vec_table(c.id);
        let blob = Value::Blob(vector_blob(vector));
        let pairs = if filters.is_empty() {
            let sql = format!(
                "SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ? \
                 ORDER BY distance"
            );
            self.query_pairs(
                &sql,
                vec![blob, Value::Integer(limit as i64)],
                "vector search",
            )?
        } else {
            let (cond, values) = filter_sql(filters);
            let sql = format!(
                "SELECT c.id, vec_distance_cosine(v.embedding, ?) AS dist FROM chunks c \
                 JOIN {table} v ON v.rowid = c.id JOIN documents d ON d.id = c.document_id \
                 WHERE c.collection_id = ?{cond} ORDER BY dist, c.id LIMIT ?"
            );
            let mut all = vec![blob, Value::Integer(c.id)];
            all.extend(values);
            all.push(Value::Integer(limit as i64));
            self.query_pairs(&sql, all, "vector search")?
        };
        Ok(pairs.into_iter().map(|(id, d)| (id, 1.0 - d)).collect())
    }

    fn hits(&self, c: &Collection, ids: &[i64], query: Option<&[f32]>) -> Result<Vec<Hit>> {
        ids.iter().map(|&id| self.hit(c, id, query)).collect()
    }
}

impl SqliteStore {
    fn query_pairs(&self, sql: &str, values: Vec<Value>, what: &str) -> Result<Vec<(i64, f64)>> {
        let mut stmt = self.conn.prepare(sql).map_err(self.err(what))?;
        stmt.query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(self.err(what))
    }

    /// A chunk's stored fields, with its similarity to `query` when given.
    fn hit(&self, c: &Collection, id: i64, query: Option<&[f32]>) -> Result<Hit> {
        let similarity = match query {
            Some(q) => {
                let d: f64 = self
                    .conn
                    .query_row(
                        &format!(
                            "SELECT vec_distance_cosine(embedding, ?1) FROM {} WHERE rowid = ?2",
                            vec_table(c.id)
                        ),
                        params![vector_blob(q), id],
                        |r| r.get(0),
                    )
                    .map_err(self.err("reading a chunk's vector"))?;
                Some((1.0 - d) as f32)
            }
            None => None,
        };
        self.conn
            .query_row(
                "SELECT d.path, d.title, c.section, c.page, c.kind, c.text, c.span_start, \
                 c.span_end, COALESCE(d.date, d.mtime) FROM chunks c \
                 JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
                [id],
                |r| {
                    let section: String = r.get(2)?;
                    let kind: String = r.get(4)?;
                    let start: Option<i64> = r.get(6)?;
                    let end: Option<i64> = r.get(7)?;
                    Ok(Hit {
                        chunk_id: id,
                        source: PathBuf::from(r.get::<_, String>(0)?),
                        title: r.get(1)?,
                        section: section
                            .split(SECTION_SEP)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect(),
                        page: r.get(3)?,
                        kind: ElementKind::parse(&kind).unwrap_or(ElementKind::Text),
                        text: r.get(5)?,
                        span: start.zip(end).map(|(s, e)| s as usize..e as usize),
                        date: r.get(8)?,
                        score: 0.0,
                        bm25_rank: None,
                        vector_rank: None,
                        rerank_score: None,
                        similarity,
                    })
                },
            )
            .map_err(self.err("reading a chunk"))
    }
}

/// SQL conditions of `filters` on `c` (chunks) and `d` (documents), with their values.
fn filter_sql(filters: &Filters) -> (String, Vec<Value>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    if let Some(s) = &filters.source {
        sql += " AND instr(lower(d.path), lower(?)) > 0";
        values.push(Value::Text(s.clone()));
    }
    if let Some(s) = &filters.section {
        sql += " AND instr(lower(c.section), lower(?)) > 0";
        values.push(Value::Text(s.clone()));
    }
    if let Some(k) = filters.kind {
        sql += " AND c.kind = ?";
        values.push(Value::Text(k.as_str().to_string()));
    }
    if let Some(t) = filters.after {
        sql += " AND COALESCE(d.date, d.mtime) >= ?";
        values.push(Value::Integer(t));
    }
    if let Some(t) = filters.before {
        sql += " AND COALESCE(d.date, d.mtime) <= ?";
        values.push(Value::Integer(t));
    }
    (sql, values)
}

/// Deletes a document's index rows, chunks and row; whether it existed.
fn delete_document_rows(
    tx: &rusqlite::Transaction<'_>,
    collection: &Collection,
    path: &str,
) -> rusqlite::Result<bool> {
    let id: Option<i64> = tx
        .query_row(
            "SELECT id FROM documents WHERE collection_id = ?1 AND path = ?2",
            params![collection.id, path],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Ok(false);
    };
    tx.execute(
        "DELETE FROM chunk_fts WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?1)",
        [id],
    )?;
    tx.execute(
        &format!(
            "DELETE FROM {} WHERE rowid IN (SELECT id FROM chunks WHERE document_id = ?1)",
            vec_table(collection.id)
        ),
        [id],
    )?;
    tx.execute("DELETE FROM chunks WHERE document_id = ?1", [id])?;
    tx.execute("DELETE FROM documents WHERE id = ?1", [id])?;
    Ok(true)
}

/// The name of a collection's vector table (ids are integers: safe to put in SQL).
fn vec_table(collection_id: i64) -> String {
    format!("chunk_vec_{collection_id}")
}

/// A vector as sqlite-vec reads it: little-endian f32s.
fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
