//! `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use forja_api::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChoiceLogprobs, ChunkChoice, Completion, CompletionChoice, CompletionLogprobs,
    CompletionRequest, Content, Delta, Model, ModelList, PromptTokensDetails, TokenLogprob,
    TopLogprob, Usage,
};
use forja_engine::constrain::OutputFormat;
use forja_engine::serving::{Engine, Event};
use forja_engine::tool_calls::{self, ToolFormat, ToolStream};
use forja_engine::{Message, Sampled};
use futures_util::Stream;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::AppState;
use crate::error::ApiError;
use crate::jobs::{StreamEvents, collect, event_stream, finish_name, plan, submit};
use crate::models::{ModelKind, Runner};

/// Most log-probability alternatives per token.
const MAX_TOP_LOGPROBS: usize = 20;

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Parses a JSON body; every failure is a 4xx that says what and where.
pub fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::too_large(limit),
        other => ApiError::invalid(format!("cannot read the request body: {other}")),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
}

pub(crate) fn request_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", crate::jobs_id())
}

/// The engine's conversation from OpenAI messages (text parts only).
fn messages(req: &ChatCompletionRequest) -> Result<Vec<Message>, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::param("messages", "messages must not be empty"));
    }
    req.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let content = match &m.content {
                None => String::new(),
                Some(Content::Text(t)) => t.clone(),
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), &p.text) {
                            ("text", Some(t)) => text += t,
                            (kind, _) => {
                                return Err(ApiError::param(
                                    "messages",
                                    format!(
                                        "messages[{i}]: content part of type `{kind}` is not \
                                         supported by this text model"
                                    ),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            Ok(Message {
                role: m.role.clone(),
                content,
                tool_calls: m.tool_calls.as_ref().map(crate::tools::template_calls),
                name: m.name.clone(),
                tool_call_id: m.tool_call_id.clone(),
            })
        })
        .collect()
}

/// The output format a request asks for.
fn output_format(req: &ChatCompletionRequest) -> Result<Option<OutputFormat>, ApiError> {
    let Some(rf) = &req.response_format else {
        return Ok(None);
    };
    let kind = rf.get("type").and_then(|t| t.as_str()).unwrap_or("");
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(OutputFormat::JsonObject)),
        "json_schema" => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| {
                    ApiError::param(
                        "response_format",
                        "response_format json_schema needs json_schema.schema",
                    )
                })?;
            Ok(Some(OutputFormat::JsonSchema(schema.clone())))
        }
        other => Err(ApiError::param(
            "response_format",
            format!("response_format type `{other}` is not one of text, json_object, json_schema"),
        )),
    }
}

fn token_text(engine: &Engine, id: u32) -> String {
    engine
        .model
        .tokenizer
        .decode(&[id], false)
        .unwrap_or_default()
}

