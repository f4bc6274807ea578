//! The one error type of the RAG crate: what went wrong and where (file, line when known).

use std::path::PathBuf;

/// Result of RAG operations.
pub type Result<T, E = RagError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// A file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file over the size limit; it was not read.
    #[error(
        "{}: {} bytes, over the limit of {} bytes (the file was not read)",
        path.display(),
        bytes,
        limit
    )]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        limit: u64,
    },
    /// A file whose content does not parse as its format says.
    #[error("{}{}: {what}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<u64>,
        what: String,
    },
    /// The SQLite store failed.
    #[error("store {}: {what}: {source}", path.display())]
    Store {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL store failed.
    #[error("store {store}: {what}: {source}")]
    Postgres {
        /// The server's URL without its password.
        store: String,
        what: String,
        #[source]
        source: sqlx::Error,
    },
    /// The PostgreSQL server cannot be used: unreachable, authentication refused, a database
    /// that does not exist, pgvector missing. `what` says what to do about it.
    #[error("store {store}: {what}")]
    Server { store: String, what: String },
    /// The store was written by a newer forja, or holds something this one cannot read.
    #[error("store {}: {what}", path.display())]
    Schema { path: PathBuf, what: String },
    /// A collection that does not exist.
    #[error(
        "collection {name:?}: no such collection in {store} (create it with `forja ingest PATH \
         --collection {name}`)"
    )]
    NoSuchCollection { name: String, store: String },
    /// A collection that does not fit the request.
    #[error("collection {name:?}: {what}")]
    Collection { name: String, what: String },
    /// The embedding model failed.
    #[error("embedding: {0}")]
    Embedding(String),
    /// The reranking model failed.
    #[error("reranking: {0}")]
    Rerank(String),
    /// The generating model failed.
    #[error("generation: {0}")]
    Generation(String),
    /// A bad argument (glob, filter, budget).
    #[error("{0}")]
    Input(String),
}

impl RagError {
    /// Whether this error stops a whole ingest run (the store itself failed) rather than one
    /// file.
    pub fn stops_the_run(&self) -> bool {
        matches!(
            self,
            RagError::Store { .. }
                | RagError::Postgres { .. }
                | RagError::Server { .. }
                | RagError::Schema { .. }
        )
    }
}
