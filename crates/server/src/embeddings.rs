//! Embedding routes: OpenAI's `/v1/embeddings`, Ollama's `/api/embed` and its older
//! `/api/embeddings`, over the embedding model's actor (requests arriving together share forward
//! passes).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use forja_api::embeddings::{
    EmbedInput, EmbedRequest, EmbedResponse, Embedding, EmbeddingInput, EmbeddingRequest,
    EmbeddingResponse, EmbeddingUsage, EmbeddingVector, EmbeddingsRequest, EmbeddingsResponse,
    EncodingFormat,
};
use forja_engine::EngineError;
use forja_engine::embed::Embeddings;
use forja_engine::embed_serving::{EmbedEngine, EmbedSink};
use tokio::sync::oneshot;

use crate::AppState;
use crate::error::ApiError;
use crate::ollama::{OllamaError, keep_alive};
use crate::openai::parse_body;

/// Most inputs one request may carry (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

struct Reply(oneshot::Sender<forja_engine::Result<Embeddings>>);

impl EmbedSink for Reply {
    fn send(self: Box<Self>, result: forja_engine::Result<Embeddings>) {
        let _ = self.0.send(result);
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// Embeds `inputs` on `engine`; bad input is a 400 naming `param`.
async fn embed(
    state: &AppState,
    engine: &EmbedEngine,
    inputs: Vec<String>,
    truncate: bool,
    dimensions: Option<usize>,
    param: &str,
) -> Result<Embeddings, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::param(param, "there is nothing to embed"));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ApiError::param(
            param,
            format!(
                "{} inputs in one request; at most {MAX_INPUTS}",
                inputs.len()
            ),
        ));
    }
    let dim = engine.embedder.dimension();
    if let Some(d) = dimensions
        && d != dim
    {
        return Err(ApiError::param(
            "dimensions",
            format!("this model makes {dim}-dimensional vectors and cannot shorten them to {d}"),
        ));
    }
    let (tx, rx) = oneshot::channel();
    engine.submit(inputs, truncate, Box::new(Reply(tx)))?;
    let result = rx
        .await
        .map_err(|_| ApiError::unavailable("the embedding model stopped"))?;
    let embeddings = result.map_err(|e| match e {
        EngineError::Input(m) => ApiError::param(param, m),
        other => ApiError::internal(other.to_string()),
    })?;
    state.metrics.prompt_tokens.fetch_add(
        embeddings.prompt_tokens as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    Ok(embeddings)
}

/// Standard base64 (with padding) of `bytes`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "OpenAI",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One vector per input, in input order", body = EmbeddingResponse),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingResponse>, ApiError> {
    let req: EmbeddingRequest = parse_body(body, state.config.max_body_bytes)?;
    let inputs = match req.input {
        EmbeddingInput::Text(t) => vec![t],
        EmbeddingInput::Texts(t) => t,
        EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
            return Err(ApiError::param(
                "input",
                "input is token ids; this server reads text with the model's own tokenizer, \
                 so send strings (LangChain's OpenAIEmbeddings: check_embedding_ctx_length=False)",
            ));
        }
    };
    let engine = state.models.embedder(&req.model, None).await?;
    // OpenAI refuses over-long input rather than cutting it.
    let e = embed(&state, &engine, inputs, false, req.dimensions, "input").await?;
    let base64_out = req.encoding_format == Some(EncodingFormat::Base64);
    let data = e
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding",
            index,
            embedding: if base64_out {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64(&bytes))
            } else {
                EmbeddingVector::Float(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingResponse {
        object: "list",
        data,
        model: req.model,
        usage: EmbeddingUsage {
            prompt_tokens: e.prompt_tokens,
            total_tokens: e.prompt_tokens,
        },
    }))
}

#[utoipa::path(
    post,
    path = "/api/embed",
    tag = "Ollama",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "One vector per input; durations in nanoseconds", body = EmbedResponse),
        crate::openapi::OllamaErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn ollama_embed(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbedResponse>, OllamaError> {
    let start = Instant::now();
    let req: EmbedRequest = parse_body(body, state.config.max_body_bytes)?;
    let keep = keep_alive(req.keep_alive.as_ref())?;
    let engine = state.models.embedder(&req.model, keep).await?;
    let loaded = start.elapsed();
    let inputs = match req.input {
        EmbedInput::One(t) => vec![t],
        EmbedInput::Many(t) => t,
    };
    // Ollama cuts over-long input unless told not to.
    let truncate = req.truncate.unwrap_or(true);
    let e = embed(&state, &engine, inputs, truncate, req.dimensions, "input").await?;
    Ok(Json(EmbedResponse {
        model: req.model,
        embeddings: e.vectors,
        total_duration: start.elapsed().as_nanos() as u64,
        load_duration: loaded.as_nanos() as u64,
        prompt_eval_count: e.prompt_tokens,
    }))
}

#[utoipa::path(
    post,
    path = "/api/embeddings",
    tag = "Ollama",
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "The prompt's vector (Ollama's older route; `/api/embed` takes several inputs)", body = EmbeddingsResponse),
        crate::openapi::OllamaErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn ollama_embeddings(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EmbeddingsResponse>, OllamaError> {
    let req: EmbeddingsRequest = parse_body(body, state.config.max_body_bytes)?;
    let keep = keep_alive(req.keep_alive.as_ref())?;
    let engine = state.models.embedder(&req.model, keep).await?;
    let mut e = embed(&state, &engine, vec![req.prompt], true, None, "prompt").await?;
    Ok(Json(EmbeddingsResponse {
        embedding: e.vectors.pop().unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        // RFC 4648 test vectors.
        for (raw, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), enc);
        }
        assert_eq!(base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }
}
