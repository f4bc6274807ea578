//! Downloading a repository's files into the cache: each into `blobs/<id>.incomplete`, resumed
//! with an HTTP Range where an earlier attempt (or a killed process) stopped, its sha256 checked
//! against the hub's LFS metadata, then renamed to `blobs/<id>`. A file that fails its check is
//! fetched once more from scratch. Several files download at once.

use std::path::Path;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::error::StoreError;
use crate::hf_cache::RepoCache;
use crate::hub::HubClient;
use crate::listing::RemoteFile;

/// Where a pull reports what it does (the command line draws progress bars from it).
pub trait PullProgress: Sync {
    /// A file starts (or resumes) with `done` of `size` bytes already here.
    fn file(&self, path: &str, size: u64, done: u64) -> Box<dyn FileProgress>;
    /// A line for the user (a resume, a retry, a failed check).
    fn note(&self, text: &str);
}

pub trait FileProgress {
    fn advance(&self, bytes: u64);
    /// The transfer starts over at `done` bytes (a retry or a re-fetch).
    fn restart(&self, done: u64);
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

struct NoFileProgress;

impl FileProgress for NoFileProgress {
    fn advance(&self, _: u64) {}
    fn restart(&self, _: u64) {}
    fn finish(&self) {}
}

impl PullProgress for NoProgress {
    fn file(&self, _: &str, _: u64, _: u64) -> Box<dyn FileProgress> {
        Box::new(NoFileProgress)
    }
    fn note(&self, _: &str) {}
}

/// One repository revision being fetched.
pub(crate) struct Fetch<'a> {
    pub client: &'a HubClient,
    pub cache: &'a RepoCache,
    pub repo: &'a str,
    pub commit: &'a str,
    pub attempts: usize,
    pub progress: &'a dyn PullProgress,
}

