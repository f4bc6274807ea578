//! What `forja ingest`, `search` and `ask` share: where the store and the embedding model are by
//! default, and the engine behind the RAG crate's `Embedder` and `Generator` traits.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use forja_engine::{GenerateParams, LoadedModel, Message, generate};
use forja_models::ContiguousKvCache;
use forja_rag::{RagError, Store, is_postgres_url};
pub use forja_server::rag::EngineEmbedder;

/// The embedding model used when none is given.
pub const DEFAULT_EMBEDDING_MODEL: &str = "all-minilm-l6-v2";

/// Store and embedding-model flags of the RAG commands.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The collection (a named set of documents in the store)
    #[arg(long, short = 'c')]
    pub collection: String,
    /// The store: a SQLite file, or a PostgreSQL server with pgvector as
    /// postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE [default: $FORJA_HOME/rag.sqlite;
    /// FORJA_HOME defaults to ~/.local/share/forja]
    #[arg(long, value_name = "FILE|URL", env = "FORJA_RAG_STORE")]
    pub store: Option<String>,
    /// The embedding model folder (sentence-transformers layout) [default: all-minilm-l6-v2
    /// under $FORJA_HOME/models or ~/.cache/forja/models, where scripts/quickstart puts it]
    #[arg(long, value_name = "DIR")]
    pub embedding_model: Option<PathBuf>,
}

/// `$FORJA_HOME`, else `~/.local/share/forja`.
pub fn forja_home() -> PathBuf {
    match std::env::var_os("FORJA_HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h),
        _ => home().join(".local/share/forja"),
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

/// The store's file or URL: `store` when given, else `$FORJA_HOME/rag.sqlite`.
pub fn store_location(store: Option<&str>) -> String {
    match store {
        Some(s) if !s.trim().is_empty() => s.to_string(),
        _ => forja_home().join("rag.sqlite").display().to_string(),
    }
}

/// Opens the store at `location`; with `must_exist`, a missing SQLite file is an error rather
/// than a new store (a PostgreSQL store is created in its database as needed). `hint` says what
/// to run first.
pub fn open_store_at(location: &str, must_exist: bool, hint: &str) -> Result<Store> {
    if is_postgres_url(location) {
        return Ok(Store::connect(location)?);
    }
    let path = PathBuf::from(location);
    if must_exist && !path.is_file() {
        bail!("no store at {} ({hint})", path.display());
    }
    Ok(Store::open(&path)?)
}

/// The embedding model folder: `flag` when given, else the default where it is installed.
pub fn embedding_model_dir(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = flag {
        if !dir.is_dir() {
            bail!("no embedding model folder at {}", dir.display());
        }
        return Ok(dir.to_path_buf());
    }
    let candidates = [
        forja_home().join("models").join(DEFAULT_EMBEDDING_MODEL),
        home()
            .join(".cache/forja/models")
            .join(DEFAULT_EMBEDDING_MODEL),
    ];
    if let Some(dir) = candidates.iter().find(|d| d.join("config.json").is_file()) {
        return Ok(dir.clone());
    }
    bail!(
        "no embedding model found (looked for {} and {}): `forja pull {DEFAULT_EMBEDDING_MODEL}` \
         installs it, or pass --embedding-model DIR",
        candidates[0].display(),
        candidates[1].display()
    )
}

impl StoreArgs {
    /// The store's file or URL.
    pub fn store_location(&self) -> String {
        store_location(self.store.as_deref())
    }

    /// Opens the store; with `must_exist`, a missing SQLite file is an error rather than a new
    /// store (a PostgreSQL store is created in its database as needed).
    pub fn open_store(&self, must_exist: bool) -> Result<Store> {
        let hint = format!(
            "ingest documents first: `forja ingest PATH --collection {}`",
            self.collection
        );
        open_store_at(&self.store_location(), must_exist, &hint)
    }

    /// The embedding model folder: the flag, else the default where it is installed.
    pub fn embedding_model_dir(&self) -> Result<PathBuf> {
        embedding_model_dir(self.embedding_model.as_deref())
    }

    /// Loads the embedding model for the CPU.
    pub fn load_embedder(&self) -> Result<EngineEmbedder> {
        load_embedder_at(&self.embedding_model_dir()?)
    }
}

/// Loads the embedding model folder `dir` for the CPU.
pub fn load_embedder_at(dir: &Path) -> Result<EngineEmbedder> {
    EngineEmbedder::load(dir)
        .with_context(|| format!("loading the embedding model {}", dir.display()))
}

/// A chat model on the engine behind [`forja_rag::Generator`]; answers stream to stdout
/// through the caller's callback.
#[derive(Debug)]
pub struct EngineGenerator {
    pub model: LoadedModel,
    pub params: GenerateParams,
}

impl EngineGenerator {
    fn prompt(&self, system: &str, user: &str) -> forja_rag::Result<Vec<u32>> {
        let messages = [Message::new("system", system), Message::new("user", user)];
        self.model
            .chat_prompt(&messages, None)
            .map_err(|e| RagError::Generation(e.to_string()))
    }
}

impl forja_rag::PromptBudget for EngineGenerator {
    fn context_tokens(&self) -> usize {
        self.model.decoder.config.max_context as usize
    }
    fn prompt_tokens(&self, system: &str, user: &str) -> forja_rag::Result<usize> {
        self.prompt(system, user).map(|p| p.len())
    }
}

impl forja_rag::Generator for EngineGenerator {
    fn generate(
        &mut self,
        system: &str,
        user: &str,
        max_tokens: usize,
        on_text: &mut dyn FnMut(&str),
    ) -> forja_rag::Result<String> {
        let prompt = self.prompt(system, user)?;
        let mut cache: ContiguousKvCache = self.model.new_cache();
        let mut cached = Vec::new();
        let params = GenerateParams {
            max_tokens,
            ..self.params.clone()
        };
        generate(
            &self.model,
            &prompt,
            &mut cache,
            &mut cached,
            &params,
            &mut |piece| {
                on_text(piece);
                true
            },
        )
        .map(|g| g.text)
        .map_err(|e| RagError::Generation(e.to_string()))
    }
}

/// `file, section, page N` of a hit, and the first line of its text cut to `width` characters.
pub fn hit_lines(hit: &forja_rag::Hit, width: usize) -> (String, String) {
    let label = forja_rag::answer::source_label(hit);
    let first = hit
        .text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut line: String = first.trim().chars().take(width).collect();
    if first.trim().chars().count() > width {
        line.push('…');
    }
    (label, line)
}
