//! The embedded store: one SQLite file holding collections, documents (path, content hash,
//! modification time), chunks, an FTS5 index of the chunks for BM25, and per collection a
//! sqlite-vec `vec0` table of their embeddings. Each document is written in one transaction,
//! so an interrupted ingest leaves every document either complete or as it was before.

use std::path::{Path, PathBuf};
use std::sync::Once;

use rusqlite::{Connection, OptionalExtension, params};

use crate::chunk::Chunk;
use crate::document::Document;
use crate::error::{RagError, Result};

/// Schema changes in order; entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[r"
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
"];

/// Separates the headings of a section path in the `section` column.
pub(crate) const SECTION_SEP: char = '\u{1f}';

/// A collection: documents embedded with one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub id: i64,
    pub name: String,
    /// [`crate::Embedder::name`] of the model that embedded it.
    pub embedding_model: String,
    pub dimension: usize,
}

/// A collection with its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionStats {
    pub collection: Collection,
    pub documents: usize,
    pub chunks: usize,
}

/// What the store knows of an ingested file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDocument {
    pub id: i64,
    pub path: String,
    pub content_hash: String,
    /// Modification time in seconds since the Unix epoch, when the file system gave one.
    pub mtime: Option<i64>,
}

/// An open store.
#[derive(Debug)]
pub struct Store {
    pub(crate) conn: Connection,
    path: PathBuf,
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating it and its folder if needed) the store at `path` and brings its schema
    /// up to date.
    pub fn open(path: &Path) -> Result<Store> {
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
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
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

    /// The collection called `name`, if any.
    pub fn collection(&self, name: &str) -> Result<Option<Collection>> {
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

    /// The collection called `name`, or an error saying it does not exist.
    pub fn existing_collection(&self, name: &str) -> Result<Collection> {
        self.collection(name)?.ok_or_else(|| RagError::Collection {
            name: name.to_string(),
            what: format!(
                "no such collection in {} (create it with `forja ingest PATH --collection {name}`)",
                self.path.display()
            ),
        })
    }

    /// The collection `name`, created for `embedding_model` vectors of `dimension` floats if new.
    /// An existing collection made with another model is an error: its vectors could not be
    /// compared with the new ones.
    pub fn ensure_collection(
        &self,
        name: &str,
        embedding_model: &str,
        dimension: usize,
    ) -> Result<Collection> {
        if name.trim().is_empty() {
            return Err(RagError::Input("a collection needs a name".into()));
        }
        if let Some(c) = self.collection(name)? {
            if c.embedding_model != embedding_model || c.dimension != dimension {
                return Err(RagError::Collection {
                    name: name.to_string(),
                    what: format!(
                        "it was embedded with {} ({} dimensions), not {embedding_model} \
                         ({dimension}): use that model or another collection",
                        c.embedding_model, c.dimension
                    ),
                });
            }
            return Ok(c);
        }
        if dimension == 0 {
            return Err(RagError::Input("embeddings of 0 dimensions".into()));
        }
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
    pub fn collections(&self) -> Result<Vec<CollectionStats>> {
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

    /// Deletes a collection with its documents, chunks and vectors; whether it existed.
    pub fn delete_collection(&self, name: &str) -> Result<bool> {
        let Some(c) = self.collection(name)? else {
            return Ok(false);
        };
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
        .map_err(self.err("deleting a collection"))?;
        Ok(true)
    }

    /// The stored document at `path` in `collection`.
    pub fn document(&self, collection: &Collection, path: &str) -> Result<Option<StoredDocument>> {
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
    pub fn document_paths(&self, collection: &Collection) -> Result<Vec<String>> {
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
    pub fn touch_document(&self, doc: &StoredDocument, mtime: Option<i64>) -> Result<()> {
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
    pub fn replace_document(
        &self,
        collection: &Collection,
        path: &str,
        doc: &Document,
        mtime: Option<i64>,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()> {
        if chunks.len() != vectors.len() {
            return Err(RagError::Embedding(format!(
                "{path}: {} vectors for {} chunks",
                vectors.len(),
                chunks.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != collection.dimension) {
            return Err(RagError::Embedding(format!(
                "{path}: a vector of {} floats for a collection of {}",
                v.len(),
                collection.dimension
            )));
        }
        let what = format!("storing {path}");
        let tx = self.conn.unchecked_transaction().map_err(self.err(&what))?;
        let write = || -> rusqlite::Result<()> {
            delete_document_rows(&tx, collection, path)?;
            tx.execute(
                "INSERT INTO documents \
                 (collection_id, path, title, content_hash, mtime, ingested_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    collection.id,
                    path,
                    doc.title,
                    doc.content_hash,
                    mtime,
                    now_secs()
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
    pub fn remove_document(&self, collection: &Collection, path: &str) -> Result<bool> {
        let what = format!("removing {path}");
        let tx = self.conn.unchecked_transaction().map_err(self.err(&what))?;
        let removed = delete_document_rows(&tx, collection, path).map_err(self.err(&what))?;
        tx.commit().map_err(self.err(&what))?;
        Ok(removed)
    }

    /// Number of chunks in `collection`, and of rows in its keyword and vector indexes (equal in
    /// a consistent store).
    pub fn chunk_counts(&self, collection: &Collection) -> Result<(usize, usize, usize)> {
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
pub(crate) fn vec_table(collection_id: i64) -> String {
    format!("chunk_vec_{collection_id}")
}

/// A vector as sqlite-vec reads it: little-endian f32s.
pub(crate) fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
