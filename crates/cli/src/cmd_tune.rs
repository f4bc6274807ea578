//! `forja tune --model M --data FILE --out DIR`: LoRA fine-tuning into a PEFT adapter folder
//! (`--full`: every weight trained, the model written as an HF folder);
//! `forja tune merge --model M --adapter A --out DIR`: the adapter merged into the model.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use forja_engine::LoadedModel;
use forja_models::loader::LoadOptions;
use forja_models::training::TrainedWeight;
use forja_train::checkpoint::Trained;
use forja_train::examples::{pack, split, tokenize};
use forja_train::merge_gguf;
use forja_train::trainer::evaluate;
use forja_train::{
    Adapters, Init, LoraSpec, StepReport, TrainConfig, Trainer, attach, checkpoint, curve, dataset,
    peft, plot,
};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct TuneArgs {
    #[command(subcommand)]
    action: Option<TuneAction>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Debug, Subcommand)]
enum TuneAction {
    /// Merge an adapter into its base model: a new HF folder that runs without the adapter
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
struct MergeArgs {
    /// The base model: an HF model folder (config.json, safetensors), or a .gguf file (the
    /// adapted projections are quantized again to their own types)
    #[arg(long)]
    model: PathBuf,
    /// The adapter: a PEFT folder, as `forja tune` writes
    #[arg(long)]
    adapter: PathBuf,
    /// The new model folder, or NAME.gguf for a GGUF base (must not exist)
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct TrainArgs {
    /// The base model: a .gguf file (its weights stay quantized: QLoRA) or an HF model folder
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// Training data, JSONL or a JSON array: chat records (`messages`), alpaca records
    /// (`instruction`, `input`, `output`), ShareGPT records (`conversations`) or plain text
    /// (`text`)
    #[arg(long, required = true)]
    data: Option<PathBuf>,
    /// Folder for the adapter (adapter_config.json, adapter_model.safetensors) — with --full
    /// the trained model — and loss.csv and loss.png
    #[arg(long, required = true)]
    out: Option<PathBuf>,
    /// Train every weight of the model instead of a LoRA adapter (in f32 on the CPU: about 16
    /// bytes a parameter with AdamW); OUT becomes the trained model's HF folder. The model must
    /// be an HF folder
    #[arg(long, conflicts_with_all = ["rank", "alpha", "dropout", "targets"])]
    full: bool,
    /// LoRA rank
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank)
    #[arg(long, default_value_t = 32.0)]
    alpha: f64,
    /// Dropout on the adapters' input while training
    #[arg(long, default_value_t = 0.05)]
    dropout: f32,
    /// Projections to adapt, by their PEFT names; `all-linear` (or `all`): every projection
    /// but the output head
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"
    )]
    targets: Vec<String>,
    /// Peak learning rate (AdamW) [default: 2e-4, with --full 2e-5]
    #[arg(long)]
    lr: Option<f64>,
    /// AdamW weight decay
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Optimizer steps to run (overrides --epochs)
    #[arg(long)]
    steps: Option<usize>,
    /// Passes over the training examples
    #[arg(long, default_value_t = 1.0)]
    epochs: f64,
    /// Sequences per forward pass
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Forward passes per optimizer step
    #[arg(long, default_value_t = 4)]
    grad_accum: usize,
    /// Warmup steps (default: 3 % of the steps, rounded down)
    #[arg(long)]
    warmup: Option<usize>,
    /// Clip the gradients' global norm to this (0: no clipping)
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Seed for the adapters' initial values, dropout, shuffling and the eval split
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Fraction of the examples held out to measure eval loss and perplexity
    #[arg(long, default_value_t = 0.1)]
    eval_split: f64,
    /// Evaluate on this file's records (same formats as --data) instead of holding out part of
    /// --data: e.g. records from documents the training data does not cover
    #[arg(long, value_name = "FILE", conflicts_with = "eval_split")]
    eval_data: Option<PathBuf>,
    /// Pack several short examples into each sequence of up to --max-len tokens (each still
    /// attends only to itself): fewer, fuller forward passes; --batch then counts packs
    #[arg(long)]
    packing: bool,
    /// Keep only each layer's input during the forward pass and recompute the layer in
    /// backward: much less activation memory for about a third more compute
    #[arg(long)]
    gradient_checkpointing: bool,
    /// Evaluate every N steps (default: before and after training only)
    #[arg(long, value_name = "N")]
    eval_every: Option<usize>,
    /// Longest sequence in tokens; longer examples are cut
    #[arg(long, default_value_t = 1024)]
    max_len: usize,
    /// Save a checkpoint (OUT/checkpoint) every N steps, and whenever Ctrl-C stops training
    /// (0: only then)
    #[arg(long, default_value_t = 50, value_name = "N")]
    save_every: usize,
    /// Continue the run whose checkpoint is in OUT/checkpoint (same model, data and settings),
    /// exactly where it stopped
    #[arg(long)]
    resume: bool,
}

