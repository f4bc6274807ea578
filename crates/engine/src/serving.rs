//! The engine actor: one thread owns a model's step runner (with its paged KV pool, on the CPU
//! or a GPU) and the scheduler, and runs one step after another for every admitted request
//! (continuous batching). Request handlers talk to
//! it through a bounded channel and receive [`Event`]s through their own [`EventSink`]; a full
//! queue is an immediate [`SubmitError::Overloaded`], never an unbounded backlog.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::thread::JoinHandle;

use forja_kv::KvManager;
use forja_models::{
    AdapterId, DeviceWeights, RunnerDevice, RunnerSeq, SeqOutput, StepRunner, open_runner,
};
use forja_sched::{FinishReason as SchedFinish, Request, SchedConfig, Scheduler, StepPlan};

use crate::constrain::Constraint;
use crate::error::{EngineError, Result};
use crate::generate::{FinishReason, GenerateParams};
use crate::model::LoadedModel;
use crate::sampler::{ALL_MASKED, Sampled, Sampler};
use crate::text_stream::TextStream;

mod pool;

/// How the actor sizes its KV pool and batches.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Tokens per KV block.
    pub block_size: usize,
    /// Bytes of KV cache to preallocate (rounded down to whole blocks).
    pub kv_bytes: u64,
    /// Tokens computed per step at most (prefill chunks and decodes together).
    pub max_batched_tokens: usize,
    /// Sequences in one step at most.
    pub max_running: usize,
    /// Requests admitted (queued or running) at most; more are refused as overloaded.
    pub max_pending: usize,
    /// Where the steps run (the KV pool lives there too).
    pub device: RunnerDevice,
    /// How a GPU keeps a quantized model's matrices.
    pub weights: DeviceWeights,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            block_size: forja_arch::kv_cache::SERVE_BLOCK_SIZE as usize,
            kv_bytes: 1 << 30,
            max_batched_tokens: forja_arch::workspace::DEFAULT_STEP_TOKENS as usize,
            max_running: 64,
            max_pending: 256,
            device: RunnerDevice::Cpu,
            weights: DeviceWeights::Stored,
        }
    }
}

/// The pool the actor allocated, as logged at start and exported as metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolInfo {
    pub num_blocks: usize,
    pub block_size: usize,
    /// Block tables per sequence: the model's layer groups (`Decoder::kv_groups`; more than
    /// one when some layers keep a sliding window, whose blocks go back as it moves on).
    pub groups: usize,
    /// KV bytes of one token while every layer keeps it (keys and values), from `arch`'s byte
    /// math.
    pub bytes_per_token: f64,
    /// Bytes the pool holds.
    pub bytes: u64,
    /// Longest sequence (prompt + output) a request may have.
    pub max_model_len: usize,
}

/// What the actor thread reports once its runner and scheduler exist: blocks, device, longest
/// sequence.
type Ready = std::result::Result<(usize, String, usize), String>;

/// What a request produces, in order: tokens, then exactly one `Done` or `Error`.
#[derive(Debug, Clone)]
pub enum Event {
    /// A generated token and the text it releases (empty while held back, e.g. a partial
    /// character or a possible stop string).
    Token { sampled: Sampled, text: String },
    /// The request is complete.
    Done { finish: FinishReason, usage: Usage },
    /// The request failed; no more events follow.
    Error(String),
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens found in the prefix cache (not computed).
    pub cached_tokens: usize,
}

/// Where a request's events go. `send` returns `false` once the receiver is gone; a closed sink
/// cancels its request at the next step.
pub trait EventSink: Send {
    fn send(&mut self, event: Event) -> bool;
    fn is_closed(&self) -> bool;
}

/// A sink into a standard channel: the receiver reads the events in order; once it is gone,
/// `send` says so and the request is cancelled at the next step.
#[derive(Debug)]
pub struct ChannelSink(pub std::sync::mpsc::Sender<Event>);

impl EventSink for ChannelSink {
    fn send(&mut self, event: Event) -> bool {
        self.0.send(event).is_ok()
    }
    fn is_closed(&self) -> bool {
        false
    }
}

