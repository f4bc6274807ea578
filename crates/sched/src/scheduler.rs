//! The scheduler: which requests get how many tokens each step, and the KV blocks for them.

use std::collections::{BTreeMap, HashMap};

use forja_kv::{KvError, KvManager};

use crate::{FinishReason, Request, SchedConfig, SchedError, ScheduledSeq, StepPlan};

/// Counters since the scheduler was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Steps planned.
    pub steps: u64,
    /// Times a running request lost its blocks to make room for a more important one.
    pub preemptions: u64,
    /// Requests finished with [`FinishReason::Stop`].
    pub stopped: u64,
    /// Requests finished with [`FinishReason::Length`].
    pub length: u64,
    /// Requests finished with [`FinishReason::Abort`].
    pub aborted: u64,
}

/// Importance order: priority, then arrival. Unique, since arrivals are.
type OrderKey = (i32, u64);

#[derive(Debug)]
struct Seq {
    id: u64,
    /// Prompt, then outputs.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    key: OrderKey,
    salt: u64,
    /// Leading tokens whose keys and values are in the KV cache.
    num_computed: usize,
}

impl Seq {
    fn num_output(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// A chunk handed out by the last [`Scheduler::schedule`], applied by `on_step_done`.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    id: u64,
    len: usize,
    sample: bool,
}

/// Continuous batching over one KV pool.
///
/// Each step: [`schedule`](Self::schedule), run the plan on the model and sample where asked,
/// then [`on_step_done`](Self::on_step_done) with the sampled tokens; the engine checks stop
/// conditions and calls [`finish`](Self::finish) for requests that stop. Running requests come
/// first, most important first (lowest priority value, then earliest arrival): a decoding
/// request takes one token, a prefilling one as many as the budget leaves. Waiting requests
/// are admitted after them in the same order, starting after their cached prefix, while budget,
/// running slots and blocks last; the first that does not fit holds back the rest.
///
/// When a running request needs a block and none is free, the least important running request
/// not yet served this step is preempted: its blocks are freed, its computed count drops to 0,
/// and it waits in its old place, keeping its outputs; the prompt and outputs are recomputed
/// when it is admitted again. A step that preempts admits no one.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedConfig,
    kv: KvManager,
    waiting: BTreeMap<OrderKey, Seq>,
    /// Holding KV blocks; sorted by key at the start of each step.
    running: Vec<Seq>,
    /// Order key of every live request, waiting or running.
    live: HashMap<u64, OrderKey>,
    /// Chunks of the last planned step.
    in_flight: Vec<Chunk>,
    next_arrival: u64,
    stats: SchedStats,
}

