//! Retrieval: keyword search (FTS5 BM25), vector search (sqlite-vec, cosine distance) and their
//! hybrid by reciprocal-rank fusion, with filters on source, section and chunk kind.

use std::collections::HashMap;
use std::path::PathBuf;

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use crate::document::ElementKind;
use crate::error::{RagError, Result};
use crate::model::Embedder;
use crate::store::{Collection, SECTION_SEP, Store, vec_table, vector_blob};

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
}

impl Filters {
    fn is_empty(&self) -> bool {
        self.source.is_none() && self.section.is_none() && self.kind.is_none()
    }

    /// SQL conditions on `c` (chunks) and `d` (documents), with their values.
    fn sql(&self) -> (String, Vec<Value>) {
        let mut sql = String::new();
        let mut values = Vec::new();
        if let Some(s) = &self.source {
            sql += " AND instr(lower(d.path), lower(?)) > 0";
            values.push(Value::Text(s.clone()));
        }
        if let Some(s) = &self.section {
            sql += " AND instr(lower(c.section), lower(?)) > 0";
            values.push(Value::Text(s.clone()));
        }
        if let Some(k) = self.kind {
            sql += " AND c.kind = ?";
            values.push(Value::Text(k.as_str().to_string()));
        }
        (sql, values)
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
    /// The ranking score, higher is better: fused reciprocal rank (hybrid), negated BM25
    /// (keywords) or cosine similarity (vector).
    pub score: f64,
    /// Rank (from 1) in the keyword and vector rankings that produced this hit.
    pub bm25_rank: Option<usize>,
    pub vector_rank: Option<usize>,
    /// Cosine similarity of the chunk to the query, when the query was embedded.
    pub similarity: Option<f32>,
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
    let (ranked, bm25, vector): (Vec<(i64, f64)>, Vec<i64>, Vec<i64>) = match query.mode {
        SearchMode::Bm25 => {
            let b = bm25(store, &c, &query.text, &query.filters, query.k)?;
            let ids = b.iter().map(|x| x.0).collect();
            (b, ids, Vec::new())
        }
        SearchMode::Vector => {
            let v = nearest(
                store,
                &c,
                vector_of(&query_vector)?,
                &query.filters,
                query.k,
            )?;
            let ids = v.iter().map(|x| x.0).collect();
            (v, Vec::new(), ids)
        }
        SearchMode::Hybrid => {
            let b: Vec<i64> = bm25(store, &c, &query.text, &query.filters, depth)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            let v: Vec<i64> = nearest(store, &c, vector_of(&query_vector)?, &query.filters, depth)?
                .into_iter()
                .map(|x| x.0)
                .collect();
            (rrf_fuse(&[&b, &v]), b, v)
        }
    };
    let rank_of = |ids: &[i64], id| ids.iter().position(|&x| x == id).map(|p| p + 1);
    let mut hits = Vec::new();
    for (id, score) in ranked.into_iter().take(query.k) {
        let mut hit = chunk_hit(store, &c, id, query_vector.as_deref())?;
        hit.score = score;
        hit.bm25_rank = rank_of(&bm25, id);
        hit.vector_rank = rank_of(&vector, id);
        hits.push(hit);
    }
    Ok(hits)
}

fn vector_of(v: &Option<Vec<f32>>) -> Result<&[f32]> {
    v.as_deref()
        .ok_or_else(|| RagError::Input("this search needs a query vector".into()))
}

/// The words of `text` as an FTS5 query: each word quoted (so no word is read as an operator),
/// any of them matching.
fn fts_query(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| format!("\"{w}\""))
        .collect();
    (!words.is_empty()).then(|| words.join(" OR "))
}

