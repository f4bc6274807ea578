//! Continuous-batching scheduler. Each step hands out a token budget: every request has its
//! known tokens (prompt plus outputs so far) and how many of them are computed, and gets the
//! next chunk of what is left. Chunked prefill, prefix-cache hits, decoding and recomputing a
//! preempted request are all that one rule; there are no prefill and decode phases.
//!
//! The scheduler owns the [`forja_kv::KvManager`] and allocates each step's blocks before it
//! hands out the step, preempting the least important running request when blocks run out.
//! It runs nothing: the engine feeds each [`StepPlan`] to the model and reports the sampled
//! tokens back through [`Scheduler::on_step_done`].

mod config;
mod error;
mod plan;
mod scheduler;

pub use config::{Request, SchedConfig};
pub use error::SchedError;
pub use plan::{FinishReason, ScheduledSeq, StepPlan};
pub use scheduler::{SchedStats, Scheduler};