/// A request for the actor: prompt ids and how to generate.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerateParams,
    /// Lower runs first; 0 is normal.
    pub priority: i32,
    /// A grammar the output must follow (structured output).
    pub constraint: Option<Constraint>,
    /// The served LoRA adapter to run with (`LoadedModel::adapters`); `None`: the base model.
    pub adapter: Option<AdapterId>,
    pub sink: Box<dyn EventSink>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("prompt", &self.prompt.len())
            .field("params", &self.params)
            .field("priority", &self.priority)
            .field("adapter", &self.adapter)
            .finish()
    }
}

/// Why a job was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many requests admitted; retry later.
    #[error("the server is busy ({0} requests queued or running); retry shortly")]
    Overloaded(usize),
    /// The request can never run as asked (bad parameters, too long).
    #[error("{0}")]
    Invalid(String),
    /// The engine stopped.
    #[error("the engine stopped")]
    Stopped,
}

/// Live numbers of the actor, for metrics.
#[derive(Debug, Default)]
pub struct Gauges {
    pub waiting: AtomicUsize,
    pub running: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    pub kv_blocks_free: AtomicUsize,
    pub prefix_queried_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub preemptions: AtomicU64,
    /// Microseconds the engine spent, over all steps, in the model (the runner's step, logits
    /// back on the host included), sampling, and handing tokens to requests (detokenizing,
    /// stop strings, events).
    pub model_micros: AtomicU64,
    pub sample_micros: AtomicU64,
    pub deliver_micros: AtomicU64,
}

enum Command {
    Submit(u64, Box<Job>),
    Abort(u64),
}

/// The handle request handlers hold; cloning it is cheap.
#[derive(Debug, Clone)]
pub struct Engine {
    tx: SyncSender<Command>,
    pending: Arc<AtomicUsize>,
    next_id: Arc<AtomicU64>,
    pub model: Arc<LoadedModel>,
    pub pool: PoolInfo,
    device: String,
    pub gauges: Arc<Gauges>,
    max_pending: usize,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Submit(id, _) => write!(f, "Submit({id})"),
            Command::Abort(id) => write!(f, "Abort({id})"),
        }
    }
}

impl Engine {
    /// Starts the actor thread, which makes the runner (and its KV pool) on the configured
    /// device; returns once it is ready, or with why it could not start. The thread ends when
    /// every handle is dropped.
    pub fn start(model: Arc<LoadedModel>, cfg: &ServingConfig) -> Result<(Engine, JoinHandle<()>)> {
        let dc = &model.decoder.config;
        let context = dc.max_context as usize;
        let pool::Sizing {
            shape,
            groups,
            bytes_per_token,
            block_bytes,
        } = pool::sizing(&model, cfg)?;
        let (tx, rx) = sync_channel(cfg.max_pending.max(1));
        let (ready_tx, ready_rx) = sync_channel::<Ready>(1);
        let pending = Arc::new(AtomicUsize::new(0));
        let gauges = Arc::new(Gauges::default());
        let (thread_model, thread_pending, thread_gauges) = (
            Arc::clone(&model),
            Arc::clone(&pending),
            Arc::clone(&gauges),
        );
        let (device, weights, block_size) = (cfg.device, cfg.weights, cfg.block_size);
        let group_windows = groups.windows.clone();
        let (max_batched_tokens, max_running) = (cfg.max_batched_tokens, cfg.max_running);
        let thread = std::thread::Builder::new()
            .name("forja-engine".into())
            .spawn(move || {
                let made = open_runner(&thread_model.decoder, device, shape, weights)
                    .map_err(|e| format!("cannot start on {device}: {e}"))
                    .and_then(|runner| {
                        let blocks = runner.blocks();
                        let windows: Vec<Option<usize>> = group_windows
                            .iter()
                            .map(|w| w.map(|w| w as usize))
                            .collect();
                        let kv = KvManager::with_groups(blocks, block_size, true, &windows)
                            .map_err(|e| e.to_string())?;
                        let max_model_len = pool::longest_fitting(&kv, max_batched_tokens, context);
                        if max_model_len == 0 {
                            return Err(format!(
                                "a KV pool of {blocks} blocks holds no sequence of this model"
                            ));
                        }
                        let sched = Scheduler::new(
                            SchedConfig {
                                max_batched_tokens,
                                max_running,
                                max_model_len,
                            },
                            kv,
                        )
                        .map_err(|e| e.to_string())?;
                        Ok((runner, sched, max_model_len))
                    });
                let (runner, sched, max_model_len) = match made {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((runner.blocks(), runner.describe(), max_model_len)));
                let mut actor = Actor {
                    model: thread_model,
                    runner,
                    sched,
                    reqs: HashMap::new(),
                    pending: thread_pending,
                    gauges: thread_gauges,
                };
                actor.run(rx);
            })
            .map_err(|e| EngineError::Input(format!("cannot start the engine thread: {e}")))?;
        let (num_blocks, device, max_model_len) = ready_rx
            .recv()
            .map_err(|_| EngineError::Input("the engine thread ended while starting".into()))?
            .map_err(EngineError::Input)?;
        let pool = PoolInfo {
            num_blocks,
            block_size: cfg.block_size,
            groups: groups.windows.len(),
            bytes_per_token,
            bytes: (block_bytes * num_blocks as f64) as u64,
            max_model_len,
        };
        Ok((
            Engine {
                tx,
                pending,
                next_id: Arc::new(AtomicU64::new(1)),
                model,
                pool,
                device,
                gauges,
                max_pending: cfg.max_pending,
            },
            thread,
        ))
    }