/// The `limit` best chunks by BM25, with their negated BM25 score (higher is better).
fn bm25(
    store: &Store,
    c: &Collection,
    text: &str,
    filters: &Filters,
    limit: usize,
) -> Result<Vec<(i64, f64)>> {
    let Some(fts) = fts_query(text) else {
        return Ok(Vec::new());
    };
    let (cond, values) = filters.sql();
    let sql = format!(
        "SELECT c.id, bm25(chunk_fts) AS s FROM chunk_fts \
         JOIN chunks c ON c.id = chunk_fts.rowid JOIN documents d ON d.id = c.document_id \
         WHERE chunk_fts MATCH ? AND c.collection_id = ?{cond} ORDER BY s, c.id LIMIT ?"
    );
    let mut all = vec![Value::Text(fts), Value::Integer(c.id)];
    all.extend(values);
    all.push(Value::Integer(limit as i64));
    query_pairs(store, &sql, all, "keyword search")
        .map(|v| v.into_iter().map(|(id, s)| (id, -s)).collect())
}

/// The `limit` chunks nearest to `vector`, with their cosine similarity. Without filters this is
/// sqlite-vec's KNN query; with filters, an exact scan of the chunks that pass them.
fn nearest(
    store: &Store,
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
    let table = vec_table(c.id);
    let blob = Value::Blob(vector_blob(vector));
    let pairs = if filters.is_empty() {
        let sql = format!(
            "SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ? \
             ORDER BY distance"
        );
        query_pairs(
            store,
            &sql,
            vec![blob, Value::Integer(limit as i64)],
            "vector search",
        )?
    } else {
        let (cond, values) = filters.sql();
        let sql = format!(
            "SELECT c.id, vec_distance_cosine(v.embedding, ?) AS dist FROM chunks c \
             JOIN {table} v ON v.rowid = c.id JOIN documents d ON d.id = c.document_id \
             WHERE c.collection_id = ?{cond} ORDER BY dist, c.id LIMIT ?"
        );
        let mut all = vec![blob, Value::Integer(c.id)];
        all.extend(values);
        all.push(Value::Integer(limit as i64));
        query_pairs(store, &sql, all, "vector search")?
    };
    Ok(pairs.into_iter().map(|(id, d)| (id, 1.0 - d)).collect())
}

fn query_pairs(
    store: &Store,
    sql: &str,
    values: Vec<Value>,
    what: &str,
) -> Result<Vec<(i64, f64)>> {
    let mut stmt = store.conn.prepare(sql).map_err(store.err(what))?;
    stmt.query_map(params_from_iter(values), |r| Ok((r.get(0)?, r.get(1)?)))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(store.err(what))
}

/// A chunk's stored fields, with its similarity to `query` when given.
fn chunk_hit(store: &Store, c: &Collection, id: i64, query: Option<&[f32]>) -> Result<Hit> {
    let similarity = match query {
        Some(q) => {
            let d: f64 = store
                .conn
                .query_row(
                    &format!(
                        "SELECT vec_distance_cosine(embedding, ?1) FROM {} WHERE rowid = ?2",
                        vec_table(c.id)
                    ),
                    rusqlite::params![vector_blob(q), id],
                    |r| r.get(0),
                )
                .map_err(store.err("reading a chunk's vector"))?;
            Some((1.0 - d) as f32)
        }
        None => None,
    };
    store
        .conn
        .query_row(
            "SELECT d.path, d.title, c.section, c.page, c.kind, c.text, c.span_start, c.span_end \
             FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.id = ?1",
            [id],
            |r| {
                let section: String = r.get(2)?;
                let kind: String = r.get(4)?;
                let start: Option<i64> = r.get(6)?;
                let end: Option<i64> = r.get(7)?;
                Ok(Hit {
                    chunk_id: id,
                    source: PathBuf::from(r.get::<_, String>(0)?),
                    title: r.get(1)?,
                    section: section
                        .split(SECTION_SEP)
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect(),
                    page: r.get(3)?,
                    kind: ElementKind::parse(&kind).unwrap_or(ElementKind::Text),
                    text: r.get(5)?,
                    span: start.zip(end).map(|(s, e)| s as usize..e as usize),
                    score: 0.0,
                    bm25_rank: None,
                    vector_rank: None,
                    similarity,
                })
            },
        )
        .map_err(store.err("reading a chunk"))
}
