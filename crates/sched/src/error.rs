//! The one error type of the scheduler.

/// Why the scheduler refused a configuration, a request or an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedError {
    /// A `SchedConfig` field is out of range.
    #[error("invalid scheduler config: {field} = {value}: {why}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// What it must be instead.
        why: &'static str,
    },

    /// A request came with no prompt tokens.
    #[error("request {id}: the prompt is empty")]
    EmptyPrompt {
        /// The request.
        id: u64,
    },

    /// A request asked for no output tokens.
    #[error("request {id}: max_tokens is 0; ask for at least one token")]
    ZeroMaxTokens {
        /// The request.
        id: u64,
    },

    /// Prompt plus output would exceed the model's context.
    #[error(
        "request {id}: {prompt} prompt tokens + max_tokens {max_tokens} exceed max_model_len \
         {max_model_len}"
    )]
    TooLong {
        /// The request.
        id: u64,
        /// Its prompt length.
        prompt: usize,
        /// Its output limit.
        max_tokens: usize,
        /// The configured context length.
        max_model_len: usize,
    },

    /// At full length the request would need more KV blocks than the whole pool has.
    #[error("request {id}: needs {blocks} KV blocks at full length but the pool has {num_blocks}")]
    TooBigForPool {
        /// The request.
        id: u64,
        /// Blocks it would need.
        blocks: usize,
        /// Blocks in the pool.
        num_blocks: usize,
    },

    /// A live request already has this id.
    #[error("request {id}: a request with this id is already waiting or running")]
    DuplicateId {
        /// The id.
        id: u64,
    },

    /// No live request has this id.
    #[error("request {id}: no such request waiting or running (finished, aborted or never added)")]
    UnknownRequest {
        /// The id.
        id: u64,
    },
}
