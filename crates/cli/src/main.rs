//! `forja`: run large language models locally, from choosing the hardware to serving a company.

mod cmd_catalog;
mod cmd_hw;
mod cmd_plan;
mod model_arg;
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