fn chat_logprob(engine: &Engine, s: &Sampled) -> TokenLogprob {
    let token = token_text(engine, s.token);
    TokenLogprob {
        bytes: token.as_bytes().to_vec(),
        token,
        logprob: s.logprob,
        top_logprobs: s
            .top
            .iter()
            .map(|&(id, lp)| {
                let t = token_text(engine, id);
                TopLogprob {
                    bytes: t.as_bytes().to_vec(),
                    token: t,
                    logprob: lp,
                }
            })
            .collect(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "OpenAI",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The answer; with `stream: true`, server-sent events each carrying a `ChatCompletionChunk`, then `[DONE]`", body = ChatCompletion),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let req: ChatCompletionRequest = parse_body(body, state.config.max_body_bytes)?;
    let (engine, adapter) =
        crate::adapters::chat_engine(&state, &req.model, req.adapter.as_deref(), None).await?;
    let format = output_format(&req)?;
    let want_logprobs = req.logprobs.unwrap_or(false);
    let top = req.top_logprobs.unwrap_or(0);
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::param(
            "top_logprobs",
            format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"),
        ));
    }
    if top > 0 && !want_logprobs {
        return Err(ApiError::param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let vocab = engine.model.tokenizer.vocab_size();
    let mut plan = plan(&req.sampling(), top, vocab)?;
    plan.adapter = adapter;
    let tools = crate::tools::plan(&engine.model, req.tools.as_ref(), req.tool_choice.as_ref())?;
    plan.format = match (&tools, format) {
        (Some(t), None) => t.forced.clone(),
        (None, f) => f,
        (Some(_), Some(_)) => {
            return Err(ApiError::param(
                "response_format",
                "response_format cannot be combined with tools",
            ));
        }
    };
    let mut msgs = messages(&req)?;
    let rendered = tools.as_ref().map(|t| t.tools.clone());
    let mut citations = None;
    if let Some(r) = &req.retrieval {
        use crate::rag::chat::{Prepared, nothing_found, prepare};
        match prepare(&state, &engine, r, msgs, rendered.clone(), &mut plan).await? {
            Prepared::Prompt {
                messages,
                citations: cited,
            } => {
                msgs = messages;
                citations = Some(cited);
            }
            Prepared::NothingRelevant(text) => return Ok(nothing_found(&req, plan.n, text)),
        }
    }
    let worker = engine.clone();
    let prompt =
        tokio::task::spawn_blocking(move || worker.model.chat_prompt(&msgs, rendered.as_ref()))
            .await
            .map_err(|e| ApiError::internal(format!("prompt rendering failed: {e}")))?
            .map_err(|e| ApiError::param("messages", e.to_string()))?;
    let prompts = [prompt];
    let rx = submit(&engine, &prompts, &plan).await?;
    let id = request_id("chatcmpl");
    let created = now_secs();
    let choices = plan.n;
    if req.stream {
        let usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let stream = chat_stream(
            state,
            engine,
            rx,
            id,
            created,
            req.model,
            choices,
            usage,
            want_logprobs,
            tools.map(|t| t.format),
            citations,
            start,
        );
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let results = collect(&state, rx, choices, start).await?;
    let mut usage = Usage::default();
    let mut out = Vec::with_capacity(choices);
    for (index, r) in results.into_iter().enumerate() {
        add_usage(&mut usage, &r.usage, index < 1);
        let (content, calls) = match &tools {
            Some(t) => tool_calls::parse(t.format, &r.text),
            None => (r.text, Vec::new()),
        };
        let finish = if calls.is_empty() {
            finish_name(r.finish)
        } else {
            "tool_calls"
        };
        out.push(ChatChoice {
            index,
            message: AssistantMessage {
                role: "assistant",
                content: (calls.is_empty() || !content.is_empty()).then_some(content),
                tool_calls: crate::tools::api_calls(calls, false),
            },
            logprobs: want_logprobs.then(|| ChoiceLogprobs {
                content: r.tokens.iter().map(|s| chat_logprob(&engine, s)).collect(),
            }),
            finish_reason: finish,
        });
    }
    Ok(Json(ChatCompletion {
        id,
        object: "chat.completion",
        created,
        model: req.model,
        choices: out,
        usage,
        citations,
    })
    .into_response())
}

/// Adds a choice's counts; the prompt is counted once per distinct prompt.
fn add_usage(total: &mut Usage, u: &forja_engine::serving::Usage, count_prompt: bool) {
    if count_prompt {
        total.prompt_tokens += u.prompt_tokens;
        let cached = total
            .prompt_tokens_details
            .get_or_insert_with(PromptTokensDetails::default);
        cached.cached_tokens += u.cached_tokens;
    }
    total.completion_tokens += u.completion_tokens;
    total.total_tokens = total.prompt_tokens + total.completion_tokens;
}

struct ChatStream {
    engine: Engine,
    id: String,
    created: u64,
    model: String,
    usage: Option<Usage>,
    logprobs: bool,
    /// Per choice: holds back tool calls while content streams.
    tools: Vec<Option<ToolStream>>,
    /// Choices that sent their role chunk / finished.
    started: Vec<bool>,
    left: usize,
    done: bool,
    /// With retrieval: the sources, sent on the last chunk.
    citations: Option<Vec<forja_api::rag::CitedChunk>>,
}

impl ChatStream {
    fn chunk(&self, choices: Vec<ChunkChoice>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: self.usage.as_ref().map(|_| None),
            citations: None,
        }
    }

    /// The SSE events for one engine event.
    fn events(&mut self, i: usize, ev: Event) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let role = if self.started.get(i).copied().unwrap_or(true) {
            None
        } else {
            if let Some(s) = self.started.get_mut(i) {
                *s = true;
            }
            Some("assistant")
        };
        match ev {
            Event::Token { sampled, text } => {
                let text = match self.tools.get_mut(i).and_then(Option::as_mut) {
                    Some(t) => t.push(&text),
                    None => text,
                };
                if text.is_empty() && !self.logprobs && role.is_none() {
                    return out;
                }
                let logprobs = self.logprobs.then(|| ChoiceLogprobs {
                    content: vec![chat_logprob(&self.engine, &sampled)],
                });
                let c = ChunkChoice {
                    index: i,
                    delta: Delta {
                        role,
                        content: Some(text),
                        tool_calls: Vec::new(),
                    },
                    logprobs,
                    finish_reason: None,
                };
                out.push(json_event(&self.chunk(vec![c])));
            }
            Event::Done { finish, usage } => {
                let (rest, calls) = match self.tools.get_mut(i).and_then(Option::take) {
                    Some(t) => t.finish(),
                    None => (String::new(), Vec::new()),
                };
                let reason = if calls.is_empty() {
                    finish_name(finish)
                } else {
                    "tool_calls"
                };
                let c = ChunkChoice {
                    index: i,
                    delta: Delta {
                        role,
                        content: (!rest.is_empty()).then_some(rest),
                        tool_calls: crate::tools::api_calls(calls, true),
                    },
                    logprobs: None,
                    finish_reason: Some(reason),
                };
                let mut finished = self.chunk(vec![c]);
                if let Some(total) = &mut self.usage {
                    add_usage(total, &usage, i == 0);
                }
                self.left -= 1;
                if self.left == 0 && self.usage.is_none() {
                    finished.citations = self.citations.take();
                }
                out.push(json_event(&finished));
                if self.left == 0 {
                    if let Some(total) = self.usage.clone() {
                        let mut last = self.chunk(Vec::new());
                        last.usage = Some(Some(total));
                        last.citations = self.citations.take();
                        out.push(json_event(&last));
                    }
                    out.push(SseEvent::default().data("[DONE]"));
                    self.done = true;
                }
            }
            Event::Error(m) => {
                out.push(json_event(&ApiError::internal(m).body()));
                self.done = true;
            }
        }
        out
    }
}

pub(crate) fn json_event<T: serde::Serialize>(v: &T) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(v).unwrap_or_else(|e| {
        format!(r#"{{"error":{{"message":"cannot encode a chunk: {e}","type":"server_error"}}}}"#)
    }))
}

