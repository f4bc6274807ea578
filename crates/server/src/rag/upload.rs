//! `POST /v1/rag/collections/{name}/files`: a multipart upload of one or more files, ingested
//! into the collection (created for the server's embedding model if new).
//!
//! The whole request is checked before anything is stored: every part must carry a file name
//! that is a plain relative name (an absolute path or a `..` is a 400 that says so) and no file
//! may be over the size limit (413). Then each file is parsed, chunked, embedded and stored in
//! one transaction of its own; a file that fails (an unknown format, a broken document) is
//! reported in the response and the others are stored. Nothing is written to disk but the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::extract::rejection::PathRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::StatusCode;
use forja_api::rag::{UploadResult, UploadedFile};
use forja_rag::{ChunkOptions, Embedder, FileOutcome, ingest_bytes};

use super::routes::path_name;
use super::{rag_error, rag_of};
use crate::AppState;
use crate::error::ApiError;

/// Longest file name kept, in bytes.
const MAX_NAME_BYTES: usize = 255;

/// The name an uploaded file is stored (and cited) under: the client's file name with `\` read
/// as `/`, empty and `.` components dropped. Absolute paths, drive letters, `..` components
/// and control characters are refused: a name never points outside the upload.
pub fn upload_name(raw: &str) -> Result<String, ApiError> {
    let refuse = |why: &str| {
        ApiError::param(
            "file",
            format!("uploaded file name {raw:?} refused: {why}; send the file's own name"),
        )
    };
    if raw.chars().any(char::is_control) {
        return Err(refuse("it contains control characters"));
    }
    let unified = raw.trim().replace('\\', "/");
    if unified.is_empty() {
        return Err(refuse("it is empty"));
    }
    let bytes = unified.as_bytes();
    let drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if unified.starts_with('/') || drive {
        return Err(refuse("it is an absolute path"));
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(refuse("it climbs out of the upload with `..`")),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(refuse("it names no file"));
    }
    let name = parts.join("/");
    if name.len() > MAX_NAME_BYTES {
        return Err(refuse(&format!("it is longer than {MAX_NAME_BYTES} bytes")));
    }
    Ok(name)
}

fn multipart_error(e: MultipartError, request_limit: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::with_status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than the {request_limit}-byte request limit; nothing was \
                 stored (send fewer files per request)"
            ),
        )
    } else {
        ApiError::invalid(format!(
            "cannot read the multipart upload: {}",
            e.body_text()
        ))
    }
}

/// Every file part of the upload, read whole, each within `limit` bytes.
async fn read_files(
    mut form: Multipart,
    limit: usize,
    request_limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(mut field) = form
        .next_field()
        .await
        .map_err(|e| multipart_error(e, request_limit))?
    {
        let Some(raw) = field.file_name().map(str::to_string) else {
            let part = field.name().unwrap_or("").to_string();
            return Err(ApiError::param(
                "file",
                format!("part {part:?} of the upload is not a file (it has no file name)"),
            ));
        };
        let name = upload_name(&raw)?;
        if files.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::param(
                "file",
                format!("the upload holds two files named {name:?}"),
            ));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = field
            .chunk()
            .await
            .map_err(|e| multipart_error(e, request_limit))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::with_status(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "file {name:?} is larger than the {limit}-byte limit of one uploaded \
                         file; nothing was stored"
                    ),
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        files.push((name, bytes));
    }
    if files.is_empty() {
        return Err(ApiError::param(
            "file",
            "the upload holds no file: send multipart/form-data with one or more `file` parts",
        ));
    }
    Ok(files)
}

#[utoipa::path(post, path = "/v1/rag/collections/{name}/files", tag = "RAG",
    params(("name" = String, Path, description = "The collection (created if new)")),
    request_body(content = inline(UploadForm), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "What happened to each file; failed files carry the error and were not stored", body = UploadResult),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn upload_files(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Json<UploadResult>, ApiError> {
    let collection = path_name(path)?;
    let rag = rag_of(&state)?;
    let form = form.map_err(|e| {
        ApiError::invalid(format!(
            "an upload is a multipart/form-data body of file parts: {}",
            e.body_text()
        ))
    })?;
    let limit = rag.config.max_upload_bytes;
    let files = read_files(form, limit, rag.config.max_upload_request_bytes()).await?;
    let embedder = rag.embedder().await?;
    let name = collection.clone();
    let results = rag
        .with_store(move |store| {
            let c = store
                .ensure_collection(&name, &embedder.name(), embedder.dimension())
                .map_err(rag_error)?;
            let options = ChunkOptions::for_model(embedder.max_tokens());
            let mut out = Vec::with_capacity(files.len());
            for (file, bytes) in &files {
                let mut entry = UploadedFile {
                    name: file.clone(),
                    status: "failed",
                    chunks: 0,
                    bytes: bytes.len(),
                    error: None,
                };
                match ingest_bytes(store, &c, file, bytes, None, &*embedder, options) {
                    Ok((outcome, chunks)) => {
                        entry.status = match outcome {
                            FileOutcome::Added => "added",
                            FileOutcome::Updated => "updated",
                            FileOutcome::Unchanged | FileOutcome::Removed => "unchanged",
                        };
                        entry.chunks = chunks;
                    }
                    Err(e) if e.stops_the_run() => return Err(rag_error(e)),
                    Err(e) => entry.error = Some(e.to_string()),
                }
                out.push(entry);
            }
            Ok(out)
        })
        .await?;
    Ok(Json(UploadResult {
        collection,
        failed: results.iter().filter(|f| f.error.is_some()).count(),
        chunks: results.iter().map(|f| f.chunks).sum(),
        files: results,
    }))
}

/// The upload's multipart form, for the OpenAPI document.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code, reason = "only the shape is read, by the OpenAPI document")]
pub struct UploadForm {
    /// A file; repeat the part for several. Its file name is the document's name in the
    /// collection (a plain relative name: absolute paths and `..` are refused).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass_and_escapes_are_refused() {
        assert_eq!(upload_name("report.pdf").unwrap(), "report.pdf");
        assert_eq!(upload_name("docs/a.md").unwrap(), "docs/a.md");
        assert_eq!(upload_name("docs\\.\\a.md").unwrap(), "docs/a.md");
        assert_eq!(upload_name("  notes.txt ").unwrap(), "notes.txt");
        for (bad, why) in [
            ("../x.md", "`..`"),
            ("a/../../etc/passwd", "`..`"),
            ("..\\x.md", "`..`"),
            ("/etc/passwd", "absolute"),
            ("\\\\server\\share\\x.md", "absolute"),
            ("C:\\Windows\\x.md", "absolute"),
            ("c:x.md", "absolute"),
            ("", "empty"),
            ("./", "names no file"),
            ("a\nb.md", "control"),
            ("a\0b.md", "control"),
        ] {
            let e = upload_name(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(e.message.contains(why), "{bad:?}: {}", e.message);
            assert!(e.message.contains("refused"), "{}", e.message);
        }
        assert!(upload_name(&"x".repeat(300)).is_err());
    }
}
