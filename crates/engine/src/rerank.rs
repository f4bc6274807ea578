//! Reranking with a cross-encoder: a BERT-family sequence classifier with one output (the layout
//! of sentence-transformers' `CrossEncoder` rerankers, e.g. cross-encoder/ms-marco-MiniLM-L-6-v2)
//! reads a query and a passage together — `[CLS] query [SEP] passage [SEP]`, token types 0 then
//! 1 — and gives one relevance logit per pair, higher is more relevant. Pairs longer than the
//! model's limit are cut from the longer side first, as the HF tokenizer's default
//! (`longest_first`) does. Pairs run in length-sorted batches as embeddings do.

use std::path::Path;

use candle_core::Device;
use forja_models::{EncoderInput, SequenceClassifier};

use crate::embed::{for_each_batch, open_tokenizer};
use crate::error::{EngineError, Result};

/// A cross-encoder, loaded.
#[derive(Debug)]
pub struct Reranker {
    model: SequenceClassifier,
    tokenizer: tokenizers::Tokenizer,
    max_tokens: usize,
    max_batch_tokens: usize,
    origin: String,
    name: String,
}

impl Reranker {
    /// Loads the cross-encoder of the HF folder `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let origin = dir.display().to_string();
        let model = SequenceClassifier::load(dir, device)?;
        if model.labels() != 1 {
            return Err(EngineError::Input(format!(
                "{origin}: a reranker gives one score per pair, and this classifier has {} \
                 outputs (is it a reranker?)",
                model.labels()
            )));
        }
        let (tokenizer, limit) = open_tokenizer(dir, &origin)?;
        let mut max_tokens = model.config().max_position_embeddings;
        if let Some(n) = limit {
            max_tokens = max_tokens.min(n);
        }
        let mut tokenizer = tokenizer;
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                strategy: tokenizers::TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| EngineError::Tokenizer {
                origin: origin.clone(),
                what: e.to_string(),
            })?;
        Ok(Reranker {
            model,
            tokenizer,
            max_tokens,
            max_batch_tokens: crate::embed::DEFAULT_MAX_BATCH_TOKENS,
            name: crate::model::display_name(dir),
            origin,
        })
    }

    /// Loads the cross-encoder of `dir` for the CPU.
    pub fn load_cpu(dir: &Path) -> Result<Self> {
        Self::load(dir, &Device::Cpu)
    }

    /// The model folder's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Longest pair the model reads, in tokens (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The relevance logit of `query` with each of `passages`, in order.
    pub fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
        let mut ids = Vec::with_capacity(passages.len());
        let mut types = Vec::with_capacity(passages.len());
        for p in passages {
            let e = self.tokenizer.encode_fast((query, *p), true).map_err(|e| {
                EngineError::Tokenizer {
                    origin: self.origin.clone(),
                    what: e.to_string(),
                }
            })?;
            ids.push(e.get_ids().to_vec());
            types.push(e.get_type_ids().to_vec());
        }
        let mut scores = vec![0.0f32; passages.len()];
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        for_each_batch(&lens, self.max_batch_tokens, |members| {
            let batch: Vec<EncoderInput<'_>> = members
                .iter()
                .map(|&i| EncoderInput {
                    ids: &ids[i],
                    type_ids: Some(&types[i]),
                })
                .collect();
            let logits = self.model.logits(&batch)?.to_vec2::<f32>()?;
            for (&i, row) in members.iter().zip(logits) {
                scores[i] = row.first().copied().unwrap_or(f32::NAN);
            }
            Ok(())
        })?;
        Ok(scores)
    }
}

/// Whether `dir` holds a sequence classifier (a cross-encoder reranker) rather than an
/// embedding model: its `config.json` names a `…ForSequenceClassification` architecture.
pub fn is_reranker_dir(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v["architectures"].as_array().is_some_and(|a| {
        a.iter()
            .filter_map(|x| x.as_str())
            .any(|x| x.ends_with("ForSequenceClassification"))
    })
}
