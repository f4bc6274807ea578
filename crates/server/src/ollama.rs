//! Ollama-compatible routes: `/api/chat`, `/api/generate` (newline-delimited JSON streams by
//! default), `/api/tags`, `/api/show`, `/api/ps`, `/api/version`. Errors are Ollama's
//! `{"error": "…"}` with the same statuses as the OpenAI routes.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use forja_api::ollama::{
    ChatMessage, ChatRequest, ChatResponse, Error, GenerateRequest, GenerateResponse, ListedModel,
    ModelDetails, ModelList, Options, ShowRequest, ShowResponse, Stats,
};
use forja_api::openai::{OneOrMany, Sampling};
use forja_engine::Message;
use forja_engine::constrain::OutputFormat;
use forja_engine::serving::Event;
use forja_engine::tool_calls::{self, ToolStream};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::AppState;
use crate::card::rfc3339;
use crate::error::ApiError;
use crate::jobs::{StreamEvents, collect, event_stream, finish_name, plan, submit};
use crate::models::{KeepAlive, ModelEntry, Runner};
use crate::openai::parse_body;

/// An error in Ollama's shape.
#[derive(Debug)]
pub struct OllamaError(ApiError);

impl From<ApiError> for OllamaError {
    fn from(e: ApiError) -> Self {
        OllamaError(e)
    }
}

impl IntoResponse for OllamaError {
    fn into_response(self) -> Response {
        let mut r = (
            self.0.status,
            Json(Error {
                error: self.0.message.clone(),
            }),
        )
            .into_response();
        if let Some(s) = self.0.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(s));
        }
        r
    }
}

type Result<T> = std::result::Result<T, OllamaError>;

fn now() -> String {
    rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// Ollama's defaults where the request says nothing: temperature 0.8, top_k 40, top_p 0.9.
fn sampling(options: Option<&Options>) -> std::result::Result<Sampling, ApiError> {
    let o = options.cloned().unwrap_or_default();
    let max_tokens = match o.num_predict {
        None | Some(-1) | Some(-2) => None,
        Some(n) if n > 0 => Some(n as usize),
        Some(n) => {
            return Err(ApiError::param(
                "options.num_predict",
                format!("num_predict must be positive, -1 or -2 (got {n})"),
            ));
        }
    };
    Ok(Sampling {
        temperature: Some(o.temperature.unwrap_or(0.8)),
        top_p: Some(o.top_p.unwrap_or(0.9)),
        top_k: Some(o.top_k.unwrap_or(40)),
        min_p: o.min_p,
        frequency_penalty: o.frequency_penalty,
        presence_penalty: o.presence_penalty,
        repetition_penalty: o.repeat_penalty,
        logit_bias: None,
        seed: o.seed,
        max_tokens,
        stop: o.stop.map(OneOrMany::Many),
        n: None,
        priority: None,
    })
}

/// Ollama's `format`: `"json"` or a JSON schema.
fn output_format(format: Option<&Value>) -> std::result::Result<Option<OutputFormat>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(OutputFormat::JsonObject)),
        Some(Value::Object(_)) => Ok(format.cloned().map(OutputFormat::JsonSchema)),
        Some(other) => Err(ApiError::param(
            "format",
            format!("format must be \"json\" or a JSON schema object (got {other})"),
        )),
    }
}

fn stats(start: Instant, first: Option<Instant>, usage: &forja_engine::serving::Usage) -> Stats {
    let end = Instant::now();
    let first = first.unwrap_or(end);
    Stats {
        total_duration: (end - start).as_nanos() as u64,
        load_duration: 0,
        prompt_eval_count: usage.prompt_tokens,
        prompt_eval_duration: (first - start).as_nanos() as u64,
        eval_count: usage.completion_tokens,
        eval_duration: (end - first).as_nanos() as u64,
    }
}

