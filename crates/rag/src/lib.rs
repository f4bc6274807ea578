//! Retrieval-augmented generation: files are parsed into structured documents, cut into chunks
//! by their structure, embedded, and stored in one SQLite file with a keyword (FTS5 BM25) and a
//! vector (sqlite-vec) index; questions retrieve chunks by either or both (reciprocal-rank
//! fusion) and are answered from them with numbered citations.
//!
//! The models are behind the [`Embedder`] and [`Generator`] traits, so this crate never depends
//! on the engine that runs them.

pub mod answer;
pub mod chunk;
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
pub use ingest::{IngestEvent, IngestOptions, IngestReport, ingest};
pub use model::{Embedder, Generator};
pub use parse::{Format, parse_bytes, parse_file};
pub use retrieve::{Filters, Hit, SearchMode, SearchQuery, rrf_fuse, search};
pub use store::{Collection, CollectionStats, Store, StoredDocument, is_postgres_url};
