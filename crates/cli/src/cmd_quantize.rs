//! `forja quantize MODEL --to q4_k_m [-o OUT.gguf]`: an HF safetensors folder (a path or a name
//! the store knows) to a llama.cpp-compatible GGUF, quantized by forja itself.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_arch::{GgufRecipe, WeightFormat};
use indicatif::{ProgressBar, ProgressStyle};

/// Recipes `--to` accepts: llama.cpp's, except the i-quants, which need an importance matrix.
const RECIPES: &str = "q8_0, q6_k, q5_k_m, q5_k_s, q5_1, q5_0, q4_k_m, q4_k_s, q4_1, q4_0, q3_k_l, q3_k_m, q3_k_s, q2_k";

#[derive(Debug, Args)]
pub struct QuantizeArgs {
    /// An HF model folder (config.json, safetensors in f32/f16/bf16, tokenizer.json,
    /// tokenizer_config.json), or a store / hub / catalog name of one
    pub model: String,
    /// The llama.cpp recipe: q8_0, q6_k, q5_k_m, q4_k_m, q4_0, q3_k_m, q2_k (also q5_k_s,
    /// q4_k_s, q3_k_s, q3_k_l, q5_0, q5_1, q4_1)
    #[arg(long, value_name = "RECIPE")]
    pub to: String,
    /// Output file [default: MODEL-NAME.RECIPE.gguf in the current folder]
    #[arg(short, long, value_name = "OUT.gguf")]
    pub output: Option<PathBuf>,
}

fn parse_recipe(s: &str) -> Result<GgufRecipe> {
    match WeightFormat::parse(s) {
        Ok(WeightFormat::Gguf(r)) if !matches!(r, GgufRecipe::Iq4Xs | GgufRecipe::Iq4Nl) => Ok(r),
        _ => bail!("--to {s:?} is not a recipe forja quantize writes: use one of {RECIPES}"),
    }
}

struct Bar(ProgressBar);

impl forja_convert::Progress for Bar {
    fn tensor(&mut self, index: usize, count: usize, name: &str, ty: &str) {
        self.0.set_length(count as u64);
        self.0.set_position(index as u64);
        self.0.set_message(format!("{name} → {ty}"));
    }
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let recipe = parse_recipe(&args.to)?;
    let (name, dir) = crate::model_arg::local_model(&args.model)?;
    if !dir.is_dir() {
        bail!(
            "{} is not an HF model folder: forja quantize reads safetensors (config.json, \
             *.safetensors, tokenizer.json); a GGUF file is already converted",
            dir.display()
        );
    }
    let format = WeightFormat::Gguf(recipe);
    let out = args.output.unwrap_or_else(|| {
        let base = name.rsplit(['/', ':']).next().unwrap_or("model");
        PathBuf::from(format!("{base}.{}.gguf", format.name()))
    });
    let started = Instant::now();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} tensors {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut progress = Bar(bar.clone());
    let summary = forja_convert::quantize_folder(&dir, recipe, &out, &mut progress);
    bar.finish_and_clear();
    let summary = summary.with_context(|| format!("quantizing {} to {format}", dir.display()))?;
    let types: Vec<String> = summary
        .types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    println!(
        "wrote {} ({:.1} MiB, {} tensors: {}) in {:.1} s",
        summary.path.display(),
        summary.bytes as f64 / (1u64 << 20) as f64,
        summary.tensors,
        types.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
