//! Retrieval: keyword search (BM25), vector search (cosine similarity) and their hybrid by
//! reciprocal-rank fusion, with filters on source, section, chunk kind and document date. The store's backend
//! produces each ranking; the fusion and everything around it is here, once for both.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::document::ElementKind;
use crate::error::{RagError, Result};
use crate::model::{Embedder, Reranker};
use crate::store::Store;

/// The constant of reciprocal-rank fusion: a result at rank r (from 1) adds 1 / (k + r).
/// Cormack, Clarke and Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual
/// Rank Learning Methods" (SIGIR 2009), which found k = 60 good across collections.
pub const RRF_K: f64 = 60.0;

/// How chunks are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchMode {
    /// BM25 and vector rankings fused by reciprocal rank.
    #[default]
    Hybrid,
    /// Keywords only (no embedding model needed).
    Bm25,
    /// Embedding similarity only.
    Vector,
}

/// Conditions every result meets; text conditions match case-insensitively as substrings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Part of the source file's path.
    pub source: Option<String>,
    /// Part of any heading of the section path.
    pub section: Option<String>,
    /// The chunk's kind.
    pub kind: Option<ElementKind>,
    /// Documents dated at or after this time (seconds since the Unix epoch): by the date the
    /// document gives itself, else its file's modification time (see [`Hit::date`]).
    pub after: Option<i64>,
    /// Documents dated at or before this time.
    pub before: Option<i64>,
}

impl Filters {
    pub(crate) fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.section.is_none()
            && self.kind.is_none()
            && self.after.is_none()
            && self.before.is_none()
    }
}

/// A search request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub text: String,
    pub mode: SearchMode,
    /// Results wanted.
    pub k: usize,
    pub filters: Filters,
}

/// One retrieved chunk.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub chunk_id: i64,
    pub source: PathBuf,
    /// Title of the chunk's document.
    pub title: String,
    pub section: Vec<String>,
    pub page: Option<u32>,
    pub kind: ElementKind,
    pub text: String,
    /// Byte range in the source, when known.
    pub span: Option<std::ops::Range<usize>>,
    /// The document's date (seconds since the Unix epoch): the date it gives itself
    /// ([`crate::Document::date`]), else its file's modification time when ingested.
    pub date: Option<i64>,
    /// The ranking score, higher is better: fused reciprocal rank (hybrid), BM25 (keywords) or
    /// cosine similarity (vector).
    pub score: f64,
    /// Rank (from 1) in the keyword and vector rankings that produced this hit.
    pub bm25_rank: Option<usize>,
    pub vector_rank: Option<usize>,
    /// Cosine similarity of the chunk to the query, when the query was embedded.
    pub similarity: Option<f32>,
    /// The reranker's score of the chunk for the query (higher is better), when a reranker
    /// ordered the results; `score` is then the first stage's.
    pub rerank_score: Option<f32>,
}

