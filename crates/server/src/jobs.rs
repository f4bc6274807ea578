//! Turning API parameters into engine jobs, and the channel their events come back on: several
//! choices (`n`, several prompts) share one channel, tagged by choice index. Dropping the
//! receiver (a client that went away) cancels every job at the engine's next step.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use forja_api::openai::Sampling;
use forja_engine::constrain::{Constraint, OutputFormat};
use forja_engine::serving::{Engine, Event, EventSink, Job};
use forja_engine::{GenerateParams, Sampled, SamplingParams};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Most choices one request may ask for.
pub const MAX_CHOICES: usize = 16;

struct Sink {
    index: usize,
    tx: UnboundedSender<(usize, Event)>,
}

impl EventSink for Sink {
    fn send(&mut self, event: Event) -> bool {
        self.tx.send((self.index, event)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// What a request asks of the engine, validated.
#[derive(Debug, Clone)]
pub struct Plan {
    pub params: GenerateParams,
    pub n: usize,
    pub priority: i32,
    /// Whether `max_tokens` was given (else: until the context is full).
    pub explicit_max: bool,
    /// Structured output.
    pub format: Option<OutputFormat>,
    /// The served LoRA adapter to run with.
    pub adapter: Option<forja_engine::AdapterId>,
}

/// Validates OpenAI sampling fields into generation parameters. OpenAI's defaults apply
/// (temperature 1, top_p 1, no top_k / min_p); a missing seed gets a fresh random one.
pub fn plan(s: &Sampling, top_logprobs: usize, vocab: usize) -> Result<Plan, ApiError> {
    let n = s.n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(ApiError::param(
            "n",
            format!("n must be between 1 and {MAX_CHOICES} (got {n})"),
        ));
    }
    let mut logit_bias = HashMap::new();
    for (k, &v) in s.logit_bias.iter().flatten() {
        let id: u32 = k.parse().map_err(|_| {
            ApiError::param(
                "logit_bias",
                format!("logit_bias key `{k}` is not a token id"),
            )
        })?;
        if id as usize >= vocab {
            return Err(ApiError::param(
                "logit_bias",
                format!("logit_bias token {id} is outside the vocabulary of {vocab}"),
            ));
        }
        logit_bias.insert(id, v);
    }
    let seed = match s.seed {
        Some(seed) => seed as u64,
        None => fresh_seed(),
    };
    let sampling = SamplingParams {
        temperature: s.temperature.unwrap_or(1.0),
        top_k: s.top_k.unwrap_or(0),
        top_p: s.top_p.unwrap_or(1.0),
        min_p: s.min_p.unwrap_or(0.0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        logit_bias,
        seed,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(e.to_string()))?;
    if s.max_tokens == Some(0) {
        return Err(ApiError::param(
            "max_tokens",
            "max_tokens must be at least 1",
        ));
    }
    Ok(Plan {
        params: GenerateParams {
            sampling,
            max_tokens: s.max_tokens.unwrap_or(0),
            stop: s.stop.clone().map(|s| s.into_vec()).unwrap_or_default(),
            top_logprobs,
        },
        n,
        priority: s.priority.unwrap_or(0),
        explicit_max: s.max_tokens.is_some(),
        format: None,
        adapter: None,
    })
}

fn fresh_seed() -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Mixed, so seeds of close requests differ in every bit.
    forja_engine::sampler::mix64(t.wrapping_add(0x9E37_79B9_7F4A_7C15))
}

/// Submits `plan.n` jobs for each prompt (choice index = prompt · n + j; seeds differ by j).
/// All or nothing: if one is refused, those already admitted are cancelled. An invalid output
/// format is a 400 before anything runs.
pub async fn submit(
    engine: &Engine,
    prompts: &[Vec<u32>],
    plan: &Plan,
) -> Result<UnboundedReceiver<(usize, Event)>, ApiError> {
    let count = prompts.len() * plan.n;
    let mut constraints: Vec<Option<Constraint>> = Vec::with_capacity(count);
    if let Some(format) = &plan.format {
        let model = Arc::clone(&engine.model);
        let format = format.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            (0..count)
                .map(|_| model.constraint(&format).map(Some))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| ApiError::internal(format!("grammar compilation failed: {e}")))?;
        constraints = compiled.map_err(|e| ApiError::param("response_format", e.to_string()))?;
    } else {
        constraints.resize_with(count, || None);
    }
    let mut constraints = constraints.into_iter();
    let (tx, rx) = unbounded_channel();
    let mut ids = Vec::new();
    for (p, prompt) in prompts.iter().enumerate() {
        for j in 0..plan.n {
            let mut params = plan.params.clone();
            params.sampling.seed = params.sampling.seed.wrapping_add(j as u64);
            if !plan.explicit_max {
                params.max_tokens = engine.room_after(prompt.len()).max(1);
            }
            let job = Job {
                prompt: prompt.clone(),
                params,
                priority: plan.priority,
                constraint: constraints.next().flatten(),
                adapter: plan.adapter,
                sink: Box::new(Sink {
                    index: p * plan.n + j,
                    tx: tx.clone(),
                }),
            };
            match engine.submit(job) {
                Ok(id) => ids.push(id),
                Err(e) => {
                    for id in ids {
                        engine.abort(id);
                    }
                    return Err(e.into());
                }
            }
        }
    }
    Ok(rx)
}

/// Per-choice timing, recorded into the metrics as events arrive.
#[derive(Debug)]
pub struct Timing {
    start: Instant,
    last: Vec<Option<Instant>>,
}

impl Timing {
    pub fn new(start: Instant, choices: usize) -> Self {
        Timing {
            start,
            last: vec![None; choices],
        }
    }

