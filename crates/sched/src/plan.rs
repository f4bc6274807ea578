//! What one step asks of the model runner.

use forja_kv::BlockId;

/// One request's part of a step: feed `tokens` at positions `start..start + tokens.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// The request.
    pub id: u64,
    /// Position of the first token fed; positions before it are already in the KV cache.
    pub start: usize,
    /// Tokens to feed this step; never empty.
    pub tokens: Vec<u32>,
    /// The request's KV blocks, one table per group of layers (see `forja_kv::KvManager`),
    /// each covering at least `start + tokens.len()` positions: position `p` of group `g`
    /// lives in block `block_tables[g][p / block_size]` at offset `p % block_size`. A
    /// sliding-window group's entries before its window are `forja_kv::NULL_BLOCK`.
    pub block_tables: Vec<Vec<BlockId>>,
    /// Whether this chunk ends at the request's last known token, so the runner samples a new
    /// one and reports it through `Scheduler::on_step_done`.
    pub sample: bool,
}

/// One step for the model runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    /// Requests to run, in scheduling order.
    pub seqs: Vec<ScheduledSeq>,
    /// Requests that lost their KV blocks this step: the runner drops any state it keeps for
    /// them. They wait and are recomputed from their tokens later.
    pub preempted: Vec<u64>,
}

impl StepPlan {
    /// Tokens fed this step across all requests.
    pub fn num_tokens(&self) -> usize {
        self.seqs.iter().map(|s| s.tokens.len()).sum()
    }

    /// Whether the step feeds nothing.
    pub fn is_empty(&self) -> bool {
        self.seqs.is_empty()
    }
}

/// Why a request left the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The engine saw a stop token or string.
    Stop,
    /// The request reached its `max_tokens`.
    Length,
    /// The client went away or the engine gave up on it.
    Abort,
}