#[allow(
    clippy::too_many_arguments,
    reason = "one place builds the stream state"
)]
fn chat_stream(
    state: Arc<AppState>,
    engine: Engine,
    rx: UnboundedReceiver<(usize, Event)>,
    id: String,
    created: u64,
    model: String,
    choices: usize,
    usage: bool,
    logprobs: bool,
    tools: Option<ToolFormat>,
    citations: Option<Vec<forja_api::rag::CitedChunk>>,
    start: Instant,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let s = ChatStream {
        citations,
        tools: (0..choices).map(|_| tools.map(ToolStream::new)).collect(),
        engine,
        id,
        created,
        model,
        usage: usage.then(Usage::default),
        logprobs,
        started: vec![false; choices],
        left: choices,
        done: false,
    };
    event_stream(state, rx, choices, start, s)
}

impl StreamEvents for ChatStream {
    type Item = Result<SseEvent, Infallible>;

    fn on_event(&mut self, i: usize, event: Event) -> (Vec<Self::Item>, bool) {
        let events = self.events(i, event);
        (events.into_iter().map(Ok).collect(), self.done)
    }

    fn on_stopped(&mut self) -> Self::Item {
        Ok(json_event(
            &ApiError::unavailable("the engine stopped").body(),
        ))
    }
}

