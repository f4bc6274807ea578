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
    /// A format forja cannot parse yet (DOCX, XLSX, XML) or at all.
    #[error("{}: {format} files are not supported yet", path.display())]
    Unsupported { path: PathBuf, format: String },
    /// A file whose content does not parse as its format says.
    #[error("{}{}: {what}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        path: PathBuf,
        line: Option<u64>,
        what: String,
    },
    /// The embedded store (SQLite) failed.
    #[error("store {}: {what}: {source}", path.display())]
    Store {
        path: PathBuf,
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The store was written by a newer forja, or holds something this one cannot read.
    #[error("store {}: {what}", path.display())]
    Schema { path: PathBuf, what: String },
    /// A collection that does not exist, or that does not fit the request.
    #[error("collection {name:?}: {what}")]
    Collection { name: String, what: String },
    /// The embedding model failed.
    #[error("embedding: {0}")]
    Embedding(String),
    /// The generating model failed.
    #[error("generation: {0}")]
    Generation(String),
    /// A bad argument (glob, filter, budget).
    #[error("{0}")]
    Input(String),
}