/// A newline-delimited JSON response from a stream of values.
fn ndjson(stream: impl futures_util::Stream<Item = Value> + Send + 'static) -> Response {
    let body = stream.map(|v| {
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Ok::<Bytes, std::convert::Infallible>(Bytes::from(line))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// What one streamed line carries.
enum Piece {
    Text(String),
    Done { reason: &'static str, stats: Stats },
    Failed(String),
}

/// The engine's events for one choice as lines: text pieces, then a final line with stats.
fn pieces(
    state: Arc<AppState>,
    rx: UnboundedReceiver<(usize, Event)>,
    start: Instant,
) -> impl futures_util::Stream<Item = Piece> + Send {
    let s = Pieces { start, first: None };
    event_stream(state, rx, 1, start, s)
}

struct Pieces {
    start: Instant,
    first: Option<Instant>,
}

impl StreamEvents for Pieces {
    type Item = Piece;

    fn on_event(&mut self, _: usize, event: Event) -> (Vec<Piece>, bool) {
        match event {
            Event::Token { text, .. } => {
                self.first.get_or_insert_with(Instant::now);
                let piece = (!text.is_empty()).then_some(Piece::Text(text));
                (piece.into_iter().collect(), false)
            }
            Event::Done { finish, usage } => {
                let stats = stats(self.start, self.first, &usage);
                let reason = finish_name(finish);
                (vec![Piece::Done { reason, stats }], true)
            }
            Event::Error(m) => (vec![Piece::Failed(m)], true),
        }
    }

    fn on_stopped(&mut self) -> Piece {
        Piece::Failed("the engine stopped".into())
    }
}

fn messages(msgs: &[ChatMessage]) -> std::result::Result<Vec<Message>, ApiError> {
    if msgs.is_empty() {
        return Err(ApiError::param("messages", "messages must not be empty"));
    }
    msgs.iter()
        .enumerate()
        .map(|(i, m)| {
            if m.images.as_ref().is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::param(
                    "messages",
                    format!("messages[{i}]: images are not supported by this text model"),
                ));
            }
            Ok(Message {
                role: m.role.clone(),
                content: m.content.clone(),
                tool_calls: m.tool_calls.clone(),
                name: m.tool_name.clone(),
                tool_call_id: None,
            })
        })
        .collect()
}

#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "Ollama",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer; streamed (the default) as newline-delimited JSON lines, the last with `done: true` and the counts", body = ChatResponse),
        crate::openapi::OllamaErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn chat(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let start = Instant::now();
    let req: ChatRequest = parse_body(body, state.config.max_body_bytes)?;
    let keep_alive = keep_alive(req.keep_alive.as_ref())?;
    let (engine, adapter) =
        crate::adapters::chat_engine(&state, &req.model, req.adapter.as_deref(), keep_alive)
            .await?;
    let format = output_format(req.format.as_ref())?;
    let tools = crate::tools::plan(&engine.model, req.tools.as_ref(), None)?;
    if tools.is_some() && format.is_some() {
        return Err(ApiError::param("format", "format cannot be combined with tools").into());
    }
    let model = req.model.clone();
    if req.messages.is_empty() {
        // Ollama's way to load a model: an empty conversation answers at once.
        return Ok(Json(ChatResponse {
            model,
            created_at: now(),
            message: assistant(String::new()),
            done: true,
            done_reason: Some("load".into()),
            stats: None,
        })
        .into_response());
    }
    let msgs = messages(&req.messages)?;
    let vocab = engine.model.tokenizer.vocab_size();
    let mut plan = plan(&sampling(req.options.as_ref())?, 0, vocab)?;
    plan.format = format.clone();
    plan.adapter = adapter;
    let worker = engine.clone();
    let rendered = tools.as_ref().map(|t| t.tools.clone());
    let prompt =
        tokio::task::spawn_blocking(move || worker.model.chat_prompt(&msgs, rendered.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("prompt rendering failed: {e}")))?
            .map_err(|e| ApiError::param("messages", e.to_string()))?;
    let rx = submit(&engine, &[prompt], &plan).await?;
    let tool_format = tools.map(|t| t.format);
    if req.stream.unwrap_or(true) {
        let mut held = tool_format.map(ToolStream::new);
        let lines = pieces(Arc::clone(&state), rx, start).map(move |p| {
            let line = match p {
                Piece::Text(t) => {
                    let t = match held.as_mut() {
                        Some(h) => h.push(&t),
                        None => t,
                    };
                    ChatResponse {
                        model: model.clone(),
                        created_at: now(),
                        message: assistant(t),
                        done: false,
                        done_reason: None,
                        stats: None,
                    }
                }
                Piece::Done { reason, stats } => {
                    let (rest, calls) = held
                        .take()
                        .map_or_else(|| (String::new(), Vec::new()), ToolStream::finish);
                    ChatResponse {
                        model: model.clone(),
                        created_at: now(),
                        message: with_calls(assistant(rest), calls),
                        done: true,
                        done_reason: Some(reason.into()),
                        stats: Some(stats),
                    }
                }
                Piece::Failed(m) => return serde_json::json!({ "error": m }),
            };
            serde_json::to_value(line).unwrap_or_default()
        });
        return Ok(ndjson(lines));
    }
    let mut results = collect(&state, rx, 1, start).await?;
    let r = results
        .pop()
        .ok_or_else(|| ApiError::internal("the engine returned no answer"))?;
    let first = r.first_token;
    let (content, calls) = match tool_format {
        Some(f) => tool_calls::parse(f, &r.text),
        None => (r.text, Vec::new()),
    };
    Ok(Json(ChatResponse {
        model,
        created_at: now(),
        message: with_calls(assistant(content), calls),
        done: true,
        done_reason: Some(finish_name(r.finish).into()),
        stats: Some(stats(start, first, &r.usage)),
    })
    .into_response())
}

/// Ollama's tool calls: arguments as objects.
fn with_calls(mut m: ChatMessage, calls: Vec<tool_calls::ToolCall>) -> ChatMessage {
    if !calls.is_empty() {
        let list: Vec<Value> = calls
            .into_iter()
            .map(|c| {
                let args = serde_json::from_str::<Value>(&c.arguments)
                    .unwrap_or(Value::String(c.arguments));
                serde_json::json!({"function": {"name": c.name, "arguments": args}})
            })
            .collect();
        m.tool_calls = Some(Value::Array(list));
    }
    m
}

fn assistant(content: String) -> ChatMessage {
    ChatMessage {
        role: "assistant".into(),
        content,
        images: None,
        tool_calls: None,
        tool_name: None,
        thinking: None,
    }
}

#[utoipa::path(
    post,
    path = "/api/generate",
    tag = "Ollama",
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "The completion; streamed (the default) as newline-delimited JSON lines", body = GenerateResponse),
        crate::openapi::OllamaErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn generate(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let start = Instant::now();
    let req: GenerateRequest = parse_body(body, state.config.max_body_bytes)?;
    let keep_alive = keep_alive(req.keep_alive.as_ref())?;
    let (engine, adapter) =
        crate::adapters::chat_engine(&state, &req.model, req.adapter.as_deref(), keep_alive)
            .await?;
    let format = output_format(req.format.as_ref())?;
    for (field, given) in [
        ("suffix", req.suffix.as_ref().is_some_and(|s| !s.is_empty())),
        (
            "template",
            req.template.as_ref().is_some_and(|s| !s.is_empty()),
        ),
        (
            "context",
            req.context.as_ref().is_some_and(|c| !c.is_empty()),
        ),
        ("images", req.images.as_ref().is_some_and(|c| !c.is_empty())),
    ] {
        if given {
            return Err(ApiError::param(
                field,
                format!(
                    "`{field}` is not supported by this server; use /api/chat for conversations"
                ),
            )
            .into());
        }
    }
    let model = req.model.clone();
    let text = req.prompt.clone().unwrap_or_default();
    if text.is_empty() {
        return Ok(Json(GenerateResponse {
            model,
            created_at: now(),
            response: String::new(),
            done: true,
            done_reason: Some("load".into()),
            context: None,
            stats: None,
        })
        .into_response());
    }
    let vocab = engine.model.tokenizer.vocab_size();
    let mut plan = plan(&sampling(req.options.as_ref())?, 0, vocab)?;
    plan.format = format.clone();
    plan.adapter = adapter;
    let worker = engine.clone();
    let raw = req.raw.unwrap_or(false) || worker.model.template.is_none();
    let system = req.system.clone();
    let prompt = tokio::task::spawn_blocking(move || {
        if raw {
            worker.model.completion_prompt(&text)
        } else {
            let mut msgs = Vec::new();
            if let Some(s) = &system {
                msgs.push(Message::new("system", s));
            }
            msgs.push(Message::new("user", &text));
            worker.model.chat_prompt(&msgs, None)
        }
    })
    .await
    .map_err(|e| ApiError::internal(format!("prompt rendering failed: {e}")))?
    .map_err(|e| ApiError::param("prompt", e.to_string()))?;
    let rx = submit(&engine, std::slice::from_ref(&prompt), &plan).await?;
    if req.stream.unwrap_or(true) {
        let lines = pieces(Arc::clone(&state), rx, start).map(move |p| {
            let line = match p {
                Piece::Text(t) => GenerateResponse {
                    model: model.clone(),
                    created_at: now(),
                    response: t,
                    done: false,
                    done_reason: None,
                    context: None,
                    stats: None,
                },
                Piece::Done { reason, stats } => GenerateResponse {
                    model: model.clone(),
                    created_at: now(),
                    response: String::new(),
                    done: true,
                    done_reason: Some(reason.into()),
                    context: None,
                    stats: Some(stats),
                },
                Piece::Failed(m) => return serde_json::json!({ "error": m }),
            };
            serde_json::to_value(line).unwrap_or_default()
        });
        return Ok(ndjson(lines));
    }
    let mut results = collect(&state, rx, 1, start).await?;
    let r = results
        .pop()
        .ok_or_else(|| ApiError::internal("the engine returned no answer"))?;
    let mut context = prompt;
    context.extend(r.tokens.iter().map(|s| s.token));
    Ok(Json(GenerateResponse {
        model,
        created_at: now(),
        response: r.text,
        done: true,
        done_reason: Some(finish_name(r.finish).into()),
        context: Some(context),
        stats: Some(stats(start, r.first_token, &r.usage)),
    })
    .into_response())
}

fn details(e: &ModelEntry) -> ModelDetails {
    let c = &e.card;
    ModelDetails {
        parent_model: String::new(),
        format: c.format.into(),
        family: c.family.clone(),
        families: vec![c.family.clone()],
        parameter_size: c.parameter_size(),
        quantization_level: c.quantization.clone(),
    }
}

/// A model as `/api/tags` (everything offered) or `/api/ps` (loaded, with the bytes it holds
/// and when its keep-alive runs out) lists it.
fn listed(e: &ModelEntry, running: Option<(u64, Option<std::time::Instant>)>) -> ListedModel {
    let expires = running.map(|(_, at)| match at {
        // Loaded for the life of the server.
        None => "9999-12-31T23:59:59Z".to_string(),
        Some(at) => {
            let left = at
                .saturating_duration_since(std::time::Instant::now())
                .as_secs();
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            rfc3339(now + left)
        }
    });
    ListedModel {
        name: e.name.clone(),
        model: e.name.clone(),
        modified_at: rfc3339(e.card.modified),
        size: running.map_or(e.card.file_bytes, |(bytes, _)| e.card.file_bytes + bytes),
        digest: String::new(),
        details: details(e),
        expires_at: expires,
        size_vram: running.map(|_| 0),
    }
}

/// Ollama's per-request `keep_alive`.
pub(crate) fn keep_alive(v: Option<&Value>) -> std::result::Result<Option<KeepAlive>, ApiError> {
    v.filter(|v| !v.is_null())
        .map(KeepAlive::parse)
        .transpose()
        .map_err(|e| ApiError::param("keep_alive", e))
}

#[utoipa::path(get, path = "/api/tags", tag = "Ollama",
    responses((status = 200, description = "Models available", body = ModelList)),
    security((), ("api_key" = [])))]
