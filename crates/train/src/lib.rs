//! LoRA fine-tuning: training data (chat and alpaca formats) through the model's own chat
//! template with the loss on the assistant's tokens, adapters attached to the decoder's
//! projections, the training loop (AdamW, warmup + cosine, accumulation, clipping, evaluation),
//! adapters read and written in Hugging Face PEFT's layout, and adapters merged into their base.

pub mod adapter;
pub mod checkpoint;
pub mod curve;
pub mod dataset;
pub mod error;
pub mod examples;
pub mod merge;
pub mod merge_gguf;
pub mod optim;
pub mod peft;
pub mod plot;
pub mod rng;
pub mod schedule;
pub mod trainer;

pub use adapter::{Adapters, Init, LoraSpec, attach};
pub use error::{Result, TrainError};
pub use examples::Example;
pub use trainer::{EvalReport, StepReport, TrainConfig, Trainer, train};
