//! Running a model: tokenizers (HF and GGUF-embedded), chat templates, sampling, incremental
//! detokenization and the generation loop; sentence embeddings with encoder models.

pub mod chat_template;
pub mod constrain;
pub mod embed;
pub mod embed_serving;
pub mod error;
pub mod generate;
pub mod model;
pub mod prompt;
pub mod rerank;
pub mod sampler;
pub mod serving;
pub mod spm;
pub mod text_stream;
pub mod tokenizer;
pub mod tool_calls;

pub use chat_template::{ChatTemplate, Message};
pub use embed::{Embedder, Embeddings, is_encoder_dir};
pub use error::{EngineError, Result};
pub use forja_models::{AdapterId, DeviceWeights, LoraSlot, LoraWeights, RunnerDevice};
pub use generate::{FinishReason, GenerateParams, Generation, generate, prefill};
pub use model::{LoadedModel, ServedAdapter};
pub use prompt::{ControlText, LabeledIds, chat_prompt, chat_training_ids};
pub use rerank::{Reranker, is_reranker_dir};
pub use sampler::{Sampled, Sampler, SamplingParams};
pub use text_stream::TextStream;
pub use tokenizer::{IncrementalDecoder, Part, Tokenizer};
