//! A local HTTP server that answers like the Hugging Face hub for the repositories it is given:
//! `/api/models/{org}/{repo}/revision/{rev}?blobs=true` (file list with sizes, blob ids and LFS
//! sha256s), `/{org}/{repo}/resolve/{rev}/{path}` (git files served directly with `ETag`; LFS
//! files redirected to `/lfs/{sha256}` with `X-Linked-Etag` / `X-Linked-Size` / `X-Repo-Commit`),
//! HTTP Range, gated repositories that need a token, and switches to cut a transfer, corrupt a
//! byte, or run something when a file is first asked for. It is also a Python package index:
//! `/simple/{package}/` (the JSON simple API, PEP 691) and the wheels at `/files/{name}`.
#![allow(dead_code, reason = "each test file uses part of the server")]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

pub struct HubFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub lfs: bool,
}

impl HubFile {
    pub fn lfs(path: &str, bytes: Vec<u8>) -> Self {
        HubFile {
            path: path.into(),
            bytes,
            lfs: true,
        }
    }
    pub fn git(path: &str, bytes: Vec<u8>) -> Self {
        HubFile {
            path: path.into(),
            bytes,
            lfs: false,
        }
    }
    pub fn sha256(&self) -> String {
        hex(&Sha256::digest(&self.bytes))
    }
    /// A stand-in git blob id (40 hex digits, unique per content).
    pub fn blob_id(&self) -> String {
        self.sha256()[..40].to_string()
    }
}

/// Pseudo-random bytes (xorshift): they do not compress, so a cut transfer stops mid-file.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub struct HubRepo {
    pub commit: String,
    pub files: Vec<HubFile>,
    /// The token a download needs, for a gated repository.
    pub token: Option<String>,
}

/// One request for file bytes: which file and the Range header it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub path: String,
    pub range: Option<String>,
    /// Bytes of body actually sent.
    pub bytes: u64,
}

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
pub struct Switches {
    /// The next transfer of this file stops after this many body bytes (connection dropped).
    pub cut: Mutex<Option<(String, u64)>>,
    /// The next transfer of this file sends this many body bytes, then nothing ever again.
    pub stall: Mutex<Option<(String, u64)>>,
    /// The next N transfers of LFS files have one byte flipped.
    pub corrupt: AtomicUsize,
    /// Runs when a file's bytes are first asked for.
    pub on_transfer: Mutex<Option<Hook>>,
    pub served: Mutex<Vec<Served>>,
    pub listings: AtomicU64,
}

pub struct Hub {
    repos: HashMap<String, HubRepo>,
    /// Wheels by the package's normalized name.
    packages: HashMap<String, Vec<HubFile>>,
    pub switches: Switches,
}

