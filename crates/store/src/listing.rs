//! A repository's file list (from the hub's `/api/models/{repo}/revision/{rev}?blobs=true`, or
//! from a snapshot already in the cache) and the choice of the files that make a model.

use serde::Deserialize;

use crate::error::StoreError;
use crate::name::{Selector, path_has_quant, quant_of_path, split_part};

/// One file of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path inside the repository (`model.safetensors`, `1_Pooling/config.json`).
    pub path: String,
    pub size: u64,
    /// The LFS object's sha256 (hex), for files stored in LFS.
    pub sha256: Option<String>,
    /// The git blob id, for files stored in git itself.
    pub blob_id: Option<String>,
    /// Where the bytes are, when not at the hub's `resolve` address (a package index's file).
    pub url: Option<String>,
}

impl RemoteFile {
    /// The blob's name in the hub cache: the sha256 for LFS files, the git blob id otherwise (as
    /// `huggingface_hub` names them).
    pub fn blob_name(&self) -> Option<&str> {
        self.sha256.as_deref().or(self.blob_id.as_deref())
    }
}

/// The files of one revision.
#[derive(Debug, Clone)]
pub struct RepoListing {
    pub repo: String,
    /// The commit the revision pointed at.
    pub commit: String,
    pub files: Vec<RemoteFile>,
    /// `gated` as the hub reports it (`false`, `"auto"`, `"manual"`).
    pub gated: bool,
    /// The license from the model card's metadata.
    pub license: Option<String>,
}