pub async fn tags(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        models: state
            .models
            .entries
            .iter()
            .flat_map(|e| {
                let base = listed(e, None);
                // Each adapter is offered as `model+adapter`, its parent the base model.
                let adapters: Vec<ListedModel> = e
                    .adapters
                    .iter()
                    .map(|a| {
                        let name = crate::adapters::listed_name(e, a);
                        let mut m = base.clone();
                        m.name.clone_from(&name);
                        m.model = name;
                        m.details.parent_model.clone_from(&e.name);
                        m
                    })
                    .collect();
                std::iter::once(base).chain(adapters)
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/api/ps", tag = "Ollama",
    responses((status = 200, description = "Models loaded", body = ModelList)),
    security((), ("api_key" = [])))]
pub async fn ps(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        models: state
            .models
            .entries
            .iter()
            .filter_map(|e| {
                e.loaded().map(|(runner, at)| {
                    let bytes = match &runner {
                        Runner::Chat(engine) => engine.pool.bytes,
                        Runner::Embed(_) => e.footprint.workspace,
                    };
                    listed(e, Some((bytes, at)))
                })
            })
            .collect(),
    })
}

#[utoipa::path(get, path = "/api/version", tag = "Ollama",
    responses((status = 200, description = "`{\"version\": \"…\"}`")))]
