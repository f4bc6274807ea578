//! `forja ingest PATH... --collection NAME`: parse, chunk, embed and index documents into the
//! RAG store.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use forja_rag::ingest::FileOutcome;
use forja_rag::{IngestEvent, IngestOptions, ingest};

use crate::output::outln;
use crate::rag_setup::StoreArgs;

#[derive(Debug, Args)]
#[command(
    after_help = "Formats: Markdown, HTML, plain text, CSV/TSV, Word (.docx), Excel (.xlsx, \
.xlsm, .xls), XML (.xml, .xbrl; XBRL instances as a table of facts), PDF. PDFs are read with \
pdfium when it is installed (scripts/install-pdfium, or FORJA_PDFIUM=/path/to/libpdfium.so): \
headings, sections, tables and pages; otherwise with a built-in extractor (text and pages). \
Folders are read recursively, hidden files skipped. Unchanged files (same content hash) are \
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
}

pub fn run(a: IngestArgs) -> Result<()> {
    let embedder = a.store.load_embedder()?;
    let store = a.store.open_store(false)?;
    let options = IngestOptions {
        include: a.include.clone(),
        exclude: a.exclude.clone(),
        chunk: None,
    };
    let verbose = a.verbose;
    let mut progress = |event: IngestEvent<'_>| match event {
        IngestEvent::Found { files } if verbose => eprintln!("{files} files to check"),
        IngestEvent::Done {
            path,
            outcome,
            chunks,
        } if verbose => {
            let what = match outcome {
                FileOutcome::Added => format!("added ({chunks} chunks)"),
                FileOutcome::Updated => format!("updated ({chunks} chunks)"),
                FileOutcome::Unchanged => "unchanged".to_string(),
                FileOutcome::Removed => "removed".to_string(),
            };
            eprintln!("{}: {what}", path.display());
        }
        IngestEvent::Failed { error, .. } => eprintln!("failed: {error}"),
        IngestEvent::Notice { message } => eprintln!("note: {message}"),
        _ => {}
    };
    let r = ingest(
        &store,
        &a.store.collection,
        &a.paths,
        &embedder,
        &options,
        &mut progress,
    )?;
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
