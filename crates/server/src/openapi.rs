//! The OpenAPI 3.1 document of every route, generated from the handlers' annotations and the
//! wire types, served at `GET /openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "forja",
        description = "OpenAI- and Ollama-compatible API of `forja serve`, and its document \
                       collections (`/v1/rag/…`; `retrieval` on `/v1/chat/completions` answers \
                       from one, with `citations`). When the server has an API key, every \
                       route but /health, /api/version and /openapi.json needs \
                       `Authorization: Bearer <key>`."
    ),
    paths(
        crate::openai::chat_completions,
        crate::openai::completions,
        crate::openai::models,
        crate::embeddings::embeddings,
        crate::embeddings::ollama_embed,
        crate::embeddings::ollama_embeddings,
        crate::ollama::chat,
        crate::ollama::generate,
        crate::ollama::tags,
        crate::ollama::show,
        crate::ollama::ps,
        crate::ollama::version,
        crate::health,
        crate::metrics_route,
        crate::rag::routes::list_collections,
        crate::rag::routes::create_collection,
        crate::rag::routes::show_collection,
        crate::rag::routes::delete_collection,
        crate::rag::upload::upload_files,
        crate::rag::routes::search_collection,
    ),
    components(schemas(
        forja_api::openai::ChatCompletionChunk,
        forja_api::openai::ErrorBody,
        forja_api::ollama::Error
    )),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

/// The failures of a generation route, in OpenAI's error shape.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code, reason = "only the shape is read, by the OpenAPI document")]
pub enum OpenAiErrors {
    #[response(
        status = 400,
        description = "Bad parameters (the message says which and why)"
    )]
    BadRequest(forja_api::openai::ErrorBody),
    #[response(status = 401, description = "Missing or wrong API key")]
    Unauthorized(forja_api::openai::ErrorBody),
    #[response(status = 404, description = "Unknown model")]
    NotFound(forja_api::openai::ErrorBody),
    #[response(status = 413, description = "Body over the size limit")]
    TooLarge(forja_api::openai::ErrorBody),
    #[response(
        status = 429,
        description = "Queue full; retry after the Retry-After seconds"
    )]
    Busy(forja_api::openai::ErrorBody),
    #[response(
        status = 503,
        description = "The model is loading, does not fit next to busy ones, or the engine stopped"
    )]
    Unavailable(forja_api::openai::ErrorBody),
}

/// The same failures in Ollama's error shape.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code, reason = "only the shape is read, by the OpenAPI document")]
pub enum OllamaErrors {
    #[response(
        status = 400,
        description = "Bad parameters (the message says which and why)"
    )]
    BadRequest(forja_api::ollama::Error),
    #[response(status = 401, description = "Missing or wrong API key")]
    Unauthorized(forja_api::ollama::Error),
    #[response(status = 404, description = "Unknown model")]
    NotFound(forja_api::ollama::Error),
    #[response(status = 413, description = "Body over the size limit")]
    TooLarge(forja_api::ollama::Error),
    #[response(
        status = 429,
        description = "Queue full; retry after the Retry-After seconds"
    )]
    Busy(forja_api::ollama::Error),
    #[response(
        status = 503,
        description = "The model is loading, does not fit next to busy ones, or the engine stopped"
    )]
    Unavailable(forja_api::ollama::Error),
}

/// The `api_key` security scheme the routes refer to.
struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `GET /openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    Json(doc)
}
