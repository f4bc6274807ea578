//! What the scheduler is configured with and what it is given.

use crate::SchedError;

/// Limits of every step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedConfig {
    /// Tokens fed to the model per step, across all requests.
    pub max_batched_tokens: usize,
    /// Requests holding KV blocks at once.
    pub max_running: usize,
    /// Longest sequence the model takes: prompt plus output.
    pub max_model_len: usize,
}

impl SchedConfig {
    /// Checks that every limit is at least 1 and that the token budget lets every running
    /// request decode in one step.
    pub fn validate(&self) -> Result<(), SchedError> {
        for (field, value) in [
            ("max_batched_tokens", self.max_batched_tokens),
            ("max_running", self.max_running),
            ("max_model_len", self.max_model_len),
        ] {
            if value == 0 {
                return Err(SchedError::InvalidConfig {
                    field,
                    value,
                    why: "must be at least 1",
                });
            }
        }
        if self.max_batched_tokens < self.max_running {
            return Err(SchedError::InvalidConfig {
                field: "max_batched_tokens",
                value: self.max_batched_tokens,
                why: "must be at least max_running, so that every running request can decode \
                      in one step",
            });
        }
        Ok(())
    }
}

/// A generation request as the scheduler sees it: tokens in, a number of tokens out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Caller-chosen id, unique among live requests.
    pub id: u64,
    /// Prompt token ids; not empty.
    pub prompt: Vec<u32>,
    /// Output tokens at most; the request finishes with `Length` when it has them.
    pub max_tokens: usize,
    /// Lower is more important: admitted first, preempted last.
    pub priority: i32,
    /// Prefix-cache namespace (e.g. model or adapter): only requests with equal salts share
    /// cached blocks.
    pub salt: u64,
}

impl Request {
    /// A request with priority 0 and salt 0.
    pub fn new(id: u64, prompt: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            id,
            prompt,
            max_tokens,
            priority: 0,
            salt: 0,
        }
    }

    /// The same request with `priority`.
    #[must_use]
    pub fn with_priority(self, priority: i32) -> Self {
        Self { priority, ..self }
    }

    /// The same request in prefix-cache namespace `salt`.
    #[must_use]
    pub fn with_salt(self, salt: u64) -> Self {
        Self { salt, ..self }
    }
}