#[derive(Deserialize)]
struct ApiLfs {
    sha256: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiSibling {
    rfilename: String,
    size: Option<u64>,
    blob_id: Option<String>,
    lfs: Option<ApiLfs>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiModel {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<ApiSibling>,
    #[serde(default)]
    gated: serde_json::Value,
    #[serde(default)]
    card_data: Option<serde_json::Value>,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl RepoListing {
    /// Parses the hub's model-info JSON (requested with `blobs=true`).
    pub fn from_api_json(repo: &str, body: &str) -> Result<Self, StoreError> {
        let bad = |why: String| StoreError::Response {
            what: format!("the hub's file list for {repo}"),
            why,
        };
        let m: ApiModel = serde_json::from_str(body).map_err(|e| bad(e.to_string()))?;
        let commit = m
            .sha
            .filter(|s| is_hex(s, 40))
            .ok_or_else(|| bad("no commit id (`sha`)".into()))?;
        let mut files = Vec::with_capacity(m.siblings.len());
        for s in m.siblings {
            if s.rfilename
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            {
                return Err(bad(format!("unsafe file path {:?}", s.rfilename)));
            }
            let (size, sha256) = match s.lfs {
                Some(l) if is_hex(&l.sha256, 64) => (l.size, Some(l.sha256.to_ascii_lowercase())),
                Some(l) => return Err(bad(format!("bad LFS sha256 {:?}", l.sha256))),
                None => (s.size.unwrap_or(0), None),
            };
            let blob_id = s.blob_id.filter(|b| is_hex(b, 40));
            files.push(RemoteFile {
                path: s.rfilename,
                size,
                sha256,
                blob_id,
                url: None,
            });
        }
        let gated = match &m.gated {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::String(s) => !s.is_empty(),
            _ => false,
        };
        let license = m
            .card_data
            .as_ref()
            .and_then(|c| c.get("license"))
            .and_then(|l| l.as_str())
            .map(str::to_string);
        Ok(RepoListing {
            repo: repo.to_string(),
            commit,
            files,
            gated,
            license,
        })
    }

    /// The files that make the model `selector` names.
    pub fn select(&self, selector: &Selector) -> Result<Vec<RemoteFile>, StoreError> {
        let err = |why: String| StoreError::Selection {
            repo: self.repo.clone(),
            why,
        };
        let ggufs: Vec<&RemoteFile> = self
            .files
            .iter()
            .filter(|f| f.path.to_ascii_lowercase().ends_with(".gguf") && !is_projector(&f.path))
            .collect();
        match selector {
            Selector::File(name) => {
                let hit = self
                    .files
                    .iter()
                    .find(|f| f.path == *name)
                    .or_else(|| {
                        let mut by_name = self
                            .files
                            .iter()
                            .filter(|f| f.path.rsplit('/').next() == Some(name.as_str()));
                        match (by_name.next(), by_name.next()) {
                            (Some(one), None) => Some(one),
                            _ => None,
                        }
                    })
                    .ok_or_else(|| {
                        err(format!(
                            "no file {name}; GGUF files here: {}",
                            list_or_none(&ggufs)
                        ))
                    })?;
                Ok(with_split_parts(hit, &self.files))
            }
            Selector::Quant(q) => {
                let hits: Vec<&RemoteFile> = ggufs
                    .iter()
                    .copied()
                    .filter(|f| path_has_quant(&f.path, q))
                    .collect();
                one_model(&hits, &self.files).ok_or_else(|| {
                    if hits.is_empty() {
                        err(format!(
                            "no {} GGUF; quantizations here: {}",
                            q.to_ascii_uppercase(),
                            quants_or_none(&ggufs)
                        ))
                    } else {
                        err(format!(
                            "several {} GGUFs ({}): name the file, e.g. hf:{}:{}",
                            q.to_ascii_uppercase(),
                            list_or_none(&hits),
                            self.repo,
                            hits[0].path
                        ))
                    }
                })
            }
            Selector::Default => {
                let safetensors = self.safetensors_model();
                if !safetensors.is_empty() {
                    return Ok(safetensors);
                }
                if ggufs.is_empty() {
                    return Err(err(
                        "no safetensors or GGUF weights (forja does not load .bin/.pt files)"
                            .into(),
                    ));
                }
                if let Some(m) = one_model(&ggufs, &self.files) {
                    return Ok(m);
                }
                let q4: Vec<&RemoteFile> = ggufs
                    .iter()
                    .copied()
                    .filter(|f| path_has_quant(&f.path, "q4_k_m"))
                    .collect();
                one_model(&q4, &self.files).ok_or_else(|| {
                    err(format!(
                        "several GGUF files: pick one, e.g. hf:{}:q4_k_m; quantizations here: {}",
                        self.repo,
                        quants_or_none(&ggufs)
                    ))
                })
            }
        }
    }

    /// Safetensors weights with the configs, tokenizer and sentence-transformers modules beside
    /// them; none when the repository has no top-level safetensors.
    fn safetensors_model(&self) -> Vec<RemoteFile> {
        let top = |p: &str| !p.contains('/');
        if !self
            .files
            .iter()
            .any(|f| top(&f.path) && f.path.ends_with(".safetensors"))
        {
            return Vec::new();
        }
        self.files
            .iter()
            .filter(|f| {
                let p = f.path.as_str();
                let name = p.rsplit('/').next().unwrap_or(p);
                let ext = name.rsplit_once('.').map_or("", |(_, e)| e);
                let wanted_ext = matches!(
                    ext,
                    "safetensors" | "json" | "model" | "txt" | "jinja" | "tiktoken" | "md"
                ) || name == "LICENSE";
                // Sentence-transformers modules live in `1_Pooling/`, `2_Normalize/`, ….
                let module_dir = p.split_once('/').is_some_and(|(d, rest)| {
                    !rest.contains('/')
                        && d.split_once('_')
                            .is_some_and(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
                });
                wanted_ext && (top(p) || (module_dir && ext == "json"))
            })
            .cloned()
            .collect()
    }
}

/// Vision projectors (`mmproj-*.gguf`) ride along in GGUF repositories but are not the model.
fn is_projector(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    name.starts_with("mmproj")
}

fn list_or_none(files: &[&RemoteFile]) -> String {
    if files.is_empty() {
        return "none".into();
    }
    files
        .iter()
        .map(|f| f.path.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quants_or_none(files: &[&RemoteFile]) -> String {
    let mut q: Vec<String> = files
        .iter()
        .filter_map(|f| quant_of_path(&f.path))
        .collect();
    q.sort();
    q.dedup();
    if q.is_empty() {
        "none named in the file names".into()
    } else {
        q.join(", ")
    }
}

/// The file and, for a split GGUF, all its parts in order.
fn with_split_parts(file: &RemoteFile, all: &[RemoteFile]) -> Vec<RemoteFile> {
    let Some((stem, _, count)) = split_part(&file.path) else {
        return vec![file.clone()];
    };
    let mut parts: Vec<(u32, RemoteFile)> = all
        .iter()
        .filter_map(|f| {
            let (s, part, c) = split_part(&f.path)?;
            (s == stem && c == count).then(|| (part, f.clone()))
        })
        .collect();
    parts.sort_by_key(|(p, _)| *p);
    parts.into_iter().map(|(_, f)| f).collect()
}

/// The one model among `candidates` (one file, or the parts of one split file); `None` when
/// there are none or several.
fn one_model(candidates: &[&RemoteFile], all: &[RemoteFile]) -> Option<Vec<RemoteFile>> {
    let first = candidates.first()?;
    let model = with_split_parts(first, all);
    let same = candidates
        .iter()
        .all(|c| model.iter().any(|m| m.path == c.path));
    same.then_some(model)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]
    use super::*;

    fn listing(paths: &[&str]) -> RepoListing {
        RepoListing {
            repo: "o/r".into(),
            commit: "0".repeat(40),
            files: paths
                .iter()
                .map(|p| RemoteFile {
                    path: p.to_string(),
                    size: 1,
                    sha256: None,
                    blob_id: Some("1".repeat(40)),
                    url: None,
                })
                .collect(),
            gated: false,
            license: None,
        }
    }

    fn paths(v: Vec<RemoteFile>) -> Vec<String> {
        v.into_iter().map(|f| f.path).collect()
    }

    #[test]
    fn safetensors_repo_takes_weights_configs_and_modules_only() {
        let l = listing(&[
            ".gitattributes",
            "1_Pooling/config.json",
            "README.md",
            "config.json",
            "model.safetensors",
            "onnx/model.onnx",
            "onnx/config.json",
            "pytorch_model.bin",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]);
        assert_eq!(
            paths(l.select(&Selector::Default).unwrap()),
            [
                "1_Pooling/config.json",
                "README.md",
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "tokenizer_config.json",
                "vocab.txt"
            ]
        );
    }

    #[test]
    fn split_ggufs_come_whole_and_projectors_are_skipped() {
        let l = listing(&[
            "m-q4_k_m-00002-of-00002.gguf",
            "m-q4_k_m-00001-of-00002.gguf",
            "m-q8_0.gguf",
            "mmproj-m-f16.gguf",
        ]);
        let q4 = paths(l.select(&Selector::Quant("q4_k_m".into())).unwrap());
        assert_eq!(
            q4,
            [
                "m-q4_k_m-00001-of-00002.gguf",
                "m-q4_k_m-00002-of-00002.gguf"
            ]
        );
        let by_file = l
            .select(&Selector::File("m-q4_k_m-00001-of-00002.gguf".into()))
            .unwrap();
        assert_eq!(paths(by_file), q4);
        assert_eq!(paths(l.select(&Selector::Default).unwrap()), q4);
        let err = l.select(&Selector::Quant("f16".into())).unwrap_err();
        assert!(
            err.to_string().contains("quantizations here: q4_k_m, q8_0"),
            "{err}"
        );
    }

    #[test]
    fn hub_json_with_lfs_metadata_parses() {
        let body = r#"{"id":"o/r","sha":"0123456789abcdef0123456789abcdef01234567",
            "gated":"manual","cardData":{"license":"llama3.2"},
            "siblings":[{"rfilename":"a.gguf","size":5,"blobId":"0123456789abcdef0123456789abcdef01234567",
              "lfs":{"sha256":"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789","size":5,"pointerSize":130}},
              {"rfilename":"config.json","size":2,"blobId":"1123456789abcdef0123456789abcdef01234567"}]}"#;
        let l = RepoListing::from_api_json("o/r", body).unwrap();
        assert!(l.gated);
        assert_eq!(l.license.as_deref(), Some("llama3.2"));
        assert_eq!(l.files[0].blob_name().unwrap().len(), 64);
        assert!(l.files[0].sha256.as_ref().unwrap().starts_with("abcdef"));
        assert_eq!(l.files[1].sha256, None);
        let bad = body.replace("a.gguf", "../a.gguf");
        assert!(RepoListing::from_api_json("o/r", &bad).is_err());
    }
}
