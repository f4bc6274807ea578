//! Sentence embeddings with a BERT-family encoder from an HF model folder (`config.json`,
//! `model.safetensors`, `tokenizer.json`, and the sentence-transformers metadata when present):
//! texts → WordPiece ids with `[CLS]`/`[SEP]` from the tokenizer's post-processor → encoder →
//! pooling (and L2 normalization) as the folder's sentence-transformers modules say.
//!
//! Inputs are sorted by length and cut into batches of similar lengths and bounded padded size,
//! so little compute goes to padding and the attention scores of one batch stay small. An
//! [`Embedder`] is `Send + Sync` and takes `&self`: callers may share one across threads.

use std::cmp::Reverse;
use std::path::Path;

use candle_core::Device;
use forja_arch::SentenceEmbeddingConfig;
use forja_models::{BertEncoder, EncoderInput};
use serde_json::Value;

use crate::error::{EngineError, Result};

/// Padded tokens (batch size × longest input) one forward pass may hold by default. The attention
/// scores of a batch take `max_batch_tokens × heads × longest × 4` bytes: 96 MiB for 4096
/// tokens of 12-head, 512-token inputs.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 4096;

/// The vectors of one request ([`Embedder::embed`] call), in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One vector of [`Embedder::dimension`] floats per input.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read, special tokens included, after any truncation (for usage
    /// accounting).
    pub prompt_tokens: usize,
}

/// Inputs tokenized and within the length limit, ready for [`Embedder::embed_prepared`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Token ids of each input, special tokens included.
    ids: Vec<Vec<u32>>,
    /// Segment of each token (all 0 for single texts).
    type_ids: Vec<Vec<u32>>,
}

impl Prepared {
    /// Number of inputs.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no inputs (never, for what [`Embedder::prepare`] returns).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Tokens of all inputs, special tokens included.
    pub fn prompt_tokens(&self) -> usize {
        self.ids.iter().map(Vec::len).sum()
    }
}

/// An embedding model, loaded.
#[derive(Debug)]
pub struct Embedder {
    encoder: BertEncoder,
    /// Never truncates or pads.
    tokenizer: tokenizers::Tokenizer,
    /// Truncates to `max_tokens`, keeping the post-processor's final special token.
    truncating: tokenizers::Tokenizer,
    head: SentenceEmbeddingConfig,
    /// Longest input, in tokens.
    max_tokens: usize,
    max_batch_tokens: usize,
    origin: String,
}

/// Whether `path` is a folder holding an encoder (embedding) model rather than a chat model:
/// its `config.json` names a BERT-family `model_type`.
pub fn is_encoder_dir(path: &Path) -> bool {
    forja_arch::encoder_config::is_encoder_dir(path)
}