/// A wheel holding `members` (path in the wheel, bytes), stored uncompressed or deflated.
pub fn wheel(package: &str, version: &str, members: &[(&str, &[u8])], deflate: bool) -> HubFile {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(method)
        .large_file(members.iter().any(|(_, b)| b.len() > u32::MAX as usize / 2));
    let dist = package.replace('-', "_");
    for (path, bytes) in members {
        w.start_file(*path, opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.start_file(format!("{dist}-{version}.dist-info/WHEEL"), opts)
        .unwrap();
    w.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        .unwrap();
    let bytes = w.finish().unwrap().into_inner();
    HubFile::lfs(&format!("{dist}-{version}-py3-none-any.whl"), bytes)
}

pub struct HubServer {
    pub url: String,
    pub hub: Arc<Hub>,
    _task: tokio::task::JoinHandle<()>,
}

impl HubServer {
    pub async fn start(repos: Vec<(&str, HubRepo)>) -> Self {
        Self::with_packages(repos, Vec::new()).await
    }

    /// A hub with `repos` that is also a package index of `wheels` (package name, wheel).
    pub async fn with_packages(repos: Vec<(&str, HubRepo)>, wheels: Vec<(&str, HubFile)>) -> Self {
        let mut packages: HashMap<String, Vec<HubFile>> = HashMap::new();
        for (name, w) in wheels {
            packages.entry(name.to_string()).or_default().push(w);
        }
        let hub = Arc::new(Hub {
            repos: repos.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            packages,
            switches: Switches::default(),
        });
        let app = Router::new()
            .route("/api/models/{org}/{repo}/revision/{rev}", get(listing))
            .route("/{org}/{repo}/resolve/{rev}/{*path}", get(resolve))
            .route("/lfs/{sha}", get(lfs))
            .route("/simple/{package}/", get(simple))
            .route("/files/{name}", get(wheel_file))
            .with_state(hub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        HubServer {
            url,
            hub,
            _task: task,
        }
    }

    pub fn served(&self) -> Vec<Served> {
        self.hub.switches.served.lock().unwrap().clone()
    }

    pub fn served_of(&self, path: &str) -> Vec<Served> {
        self.served()
            .into_iter()
            .filter(|s| s.path == path)
            .collect()
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("x-error-code", code.to_string())],
        code.to_string(),
    )
        .into_response()
}

async fn listing(
    State(hub): State<Arc<Hub>>,
    Path((org, repo, rev)): Path<(String, String, String)>,
) -> Response {
    hub.switches.listings.fetch_add(1, Ordering::SeqCst);
    let Some(r) = hub.repos.get(&format!("{org}/{repo}")) else {
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound");
    };
    if rev != "main" && rev != r.commit {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound");
    }
    let siblings: Vec<serde_json::Value> = r
        .files
        .iter()
        .map(|f| {
            let mut v = serde_json::json!({
                "rfilename": f.path,
                "size": f.bytes.len(),
                "blobId": f.blob_id(),
            });
            if f.lfs {
                v["lfs"] = serde_json::json!({
                    "sha256": f.sha256(),
                    "size": f.bytes.len(),
                    "pointerSize": 134,
                });
            }
            v
        })
        .collect();
    axum::Json(serde_json::json!({
        "id": format!("{org}/{repo}"),
        "sha": r.commit,
        "gated": if r.token.is_some() { serde_json::json!("manual") } else { serde_json::json!(false) },
        "cardData": {"license": "apache-2.0"},
        "siblings": siblings,
    }))
    .into_response()
}

async fn resolve(
    State(hub): State<Arc<Hub>>,
    Path((org, repo, rev, path)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(r) = hub.repos.get(&format!("{org}/{repo}")) else {
        return error(StatusCode::UNAUTHORIZED, "RepoNotFound");
    };
    if let Some(token) = &r.token {
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match sent {
            None => return error(StatusCode::UNAUTHORIZED, "GatedRepo"),
            Some(t) if t != token => return error(StatusCode::FORBIDDEN, "GatedRepo"),
            Some(_) => {}
        }
    }
    if rev != "main" && rev != r.commit {
        return error(StatusCode::NOT_FOUND, "RevisionNotFound");
    }
    let Some(f) = r.files.iter().find(|f| f.path == path) else {
        return error(StatusCode::NOT_FOUND, "EntryNotFound");
    };
    if f.lfs {
        let sha = f.sha256();
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, format!("/lfs/{sha}?path={path}"))
            .header("x-linked-etag", format!("\"{sha}\""))
            .header("x-linked-size", f.bytes.len().to_string())
            .header("x-repo-commit", &r.commit)
            .header(header::ETAG, format!("\"{}\"", f.blob_id()))
            .body(Body::empty())
            .unwrap();
    }
    serve_bytes(&hub, f, &r.commit, &headers, false)
}

async fn simple(State(hub): State<Arc<Hub>>, Path(package): Path<String>) -> Response {
    let Some(wheels) = hub.packages.get(&package) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let files: Vec<serde_json::Value> = wheels
        .iter()
        .map(|w| {
            serde_json::json!({
                "filename": w.path,
                // Relative, as some mirrors write it.
                "url": format!("../../files/{}#sha256={}", w.path, w.sha256()),
                "hashes": {"sha256": w.sha256()},
                "size": w.bytes.len(),
            })
        })
        .collect();
    (
        [(header::CONTENT_TYPE, "application/vnd.pypi.simple.v1+json")],
        serde_json::json!({"meta": {"api-version": "1.1"}, "name": package, "files": files})
            .to_string(),
    )
        .into_response()
}

async fn wheel_file(
    State(hub): State<Arc<Hub>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let found = hub.packages.values().flatten().find(|w| w.path == name);
    match found {
        Some(w) => serve_bytes(&hub, w, "", &headers, true),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn lfs(State(hub): State<Arc<Hub>>, Path(sha): Path<String>, headers: HeaderMap) -> Response {
    for r in hub.repos.values() {
        if let Some(f) = r.files.iter().find(|f| f.lfs && f.sha256() == sha) {
            return serve_bytes(&hub, f, &r.commit, &headers, true);
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

fn serve_bytes(hub: &Hub, f: &HubFile, commit: &str, headers: &HeaderMap, lfs: bool) -> Response {
    if let Some(hook) = hub.switches.on_transfer.lock().unwrap().take() {
        hook();
    }
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let len = f.bytes.len() as u64;
    // `bytes=START-` or `bytes=START-END` (END inclusive, clamped to the file).
    let (start, end) = match range.as_deref() {
        None => (0, len.saturating_sub(1)),
        Some(r) => {
            let Some((s, e)) = r.strip_prefix("bytes=").and_then(|r| r.split_once('-')) else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let Ok(s) = s.parse::<u64>() else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let e = if e.is_empty() {
                len.saturating_sub(1)
            } else {
                match e.parse::<u64>() {
                    Ok(e) if e >= s => e.min(len.saturating_sub(1)),
                    _ => return StatusCode::BAD_REQUEST.into_response(),
                }
            };
            if s >= len {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                    .body(Body::empty())
                    .unwrap();
            }
            (s, e)
        }
    };
    let mut body = f.bytes[start as usize..=end as usize].to_vec();
    if lfs
        && hub
            .switches
            .corrupt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        let mid = body.len() / 2;
        body[mid] ^= 0x5a;
    }
    let cut = {
        let mut c = hub.switches.cut.lock().unwrap();
        match c.as_ref() {
            Some((p, n)) if *p == f.path => {
                let n = *n;
                *c = None;
                Some(n)
            }
            _ => None,
        }
    };
    let stall = {
        let mut c = hub.switches.stall.lock().unwrap();
        match c.as_ref() {
            Some((p, n)) if *p == f.path => {
                let n = *n;
                *c = None;
                Some(n)
            }
            _ => None,
        }
    };
    let cut = cut.or(stall);
    let sent = cut.map_or(body.len() as u64, |n| n.min(body.len() as u64));
    hub.switches.served.lock().unwrap().push(Served {
        path: f.path.clone(),
        range: range.clone(),
        bytes: sent,
    });
    let mut b = Response::builder()
        .header(header::CONTENT_LENGTH, body.len().to_string())
        .header(header::ACCEPT_RANGES, "bytes")
        .header("x-repo-commit", commit)
        .header(header::ETAG, format!("\"{}\"", f.blob_id()));
    b = if range.is_some() {
        b.status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))
    } else {
        b.status(StatusCode::OK)
    };
    use futures_util::StreamExt;
    let n = cut.map_or(body.len(), |n| (n as usize).min(body.len()));
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body[..n]
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    if cut.is_none() {
        return b.body(Body::from_stream(stream)).unwrap();
    }
    if stall.is_some() {
        let forever = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        return b.body(Body::from_stream(stream.chain(forever))).unwrap();
    }
    // Give the sent bytes time to reach the client, then drop the connection.
    let broken = futures_util::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        Err::<Vec<u8>, _>(std::io::Error::other("cut by the test"))
    });
    b.body(Body::from_stream(stream.chain(broken))).unwrap()
}
