//! Document collections over HTTP (retrieval-augmented generation): collections, uploads,
//! search ([`routes`], [`upload`]) and chat completions that answer from a collection
//! ([`chat`]). The RAG store is the one `forja ingest` writes (a SQLite file or PostgreSQL), opened
//! on first use and shared by every request; the embedding model is loaded once, on first use.
//! Store and model work runs on blocking threads, never on the async workers.

pub mod chat;
pub mod embedder;
pub mod routes;
pub mod upload;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use forja_rag::{RagError, Store};
use tokio::sync::OnceCell;

pub use embedder::{EngineEmbedder, EngineReranker};

use crate::error::ApiError;

/// Largest uploaded file unless told otherwise: 64 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 << 20;

/// Where the server's collections are and what it accepts.
#[derive(Debug, Clone)]
pub struct RagConfig {
    /// The store: a SQLite file or a `postgres://` URL.
    pub store: String,
    /// The embedding model folder, or why there is none (said to clients that need it).
    pub embedding_model: Result<PathBuf, String>,
    /// The cross-encoder that reorders results of requests asking for `rerank`, if any.
    pub rerank_model: Option<PathBuf>,
    /// Largest uploaded file in bytes (larger ones are a 413). A request may carry up to four
    /// files of this size.
    pub max_upload_bytes: usize,
}

impl RagConfig {
    /// The body limit of an upload request.
    pub fn max_upload_request_bytes(&self) -> usize {
        self.max_upload_bytes
            .saturating_mul(4)
            .saturating_add(1 << 20)
    }
}

/// The store and embedding model of a server, opened and loaded on first use.
#[derive(Debug)]
pub struct RagState {
    pub config: RagConfig,
    store: Arc<Mutex<Option<Store>>>,
    embedder: OnceCell<Arc<EngineEmbedder>>,
    reranker: OnceCell<Arc<EngineReranker>>,
}

impl RagState {
    pub fn new(config: RagConfig) -> Self {
        RagState {
            config,
            store: Arc::new(Mutex::new(None)),
            embedder: OnceCell::new(),
            reranker: OnceCell::new(),
        }
    }

    /// Runs `f` with the store on a blocking thread (opening the store first if needed).
    /// Requests take turns: one store connection serves them all.
    pub async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let slot = Arc::clone(&self.store);
        let location = self.config.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = slot
                .lock()
                .map_err(|_| ApiError::internal("the RAG store's lock was poisoned"))?;
            if guard.is_none() {
                *guard = Some(Store::open_location(&location).map_err(rag_error)?);
            }
            match guard.as_ref() {
                Some(store) => f(store),
                None => Err(ApiError::internal("the RAG store is not open")),
            }
        })
        .await
        .map_err(|e| ApiError::internal(format!("the RAG store task failed: {e}")))?
    }

    /// The embedding model, loaded on first use (on a blocking thread).
    pub async fn embedder(&self) -> Result<Arc<EngineEmbedder>, ApiError> {
        let dir = self
            .config
            .embedding_model
            .clone()
            .map_err(ApiError::unavailable)?;
        load_once(&self.embedder, dir, "embedding model", EngineEmbedder::load).await
    }

    /// The reranker when `wanted`, loaded on first use; a 400 naming `param` when the server
    /// has none.
    pub async fn reranker(
        &self,
        wanted: bool,
        param: &str,
    ) -> Result<Option<Arc<EngineReranker>>, ApiError> {
        if !wanted {
            return Ok(None);
        }
        let dir = self.config.rerank_model.clone().ok_or_else(|| {
            ApiError::param(
                param,
                "this server has no reranker: start it with --rerank-model DIR (a cross-encoder \
                 such as cross-encoder/ms-marco-MiniLM-L-6-v2)",
            )
        })?;
        load_once(&self.reranker, dir, "reranker", EngineReranker::load)
            .await
            .map(Some)
    }
}

/// The model in `cell`, loaded from `dir` by `load` on a blocking thread the first time.
async fn load_once<T: Send + Sync + 'static>(
    cell: &OnceCell<Arc<T>>,
    dir: PathBuf,
    what: &'static str,
    load: fn(&std::path::Path) -> forja_engine::Result<T>,
) -> Result<Arc<T>, ApiError> {
    cell.get_or_try_init(|| async move {
        tokio::task::spawn_blocking(move || {
            load(&dir).map(Arc::new).map_err(|e| {
                ApiError::unavailable(format!("cannot load the {what} {}: {e}", dir.display()))
            })
        })
        .await
        .map_err(|e| ApiError::internal(format!("loading the {what}: {e}")))?
    })
    .await
    .cloned()
}

