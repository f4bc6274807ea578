//! Ollama-compatible requests and responses (`/api/chat`, `/api/generate`, `/api/tags`,
//! `/api/show`, `/api/ps`, `/api/version`). Streams are newline-delimited JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `options` of a request. Options that tune how Ollama places or runs a model (threads, GPU
/// layers, batch size…) are accepted and have no effect here; an unknown option is an error.
#[derive(Debug, Clone, Deserialize, PartialEq, Default, ToSchema)]
#[schema(as = OllamaOptions)]
#[serde(deny_unknown_fields)]
pub struct Options {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: Option<i64>,
    /// Tokens to generate; -1 = until the context is full.
    pub num_predict: Option<i64>,
    pub stop: Option<Vec<String>>,
    pub repeat_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    // Accepted without effect: the server's own settings decide these.
    pub num_ctx: Option<Value>,
    pub num_batch: Option<Value>,
    pub num_gpu: Option<Value>,
    pub main_gpu: Option<Value>,
    pub num_thread: Option<Value>,
    pub num_keep: Option<Value>,
    pub repeat_last_n: Option<Value>,
    pub typical_p: Option<Value>,
    pub use_mmap: Option<Value>,
    pub use_mlock: Option<Value>,
    pub numa: Option<Value>,
    pub low_vram: Option<Value>,
    pub vocab_only: Option<Value>,
    pub penalize_newline: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaChatMessage)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaChatRequest)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    pub model: String,
    /// Extension of forja: the served LoRA adapter to run with (as `model: "MODEL+ADAPTER"`).
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub tools: Option<Value>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Options>,
    /// Ollama streams unless told not to.
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub think: Option<Value>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaGenerateRequest)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    pub model: String,
    /// Extension of forja: the served LoRA adapter to run with (as `model: "MODEL+ADAPTER"`).
    #[serde(default)]
    pub adapter: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub context: Option<Vec<u32>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub raw: Option<bool>,
    #[serde(default)]
    pub format: Option<Value>,
    #[serde(default)]
    pub options: Option<Options>,
    #[serde(default)]
    pub images: Option<Vec<String>>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
    #[serde(default)]
    pub think: Option<Value>,
}

/// Timings and counts on a final response, durations in nanoseconds.
#[derive(Debug, Clone, Serialize, PartialEq, Default, ToSchema)]
#[schema(as = OllamaStats)]
pub struct Stats {
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
    pub prompt_eval_duration: u64,
    pub eval_count: usize,
    pub eval_duration: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaChatResponse)]
pub struct ChatResponse {
    pub model: String,
    pub created_at: String,
    pub message: ChatMessage,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaGenerateResponse)]
pub struct GenerateResponse {
    pub model: String,
    pub created_at: String,
    pub response: String,
    pub done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<u32>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaModelDetails)]
pub struct ModelDetails {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaListedModel)]
pub struct ListedModel {
    pub name: String,
    pub model: String,
    pub modified_at: String,
    pub size: u64,
    pub digest: String,
    pub details: ModelDetails,
    /// `/api/ps` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_vram: Option<u64>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaModelList)]
pub struct ModelList {
    pub models: Vec<ListedModel>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaShowRequest)]
#[serde(deny_unknown_fields)]
pub struct ShowRequest {
    #[serde(alias = "name")]
    pub model: String,
    #[serde(default)]
    pub verbose: Option<bool>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaShowResponse)]
pub struct ShowResponse {
    pub modelfile: String,
    pub parameters: String,
    pub template: String,
    pub details: ModelDetails,
    pub model_info: BTreeMap<String, Value>,
    pub capabilities: Vec<String>,
    pub modified_at: String,
}

/// Ollama's error shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaError)]
pub struct Error {
    pub error: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn unknown_options_are_named_and_placement_options_accepted() {
        let e = serde_json::from_str::<ChatRequest>(
            r#"{"model":"m","messages":[],"options":{"temperatur":1}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `temperatur`"), "{e}");
        let r: ChatRequest = serde_json::from_str(
            r#"{"model":"m","messages":[],"options":{"num_ctx":4096,"num_gpu":99,"seed":3}}"#,
        )
        .unwrap();
        assert_eq!(r.options.unwrap().seed, Some(3));
    }
}