impl Embedder {
    /// Loads the embedding model of the HF folder `dir` onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let origin = dir.display().to_string();
        let encoder = BertEncoder::load(dir, device)?;
        let head =
            SentenceEmbeddingConfig::from_dir(dir).map_err(forja_models::ModelError::from)?;
        let tok_err = |what: String| EngineError::Tokenizer {
            origin: origin.clone(),
            what,
        };
        let (tokenizer, limit) = open_tokenizer(dir, &origin)?;
        let mut max_tokens = encoder.config().max_position_embeddings;
        if let Some(n) = head.max_seq_length {
            max_tokens = max_tokens.min(n);
        }
        if let Some(n) = limit {
            max_tokens = max_tokens.min(n);
        }
        let added = tokenizer
            .get_post_processor()
            .map_or(0, |p| tokenizers::PostProcessor::added_tokens(p, false));
        if max_tokens <= added {
            return Err(tok_err(format!(
                "a limit of {max_tokens} tokens leaves no room for text after {added} special \
                 tokens"
            )));
        }
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| tok_err(e.to_string()))?;
        Ok(Embedder {
            encoder,
            tokenizer,
            truncating,
            head,
            max_tokens,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            origin,
        })
    }

    /// Loads the embedding model of `dir` for the CPU.
    pub fn load_cpu(dir: &Path) -> Result<Self> {
        Self::load(dir, &Device::Cpu)
    }

    /// Sets the bound on padded tokens per forward pass (at least one input always runs).
    pub fn with_max_batch_tokens(mut self, max_batch_tokens: usize) -> Self {
        self.max_batch_tokens = max_batch_tokens.max(1);
        self
    }

    /// Length of every vector.
    pub fn dimension(&self) -> usize {
        self.encoder.hidden_size()
    }

    /// The longest input the model reads, in tokens (special tokens included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Pooling, normalization and input limits from the folder's metadata.
    pub fn head(&self) -> &SentenceEmbeddingConfig {
        &self.head
    }

    /// Embeds `inputs`. An input longer than [`Embedder::max_tokens`] is an error, unless
    /// `truncate`: then its tokens are cut to the limit, keeping the final `[SEP]`.
    pub fn embed(&self, inputs: &[&str], truncate: bool) -> Result<Embeddings> {
        let prepared = self.prepare(inputs, truncate)?;
        self.embed_prepared(&[&prepared])?
            .pop()
            .ok_or_else(|| EngineError::Input("no input to embed".into()))
    }

    /// Tokenizes `inputs` and checks them against the length limit (see [`Embedder::embed`]),
    /// without running the model: a server checks each request alone, then embeds many together.
    pub fn prepare(&self, inputs: &[&str], truncate: bool) -> Result<Prepared> {
        if inputs.is_empty() {
            return Err(EngineError::Input("no input to embed".into()));
        }
        let mut prepared = Prepared {
            ids: Vec::with_capacity(inputs.len()),
            type_ids: Vec::with_capacity(inputs.len()),
        };
        for (i, text) in inputs.iter().enumerate() {
            let e = self.encode(i, text, truncate)?;
            prepared.ids.push(e.get_ids().to_vec());
            prepared.type_ids.push(e.get_type_ids().to_vec());
        }
        Ok(prepared)
    }

    /// Embeds several prepared requests together (their inputs share batches); one
    /// [`Embeddings`] per request, in order.
    pub fn embed_prepared(&self, requests: &[&Prepared]) -> Result<Vec<Embeddings>> {
        // (request, input) of every input.
        let order: Vec<(usize, usize)> = requests
            .iter()
            .enumerate()
            .flat_map(|(r, p)| (0..p.ids.len()).map(move |i| (r, i)))
            .collect();
        let mut out: Vec<Embeddings> = requests
            .iter()
            .map(|p| Embeddings {
                vectors: vec![Vec::new(); p.ids.len()],
                prompt_tokens: p.prompt_tokens(),
            })
            .collect();
        let lens: Vec<usize> = order
            .iter()
            .map(|&(r, i)| requests[r].ids[i].len())
            .collect();
        for_each_batch(&lens, self.max_batch_tokens, |members| {
            let batch: Vec<EncoderInput<'_>> = members
                .iter()
                .map(|&k| {
                    let (r, i) = order[k];
                    EncoderInput {
                        ids: &requests[r].ids[i],
                        type_ids: Some(&requests[r].type_ids[i]),
                    }
                })
                .collect();
            let pooled = self
                .encoder
                .embed(&batch, self.head.pooling, self.head.normalize)?;
            for (&k, row) in members.iter().zip(pooled.to_vec2::<f32>()?) {
                let (r, i) = order[k];
                out[r].vectors[i] = row;
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Tokens of `text` as the model reads it, special tokens included, with no length limit:
    /// callers size their inputs (chunks of a document) with it before embedding them.
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        let lowered;
        let text = if self.head.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        self.tokenizer
            .encode_fast(text, true)
            .map(|e| e.get_ids().len())
            .map_err(|e| EngineError::Tokenizer {
                origin: self.origin.clone(),
                what: e.to_string(),
            })
    }

    /// Input `i`'s encoding, within the length limit.
    fn encode(&self, i: usize, text: &str, truncate: bool) -> Result<tokenizers::Encoding> {
        let lowered;
        let text = if self.head.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let err = |e: tokenizers::Error| EngineError::Tokenizer {
            origin: self.origin.clone(),
            what: e.to_string(),
        };
        let full = self.tokenizer.encode_fast(text, true).map_err(err)?;
        let n = full.get_ids().len();
        if n <= self.max_tokens {
            return Ok(full);
        }
        if !truncate {
            return Err(EngineError::Input(format!(
                "input {i} is {n} tokens long, and this embedding model reads at most {}: \
                 shorten or split it, or ask for truncation",
                self.max_tokens
            )));
        }
        self.truncating.encode_fast(text, true).map_err(err)
    }
}

/// Calls `f` with the indices of each batch of inputs of lengths `lens`: longest first, each
/// batch's first (longest) input setting its padded width, inputs shorter than 3/4 of it
/// starting a new batch (padding stays under a quarter of the compute), and at most
/// `max_batch_tokens` padded tokens per batch (at least one input).
pub(crate) fn for_each_batch(
    lens: &[usize],
    max_batch_tokens: usize,
    mut f: impl FnMut(&[usize]) -> Result<()>,
) -> Result<()> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| Reverse(lens[i]));
    let mut start = 0;
    while start < order.len() {
        let width = lens[order[start]].max(1);
        let cap = (max_batch_tokens / width).max(1);
        let mut end = start + 1;
        while end < order.len() && end - start < cap && 4 * lens[order[end]] >= 3 * width {
            end += 1;
        }
        f(&order[start..end])?;
        start = end;
    }
    Ok(())
}

/// The folder's `tokenizer.json` without padding or truncation (files often carry the ones used
/// in training — MiniLM's pads to 128 —; batches are padded here and limits are the model's),
/// and the length limit of its `tokenizer_config.json` when it sets one.
pub(crate) fn open_tokenizer(
    dir: &Path,
    origin: &str,
) -> Result<(tokenizers::Tokenizer, Option<usize>)> {
    let tok_err = |what: String| EngineError::Tokenizer {
        origin: origin.to_string(),
        what,
    };
    let path = dir.join("tokenizer.json");
    if !path.is_file() {
        return Err(tok_err(
            "tokenizer.json is missing from the model folder".into(),
        ));
    }
    let mut tokenizer =
        tokenizers::Tokenizer::from_file(&path).map_err(|e| tok_err(e.to_string()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| tok_err(e.to_string()))?;
    Ok((tokenizer, tokenizer_max_length(dir)))
}

/// `model_max_length` of `tokenizer_config.json`, when it is a real limit (transformers writes
/// 1e30 for "none").
fn tokenizer_max_length(dir: &Path) -> Option<usize> {
    let text = std::fs::read_to_string(dir.join("tokenizer_config.json")).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value["model_max_length"]
        .as_u64()
        .filter(|&n| n > 0 && n < 1 << 32)
        .and_then(|n| usize::try_from(n).ok())
}