pub fn run(a: TuneArgs) -> Result<()> {
    match a.action {
        Some(TuneAction::Merge(m)) => merge(m),
        None => tune(a.train),
    }
}

fn merge(a: MergeArgs) -> Result<()> {
    let adapter = peft::load(&a.adapter)?;
    let report = if merge_gguf::is_gguf(&a.model) {
        merge_gguf::merge_into_gguf(&a.model, &adapter, &merge_gguf::gguf_out(&a.out)?)?
    } else {
        forja_train::merge::merge_into_folder(&a.model, &adapter, &a.out)?
    };
    println!(
        "merged {} projections; model written to {}",
        report.merged,
        a.out.display()
    );
    Ok(())
}

fn tune(a: TrainArgs) -> Result<()> {
    let (Some(model_path), Some(data), Some(out)) =
        (a.model.clone(), a.data.clone(), a.out.clone())
    else {
        bail!("--model, --data and --out are required");
    };
    if !model_path.exists() {
        bail!(
            "no such model file or folder: {} (pass a .gguf file or an HF model folder)",
            model_path.display()
        );
    }
    if out.is_file() {
        bail!(
            "--out {} is a file; give a folder for the {}",
            out.display(),
            if a.full { "trained model" } else { "adapter" }
        );
    }
    if a.full && !model_path.is_dir() {
        bail!(
            "--full trains every weight in f32 and writes an HF model folder: give the model's HF \
             folder (config.json, safetensors), not {} (a quantized GGUF trains with LoRA: QLoRA)",
            model_path.display()
        );
    }
    let spec = LoraSpec {
        rank: a.rank,
        alpha: a.alpha,
        dropout: a.dropout,
        targets: a.targets.clone(),
        use_rslora: false,
    };
    spec.validate()?;
    let records = dataset::read(&data)?;
    // At the model's own context, as `forja run` and `forja serve` load it: LongRoPE models pick
    // their RoPE factors by it, and training must see the positions serving will use.
    let mut model = LoadedModel::load_with(
        &model_path,
        &candle_core::Device::Cpu,
        LoadOptions::default(),
    )
    .with_context(|| format!("loading {}", model_path.display()))?;
    let max_len = a.max_len.min(model.decoder.config.max_context as usize);
    let examples = tokenized(&model, &records, max_len, &data)?;
    let (train_set, eval_set) = match &a.eval_data {
        Some(path) => {
            let records = dataset::read(path)?;
            (examples, tokenized(&model, &records, max_len, path)?)
        }
        None => split(examples, a.eval_split, a.seed)?,
    };
    let (train_set, eval_set) = if a.packing {
        let (train_n, eval_n) = (train_set.len(), eval_set.len());
        let packed = (pack(train_set, max_len)?, pack(eval_set, max_len)?);
        eprintln!(
            "packed {train_n} train / {eval_n} eval examples into {} / {} sequences of up to \
             {max_len} tokens",
            packed.0.len(),
            packed.1.len()
        );
        packed
    } else {
        (train_set, eval_set)
    };
    let steps = a.steps.unwrap_or_else(|| {
        TrainConfig::steps_for_epochs(train_set.len(), a.epochs, a.batch, a.grad_accum)
    });
    let cfg = TrainConfig {
        lr: a.lr.unwrap_or(if a.full { 2e-5 } else { 2e-4 }),
        weight_decay: a.weight_decay,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        // Rounded down: with a few steps, a warmup step at rate 0 would be a step lost.
        warmup_steps: a.warmup.unwrap_or((steps as f64 * 0.03) as usize),
        steps,
        batch: a.batch,
        grad_accum: a.grad_accum,
        max_grad_norm: (a.max_grad_norm > 0.0).then_some(a.max_grad_norm),
        shuffle: true,
        seed: a.seed,
        eval_every: a.eval_every,
        gradient_checkpointing: a.gradient_checkpointing,
    };
    cfg.validate()?;
    let trained = if a.full {
        Method::Full(model.decoder.make_trainable()?)
    } else {
        Method::Lora(attach(&mut model.decoder, &spec, Init::Random, a.seed)?)
    };
    let train_tokens: usize = train_set.iter().map(|e| e.ids.len()).sum();
    let what = match &trained {
        Method::Lora(adapters) => format!(
            "LoRA rank {} on {} projections, {} trainable parameters",
            spec.rank,
            adapters.modules.len(),
            adapters.num_params()
        ),
        Method::Full(weights) => format!(
            "full fine-tuning of {} weights, {} trainable parameters",
            weights.len(),
            weights.iter().map(|w| w.var.elem_count()).sum::<usize>()
        ),
    };
    eprintln!(
        "{}: {} train / {} eval examples ({train_tokens} train tokens); {what}; {steps} steps",
        model.name,
        train_set.len(),
        eval_set.len(),
    );
    let before = if eval_set.is_empty() {
        None
    } else {
        let e = evaluate(&model.decoder, &eval_set, a.batch)?;
        eprintln!(
            "eval before training: loss {:.4}, perplexity {:.2}",
            e.loss, e.perplexity
        );
        Some(e)
    };
    // Everything the run depends on: a checkpoint resumes only a run started with the same.
    let settings = serde_json::json!({
        "model": model_path.display().to_string(),
        "train_examples": examples_fingerprint(&train_set),
        "eval_examples": examples_fingerprint(&eval_set),
        "lora": (!a.full).then(|| serde_json::json!({"rank": spec.rank, "alpha": spec.alpha,
                 "dropout": spec.dropout, "targets": spec.targets})),
        "full": a.full,
        "train": cfg,
        "max_len": max_len,
        "packing": a.packing,
    });
    let ck_dir = out.join("checkpoint");
    let mut trainer = Trainer::new(trained.vars(), train_set.len(), &cfg)?;
    if a.resume {
        let ck = checkpoint::load(&ck_dir)?.with_context(|| {
            format!(
                "no checkpoint in {} to resume: run without --resume to start",
                ck_dir.display()
            )
        })?;
        trainer.resume(&ck, &mut model.decoder, trained.as_trained(), &settings)?;
        eprintln!("resuming after step {}/{steps}", ck.steps_done());
    } else if ck_dir.exists() {
        bail!(
            "{} holds the checkpoint of an unfinished run: continue it with --resume, or delete \
             it to start over",
            ck_dir.display()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .context("installing the Ctrl-C handler")?;
    }
    let progress = Progress::new();
    let save = |trainer: &Trainer, decoder: &mut forja_models::Decoder| -> Result<()> {
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        checkpoint::save(&ck_dir, trainer, decoder, trained.as_trained(), &settings)?;
        curve::write_csv(&out.join("loss.csv"), &trainer.reports)?;
        plot::write_loss_png(&out.join("loss.png"), &trainer.reports)?;
        Ok(())
    };
    while !trainer.finished() {
        let r = trainer.step(&mut model.decoder, &train_set, &eval_set)?;
        progress.step(&r);
        let interrupted = stop.load(Ordering::SeqCst);
        let due = a.save_every > 0 && r.step.is_multiple_of(a.save_every) && !trainer.finished();
        if interrupted || due {
            save(&trainer, &mut model.decoder)?;
        }
        if interrupted && !trainer.finished() {
            progress.finish();
            eprintln!(
                "stopped after step {}/{steps}; the checkpoint is in {}: the same command with \
                 --resume continues",
                r.step,
                ck_dir.display()
            );
            std::process::exit(130);
        }
    }
    let reports = std::mem::take(&mut trainer.reports);
    // The optimizer's moments are no longer needed: freed before the result is written.
    drop(trainer);
    progress.finish();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    match &trained {
        Method::Lora(_) => peft::save(
            &mut model.decoder,
            &spec,
            &model_path.display().to_string(),
            &out,
        )?,
        Method::Full(weights) => write_model(&model_path, weights, &out)?,
    }
    curve::write_csv(&out.join("loss.csv"), &reports)?;
    plot::write_loss_png(&out.join("loss.png"), &reports)?;
    // The adapter (or model) is the result: a finished run leaves no checkpoint to resume by
    // mistake.
    if ck_dir.exists() {
        std::fs::remove_dir_all(&ck_dir)
            .with_context(|| format!("removing the checkpoint {}", ck_dir.display()))?;
    }
    if let (Some(b), Some(after)) = (before, reports.last().and_then(|r| r.eval)) {
        eprintln!(
            "eval after training: loss {:.4} (was {:.4}), perplexity {:.2} (was {:.2})",
            after.loss, b.loss, after.perplexity, b.perplexity
        );
    }
    match trained {
        Method::Lora(_) => println!("adapter written to {}", out.display()),
        Method::Full(_) => println!("trained model written to {}", out.display()),
    }
    Ok(())
}

/// What a run trains.
enum Method {
    Lora(Adapters),
    Full(Vec<TrainedWeight>),
}

impl Method {
    fn vars(&self) -> Vec<candle_core::Var> {
        match self {
            Method::Lora(adapters) => adapters.vars(),
            Method::Full(weights) => weights.iter().map(|w| w.var.clone()).collect(),
        }
    }

    fn as_trained(&self) -> Trained<'_> {
        match self {
            Method::Lora(adapters) => Trained::Adapters(adapters),
            Method::Full(weights) => Trained::Weights(weights),
        }
    }
}

