//! The store behind ingest and retrieval, with two backends behind one interface:
//!
//! - [`sqlite`]: one embedded SQLite file (FTS5 BM25 keywords, sqlite-vec vectors), the default;
//! - [`postgres`]: a PostgreSQL server with pgvector (a tsvector column with a GIN index for
//!   keywords, ranked by BM25 computed from the index; a `vector(dim)` table with an HNSW cosine
//!   index per collection), for collections shared between machines or too large for one file.
//!
//! Both hold collections, documents (path, content hash, modification time) and chunks with
//! their metadata (section path, page, kind, byte span), migrate their schema by version, and
//! write each document in one transaction, so an interrupted ingest leaves every document either
//! complete or as it was before. [`Store`] checks what is common (names, dimensions, vector
//! counts) once; the backends differ only in storage and in producing rankings, which
//! [`crate::retrieve`] fuses.

pub mod postgres;
pub mod sqlite;

use std::path::Path;

use crate::chunk::Chunk;
use crate::document::Document;
use crate::error::{RagError, Result};
use crate::retrieve::{Filters, Hit};

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

/// What a backend does; [`Store`] adds the checks both share.
pub(crate) trait Backend: std::fmt::Debug + Send {
    /// Where the store is, for messages (a file path, or a URL without its password).
    fn location(&self) -> &str;
    fn schema_version(&self) -> Result<usize>;
    fn collection(&self, name: &str) -> Result<Option<Collection>>;
    /// Creates a collection known not to exist; returns the existing one if another writer
    /// created it meanwhile.
    fn create_collection(
        &self,
        name: &str,
        embedding_model: &str,
        dimension: usize,
    ) -> Result<Collection>;
    fn collections(&self) -> Result<Vec<CollectionStats>>;
    fn delete_collection(&self, c: &Collection) -> Result<()>;
    fn document(&self, c: &Collection, path: &str) -> Result<Option<StoredDocument>>;
    fn document_paths(&self, c: &Collection) -> Result<Vec<String>>;
    fn touch_document(&self, doc: &StoredDocument, mtime: Option<i64>) -> Result<()>;
    /// Replaces what is stored for `path` in one transaction; vectors are checked already.
    fn replace_document(
        &self,
        c: &Collection,
        path: &str,
        doc: &Document,
        mtime: Option<i64>,
        chunks: &[Chunk],
        vectors: &[Vec<f32>],
    ) -> Result<()>;
    fn remove_document(&self, c: &Collection, path: &str) -> Result<bool>;
    fn chunk_counts(&self, c: &Collection) -> Result<(usize, usize, usize)>;
    /// The `limit` best chunks for the words of `words` by BM25, with their BM25 score (higher
    /// is better), best first.
    fn keyword_ranking(
        &self,
        c: &Collection,
        words: &[String],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>>;
    /// The `limit` chunks nearest to `vector`, with their cosine similarity, best first.
    fn vector_ranking(
        &self,
        c: &Collection,
        vector: &[f32],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>>;
    /// The stored fields of chunks `ids` (in that order; score and ranks left 0 / empty), with
    /// their similarity to `query` when given.
    fn hits(&self, c: &Collection, ids: &[i64], query: Option<&[f32]>) -> Result<Vec<Hit>>;
}

/// An open store, of either backend.
#[derive(Debug)]
pub struct Store {
    backend: Box<dyn Backend>,
}

/// Whether `location` names a PostgreSQL server (`postgres://…` or `postgresql://…`) rather
/// than a SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    let lower = location.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

impl Store {
    /// Opens (creating it and its folder if needed) the SQLite store at `path` and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<Store> {
        Ok(Store {
            backend: Box::new(sqlite::SqliteStore::open(path)?),
        })
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://user[:password]@host[:port]/db`,
    /// or `?host=/socket/dir`), enables pgvector and brings the schema up to date.
    pub fn connect(url: &str) -> Result<Store> {
        Ok(Store {
            backend: Box::new(postgres::PgStore::connect(url)?),
        })
    }

    /// A PostgreSQL store for a `postgres://` URL, else the SQLite file at `location`.
    pub fn open_location(location: &str) -> Result<Store> {
        if is_postgres_url(location) {
            Store::connect(location)
        } else {
            Store::open(Path::new(location))
        }
    }

    /// Where the store is: the SQLite file, or the PostgreSQL URL without its password.
    pub fn location(&self) -> &str {
        self.backend.location()
    }

    /// The schema version the store is at.
    pub fn schema_version(&self) -> Result<usize> {
        self.backend.schema_version()
    }

    /// The collection called `name`, if any.
    pub fn collection(&self, name: &str) -> Result<Option<Collection>> {
        self.backend.collection(name)
    }

    /// The collection called `name`, or an error saying it does not exist.
    pub fn existing_collection(&self, name: &str) -> Result<Collection> {
        self.collection(name)?
            .ok_or_else(|| RagError::NoSuchCollection {
                name: name.to_string(),
                store: self.location().to_string(),
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
        let c = match self.collection(name)? {
            Some(c) => c,
            None => {
                if dimension == 0 {
                    return Err(RagError::Input("embeddings of 0 dimensions".into()));
                }
                self.backend
                    .create_collection(name, embedding_model, dimension)?
            }
        };
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
        Ok(c)
    }

    /// Every collection with its document and chunk counts, by name.
    pub fn collections(&self) -> Result<Vec<CollectionStats>> {
        self.backend.collections()
    }

    /// Deletes a collection with its documents, chunks and vectors; whether it existed.
    pub fn delete_collection(&self, name: &str) -> Result<bool> {
        let Some(c) = self.collection(name)? else {
            return Ok(false);
        };
        self.backend.delete_collection(&c)?;
        Ok(true)
    }

    /// The stored document at `path` in `collection`.
    pub fn document(&self, collection: &Collection, path: &str) -> Result<Option<StoredDocument>> {
        self.backend.document(collection, path)
    }

    /// Paths of the documents of `collection`, sorted.
    pub fn document_paths(&self, collection: &Collection) -> Result<Vec<String>> {
        self.backend.document_paths(collection)
    }

    /// Records a new modification time for an unchanged document.
    pub fn touch_document(&self, doc: &StoredDocument, mtime: Option<i64>) -> Result<()> {
        self.backend.touch_document(doc, mtime)
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
        self.backend
            .replace_document(collection, path, doc, mtime, chunks, vectors)
    }

    /// Removes the document at `path` with its chunks; whether it was there.
    pub fn remove_document(&self, collection: &Collection, path: &str) -> Result<bool> {
        self.backend.remove_document(collection, path)
    }

    /// Number of chunks in `collection`, and of entries in its keyword and vector indexes
    /// (equal in a consistent store).
    pub fn chunk_counts(&self, collection: &Collection) -> Result<(usize, usize, usize)> {
        self.backend.chunk_counts(collection)
    }

    pub(crate) fn keyword_ranking(
        &self,
        c: &Collection,
        words: &[String],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        self.backend.keyword_ranking(c, words, filters, limit)
    }

    pub(crate) fn vector_ranking(
        &self,
        c: &Collection,
        vector: &[f32],
        filters: &Filters,
        limit: usize,
    ) -> Result<Vec<(i64, f64)>> {
        if vector.len() != c.dimension {
            return Err(RagError::Embedding(format!(
                "a query vector of {} floats for a collection of {}",
                vector.len(),
                c.dimension
            )));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.backend.vector_ranking(c, vector, filters, limit)
    }

    pub(crate) fn hits(
        &self,
        c: &Collection,
        ids: &[i64],
        query: Option<&[f32]>,
    ) -> Result<Vec<Hit>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.hits(c, ids, query)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