    /// Where the steps run, in words (`cpu`, or the GPU's name and ordinal).
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Admits a job; its events go to its sink. Checks what can be checked at once (a prompt
    /// that with its output cannot fit the context is refused, never truncated).
    pub fn submit(&self, job: Job) -> std::result::Result<u64, SubmitError> {
        let n = job.prompt.len();
        if n == 0 {
            return Err(SubmitError::Invalid("the prompt is empty".into()));
        }
        let max_len = self.pool.max_model_len;
        if n + job.params.max_tokens > max_len {
            return Err(SubmitError::Invalid(format!(
                "the prompt has {n} tokens and up to {} may be generated, but this model's \
                 context holds {max_len}: shorten the prompt or lower max_tokens",
                job.params.max_tokens
            )));
        }
        if job.params.max_tokens == 0 {
            return Err(SubmitError::Invalid("max_tokens must be at least 1".into()));
        }
        if let Some(id) = job.adapter
            && !self.model.adapters.iter().any(|a| a.id == id)
        {
            return Err(SubmitError::Invalid(format!(
                "{} has no adapter with id {id}",
                self.model.name
            )));
        }
        job.params
            .sampling
            .validate()
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let admitted = self.pending.fetch_add(1, Ordering::SeqCst);
        if admitted >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Overloaded(admitted));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Command::Submit(id, Box::new(job))) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Overloaded(admitted),
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// Cancels a request (a no-op once it finished).
    pub fn abort(&self, id: u64) {
        // A full queue means the actor is busy; the request's closed sink cancels it anyway.
        let _ = self.tx.try_send(Command::Abort(id));
    }

    /// Requests admitted and not finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }

    /// The largest `max_tokens` a prompt of `prompt_len` tokens leaves room for.
    pub fn room_after(&self, prompt_len: usize) -> usize {
        self.pool.max_model_len.saturating_sub(prompt_len)
    }
}

struct ReqState {
    sampler: Sampler,
    constraint: Option<Constraint>,
    /// Prompt and generated tokens (for penalties).
    history: Vec<u32>,
    stream: TextStream,
    sink: Box<dyn EventSink>,
    top_logprobs: usize,
    prompt_len: usize,
    generated: usize,
    cached_tokens: Option<usize>,
    adapter: Option<AdapterId>,
}

