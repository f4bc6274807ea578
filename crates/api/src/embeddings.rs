//! Embedding requests and responses: OpenAI's `/v1/embeddings` and Ollama's `/api/embed` and
//! legacy `/api/embeddings`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// `input` of `/v1/embeddings`: one text, several, or token ids (one list or several).
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

/// `encoding_format`: a list of floats, or base64 of little-endian f32 bytes.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    /// Must equal the model's dimension when given (no model served here is trained to be cut).
    #[serde(default)]
    pub dimensions: Option<usize>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One vector: floats, or a base64 string with `encoding_format: "base64"`.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct Embedding {
    pub object: &'static str,
    pub index: usize,
    pub embedding: EmbeddingVector,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct EmbeddingUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
pub struct EmbeddingResponse {
    pub object: &'static str,
    pub data: Vec<Embedding>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

/// Ollama's `input`: one text or several.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum EmbedInput {
    One(String),
    Many(Vec<String>),
}

/// `POST /api/embed`.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaEmbedRequest)]
#[serde(deny_unknown_fields)]
pub struct EmbedRequest {
    pub model: String,
    pub input: EmbedInput,
    /// Cut inputs longer than the model's limit (Ollama's default) instead of refusing them.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Must equal the model's dimension when given.
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted for compatibility; embedding has no sampling options.
    #[serde(default)]
    pub options: Option<Value>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

/// The answer of `/api/embed`; durations in nanoseconds.
#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaEmbedResponse)]
pub struct EmbedResponse {
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: usize,
}

/// `POST /api/embeddings` (Ollama's older route): one prompt, one vector.
#[derive(Debug, Clone, Deserialize, PartialEq, ToSchema)]
#[schema(as = OllamaEmbeddingsRequest)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub prompt: String,
    #[serde(default)]
    pub options: Option<Value>,
    #[serde(default)]
    pub keep_alive: Option<Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, ToSchema)]
#[schema(as = OllamaEmbeddingsResponse)]
pub struct EmbeddingsResponse {
    pub embedding: Vec<f32>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code fails loudly")]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_openai_input_shape_parses() {
        let parse = |input: Value| -> EmbeddingInput {
            serde_json::from_value::<EmbeddingRequest>(json!({"model": "m", "input": input}))
                .unwrap()
                .input
        };
        assert_eq!(parse(json!("a")), EmbeddingInput::Text("a".into()));
        assert_eq!(
            parse(json!(["a", "b"])),
            EmbeddingInput::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse(json!([1, 2])), EmbeddingInput::Tokens(vec![1, 2]));
        assert_eq!(
            parse(json!([[1], [2, 3]])),
            EmbeddingInput::TokenLists(vec![vec![1], vec![2, 3]])
        );
        let bad = serde_json::from_value::<EmbeddingRequest>(
            json!({"model": "m", "input": "a", "encoding_format": "hex"}),
        );
        assert!(bad.is_err());
        let unknown = serde_json::from_value::<EmbeddingRequest>(
            json!({"model": "m", "input": "a", "colour": 1}),
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn base64_vectors_serialize_as_strings() {
        let e = Embedding {
            object: "embedding",
            index: 0,
            embedding: EmbeddingVector::Base64("AAA=".into()),
        };
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"object": "embedding", "index": 0, "embedding": "AAA="})
        );
    }
}
