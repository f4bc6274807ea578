//! `forja search "query" --collection NAME`: the chunks of a collection ranked for a query.

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use forja_rag::{ElementKind, Filters, SearchMode, SearchQuery, search_with};
use serde_json::json;

use crate::output::outln;
use crate::rag_setup::{StoreArgs, hit_lines};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Keywords and meaning, fused by reciprocal rank
    Hybrid,
    /// Keywords only (BM25)
    Bm25,
    /// Meaning only (embedding similarity)
    Vector,
}

impl From<Mode> for SearchMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Hybrid => SearchMode::Hybrid,
            Mode::Bm25 => SearchMode::Bm25,
            Mode::Vector => SearchMode::Vector,
        }
    }
}

/// Retrieval flags shared by `search` and `ask`.
#[derive(Debug, Args)]
pub struct RetrievalArgs {
    /// Chunks to retrieve
    #[arg(short = 'k', long = "top-k", default_value_t = 5)]
    pub k: usize,
    /// Only chunks of files whose path contains this text
    #[arg(long, value_name = "TEXT")]
    pub source: Option<String>,
    /// Only chunks under a heading containing this text
    #[arg(long, value_name = "TEXT")]
    pub section: Option<String>,
    /// Only chunks of this kind: text, paragraph, list, table, code
    #[arg(long = "type", value_name = "KIND")]
    pub kind: Option<String>,
    /// Only documents dated on or after this date (2024-01-01, or 2024-01-01T12:00:00Z): the
    /// date a document gives itself (PDF or Word metadata, HTML date meta tag, Markdown front
    /// matter, XBRL period end), else its file's modification time
    #[arg(long, value_name = "DATE")]
    pub after: Option<String>,
    /// Only documents dated on or before this date (a bare date includes that day)
    #[arg(long, value_name = "DATE")]
    pub before: Option<String>,
    /// Reorder the best candidates with this cross-encoder (an HF folder of a
    /// `…ForSequenceClassification` reranker, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2)
    #[arg(long, value_name = "DIR")]
    pub rerank_model: Option<std::path::PathBuf>,
}

impl RetrievalArgs {
    pub fn filters(&self) -> Result<Filters> {
        let kind = match &self.kind {
            Some(k) => match ElementKind::parse(k) {
                Some(k) => Some(k),
                None => bail!("unknown --type {k:?}: use text, paragraph, list, table or code"),
            },
            None => None,
        };
        let (after, before) = forja_rag::date::range(self.after.as_deref(), self.before.as_deref())
            .map_err(|e| anyhow::anyhow!("--{}", e.message))?;
        Ok(Filters {
            source: self.source.clone(),
            section: self.section.clone(),
            kind,
            after,
            before,
        })
    }

    /// The reranker of `--rerank-model`, loaded, when given.
    pub fn reranker(&self) -> Result<Option<forja_server::rag::EngineReranker>> {
        let Some(dir) = &self.rerank_model else {
            return Ok(None);
        };
        if !dir.join("config.json").is_file() {
            bail!(
                "--rerank-model: no model folder at {} (config.json missing)",
                dir.display()
            );
        }
        forja_server::rag::EngineReranker::load(dir)
            .map(Some)
            .with_context(|| format!("loading the reranker {}", dir.display()))
    }
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// What to look for
    query: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    /// How chunks are ranked
    #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
    mode: Mode,
    /// Print the hits as JSON (every field, the whole chunk text)
    #[arg(long)]
    json: bool,
}

pub fn run(a: SearchArgs) -> Result<()> {
    let store = a.store.open_store(true)?;
    let query = SearchQuery {
        text: a.query.clone(),
        mode: a.mode.into(),
        k: a.retrieval.k,
        filters: a.retrieval.filters()?,
    };
    // Keyword search needs no model.
    let embedder = match a.mode {
        Mode::Bm25 => None,
        _ => Some(a.store.load_embedder()?),
    };
    let reranker = a.retrieval.reranker()?;
    let hits = search_with(
        &store,
        &a.store.collection,
        &query,
        embedder.as_ref().map(|e| e as &dyn forja_rag::Embedder),
        reranker.as_ref().map(|r| r as &dyn forja_rag::Reranker),
    )?;
    if a.json {
        let list: Vec<_> = hits
            .iter()
            .enumerate()
            .map(|(i, h)| {
                json!({
                    "rank": i + 1,
                    "score": h.score,
                    "similarity": h.similarity,
                    "rerank_score": h.rerank_score,
                    "bm25_rank": h.bm25_rank,
                    "vector_rank": h.vector_rank,
                    "source": h.source.display().to_string(),
                    "title": h.title,
                    "section": h.section,
                    "page": h.page,
                    "kind": h.kind.as_str(),
                    "span": h.span.as_ref().map(|r| [r.start, r.end]),
                    "date": h.date.map(forja_rag::date::iso_date),
                    "text": h.text,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if hits.is_empty() {
        outln!("no chunk matches");
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        let (label, first) = hit_lines(h, 100);
        let similarity = h
            .similarity
            .map(|s| format!("  similarity {s:.3}"))
            .unwrap_or_default()
            + &h.rerank_score
                .map(|s| format!("  rerank {s:.3}"))
                .unwrap_or_default();
        outln!(
            "{}. score {:.4}{similarity}  [{}]  {label}",
            i + 1,
            h.score,
            h.kind
        );
        outln!("   {}", h.source.display());
        outln!("   {first}");
    }
    Ok(())
}