impl Scheduler {
    /// A scheduler with nothing queued, owning the KV pool `kv`.
    pub fn new(cfg: SchedConfig, kv: KvManager) -> Result<Self, SchedError> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            kv,
            waiting: BTreeMap::new(),
            running: Vec::new(),
            live: HashMap::new(),
            in_flight: Vec::new(),
            next_arrival: 0,
            stats: SchedStats::default(),
        })
    }

    /// Queues `req`, or says why it can never run.
    pub fn add(&mut self, req: Request) -> Result<(), SchedError> {
        let id = req.id;
        if self.live.contains_key(&id) {
            return Err(SchedError::DuplicateId { id });
        }
        if req.prompt.is_empty() {
            return Err(SchedError::EmptyPrompt { id });
        }
        if req.max_tokens == 0 {
            return Err(SchedError::ZeroMaxTokens { id });
        }
        let max_model_len = self.cfg.max_model_len;
        let total = req.prompt.len().saturating_add(req.max_tokens);
        if total > max_model_len {
            return Err(SchedError::TooLong {
                id,
                prompt: req.prompt.len(),
                max_tokens: req.max_tokens,
                max_model_len,
            });
        }
        // The last output token is sampled but never fed, so it needs no slot.
        let blocks = self
            .kv
            .max_blocks_held(total - 1, self.cfg.max_batched_tokens);
        if blocks > self.kv.num_blocks() {
            return Err(SchedError::TooBigForPool {
                id,
                blocks,
                num_blocks: self.kv.num_blocks(),
            });
        }
        let key = (req.priority, self.next_arrival);
        self.next_arrival += 1;
        self.live.insert(id, key);
        self.waiting.insert(
            key,
            Seq {
                id,
                prompt_len: req.prompt.len(),
                tokens: req.prompt,
                max_tokens: req.max_tokens,
                key,
                salt: req.salt,
                num_computed: 0,
            },
        );
        Ok(())
    }

    /// Plans the next step and allocates its KV blocks. Feeds at most `max_batched_tokens`
    /// tokens and keeps at most `max_running` requests running. Planning again before
    /// [`on_step_done`](Self::on_step_done) drops the earlier plan: its tokens count as not
    /// computed and are handed out again.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.cfg.max_batched_tokens;
        self.in_flight.clear();
        self.running.sort_by_key(|s| s.key);

        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let seq = &self.running[i];
            let len = (seq.tokens.len() - seq.num_computed).min(budget);
            let end = seq.num_computed + len;
            if !self.reserve(i, end, &mut plan.preempted) {
                break;
            }
            self.hand_out(i, len, &mut plan);
            budget -= len;
            i += 1;
        }
        // Room made by preempting belongs to the running requests; admitting into it would
        // only preempt again.
        if plan.preempted.is_empty() {
            self.admit(&mut budget, &mut plan);
        }
        self.stats.steps += 1;
        plan
    }

    /// Applies the last planned step once the runner has run it: advances computed counts,
    /// appends each sampled token (`(id, token)`) to its request, and caches newly full
    /// blocks. Returns the requests that thereby reached `max_tokens` (which `add` keeps within
    /// `max_model_len`); they are finished with [`FinishReason::Length`] and removed. Tokens for requests that were not asked to sample,
    /// or that finished meanwhile, are ignored; a request asked to sample that gets no token
    /// is fed its last token again next step.
    pub fn on_step_done(&mut self, sampled: &[(u64, u32)]) -> Vec<u64> {
        let sampled: HashMap<u64, u32> = sampled.iter().copied().collect();
        let index: HashMap<u64, usize> = self
            .running
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, i))
            .collect();
        let mut finished = Vec::new();
        for chunk in std::mem::take(&mut self.in_flight) {
            let Some(&i) = index.get(&chunk.id) else {
                continue;
            };
            let seq = &mut self.running[i];
            seq.num_computed += chunk.len;
            if chunk.sample {
                match sampled.get(&chunk.id) {
                    Some(&token) => seq.tokens.push(token),
                    None => seq.num_computed -= 1,
                }
            }
            let committed = self.kv.commit(seq.id, &seq.tokens, seq.num_computed);
            debug_assert!(committed.is_ok(), "{committed:?}");
            if seq.num_output() >= seq.max_tokens {
                finished.push(seq.id);
            }
        }
        for &id in &finished {
            let removed = self.finish(id, FinishReason::Length);
            debug_assert!(removed.is_ok(), "{removed:?}");
        }
        finished
    }

    /// Removes request `id`, waiting or running, and frees its blocks.
    pub fn finish(&mut self, id: u64, reason: FinishReason) -> Result<(), SchedError> {
        let key = self
            .live
            .remove(&id)
            .ok_or(SchedError::UnknownRequest { id })?;
        if let Some(i) = self.running.iter().position(|s| s.id == id) {
            self.running.remove(i);
            self.kv.free(id);
        } else {
            self.waiting.remove(&key);
        }
        match reason {
            FinishReason::Stop => self.stats.stopped += 1,
            FinishReason::Length => self.stats.length += 1,
            FinishReason::Abort => self.stats.aborted += 1,
        }
        Ok(())
    }

    /// Removes request `id` as [`FinishReason::Abort`].
    pub fn abort(&mut self, id: u64) -> Result<(), SchedError> {
        self.finish(id, FinishReason::Abort)
    }

    /// The limits this scheduler runs under.
    pub fn config(&self) -> &SchedConfig {
        &self.cfg
    }

    /// The KV pool, for block counts and prefix-cache statistics.
    pub fn kv(&self) -> &KvManager {
        &self.kv
    }

    /// Counters since the scheduler was made.
    pub fn stats(&self) -> SchedStats {
        self.stats
    }

    /// Requests waiting for admission, including preempted ones.
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Requests holding KV blocks.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// KV blocks held by running requests.
    pub fn kv_blocks_used(&self) -> usize {
        self.kv.num_used_blocks()
    }

    /// KV blocks free, cached ones included.
    pub fn kv_blocks_free(&self) -> usize {
        self.kv.num_free_blocks()
    }

    /// Fraction of admitted tokens found in the prefix cache.
    pub fn prefix_hit_rate(&self) -> f64 {
        self.kv.prefix_stats().hit_rate()
    }

    /// Whether no request is waiting or running.
    pub fn is_idle(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether request `id` is waiting or running.
    pub fn contains(&self, id: u64) -> bool {
        self.live.contains_key(&id)
    }

    /// Output tokens of request `id` so far.
    pub fn output(&self, id: u64) -> Option<&[u32]> {
        self.seq(id).map(|s| &s.tokens[s.prompt_len..])
    }

    /// Tokens of request `id` whose keys and values are in the KV cache.
    pub fn num_computed(&self, id: u64) -> Option<usize> {
        self.seq(id).map(|s| s.num_computed)
    }

    fn seq(&self, id: u64) -> Option<&Seq> {
        let key = self.live.get(&id)?;
        self.waiting
            .get(key)
            .or_else(|| self.running.iter().find(|s| s.id == id))
    }

    /// Grows `running[i]`'s blocks to `end` tokens, preempting from the back of `running` (the
    /// least important requests, not yet served this step) until they fit. False when
    /// `running[i]` itself had to go.
    fn reserve(&mut self, i: usize, end: usize, preempted: &mut Vec<u64>) -> bool {
        let id = self.running[i].id;
        loop {
            match self.kv.allocate(id, end) {
                Ok(()) => return true,
                Err(e) => {
                    debug_assert!(matches!(e, KvError::OutOfBlocks { .. }), "{e}");
                    let Some(victim) = self.running.pop() else {
                        return false;
                    };
                    let was_self = self.running.len() == i;
                    self.preempt(victim, preempted);
                    if was_self {
                        return false;
                    }
                }
            }
        }
    }

    fn preempt(&mut self, mut seq: Seq, preempted: &mut Vec<u64>) {
        self.kv.free(seq.id);
        seq.num_computed = 0;
        preempted.push(seq.id);
        self.stats.preemptions += 1;
        self.waiting.insert(seq.key, seq);
    }

    /// Moves waiting requests to running in order while budget, slots and blocks last.
    fn admit(&mut self, budget: &mut usize, plan: &mut StepPlan) {
        while *budget > 0 && self.running.len() < self.cfg.max_running {
            let Some(entry) = self.waiting.first_entry() else {
                break;
            };
            let seq = entry.get();
            let hit = self.kv.lookup_prefix(&seq.tokens, seq.salt);
            let cached = hit.num_tokens();
            let len = (seq.tokens.len() - cached).min(*budget);
            if hit.allocate(seq.id, cached + len).is_err() {
                break;
            }
            let mut seq = entry.remove();
            seq.num_computed = cached;
            self.running.push(seq);
            self.hand_out(self.running.len() - 1, len, plan);
            *budget -= len;
        }
    }

    /// Adds the next `len` tokens of `running[i]` to the plan.
    fn hand_out(&mut self, i: usize, len: usize, plan: &mut StepPlan) {
        let seq = &self.running[i];
        let (start, end) = (seq.num_computed, seq.num_computed + len);
        let sample = end == seq.tokens.len();
        plan.seqs.push(ScheduledSeq {
            id: seq.id,
            start,
            tokens: seq.tokens[start..end].to_vec(),
            block_tables: self.kv.block_tables(seq.id).unwrap_or_default().to_vec(),
            sample,
        });
        self.in_flight.push(Chunk {
            id: seq.id,
            len,
            sample,
        });
    }
}