#[utoipa::path(
    post,
    path = "/v1/completions",
    tag = "OpenAI",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, server-sent events each carrying a `Completion` chunk, then `[DONE]`", body = Completion),
        crate::openapi::OpenAiErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn completions(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let req: CompletionRequest = parse_body(body, state.config.max_body_bytes)?;
    let (engine, adapter) =
        crate::adapters::chat_engine(&state, &req.model, req.adapter.as_deref(), None).await?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::param(
            "suffix",
            "suffix (fill-in-the-middle) is not supported",
        ));
    }
    if req
        .best_of
        .is_some_and(|b| Some(b) != req.n && !(b == 1 && req.n.is_none()))
    {
        return Err(ApiError::param("best_of", "best_of must equal n"));
    }
    let top = req.logprobs.unwrap_or(0);
    if top > 5 {
        return Err(ApiError::param("logprobs", "logprobs must be at most 5"));
    }
    let vocab = engine.model.tokenizer.vocab_size();
    let mut plan = plan(&req.sampling(), top, vocab)?;
    plan.adapter = adapter;
    let texts = req.prompt.clone().into_vec();
    if texts.is_empty() || texts.iter().any(String::is_empty) {
        return Err(ApiError::param("prompt", "prompt must not be empty"));
    }
    let worker = engine.clone();
    let t2 = texts.clone();
    let prompts = tokio::task::spawn_blocking(move || {
        t2.iter()
            .map(|t| worker.model.completion_prompt(t))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("tokenization failed: {e}")))?
    .map_err(|e| ApiError::param("prompt", e.to_string()))?;
    let rx = submit(&engine, &prompts, &plan).await?;
    let choices = prompts.len() * plan.n;
    let id = request_id("cmpl");
    let created = now_secs();
    let echo = req.echo.unwrap_or(false);
    if req.stream {
        let usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
        // Echoed prompts lead their choice's stream.
        let echoed = (0..choices)
            .map(|i| echo.then(|| texts[i / plan.n].clone()))
            .collect();
        let stream = completion_stream(
            state, rx, id, created, req.model, plan.n, echoed, usage, start,
        );
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let results = collect(&state, rx, choices, start).await?;
    let mut usage = Usage::default();
    let mut out = Vec::with_capacity(choices);
    for (index, r) in results.into_iter().enumerate() {
        add_usage(&mut usage, &r.usage, index % plan.n == 0);
        let prefix = if echo {
            texts[index / plan.n].clone()
        } else {
            String::new()
        };
        let logprobs = req.logprobs.map(|_| {
            let mut lp = CompletionLogprobs::default();
            let mut offset = prefix.len();
            for s in &r.tokens {
                let t = token_text(&engine, s.token);
                lp.text_offset.push(offset);
                offset += t.len();
                lp.tokens.push(t);
                lp.token_logprobs.push(s.logprob);
                lp.top_logprobs.push(
                    s.top
                        .iter()
                        .map(|&(id, l)| (token_text(&engine, id), l))
                        .collect(),
                );
            }
            lp
        });
        out.push(CompletionChoice {
            index,
            text: prefix + &r.text,
            logprobs,
            finish_reason: Some(finish_name(r.finish)),
        });
    }
    Ok(Json(Completion {
        id,
        object: "text_completion",
        created,
        model: req.model,
        choices: out,
        usage: Some(usage),
    })
    .into_response())
}

