//! The store: pull from the hub, import local files, list, look up, remove, copy.

use std::path::{Path, PathBuf};

use forja_arch::ModelDescription;

use crate::config::StoreConfig;
use crate::download::{Fetch, PullProgress};
use crate::error::StoreError;
use crate::hf_cache::RepoCache;
use crate::hub::HubClient;
use crate::listing::RemoteFile;
use crate::manifest::{Manifest, ManifestEntry, ManifestFile};
use crate::name::{HubRef, Selector};

pub struct Store {
    config: StoreConfig,
    manifest: Manifest,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.config)
            .finish()
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub entry: ManifestEntry,
    /// Files transferred (the others were already in the cache).
    pub downloaded_files: u64,
    /// Bytes that had to come over the network at the start (resumed parts excluded).
    pub needed_bytes: u64,
    /// The hub was unreachable and a complete copy in the cache was used.
    pub offline: bool,
}

/// What a removal did.
#[derive(Debug, Clone)]
pub struct Removed {
    pub entry: ManifestEntry,
    /// Bytes deleted from disk (0 when other names still use the files, or forja did not put
    /// them there).
    pub freed_bytes: u64,
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What the files say about the model (unknown fields stay empty when `arch` cannot read them).
pub(crate) struct Facts {
    pub arch: String,
    pub quant: String,
    pub params: u64,
    pub context: u64,
}

pub(crate) fn facts(path: &Path) -> Result<Facts, StoreError> {
    let d = ModelDescription::from_path(path).map_err(|source| StoreError::Describe {
        path: path.to_path_buf(),
        source,
    })?;
    let arch = serde_json::to_value(d.config.family)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Ok(Facts {
        arch,
        quant: d
            .stored
            .as_ref()
            .map(|s| s.format_label.clone())
            .unwrap_or_default(),
        params: d.weights(None).params,
        context: d.config.max_context,
    })
}

pub(crate) fn free_bytes(dir: &Path) -> Result<u64, StoreError> {
    forja_hw::disk::probe(dir)
        .map(|d| d.free_bytes)
        .map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
}

fn part_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

impl Store {
    /// Opens the store, creating its folder and manifest if needed.
    pub fn open(config: StoreConfig) -> Result<Self, StoreError> {
        let manifest = Manifest::open(&config.manifest_path(), true)?;
        Ok(Store { config, manifest })
    }

