//! The Hugging Face hub cache layout, shared with `transformers` and `huggingface_hub`:
//!
//! ```text
//! models--org--repo/
//!   blobs/<sha256 or git blob id>          file contents (a download in progress: `<id>.incomplete`)
//!   snapshots/<commit>/<path>              relative symlinks to ../../blobs/<id>
//!   refs/<branch>                          the commit the branch pointed at when fetched
//! ```

use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::listing::{RemoteFile, RepoListing};

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub struct RepoCache {
    pub dir: PathBuf,
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

impl RepoCache {
    pub fn new(hf_cache: &Path, repo: &str) -> Self {
        RepoCache {
            dir: hf_cache.join(format!("models--{}", repo.replace('/', "--"))),
        }
    }

    pub fn blob(&self, id: &str) -> PathBuf {
        self.dir.join("blobs").join(id)
    }

    pub fn incomplete(&self, id: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{id}.incomplete"))
    }

    /// The lock a download of blob `id` holds, where `huggingface_hub` keeps its own
    /// (`<cache>/.locks/models--org--repo/<id>.lock`, flock), so the two never write one blob at
    /// the same time.
    pub fn lock(&self, id: &str) -> PathBuf {
        let parent = self.dir.parent().unwrap_or(&self.dir);
        let folder = self.dir.file_name().unwrap_or_default();
        parent
            .join(".locks")
            .join(folder)
            .join(format!("{id}.lock"))
    }

    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The commit a revision resolves to locally: the revision itself when it is a commit id,
    /// else what `refs/<revision>` says.
    pub fn commit_of(&self, revision: &str) -> Option<String> {
        if is_commit(revision) {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.dir.join("refs").join(revision)).ok()?;
        let c = text.trim();
        is_commit(c).then(|| c.to_string())
    }

    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), StoreError> {
        if is_commit(revision) {
            return Ok(());
        }
        let path = self.dir.join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// Points `snapshots/<commit>/<file.path>` at its blob (replacing what was there).
    pub fn link(&self, commit: &str, file: &RemoteFile, blob_id: &str) -> Result<(), StoreError> {
        let link = self.snapshot(commit).join(&file.path);
        let parent = link.parent().unwrap_or(&self.dir);
        std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
        // snapshots/<commit>/ is two levels below the repository folder, plus one per folder of
        // the file's path.
        let depth = 2 + file.path.matches('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth {
            target.push("..");
        }
        target.push("blobs");
        target.push(blob_id);
        let tmp = link.with_file_name(format!(
            ".{}.{}.link",
            link.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        symlink(&target, &tmp).map_err(|e| StoreError::io(&tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| StoreError::io(&link, e))
    }

    /// The files of a snapshot already on disk (downloaded by forja or another tool), as a
    /// listing without hashes; only files whose blob is present count.
    pub fn local_listing(&self, repo: &str, revision: &str) -> Option<RepoListing> {
        let commit = self.commit_of(revision)?;
        let root = self.snapshot(&commit);
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).ok()?.flatten() {
                let path = entry.path();
                let name = entry.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                // metadata() follows the symlink: a dangling link (blob missing) is skipped.
                let Ok(meta) = std::fs::metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Ok(rel) = path.strip_prefix(&root) else {
                    continue;
                };
                let blob = std::fs::read_link(&path)
                    .ok()
                    .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()));
                let sha256 = blob
                    .clone()
                    .filter(|b| b.len() == 64 && b.chars().all(|c| c.is_ascii_hexdigit()));
                files.push(RemoteFile {
                    path: rel.to_string_lossy().replace('\\', "/"),
                    size: meta.len(),
                    blob_id: blob.filter(|b| b.len() == 40),
                    url: None,
                    sha256,
                });
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Some(RepoListing {
            repo: repo.to_string(),
            commit,
            files,
            gated: false,
            license: None,
        })
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_file(target, link)
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old or the
/// new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| StoreError::io(parent, e))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::io(&tmp, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))
}