/// Fuses rankings (ids best first) by reciprocal rank: score = Σ 1 / (`RRF_K` + rank). Ties go
/// to the smaller id, so the order is deterministic.
pub fn rrf_fuse(rankings: &[&[i64]]) -> Vec<(i64, f64)> {
    let mut scores: HashMap<i64, f64> = HashMap::new();
    for ranking in rankings {
        for (i, id) in ranking.iter().enumerate() {
            *scores.entry(*id).or_default() += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    let mut fused: Vec<(i64, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

/// Most candidates of the first stage a reranker reads.
pub const MAX_RERANK_DEPTH: usize = 100;

/// Candidates of the first stage a reranker reads for `k` results: `max(4k, 20)`, at most
/// [`MAX_RERANK_DEPTH`] (and never fewer than `k`).
pub fn rerank_depth(k: usize) -> usize {
    (4 * k).clamp(20, MAX_RERANK_DEPTH).max(k)
}

/// [`search`], then, with a `reranker`, the first stage's best [`rerank_depth`] candidates
/// reordered by the reranker's scores (ties keep the first stage's order) and cut to `k`.
pub fn search_with(
    store: &Store,
    collection: &str,
    query: &SearchQuery,
    embedder: Option<&dyn Embedder>,
    reranker: Option<&dyn Reranker>,
) -> Result<Vec<Hit>> {
    let Some(reranker) = reranker else {
        return search(store, collection, query, embedder);
    };
    let first = SearchQuery {
        k: rerank_depth(query.k),
        ..query.clone()
    };
    let mut hits = search(store, collection, &first, embedder)?;
    if hits.is_empty() {
        return Ok(hits);
    }
    let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
    let scores = reranker.score(&query.text, &texts)?;
    if scores.len() != hits.len() || scores.iter().any(|s| !s.is_finite()) {
        return Err(RagError::Rerank(format!(
            "the reranker {} gave {} scores for {} passages{}",
            reranker.name(),
            scores.len(),
            hits.len(),
            if scores.iter().any(|s| !s.is_finite()) {
                ", not all of them numbers"
            } else {
                ""
            }
        )));
    }
    for (hit, s) in hits.iter_mut().zip(scores) {
        hit.rerank_score = Some(s);
    }
    // A stable sort: equal scores keep the first stage's order.
    hits.sort_by(|a, b| {
        b.rerank_score
            .unwrap_or(0.0)
            .total_cmp(&a.rerank_score.unwrap_or(0.0))
    });
    hits.truncate(query.k);
    Ok(hits)
}

/// Searches `collection` for `query`. Vector and hybrid modes need the collection's embedding
/// model as `embedder`.
pub fn search(
    store: &Store,
    collection: &str,
    query: &SearchQuery,
    embedder: Option<&dyn Embedder>,
) -> Result<Vec<Hit>> {
    let c = store.existing_collection(collection)?;
    if query.k == 0 {
        return Ok(Vec::new());
    }
    let query_vector = match (query.mode, embedder) {
        (SearchMode::Bm25, _) => None,
        (_, None) => {
            return Err(RagError::Input(
                "vector and hybrid search need the collection's embedding model".into(),
            ));
        }
        (_, Some(e)) => {
            if e.name() != c.embedding_model || e.dimension() != c.dimension {
                return Err(RagError::Collection {
                    name: c.name.clone(),
                    what: format!(
                        "it was embedded with {}, not {}: search it with that model",
                        c.embedding_model,
                        e.name()
                    ),
                });
            }
            let mut v = e.embed(&[query.text.as_str()])?;
            Some(v.pop().ok_or_else(|| {
                RagError::Embedding("the model returned no vector for the query".into())
            })?)
        }
    };
    // Candidates of each ranking considered by the fusion.
    let depth = (query.k * 4).max(50);
    let words = query_words(&query.text);
    let (ranked, bm25, vector): (Vec<(i64, f64)>, Vec<i64>, Vec<i64>) = match query.mode {
        SearchMode::Bm25 => {
            let b = store.keyword_ranking(&c, &words, &query.filters, query.k)?;
            let ids = b.iter().map(|x| x.0).collect();
            (b, ids, Vec::new())
        }
        SearchMode::Vector => {
            let v = store.vector_ranking(&c, vector_of(&query_vector)?, &query.filters, query.k)?;
            let ids = v.iter().map(|x| x.0).collect();
            (v, Vec::new(), ids)
        }
        SearchMode::Hybrid => {
            let b: Vec<i64> = store
                .keyword_ranking(&c, &words, &query.filters, depth)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            let v: Vec<i64> = store
                .vector_ranking(&c, vector_of(&query_vector)?, &query.filters, depth)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            (rrf_fuse(&[&b, &v]), b, v)
        }
    };
    let rank_of = |ids: &[i64], id| ids.iter().position(|&x| x == id).map(|p| p + 1);
    let ranked: Vec<(i64, f64)> = ranked.into_iter().take(query.k).collect();
    let ids: Vec<i64> = ranked.iter().map(|r| r.0).collect();
    let mut hits = store.hits(&c, &ids, query_vector.as_deref())?;
    for (hit, (id, score)) in hits.iter_mut().zip(ranked) {
        hit.score = score;
        hit.bm25_rank = rank_of(&bm25, id);
        hit.vector_rank = rank_of(&vector, id);
    }
    Ok(hits)
}

fn vector_of(v: &Option<Vec<f32>>) -> Result<&[f32]> {
    v.as_deref()
        .ok_or_else(|| RagError::Input("this search needs a query vector".into()))
}

/// The words of a query (runs of letters and digits): what the keyword side looks for, any of
/// them matching. Query syntax of either backend (quotes, operators) is never read as such.
pub(crate) fn query_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}