    /// Opens the store for lookups: when it was never created, an empty one (nothing written).
    pub fn open_or_empty(config: StoreConfig) -> Result<Self, StoreError> {
        let manifest = Manifest::open(&config.manifest_path(), false)?;
        Ok(Store { config, manifest })
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The entry named `name`, else the one pulled from the hub name `name` stands for.
    pub fn get(&self, name: &str) -> Result<Option<ManifestEntry>, StoreError> {
        if let Some(e) = self.manifest.get(name.trim())? {
            return Ok(Some(e));
        }
        if let Ok(Some(hub)) = HubRef::parse(name) {
            return Ok(self
                .manifest
                .by_source(&hub.canonical())?
                .into_iter()
                .next());
        }
        Ok(None)
    }

    /// The entry pulled from `hub`, if any.
    pub fn get_hub(&self, hub: &HubRef) -> Result<Option<ManifestEntry>, StoreError> {
        Ok(self
            .manifest
            .by_source(&hub.canonical())?
            .into_iter()
            .next())
    }

    pub fn list(&self) -> Result<Vec<ManifestEntry>, StoreError> {
        self.manifest.all()
    }

    /// The model path of `hub` when all its files are already in the Hugging Face cache (put
    /// there by forja or by `transformers`, `huggingface-cli`, …).
    pub fn cached(&self, hub: &HubRef) -> Option<PathBuf> {
        let cache = RepoCache::new(&self.config.hf_cache, &hub.repo);
        let listing = cache.local_listing(&hub.repo, &hub.revision)?;
        let files = listing.select(&hub.selector).ok()?;
        let snapshot = cache.snapshot(&listing.commit);
        // Another tool may have fetched only part of a sharded model.
        if let Some(index) = files
            .iter()
            .find(|f| f.path == "model.safetensors.index.json")
        {
            let text = std::fs::read_to_string(snapshot.join(&index.path)).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            let shards = v.get("weight_map")?.as_object()?;
            let complete = shards
                .values()
                .filter_map(|s| s.as_str())
                .all(|s| files.iter().any(|f| f.path == s));
            if !complete {
                return None;
            }
        }
        Some(model_path(&cache, &listing.commit, &files, &hub.selector))
    }

    /// Fetches `hub` into the cache and records it as `name`. Files already there are checked
    /// and kept; parts left by an interrupted pull are resumed. The manifest entry is written
    /// only when every file is complete and verified.
    pub async fn pull(
        &self,
        name: &str,
        hub: &HubRef,
        progress: &dyn PullProgress,
    ) -> Result<Pulled, StoreError> {
        let client = HubClient::new(&self.config)?;
        let cache = RepoCache::new(&self.config.hf_cache, &hub.repo);
        let (listing, offline) = match client.listing(&hub.repo, &hub.revision).await {
            Ok(l) => (l, false),
            Err(e @ StoreError::Offline { .. }) => match cache
                .local_listing(&hub.repo, &hub.revision)
                .filter(|l| l.select(&hub.selector).is_ok())
            {
                Some(l) => {
                    progress.note(&format!("{e}; using the complete copy in the cache"));
                    (l, true)
                }
                None => return Err(e),
            },
            Err(e) => return Err(e),
        };
        let files = listing.select(&hub.selector)?;
        let mut needed_bytes = 0;
        let mut downloaded_files = 0;
        if !offline {
            needed_bytes = files
                .iter()
                .filter(|f| f.blob_name().is_none_or(|id| !cache.blob(id).is_file()))
                .map(|f| {
                    let have = f
                        .blob_name()
                        .map_or(0, |id| part_len(&cache.incomplete(id)));
                    f.size.saturating_sub(have)
                })
                .sum();
            let free = free_bytes(&self.config.hf_cache)?;
            if needed_bytes > free {
                return Err(StoreError::NoSpace {
                    path: self.config.hf_cache.clone(),
                    need_bytes: needed_bytes,
                    free_bytes: free,
                });
            }
            let fetch = Fetch {
                client: &client,
                cache: &cache,
                repo: &hub.repo,
                commit: &listing.commit,
                attempts: self.config.attempts.max(1),
                progress,
            };
            downloaded_files = fetch.all(&files, self.config.parallel_files).await?;
            for f in &files {
                if let Some(id) = f.blob_name() {
                    cache.link(&listing.commit, f, id)?;
                }
            }
            cache.write_ref(&hub.revision, &listing.commit)?;
        }
        let name = self.entry_name(name, &hub.canonical())?;
        let name = name.as_str();
        let path = model_path(&cache, &listing.commit, &files, &hub.selector);
        // The files are what the hub has; a model forja cannot describe is still installed
        // (`ls` shows what is unknown), so the download is not lost.
        let facts = facts(&path).unwrap_or_else(|e| {
            progress.note(&format!("{e}; its details stay unknown"));
            Facts {
                arch: String::new(),
                quant: hub_quant(&hub.selector, &files),
                params: 0,
                context: 0,
            }
        });
        let previous = self.manifest.get(name)?;
        let entry = ManifestEntry {
            name: name.to_string(),
            source: hub.canonical(),
            path,
            repo: Some(hub.repo.clone()),
            commit: Some(listing.commit.clone()),
            files: files
                .iter()
                .map(|f| ManifestFile {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                    blob: f.blob_name().map(str::to_string),
                })
                .collect(),
            size_bytes: files.iter().map(|f| f.size).sum(),
            arch: facts.arch,
            quant: facts.quant,
            params: facts.params,
            context: facts.context,
            license: listing.license.clone(),
            added_unix: now_unix(),
            owned: downloaded_files > 0 || previous.is_some_and(|p| p.owned),
        };
        self.manifest.put(&entry)?;
        Ok(Pulled {
            entry,
            downloaded_files,
            needed_bytes,
            offline,
        })
    }

    /// The name a pull records: `name`, unless the same model (by source) is already in the
    /// store under another spelling, which keeps its one entry.
    pub(crate) fn entry_name(&self, name: &str, source: &str) -> Result<String, StoreError> {
        Ok(match self.manifest.get(name)? {
            Some(_) => name.to_string(),
            None => self
                .manifest
                .by_source(source)?
                .into_iter()
                .next()
                .map_or_else(|| name.to_string(), |e| e.name),
        })
    }

    /// The entry installed from `source` (a hub name or a package list), if any.
    pub fn get_source(&self, source: &str) -> Result<Option<ManifestEntry>, StoreError> {
        Ok(self.manifest.by_source(source)?.into_iter().next())
    }

    /// The model `hub` names, described from the hub without downloading it: a GGUF's header
    /// (its first megabytes), or a safetensors model's `config.json`.
    pub async fn describe_remote(&self, hub: &HubRef) -> Result<ModelDescription, StoreError> {
        let client = HubClient::new(&self.config)?;
        let listing = client.listing(&hub.repo, &hub.revision).await?;
        let files = listing.select(&hub.selector)?;
        let origin = hub.canonical();
        let describe_err = |source| StoreError::Describe {
            path: PathBuf::from(&origin),
            source,
        };
        let gguf = files
            .iter()
            .find(|f| f.path.to_ascii_lowercase().ends_with(".gguf"));
        if let Some(g) = gguf {
            // Headers carry the vocabulary: a few MB, more for large ones.
            let mut last = None;
            for mib in [8u64, 64] {
                let len = (mib << 20).min(g.size);
                let bytes = client
                    .fetch_prefix(&hub.repo, &listing.commit, &g.path, len)
                    .await?;
                match forja_arch::GgufHeader::read(bytes.as_slice(), g.size) {
                    Ok(h) => {
                        return ModelDescription::from_gguf_header(&h, &origin, Vec::new())
                            .map_err(describe_err);
                    }
                    Err(e) => last = Some(e),
                }
                if len == g.size {
                    break;
                }
            }
            return Err(match last {
                Some(e) => describe_err(e),
                None => StoreError::Selection {
                    repo: hub.repo.clone(),
                    why: format!("{} is empty", g.path),
                },
            });
        }
        let config = files
            .iter()
            .find(|f| f.path == "config.json")
            .ok_or_else(|| StoreError::Selection {
                repo: hub.repo.clone(),
                why: "no config.json to describe the model by".into(),
            })?;
        let bytes = client
            .fetch_prefix(&hub.repo, &listing.commit, &config.path, 16 << 20)
            .await?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Response {
                what: format!("config.json of {}", hub.repo),
                why: e.to_string(),
            })?;
        ModelDescription::from_config_value(&value, &origin).map_err(describe_err)
    }

