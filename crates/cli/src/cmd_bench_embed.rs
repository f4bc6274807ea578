//! `forja bench embed --texts FILE`: how fast this machine embeds texts with a sentence-embedding
//! model, through the same embedder `forja ingest` uses (batches of `--batch` texts, inputs
//! longer than the model's limit cut to it).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_rag::Embedder;
use serde::Serialize;

use crate::output::outln;
use crate::rag_setup::{embedding_model_dir, load_embedder_at};

#[derive(Debug, Args)]
pub struct EmbedBenchArgs {
    /// Texts to embed, one per line (empty lines are skipped)
    #[arg(long, value_name = "FILE")]
    texts: PathBuf,
    /// The embedding model folder (sentence-transformers layout) [default: all-minilm-l6-v2
    /// under $FORJA_HOME/models or ~/.cache/forja/models]
    #[arg(long, value_name = "DIR")]
    embedding_model: Option<PathBuf>,
    /// Texts per call
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Passes over all the texts (the first is also timed; the model loads before it)
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Write each text's vector as a JSON array per line (from the first pass), to compare them
    /// with another implementation's
    #[arg(long, value_name = "FILE")]
    vectors: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct EmbedBenchResult {
    model: String,
    texts: usize,
    /// Tokens of all texts as the model reads them (special tokens included, before cutting to
    /// the model's limit).
    tokens: usize,
    batch: usize,
    repetitions: usize,
    avg_texts_per_s: f64,
    stddev_texts_per_s: f64,
    avg_tokens_per_s: f64,
    samples_ns: Vec<u128>,
}

pub fn run(a: EmbedBenchArgs) -> Result<()> {
    if a.batch == 0 || a.repetitions == 0 {
        bail!("--batch and --repetitions must be at least 1");
    }
    let text = std::fs::read_to_string(&a.texts)
        .with_context(|| format!("reading {}", a.texts.display()))?;
    let texts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if texts.is_empty() {
        bail!(
            "{}: no text to embed (one text per line)",
            a.texts.display()
        );
    }
    let dir = embedding_model_dir(a.embedding_model.as_deref())?;
    let embedder = load_embedder_at(&dir)?;
    let mut tokens = 0;
    for t in &texts {
        tokens += embedder.count_tokens(t)?;
    }
    let mut samples = Vec::with_capacity(a.repetitions);
    let mut first: Option<Vec<Vec<f32>>> = None;
    for _ in 0..a.repetitions {
        let start = Instant::now();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(a.batch) {
            vectors.extend(embedder.embed(batch)?);
        }
        samples.push(start.elapsed().as_nanos().max(1));
        first.get_or_insert(vectors);
    }
    if let (Some(path), Some(vectors)) = (&a.vectors, &first) {
        write_vectors(path, vectors)?;
    }
    let rates: Vec<f64> = samples
        .iter()
        .map(|&ns| texts.len() as f64 / (ns as f64 / 1e9))
        .collect();
    let avg = rates.iter().sum::<f64>() / rates.len() as f64;
    let var = rates.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / rates.len() as f64;
    let result = EmbedBenchResult {
        model: embedder.name(),
        texts: texts.len(),
        tokens,
        batch: a.batch,
        repetitions: a.repetitions,
        avg_texts_per_s: avg,
        stddev_texts_per_s: var.sqrt(),
        avg_tokens_per_s: avg * tokens as f64 / texts.len() as f64,
        samples_ns: samples,
    };
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        outln!(
            "{}: {} texts, {} tokens, batch {}: {:.1} ± {:.1} texts/s ({:.0} tokens/s) over {} passes",
            result.model,
            result.texts,
            result.tokens,
            result.batch,
            result.avg_texts_per_s,
            result.stddev_texts_per_s,
            result.avg_tokens_per_s,
            result.repetitions
        );
    }
    Ok(())
}

/// One JSON array per line; written beside and renamed in, so no half-written file remains.
fn write_vectors(path: &std::path::Path, vectors: &[Vec<f32>]) -> Result<()> {
    let tmp = path.with_extension("partial");
    let write = || -> Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for v in vectors {
            serde_json::to_writer(&mut f, v)?;
            f.write_all(b"\n")?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        e.context(format!("writing {}", path.display()))
    })
}
