//! A normalized model description and all of forja's byte math: parameters, weight bytes per
//! format, KV cache, inference workspace and fine-tuning memory. The planner predicts with it and
//! the engine sizes its buffers with it, so predictions can be checked against allocations.

pub mod decoder_config;
pub mod encoder_config;
pub mod error;
pub mod ggml_type;
pub mod gguf;
pub mod gguf_config;
pub mod gguf_writer;
pub mod hf_config;
pub mod kv_cache;
pub mod model_source;
pub mod quant_recipe;
pub mod safetensors_header;
pub mod sentence_embedding;
pub mod tensors;
pub mod tokenizer;
pub mod training;
pub mod weight_format;
pub mod weights;
pub mod workspace;

pub use decoder_config::{DecoderConfig, Family, LayerAttention};
pub use encoder_config::EncoderConfig;
pub use error::ArchError;
pub use ggml_type::GgmlType;
pub use gguf::GgufHeader;
pub use model_source::{Container, ModelDescription, StoredWeights};
pub use sentence_embedding::{Pooling, SentenceEmbeddingConfig};
pub use tokenizer::{TokenizerShape, VocabKind};
pub use weight_format::{GgufRecipe, KvDtype, WeightFormat};
pub use weights::WeightBytes;