/// The fully trained model as an HF folder's files in `out` (beside the loss curve): built
/// whole in a hidden folder there, then each file moved in.
fn write_model(base: &Path, weights: &[TrainedWeight], out: &Path) -> Result<()> {
    let staged = out.join(".trained-model");
    if staged.exists() {
        std::fs::remove_dir_all(&staged)
            .with_context(|| format!("removing {}", staged.display()))?;
    }
    let files = forja_train::merge::save_trained_folder(base, weights, &staged)?;
    for f in files {
        let Some(name) = f.file_name() else { continue };
        let target = out.join(name);
        std::fs::rename(&f, &target).with_context(|| format!("writing {}", target.display()))?;
    }
    std::fs::remove_dir_all(&staged).with_context(|| format!("removing {}", staged.display()))?;
    Ok(())
}

/// `records` as training examples (the chat template applied, cut to `max_len` tokens), saying
/// on stderr what was cut or left out.
fn tokenized(
    model: &LoadedModel,
    records: &[dataset::Record],
    max_len: usize,
    path: &std::path::Path,
) -> Result<Vec<forja_train::Example>> {
    let (examples, stats) = tokenize(model, records, max_len, path)?;
    let name = path.display();
    if stats.truncated > 0 {
        eprintln!(
            "{name}: {} examples cut to {max_len} tokens",
            stats.truncated
        );
    }
    if !stats.dropped.is_empty() {
        let shown = stats.dropped.len().min(5);
        let more = match stats.dropped.len() - shown {
            0 => String::new(),
            n => format!(" and {n} more"),
        };
        eprintln!(
            "{name}: {} records left out, nothing to learn within {max_len} tokens (raise \
             --max-len): {}{more}",
            stats.dropped.len(),
            stats.dropped[..shown].join(", ")
        );
    }
    Ok(examples)
}

/// One line per step on stderr; on a terminal the line is rewritten in place, and evaluations
/// stay on screen.
struct Progress {
    tty: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn step(&self, r: &StepReport) {
        let eta = r.elapsed_s / r.step as f64 * (r.total_steps - r.step) as f64;
        let mut line = format!(
            "step {}/{}  epoch {:.2}  loss {:.4}  lr {:.2e}  {:.0} tok/s  eta {}",
            r.step,
            r.total_steps,
            r.epoch,
            r.loss,
            r.lr,
            r.tokens_per_s,
            duration(eta)
        );
        if let Some(e) = r.eval {
            line.push_str(&format!(
                "  eval loss {:.4}  perplexity {:.2}",
                e.loss, e.perplexity
            ));
        }
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            let end = if r.eval.is_some() { "\n" } else { "" };
            write!(err, "\r\x1b[K{line}{end}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// A hash of the examples' tokens and trained positions (FNV-1a), to recognise the same data.
fn examples_fingerprint(examples: &[forja_train::Example]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in examples {
        feed(e.ids.len() as u64);
        for &id in &e.ids {
            feed(u64::from(id));
        }
        feed(e.trained_tokens() as u64);
    }
    format!("{} examples, {h:016x}", examples.len())
}

fn duration(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