fn add_micros(counter: &AtomicU64, d: std::time::Duration) {
    counter.fetch_add(
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// A sequence to sample: its place in the step, id, state and logits.
type Pick<'a> = (usize, u64, &'a mut ReqState, Vec<f32>);

/// Masks (structured output) and samples one sequence's next token.
fn pick_one(r: &mut ReqState, mut row: Vec<f32>) -> std::result::Result<Sampled, String> {
    match &mut r.constraint {
        Some(c) => c.mask(&mut row),
        None => Ok(()),
    }
    .and_then(|()| r.sampler.sample(&row, &r.history, r.top_logprobs))
    .map_err(|e| e.to_string())
}

/// Sequences picked per thread at least: fewer are not worth a thread.
const PICKS_PER_THREAD: usize = 4;

/// Samples every job, on up to one thread per core when there are many.
fn pick_all(jobs: Vec<Pick<'_>>) -> Vec<(usize, u64, std::result::Result<Sampled, String>)> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let threads = cores.min(jobs.len() / PICKS_PER_THREAD);
    if threads <= 1 {
        return jobs
            .into_iter()
            .map(|(i, id, r, row)| (i, id, pick_one(r, row)))
            .collect();
    }
    let per = jobs.len().div_ceil(threads);
    let mut chunks: Vec<Vec<Pick<'_>>> = Vec::new();
    for job in jobs {
        match chunks.last_mut() {
            Some(c) if c.len() < per => c.push(job),
            _ => chunks.push(vec![job]),
        }
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|chunk| {
                let ids: Vec<(usize, u64)> = chunk.iter().map(|(i, id, _, _)| (*i, *id)).collect();
                let handle = scope.spawn(move || {
                    chunk
                        .into_iter()
                        .map(|(i, id, r, row)| (i, id, pick_one(r, row)))
                        .collect::<Vec<_>>()
                });
                (ids, handle)
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(ids, h)| {
                // A panicking sampler fails its own requests, not the engine.
                h.join().unwrap_or_else(|_| {
                    ids.into_iter()
                        .map(|(i, id)| (i, id, Err("sampling panicked".to_string())))
                        .collect()
                })
            })
            .collect()
    })
}

struct Actor {
    model: Arc<LoadedModel>,
    runner: Box<dyn StepRunner>,
    sched: Scheduler,
    reqs: HashMap<u64, ReqState>,
    pending: Arc<AtomicUsize>,
    gauges: Arc<Gauges>,
}

