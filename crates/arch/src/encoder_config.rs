//! `EncoderConfig`: a BERT-family encoder (bidirectional self-attention, post-norm layers,
//! learned absolute positions and token types) as described by an HF `config.json`.
//!
//! Field names and defaults follow transformers' `configuration_bert.py` (`BertConfig`).

use std::path::Path;

use serde_json::{Map, Value};

use crate::decoder_config::Activation;
use crate::error::ArchError;

/// Encoder model types listed in error messages.
pub const SUPPORTED_ENCODERS: &str = "bert";

/// `model_type`s of encoder-only models: a folder with one of these holds an embedding model,
/// not a chat model, even when forja cannot run that encoder yet (loading it then says so).
const ENCODER_MODEL_TYPES: [&str; 12] = [
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "mpnet",
    "electra",
    "camembert",
    "deberta",
    "deberta-v2",
    "nomic_bert",
    "modernbert",
    "new",
];

/// The shape of a BERT encoder. All sizes are counts (tokens, features, layers).
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    /// Longest input, in tokens (the rows of the position-embedding table).
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding table.
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Activation of the intermediate (feed-forward) layer.
    pub hidden_act: Activation,
}

impl EncoderConfig {
    /// Features per attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Upper bound on the activation bytes of one forward pass over a batch of at most
    /// `batch_tokens` padded tokens (an input longer than that runs alone, so a batch may hold
    /// up to `max_position_embeddings`). Computation is f32; one layer's buffers are live at a
    /// time; attention scores are materialized whole (`[batch, heads, seq, seq]`, seq at most
    /// `max_position_embeddings`), raw, masked and normalized.
    pub fn inference_workspace_bytes(&self, batch_tokens: u64) -> u64 {
        let seq = self.max_position_embeddings as u64;
        let tokens = batch_tokens.max(seq);
        let (h, inter) = (self.hidden_size as u64, self.intermediate_size as u64);
        // Layer input, context and its transposed copy, attention output, residual sums and
        // the norms' temporaries: 8·hidden; fused q|k|v and the per-head copies: 6·hidden;
        // the intermediate layer before and after its activation.
        let per_token = 14 * h + 2 * inter + 3 * self.num_attention_heads as u64 * seq;
        tokens * per_token * 4
    }

    /// Reads `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, ArchError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ArchError::Io {
            path: path.clone(),
            source,
        })?;
        parse_encoder_config(&text, &path.display().to_string()).map_err(|e| e.at_path(&path))
    }
}

/// Parses the text of an encoder's `config.json`; `origin` names it in errors.
pub fn parse_encoder_config(text: &str, origin: &str) -> Result<EncoderConfig, ArchError> {
    let value: Value = serde_json::from_str(text).map_err(|e| config_err(origin, e.to_string()))?;
    let top = value
        .as_object()
        .ok_or_else(|| config_err(origin, "expected a JSON object".into()))?;
    let model_type = top
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if model_type != "bert" {
        return Err(ArchError::UnsupportedArchitecture {
            name: if model_type.is_empty() {
                "(no model_type)".into()
            } else {
                model_type.to_string()
            },
            origin: origin.to_string(),
            supported: SUPPORTED_ENCODERS,
        });
    }
    let f = Fields { map: top, origin };
    if f.bool_or("is_decoder", false)? {
        return Err(f.err("is_decoder is true: a causal BERT is no sentence encoder".into()));
    }
    let position_type = f.str_or("position_embedding_type", "absolute")?;
    if position_type != "absolute" {
        return Err(f.err(format!(
            "position_embedding_type {position_type:?} is not supported (only \"absolute\")"
        )));
    }
    let hidden_act = match f.str_or("hidden_act", "gelu")? {
        "gelu" => Activation::Gelu,
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "relu" => Activation::Relu,
        other => {
            return Err(f.err(format!(
                "unsupported hidden_act {other:?} (gelu, gelu_new and relu are)"
            )));
        }
    };
    let config = EncoderConfig {
        vocab_size: f.count_or("vocab_size", 30_522)?,
        hidden_size: f.count_or("hidden_size", 768)?,
        num_hidden_layers: f.count_or("num_hidden_layers", 12)?,
        num_attention_heads: f.count_or("num_attention_heads", 12)?,
        intermediate_size: f.count_or("intermediate_size", 3072)?,
        max_position_embeddings: f.count_or("max_position_embeddings", 512)?,
        type_vocab_size: f.count_or("type_vocab_size", 2)?,
        layer_norm_eps: f.f64_or("layer_norm_eps", 1e-12)?,
        hidden_act,
    };
    if !config
        .hidden_size
        .is_multiple_of(config.num_attention_heads)
    {
        return Err(f.err(format!(
            "hidden_size {} is not a multiple of num_attention_heads {}",
            config.hidden_size, config.num_attention_heads
        )));
    }
    if !(config.layer_norm_eps > 0.0 && config.layer_norm_eps.is_finite()) {
        return Err(f.err(format!(
            "layer_norm_eps must be positive, found {}",
            config.layer_norm_eps
        )));
    }
    Ok(config)
}

