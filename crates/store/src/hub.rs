//! The hub's HTTP API: the file list of a revision and ranged file downloads, with the hub's
//! errors (`X-Error-Code`: `GatedRepo`, `RepoNotFound`, `EntryNotFound`, `RevisionNotFound`)
//! turned into messages that say what to do.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderMap, RANGE};

use crate::config::StoreConfig;
use crate::error::StoreError;
use crate::listing::{RemoteFile, RepoListing};

#[derive(Debug, Clone)]
pub struct HubClient {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// Path segments escaped for a URL (anything but unreserved characters and `/`).
fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What a request was for, to word its errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Asked<'a> {
    Listing,
    File(&'a str),
    /// A file at an address of its own (a package index's), not a hub repository's.
    Url,
}

impl HubClient {
    pub fn new(config: &StoreConfig) -> Result<Self, StoreError> {
        Self::with_endpoint(&config.endpoint, config.token.clone())
    }

    /// A client for another server (a package index), with its own token if any.
    pub fn with_endpoint(endpoint: &str, token: Option<String>) -> Result<Self, StoreError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("forja/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StoreError::Response {
                what: "starting the HTTP client".into(),
                why: e.to_string(),
            })?;
        Ok(HubClient {
            http,
            endpoint: endpoint.to_string(),
            token,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn get(&self, url: &str) -> reqwest::RequestBuilder {
        let rb = self.http.get(url);
        match &self.token {
            // reqwest drops the header when a redirect leaves this host (the LFS CDN).
            Some(t) => rb.header(AUTHORIZATION, format!("Bearer {t}")),
            None => rb,
        }
    }

    pub(crate) fn offline(&self, e: &reqwest::Error) -> StoreError {
        // The innermost cause says it best ("Connection refused", "failed to lookup address").
        let mut why = e.to_string();
        let mut src = std::error::Error::source(e);
        while let Some(s) = src {
            why = s.to_string();
            src = s.source();
        }
        StoreError::Offline {
            endpoint: self.endpoint.clone(),
            why,
        }
    }

    /// The files of `repo` at `revision`, with sizes and LFS sha256s.
    pub async fn listing(&self, repo: &str, revision: &str) -> Result<RepoListing, StoreError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            encode_path(revision)
        );
        let resp = self.get(&url).send().await.map_err(|e| self.offline(&e))?;
        let resp = self.check(resp, repo, revision, Asked::Listing).await?;
        let body = resp.text().await.map_err(|e| self.offline(&e))?;
        RepoListing::from_api_json(repo, &body)
    }

    pub fn file_url(&self, repo: &str, commit: &str, path: &str) -> String {
        format!(
            "{}/{repo}/resolve/{commit}/{}",
            self.endpoint,
            encode_path(path)
        )
    }

    /// Starts downloading `file` from byte `offset` on (from its own address when it has one).
    /// Returns the response and the offset the body really starts at (0 when the server ignored
    /// the range).
    pub(crate) async fn open_file(
        &self,
        repo: &str,
        commit: &str,
        file: &RemoteFile,
        offset: u64,
    ) -> Result<(reqwest::Response, u64), StoreError> {
        let path = file.path.as_str();
        let (url, asked) = match &file.url {
            Some(u) => (u.clone(), Asked::Url),
            None => (self.file_url(repo, commit, path), Asked::File(path)),
        };
        let mut rb = self.get(&url);
        if offset > 0 {
            rb = rb.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = rb.send().await.map_err(|e| self.offline(&e))?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            return Err(StoreError::Http {
                url,
                status: 416,
                body: "range not satisfiable".into(),
            });
        }
        let resp = self.check(resp, repo, commit, asked).await?;
        let start = if resp.status() == StatusCode::PARTIAL_CONTENT {
            content_range_start(resp.headers()).ok_or_else(|| StoreError::Response {
                what: format!("downloading {path}"),
                why: "206 answer without a valid Content-Range".into(),
            })?
        } else {
            0
        };
        Ok((resp, start))
    }

    /// The first `len` bytes of `path` (fewer when the file is shorter).
    pub async fn fetch_prefix(
        &self,
        repo: &str,
        commit: &str,
        path: &str,
        len: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let url = self.file_url(repo, commit, path);
        let resp = self
            .get(&url)
            .header(RANGE, format!("bytes=0-{}", len.saturating_sub(1)))
            .send()
            .await
            .map_err(|e| self.offline(&e))?;
        let mut resp = self.check(resp, repo, commit, Asked::File(path)).await?;
        let mut out = Vec::new();
        while (out.len() as u64) < len {
            match resp.chunk().await {
                Ok(Some(c)) => out.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) => {
                    return Err(StoreError::Transfer {
                        file: path.to_string(),
                        bytes: out.len() as u64,
                        why: e.to_string(),
                    });
                }
            }
        }
        out.truncate(usize::try_from(len).unwrap_or(usize::MAX));
        Ok(out)
    }

    /// Turns an error status into the error that says what to do.
    pub(crate) async fn check(
        &self,
        resp: reqwest::Response,
        repo: &str,
        revision: &str,
        asked: Asked<'_>,
    ) -> Result<reqwest::Response, StoreError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let code = resp
            .headers()
            .get("x-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let url = resp.url().to_string();
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let endpoint = self.endpoint.clone();
        let repo_s = repo.to_string();
        Err(match (status.as_u16(), code.as_str()) {
            (s, _) if matches!(asked, Asked::Url) => StoreError::Http {
                url,
                status: s,
                body,
            },
            (_, "RepoNotFound") => StoreError::RepoNotFound {
                repo: repo_s,
                endpoint,
            },
            (_, "RevisionNotFound") => StoreError::RevisionNotFound {
                repo: repo_s,
                revision: revision.to_string(),
            },
            (_, "EntryNotFound") | (404, _) if matches!(asked, Asked::File(_)) => {
                StoreError::FileNotFound {
                    repo: repo_s,
                    revision: revision.to_string(),
                    file: match asked {
                        Asked::File(f) => f.to_string(),
                        Asked::Listing | Asked::Url => String::new(),
                    },
                }
            }
            (404, _) => StoreError::RepoNotFound {
                repo: repo_s,
                endpoint,
            },
            (401 | 403, _) => StoreError::Gated {
                repo: repo_s,
                endpoint,
                token_note: match (&self.token, status.as_u16()) {
                    (None, _) => " (no token was set)".into(),
                    (Some(_), 401) => " (the token set was not accepted: check it)".into(),
                    (Some(_), _) => {
                        " (the token was accepted but has no access to this repository yet)".into()
                    }
                },
            },
            (s, _) => StoreError::Http {
                url,
                status: s,
                body,
            },
        })
    }
}

/// The first byte of a `Content-Range: bytes START-END/TOTAL` header.
fn content_range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(reqwest::header::CONTENT_RANGE)?.to_str().ok()?;
    let range = v.trim().strip_prefix("bytes ")?;
    let (start, _) = range.split_once('-')?;
    start.trim().parse().ok()
}
