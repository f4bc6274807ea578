//! Ingesting files and folders into a collection: parse → chunk → embed → store, one file at a
//! time. A file whose content hash is unchanged is skipped; a changed file's chunks are
//! replaced; on a folder, files stored from it earlier that are gone (or no longer selected)
//! are removed. A file that fails is reported and the others go on (a file over the size limit
//! fails without being read); each file is stored in one transaction, so an interrupted run
//! leaves complete files only and a re-run finishes the work. [`ingest_bytes`] does the same for
//! content that is not a local file (an upload).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::chunk::{ChunkOptions, chunk_document};
use crate::error::{RagError, Result};
use crate::model::Embedder;
use crate::parse::{Format, parse_bytes};
use crate::store::{Collection, Store};

/// Texts embedded per call to the model.
const EMBED_BATCH: usize = 32;

/// Largest file ingested unless told otherwise: 256 MiB. A larger file is a per-file error; it
/// is never read whole into memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

/// What to ingest and how.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Globs a file in a folder must match (any of them; all files of known formats when empty),
    /// against its path relative to the folder.
    pub include: Vec<String>,
    /// Globs that leave a file out, matched like `include`.
    pub exclude: Vec<String>,
    /// Chunk sizes (default: [`ChunkOptions::for_model`] of the embedder's length limit).
    pub chunk: Option<ChunkOptions>,
    /// Files larger than this many bytes fail (as a per-file error) without being read.
    pub max_file_bytes: u64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            chunk: None,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    Added,
    Unchanged,
    Updated,
    Removed,
}