/// The chunks of `collection` for `q`, with the embedding model when the mode needs it and the
/// reranker when `rerank` (a 400 naming `rerank_param` when the server has none).
pub async fn retrieve(
    rag: &RagState,
    collection: String,
    q: forja_rag::SearchQuery,
    rerank: bool,
    rerank_param: &str,
) -> Result<Vec<forja_rag::Hit>, ApiError> {
    // Keyword search needs no embedding model.
    let embedder = match q.mode {
        forja_rag::SearchMode::Bm25 => None,
        _ => Some(rag.embedder().await?),
    };
    let reranker = rag.reranker(rerank, rerank_param).await?;
    rag.with_store(move |store| {
        let e = embedder.as_deref().map(|e| e as &dyn forja_rag::Embedder);
        let r = reranker.as_deref().map(|r| r as &dyn forja_rag::Reranker);
        forja_rag::search_with(store, &collection, &q, e, r).map_err(rag_error)
    })
    .await
}

/// The state's RAG part, or a 503 saying the server has none.
pub fn rag_of(state: &crate::AppState) -> Result<&RagState, ApiError> {
    state.rag.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "this server keeps no document collections (`forja serve` does, in --rag-store)",
        )
    })
}

/// A RAG failure as HTTP: bad input and unknown collections are the client's, a store that
/// cannot be reached is a 503, the rest is the server's.
pub fn rag_error(e: RagError) -> ApiError {
    let message = e.to_string();
    match e {
        RagError::NoSuchCollection { .. } => ApiError::with_status(StatusCode::NOT_FOUND, message),
        RagError::Collection { .. } | RagError::Input(_) | RagError::Parse { .. } => {
            ApiError::invalid(message)
        }
        RagError::TooLarge { .. } => ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, message),
        RagError::Server { .. } => ApiError::unavailable(message),
        _ => ApiError::internal(message),
    }
}

/// A collection name from a URL or a body: not empty, at most 200 characters, no control
/// characters.
pub fn check_collection_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::param("name", "a collection needs a name"));
    }
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::param(
            "name",
            "a collection name has at most 200 characters and no control characters",
        ));
    }
    Ok(())
}

/// A retrieved chunk as the API shows it; `index` from 1.
pub fn cited(index: usize, hit: &forja_rag::Hit) -> forja_api::rag::CitedChunk {
    forja_api::rag::CitedChunk {
        index,
        source: hit.source.file_name().map_or_else(
            || hit.source.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        path: hit.source.display().to_string(),
        title: hit.title.clone(),
        section: hit.section.clone(),
        page: hit.page,
        kind: hit.kind.as_str(),
        label: forja_rag::answer::source_label(hit),
        text: hit.text.clone(),
        date: hit.date.map(forja_rag::date::iso_date),
        chunk_id: hit.chunk_id,
        score: hit.score,
        bm25_rank: hit.bm25_rank,
        vector_rank: hit.vector_rank,
        similarity: hit.similarity,
        rerank_score: hit.rerank_score,
    }
}

/// Most chunks one search or retrieval may ask for.
pub const MAX_K: usize = 100;

/// A search of the API as the RAG crate's query; bad values are 400s naming the field.
pub fn query(
    text: &str,
    k: Option<usize>,
    mode: Option<forja_api::rag::SearchMode>,
    filters: Option<&forja_api::rag::SearchFilters>,
    param: &str,
) -> Result<forja_rag::SearchQuery, ApiError> {
    use forja_api::rag::SearchMode as Api;
    if text.trim().is_empty() {
        return Err(ApiError::param(param, format!("{param} must not be empty")));
    }
    let k = k.unwrap_or(5);
    if k == 0 || k > MAX_K {
        return Err(ApiError::param(
            "k",
            format!("k must be between 1 and {MAX_K} (got {k})"),
        ));
    }
    let mut out = forja_rag::Filters::default();
    if let Some(f) = filters {
        out.source = f.source.clone();
        out.section = f.section.clone();
        out.kind = match &f.kind {
            None => None,
            Some(k) => Some(forja_rag::ElementKind::parse(k).ok_or_else(|| {
                ApiError::param(
                    "filters.type",
                    format!(
                        "unknown chunk type {k:?}: use text, paragraph, list, table, code or \
                         heading"
                    ),
                )
            })?),
        };
        (out.after, out.before) =
            forja_rag::date::range(f.after.as_deref(), f.before.as_deref())
                .map_err(|e| ApiError::param(&format!("filters.{}", e.bound), e.message))?;
    }
    Ok(forja_rag::SearchQuery {
        text: text.to_string(),
        mode: match mode.unwrap_or_default() {
            Api::Hybrid => forja_rag::SearchMode::Hybrid,
            Api::Bm25 => forja_rag::SearchMode::Bm25,
            Api::Vector => forja_rag::SearchMode::Vector,
        },
        k,
        filters: out,
    })
}