/// Whether `dir` holds an encoder-only (embedding) model: its `config.json` names a BERT-family
/// `model_type`. False for decoders, GGUF files and folders without a readable `config.json`.
pub fn is_encoder_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    value
        .get("model_type")
        .and_then(Value::as_str)
        .is_some_and(|t| ENCODER_MODEL_TYPES.contains(&t))
}

fn config_err(origin: &str, what: String) -> ArchError {
    ArchError::Config {
        path: None,
        what: format!("{origin}: {what}"),
    }
}

/// Typed reads of `config.json` fields; absent or null fields take the class default.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    origin: &'a str,
}

impl Fields<'_> {
    fn err(&self, what: String) -> ArchError {
        config_err(self.origin, what)
    }

    fn raw(&self, key: &str) -> Option<&Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// A positive integer.
    fn count_or(&self, key: &str, default: usize) -> Result<usize, ArchError> {
        let Some(v) = self.raw(key) else {
            return Ok(default);
        };
        v.as_u64()
            .filter(|&n| n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.err(format!("{key} must be a positive integer, found {v}")))
    }

    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ArchError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .ok_or_else(|| self.err(format!("{key} must be a number, found {v}"))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ArchError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("{key} must be true or false, found {v}"))),
        }
    }

    fn str_or<'s>(&'s self, key: &str, default: &'s str) -> Result<&'s str, ArchError> {
        match self.raw(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(format!("{key} must be a string, found {v}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code fails loudly")]

    use super::*;

    const MINILM: &str = r#"{"architectures": ["BertModel"], "hidden_act": "gelu",
        "hidden_size": 384, "intermediate_size": 1536, "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 6, "pad_token_id": 0, "position_embedding_type": "absolute",
        "type_vocab_size": 2, "vocab_size": 30522}"#;

    #[test]
    fn minilm_config_is_read() {
        let c = parse_encoder_config(MINILM, "minilm").unwrap();
        assert_eq!(c.hidden_size, 384);
        assert_eq!(c.num_hidden_layers, 6);
        assert_eq!(c.head_dim(), 32);
        assert_eq!(c.max_position_embeddings, 512);
        assert_eq!(c.hidden_act, Activation::Gelu);
    }

    #[test]
    fn workspace_counts_the_largest_batch_and_its_attention_scores() {
        let c = parse_encoder_config(MINILM, "minilm").unwrap();
        let per_token = 14 * 384 + 2 * 1536 + 3 * 12 * 512;
        assert_eq!(c.inference_workspace_bytes(4096), 4096 * per_token * 4);
        // One input of the longest length always fits, however small the batch bound.
        assert_eq!(
            c.inference_workspace_bytes(1),
            c.inference_workspace_bytes(512)
        );
        assert!(c.inference_workspace_bytes(8192) > c.inference_workspace_bytes(4096));
    }

    #[test]
    fn absent_fields_take_bert_defaults() {
        let c = parse_encoder_config(r#"{"model_type": "bert"}"#, "x").unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.intermediate_size),
            (768, 12, 3072)
        );
        assert_eq!(c.layer_norm_eps, 1e-12);
    }

    #[test]
    fn unsupported_encoders_and_settings_are_refused_by_name() {
        let e = parse_encoder_config(r#"{"model_type": "xlm-roberta"}"#, "cfg.json").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("xlm-roberta") && msg.contains("cfg.json") && msg.contains("bert"));
        let e = parse_encoder_config(r#"{"model_type": "llama"}"#, "cfg.json").unwrap_err();
        assert!(e.to_string().contains("llama"), "{e}");
        for (field, value) in [
            ("position_embedding_type", "\"relative_key\""),
            ("hidden_act", "\"swish\""),
            ("is_decoder", "true"),
            ("hidden_size", "100"),
            ("num_hidden_layers", "0"),
        ] {
            let text = format!(r#"{{"model_type": "bert", "{field}": {value}}}"#);
            let e = parse_encoder_config(&text, "cfg.json").unwrap_err();
            assert!(e.to_string().contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn encoder_folders_are_told_from_decoder_folders() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_encoder_dir(dir.path()));
        std::fs::write(dir.path().join("config.json"), MINILM).unwrap();
        assert!(is_encoder_dir(dir.path()));
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "qwen2", "hidden_size": 64}"#,
        )
        .unwrap();
        assert!(!is_encoder_dir(dir.path()));
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"model_type": "xlm-roberta"}"#,
        )
        .unwrap();
        assert!(is_encoder_dir(dir.path()));
        assert!(!is_encoder_dir(&dir.path().join("model.gguf")));
    }
}