/// What a file's check found wrong, or `None` when size and hash match.
fn mismatch(file: &RemoteFile, len: u64, digest: Option<&str>) -> Option<String> {
    if len != file.size {
        return Some(format!("size {len} bytes, the hub says {}", file.size));
    }
    match (&file.sha256, digest) {
        (Some(want), Some(got)) if !want.eq_ignore_ascii_case(got) => {
            Some(format!("sha256 {got}, the hub says {want}"))
        }
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds the first `len` bytes of `path` into `hasher`.
async fn hash_prefix(path: &Path, len: u64, hasher: &mut Sha256) -> Result<(), StoreError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| StoreError::io(path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = f
            .read(&mut buf[..want])
            .await
            .map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// sha256 (hex) of a whole file.
pub(crate) async fn sha256_file(path: &Path) -> Result<(u64, String), StoreError> {
    let len = tokio::fs::metadata(path)
        .await
        .map_err(|e| StoreError::io(path, e))?
        .len();
    let mut h = Sha256::new();
    hash_prefix(path, len, &mut h).await?;
    Ok((len, hex(&h.finalize())))
}

fn transient(e: &StoreError) -> bool {
    match e {
        StoreError::Transfer { .. } | StoreError::Offline { .. } => true,
        StoreError::Http { status, .. } => *status >= 500 || *status == 429,
        _ => false,
    }
}

impl Fetch<'_> {
    /// Fetches every file not already in the cache; stops at the first failure (transfers in
    /// flight keep their `.incomplete` part for the next pull).
    pub async fn all(&self, files: &[RemoteFile], parallel: usize) -> Result<u64, StoreError> {
        let fetched: Vec<bool> = stream::iter(files.iter().map(|f| self.one(f)))
            .buffer_unordered(parallel.max(1))
            .try_collect()
            .await?;
        Ok(fetched.iter().filter(|d| **d).count() as u64)
    }

    /// Makes `blobs/<id>` hold `file`; true when anything was downloaded.
    async fn one(&self, file: &RemoteFile) -> Result<bool, StoreError> {
        let id = file.blob_name().ok_or_else(|| StoreError::Response {
            what: format!("the hub's file list for {}", self.repo),
            why: format!("{} has neither an LFS sha256 nor a blob id", file.path),
        })?;
        let _lock = self.lock(id, &file.path).await?;
        let blob = self.cache.blob(id);
        if blob.is_file() {
            let (len, digest) = if file.sha256.is_some() {
                if file.size >= 64 << 20 {
                    self.progress
                        .note(&format!("{}: already here, checking its sha256", file.path));
                }
                let (len, d) = sha256_file(&blob).await?;
                (len, Some(d))
            } else {
                let len = std::fs::metadata(&blob)
                    .map_err(|e| StoreError::io(&blob, e))?
                    .len();
                (len, None)
            };
            match mismatch(file, len, digest.as_deref()) {
                None => return Ok(false),
                Some(what) => {
                    self.progress.note(&format!(
                        "{}: the copy in the cache is damaged ({what}); fetching it again",
                        file.path
                    ));
                    std::fs::remove_file(&blob).map_err(|e| StoreError::io(&blob, e))?;
                }
            }
        }
        let blobs_dir = self.cache.dir.join("blobs");
        std::fs::create_dir_all(&blobs_dir).map_err(|e| StoreError::io(&blobs_dir, e))?;
        let part = self.cache.incomplete(id);
        let bar = self.progress.file(&file.path, file.size, part_len(&part));
        let mut failures = 0;
        let mut refetched = false;
        loop {
            let mut done = part_len(&part);
            if done > file.size {
                remove_part(&part)?;
                done = 0;
            }
            bar.restart(done);
            let digest = match self.transfer(file, &part, done, bar.as_ref()).await {
                Ok(d) => d,
                Err(StoreError::Http { status: 416, .. }) if failures == 0 => {
                    failures += 1;
                    remove_part(&part)?;
                    continue;
                }
                Err(e) if transient(&e) && failures + 1 < self.attempts => {
                    failures += 1;
                    self.progress.note(&format!(
                        "{}: {e}; resuming (attempt {} of {})",
                        file.path,
                        failures + 1,
                        self.attempts
                    ));
                    tokio::time::sleep(Duration::from_millis(500 * failures as u64)).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let len = part_len(&part);
            match mismatch(file, len, Some(&digest)) {
                None => {
                    std::fs::rename(&part, &blob).map_err(|e| StoreError::io(&blob, e))?;
                    bar.finish();
                    return Ok(true);
                }
                Some(what) if !refetched => {
                    refetched = true;
                    self.progress.note(&format!(
                        "{}: downloaded file is damaged ({what}); fetching it again",
                        file.path
                    ));
                    remove_part(&part)?;
                }
                Some(what) => {
                    remove_part(&part)?;
                    return Err(StoreError::Corrupt {
                        repo: self.repo.to_string(),
                        file: file.path.clone(),
                        what,
                    });
                }
            }
        }
    }

    /// Waits for the lock on blob `id` (another forja or `huggingface_hub` may be fetching it);
    /// held until the returned file is dropped.
    async fn lock(&self, id: &str, path: &str) -> Result<std::fs::File, StoreError> {
        let lock_path = self.cache.lock(id);
        if let Some(dir) = lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(&lock_path, e))?;
        let mut told = false;
        loop {
            match f.try_lock() {
                Ok(()) => return Ok(f),
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !told {
                        self.progress
                            .note(&format!("{path}: waiting for another download of it"));
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io(&lock_path, e));
                }
            }
        }
    }

    /// Appends the rest of `file` to `part` from byte `done`; returns the sha256 of the whole.
    async fn transfer(
        &self,
        file: &RemoteFile,
        part: &Path,
        done: u64,
        bar: &dyn FileProgress,
    ) -> Result<String, StoreError> {
        let mut hasher = Sha256::new();
        if done == file.size {
            hash_prefix(part, done, &mut hasher).await?;
            return Ok(hex(&hasher.finalize()));
        }
        let (mut resp, start) = self
            .client
            .open_file(self.repo, self.commit, file, done)
            .await?;
        let mut out = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(part)
            .await
            .map_err(|e| StoreError::io(part, e))?;
        // The server may ignore the range and send everything: start over then.
        out.set_len(start)
            .await
            .map_err(|e| StoreError::io(part, e))?;
        if start != done {
            bar.restart(start);
        }
        hash_prefix(part, start, &mut hasher).await?;
        out.seek(std::io::SeekFrom::End(0))
            .await
            .map_err(|e| StoreError::io(part, e))?;
        let mut written = start;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    out.flush().await.map_err(|e| StoreError::io(part, e))?;
                    return Err(StoreError::Transfer {
                        file: file.path.clone(),
                        bytes: written,
                        why: e.to_string(),
                    });
                }
            };
            if written + chunk.len() as u64 > file.size {
                return Err(StoreError::Transfer {
                    file: file.path.clone(),
                    bytes: written,
                    why: format!("the server sent more than the {} bytes listed", file.size),
                });
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| StoreError::io(part, e))?;
            hasher.update(&chunk);
            written += chunk.len() as u64;
            bar.advance(chunk.len() as u64);
        }
        out.flush().await.map_err(|e| StoreError::io(part, e))?;
        out.sync_all().await.map_err(|e| StoreError::io(part, e))?;
        if written < file.size {
            return Err(StoreError::Transfer {
                file: file.path.clone(),
                bytes: written,
                why: "the connection closed early".into(),
            });
        }
        Ok(hex(&hasher.finalize()))
    }
}

fn part_len(part: &Path) -> u64 {
    std::fs::metadata(part).map_or(0, |m| m.len())
}

fn remove_part(part: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(part) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(part, e)),
    }
}