pub async fn version() -> Json<Value> {
    Json(serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
}

#[utoipa::path(post, path = "/api/show", tag = "Ollama", request_body = ShowRequest,
    responses((status = 200, description = "Model details", body = ShowResponse),
        (status = 404, description = "Unknown model", body = Error)),
    security((), ("api_key" = [])))]
pub async fn show(
    State(state): State<Arc<AppState>>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Json<ShowResponse>> {
    let req: ShowRequest = parse_body(body, state.config.max_body_bytes)?;
    let (entry, adapter) = crate::adapters::resolve(&state, &req.model, None)?;
    let mut entry_details = details(entry);
    if adapter.is_some() {
        entry_details.parent_model.clone_from(&entry.name);
    }
    let entry = Arc::clone(state.models.find(&entry.name)?);
    let runner = state.models.runner(&entry.name, None).await?;
    let c = &entry.card;
    let mut info = std::collections::BTreeMap::new();
    info.insert("general.architecture".into(), Value::from(c.family.clone()));
    info.insert("general.parameter_count".into(), Value::from(c.parameters));
    let (context, template, path, capability) = match &runner {
        Runner::Chat(engine) => (
            engine.pool.max_model_len,
            engine.model.tokenizer.chat_template.clone(),
            engine.model.path.clone(),
            "completion",
        ),
        Runner::Embed(e) => {
            info.insert(
                format!("{}.embedding_length", c.family),
                Value::from(e.embedder.dimension()),
            );
            let path = entry.path.clone().unwrap_or_default();
            (e.embedder.max_tokens(), None, path, "embedding")
        }
    };
    info.insert(format!("{}.context_length", c.family), Value::from(context));
    Ok(Json(ShowResponse {
        modelfile: format!("FROM {}\n", path.display()),
        parameters: String::new(),
        template: template.unwrap_or_default(),
        details: entry_details,
        model_info: info,
        capabilities: vec![capability.into()],
        modified_at: rfc3339(c.modified),
    }))
}
