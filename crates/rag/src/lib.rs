//! Retrieval-augmented generation: files are parsed into structured documents, cut into chunks
//! by their structure, embedded, and stored with a keyword (BM25) and a vector index, either in
//! one SQLite file (FTS5, sqlite-vec) or in PostgreSQL with pgvector (tsvector + GIN, HNSW):
//! see [`store`]. Questions retrieve chunks by either index or both (reciprocal-rank fusion) and
//! are answered from them with numbered citations.
//!
//! The models are behind the [`Embedder`] and [`Generator`] traits, so this crate never depends
//! on the engine that runs them.

pub mod answer;
pub mod chunk;
pub mod date;
pub mod document;
pub mod error;
pub mod ingest;
pub mod model;
pub mod parse;
pub mod retrieve;
pub mod store;

pub use answer::{Answer, AnswerOptions, answer};
pub use chunk::{Chunk, ChunkOptions, chunk_document};
pub use document::{Block, Document, Element, ElementKind, Table};
pub use error::{RagError, Result};
pub use ingest::{
    DEFAULT_MAX_FILE_BYTES, FileOutcome, IngestEvent, IngestOptions, IngestReport, ingest,
    ingest_bytes,
};
pub use model::{Embedder, Generator, PromptBudget, Reranker};
pub use parse::{Format, parse_bytes, parse_file};
pub use retrieve::{
    Filters, Hit, SearchMode, SearchQuery, rerank_depth, rrf_fuse, search, search_with,
};
pub use store::{Collection, CollectionStats, Store, StoredDocument, is_postgres_url};
