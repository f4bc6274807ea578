//! `forja bench model MODEL`: prompt-processing and generation speed, llama-bench style
//! (`pp512`: a 512-token prompt in one forward; `tg128`: 128 tokens one at a time), repeated.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use forja_arch::ModelDescription;
use forja_models::{Decoder, SeqStep};
use serde::Serialize;

use crate::output::{out, outln};
use crate::table::Table;
use crate::units::{gb, params};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Prompt-processing (pp) and generation (tg) tokens per second of one model on this machine
    Model(ModelBenchArgs),
    /// Load on an OpenAI-compatible server on this machine: TTFT, inter-token latency,
    /// throughput and goodput
    Serve(crate::cmd_bench_serve::ServeBenchArgs),
    /// Texts per second of a sentence-embedding model on this machine (what `forja ingest`
    /// spends most of its time on)
    Embed(crate::cmd_bench_embed::EmbedBenchArgs),
}

#[derive(Debug, Args)]
pub struct ModelBenchArgs {
    /// A .gguf file, an HF model folder, or a store, hub or catalog name (pulled if needed)
    model: String,
    /// Prompt lengths to time (comma-separated; 0 skips the prompt tests)
    #[arg(short = 'p', long, default_value = "512", value_delimiter = ',')]
    n_prompt: Vec<usize>,
    /// Generation lengths to time (comma-separated; 0 skips the generation tests)
    #[arg(short = 'n', long, default_value = "128", value_delimiter = ',')]
    n_gen: Vec<usize>,
    /// Repetitions of each test
    #[arg(short = 'r', long, default_value_t = 3)]
    repetitions: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct BenchResult {
    model: String,
    model_bytes: u64,
    params: u64,
    test: String,
    n_tokens: usize,
    repetitions: usize,
    avg_tokens_per_s: f64,
    stddev_tokens_per_s: f64,
    samples_ns: Vec<u128>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    match a.what {
        BenchWhat::Model(m) => bench_model(m),
        BenchWhat::Serve(s) => crate::cmd_bench_serve::run(s),
        BenchWhat::Embed(e) => crate::cmd_bench_embed::run(e),
    }
}

/// Deterministic token ids spread over the vocabulary (content does not change the cost).
fn tokens(n: usize, vocab: u64) -> Vec<u32> {
    (0..n as u64)
        .map(|i| ((i * 7919 + 13) % vocab.max(1)) as u32)
        .collect()
}

fn time_prompt(d: &Decoder, ids: &[u32]) -> Result<u128> {
    let mut cache = d.new_cache();
    let start = Instant::now();
    let mut step = [SeqStep {
        tokens: ids,
        cache: &mut cache,
        all_logits: false,
        adapter: None,
    }];
    d.forward(&mut step)?;
    Ok(start.elapsed().as_nanos())
}

fn time_generation(d: &Decoder, n: usize, vocab: u64) -> Result<u128> {
    let mut cache = d.new_cache();
    let ids = tokens(n, vocab);
    let start = Instant::now();
    for id in &ids {
        let mut step = [SeqStep {
            tokens: std::slice::from_ref(id),
            cache: &mut cache,
            all_logits: false,
            adapter: None,
        }];
        d.forward(&mut step)?;
    }
    Ok(start.elapsed().as_nanos())
}

fn bench_model(a: ModelBenchArgs) -> Result<()> {
    if a.repetitions == 0 || a.repetitions > 1000 {
        bail!("invalid --repetitions {}: use 1..=1000", a.repetitions);
    }
    let (name, path) = crate::model_arg::local_model(&a.model)?;
    let desc = ModelDescription::from_path(&path)
        .with_context(|| format!("reading {}", path.display()))?;
    let max_ctx = desc.config.max_context as usize;
    // A length of 0 skips that kind of test, as llama-bench's `-p 0` / `-n 0` do.
    let n_prompt: Vec<usize> = a.n_prompt.iter().copied().filter(|&n| n > 0).collect();
    let n_gen: Vec<usize> = a.n_gen.iter().copied().filter(|&n| n > 0).collect();
    if n_prompt.is_empty() && n_gen.is_empty() {
        bail!("nothing to time: every -p and -n length is 0");
    }
    for &n in n_prompt.iter().chain(&n_gen) {
        if n > max_ctx {
            bail!("test length {n} must be between 1 and the model's context of {max_ctx} tokens");
        }
    }
    let decoder = forja_models::loader::load(&path, &candle_core::Device::Cpu)
        .with_context(|| format!("loading {}", path.display()))?;
    let vocab = decoder.config.vocab_size;
    let model_bytes = desc.stored.as_ref().map_or(0, |s| s.file_bytes);
    let n_params = desc.weights(None).params;
    // One untimed pass warms caches and page-ins the mapped weights.
    time_prompt(&decoder, &tokens(8.min(max_ctx), vocab))?;
    let mut results = Vec::new();
    let tests = n_prompt
        .iter()
        .map(|&n| ("pp", n))
        .chain(n_gen.iter().map(|&n| ("tg", n)));
    for (kind, n) in tests {
        let mut samples = Vec::with_capacity(a.repetitions);
        for _ in 0..a.repetitions {
            samples.push(if kind == "pp" {
                time_prompt(&decoder, &tokens(n, vocab))?
            } else {
                time_generation(&decoder, n, vocab)?
            });
        }
        let rates: Vec<f64> = samples
            .iter()
            .map(|&ns| n as f64 / (ns as f64 / 1e9))
            .collect();
        let avg = rates.iter().sum::<f64>() / rates.len() as f64;
        let var =
            rates.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / (rates.len().max(2) - 1) as f64;
        results.push(BenchResult {
            model: name.clone(),
            model_bytes,
            params: n_params,
            test: format!("{kind}{n}"),
            n_tokens: n,
            repetitions: a.repetitions,
            avg_tokens_per_s: avg,
            stddev_tokens_per_s: var.sqrt(),
            samples_ns: samples,
        });
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    let mut t = Table::new(&["model", "size", "params", "test", "t/s"]);
    for r in &results {
        t.row(vec![
            r.model.clone(),
            gb(r.model_bytes),
            params(r.params),
            r.test.clone(),
            format!("{:.2} ± {:.2}", r.avg_tokens_per_s, r.stddev_tokens_per_s),
        ]);
    }
    out!("{}", t.render());
    Ok(())
}
