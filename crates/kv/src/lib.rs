//! Paged KV-cache bookkeeping for a continuous-batching server: a pool of fixed-size blocks,
//! block tables per sequence (one per group of layers; sliding-window groups give back what
//! leaves their window), and prefix caching by chained block hashes.
//!
//! No tensors live here. This crate decides which block holds which token positions; the model
//! runner owns the memory and reads and writes it through block tables and slot numbers.

mod error;
mod free_queue;
mod manager;
mod pool;

pub use error::KvError;
pub use manager::{KvManager, NULL_BLOCK, PrefixHit, PrefixStats};

/// Index of a block in the pool, `0..num_blocks`.
pub type BlockId = u32;

/// Identifies one sequence (one request's tokens) in the cache.
pub type SeqId = u64;