    /// Records `event` of choice `i`.
    pub fn record(&mut self, metrics: &Metrics, i: usize, event: &Event) {
        let now = Instant::now();
        match event {
            Event::Token { .. } => {
                metrics
                    .generated_tokens
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match self.last.get(i).copied().flatten() {
                    None => metrics.ttft.observe((now - self.start).as_secs_f64()),
                    Some(prev) => metrics.inter_token.observe((now - prev).as_secs_f64()),
                }
                if let Some(slot) = self.last.get_mut(i) {
                    *slot = Some(now);
                }
            }
            Event::Done { usage, .. } => {
                metrics.prompt_tokens.fetch_add(
                    usage.prompt_tokens as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                metrics.e2e.observe((now - self.start).as_secs_f64());
            }
            Event::Error(_) => {}
        }
    }
}

/// The API's name for a finish reason.
pub fn finish_name(f: forja_engine::FinishReason) -> &'static str {
    match f {
        forja_engine::FinishReason::Stop => "stop",
        forja_engine::FinishReason::Length => "length",
        forja_engine::FinishReason::Cancelled => "cancelled",
    }
}

/// One finished choice.
#[derive(Debug)]
pub struct Finished {
    pub text: String,
    pub tokens: Vec<Sampled>,
    pub finish: forja_engine::FinishReason,
    pub usage: forja_engine::serving::Usage,
    /// When its first token arrived.
    pub first_token: Option<Instant>,
}

/// Waits for every choice to finish; the first error fails the request.
pub async fn collect(
    state: &AppState,
    mut rx: UnboundedReceiver<(usize, Event)>,
    choices: usize,
    start: Instant,
) -> Result<Vec<Finished>, ApiError> {
    let mut timing = Timing::new(start, choices);
    let mut texts = vec![String::new(); choices];
    let mut tokens: Vec<Vec<Sampled>> = vec![Vec::new(); choices];
    let mut ends = vec![None; choices];
    let mut firsts: Vec<Option<Instant>> = vec![None; choices];
    let mut done = 0;
    while done < choices {
        let Some((i, ev)) = rx.recv().await else {
            return Err(ApiError::unavailable("the engine stopped"));
        };
        timing.record(&state.metrics, i, &ev);
        if i >= choices {
            continue;
        }
        match ev {
            Event::Token { sampled, text } => {
                firsts[i].get_or_insert_with(Instant::now);
                texts[i] += &text;
                tokens[i].push(sampled);
            }
            Event::Done { finish, usage } => {
                ends[i] = Some((finish, usage));
                done += 1;
            }
            Event::Error(m) => return Err(ApiError::internal(m)),
        }
    }
    Ok(texts
        .into_iter()
        .zip(tokens)
        .zip(ends)
        .zip(firsts)
        .filter_map(|(((text, tokens), end), first_token)| {
            end.map(|(finish, usage)| Finished {
                text,
                tokens,
                finish,
                usage,
                first_token,
            })
        })
        .collect())
}

/// What a streamed response makes of its request's engine events.
pub trait StreamEvents: Send + 'static {
    type Item: Send + 'static;
    /// The items for one event of choice `i`, and whether the response is complete.
    fn on_event(&mut self, i: usize, event: Event) -> (Vec<Self::Item>, bool);
    /// The item that reports the engine stopping before the response was complete.
    fn on_stopped(&mut self) -> Self::Item;
}

/// A request's engine events as a stream of response items, timed into the metrics on the way.
/// The stream ends after the item that completes the response, or after `on_stopped`.
pub fn event_stream<M: StreamEvents>(
    state: Arc<AppState>,
    rx: UnboundedReceiver<(usize, Event)>,
    choices: usize,
    start: Instant,
    mapper: M,
) -> impl futures_util::Stream<Item = M::Item> + Send {
    use futures_util::StreamExt;
    let timing = Timing::new(start, choices);
    futures_util::stream::unfold(Some((state, rx, timing, mapper)), |open| async move {
        let (state, mut rx, mut timing, mut mapper) = open?;
        loop {
            let Some((i, ev)) = rx.recv().await else {
                return Some((vec![mapper.on_stopped()], None));
            };
            timing.record(&state.metrics, i, &ev);
            let (items, done) = mapper.on_event(i, ev);
            if done {
                return Some((items, None));
            }
            if !items.is_empty() {
                return Some((items, Some((state, rx, timing, mapper))));
            }
        }
    })
    .flat_map(futures_util::stream::iter)
}
