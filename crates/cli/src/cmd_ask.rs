//! `forja ask "question" --collection NAME --model MODEL`: answers from the documents of a
//! collection, citing them, or says that nothing relevant was found.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_engine::{GenerateParams, LoadedModel, SamplingParams};
use forja_rag::answer::relevant;
use forja_rag::{AnswerOptions, SearchMode, SearchQuery, answer, search_with};

use crate::cmd_search::RetrievalArgs;
use crate::output::{emit, outln};
use crate::rag_setup::{EngineGenerator, StoreArgs, hit_lines};

#[derive(Debug, Args)]
#[command(
    after_help = "The answer streams as it is generated, then the sources its [n] \
citations refer to. The sources are the retrieved chunks (hybrid search) at least \
--min-similarity close to the question, as many as fit the model's context next to \
--max-tokens of answer; when none is that close, forja says so and does not ask the model."
)]
pub struct AskArgs {
    /// The question
    question: String,
    /// The chat model: a .gguf file or an HF model folder
    #[arg(long, short = 'm')]
    model: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    retrieval: RetrievalArgs,
    /// Least cosine similarity between question and chunk for the chunk to be used
    #[arg(long, default_value_t = AnswerOptions::default().min_similarity)]
    min_similarity: f32,
    /// Most tokens of the answer
    #[arg(long, default_value_t = AnswerOptions::default().max_answer_tokens)]
    max_tokens: usize,
    /// Context length in tokens (default: the model's own)
    #[arg(long)]
    ctx: Option<u64>,
    /// Sampling temperature (0 = greedy, the same answer every time)
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Random seed for sampling
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: AskArgs) -> Result<()> {
    if !a.model.exists() {
        bail!(
            "no such model file or folder: {} (pass a .gguf file or an HF model folder)",
            a.model.display()
        );
    }
    let sampling = SamplingParams {
        temperature: a.temperature,
        seed: a.seed,
        ..SamplingParams::default()
    };
    sampling.validate()?;
    let store = a.store.open_store(true)?;
    let embedder = a.store.load_embedder()?;
    let query = SearchQuery {
        text: a.question.clone(),
        mode: SearchMode::Hybrid,
        k: a.retrieval.k,
        filters: a.retrieval.filters()?,
    };
    let reranker = a.retrieval.reranker()?;
    let hits = search_with(
        &store,
        &a.store.collection,
        &query,
        Some(&embedder),
        reranker.as_ref().map(|r| r as &dyn forja_rag::Reranker),
    )?;
    let hits = relevant(hits, a.min_similarity);
    if hits.is_empty() {
        outln!(
            "{}",
            forja_rag::answer::nothing_relevant(&a.store.collection)
        );
        return Ok(());
    }
    let model = LoadedModel::load_cpu(&a.model, a.ctx)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let mut generator = EngineGenerator {
        model,
        params: GenerateParams {
            sampling,
            ..GenerateParams::default()
        },
    };
    let options = AnswerOptions {
        max_answer_tokens: a.max_tokens,
        min_similarity: a.min_similarity,
    };
    let answer = answer(&mut generator, &a.question, hits, options, &mut |piece| {
        emit(piece)
    })?;
    let Some(answer) = answer else {
        // `relevant` above already kept only relevant hits.
        return Ok(());
    };
    outln!();
    outln!();
    outln!("Sources:");
    for (i, h) in answer.sources.iter().enumerate() {
        let (label, first) = hit_lines(h, 80);
        outln!("[{}] {label}: {first}", i + 1);
    }
    Ok(())
}
