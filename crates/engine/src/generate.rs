//! The generation loop for one sequence: prefill, then decode token by token, streaming text
//! that never splits a character or shows part of a stop string.

use std::time::Instant;

use candle_core::Tensor;
use forja_arch::workspace::DEFAULT_STEP_TOKENS;
use forja_models::{Decoder, KvCache, SeqStep};

use crate::error::{EngineError, Result};
use crate::model::LoadedModel;
use crate::sampler::{Sampled, Sampler, SamplingParams};
use crate::text_stream::TextStream;

#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    /// Generation stops before any of these strings; they are not part of the output.
    pub stop: Vec<String>,
    /// Alternatives reported per token (0 = none).
    pub top_logprobs: usize,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            sampling: SamplingParams::default(),
            max_tokens: 512,
            stop: Vec::new(),
            top_logprobs: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// A stop token or stop string.
    Stop,
    /// `max_tokens` or the model's context was reached.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

#[derive(Debug, Clone)]
pub struct Generation {
    pub tokens: Vec<Sampled>,
    pub text: String,
    pub finish: FinishReason,
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest were already in the cache).
    pub prefill_tokens: usize,
    pub prefill_secs: f64,
    pub decode_secs: f64,
}

/// Computes `tokens` after what `cache` holds, `step_tokens` at a time, and returns the last
/// token's logits. `cached` (the tokens the cache holds) grows with each step, so that it
/// still lists what the cache holds if a step fails.
pub fn prefill(
    decoder: &Decoder,
    tokens: &[u32],
    cache: &mut dyn KvCache,
    cached: &mut Vec<u32>,
    step_tokens: usize,
) -> Result<Tensor> {
    let mut last = None;
    for chunk in tokens.chunks(step_tokens.max(1)) {
        let mut step = [SeqStep {
            tokens: chunk,
            cache: &mut *cache,
            all_logits: false,
            adapter: None,
        }];
        last = decoder.forward(&mut step)?.into_iter().next();
        cached.extend_from_slice(chunk);
    }
    last.ok_or_else(|| EngineError::Input("nothing to compute: no tokens".into()))
}

/// Feeds `prompt` (all tokens of the sequence so far) and generates. The cache is reused up to
/// where `cached` (the tokens it holds) and the prompt part ways, and truncated there; only the
/// rest is computed. `cached` is updated to what the cache holds at the end. `on_text` receives
/// each new piece of text and returns `false` to cancel.
pub fn generate(
    model: &LoadedModel,
    prompt: &[u32],
    cache: &mut dyn KvCache,
    cached: &mut Vec<u32>,
    params: &GenerateParams,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt.is_empty() {
        return Err(EngineError::Input("the prompt is empty".into()));
    }
    let max_ctx = model.decoder.config.max_context as usize;
    if prompt.len() >= max_ctx {
        return Err(EngineError::Input(format!(
            "the prompt has {} tokens; this model's context holds {max_ctx}: shorten it or clear the conversation",
            prompt.len()
        )));
    }
    if cached.len() != cache.len() {
        return Err(EngineError::Input(format!(
            "the cache holds {} tokens but {} are listed for it",
            cache.len(),
            cached.len()
        )));
    }
    let mut sampler = Sampler::new(params.sampling.clone())?;
    let start = Instant::now();
    // Keep the longest cached prefix of the prompt, short of its last token (whose logits are
    // needed), and compute the rest.
    let common = cached
        .iter()
        .zip(prompt)
        .take_while(|(a, b)| a == b)
        .count();
    let keep = common.min(prompt.len() - 1);
    // A cache whose sliding-window layers dropped the positions before `keep` starts over.
    let keep = if cache.can_keep(keep) { keep } else { 0 };
    if keep < cached.len() {
        cache.truncate(keep)?;
        cached.truncate(keep);
    }
    let to_feed = &prompt[keep..];
    let mut history: Vec<u32> = prompt.to_vec();
    // A long prompt in steps of the planner's size, so that a step's activations are what
    // `forja plan` prices whatever the prompt's length.
    let mut logits = prefill(
        &model.decoder,
        to_feed,
        cache,
        cached,
        DEFAULT_STEP_TOKENS as usize,
    )?;
    let prefill_secs = start.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut stream = TextStream::new(prompt, &params.stop);
    let mut tokens = Vec::new();
    let budget = params.max_tokens.min(max_ctx - prompt.len());
    let mut finish = FinishReason::Length;
    let stop_tokens = &model.tokenizer.special.stop;
    let mut stopped_on_string = false;
    for _ in 0..budget {
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let s = sampler.sample(&row, &history, params.top_logprobs)?;
        let id = s.token;
        tokens.push(s);
        if stop_tokens.contains(&id) {
            finish = FinishReason::Stop;
            break;
        }
        history.push(id);
        let (piece, stopped) = stream.push(&model.tokenizer, id)?;
        if !piece.is_empty() && !on_text(&piece) {
            finish = FinishReason::Cancelled;
            break;
        }
        if stopped {
            finish = FinishReason::Stop;
            stopped_on_string = true;
            break;
        }
        if tokens.len() >= budget {
            // The budget is spent: the next token's logits would go unused.
            break;
        }
        let mut step = [SeqStep {
            tokens: std::slice::from_ref(&id),
            cache,
            all_logits: false,
            adapter: None,
        }];
        logits = model.decoder.forward(&mut step)?.remove(0);
        cached.push(id);
    }
    if !stopped_on_string && finish != FinishReason::Cancelled {
        let (piece, stopped) = stream.finish(&model.tokenizer)?;
        if stopped {
            finish = FinishReason::Stop;
        }
        if !piece.is_empty() {
            on_text(&piece);
        }
    }
    let text = stream.text().to_string();
    Ok(Generation {
        tokens,
        text,
        finish,
        prompt_tokens: prompt.len(),
        prefill_tokens: to_feed.len(),
        prefill_secs,
        decode_secs: decode_start.elapsed().as_secs_f64(),
    })
}
