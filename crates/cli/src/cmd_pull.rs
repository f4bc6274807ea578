//! `forja pull NAME`: downloads a model from the Hugging Face hub into the store, with a progress
//! bar per file (speed and ETA).

use anyhow::{Context, Result};
use clap::Args;
use forja_store::{FileProgress, HubRef, ManifestEntry, PullProgress, Store};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use crate::output::outln;
use crate::units::{bytes_auto, params};

#[derive(Debug, Args)]
pub struct PullArgs {
    /// hf:org/repo (safetensors), hf:org/repo:q4_k_m or hf:org/repo:FILE.gguf (GGUF), or a
    /// catalog name with a quantization (qwen2.5:0.5b-instruct-q4_k_m)
    name: String,
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

/// Pulls `hub` into `store` as `name`, drawing progress; blocks until done.
pub fn pull(store: &Store, name: &str, hub: &HubRef) -> Result<ManifestEntry> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the download runtime")?;
    let bars = Bars {
        multi: MultiProgress::new(),
    };
    let pulled = runtime
        .block_on(store.pull(name, hub, &bars))
        .with_context(|| format!("pulling {}", hub.canonical()))?;
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
    let (name, hub) = crate::model_arg::pull_target(&a.name)?;
    let store = crate::model_arg::open_store()?;
    let e = pull(&store, &name, &hub)?;
    outln!("{} ({})", e.name, summary(&e));
    outln!("  {}", e.path.display());
    Ok(())
}