/// Progress, reported as files are handled.
#[derive(Debug)]
pub enum IngestEvent<'a> {
    /// The files to handle were listed.
    Found { files: usize },
    /// Work on a file starts (`index` from 0, of the `files` found).
    Started { path: &'a Path, index: usize },
    /// A file was handled (`chunks` stored, 0 when unchanged or removed).
    Done {
        path: &'a Path,
        outcome: FileOutcome,
        chunks: usize,
    },
    /// A file failed; the run goes on.
    Failed { path: &'a Path, error: &'a RagError },
    /// Something the user should know once per run (PDFs read without pdfium, and how to
    /// install it).
    Notice { message: &'a str },
}

/// The totals of a run.
#[derive(Debug, Clone, Default)]
pub struct IngestReport {
    pub added: usize,
    pub unchanged: usize,
    pub updated: usize,
    pub removed: usize,
    /// Files that failed, with the error.
    pub failed: Vec<(PathBuf, String)>,
    /// Notices given during the run (see [`IngestEvent::Notice`]).
    pub notices: Vec<String>,
    /// Chunks stored by this run.
    pub chunks: usize,
    pub elapsed: Duration,
}

/// Ingests `paths` (files and folders, folders recursively) into `collection`, created for
/// `embedder` if new. Errors of single files are in the report; only errors that stop the
/// whole run (the store, bad globs, a collection of another model) are returned.
pub fn ingest(
    store: &Store,
    collection: &str,
    paths: &[PathBuf],
    embedder: &dyn Embedder,
    options: &IngestOptions,
    progress: &mut dyn FnMut(IngestEvent<'_>),
) -> Result<IngestReport> {
    let started = Instant::now();
    let include = glob_set(&options.include)?;
    let exclude = glob_set(&options.exclude)?;
    let c = store.ensure_collection(collection, &embedder.name(), embedder.dimension())?;
    let chunk_options = options
        .chunk
        .unwrap_or_else(|| ChunkOptions::for_model(embedder.max_tokens()));
    let mut report = IngestReport::default();

    // Files to handle, and the folders whose stored files not seen now are to be removed.
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    for p in paths {
        let abs = match std::fs::canonicalize(p) {
            Ok(a) => a,
            Err(source) => {
                let e = RagError::Io {
                    path: p.clone(),
                    source,
                };
                fail(&mut report, progress, p, e);
                continue;
            }
        };
        if abs.is_dir() {
            for f in walk(&abs, include.as_ref(), exclude.as_ref()) {
                match f {
                    Ok(f) => {
                        files.insert(f);
                    }
                    Err(e) => fail(&mut report, progress, &abs, e),
                }
            }
            roots.push(abs);
        } else {
            files.insert(abs);
        }
    }
    progress(IngestEvent::Found { files: files.len() });

    let mut pdf_seen = false;
    for (index, file) in files.iter().enumerate() {
        if !pdf_seen && Format::of(file) == Some(Format::Pdf) {
            pdf_seen = true;
            if let Some(why) = crate::parse::pdf::pdfium_missing() {
                progress(IngestEvent::Notice { message: why });
                report.notices.push(why.to_string());
            }
        }
        progress(IngestEvent::Started { path: file, index });
        match ingest_file(
            store,
            &c,
            file,
            embedder,
            chunk_options,
            options.max_file_bytes,
        ) {
            Ok((outcome, chunks)) => {
                match outcome {
                    FileOutcome::Added => report.added += 1,
                    FileOutcome::Updated => report.updated += 1,
                    FileOutcome::Unchanged => report.unchanged += 1,
                    FileOutcome::Removed => report.removed += 1,
                }
                report.chunks += chunks;
                progress(IngestEvent::Done {
                    path: file,
                    outcome,
                    chunks,
                });
            }
            Err(e) if e.stops_the_run() => return Err(e),
            Err(e) => fail(&mut report, progress, file, e),
        }
    }

    for root in &roots {
        let prefix = format!("{}{}", root.display(), std::path::MAIN_SEPARATOR);
        for stored in store.document_paths(&c)? {
            if stored.starts_with(&prefix) && !files.contains(Path::new(&stored)) {
                store.remove_document(&c, &stored)?;
                report.removed += 1;
                progress(IngestEvent::Done {
                    path: Path::new(&stored),
                    outcome: FileOutcome::Removed,
                    chunks: 0,
                });
            }
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn fail(
    report: &mut IngestReport,
    progress: &mut dyn FnMut(IngestEvent<'_>),
    path: &Path,
    error: RagError,
) {
    progress(IngestEvent::Failed {
        path,
        error: &error,
    });
    report.failed.push((path.to_path_buf(), error.to_string()));
}

/// Reads, parses, chunks, embeds and stores one file unless its content is unchanged. A file
/// over `max_bytes` fails before it is read (and a file that grows past it while being read).
fn ingest_file(
    store: &Store,
    c: &Collection,
    file: &Path,
    embedder: &dyn Embedder,
    options: ChunkOptions,
    max_bytes: u64,
) -> Result<(FileOutcome, usize)> {
    let io = |source| RagError::Io {
        path: file.to_path_buf(),
        source,
    };
    let too_large = |bytes: u64| RagError::TooLarge {
        path: file.to_path_buf(),
        bytes,
        limit: max_bytes,
    };
    let meta = std::fs::metadata(file).map_err(io)?;
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64);
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    std::fs::File::open(file)
        .and_then(|f| f.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes))
        .map_err(io)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    ingest_bytes(
        store,
        c,
        &file.display().to_string(),
        &bytes,
        mtime,
        embedder,
        options,
    )
}

/// Parses, chunks, embeds and stores `bytes` as the document `key` of `c` (its format from the
/// key's extension) unless the stored document has the same content; all of it in one
/// transaction, so a failure leaves the document as it was. This is how files that do not live
/// on this machine (uploads) are ingested; [`ingest`] reads files and calls it.
pub fn ingest_bytes(
    store: &Store,
    c: &Collection,
    key: &str,
    bytes: &[u8],
    mtime: Option<i64>,
    embedder: &dyn Embedder,
    options: ChunkOptions,
) -> Result<(FileOutcome, usize)> {
    let stored = store.document(c, key)?;
    let hash = crate::document::content_hash(bytes);
    if let Some(s) = &stored
        && s.content_hash == hash
    {
        if s.mtime != mtime {
            store.touch_document(s, mtime)?;
        }
        return Ok((FileOutcome::Unchanged, 0));
    }
    let doc = parse_bytes(Path::new(key), bytes)?;
    let count = |t: &str| embedder.count_tokens(t);
    let chunks = chunk_document(&doc, options, &count)?;
    let mut vectors = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(EMBED_BATCH) {
        let texts: Vec<String> = batch.iter().map(|ch| ch.embedding_text()).collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let mut v = embedder
            .embed(&refs)
            .map_err(|e| RagError::Embedding(format!("{key}: {e}")))?;
        if v.len() != batch.len() {
            return Err(RagError::Embedding(format!(
                "{key}: the model returned {} vectors for {} texts",
                v.len(),
                batch.len()
            )));
        }
        vectors.append(&mut v);
    }
    store.replace_document(c, key, &doc, mtime, &chunks, &vectors)?;
    let outcome = if stored.is_some() {
        FileOutcome::Updated
    } else {
        FileOutcome::Added
    };
    Ok((outcome, chunks.len()))
}

fn glob_set(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| RagError::Input(format!("glob {p:?}: {e}")))?);
    }
    b.build()
        .map(Some)
        .map_err(|e| RagError::Input(format!("globs {patterns:?}: {e}")))
}

/// Files under `root` to ingest, sorted: of a known format, selected by the globs, not hidden.
fn walk(root: &Path, include: Option<&GlobSet>, exclude: Option<&GlobSet>) -> Vec<Result<PathBuf>> {
    let mut out = Vec::new();
    let entries = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("a symbolic link loop"));
                out.push(Err(RagError::Io { path, source }));
                continue;
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(path);
        let selected = match include {
            Some(set) => set.is_match(rel),
            None => Format::of(path).is_some(),
        };
        if selected && !exclude.is_some_and(|set| set.is_match(rel)) {
            out.push(Ok(path.to_path_buf()));
        }
    }
    out
}
