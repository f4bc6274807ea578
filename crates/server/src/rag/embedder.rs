//! The engine's sentence embedder and cross-encoder reranker behind the RAG crate's
//! [`forja_rag::Embedder`] and [`forja_rag::Reranker`], shared by the server and `forja ingest` /
//! `search` / `ask`.

use std::path::Path;

use forja_rag::RagError;

/// The engine's sentence embedder behind [`forja_rag::Embedder`]. Its name is the model
/// folder's name, which a collection records.
#[derive(Debug)]
pub struct EngineEmbedder {
    inner: forja_engine::Embedder,
    name: String,
}

impl EngineEmbedder {
    /// Loads the model folder `dir` (sentence-transformers layout) for the CPU.
    pub fn load(dir: &Path) -> forja_engine::Result<Self> {
        let inner = forja_engine::Embedder::load_cpu(dir)?;
        let name = forja_engine::model::display_name(dir);
        Ok(EngineEmbedder { inner, name })
    }
}

fn embedding_err(e: forja_engine::EngineError) -> RagError {
    RagError::Embedding(e.to_string())
}

impl forja_rag::Embedder for EngineEmbedder {
    fn embed(&self, texts: &[&str]) -> forja_rag::Result<Vec<Vec<f32>>> {
        // Chunks fit the model; a long query is cut to the model's limit.
        self.inner
            .embed(texts, true)
            .map(|e| e.vectors)
            .map_err(embedding_err)
    }
    fn dimension(&self) -> usize {
        self.inner.dimension()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn count_tokens(&self, text: &str) -> forja_rag::Result<usize> {
        self.inner.count_tokens(text).map_err(embedding_err)
    }
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// The engine's cross-encoder behind [`forja_rag::Reranker`].
#[derive(Debug)]
pub struct EngineReranker {
    inner: forja_engine::Reranker,
}

impl EngineReranker {
    /// Loads the cross-encoder folder `dir` (an HF `…ForSequenceClassification` with one
    /// output) for the CPU.
    pub fn load(dir: &Path) -> forja_engine::Result<Self> {
        Ok(EngineReranker {
            inner: forja_engine::Reranker::load_cpu(dir)?,
        })
    }
}

impl forja_rag::Reranker for EngineReranker {
    fn score(&self, query: &str, passages: &[&str]) -> forja_rag::Result<Vec<f32>> {
        self.inner
            .score(query, passages)
            .map_err(|e| RagError::Rerank(e.to_string()))
    }
    fn name(&self) -> String {
        self.inner.name().to_string()
    }
}
