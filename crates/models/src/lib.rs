//! forja's models: one configurable decoder over candle tensors, built from
//! `forja_arch::DecoderConfig`, with weights from safetensors or GGUF and `Linear` layers that are
//! dense or quantized and may carry a LoRA adapter; and a BERT encoder with sentence-transformers
//! pooling, for embeddings.

pub mod attention;
mod cpu_attention;
mod cpu_ops;
pub mod decoder;
mod embedding;
pub mod encoder;
pub mod error;
#[cfg(feature = "cuda")]
pub mod gpu;
mod grad_ops;
pub mod kv_cache;
pub mod linear;
pub mod loader;
pub mod lora;
pub mod mlp;
pub mod norm;
pub mod paged_kv;
pub mod pooling;
pub mod rope;
pub mod runner;
#[cfg(test)]
mod test_util;
pub mod training;
pub mod weight_source;

pub use decoder::{Decoder, QkRowOrder, SeqStep};
pub use encoder::{BertEncoder, EncoderInput, SequenceClassifier};
pub use error::{ModelError, Result};
pub use kv_cache::{ContiguousKvCache, GraphKvCache, KvCache, KvSpan, KvView};
pub use lora::{AdapterId, AdapterRows, Lora, LoraSlot, LoraWeights};
pub use paged_kv::{PagedKvStore, PagedSeq};
pub use runner::{
    DevicePick, DeviceWeights, PoolShape, RunnerDevice, RunnerSeq, SeqOutput, StepRunner,
    open_runner,
};
