//! forja's HTTP server (axum): OpenAI-compatible routes, server-sent event streams, the one
//! error → HTTP map, Prometheus metrics and API-key auth, over the engine actor.

pub mod adapters;
pub mod card;
pub mod embeddings;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod ollama;
pub mod openai;
pub mod openapi;
pub mod rag;
pub mod tools;
pub mod ui;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use forja_engine::serving::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::models::ModelPool;

/// How the server listens and whom it lets in.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Requests must send `Authorization: Bearer <key>` (all routes but `/health`).
    pub api_key: Option<String>,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Origins allowed by CORS; empty = CORS off.
    pub cors_origins: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_key: None,
            max_body_bytes: 8 << 20,
            cors_origins: Vec::new(),
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
pub struct AppState {
    pub models: ModelPool,
    pub metrics: Metrics,
    pub config: ServerConfig,
    /// Unix seconds the server started.
    pub started: u64,
    /// Document collections (`/v1/rag/…` and chat with `retrieval`), when the server keeps
    /// them.
    pub rag: Option<rag::RagState>,
}

impl AppState {
    /// A server of one model already running.
    pub fn new(engine: Engine, config: ServerConfig) -> Self {
        Self::with_pool(ModelPool::preloaded(engine), config)
    }

    /// A server of the models in `pool`.
    pub fn with_pool(models: ModelPool, config: ServerConfig) -> Self {
        AppState {
            models,
            metrics: Metrics::default(),
            config,
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            rag: None,
        }
    }

    /// The same server, keeping document collections as `config` says.
    pub fn with_rag(self, config: rag::RagConfig) -> Self {
        AppState {
            rag: Some(rag::RagState::new(config)),
            ..self
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-unique number for response ids.
pub(crate) fn jobs_id() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (t << 16) ^ NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Every API path the router serves (the OpenAPI test checks the document lists them all); the
/// web chat's pages are in [`ui::UI_ROUTES`].
pub const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/v1/embeddings",
    "/metrics",
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/embed",
    "/api/embeddings",
    "/health",
    "/api/version",
    "/openapi.json",
    "/v1/rag/collections",
    "/v1/rag/collections/{name}",
    "/v1/rag/collections/{name}/files",
    "/v1/rag/collections/{name}/search",
];

/// Every route, with auth, metrics, body limit, CORS and panic isolation.
pub fn router(state: Arc<AppState>) -> Router {
    let upload_limit = state.rag.as_ref().map_or(state.config.max_body_bytes, |r| {
        r.config.max_upload_request_bytes()
    });
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/models", get(openai::models))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/metrics", get(metrics_route))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/tags", get(ollama::tags))
        .route("/api/show", post(ollama::show))
        .route("/api/ps", get(ollama::ps))
        .route("/api/embed", post(embeddings::ollama_embed))
        .route("/api/embeddings", post(embeddings::ollama_embeddings))
        .route(
            "/v1/rag/collections",
            get(rag::routes::list_collections).post(rag::routes::create_collection),
        )
        .route(
            "/v1/rag/collections/{name}",
            get(rag::routes::show_collection).delete(rag::routes::delete_collection),
        )
        .route(
            "/v1/rag/collections/{name}/files",
            post(rag::upload::upload_files).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route(
            "/v1/rag/collections/{name}/search",
            post(rag::routes::search_collection),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), auth));
    let mut app = Router::new()
        .merge(api)
        .route("/health", get(health))
        .route("/api/version", get(ollama::version))
        .route("/openapi.json", get(openapi::document))
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("the server failed on this request; others are not affected")
                    .into_response()
            },
        ));
    if !state.config.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> = state
            .config
            .cors_origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
        );
    }
    app.with_state(state)
}

async fn auth(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    req: Request,
    next: Next,
) -> Response {
    if let Some(key) = &state.config.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(req).await
}

/// Compares without an early exit, so timing does not reveal how much of a key matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, &x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

async fn count(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    state.metrics.count_request(&route, resp.status().as_u16());
    resp
}

#[utoipa::path(get, path = "/health", tag = "Server",
    responses(
        (status = 200, description = "`{\"status\": \"ok\", \"models\", \"loaded\", \"loading\"}`"),
        (status = 503, description = "The default model is still loading")))]
async fn health(State(state): State<Arc<AppState>>) -> Response {
    let models = &state.models.entries;
    let loaded: Vec<serde_json::Value> = models
        .iter()
        .filter_map(|e| {
            e.loaded().map(
                |(runner, _)| serde_json::json!({"model": e.name, "pending": runner.pending()}),
            )
        })
        .collect();
    let loading: Vec<&str> = models
        .iter()
        .filter(|e| e.is_loading())
        .map(|e| e.name.as_str())
        .collect();
    // Ready once the default model is up (load balancers wait for that).
    let ready = models
        .first()
        .is_none_or(|e| e.loaded().is_some() || !e.is_loading());
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "status": if ready { "ok" } else { "loading" },
            "models": models.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            "loaded": loaded,
            "loading": loading,
        })),
    )
        .into_response()
}

#[utoipa::path(get, path = "/metrics", tag = "Server",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain")),
    security((), ("api_key" = [])))]
async fn metrics_route(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&state.models),
    )
        .into_response()
}

async fn fallback(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

/// Serves `state` on `listener` until `shutdown` resolves; in-flight streams end with it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Unload models whose keep-alive ran out.
    let pool = Arc::clone(&state);
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            pool.models.unload_expired();
        }
    });
    let app = router(state);
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secre", b"secret"));
        assert!(!constant_time_eq(b"secretx", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"Secret", b"secret"));
    }
}
