//! The OpenAPI 3.1 document of every route, generated from the handlers' annotations and the
//! wire types, served at `GET /openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "forja",
        description = "OpenAI- and Ollama-compatible API of `forja serve`. When the server has an \
                       API key, every route but /health, /api/version and /openapi.json needs \
                       `Authorization: Bearer <key>`."
    ),
    paths(
        crate::openai::chat_completions,
        crate::openai::completions,
        crate::openai::models,
        crate::ollama::chat,
        crate::ollama::generate,
        crate::ollama::tags,
        crate::ollama::show,
        crate::ollama::ps,
        crate::ollama::version,
        crate::health,
        crate::metrics_route,
    ),
    components(schemas(forja_api::openai::ChatCompletionChunk)),
    modifiers(&BearerKey)
)]
pub struct ApiDoc;

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