#[allow(
    clippy::too_many_arguments,
    reason = "one place builds the stream state"
)]
fn completion_stream(
    state: Arc<AppState>,
    rx: UnboundedReceiver<(usize, Event)>,
    id: String,
    created: u64,
    model: String,
    n: usize,
    echo: Vec<Option<String>>,
    usage: bool,
    start: Instant,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let choices = echo.len();
    let s = CompletionStream {
        n,
        echo,
        usage: usage.then(Usage::default),
        left: choices,
        id,
        created,
        model,
    };
    event_stream(state, rx, choices, start, s)
}

struct CompletionStream {
    n: usize,
    /// Per choice: the prompt still to echo before its first text.
    echo: Vec<Option<String>>,
    usage: Option<Usage>,
    left: usize,
    id: String,
    created: u64,
    model: String,
}

impl CompletionStream {
    fn chunk(&self, i: usize, text: String, finish: Option<&'static str>) -> Completion {
        Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices: vec![CompletionChoice {
                index: i,
                text,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        }
    }
}

impl StreamEvents for CompletionStream {
    type Item = Result<SseEvent, Infallible>;

    fn on_event(&mut self, i: usize, event: Event) -> (Vec<Self::Item>, bool) {
        let mut out = Vec::new();
        if let Some(prompt) = self.echo.get_mut(i).and_then(Option::take) {
            out.push(Ok(json_event(&self.chunk(i, prompt, None))));
        }
        let mut done = false;
        match event {
            Event::Token { text, .. } => {
                if !text.is_empty() {
                    out.push(Ok(json_event(&self.chunk(i, text, None))));
                }
            }
            Event::Done { finish, usage } => {
                let finish = Some(finish_name(finish));
                out.push(Ok(json_event(&self.chunk(i, String::new(), finish))));
                let first_of_prompt = i.is_multiple_of(self.n);
                if let Some(total) = &mut self.usage {
                    add_usage(total, &usage, first_of_prompt);
                }
                self.left -= 1;
                if self.left == 0 {
                    if let Some(total) = self.usage.clone() {
                        let mut last = self.chunk(i, String::new(), None);
                        last.choices.clear();
                        last.usage = Some(total);
                        out.push(Ok(json_event(&last)));
                    }
                    out.push(Ok(SseEvent::default().data("[DONE]")));
                    done = true;
                }
            }
            Event::Error(m) => {
                out.push(Ok(json_event(&ApiError::internal(m).body())));
                done = true;
            }
        }
        (out, done)
    }

    fn on_stopped(&mut self) -> Self::Item {
        Ok(json_event(
            &ApiError::unavailable("the engine stopped").body(),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/v1/models",
    tag = "OpenAI",
    responses((status = 200, description = "The served model", body = ModelList)),
    security((), ("api_key" = []))
)]
pub async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: state
            .models
            .entries
            .iter()
            .flat_map(|e| {
                // The model, then each of its adapters as `model+adapter`.
                std::iter::once(e.name.clone())
                    .chain(
                        e.adapters
                            .iter()
                            .map(move |a| crate::adapters::listed_name(e, a)),
                    )
                    .map(move |id| (e, id))
            })
            .map(|(e, id)| Model {
                id,
                object: "model",
                created: state.started,
                owned_by: "forja",
                max_model_len: e
                    .loaded()
                    .map(|(runner, _)| match runner {
                        Runner::Chat(engine) => engine.pool.max_model_len,
                        Runner::Embed(e) => e.embedder.max_tokens(),
                    })
                    .or_else(|| {
                        usize::try_from(e.card.context_length)
                            .ok()
                            .filter(|&c| c > 0)
                    }),
                capabilities: vec![match e.kind {
                    ModelKind::Chat => "completion",
                    ModelKind::Embedding => "embedding",
                }],
            })
            .collect(),
    })
}
