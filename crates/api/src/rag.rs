//! Document collections (retrieval-augmented generation): collections, uploads, search, and the
//! `retrieval` extension of `/v1/chat/completions` with the citations it returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A collection: documents embedded with one model.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct CollectionInfo {
    pub name: String,
    /// The model that embedded it (searches and uploads use the same one).
    pub embedding_model: String,
    /// Floats per vector.
    pub dimension: usize,
    pub documents: usize,
    pub chunks: usize,
}

/// `GET /v1/rag/collections`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct CollectionList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<CollectionInfo>,
}

/// `POST /v1/rag/collections`: creates an empty collection for the server's embedding model.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollection {
    pub name: String,
}

/// `DELETE /v1/rag/collections/{name}`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct DeletedCollection {
    pub name: String,
    /// Always true (a collection that does not exist is a 404).
    pub deleted: bool,
}

/// What happened to one uploaded file.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct UploadedFile {
    /// The file's name as stored (and cited).
    pub name: String,
    /// `added`, `updated` (same name, new content), `unchanged` (same content) or `failed`.
    pub status: &'static str,
    /// Chunks stored (0 when unchanged or failed).
    pub chunks: usize,
    pub bytes: usize,
    /// Why the file failed (it was not stored; the other files were).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `POST /v1/rag/collections/{name}/files`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct UploadResult {
    pub collection: String,
    /// One entry per uploaded file, in upload order.
    pub files: Vec<UploadedFile>,
    /// Files that failed.
    pub failed: usize,
    /// Chunks stored by this upload.
    pub chunks: usize,
}

/// How chunks are ranked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// BM25 and vector rankings fused by reciprocal rank.
    #[default]
    Hybrid,
    /// Keywords only.
    Bm25,
    /// Embedding similarity only.
    Vector,
}

/// Conditions every chunk found meets; text matches case-insensitively as a substring.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
    /// Part of the source file's name or path.
    #[serde(default)]
    pub source: Option<String>,
    /// Part of any heading of the chunk's section path.
    #[serde(default)]
    pub section: Option<String>,
    /// The chunk's kind: `text`, `paragraph`, `list`, `table`, `code` or `heading`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Documents dated on or after this date (`2024-01-01`, or an RFC 3339 time). A document's
    /// date is the one it gives itself (PDF or Word metadata, an HTML date meta tag, Markdown
    /// front matter, an XBRL report's period end), else its file's modification time.
    #[serde(default)]
    pub after: Option<String>,
    /// Documents dated on or before this date (a bare date includes that whole day).
    #[serde(default)]
    pub before: Option<String>,
}

/// `POST /v1/rag/collections/{name}/search`.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchRequest {
    pub query: String,
    /// Chunks wanted (default 5, at most 100).
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: Option<SearchMode>,
    #[serde(default)]
    pub filters: Option<SearchFilters>,
    /// Reorder the best candidates with the server's cross-encoder (`forja serve
    /// --rerank-model`); a 400 when it has none.
    #[serde(default)]
    pub rerank: bool,
}

/// A retrieved chunk with what a citation needs.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct CitedChunk {
    /// From 1: the rank in search results; the `[n]` that cites it in an answer.
    pub index: usize,
    /// The file's name.
    pub source: String,
    /// The document's key in the collection (the uploaded name, or the ingested file's path).
    pub path: String,
    /// The document's title.
    pub title: String,
    /// Headings from the document's top down to the chunk.
    pub section: Vec<String>,
    pub page: Option<u32>,
    /// `text`, `paragraph`, `list`, `table`, `code` or `heading`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `file, section, page N`, as `forja ask` prints it.
    pub label: String,
    /// The chunk's text.
    pub text: String,
    /// The document's date (`YYYY-MM-DD`, UTC), as the date filters read it.
    pub date: Option<String>,
    pub chunk_id: i64,
    /// The ranking score, higher is better: fused reciprocal rank (hybrid), BM25 or cosine
    /// similarity (vector).
    pub score: f64,
    /// Rank (from 1) in the keyword and in the vector ranking.
    pub bm25_rank: Option<usize>,
    pub vector_rank: Option<usize>,
    /// Cosine similarity to the query, when it was embedded.
    pub similarity: Option<f32>,
    /// The reranker's score (higher is better) when the request asked for `rerank`; the order
    /// of the results is then the reranker's and `score` the first stage's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_score: Option<f32>,
}

/// The answer of a search.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct SearchResult {
    /// Always `list`.
    pub object: &'static str,
    pub collection: String,
    pub mode: SearchMode,
    /// Best first.
    pub data: Vec<CitedChunk>,
}

/// The `retrieval` field of a chat completion request: answer the last user message from a
/// collection's documents, as `forja ask` does. The retrieved chunks that are relevant enough
/// and fit the model's context become numbered sources; the response's `citations` resolve
/// the answer's `[n]`.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Retrieval {
    pub collection: String,
    /// Chunks to retrieve (default 5, at most 100).
    #[serde(default)]
    pub k: Option<usize>,
    #[serde(default)]
    pub mode: Option<SearchMode>,
    /// Least cosine similarity for a chunk to be a source (default 0.3).
    #[serde(default)]
    pub min_similarity: Option<f32>,
    #[serde(default)]
    pub filters: Option<SearchFilters>,
    /// Reorder the retrieved chunks with the server's cross-encoder before choosing the
    /// sources (see [`SearchRequest::rerank`]).
    #[serde(default)]
    pub rerank: bool,
}
