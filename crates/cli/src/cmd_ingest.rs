//! `forja ingest PATH... --collection NAME`: parse, chunk, embed and index documents into the
//! RAG store.

use std::path::PathBuf;

use std::io::IsTerminal;

use anyhow::{Result, bail};
use clap::Args;
use forja_rag::ingest::FileOutcome;
use forja_rag::{IngestEvent, IngestOptions, ingest};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::outln;
use crate::rag_setup::StoreArgs;

#[derive(Debug, Args)]
#[command(
    after_help = "Formats: Markdown, HTML, plain text, CSV/TSV, Word (.docx), Excel (.xlsx, \
.xlsm, .xls), XML (.xml, .xbrl; XBRL instances as a table of facts), PDF. PDFs are read with \
pdfium when it is installed (scripts/install-pdfium, or FORJA_PDFIUM=/path/to/libpdfium.so): \
headings, sections, tables and pages; otherwise with a built-in extractor (text and pages). \
Folders are read recursively, hidden files and symbolic links skipped; files over \
--max-file-size fail without being read. Unchanged files (same content hash) are \
skipped, changed ones re-indexed, and files \
gone from an ingested folder removed. A file that fails is reported and the rest go on; the \
command fails only when no file could be ingested."
)]
pub struct IngestArgs {
    /// Files and folders to ingest
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Only files matching this glob, relative to the folder (repeatable; e.g. '*.md')
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files matching this glob, relative to the folder (repeatable)
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Print a line for every file handled
    #[arg(long, short)]
    verbose: bool,
    /// Files larger than this fail (reported, not read; the others go on), e.g. 64MiB
    #[arg(long, value_name = "SIZE", value_parser = crate::cmd_serve::parse_size,
          default_value = "256MiB")]
    max_file_size: u64,
}

/// What `forja ingest` shows while it works: a bar on stderr when it is a terminal (files
/// done of all, the current file, chunks stored), lines otherwise (with --verbose); failures
/// and notices always, above the bar.
struct Progress {
    bar: Option<ProgressBar>,
    verbose: bool,
    chunks: usize,
}

const TEMPLATE: &str = "{bar:28.cyan/blue} {pos}/{len} files · {prefix} chunks · {wide_msg}";

impl Progress {
    fn new(verbose: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            // Drawn once the files are counted.
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
            if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix("0");
            bar
        });
        Progress {
            bar,
            verbose,
            chunks: 0,
        }
    }

    /// Prints a line above the bar (or plainly without one).
    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn event(&mut self, event: IngestEvent<'_>) {
        match event {
            IngestEvent::Found { files } => {
                if let Some(bar) = &self.bar {
                    bar.set_length(files as u64);
                    bar.set_draw_target(ProgressDrawTarget::stderr());
                } else if self.verbose {
                    eprintln!("{files} files to check");
                }
            }
            IngestEvent::Started { path, .. } => {
                if let Some(bar) = &self.bar {
                    let name = path.file_name().unwrap_or(path.as_os_str());
                    bar.set_message(name.to_string_lossy().into_owned());
                }
            }
            IngestEvent::Done {
                path,
                outcome,
                chunks,
            } => {
                self.chunks += chunks;
                if let Some(bar) = &self.bar {
                    bar.set_prefix(self.chunks.to_string());
                    // Removals are of stored files, not of the files counted.
                    if outcome != FileOutcome::Removed {
                        bar.inc(1);
                    }
                }
                if self.verbose {
                    let what = match outcome {
                        FileOutcome::Added => format!("added ({chunks} chunks)"),
                        FileOutcome::Updated => format!("updated ({chunks} chunks)"),
                        FileOutcome::Unchanged => "unchanged".to_string(),
                        FileOutcome::Removed => "removed".to_string(),
                    };
                    self.line(&format!("{}: {what}", path.display()));
                }
            }
            IngestEvent::Failed { error, .. } => {
                self.line(&format!("failed: {error}"));
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                }
            }
            IngestEvent::Notice { message } => self.line(&format!("note: {message}")),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

pub fn run(a: IngestArgs) -> Result<()> {
    let embedder = a.store.load_embedder()?;
    let store = a.store.open_store(false)?;
    let options = IngestOptions {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        chunk: None,
        max_file_bytes: a.max_file_size,
    };
    let mut shown = Progress::new(a.verbose);
    let mut progress = |event: IngestEvent<'_>| shown.event(event);
    let r = ingest(
        &store,
        &a.store.collection,
        &a.paths,
        &embedder,
        &options,
        &mut progress,
    );
    shown.finish();
    let r = r?;
    outln!(
        "collection {:?} in {}",
        a.store.collection,
        store.location()
    );
    outln!(
        "files: {} added, {} unchanged, {} updated, {} removed, {} failed",
        r.added,
        r.unchanged,
        r.updated,
        r.removed,
        r.failed.len()
    );
    outln!(
        "chunks: {} stored in {:.2} s",
        r.chunks,
        r.elapsed.as_secs_f64()
    );
    if !r.failed.is_empty() && r.added + r.updated + r.unchanged == 0 {
        bail!("no file could be ingested ({} failed)", r.failed.len());
    }
    Ok(())
}
