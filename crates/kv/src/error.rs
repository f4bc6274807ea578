//! The one error type of the KV-cache manager.

use crate::SeqId;

/// What went wrong in a KV-cache operation, and for which sequence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// `KvManager::new` got a pool shape it cannot manage.
    #[error("invalid KV cache config: {field} = {value}: {why}")]
    InvalidConfig {
        /// The offending argument.
        field: &'static str,
        /// Its value.
        value: usize,
        /// What it must be instead.
        why: &'static str,
    },

    /// Not enough free blocks; nothing was allocated.
    #[error("KV cache: sequence {seq} needs {needed} more blocks but only {free} are free")]
    OutOfBlocks {
        /// The sequence that asked.
        seq: SeqId,
        /// Blocks it would have had to take from the free queue.
        needed: usize,
        /// Blocks the free queue could give it.
        free: usize,
    },

    /// The sequence holds no blocks: never allocated, or already freed.
    #[error("KV cache: sequence {seq} is unknown (never allocated or already freed)")]
    UnknownSeq {
        /// The sequence asked for.
        seq: SeqId,
    },

    /// A new sequence was opened under an id that already holds blocks.
    #[error("KV cache: sequence {seq} already holds blocks; free it before opening it again")]
    SeqExists {
        /// The duplicate id.
        seq: SeqId,
    },

    /// `commit` claimed more computed tokens than the sequence has tokens or slots.
    #[error(
        "KV cache: sequence {seq} cannot commit {computed} computed tokens: it passed {tokens} \
         tokens and its blocks hold {capacity}"
    )]
    CommitOutOfRange {
        /// The sequence that committed.
        seq: SeqId,
        /// Computed tokens it claimed.
        computed: usize,
        /// Tokens it passed.
        tokens: usize,
        /// Token slots its block table holds.
        capacity: usize,
    },
}
