//! The `retrieval` extension of `/v1/chat/completions`: the last user message is the question;
//! the collection's chunks are retrieved and those relevant enough become numbered sources, as
//! many as fit the model's context next to the answer (`forja_rag::answer`, the same code
//! `forja ask` uses); the model answers under the same instruction, and the response carries
//! the sources as `citations`. When no chunk is relevant the model is not asked: the reply says
//! so, with empty citations.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use forja_api::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest,
    ChunkChoice, Delta, Usage,
};
use forja_api::rag::{CitedChunk, Retrieval};
use forja_engine::serving::Engine;
use forja_engine::{LoadedModel, Message};
use forja_rag::answer::{SYSTEM_PROMPT, fit_sources, nothing_relevant, relevant, user_prompt};
use forja_rag::{AnswerOptions, PromptBudget, RagError};

use super::{check_collection_name, cited, query, rag_error, rag_of, retrieve};
use crate::AppState;
use crate::error::ApiError;
use crate::jobs::Plan;

/// What a chat request with retrieval becomes.
#[derive(Debug)]
pub enum Prepared {
    /// The conversation to generate from, with the sources its `[n]` cite.
    Prompt {
        messages: Vec<Message>,
        citations: Vec<CitedChunk>,
    },
    /// Nothing relevant was found: this is the reply, and the model is not asked.
    NothingRelevant(String),
}

/// A conversation measured with its earlier turns (and tools) in place, so that the sources
/// fit what is actually sent.
struct Conversation {
    model: Arc<LoadedModel>,
    context: usize,
    /// The client's own system text, kept after the RAG instruction.
    system: String,
    history: Vec<Message>,
    tools: Option<serde_json::Value>,
}

impl Conversation {
    fn messages(&self, system: &str, user: &str) -> Vec<Message> {
        let system = if self.system.is_empty() {
            system.to_string()
        } else {
            format!("{system}\n\n{}", self.system)
        };
        let mut out = vec![Message::new("system", &system)];
        out.extend(self.history.iter().cloned());
        out.push(Message::new("user", user));
        out
    }
}

impl PromptBudget for Conversation {
    fn context_tokens(&self) -> usize {
        self.context
    }

    fn prompt_tokens(&self, system: &str, user: &str) -> forja_rag::Result<usize> {
        self.model
            .chat_prompt(&self.messages(system, user), self.tools.as_ref())
            .map(|p| p.len())
            .map_err(|e| RagError::Generation(e.to_string()))
    }
}

/// Retrieves for `req` and builds the conversation to answer from; sets the answer's token
/// limit (512 unless the request gives one) that the sources are fitted next to.
pub async fn prepare(
    state: &AppState,
    engine: &Engine,
    r: &Retrieval,
    messages: Vec<Message>,
    tools: Option<serde_json::Value>,
    plan: &mut Plan,
) -> Result<Prepared, ApiError> {
    let rag = rag_of(state)?;
    check_collection_name(&r.collection)
        .map_err(|e| ApiError::param("retrieval.collection", e.message))?;
    let min_similarity = r
        .min_similarity
        .unwrap_or(AnswerOptions::default().min_similarity);
    if !(-1.0..=1.0).contains(&min_similarity) {
        return Err(ApiError::param(
            "retrieval.min_similarity",
            "min_similarity is a cosine similarity, between -1 and 1",
        ));
    }
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::param("messages", "messages must not be empty"));
    };
    if last.role != "user" {
        return Err(ApiError::param(
            "messages",
            "with retrieval, the last message must be the user's question",
        ));
    }
    let question = last.content.clone();
    let q = query(&question, r.k, r.mode, r.filters.as_ref(), "messages")?;
    let hits = retrieve(rag, r.collection.clone(), q, r.rerank, "retrieval.rerank").await?;
    let hits = relevant(hits, min_similarity);
    if hits.is_empty() {
        return Ok(Prepared::NothingRelevant(nothing_relevant(&r.collection)));
    }
    if !plan.explicit_max {
        plan.params.max_tokens = AnswerOptions::default().max_answer_tokens;
        plan.explicit_max = true;
    }
    let max_answer = plan.params.max_tokens;
    let system: Vec<&str> = earlier
        .iter()
        .filter(|m| m.role == "system")
        .map(|m| m.content.as_str())
        .collect();
    let conversation = Conversation {
        model: Arc::clone(&engine.model),
        context: engine.pool.max_model_len,
        system: system.join("\n\n"),
        history: earlier
            .iter()
            .filter(|m| m.role != "system")
            .cloned()
            .collect(),
        tools,
    };
    tokio::task::spawn_blocking(move || {
        let sources =
            fit_sources(&conversation, &question, hits, max_answer).map_err(|e| match e {
                RagError::Input(m) => ApiError::param("max_tokens", m),
                other => rag_error(other),
            })?;
        Ok(Prepared::Prompt {
            messages: conversation.messages(SYSTEM_PROMPT, &user_prompt(&question, &sources)),
            citations: sources
                .iter()
                .enumerate()
                .map(|(i, h)| cited(i + 1, h))
                .collect(),
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("building the prompt failed: {e}")))?
}

/// The reply when nothing relevant was found: `text` as every choice's answer, no tokens
/// used, empty citations; streamed when the request streams.
pub fn nothing_found(req: &ChatCompletionRequest, choices: usize, text: String) -> Response {
    let id = crate::openai::request_id("chatcmpl");
    let created = crate::openai::now_secs();
    if !req.stream {
        let choices = (0..choices)
            .map(|index| ChatChoice {
                index,
                message: AssistantMessage {
                    role: "assistant",
                    content: Some(text.clone()),
                    tool_calls: Vec::new(),
                },
                logprobs: None,
                finish_reason: "stop",
            })
            .collect();
        return Json(ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: req.model.clone(),
            choices,
            usage: Usage::default(),
            citations: Some(Vec::new()),
        })
        .into_response();
    }
    let usage = req.stream_options.as_ref().is_some_and(|o| o.include_usage);
    let chunk = |choices: Vec<ChunkChoice>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: req.model.clone(),
        choices,
        usage: usage.then_some(None),
        citations: None,
    };
    let mut chunks = Vec::new();
    for index in 0..choices {
        let delta = |content: Option<String>, finish: Option<&'static str>| ChunkChoice {
            index,
            delta: Delta {
                role: content.as_ref().map(|_| "assistant"),
                content,
                tool_calls: Vec::new(),
            },
            logprobs: None,
            finish_reason: finish,
        };
        chunks.push(chunk(vec![delta(Some(text.clone()), None)]));
        chunks.push(chunk(vec![delta(None, Some("stop"))]));
    }
    if usage {
        let mut last = chunk(Vec::new());
        last.usage = Some(Some(Usage::default()));
        chunks.push(last);
    }
    if let Some(last) = chunks.last_mut() {
        last.citations = Some(Vec::new());
    }
    let mut events: Vec<Result<SseEvent, Infallible>> = chunks
        .iter()
        .map(|c| Ok(crate::openai::json_event(c)))
        .collect();
    events.push(Ok(SseEvent::default().data("[DONE]")));
    Sse::new(futures_util::stream::iter(events)).into_response()
}
