//! `/v1/rag/collections…`: list, create, show and delete collections, and search one.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use forja_api::rag::{
    CollectionInfo, CollectionList, CreateCollection, DeletedCollection, SearchRequest,
    SearchResult,
};
use forja_rag::{CollectionStats, Embedder};

use super::{check_collection_name, cited, query, rag_error, rag_of, retrieve};
use crate::AppState;
use crate::error::ApiError;
use crate::openai::parse_body;

fn info(s: CollectionStats) -> CollectionInfo {
    CollectionInfo {
        name: s.collection.name,
        embedding_model: s.collection.embedding_model,
        dimension: s.collection.dimension,
        documents: s.documents,
        chunks: s.chunks,
    }
}

/// The collection name of a route's path.
pub fn path_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = path.map_err(|e| ApiError::param("name", e.body_text()))?;
    check_collection_name(&name)?;
    Ok(name)
}

fn not_found(name: &str) -> ApiError {
    ApiError::with_status(
        StatusCode::NOT_FOUND,
        format!("no collection {name:?} (list them at GET /v1/rag/collections)"),
    )
}

#[utoipa::path(get, path = "/v1/rag/collections", tag = "RAG",
    responses(
        (status = 200, description = "Every collection with its size and embedding model, by name", body = CollectionList),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn list_collections(
    State(state): State<Arc<AppState>>,
) -> Result<Json<CollectionList>, ApiError> {
    let rag = rag_of(&state)?;
    let data = rag
        .with_store(|store| store.collections().map_err(rag_error))
        .await?;
    Ok(Json(CollectionList {
        object: "list",
        data: data.into_iter().map(info).collect(),
    }))
}

#[utoipa::path(post, path = "/v1/rag/collections", tag = "RAG",
    request_body = CreateCollection,
    responses(
        (status = 201, description = "The new, empty collection, for the server's embedding model", body = CollectionInfo),
        (status = 409, description = "A collection of that name exists", body = forja_api::openai::ErrorBody),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn create_collection(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let req: CreateCollection = parse_body(body, state.config.max_body_bytes)?;
    check_collection_name(&req.name)?;
    let rag = rag_of(&state)?;
    let embedder = rag.embedder().await?;
    let (model, dim) = (embedder.name(), embedder.dimension());
    let name = req.name.clone();
    let created = rag
        .with_store(move |store| {
            if store.collection(&name).map_err(rag_error)?.is_some() {
                return Err(ApiError::with_status(
                    StatusCode::CONFLICT,
                    format!("collection {name:?} exists already"),
                ));
            }
            store
                .ensure_collection(&name, &model, dim)
                .map_err(rag_error)
        })
        .await?;
    let body = CollectionInfo {
        name: created.name,
        embedding_model: created.embedding_model,
        dimension: created.dimension,
        documents: 0,
        chunks: 0,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[utoipa::path(get, path = "/v1/rag/collections/{name}", tag = "RAG",
    params(("name" = String, Path, description = "The collection")),
    responses(
        (status = 200, description = "The collection with its size and embedding model", body = CollectionInfo),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn show_collection(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CollectionInfo>, ApiError> {
    let name = path_name(path)?;
    let rag = rag_of(&state)?;
    let wanted = name.clone();
    let found = rag
        .with_store(move |store| {
            let all = store.collections().map_err(rag_error)?;
            Ok(all.into_iter().find(|s| s.collection.name == wanted))
        })
        .await?;
    found.map(info).map(Json).ok_or_else(|| not_found(&name))
}

#[utoipa::path(delete, path = "/v1/rag/collections/{name}", tag = "RAG",
    params(("name" = String, Path, description = "The collection")),
    responses(
        (status = 200, description = "The collection, its documents, chunks and vectors are gone", body = DeletedCollection),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn delete_collection(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<DeletedCollection>, ApiError> {
    let name = path_name(path)?;
    let rag = rag_of(&state)?;
    let wanted = name.clone();
    let deleted = rag
        .with_store(move |store| store.delete_collection(&wanted).map_err(rag_error))
        .await?;
    if !deleted {
        return Err(not_found(&name));
    }
    Ok(Json(DeletedCollection {
        name,
        deleted: true,
    }))
}

#[utoipa::path(post, path = "/v1/rag/collections/{name}/search", tag = "RAG",
    params(("name" = String, Path, description = "The collection")),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "Ranked chunks, best first, with scores and what a citation needs", body = SearchResult),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = [])))]
pub async fn search_collection(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SearchResult>, ApiError> {
    let name = path_name(path)?;
    let req: SearchRequest = parse_body(body, state.config.max_body_bytes)?;
    let q = query(&req.query, req.k, req.mode, req.filters.as_ref(), "query")?;
    let rag = rag_of(&state)?;
    let hits = retrieve(rag, name.clone(), q, req.rerank, "rerank").await?;
    Ok(Json(SearchResult {
        object: "list",
        collection: name,
        mode: req.mode.unwrap_or_default(),
        data: hits
            .iter()
            .enumerate()
            .map(|(i, h)| cited(i + 1, h))
            .collect(),
    }))
}