impl Actor {
    fn run(&mut self, rx: Receiver<Command>) {
        loop {
            // Idle: wait for work. Busy: take what arrived and go on stepping.
            if self.reqs.is_empty() {
                match rx.recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(_) => return,
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(cmd) => self.command(cmd),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if self.reqs.is_empty() {
                            return;
                        }
                        break;
                    }
                }
            }
            self.drop_cancelled();
            let worked = !self.reqs.is_empty() && self.step();
            self.publish();
            if !worked && !self.reqs.is_empty() {
                // Requests wait but none can run this instant: sleep on the channel briefly
                // instead of spinning.
                match rx.recv_timeout(std::time::Duration::from_millis(5)) {
                    Ok(cmd) => self.command(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {}
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Submit(id, job) => self.admit(id, *job),
            Command::Abort(id) => self.end(id, None),
        }
    }

    fn admit(&mut self, id: u64, mut job: Job) {
        let sampler = match Sampler::new(job.params.sampling.clone()) {
            Ok(s) => s,
            Err(e) => {
                job.sink.send(Event::Error(e.to_string()));
                self.pending.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        let req = Request {
            id,
            prompt: job.prompt.clone(),
            max_tokens: job.params.max_tokens,
            priority: job.priority,
            // Keys and values depend on the adapter (k/v projections may be adapted): each
            // adapter is its own prefix-cache namespace, the base model namespace 0.
            salt: job.adapter.map_or(0, u64::from),
        };
        if let Err(e) = self.sched.add(req) {
            job.sink.send(Event::Error(e.to_string()));
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        self.reqs.insert(
            id,
            ReqState {
                sampler,
                constraint: job.constraint,
                stream: TextStream::new(&job.prompt, &job.params.stop),
                prompt_len: job.prompt.len(),
                history: job.prompt,
                sink: job.sink,
                top_logprobs: job.params.top_logprobs,
                generated: 0,
                cached_tokens: None,
                adapter: job.adapter,
            },
        );
    }

    /// Removes a request: from the scheduler (freeing its blocks; a request the scheduler
    /// already finished is gone there) and from the live set; sends `last` if given.
    fn end(&mut self, id: u64, last: Option<Event>) {
        if self.sched.contains(id) {
            let reason = match &last {
                Some(Event::Done { .. }) => SchedFinish::Stop,
                _ => SchedFinish::Abort,
            };
            // Cannot fail: the request is known.
            let _ = self.sched.finish(id, reason);
        }
        if let Some(mut r) = self.reqs.remove(&id) {
            // Not pending any more by the time its client hears the end.
            self.pending.fetch_sub(1, Ordering::SeqCst);
            if let Some(e) = last {
                r.sink.send(e);
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let gone: Vec<u64> = self
            .reqs
            .iter()
            .filter(|(_, r)| r.sink.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.end(id, None);
        }
    }

    /// Runs one step of the scheduler's plan; whether there was anything to run.
    fn step(&mut self) -> bool {
        let plan: StepPlan = self.sched.schedule();
        if plan.seqs.is_empty() {
            return false;
        }
        self.gauges.steps.fetch_add(1, Ordering::Relaxed);
        for s in &plan.seqs {
            if let Some(r) = self.reqs.get_mut(&s.id) {
                r.cached_tokens.get_or_insert(s.start.min(r.prompt_len));
            }
        }
        let t_model = std::time::Instant::now();
        let logits = {
            let reqs = &self.reqs;
            let seqs: Vec<RunnerSeq<'_>> = plan
                .seqs
                .iter()
                .map(|s| {
                    let r = reqs.get(&s.id);
                    RunnerSeq {
                        tokens: &s.tokens,
                        start: s.start,
                        tables: &s.block_tables,
                        adapter: r.and_then(|r| r.adapter),
                        pick: r
                            .filter(|r| s.sample && r.constraint.is_none() && r.top_logprobs == 0)
                            .and_then(|r| r.sampler.device_pick()),
                    }
                })
                .collect();
            let (runner, decoder) = (&mut self.runner, &self.model.decoder);
            // A panic inside the model fails this step's requests, not the engine.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.step(decoder, &seqs)))
                .unwrap_or_else(|_| {
                    Err(forja_models::ModelError::Input(
                        "the model panicked on this step".into(),
                    ))
                })
        };
        let outputs = match logits {
            Ok(l) => l,
            Err(e) => {
                let msg = format!("the model failed on this step: {e}");
                for s in &plan.seqs {
                    self.end(s.id, Some(Event::Error(msg.clone())));
                }
                return true;
            }
        };
        let t_sample = std::time::Instant::now();
        add_micros(&self.gauges.model_micros, t_sample - t_model);
        // Tokens the device picked are taken as they are; each other sequence's sampler,
        // constraint and history are its own: with many sequences those picks are made on
        // several threads.
        let mut rows: HashMap<u64, (usize, Vec<f32>)> = HashMap::new();
        let mut picked = Vec::new();
        for (i, (s, out)) in plan.seqs.iter().zip(outputs).enumerate() {
            if !s.sample {
                continue;
            }
            match out {
                SeqOutput::Logits(l) => {
                    rows.insert(s.id, (i, l));
                }
                SeqOutput::Picked { token, logprob } => {
                    if let Some(r) = self.reqs.get_mut(&s.id) {
                        r.sampler.picked_on_device();
                    }
                    let top = Vec::new();
                    picked.push((
                        i,
                        s.id,
                        Ok(Sampled {
                            token,
                            logprob,
                            top,
                        }),
                    ));
                }
                SeqOutput::NoFiniteLogit => {
                    picked.push((
                        i,
                        s.id,
                        Err(EngineError::Input(ALL_MASKED.into()).to_string()),
                    ));
                }
            }
        }
        let jobs: Vec<Pick<'_>> = self
            .reqs
            .iter_mut()
            .filter_map(|(id, r)| rows.remove(id).map(|(i, row)| (i, *id, r, row)))
            .collect();
        picked.extend(pick_all(jobs));
        picked.sort_by_key(|(i, _, _)| *i);
        let mut sampled = Vec::new();
        let mut failed = Vec::new();
        for (_, id, p) in picked {
            match p {
                Ok(p) => sampled.push((id, p)),
                Err(e) => failed.push((id, e)),
            }
        }
        let t_deliver = std::time::Instant::now();
        add_micros(&self.gauges.sample_micros, t_deliver - t_sample);
        for (id, msg) in failed {
            self.end(id, Some(Event::Error(msg)));
        }
        let ids: Vec<(u64, u32)> = sampled.iter().map(|(id, p)| (*id, p.token)).collect();
        let at_length = self.sched.on_step_done(&ids);
        for (id, p) in sampled {
            self.deliver(id, p, at_length.contains(&id));
        }
        add_micros(&self.gauges.deliver_micros, t_deliver.elapsed());
        true
    }

    /// Hands a sampled token to its request: text, stop tokens and strings, the length limit.
    fn deliver(&mut self, id: u64, p: Sampled, at_length: bool) {
        let tok = &self.model.tokenizer;
        let Some(r) = self.reqs.get_mut(&id) else {
            return;
        };
        r.generated += 1;
        let token = p.token;
        let mut finish = None;
        let mut text = String::new();
        if tok.special.stop.contains(&token) {
            finish = Some(FinishReason::Stop);
        } else {
            if let Some(c) = &mut r.constraint {
                if let Err(e) = c.consume(token) {
                    let msg = e.to_string();
                    self.end(id, Some(Event::Error(msg)));
                    return;
                }
                if c.is_done() {
                    finish = Some(FinishReason::Stop);
                }
            }
            r.history.push(token);
            match r.stream.push(tok, token) {
                Ok((piece, stopped)) => {
                    text = piece;
                    if stopped {
                        finish = Some(FinishReason::Stop);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.end(id, Some(Event::Error(msg)));
                    return;
                }
            }
        }
        if finish.is_none() && at_length {
            finish = Some(FinishReason::Length);
        }
        if finish.is_some() {
            // Release what was held back (a possible stop string that never completed).
            match r.stream.finish(tok) {
                Ok((rest, stopped)) => {
                    text += &rest;
                    if stopped {
                        finish = Some(FinishReason::Stop);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.end(id, Some(Event::Error(msg)));
                    return;
                }
            }
        }
        let alive = r.sink.send(Event::Token { sampled: p, text });
        if let Some(finish) = finish {
            let usage = Usage {
                prompt_tokens: r.prompt_len,
                completion_tokens: r.generated,
                cached_tokens: r.cached_tokens.unwrap_or(0),
            };
            self.end(id, Some(Event::Done { finish, usage }));
        } else if !alive {
            self.end(id, None);
        }
    }

    fn publish(&self) {
        let g = &self.gauges;
        let s = &self.sched;
        g.waiting.store(s.num_waiting(), Ordering::Relaxed);
        g.running.store(s.num_running(), Ordering::Relaxed);
        g.kv_blocks_used
            .store(s.kv_blocks_used(), Ordering::Relaxed);
        g.kv_blocks_free
            .store(s.kv_blocks_free(), Ordering::Relaxed);
        let p = s.kv().prefix_stats();
        g.prefix_queried_tokens
            .store(p.query_tokens, Ordering::Relaxed);
        g.prefix_hit_tokens.store(p.hit_tokens, Ordering::Relaxed);
        g.preemptions
            .store(s.stats().preemptions, Ordering::Relaxed);
    }
}