    /// Records another name for an entry (the files are shared).
    pub fn copy(&self, from: &str, to: &str) -> Result<ManifestEntry, StoreError> {
        let to = to.trim();
        if to.is_empty() || to.chars().any(char::is_control) {
            return Err(StoreError::BadName {
                given: to.to_string(),
                why: "a name needs at least one visible character".into(),
            });
        }
        let src = self.get(from)?.ok_or_else(|| self.not_found(from))?;
        if self.manifest.get(to)?.is_some() {
            return Err(StoreError::NameTaken {
                name: to.to_string(),
            });
        }
        let entry = ManifestEntry {
            name: to.to_string(),
            added_unix: now_unix(),
            ..src
        };
        self.manifest.put(&entry)?;
        Ok(entry)
    }

    pub(crate) fn not_found(&self, name: &str) -> StoreError {
        let names: Vec<String> = self
            .manifest
            .all()
            .map(|v| v.into_iter().map(|e| e.name).collect())
            .unwrap_or_default();
        StoreError::NotInStore {
            name: name.to_string(),
            hint: if names.is_empty() {
                " (the store is empty: `forja pull NAME` or `forja import PATH` adds models)".into()
            } else {
                format!(" (it has: {})", names.join(", "))
            },
        }
    }

    /// Forgets `name`; deletes its files when forja put them there and no other name uses them.
    pub fn remove(&self, name: &str) -> Result<Removed, StoreError> {
        let entry = self.get(name)?.ok_or_else(|| self.not_found(name))?;
        self.manifest.delete(&entry.name)?;
        let others = self.manifest.all()?;
        let mut freed_bytes = 0;
        if !entry.owned {
            return Ok(Removed { entry, freed_bytes });
        }
        match (&entry.repo, &entry.commit) {
            (Some(repo), Some(commit)) => {
                let cache = RepoCache::new(&self.config.hf_cache, repo);
                for f in &entry.files {
                    let Some(blob) = &f.blob else { continue };
                    let shared = others.iter().any(|o| {
                        o.repo.as_deref() == Some(repo)
                            && o.files.iter().any(|g| g.blob.as_ref() == Some(blob))
                    });
                    if shared {
                        continue;
                    }
                    let link = cache.snapshot(commit).join(&f.path);
                    let _ = std::fs::remove_file(&link);
                    let blob_path = cache.blob(blob);
                    if std::fs::remove_file(&blob_path).is_ok() {
                        freed_bytes += f.size;
                    }
                }
                remove_empty_dirs(&cache.snapshot(commit));
            }
            _ => {
                let imports = self.config.imports_dir();
                let shared = others.iter().any(|o| o.path == entry.path);
                let dir = entry
                    .path
                    .ancestors()
                    .find(|a| a.parent() == Some(imports.as_path()))
                    .map(Path::to_path_buf);
                if let (false, Some(dir)) = (shared, dir) {
                    std::fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
                    freed_bytes = entry.size_bytes;
                }
            }
        }
        Ok(Removed { entry, freed_bytes })
    }

    pub(crate) fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// Removes `dir` and its parents up to the `snapshots` folder while they are empty.
fn remove_empty_dirs(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    // Depth-first: children before the folder itself.
    let mut order = Vec::new();
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        order.push(d);
    }
    for d in order.iter().rev() {
        let _ = std::fs::remove_dir(d);
    }
}

/// The quantization the file names state, when the files cannot be read.
fn hub_quant(sel: &Selector, files: &[RemoteFile]) -> String {
    match sel {
        Selector::Quant(q) => q.clone(),
        _ => files
            .iter()
            .find_map(|f| crate::name::quant_of_path(&f.path))
            .unwrap_or_default(),
    }
}

/// The GGUF file (first part) or the snapshot folder.
fn model_path(cache: &RepoCache, commit: &str, files: &[RemoteFile], sel: &Selector) -> PathBuf {
    let snapshot = cache.snapshot(commit);
    let gguf = files
        .iter()
        .find(|f| f.path.to_ascii_lowercase().ends_with(".gguf"));
    match (gguf, sel) {
        (Some(g), _) => snapshot.join(&g.path),
        (None, _) => snapshot,
    }
}
